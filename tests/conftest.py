"""One test suite for every device: the ``device`` fixture is parametrized over Needle's
devices (``--device cpu,cuda`` or ``all``, the default); a device that cannot run here is
skipped with its reason."""
import os
import zlib

import numpy as np
import pytest

import needle

# JAX (an oracle in some tests) would otherwise take 75% of a GPU's memory at its first use
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

ALL = [d.name for d in needle.all_devices()]


def pytest_addoption(parser):
    parser.addoption("--device", default="all",
                     help=f"comma-separated devices to test ({', '.join(ALL)}) or 'all'")


def _selected(config):
    value = config.getoption("--device")
    names = ALL if value == "all" else [n.strip() for n in value.split(",")]
    unknown = set(names) - set(ALL)
    if unknown:
        raise pytest.UsageError(f"unknown --device {sorted(unknown)}; choose from {ALL}")
    return names


def pytest_configure(config):
    """A device asked for by name that cannot run here stops the run with its reason (and
    the install command) in one line; with the default ``all`` it is skipped instead."""
    if config.getoption("--device") == "all":
        return
    for name in _selected(config):
        dev = needle.device(name)
        if not dev.enabled():
            raise pytest.UsageError(f"--device {name}: {dev} is unavailable: "
                                    f"{dev.unavailable_reason()}")


def pytest_generate_tests(metafunc):
    # tests written as course code parametrize ``device`` with device objects themselves
    explicit = any("device" in (m.args[0] if isinstance(m.args[0], (list, tuple))
                                else m.args[0].replace(" ", "").split(","))
                   for m in metafunc.definition.iter_markers("parametrize"))
    if "device" in metafunc.fixturenames and not explicit:
        metafunc.parametrize("device", _selected(metafunc.config), indirect=True)


@pytest.fixture
def device(request):
    dev = needle.device(request.param)
    if not dev.enabled():
        pytest.skip(f"{dev} unavailable: {dev.unavailable_reason()}")
    return dev


@pytest.fixture
def rng(request):
    """A fresh generator per test, seeded from the test's name so failures reproduce."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def unfused(monkeypatch):
    """``unfused(fn)`` runs ``fn()`` with every backend reporting no fused or layer ops: the
    ops layer then composes them from simple ops (what a fused kernel is tested against)."""
    def run(fn):
        with monkeypatch.context() as m:
            m.setattr(needle.backend_ndarray.Backend, "supports", lambda self, op, dtype=None: False)
            return fn()
    return run
