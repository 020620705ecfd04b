"""``needle.save`` / ``needle.load``: state dicts as NumPy ``.npz`` files (no pickle)."""
import numpy as np

from .autograd import Tensor


def save(state_dict, path):
    """Write a ``{name: numpy array or Tensor}`` dict (e.g. ``module.state_dict()``)."""
    arrays = {k: v.numpy() if isinstance(v, Tensor) else np.asarray(v) for k, v in state_dict.items()}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load(path):
    """Read a dict written by :func:`save`; pass it to ``module.load_state_dict``."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
