"""P2: minibatch training of an MLP: each objective's step time over ERM, and epochs against dro.

    python -m benchmarks.perf --part p2 [--quick]

An flax nnx MLP 20 -> 64 -> 64 -> 2 (ReLU), softmax cross-entropy, Adam, batch 1024,
trained by ``robustlearn.train.Trainer``: one epoch is one jitted ``lax.scan`` over the
minibatches, so an epoch of many steps is timed (median after a warm-up epoch that
compiles) and divided by the number of steps. The same architecture, data, batch size
and optimizer then run in ``dro``'s PyTorch models (``Chi2NNDRO``, ``CVaRNNDRO``), one
``fit`` of several epochs, divided by the number of epochs.

"What a user would write instead": the same MLP, Adam and batches in a plain jitted optax
loop (one ``lax.scan`` per epoch), with the per-example losses reduced by a hand-written CVaR
(``jax.lax.top_k`` of the batch, or a full sort) or a chi-square dual solved by a fixed
50-step bisection, against robustlearn's reductions in the same loop. The table also gives
each hand-written value's distance to the exact one on a random batch.
"""

from __future__ import annotations

import functools
import importlib.util
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import robustlearn as rl
from benchmarks._timing import interleaved_medians, median_seconds
from benchmarks.perf._common import table
from robustlearn import objectives, wasserstein
from robustlearn.train import Trainer

DIM, HIDDEN, WIDE, BATCH = 20, 64, 256, 1024

OBJECTIVES = {
    "erm": objectives.erm,
    "cvar(0.1)": lambda: objectives.cvar(0.1),
    "chi_square(1.0)": lambda: objectives.chi_square(1.0),
    "kl(1.0)": lambda: objectives.kl(1.0),
    "cressie_read(1.0, 1.5)": lambda: objectives.cressie_read(1.0, 1.5),
    "chi_square_penalty(1.0)": lambda: objectives.chi_square_penalty(1.0),
    "kl_penalty(1.0)": lambda: objectives.kl_penalty(1.0),
    "wrm(gamma=1, steps=1)": lambda: wasserstein.wrm(1.0, steps=1),
}


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, hidden: int = HIDDEN):
        self.l1 = nnx.Linear(DIM, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.l3 = nnx.Linear(hidden, 2, rngs=rngs)

    def __call__(self, x):
        return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    w = rng.normal(size=DIM)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w)))).astype(np.int32)
    return {"x": x, "y": y}


def trainer(objective, devices=None, seed=0, hidden=HIDDEN):
    return Trainer(
        MLP(nnx.Rngs(seed), hidden),
        optax.softmax_cross_entropy_with_integer_labels,
        objective,
        optax.adam(1e-3),
        batch_size=BATCH,
        seed=seed,
        devices=devices,
        verbose=False,
    )


def fit_one_epoch(tr: Trainer, data) -> None:
    """One epoch of ``tr`` on ``data``, waited for."""
    tr.fit(data, epochs=1)
    jax.block_until_ready(tr.params)


def epoch_seconds(tr: Trainer, data, repeats: int) -> float:
    """Median time of one epoch of ``tr`` on ``data`` (after a warm-up fit that compiles)."""
    return median_seconds(functools.partial(fit_one_epoch, tr, data), repeats)


def dro_epoch_seconds(kind: str, data, epochs: int) -> float:
    """dro's time per epoch, same MLP (no dropout), Adam(1e-3), batch 1024, on CPU."""
    import torch  # noqa: PLC0415  (optional, with dro)
    from dro.neural_model import Chi2NNDRO, CVaRNNDRO  # noqa: PLC0415
    from dro.neural_model.base_nn import MLP as TorchMLP  # noqa: PLC0415
    from torch.utils.data import DataLoader, TensorDataset  # noqa: PLC0415

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    if kind == "chi2":
        model = Chi2NNDRO(DIM, 2, device=cpu, size=1.0, reg=0.0)  # = our chi_square(1.0)
    else:
        model = CVaRNNDRO(DIM, 2, device=cpu, size=0.1, reg=0.01)  # their CVaR needs reg > 0
    model.model = TorchMLP(DIM, 2, hidden_units=HIDDEN, dropout_rate=0.0, num_layers=3).to(cpu)
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"], dtype=torch.long)
    train = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    val = DataLoader(TensorDataset(x[:BATCH], y[:BATCH]), batch_size=BATCH)
    model.fit(train_loader=train, val_loader=val, epochs=1, verbose=False)  # warm-up
    start = time.perf_counter()
    model.fit(train_loader=train, val_loader=val, epochs=epochs, verbose=False)
    return (time.perf_counter() - start) / epochs


def _step_times(data, repeats: int, hidden: int) -> dict[str, float]:
    """Epoch time of every objective. Interleaved rounds (every objective once per round) so that
    slow drifts of a shared machine hit all objectives alike; a second ERM trainer measures the noise."""
    trainers = {name: trainer(make(), hidden=hidden) for name, make in OBJECTIVES.items()}
    trainers["erm (again: noise control)"] = trainer(objectives.erm(), hidden=hidden)
    return interleaved_medians(
        {name: functools.partial(fit_one_epoch, tr, data) for name, tr in trainers.items()}, repeats
    )


CVAR_ALPHA, CHI2_RADIUS = 0.1, 1.0


def cvar_top_k(losses, alpha=CVAR_ALPHA):
    """Mean of the k = ceil(alpha n) largest losses (exact CVaR when alpha n is an integer)."""
    k = int(np.ceil(alpha * losses.shape[0]))
    return jnp.mean(jax.lax.top_k(losses, k)[0])


def cvar_sort(losses, alpha=CVAR_ALPHA):
    """The fractional top-k by one sort: the largest losses get 1/(alpha n), the boundary one the rest."""
    n = losses.shape[0]
    ranked = jnp.sort(losses)[::-1]
    caps = jnp.clip(alpha * n - jnp.arange(n), 0, 1)
    return jnp.sum(caps * ranked) / (alpha * n)


def chi_square_bisection(losses, radius=CHI2_RADIUS, steps=50):
    """min_eta eta + sqrt(1 + 2 radius) ||(l - eta)_+||_2 (uniform p) with eta by 50 bisection steps."""
    c = jnp.sqrt(1 + 2 * radius)
    stop = jax.lax.stop_gradient(losses)

    def slope(eta):  # derivative of the dual in eta, increasing
        excess = jnp.maximum(stop - eta, 0)
        return 1 - c * jnp.mean(excess) / jnp.sqrt(jnp.maximum(jnp.mean(excess**2), 1e-30))

    lo, hi = jnp.min(stop) - (jnp.max(stop) - jnp.min(stop)) / jnp.maximum(c - 1, 1e-3), jnp.max(stop)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = slope(mid) < 0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, steps, bisect, (lo, hi))
    eta = 0.5 * (lo + hi)
    return eta + c * jnp.sqrt(jnp.mean(jnp.maximum(losses - eta, 0) ** 2))


HAND_WRITTEN = {
    "mean (ERM)": jnp.mean,
    "robustlearn.cvar(0.1)": lambda losses: rl.cvar(losses, CVAR_ALPHA),
    "hand-written CVaR: lax.top_k": cvar_top_k,
    "hand-written CVaR: sort": cvar_sort,
    "robustlearn.chi_square(1.0)": lambda losses: rl.chi_square(losses, CHI2_RADIUS),
    "hand-written chi-square: 50-step bisection": chi_square_bisection,
}


def _plain_loop(reduce, steps: int, hidden: int):
    """A user's own jitted optax epoch (scan over ``steps`` batches) with ``reduce`` of the losses."""
    graphdef, params = nnx.split(MLP(nnx.Rngs(0), hidden))
    opt = optax.adam(1e-3)

    def loss(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return reduce(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @jax.jit
    def epoch(params, state, xs, ys):
        def step(carry, batch):
            params, state = carry
            grads = jax.grad(loss)(params, *batch)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, state), (xs, ys))[0]

    return epoch, params, opt.init(params)


def _hand_written_rows(data, steps: int, repeats: int, hidden: int):
    xs = jnp.asarray(data["x"][: steps * BATCH]).reshape(steps, BATCH, DIM)
    ys = jnp.asarray(data["y"][: steps * BATCH]).reshape(steps, BATCH)
    loops = {name: _plain_loop(fn, steps, hidden) for name, fn in HAND_WRITTEN.items()}
    calls = {name: functools.partial(epoch, params, state, xs, ys) for name, (epoch, params, state) in loops.items()}
    times = interleaved_medians(calls, repeats)
    # Exactness on one batch of losses: against robustlearn's exact values, in float64.
    batch = np.random.default_rng(1).exponential(size=BATCH)
    with jax.enable_x64(True):
        exact = {"cvar": float(rl.cvar(batch, CVAR_ALPHA)), "chi": float(rl.chi_square(batch, CHI2_RADIUS))}
    l32 = jnp.asarray(batch, jnp.float32)
    errors = {
        "robustlearn.cvar(0.1)": abs(float(rl.cvar(l32, CVAR_ALPHA)) - exact["cvar"]),
        "hand-written CVaR: lax.top_k": abs(float(cvar_top_k(l32)) - exact["cvar"]),
        "hand-written CVaR: sort": abs(float(cvar_sort(l32)) - exact["cvar"]),
        "robustlearn.chi_square(1.0)": abs(float(rl.chi_square(l32, CHI2_RADIUS)) - exact["chi"]),
        "hand-written chi-square: 50-step bisection": abs(float(chi_square_bisection(l32)) - exact["chi"]),
    }
    base = times["mean (ERM)"]
    return [
        [name, f"{1e3 * t / steps:.3g}", f"{t / base:.3f}", "" if name not in errors else f"{errors[name]:.1e}"]
        for name, t in times.items()
    ]


def run(
    quick: bool = False, steps: int | None = None, repeats: int | None = None, dro_epochs: int | None = None
) -> str:
    steps = steps or (20 if quick else 100)
    repeats = repeats or (3 if quick else 15)
    dro_epochs = dro_epochs or (2 if quick else 3)
    data = make_data(steps * BATCH)
    lines = []
    step_times = {hidden: _step_times(data, repeats, hidden) for hidden in (HIDDEN, WIDE)}
    for hidden, times in step_times.items():
        base = times["erm"]
        rows = [
            [name, f"{1e3 * t / steps:.3g}", f"{1e6 * (t - base) / steps:+.0f}", f"{t / base:.3f}"]
            for name, t in times.items()
        ]
        worst = max(t / base for name, t in times.items() if not name.startswith(("wrm", "erm")))
        lines += [
            f"### P2: minibatch MLP {DIM}-{hidden}-{hidden}-2, batch {BATCH}, Adam, Trainer",
            "",
            f"Step time: one epoch of {steps} steps (one jitted lax.scan) via Trainer.fit, median of {repeats} "
            f"interleaved rounds, divided by {steps}.",
            "",
            table(["objective", "step (ms)", "extra per step (µs)", "/ ERM"], rows),
            "",
            f"Largest ratio over the reductions (WRM excluded: it is an extra forward/backward): {worst:.3f} "
            "(goal: at most 1.05).",
            "",
        ]
    for hidden in (HIDDEN, WIDE):
        rows = _hand_written_rows(data, steps, repeats, hidden)
        lines += [
            f"### P2: what a user would write instead (plain optax loop, MLP {DIM}-{hidden}-{hidden}-2, batch {BATCH})",
            "",
            f"Step time of a plain jitted optax epoch ({steps} steps in one lax.scan), median of {repeats} interleaved "
            "rounds; |value - exact|: float32 value on one batch of 1024 exponential losses against the float64 "
            "exact value (alpha n = 102.4 is not an integer, so top_k's k = 103 is not CVaR_0.1).",
            "",
            table(["reduction in the loop", "step (ms)", "/ mean", "|value - exact|"], rows),
            "",
        ]
    times = step_times[HIDDEN]  # dro's models use the 64-wide MLP
    if importlib.util.find_spec("dro") is None:
        lines.append("`dro` is not installed: the comparison with its PyTorch models is skipped.")
        return "\n".join(lines)
    rows = []
    for kind, ours_name in (("chi2", "chi_square(1.0)"), ("cvar", "cvar(0.1)")):
        t_dro = dro_epoch_seconds(kind, data, dro_epochs)
        t_ours = times[ours_name]
        name = {"chi2": "Chi2NNDRO(size=1.0, reg=0)", "cvar": "CVaRNNDRO(size=0.1, reg=0.01)"}[kind]
        rows.append([f"{name} vs {ours_name}", f"{t_dro:.3g}", f"{t_ours:.3g}", f"{t_dro / t_ours:.1f}x"])
    lines += [
        "",
        f"Epoch time against dro's PyTorch models ({steps} steps of {BATCH}; dro: mean of {dro_epochs} epochs "
        "after one warm-up epoch; torch on CPU):",
        "",
        table(["dro model vs ours", "dro epoch (s)", "ours epoch (s)", "dro / ours"], rows),
    ]
    return "\n".join(lines)
