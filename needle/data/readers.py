"""Readers for the MNIST (gzipped idx) and CIFAR-10 (python pickle) file formats.

Malformed files raise a ``ValueError`` that names the file and what is wrong with it (empty,
not gzipped, truncated, ...). CIFAR-10 batches are unpickled by :class:`CIFARUnpickler`,
which refuses every global but the few a genuine batch needs, so a crafted batch file cannot
run code (:class:`UnsafePickleError`).
"""
import _compat_pickle
import gzip
import os
import pickle
import zlib

import numpy as np

from .dataset import Dataset

_IDX_IMAGES, _IDX_LABELS = 2051, 2049
_GZIP_MAGIC = b"\x1f\x8b"


def _check_exists(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such data file: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")


def _read_gzip(path):
    """The decompressed bytes of a gzip file; ValueError naming the file when it is not one."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != _GZIP_MAGIC:
        hint = ""
        if len(head) == 4 and int.from_bytes(head, "big") in (_IDX_IMAGES, _IDX_LABELS):
            hint = " (it looks like an uncompressed idx file: gzip it, as MNIST is distributed)"
        raise ValueError(f"{path}: not a gzip file; starts with {head!r}{hint}")
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError as e:
        raise ValueError(f"{path}: truncated gzip file ({e})") from e
    except (gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip file ({e})") from e


def _read_idx(path, magic):
    """Return the uint8 payload of a gzipped idx file, shaped by its header."""
    _check_exists(path)
    raw = _read_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an idx file ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: bad idx magic number {found}, expected {magic}")
    ndim = raw[3]  # the magic's low byte is the number of dimensions
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: idx header truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(dims):
        what = "truncated: " if data.size < np.prod(dims) else ""
        raise ValueError(f"{path}: {what}header says shape {dims} but holds {data.size} bytes")
    return data.reshape(dims)


# ---------------------------------------------------------------- restricted unpickling

class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a global (a class or function) that the reader does not admit."""


def _latin1_encode(text, encoding="latin1"):
    """Stand-in for ``_codecs.encode``: protocol 0-2 pickles written by Python 3 store
    ``bytes`` as ``_codecs.encode(str, 'latin1')``. Only that codec is admitted."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode is admitted only as encode(str, 'latin1'), "
                                f"got encoding {encoding!r}")
    return text.encode("latin1")


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


class _DType:
    """What a pickle's ``numpy.dtype(...)`` builds here: a plain numeric dtype (bool, int,
    uint, float) named by a string, with its byte order from the pickled state. NumPy's own
    ``dtype.__setstate__`` never sees the pickle's data (its flags could claim Python
    objects), and no object, structured or subarray dtype is admitted."""

    def __init__(self, name, align=False, copy=False):
        try:
            self.dtype = np.dtype(_text(name))
        except (TypeError, ValueError) as e:
            raise UnsafePickleError(f"refuses dtype {name!r} ({e})") from None
        if self.dtype.kind not in "biuf" or self.dtype.fields is not None:
            raise UnsafePickleError(f"refuses dtype {self.dtype}: a CIFAR-10 batch holds "
                                    f"numeric arrays only")

    def __setstate__(self, state):
        byteorder = _text(state[1]) if len(state) > 1 else "|"
        if any(part is not None for part in state[2:5]):  # subarray, names, fields
            raise UnsafePickleError("refuses a structured or subarray dtype")
        if byteorder in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(byteorder)


class _Array:
    """What a pickle's ``_reconstruct(ndarray, shape, dtype)`` builds here; its
    ``__setstate__`` makes the array from the raw bytes with ``np.frombuffer`` (a copy), so
    NumPy's ``ndarray.__setstate__`` never runs on the pickle's data."""

    array = None

    def __init__(self, cls, shape, dtype):
        if cls is not _NDARRAY:
            raise UnsafePickleError("_reconstruct is admitted for numpy.ndarray only")

    def __setstate__(self, state):
        if len(state) != 5 or not isinstance(state[2], _DType) or not isinstance(
                state[4], (bytes, bytearray, str)):
            raise UnsafePickleError("refuses an array whose state is not (version, shape, "
                                    "numeric dtype, fortran order, raw bytes)")
        _, shape, dtype, fortran, raw = state
        raw = raw.encode("latin1") if isinstance(raw, str) else bytes(raw)
        self.array = _from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _from_bytes(raw, dtype, shape, order="C"):
    dtype = dtype.dtype if isinstance(dtype, _DType) else None
    if dtype is None:
        raise UnsafePickleError("refuses an array without a numeric dtype")
    try:
        shape = tuple(int(d) for d in shape)
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order=_text(order)).copy()
    except (TypeError, ValueError) as e:
        raise UnsafePickleError(f"refuses an array: its bytes do not fit shape {shape} of "
                                f"{dtype} ({e})") from None


def _scalar(dtype, raw):
    """``numpy.core.multiarray.scalar``: a NumPy number from a dtype and its raw bytes."""
    return _from_bytes(raw.encode("latin1") if isinstance(raw, str) else raw, dtype, ())[()]


def _NDARRAY(*args, **kwargs):  # noqa: N802 - what ``numpy.ndarray`` resolves to
    """``numpy.ndarray`` in a pickle: ``_reconstruct`` takes it as its first argument, and
    calling it (an array over raw bytes, object dtype included) is refused."""
    raise UnsafePickleError("refuses to call numpy.ndarray: an array over raw memory")


def _cifar_globals():
    allowed = {("builtins", "bytes"): bytes, ("_codecs", "encode"): _latin1_encode,
               ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _DType}
    for module in ("numpy.core", "numpy._core"):  # as NumPy 1 and NumPy 2 write them
        allowed[(f"{module}.multiarray", "_reconstruct")] = _Array
        allowed[(f"{module}.multiarray", "scalar")] = _scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = _from_bytes
    return allowed


def _arrays_made(value):
    """``value`` with every :class:`_Array` replaced by the NumPy array it made."""
    if isinstance(value, _Array):
        if value.array is None:
            raise UnsafePickleError("an array was never given its data")
        return value.array
    if isinstance(value, dict):
        return {k: _arrays_made(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrays_made(v) for v in value]
    if isinstance(value, (_DType, type)) or value is _NDARRAY:
        raise UnsafePickleError(f"refuses a batch holding {type(value).__name__} objects")
    return value


class CIFARUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 python batches that cannot run code.

    A real batch holds only dicts, lists, bytes, str, ints and NumPy arrays; ``find_class``
    admits only the globals those need, as stand-ins that make numeric arrays from raw
    bytes with ``np.frombuffer`` (NumPy's own reconstructors never see the pickle's data, so
    no object array or crafted dtype can be made), ``bytes`` and a latin-1-only
    ``_codecs.encode``, and raises :class:`UnsafePickleError`, naming the file and the
    global, for anything else (``os.system``, ``builtins.exec``, ...).

    Args:
        file: a binary file object.
        path: the file's name, for error messages.
    """

    _ALLOWED = None

    def __init__(self, file, path="<pickle>"):
        super().__init__(file, encoding="bytes")
        self.path = path
        if CIFARUnpickler._ALLOWED is None:
            CIFARUnpickler._ALLOWED = _cifar_globals()

    def find_class(self, module, name):
        # Python 2 names (protocol 0-2 pickles write builtins as __builtin__), as
        # pickle.Unpickler.find_class maps them; the mapped name is then checked.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = self._ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.path}: refuses to load {module}.{name}: a CIFAR-10 batch holds only "
                f"dicts, lists, bytes, str, ints and NumPy arrays (is this file genuine?)")
        return found


def _load_cifar_pickle(path):
    """Unpickle ``path`` with :class:`CIFARUnpickler`; ValueError naming the file if it is not
    a readable pickle."""
    _check_exists(path)
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head == _GZIP_MAGIC:
            raise ValueError(f"{path}: a gzip file, not a CIFAR-10 python batch; extract "
                             f"cifar-10-python.tar.gz first")
        try:
            return _arrays_made(CIFARUnpickler(f, path).load())
        except UnsafePickleError as e:
            if not str(e).startswith(f"{path}:"):
                raise UnsafePickleError(f"{path}: {e}") from e
            raise
        except EOFError as e:
            raise ValueError(f"{path}: truncated pickle ({e})") from e
        except pickle.UnpicklingError as e:
            what = "truncated pickle" if "truncated" in str(e) else "not a valid pickle"
            raise ValueError(f"{path}: {what} ({e})") from e
        except Exception as e:  # corrupt opcodes can surface as almost any error
            raise ValueError(f"{path}: not a valid CIFAR-10 pickle "
                             f"({type(e).__name__}: {e})") from e


class MNISTDataset(Dataset):
    """MNIST from gzipped idx files; sample ``i`` is ``(image, label)`` with ``image`` a flat
    float32 vector in [0, 1] of length rows * cols (784 for MNIST) and ``label`` an int64.

    Args:
        image_filename: path of the ``*-images-idx3-ubyte.gz`` file.
        label_filename: path of the ``*-labels-idx1-ubyte.gz`` file.
        transforms: optional list of transforms, applied to the rows x cols x 1 image.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is empty, not gzipped (e.g. a plain idx file), truncated, corrupt,
            or not an idx file of the expected kind; the message names the file.

    Example:
        >>> ds = MNISTDataset("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
        >>> x, y = ds[0]; x.shape
        (784,)
    """

    def __init__(self, image_filename, label_filename, transforms=None):
        super().__init__(transforms)
        images = _read_idx(image_filename, _IDX_IMAGES)
        labels = _read_idx(label_filename, _IDX_LABELS)
        if len(images) != len(labels):
            raise ValueError(f"{image_filename} holds {len(images)} images but "
                             f"{label_filename} holds {len(labels)} labels")
        self.image_shape = images.shape[1:]
        self.images = (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32)
        self.labels = labels.astype(np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transforms:
            image = self.apply_transforms(image.reshape(*self.image_shape, 1)).reshape(-1)
        return image, self.labels[index]


class CIFAR10Dataset(Dataset):
    """CIFAR-10 from the python-pickle batches; sample ``i`` is ``(image, label)`` with
    ``image`` float32 in [0, 1] shaped (3, 32, 32) and ``label`` an int64.

    Args:
        base_folder: folder holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.
        train: read the five training batches (True) or ``test_batch`` (False).
        p: kept for compatibility with the classic Needle signature; unused.
        transforms: optional list of transforms, applied to the 32 x 32 x 3 (HWC) image.

    The batches are unpickled by :class:`CIFARUnpickler`, which admits only what a genuine
    batch holds (dicts, lists, bytes, str, ints, NumPy arrays), so a crafted file cannot run
    code: it raises :class:`UnsafePickleError` instead.

    Raises:
        FileNotFoundError: a batch file is missing.
        UnsafePickleError: a batch asks for any other global (a ``ValueError`` and a
            ``pickle.UnpicklingError``); the message names the file and the global.
        ValueError: a batch is empty, truncated, not a pickle, or lacks uint8 ``b'data'``
            (N, 3072) and N ``b'labels'``; the message names the file.

    Example:
        >>> ds = CIFAR10Dataset("data/cifar-10-batches-py", train=False)
        >>> x, y = ds[0]; x.shape
        (3, 32, 32)
    """

    def __init__(self, base_folder, train=True, p=0.5, transforms=None):
        super().__init__(transforms)
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        batches = [self._read_batch(os.path.join(base_folder, name)) for name in names]
        self.images = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
        self.images = self.images.astype(np.float32) / np.float32(255)
        self.labels = np.concatenate([b[1] for b in batches])

    @staticmethod
    def _read_batch(path):
        batch = _load_cifar_pickle(path)
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise ValueError(f"{path}: not a CIFAR-10 batch (needs b'data' and b'labels')")
        data = batch[b"data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            raise ValueError(f"{path}: b'data' must be a uint8 NumPy array, got "
                             f"{getattr(data, 'dtype', type(data).__name__)}")
        try:
            labels = np.asarray(batch[b"labels"], np.int64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: b'labels' is not a list of integers ({e})") from e
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != data.shape[:1]:
            raise ValueError(f"{path}: expected data (N, 3072) and N labels, got data "
                             f"{data.shape} and labels {labels.shape}")
        return data, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transforms:  # transforms work on HWC images
            image = self.apply_transforms(image.transpose(1, 2, 0)).transpose(2, 0, 1)
        return image, self.labels[index]
