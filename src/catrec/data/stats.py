"""Dataset statistics printed by ``catrec data stats``."""

from __future__ import annotations

from typing import Any

import numpy as np

from catrec.data.readers import SequenceData
from catrec.data.split import SplitData

PERCENTILES = (0, 25, 50, 75, 90, 99, 100)


def dataset_stats(split: SplitData, raw: SequenceData | None = None) -> dict[str, Any]:
    """Counts, sequence-length percentiles and target-in-history shares of a split dataset.

    Counts, density and lengths describe ``raw`` (the dataset as read, before users with fewer
    than 3 interactions were dropped) when given, else ``split.data``. The two shares are over
    the users of the split:

    - ``test_target_in_history``: the test item occurs earlier in the user's full sequence;
    - ``test_target_in_input``: it occurs among the L most recent items before it (what a model
      sees, and what the evaluator masks by default).

    Percentiles use numpy's default (linear interpolation).
    """
    data = split.data
    src = raw if raw is not None else data
    lengths = src.lengths  # [U_src]

    # Users of the split: flag positions before each user's last item holding its test target.
    user_of = np.repeat(np.arange(data.n_users), data.lengths)  # [N]
    before_last = np.arange(data.n_interactions) < data.offsets[1:][user_of] - 1  # [N]
    match = before_last & (data.items == split.test_targets[user_of])  # [N]
    in_history = np.zeros(data.n_users, dtype=bool)
    in_history[user_of[match]] = True
    in_input = (split.test_inputs == split.test_targets[:, None]).any(axis=1)  # [U]

    pct = np.percentile(lengths, PERCENTILES)
    return {
        "users": int(src.n_users),
        "items": int(src.n_items),
        "interactions": int(src.n_interactions),
        "users_dropped_too_short": int(split.n_dropped),
        "density": float(src.n_interactions / (src.n_users * src.n_items)),
        "sequence_length": {
            "mean": round(float(lengths.mean()), 3),
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
        },
        "test_target_in_history": float(in_history.mean()),
        "test_target_in_input": float(in_input.mean()),
        "max_len": split.max_len,
    }
