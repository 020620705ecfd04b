"""Dataset base class and an in-memory dataset over NumPy arrays."""
import numpy as np


class Dataset:
    """Base class of map-style datasets: subclasses define ``__getitem__`` and ``__len__``.

    Args:
        transforms: optional list of callables, applied in order to each image by
            :meth:`apply_transforms`.

    Example:
        >>> class Squares(Dataset):
        ...     def __getitem__(self, i): return (np.float32(i * i),)
        ...     def __len__(self): return 4
        >>> len(Squares())
        4
    """

    def __init__(self, transforms=None):
        self.transforms = transforms

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError

    def apply_transforms(self, x):
        for transform in self.transforms or ():
            x = transform(x)
        return x


class NDArrayDataset(Dataset):
    """A dataset whose sample ``i`` is ``(a[i] for a in arrays)``.

    Args:
        *arrays: one or more arrays sharing the same first dimension (the sample axis).

    Example:
        >>> ds = NDArrayDataset(np.zeros((5, 3)), np.arange(5))
        >>> len(ds), int(ds[2][1])
        (5, 2)
    """

    def __init__(self, *arrays):
        super().__init__()
        if not arrays:
            raise ValueError("NDArrayDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"NDArrayDataset arrays must have the same length; got {lengths}")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)
