"""Matrix product (batched, broadcasting batch dims) and 2-D convolution."""
import numbers

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import broadcast_shapes
from ..errors import ShapeError
from .movement import broadcast_to, dilate, flip, get_item, pad, permute, reshape, transpose


class MatMul(TensorOp):
    """``a @ b`` for operands of equal batch shape (``matmul`` broadcasts them first)."""

    def compute(self, a, b):
        return a @ b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        return out_grad @ transpose(b), transpose(a) @ out_grad


_MATMUL = MatMul()  # stateless: one instance serves every product


def matmul(a, b):
    """Matrix product with NumPy semantics: 1-D operands are promoted and the batch
    dimensions of N-D operands broadcast against each other."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        raise TypeError(f"matmul needs two needle Tensors, got {type(a).__name__} and "
                        f"{type(b).__name__}")
    a_shape, b_shape = a.shape, b.shape
    if len(a_shape) == len(b_shape) == 2 and a_shape[1] == b_shape[0]:
        # the common case, without the checks below (an eager product is host-bound)
        return Tensor.make_from_op(_MATMUL, (a, b))
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul does not accept 0-d operands (shapes {a.shape}, {b.shape})")
    if a.ndim == 1:
        return reshape(matmul(reshape(a, (1,) + a.shape), b), b.shape[:-2] + b.shape[-1:])
    if b.ndim == 1:
        return reshape(matmul(a, reshape(b, b.shape + (1,))), a.shape[:-1])
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = broadcast_to(a, batch + a.shape[-2:])
    b = broadcast_to(b, batch + b.shape[-2:])
    return _MATMUL(a, b)


class Conv(TensorOp):
    """2-D convolution: input NHWC (or NCHW with ``channels_first``, as nn.Conv uses it),
    weight (k, k, c_in, c_out), zero ``padding``; the output has the input's layout."""

    def __init__(self, stride=1, padding=0, channels_first=False):
        self.stride, self.padding, self.channels_first = stride, padding, channels_first

    def compute(self, a, w):
        if not a.device.backend.supports("conv", a.dtype):
            if self.channels_first:
                return self._compute_reference(a.permute((0, 2, 3, 1)), w).permute((0, 3, 1, 2))
            return self._compute_reference(a, w)
        if self.channels_first and a.is_compact():  # an NCHW model's usual case: no views
            n, c, h, wd = a.shape
            return self._backend_conv(a, (n, h, wd, c), w, channels_first=True)
        # the backend convolves NCHW or NHWC data as stored (cuDNN: no layout copy, and it
        # pads without a padded copy); the output has the same layout as the data
        nhwc, nchw = (a.permute((0, 2, 3, 1)), a) if self.channels_first else \
            (a, a.permute((0, 3, 1, 2)))
        if nchw.is_compact() or (self.channels_first and not nhwc.is_compact()):
            out = self._backend_conv(nchw.compact(), nhwc.shape, w, channels_first=True)
            return out if self.channels_first else out.permute((0, 2, 3, 1))
        out = self._backend_conv(nhwc.compact(), nhwc.shape, w, channels_first=False)
        return out.permute((0, 3, 1, 2)) if self.channels_first else out

    def _backend_conv(self, x, nhwc_shape, w, channels_first):
        """The backend's conv of compact ``x`` (NCHW with ``channels_first``, else NHWC)."""
        p, s = self.padding, self.stride
        (n, h, wd, _), (k, _, _, c_out) = nhwc_shape, w.shape
        ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
        out = x._new((n, c_out, ho, wo) if channels_first else (n, ho, wo, c_out))
        x.device.backend.conv(x._handle, w.compact()._handle, out._handle, nhwc_shape, k, c_out,
                              s, p, channels_first=channels_first)
        return out

    def _compute_reference(self, a, w):
        """NHWC through the contract's basic ``conv2d`` on an explicitly padded copy."""
        p = self.padding
        if p:
            a = a.pad(((0, 0), (p, p), (p, p), (0, 0)))
        return a.conv2d(w, self.stride)

    def gradient(self, out_grad, node):
        x, w = node.inputs
        if x.device.backend.supports("conv_backward", x.dtype):
            return self._fused_gradient(out_grad, x, w)
        if self.channels_first:  # the composition's NHWC gradients of NHWC views
            dx, dw = self._composed_gradient(permute(out_grad, (0, 2, 3, 1)),
                                             permute(x, (0, 2, 3, 1)), w)
            return permute(dx, (0, 3, 1, 2)), dw
        return self._composed_gradient(out_grad, x, w)

    def _composed_gradient(self, out_grad, x, w):
        """NHWC gradients as Needle ops: a convolution for dx, an im2col matmul for dw."""
        k, s, p = w.shape[0], self.stride, self.padding
        _, h, wd, _ = x.shape
        g = dilate(out_grad, (1, 2), s - 1)
        g = get_item(g, (slice(None), slice(0, (out_grad.shape[1] - 1) * s + 1),
                         slice(0, (out_grad.shape[2] - 1) * s + 1)))
        # input gradient: full convolution of the dilated gradient with the flipped kernel,
        # over the padded input's rows [0, (ho-1)*s + k); rows the stride skipped get zeros
        w_flip = transpose(flip(w, (0, 1)), (2, 3))
        full_grad = conv(g, w_flip, 1, k - 1)
        fh, fw = full_grad.shape[1], full_grad.shape[2]
        full_grad = pad(full_grad, ((0, 0), (0, h + 2 * p - fh), (0, wd + 2 * p - fw), (0, 0)))
        grad_x = get_item(full_grad, (slice(None), slice(p, p + h), slice(p, p + wd)))
        return grad_x, Tensor.make_const(self._weight_grad(x, out_grad, k))

    def _fused_gradient(self, out_grad, x_in, w_in):
        """Both gradients from the backend's conv_backward (cuDNN dgrad and wgrad), on the
        data in the layout the forward convolved it (see compute): no layout copies."""
        x, g = x_in.realize_cached_data(), out_grad.realize_cached_data()
        w = w_in.realize_cached_data().compact()
        if self.channels_first and x.is_compact():  # NCHW as stored: no views
            n, c, h, wd = x.shape
            return self._backward_on(x, g.compact(), w, (n, h, wd, c), True, x_in, w_in)
        if self.channels_first:
            nchw_x, nchw_g = x, g
            nhwc_x, nhwc_g = x.permute((0, 2, 3, 1)), g.permute((0, 2, 3, 1))
        else:
            nhwc_x, nhwc_g = x, g
            nchw_x, nchw_g = x.permute((0, 3, 1, 2)), g.permute((0, 3, 1, 2))
        stored_nchw = nchw_x.is_compact() or (self.channels_first and not nhwc_x.is_compact())
        data, grad = ((nchw_x, nchw_g) if stored_nchw else (nhwc_x, nhwc_g))
        return self._backward_on(data.compact(), grad.compact(), w, nhwc_x.shape, stored_nchw,
                                 x_in, w_in)

    def _backward_on(self, data, grad, w, nhwc_shape, stored_nchw, x_in, w_in):
        """The backend's conv_backward on compact ``data`` and ``grad`` (NCHW when
        ``stored_nchw``); dx comes back in the op's layout."""
        dx = data._new() if x_in.requires_grad else None
        dw = w._new() if w_in.requires_grad else None
        data.device.backend.conv_backward(
            grad._handle, data._handle, w._handle, dx._handle if dx is not None else None,
            dw._handle if dw is not None else None, nhwc_shape, w.shape[0], w.shape[3],
            self.stride, self.padding, channels_first=stored_nchw)
        if dx is not None and stored_nchw != self.channels_first:  # back to the op's layout
            dx = dx.permute((0, 2, 3, 1)) if stored_nchw else dx.permute((0, 3, 1, 2))
        return tuple(Tensor.make_const(d) if d is not None else None for d in (dx, dw))

    def _weight_grad(self, x, out_grad, k):
        """dL/dW = im2col(padded x)^T @ dL/dY: the forward's strided im2col view, gathered
        by one compact call, then one matmul (any device, any input aspect ratio)."""
        x, g = x.realize_cached_data(), out_grad.realize_cached_data()
        p, s = self.padding, self.stride
        if p:
            x = x.pad(((0, 0), (p, p), (p, p), (0, 0)))
        x = x.compact()
        n, h, w, c = x.shape
        _, ho, wo, c_out = g.shape
        sn, sh, sw, _ = x.strides
        cols = x.as_strided((k, k, c, n, ho, wo), (sh, sw, 1, sn, sh * s, sw * s))
        cols = cols.compact().reshape((k * k * c, n * ho * wo))
        return (cols @ g.compact().reshape((n * ho * wo, c_out))).reshape((k, k, c, c_out))


def conv(a, b, stride=1, padding=1, channels_first=False):
    """Convolve NHWC input ``a`` (NCHW with ``channels_first``) with (k, k, c_in, c_out)
    weights ``b`` and zero ``padding`` on each side (classic Needle's default, 1); the
    output has the input's layout. Every device gets the same checks, here."""
    layout = "NCHW" if channels_first else "NHWC"
    if a.ndim != 4:
        raise ShapeError(f"conv expects a 4-D {layout} input, got shape {a.shape}")
    for name, value, least in (("stride", stride, 1), ("padding", padding, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
            raise ValueError(f"conv: {name} must be an int >= {least}, got {value!r}")
    c, h, w = (a.shape[1], a.shape[2], a.shape[3]) if channels_first else \
        (a.shape[3], a.shape[1], a.shape[2])
    if b.ndim != 4 or b.shape[0] != b.shape[1] or b.shape[2] != c:
        raise ShapeError(f"conv: weight shape {b.shape} does not fit input {a.shape} "
                         f"({layout}); expected (k, k, {c}, c_out)")
    k = b.shape[0]
    if k > h + 2 * padding or k > w + 2 * padding:
        raise ShapeError(f"conv: kernel {k}x{k} is larger than the padded input "
                         f"{h + 2 * padding}x{w + 2 * padding} (input {a.shape} {layout}, "
                         f"padding {padding})")
    return Conv(int(stride), int(padding), channels_first)(a, b)
