"""DataLoader: batches a Dataset into tuples of needle Tensors."""
import math

import numpy as np

from ..autograd import Tensor


class DataLoader:
    """Iterate over a dataset in batches; each batch is a tuple of ``needle.Tensor``, one per field.

    Args:
        dataset: a :class:`Dataset` whose items are tuples of arrays (or a single array).
        batch_size: samples per batch (>= 1).
        shuffle: draw a fresh ``np.random`` permutation every epoch (seed with ``np.random.seed``).
        drop_last: drop the final batch when it is smaller than ``batch_size``.
        device: device of the produced tensors (``None``: Needle's default).
        dtype: dtype every field is cast to before it becomes a Tensor.

    Example:
        >>> loader = DataLoader(NDArrayDataset(np.ones((10, 2)), np.arange(10)), batch_size=4)
        >>> [x.shape for x, y in loader]
        [(4, 2), (4, 2), (2, 2)]
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False,
                 device=None, dtype="float32"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = device
        self.dtype = dtype

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def batch_indices(self):
        """The index arrays of one epoch, in order (a fresh permutation when shuffling)."""
        n = len(self.dataset)
        order = np.random.permutation(n) if self.shuffle else np.arange(n)
        return [order[i:i + self.batch_size] for i in range(0, len(self) * self.batch_size,
                                                             self.batch_size)]

    def __iter__(self):
        for indices in self.batch_indices():
            # Per-sample fetch so that datasets with per-image transforms work unchanged.
            samples = [self._as_tuple(self.dataset[int(i)]) for i in indices]
            yield tuple(self._to_tensor(np.stack(field)) for field in zip(*samples))

    @staticmethod
    def _as_tuple(sample):
        return sample if isinstance(sample, tuple) else (sample,)

    def _to_tensor(self, batch):
        return Tensor(batch.astype(self.dtype, copy=False), device=self.device,
                             dtype=self.dtype, requires_grad=False)
