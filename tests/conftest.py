"""Test-wide JAX set-up: 8 CPU devices (for the sharding tests), the command lines' XLA flags and a persistent
compilation cache.

Both must be set before JAX initializes its backend, which is why this runs at collection time.
"""

import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP threads otherwise spin beside JAX's

from train.cli import prefer_eigen_cpu_convolutions  # noqa: E402

# As fusionjax-train does: the training subprocesses of the tests and this process must compile the same programs
# (the resume test compares their parameters bit for bit).
prefer_eigen_cpu_convolutions()

import jax  # noqa: E402
import pytest  # noqa: E402

# Compiling dominates this suite's time on CPU; the cache cuts a ResNet-50 train-step compile from ≈6 s to ≈2 s.
_cache = Path(os.environ.get("FUSIONJAX_TEST_JAX_CACHE", Path.home() / ".cache" / "fusionjax" / "jax-test-cache"))
_cache.mkdir(parents=True, exist_ok=True)
jax.config.update("jax_compilation_cache_dir", str(_cache))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def tfds_mock_data(monkeypatch):
    """``tfds.testing.mock_data``, with its batched reads bound correctly.

    tfds 4.9.10's mock sets ``__getitems__`` on a MagicMock, which does not bind it to the data source, so it
    receives the keys as ``self``; real array_record sources are unaffected.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    monkeypatch.setattr(mocking, "_getitems", lambda keys, generator: [generator[key] for key in keys])
    return tfds.testing.mock_data
