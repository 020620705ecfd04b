"""O3's fusion of a Linear layer's backward (dW = Xᵀ G, dX = G Wᵀ, db = Σ_rows G) into one
``needle.linear_backward`` composite: what it must rewrite, what it must leave, results
equal to the reference interpreter, and the fused kernel equal to the decomposition."""
import numpy as np
import pytest

from needle.compiler import Executor, Graph, evaluate, verify
from needle.compiler.ir import TensorType
from needle.compiler.passes.fuse_linear_backward import fuse_linear_backward
from needle.compiler.tracing.builder import Builder

M, K, N = 6, 4, 3


def _dot(b, lhs, rhs, lc, rc):
    return b.emit("dot_general", [lhs, rhs], lhs_batching_dimensions=[],
                  rhs_batching_dimensions=[], lhs_contracting_dimensions=[lc],
                  rhs_contracting_dimensions=[rc])


def _backward(dx=True, bias="transpose", extra_transpose_use=False):
    g = Graph()
    b = Builder(g)
    x, w, grad = (g.add_input(TensorType(s, "float32")) for s in ((M, K), (K, N), (M, N)))
    outs = []
    if bias == "transpose":
        t = b.emit("transpose", [grad], permutation=[1, 0])
        outs.append(b.reduce(t, [1], "add", 0.0))
        if extra_transpose_use:
            outs.append(b.emit("exponential", [t]))
    elif bias == "axis0":
        outs.append(b.reduce(grad, [0], "add", 0.0))
    if dx:
        outs.append(_dot(b, grad, w, 1, 1))
    outs.append(_dot(b, x, grad, 0, 0))
    g.outputs = outs
    return g


def _inputs(rng):
    return [rng.standard_normal(s).astype(np.float32) for s in ((M, K), (K, N), (M, N))]


def _composites(g):
    return [n for n in g.nodes if n.op == "composite"]


@pytest.mark.parametrize("dx", [True, False])
@pytest.mark.parametrize("bias", ["transpose", "axis0", None])
def test_a_linear_backward_becomes_one_composite(dx, bias, rng):
    args = _inputs(rng)
    g = _backward(dx, bias)
    expected = evaluate(g, *args)
    fused = verify(fuse_linear_backward(g))
    (node,) = _composites(fused)
    assert node.attrs == {"name": "needle.linear_backward", "dx": dx, "bias": bias is not None}
    assert not any(n.op == "dot_general" for n in fused.nodes)
    for got, want in zip(evaluate(fused, *args), expected):
        np.testing.assert_array_equal(got, want)  # the decomposition is the matched nodes


def test_what_it_leaves_alone(rng):
    # a transpose read elsewhere stays, and so does its reduce; the products still fuse
    g = verify(fuse_linear_backward(_backward(extra_transpose_use=True)))
    (node,) = _composites(g)
    assert node.attrs["bias"] is False and any(n.op == "reduce" for n in g.nodes)
    # a product that is not a weight gradient (contracting the other axes) is not touched
    h = Graph()
    b = Builder(h)
    x, y = (h.add_input(TensorType((M, K), "float32")) for _ in range(2))
    h.outputs = [_dot(b, x, y, 1, 1)]
    assert not _composites(fuse_linear_backward(h))


@pytest.mark.parametrize("bias", ["transpose", None])
def test_the_fused_kernel_equals_the_decomposition(bias, device, rng):
    args = _inputs(rng)
    g = verify(fuse_linear_backward(_backward(True, bias)))
    plain = [a.numpy() for a in Executor(g, device)(*args)]
    fused = Executor(g, device, fused_kernels=True)
    supported = device.backend.supports("linear_backward", "float32")
    assert fused.info["fused_kernels"] == int(supported)
    for got, want in zip((a.numpy() for a in fused(*args)), plain):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
