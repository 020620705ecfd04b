"""Numerics every device must share, against NumPy and PyTorch:

* NaN propagates through ``max``, ``maximum``, ``minimum``, ``relu`` and the fused ops that
  take a max (bias_act, batchnorm, linear with ReLU), as in NumPy and PyTorch, and
  comparisons with a NaN operand follow IEEE (only ``ne`` holds);
* logsumexp, softmax and cross-entropy on rows holding -inf, +inf and NaN match torch;
* cross-entropy of logits with large offsets keeps its small losses (no cancellation);
* ``take`` and ``scatter_add`` (integer indexing) match NumPy, repeated indices included;
* float64 ``linear`` layers are float64 all the way (forward and backward).

Device-parametrized through the ``device`` fixture; backend-level checks call
``device.backend`` on buffers made as ``helpers.upload`` makes them. Fresh random inputs
each run (the seed is recorded on the test).
"""
import numpy as np
import pytest
import torch
from helpers import download as get
from helpers import fresh_rng, held, upload

import needle
import needle.ops as ops

NAN, INF = np.nan, np.inf
DTYPES = ("float32", "float64")
#: against torch / NumPy in the same dtype
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture
def rng(request):
    return fresh_rng(request)


def sentinel(n, dtype):
    """An output's initial contents: a value no op here produces, so an unwritten element
    shows (NaN would hide among the expected NaNs)."""
    return np.full(n, -777.0, dtype=dtype)


def sprinkle(rng, x, values, fraction):
    """``x`` with about ``fraction`` of its elements (at least one) replaced by ``values``."""
    x = x.copy()
    count = max(1, int(x.size * fraction))
    x.flat[rng.choice(x.size, count, replace=False)] = rng.choice(values, count)
    return x


# -- NaN through max, maximum, minimum, relu --------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(6, 5), (4, 64), (5, 65), (3, 1025), (1, 10_000),
                                       (2, 100_003)])
def test_max_reduce_propagates_nan(device, rng, dtype, rows, cols):
    be = held(device, dtype)
    x = rng.standard_normal((rows, cols)).astype(dtype)
    with_nan = rng.permutation(rows)[:max(1, rows // 2)]  # some rows hold a NaN, some not
    for r in with_nan:
        x[r, rng.integers(cols)] = NAN
    if rows > 1:
        x[rng.permutation(rows)[0], rng.integers(cols)] = INF
    out = upload(be, sentinel(rows, dtype))
    be.reduce("max", upload(be, x), out, cols)
    np.testing.assert_array_equal(get(be, out), x.max(axis=1))


def test_tensor_max_of_nan(device):
    x = needle.Tensor([NAN, 1.0, 2.0], device=device)
    assert np.isnan(x.max().numpy())
    rows = needle.Tensor([[1.0, NAN], [3.0, 2.0]], device=device)
    np.testing.assert_array_equal(ops.max(rows, axes=(1,)).numpy(), [NAN, 3.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_propagate_nan(device, rng, dtype, op):
    be = held(device, dtype)
    n = 1025
    a = sprinkle(rng, rng.standard_normal(n).astype(dtype), [NAN, INF, -INF], 0.1)
    b = sprinkle(rng, rng.standard_normal(n).astype(dtype), [NAN, INF, -INF], 0.1)
    ref = getattr(np, op)
    out = upload(be, sentinel(n, dtype))
    be.binary(op, upload(be, a), upload(be, b), out)
    np.testing.assert_array_equal(get(be, out), ref(a, b))
    be.binary(op, upload(be, b), upload(be, a), out)  # NaN on either side
    np.testing.assert_array_equal(get(be, out), ref(b, a))
    for value in (0.25, NAN):
        be.scalar(op, upload(be, a), value, out)
        np.testing.assert_array_equal(get(be, out), ref(a, a.dtype.type(value)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_comparisons_with_nan(device, rng, dtype, op):
    """IEEE order: with a NaN operand, ne is 1 and every other comparison 0."""
    be = held(device, dtype)
    n = 257
    a = sprinkle(rng, rng.integers(-2, 3, n).astype(dtype), [NAN, INF, -INF], 0.2)
    b = sprinkle(rng, rng.integers(-2, 3, n).astype(dtype), [NAN, INF, -INF], 0.2)
    a[:2], b[:2] = NAN, [NAN, 1.0]  # NaN against NaN and against a number
    ref = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
           "gt": np.greater, "ge": np.greater_equal}[op]
    out = upload(be, sentinel(n, dtype))
    be.binary(op, upload(be, a), upload(be, b), out)
    np.testing.assert_array_equal(get(be, out), ref(a, b).astype(dtype))
    for value in (1.0, NAN):
        be.scalar(op, upload(be, a), value, out)
        np.testing.assert_array_equal(get(be, out), ref(a, a.dtype.type(value)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_fused_relus_keep_nan(device, rng, dtype):
    """relu(NaN) = NaN in the unary op, bias_act, batchnorm and the backend linear op."""
    be = held(device, dtype)
    rows, cols = 9, 37
    x = sprinkle(rng, rng.standard_normal(rows * cols).astype(dtype), [NAN, INF, -INF], 0.1)
    out = upload(be, sentinel(x.size, dtype))
    be.unary("relu", upload(be, x), out)
    np.testing.assert_array_equal(get(be, out), np.maximum(x, 0))

    bias = rng.standard_normal(cols).astype(dtype)
    bias[rng.integers(cols)] = NAN
    if be.supports("bias_act"):
        be.bias_act(upload(be, x), upload(be, bias), out, rows, cols, "relu")
        np.testing.assert_array_equal(get(be, out), np.maximum(x.reshape(rows, cols) + bias,
                                                               0).ravel())
    if be.supports("batchnorm"):  # x as (rows, cols channels, 1)
        mean, weight, shift = (rng.standard_normal(cols).astype(dtype) for _ in range(3))
        var = rng.uniform(0.5, 2.0, cols).astype(dtype)
        be.batchnorm(upload(be, x), None, upload(be, mean), upload(be, var), upload(be, weight),
                     upload(be, shift), out, cols, 1, 1e-5, "relu")
        y = (x.reshape(rows, cols) - mean) / np.sqrt(var + 1e-5) * weight + shift
        np.testing.assert_allclose(get(be, out), np.maximum(y, 0).ravel(), equal_nan=True,
                                   **TOL[dtype])
    if be.supports("linear", dtype):
        m, k, n = rows, cols, 16
        w = rng.standard_normal((k, n)).astype(dtype)
        xm = rng.standard_normal((m, k)).astype(dtype)
        xm[rng.integers(m), rng.integers(k)] = NAN  # one row of the product turns NaN
        b = rng.standard_normal(n).astype(dtype)
        y = upload(be, sentinel(m * n, dtype))
        be.linear(upload(be, xm), upload(be, w), upload(be, b), y, m, k, n, "relu")
        np.testing.assert_allclose(get(be, y), np.maximum(xm @ w + b, 0).ravel(), equal_nan=True,
                                   rtol=1e-4 if dtype == "float32" else 1e-12, atol=1e-4)


def test_linear_relu_of_nan_through_tensors(device, rng):
    x = rng.standard_normal((5, 8))
    x[2, 3] = NAN
    w, b = rng.standard_normal((8, 6)), rng.standard_normal(6)
    y = ops.linear(needle.Tensor(x, device=device), needle.Tensor(w, device=device),
                   needle.Tensor(b, device=device), act="relu").numpy()
    np.testing.assert_allclose(y, np.maximum(x @ w + b, 0), rtol=1e-4, atol=1e-4, equal_nan=True)
    assert np.isnan(y[2]).all() and not np.isnan(np.delete(y, 2, axis=0)).any()


# -- logsumexp, softmax, cross-entropy on rows with infinities and NaN -------------------
def special_rows(rng, cols, dtype):
    """Rows of finite values, each kind with -inf, +inf and NaN mixed in at random places."""
    def row(specials, count=1):
        r, count = rng.standard_normal(cols) * 5, min(count, cols)
        r[rng.choice(cols, count, replace=False)] = rng.choice(specials, count)
        return r

    many = max(1, cols // 3)
    rows = [rng.standard_normal(cols) * 5,     # all finite
            row([-INF], many),                 # some -inf
            np.full(cols, -INF),               # every element -inf
            row([INF]),                        # one +inf
            row([INF], many),                  # several +inf
            row([INF, -INF], many),            # +inf and -inf
            row([NAN]),                        # NaN
            row([NAN, INF, -INF], many),       # all three
            np.full(cols, INF)]
    return np.stack(rows).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 5, 300, 2000])
def test_logsumexp_softmax_of_special_rows_match_torch(device, rng, dtype, cols):
    be = held(device, dtype)
    x = special_rows(rng, cols, dtype)
    rows = x.shape[0]
    out = upload(be, sentinel(rows, dtype))
    be.logsumexp(upload(be, x), out, rows, cols)
    want = torch.logsumexp(torch.from_numpy(x), dim=1).numpy()
    np.testing.assert_allclose(get(be, out), want, equal_nan=True, **TOL[dtype])
    out = upload(be, sentinel(x.size, dtype))
    be.softmax(upload(be, x), out, rows, cols)
    want = torch.softmax(torch.from_numpy(x), dim=1).numpy()
    np.testing.assert_allclose(get(be, out).reshape(rows, cols), want, equal_nan=True,
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 5, 300, 2000])
def test_cross_entropy_of_special_rows_matches_torch(device, rng, dtype, cols):
    be = held(device, dtype)
    x = special_rows(rng, cols, dtype)
    rows = x.shape[0]
    labels = rng.integers(0, cols, rows)
    x[1, labels[1]] = -INF  # a -inf logit at the label: an infinite loss, finite gradient
    loss, grad = upload(be, sentinel(rows, dtype)), upload(be, sentinel(x.size, dtype))
    be.cross_entropy(upload(be, x), upload(be, labels.astype(dtype)), loss, grad, rows, cols)
    logits = torch.from_numpy(x).requires_grad_()
    want = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels), reduction="none")
    want.sum().backward()
    np.testing.assert_allclose(get(be, loss), want.detach().numpy(), equal_nan=True, **TOL[dtype])
    np.testing.assert_allclose(get(be, grad).reshape(rows, cols), logits.grad.numpy(),
                               equal_nan=True, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_a_label_out_of_range_is_nan(device, rng, dtype):
    """Labels -1, cols, -0.5 and NaN (a compiled replay passes them unchecked): a NaN loss
    and the softmax as the gradient in those rows; the others as torch, a label of 2.5
    naming class 2."""
    be = held(device, dtype)
    rows, cols = 8, 7
    x = rng.standard_normal((rows, cols)).astype(dtype)
    labels = rng.integers(0, cols, rows).astype(dtype)
    labels[[1, 4, 5, 6]] = -1, cols, -0.5, np.nan
    labels[7] = 2.5
    loss, grad = upload(be, sentinel(rows, dtype)), upload(be, sentinel(x.size, dtype))
    be.cross_entropy(upload(be, x), upload(be, labels), loss, grad, rows, cols)
    got, bad = get(be, loss), np.isin(np.arange(rows), [1, 4, 5, 6])
    labels[bad] = 0
    assert np.isnan(got[bad]).all()
    ok = torch.from_numpy(labels[~bad].astype(np.int64))
    want = torch.nn.functional.cross_entropy(torch.from_numpy(x[~bad]), ok, reduction="none")
    np.testing.assert_allclose(got[~bad], want.numpy(), **TOL[dtype])
    softmax = torch.softmax(torch.from_numpy(x), dim=1).numpy()
    np.testing.assert_allclose(get(be, grad).reshape(rows, cols)[bad], softmax[bad], **TOL[dtype])


# -- cross-entropy with large logits ---------------------------------------------------
def test_softmax_loss_keeps_a_small_loss_beside_large_logits(device):
    logits = needle.Tensor([[2000.0, 1990.0]], device=device)
    loss = needle.nn.SoftmaxLoss()(logits, needle.Tensor([0.0], device=device)).numpy()
    want = torch.nn.functional.cross_entropy(torch.tensor([[2000.0, 1990.0]]), torch.tensor([0]))
    np.testing.assert_allclose(loss, want.item(), rtol=1e-3, atol=log_atol(device))  # 4.54e-5, not 0


def log_atol(device):
    """WGSL's log is exact only to 2**-21 absolute near 1 (the spec's bound, and NVIDIA's
    Vulkan driver uses it), which is all of a loss of 1e-5; elsewhere float32's own."""
    return 2.0 ** -21 if device.name == "webgpu" else 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [2, 10, 1000])
def test_cross_entropy_with_large_offsets_matches_torch(device, rng, dtype, cols):
    be = held(device, dtype)
    rows = 64
    offsets = rng.choice([-1, 1], (rows, 1)) * 10.0 ** rng.uniform(2, 4, (rows, 1))
    x = (rng.standard_normal((rows, cols)) * 3 + offsets).astype(dtype)
    labels = rng.integers(0, cols, rows)
    # rows whose label is the max by a wide margin, one runner-up 10-12 below and the rest
    # far below: losses around 1e-5, which a cancellation at the offset's scale would zero
    for r in range(0, rows, 4):
        x[r] = offsets[r] - 30 - rng.uniform(0, 3, cols)
        x[r, (labels[r] + 1) % cols] = offsets[r, 0] - 10 - rng.uniform(0, 2)
        x[r, labels[r]] = offsets[r, 0]
    loss, grad = upload(be, sentinel(rows, dtype)), upload(be, sentinel(x.size, dtype))
    be.cross_entropy(upload(be, x), upload(be, labels.astype(dtype)), loss, grad, rows, cols)
    want = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(labels),
                                             reduction="none").numpy()
    assert want[::4].max() < 1e-4  # the small losses are in the test
    np.testing.assert_allclose(get(be, loss), want,
                               rtol=1e-3 if dtype == "float32" else 1e-9, atol=log_atol(device))


# -- take and scatter_add ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,count", [(0, 0), (1, 0), (1, 1), (7, 1), (1, 1000), (1000, 5000),
                                        (300_007, 1000), (50, 65_537 * 256)])
def test_take(device, rng, dtype, size, count):
    be = held(device, dtype)
    a = rng.standard_normal(size).astype(dtype)
    index = rng.integers(0, max(size, 1), count)  # repeats whenever count > size
    out = upload(be, sentinel(count, dtype))
    be.take(upload(be, a), index, out)
    np.testing.assert_array_equal(get(be, out), a[index])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count,size", [(0, 0), (0, 5), (1, 1), (1000, 1), (5000, 7),
                                        (1000, 100_000), (300_007, 1000), (300_007, 300_007)])
def test_scatter_add(device, rng, dtype, count, size):
    be = held(device, dtype)
    a = rng.standard_normal(count).astype(dtype)
    index = rng.integers(0, max(size, 1), count)
    start = rng.standard_normal(size).astype(dtype)  # scatter_add adds to what out holds
    out = upload(be, start)
    be.scatter_add(upload(be, a), index, out)
    want = start.astype(np.float64)
    np.add.at(want, index, a.astype(np.float64))
    repeats = np.bincount(index, minlength=size) if count else np.zeros(size)
    tol = 2e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(get(be, out), want, rtol=tol,
                               atol=tol * np.sqrt(repeats.max(initial=1) + 1) * 4)


def test_scatter_add_is_deterministic(device, rng):
    be = device.backend
    a = (rng.standard_normal(20_000) * 10.0 ** rng.uniform(-4, 4, 20_000)).astype("float32")
    index = rng.integers(0, 50, a.size)
    results = []
    for _ in range(3):
        out = upload(be, np.zeros(50, "float32"))
        be.scatter_add(upload(be, a), index, out)
        results.append(get(be, out))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


# -- float64 linear layers ---------------------------------------------------------------
def _gelu(y):
    return 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))


def _gelu_grad(y):
    c = np.sqrt(2 / np.pi)
    t = np.tanh(c * (y + 0.044715 * y ** 3))
    return 0.5 * (1 + t) + 0.5 * y * (1 - t * t) * c * (1 + 3 * 0.044715 * y * y)


@pytest.mark.parametrize("act", ["identity", "relu", "gelu"])
@pytest.mark.parametrize("m,k,n", [(3, 5, 7), (64, 129, 33)])
def test_linear_float64_matches_numpy(device, rng, act, m, k, n):
    """ops.linear in float64, forward and backward, to float64 rounding: a float64 layer
    must never be computed (or its weights read) in float32."""
    held(device, "float64")
    x, w, b, g = (rng.standard_normal(s) for s in ((m, k), (k, n), (n,), (m, n)))
    tensors = [needle.Tensor(v, device=device, dtype="float64") for v in (x, w, b)]
    y = ops.linear(*tensors, act=act)
    assert y.dtype == "float64"
    y.backward(needle.Tensor(g, device=device, dtype="float64"))
    pre = x @ w + b
    fwd, slope = {"identity": (pre, np.ones_like(pre)),
                  "relu": (np.maximum(pre, 0), (pre > 0).astype(np.float64)),
                  "gelu": (_gelu(pre), _gelu_grad(pre))}[act]
    gp = g * slope
    for got, want in ((y, fwd), (tensors[0].grad, gp @ w.T), (tensors[1].grad, x.T @ gp),
                      (tensors[2].grad, gp.sum(axis=0))):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12,
                                   atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("m,k,n", [(3, 5, 7), (64, 129, 33)])
def test_linear_ops_float64_match_numpy(device, rng, m, k, n):
    """The backend's fused linear / linear_backward in float64, where it has them."""
    be = held(device, "float64")
    if not (be.supports("linear", "float64") and be.supports("linear_backward", "float64")):
        pytest.skip(f"{device} has no fused float64 linear")
    x, w, b, g = (rng.standard_normal(s) for s in ((m, k), (k, n), (n,), (m, n)))
    for act in ("identity", "relu"):
        out = upload(be, sentinel(m * n, "float64"))
        be.linear(upload(be, x), upload(be, w), upload(be, b), out, m, k, n, act)
        want = x @ w + b if act == "identity" else np.maximum(x @ w + b, 0)
        np.testing.assert_allclose(get(be, out).reshape(m, n), want, rtol=1e-12,
                                   atol=1e-12 * np.abs(want).max())
    dx, dw, db = (upload(be, sentinel(size, "float64")) for size in (m * k, k * n, n))
    be.linear_backward(upload(be, g), upload(be, x), upload(be, w), dx, dw, db, m, k, n)
    for got, want in ((dx, g @ w.T), (dw, x.T @ g), (db, g.sum(axis=0))):
        np.testing.assert_allclose(get(be, got).reshape(want.shape), want, rtol=1e-12,
                                   atol=1e-12 * np.abs(want).max())


# -- embedding kernels: ids read on the device ----------------------------------------------
def _embedding_backend(device, dtype):
    be = held(device, dtype)
    assert be.supports("embedding", dtype) and be.supports("embedding_backward", dtype)
    return be


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_picks_rows_and_gives_nan_for_ids_out_of_range(device, rng, dtype):
    be = _embedding_backend(device, dtype)
    rows, dim = 13, 37
    weight = rng.standard_normal((rows, dim)).astype(dtype)
    ids = rng.integers(0, rows, 50).astype(dtype)
    ids[[3, 17, 40]] = (-1, rows, -0.5)  # (-0.5 truncates to 0 but is out of range)
    out = upload(be, sentinel(ids.size * dim, dtype))
    be.embedding(upload(be, weight), upload(be, ids), out, ids.size, rows, dim)
    got = get(be, out).reshape(ids.size, dim)
    bad = np.isin(np.arange(ids.size), [3, 17, 40])
    assert np.isnan(got[bad]).all()
    np.testing.assert_array_equal(got[~bad], weight[ids[~bad].astype(np.int64)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_backward_sums_repeated_ids_and_skips_bad_ones(device, rng, dtype):
    be = _embedding_backend(device, dtype)
    rows, dim, n = 7, 33, 300  # every row picked many times over
    grad = rng.standard_normal((n, dim)).astype(dtype)
    ids = rng.integers(0, rows, n).astype(dtype)
    ids[[5, 6]] = (rows + 3, -2)
    dweight = upload(be, sentinel(rows * dim, dtype))  # (zeroed by the op)
    be.embedding_backward(upload(be, grad), upload(be, ids), dweight, n, rows, dim)
    want = torch.zeros(rows, dim, dtype=getattr(torch, dtype))
    ok = np.ones(n, dtype=bool)
    ok[[5, 6]] = False
    want.index_add_(0, torch.from_numpy(ids[ok].astype(np.int64)), torch.from_numpy(grad[ok]))
    np.testing.assert_allclose(get(be, dweight).reshape(rows, dim), want.numpy(),
                               **{k: v * 10 for k, v in TOL[dtype].items()})


def test_embedding_op_matches_torch_forward_and_backward(device, rng):
    """ops.embedding (the kernel where the backend has one, else the gather) against
    torch.nn.functional.embedding, ids of shape (3, 5) with repeats."""
    dtype = "float64" if "float64" in device.backend.dtypes else "float32"
    weight = rng.standard_normal((11, 4))
    ids = rng.integers(0, 11, (3, 5))
    w = needle.Tensor(weight, device=device, dtype=dtype, requires_grad=True)
    out = ops.embedding(w, needle.Tensor(ids.astype(dtype), device=device))
    g = rng.standard_normal(out.shape)
    (out * needle.Tensor(g, device=device, dtype=dtype)).sum().backward()
    tw = torch.tensor(weight, requires_grad=True)
    tout = torch.nn.functional.embedding(torch.from_numpy(ids), tw)
    (tout * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), **TOL[dtype])
    with pytest.raises(IndexError, match="ids must lie in"):
        ops.embedding(w, needle.Tensor(np.array([0.0, 11.0]), device=device))
