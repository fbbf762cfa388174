"""Data: readers for sequence files and interaction tables, the leave-one-out split, batching."""

from catrec.data.readers import (
    SequenceData,
    read_dataset,
    read_interaction_table,
    read_sequence_file,
    write_sequence_file,
)
from catrec.data.registry import resolve_dataset
from catrec.data.split import SplitData, leave_one_out, training_popularity, windows
from catrec.data.stats import dataset_stats

__all__ = [
    "SequenceData",
    "SplitData",
    "dataset_stats",
    "leave_one_out",
    "read_dataset",
    "read_interaction_table",
    "read_sequence_file",
    "resolve_dataset",
    "training_popularity",
    "windows",
    "write_sequence_file",
]
