"""Readers for the MNIST (gzipped idx) and CIFAR-10 (python pickle) file formats."""
import gzip
import os
import pickle

import numpy as np

from .dataset import Dataset

_IDX_IMAGES, _IDX_LABELS = 2051, 2049


def _check_exists(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such data file: {path}")


def _read_idx(path, magic):
    """Return the uint8 payload of a gzipped idx file, shaped by its header."""
    _check_exists(path)
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an idx file ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: bad idx magic number {found}, expected {magic}")
    ndim = raw[3]  # the magic's low byte is the number of dimensions
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: idx header truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(dims):
        raise ValueError(f"{path}: header says shape {dims} but holds {data.size} bytes")
    return data.reshape(dims)


class MNISTDataset(Dataset):
    """MNIST from gzipped idx files; sample ``i`` is ``(image, label)`` with ``image`` a flat
    float32 vector in [0, 1] of length rows * cols (784 for MNIST) and ``label`` an int64.

    Args:
        image_filename: path of the ``*-images-idx3-ubyte.gz`` file.
        label_filename: path of the ``*-labels-idx1-ubyte.gz`` file.
        transforms: optional list of transforms, applied to the rows x cols x 1 image.

    Example:
        >>> ds = MNISTDataset("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
        >>> x, y = ds[0]; x.shape
        (784,)
    """

    def __init__(self, image_filename, label_filename, transforms=None):
        super().__init__(transforms)
        images = _read_idx(image_filename, _IDX_IMAGES)
        labels = _read_idx(label_filename, _IDX_LABELS)
        if len(images) != len(labels):
            raise ValueError(f"{image_filename} holds {len(images)} images but "
                             f"{label_filename} holds {len(labels)} labels")
        self.image_shape = images.shape[1:]
        self.images = (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32)
        self.labels = labels.astype(np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transforms:
            image = self.apply_transforms(image.reshape(*self.image_shape, 1)).reshape(-1)
        return image, self.labels[index]


class CIFAR10Dataset(Dataset):
    """CIFAR-10 from the python-pickle batches; sample ``i`` is ``(image, label)`` with
    ``image`` float32 in [0, 1] shaped (3, 32, 32) and ``label`` an int64.

    Args:
        base_folder: folder holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.
        train: read the five training batches (True) or ``test_batch`` (False).
        p: kept for compatibility with the classic Needle signature; unused.
        transforms: optional list of transforms, applied to the 32 x 32 x 3 (HWC) image.

    Example:
        >>> ds = CIFAR10Dataset("data/cifar-10-batches-py", train=False)
        >>> x, y = ds[0]; x.shape
        (3, 32, 32)
    """

    def __init__(self, base_folder, train=True, p=0.5, transforms=None):
        super().__init__(transforms)
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        batches = [self._read_batch(os.path.join(base_folder, name)) for name in names]
        self.images = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
        self.images = self.images.astype(np.float32) / np.float32(255)
        self.labels = np.concatenate([b[1] for b in batches])

    @staticmethod
    def _read_batch(path):
        _check_exists(path)
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise ValueError(f"{path}: not a CIFAR-10 batch (needs b'data' and b'labels')")
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise ValueError(f"{path}: expected data (N, 3072) and N labels, got data "
                             f"{data.shape} and {len(labels)} labels")
        return data, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transforms:  # transforms work on HWC images
            image = self.apply_transforms(image.transpose(1, 2, 0)).transpose(2, 0, 1)
        return image, self.labels[index]
