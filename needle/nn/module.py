"""Module and Parameter: the containers every layer is built from."""
import numpy as np

from ..autograd import Tensor
from ..backend_ndarray import NDArray


class Parameter(Tensor):
    """A Tensor that a Module trains: found by ``Module.parameters()``."""


def _walk(value, prefix):
    """Yield (name, value) for Tensors and Modules inside attributes, lists, tuples, dicts."""
    if isinstance(value, (Tensor, Module)):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{prefix}.{i}" if prefix else str(i))


class Module:
    """Base class of layers. Subclasses set attributes in ``__init__`` and define ``forward``.

    Parameters, buffers (plain Tensors such as BatchNorm's running statistics) and child
    modules are found by walking the attributes, so assigning a new ``Parameter`` to an
    attribute is enough for ``parameters()`` and ``state_dict()`` to see it.
    """

    def __init__(self):
        self.training = True

    def _named(self, prefix=""):
        for name, value in _walk(self.__dict__, prefix):
            if isinstance(value, Module):
                yield name, value
                yield from value._named(name)
            else:
                yield name, value

    def named_parameters(self):
        return [(n, v) for n, v in self._named() if isinstance(v, Parameter)]

    def parameters(self):
        """Every Parameter of this module and its children, each once."""
        seen, out = set(), []
        for _, p in self.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def _children(self):
        """Every child module, recursively."""
        return [v for _, v in self._named() if isinstance(v, Module)]

    def train(self):
        self.training = True
        for m in self._children():
            m.training = True
        return self

    def eval(self):
        self.training = False
        for m in self._children():
            m.training = False
        return self

    def state_dict(self):
        """Name -> numpy array for every parameter and buffer."""
        return {n: v.numpy() for n, v in self._named() if isinstance(v, Tensor)}

    def load_state_dict(self, state):
        """Copy values (numpy arrays or Tensors) into this module's tensors, checking names
        and shapes."""
        tensors = {n: v for n, v in self._named() if isinstance(v, Tensor)}
        missing, unexpected = set(tensors) - set(state), set(state) - set(tensors)
        if missing or unexpected:
            raise KeyError(f"load_state_dict: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name, t in tensors.items():
            value = state[name].numpy() if isinstance(state[name], Tensor) else np.asarray(state[name])
            if value.shape != t.shape:
                raise ValueError(f"load_state_dict: {name} has shape {t.shape}, got {value.shape}")
            t.cached_data = NDArray(value, device=t.device, dtype=t.dtype)
        return self

    def to(self, device):
        """Move every parameter and buffer to ``device`` in place."""
        for _, t in self._named():
            if isinstance(t, Tensor):
                t.cached_data = t.realize_cached_data().to(device)
        return self

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")
