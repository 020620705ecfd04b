"""Tests of needle.data: file readers, DataLoader, transforms and the bundled digits set."""
import gzip
import pickle

import numpy as np
import pytest

import needle
from needle.data import (CIFAR10Dataset, Corpus, DataLoader, Dataset, Dictionary, MNISTDataset,
                         NDArrayDataset, RandomCrop, RandomFlipHorizontal, batchify,
                         collate_ndarray, digits_split, get_batch, load_digits)


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


class ListDataset(Dataset):
    """Items are whatever the list holds (dicts, tuples, bare arrays)."""

    def __init__(self, items):
        super().__init__()
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_loader_dict_items(rng):
    n = 7
    images = rng.standard_normal((n, 2, 3)).astype(np.float32)
    labels = rng.integers(0, 10, size=n)
    weights = rng.random(n)
    ds = ListDataset([{"image": images[i], "label": labels[i], "weight": weights[i]}
                      for i in range(n)])
    batches = list(DataLoader(ds, batch_size=3))
    assert [b["image"].shape for b in batches] == [(3, 2, 3), (3, 2, 3), (1, 2, 3)]
    for b in batches:
        assert isinstance(b, dict) and list(b) == ["image", "label", "weight"]
        assert all(isinstance(v, needle.Tensor) and v.dtype == "float32" for v in b.values())
    np.testing.assert_array_equal(np.concatenate([b["image"].numpy() for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b["label"].numpy() for b in batches]), labels)
    np.testing.assert_allclose(np.concatenate([b["weight"].numpy() for b in batches]),
                               weights.astype(np.float32))


def test_loader_dict_items_shuffled_stay_aligned(rng):
    np.random.seed(int(rng.integers(2**31)))
    ds = ListDataset([{"x": np.full(2, i, np.float32), "i": i} for i in range(20)])
    seen = []
    for b in DataLoader(ds, batch_size=6, shuffle=True):
        np.testing.assert_array_equal(b["x"].numpy()[:, 0], b["i"].numpy())
        seen += b["i"].numpy().astype(int).tolist()
    assert sorted(seen) == list(range(20)) and seen != list(range(20))


@pytest.mark.parametrize("nfields", [1, 2, 3, 5])
def test_loader_tuple_items_of_any_length(rng, nfields):
    n = 9
    arrays = [rng.standard_normal((n,) + (2,) * k) for k in range(nfields)]
    batches = list(DataLoader(NDArrayDataset(*arrays), batch_size=4))
    assert len(batches) == 3
    for b in batches:
        assert isinstance(b, tuple) and len(b) == nfields
    for k, a in enumerate(arrays):
        got = np.concatenate([b[k].numpy() for b in batches])
        np.testing.assert_allclose(got, a.astype(np.float32), err_msg=f"field {k}")


def test_loader_single_array_items(rng):
    arrays = rng.standard_normal((5, 3))
    batches = list(DataLoader(ListDataset(list(arrays)), batch_size=2))
    assert all(isinstance(b, tuple) and len(b) == 1 for b in batches)
    assert [b[0].shape for b in batches] == [(2, 3), (2, 3), (1, 3)]
    np.testing.assert_allclose(np.concatenate([b[0].numpy() for b in batches]),
                               arrays.astype(np.float32))


def test_loader_python_scalars_and_int_labels_become_float32(rng):
    labels = rng.integers(0, 100, size=6).tolist()
    ds = ListDataset([(float(i) * 0.5, lab) for i, lab in enumerate(labels)])
    x, y = next(iter(DataLoader(ds, batch_size=6)))
    assert x.shape == y.shape == (6,)
    assert y.dtype == "float32" and y.numpy().dtype == np.float32  # classic Needle: float labels
    np.testing.assert_array_equal(y.numpy(), labels)


@pytest.mark.parametrize("n,bs,sizes", [(10, 3, [3, 3, 3]), (12, 4, [4, 4, 4]), (2, 5, []),
                                        (5, 5, [5]), (6, 1, [1] * 6)])
def test_loader_drop_last_sizes_and_len(n, bs, sizes):
    keep = DataLoader(index_dataset(n), batch_size=bs, drop_last=False)
    drop = DataLoader(index_dataset(n), batch_size=bs, drop_last=True)
    assert len(drop) == len(sizes) == n // bs
    assert [y.shape[0] for _, y in drop] == sizes
    assert len(keep) == -(-n // bs) == len(list(keep))
    # the dropped samples are exactly the tail
    kept = epoch_order(drop) if sizes else np.array([], int)
    np.testing.assert_array_equal(kept, np.arange(len(sizes) * bs))


def test_loader_drop_last_with_shuffle(rng):
    np.random.seed(int(rng.integers(2**31)))
    loader = DataLoader(index_dataset(23), batch_size=5, shuffle=True, drop_last=True)
    assert len(loader) == 4
    epochs = [epoch_order(loader) for _ in range(3)]
    for order in epochs:
        assert len(order) == 20 and len(set(order.tolist())) == 20  # 3 random samples dropped
        assert set(order.tolist()) <= set(range(23))
    assert len({tuple(o) for o in epochs}) == 3


def test_loader_drop_last_dict_items(rng):
    ds = ListDataset([{"a": rng.standard_normal(2)} for _ in range(7)])
    batches = list(DataLoader(ds, batch_size=3, drop_last=True))
    assert len(batches) == len(DataLoader(ds, batch_size=3, drop_last=True)) == 2
    assert all(b["a"].shape == (3, 2) for b in batches)


def test_collate_ndarray(rng, device):
    xs = rng.standard_normal((3, 4))
    ys = rng.integers(0, 5, size=3)
    x, y = collate_ndarray([(xs[i], ys[i]) for i in range(3)], device, "float32")
    assert isinstance(x, needle.Tensor) and x.device == device and not x.requires_grad
    np.testing.assert_allclose(x.numpy(), xs.astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), ys)
    if "float64" in device.backend.dtypes:
        (single,) = collate_ndarray(list(xs), device=device, dtype="float64")
        np.testing.assert_array_equal(single.numpy(), xs)
    d = collate_ndarray([{"x": xs[i], "y": ys[i]} for i in range(3)], device=device)
    assert set(d) == {"x", "y"} and d["x"].shape == (3, 4)


@pytest.mark.parametrize("samples,match", [
    ([(np.ones(2), 1), (np.ones(2),)], "tuples of 2 fields"),
    ([{"a": 1, "b": 2}, {"a": 1}], "dicts with keys"),
    ([(np.ones(2), 1), (np.ones(3), 1)], r"field 0 has different shapes.*\(2,\).*\(3,\)"),
    ([{"a": np.ones(2)}, {"a": np.ones((2, 1))}], "field 'a' has different shapes"),
    ([], "empty batch"),
])
def test_collate_mismatched_samples(samples, match):
    with pytest.raises(ValueError, match=match):
        collate_ndarray(samples)


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


# ---------------------------------------------------------------- Penn Treebank-style corpus

VOCAB = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "fast", "<unk>", "N", "'s"]


def write_text(path, rng, n_lines, blank_every=0):
    lines = []
    for i in range(n_lines):
        words = [] if blank_every and i % blank_every == 0 else \
            list(rng.choice(VOCAB, size=int(rng.integers(1, 9))))
        lines.append(words)
    # PTB lines start with a space and words are separated by single spaces
    path.write_text("".join(" " + " ".join(w) + " \n" for w in lines), encoding="utf-8")
    return lines


def expected_ids(lines, word2idx):
    out = []
    for words in lines:
        for w in words + ["<eos>"]:
            out.append(word2idx.setdefault(w, len(word2idx)))
    return out


def test_dictionary():
    d = Dictionary()
    assert len(d) == 0
    ids = [d.add_word(w) for w in ["b", "a", "b", "c", "a"]]
    assert ids == [0, 1, 0, 2, 1]
    assert d.idx2word == ["b", "a", "c"] and d.word2idx == {"b": 0, "a": 1, "c": 2}
    assert len(d) == 3


def test_corpus_tokenizes_with_eos_and_shared_dictionary(tmp_path, rng):
    train = write_text(tmp_path / "train.txt", rng, 40, blank_every=7)
    test = write_text(tmp_path / "test.txt", rng, 15)
    corpus = Corpus(str(tmp_path))
    word2idx = {}
    assert corpus.train == expected_ids(train, word2idx)
    assert corpus.test == expected_ids(test, word2idx)  # test words reuse train ids
    assert corpus.dictionary.word2idx == word2idx
    assert len(corpus.dictionary) == len(word2idx) <= len(VOCAB) + 1
    eos = corpus.dictionary.word2idx["<eos>"]
    assert corpus.train.count(eos) == 40 and corpus.test.count(eos) == 15
    words = [corpus.dictionary.idx2word[i] for i in corpus.train]
    assert words[:len(train[1]) + len(train[0]) + 2] == \
        train[0] + ["<eos>"] + train[1] + ["<eos>"]


def test_corpus_max_lines(tmp_path, rng):
    train = write_text(tmp_path / "train.txt", rng, 30)
    test = write_text(tmp_path / "test.txt", rng, 30)
    corpus = Corpus(tmp_path, max_lines=4)
    word2idx = {}
    assert corpus.train == expected_ids(train[:4], word2idx)
    assert corpus.test == expected_ids(test[:4], word2idx)
    assert Corpus(tmp_path, max_lines=0).train == []


def test_corpus_missing_file(tmp_path, rng):
    write_text(tmp_path / "train.txt", rng, 3)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        Corpus(tmp_path)


def test_batchify_alphabet_layout():
    letters = np.arange(26)  # a..z; 26 // 4 = 6 rows, 'y' and 'z' trimmed
    out = batchify(list(letters), 4, device=None, dtype="float32")
    assert isinstance(out, np.ndarray) and out.shape == (6, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], np.arange(0, 6))     # a b c d e f
    np.testing.assert_array_equal(out[0], [0, 6, 12, 18])         # a g m s
    np.testing.assert_array_equal(out[-1], [5, 11, 17, 23])       # f l r x


def test_batchify_random_ids(rng):
    ids = rng.integers(0, 1000, size=103).tolist()
    out = batchify(ids, 7, device=needle.cpu(), dtype=None)
    nbatch = 103 // 7
    assert out.shape == (nbatch, 7)
    np.testing.assert_array_equal(out, np.array(ids[:nbatch * 7]).reshape(7, nbatch).T)
    for j in range(7):  # column j is the j-th contiguous stretch of the sequence
        np.testing.assert_array_equal(out[:, j], ids[j * nbatch:(j + 1) * nbatch])


def test_get_batch_windows(rng, device):
    ids = rng.integers(0, 50, size=10 * 3).tolist()
    batches = batchify(ids, 3, device, "float32")  # (10, 3)
    data, target = get_batch(batches, 2, bptt=4, device=device)
    assert isinstance(data, needle.Tensor) and isinstance(target, needle.Tensor)
    assert data.shape == (4, 3) and target.shape == (12,)
    assert data.device == device and data.dtype == "float32"
    np.testing.assert_array_equal(data.numpy(), batches[2:6])
    np.testing.assert_array_equal(target.numpy(), batches[3:7].reshape(-1))
    # near the end the window shrinks: seq_len = min(bptt, len - 1 - i)
    data, target = get_batch(batches, 7, bptt=4, device=device)
    assert data.shape == (2, 3) and target.shape == (6,)
    np.testing.assert_array_equal(target.numpy(), batches[8:10].reshape(-1))
    data, target = get_batch(batches, 8, bptt=4)
    assert data.shape == (1, 3)


def test_get_batch_walks_the_whole_sequence(rng):
    ids = rng.integers(0, 50, size=41 * 2).tolist()
    batches = batchify(ids, 2, None, None)
    datas, targets = [], []
    for i in range(0, len(batches) - 1, 5):
        d, t = get_batch(batches, i, 5)
        datas.append(d.numpy())
        targets.append(t.numpy().reshape(-1, 2))
    np.testing.assert_array_equal(np.concatenate(datas), batches[:-1])
    np.testing.assert_array_equal(np.concatenate(targets), batches[1:])


@pytest.mark.parametrize("i", [-1, 9, 10])
def test_get_batch_index_out_of_range(i):
    batches = batchify(list(range(20)), 2, None, None)  # 10 rows
    with pytest.raises(IndexError, match=rf"i={i}"):
        get_batch(batches, i, 3)


def test_ptb_corpus_to_batches(tmp_path, rng):
    write_text(tmp_path / "train.txt", rng, 60)
    write_text(tmp_path / "test.txt", rng, 10)
    corpus = Corpus(tmp_path)
    train = batchify(corpus.train, 4, needle.cpu(), "float32")
    x, y = get_batch(train, 0, 6, device=needle.cpu(), dtype="float32")
    assert x.shape == (6, 4) and y.shape == (24,) and x.dtype == y.dtype == "float32"
    ids = np.concatenate([x.numpy().ravel(), y.numpy()])
    assert np.array_equal(ids, ids.round())
    assert 0 <= ids.min() and ids.max() < len(corpus.dictionary)
    words = [corpus.dictionary.idx2word[int(i)] for i in x.numpy()[:, 0]]
    assert words == [corpus.dictionary.idx2word[i] for i in corpus.train[:6]]


def test_loader_list_items_are_fields_as_in_pytorch():
    class Pairs(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return [np.full(2, i, np.float32), i]

    (x, y), _ = list(DataLoader(Pairs(), batch_size=2))
    np.testing.assert_array_equal(x.numpy(), [[0, 0], [1, 1]])
    np.testing.assert_array_equal(y.numpy(), [0, 1])
