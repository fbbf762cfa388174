"""Dataset statistics printed by ``catrec data stats``."""

from __future__ import annotations

from typing import Any

import numpy as np

from catrec.data.readers import SequenceData
from catrec.data.split import SplitData


def dataset_stats(split: SplitData, raw: SequenceData | None = None) -> dict[str, Any]:
    """Counts, sequence-length percentiles and target-in-history shares of a split dataset.

    ``test_target_in_history`` is the share of users whose test item occurs earlier in their full
    sequence; ``test_target_in_input`` counts only the L most recent items (what a model sees and
    what the evaluator masks by default).
    """
    data = split.data
    lengths = (raw or data).lengths
    starts, ends = data.offsets[:-1], data.offsets[1:]
    user_of = np.repeat(np.arange(data.n_users), data.lengths)
    is_before_test = np.arange(len(data.items)) < np.repeat(ends - 1, data.lengths)
    hits = np.zeros(data.n_users, dtype=bool)
    match = (data.items == split.test_targets[user_of]) & is_before_test
    hits[user_of[match]] = True
    del starts
    pct = np.percentile(lengths, [0, 25, 50, 75, 90, 99, 100])
    return {
        "users": int((raw or data).n_users),
        "items": int((raw or data).n_items),
        "interactions": int((raw or data).n_interactions),
        "users_dropped_too_short": int(split.n_dropped),
        "density": float((raw or data).n_interactions / ((raw or data).n_users * (raw or data).n_items)),
        "sequence_length": {
            "mean": round(float(lengths.mean()), 3),
            **{f"p{int(p)}": float(v) for p, v in zip([0, 25, 50, 75, 90, 99, 100], pct, strict=True)},
        },
        "test_target_in_history": float(hits.mean()),
        "test_target_in_input": float((split.test_inputs == split.test_targets[:, None]).any(1).mean()),
        "max_len": split.max_len,
    }
