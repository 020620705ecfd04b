"""``needle.save`` / ``needle.load``: state dicts as NumPy ``.npz`` files (no pickle).

The file is an ordinary ``.npz`` (a zip of one ``.npy`` per entry, written with
``allow_pickle=False``), so ``numpy.load`` reads it too. It is written to exactly the path
given, whatever its extension: ``needle.save(state, "model.npy")`` writes ``model.npy``.

A flat ``{name: array}`` dict (a module's ``state_dict()``) is stored one entry per name.
Anything else made of dicts, lists, tuples, numbers, strings, None and arrays (an
optimizer's ``state_dict()``, or ``{"model": ..., "optimizer": ..., "epoch": 3}``) is stored
as numbered arrays plus one JSON description of the structure, :data:`_STRUCTURE`, itself a
NumPy string array: still no pickle, and ``load`` gives the same structure back.
"""
import json
import numbers
import os
import zipfile

import numpy as np

from .autograd import Tensor

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with entries; an empty zip (save({}))
_NPY_MAGIC = b"\x93NUMPY"
_STRUCTURE = "__needle_structure__"  # the member describing a nested state


def _is_flat(state):
    """A ``{str: array}`` dict (NumPy scalars count as 0-d arrays, Python numbers do not)."""
    return all(isinstance(k, str) and k != _STRUCTURE and v is not None
               and not isinstance(v, (dict, list, tuple, str))
               and (isinstance(v, np.generic) or not isinstance(v, numbers.Number))
               for k, v in state.items())


def _encode(value, arrays, where):
    """A JSON-able description of ``value``; its arrays go into ``arrays`` (named by index)."""
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"needle.save: keys must be str or int, got {k!r} "
                                f"({type(k).__name__}) in {where}")
            items.append([k, _encode(v, arrays, f"{where}[{k!r}]")])
        return {"dict": items}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, np.generic) and not isinstance(value, np.complexfloating):
        value = value.item()  # a NumPy number (a hyperparameter, say) comes back as a number
    if value is None or isinstance(value, (bool, str)) or (
            isinstance(value, numbers.Number) and not isinstance(value, np.generic)):
        if isinstance(value, complex):
            raise TypeError(f"needle.save: {where} is complex, which Needle does not store")
        return {"value": value}
    name = str(len(arrays))
    arrays[name] = _as_array(where, value)
    return {"array": name}


def _decode(node, arrays):
    if "dict" in node:
        return {k: _decode(v, arrays) for k, v in node["dict"]}
    if "list" in node:
        return [_decode(v, arrays) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, arrays) for v in node["tuple"])
    if "array" in node:
        return arrays[node["array"]]
    return node["value"]


def _as_array(key, value):
    """``value`` as a NumPy array that can be stored without pickle; TypeError naming ``key``."""
    if isinstance(value, Tensor):
        return value.numpy()
    try:
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except (TypeError, ValueError) as e:  # e.g. a ragged nested list
        raise TypeError(f"needle.save: entry {key!r} is not an array ({e})") from e
    if array.dtype.hasobject:
        raise TypeError(f"needle.save: entry {key!r} holds Python objects "
                        f"({type(value).__name__} -> object array), which cannot be stored "
                        f"without pickle; save arrays or Tensors of numbers")
    return array


def save(state_dict, path):
    """Write a ``{name: numpy array or Tensor}`` dict (e.g. ``module.state_dict()``) to
    ``path`` as a ``.npz`` file, without pickle.

    Args:
        state_dict: a mapping from ``str`` names to Tensors or NumPy arrays, or a nested
            state of dicts (``str`` or ``int`` keys), lists, tuples, numbers, strings, None
            and arrays, such as an optimizer's ``state_dict()``.
        path: the file to write (a str or path-like), used as is: no suffix is appended.

    Raises:
        TypeError: a key is not a ``str`` (or an ``int``, in a nested state), or a value
            would need pickle (an object array, a list of mixed objects). Nothing is
            written then.

    Example:
        >>> needle.save(model.state_dict(), "model.npz")
        >>> model.load_state_dict(needle.load("model.npz"))
        >>> needle.save({"model": model.state_dict(), "opt": opt.state_dict()}, "ckpt.npz")
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"needle.save: expected a dict of arrays, got {type(state_dict).__name__}")
    arrays = {}  # check everything before touching the file
    if _is_flat(state_dict):
        for key, value in state_dict.items():
            arrays[key] = _as_array(key, value)
    else:
        structure = json.dumps(_encode(dict(state_dict), arrays, "the state"))
        arrays[_STRUCTURE] = np.array(structure)
    # np.savez(f, **arrays) would take a key named "file" (or "allow_pickle") as its own
    # argument; write the zip of .npy members directly, as np.savez does.
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED,
                                                 allowZip64=True) as zf:
        for key, array in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def load(path):
    """Read a dict written by :func:`save`; pass it to ``module.load_state_dict``.

    Raises:
        ValueError: ``path`` is not a ``.npz`` file written by :func:`save` (for instance a
            single array written by ``numpy.save``, or an entry that would need pickle).
    """
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"{os.fspath(path)}: holds a single array (a .npy file written by "
                         f"numpy.save), not a state dict; load it with numpy.load")
    if not head.startswith(_ZIP_MAGICS):
        what = "an empty file" if not head else f"a file starting with {head!r}"
        raise ValueError(f"{os.fspath(path)}: not a .npz file written by needle.save ({what})")
    name = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{name}: not a .npz file written by needle.save "
                         f"({type(e).__name__}: {e})") from e
    state = {}
    with data:
        for key in data.files:
            try:
                value = data[key]
            except ValueError as e:  # an object array: it would need pickle
                raise ValueError(f"{name}: entry {key!r} cannot be loaded without pickle "
                                 f"({e}); not a file written by needle.save") from e
            except (OSError, zipfile.BadZipFile, EOFError) as e:
                raise ValueError(f"{name}: entry {key!r} is corrupt "
                                 f"({type(e).__name__}: {e})") from e
            if not isinstance(value, np.ndarray):
                raise ValueError(f"{name}: member {key!r} is not a .npy array; not a .npz "
                                 f"file written by needle.save")
            state[key] = value
    if _STRUCTURE in state:
        arrays = state
        try:
            return _decode(json.loads(str(arrays.pop(_STRUCTURE))), arrays)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{name}: its structure entry is corrupt ({e})") from e
    return state
