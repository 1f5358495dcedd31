"""Test-wide set-up: 8 CPU devices (for the sharding tests), fusionjax's XLA:CPU choice, a persistent compilation
cache per jax version, a longer timeout for ``slow`` tests, and ``--without-torch``.

XLA_FLAGS and the cache must be set before JAX starts, which is why this runs at collection time; the environment
carries them to the command-line subprocesses the tests start. docs/installation.md says what CI runs.
"""

import importlib.metadata
import importlib.util
import errno
import os
import socket
import sys
from pathlib import Path

import pytest

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DEVICE_COUNT_FLAG}".strip()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP threads otherwise spin beside JAX's

# Compiling dominates this suite's time on CPU. One folder per jax release: entries of another never match.
_CACHE_ROOT = Path(os.environ.get("FUSIONJAX_TEST_JAX_CACHE", Path.home() / ".cache" / "fusionjax" / "jax-test-cache"))
_cache = _CACHE_ROOT / f"jax-{importlib.metadata.version('jax')}"
_cache.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# As fusionjax-train does: importing fusionjax first makes its XLA:CPU choice, so that this process and the
# training subprocesses of the tests compile the same programs (the resume test compares parameters bit for bit).
import fusionjax  # noqa: F401

SLOW_TIMEOUT_S = 1200  # slow tests run whole trainings, each with its own timeout; pyproject's `timeout` for the rest
TORCH_MODULES = ("torch", "torchvision", "timm")  # timm is built on torch
_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption(
        "--without-torch", action="store_true",
        help="Run as if torch, torchvision and timm were not installed: a test that imports one of them (itself "
             "or through fusionjax or the benchmarks) is skipped. For Pythons where pip offers only CUDA builds of "
             "torch; without this option a missing torch is an error.")


def pytest_configure(config):
    if config.getoption("without_torch"):
        sys.meta_path.insert(0, _HideTorch())


def pytest_sessionstart(session):
    if session.config.getoption("without_torch"):
        return
    missing = [name for name in TORCH_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise pytest.UsageError(
            f"{', '.join(missing)} not installed, and the full suite needs them: pip install -e '.[test]', or "
            "pass --without-torch to skip only the tests that need torch (docs/installation.md).")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


class _HideTorch:
    """A meta path finder for ``--without-torch``: importing one of ``TORCH_MODULES`` from the project's code
    (tests, fusionjax, benchmarks) skips the test, or the whole module at its top; from an installed library it
    raises ImportError, as an environment without torch would, so a library's optional torch support stays off.
    """

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in TORCH_MODULES:
            return None
        importer = _importer_frame()
        filename = Path(importer.f_code.co_filename).resolve() if importer else None
        if filename and filename.is_relative_to(_ROOT) and "site-packages" not in filename.parts:
            where = f"{filename.relative_to(_ROOT)}:{importer.f_lineno}"
            raise pytest.skip.Exception(f"needs {name} (imported at {where}); this run has --without-torch",
                                        allow_module_level=True)
        raise ModuleNotFoundError(f"No module named {name!r} (hidden by --without-torch)", name=name)


def _importer_frame():
    """The frame of the code whose import statement reached the finder: the first outside importlib and here."""
    frame = sys._getframe(2)
    while frame and (frame.f_code.co_filename.startswith("<frozen importlib") or frame.f_code.co_filename == __file__
                     or frame.f_globals.get("__name__", "").startswith("importlib")):
        frame = frame.f_back
    return frame


@pytest.fixture
def tfds_mock_data(monkeypatch):
    """``tfds.testing.mock_data``, with its batched reads bound correctly and its data looking prepared.

    tfds 4.9.10's mock sets ``__getitems__`` on a MagicMock, which does not bind it to the data source, so it
    receives the keys as ``self``; real array_record sources are unaffected. The mock makes preparing a no-op and
    forces the array_record format only inside ``as_data_source``, so what the pipeline asks first (is the data set
    prepared, in which format) is mocked to match.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    monkeypatch.setattr(mocking, "_getitems", lambda keys, generator: [generator[key] for key in keys])
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    monkeypatch.setattr(tfds.core.DatasetInfo, "file_format", tfds.core.FileFormat.ARRAY_RECORD)
    return tfds.testing.mock_data


@pytest.fixture
def no_network(monkeypatch):
    """This process offline as CI and air-gapped machines are: no host name resolves (``socket.gaierror``, what a
    failing DNS lookup raises) and no address is reachable. Subprocesses are not covered: run them with
    ``unshare --net`` where the test needs a command line offline."""

    def unresolvable(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def unreachable(self, address):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: errno.ENETUNREACH)
