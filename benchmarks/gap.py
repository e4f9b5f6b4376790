"""The synthetic-to-real gap suite: every scenario, every objective, tuned on real validation data.

    python -m benchmarks run --quick              # all scenarios, 2 seeds, small grids (README main job)
    python -m benchmarks run --full --out DIR     # >= 5 seeds, full grids and sizes
    python -m benchmarks run --quick --scenario label_noise

Protocol (``robustlearn.benchmark.compare``): for each seed the scenario's data are drawn
anew; every method (ERM included) trains each configuration of its grid, the real
validation split picks one by the scenario's primary metric, and that one is evaluated
once on the real test split. The model is linear (softmax regression) trained full batch
with Adam for a fixed number of steps, identical for all methods; methods differ only in
the objective and the example weights. Training data are the synthetic set plus the small
real set (when the scenario has one); the floor is ERM on synthetic data only and the
ceiling ERM on all real training data.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import robustlearn as rl
from benchmarks.scenarios import SCENARIOS, take_generations
from robustlearn import benchmark, importance, objectives

# Runs: name -> (scenario generator, its parameters, primary metric, maximize).
RUNS = {
    "mode_dropping": ("mode_dropping", {}, "worst_group_accuracy", True),
    "label_noise": ("label_noise", {}, "accuracy", True),
    "colored_mnist": ("colored_mnist", {}, "worst_group_accuracy", True),
    "sim_to_real_digits": ("sim_to_real_digits", {}, "accuracy", True),
    "sim_to_real_digits_50_real": ("sim_to_real_digits", {"n_real_train": 50}, "accuracy", True),
    "support_cut": ("support_cut", {}, "worst_group_accuracy", True),
    "support_cut_no_real": ("support_cut", {"n_real_train": 0}, "worst_group_accuracy", True),
    "model_collapse": ("model_collapse", {"mode": "replace"}, "loss", False),
    "model_collapse_accumulate": ("model_collapse", {"mode": "accumulate"}, "loss", False),
    "model_collapse_mix": ("model_collapse", {"mode": "mix"}, "loss", False),
}
# Every scenario runs in --quick; these extra variants of one only in --full.
FULL_ONLY = ("model_collapse_accumulate", "model_collapse_mix")
L2 = 1e-3


def grids(quick: bool) -> dict[str, list[dict]]:
    """Each method's hyperparameter grid: the same number of configurations for every method."""
    if quick:
        return {
            "erm": [{"l2": 1e-4}, {"l2": 1e-2}],
            "cvar": [{"alpha": 0.1}, {"alpha": 0.3}],
            "chi_square": [{"radius": 0.5}, {"radius": 2.0}],
            "kl": [{"radius": 0.1}, {"radius": 0.5}],
            "wasserstein": [{"radius": 0.01}, {"radius": 0.1}],
            "group_dro": [{"l2": 1e-4}, {"l2": 1e-2}],
            "iw_erm": [{"power": 0.5}, {"power": 1.0}],
            "source_mix": [{"real": 0.25}, {"real": 0.5}],
            "source_dro": [{"l2": 1e-4}, {"l2": 1e-2}],
            "generation_weighted": [{"gamma": 0.5}, {"gamma": 2.0}],
        }
    return {
        "erm": [{"l2": 1e-5}, {"l2": 1e-4}, {"l2": 1e-3}, {"l2": 1e-2}],
        "cvar": [{"alpha": 0.05}, {"alpha": 0.1}, {"alpha": 0.2}, {"alpha": 0.5}],
        "chi_square": [{"radius": 0.1}, {"radius": 0.5}, {"radius": 1.0}, {"radius": 2.0}],
        "kl": [{"radius": 0.05}, {"radius": 0.1}, {"radius": 0.5}, {"radius": 1.0}],
        "wasserstein": [{"radius": 0.01}, {"radius": 0.03}, {"radius": 0.1}, {"radius": 0.3}],
        "group_dro": [{"l2": 1e-5}, {"l2": 1e-4}, {"l2": 1e-3}, {"l2": 1e-2}],
        "iw_erm": [{"power": 0.25}, {"power": 0.5}, {"power": 0.75}, {"power": 1.0}],
        "source_mix": [{"real": 0.1}, {"real": 0.25}, {"real": 0.5}, {"real": 0.75}],
        "source_dro": [{"l2": 1e-5}, {"l2": 1e-4}, {"l2": 1e-3}, {"l2": 1e-2}],
        "generation_weighted": [{"gamma": 0.25}, {"gamma": 0.5}, {"gamma": 2.0}, {"gamma": 4.0}],
    }


# ----------------------------------------------------------------------------- training


def _objective(kind: str, params, batch, hyper, num_groups: int):
    losses, _ = _losses(params, batch)
    w = batch["weight"]
    if kind == "cvar":
        return rl.cvar(losses, hyper["alpha"], weights=w)
    if kind == "chi_square":
        return rl.chi_square(losses, hyper["radius"], weights=w)
    if kind == "kl":
        return rl.kl(losses, hyper["radius"], weights=w)
    if kind in ("group_dro", "source_dro"):  # full batch: the exact max over groups
        value, _ = objectives.worst_group(num_groups).loss(lambda p, b: _losses(p, b)[0], params, batch, (), None)
        return value
    if kind == "wasserstein":  # exact W1 (l2 features, labels fixed) for the binary logistic margin
        theta = params["w"][:, 1] - params["w"][:, 0]
        b = params["b"][1] - params["b"][0]
        return rl.wasserstein.linear_classification(
            theta, batch["x"], batch["y"], hyper["radius"], intercept=b, weights=w
        )
    return rl.erm(losses, weights=w)


@functools.cache
def _trainer(kind: str, num_classes: int, num_groups: int, steps: int):
    opt = optax.adam(0.05)

    def train(batch, hyper):
        d = batch["x"].shape[1]
        params = {"w": jnp.zeros((d, num_classes)), "b": jnp.zeros(num_classes)}
        l2 = hyper.get("l2", L2)

        def value(params):
            return _objective(kind, params, batch, hyper, num_groups) + 0.5 * l2 * jnp.sum(params["w"] ** 2)

        def step(carry, _):
            params, state = carry
            v, g = jax.value_and_grad(value)(params)
            updates, state = opt.update(g, state, params)
            return (optax.apply_updates(params, updates), state), v

        (params, _), values = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return params, values[-1]

    return jax.jit(train)


def _losses(params, split):
    logits = jnp.asarray(split["x"]) @ params["w"] + params["b"][None, :]
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(split["y"])), logits


def make_fit(num_classes: int, num_groups: int, steps: int, ratio: np.ndarray | None):
    """``fit(method, hyper, train, seed)`` for the protocol: weights by method, then the jitted trainer."""

    def fit(method, hyper, train, seed):
        kind = KIND[method.name]
        n = len(train["y"])
        weight = np.ones(n)
        group = train["group"]
        if kind == "iw_erm":
            weight = importance.transform_weights(ratio, power=hyper["power"])
        elif kind == "source_mix":
            weight = importance.source_weights(
                (train["source"] > 0).astype(np.int32), [hyper["real"], 1 - hyper["real"]]
            )
        elif kind == "generation_weighted":
            gen = train["source"] - train["source"].min()
            weight = importance.source_weights(gen, hyper["gamma"] ** np.arange(gen.max() + 1))
        if kind == "source_dro":
            group = (train["source"] > 0).astype(np.int32)
        batch = {
            "x": jnp.asarray(train["x"]),
            "y": jnp.asarray(train["y"]),
            "group": jnp.asarray(group),
            "weight": jnp.asarray(weight, jnp.float32),
        }
        hyper_arrays = {k: jnp.asarray(v, jnp.float32) for k, v in hyper.items()}
        ng = 2 if kind == "source_dro" else num_groups
        params, final = _trainer(kind, num_classes, ng, steps)(batch, hyper_arrays)
        if not np.isfinite(float(final)):
            raise FloatingPointError(f"{method.name} {hyper}: non-finite objective after training.")
        extra = {}
        if "flipped" in train and kind in WEIGHTS:
            losses, _ = _losses(params, train)
            q = np.asarray(WEIGHTS[kind](losses, hyper))
            extra["mass_on_flipped"] = float(q[train["flipped"]].sum())
        return {"params": params, "extra": extra}

    return fit


WEIGHTS = {
    "erm": lambda losses, h: rl.erm_weights(losses),
    "cvar": lambda losses, h: rl.cvar_weights(losses, h["alpha"]),
    "chi_square": lambda losses, h: rl.chi_square_weights(losses, h["radius"]),
    "kl": lambda losses, h: rl.kl_weights(losses, h["radius"]),
}


def evaluate(model, split):
    losses, logits = _losses(model["params"], split)
    correct = np.asarray(jnp.argmax(logits, -1)) == split["y"]
    losses = np.asarray(losses)
    groups = split["group"]
    present = np.unique(groups)
    return {
        "accuracy": float(correct.mean()),
        "loss": float(losses.mean()),
        "worst_group_accuracy": float(min(correct[groups == g].mean() for g in present)),
        "worst_group_loss": float(max(losses[groups == g].mean() for g in present)),
    }


# ----------------------------------------------------------------------------- scenarios

KIND = {name: name for name in grids(True)} | {"erm_synthetic": "erm", "erm_real": "erm"}


def _concat(a: dict, b: dict) -> dict:
    return {k: np.concatenate([a[k], b[k]]) for k in a if k in b}


def methods_for(scenario, quick: bool, num_real: int) -> list[benchmark.Method]:
    g = grids(quick)
    names = ["erm", "cvar", "chi_square", "kl"]
    if scenario.num_classes == 2:
        names.append("wasserstein")
    if scenario.name != "model_collapse":
        names.append("group_dro")
    if num_real > 0:
        names += ["iw_erm", "source_mix", "source_dro"]
    if scenario.name == "model_collapse":
        names.append("generation_weighted")
    out = [benchmark.Method(n, g[n]) for n in names]
    out.append(benchmark.Method("erm_synthetic", g["erm"], "synthetic"))
    out.append(benchmark.Method("erm_real", g["erm"], "real_full_train"))
    return out


def _splits(scenario):
    # Each row carries its provenance (index of the real row, -1 if generated): compare's leakage check hashes it,
    # because Adult has genuine duplicate feature rows (different people) across its train and test files.
    s = {k: dict(v, row_id=scenario.info["row_ids"][k]) for k, v in scenario.splits.items()}
    train = _concat(s["synthetic"], s["real_train"]) if len(s["real_train"]["y"]) else dict(s["synthetic"])
    synthetic = dict(s["synthetic"])
    if "flipped" in scenario.info:
        flipped = np.asarray(scenario.info["flipped"], bool)
        synthetic["flipped"] = flipped
        train["flipped"] = np.concatenate([flipped, np.zeros(len(train["y"]) - len(flipped), bool)])
    return {
        "train": train,
        "synthetic": synthetic,
        "real_full_train": s["real_full_train"],
        "val": s["real_val"],
        "test": s["real_test"],
    }


def _ratio(splits, seed):
    """p_real / p_train at the training points, from a calibrated logistic classifier (real_train vs train)."""
    real = splits["train"]["x"][splits["train"]["source"] == 0]
    est = importance.ProbabilisticClassifier("logistic", l2=(1e-3, 1e-1), seed=seed).fit(real, splits["train"]["x"])
    w = est.weights(splits["train"]["x"])
    return w, importance.weight_diagnostics(w, warn_below=0.0)


class _Bar:
    """A one-line progress bar on stderr: ``name [#####.....] k/n seeds·variants  elapsed``."""

    def __init__(self, name: str, total: int, enabled: bool):
        self.name, self.total, self.done, self.enabled, self.t0 = name, total, 0, enabled, time.perf_counter()
        self.step(0)

    def step(self, k: int = 1):
        self.done += k
        if self.enabled:
            filled = int(30 * self.done / max(self.total, 1))
            sys.stderr.write(
                f"\r{self.name:28s} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} "
                f"{time.perf_counter() - self.t0:5.0f} s"
            )
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


def run_scenario(
    name: str, seeds: Sequence[int], quick: bool, steps: int, verbose: bool = True, small_data: bool | None = None
) -> dict:
    generator, params, metric, maximize = RUNS[name]
    all_results, generations, diagnostics = [], [], {}
    bar = None
    for seed in seeds:
        scenario = SCENARIOS[generator](seed, quick if small_data is None else small_data, **params)
        variants = [(None, scenario)]
        if generator == "model_collapse":
            total = scenario.info["generations"]
            # Generation counts to train on: first, middle, last (quick) or a spread of five (full).
            picks = (1, (total + 1) // 2, total) if quick else (1, 2, round(0.4 * total), round(0.7 * total), total)
            gens = sorted({g for g in picks if 1 <= g <= total})
            variants = [(g, take_generations(scenario, g)) for g in gens]
        if bar is None:
            bar = _Bar(name, len(seeds) * len(variants), verbose)
        for gen, sc in variants:
            splits = _splits(sc)
            num_real = int(np.sum(splits["train"]["source"] == 0))
            ratio = None
            if num_real > 0:
                ratio, diag = _ratio(splits, seed)
                diagnostics.setdefault("ess_fraction", []).append(diag.ess_fraction)
            fit = make_fit(sc.num_classes, max(sc.num_groups, 1), steps, ratio)
            methods = methods_for(sc, quick, num_real)
            res = benchmark.compare(
                methods, fit, evaluate, splits, select=metric, seeds=[seed], maximize=maximize, leakage_keys="row_id"
            )
            if gen is None:
                all_results += res
            else:
                generations += [(gen, r) for r in res]
                if gen == scenario.info["generations"]:
                    all_results += res
            bar.step()
    bar.close()
    return {
        "scenario": name,
        "parameters": params,
        "prediction": scenario.prediction,
        "metric": metric,
        "maximize": maximize,
        "results": [r._asdict() for r in all_results],
        "generations": [{"generation": g, **r._asdict()} for g, r in generations],
        "diagnostics": diagnostics,
    }


def summary_rows(out: dict) -> list[dict]:
    results = [benchmark.Result(**r) for r in out["results"]]
    err = (lambda m: 1.0 - m) if out["maximize"] else (lambda m: m)
    rows = benchmark.summarize(
        results, out["metric"], baseline="erm", floor="erm_synthetic", ceiling="erm_real", error=err
    )
    flips = {}
    for r in results:
        if "mass_on_flipped" in r.extra:
            flips.setdefault(r.method, []).append(r.extra["mass_on_flipped"])
    for row in rows:
        mine = [r.test for r in results if r.method == row["method"]]
        row["accuracy"] = float(np.mean([t["accuracy"] for t in mine]))
        row["worst_group"] = float(np.mean([t["worst_group_accuracy"] for t in mine]))
        if row["method"] in flips:
            row["mass_on_flipped"] = float(np.mean(flips[row["method"]]))
    return rows


def report(outputs: list[dict], quick: bool, seconds: float, data_size: str = "", steps: int = 0) -> str:
    lines = [
        f"# Synthetic-to-real gap: {'quick' if quick else 'full'} run",
        "",
        f"{len({r['seed'] for r in outputs[0]['results']})} seeds, {'small' if quick else 'full'} grids, "
        f"{data_size} data sizes, {steps} Adam steps per fit; "
        f"{seconds:.0f} s on {os.cpu_count()} CPU cores; jax {jax.__version__}.",
        "",
    ]
    summaries = [summary_rows(o) for o in outputs]
    # At a glance: gap closed per scenario (rows) and method (columns).
    rows_by = {o["scenario"]: {r["method"]: r for r in rows} for o, rows in zip(outputs, summaries, strict=True)}
    methods = [m for m in dict.fromkeys(m for rows in rows_by.values() for m in rows) if m not in ("erm_synthetic",)]
    lines += ["## Gap closed at a glance", ""]
    lines += [
        "Fraction of the floor-to-ceiling gap closed on each scenario's primary metric (seed means; "
        "blank: method not applicable; –: floor and ceiling not distinguishable, no gap to close).",
        "",
    ]
    glance = [
        {"scenario": name, **{m: rows[m]["gap_closed"] if m in rows else "" for m in methods}}
        for name, rows in rows_by.items()
    ]
    lines += [benchmark.to_markdown(glance, ["scenario", *methods], digits=2), ""]
    for out, rows in zip(outputs, summaries, strict=True):
        lines += [f"## {out['scenario']}", "", f"Prediction: {out['prediction']}", ""]
        if out["parameters"]:
            lines += [f"Scenario parameters: `{out['parameters']}`.", ""]
        direction = "higher" if out["maximize"] else "lower"
        lines += [f"Primary metric: test `{out['metric']}` ({direction} is better), mean ± 95% interval.", ""]
        cols = ["method", "n_seeds", "mean", "ci95", "diff", "diff_ci95", "gap_closed", "accuracy", "worst_group"]
        if any("mass_on_flipped" in r for r in rows):
            cols.append("mass_on_flipped")
        lines += [benchmark.to_markdown(rows, cols), ""]
        if out["diagnostics"].get("ess_fraction"):
            ess = out["diagnostics"]["ess_fraction"]
            lines += [f"Importance weights: ESS/n = {np.mean(ess):.3f} (mean over seeds).", ""]
    return "\n".join(lines)


def plots(outputs: list[dict], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    # Gap closed per objective per scenario.
    fig, ax = plt.subplots(figsize=(11, 4.5))
    names = [o["scenario"] for o in outputs]
    rows_by = [{r["method"]: r for r in summary_rows(o)} for o in outputs]
    methods = sorted({m for rows in rows_by for m in rows} - {"erm_synthetic", "erm_real"})
    width = 0.8 / max(len(methods), 1)
    for j, m in enumerate(methods):
        vals = [rows[m]["gap_closed"] if m in rows else np.nan for rows in rows_by]
        # A gap barely beyond the noise gives large ratios; clip for readability (the report
        # has the exact numbers) and mark clipped bars.
        xs = np.arange(len(names)) + j * width
        shown = np.clip(vals, -1.0, 2.0)
        ax.bar(xs, shown, width, label=m)
        clipped = np.isfinite(vals) & (np.asarray(vals) != shown)
        ax.scatter(xs[clipped], shown[clipped], marker="x", color="k", s=12)
    ax.axhline(0, color="k", lw=0.5)
    ax.axhline(1, color="k", lw=0.5, ls=":")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=25, ha="right")
    ax.set_ylabel("gap closed (clipped to [-1, 2]; x = clipped)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    files.append(os.path.join(out_dir, "gap_closed.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    # Worst-group against average accuracy.
    fig, ax = plt.subplots(figsize=(6, 5))
    for o, rows in zip(outputs, rows_by, strict=True):
        for m, row in rows.items():
            ax.scatter(row["accuracy"], row["worst_group"], s=12)
            ax.annotate(f"{o['scenario'][:6]}:{m}", (row["accuracy"], row["worst_group"]), fontsize=5)
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("worst-group test accuracy")
    fig.tight_layout()
    files.append(os.path.join(out_dir, "worst_vs_average.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    # Model collapse: real-test loss against the number of generations.
    for o in outputs:
        if not o["generations"]:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in sorted({r["method"] for r in o["generations"]}):
            gens = sorted({r["generation"] for r in o["generations"] if r["method"] == m})
            vals = [
                np.mean([r["test"]["loss"] for r in o["generations"] if r["method"] == m and r["generation"] == g])
                for g in gens
            ]
            ax.plot(gens, vals, marker="o", label=m)
        ax.set_xlabel("generations of synthetic data used")
        ax.set_ylabel("real-test loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(os.path.join(out_dir, f"{o['scenario']}.png"))
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


def rebuild(out_dir: str, plot: bool = True) -> str:
    """Rewrites ``report.md`` (and the plots) of a finished run from its ``results.json``."""
    with open(os.path.join(out_dir, "results.json")) as f:
        data = json.load(f)
    text = report(data["scenarios"], data["quick"], data.get("seconds", float("nan")), data["data_size"], data["steps"])
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text + "\n")
    if plot:
        plots(data["scenarios"], out_dir)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks run", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 seeds, small grids and data (default)")
    mode.add_argument("--full", action="store_true", help=">= 5 seeds, full grids and data")
    parser.add_argument("--scenario", action="append", choices=sorted(RUNS), help="run only these")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps per fit")
    parser.add_argument("--out", default="benchmark-results", help="output directory")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--data-size", choices=("quick", "full"), default=None, help="scenario data sizes (default: the run's mode)"
    )
    args = parser.parse_args(argv)
    quick = not args.full
    seeds = list(range(args.seeds or (2 if quick else 5)))
    steps = args.steps or (200 if quick else 400)
    names = args.scenario or [n for n in RUNS if not (quick and n in FULL_ONLY)]
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    outputs = []
    for name in names:
        small = None if args.data_size is None else args.data_size == "quick"
        outputs.append(run_scenario(name, seeds, quick, steps, verbose=not args.quiet, small_data=small))
    seconds = time.perf_counter() - start
    text = report(outputs, quick, seconds, args.data_size or ("quick" if quick else "full"), steps)
    meta = {"quick": quick, "data_size": args.data_size or ("quick" if quick else "full"), "seeds": seeds}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({**meta, "steps": steps, "seconds": seconds, "scenarios": outputs}, f, indent=1, default=float)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text + "\n")
    if not args.no_plots:
        plots(outputs, args.out)
    print(text)
    print(f"\nWrote {args.out}/report.md, results.json" + ("" if args.no_plots else " and plots"), file=sys.stderr)
    return 0
