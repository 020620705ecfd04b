"""Helpers shared by the tests that compare Needle with PyTorch CPU (float32)."""
import numpy as np
import torch

import needle
import needle.nn as nn

RTOL, ATOL = 1e-4, 1e-5


def seeded(seed):
    """Fresh, reproducible randomness for numpy, needle's initialisers and torch."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return np.random.default_rng(seed)


def tensor(x, device, requires_grad=True):
    return needle.Tensor(np.asarray(x, dtype=np.float32), device=device, dtype="float32",
                         requires_grad=requires_grad)


def param(x, device):
    return nn.Parameter(tensor(x, device))


def npy(t):
    if isinstance(t, torch.Tensor):
        return t.detach().numpy()
    if hasattr(t, "numpy"):
        return t.numpy()
    return np.asarray(t)


def close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(npy(actual), npy(expected), rtol=rtol, atol=atol, err_msg=what)
