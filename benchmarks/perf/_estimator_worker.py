"""One fresh-process fit of ``RobustClassifier``: ``python -m benchmarks.perf._estimator_worker OBJECTIVE N CACHE``.

Prints one JSON line: the seconds of ``import robustlearn.estimators``, of the first fit
(tracing, compilation or cache load, and the solve) and of a second identical fit in the
same process (compiled). ``CACHE`` is a directory for JAX's persistent compilation cache,
or ``-`` for none (a truly cold process). Data: P1's (logistic, d = 20), labels 0/1.
"""

import json
import sys
import time

t0 = time.perf_counter()
import jax  # noqa: E402

import robustlearn as rl  # noqa: E402
from robustlearn.estimators import RobustClassifier  # noqa: E402

t_import = time.perf_counter() - t0


def main():
    objective, n, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if cache != "-":
        rl.enable_compilation_cache(cache)
    from benchmarks.perf.p1_linear import make_data

    x, y = make_data(n)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        RobustClassifier(objective).fit(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"import": t_import, "first": times[0], "second": times[1]}))


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    main()
