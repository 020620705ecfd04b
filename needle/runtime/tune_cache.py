"""The autotune cache: choices measured on one machine (which engine, which algorithm, where
the CPU beats the GPU), kept on disk so that the next process starts tuned.

The file is ``$NEEDLE_CACHE_DIR/tune.json`` (default ``~/.cache/needle/tune.json``)::

    {"format": 1, "needle": "0.1.0", "entries": {key: {"choice": ..., "times_us": {...},
                                                        "when": ...}}}

A key names everything a choice depends on: the device's name, the driver and library
versions, Needle's version, the op, its shapes and dtypes (:func:`key`), so a choice made
elsewhere is never applied here. Writes are atomic (a temporary file in the same folder,
then ``os.replace``) and serialised across processes by an exclusive lock on
``tune.json.lock``, under which each write rereads the file, so two processes writing at
once both keep their entries. A file that does not parse, is truncated, or comes from
another format or Needle version is moved aside (``tune.json.bad-<time>``) with a warning
and the cache starts empty: never a crash, never a choice read from a file that is not
this format's.
"""
import contextlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

FORMAT = 1


def _needle_version():
    from .. import __version__  # noqa: PLC0415 - the package imports this module
    return __version__


def path():
    """Where the cache lives (``$NEEDLE_CACHE_DIR`` is read on every call)."""
    root = os.environ.get("NEEDLE_CACHE_DIR") or os.path.join(os.path.expanduser("~"),
                                                              ".cache", "needle")
    return Path(root) / "tune.json"


def key(op, device, shapes, dtypes, versions=()):
    """The cache key of ``op`` on ``device`` (its name and the driver / library versions
    that decide its speed) for inputs of ``shapes`` and ``dtypes``."""
    parts = [f"needle={_needle_version()}", f"device={device}", f"op={op}",
             "shapes=" + ";".join("x".join(map(str, s)) for s in shapes),
             "dtypes=" + ",".join(map(str, dtypes))]
    parts += [f"{name}={value}" for name, value in sorted(dict(versions).items())]
    return "|".join(parts)


@contextlib.contextmanager
def _locked(file):
    """An exclusive lock on ``file``'s lock file (POSIX ``flock``; elsewhere none: the
    atomic rename still keeps the file whole)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(str(file) + ".lock", "a+") as lock:
        try:
            import fcntl  # noqa: PLC0415 - POSIX only
        except ImportError:
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(file):
    """The entries of ``file``; one that is not this format's is moved aside, with a
    warning, and read as empty."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else '?'}"
                             f", this Needle reads format {FORMAT}")
        if data.get("needle") != _needle_version():
            raise ValueError(f"written by Needle {data.get('needle')}, this is "
                             f"{_needle_version()}")
        entries = data["entries"]
        if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and "choice" in e for e in entries.values()):
            raise ValueError("entries without a choice")
        return entries
    except (ValueError, KeyError, TypeError) as e:
        aside = file.with_name(f"{file.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        with contextlib.suppress(OSError):
            os.replace(file, aside)
        warnings.warn(f"needle: the autotune cache {file} could not be used ({e}); moved to "
                      f"{aside.name}, starting empty", RuntimeWarning, stacklevel=3)
        return {}


def _write(file, entries):
    data = {"format": FORMAT, "needle": _needle_version(), "entries": entries}
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def lookup(entry_key):
    """The entry stored under ``entry_key`` (``{"choice", "times_us", "when"}``), or None."""
    file = path()
    with _locked(file):
        return _read(file).get(entry_key)


def store(entry_key, choice, times_us=None):
    """Keep ``choice`` (anything JSON holds) and the times it was chosen on under
    ``entry_key``; other processes' entries written meanwhile are kept."""
    file = path()
    with _locked(file):
        entries = _read(file)
        entries[entry_key] = {"choice": choice, "times_us": dict(times_us or {}),
                              "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _write(file, entries)


def tune_cache():
    """Every entry of the cache, ``{key: entry}`` (a copy)."""
    file = path()
    with _locked(file):
        return _read(file)


def clear_tune_cache():
    """Forget every choice (the file is removed)."""
    file = path()
    with _locked(file):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
