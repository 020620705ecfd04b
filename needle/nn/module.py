"""Module and Parameter: the containers every layer is built from, and ModuleList."""
from collections import namedtuple

import numpy as np

from ..autograd import Tensor
from ..backend_ndarray import NDArray
from ..errors import DTypeError


class Parameter(Tensor):
    """A Tensor that a Module trains: found by ``Module.parameters()``.

    Example:
        >>> layer = needle.nn.Linear(3, 2)
        >>> layer.scale = needle.nn.Parameter(needle.init.ones(2))
        >>> len(layer.parameters())
        3
    """


def _walk(value, prefix):
    """Yield (name, value) for Tensors and Modules inside attributes, lists, tuples, dicts.
    A Module is yielded, not entered: its own members are its business."""
    if isinstance(value, (Tensor, Module)):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{prefix}.{i}" if prefix else str(i))


def check_dtype(layer, x, param):
    """Raise ``DTypeError`` unless input ``x`` has the dtype of the layer's ``param``.

    Ops refuse mixed dtypes too, but deep inside a layer; this names the layer and both
    dtypes where the mistake is made (the layer's call)."""
    if x.dtype != param.dtype:
        raise DTypeError(
            f"{type(layer).__name__}: input has dtype {x.dtype} but the layer's parameters "
            f"are {param.dtype}; convert the input (x.astype({param.dtype!r})) or build the "
            f"layer with dtype={x.dtype!r}")


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` did not match: names the module has but the state lacks
    (``missing_keys``) and names the state has but the module lacks (``unexpected_keys``),
    each a sorted list. As in PyTorch."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


class Module:
    """Base class of layers. Subclasses set attributes in ``__init__`` and define ``forward``.

    Parameters, buffers (plain Tensors such as BatchNorm's running statistics) and child
    modules are found by walking the attributes (also inside lists, tuples and dicts), so
    assigning a new ``Parameter`` or layer to an attribute is enough for ``parameters()``,
    ``state_dict()`` and ``children()`` to see it. Names are attribute paths:
    ``"fc.weight"``, ``"rnn_cells.0.W_ih"``.

    Example:
        >>> class MLP(needle.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc1, self.fc2 = needle.nn.Linear(4, 8), needle.nn.Linear(8, 2)
        ...     def forward(self, x):
        ...         return self.fc2(needle.ops.relu(self.fc1(x)))
        >>> net = MLP()
        >>> [name for name, _ in net.named_parameters()]
        ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
        >>> net
        MLP(
          (fc1): Linear(in_features=4, out_features=8, bias=True)
          (fc2): Linear(in_features=8, out_features=2, bias=True)
        )
    """

    def __init__(self):
        self.training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # -- walking the tree -----------------------------------------------------------------
    def _members(self, prefix):
        """(name, value) of the Tensors and Modules this module holds directly (children's
        contents excluded). Containers override it to name their items."""
        return _walk(self.__dict__, prefix)

    def _named(self, prefix=""):
        """Every Tensor and Module below this one, pre-order, with duplicates (a module
        held twice is walked twice, under both names)."""
        for name, value in self._members(prefix):
            yield name, value
            if isinstance(value, Module):
                yield from value._named(name)

    def named_children(self):
        """(name, module) for each direct child, in attribute order, each module once."""
        seen, out = set(), []
        for name, value in self._members(""):
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                out.append((name, value))
        return out

    def children(self):
        """The direct child modules, in order, each once."""
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix=""):
        """(name, module) for this module (named ``prefix``, ``""`` by default) and every
        module below it, pre-order, each module once (as PyTorch)."""
        seen, out = set(), []

        def visit(name, module):
            if id(module) in seen:
                return
            seen.add(id(module))
            out.append((name, module))
            for child_name, child in module._members(name):
                if isinstance(child, Module):
                    visit(child_name, child)

        visit(prefix, self)
        return out

    def modules(self):
        """This module and every module below it, pre-order, each once."""
        return [m for _, m in self.named_modules()]

    def _children(self):
        """Every module below this one (not self), recursively, with duplicates."""
        return [v for _, v in self._named() if isinstance(v, Module)]

    def named_parameters(self):
        """(name, Parameter) for every parameter below this module, each parameter once
        (under the first name it is found by)."""
        seen, out = set(), []
        for name, value in self._named():
            if isinstance(value, Parameter) and id(value) not in seen:
                seen.add(id(value))
                out.append((name, value))
        return out

    def parameters(self):
        """Every Parameter of this module and its children, each once."""
        return [p for _, p in self.named_parameters()]

    def apply(self, fn):
        """Call ``fn(module)`` on every child (recursively, children first) and then on this
        module, as PyTorch; returns self. Example: ``net.apply(init_weights)``."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def zero_grad(self):
        """Set every parameter's ``.grad`` to None (the optimizer's ``reset_grad`` does the
        same for the parameters it holds)."""
        for p in self.parameters():
            p.grad = None

    # -- modes ----------------------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (Dropout drops, BatchNorm uses batch statistics) for this module and
        every module below it; ``train(False)`` is ``eval()``. Returns self."""
        self.training = bool(mode)
        for m in self._children():
            m.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode for this module and every module below it. Returns self."""
        return self.train(False)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self):
        """Name -> numpy array (a copy) for every parameter and buffer."""
        return {n: v.numpy() for n, v in self._named() if isinstance(v, Tensor)}

    def load_state_dict(self, state, strict=True):
        """Copy values (numpy arrays or Tensors) into this module's tensors in place (the
        Parameter objects stay the same, so an optimizer holding them keeps working).

        Args:
            state: name -> array, as ``state_dict()`` returns (or ``needle.load`` reads).
            strict: if True, a name missing from ``state`` or a name the module does not
                have raises ``KeyError``; if False, both are skipped and reported.

        A shape mismatch raises ``ValueError`` either way. Returns ``IncompatibleKeys``,
        the ``(missing_keys, unexpected_keys)`` namedtuple (empty lists when strict).
        """
        tensors = {n: v for n, v in self._named() if isinstance(v, Tensor)}
        missing, unexpected = sorted(set(tensors) - set(state)), sorted(set(state) - set(tensors))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing {missing}, unexpected {unexpected} "
                           f"(strict=False loads the rest)")
        values = {}
        for name, t in tensors.items():  # check every shape before changing anything
            if name not in state:
                continue
            value = state[name]
            value = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
            if value.shape != t.shape:
                raise ValueError(f"load_state_dict: {name} has shape {t.shape}, got "
                                 f"{value.shape}")
            values[name] = value
        for name, value in values.items():
            t = tensors[name]
            new = NDArray(value, device=t.device, dtype=t.dtype)
            if t.cached_data is not None and t.cached_data.is_compact():
                t.cached_data[...] = new  # into the same buffer, as PyTorch copies (and a
            else:                         # compiled step keeps reading it)
                t.cached_data = new
            t._version += 1  # an in-place write
        return IncompatibleKeys(missing, unexpected)

    def to(self, device):
        """Move every parameter and buffer to ``device`` in place. Returns self."""
        seen = set()
        for _, t in self._named():
            if isinstance(t, Tensor) and id(t) not in seen:
                seen.add(id(t))
                t.cached_data = t.realize_cached_data().to(device)
                t._version += 1
        return self

    # -- printing -------------------------------------------------------------------------
    def extra_repr(self):
        """The layer's settings, shown inside its ``repr``: override in layers, as in
        PyTorch (``Linear``: ``in_features=4, out_features=2, bias=True``)."""
        return ""

    def _repr_children(self):
        """(label, module) shown in ``repr``: every child module, duplicates included."""
        return [(n, v) for n, v in self._members("") if isinstance(v, Module)]

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + repr(child).replace("\n", "\n  ")
                       for name, child in self._repr_children()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{type(self).__name__}({body})"


class ModuleList(Module):
    """A list of modules whose parameters the parent finds (as ``torch.nn.ModuleList``);
    it has no ``forward``: the parent decides how to call the items.

    Args:
        modules: an iterable of modules (optional).

    Supports ``append``, ``extend``, ``insert``, indexing (a slice gives a ModuleList),
    assignment and deletion by index, ``len`` and iteration. Its items are named ``"0"``,
    ``"1"``... (``"layers.0.weight"`` in the parent's ``state_dict``).

    Example:
        >>> layers = needle.nn.ModuleList([needle.nn.Linear(4, 4) for _ in range(3)])
        >>> _ = layers.append(needle.nn.ReLU())      # returns the list, as in PyTorch
        >>> len(layers), len(layers.parameters())
        (4, 6)
    """

    def __init__(self, modules=None):
        super().__init__()
        self._items = []
        if modules is not None:
            self.extend(modules)

    @staticmethod
    def _checked(module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds modules, got {type(module).__name__}")
        return module

    def _members(self, prefix):
        return _walk(self._items, prefix)

    def _repr_children(self):
        return [(str(i), m) for i, m in enumerate(self._items)]

    def append(self, module):
        self._items.append(self._checked(module))
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        self._items.insert(index, self._checked(module))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return type(self)(self._items[index])
        return self._items[index]

    def __setitem__(self, index, module):
        self._items[index] = self._checked(module)

    def __delitem__(self, index):
        del self._items[index]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(): iterate over it and call "
                                  "the modules (or use Sequential)")
