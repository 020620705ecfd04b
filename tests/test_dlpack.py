"""DLPack: Needle tensors sharing memory with PyTorch, JAX, CuPy and NumPy, both ways.

The cpu tests check that the sharing is real (a write on one side is seen on the other,
and the buffer addresses agree); the CUDA ones run on the cuda and cudnn devices only
(``--device cuda,cudnn`` on a GPU machine, with CuPy; PyTorch's CUDA build for the torch
ones) and check the same through device pointers. JAX tests skip without JAX."""
import gc

import numpy as np
import pytest

import needle
from needle.backend_ndarray import NDArray
from needle.dlpack import from_dlpack, tensor_dlpack, tensor_dlpack_device

torch = pytest.importorskip("torch")


def _buffer(t):
    return t.realize_cached_data()._handle


# -- host memory ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_from_torch_shares_memory(rng, dtype):
    t = torch.from_numpy(rng.standard_normal((3, 4))).to(dtype)
    x = from_dlpack(t)
    assert isinstance(x, needle.Tensor) and x.device == needle.cpu()
    assert x.dtype == str(dtype).replace("torch.", "") and not x.requires_grad
    assert _buffer(x).ctypes.data == t.data_ptr()  # no copy
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    t.mul_(3.0).add_(1.0)  # written by torch, seen by Needle
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    x.realize_cached_data()[0, :] = -2.0  # written by Needle, seen by torch
    assert (t[0] == -2.0).all()


def test_from_torch_views_keep_their_layout(rng):
    base = torch.from_numpy(rng.standard_normal((6, 5)).astype(np.float32))
    for view in (base.t(), base[1:, ::2], base[:1].expand(4, 5), base[2]):
        x = from_dlpack(view)
        d = x.realize_cached_data()
        assert d.shape == tuple(view.shape) and d.strides == view.stride()
        np.testing.assert_array_equal(x.numpy(), view.numpy())
    x = from_dlpack(base.t())
    base.zero_()
    assert not x.numpy().any()
    np.testing.assert_array_equal((x * 2.0 + 1.0).numpy(), np.ones((5, 6), np.float32))


def test_from_numpy_shares_memory_including_negative_strides(rng):
    a = rng.standard_normal((4, 6)).astype(np.float32)
    for view in (a, a.T, a[::2, 1:], a[::-1, ::-2]):
        x = from_dlpack(view)
        assert np.shares_memory(_buffer(x), a)
        np.testing.assert_array_equal(x.numpy(), view)
    x = from_dlpack(a[::-1, ::-2])
    a[...] = 7.0
    np.testing.assert_array_equal(x.numpy(), np.full((4, 3), 7.0, np.float32))


def test_from_dlpack_requires_grad_and_autograd(rng):
    t = torch.from_numpy(rng.standard_normal((2, 3)))
    x = from_dlpack(t, requires_grad=True)
    assert x.requires_grad and x.is_leaf()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * t.numpy())


def test_from_dlpack_errors():
    for bad, name in ((torch.zeros(2, dtype=torch.int64), "int64"),
                      (torch.zeros(2, dtype=torch.bfloat16), "bfloat16"),
                      (torch.zeros(2, dtype=torch.float16), "float16"),
                      (np.zeros(2, np.int32), "int32"),
                      (np.zeros(2, np.complex64), "complex64")):
        with pytest.raises(needle.DTypeError, match=f"{name}.*cast it first"):
            from_dlpack(bad)
    with pytest.raises(TypeError, match="__dlpack__"):
        from_dlpack([1.0, 2.0])
    with pytest.raises(BufferError, match="detach"):  # torch refuses, with its reason
        from_dlpack(torch.zeros(2, requires_grad=True))


def test_from_dlpack_onto_another_device_copies(device, rng):
    a = rng.standard_normal((3, 2)).astype(np.float32)
    t = torch.from_numpy(a.copy())
    x = from_dlpack(t, device=device)
    assert x.device == device
    np.testing.assert_array_equal(x.numpy(), a)
    if device != needle.cpu():
        t.add_(1.0)  # a copy: unaffected
        np.testing.assert_array_equal(x.numpy(), a)


def test_top_level_from_dlpack():
    if not hasattr(needle, "from_dlpack"):
        pytest.skip("needle/__init__.py does not export from_dlpack yet")
    assert needle.from_dlpack is from_dlpack


# -- export -------------------------------------------------------------------------------
def test_torch_from_needle_shares_memory(rng):
    x = needle.Tensor(rng.standard_normal((3, 4)), device=needle.cpu())
    t = torch.from_dlpack(x)
    assert t.data_ptr() == _buffer(x).ctypes.data and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), x.numpy())
    t.mul_(2.0)  # the sharing is real: torch's in-place write changes the Needle tensor
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    assert x.__dlpack_device__() == (1, 0) == tensor_dlpack_device(x)
    assert torch.from_dlpack(tensor_dlpack(x)).data_ptr() == t.data_ptr()  # the capsule itself


def test_export_views_and_round_trip(rng):
    a = rng.standard_normal((4, 5))
    x = needle.Tensor(a, device=needle.cpu(), dtype="float64")
    for view, want in ((x.transpose(), a.T),
                       (x.broadcast_to((2, 4, 5)), np.broadcast_to(a, (2, 4, 5))),
                       (x.realize_cached_data()[1:, ::2], a[1:, ::2])):
        t = torch.from_dlpack(view)  # views keep their strides (and share x's buffer)
        np.testing.assert_array_equal(t.numpy(), want)
        assert np.shares_memory(np.from_dlpack(view), _buffer(x))
        assert t.stride() == tuple(view.strides if isinstance(view, NDArray)
                                   else view.realize_cached_data().strides)
    back = from_dlpack(torch.from_dlpack(x))  # Needle -> torch -> Needle: one buffer
    assert _buffer(back).ctypes.data == _buffer(x).ctypes.data and back.dtype == "float64"
    np.testing.assert_array_equal(np.from_dlpack(x), a)


def test_export_negative_strides_copies(rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    flipped = NDArray(a, device=needle.cpu()).flip((1,))
    t = torch.from_dlpack(flipped)  # DLPack consumers reject negative strides: a copy
    np.testing.assert_array_equal(t.numpy(), a[:, ::-1])
    with pytest.raises(BufferError, match="negative strides"):
        flipped.__dlpack__(copy=False)


def test_webgpu_memory_cannot_be_shared():
    dev = needle.webgpu()
    if not dev.enabled():
        pytest.skip(f"{dev} unavailable: {dev.unavailable_reason()}")
    x = needle.Tensor([1.0, 2.0], device=dev)
    with pytest.raises(BufferError, match=r"webgpu.*\.numpy\(\)"):
        torch.from_dlpack(x)
    with pytest.raises(BufferError, match="webgpu"):
        tensor_dlpack(x)


# -- JAX ----------------------------------------------------------------------------------
def test_jax_round_trip(rng):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    a = rng.standard_normal((3, 5)).astype(np.float32)
    x = from_dlpack(jax.device_put(a, jax.devices("cpu")[0]))  # (JAX puts it on a GPU if any)
    assert x.device == needle.cpu()
    np.testing.assert_array_equal(x.numpy(), a)
    np.testing.assert_allclose((x * 2.0).numpy(), 2 * a)
    y = needle.Tensor(a, device=needle.cpu())
    np.testing.assert_array_equal(np.asarray(jnp.from_dlpack(y)), a)


# -- CUDA (cuda and cudnn devices, with CuPy) ----------------------------------------------
def _gpu(device):
    if device.name not in ("cuda", "cudnn"):
        pytest.skip("CUDA DLPack runs on the cuda and cudnn devices")
    return pytest.importorskip("cupy")


def test_jax_cuda_arrays_without_a_copy(device, rng):
    _gpu(device)
    jax = pytest.importorskip("jax")
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("JAX has no GPU here")
    a = rng.standard_normal((3, 5)).astype(np.float32)
    j = jax.device_put(a, gpus[0])
    x = from_dlpack(j, device=device)
    assert x.device == device
    assert _buffer(x).ptr == j.unsafe_buffer_pointer()
    np.testing.assert_array_equal(x.numpy(), a)
    back = jax.dlpack.from_dlpack(needle.Tensor(a * 3, device=device))
    np.testing.assert_array_equal(np.asarray(back), a * 3)


def test_cupy_into_needle_without_a_copy(device, rng):
    cp = _gpu(device)
    a = cp.asarray(rng.standard_normal((4, 6)).astype(np.float32))
    assert from_dlpack(a).device == needle.cuda()  # CUDA memory defaults to needle.cuda()
    x = from_dlpack(a, device=device)
    assert x.device == device and _buffer(x).ptr == a.data.ptr
    np.testing.assert_array_equal(x.numpy(), cp.asnumpy(a))
    a *= 2.0  # on CuPy's current stream, which Needle uses too
    np.testing.assert_array_equal(x.numpy(), cp.asnumpy(a))
    np.testing.assert_allclose((x + 1.0).numpy(), cp.asnumpy(a) + 1.0, rtol=1e-6)
    for view in (a.T, a[1:, ::2], a[::-1], a[:, ::-2].T):
        y = from_dlpack(view, device=device)
        np.testing.assert_array_equal(y.numpy(), cp.asnumpy(view))
        np.testing.assert_array_equal(y.realize_cached_data().compact().numpy(),
                                      cp.asnumpy(view))
    d = from_dlpack(cp.asarray(rng.standard_normal(5)), device=device)
    assert d.dtype == "float64"
    with pytest.raises(needle.DTypeError, match="int32"):
        from_dlpack(cp.zeros(3, dtype=cp.int32), device=device)


def test_needle_into_cupy_without_a_copy(device, rng):
    cp = _gpu(device)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    x = needle.Tensor(a, device=device)
    c = cp.from_dlpack(x)
    assert c.data.ptr == _buffer(x).ptr and c.dtype == cp.float32
    assert x.__dlpack_device__() == (2, cp.cuda.runtime.getDevice())
    c += 1.0
    np.testing.assert_array_equal(x.numpy(), a + 1.0)
    t = x.transpose()  # a permuted view keeps its strides
    ct = cp.from_dlpack(t)
    assert ct.data.ptr == _buffer(x).ptr
    np.testing.assert_array_equal(cp.asnumpy(ct), (a + 1.0).T)
    flipped = cp.from_dlpack(x.realize_cached_data().flip((0,)))  # a copy
    np.testing.assert_array_equal(cp.asnumpy(flipped), (a + 1.0)[::-1])


def test_cuda_buffers_outlive_their_other_owner(device, rng):
    cp = _gpu(device)
    from needle.backend_ndarray.cuda import memory

    a = rng.standard_normal(1000).astype(np.float32)
    c = cp.from_dlpack(needle.Tensor(a, device=device))  # the Needle tensor is dropped
    gc.collect()
    cp.asarray(np.zeros(1000, np.float32))  # a same-size allocation must not reuse it
    np.testing.assert_array_equal(cp.asnumpy(c), a)
    src = cp.asarray(a)
    cached = memory._Blocks.cached_bytes
    x = from_dlpack(src, device=device)
    del src
    gc.collect()
    np.testing.assert_array_equal(x.numpy(), a)  # x keeps CuPy's memory alive
    del x
    gc.collect()
    assert memory._Blocks.cached_bytes == cached  # foreign memory is never kept for reuse


def test_torch_cuda_both_ways_without_a_copy(device, rng):
    _gpu(device)
    if not torch.cuda.is_available():
        pytest.skip("PyTorch here has no CUDA")
    t = torch.from_numpy(rng.standard_normal((4, 3)).astype(np.float32)).cuda()
    x = from_dlpack(t, device=device)
    assert _buffer(x).ptr == t.data_ptr()
    np.testing.assert_array_equal(x.numpy(), t.cpu().numpy())
    y = needle.Tensor(rng.standard_normal((2, 5)), device=device)
    ty = torch.from_dlpack(y)
    assert ty.is_cuda and ty.data_ptr() == _buffer(y).ptr
    ty.mul_(2.0)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(y.numpy(), ty.cpu().numpy())
