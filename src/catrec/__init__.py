"""catrec: cascade-guided adversarial training (CAT) for sequential recommenders.

Implements Tan et al., "Towards More Robust and Accurate Sequential Recommendation with
Cascade-guided Adversarial Training", SDM 2024 (arXiv:2304.05492), as read in
``shared/design/CAT.md``.
"""

from catrec.errors import CatrecError, ConfigError, DataError

__version__ = "0.1.0"

__all__ = ["CatrecError", "ConfigError", "DataError", "__version__", "load"]


def load(run_dir, checkpoint: str = "best", **kwargs):
    """A recommender for a trained run folder: see :func:`catrec.serve.recommender.load`.

    ``catrec.load(run_dir).recommend(["item1", "item2"], k=10)`` returns ``[(item_id, score)]``.
    (Imported lazily, so that ``import catrec`` stays light.)
    """
    from catrec.serve.recommender import load as _load

    return _load(run_dir, checkpoint, **kwargs)
