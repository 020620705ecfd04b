"""Optimizers with PyTorch's update rules (``SGD``, ``Adam``, ``AdamW``) and learning-rate
schedulers (:mod:`needle.optim.lr_scheduler`).

A step is one backend call for all parameters where the backend has it (``sgd_update_many``,
``adam_update_many``: the cuda devices), one per parameter where it has ``sgd_update`` /
``adam_update``, else a few NDArray ops per parameter. Every optimizer has ``step()``,
``reset_grad()`` (alias ``zero_grad()``), ``state_dict()`` and ``load_state_dict()``.

Example:
    >>> opt = needle.optim.AdamW(model.parameters(), lr=1e-3)
    >>> sched = needle.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    >>> for x, y in batches:
    ...     opt.reset_grad()
    ...     loss_fn(model(x), y).backward()
    ...     opt.step()
    ...     sched.step()
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
