"""Needle's exception types. Each names the problem; messages say what to do about it."""


class NeedleError(Exception):
    """Base class of every error Needle raises on bad input."""


class ShapeError(NeedleError, ValueError):
    """Operand shapes do not fit the operation (matmul, broadcast, elementwise, conv)."""


class DeviceMismatchError(NeedleError, ValueError):
    """An operation mixes tensors that live on different devices."""


class DTypeError(NeedleError, TypeError):
    """An unknown dtype, a dtype a device cannot hold, or operands of different dtypes."""


class DeviceUnavailableError(NeedleError, RuntimeError):
    """A device was asked to hold data but cannot run here (no GPU, driver or package)."""


class CompileError(NeedleError, RuntimeError):
    """``needle.compile`` cannot trace a function faithfully: a host read of a traced value,
    a random draw, state replaced instead of updated in place, a graph that keeps changing.
    The message names the op and the source line."""
