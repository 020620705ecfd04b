"""Datasets, data loading and image augmentation (classic Needle ``needle.data`` API)."""
from .dataset import Dataset, NDArrayDataset
from .digits import digits_split, load_digits
from .loader import DataLoader, collate_ndarray
from .ptb import Corpus, Dictionary, batchify, get_batch
from .readers import CIFAR10Dataset, CIFARUnpickler, MNISTDataset, UnsafePickleError
from .transforms import RandomCrop, RandomFlipHorizontal, Transform

__all__ = ["Dataset", "NDArrayDataset", "DataLoader", "collate_ndarray", "MNISTDataset",
           "CIFAR10Dataset", "CIFARUnpickler", "UnsafePickleError", "Transform",
           "RandomFlipHorizontal", "RandomCrop", "load_digits", "digits_split",
           "Dictionary", "Corpus", "batchify", "get_batch"]
