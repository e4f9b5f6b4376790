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


def interleaved_medians(
    calls: dict[str, Callable[[], object]], repeats: int, before: Callable[[], object] | None = None
) -> dict[str, float]:
    """Median wall time of each ``call()`` over ``repeats`` interleaved rounds (every call once per
    round, so a drift of the machine hits all alike), after one warm-up (compile) run of each.

    ``before``: an untimed call run (and awaited, its result kept until the timed call ends)
    before every timed one, so that every call starts from the same state instead of the
    one its predecessor left (see :func:`cache_flush`).
    """
    for call in calls.values():
        jax.block_until_ready(call())
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            held = jax.block_until_ready(before()) if before is not None else None
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
            del held
    return {name: statistics.median(t) for name, t in times.items()}


def cache_flush(megabytes: int = 128) -> Callable[[], object]:
    """A call that reads and writes ``megabytes`` of memory: after it, no timed call finds its
    input in the CPU's caches, whatever ran before. Without it a call pays for its
    predecessor: on 2 AMD EPYC cores ``logsumexp`` of 10^7 floats took 4.69 ms right after
    the gradient of a reduction (a 40 MB output written and freed) and 2.83 ms after a
    value, and ``jnp.mean`` 0.6 ms when the vector was still partly in cache."""
    buffer = jax.numpy.zeros(megabytes * 2**18, jax.numpy.float32)
    touch = jax.jit(lambda b: b + 1.0)
    return lambda: touch(buffer)


def per_step(t_short: float, t_long: float, short: int, long: int) -> tuple[float, float]:
    """``(step, fixed)`` seconds from the times of runs of ``short`` and ``long`` steps: the step time as
    the slope between them (free of each call's fixed cost), and that fixed cost."""
    step = (t_long - t_short) / (long - short)
    return step, t_short - short * step
