"""The synthetic-to-real gap suite: every scenario, two learners, every method, two selection rules.

    python -m benchmarks run --quick                        # the README's main job: 2 seeds, small grids
    python -m benchmarks run --full --out DIR               # >= 5 seeds, full grids, sizes and the MLP budget
    python -m benchmarks run --full --part 2/6 --out DIR2   # the full run in pieces (see --list-parts)
    python -m benchmarks merge DIR DIR1 DIR2 ...            # one results.json from the pieces
    python -m benchmarks report DIR [--docs]                # rebuild report.md (and docs/benchmarks.md)

Protocol (``robustlearn.benchmark.compare``). For each scenario variant and seed the data are drawn anew.
Every method, ERM and the floor and ceiling included, trains every configuration of its grid (the same
number for every method; ``radius_from_data``, whose radius comes from the data, has one) with each learner:
the linear model by ``robustlearn.train.fit_linear`` (``radius_from_data``: ``calibrate.fit_robust``), the MLP by
``robustlearn.train.Trainer`` (minibatches, weight decay, early stopping on the selection split). Each
configuration is trained once; two selection rules pick one configuration per method:

- (a) ``real_val``: the small real validation split (tuning on real data, as DRO papers do);
- (b) ``synthetic_val``: held-out synthetic data only, no real data for selection.

The chosen configuration is evaluated once on ``real_test``. The floor is ERM on the synthetic rows only,
the ceiling ERM on all real training rows (tuned on real validation data under both rules). The suite has
no training loop of its own (``tests/test_gap_suite.py`` checks it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from benchmarks import gap_learners as L
from benchmarks import gap_methods as M
from benchmarks.scenarios import SCENARIOS, VARIANTS, take_generations
from robustlearn import benchmark, importance
from robustlearn import contamination as rc

RULES = {"real_val": "(a) real validation", "synthetic_val": "(b) synthetic validation (no real data)"}
LEARNERS = ("linear", "mlp")
# The quick run: one variant of each scenario (the README's main job must stay short); the full run: all.
QUICK_VARIANTS = (
    "mode_dropping",
    "copula_adult",
    "label_noise_30",
    "colored_mnist",
    "sim_to_real_digits_50_real",
    "vae_digits",
    "support_cut",
    "model_collapse_mix",
)
CONTAMINATION = "recursive_contamination"


@dataclasses.dataclass
class Config:
    quick: bool
    seeds: tuple[int, ...]
    learners: tuple[str, ...]
    small_data: bool
    mlp: L.MLPConfig
    generation_picks: str  # "ends" (first and last) or "spread" (five)
    verbose: bool = True
    methods: tuple[str, ...] | None = None  # a subset of the methods (the floor and ceiling always run)

    @property
    def shapes(self) -> L.Shapes:
        return L.Shapes(4096, 128) if self.quick else L.Shapes(None, None)


def make_config(quick: bool, seeds: int | None = None, learners=None, data_size: str | None = None, **mlp) -> Config:
    base = L.MLPConfig(hidden=64, batch_size=256, max_epochs=10, patience=3) if quick else L.MLPConfig()
    return Config(
        quick=quick,
        seeds=tuple(range(seeds or (2 if quick else 5))),
        learners=tuple(learners or LEARNERS),
        small_data=quick if data_size is None else data_size == "quick",
        mlp=base._replace(**{k: v for k, v in mlp.items() if v is not None}),
        generation_picks="ends" if quick else "spread",
    )


# ------------------------------------------------------------------------------------------------ contexts


def _concat(a: dict, b: dict) -> dict:
    return {k: np.concatenate([a[k], b[k]]) for k in a if k in b}


class Context:
    """One draw of a scenario (one seed, one number of generations): its splits and per-draw estimates."""

    def __init__(self, variant: str, scenario, seed: int, generation: int | None):
        self.variant, self.scenario, self.seed, self.generation = variant, scenario, seed, generation
        s = {k: dict(v, row_id=scenario.info["row_ids"][k]) for k, v in scenario.splits.items()}
        self.num_real = len(s["real_train"]["y"])
        train = _concat(s["synthetic"], s["real_train"]) if self.num_real else dict(s["synthetic"])
        if "flipped" in scenario.info:
            flipped = np.asarray(scenario.info["flipped"], bool)
            train["flipped"] = np.concatenate([flipped, np.zeros(len(train["y"]) - len(flipped), bool)])
        self.splits = {
            "train": train,
            "synthetic": s["synthetic"],
            "real_full_train": s["real_full_train"],
            "real_val": s["real_val"],
            "synthetic_val": s["synthetic_val"],
            "test": s["real_test"],
        }
        self.num_classes = scenario.num_classes
        self.num_groups = scenario.num_groups
        self.metric, self.maximize = scenario.info["primary_metric"]
        self.generations = scenario.name == "model_collapse"
        self.alpha_known = scenario.info.get("alpha") if self.generations else None
        self.alpha_estimate = self._estimate_alpha() if self.generations else None
        self.diagnostics: dict = {}
        if self.num_real:
            self._importance_ratio()

    def _estimate_alpha(self) -> dict:
        """alpha from the per-class round means (the learner's view: deployed model = ERM on earlier rounds)."""
        syn = self.splits["synthetic"]
        t = syn["source"] - 1
        rounds = int(t.max()) + 1
        if rounds < 2:
            return {"alpha": 0.0, "low": 0.0, "high": 1.0, "rounds": rounds}
        x, y = syn["x"].astype(np.float64), syn["y"]
        classes = range(self.num_classes)

        def class_means(mask):
            return np.concatenate([x[mask & (y == c)].mean(0) for c in classes])

        means = np.stack([class_means(t == r) for r in range(rounds)])
        deployed = np.stack([class_means(t <= r) for r in range(rounds - 1)])
        keep = means.std(0) > 1e-6  # coordinates constant over the rounds carry no information
        est = rc.estimate_alpha(means=means[:, keep], deployed=deployed[:, keep], counts=np.bincount(t))
        return {"alpha": float(est.alpha), "low": float(est.low), "high": float(est.high), "rounds": rounds}

    def _importance_ratio(self):
        train = self.splits["train"]
        real = train["x"][train["source"] == 0]
        est = importance.ProbabilisticClassifier("logistic", l2=(1e-3, 1e-1), seed=self.seed).fit(real, train["x"])
        w = est.weights(train["x"])
        train["ratio"] = w
        self.diagnostics["ess_fraction"] = float(importance.weight_diagnostics(w, warn_below=0.0).ess_fraction)


def generation_picks(total: int, cfg: Config) -> list[int]:
    """The numbers of generations a model-collapse scenario is trained on (first and last, or five spread)."""
    picks = (1, total) if cfg.generation_picks == "ends" else (1, 2, round(0.4 * total), round(0.7 * total), total)
    return sorted({p for p in picks if p >= 1})


def num_contexts(variant: str, cfg: Config) -> int:
    """Contexts per seed (one, or one per picked number of generations): the progress display's step count."""
    name, params = VARIANTS[variant]
    if name != "model_collapse":
        return 1
    return len(generation_picks(params.get("generations") or (5 if cfg.small_data else 10), cfg))


def contexts(variant: str, seed: int, cfg: Config) -> list[Context]:
    name, params = VARIANTS[variant]
    scenario = SCENARIOS[name](seed, cfg.small_data, **params)
    if name != "model_collapse":
        return [Context(variant, scenario, seed, None)]
    picks = generation_picks(scenario.info["generations"], cfg)
    return [Context(variant, take_generations(scenario, g), seed, g) for g in picks]


# ----------------------------------------------------------------------------------------------- training


def training_data(spec: M.Spec, hyper: dict, train: dict, ctx: Context) -> L.Data:
    n = len(train["y"])
    weight = np.ones(n) if spec.weights is None else np.asarray(spec.weights(train, hyper, ctx), np.float64)
    if spec.groups == "source":
        group = (train["source"] > 0).astype(np.int32)
    else:
        group = np.asarray(train["group"], np.int32)
    return L.Data(train["x"], train["y"], weight, group)


_WORST_CASE = {"erm": None, "cvar": ("cvar_weights", "alpha"), "chi_square": ("chi_square_weights", "radius"),
               "kl": ("kl_weights", "radius")}  # fmt: skip


def _mass_on_flipped(logits: np.ndarray, train: dict, spec: M.Spec, hyper: dict) -> float | None:
    """The share of the worst-case distribution's mass on the flipped rows, at the training losses."""
    if spec.name not in _WORST_CASE or spec.weights is not None:
        return None
    import robustlearn as rl

    losses = L.per_example_losses(logits, train["y"])
    if _WORST_CASE[spec.name] is None:
        q = np.full(len(losses), 1.0 / len(losses))
    else:
        fn, key = _WORST_CASE[spec.name]
        q = np.asarray(getattr(rl, fn)(losses.astype(np.float32), hyper[key]), np.float64)
    return float(q[train["flipped"]].sum())


class Fitter:
    """``fit`` and ``evaluate`` for ``benchmark.compare``; each configuration is trained once for both rules."""

    def __init__(self, ctx: Context, learner: str, cfg: Config):
        self.ctx, self.learner, self.cfg = ctx, learner, cfg
        self.rule = "real_val"
        self.cache: dict = {}
        self.fits = 0
        self.failures: list[str] = []

    def _train(self, spec: M.Spec, hyper: dict, train: dict, seed: int):
        ctx, cfg = self.ctx, self.cfg
        data = training_data(spec, hyper, train, ctx)
        self.fits += 1
        try:
            if spec.name == "radius_from_data":  # calibrate.fit_robust: one fit_linear, radius from real_train
                return L.fit_radius_from_data(hyper, train, ctx.num_classes, ctx.seed)
            if self.learner == "linear":
                return L.fit_linear_model(spec.kind, hyper, data, ctx.num_classes, cfg.shapes)
            selection = {r: ctx.splits[r] for r in RULES}
            groups = 2 if spec.groups == "source" else max(ctx.num_groups, 1)
            return L.fit_mlp_model(spec.kind, hyper, data, ctx.num_classes, groups, selection, ctx.metric,
                                   ctx.maximize, seed, cfg.mlp, cfg.shapes)  # fmt: skip
        except FloatingPointError as e:
            self.failures.append(f"{spec.name} {hyper}: {e}")
            return None

    def logits(self, model, x) -> np.ndarray:
        if model is None:
            return np.full((len(x), self.ctx.num_classes), np.nan)
        if self.learner == "linear":
            return model.logits(x)
        return model.logits(x, self.rule, self.cfg.shapes)

    def fit(self, method: benchmark.Method, hyper: dict, train: dict, seed: int):
        spec = M.SPECS[method.name]
        key = (method.name, tuple(sorted(hyper.items())), seed)
        if key not in self.cache:
            self.cache[key] = self._train(spec, hyper, train, seed)
        model = self.cache[key]
        extra = {}
        if "flipped" in train:
            mass = _mass_on_flipped(self.logits(model, train["x"]), train, spec, hyper)
            if mass is not None:
                extra["mass_on_flipped"] = mass
        if isinstance(model, L.CertifiedLinearModel):  # the certificate against the real test loss
            test = self.ctx.splits["test"]
            logits = model.logits(test["x"])
            loss, bound = float(L.per_example_losses(logits, test["y"]).mean()), model.record["bound"]
            extra.update(model.record, real_test_loss=loss, covered=bool(loss <= bound + L.COVER_RTOL * abs(bound)),
                         tightness=bound - loss, logit_sd=float(np.max(np.std(logits, axis=0))))  # fmt: skip
        if self.learner == "mlp" and model is not None:
            extra["best_epoch"] = model.best_epoch[self.rule]
            extra["epochs"] = model.epochs
        return {"model": model, "extra": extra}

    def evaluate(self, fitted, split) -> dict:
        return L.classification_metrics(self.logits(fitted["model"], split["x"]), split)


def run_context(ctx: Context, learner: str, cfg: Config) -> tuple[list[dict], dict]:
    """Both selection rules for one context and learner: result rows and the methods left out (with why)."""
    names, skipped = [], {}
    for name, spec in M.SPECS.items():
        if cfg.methods is not None and name not in cfg.methods and name not in ("erm", *M.REFERENCES):
            continue
        ok, why = M.applicable(spec, learner, ctx)
        if ok:
            names.append(name)
        else:
            skipped[name] = why
    fitter = Fitter(ctx, learner, cfg)
    rows = []
    for rule in RULES:
        fitter.rule = rule
        chosen = [n for n in names if not (rule != "real_val" and n == "erm_real")]  # the ceiling: rule (a) only
        methods = [benchmark.Method(n, M.grid(M.SPECS[n], learner, cfg.quick), M.SPECS[n].train_split) for n in chosen]
        splits = {k: ctx.splits[k] for k in ("train", "synthetic", "real_full_train", "test")}
        splits["val"] = ctx.splits[rule]
        results = benchmark.compare(
            methods,
            fitter.fit,
            fitter.evaluate,
            splits,
            select=ctx.metric,
            seeds=[ctx.seed],
            maximize=ctx.maximize,
            leakage_keys="row_id",
        )
        for r in results:
            rows.append({"learner": learner, "rule": rule, "generation": ctx.generation, **r._asdict()})
    info = {"skipped": skipped, "fits": fitter.fits, "failures": fitter.failures}
    return rows, info


# ----------------------------------------------------------------------------------------------- progress


class Progress:
    """One status line per step on stderr: rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.done, self.enabled = total, 0, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.width = 0

    def step(self, what: str):
        self.done += 1
        if not self.enabled:
            return
        line = f"[{self.done}/{self.total} {time.perf_counter() - self.t0:6.0f} s] {what}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------------------ variants


def _mean_quality(gens: list[dict]) -> dict | None:
    q = [g["quality"] for g in gens if g and "quality" in g]
    if not q:
        return None
    keys = ("c2st_auc", "c2st_auc_quadratic", "tstr_accuracy", "trtr_accuracy")
    out = {k: float(np.mean([x[k] for x in q])) for k in keys}
    out["train_seconds"] = float(np.mean([g["train_seconds"] for g in gens]))
    out["name"] = gens[0]["name"]
    return out


def run_variant(variant: str, cfg: Config, progress: Progress | None = None) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    rows, skipped, diagnostics, failures, generators = [], {}, {}, [], []
    fits = dict.fromkeys(cfg.learners, 0)  # configurations trained, per learner
    first = None
    for seed in cfg.seeds:
        for ctx in contexts(variant, seed, cfg):
            first = first or ctx
            generators.append(ctx.scenario.info.get("generator"))
            for k, v in ctx.diagnostics.items():
                diagnostics.setdefault(k, []).append(v)
            if ctx.alpha_estimate is not None:
                diagnostics.setdefault("alpha_estimate", []).append(
                    {"seed": seed, "generation": ctx.generation, **ctx.alpha_estimate}
                )
            for learner in cfg.learners:
                r, info = run_context(ctx, learner, cfg)
                rows += r
                skipped[learner] = info["skipped"]
                fits[learner] += info["fits"]
                failures += info["failures"]
                if progress is not None:
                    gen = "" if ctx.generation is None else f", {ctx.generation} generations"
                    progress.step(f"{variant} seed {seed}{gen} {learner}: {info['fits']} fits")
    sc = first.scenario
    return {
        "scenario": variant,
        "generator": sc.name,
        "parameters": VARIANTS[variant][1],
        "prediction": sc.prediction,
        "negative_control": sc.info["negative_control"] or "",
        "training_rows": sc.info["training_rows"],
        "metric": first.metric,
        "maximize": first.maximize,
        "num_classes": sc.num_classes,
        "num_groups": sc.num_groups,
        "num_real": first.num_real,
        "group_names": list(sc.info.get("group_names", [])),
        "alpha": first.alpha_known,
        "generations": sorted({r["generation"] for r in rows if r["generation"] is not None}),
        "seeds": list(cfg.seeds),
        "quality": _mean_quality([g for g in generators if g]),
        "skipped": skipped,
        "results": rows,
        "diagnostics": diagnostics,
        "fits": fits,
        "failures": failures,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }


def variant_list(cfg: Config) -> list[str]:
    return list(QUICK_VARIANTS) if cfg.quick else list(VARIANTS)


def parts(cfg: Config, count: int) -> list[list[str]]:
    """The full run's variants in ``count`` pieces (the contamination benchmark is the last piece of its own)."""
    names = variant_list(cfg)
    pieces = [names[i :: count - 1] for i in range(count - 1)] if count > 1 else [names]
    return [p for p in pieces if p] + ([[CONTAMINATION]] if count > 1 else [])


# ---------------------------------------------------------------------------------------------- contamination


def run_contamination(cfg: Config, out_dir: str, plots: bool) -> dict:
    """The recursive-contamination benchmark (benchmarks/contamination.py) as a part of the suite."""
    from benchmarks import contamination as bc

    start = time.perf_counter()
    if cfg.quick:  # the smallest configuration whose predictions are all defined: 1 seed, Adult, linear
        ccfg = bc.make_config(True, seeds=tuple(cfg.seeds[:1]), methods=bc.QUICK_SUITE_METHODS)
    else:
        ccfg = bc.make_config(False, seeds=tuple(cfg.seeds))
    data = bc.run_all(ccfg, verbose=cfg.verbose, parts=("pac", "means") if cfg.quick else ("pac", "means", "alpha"))
    data["seconds"] = time.perf_counter() - start
    bc.write(data, out_dir, plot=plots)
    return {
        "config": data["config"],
        "verdicts": data["verdicts"],
        "mean_verdicts": data["mean_verdicts"],
        "seconds": data["seconds"],
        "files": ["contamination.md", "contamination.json"],
    }


# -------------------------------------------------------------------------------------------------- main


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from benchmarks import gap_report

    parser = argparse.ArgumentParser(prog="python -m benchmarks run", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="2 seeds, 2 configurations per method (radius_from_data: 1) (default)"
    )
    mode.add_argument("--full", action="store_true", help=">= 5 seeds, 6 configurations per method, full sizes")
    choices = sorted([*VARIANTS, CONTAMINATION])
    parser.add_argument("--scenario", action="append", choices=choices, metavar="NAME",
                        help=f"run only these (repeatable): {', '.join(choices)}")  # fmt: skip
    parser.add_argument("--part", default=None, metavar="I/K", help="run piece I of K (see --list-parts)")
    parser.add_argument("--list-parts", type=int, default=None, metavar="K", help="print the K pieces and exit")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 2 quick, 5 full)")
    parser.add_argument("--learners", default=None, help="comma-separated subset of linear,mlp")
    parser.add_argument("--epochs", type=int, default=None, help="MLP epochs at most")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods (ERM, the floor and "
                        "the ceiling always run); for debugging, the report is then incomplete")  # fmt: skip
    parser.add_argument("--data-size", choices=("quick", "full"), default=None, help="scenario sizes (default: mode)")
    parser.add_argument("--out", default="benchmark-results", help="output directory")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-contamination", action="store_true", help="leave the contamination benchmark out")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    quick = not args.full
    learners = None if args.learners is None else tuple(x for x in args.learners.split(",") if x)
    if learners and not set(learners) <= set(LEARNERS):
        parser.error(f"--learners must be a subset of {LEARNERS}")
    cfg = make_config(quick, args.seeds, learners, args.data_size, max_epochs=args.epochs)
    cfg.verbose = not args.quiet
    if args.methods:
        cfg.methods = tuple(x for x in args.methods.split(",") if x)
        unknown = sorted(set(cfg.methods) - set(M.SPECS))
        if unknown:
            parser.error(f"unknown methods {unknown}; choose from {', '.join(M.SPECS)}")
    if args.list_parts:
        for i, p in enumerate(parts(cfg, args.list_parts), 1):
            print(f"{i}/{args.list_parts}: {' '.join(p)}")
        return 0
    names = variant_list(cfg) + ([] if args.no_contamination else [CONTAMINATION])
    if args.scenario:
        names = list(dict.fromkeys(args.scenario))
    if args.part:
        try:
            i, k = (int(v) for v in args.part.split("/"))
            names = parts(cfg, k)[i - 1]
        except (ValueError, IndexError):
            parser.error(f"--part must be I/K with 1 <= I <= K; got {args.part!r}")
    os.makedirs(args.out, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    variants = [n for n in names if n != CONTAMINATION]
    steps = sum(num_contexts(v, cfg) for v in variants) * len(cfg.learners) * len(cfg.seeds)
    progress = Progress(steps, enabled=cfg.verbose)
    outputs = [run_variant(v, cfg, progress) for v in variants]
    progress.close()
    contamination = run_contamination(cfg, args.out, not args.no_plots) if CONTAMINATION in names else None
    data = {
        "version": 2,
        "quick": quick,
        "seeds": list(cfg.seeds),
        "learners": list(cfg.learners),
        "methods": None if cfg.methods is None else list(cfg.methods),
        "data_size": "quick" if cfg.small_data else "full",
        "mlp": cfg.mlp._asdict(),
        "shapes": cfg.shapes.describe(),
        "grids": M.grid_table(quick),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "machine": machine(),
        "command": "python -m benchmarks run " + " ".join(sys.argv[1:] if argv is None else argv),
        "scenarios": outputs,
        "contamination": contamination,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(data, f, indent=1, default=_json_default)
    text = gap_report.write(args.out, data, plots=not args.no_plots)
    print(text)
    print(f"\nWrote {args.out}/report.md, results.json" + ("" if args.no_plots else " and plots"), file=sys.stderr)
    return 0


def _json_default(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
