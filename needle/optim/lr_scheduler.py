"""Learning-rate schedulers with PyTorch's semantics (``torch.optim.lr_scheduler``).

A scheduler sets its optimizer's ``lr`` (Needle optimizers have one learning rate, no
parameter groups). Making one applies the schedule's epoch-0 value at once; call
``step()`` after each ``optimizer.step()`` (or once per epoch) to move to the next value.
As in PyTorch, each ``step()`` computes the new rate from the optimizer's current one (the
"chainable" form), so two schedulers stepping the same optimizer compose (a warm-up times
a decay), and the values equal PyTorch's to the last bit.

Example:
    >>> opt = needle.optim.SGD(model.parameters(), lr=0.1)
    >>> sched = needle.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    >>> for epoch in range(100):
    ...     train_one_epoch(model, opt)
    ...     sched.step()
"""
import math
import numbers

from .optimizer import Optimizer, check_number


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


class LRScheduler:
    """Base class of schedulers: subclasses define :meth:`_next_lr`.

    Attributes:
        optimizer: the optimizer whose ``lr`` this scheduler sets.
        base_lr: the optimizer's learning rate before any scheduler changed it
            (``optimizer.initial_lr``, which the first scheduler sets, as PyTorch sets
            ``group["initial_lr"]``).
        last_epoch: how many times :meth:`step` ran since the initial (epoch 0) step.

    Args:
        optimizer: a Needle :class:`~needle.optim.Optimizer`.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a needle.optim.Optimizer")
        self.optimizer = optimizer
        if optimizer.initial_lr is None:
            optimizer.initial_lr = optimizer.lr
        self.base_lr = optimizer.initial_lr
        self.last_epoch = -1
        self.step()

    def _next_lr(self):
        """The learning rate for ``self.last_epoch``, from the optimizer's current one."""
        raise NotImplementedError

    def step(self):
        """Advance one epoch (or iteration) and set the optimizer's ``lr``."""
        self.last_epoch += 1
        lr = self._next_lr()
        self.optimizer.lr = lr
        self._last_lr = [lr]

    def get_last_lr(self):
        """``[lr]``: the learning rate the last :meth:`step` set, in a one-element list as
        PyTorch returns one value per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """The scheduler's state (plain Python numbers and lists; not the optimizer, whose
        own ``state_dict()`` holds its ``lr``)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()
                if k not in self._not_saved}

    def load_state_dict(self, state_dict):
        """Restore :meth:`state_dict`'s output. As in PyTorch, make the scheduler before
        loading the optimizer's state: making a scheduler sets the optimizer's ``lr``."""
        unexpected = set(state_dict) - set(self.state_dict())
        if unexpected:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected keys "
                             f"{sorted(unexpected)} (a state dict of another scheduler?)")
        self.__dict__.update({k: (list(v) if isinstance(v, list) else v)
                              for k, v in state_dict.items()})

    _not_saved = ("optimizer",)


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs:
    ``lr = base_lr * gamma ** (epoch // step_size)``.

    Args:
        optimizer: the optimizer.
        step_size: period of the decay, in calls of :meth:`step` (>= 1).
        gamma: multiplicative factor (default 0.1).

    Example:
        >>> sched = StepLR(opt, step_size=30, gamma=0.1)  # 0.05 -> 0.005 at epoch 30 ...
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = _check_int("step_size", step_size, 1)
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer)

    def _next_lr(self):
        lr = self.optimizer.lr
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base learning rate to ``eta_min`` over ``T_max`` epochs:
    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``, computed
    step by step as PyTorch does (after ``T_max`` it rises again, a cosine of period
    ``2 * T_max``).

    Args:
        optimizer: the optimizer.
        T_max: number of epochs from the base learning rate to ``eta_min`` (>= 1).
        eta_min: the minimum learning rate (default 0).

    Example:
        >>> sched = CosineAnnealingLR(opt, T_max=100, eta_min=1e-5)
    """

    def __init__(self, optimizer, T_max, eta_min=0.0):
        self.T_max = _check_int("T_max", T_max, 1)
        self.eta_min = check_number("eta_min", eta_min)
        super().__init__(optimizer)

    def _next_lr(self):
        lr, epoch, t_max, eta_min = self.optimizer.lr, self.last_epoch, self.T_max, self.eta_min
        if epoch == 0:
            return lr
        if (epoch - 1 - t_max) % (2 * t_max) == 0:  # leaving the minimum (the ratio is 0/0)
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        return ((1 + math.cos(math.pi * epoch / t_max))
                / (1 + math.cos(math.pi * (epoch - 1) / t_max)) * (lr - eta_min) + eta_min)


class LinearLR(LRScheduler):
    """Linear warm-up (or decay) of a factor on the learning rate: ``start_factor`` at
    epoch 0 to ``end_factor`` at epoch ``total_iters``, then constant:
    ``lr = base_lr * (start + (end - start) * min(epoch, total_iters) / total_iters)``.

    Args:
        optimizer: the optimizer.
        start_factor: factor at epoch 0, in (0, 1] (default 1/3).
        end_factor: factor from epoch ``total_iters`` on, in [0, 1] (default 1).
        total_iters: epochs the change takes (default 5).

    Example:
        >>> sched = LinearLR(opt, start_factor=0.1, total_iters=10)  # 10-step warm-up
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        if not 0 < check_number("start_factor", start_factor) <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")
        if not check_number("end_factor", end_factor) <= 1:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor}")
        self.start_factor, self.end_factor = start_factor, end_factor
        self.total_iters = _check_int("total_iters", total_iters, 0)
        super().__init__(optimizer)

    def _next_lr(self):
        lr, epoch = self.optimizer.lr, self.last_epoch
        if epoch == 0:
            return lr * self.start_factor
        if epoch > self.total_iters:
            return lr
        delta = self.end_factor - self.start_factor
        return lr * (1.0 + delta / (self.total_iters * self.start_factor + (epoch - 1) * delta))


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)`` for a function of the epoch.

    ``state_dict()`` leaves the function out (save the code, not the function).

    Args:
        optimizer: the optimizer.
        lr_lambda: a callable taking the epoch (an int from 0) and returning a factor.

    Example:
        >>> sched = LambdaLR(opt, lambda epoch: 0.95 ** epoch)
    """

    _not_saved = ("optimizer", "lr_lambda")

    def __init__(self, optimizer, lr_lambda):
        if not callable(lr_lambda):
            raise TypeError(f"lr_lambda must be callable, got {lr_lambda!r}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def _next_lr(self):
        return self.base_lr * self.lr_lambda(self.last_epoch)


__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR", "LambdaLR"]
