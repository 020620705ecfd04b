"""Bad input raises a specific error that names the problem."""
import numpy as np
import pytest

import needle
from needle import DeviceMismatchError, DeviceUnavailableError, DTypeError, ShapeError


def t(*shape, device=None):
    return needle.Tensor(np.random.default_rng(0).standard_normal(shape), device=device)


def test_matmul_shape_mismatch():
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4, 5\)"):
        t(2, 3) @ t(4, 5)


def test_batched_matmul_batch_mismatch():
    with pytest.raises(ShapeError, match="cannot be broadcast"):
        t(2, 3, 4) @ t(3, 4, 5)


def test_elementwise_shape_mismatch():
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4,\)"):
        t(2, 3) + t(4)


def test_broadcast_to_incompatible():
    with pytest.raises(ShapeError, match="cannot broadcast shape"):
        needle.ops.broadcast_to(t(2, 3), (4, 3))


def test_reshape_wrong_size():
    with pytest.raises(ShapeError, match="cannot reshape"):
        t(2, 3).reshape((4, 2))


def test_unknown_dtype():
    with pytest.raises(DTypeError, match="unknown dtype 'int7'"):
        needle.Tensor([1.0], dtype="int7")


def test_mixed_dtypes():
    with pytest.raises(DTypeError, match="float32 and float64"):
        needle.Tensor([1.0]) + needle.Tensor([1.0], dtype="float64")


def test_unavailable_device_raises_with_its_reason():
    unavailable = [d for d in needle.all_devices() if not d.enabled()]
    if not unavailable:
        pytest.skip("every device is available here")
    for dev in unavailable:
        with pytest.raises(DeviceUnavailableError, match=rf"needle.{dev.name}\(\) is not available"):
            needle.Tensor([1.0], device=dev)


def test_missing_package_names_the_install_command():
    if needle.cuda().enabled():
        pytest.skip("CuPy and a GPU are present")
    reason = needle.cuda().unavailable_reason()
    if "CuPy is not installed" not in reason:
        pytest.skip(f"cuda is unavailable for another reason: {reason}")
    with pytest.raises(DeviceUnavailableError, match=r"pip install 'needle\[cuda\]'"):
        needle.Tensor([1.0], device=needle.cuda())


def test_mixing_devices(device):
    other = next((d for d in needle.all_devices() if d != device and d.enabled()), None)
    if other is None:
        pytest.skip("needs two available devices")
    with pytest.raises(DeviceMismatchError, match="different devices"):
        t(2, device=device) + t(2, device=other)


def test_mixing_devices_is_checked_before_any_kernel():
    # a tensor that claims to live on the cuda device: the check must fire before any
    # backend is asked to run (there may be no GPU here)
    a, b = t(2), t(2)
    b.realize_cached_data()._device = needle.cuda()
    with pytest.raises(DeviceMismatchError, match=r"needle.cpu\(\).*needle.cuda\(\)|needle.cuda\(\).*needle.cpu\(\)"):
        a + b


def test_conv_wrong_rank_input():
    with pytest.raises(ShapeError, match="4-D NHWC"):
        needle.ops.conv(t(3, 8, 8), t(3, 3, 8, 4))
    with pytest.raises(ShapeError, match="NCHW input with 3 channels"):
        needle.nn.Conv(3, 4, 3)(t(1, 8, 8))


def test_conv_channel_mismatch():
    with pytest.raises(ShapeError, match="does not fit input"):
        needle.ops.conv(t(1, 5, 5, 2), t(3, 3, 4, 1))


def test_linear_wrong_features():
    with pytest.raises(ShapeError, match=r"Linear\(4, 2\) got input of shape \(3, 5\)"):
        needle.nn.Linear(4, 2)(t(3, 5))


def test_softmax_loss_label_shape():
    with pytest.raises(ShapeError, match="labels of shape"):
        needle.nn.SoftmaxLoss()(t(4, 3), needle.Tensor([0, 1]))


def test_one_hot_out_of_range_labels():
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        needle.init.one_hot(3, [0, 5])


def test_unknown_device_name():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        needle.device("tpu")


def test_index_out_of_bounds():
    with pytest.raises(IndexError, match="out of bounds"):
        t(2, 3)[5]


def test_backward_out_grad_shape():
    x = t(2, 3)
    with pytest.raises(ValueError, match="out_grad shape"):
        (x * 2).backward(t(3, 2))


def test_batchnorm_training_needs_more_than_one_value():
    with pytest.raises(ValueError, match="more than one value per channel"):
        needle.nn.BatchNorm1d(3)(t(1, 3))


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [0.5, 1]], ids=["too-big", "negative", "fractional"])
def test_softmax_loss_rejects_labels_that_are_not_class_indices(device, labels):
    logits = t(2, 3, device=device)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        needle.nn.SoftmaxLoss()(logits, needle.Tensor(labels, device=device))


def test_rnn_initial_state_shape_is_checked():
    rnn = needle.nn.RNN(4, 5, num_layers=2)
    with pytest.raises(ShapeError, match=r"\(2, 3, 5\)"):
        rnn(t(6, 3, 4), t(1, 3, 5))
    lstm = needle.nn.LSTM(4, 5, num_layers=2)
    with pytest.raises(ShapeError, match="initial states"):
        lstm(t(6, 3, 4), (t(2, 3, 5), t(1, 3, 5)))


@pytest.mark.parametrize("call", [
    lambda: needle.ops.stack([t(2, 3), t(2, 3)], axis=5),
    lambda: needle.ops.concatenate([t(2, 3), t(2, 3)], axis=3),
    lambda: needle.ops.split(t(2, 3), axis=4),
    lambda: needle.ops.dilate(t(2, 3), (2,), 1),
    lambda: needle.ops.transpose(t(2, 3), (0, 5)),
], ids=["stack", "concatenate", "split", "dilate", "transpose"])
def test_out_of_range_axes(call):
    with pytest.raises(ShapeError, match="out of range"):
        call()


def test_negative_dilate_axis_counts_from_the_end():
    x = t(2, 3)
    assert needle.ops.dilate(x, (-1,), 1).shape == (2, 6)


def test_pytest_names_an_unavailable_device_in_one_line(tmp_path):
    import os
    import subprocess
    import sys
    missing = next((d for d in needle.all_devices() if not d.enabled()), None)
    if missing is None:
        pytest.skip("every device is available here")
    (tmp_path / "test_one.py").write_text("def test_device(device):\n    pass\n")
    conftest = os.path.join(os.path.dirname(__file__), "conftest.py")
    (tmp_path / "conftest.py").write_text(open(conftest).read())
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"--device={missing.name}", str(tmp_path)], capture_output=True,
                         text=True, cwd=tmp_path)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode != 0 and len(lines) == 1, lines
    assert f"needle.{missing.name}() is unavailable" in lines[0]
    if "install" in missing.unavailable_reason():
        assert "pip install" in lines[0]
