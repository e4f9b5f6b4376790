"""Recursive contamination (issue 12): the PAC protocol of Amin et al. (2026) on real data, and the mean check.

    python -m benchmarks contamination --quick                 # Adult, linear learner, 1 seed (the smoke run)
    python -m benchmarks contamination --full --out DIR        # 5 seeds, alpha in {0.3, 0.6, 0.9}, linear + MLP
    python -m benchmarks contamination --quick --learners mlp --datasets digits --alphas 0.9 --rounds 3

Protocol (``robustlearn.contamination.simulate_rounds``): the inputs are real (UCI Adult, d = 26; scikit-learn
digits, d = 64, 10 classes), standardized; a teacher f* of the learner's class (softmax regression, or the MLP)
is trained on ALL real rows, so the task is realizable. The rows are split once into a held-out test set, a
small clean set (labelled by f*, used only to estimate alpha) and the pool. Each of T rounds draws ``size``
fresh pool rows; each label is the previously deployed model's prediction with probability alpha, else f*'s;
round 1 is clean. Every method retrains from scratch after every round on the data it uses, through the
library (``fit_linear`` for the linear learner, ``Trainer`` for the MLP), padded with zero-weight rows to the
size of all T rounds so each method compiles once. The metric is the deployed model's error against f* on the
test inputs after each round; tables give the mean over seeds with a 95% t-interval. Methods:

- ``erm_pooled``: repeated ERM on all rounds (the paper's ERM); ``erm_latest``: ERM on the latest round;
- ``corrected``: ``objectives.contamination_corrected(alpha)`` on all rounds, alpha known;
- ``corrected_est``: the same with alpha estimated each round from the clean set (``estimate_alpha``), capped
  at 0.95;
- ``corrected_nn``: the per-class non-negative variant, alpha known;
- ``disagreement``: ``contamination.disagreement_learner`` (our reconstruction of the PU route), alpha known;
- ``group_dro``: worst round (``worst_group`` over rounds, full batch; ``group_dro`` for minibatch MLPs);
- ``cvar``: ``objectives.cvar(0.2)``.

The learners (corrected, disagreement) are our reconstruction from the paper's description, not its
pseudocode. The predictions below were written before the first run on real data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import robustlearn as rl
from robustlearn import contamination as rc
from robustlearn import objectives

METHODS = (
    "erm_pooled",
    "erm_latest",
    "corrected",
    "corrected_est",
    "corrected_nn",
    "disagreement",
    "group_dro",
    "cvar",
)

# The gap suite's quick run (python -m benchmarks run --quick) runs these only: the paper's ERM, the latest
# round, and our two reconstructions (predictions P1-P4, P7 and P9 are defined on them).
QUICK_SUITE_METHODS = ("erm_pooled", "erm_latest", "corrected", "disagreement")

# Stated before the first run on real data. ``r`` is a method's late improvement ratio err(T) / err(3)
# (mean over seeds); "plateau" means r >= 0.8 and "improves" r < 0.8 (1/sqrt(t) from t = 3 to 10 gives 0.55).
PREDICTIONS = {
    "P1": "Repeated ERM (erm_pooled) plateaus for alpha > 1/2: r >= 0.8 at alpha = 0.6 and 0.9 (the errors of the "
    "early models get a majority of their own labels in the region where they are wrong, the paper's stall).",
    "P2": "At alpha = 0.3 repeated ERM keeps learning: r < 0.8 (f* keeps the majority label everywhere).",
    "P3": "The corrected objective (alpha known) keeps improving at every alpha: r < 0.8 (unbiased for the clean "
    "risk, its variance shrinks with the pooled rounds, roughly like 1/sqrt(t)).",
    "P4": "Within T = 10 rounds the corrected objective has NOT caught up with repeated ERM at alpha = 0.9 (the "
    "corrected loss's variance grows like alpha / (1 - alpha), so each contaminated round is worth ~0.1 clean "
    "ones) nor at alpha = 0.3 (ERM does not stall there): err_ERM(T) <= err_corrected(T). No prediction for 0.6.",
    "P5": "The non-negative variant equals the corrected objective within 0.5 points at T for the linear learner "
    "(clipping rarely binds for a convex, l2-regularized model) and is no worse than it for the MLP.",
    "P6": "Alpha estimated from a clean set of 200 (Adult) / 100 (digits) rows costs at most 1 point of error at T "
    "against alpha known (linear learner).",
    "P7": "ERM on the latest round does not improve (r >= 0.8, fixed sample size) and is worse than repeated ERM "
    "at T for every alpha.",
    "P8": "Group DRO over rounds and CVaR do not remove the stall: r >= 0.8 at alpha = 0.6 and 0.9.",
    "P9": "The disagreement learner keeps improving at every alpha: r < 0.8.",
}

# The mean-estimation check (item 3), also stated before its first run.
MEAN_PREDICTIONS = {
    "M1": "The simulated Var(Y_t) * t of uniform ERM lies inside its 95% interval around Theorem 1's curve at >= 90% "
    "of the (alpha, t) points (about 5% misses expected by chance).",
    "M2": "Var * t of ERM grows without bound for alpha > 1/2 (ratio between the last t and t = 10 above 1.5 for "
    "alpha = 0.7, 0.9, 1.0) while the best linear unbiased estimator stays below 1 / (1 - alpha)^2 for alpha < 1.",
}


@dataclasses.dataclass
class Config:
    quick: bool
    datasets: tuple[str, ...]
    learners: tuple[str, ...]
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    rounds: int
    size: dict  # examples per round, per dataset
    clean: dict  # clean-set size, per dataset
    test: dict  # test-set size, per dataset
    methods: tuple[str, ...] = METHODS
    l2: float = 1e-3
    mlp_hidden: int = 32
    mlp_epochs: int = 60
    mlp_batches: int = 4  # minibatches per epoch (padded data / this = the batch size)
    mlp_lr: float = 3e-3
    mean_alphas: tuple[float, ...] = (0.2, 0.5, 0.7, 0.9, 1.0)
    mean_rounds: int = 1000
    mean_reps: int = 2000


def make_config(quick: bool, **over) -> Config:
    if quick:
        cfg = Config(
            quick=True,
            datasets=("adult",),
            learners=("linear",),
            alphas=(0.3, 0.9),
            seeds=(0,),
            rounds=10,
            size={"adult": 100, "digits": 60},
            clean={"adult": 200, "digits": 100},
            test={"adult": 2000, "digits": 500},
            mean_rounds=200,
            mean_reps=400,
        )
    else:
        cfg = Config(
            quick=False,
            datasets=("adult", "digits"),
            learners=("linear", "mlp"),
            alphas=(0.3, 0.6, 0.9),
            seeds=(0, 1, 2, 3, 4),
            rounds=10,
            size={"adult": 200, "digits": 100},
            clean={"adult": 200, "digits": 100},
            test={"adult": 5000, "digits": 500},
        )
    return dataclasses.replace(cfg, **{k: v for k, v in over.items() if v is not None})


# ----------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class Task:
    name: str
    x: np.ndarray  # all real rows, standardized, float32
    y_real: np.ndarray  # the real labels (used to train the teacher only)
    num_classes: int
    pool: np.ndarray
    test: np.ndarray
    clean: np.ndarray


def load_task(name: str, cfg: Config) -> Task:
    """Real inputs, standardized on all rows; a fixed split (test, clean, pool) independent of the seed."""
    from benchmarks.scenarios._common import standardizer

    if name == "adult":
        from benchmarks.scenarios._adult import load_adult

        data = load_adult()
        x, y, c = data.x, data.y.astype(np.int64), 2
    elif name == "digits":
        from benchmarks.scenarios.images import _digits

        x, y = _digits()
        c = 10
    else:
        raise ValueError(f"unknown dataset {name!r}; use 'adult' or 'digits'.")
    mean, scale = standardizer(x)
    x = ((x - mean) / scale).astype(np.float32)
    perm = np.random.default_rng(12345).permutation(len(x))
    n_test, n_clean = cfg.test[name], cfg.clean[name]
    test, clean, pool = perm[:n_test], perm[n_test : n_test + n_clean], perm[n_test + n_clean :]
    return Task(name, x, y, c, x[pool], x[test], x[clean])


# -------------------------------------------------------------------------------------- models


def _linear_scores(params):
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    return lambda x: np.asarray(x, np.float64) @ w + b


def mlp_apply(params, x):
    h = jax.nn.relu(x @ params["w1"] + params["b1"][None, :])
    return h @ params["w2"] + params["b2"][None, :]


def mlp_init(seed: int, d: int, hidden: int, c: int):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {
        "w1": jax.random.normal(k1, (d, hidden), jnp.float32) * np.sqrt(2.0 / d),
        "b1": jnp.zeros(hidden, jnp.float32),
        "w2": jax.random.normal(k2, (hidden, c), jnp.float32) * np.sqrt(1.0 / hidden),
        "b2": jnp.zeros(c, jnp.float32),
    }


_mlp_apply_jit = jax.jit(mlp_apply)


def _mlp_scores(params):
    return lambda x: np.asarray(_mlp_apply_jit(params, jnp.asarray(x, jnp.float32)))


class Trainers:
    """Trains through ``robustlearn.train.Trainer``: a new Trainer per fit (it compiles once per program
    structure, across instances, so a fit of a known structure costs no compilation)."""

    def __init__(self):
        self.fits = 0

    def fit(self, apply, params, objective, optimizer, data, *, epochs, batch_size, seed):
        self.fits += 1
        loss = optax.softmax_cross_entropy_with_integer_labels
        tr = rl.train.Trainer(
            apply, loss, objective, optimizer, params=params, batch_size=batch_size, seed=seed, verbose=False
        )
        tr.fit(data, epochs=epochs)
        return tr.params


def _pad(data: dict, size: int) -> dict:
    """Pads every column to ``size`` rows; padding rows get weight 0, previous -1, group 0."""
    n = len(data["y"])
    if n > size:
        raise ValueError(f"{n} rows do not fit the padded size {size}")
    out = {"weight": np.concatenate([np.ones(n, np.float32), np.zeros(size - n, np.float32)])}
    for k, v in data.items():
        v = np.asarray(v)
        fill = -1 if k == "previous" else 0
        pad = np.full((size - n,) + v.shape[1:], fill, v.dtype)
        out[k] = np.concatenate([v, pad])
    out["x"] = out["x"].astype(np.float32)
    out["y"] = out["y"].astype(np.int32)
    if "previous" in out:
        out["previous"] = out["previous"].astype(np.int32)
    if "group" in out:
        out["group"] = out["group"].astype(np.int32)
    return out


class LinearFitter:
    """Softmax regression (l2 on the weights) by ``fit_linear`` for any objective (extra batch columns too)."""

    def __init__(self, cfg: Config, size: int, trainers: Trainers):
        self.cfg, self.size = cfg, size
        self.paths: dict[str, int] = {"fit_linear": 0}

    def __call__(self, data, objective, num_classes, seed, key=""):
        d = _pad(data, self.size)
        x, y, w = d.pop("x"), d.pop("y"), d.pop("weight")
        columns = {k: d[k] for k in objective.requires}
        sol = rl.train.fit_linear(
            x,
            y,
            objective,
            loss="softmax",
            l2=self.cfg.l2,
            weights=w,
            num_classes=num_classes,
            columns=columns,
        )
        self.paths["fit_linear"] += 1
        return _linear_scores(sol.params)


class MLPFitter:
    """One-hidden-layer ReLU MLP by the Trainer (Adam, minibatches of the padded data)."""

    def __init__(self, cfg: Config, size: int, trainers: Trainers):
        self.cfg, self.size, self.trainers = cfg, size, trainers
        self.paths = {"Trainer": 0}

    def __call__(self, data, objective, num_classes, seed, key=""):
        d = _pad(data, self.size)
        x = d["x"]
        params0 = mlp_init(seed, x.shape[1], self.cfg.mlp_hidden, num_classes)
        batch = {k: d[k] for k in ("x", "y", "weight", *objective.requires)}
        params = self.trainers.fit(
            mlp_apply,
            params0,
            objective,
            optax.adam(self.cfg.mlp_lr),
            batch,
            epochs=self.cfg.mlp_epochs,
            batch_size=self.size // self.cfg.mlp_batches,
            seed=seed,
        )
        self.paths["Trainer"] += 1
        return _mlp_scores(params)


def train_teacher(task: Task, kind: str, cfg: Config, trainers: Trainers):
    """f*: the learner's class trained on all real rows with their real labels."""
    if kind == "linear":
        sol = rl.train.fit_linear(
            task.x, task.y_real, objectives.erm(), loss="softmax", l2=cfg.l2, num_classes=task.num_classes
        )
        scores = _linear_scores(sol.params)
    else:
        n = len(task.x)
        params = trainers.fit(
            mlp_apply,
            mlp_init(999, task.x.shape[1], cfg.mlp_hidden, task.num_classes),
            objectives.erm(),
            optax.adam(3e-3),
            {"x": task.x, "y": task.y_real.astype(np.int32)},
            epochs=max(20, int(200_000 / n)),
            batch_size=min(256, n),
            seed=999,
        )
        scores = _mlp_scores(params)
    return lambda x: np.argmax(scores(x), axis=-1).astype(np.int64)


# ------------------------------------------------------------------------------------- methods


def _keyed(fit, key):
    return lambda data, objective, num_classes, seed: fit(data, objective, num_classes, seed, key=key)


class AlphaFromCleanSet:
    """alpha(rounds): ``estimate_alpha`` from the contaminated rounds and the clean set, capped at ``cap``."""

    def __init__(self, x_clean, y_clean, cap=0.95):
        self.x_clean, self.y_clean, self.cap = x_clean, y_clean, cap
        self.history: list[dict] = []
        self._pred: dict = {}

    def __call__(self, rounds: rc.Rounds) -> float:
        ys, ps, cps = [], [], []
        for s in range(rounds.num_rounds):
            rows = rounds.round == s
            prev = rounds.previous[rows]
            if prev.min() < 0:
                continue
            model = rounds.models[s]
            if id(model) not in self._pred:
                self._pred[id(model)] = (model, model(self.x_clean))  # keep the model alive: ids stay unique
            ys.append(rounds.y[rows])
            ps.append(prev)
            cps.append(self._pred[id(model)][1])
        row = {"round": rounds.num_rounds, "alpha": 0.0, "low": 0.0, "high": 1.0}
        if ys:
            try:
                est = rc.estimate_alpha(labels=ys, previous=ps, clean_labels=self.y_clean, clean_previous=cps)
                row = {"round": rounds.num_rounds, "alpha": est.alpha, "low": est.low, "high": est.high}
            except ValueError:  # e.g. every previous model is right on the whole clean set
                pass
        self.history.append(row)
        return min(max(row["alpha"], 0.0), self.cap)


def make_learner(method: str, alpha: float, fit, task: Task, cfg: Config, estimator: AlphaFromCleanSet):
    c = task.num_classes
    fk = _keyed(fit, method)
    if method == "erm_pooled":
        return rc.pooled_learner(fk, objectives.erm(), num_classes=c)
    if method == "erm_latest":
        return rc.pooled_learner(fk, objectives.erm(), num_classes=c, latest_only=True)
    if method == "corrected":
        return rc.pooled_learner(fk, objectives.contamination_corrected(alpha, num_classes=c), num_classes=c)
    if method == "corrected_est":

        def objective(rounds):
            return objectives.contamination_corrected(estimator(rounds), num_classes=c)

        return rc.pooled_learner(fk, objective, num_classes=c)
    if method == "corrected_nn":
        obj = objectives.contamination_corrected(alpha, nonnegative=True, num_classes=c)
        return rc.pooled_learner(fk, obj, num_classes=c)
    if method == "disagreement":

        def fit_role(data, objective, num_classes, seed):
            role = "region" if num_classes == 2 and data["x"].shape[1] != task.x.shape[1] else "labels"
            return fit(data, objective, num_classes, seed, key=f"disagreement-{role}")

        return rc.disagreement_learner(fit_role, alpha, num_classes=c)
    if method == "group_dro":
        minibatch = isinstance(fit, MLPFitter)
        obj = objectives.group_dro(cfg.rounds) if minibatch else objectives.worst_group(cfg.rounds)
        return rc.pooled_learner(fk, obj, num_classes=c)
    if method == "cvar":
        return rc.pooled_learner(fk, objectives.cvar(0.2), num_classes=c)
    raise ValueError(f"unknown method {method!r}")


# ----------------------------------------------------------------------------------------- runs


def run_pac(cfg: Config, verbose: bool = True) -> dict:
    trainers = Trainers()
    out = {"errors": {}, "alpha_hat": {}, "paths": {}, "teacher_agreement": {}, "seconds": {}}
    for name in cfg.datasets:
        task = load_task(name, cfg)
        for kind in cfg.learners:
            start = time.perf_counter()
            teacher = train_teacher(task, kind, cfg, trainers)
            out["teacher_agreement"][f"{name}/{kind}"] = float(np.mean(teacher(task.x) == task.y_real))
            size = cfg.rounds * cfg.size[name]
            fit = LinearFitter(cfg, size, trainers) if kind == "linear" else MLPFitter(cfg, size, trainers)
            y_clean = teacher(task.clean)
            for alpha in cfg.alphas:
                for seed in cfg.seeds:
                    for method in cfg.methods:
                        t0 = time.perf_counter()
                        est = AlphaFromCleanSet(task.clean, y_clean)
                        learner = make_learner(method, alpha, fit, task, cfg, est)
                        sim = rc.simulate_rounds(
                            task.pool,
                            teacher,
                            learner,
                            alpha=alpha,
                            rounds=cfg.rounds,
                            size=cfg.size[name],
                            seed=seed,
                            test=task.test,
                        )
                        key = f"{name}/{kind}/{alpha}"
                        out["errors"].setdefault(key, {}).setdefault(method, []).append(sim.test_error.tolist())
                        if method == "corrected_est":
                            out["alpha_hat"].setdefault(key, []).append(est.history)
                        if verbose:
                            print(
                                f"  {key:<22} seed {seed} {method:<14} err(T) {sim.test_error[-1]:.3f}"
                                f"  ({time.perf_counter() - t0:.1f}s)",
                                file=sys.stderr,
                                flush=True,
                            )
            out["paths"][f"{name}/{kind}"] = dict(fit.paths)
            out["seconds"][f"{name}/{kind}"] = time.perf_counter() - start
    out["trainer_mode"] = "one Trainer per fit"
    return out


def run_means(cfg: Config) -> dict:
    """Var(Y_t) * t by simulation (d = 1, mu = 0, Sigma = 1), uniform ERM and the BLUE, with the formulas."""
    from scipy import stats

    ts = np.unique(np.round(np.geomspace(1, cfg.mean_rounds, 14)).astype(int))
    rows = []
    n = cfg.mean_reps
    lo_q, hi_q = stats.chi2.ppf(0.975, n), stats.chi2.ppf(0.025, n)
    for i, alpha in enumerate(cfg.mean_alphas):
        for j, (estimator, formula) in enumerate((("erm", rc.uniform_variance), ("blue", rc.blue_variance))):
            for k, t in enumerate(ts):
                # An independent simulation per point, so the points' checks are independent (one
                # simulation shared by all points would carry one draw of the first round's noise
                # into every point).
                sim = rc.simulate_means(alpha, int(t), dim=1, reps=n, estimator=estimator, seed=[7, i, j, k])
                s2 = float(np.mean(sim.estimates[:, -1, 0] ** 2))
                rows.append(
                    {
                        "alpha": alpha,
                        "estimator": estimator,
                        "t": int(t),
                        "var_t": s2 * t,
                        "low": n * s2 / lo_q * t,
                        "high": n * s2 / hi_q * t,
                        "formula": float(formula(alpha, int(t))) * t,
                    }
                )
    return {"rows": rows, "reps": n, "rounds": cfg.mean_rounds}


def _label_rounds(rng, alpha, rounds=5, size=300, n_clean=200):
    """f*(x) = [x > 0.5] on U(0, 1); round s copies f_{s-1}(x) = [x > theta_s] (|theta_s - 0.5| in [0.03, 0.2])."""
    xc = rng.random(n_clean)
    yc = (xc > 0.5).astype(int)
    ys, ps, cps, refs = [], [], [], []
    for _ in range(rounds):
        theta = 0.5 + rng.choice([-1, 1]) * rng.uniform(0.03, 0.2)
        x = rng.random(size)
        f_star, prev = (x > 0.5).astype(int), (x > theta).astype(int)
        ys.append(np.where(rng.random(size) < alpha, prev, f_star))
        ps.append(prev)
        cps.append((xc > theta).astype(int))
        refs.append(f_star)
    return ys, ps, yc, cps, refs


def run_alpha(cfg: Config) -> list[dict]:
    """Bias, spread and 95%-interval coverage of ``estimate_alpha`` in simulation."""
    sims_means, sims_labels = (50, 200) if cfg.quick else (1000, 2000)
    rows = []

    def summarize(kind, setting, alpha, est):
        a = np.array([e.alpha for e in est])
        cov = float(np.mean([e.low <= alpha <= e.high for e in est]))
        rows.append(
            {
                "kind": kind,
                "setting": setting,
                "alpha": alpha,
                "sims": len(est),
                "bias": float(a.mean() - alpha),
                "sd": float(a.std()),
                "coverage": cov,
                "coverage_se": math.sqrt(cov * (1 - cov) / len(est)),
                "width": float(np.mean([e.high - e.low for e in est])),
            }
        )

    for alpha, t, d, deployed in [
        (0.3, 20, 300, "erm"),
        (0.7, 20, 300, "erm"),
        (0.9, 20, 300, "erm"),
        (0.7, 10, 300, "erm"),
        (0.7, 20, 100, "erm"),
        (0.7, 20, 300, "blue"),
    ]:
        sim = rc.simulate_means(alpha, t, dim=d, reps=sims_means, estimator=deployed, seed=17)
        est = [rc.estimate_alpha(means=sim.means[r], deployed=sim.estimates[r, :-1]) for r in range(sims_means)]
        summarize("means", f"T={t}, d={d}, {deployed.upper()} deployed", alpha, est)
    for alpha in (0.3, 0.6, 0.9):
        rng = np.random.default_rng(int(1000 * alpha))
        est = []
        for _ in range(sims_labels):
            ys, ps, yc, cps, _ = _label_rounds(rng, alpha)
            est.append(rc.estimate_alpha(labels=ys, previous=ps, clean_labels=yc, clean_previous=cps))
        summarize("labels, clean set", "5 rounds of 300, clean set of 200", alpha, est)
    for alpha in (0.3, 0.9):
        rng = np.random.default_rng(7 + int(1000 * alpha))
        est = []
        for _ in range(sims_labels):
            ys, ps, _, _, refs = _label_rounds(rng, alpha)
            est.append(rc.estimate_alpha(labels=ys, previous=ps, reference=refs))
        summarize("labels, exact region", "5 rounds of 300, reference = f*", alpha, est)
    return rows


# --------------------------------------------------------------------------------- evaluation


def _t_interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and the 95% t half-width (NaN with one seed)."""
    from scipy import stats

    m = values.mean(0)
    k = values.shape[0]
    if k < 2:
        return m, np.full_like(m, np.nan)
    return m, stats.t.ppf(0.975, k - 1) * values.std(0, ddof=1) / math.sqrt(k)


def _ratio(errors: dict, method: str, late: int = 3) -> float:
    e = np.asarray(errors[method]).mean(0)
    return float(e[-1] / e[late - 1]) if e[late - 1] > 0 else float("nan")


def verdicts(pac: dict, cfg: Config) -> list[dict]:
    """Each prediction's verdict per (dataset, learner): True (held), False (failed), None (not run)."""
    out = []

    def add(pid, where, ok, detail):
        out.append({"id": pid, "where": where, "held": None if ok is None else bool(ok), "detail": detail})

    combos = sorted({k.rsplit("/", 1)[0] for k in pac["errors"]})
    for combo in combos:
        kind = combo.split("/")[1]
        by_alpha = {float(k.rsplit("/", 1)[1]): v for k, v in pac["errors"].items() if k.startswith(combo + "/")}
        if cfg.rounds < 4:
            add("all", combo, None, "fewer than 4 rounds: the ratios err(T)/err(3) are not defined")
            continue

        def have(alpha, *methods, by_alpha=by_alpha):
            return alpha in by_alpha and all(m in by_alpha[alpha] for m in methods)

        def final(alpha, method, by_alpha=by_alpha):
            return float(np.asarray(by_alpha[alpha][method]).mean(0)[-1])

        for a in (0.6, 0.9):
            if have(a, "erm_pooled"):
                r = _ratio(by_alpha[a], "erm_pooled")
                add("P1", f"{combo}, alpha={a}", r >= 0.8, f"r = {r:.2f}")
        if have(0.3, "erm_pooled"):
            r = _ratio(by_alpha[0.3], "erm_pooled")
            add("P2", f"{combo}, alpha=0.3", r < 0.8, f"r = {r:.2f}")
        for a in sorted(by_alpha):
            if have(a, "corrected"):
                r = _ratio(by_alpha[a], "corrected")
                add("P3", f"{combo}, alpha={a}", r < 0.8, f"r = {r:.2f}")
            if have(a, "disagreement"):
                r = _ratio(by_alpha[a], "disagreement")
                add("P9", f"{combo}, alpha={a}", r < 0.8, f"r = {r:.2f}")
            if have(a, "erm_latest", "erm_pooled"):
                r = _ratio(by_alpha[a], "erm_latest")
                worse = final(a, "erm_latest") > final(a, "erm_pooled")
                add("P7", f"{combo}, alpha={a}", r >= 0.8 and worse, f"r = {r:.2f}, worse than pooled: {worse}")
            if have(a, "corrected_nn", "corrected"):
                diff = final(a, "corrected_nn") - final(a, "corrected")
                ok = abs(diff) <= 0.005 if kind == "linear" else diff <= 0.005
                add("P5", f"{combo}, alpha={a}", ok, f"nn - corrected = {100 * diff:+.2f} points")
            if kind == "linear" and have(a, "corrected_est", "corrected"):
                diff = final(a, "corrected_est") - final(a, "corrected")
                add("P6", f"{combo}, alpha={a}", diff <= 0.01, f"estimated - known = {100 * diff:+.2f} points")
        for a in (0.3, 0.9):
            if have(a, "erm_pooled", "corrected"):
                e, c = final(a, "erm_pooled"), final(a, "corrected")
                add("P4", f"{combo}, alpha={a}", e <= c, f"ERM {100 * e:.2f}% vs corrected {100 * c:.2f}%")
        for a in (0.6, 0.9):
            for m in ("group_dro", "cvar"):
                if have(a, m):
                    r = _ratio(by_alpha[a], m)
                    add("P8", f"{combo}, alpha={a}, {m}", r >= 0.8, f"r = {r:.2f}")
    return out


def mean_verdicts(means: dict) -> list[dict]:
    rows = means["rows"]
    erm = [r for r in rows if r["estimator"] == "erm"]
    inside = [r["low"] <= r["formula"] <= r["high"] for r in erm]
    out = [
        {
            "id": "M1",
            "where": "all alphas",
            "held": bool(np.mean(inside) >= 0.9),
            "detail": f"{sum(inside)}/{len(inside)} points inside",
        }
    ]
    ok, detail = True, []
    for alpha in (0.7, 0.9, 1.0):
        pts = {r["t"]: r["formula"] for r in erm if r["alpha"] == alpha}
        if not pts:
            continue
        t_last, t10 = max(pts), min(pts, key=lambda t: abs(t - 10))
        ratio = pts[t_last] / pts[t10]
        ok &= ratio > 1.5
        detail.append(f"alpha={alpha}: {ratio:.2f}")
    above = []
    for alpha in sorted({r["alpha"] for r in rows if r["alpha"] < 1}):
        # "Stays below": no simulated point is significantly above the bound (its 95% interval starts below).
        above += [
            (alpha, r["t"])
            for r in rows
            if r["estimator"] == "blue" and r["alpha"] == alpha and r["low"] > 1 / (1 - alpha) ** 2
        ]
    ok &= not above
    detail.append(f"BLUE points significantly above 1/(1-alpha)^2: {above or 'none'}")
    out.append(
        {
            "id": "M2",
            "where": "all alphas",
            "held": bool(ok),
            "detail": "ERM Var*t(last)/Var*t(10): " + "; ".join(detail),
        }
    )
    return out


# ----------------------------------------------------------------------------------------- report


def _fmt(m, h):
    return f"{100 * m:.1f}" if not np.isfinite(h) else f"{100 * m:.1f} ± {100 * h:.1f}"


def _config_of(data: dict) -> Config:
    """The run's Config (fields stored by older versions of this module, since removed, are ignored)."""
    fields = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in data["config"].items() if k in fields})


def report(data: dict) -> str:
    cfg = _config_of(data)
    pac, means = data["pac"], data["means"]
    lines = [
        f"# Recursive contamination benchmark ({'quick' if cfg.quick else 'full'} run)",
        "",
        f"Datasets {', '.join(cfg.datasets)}; learners {', '.join(cfg.learners)}; alpha in "
        f"{', '.join(map(str, cfg.alphas))}; {len(cfg.seeds)} seed(s); T = {cfg.rounds} rounds of "
        + ", ".join(f"{cfg.size[d]} ({d})" for d in cfg.datasets)
        + f"; l2 = {cfg.l2}. Wall time {data['seconds']:.0f} s.",
        "",
        "Training paths: "
        + "; ".join(f"{k}: " + ", ".join(f"{p} x{n}" for p, n in v.items()) for k, v in pac["paths"].items())
        + f". Trainer: {pac['trainer_mode']}.",
        "",
        "Teacher agreement with the real labels (the teacher is trained on all real rows): "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in pac["teacher_agreement"].items())
        + ".",
        "",
        "## Predictions (stated before the first run) and verdicts",
        "",
    ]
    lines += [f"- **{k}** {v}" for k, v in {**PREDICTIONS, **MEAN_PREDICTIONS}.items()]
    lines += ["", "| prediction | where | held | detail |", "| --- | --- | --- | --- |"]
    for v in data["verdicts"] + data["mean_verdicts"]:
        held = {True: "yes", False: "**no**", None: "n/a"}[v["held"]]
        lines.append(f"| {v['id']} | {v['where']} | {held} | {v['detail']} |")
    lines += ["", "## Error against f* on held-out real inputs (%, mean ± 95% t-interval over seeds)", ""]
    for key, by_method in pac["errors"].items():
        methods = [m for m in METHODS if m in by_method]
        stats_ = {m: _t_interval(np.asarray(by_method[m])) for m in methods}
        lines += [f"### {key.replace('/', ', ').replace(', 0.', ', alpha = 0.')}", ""]
        lines += ["| round | " + " | ".join(methods) + " |", "|" + " --- |" * (len(methods) + 1)]
        for t in range(cfg.rounds):
            lines.append(f"| {t + 1} | " + " | ".join(_fmt(stats_[m][0][t], stats_[m][1][t]) for m in methods) + " |")
        lines.append("")
    if pac["alpha_hat"]:
        lines += ["## Estimated alpha (corrected_est): mean over seeds of the estimate and of its 95% interval", ""]
        for key, runs in pac["alpha_hat"].items():
            cells = []
            for t in range(1, cfg.rounds):
                rows = [r[t] for r in runs if len(r) > t]
                a = np.mean([r["alpha"] for r in rows])
                lo, hi = np.mean([r["low"] for r in rows]), np.mean([r["high"] for r in rows])
                cells.append(f"{a:.2f} [{lo:.2f}, {hi:.2f}]")
            lines.append(f"- {key} (true alpha {key.rsplit('/', 1)[1]}), rounds 2..{cfg.rounds}: " + "; ".join(cells))
        lines.append("")
    if data.get("alpha_estimation"):
        lines += [
            "## estimate_alpha in simulation (bias, spread, coverage of the 95% interval)",
            "",
            "| estimator | setting | alpha | simulations | bias | sd | coverage (± se) | mean width |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in data["alpha_estimation"]:
            lines.append(
                f"| {r['kind']} | {r['setting']} | {r['alpha']} | {r['sims']} | {r['bias']:+.4f} | {r['sd']:.4f} | "
                f"{100 * r['coverage']:.1f}% ± {100 * r['coverage_se']:.1f} | {r['width']:.3f} |"
            )
        lines.append("")
    lines += [
        f"## Mean estimation: Var(Y_t) * t ({means['reps']} simulations, d = 1, Sigma = 1)",
        "",
        "| alpha | t | ERM simulated [95%] | Theorem 1 | BLUE simulated [95%] | 1/(1+(t-1)(1-alpha)^2) * t |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = means["rows"]
    for r in (r for r in rows if r["estimator"] == "erm"):
        b = next(x for x in rows if x["estimator"] == "blue" and x["alpha"] == r["alpha"] and x["t"] == r["t"])
        lines.append(
            f"| {r['alpha']} | {r['t']} | {r['var_t']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | {r['formula']:.3f} | "
            f"{b['var_t']:.3f} [{b['low']:.3f}, {b['high']:.3f}] | {b['formula']:.3f} |"
        )
    return "\n".join(lines)


def plots(data: dict, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = _config_of(data)
    files = []
    colors = dict(zip(METHODS, plt.get_cmap("tab10").colors, strict=False))
    combos = [f"{d}/{k}" for d in cfg.datasets for k in cfg.learners]
    for alpha in cfg.alphas if data["pac"]["errors"] else ():
        fig, axes = plt.subplots(1, len(combos), figsize=(4.2 * len(combos) + 2.2, 3.8), squeeze=False)
        for ax, combo in zip(axes[0], combos, strict=True):
            by_method = data["pac"]["errors"].get(f"{combo}/{alpha}", {})
            for m in METHODS:
                if m not in by_method:
                    continue
                mean, half = _t_interval(np.asarray(by_method[m]))
                rounds = np.arange(1, len(mean) + 1)
                ax.plot(rounds, 100 * mean, marker="o", ms=3, color=colors[m], label=m)
                if np.all(np.isfinite(half)):
                    ax.fill_between(rounds, 100 * (mean - half), 100 * (mean + half), color=colors[m], alpha=0.15)
            ax.set_title(combo.replace("/", ", "))
            ax.set_xlabel("round t")
            ax.set_ylabel("error against f* (%)")
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.suptitle(
            f"Recursive contamination, alpha = {alpha} (mean and 95% interval over "
            f"{len(cfg.seeds)} seed{'s' if len(cfg.seeds) != 1 else ''})"
        )
        fig.tight_layout()
        files.append(os.path.join(out_dir, f"contamination_alpha_{alpha}.png"))
        fig.savefig(files[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    rows = data["means"]["rows"]
    if not rows:
        return files
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    cmap = plt.get_cmap("viridis")
    alphas = sorted({r["alpha"] for r in rows})
    for i, alpha in enumerate(alphas):
        col = cmap(i / max(len(alphas) - 1, 1))
        for est, style, marker in (("erm", "-", "o"), ("blue", "--", "s")):
            rr = [r for r in rows if r["alpha"] == alpha and r["estimator"] == est]
            t = np.array([r["t"] for r in rr])
            sim = np.array([r["var_t"] for r in rr])
            err = np.array([[r["var_t"] - r["low"] for r in rr], [r["high"] - r["var_t"] for r in rr]])
            label = f"alpha={alpha}, " + ("ERM: Theorem 1" if est == "erm" else "BLUE: formula")
            ax.plot(t, [r["formula"] for r in rr], style, color=col, label=label)
            ax.errorbar(t, sim, yerr=err, fmt=marker, ms=3, color=col, capsize=2, lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("round t")
    ax.set_ylabel("Var(Y_t) * t  (units of Sigma)")
    ax.set_title("Mean estimation: lines are formulas, markers simulations (95% intervals)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    files.append(os.path.join(out_dir, "contamination_means.png"))
    fig.savefig(files[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks contamination", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="Adult, linear, alpha 0.3 and 0.9, 1 seed (default)")
    mode.add_argument("--full", action="store_true", help="5 seeds, alpha 0.3/0.6/0.9, linear + MLP")
    parser.add_argument("--out", default="contamination-results", help="output directory")
    parser.add_argument("--datasets", default=None, help="comma-separated: adult,digits")
    parser.add_argument("--learners", default=None, help="comma-separated: linear,mlp")
    parser.add_argument("--alphas", default=None, help="comma-separated synthetic fractions")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds T")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--part", choices=("all", "pac", "means", "alpha"), default="all")
    parser.add_argument("--merge", nargs="+", metavar="DIR", help="merge earlier runs' pieces into --out (no run)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.merge:
        print(merge(args.out, args.merge, plot=not args.no_plots))
        return 0

    def split(s, conv=str):
        return None if s is None else tuple(conv(v) for v in s.split(",") if v)

    cfg = make_config(
        not args.full,
        datasets=split(args.datasets),
        learners=split(args.learners),
        alphas=split(args.alphas, float),
        seeds=None if args.seeds is None else tuple(range(args.seeds)),
        rounds=args.rounds,
        methods=split(args.methods),
    )
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        parser.error(f"unknown methods {bad}; choose from {METHODS}")
    parts = ("pac", "means", "alpha") if args.part == "all" else (args.part,)
    data = run_all(cfg, verbose=not args.quiet, parts=parts)
    text = write(data, args.out, plot=not args.no_plots)
    print(text)
    written = "contamination.md, contamination.json" + ("" if args.no_plots else " and plots")
    print(f"\nWrote {written} to {args.out}", file=sys.stderr)
    return 0


def run_all(cfg: Config, verbose: bool = True, parts: Sequence[str] = ("pac", "means", "alpha")) -> dict:
    """Runs the chosen parts (``pac``, ``means``, ``alpha``) and returns the data the report is built from."""
    start = time.perf_counter()
    pac = run_pac(cfg, verbose=verbose) if "pac" in parts else empty_pac()
    means = run_means(cfg) if "means" in parts else {"rows": [], "reps": 0, "rounds": 0}
    alpha_rows = run_alpha(cfg) if "alpha" in parts else []
    return {
        "config": dataclasses.asdict(cfg),
        "pac": pac,
        "means": means,
        "alpha_estimation": alpha_rows,
        "verdicts": verdicts(pac, cfg),
        "mean_verdicts": mean_verdicts(means) if means["rows"] else [],
        "seconds": time.perf_counter() - start,
    }


def write(data: dict, out_dir: str, plot: bool = True) -> str:
    """Writes contamination.json, contamination.md (and the plots) to ``out_dir``; returns the report."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "contamination.json"), "w") as f:
        json.dump(data, f, indent=1)
    return _write_report(data, out_dir, plot)


def _write_report(data: dict, out_dir: str, plot: bool) -> str:
    text = report(data)
    with open(os.path.join(out_dir, "contamination.md"), "w") as f:
        f.write(text + "\n")
    if plot:
        plots(data, out_dir)
    return text


def empty_pac() -> dict:
    return {"errors": {}, "alpha_hat": {}, "paths": {}, "teacher_agreement": {}, "seconds": {}, "trainer_mode": "-"}


def merge(out_dir: str, sources: Sequence[str], plot: bool = True) -> str:
    """Merges the PAC results of runs over disjoint (dataset, learner) pieces (e.g. ``--learners
    linear`` and ``--learners mlp``, same alphas, seeds and rounds) into ``out_dir`` and rebuilds the
    report and its verdicts from the union."""
    runs = []
    for src in sources:
        with open(os.path.join(src, "contamination.json")) as f:
            runs.append(json.load(f))
    base = runs[0]
    for key in ("alphas", "seeds", "rounds", "size", "methods", "l2"):
        differ = [src for src, r in zip(sources, runs, strict=True) if r["config"][key] != base["config"][key]]
        if differ:
            raise ValueError(f"cannot merge runs with different `{key}`: {differ} differ from {sources[0]}")
    pac = empty_pac()
    cfg = dict(base["config"], datasets=[], learners=[])
    for src, r in zip(sources, runs, strict=True):
        for field in ("errors", "alpha_hat", "paths", "teacher_agreement", "seconds"):
            clash = set(pac[field]) & set(r["pac"][field])
            if clash:
                raise ValueError(f"{src} repeats pieces already merged: {sorted(clash)}")
            pac[field] = {**pac[field], **r["pac"][field]}
        pac["trainer_mode"] = r["pac"]["trainer_mode"]
        cfg["datasets"] += [d for d in r["config"]["datasets"] if d not in cfg["datasets"]]
        cfg["learners"] += [k for k in r["config"]["learners"] if k not in cfg["learners"]]
    means = next((r["means"] for r in runs if r["means"]["rows"]), base["means"])
    alpha_rows = next((r["alpha_estimation"] for r in runs if r["alpha_estimation"]), [])
    data = {
        "config": cfg,
        "pac": pac,
        "means": means,
        "alpha_estimation": alpha_rows,
        "verdicts": verdicts(pac, _config_of({"config": cfg})),
        "mean_verdicts": mean_verdicts(means) if means["rows"] else [],
        "seconds": sum(r["seconds"] for r in runs),
        "merged_from": list(sources),
    }
    return write(data, out_dir, plot=plot)


def rebuild(out_dir: str, plot: bool = True) -> str:
    """Rewrites ``contamination.md`` (and the plots) from ``contamination.json``."""
    with open(os.path.join(out_dir, "contamination.json")) as f:
        data = json.load(f)
    return _write_report(data, out_dir, plot)


if __name__ == "__main__":
    sys.exit(main())
