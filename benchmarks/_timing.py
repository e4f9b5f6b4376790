"""Shared timing helper for the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``call()`` over ``repeats`` runs, after one warm-up (compile) run."""
    jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each ``call()`` over ``repeats`` interleaved rounds (every call once per
    round, so a drift of the machine hits all alike), after one warm-up (compile) run of each."""
    for call in calls.values():
        jax.block_until_ready(call())
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def per_step(t_short: float, t_long: float, short: int, long: int) -> tuple[float, float]:
    """``(step, fixed)`` seconds from the times of runs of ``short`` and ``long`` steps: the step time as
    the slope between them (free of each call's fixed cost), and that fixed cost."""
    step = (t_long - t_short) / (long - short)
    return step, t_short - short * step
