"""DataLoader: batches a Dataset into tuples (or dicts) of needle Tensors; ``collate_ndarray``."""
import math
import numbers
from collections.abc import Mapping

import numpy as np

from ..autograd import Tensor


def _stack(values, field):
    """``np.stack`` of one field of every sample; ValueError naming the field on a mismatch."""
    try:
        return np.stack([v.numpy() if isinstance(v, Tensor) else np.asarray(v) for v in values])
    except ValueError as e:
        shapes = sorted({np.shape(v) for v in values}, key=str)
        raise ValueError(f"collate: field {field!r} has different shapes across the batch "
                         f"({', '.join(map(str, shapes))}); cannot stack them") from e


def _to_tensor(array, device, dtype):
    return Tensor(array.astype(dtype, copy=False), device=device, dtype=dtype,
                  requires_grad=False)


def collate_ndarray(batch, device=None, dtype="float32"):
    """Stack a list of samples into one batch of needle Tensors (NDArray backend), field by field.

    ``batch`` is a list of samples, all of the same structure:

    * tuples ``(x, y, ...)`` of any length -> a tuple of Tensors, one per field;
    * dicts ``{"x": ..., "y": ...}`` -> a dict of Tensors with the same keys;
    * lists ``[x, y]`` holding arrays (not only numbers) -> fields, as tuples (PyTorch's
      default collate does the same);
    * anything else (one array, a list of numbers, a number or Tensor per sample) -> a
      1-tuple ``(Tensor,)``.

    Each field is stacked along a new first (batch) axis and cast to ``dtype``: every field,
    labels included, becomes a ``float32`` Tensor by default, as in classic Needle (index
    ops such as ``one_hot`` and ``nn.Embedding`` take float ids).

    Args:
        batch: a non-empty list of samples.
        device: device of the Tensors (``None``: Needle's default).
        dtype: dtype every field is cast to.

    Example:
        >>> x, y = collate_ndarray([(np.ones(2), 0), (np.zeros(2), 1)])
        >>> x.shape, y.numpy()
        ((2, 2), array([0., 1.], dtype=float32))
    """
    if len(batch) == 0:
        raise ValueError("collate_ndarray: empty batch")
    first = batch[0]
    if isinstance(first, Mapping):
        keys = list(first)
        for sample in batch:
            if not isinstance(sample, Mapping) or set(sample) != set(keys):
                got = (sorted(map(str, sample)) if isinstance(sample, Mapping)
                       else type(sample).__name__)
                raise ValueError(f"collate_ndarray: samples must all be dicts with keys "
                                 f"{sorted(map(str, keys))}; got {got}")
        return {k: _to_tensor(_stack([s[k] for s in batch], k), device, dtype) for k in keys}
    if isinstance(first, list) and not all(isinstance(v, numbers.Number) for v in first):
        # [x, y] samples (arrays, not a list of numbers) are fields, as in PyTorch
        batch = [tuple(sample) if isinstance(sample, list) else sample for sample in batch]
        first = batch[0]
    if isinstance(first, tuple):
        for sample in batch:
            if not isinstance(sample, tuple) or len(sample) != len(first):
                got = len(sample) if isinstance(sample, tuple) else type(sample).__name__
                raise ValueError(f"collate_ndarray: samples must all be tuples of "
                                 f"{len(first)} fields; got {got}")
        return tuple(_to_tensor(_stack(field, i), device, dtype)
                     for i, field in enumerate(zip(*batch)))
    return (_to_tensor(_stack(batch, 0), device, dtype),)


class DataLoader:
    """Iterate over a dataset in batches of needle Tensors.

    Batches have the structure of the dataset's items (see :func:`collate_ndarray`): a
    tuple of Tensors for tuple items (of any length: ``(x,)``, ``(x, y)``, ``(x, y, w)``...),
    a dict of Tensors with the same keys for dict items, and a 1-tuple ``(Tensor,)`` for
    items that are a single array. Every field is cast to ``dtype`` (float32 by default,
    integer labels included, as in classic Needle).

    Args:
        dataset: a :class:`Dataset` (anything with ``__getitem__`` and ``__len__``).
        batch_size: samples per batch (>= 1).
        shuffle: draw a fresh ``np.random`` permutation every epoch (seed with ``np.random.seed``).
        drop_last: drop the final batch when it is smaller than ``batch_size``
            (``len(loader)`` counts only full batches then).
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
            samples = [self.dataset[int(i)] for i in indices]
            yield collate_ndarray(samples, self.device, self.dtype)
