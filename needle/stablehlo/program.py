"""A loaded StableHLO function bound to a Needle device: the imported graph after the
compiler's passes, run on the cpu device by the IR's NumPy interpreter (every dtype
native) and on the others by the executor that runs ``needle.compile``'s graphs."""
import numpy as np

from ..autograd import Tensor, no_grad
from ..backend_ndarray import NDArray
from ..backend_ndarray.device import cpu
from ..compiler.api import Lowered
from ..compiler.codegen import generator_for
from ..compiler.executor import OPS as EXECUTOR_OPS, Executor
from ..compiler.ir import CORE_DTYPES, Graph
from ..compiler.ops import IMPORTED_OPS
from ..compiler.passes import run_passes
from ..compiler import reference
from ..compiler.reference import NP_DTYPES
from ..errors import DeviceMismatchError, DTypeError, ShapeError
from .mlir import UnsupportedError

_FLOATS = ("float32", "float64")


class Signature:
    """``inputs`` and ``outputs``: lists of ``(shape, dtype)`` of a program's arguments and
    results."""

    def __init__(self, graph):
        self.inputs = [(v.shape, v.dtype) for v in graph.inputs]
        self.outputs = [(v.shape, v.dtype) for v in graph.outputs]

    def __repr__(self):
        def spell(types):
            return ", ".join(f"{dtype}{list(shape)}" for shape, dtype in types)
        return f"({spell(self.inputs)}) -> ({spell(self.outputs)})"


class _Lowered(Lowered):
    def arguments(self, *args):
        return [a.numpy() if isinstance(a, Tensor) else np.asarray(a) for a in args]


_FLUSHES = {}


def _flushes_subnormals(device):
    """Whether ``device``'s float arithmetic flushes subnormals to zero (measured once per
    device: WGSL lets an adapter do it, and Vulkan on NVIDIA does)."""
    if device.name not in _FLUSHES:
        tiny = Tensor(np.array([2.0 ** -140], dtype=np.float32), device=device, dtype="float32")
        _FLUSHES[device.name] = float((tiny * 1.0).numpy()[0]) == 0.0
    return _FLUSHES[device.name]


def _has_subnormals(value):
    finite = np.abs(value[np.isfinite(value)])
    return bool(((finite > 0) & (finite < np.finfo(value.dtype).tiny)).any())


class Program:
    """A StableHLO function on a device (made by :func:`needle.stablehlo.load`).

    ``prog(*args)`` takes one NumPy array (or Needle Tensor) per argument, of the
    argument's shape and dtype, and returns a tuple with one result per output: a Tensor
    for a float result, a NumPy array for an integer or boolean one (Needle Tensors hold
    floats). ``prog.signature`` lists the types; ``prog.lower()`` the graph it runs.
    ``prog.aliases`` (``{output: argument}``) are the arguments the program donates to an
    output (JAX's ``donate_argnums``): one given as a Tensor is updated in place to that
    output's values and returned as it; a NumPy argument is left as it was.
    """

    def __init__(self, imported, device=None, opt_level=2):
        self.name = imported.name
        self.device = device if device is not None else cpu()
        self.opt_level = opt_level
        graph = imported.graph
        self.signature = Signature(graph)
        # the cpu device's arrays are NumPy: the IR's NumPy interpreter runs the graph there,
        # every dtype native; other devices run it through the executor
        self._native = self.device.name == "cpu"
        if not self._native:
            self._check_float_storage(imported)
        self.graph, self.pass_stats = run_passes(graph, opt_level)
        # donated arguments: run as new outputs, then written into the caller's Tensors
        self.aliases, self.graph.aliases = dict(self.graph.aliases), {}
        self._executor = None if self._native else Executor(
            self.graph, self.device, index_dtype=self._index_dtype, fused_kernels=opt_level >= 3,
            generator=generator_for(self.device) if opt_level >= 2 else None)

    def _check_float_storage(self, imported):
        """Refuse what a device that stores integers as floats could get wrong."""
        dtypes = self.device.backend.dtypes
        holds64 = "float64" in dtypes
        self._index_dtype = "float64" if holds64 else "float32"
        self._exact = exact = 2 ** (53 if holds64 else 24)
        for v in self.graph_values(imported.graph):
            if v.dtype not in CORE_DTYPES or (v.dtype in _FLOATS and v.dtype not in dtypes):
                raise DTypeError(f"@{self.name} uses {v.dtype}, which {self.device} does not "
                                 f"hold (it holds {', '.join(dtypes)}, with int32, int64 and "
                                 f"bool stored in them; the cpu device holds every dtype)")
        for node in imported.graph.walk():
            if node.op in IMPORTED_OPS and node.op not in EXECUTOR_OPS:  # (the reference's only)
                raise UnsupportedError(f"@{self.name}: {node.op} runs on the cpu device only "
                                       f"(for now), not on {self.device}")
        if _flushes_subnormals(self.device):
            for node in imported.graph.walk():
                value = node.attrs.get("value") if node.op == "constant" else None
                if value is not None and value.dtype.kind == "f" and _has_subnormals(value):
                    raise UnsupportedError(
                        f"@{self.name}: a {value.dtype} constant holds subnormal numbers, "
                        f"which {self.device} flushes to zero on this adapter (WGSL allows "
                        f"it; the cpu device keeps them)")
        if imported.hazards:
            raise UnsupportedError(f"{imported.hazards[0]}; on {self.device} (the cpu device "
                                   f"runs it)")
        if imported.int_bound > exact:
            raise UnsupportedError(
                f"@{self.name}: integer constants up to {imported.int_bound} exceed what "
                f"{self.device} stores exactly ({exact}: its integers live in "
                f"{self._index_dtype}; the cpu device runs it)")

    @staticmethod
    def graph_values(graph):
        """Every value of ``graph`` and of the regions inside it."""
        inner = [v for n in graph.walk() for region in n.regions or () for v in region.inputs]
        return list(graph.inputs) + inner + [v for n in graph.walk() for v in n.outputs]

    def __call__(self, *args):
        inputs = self.signature.inputs
        if len(args) != len(inputs):
            raise TypeError(f"@{self.name} takes {len(inputs)} arguments {self.signature}, "
                            f"got {len(args)}")
        arrays = [self._argument(i, a, shape, dtype)
                  for i, (a, (shape, dtype)) in enumerate(zip(args, inputs))]
        if self._native:
            outputs = reference.evaluate(self.graph, *[
                a.numpy() if isinstance(a, NDArray) else a for a in arrays])
            results = [Tensor.make_const(NDArray(o, device=self.device, dtype=o.dtype.name))
                       if o.dtype.name in _FLOATS else o for o in outputs]
        else:
            results = []
            for out, value in zip(self._executor(*arrays), self.graph.outputs):
                if value.dtype in _FLOATS:
                    results.append(Tensor.make_const(out))
                else:
                    results.append(self._executor.numpy([out], [value])[0])
        return tuple(self._update_donated(args, results))

    def _update_donated(self, args, results):
        """A donated float argument given as a Tensor takes its output's values in place
        (its version moves on, as with any in-place write) and is returned as that output."""
        for out, i in self.aliases.items():
            target = args[i]
            if isinstance(target, Tensor) and isinstance(results[out], Tensor):
                with no_grad():
                    target[...] = results[out]
                results[out] = target
        return results

    def _argument(self, i, a, shape, dtype):
        if isinstance(a, Tensor):
            a = a.realize_cached_data()
        if isinstance(a, NDArray):
            got_dtype, got_shape = str(a.dtype), a.shape
        else:
            a = np.asarray(a)
            got_dtype, got_shape = a.dtype.name, a.shape
        if got_dtype != np.dtype(NP_DTYPES[dtype]).name:
            raise DTypeError(f"@{self.name}: argument {i} is {got_dtype}, the program takes "
                             f"{dtype} (convert it first: nothing is converted silently)")
        if tuple(got_shape) != tuple(shape):
            raise ShapeError(f"@{self.name}: argument {i} has shape {tuple(got_shape)}, the "
                             f"program takes {tuple(shape)}")
        if isinstance(a, NDArray) and a.device != self.device:
            raise DeviceMismatchError(f"@{self.name}: argument {i} is on {a.device}, the "
                                      f"program runs on {self.device}")
        if not self._native and dtype not in _FLOATS and a.size and \
                np.abs(a.astype(np.int64)).max() > self._exact:
            raise UnsupportedError(f"@{self.name}: argument {i} holds integers beyond "
                                   f"{self._exact}, which {self.device} stores inexactly")
        return a

    def lower(self):
        """The Needle IR this program runs (``.as_text()``, ``.as_stablehlo()``)."""
        g = self.graph
        return _Lowered(Graph(g.inputs, g.nodes, g.outputs, self.aliases, g.name),
                        self.pass_stats, None)

    def __repr__(self):
        return f"<needle.stablehlo program @{self.name} {self.signature} on {self.device}>"
