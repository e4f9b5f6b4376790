"""One fresh-process fit by robustlearn: ``python -m benchmarks.perf._ours_worker NAME N CACHE``.

``NAME`` is one of P1's problems (``fit_linear``, Wasserstein included) or
``estimator:OBJECTIVE`` (``RobustClassifier(OBJECTIVE).fit``, P6), on P1's data. Prints one
JSON line: the seconds of the imports (robustlearn and its estimators), of the first fit
(tracing, compilation or cache load, and the solve) and of a second identical fit
(compiled), and the XLA compile seconds of the first. ``CACHE`` is a directory for JAX's
persistent compilation cache, or ``-`` for none (a truly cold process).
"""

import json
import sys
import time

t0 = time.perf_counter()
import jax  # noqa: E402

import robustlearn as rl  # noqa: E402
import robustlearn.train  # noqa: E402, F401  (rl.train is loaded on first use: an import, not the fit)
from robustlearn.estimators import RobustClassifier  # noqa: E402

t_import = time.perf_counter() - t0

ESTIMATOR = "estimator:"


def main():
    name, n, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if cache != "-":
        rl.enable_compilation_cache(cache)
    from benchmarks.perf.p1_linear import CompileClock, fit_ours, make_data_for

    x, y = make_data_for(name, n)
    if name.startswith(ESTIMATOR):
        fit = lambda: RobustClassifier(name.removeprefix(ESTIMATOR)).fit(x, y)  # noqa: E731
    else:
        fit = lambda: fit_ours(name, x, y)  # noqa: E731
    clock = CompileClock()
    start = time.perf_counter()
    fit()
    first = time.perf_counter() - start
    compile_seconds = clock.seconds
    start = time.perf_counter()
    fit()
    second = time.perf_counter() - start
    print(json.dumps({"import": t_import, "first": first, "second": second, "compile": compile_seconds}))


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    main()
