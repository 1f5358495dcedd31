"""The command lines' process set-up (fusionjax.train.host): the allocator, --cpu_devices, multi-process launches.

References: the kernel's own page-fault counts (getrusage), the shared library that defines ``malloc`` as the
dynamic linker resolves it, and one process on 8 devices for two processes of 4.
"""

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fusionjax.train import cli, host, trainer, workdir as workdir_lib
from test_train import RESUME_CONFIG, assert_trees_close

# Each call's output below is 40 MiB: more than glibc's malloc ever serves from a heap by default (32 MiB at most).
PAGE_FAULTS_PER_CALL = """
import resource, sys
from fusionjax.train.host import reuse_freed_host_memory
if sys.argv[1] == "reuse" and not reuse_freed_host_memory():
    sys.exit(3)
import jax, jax.numpy as jnp
x = jnp.ones(10 * 2**20, jnp.float32)
double = jax.jit(lambda x: 2 * x)
for _ in range(10):
    double(x).block_until_ready()
for _ in range(21):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    double(x).block_until_ready()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(host.host_malloc() != "libc.so.6", reason="mallopt options are glibc's malloc's")
def test_reuse_freed_host_memory_stops_page_faulting_each_calls_buffers():
    """Without it, every call's 40 MiB output is mapped afresh and page-faulted in (4 KiB pages: 10,240 faults, or
    fewer where the kernel backs it with huge pages). With it, freed outputs are reused: a typical call faults no
    page. The heap still grows on the odd call whose output is allocated before an earlier one has been freed,
    hence the median."""
    def median_faults(mode: str) -> float:
        run = subprocess.run([sys.executable, "-c", PAGE_FAULTS_PER_CALL, mode], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        return statistics.median(int(line) for line in run.stdout.split())

    pages = 40 * 2**20 // resource.getpagesize()
    default, reused = median_faults("default"), median_faults("reuse")
    assert default > 0.5 * pages or default > 15, default  # 15: 20 huge pages, some already mapped
    assert reused < 0.01 * pages, (default, reused)


HOST_MALLOC = ("from fusionjax.train.host import host_malloc, reuse_freed_host_memory; "
               "print(host_malloc(), reuse_freed_host_memory())")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and libc.so.6 are Linux's")
def test_host_malloc_names_the_allocator_in_use_and_reuse_leaves_another_alone():
    """glibc by default; with libmemusage.so preloaded (glibc's own tracing wrapper, which defines ``malloc``, as
    tcmalloc does) that library, and reuse_freed_host_memory() then sets nothing, since glibc's malloc options
    would no longer be the ones in use."""
    def run(preload: str | None) -> list[str]:
        env = {**os.environ, "LD_PRELOAD": preload} if preload else dict(os.environ)
        done = subprocess.run([sys.executable, "-c", HOST_MALLOC], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run(None) == ["libc.so.6", "True"]
    assert run("libmemusage.so") == ["libmemusage.so", "False"]


def test_an_incomplete_multi_process_launch_is_refused_naming_the_missing_flags(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fusionjax.train", "--config", "digits",
                             "--workdir", str(tmp_path / "run"), "--coordinator_address", "localhost:1234"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "error: --coordinator_address, --num_processes and --process_id go together" in result.stderr
    assert not (tmp_path / "run").exists()


def test_cpu_devices_splits_the_host_before_jax_starts(tmp_path):
    """``--cpu_devices 3`` overrides the XLA_FLAGS device count (8 here): the digits batch of 64 no longer divides."""
    result = subprocess.run([sys.executable, "-m", "fusionjax.train", "--config", "digits",
                             "--workdir", str(tmp_path / "run"), "--cpu_devices", "3"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "error: config.batch_size / grad_accum_steps = 64 must be divisible by the 3 devices; pick a multiple " \
        "of 3." in result.stderr
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_4_devices_train_like_one_process_of_8(tmp_path):
    """A multi-host launch on localhost: ``jax.distributed`` with gloo collectives, each process reading only its
    rows of every batch, one shared workdir. It must end where one process on 8 devices ends."""
    config_path = tmp_path / "tiny_digits.py"
    config_path.write_text(RESUME_CONFIG.replace("config.num_train_steps = 120", "config.num_train_steps = 50"))
    workdir = tmp_path / "two_processes"
    address = f"localhost:{_free_port()}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    logs = [tmp_path / f"process{index}.log" for index in range(2)]
    processes = []
    for index, log in enumerate(logs):  # output to files: a full pipe would block a process while this one polls
        with log.open("w") as output:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "fusionjax.train", "--config", str(config_path), "--workdir", str(workdir),
                 "--coordinator_address", address, "--num_processes", "2", "--process_id", str(index)],
                env=env, stdout=output, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 600
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in processes):  # one failed: the other would wait for it forever
            break
        time.sleep(0.2)
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()
    outputs = [log.read_text() for log in logs]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    assert "on 8 device(s)" in outputs[0] and "Final evaluation" in outputs[0]
    assert "Final evaluation" not in outputs[1]  # process 0 reports, writes metrics and plots

    config = cli.load_config(str(config_path))
    expected = jax.device_get(trainer.train_and_evaluate(config, tmp_path / "one_process"))
    manager = workdir_lib.checkpoint_manager(workdir, config, read_only=True)
    setup = trainer.make_setup(config)
    restored = jax.device_get(workdir_lib.restore_checkpoint(manager, 50, trainer.abstract_state(setup)))
    # The same program on the same 8 devices; the all-reduces run over gloo instead of in one process, so the
    # sums may be ordered differently: float32 tolerance, not bit equality.
    assert int(restored.step) == 50
    assert_trees_close(restored.params, expected.params)
    assert_trees_close(restored.batch_stats, expected.batch_stats)
    assert_trees_close(restored.ema, expected.ema)

    def evaluations(directory) -> np.ndarray:
        """(step, top-1, EMA top-1) of every evaluation."""
        records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
        return np.asarray([(r["step"], r["top1"], r["ema_top1"]) for r in records if r["split"] == "eval"])

    two, one = evaluations(workdir), evaluations(tmp_path / "one_process")
    np.testing.assert_array_equal(two[:, 0], one[:, 0])
    np.testing.assert_allclose(two[:, 1:], one[:, 1:], rtol=0, atol=1e-6)  # top-1 fractions of 360 examples
