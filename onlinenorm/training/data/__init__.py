"""Datasets: real file formats, a synthetic generator, subsets, augmentation, batching.

Typical use::

    data = load_dataset("cifar10", "data/cifar10", subset=0.1)
    loader = BatchLoader(data.train, 128, mean=data.mean, std=data.std,
                         augment=data.augment, shuffle=True, drop_last=True, seed=0)
"""

from .datasets import DATASETS, SYNTH_DEFAULTS, Dataset, channel_stats, load_dataset, write_synthetic
from .errors import DatasetError
from .loader import BatchLoader
from .split import Split

__all__ = [
    "DATASETS",
    "SYNTH_DEFAULTS",
    "BatchLoader",
    "Dataset",
    "DatasetError",
    "Split",
    "channel_stats",
    "load_dataset",
    "write_synthetic",
]
