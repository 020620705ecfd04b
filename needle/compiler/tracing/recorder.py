"""The trace device: a backend that runs every contract op for real *and* records it.

While a step is traced, each Needle device's backend is replaced by a
:class:`RecordingBackend` around it. The step runs as it always does (so the traced call
gives the caller its real result), and every op the backend is asked for appends IR nodes
to one graph. The tracer follows *buffers*: each flat buffer holds an SSA value that its
last write made. A buffer read before the trace wrote it is a graph input (an argument's,
a parameter, an optimizer buffer); one written in place gets a new value, which becomes an
output aliased to its input. Views reach the backend as ``(shape, strides, offset)`` and
are recorded as the movement ops that make them (:mod:`.views`).
"""
import os
import traceback

import numpy as np

from ...errors import CompileError
from ..ir import TensorType
from . import fused, views
from .builder import Builder
from .scalars import is_traced, plain

_UNARY = {"neg": "negate", "exp": "exponential", "log": "log", "tanh": "tanh",
          "sigmoid": "logistic", "sqrt": "sqrt", "abs": "abs", "sin": "sine", "cos": "cosine"}
_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide",
           "pow": "power", "maximum": "maximum", "minimum": "minimum"}
_COMPARE = {"eq": "EQ", "ne": "NE", "lt": "LT", "le": "LE", "gt": "GT", "ge": "GE"}
#: the fused ops recorded as composites (see :mod:`.fused`); the others are declined, so
#: the ops layer composes them from simple ops that the passes can see through
RECORDED_FUSED = ("cross_entropy", "embedding", "embedding_backward", "attention",
                  "attention_backward", "lstm", "lstm_backward", "batchnorm_train",
                  "batchnorm_train_backward", "conv", "conv_backward", "sgd_update",
                  "adam_update")

def _activations(nhwc_shape, channels_first):
    """The stored shape of activations of NHWC shape ``nhwc_shape``."""
    n, h, w, c = nhwc_shape
    return (n, c, h, w) if channels_first else (n, h, w, c)


_NEEDLE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


#: Needle's plumbing between an op and the backend: not worth naming in an error
_PLUMBING = ("recorder.py", "ndarray.py", "autograd.py")


def user_line():
    """``(where, what)``: the innermost frame outside Needle (``file:line: code``) and the
    Needle function it called, with the Needle code that made the request when that is
    deeper inside (an op reading indices on the host, say)."""
    frames = traceback.extract_stack()[:-1]
    called, inner = None, None
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if path.startswith(_NEEDLE_DIR + os.sep):
            called = frame.name
            if inner is None and os.path.basename(path) not in _PLUMBING:
                inner = frame
            continue
        called = f"{called}()" if called else "a host read"
        if inner is not None and inner.name + "()" != called:
            called += (f" (through {inner.name} at "
                       f"{os.path.relpath(inner.filename, os.path.dirname(_NEEDLE_DIR))}"
                       f":{inner.lineno})")
        return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}", called
    return "<unknown>", called


class Trace:
    """The graph being recorded and what the tracer knows about every buffer it saw."""

    def __init__(self, graph, args_of_handles):
        self.graph, self.b = graph, Builder(graph)
        self.values = {}       # id(buffer) -> its current value
        self.buffers = {}      # id(buffer) -> buffer (held: ids stay unique during the trace)
        self.allocated = {}    # ids of buffers the trace allocated, in order (as keys)
        self.inputs = {}       # id(buffer) -> the graph input it became
        self.written = set()   # ids of buffers that existed before and were written
        self.arg_of = dict(args_of_handles)  # id(buffer) -> (argument name) for arguments
        self.scalars = {}      # (expression, dtype) -> placeholder rank-0 input
        self.guards = []       # (expression, value) decisions Python made on Scalars
        self.device = None
        self._varying = {}     # value -> whether it depends on a graph input

    # -- buffers ----------------------------------------------------------------------------
    def hold(self, buf):
        self.buffers[id(buf)] = buf

    def read(self, buf, shape=None):
        """The current value of ``buf`` (reshaped to ``shape`` if given)."""
        value = self.values.get(id(buf))
        if value is None:
            if id(buf) in self.allocated:
                # new memory no op wrote yet (stack and concatenate write an output piece
                # by piece): its elements are unspecified, zeros are as good as any
                value = self.b.full(0.0, (buf.size,), np.dtype(buf.dtype).name)
            else:
                value = self._input(buf)
        return self.b.reshape(value, shape) if shape is not None else value

    def _input(self, buf):
        self.hold(buf)
        value = self.graph.add_input(TensorType((buf.size,), np.dtype(buf.dtype).name))
        self.inputs[id(buf)] = value
        self.values[id(buf)] = value
        return value

    def write(self, buf, value):
        if value.shape != (buf.size,) and int(np.prod(value.shape)) != buf.size:
            raise AssertionError(f"tracer: value {value.type} written into {buf.size} elements")
        if id(buf) not in self.allocated:
            if id(buf) not in self.values:
                self._input(buf)  # an in-place update needs the input it aliases
            self.written.add(id(buf))
        self.values[id(buf)] = value

    def scalar(self, x, dtype):
        """A rank-0 value for a scalar argument: a runtime input when it is a traced
        :class:`~.scalars.Scalar`, else a constant."""
        if is_traced(x):
            key = (x.expr, dtype)
            if key not in self.scalars:
                self.scalars[key] = self.graph.add_input(TensorType((), dtype))
            return self.scalars[key]
        return self.b.scalar(plain(x), dtype)

    # -- host reads ---------------------------------------------------------------------------
    def varying(self, value):
        """Whether ``value`` depends on a graph input (else it is a constant of the graph)."""
        stack = [value]
        while stack:
            v = stack[-1]
            if v in self._varying:
                stack.pop()
                continue
            node = v.producer
            if node is None:
                self._varying[v] = True
                stack.pop()
                continue
            pending = [u for u in node.inputs if u not in self._varying]
            if pending:
                stack.extend(pending)
                continue
            self._varying[v] = any(self._varying[u] for u in node.inputs)
            stack.pop()
        return self._varying[value]

    def refuse(self, what, why):
        where, _ = user_line()
        raise CompileError(f"needle.compile: {what} inside a compiled function (at {where}): "
                           f"{why}; not supported yet")

    def host_read(self, buf):
        value = self.values.get(id(buf))
        if value is None or self.varying(value):
            where, what = user_line()
            raise CompileError(
                f"needle.compile: {what} reads a traced value back to the host at "
                f"{where}. A compiled function cannot look at its data (the graph "
                f"would freeze what it saw): return the tensor and read it after the call")


class RecordingBackend:
    """A backend that runs each op on ``real`` and records it into ``trace``."""

    def __init__(self, real, trace, device):
        self.real, self.trace, self.device = real, trace, device
        self.name, self.dtypes = real.name, real.dtypes

    def __getattr__(self, name):
        # what the contract has not got (a vendor backend's extras) cannot be recorded
        if name in ("unavailable_reason", "memory_stats", "reset_peak_memory", "one_submission"):
            return getattr(self.real, name)
        raise CompileError(f"needle.compile: the traced function called {self.name} backend "
                           f"method {name!r}, which the tracer does not record")

    def _use(self):
        t = self.trace
        if t.device is None:
            t.device = self.device
        elif t.device != self.device:
            where, _ = user_line()
            raise CompileError(f"needle.compile: the traced function uses {t.device} and "
                               f"{self.device} (at {where}); a compiled function runs on one "
                               f"device")
        return t

    def supports(self, op, dtype=None):
        return op in RECORDED_FUSED and self.real.supports(op, dtype)

    def synchronize(self):
        self.real.synchronize()

    # -- memory ------------------------------------------------------------------------------
    def alloc(self, size, dtype):
        buf = self.real.alloc(size, dtype)
        t = self._use()
        t.hold(buf)
        t.allocated[id(buf)] = None
        return buf

    def from_numpy(self, array, out):
        self.real.from_numpy(array, out)
        t = self._use()
        t.write(out, t.b.constant(np.array(array, dtype=np.dtype(out.dtype)).reshape(-1)))

    def to_numpy(self, a, shape, strides, offset):
        self._use().host_read(a)
        return self.real.to_numpy(a, shape, strides, offset)

    # -- movement ------------------------------------------------------------------------------
    def fill(self, out, value):
        self.real.fill(out, plain(value))
        t = self._use()
        t.write(out, t.b.broadcast(t.scalar(value, _dtype(out)), (out.size,)))

    def compact(self, a, out, shape, strides, offset):
        self.real.compact(a, out, shape, strides, offset)
        t = self._use()
        t.write(out, views.read_view(t.b, t.read(a), a.size, shape, strides, offset))

    def ewise_setitem(self, a, out, shape, strides, offset):
        self.real.ewise_setitem(a, out, shape, strides, offset)
        t = self._use()
        t.write(out, views.write_view(t.b, t.read(out), out.size, shape, strides, offset,
                                      t.read(a, tuple(shape))))

    def scalar_setitem(self, size, value, out, shape, strides, offset):
        self.real.scalar_setitem(size, plain(value), out, shape, strides, offset)
        t = self._use()
        update = t.b.broadcast(t.scalar(value, _dtype(out)), shape)
        t.write(out, views.write_view(t.b, t.read(out), out.size, shape, strides, offset, update))

    # -- arithmetic -----------------------------------------------------------------------------
    def unary(self, op, a, out):
        self.real.unary(op, a, out)
        t = self._use()
        x = t.read(a)
        if op == "relu":
            y = t.b.emit("maximum", [x, t.b.full(0.0, x.shape, x.dtype)])
        else:
            y = t.b.emit(_UNARY[op], [x])
        t.write(out, y)

    def binary(self, op, a, b, out):
        self.real.binary(op, a, b, out)
        t = self._use()
        x = t.read(a)
        self._binary(t, op, x, t.read(b, x.shape), out)

    def scalar(self, op, a, value, out):
        self.real.scalar(op, a, plain(value), out)
        t = self._use()
        x = t.read(a)
        self._binary(t, op, x, t.b.broadcast(t.scalar(value, x.dtype), x.shape), out)

    @staticmethod
    def _binary(t, op, x, y, out):
        if op in _COMPARE:
            mask = t.b.emit("compare", [x, y], comparison_direction=_COMPARE[op])
            t.write(out, t.b.emit("convert", [mask], dtype=x.dtype))
        else:
            t.write(out, t.b.emit(_BINARY[op], [x, y]))

    def select(self, cond, a, b, out):
        self.real.select(cond, a, b, out)
        t = self._use()
        x = t.read(a)
        c = t.read(cond, x.shape)
        pred = t.b.emit("compare", [c, t.b.full(0.0, x.shape, x.dtype)], comparison_direction="NE")
        t.write(out, t.b.emit("select", [pred, x, t.read(b, x.shape)]))

    def reduce(self, op, a, out, reduce_size):
        self.real.reduce(op, a, out, reduce_size)
        t = self._use()
        x = t.read(a, (out.size, reduce_size))
        init = 0.0 if op == "sum" else float("-inf")
        t.write(out, t.b.reduce(x, [1], "add" if op == "sum" else "max", init))

    # -- gather ---------------------------------------------------------------------------------
    def take(self, a, index, out):
        self.real.take(a, index, out)
        t = self._use()
        positions = np.asarray(index, dtype=np.int64).reshape(-1, 1)
        t.write(out, t.b.take(t.read(a, (a.size,)), positions))

    def scatter_add(self, a, index, out):
        self.real.scatter_add(a, index, out)
        t = self._use()
        positions = np.asarray(index, dtype=np.int64).reshape(-1, 1)
        t.write(out, t.b.scatter(t.read(out, (out.size,)), positions, t.read(a, (a.size,)),
                                 "add"))

    # -- contractions -----------------------------------------------------------------------------
    def matmul(self, a, b, out, batch, m, k, n):
        self.real.matmul(a, b, out, batch, m, k, n)
        t = self._use()
        batched = batch != 1
        lhs = t.read(a, (batch, m, k) if batched else (m, k))
        rhs = t.read(b, (batch, k, n) if batched else (k, n))
        t.write(out, t.b.emit("dot_general", [lhs, rhs],
                              lhs_batching_dimensions=[0] if batched else [],
                              rhs_batching_dimensions=[0] if batched else [],
                              lhs_contracting_dimensions=[2 if batched else 1],
                              rhs_contracting_dimensions=[1 if batched else 0]))

    def conv2d(self, a, w, out, in_shape, kernel, out_channels, stride):
        self.real.conv2d(a, w, out, in_shape, kernel, out_channels, stride)
        t = self._use()
        x = t.read(a, tuple(in_shape))
        weights = t.read(w, (kernel, kernel, in_shape[3], out_channels))
        t.write(out, t.b.emit(
            "convolution", [x, weights], window_strides=[stride, stride],
            padding=[[0, 0], [0, 0]], lhs_dilation=[1, 1], rhs_dilation=[1, 1],
            dimension_numbers={
                "input_batch_dimension": 0, "input_feature_dimension": 3,
                "input_spatial_dimensions": [1, 2], "kernel_input_feature_dimension": 2,
                "kernel_output_feature_dimension": 3, "kernel_spatial_dimensions": [0, 1],
                "output_batch_dimension": 0, "output_feature_dimension": 3,
                "output_spatial_dimensions": [1, 2]}))

    # -- the fused ops kept as composites -------------------------------------------------------
    def cross_entropy(self, logits, labels, loss, grad, rows, cols):
        self.real.cross_entropy(logits, labels, loss, grad, rows, cols)
        t = self._use()
        loss_value, grad_value = fused.cross_entropy(t.b, t.read(logits, (rows, cols)),
                                                     t.read(labels, (rows,)))
        t.write(loss, loss_value)
        t.write(grad, grad_value)

    def embedding(self, weight, ids, out, n, rows, dim):
        self.real.embedding(weight, ids, out, n, rows, dim)
        t = self._use()
        t.write(out, fused.embedding(t.b, t.read(weight, (rows, dim)), t.read(ids, (n,))))

    def embedding_backward(self, grad, ids, dweight, n, rows, dim):
        self.real.embedding_backward(grad, ids, dweight, n, rows, dim)
        t = self._use()
        t.write(dweight, fused.embedding_backward(t.b, t.read(grad, (n, dim)),
                                                  t.read(ids, (n,)), rows))

    def attention(self, q, k, v, out, stats, batch, seq_q, seq_k, dim, scale, causal):
        self.real.attention(q, k, v, out, stats, batch, seq_q, seq_k, dim, scale, causal)
        t = self._use()
        queries, keys = (batch, seq_q, dim), (batch, seq_k, dim)
        values = fused.attention(t.b, t.read(q, queries), t.read(k, keys), t.read(v, keys),
                                 scale, causal)
        for buf, value in zip((out, stats), values):
            t.write(buf, value)

    def attention_backward(self, q, k, v, out, stats, grad, dq, dk, dv, batch, seq_q, seq_k,
                           dim, scale, causal):
        self.real.attention_backward(q, k, v, out, stats, grad, dq, dk, dv, batch, seq_q, seq_k,
                                     dim, scale, causal)
        t = self._use()
        queries, keys = (batch, seq_q, dim), (batch, seq_k, dim)
        values = fused.attention_backward(
            t.b, t.read(q, queries), t.read(k, keys), t.read(v, keys), t.read(out, queries),
            t.read(stats, (batch, seq_q)), t.read(grad, queries), scale, causal)
        for buf, value in zip((dq, dk, dv), values):
            t.write(buf, value)

    @property
    def attention_max_dim(self):
        return self.real.attention_max_dim

    def lstm(self, xp, w_hh, h0, c0, hs, cs, gates, steps, batch, hidden):
        self.real.lstm(xp, w_hh, h0, c0, hs, cs, gates, steps, batch, hidden)
        t = self._use()
        state, four = (batch, hidden), 4 * hidden
        values = fused.lstm(t.b, t.read(xp, (steps, batch, four)), t.read(w_hh, (hidden, four)),
                            t.read(h0, state), t.read(c0, state))
        for buf, value in zip((hs, cs, gates), values):
            t.write(buf, value)

    def lstm_backward(self, dhs, dcs, w_hh, c0, cs, gates, dz, dh0, dc0, steps, batch, hidden):
        self.real.lstm_backward(dhs, dcs, w_hh, c0, cs, gates, dz, dh0, dc0, steps, batch,
                                hidden)
        t = self._use()
        seq, four = (steps, batch, hidden), 4 * hidden
        values = fused.lstm_backward(t.b, t.read(dhs, seq), t.read(dcs, seq),
                                     t.read(w_hh, (hidden, four)), t.read(c0, (batch, hidden)),
                                     t.read(cs, seq), t.read(gates, (steps, batch, four)))
        for buf, value in zip((dz, dh0, dc0), values):
            t.write(buf, value)

    def conv(self, x, w, out, in_shape, kernel, out_channels, stride, padding,
             channels_first=False):
        self.real.conv(x, w, out, in_shape, kernel, out_channels, stride, padding,
                       channels_first)
        t = self._use()
        value = fused.conv(t.b, t.read(x, _activations(in_shape, channels_first)),
                           t.read(w, (kernel, kernel, in_shape[3], out_channels)), stride,
                           padding, channels_first)
        t.write(out, value)

    def conv_backward(self, grad, x, w, dx, dw, in_shape, kernel, out_channels, stride, padding,
                      channels_first=False):
        self.real.conv_backward(grad, x, w, dx, dw, in_shape, kernel, out_channels, stride,
                                padding, channels_first)
        t = self._use()
        n, h, wd, _ = in_shape
        out_shape = (n, (h + 2 * padding - kernel) // stride + 1,
                     (wd + 2 * padding - kernel) // stride + 1, out_channels)
        values = fused.conv_backward(
            t.b, t.read(grad, _activations(out_shape, channels_first)),
            t.read(x, _activations(in_shape, channels_first)),
            t.read(w, (kernel, kernel, in_shape[3], out_channels)), stride, padding,
            channels_first, dx is not None, dw is not None)
        for buf, value in zip([d for d in (dx, dw) if d is not None], values):
            t.write(buf, value)

    def batchnorm_train(self, x, weight, bias, out, mean, var, rstd, channels, inner, eps,
                        act="identity", running_mean=None, running_var=None, momentum=0.0,
                        unbiased=1.0, x_bias=None):
        self.real.batchnorm_train(x, weight, bias, out, mean, var, rstd, channels, inner,
                                  plain(eps), act, running_mean, running_var, plain(momentum),
                                  unbiased, x_bias)
        t = self._use()
        shape, vec = (x.size // (channels * inner), channels, inner), (channels,)
        running = None if running_mean is None else (t.read(running_mean, vec),
                                                     t.read(running_var, vec))
        values = fused.batchnorm_train(
            t.b, t.read(x, shape), t.read(weight, vec), t.read(bias, vec),
            t.read(x_bias, vec) if x_bias is not None else None, running, plain(eps), act,
            plain(momentum), unbiased)
        for buf, value in zip((out, mean, var, rstd, running_mean, running_var), values):
            t.write(buf, value)

    def batchnorm_train_backward(self, grad, x, weight, mean, rstd, dx, dweight, dbias,
                                 channels, inner, act="identity", out=None, x_bias=None,
                                 dx_bias=None):
        self.real.batchnorm_train_backward(grad, x, weight, mean, rstd, dx, dweight, dbias,
                                           channels, inner, act, out, x_bias, dx_bias)
        t = self._use()
        shape, vec = (x.size // (channels * inner), channels, inner), (channels,)
        values = fused.batchnorm_train_backward(
            t.b, t.read(grad, shape), t.read(x, shape), t.read(weight, vec), t.read(mean, vec),
            t.read(rstd, vec), t.read(out, shape) if act == "relu" else None,
            t.read(x_bias, vec) if x_bias is not None else None)
        for buf, value in zip((dx, dweight, dbias, dx_bias), values):
            t.write(buf, value)

    def sgd_update(self, param, grad, buf, lr, momentum, weight_decay, first_step):
        self.real.sgd_update(param, grad, buf, plain(lr), plain(momentum),
                             plain(weight_decay), first_step)
        t, dtype = self._use(), _dtype(param)
        p = t.read(param)
        reads_buf = buf is not None and not first_step
        new_p, new_buf = fused.sgd_update(
            t.b, p, t.read(grad, p.shape), t.read(buf, p.shape) if reads_buf else None,
            t.scalar(lr, dtype), t.scalar(momentum, dtype) if reads_buf else None,
            t.scalar(weight_decay, dtype) if _maybe_nonzero(weight_decay) else None,
            buf is not None)
        t.write(param, new_p)
        if buf is not None:
            t.write(buf, new_buf)

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        self.real.adam_update(param, grad, m, v, plain(lr), plain(beta1), plain(beta2),
                              plain(eps), plain(weight_decay), plain(step))
        t, dtype = self._use(), _dtype(param)
        host = {"lr": lr, "beta1": beta1, "one_minus_beta1": 1 - beta1, "beta2": beta2,
                "one_minus_beta2": 1 - beta2, "bias1": 1 - beta1 ** step,
                "bias2": 1 - beta2 ** step, "eps": eps}
        if _maybe_nonzero(weight_decay):
            host["weight_decay"] = weight_decay
        host["step"] = step
        p = t.read(param)
        new_p, new_m, new_v = fused.adam_update(
            t.b, p, t.read(grad, p.shape), t.read(m, p.shape), t.read(v, p.shape),
            {name: t.scalar(x, dtype) for name, x in host.items()})
        for buf, value in ((param, new_p), (m, new_m), (v, new_v)):
            t.write(buf, value)


def _dtype(buf):
    return np.dtype(buf.dtype).name


def _maybe_nonzero(x):
    """A traced scalar may change to non-zero later; a plain 0 never does."""
    return is_traced(x) or plain(x) != 0


__all__ = ["RECORDED_FUSED", "RecordingBackend", "Trace", "user_line"]
