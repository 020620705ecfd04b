"""Losses with PyTorch's ``reduction`` argument: CrossEntropyLoss, MSELoss, L1Loss.
(``SoftmaxLoss``, classic Needle's mean cross-entropy, is in ``basic``.)"""
import numpy as np

from .. import init, ops
from ..autograd import Tensor
from ..errors import ShapeError
from .basic import SoftmaxLoss
from .module import Module

REDUCTIONS = ("mean", "sum", "none")


def _reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    total = ops.summation(loss)
    return total / loss.size if reduction == "mean" else total


class _ElementwiseLoss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _reduction(reduction)

    def _difference(self, input, target):
        if input.shape != target.shape:
            raise ShapeError(f"{type(self).__name__}: input {input.shape} and target "
                             f"{target.shape} must have the same shape")
        return input - target

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class MSELoss(_ElementwiseLoss):
    """Squared error ``(input - target) ** 2``, averaged (``"mean"``, the default), summed
    (``"sum"``) or kept elementwise (``"none"``), as ``torch.nn.MSELoss``. Gradients flow to
    both arguments. Shapes must be equal (PyTorch broadcasts, with a warning).

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> prediction, target = needle.init.randn(4, 3), needle.init.randn(4, 3)
        >>> needle.nn.MSELoss()(prediction, target).shape
        ()
    """

    def forward(self, input, target):
        d = self._difference(input, target)
        return _reduce(d * d, self.reduction)


class L1Loss(_ElementwiseLoss):
    """Absolute error ``|input - target|`` with ``reduction`` as ``MSELoss``
    (``torch.nn.L1Loss``). ``|d|`` is computed as ``relu(d) + relu(-d)``, whose gradient at
    ``d == 0`` is 0, as PyTorch's (``sign(0) = 0``).

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> prediction, target = needle.init.randn(4, 3), needle.init.randn(4, 3)
        >>> needle.nn.L1Loss(reduction="none")(prediction, target).shape
        (4, 3)
    """

    def forward(self, input, target):
        d = self._difference(input, target)
        return _reduce(ops.relu(d) + ops.relu(-d), self.reduction)


class CrossEntropyLoss(SoftmaxLoss):
    """Softmax cross-entropy of ``(batch, classes)`` logits and integer class labels
    (``torch.nn.CrossEntropyLoss``): ``logsumexp(logits[i] - logits[i, y[i]])`` per row,
    averaged over the batch (``"mean"``), summed (``"sum"``) or per row (``"none"``,
    shape (batch,)).

    Args:
        reduction: ``"mean"`` (the default: the same value as ``SoftmaxLoss``), ``"sum"``
            or ``"none"``.

    Labels are class indices (an int or float Tensor, a NumPy array or a list); no class
    weights, ``ignore_index``, label smoothing, probability targets or (N, C, d1, ...)
    inputs. "mean" and "sum" run the fused cross-entropy kernel where the backend has it.

    Example:
        >>> loss_fn = needle.nn.CrossEntropyLoss(reduction="none")
        >>> loss_fn(needle.init.randn(4, 10), [1, 0, 3, 9]).shape
        (4,)
    """

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _reduction(reduction)

    def forward(self, logits, y):
        if not isinstance(y, Tensor):
            y = np.asarray(y)
        if self.reduction != "none":
            loss = ops.softmax_cross_entropy(logits, y)
            return loss if self.reduction == "mean" else loss * logits.shape[0]
        if logits.ndim != 2:
            raise ShapeError(f"CrossEntropyLoss expects (batch, classes) logits, got "
                             f"{logits.shape}")
        batch, classes = logits.shape
        labels = init.class_indices(y, classes)  # int64 NumPy, checked to be in [0, classes)
        if labels.shape != (batch,):
            raise ShapeError(f"labels of shape {labels.shape} do not match logits "
                             f"{logits.shape}; expected ({batch},)")
        # logsumexp(z - z_y), z_y gathered: no cancellation of two large numbers, and no
        # (batch, classes) one-hot
        picked = ops.reshape(logits[np.arange(batch), labels], (batch, 1))
        return ops.logsumexp(logits - ops.broadcast_to(picked, logits.shape), (1,))

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"
