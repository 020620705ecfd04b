"""Pattern fusion (O3): the subgraphs Needle's ops layer composes for its fused ops become
one ``composite`` node each, named for the op, that an executor with the backend's fused
kernel runs as that kernel (:data:`~needle.compiler.executor.FUSED`).

While a step is traced, backends decline their fused ops, so ``ops.softmax``,
``ops.layer_norm``, ``ops.linear``... are recorded as compositions of plain ops. Each entry
of :data:`PATTERNS` recognises one composition as O1 and canonicalisation leave it, and the
composite's decomposition is exactly the matched nodes: run by decomposition, the graph
computes what it did, bit for bit. The composites, their inputs and attributes:

==================  ====================================  ==================================
composite           inputs                                attributes
==================  ====================================  ==================================
needle.attention    q, k, v (batch dims, then seq, dim)   scale, causal (False),
                                                          key_transposed (k is (.., dim, seq))
needle.linear       x (m, k), w (k, n), bias (n,)         activation (identity, relu, gelu)
needle.layer_norm   x, weight (cols,), bias (cols,)       eps, rows, cols
needle.batch_norm   x, mean, var, weight, bias            eps, activation (identity, relu),
                    [, x_bias] (channels,) each           channels, inner
needle.softmax      x                                     rows, cols
needle.logsumexp    x                                     rows, cols
needle.gelu         x                                     approximate ("tanh")
==================  ====================================  ==================================

Row ops (softmax, logsumexp, layer_norm) work on ``rows`` rows of ``cols`` contiguous
elements of x in row-major order, and batch_norm on x seen as (outer, channels, inner),
whatever the shapes of x and of the result: reshapes inside a match are looked through
(a reshape keeps every element's row-major position), as the ops layer reshapes freely.

Matching is greedy, from the last node back, so a larger pattern wins over one inside it
(attention over its softmax, linear + GELU over GELU). A match is dropped when a value it
computes, other than its result, is read outside it: a training step's backward reads the
normalised input of a LayerNorm or a BatchNorm, the pre-activation of a ReLU, so those
stay plain ops there (the fused kernels do not produce them). Constants and the
broadcasts and reshapes of a composite's inputs are copied in whatever else reads them.
Cross-entropy and the optimizer updates are composites from the tracer already.
"""
import math

import numpy as np

from ..ir import Graph, Node
from .common import rename, splat

#: nodes a match copies in whatever else reads them (with their operands made outside it)
VIEWS = ("broadcast_in_dim", "reshape")


class _NoMatch(Exception):
    pass


class _Match:
    """The nodes a pattern has claimed; every test that fails raises :class:`_NoMatch`."""

    def __init__(self, taken):
        self.nodes, self.taken = set(), taken

    def expect(self, condition):
        if not condition:
            raise _NoMatch

    def attempt(self, part, *args):
        """``part(self, *args)``, or ``None`` (and nothing claimed) where it does not match."""
        claimed = set(self.nodes)
        try:
            return part(self, *args)
        except _NoMatch:
            self.nodes = claimed
            return None

    def claim(self, value, op):
        node = value.producer
        self.expect(node is not None and node.op == op and node not in self.taken)
        self.nodes.add(node)
        return node

    def view(self, value):
        """``value`` with the reshapes that make it looked through (and claimed)."""
        while value.producer is not None and value.producer.op == "reshape":
            value = self.claim(value, "reshape").inputs[0]
        return value

    def node(self, value, op, **attrs):
        """The ``op`` node making ``value`` (through reshapes), with these attributes."""
        node = self.claim(self.view(value), op)
        self.expect(all(_equal(node.attrs.get(k), v) for k, v in attrs.items()))
        return node

    def op(self, value, op, **attrs):
        """The inputs of the ``op`` node making ``value`` (through reshapes)."""
        return self.node(value, op, **attrs).inputs

    def same(self, *values):
        return len({self.view(v) for v in values}) == 1

    def splat(self, value, number=None):
        """The scalar every element of ``value`` is (``number``, if given); claimed."""
        found = splat(value)
        self.expect(found is not None and (number is None or found == np.asarray(
            number, dtype=value.dtype)))
        while value.producer.op in VIEWS:
            value = self.claim(value, value.producer.op).inputs[0]
        self.claim(value, "constant")
        return float(found)

    def reduce_rows(self, value, computation, init):
        """``(x, cols)``: ``value`` is the ``computation`` reduction of the last axis of
        (a reshape of) ``x``, of size ``cols``, from the splat ``init``."""
        node = self.node(value, "reduce", computation=computation)
        operand = node.inputs[0]
        self.expect(operand.shape and _equal(node.attrs["dimensions"], [len(operand.shape) - 1]))
        self.splat(node.inputs[1], init)
        return self.view(operand), operand.shape[-1]

    def per_row(self, value):
        """``(vector, cols)``: ``value`` repeats each element of ``vector`` along a row of
        ``cols`` (a broadcast_in_dim of the leading axes, through reshapes)."""
        node = self.node(value, "broadcast_in_dim")
        shape, operand = node.output.shape, node.inputs[0]
        lead = len(shape) - 1
        self.expect(shape and _equal(node.attrs["broadcast_dimensions"][:lead], range(lead))
                    and operand.shape[:lead] == shape[:lead] and operand.shape[lead:] in ((), (1,)))
        return self.view(operand), shape[-1]

    def per_col(self, value):
        """``(vector, cols)``: ``value`` repeats ``vector`` (cols,) on every row."""
        node = self.node(value, "broadcast_in_dim")
        shape, (operand,) = node.output.shape, node.inputs
        self.expect(shape and _equal(node.attrs["broadcast_dimensions"], [len(shape) - 1])
                    and operand.shape == shape[-1:])
        return operand, shape[-1]

    def per_channel(self, value):
        """``(vector, (shape, axis))``: ``value`` is ``vector`` (C,) broadcast along
        every axis of ``shape`` but ``axis``."""
        node = self.node(value, "broadcast_in_dim")
        dims, (operand,) = node.attrs["broadcast_dimensions"], node.inputs
        self.expect(len(dims) == 1 and operand.shape == (node.output.shape[dims[0]],))
        return operand, (node.output.shape, dims[0])

    def dot(self, value, rhs_contracting):
        """The operands of the batched matmul making ``value`` (no reshapes looked
        through): leading batch axes, the lhs's last axis contracted with the rhs's
        axis ``rhs_contracting`` counted from its end (-2: (k, n) matrices)."""
        node = self.claim(value, "dot_general")
        lhs, rhs = node.inputs
        rank, batch = len(lhs.shape), list(range(len(lhs.shape) - 2))
        self.expect(rank >= 2 and len(rhs.shape) == rank and _equal(node.attrs, {
            "lhs_batching_dimensions": batch, "rhs_batching_dimensions": batch,
            "lhs_contracting_dimensions": [rank - 1],
            "rhs_contracting_dimensions": [rank + rhs_contracting]}))
        return lhs, rhs


def _equal(a, b):
    if isinstance(b, dict):
        return all(_equal(a.get(k), v) for k, v in b.items())
    if isinstance(b, (list, tuple, range)):
        return isinstance(a, (list, tuple)) and list(a) == list(b)
    return a == b


# -- the patterns: each takes the match and the candidate result, and returns the
# composite's (inputs, attributes) or raises _NoMatch --------------------------------------

def _lse(m, value):
    """``log(sum(exp(x - c))) + c`` per row, ``c`` the row max clamped to finite numbers
    (ops.logsumexp over the last axis); ``(x, cols)``."""
    log_total, c = m.op(value, "add")
    (total,) = m.op(log_total, "log")
    e, cols = m.reduce_rows(total, "add", 0)
    (shifted,) = m.op(e, "exponential")
    x, c_row = m.op(shifted, "subtract")
    c_vector, c_cols = m.per_row(c_row)
    clamped, big = m.op(c, "minimum")
    top = float(np.finfo(x.dtype).max)
    m.splat(big, top)
    row_max, low = m.op(clamped, "maximum")
    m.splat(low, -top)
    x_max, max_cols = m.reduce_rows(row_max, "max", -np.inf)
    m.expect(m.same(c, c_vector) and m.same(x, x_max) and cols == c_cols == max_cols)
    return m.view(x), cols


def _rows(x, cols):
    return {"rows": math.prod(x.shape) // cols, "cols": cols}


def _logsumexp(m, out):
    x, cols = _lse(m, out)
    return [x], _rows(x, cols)


def _softmax_rows(m, out):
    """``exp(x - logsumexp(x))`` per row (ops.softmax's composition); ``(x, cols)``."""
    (shifted,) = m.op(out, "exponential")
    x, lse_row = m.op(shifted, "subtract")
    lse, cols = m.per_row(lse_row)
    x_lse, lse_cols = _lse(m, lse)
    m.expect(m.same(x, x_lse) and cols == lse_cols)
    return x_lse, cols


def _softmax(m, out):
    x, cols = _softmax_rows(m, out)
    return [x], _rows(x, cols)


def _gelu_of(m, out):
    """``x * (tanh((x + x ** 3 * 0.044715) * sqrt(2 / pi)) + 1) * 0.5`` (ops.gelu); x."""
    x_t, half = m.op(out, "multiply")
    m.splat(half, 0.5)
    x, t1 = m.op(x_t, "multiply")
    t, one = m.op(t1, "add")
    m.splat(one, 1.0)
    (inner,) = m.op(t, "tanh")
    a, k = m.op(inner, "multiply")
    m.splat(k, math.sqrt(2.0 / math.pi))
    x_a, c = m.op(a, "add")
    cube, k3 = m.op(c, "multiply")
    m.splat(k3, 0.044715)
    x_cube, three = m.op(cube, "power")
    m.splat(three, 3.0)
    m.expect(m.same(x, x_a, x_cube))
    return m.view(x)


def _gelu(m, out):
    return [_gelu_of(m, out)], {"approximate": "tanh"}


def _relu_of(m, out):
    """``maximum(x, 0)`` (either operand order); x."""
    a, b = m.op(out, "maximum")
    if m.attempt(_Match.splat, b, 0.0) is not None:
        return a
    m.splat(a, 0.0)
    return b


def _activation(m, out):
    """``(name, pre-activation)`` of a result that may end in a ReLU or a GELU."""
    for name, part in (("relu", _relu_of), ("gelu", _gelu_of)):
        pre = m.attempt(part, out)
        if pre is not None:
            return name, pre
    return "identity", out


def _bias_add(m, value):
    """``[x, w, bias]`` of ``x @ w + per_col(bias)`` (the matmul either operand)."""
    def ordered(m, y, b):
        x, w = m.dot(m.view(y), -2)
        bias, cols = m.per_col(b)
        m.expect(len(x.shape) == 2 and cols == w.shape[1])
        return [x, w, bias]
    a, b = m.op(value, "add")
    return m.attempt(ordered, a, b) or ordered(m, b, a)


def _linear(m, out):
    """``act(x @ w + bias)`` (ops.linear, nn.Linear; ReLU or GELU after it)."""
    activation, pre = _activation(m, out)
    return _bias_add(m, pre), {"activation": activation}


def _layer_norm(m, out):
    """``(x - mean) / (var + eps) ** 0.5 * weight + bias`` per row (ops.layer_norm)."""
    scaled, bias_col = m.op(out, "add")
    bias, cols = m.per_col(bias_col)
    normed, weight_col = m.op(scaled, "multiply")
    weight, weight_cols = m.per_col(weight_col)
    centered, std = m.op(normed, "divide")
    var_eps, half = m.op(std, "power")
    m.splat(half, 0.5)
    var_row, eps = m.op(var_eps, "add")
    eps = m.splat(eps)
    var, var_cols = m.per_row(var_row)
    squares_sum, n = m.op(var, "divide")
    m.splat(n, cols)
    squares, sq_cols = m.reduce_rows(squares_sum, "add", 0)
    c1, c2 = m.op(squares, "multiply")
    x, mean_row = m.op(centered, "subtract")
    mean, mean_cols = m.per_row(mean_row)
    total, n = m.op(mean, "divide")
    m.splat(n, cols)
    x_sum, sum_cols = m.reduce_rows(total, "add", 0)
    m.expect(m.same(centered, c1, c2) and m.same(x, x_sum)
             and cols == weight_cols == var_cols == sq_cols == mean_cols == sum_cols)
    x = m.view(x)
    return [x, weight, bias], {"eps": eps, **_rows(x, cols)}


def _batch_norm(m, out):
    """``act((x [+ x_bias] - mean) * (weight * (var + eps) ** -0.5) + bias)`` with
    per-channel vectors (ops.batch_norm: BatchNorm in eval mode, conv bias folded in)."""
    activation, y = _activation(m, out)
    m.expect(activation != "gelu")
    scaled, bias_ch = m.op(y, "add")
    bias, layout = m.per_channel(bias_ch)
    centered, scale_ch = m.op(scaled, "multiply")
    scale, scale_layout = m.per_channel(scale_ch)
    weight, rstd = m.op(scale, "multiply")
    var_eps, power = m.op(rstd, "power")
    m.splat(power, -0.5)
    var, eps = m.op(var_eps, "add")
    eps = m.splat(eps)
    x, mean_ch = m.op(centered, "subtract")
    mean, mean_layout = m.per_channel(mean_ch)
    m.expect(layout == scale_layout == mean_layout)
    x, *x_bias = m.attempt(_channel_bias, x, layout) or [m.view(x)]
    shape, axis = layout
    return [x, mean, var, weight, bias, *x_bias], {
        "eps": eps, "activation": activation, "channels": shape[axis],
        "inner": math.prod(shape[axis + 1:])}


def _channel_bias(m, value, layout):
    """``[x, x_bias]`` of ``x + per_channel(x_bias)`` (a convolution's bias)."""
    x, bias_ch = m.op(value, "add")
    x_bias, bias_layout = m.per_channel(bias_ch)
    m.expect(bias_layout == layout)
    return [m.view(x), x_bias]


def _attention(m, out):
    """``softmax(q @ k^T * scale) @ v`` (ops.scaled_dot_product_attention without a mask)."""
    probs, v = m.dot(out, -2)
    x, cols = _softmax_rows(m, probs)
    scores, scale = m.op(x, "multiply")
    scale = m.splat(scale)
    qk = m.attempt(_Match.dot, m.view(scores), -2)  # k as (.., dim, seq): k^T traced
    transposed = qk is not None
    q, k = qk or m.dot(m.view(scores), -1)  # k as (.., seq, dim): a transpose folded in
    seq = k.shape[-1] if transposed else k.shape[-2]
    m.expect(cols == seq and v.shape == q.shape[:-2] + (seq, q.shape[-1]))
    return [q, k, v], {"scale": scale, "causal": False, "key_transposed": transposed}


#: (name, pattern(match, result) -> (inputs, attributes)), tried in order at each node: a
#: pattern that contains another comes first
PATTERNS = [
    ("attention", _attention),
    ("linear", _linear),          # its GELU or ReLU in it
    ("batch_norm", _batch_norm),  # its ReLU in it
    ("layer_norm", _layer_norm),
    ("softmax", _softmax),        # its logsumexp in it
    ("logsumexp", _logsumexp),
    ("gelu", _gelu),
]


# -- the pass --------------------------------------------------------------------------------

def _composite(name, root, match, inputs, attrs, index, users, returned):
    """``(composite, the nodes it replaces)`` for a match, or ``None`` when the match is
    not closed (it reads a value neither made inside nor an input) or a value it computes
    is read outside it (but its result, and constants and views of its inputs: those are
    copied, and stay for their other readers)."""
    if len(set(inputs)) != len(inputs) or any(v.producer in match.nodes for v in inputs):
        return None
    dec, inner, outer = Graph(name=f"needle.{name}"), {}, set(inputs)
    for v in inputs:
        inner[v] = dec.add_input(v.type)
    replaced = []
    for node in sorted(match.nodes, key=index.get):
        if any(v not in inner for v in node.inputs):
            return None
        copy = dec.add(node.op, [inner[v] for v in node.inputs],
                       [v.type for v in node.outputs], node.attrs)
        inner.update(zip(node.outputs, copy.outputs))
        copied = node.op == "constant" or (node.op in VIEWS and node.inputs[0] in outer)
        if copied:
            outer.update(node.outputs)
        read_outside = any(v in returned or any(u not in match.nodes for u in users.get(v, ()))
                           for v in node.outputs)
        if node is not root and read_outside and not copied:
            return None
        if node is root or not read_outside:
            replaced.append(node)
    dec.outputs = [inner[root.output]]
    composite = Node("composite", inputs, [root.output.type],
                     {"name": f"needle.{name}", **attrs}, dec)
    return composite, replaced


def fuse_patterns(graph):
    """Replace every match of :data:`PATTERNS` by its composite (see the module
    docstring); in place, returns ``graph``."""
    users, returned, taken = graph.users(), set(graph.outputs), set()
    order = list(graph.nodes)
    index = {node: i for i, node in enumerate(order)}
    at, mapping = {}, {}
    for root in reversed(order):
        if root in taken or len(root.outputs) != 1 or root.op == "reshape":
            continue  # (a reshape's operand is the candidate: a result is a computation)
        for name, pattern in PATTERNS:
            match = _Match(taken)
            try:
                inputs, attrs = pattern(match, root.output)
            except _NoMatch:
                continue
            built = _composite(name, root, match, inputs, attrs, index, users, returned)
            if built is not None:
                composite, replaced = built
                taken.update(replaced)
                at[root] = composite
                mapping[root.output] = composite.output
                break
    if mapping:
        graph.nodes = [at.get(n, n) for n in order if n in at or n not in taken]
        rename(graph, mapping)
    return graph
