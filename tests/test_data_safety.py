"""Untrusted and malformed files: CIFAR-10 batches cannot run code, broken MNIST/CIFAR files
and non-needle files given to needle.load raise a ValueError naming the file and the problem,
and needle.save refuses what it cannot store without pickle."""
import builtins
import gzip
import os
import pickle
import re
import struct
import zipfile

import numpy as np
import pytest

import needle
import needle.nn as nn
from needle.data import CIFAR10Dataset, MNISTDataset, UnsafePickleError


# ---------------------------------------------------------------- helpers

def cifar_batch(rng, n=4):
    """A batch with every field a genuine CIFAR-10 python batch has."""
    return {b"batch_label": b"testing batch 1 of 1",
            b"labels": rng.integers(0, 10, size=n).tolist(),
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i:05d}.png".encode() for i in range(n)]}


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (SHORT_BINSTRING / BINSTRING), as the
    Python 2 cPickle that wrote the real CIFAR-10 batches did."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256
                    else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    def save_py2_ascii_str(self, obj):  # Python 2 str literals ('u1', '|') were bytes too
        self.save_py2_str(obj.encode("latin1"))

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_ascii_str


def py2_numpy1_pickle(obj):
    """A protocol-2 pickle as Python 2 with NumPy 1 wrote it: str opcodes for bytes, and
    NumPy's reconstructor under its NumPy 1 name ``numpy.core.multiarray``."""
    import io
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    raw = buf.getvalue()
    for new in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
        raw = raw.replace(b"c" + new + b"_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw  # no Python 3 bytes encoding left
    return raw


class Exec:
    """Unpickling this runs ``code`` with ``builtins.exec``."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


class Eval(Exec):
    def __reduce__(self):
        return builtins.eval, (self.code,)


class System(Exec):
    def __reduce__(self):
        return os.system, (self.code,)


def marker_code(marker):
    return f"open({str(marker)!r}, 'w').close()"


# ---------------------------------------------------------------- CIFAR-10: no code execution

@pytest.mark.parametrize("make", [
    lambda m: Exec(marker_code(m)),
    lambda m: Eval(marker_code(m)),
    lambda m: System(f"touch {m}"),
], ids=["exec", "eval", "os.system"])
@pytest.mark.parametrize("where", ["top", "inside_batch"])
def test_cifar_refuses_code_execution(tmp_path, make, where):
    marker = tmp_path / "pwned"
    evil = make(marker)
    if where == "inside_batch":  # a genuine-looking batch with one poisoned field
        batch = cifar_batch(np.random.default_rng(1))
        batch[b"labels"] = [evil]
        evil = batch
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(evil, f, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"test_batch.*refuses to load "
                                                r"(builtins\.(exec|eval)|(posix|os)\.system)"):
        CIFAR10Dataset(tmp_path, train=False)
    assert not marker.exists()


def test_cifar_refusal_is_a_value_error(tmp_path):
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(Exec("1"), f)
    with pytest.raises(ValueError, match="builtins.exec"):
        CIFAR10Dataset(tmp_path, train=False)
    with pytest.raises(pickle.UnpicklingError):
        CIFAR10Dataset(tmp_path, train=False)


@pytest.mark.parametrize("value", [{1, 2}, frozenset([3]), 1 + 2j, range(3)],
                         ids=["set", "frozenset", "complex", "range"])
def test_cifar_refuses_other_globals(tmp_path, value):
    # harmless types, but nothing a CIFAR batch holds: protocol 2 writes each as a global
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.ones((1, 3072), np.uint8), b"labels": [value]}, f, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"test_batch: refuses to load builtins\."):
        CIFAR10Dataset(tmp_path, train=False)


def test_cifar_codecs_encode_only_latin1(tmp_path):
    # protocol 2 stores bytes as _codecs.encode(str, 'latin1'); any other codec is refused
    raw = pickle.dumps({b"data": 1}, protocol=2).replace(b"latin1", b"cp1252")
    with open(tmp_path / "test_batch", "wb") as f:
        f.write(raw)
    with pytest.raises(UnsafePickleError, match=r"test_batch: .*latin1.*'cp1252'"):
        CIFAR10Dataset(tmp_path, train=False)


@pytest.mark.parametrize("protocol", sorted({0, 2, 4, pickle.HIGHEST_PROTOCOL}))
def test_cifar_genuine_batch_loads(tmp_path, protocol):
    rng = np.random.default_rng(protocol)
    batch = cifar_batch(rng)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    ds = CIFAR10Dataset(tmp_path, train=False)
    assert len(ds) == 4
    np.testing.assert_array_equal(ds.images, batch[b"data"].reshape(4, 3, 32, 32) / np.float32(255))
    np.testing.assert_array_equal(ds.labels, batch[b"labels"])


def test_cifar_python2_numpy1_batch_loads(tmp_path):
    rng = np.random.default_rng(7)
    batch = cifar_batch(rng, n=3)
    (tmp_path / "test_batch").write_bytes(py2_numpy1_pickle(batch))
    ds = CIFAR10Dataset(tmp_path, train=False)
    np.testing.assert_array_equal(ds.images.reshape(3, -1) * 255, batch[b"data"])
    np.testing.assert_array_equal(ds.labels, batch[b"labels"])


def test_cifar_train_batches_with_numpy_scalar_labels(tmp_path):
    # labels as NumPy integers (numpy._core.multiarray.scalar) are admitted too
    rng = np.random.default_rng(3)
    for i in range(1, 6):
        batch = cifar_batch(rng, n=2)
        batch[b"labels"] = [np.int64(v) for v in batch[b"labels"]]
        with open(tmp_path / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
    assert len(CIFAR10Dataset(tmp_path, train=True)) == 10


def test_cifar_data_must_be_uint8(tmp_path):
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.random.default_rng(0).random((2, 3072)), b"labels": [1, 2]}, f)
    with pytest.raises(ValueError, match=r"test_batch.*uint8"):
        CIFAR10Dataset(tmp_path, train=False)


# ---------------------------------------------------------------- malformed MNIST files

def idx_bytes(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_pair(tmp_path):
    rng = np.random.default_rng(11)
    images = rng.integers(1, 256, size=(6, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6, dtype=np.uint8)
    img, lbl = tmp_path / "img.gz", tmp_path / "lbl.gz"
    img.write_bytes(gzip.compress(idx_bytes(images, 2051)))
    lbl.write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    return img, lbl, images, labels


def _break(path, how, magic, array):
    if how == "empty":
        path.write_bytes(b"")
    elif how == "plain_idx":
        path.write_bytes(idx_bytes(array, magic))
    elif how == "truncated_gzip":
        path.write_bytes(path.read_bytes()[:-12])
    elif how == "corrupt_gzip":
        raw = bytearray(path.read_bytes())
        raw[-6] ^= 0xFF  # a CRC byte
        path.write_bytes(bytes(raw))
    elif how == "truncated_payload":
        path.write_bytes(gzip.compress(idx_bytes(array, magic)[:-5]))


MNIST_CASES = {"empty": "empty", "plain_idx": "not a gzip file.*uncompressed idx",
               "truncated_gzip": "truncated", "corrupt_gzip": "corrupt gzip",
               "truncated_payload": "truncated"}


@pytest.mark.parametrize("how", list(MNIST_CASES))
@pytest.mark.parametrize("which", ["images", "labels"])
def test_mnist_malformed_file_names_file_and_problem(mnist_pair, how, which):
    img, lbl, images, labels = mnist_pair
    path, magic, array = (img, 2051, images) if which == "images" else (lbl, 2049, labels)
    _break(path, how, magic, array)
    with pytest.raises(ValueError, match=rf"{path.name}: .*{MNIST_CASES[how]}"):
        MNISTDataset(img, lbl)


def test_mnist_plain_bytes_not_idx(tmp_path, mnist_pair):
    img, lbl, _, _ = mnist_pair
    img.write_bytes(np.random.default_rng(2).integers(32, 127, size=64, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="img.gz: not a gzip file"):
        MNISTDataset(img, lbl)


# ---------------------------------------------------------------- malformed CIFAR files

def _cifar_file(tmp_path, how):
    path = tmp_path / "test_batch"
    raw = pickle.dumps(cifar_batch(np.random.default_rng(5)), protocol=2)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated_half":
        path.write_bytes(raw[:len(raw) // 2])
    elif how == "truncated_end":
        path.write_bytes(raw[:-1])  # only the STOP opcode missing
    elif how == "garbage":
        path.write_bytes(b"\xff" + np.random.default_rng(6).bytes(200))
    elif how == "gzipped":
        path.write_bytes(gzip.compress(raw))
    elif how == "text":
        path.write_text("this is not a pickle\n")
    return path


CIFAR_CASES = {"empty": "empty", "truncated_half": "truncated", "truncated_end": "truncated",
               "garbage": "not a valid", "gzipped": "gzip", "text": "not a valid"}


@pytest.mark.parametrize("how", list(CIFAR_CASES))
def test_cifar_malformed_file_names_file_and_problem(tmp_path, how):
    _cifar_file(tmp_path, how)
    with pytest.raises(ValueError, match=rf"test_batch: .*{CIFAR_CASES[how]}"):
        CIFAR10Dataset(tmp_path, train=False)


# ---------------------------------------------------------------- needle.save / needle.load

def random_state(rng):
    return {"w": rng.standard_normal((3, 4)).astype(np.float32),
            "b": rng.standard_normal(4), "step": np.int64(rng.integers(1, 100)),
            "t": needle.Tensor(rng.standard_normal((2, 2)))}


def assert_same_state(loaded, state):
    assert set(loaded) == set(state)
    for k, v in state.items():
        v = v.numpy() if isinstance(v, needle.Tensor) else np.asarray(v)
        assert loaded[k].dtype == v.dtype, k
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)


@pytest.mark.parametrize("content", [b"hello, this is text\n", b"\x00" * 10, b"",
                                     b"\x80\x04\x95" + b"\x00" * 20],
                         ids=["text", "zeros", "empty", "pickle_header"])
def test_load_non_npz_says_so(tmp_path, content):
    path = tmp_path / "weights.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"weights\.npz: not a \.npz file written by "
                                         r"needle\.save") as err:
        needle.load(path)
    assert "unsafe" not in str(err.value) and "pickled data" not in str(err.value)


def test_load_pickle_file_says_not_npz(tmp_path, rng):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"w": rng.standard_normal(3)}))
    with pytest.raises(ValueError, match=r"model\.pkl: not a \.npz file written by needle\.save"):
        needle.load(path)


def test_load_np_save_file(tmp_path, rng):
    path = tmp_path / "array.npy"
    np.save(path, rng.standard_normal((3, 2)))
    with pytest.raises(ValueError, match=r"array\.npy: holds a single array.*not a state "
                                         r"dict; load it with numpy\.load"):
        needle.load(path)


def test_load_truncated_npz(tmp_path, rng):
    path = tmp_path / "cut.npz"
    needle.save(random_state(rng), path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cut\.npz: not a \.npz file written by needle\.save"):
        needle.load(path)


def test_load_zip_without_arrays(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not an array")
    with pytest.raises(ValueError, match=r"other\.zip: member 'readme.txt' is not a \.npy"):
        needle.load(path)


def test_load_npz_with_object_array(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, ok=np.ones(2), bad=np.array([1, None], dtype=object))
    with pytest.raises(ValueError, match=r"obj\.npz: entry 'bad' cannot be loaded without pickle"):
        needle.load(path)


@pytest.mark.parametrize("name", ["x.npy", "x.npz", "x", "x.bin"])
def test_save_writes_exactly_the_path_given(tmp_path, rng, name):
    state = random_state(rng)
    path = tmp_path / name
    needle.save(state, str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no ".npz" appended
    assert_same_state(needle.load(str(path)), state)
    assert_same_state(needle.load(path), state)


def test_save_load_empty_and_awkward_keys(tmp_path, rng):
    needle.save({}, tmp_path / "empty.npz")
    assert needle.load(tmp_path / "empty.npz") == {}
    # np.savez(f, **state) would take these keys as its own arguments
    state = {"file": rng.standard_normal(3), "allow_pickle": rng.standard_normal(2),
             "layer.0.weight": rng.standard_normal((2, 2)), "a.npy": rng.standard_normal(1),
             "ünï": rng.standard_normal(1)}
    needle.save(state, tmp_path / "keys.npz")
    assert_same_state(needle.load(tmp_path / "keys.npz"), state)
    with np.load(tmp_path / "keys.npz") as data:  # still an ordinary .npz
        np.testing.assert_array_equal(data["file"], state["file"])


@pytest.mark.parametrize("key", [("a", 1), None, b"w", 1.5])
def test_save_rejects_keys_that_are_not_str_or_int(tmp_path, rng, key):
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match="keys must be str or int, got " + re.escape(repr(key))):
        needle.save({"ok": rng.standard_normal(2), key: rng.standard_normal(2)}, path)
    assert not path.exists()


@pytest.mark.parametrize("value", [np.array([1.5, None], dtype=object), object(), 1j],
                         ids=["object_array", "object", "complex"])
def test_save_rejects_values_needing_pickle(tmp_path, rng, value):
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match="bad_entry"):
        needle.save({"good": rng.standard_normal(2), "bad_entry": value}, path)
    assert not path.exists()  # nothing written


@pytest.mark.parametrize("value", [None, [1, "a", None], [[1.0, 2.0], [3.0]], {"nested": 1}],
                         ids=["None", "mixed_list", "ragged", "dict"])
def test_save_stores_plain_python_values_as_structure(tmp_path, rng, value):
    path = tmp_path / "m.npz"
    good = rng.standard_normal(2)
    needle.save({"good": good, "entry": value, 3: "int key"}, path)
    back = needle.load(path)
    assert back["entry"] == value and back[3] == "int key"
    np.testing.assert_array_equal(back["good"], good)


def test_linear_state_dict_round_trip(tmp_path, rng):
    np.random.seed(int(rng.integers(2**31)))
    layer = nn.Linear(5, 3)
    x = needle.Tensor(rng.standard_normal((4, 5)))
    path = tmp_path / "linear.npz"
    needle.save(layer.state_dict(), path)
    loaded = needle.load(path)
    assert set(loaded) == set(layer.state_dict()) == {"weight", "bias"}
    other = nn.Linear(5, 3)
    assert not np.array_equal(other.weight.numpy(), layer.weight.numpy())
    other.load_state_dict(loaded)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=k)
    np.testing.assert_array_equal(other(x).numpy(), layer(x).numpy())
    # Parameters (Tensors) are accepted as values too
    needle.save({"weight": layer.weight, "bias": layer.bias}, tmp_path / "params.npy")
    assert_same_state(needle.load(tmp_path / "params.npy"), layer.state_dict())


def test_save_load_a_nested_checkpoint(tmp_path):
    rng = np.random.default_rng(7)
    model = needle.nn.Linear(3, 2)
    opt = needle.optim.Adam(model.parameters(), lr=0.05, betas=(0.8, 0.95))
    for _ in range(2):
        opt.reset_grad()
        (model(needle.Tensor(rng.standard_normal((4, 3)))) ** 2).sum().backward()
        opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
             "note": "run a", "best": None, "history": [0.5, 0.25], "shape": (2, 3)}
    path = tmp_path / "ckpt.npz"
    needle.save(state, path)
    back = needle.load(path)
    assert back["epoch"] == 3 and back["note"] == "run a" and back["best"] is None
    assert back["history"] == [0.5, 0.25] and back["shape"] == (2, 3)
    assert set(back["optimizer"]["state"]) == {0, 1}  # int keys stay ints
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    for i, entry in opt.state_dict()["state"].items():
        for name, value in entry.items():
            np.testing.assert_array_equal(back["optimizer"]["state"][i][name], value)
    resumed = needle.optim.Adam(model.parameters(), lr=0.05)
    resumed.load_state_dict(back["optimizer"])
    assert resumed.betas == (0.8, 0.95)
    with zipfile.ZipFile(path) as zf:  # no pickle anywhere: every member is a plain .npy
        for member in zf.namelist():
            assert not np.lib.format.read_array(zf.open(member), allow_pickle=False).dtype.hasobject


def test_save_rejects_bad_keys_in_a_nested_state(tmp_path):
    with pytest.raises(TypeError, match=r"keys must be str or int.*\(1.5\)|1.5"):
        needle.save({"a": {1.5: np.ones(2)}}, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


class _ObjectArrayOverBytes:
    """Unpickles as ``np.ndarray((1,), 'O', b'AAAAAAAA')``: an object array whose element
    pointer is the attacker's bytes (reading it crashed the process)."""

    def __reduce__(self):
        return np.ndarray, ((1,), "O", b"A" * 8)


def test_cifar_refuses_arrays_made_from_raw_memory(tmp_path):
    # run in a subprocess: a failure here would be a crash, not an exception
    import subprocess
    import sys
    batch = cifar_batch(np.random.default_rng(1), n=1)
    batch[b"labels"] = _ObjectArrayOverBytes()
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    code = ("import needle.data as d, sys\n"
            "try:\n    d.CIFAR10Dataset(sys.argv[1], train=False)\n"
            "except d.UnsafePickleError as e:\n    print('refused:', e)\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "refused:" in run.stdout and "test_batch" in run.stdout


@pytest.mark.parametrize("dtype", ["O", "V8", [("a", "O")]], ids=["object", "void", "struct"])
def test_cifar_refuses_non_numeric_dtypes(tmp_path, dtype):
    batch = cifar_batch(np.random.default_rng(2), n=1)
    batch[b"extra"] = np.zeros(2, dtype=dtype) if dtype != "O" else np.array([None, 1], dtype=object)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(UnsafePickleError, match="test_batch"):
        CIFAR10Dataset(tmp_path, train=False)


def test_save_load_numpy_number_hyperparameters(tmp_path):
    model = needle.nn.Linear(2, 2)
    opt = needle.optim.Adam(model.parameters(), lr=np.float32(0.1))
    opt.lr = np.float64(0.05)  # as a LambdaLR with a NumPy function sets it
    needle.save({"opt": opt.state_dict(), "epoch": np.int64(4)}, tmp_path / "c.npz")
    back = needle.load(tmp_path / "c.npz")
    assert back["epoch"] == 4 and isinstance(back["epoch"], int)
    again = needle.optim.Adam(model.parameters())
    again.load_state_dict(back["opt"])
    assert again.lr == 0.05
