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


# -- reductions of broadcast views: no materialised copy ------------------------------------
_BROADCAST_REDUCTIONS = [  # (stored shape, broadcast shape, axes)
    ((1,), (1000,), None),
    ((1,), (7,), 0),
    ((3, 1), (3, 5), 1),          # reduce the repeated axis only
    ((3, 1), (3, 5), 0),          # keep the repeated axis
    ((1, 4), (6, 4), None),
    ((2, 1, 4), (2, 3, 4), (0, 1)),
    ((2, 1, 4), (5, 2, 3, 4), (0, 2)),  # a new leading axis and an inner repeated one
    ((2, 1, 4), (5, 2, 3, 4), (1, 3)),  # both repeated axes kept
    ((1, 1, 1), (2, 3, 4), (1,)),
    ((4, 1), (4, 6), ()),         # no axis reduced
]


@pytest.mark.parametrize("stored,shape,axes", _BROADCAST_REDUCTIONS, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_of_broadcast_views(device, rng, stored, shape, axes, keepdims):
    x = rng.standard_normal(stored)
    view = NDArray(x, device=device).broadcast_to(shape)
    want = np.broadcast_to(x.astype(np.float32).astype(np.float64), shape)
    np_axes = tuple(axes) if isinstance(axes, tuple) else axes
    got_sum = view.sum(axes, keepdims=keepdims)
    np.testing.assert_allclose(got_sum.numpy(), want.sum(axis=np_axes, keepdims=keepdims),
                               rtol=1e-5, atol=1e-5)
    got_max = view.max(axes, keepdims=keepdims)
    np.testing.assert_array_equal(got_max.numpy(), want.max(axis=np_axes, keepdims=keepdims))
    assert got_sum.is_compact() and got_max.is_compact()
    assert got_sum.shape == want.sum(axis=np_axes, keepdims=keepdims).shape


def test_reductions_of_permuted_and_sliced_broadcast_views(device, rng):
    x = rng.standard_normal((3, 1, 5))
    want = np.broadcast_to(x.astype(np.float32).astype(np.float64), (2, 3, 4, 5))
    view = NDArray(x, device=device).broadcast_to((2, 3, 4, 5))
    cases = [(view.permute((2, 0, 3, 1)), want.transpose(2, 0, 3, 1)),
             (view[:, 1:, ::2, ::-1], want[:, 1:, ::2, ::-1]),
             (view.flip((2,)), np.flip(want, 2))]
    for v, w in cases:
        for axes in [None, (0,), (1, 2), (0, 3)]:
            np.testing.assert_allclose(v.sum(axes).numpy(), w.sum(axis=axes), rtol=1e-5,
                                       atol=1e-5)
            np.testing.assert_array_equal(v.max(axes, keepdims=True).numpy(),
                                          w.max(axis=axes, keepdims=True))


def test_tensor_summation_of_a_broadcast_goes_through_the_view(device, rng):
    x = rng.standard_normal((4, 1))
    t = needle.Tensor(x, device=device, requires_grad=True)
    s = needle.ops.summation(needle.ops.broadcast_to(t, (3, 4, 6)), (0, 2))
    np.testing.assert_allclose(s.numpy(), 18 * x.astype(np.float32)[:, 0], rtol=1e-5)
    s.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), np.full((4, 1), 18.0))
    assert float(t.broadcast_to((5, 4, 7)).max().numpy()) == x.astype(np.float32).max()


# -- constructor and reshape arguments that are not numbers ----------------------------------
def test_ndarray_rejects_none_complex_objects_and_strings():
    with pytest.raises(TypeError, match="None"):
        NDArray(None)
    with pytest.raises(needle.DTypeError, match="complex"):
        NDArray(np.array([1 + 2j, 3.0]))
    with pytest.raises(needle.DTypeError, match="complex"):
        NDArray(1 - 1j)
    with pytest.raises(needle.DTypeError, match="object array.*NoneType"):
        NDArray(np.array([1.0, None], dtype=object))
    with pytest.raises(needle.DTypeError, match="object array"):
        NDArray(np.array([1.0, 2.0], dtype=object))
    with pytest.raises(needle.DTypeError, match="string"):
        NDArray(["a", "b"])
    with pytest.raises(TypeError, match="None"):  # (what Tensor's constructor meets)
        NDArray(np.asarray(None))


def test_tensor_constructor_rejects_complex_and_objects():
    with pytest.raises(needle.DTypeError, match="complex"):
        needle.Tensor(np.array([[1j]]))
    with pytest.raises(needle.DTypeError, match="object"):
        needle.Tensor(np.array([object()]))
    with pytest.raises(TypeError, match="None"):
        needle.Tensor(None)


def test_ndarray_still_takes_ints_bools_and_float64(device, rng):
    ints = rng.integers(-5, 5, (3, 4))
    np.testing.assert_array_equal(NDArray(ints, device=device).numpy(), ints.astype(np.float32))
    np.testing.assert_array_equal(NDArray([True, False], device=device).numpy(), [1.0, 0.0])
    np.testing.assert_array_equal(NDArray(np.uint8(7), device=device).numpy(), np.float32(7))
    x = rng.standard_normal((2, 3))
    a = NDArray(x, device=device)
    assert a.dtype == "float32" and a.shape == (2, 3)
    x[0, 0] = 100.0  # the array holds its own copy
    assert a.numpy()[0, 0] != 100.0


def test_ndarray_from_host_data_never_aliases_the_source():
    x32 = np.arange(6, dtype=np.float32)
    a = NDArray(x32)
    x32[0] = 7.0
    assert a.numpy()[0] == 0.0
    x64 = np.arange(6.0)  # a float32 conversion: that copy becomes the buffer, not x64
    b = NDArray(x64)
    assert not np.shares_memory(b._handle, x64)
    b[0] = 5.0
    assert x64[0] == 0.0


def test_reshape_and_make_need_integer_dims():
    a = NDArray(np.arange(12.0))
    with pytest.raises(TypeError, match=r"\(2\.5, 2\.4\)"):
        a.reshape((2.5, 2.4))
    with pytest.raises(TypeError, match="shape"):
        a.reshape((3.0, 4))
    with pytest.raises(TypeError, match="shape"):
        needle.backend_ndarray.empty((2.5, 2))
    assert a.reshape((np.int64(3), np.int32(4))).shape == (3, 4)
    assert a.reshape(np.int64(12)).shape == (12,)
    assert a.reshape([2, -1]).shape == (2, 6)
    assert needle.backend_ndarray.empty((np.int64(2), 3)).shape == (2, 3)


def test_dtypes_are_always_names():
    # a numpy dtype equals its name ("float64" == np.dtype("float64")), but must not leak
    # into NDArray.dtype (messages, dict keys, reprs)
    for given in (np.dtype("float64"), np.float64, "float64"):
        assert type(needle.backend_ndarray.canonical_dtype(given)) is str
    assert needle.init.rand(3, dtype=np.dtype("float64")).dtype == "float64"
    assert type(needle.nn.Linear(2, 2, dtype="float64").weight.dtype) is str
