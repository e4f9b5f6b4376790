"""P1: full-batch linear DRO (logistic regression), ours against PyPI ``dro`` (cvxpy).

    python -m benchmarks.perf --part p1 [--quick]

For each objective and n, both libraries solve the same problem on the same data
(d = 20, no ridge, an intercept, labels {0, 1} for ours and {-1, +1} for ``dro``). Each
solution is then evaluated exactly, in float64, by our reductions, and the table reports
the times, their ratio and both robust objectives. Ours runs in float64 (``dro``'s
solver works in float64 too), three ways, each the first ``fit_linear`` call of a fresh
process (imports excluded): truly cold (no compilation cache), with a warm persistent
compilation cache (written by an earlier process), and compiled (a second call in the
same process). ``dro`` runs in a subprocess per fit with a time limit; its time is that of
``fit`` alone (without importing torch/cvxpy).

Every problem's optimum must lie away from the solvers' start (w = 0, where the logistic
loss is ln 2 for every example): the table shows ‖w‖ and the objective at our optimum.
(CVaR at alpha = 0.2 on these data was degenerate: its optimum is w = 0, so it timed
nothing; alpha = 0.5 is not.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import robustlearn as rl
from benchmarks.perf._common import table
from robustlearn import objectives, wasserstein

DIM = 20
SIZES = (1_000, 10_000, 50_000, 100_000)
QUICK_SIZES = (1_000, 10_000)

# name -> (our objective or None for Wasserstein, exact evaluation of losses/params, dro kind and config)
CVAR_ALPHA, CHI2_RADIUS, KL_RADIUS, W_EPS = 0.5, 0.5, 0.1, 0.1
PROBLEMS = {
    "cvar": ("cvar", {"alpha": CVAR_ALPHA}, f"cvar(alpha={CVAR_ALPHA})"),
    # dro's chi2 ball is E_p (q/p - 1)^2 <= eps, ours sum p (q/p - 1)^2 / 2 <= radius: eps = 2 radius.
    "chi_square": ("chi_square", {"eps": 2 * CHI2_RADIUS}, f"chi_square(radius={CHI2_RADIUS})"),
    "kl": ("kl", {"eps": KL_RADIUS}, f"kl(radius={KL_RADIUS})"),
    "wasserstein": ("wasserstein", {"eps": W_EPS, "p": 2, "kappa": "inf"}, f"wasserstein(eps={W_EPS}, l2, kappa=inf)"),
}


def have_dro() -> bool:
    return importlib.util.find_spec("dro") is not None


def make_data(n: int, seed: int = 0):
    """Noisy logistic data: x ~ N(0, I_20), P(y = 1) = sigmoid(x @ w* + 0.3), |w*| = 6."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM))
    w = rng.normal(size=DIM)
    w *= 6 / np.linalg.norm(w)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w + 0.3)))).astype(np.int32)
    return x, y


def make_data_for(name: str, n: int, seed: int = 0):
    """The data of problem ``name`` (the same for every problem)."""
    del name
    return make_data(n, seed)


def exact_objective(name: str, w, b, x, y) -> float:
    """The robust objective of (w, b), in float64, by robustlearn's exact reductions."""
    with jax.enable_x64(True):
        w, b = jnp.asarray(w, jnp.float64), jnp.asarray(b, jnp.float64)
        x, y = jnp.asarray(x, jnp.float64), jnp.asarray(y)
        if name == "wasserstein":
            return float(wasserstein.linear_classification(w, x, y, W_EPS, norm="l2", intercept=b))
        losses = rl.train.linear_losses({"w": w, "b": b}, x, y.astype(jnp.float64), "logistic")
        if name == "cvar":
            return float(rl.cvar(losses, CVAR_ALPHA))
        if name == "chi_square":
            return float(rl.chi_square(losses, CHI2_RADIUS))
        return float(rl.kl(losses, KL_RADIUS))


def fit_ours(name: str, x, y):
    """Our solution ``(w, b, iterations)``: ``fit_linear`` on the objective (the exact linear
    Wasserstein objective included; it is minimized through its smoothed form)."""
    # NumPy data, as users hold it: fit_linear converts it (converting first with jnp.asarray
    # would time a small compile and MLIR's first load, ~0.13 s, that are not the fit's).
    with jax.enable_x64(True):
        x, y = np.asarray(x, np.float64), np.asarray(y)
        objective = {
            "wasserstein": lambda: wasserstein.linear_classification_objective(W_EPS),
            "cvar": lambda: objectives.cvar(CVAR_ALPHA),
            "chi_square": lambda: objectives.chi_square(CHI2_RADIUS),
            "kl": lambda: objectives.kl(KL_RADIUS),
        }[name]()
        solution = rl.train.fit_linear(x, y, objective, loss="logistic", l2=0.0)
        p, iterations = jax.block_until_ready(solution.params), int(solution.iterations)
        return np.asarray(p["w"]), float(p["b"]), iterations


class CompileClock:
    """Sums XLA backend compile time (tracing and lowering, which can nest, are not counted)."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.seconds += duration


def fit_theirs(name: str, x, y, timeout: float):
    """Runs dro's fit in a subprocess. Returns (dict with theta/b/seconds) or (None, reason)."""
    kind, config, _ = PROBLEMS[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, x=x, y=np.where(y > 0, 1.0, -1.0))
        cmd = [sys.executable, "-m", "benchmarks.perf._dro_worker", path, kind, json.dumps(config)]
        try:
            # The limit also covers importing torch and cvxpy (about 10 s).
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, check=False)
        except subprocess.TimeoutExpired:
            return None, f"timeout (> {timeout:.0f} s)"
    lines = out.stdout.strip().splitlines()
    if not lines:
        return None, f"crashed: {out.stderr.strip().splitlines()[-1:]}"
    result = json.loads(lines[-1])
    if "error" in result:
        return None, "failed: " + result["error"]
    return result, None


def fit_ours_fresh(name: str, n: int, cache: str) -> dict:
    """Our fit in a fresh process (see ``_ours_worker``): seconds of import, first and second fit, compile."""
    cmd = [sys.executable, "-m", "benchmarks.perf._ours_worker", name, str(n), cache]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _times(ratio: float) -> str:
    """A speed ratio with two significant digits below 10 (0.12x: dro faster), whole numbers above."""
    return f"{ratio:.2g}x" if ratio < 10 else f"{ratio:.0f}x"


def run(quick: bool = False, sizes=None, dro_timeout: float = 120.0, names=None) -> str:
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    names = names or list(PROBLEMS)
    compare = have_dro()
    header = ["problem", "n", "ours cold (s)", "ours warm cache (s)", "ours compiled (s)", "compiled, no cache (s)"]
    header += ["‖w‖", "dro (s)"]
    header += ["dro / cold", "dro / warm cache", "dro / compiled"]
    header += ["objective ours", "objective dro", "rel. diff"]
    rows, notes = [], []
    for name in names:
        last = None  # (n, seconds) of dro's last successful fit, to skip hopeless sizes
        skip_reason = None
        for n in sizes:
            x, y = make_data_for(name, n)
            cold = fit_ours_fresh(name, n, "-")
            with tempfile.TemporaryDirectory() as cache:
                fit_ours_fresh(name, n, cache)  # writes the cache
                warm = fit_ours_fresh(name, n, cache)
            w, b, _ = fit_ours(name, x, y)
            f_ours = exact_objective(name, w, b, x, y)
            if f_ours > np.log(2) - 1e-3 or np.linalg.norm(w) < 1e-3:
                notes.append(f"{name} n={n:.0e}: degenerate, the optimum is the start (objective {f_ours:.6f}).")
            t_cold, t_warm, t_compiled = cold["first"], warm["first"], warm["second"]
            row = [PROBLEMS[name][2], f"{n:.0e}", f"{t_cold:.3g}", f"{t_warm:.3g}", f"{t_compiled:.3g}"]
            row.append(f"{cold['second']:.3g}")
            row.append(f"{np.linalg.norm(w):.3g}")
            if not compare:
                rows.append(row + ["not installed", "", "", "", f"{f_ours:.8g}", "", ""])
                continue
            if skip_reason is None and last is not None and last[1] * n / last[0] > dro_timeout:
                skip_reason = (
                    f"not run (n={last[0]:.0e} took {last[1]:.0f} s; linear extrapolation > {dro_timeout:.0f} s)"
                )
            if skip_reason is not None:
                rows.append(row + [skip_reason, "", "", "", f"{f_ours:.8g}", "", ""])
                continue
            theirs, reason = fit_theirs(name, x, y, dro_timeout)
            if theirs is None:
                rows.append(row + [reason, "", "", "", f"{f_ours:.8g}", "", ""])
                if reason.startswith("timeout"):
                    skip_reason = f"not run (timeout at n={n:.0e})"
                continue
            t_dro = theirs["seconds"]
            last = (n, t_dro)
            f_dro = exact_objective(name, theirs["theta"], theirs["b"], x, y)
            best = min(f_ours, f_dro)
            rel = (f_ours - best) / abs(best)
            if rel > 1e-4:
                notes.append(f"{name} n={n:.0e}: ours is {rel:.2e} above dro's objective (goal: within 1e-4).")
            row += [f"{t_dro:.3g}", *(_times(t_dro / t) for t in (t_cold, t_warm, t_compiled))]
            row += [f"{f_ours:.8g}", f"{f_dro:.8g}", f"{(f_ours - f_dro) / abs(best):+.1e}"]
            rows.append(row)
    lines = [
        "### P1: full-batch linear DRO, logistic regression, d = 20",
        "",
        table(header, rows),
        "",
        "ours: robustlearn.train.fit_linear (float64; Wasserstein: on "
        "wasserstein.linear_classification_objective), timed in fresh processes, imports excluded. cold: no "
        "compilation cache; warm cache: JAX's persistent compilation cache written by an earlier "
        "process (robustlearn.enable_compilation_cache); compiled: the second fit in the warm-cache process "
        "(XLA's default code); compiled, no cache: the second fit in the cold process, whose solver was "
        "compiled for compilation speed (XLA:CPU's elemental generator; up to 2^20 entries of x also LLVM -O0; "
        "up to 2^18 rows no subsample starts). "
        "‖w‖: norm of our solution (the start is w = 0). "
        "dro: PyPI dro, cvxpy + CLARABEL, time of fit() in a subprocess. "
        "Objectives: both solutions evaluated exactly in float64 by robustlearn; "
        "rel. diff = (ours - dro) / min(ours, dro), negative = ours lower.",
    ]
    if not compare:
        lines.append("\n`dro` is not installed: its columns are skipped (pip install -e '.[compare]').")
    lines += [""] + notes if notes else []
    return "\n".join(lines)
