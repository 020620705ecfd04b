"""The Optimizer base class: the parameters, their per-parameter state (``step`` and
buffers such as Adam's moments), gradient reset, and PyTorch-shaped checkpoints."""
import numbers

import numpy as np

from ..autograd import Tensor
from ..backend_ndarray import NDArray


def check_number(name, value, low=0.0, high=None):
    """``value`` as a float, checked to lie in ``[low, high)`` (no upper bound when
    ``high`` is None); the error names the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not value >= low or (high is not None and not value < high):  # NaN fails both
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return float(value)


class Optimizer:
    """Base class of optimizers: subclasses implement :meth:`step` and name their
    hyperparameters and per-parameter buffers.

    Needle optimizers have one set of hyperparameters (one "parameter group", in PyTorch's
    words) held as attributes, e.g. ``opt.lr``: set them between steps to change them, as
    the schedulers in :mod:`needle.optim.lr_scheduler` do.

    Per-parameter state lives in ``opt.state[param]``: a dict with ``"step"`` (the number
    of updates this parameter took part in) and the subclass's buffers (NDArrays).

    Args:
        params: an iterable of Tensors (usually ``model.parameters()``).
    """

    #: attribute names saved in ``state_dict()["param_groups"][0]`` (subclasses set them)
    hyperparameters = ()
    #: names of the per-parameter NDArrays a subclass keeps in ``self.state[p]``
    buffers = ()
    #: the learning rate before any scheduler changed it (set by the first scheduler)
    initial_lr = None

    def __init__(self, params):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors (e.g. model.parameters()), "
                            "not a single Tensor: wrap it in a list")
        self.params = list(params)
        seen = set()
        for i, p in enumerate(self.params):
            if id(p) in seen:  # it would be updated twice per step
                raise ValueError(f"params holds the same tensor twice (again at position {i}, "
                                 f"shape {p.shape}); pass each parameter once")
            seen.add(id(p))
        self.state = {}

    def step(self):
        """Update every parameter that has a gradient (parameters without one are skipped)."""
        raise NotImplementedError

    def reset_grad(self):
        """Clear every parameter's gradient (gradients accumulate across backward calls)."""
        for p in self.params:
            p.grad = None

    zero_grad = reset_grad

    def check_hyperparameters(self, **values):
        """Raise ValueError (naming the argument) for an out-of-range hyperparameter; the
        subclasses check theirs in ``__init__`` and in :meth:`load_state_dict`."""

    # -- helpers for step() ---------------------------------------------------------------
    def _with_grads(self):
        """(parameter, compact value, compact gradient) of each parameter that has a gradient."""
        for p in self.params:
            if p.grad is None:
                continue
            data, grad = p.realize_cached_data().compact(), p.grad.realize_cached_data().compact()
            if grad.shape != data.shape:
                raise ValueError(f"gradient of shape {grad.shape} does not match parameter {data.shape}")
            yield p, data, grad

    @staticmethod
    def _updated(p, data):
        """Record that a step wrote ``data`` as ``p``'s value (in place or as a new array),
        bumping ``p._version`` as every in-place write does."""
        if data is not p.cached_data:
            p.cached_data = data
        p._version += 1

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self):
        """The optimizer's state as plain Python values and numpy arrays, shaped as PyTorch's::

            {"state": {param_index: {"step": int, buffer_name: numpy array, ...}, ...},
             "param_groups": [{"lr": ..., <other hyperparameters>, "params": [0, 1, ...]}]}

        ``param_index`` is the position in the ``params`` given to the optimizer; parameters
        that never took a step have no entry. The arrays are copies (a later step does not
        change them). ``needle.save`` writes it (no pickle) and ``needle.load`` reads it back::

            needle.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, "ckpt.npz")
            checkpoint = needle.load("ckpt.npz")
            opt.load_state_dict(checkpoint["optimizer"])
        """
        state = {}
        for i, p in enumerate(self.params):
            s = self.state.get(p)
            if s is None:
                continue
            entry = {"step": int(s["step"])}
            entry.update((name, s[name].numpy()) for name in self.buffers if name in s)
            state[i] = entry
        group = {name: getattr(self, name) for name in self.hyperparameters}
        if self.initial_lr is not None:
            group["initial_lr"] = self.initial_lr
        group["params"] = list(range(len(self.params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and per-parameter state from :meth:`state_dict`'s output.

        The parameters are matched by position: the optimizer must have been made with
        the same number of parameters, in the same order, of the same shapes. Everything
        is checked before anything changes; a mismatch raises ValueError.
        """
        what = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{what}: expected a dict with keys 'state' and 'param_groups' "
                             f"(from state_dict())")
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise ValueError(f"{what}: Needle optimizers have one parameter group, the state "
                             f"dict has {len(groups)}")
        group = dict(groups[0])
        ids = list(group.pop("params", ()))
        if len(ids) != len(self.params):
            raise ValueError(f"{what}: the state dict is for {len(ids)} parameters, this "
                             f"optimizer has {len(self.params)}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{what}: repeated parameter indices {ids}")
        initial_lr = group.pop("initial_lr", None)
        missing = set(self.hyperparameters) - set(group)
        unexpected = set(group) - set(self.hyperparameters)
        if missing or unexpected:
            raise ValueError(f"{what}: hyperparameters missing {sorted(missing)}, unexpected "
                             f"{sorted(unexpected)} (a state dict of another optimizer?)")
        self.check_hyperparameters(**group)
        position = {pid: k for k, pid in enumerate(ids)}
        new_state = {}
        for pid, entry in state_dict["state"].items():
            if pid not in position:
                raise ValueError(f"{what}: state for parameter {pid!r}, which is not among "
                                 f"the group's params")
            p = self.params[position[pid]]
            entry = dict(entry)
            step = entry.pop("step", None)
            if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
                raise ValueError(f"{what}: parameter {pid}: 'step' must be an int >= 0, got {step!r}")
            names = set(entry)
            if names - set(self.buffers) or names and names != set(self.buffers):
                raise ValueError(f"{what}: parameter {pid}: buffers {sorted(names)}, expected "
                                 f"{sorted(self.buffers)} or none")
            s = {"step": int(step)}
            for name, value in entry.items():
                value = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
                if value.shape != p.shape:
                    raise ValueError(f"{what}: parameter {pid}: {name} has shape {value.shape}, "
                                     f"the parameter {p.shape}")
                s[name] = NDArray(value, device=p.device, dtype=p.dtype)
            new_state[p] = s
        for name, value in group.items():
            setattr(self, name, value)
        if initial_lr is not None:
            self.initial_lr = initial_lr
        self.state = new_state
