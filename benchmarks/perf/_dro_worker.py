"""Fits one ``dro`` linear model in a separate process (so a slow fit can be timed out).

    python -m benchmarks.perf._dro_worker DATA.npz KIND JSON_CONFIG

Prints one JSON line: ``{"theta": [...], "b": float, "seconds": float}`` (the time of
``fit`` alone, without the imports) or ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def fit(kind: str, config: dict, x: np.ndarray, y: np.ndarray) -> dict:
    import dro  # noqa: PLC0415  (optional dependency, imported only here)

    d = x.shape[1]
    if kind == "cvar":
        model = dro.CVaRDRO(input_dim=d, model_type="logistic", alpha=config["alpha"])
    elif kind == "chi_square":
        model = dro.Chi2DRO(input_dim=d, model_type="logistic")
        model.update({"eps": config["eps"]})
    elif kind == "kl":
        model = dro.KLDRO(input_dim=d, model_type="logistic", eps=config["eps"])
    elif kind == "wasserstein":
        model = dro.WassersteinDRO(input_dim=d, model_type="logistic")
        model.update({"eps": config["eps"], "p": config["p"], "kappa": config["kappa"]})
    else:
        raise ValueError(f"unknown kind {kind!r}")
    start = time.perf_counter()
    model.fit(x, y)
    seconds = time.perf_counter() - start
    return {"theta": np.asarray(model.theta, float).ravel().tolist(), "b": float(model.b), "seconds": seconds}


def main(argv=None):
    path, kind, config = (argv or sys.argv[1:])[:3]
    data = np.load(path)
    try:
        out = fit(kind, json.loads(config), data["x"], data["y"])
    except Exception as e:  # report any solver failure to the parent as data
        out = {"error": f"{type(e).__name__}: {e}"[:200]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
