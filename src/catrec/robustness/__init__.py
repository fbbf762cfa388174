"""Robustness to item replacement in the test inputs (CAT.md §4; Tan et al., SDM 2024, §5).

For each test user, one (or k) item(s) of the left-padded input sequence is replaced, and the
model's clean and perturbed outputs are compared: HR@K / NDCG@K and their relative drop, and the
similarity of the clean and perturbed top-K lists (Jaccard@K and finite RBO@K, see
:mod:`catrec.metrics.stability`), averaged over users with a 95% bootstrap interval.

Which positions (``n`` = number of real items of the input, real index 0 = oldest):

- ``first``: the oldest item of the input window (index 0); users with more than ``max_len``
  interactions have older items that the model never sees.
- ``middle``: index ``n // 2`` (for even ``n`` the later of the two central items).
- ``last``: the most recent item (index ``n - 1``).
- ``random``: an index drawn uniformly from ``0..n-1`` with the plan's seed.

With ``k > 1`` each position names a group of k real items: ``first`` the k oldest, ``last`` the
k most recent (the "k most recent positions"), ``middle`` the k consecutive items starting at
``clip(n // 2 - k // 2, 0, n - k)``, ``random`` k distinct indices drawn uniformly. A user with
``n < k`` real items cannot be perturbed as asked and is *skipped*: counted in ``n_skipped`` and
left out of every metric of that setting (clean and perturbed alike). With ``k = 1`` nobody is
skipped for length (every test input has at least one item); for ``n = 1`` first, middle and last
are the same item, by design.

Which replacement items (never padding, never an item of the user's input sequence, so never the
replaced item itself, and distinct among the k replacements):

- ``random``: uniform over the items not excluded.
- ``popular``: weighted by training popularity (occurrences in the training parts of all users,
  validation and test targets excluded); items never seen in training are never drawn.
- ``adversarial``: white-box, first order. With ``g = dL/de_t``, the gradient of the
  cross-entropy of the true test target (full softmax over all items, as in training) with
  respect to the input embedding at the replaced position, the gain of item ``j`` is
  ``g · (E_j - E_current)``; the item with the largest gain is chosen. For k > 1 the gradients
  of all k positions come from one clean pass and items are picked greedily, position by
  position (oldest first), each distinct from the ones already picked.

The test target itself is excluded too, for all three kinds: with history masking (the default),
inserting the target into the input would make it a forced miss, an artefact of the evaluation's
mask rather than a change of the model's ranking (an adversary could exploit the mask that way).
Users with no admissible replacement item (only on toy catalogues) are skipped as well.

Bidirectional models (BERT4Rec) predict from the history plus an appended mask token, which drops
the oldest item of a history already ``max_len`` long: replacing that item changes nothing, so
``first`` measures RBO 1 for those users (their adversarial gain is 0 everywhere).

The plan (columns and random / popular replacement items) depends only on the test split, the
seed and the settings: each setting draws from its own stream ``(seed, position, k[,
replacement])``, so a plan extended with new settings equals one drawn with all settings at once.
It is saved (``.npz``) next to the results and loaded by every model compared; adversarial items
depend on the model and are saved in the run folder.

Top-K lists come from the masked full-ranking scores (``mask_history`` as in the run's config):
the clean list masks the clean history, the perturbed list the perturbed one, so the inserted
item can never appear in the perturbed list and the removed item may now appear in it. Both
masks hold the items the model reads (``model.prediction_input``): for BERT4Rec, replacing an
item dropped for the mask token changes neither scores nor masks, so its RBO is exactly 1.

The package has one module per reason to change:

- :mod:`~catrec.robustness.plan`: settings and replacement plans (drawing, saving, loading);
- :mod:`~catrec.robustness.attack`: model passes (adversarial items, top-K lists and ranks);
- :mod:`~catrec.robustness.report`: per-setting metrics, :func:`evaluate_robustness`, the table;
- :mod:`~catrec.robustness.folder`: a run folder's ``robustness.json`` (:func:`run_robustness`).
"""

from catrec.robustness.attack import (
    adversarial_items,
    apply_replacements,
    replacement_gains,
    topk_and_ranks,
)
from catrec.robustness.folder import run_robustness
from catrec.robustness.plan import (
    PLAN_FORMAT,
    POSITIONS,
    REPLACEMENTS,
    ReplacementPlan,
    Setting,
    data_fingerprint,
    draw_replacements,
    load_or_draw_plan,
    real_lengths,
    select_columns,
    settings_grid,
    training_popularity,
)
from catrec.robustness.report import (
    RobustnessResult,
    evaluate_robustness,
    format_table,
    select_records,
    setting_metrics,
)

__all__ = [
    "PLAN_FORMAT",
    "POSITIONS",
    "REPLACEMENTS",
    "ReplacementPlan",
    "RobustnessResult",
    "Setting",
    "adversarial_items",
    "apply_replacements",
    "data_fingerprint",
    "draw_replacements",
    "evaluate_robustness",
    "format_table",
    "load_or_draw_plan",
    "real_lengths",
    "replacement_gains",
    "run_robustness",
    "select_columns",
    "select_records",
    "topk_and_ranks",
    "setting_metrics",
    "settings_grid",
    "training_popularity",
]
