"""Fused kernels against the compositions of simple ops they replace.

The ops layer runs a fused op only where the backend has it (``Backend.supports``); here the
same computation runs both ways on each device and must agree, forward and backward."""
import numpy as np
import pytest

import needle
import needle.ops as ops


def _both(device, unfused, build, inputs):
    """(fused, composite) results of ``build`` and the gradients of its inputs."""
    def run():
        tensors = [needle.Tensor(x, device=device) for x in inputs]
        out = build(*tensors)
        out.backward(needle.Tensor(np.ones(out.shape) * 0.7 + np.arange(out.size).reshape(out.shape) * 0.01,
                                   device=device))
        return [out.numpy()] + [t.grad.numpy() for t in tensors]
    return run(), unfused(run)


CASES = {
    "logsumexp": (lambda x: ops.logsumexp(x, (1,)), [(5, 7)]),
    "softmax": (ops.softmax, [(3, 4, 6)]),
    "cross_entropy": (lambda x: ops.softmax_cross_entropy(x, needle.Tensor([1, 0, 3, 2, 4], device=x.device)),
                      [(5, 6)]),
    "layernorm": (lambda x, w, b: ops.layer_norm(x, w, b), [(4, 8), (8,), (8,)]),
    "bias_relu": (lambda x, b: ops.bias_act(x, b, "relu"), [(6, 5), (5,)]),
    "batch_norm_nchw": (lambda x, m, v, w, b, xb: ops.batch_norm(x, m, v * v + 0.5, w, b,
                                                                 act="relu", x_bias=xb),
                        [(2, 3, 4, 5), (3,), (3,), (3,), (3,), (3,)]),
    "batch_norm_rows": (lambda x, m, v, w, b: ops.batch_norm(x, m, v * v + 0.5, w, b),
                        [(6, 5), (5,), (5,), (5,), (5,)]),
    "batch_norm_train_nchw": (lambda x, w, b: ops.batch_norm_train(x, w, b, act="relu")[0],
                              [(2, 3, 4, 5), (3,), (3,)]),
    "batch_norm_train_rows": (lambda x, w, b: ops.batch_norm_train(x, w, b)[0],
                              [(6, 5), (5,), (5,)]),
    "linear": (lambda x, w, b: ops.linear(x, w, b), [(6, 5), (5, 3), (3,)]),
    "linear_relu": (lambda x, w, b: ops.linear(x, w, b, "relu"), [(6, 5), (5, 3), (3,)]),
    "linear_gelu": (lambda x, w, b: ops.linear(x, w, b, "gelu"), [(6, 5), (5, 3), (3,)]),
    "conv": (lambda x, w: ops.conv(x, w, 1, 1), [(2, 6, 6, 3), (3, 3, 3, 4)]),
    "conv_stride2": (lambda x, w: ops.conv(x, w, 2, 1), [(2, 7, 7, 3), (3, 3, 3, 4)]),
    "attention": (lambda q, k, v: ops.scaled_dot_product_attention(q, k, v),
                  [(2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 4)]),
    "attention_causal": (lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, True),
                         [(2, 3, 6, 4)] * 3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fused_matches_composite(device, rng, unfused, name):
    build, shapes = CASES[name]
    inputs = [rng.standard_normal(s) * 2 for s in shapes]
    fused, composite = _both(device, unfused, build, inputs)
    for f, c in zip(fused, composite):
        np.testing.assert_allclose(f, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda p: needle.optim.SGD(p, lr=0.1),
    lambda p: needle.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda p: needle.optim.Adam(p, lr=0.01, weight_decay=0.01),
], ids=["sgd", "sgd-momentum-wd", "adam-wd"])
def test_fused_optimizer_matches_composite(device, rng, unfused, make):
    w0, grads = rng.standard_normal((4, 3)), [rng.standard_normal((4, 3)) for _ in range(3)]

    def run():
        p = needle.nn.Parameter(needle.Tensor(w0, device=device))
        opt = make([p])
        for g in grads:
            opt.reset_grad()
            (p * needle.Tensor(g, device=device)).sum().backward()
            opt.step()
        return p.numpy()

    np.testing.assert_allclose(run(), unfused(run), rtol=1e-5, atol=1e-6)


def test_running_stats_kernel_matches_the_composition(device, rng, unfused):
    """BatchNorm2d's running statistics after two training steps, updated by the backend's
    running_stats kernel and by in-place Tensor ops, and each update moves the buffers'
    versions (a compiled step or a saved graph must see the write)."""
    x = [rng.standard_normal((4, 3, 5, 5)) * 2 + 1 for _ in range(2)]

    def run():
        bn = needle.nn.BatchNorm2d(3, momentum=0.3, device=device)
        versions = []
        for batch in x:
            bn(needle.Tensor(batch, device=device))
            versions.append((bn.running_mean._version, bn.running_var._version))
        return bn.running_mean.numpy(), bn.running_var.numpy(), versions

    fused, composite = run(), unfused(run)
    np.testing.assert_allclose(fused[0], composite[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused[1], composite[1], rtol=1e-5, atol=1e-6)
    assert fused[2][0] < fused[2][1] and composite[2][0] < composite[2][1]


def test_update_running_stats_refuses_mismatched_statistics():
    rm, rv = needle.init.zeros(3), needle.init.ones(3)
    with pytest.raises(needle.errors.ShapeError, match="one element per channel"):
        ops.update_running_stats(rm, rv, needle.init.zeros(4), needle.init.ones(3), 0.1, 8)
    with pytest.raises(ValueError, match="n > 1"):
        ops.update_running_stats(rm, rv, needle.init.zeros(3), needle.init.ones(3), 0.1, 1)
