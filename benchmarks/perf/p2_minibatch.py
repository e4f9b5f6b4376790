"""P2: minibatch training of an MLP: each objective's step time over ERM, and epochs against dro.

    python -m benchmarks.perf --part p2 [--quick]

An flax nnx MLP 20 -> 64 -> 64 -> 2 (ReLU), softmax cross-entropy, Adam, batch 1024,
trained by ``robustlearn.train.Trainer``: one epoch is one jitted ``lax.scan`` over the
minibatches, so an epoch of many steps is timed (median after a warm-up epoch that
compiles) and divided by the number of steps. The same architecture, data, batch size
and optimizer then run in ``dro``'s PyTorch models (``Chi2NNDRO``, ``CVaRNNDRO``), one
``fit`` of several epochs, divided by the number of epochs.
"""

from __future__ import annotations

import importlib.util
import statistics
import time

import jax
import numpy as np
import optax
from flax import nnx

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


def epoch_seconds(tr: Trainer, data, repeats: int) -> float:
    """Median time of one epoch of ``tr`` on ``data`` (after a warm-up fit that compiles)."""
    tr.fit(data, epochs=1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tr.fit(data, epochs=1)
        jax.block_until_ready(tr.params)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    for tr in trainers.values():
        tr.fit(data, epochs=1)  # compiles
    samples = {name: [] for name in trainers}
    for _ in range(repeats):
        for name, tr in trainers.items():
            start = time.perf_counter()
            tr.fit(data, epochs=1)
            jax.block_until_ready(tr.params)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in samples.items()}


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
