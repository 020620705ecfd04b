"""Tests of needle.data: file readers, DataLoader, transforms and the bundled digits set."""
import gzip
import pickle

import numpy as np
import pytest

from needle.data import (CIFAR10Dataset, DataLoader, MNISTDataset, NDArrayDataset, RandomCrop,
                         RandomFlipHorizontal, digits_split, load_digits)


# ---------------------------------------------------------------- file-format helpers

def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(tmp_path, n=7, rows=5, cols=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, size=(n, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    img_path, lbl_path = tmp_path / "img.gz", tmp_path / "lbl.gz"
    write_idx(img_path, images, 2051)
    write_idx(lbl_path, labels, 2049)
    return img_path, lbl_path, images, labels


def write_cifar(folder, names, n=3, seed=0):
    rng = np.random.default_rng(seed)
    data, labels = [], []
    for name in names:
        d = rng.integers(1, 256, size=(n, 3072), dtype=np.uint8)
        lab = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": d, b"labels": lab}, f)
        data.append(d)
        labels += lab
    return np.concatenate(data), np.array(labels)


TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


# ---------------------------------------------------------------- MNIST

def test_mnist_round_trip(tmp_path):
    img_path, lbl_path, images, labels = write_mnist(tmp_path)
    ds = MNISTDataset(str(img_path), str(lbl_path))
    assert len(ds) == 7
    for i in range(7):
        x, y = ds[i]
        assert x.dtype == np.float32 and x.shape == (5 * 4,)  # size from header, not 28
        np.testing.assert_array_equal(x, images[i].reshape(-1).astype(np.float32) / 255)
        assert y == labels[i]
    assert ds.images.min() > 0 and ds.images.max() <= 1


def test_mnist_transforms_see_hw1_image(tmp_path):
    img_path, lbl_path, images, _ = write_mnist(tmp_path)
    seen = []
    ds = MNISTDataset(img_path, lbl_path, transforms=[lambda im: seen.append(im.shape) or im[::-1]])
    x, _ = ds[2]
    assert seen == [(5, 4, 1)]
    np.testing.assert_array_equal(x, (images[2][::-1] / np.float32(255)).reshape(-1))


def test_mnist_missing_file(tmp_path):
    _, lbl_path, _, _ = write_mnist(tmp_path)
    missing = tmp_path / "nope.gz"
    with pytest.raises(FileNotFoundError, match="nope.gz"):
        MNISTDataset(missing, lbl_path)


def test_mnist_bad_magic(tmp_path):
    img_path, lbl_path, _, _ = write_mnist(tmp_path)
    # labels file passed as images: magic 2049 where 2051 is expected
    with pytest.raises(ValueError, match=r"lbl\.gz.*2049"):
        MNISTDataset(lbl_path, img_path)


def test_mnist_count_mismatch(tmp_path):
    img_path, _, _, _ = write_mnist(tmp_path)
    write_idx(tmp_path / "few.gz", np.arange(3, dtype=np.uint8), 2049)
    with pytest.raises(ValueError, match="7 images"):
        MNISTDataset(img_path, tmp_path / "few.gz")


# ---------------------------------------------------------------- CIFAR-10

@pytest.mark.parametrize("train", [True, False])
def test_cifar_round_trip(tmp_path, train):
    data, labels = write_cifar(tmp_path, TRAIN_BATCHES if train else ["test_batch"])
    ds = CIFAR10Dataset(str(tmp_path), train=train)
    assert len(ds) == len(data) == (15 if train else 3)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == np.float32 and x.shape == (3, 32, 32)
        np.testing.assert_array_equal(x, data[i].reshape(3, 32, 32).astype(np.float32) / 255)
        assert y == labels[i]


def test_cifar_transforms_act_on_hwc(tmp_path):
    data, _ = write_cifar(tmp_path, ["test_batch"])
    ds = CIFAR10Dataset(tmp_path, train=False, transforms=[RandomFlipHorizontal(p=1.0)])
    expected = data[0].reshape(3, 32, 32)[:, :, ::-1].astype(np.float32) / 255  # width flip
    np.testing.assert_array_equal(ds[0][0], expected)


def test_cifar_missing_batch(tmp_path):
    write_cifar(tmp_path, TRAIN_BATCHES[:4])
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        CIFAR10Dataset(tmp_path, train=True)


def test_cifar_bad_pickle(tmp_path):
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"images": np.zeros((1, 3072), np.uint8)}, f)
    with pytest.raises(ValueError, match="test_batch"):
        CIFAR10Dataset(tmp_path, train=False)


# ---------------------------------------------------------------- NDArrayDataset / DataLoader

def index_dataset(n=10):
    """Field 0 holds each sample's own index, so batches reveal the order they came in."""
    return NDArrayDataset(np.arange(n, dtype=np.float32).reshape(n, 1) * np.ones((1, 3)),
                          np.arange(n))


def epoch_order(loader):
    return np.concatenate([y.numpy().astype(int) for _, y in loader])


def test_ndarray_dataset():
    ds = NDArrayDataset(np.arange(12).reshape(4, 3), np.arange(4) * 10)
    assert len(ds) == 4
    x, y = ds[1]
    np.testing.assert_array_equal(x, [3, 4, 5])
    assert y == 10


def test_ndarray_dataset_length_mismatch():
    with pytest.raises(ValueError, match=r"\[4, 3\]"):
        NDArrayDataset(np.zeros(4), np.zeros(3))


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_loader_rejects_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(index_dataset(), batch_size=bad)


def test_loader_batches_and_last_partial():
    import needle
    loader = DataLoader(index_dataset(10), batch_size=4, device=needle.cpu())
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    for (x, y), n in zip(batches, [4, 4, 2]):
        assert isinstance(x, needle.Tensor) and isinstance(y, needle.Tensor)
        assert x.shape == (n, 3) and y.shape == (n,)
    np.testing.assert_array_equal(batches[2][0].numpy(), [[8] * 3, [9] * 3])
    np.testing.assert_array_equal(epoch_order(loader), np.arange(10))


def test_loader_drop_last():
    loader = DataLoader(index_dataset(10), batch_size=4, drop_last=True)
    sizes = [y.shape[0] for _, y in loader]
    assert len(loader) == 2 and sizes == [4, 4]


def test_loader_single_field_and_default_batch():
    loader = DataLoader(NDArrayDataset(np.arange(3.0)))
    batches = list(loader)
    assert len(loader) == 3 and all(len(b) == 1 and b[0].shape == (1,) for b in batches)


def test_loader_dtype():
    loader = DataLoader(index_dataset(4), batch_size=2, dtype="float64")
    x, y = next(iter(loader))
    assert x.numpy().dtype == np.float64


def test_loader_shuffle_is_permutation_per_epoch():
    np.random.seed(0)
    loader = DataLoader(index_dataset(50), batch_size=7, shuffle=True)
    first, second = epoch_order(loader), epoch_order(loader)
    for order in (first, second):
        assert sorted(order.tolist()) == list(range(50))  # every index exactly once
        assert not np.array_equal(order, np.arange(50))
    assert not np.array_equal(first, second)  # a fresh permutation each epoch


def test_loader_shuffle_fields_stay_aligned():
    np.random.seed(1)
    for x, y in DataLoader(index_dataset(20), batch_size=6, shuffle=True):
        np.testing.assert_array_equal(x.numpy()[:, 0], y.numpy())


def test_loader_shuffle_reproducible_with_seed():
    loader = DataLoader(index_dataset(30), batch_size=4, shuffle=True)
    np.random.seed(123)
    a = epoch_order(loader)
    np.random.seed(123)
    np.testing.assert_array_equal(epoch_order(loader), a)


# ---------------------------------------------------------------- transforms

@pytest.fixture
def image():
    return np.random.default_rng(0).random((6, 5, 3)).astype(np.float32)


def test_flip_forced_and_disabled(image):
    np.testing.assert_array_equal(RandomFlipHorizontal(p=1.0)(image), np.flip(image, axis=1))
    np.testing.assert_array_equal(RandomFlipHorizontal(p=0.0)(image), image)


def test_flip_rate():
    np.random.seed(0)
    img = np.arange(4.0).reshape(1, 4, 1)
    flips = sum(RandomFlipHorizontal(p=0.3)(img)[0, 0, 0] == 3 for _ in range(2000))
    assert 500 < flips < 700


@pytest.mark.parametrize("sx,sy", [(0, 0), (2, -1), (-3, 3), (1, 2)])
def test_crop_matches_manual_slice(image, sx, sy):
    p = 3
    padded = np.zeros((6 + 2 * p, 5 + 2 * p, 3), np.float32)
    padded[p:-p, p:-p] = image
    expected = padded[p + sx:p + sx + 6, p + sy:p + sy + 5]
    np.testing.assert_array_equal(RandomCrop(padding=p).crop(image, sx, sy), expected)


def test_crop_random_shift_is_used(image, monkeypatch):
    monkeypatch.setattr(np.random, "randint", lambda low, high, size: np.array([-2, 1]))
    out = RandomCrop(padding=3)(image)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[2:, :4], image[:4, 1:])  # shifted content
    assert not out[:2].any() and not out[:, 4:].any()  # zero padding came in


def test_crop_shifts_stay_in_range(image):
    np.random.seed(0)
    crop = RandomCrop(padding=2)
    for _ in range(50):
        assert crop(image).shape == image.shape


# ---------------------------------------------------------------- digits

def test_load_digits():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(labels.tolist()) == set(range(10))


def test_digits_split():
    X_train, y_train, X_test, y_test = digits_split(test_fraction=0.2, seed=0)
    assert len(X_test) == len(y_test) == 359 and len(X_train) == len(y_train) == 1438
    assert set(y_test.tolist()) == set(range(10))
    again = digits_split(test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(again[3], y_test)
    assert not np.array_equal(digits_split(seed=1)[3], y_test)
    # train and test partition the full set
    images, _ = load_digits()
    rows = lambda a: {r.tobytes() for r in a}
    assert len(X_train) + len(X_test) == len(images)
    assert rows(np.concatenate([X_train, X_test])) == rows(images)


@pytest.mark.parametrize("frac", [0, 1, -0.1])
def test_digits_split_bad_fraction(frac):
    with pytest.raises(ValueError):
        digits_split(test_fraction=frac)
