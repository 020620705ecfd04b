"""The 8x8 handwritten digits set (1797 samples, bundled as digits.npz): a tiny offline MNIST."""
import os

import numpy as np

_PATH = os.path.join(os.path.dirname(__file__), "digits.npz")


def load_digits():
    """Return ``(images, labels)``: float32 (1797, 8, 8) in [0, 1] and int64 (1797,)."""
    if not os.path.isfile(_PATH):
        raise FileNotFoundError(f"bundled digits data missing: {_PATH}")
    with np.load(_PATH) as data:
        images = data["images"].astype(np.float32) / np.float32(16)  # raw pixels are 0..16
        labels = data["labels"].astype(np.int64)
    return images, labels


def digits_split(test_fraction=0.2, seed=0):
    """Shuffle with a fixed seed and split; returns ``(X_train, y_train, X_test, y_test)``."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = load_digits()
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]
