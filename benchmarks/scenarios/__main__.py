"""Scenario cards: is there a gap to close? Floor, ceiling and generator quality of every variant.

    python -m benchmarks.scenarios                      # quick sizes, 3 seeds, every variant, linear learner
    python -m benchmarks.scenarios --full --seeds 5
    python -m benchmarks.scenarios --variant label_noise --learner mlp

For each variant and seed, through ``robustlearn.benchmark.compare`` (``splits(seed)`` draws the scenario
anew; tuned on ``real_val`` by the scenario's primary metric, tested once on ``real_test``): the floor is ERM
on ``synthetic`` only, ``erm`` is ERM on the training split (``synthetic`` + ``real_train``) and the ceiling ERM
on ``real_full_train``. The learner is a linear model (``robustlearn.train.fit_linear``, L2 on a log grid) or an
MLP (``robustlearn.train.Trainer``, minibatches, AdamW weight decay on a grid, early stopping on ``real_val``).
A gap exists when the paired 95% interval of ceiling - floor excludes 0. Numbers are preliminary on a busy
machine only for the timings; the accuracies do not depend on load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from robustlearn import benchmark

from . import SCENARIOS, VARIANTS

LINEAR_GRID = [{"l2": v} for v in (1e-4, 1e-2, 1.0)]
MLP_GRID = [{"wd": v} for v in (1e-4, 1e-2)]


def _concat(a, b):
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def make_splits(variant: str, quick: bool, store: dict, overrides: dict | None = None):
    name, params = VARIANTS[variant]
    params = dict(params) | dict(overrides or {})

    def splits(seed):
        s = SCENARIOS[name](seed, quick, **params)
        store[seed] = s
        sp = {k: dict(v, row_id=s.info["row_ids"][k]) for k, v in s.splits.items()}
        train = _concat(sp["synthetic"], sp["real_train"]) if len(sp["real_train"]["y"]) else sp["synthetic"]
        return {
            "synthetic": sp["synthetic"],
            "train": train,
            "real_full_train": sp["real_full_train"],
            "val": sp["real_val"],
            "test": sp["real_test"],
        }

    return splits


def _metrics(scores, split):
    import jax
    import jax.numpy as jnp
    import optax

    scores = jnp.asarray(scores)
    y = jnp.asarray(split["y"])
    losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(scores, y))
    right = np.asarray(jnp.argmax(scores, -1) == y)
    groups = split["group"]
    present = np.unique(groups)
    del jax
    return {
        "accuracy": float(right.mean()),
        "loss": float(losses.mean()),
        "worst_group_accuracy": float(min(right[groups == g].mean() for g in present)),
        "worst_group_loss": float(max(losses[groups == g].mean() for g in present)),
    }


def linear_learner(num_classes: int):
    import robustlearn as rl

    def fit(method, hyper, train, seed):
        sol = rl.train.fit_linear(
            train["x"], train["y"], rl.objectives.erm(), loss="softmax", l2=hyper["l2"], num_classes=num_classes
        )
        return {k: np.asarray(v, np.float64) for k, v in sol.params.items()}

    def evaluate(params, split):
        return _metrics(split["x"].astype(np.float64) @ params["w"] + params["b"], split)

    return fit, evaluate


def mlp_learner(num_classes: int, epochs: int, store_val: dict):
    import optax
    from flax import nnx

    import robustlearn as rl

    def fit(method, hyper, train, seed):
        d = train["x"].shape[1]
        rngs = nnx.Rngs(seed)
        model = nnx.Sequential(
            nnx.Linear(d, 128, rngs=rngs), nnx.relu, nnx.Linear(128, 128, rngs=rngs), nnx.relu,
            nnx.Linear(128, num_classes, rngs=rngs),
        )  # fmt: skip
        trainer = rl.train.Trainer(
            model,
            optax.softmax_cross_entropy_with_integer_labels,
            rl.objectives.erm(),
            optax.adamw(1e-3, weight_decay=hyper["wd"]),
            batch_size=128,
            seed=seed,
            monitor="val_loss",
            patience=10,
            verbose=False,
        )
        val = store_val["val"]
        trainer.fit({"x": train["x"], "y": train["y"]}, {"x": val["x"], "y": val["y"]}, epochs=epochs)
        return trainer

    def evaluate(trainer, split):
        return _metrics(np.asarray(trainer.predict(split["x"]), np.float64), split)

    return fit, evaluate


def card(variant: str, seeds, quick: bool, learner: str, epochs: int, overrides: dict | None = None) -> dict:
    store: dict = {}
    splits = make_splits(variant, quick, store, overrides)
    first = splits(seeds[0])
    scenario = store[seeds[0]]
    metric, maximize = scenario.info["primary_metric"]
    store_val = {"val": first["val"]}

    def seeded(seed):
        data = first if seed == seeds[0] else splits(seed)
        store_val["val"] = data["val"]
        return data

    if learner == "linear":
        fit, evaluate = linear_learner(scenario.num_classes)
        grid = LINEAR_GRID
    else:
        fit, evaluate = mlp_learner(scenario.num_classes, epochs, store_val)
        grid = MLP_GRID
    methods = [
        benchmark.Method("floor", grid, "synthetic"),
        benchmark.Method("erm", grid, "train"),
        benchmark.Method("ceiling", grid, "real_full_train"),
    ]
    start = time.perf_counter()
    results = benchmark.compare(
        methods, fit, evaluate, seeded, select=metric, seeds=seeds, maximize=maximize, leakage_keys="row_id"
    )
    seconds = time.perf_counter() - start
    by = {m: np.array([r.test[metric] for r in results if r.method == m]) for m in ("floor", "erm", "ceiling")}
    diff = by["ceiling"] - by["floor"]
    d, half = _interval(diff)
    sign = 1 if maximize else -1
    gens = [store[s].info.get("generator") for s in seeds if "generator" in store[s].info]
    row = {
        "variant": variant,
        "training rows": scenario.info["training_rows"],
        "metric": metric,
        "floor": float(by["floor"].mean()),
        "erm": float(by["erm"].mean()),
        "ceiling": float(by["ceiling"].mean()),
        "ceiling - floor": d,
        "ci95": half,
        "gap": "yes" if sign * d > 0 and (np.isnan(half) or abs(d) > half) else "no",
        "negative control": scenario.info["negative_control"] or "",
        "seconds": seconds,
    }
    if gens:
        q = [g["quality"] for g in gens if "quality" in g]
        row |= {
            "c2st": float(np.mean([x["c2st_auc"] for x in q])),
            "c2st_quad": float(np.mean([x["c2st_auc_quadratic"] for x in q])),
            "tstr": float(np.mean([x["tstr_accuracy"] for x in q])),
            "trtr": float(np.mean([x["trtr_accuracy"] for x in q])),
            "generator s": float(np.mean([g["train_seconds"] for g in gens])),
        }
    return row


def _interval(values) -> tuple[float, float]:
    """Mean and 95% Student-t half-width (NaN with fewer than 2 values)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenarios", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="full data sizes (default: quick)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--learner", choices=("linear", "mlp"), default="linear")
    parser.add_argument("--epochs", type=int, default=60, help="MLP epochs at most")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    seeds = list(range(args.seeds))
    names = args.variant or list(VARIANTS)
    rows = []
    for name in names:
        rows.append(card(name, seeds, not args.full, args.learner, args.epochs, overrides))
        print(f"{name}: done in {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    cols = ["variant", "metric", "floor", "erm", "ceiling", "ceiling - floor", "ci95", "gap", "negative control"]
    cols += [c for c in ("c2st", "c2st_quad", "tstr", "trtr", "generator s") if any(c in r for r in rows)]
    extra = f", parameters {overrides}" if overrides else ""
    print(f"{'full' if args.full else 'quick'} sizes, {len(seeds)} seeds, {args.learner} learner{extra}\n")
    print(benchmark.to_markdown(rows, cols))
    print()
    for r in rows:
        print(f"- {r['variant']}: {r['training rows']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
