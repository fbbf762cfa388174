"""catrec: cascade-guided adversarial training (CAT) for sequential recommenders.

Implements Tan et al., "Towards More Robust and Accurate Sequential Recommendation with
Cascade-guided Adversarial Training", SDM 2024 (arXiv:2304.05492), as read in
``shared/design/CAT.md``.
"""

from catrec.errors import CatrecError, ConfigError, DataError

__version__ = "0.1.0"

__all__ = ["CatrecError", "ConfigError", "DataError", "__version__"]
