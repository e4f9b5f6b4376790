"""Replays the review's reproductions of bad and extreme inputs to version 0.1 against the current library: reduction
values at extreme hyperparameters and weights, weight diagnostics near the float64 limits, invalid arguments that 0.1
accepted or answered with an unhelpful crash, links planted in a checkpoint directory, and one scikit-learn check. It
prints a markdown table with what 0.1 did (as the review reported it), what the library does now, an independent
reference (numpy/scipy float64, from ``tests/_references.py`` or closed forms) and whether they agree: a value within
the tolerance (times ``max(1, |reference|)``), the expected exception type with a message naming the argument, or the
expected warning. Losses are float32, JAX's default. Run it from the repository root (well under a minute on two CPU
cores) with ``python -m benchmarks.extreme_inputs [--out FILE]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import warnings

import numpy as np

import robustlearn as rl
from robustlearn import importance as imp
from robustlearn import wasserstein as ws
from tests import _references as ref

U = np.array([0.05, 0.93, 0.41, 0.77, 0.26], np.float32)  # losses in [0, 1]
U64, P = U.astype(np.float64), np.full(5, 0.2)
HUGE = np.array([-3e38, 3e38, 0.0], np.float32)
CLOUD = np.stack([U, U[::-1]], axis=1)  # sample-cloud losses, shape (m, n) = (5, 2)
X3, RNG = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32), np.random.default_rng(0)
BAD_ARG = (ValueError, TypeError)
ROWS = []


def row(category, call, before, fn, expect, reference=None, tol=1e-6, check=None):
    """``expect``: a reference value, an exception type (or tuple), a Warning type, or a predicate on the result."""
    ROWS.append((category, call, before, fn, expect, reference, tol, check))


def raises(category, call, before, fn, name, exc=ValueError):
    """A row that expects ``exc`` with a message naming the argument ``name``."""
    row(category, call, before, fn, exc, check=name)


def ref_value(name, losses=U64, p=P, **hyper):
    return ref.value(name, np.asarray(losses, np.float64), p, hyper)


def fmt(x) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, tuple):
        return ", ".join(fmt(v) for v in x)
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        return type(x).__name__
    if a.dtype.kind in "iu":
        return str(a.tolist())
    return f"{a.item():.7g}" if a.size == 1 else "[" + ", ".join(f"{v:.7g}" for v in a.ravel()) + "]"


def is_exception(e) -> bool:
    return isinstance(e, tuple) or (isinstance(e, type) and issubclass(e, Exception) and not issubclass(e, Warning))


def evaluate(fn, expect, tol, check) -> tuple[str, bool]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except Exception as e:
            message = " ".join(str(e).split())[:90]
            named = check is None or f"`{check}`" in str(e)  # exception rows: the argument the message must name
            return f"{type(e).__name__}: {message}", is_exception(expect) and isinstance(e, expect) and named
    if isinstance(expect, type) and issubclass(expect, Warning):
        hit = [w.category.__name__ for w in caught if issubclass(w.category, expect)]
        shown = "" if out is None else f" (returned {fmt(out)})"
        ok = bool(hit) and (check is None or check(out))
        return (f"warning: {hit[0]}" if hit else "no warning") + shown, ok
    if is_exception(expect):
        return f"{fmt(out)} (no error)", False
    if callable(expect):
        return fmt(out), bool(expect(out))
    a, b = np.asarray(out, np.float64), np.asarray(expect, np.float64)
    ok = a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol * np.maximum(1.0, np.abs(b))))
    return fmt(out), ok


def reference_text(expect, reference, tol, check) -> str:
    if reference is not None:
        return reference
    if isinstance(expect, type) and issubclass(expect, Warning):
        return f"warning: {expect.__name__}"
    if is_exception(expect):
        names = "/".join(e.__name__ for e in (expect if isinstance(expect, tuple) else (expect,)))
        return names + (f" naming `{check}`" if check else "")
    return f"{fmt(expect)} (±{tol:g})"


# ---------------------------------------------------------------------------- helpers for the rows


def trainer(**kwargs):
    import optax

    return rl.train.Trainer(
        lambda p, x: x @ p["w"],
        optax.softmax_cross_entropy_with_integer_labels,
        rl.objectives.erm(),
        optax.sgd(0.1),
        params={"w": np.zeros((2, 2), np.float32)},
        verbose=False,
        **kwargs,
    )


def timed_grid(k, r):
    start = time.perf_counter()
    rows = len(imp.simplex_grid(k, r))
    return rows, f"{time.perf_counter() - start:.2f} s"


def checkpoint_through_links() -> str:
    """Plants links at the fixed names (0.1's temporary name, today's current and previous) and trains."""
    from robustlearn._src.training import checkpoint as ckpt

    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "ckpt")
        os.mkdir(directory)
        victims = []
        for name in ("checkpoint.msgpack.tmp", "checkpoint.msgpack", ckpt.CURRENT, ckpt.PREVIOUS):
            victims.append(os.path.join(tmp, f"outside-{name}"))
            with open(victims[-1], "wb") as f:
                f.write(b"precious")
            os.symlink(victims[-1], os.path.join(directory, name))
        data = {"x": RNG.normal(size=(8, 2)).astype(np.float32), "y": np.arange(8, dtype=np.int32) % 2}
        trainer(checkpoint_dir=directory).fit(data, epochs=2)
        changed = [v for v in victims if open(v, "rb").read() != b"precious"]
        return f"{len(changed)} of {len(victims)} outside files changed"


def subset_invariance() -> str:
    from sklearn.utils.estimator_checks import check_methods_subset_invariance

    from robustlearn.estimators import RobustClassifier

    check_methods_subset_invariance("RobustClassifier", RobustClassifier(model="mlp", hidden=(8,), epochs=60))
    return "passed"


def compare_unknown_select():
    x = RNG.normal(size=(12, 2))
    splits = {"train": {"x": x[:6]}, "val": {"x": x[6:9]}, "test": {"x": x[9:]}}
    methods = [rl.benchmark.Method("erm")]
    evaluate = lambda model, split: {"accuracy": 1.0}  # noqa: E731
    return rl.benchmark.compare(methods, lambda *a: None, evaluate, splits, select="acc", seeds=(0,))


def linear_labels(y):
    return ws.linear_classification(np.ones(2, np.float32), X3, np.array(y, np.float32), 0.1)


def weighted_cvar(w, alpha):
    w = np.asarray(w, np.float64)
    return ref.cvar_sorted(U64, w / w.sum(), alpha)


# -------------------------------------------------------------------------------------------- rows

MEAN, TOP, STD = float(U64.mean()), float(U64.max()), float(U64.std())
W39 = [1e39, 1.0, 1.0, 1.0, 1.0]
KL_HALF = ref_value("kl", radius=0.5)

# One call per row, so that the rows read as a table (ruff format would give each argument its own line).
# fmt: off
c = "silently wrong value"
row(c, "kl_penalty(U, lam=1e4)", "0.517896 (exact 0.516910 on its data)", lambda: rl.kl_penalty(U, 1e4),
    ref_value("kl_penalty", lam=1e4))
row(c, "kl_penalty(U, lam=1e6)", "the maximum, 0.9995", lambda: rl.kl_penalty(U, 1e6), ref_value("kl_penalty", lam=1e6))
for k, before in [(1e20, "the maximum"), (1e30, "the maximum"), (1e6, "off by 5e-4"), (1 + 1e-5, "0.7816 (KL 0.7828)")]:
    row(c, f"cressie_read(U, 0.5, k={k:g})", before, lambda k=k: rl.cressie_read(U, 0.5, k),
        ref_value("cressie_read", radius=0.5, k=k))
for k, before in [(1 + 1e-7, "0.7935"), (1 + 1e-9, "NaN")]:
    row(c, f"cressie_read(U, 0.5, k=1+{k - 1:.0e})", before, lambda k=k: rl.cressie_read(U, 0.5, k), KL_HALF,
        f"KL value {KL_HALF:.7g} (±1e-6)")
for r, before in [(1e-8, "error +1.36e-4"), (1e-30, "3.5e-5 above the mean")]:
    value = MEAN + math.sqrt(2 * r) * STD
    row(c, f"chi_square(U, radius={r:g})", before, lambda r=r: rl.chi_square(U, r), value,
        f"mean + sqrt(2ρ)·std = {value:.7g} (±1e-6)")
row(c, "erm(U, weights=[1e38]*5)", "the minimum loss", lambda: rl.erm(U, weights=[1e38] * 5), MEAN)
row(c, "cvar(U, 0.5, weights=[1e38]*5)", "the minimum loss", lambda: rl.cvar(U, 0.5, weights=[1e38] * 5),
    weighted_cvar([1.0] * 5, 0.5))
row(c, "erm(U, weights=float64 [1e-50]*5)", "0", lambda: rl.erm(U, weights=np.full(5, 1e-50)), MEAN)
row(c, "erm(U, weights=float32 [1e-50]*5)", "0", lambda: rl.erm(U, weights=np.full(5, 1e-50, np.float32)), 0.0,
    "0: float32 holds 1e-50 as 0, so no example is left (documented value 0)")
row(c, "erm(U, weights=[1e39,1,1,1,1])", "NaN", lambda: rl.erm(U, weights=W39), np.average(U64, weights=W39))
row(c, "cvar(U, 0.5, weights=[1e39,1,1,1,1])", "NaN", lambda: rl.cvar(U, 0.5, weights=W39), weighted_cvar(W39, 0.5))
row(c, "importance.transform_weights([1e308]*2)", "[0, 0]", lambda: imp.transform_weights([1e308] * 2), [1.0, 1.0])
row(c, "importance.effective_sample_size([1e200]*2)", "NaN", lambda: imp.effective_sample_size([1e200] * 2), 2.0)
row(c, "importance.effective_sample_size([1e-200]*2)", "NaN", lambda: imp.effective_sample_size([1e-200] * 2), 2.0)
row(c, "importance.weight_diagnostics([1e200]+[1e-200]*99).ess", "no low-ESS warning",
    lambda: imp.weight_diagnostics([1e200] + [1e-200] * 99).ess, imp.ImportanceWeightWarning,
    "warning: ImportanceWeightWarning, ESS 1", check=lambda ess: abs(ess - 1) < 1e-9)
for y, before in [(2, "silently +1"), (0.5, "silently NaN"), (np.nan, "silently -1")]:
    raises(c, f"wasserstein.linear_classification(y=[1, -1, {y}])", before, lambda y=y: linear_labels([1, -1, y]), "y")
raises(c, "wasserstein.wrm_certificate(1.0, 2.0, radius=-2)", "a bound below the surrogate",
       lambda: ws.wrm_certificate(1.0, 2.0, -2.0), "radius")
raises(c, "wasserstein.sample_cloud_dual(L, budget=-1)", "accepted", lambda: ws.sample_cloud_dual(CLOUD, -1.0),
       "budget")
raises(c, "wasserstein.sample_cloud_dual(L, 0.5, weights=[-1, 2])", "accepted",
       lambda: ws.sample_cloud_dual(CLOUD, 0.5, weights=np.array([-1.0, 2.0])), "weights")
raises(c, "importance.group_means(U, g, 2, weights=[1,-1,1,1,1])", "accepted",
       lambda: imp.group_means(U, np.array([0, 1, 0, 1, 0]), 2, weights=np.array([1.0, -1, 1, 1, 1])), "weights")
raises(c, "importance.KLIEP(max_iter=0)", "fit without error", lambda: imp.KLIEP(max_iter=0), "max_iter")
raises(c, "importance.KMM(iterations=-5)", "fit without error", lambda: imp.KMM(iterations=-5), "iterations")
raises(c, "importance.KLIEP(tol=-1)", "fit without error", lambda: imp.KLIEP(tol=-1), "tol")
row(c, "ULSIF(folds=5).fit(40 real rows, 3 synthetic rows).folds_", "scored held-out rows on training rows",
    lambda: imp.ULSIF().fit(RNG.normal(size=(40, 1)), RNG.normal(size=(3, 1))).folds_, imp.DensityRatioWarning,
    "warning: DensityRatioWarning, 3 folds", check=lambda folds: folds == 3)

c = "NaN for valid input"
row(c, "cvar(U, alpha=1e-39)", "NaN", lambda: rl.cvar(U, 1e-39), TOP, f"max loss {TOP:.7g} (±1e-6)")
row(c, "kl_penalty(U, lam=1e-40)", "NaN", lambda: rl.kl_penalty(U, 1e-40), TOP, f"max loss {TOP:.7g} (±1e-6)")
row(c, "chi_square_penalty(U, lam=1e-40)", "NaN", lambda: rl.chi_square_penalty(U, 1e-40), TOP,
    f"max loss {TOP:.7g} (±1e-6)")
row(c, "chi_square(U, radius=1e39)", "NaN", lambda: rl.chi_square(U, 1e39), ref_value("chi_square", radius=1e39))
row(c, "kl(U, radius=1e300)", "NaN", lambda: rl.kl(U, 1e300), TOP, f"max loss {TOP:.7g} (±1e-6)")
row(c, "kl_penalty([-3e38, 3e38, 0] f32, lam=1)", "NaN", lambda: rl.kl_penalty(HUGE, 1.0),
    ref_value("kl_penalty", HUGE, np.full(3, 1 / 3), lam=1.0))
row(c, "chi_square_penalty([-3e38, 3e38, 0] f32, lam=1)", "NaN", lambda: rl.chi_square_penalty(HUGE, 1.0),
    float(HUGE.max()) - 1.0, f"max − λ(n−1)/2 = {float(HUGE.max()) - 1:.7g} (±1e-6)")
raises(c, "contamination.contamination_covariance(0.5, [1, nan])", "accepted",
       lambda: rl.contamination.contamination_covariance(0.5, [1.0, np.nan]), "counts")
row(c, "wasserstein.sample_cloud_dual(L, 0.5, weights=[0, 0])", "NaN",
    lambda: ws.sample_cloud_dual(CLOUD, 0.5, weights=np.zeros(2))[0], 0.0, "0: no example left (documented)")

row("hang", "importance.simplex_grid(14, 10): rows, time", "(10+1)^14 tuples enumerated (13 min projected)",
    lambda: timed_grid(14, 10), lambda out: out[0] == math.comb(23, 13), f"C(23, 13) = {math.comb(23, 13)} rows")

c = "unhelpful crash"
raises(c, "cvar(float32 [], 0.5)", "zero-size array to reduction operation max",
       lambda: rl.cvar(np.array([], np.float32), 0.5), "losses")
raises(c, "cvar(np.array(['a', 'b']), 0.5)", "JAX staging error", lambda: rl.cvar(np.array(["a", "b"]), 0.5),
       "losses", TypeError)
row(c, "Trainer.fit({'x': list, 'y': list}, epochs=1)", "'float' object is not subscriptable",
    lambda: len(trainer().fit({"x": [[0.0, 1.0], [1.0, 0.0]], "y": [0, 1]}, epochs=1)), lambda n: n == 1,
    "trains: 1 epoch")
row(c, "Trainer(..., seed=None).seed", "crash", lambda: trainer(seed=None).seed,
    lambda s: isinstance(s, int) and 0 <= s < 2**32, "a drawn int seed")
raises(c, "Trainer(loss=integer CE).fit(y float)", "crash",
       lambda: trainer().fit({"x": X3[:2], "y": np.array([0.0, 1.0], np.float32)}, epochs=1), "train['y']", BAD_ARG)
raises(c, "train.fit_linear(x (4, 1), y, erm(), weights=ones(3))", "broadcasting error",
       lambda: rl.train.fit_linear(np.arange(4.0)[:, None], np.arange(4) % 2, rl.objectives.erm(), weights=np.ones(3)),
       "weights")
raises(c, "train.fit_linear(..., max_iter='many')", "crash",
       lambda: rl.train.fit_linear(np.arange(4.0)[:, None], np.arange(4) % 2, rl.objectives.erm(), max_iter="many"),
       "max_iter", BAD_ARG)
raises(c, "ULSIF().fit(1 real row, 20 synthetic rows)", "need at least one array to concatenate",
       lambda: imp.ULSIF().fit(RNG.normal(size=(1, 1)), RNG.normal(size=(20, 1))), "real")
raises(c, "importance.clip_mixture([nan, 1])", "IndexError", lambda: imp.clip_mixture([np.nan, 1.0]), "beta")
raises(c, "importance.clip_mixture([])", "IndexError", lambda: imp.clip_mixture([]), "beta")
raises(c, "importance.generation_weights(0.5, [10, inf])", "LinAlgError",
       lambda: imp.generation_weights(0.5, [10.0, np.inf]), "counts")
raises(c, "importance.simplex_grid(2.5, 3)", "crash", lambda: imp.simplex_grid(2.5, 3), "num_sources", BAD_ARG)
raises(c, "benchmark.compare(..., select='acc'), evaluate gives 'accuracy'", "bare KeyError", compare_unknown_select,
       "select")
raises(c, "train.EarlyStopping(patience=1.5)", "accepted", lambda: rl.train.EarlyStopping(patience=1.5), "patience",
       BAD_ARG)
row(c, "wasserstein.dual_norm([3, -4, 12], np.int64(2))", "rejected",
    lambda: ws.dual_norm(np.array([3.0, -4.0, 12.0], np.float32), np.int64(2)), 13.0, "13 = ‖θ‖₂ (±1e-6)")

row("security", "Trainer(checkpoint_dir=d).fit, links at the fixed names to outside files",
    "overwrote the outside file (via checkpoint.msgpack.tmp)", checkpoint_through_links,
    lambda s: s.startswith("0 of"), "outside files unchanged")
row("estimator", "check_methods_subset_invariance(RobustClassifier(model='mlp', hidden=(8,), epochs=60))",
    "failed at 1e-7", subset_invariance, lambda s: s == "passed", "passes")
# fmt: on


def cells(*values) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split(": ")[0])
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    lines = [cells("#", "category", "input", "before (0.1)", "now", "reference", "ok"), cells(*["---"] * 7)]
    passed = 0
    for i, (category, call, before, fn, expect, reference, tol, check) in enumerate(ROWS, 1):
        now, ok = evaluate(fn, expect, tol, check)
        passed += ok
        reference = reference_text(expect, reference, tol, check)
        lines.append(cells(i, category, call, before, now, reference, "yes" if ok else "no"))
        print(lines[-1], file=sys.stderr, flush=True)
    lines.append(f"\n{passed} of {len(ROWS)} rows ok")
    text = "\n".join(lines)
    print(text)
    print(f"run time {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
