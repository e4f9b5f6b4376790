"""One fresh-process fit of P1's problem by robustlearn: ``python -m benchmarks.perf._ours_worker NAME N CACHE``.

Prints one JSON line: the seconds of ``import robustlearn``, of the first fit (tracing,
compilation or cache load, and the solve) and of a second fit (compiled), and the XLA
compile seconds. ``CACHE`` is a directory for JAX's persistent compilation cache, or ``-``
for none (a truly cold process).
"""

import json
import sys
import time

t0 = time.perf_counter()
import jax  # noqa: E402

import robustlearn as rl  # noqa: E402

t_import = time.perf_counter() - t0


def main():
    name, n, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if cache != "-":
        rl.enable_compilation_cache(cache)
    from benchmarks.perf.p1_linear import CompileClock, fit_ours, make_data_for

    x, y = make_data_for(name, n)
    clock = CompileClock()
    start = time.perf_counter()
    w, b, _ = fit_ours(name, x, y)
    first = time.perf_counter() - start
    compile_seconds = clock.seconds
    start = time.perf_counter()
    fit_ours(name, x, y)
    second = time.perf_counter() - start
    print(json.dumps({"import": t_import, "first": first, "second": second, "compile": compile_seconds}))


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    main()
