"""NDArray view semantics (property-based, against NumPy) and the backend op table on
every device (against the NumPy backend / float64 NumPy)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import needle
from needle.backend_ndarray import BINARY_OPS, UNARY_OPS, NDArray

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@st.composite
def arrays(draw, shape=shapes):
    shape = draw(shape)
    seed = draw(st.integers(0, 2**31))
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@st.composite
def array_and_permutation(draw):
    a = draw(arrays())
    return a, tuple(draw(st.permutations(range(a.ndim))))


@st.composite
def array_and_index(draw):
    a = draw(arrays())
    index = []
    for dim in a.shape:
        kind = draw(st.sampled_from(["slice", "int", "full"]))
        if kind == "int":
            index.append(draw(st.integers(-dim, dim - 1)))
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-dim - 1, dim + 1)))
            stop = draw(st.one_of(st.none(), st.integers(-dim - 1, dim + 1)))
            step = draw(st.sampled_from([None, 1, 2, 3, -1, -2]))
            index.append(slice(start, stop, step))
        else:
            index.append(slice(None))
    return a, tuple(index)


@st.composite
def array_and_broadcast(draw):
    a = draw(arrays())
    target = tuple(draw(st.integers(1, 4)) if d == 1 else d for d in a.shape)
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    return a, lead + target


@given(array_and_permutation())
@settings(max_examples=60, deadline=None)
def test_permute_matches_numpy(case):
    a, order = case
    np.testing.assert_array_equal(NDArray(a).permute(order).numpy(), a.transpose(order))


@given(array_and_index())
@settings(max_examples=100, deadline=None)
def test_getitem_matches_numpy(case):
    a, index = case
    view = NDArray(a)[index]
    np.testing.assert_array_equal(view.numpy(), a[index])
    np.testing.assert_array_equal(view.compact().numpy(), a[index])


@given(array_and_index(), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_setitem_matches_numpy(case, seed):
    a, index = case
    expected, arr = a.copy(), NDArray(a)
    value = np.random.default_rng(seed).standard_normal(expected[index].shape).astype(np.float32)
    expected[index] = value
    arr[index] = NDArray(value)
    np.testing.assert_array_equal(arr.numpy(), expected)
    expected[index] = 2.5
    arr[index] = 2.5
    np.testing.assert_array_equal(arr.numpy(), expected)


@given(array_and_broadcast())
@settings(max_examples=60, deadline=None)
def test_broadcast_matches_numpy(case):
    a, target = case
    np.testing.assert_array_equal(NDArray(a).broadcast_to(target).numpy(), np.broadcast_to(a, target))


@given(array_and_permutation(), st.data())
@settings(max_examples=60, deadline=None)
def test_reshape_of_permuted_view_matches_numpy(case, data):
    a, order = case
    sizes = [d for d in range(1, a.size + 1) if a.size % d == 0]
    first = data.draw(st.sampled_from(sizes))
    target = (first, a.size // first)
    np.testing.assert_array_equal(NDArray(a).permute(order).reshape(target).numpy(),
                                  a.transpose(order).reshape(target))


@given(arrays(), st.data())
@settings(max_examples=40, deadline=None)
def test_flip_and_pad_match_numpy(a, data):
    axes = tuple(sorted(set(data.draw(st.lists(st.integers(0, a.ndim - 1), max_size=a.ndim)))))
    np.testing.assert_array_equal(NDArray(a).flip(axes).numpy(), np.flip(a, axes))
    pads = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in a.shape)
    np.testing.assert_array_equal(NDArray(a).pad(pads).numpy(), np.pad(a, pads))


@given(array_and_permutation())
@settings(max_examples=40, deadline=None)
def test_memory_order_of_permuted_views(case):
    a, perm = case
    view = NDArray(a, device=needle.cpu()).permute(perm)
    order = view.memory_order()
    assert order is not None  # and in that order the view walks its buffer straight
    np.testing.assert_array_equal(view.permute(order).numpy().ravel(), a.ravel())
    assert NDArray(a, device=needle.cpu()).broadcast_to((2,) + a.shape).memory_order() is None
    if a.shape[0] > 1:  # a slice does not cover its buffer
        assert NDArray(a, device=needle.cpu())[1:].memory_order() is None


def test_elementwise_on_dense_views_keeps_their_layout(device, rng):
    """NCHW views of NHWC buffers combine without compacting: the result has their layout."""
    a, b = rng.standard_normal((2, 4, 5, 3)), rng.standard_normal((2, 4, 5, 3))
    x = NDArray(a, device=device).permute((0, 3, 1, 2))
    y = NDArray(b, device=device).permute((0, 3, 1, 2))
    for out, want in ((x + y, a + b), (x * 2.0, a * 2.0), (x.exp(), np.exp(a))):
        assert out.strides == x.strides
        np.testing.assert_allclose(out.numpy(), want.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    mixed = x + NDArray(np.ascontiguousarray(b.transpose(0, 3, 1, 2)), device=device)
    assert mixed.is_compact()
    np.testing.assert_allclose(mixed.numpy(), (a + b).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)


def test_views_share_the_buffer():
    a = NDArray(np.arange(12, dtype=np.float32).reshape(3, 4))
    view = a[1:, ::2]
    assert view._handle is a._handle and not view.is_compact()
    a[1:, ::2] = 0.0
    assert a.numpy()[1:, ::2].sum() == 0 and a.numpy()[0].sum() == 6


# -- the backend op table, on every device ------------------------------------------------
def _np_unary(op, x):
    return {"neg": -x, "exp": np.exp(x), "log": np.log(np.abs(x)), "tanh": np.tanh(x),
            "sigmoid": 1 / (1 + np.exp(-x)), "sqrt": np.sqrt(np.abs(x)), "relu": np.maximum(x, 0),
            "abs": np.abs(x), "sin": np.sin(x), "cos": np.cos(x)}[op]


@pytest.mark.parametrize("op", UNARY_OPS)
@pytest.mark.parametrize("size", [1, 3, 127, 1025])
def test_backend_unary(device, rng, op, size):
    x = rng.standard_normal(size)
    x = np.abs(x) + 0.1 if op in ("log", "sqrt") else x
    out = NDArray(x, device=device).unary(op)
    np.testing.assert_allclose(out.numpy(), _np_unary(op, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", BINARY_OPS)
def test_backend_binary_and_scalar(device, rng, op):
    a, b = rng.uniform(0.5, 2, (7, 9)), rng.uniform(0.5, 2, (7, 9))
    b[0, :3] = a[0, :3]  # some equal elements for the comparisons
    fn = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
          "maximum": np.maximum, "minimum": np.minimum, "eq": np.equal, "ne": np.not_equal,
          "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal}[op]
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    A, B = NDArray(a, device=device), NDArray(b, device=device)
    np.testing.assert_allclose(A._binary(B, op).numpy(), fn(a32, b32).astype(np.float64), rtol=1e-5)
    np.testing.assert_allclose(A._binary(1.25, op).numpy(), fn(a32, np.float32(1.25)).astype(np.float64),
                               rtol=1e-5)


@pytest.mark.parametrize("shape,axis", [((1,), 0), ((3, 127), 1), ((1025, 3), 0), ((5, 4, 3), (0, 2)),
                                        ((2, 3), None)], ids=str)
def test_backend_reductions(device, rng, shape, axis):
    x = rng.standard_normal(shape)
    A = NDArray(x, device=device)
    np.testing.assert_allclose(A.sum(axis).numpy(), x.sum(axis=axis), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(A.max(axis, keepdims=True).numpy(), x.astype(np.float32).max(axis=axis, keepdims=True))


@pytest.mark.parametrize("m,k,n,batch", [(1, 1, 1, ()), (3, 127, 5, ()), (33, 65, 17, (2,)),
                                         (127, 3, 129, (2, 3))], ids=str)
def test_backend_matmul(device, rng, m, k, n, batch):
    a, b = rng.standard_normal(batch + (m, k)), rng.standard_normal(batch + (k, n))
    out = NDArray(a, device=device) @ NDArray(b, device=device)
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-4, atol=1e-4)


def test_large_sum_accumulates_accurately(device, rng):
    x = rng.uniform(0, 1, 2**20)  # all positive: naive float32 running sums drift badly
    total = NDArray(x, device=device).sum().numpy()
    assert abs(float(total) - x.sum()) / x.sum() < 1e-5


def test_strided_copy_round_trips(device, rng):
    x = rng.standard_normal((4, 5, 6))
    A = NDArray(x, device=device)
    view = A.permute((2, 0, 1))[::-2, 1:, ::3]
    np.testing.assert_array_equal(view.compact().numpy(), x.astype(np.float32).transpose(2, 0, 1)[::-2, 1:, ::3])


def test_to_moves_between_devices(device, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    A = NDArray(x, device=device)
    np.testing.assert_array_equal(A.to(needle.cpu()).numpy(), x)
    assert A.to(needle.cpu()).device == needle.cpu()


def test_all_devices_registry():
    names = [d.name for d in needle.all_devices()]
    assert names[0] == "cpu" and {"cuda", "cudnn", "webgpu"} <= set(names)
    assert needle.default_device() == needle.cpu() and needle.cpu().enabled()
    for d in needle.all_devices():
        assert d.enabled() == (d.unavailable_reason() is None)
