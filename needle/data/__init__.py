"""Datasets, data loading and image augmentation (classic Needle ``needle.data`` API)."""
from .dataset import Dataset, NDArrayDataset
from .digits import digits_split, load_digits
from .loader import DataLoader
from .readers import CIFAR10Dataset, MNISTDataset
from .transforms import RandomCrop, RandomFlipHorizontal, Transform

__all__ = ["Dataset", "NDArrayDataset", "DataLoader", "MNISTDataset", "CIFAR10Dataset",
           "Transform", "RandomFlipHorizontal", "RandomCrop", "load_digits", "digits_split"]
