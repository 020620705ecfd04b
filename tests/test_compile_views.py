"""The tracer's strided views: every view NDArray makes (reshape, permute, broadcast, slices
with steps, flips, and as_strided overlaps) read back from a flat buffer as movement ops,
and writes into views, checked against NumPy's own strided views."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from needle.compiler import reference, verify
from needle.compiler.ir import Graph, TensorType
from needle.compiler.tracing import views
from needle.compiler.tracing.builder import Builder


def _numpy_view(flat, shape, strides, offset):
    item = flat.itemsize
    return as_strided(flat[offset:], shape=shape, strides=[s * item for s in strides])


def _views(rng):
    """(buffer size, shape, strides, offset) of views made the way NDArray makes them."""
    base = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    made = [base, base.transpose(2, 0, 1), base[1:3, ::2, 4:], base[::-1, :, ::-2],
            base[2], base[:, 3], base[..., 5], base[1:2, 1:2, 1:2],
            np.broadcast_to(base[:, :1, :], (4, 5, 6)), np.broadcast_to(base[1, 2, 3:4], (2, 3)),
            base.reshape(20, 6)[3:17:3], base.transpose(1, 2, 0)[::-1, 1:5, ::3]]
    out = [(base.size, v.shape, tuple(s // base.itemsize for s in v.strides),
            (v.__array_interface__["data"][0] - base.__array_interface__["data"][0])
            // base.itemsize) for v in made]
    out.append((10, (4, 3), (2, 1), 1))  # sliding windows: rows overlap
    out.append((10, (3,), (4,), 1))      # the last element sits in a short final row
    return out


def _run(build, size, rng):
    g = Graph()
    flat = g.add_input(TensorType((size,), "float32"))
    g.outputs = [build(Builder(g), flat)]
    verify(g)
    data = rng.standard_normal(size).astype("float32")
    return g, data, reference.evaluate(g, data)[0]


@pytest.mark.parametrize("case", range(14))
def test_read_view_matches_numpy(case, rng):
    size, shape, strides, offset = _views(rng)[case]
    g, data, got = _run(lambda b, v: views.read_view(b, v, size, shape, strides, offset), size, rng)
    np.testing.assert_array_equal(got, _numpy_view(data, shape, strides, offset))
    if case < 12:  # views NDArray makes need no gather
        assert not any(n.op == "gather" for n in g.nodes), [n.op for n in g.nodes]


@pytest.mark.parametrize("case", [0, 1, 2, 3, 4, 5, 6, 7, 11, 12])
def test_write_view_matches_numpy(case, rng):
    size, shape, strides, offset = _views(rng)[case]
    update = rng.standard_normal(shape).astype("float32")

    def build(b, v):
        return views.write_view(b, v, size, shape, strides, offset, b.constant(update))

    _, data, got = _run(build, size, rng)
    expected = data.copy()
    _numpy_view(expected, shape, strides, offset)[...] = update
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", [4, 5, 6, 7])
def test_a_block_written_into_a_filled_buffer_is_a_pad(case, rng):
    size, shape, strides, offset = _views(rng)[case]
    update = rng.standard_normal(shape).astype("float32")
    g = Graph()
    b = Builder(g)
    filled = b.full(0.5, (size,), "float32")
    g.outputs = [views.write_view(b, filled, size, shape, strides, offset, b.constant(update))]
    verify(g)
    assert "pad" in [n.op for n in g.nodes] and "scatter" not in [n.op for n in g.nodes]
    expected = np.full(size, 0.5, np.float32)
    _numpy_view(expected, shape, strides, offset)[...] = update
    np.testing.assert_array_equal(reference.evaluate(g)[0], expected)
