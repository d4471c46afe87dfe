"""Splitting a dataset between the workers of a distributed run."""
import numpy as np
from mxnet.gluon.data import Sampler

__all__ = ['ShardSampler']


class ShardSampler(Sampler):
    """Sample indices of the ``part_index``-th of ``num_parts`` disjoint parts of a dataset.

    Without shuffling, part ``k`` holds the indices ``k, k + num_parts, k + 2 num_parts, ...``,
    so every part draws from all classes of a class-sorted dataset. With shuffling, every epoch
    draws one permutation of the whole dataset from ``numpy.random`` and part ``k`` takes every
    ``num_parts``-th index of it from position ``k``: workers seeded alike (the engine seeds
    every epoch from the run's seed) see disjoint parts of the same global shuffle, as a single
    process with their summed batch would, and a single part (``num_parts=1``) is the order
    gluon's ``shuffle=True`` gives.

    Parameters
    ----------
    length : int
        Dataset size.
    num_parts, part_index : int
    shuffle : bool
        A new random order every epoch.
    even : bool
        Give every part ``length // num_parts`` indices, dropping the last few samples, so
        that workers in lock-step training run the same number of batches.
    """

    def __init__(self, length, num_parts=1, part_index=0, shuffle=False, even=False):
        if not 0 <= part_index < num_parts:
            raise ValueError(f'part_index must lie in [0, {num_parts}), got {part_index}')
        self._length, self._parts, self._index = length, num_parts, part_index
        self._stop = length // num_parts * num_parts if even else length
        self._shuffle = shuffle

    def __iter__(self):
        order = np.random.permutation(self._length) if self._shuffle else np.arange(self._length)
        return iter(order[:self._stop][self._index::self._parts].tolist())

    def __len__(self):
        return len(range(self._index, self._stop, self._parts))
