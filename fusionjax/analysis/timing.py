"""Wall-clock time of compiled calls, measured alternately so that a change in the machine's load hits every
candidate alike."""

import time
from typing import Any, Callable

import jax


def alternating_times(calls: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument function, ``rounds`` times in turn, after ``warmup`` untimed rounds.

    Each result is waited for (``jax.block_until_ready``) before the clock stops. Report the minimum or the median:
    the minimum is the least disturbed by other processes, the median what a user sees on a busy machine.
    """
    if rounds < 1:
        raise ValueError(f"alternating_times: rounds must be at least 1, got {rounds}.")
    for _ in range(warmup):
        for call in calls.values():
            jax.block_until_ready(call())
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[label].append(time.perf_counter() - start)
    return times
