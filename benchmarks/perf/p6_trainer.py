"""P6: the Trainer's fixed costs: a grid's first fit against its later fits, and checkpoint formats.

    python -m benchmarks.perf --part p6 [--quick]

Grid: four Trainers that differ only in a traced value (the KL radius, which lives in
the objective's state; Adam's learning rate through ``optax.inject_hyperparams``), each
built from a new model and fitted for a few epochs. The same grid runs twice, side by
side in one process: with the process-wide compile cache (the default) and with the
cache emptied before every fit (what every Trainer paid before the cache). XLA
compilations of the epoch program are counted with JAX's backend-compile event.

Checkpoints: a train state of an MLP with about 1M parameters and its Adam state (about
3M float32 numbers, 12 MB, random values), saved and restored by the Trainer's own format
(``robustlearn._src.training.checkpoint``: one file, JSON header, raw arrays, CRC-32)
and by ``orbax.checkpoint.StandardCheckpointer`` (installed with flax), median of
several rounds; and the import time of each in a fresh interpreter that has already
imported JAX.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks.perf._common import table
from benchmarks.perf.p1_linear import fit_ours_fresh
from robustlearn import objectives
from robustlearn._src.training import checkpoint as _ckpt
from robustlearn._src.training import compile_cache
from robustlearn.train import Trainer

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class MLP(nnx.Module):
    def __init__(self, rngs, sizes):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


def _data(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)}


def _grid(points, n: int, epochs: int, fresh_compile: bool) -> tuple[list[float], int]:
    """Wall seconds of each fit and the number of epoch compilations."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT and "robustlearn_epoch" in kwargs.get("fun_name", ""):
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    train, val = _data(n, 20), _data(n // 4, 20, 1)
    seconds = []
    try:
        compile_cache.clear()
        for seed, (objective, optimizer) in enumerate(points):
            if fresh_compile:
                compile_cache.clear()
            start = time.perf_counter()
            trainer = Trainer(
                MLP(nnx.Rngs(seed), (20, 64, 64, 2)),
                optax.softmax_cross_entropy_with_integer_labels,
                objective,
                optimizer,
                batch_size=256,
                verbose=False,
            )
            trainer.fit(train, val, epochs=epochs)
            jax.block_until_ready(trainer.params)
            seconds.append(time.perf_counter() - start)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return seconds, len(compiles)


def grid_table(n: int, epochs: int) -> str:
    grids = {
        "kl(radius), radius in 0.05, 0.2, 0.5, 1": [(objectives.kl(r), optax.adam(1e-3)) for r in (0.05, 0.2, 0.5, 1)],
        "inject_hyperparams(adam), lr in 1e-4 ... 1e-1": [
            (objectives.cvar(0.1), optax.inject_hyperparams(optax.adam)(learning_rate=lr))
            for lr in (1e-4, 1e-3, 1e-2, 1e-1)
        ],
    }
    rows = []
    for name, points in grids.items():
        for fresh in (False, True):
            seconds, compiles = _grid(points, n, epochs, fresh)
            later = statistics.median(seconds[1:])
            rows.append([
                name, "emptied before each fit" if fresh else "shared (default)", f"{seconds[0]:.2f}",
                " / ".join(f"{s:.2f}" for s in seconds[1:]), f"{seconds[0] / later:.1f}", str(compiles),
            ])  # fmt: skip
    return table(
        ["grid (4 Trainers)", "compile cache", "first fit (s)", "later fits (s)", "first / median later",
         "epoch compiles"],
        rows,
    )  # fmt: skip


# ------------------------------------------------------------------------ checkpoints


def _state(width: int):
    model = MLP(nnx.Rngs(0), (20, width, width, 2))
    params = nnx.split(model, nnx.Param, ...)[1]
    params = jax.tree.map(lambda a: a, params)
    opt_state = optax.adam(1e-3).init(params)
    count = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    # Random values everywhere (a trained state): zeros would flatter a compressing format.
    state = {"params": params, "opt_state": opt_state, "step": np.int32(7)}
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(0)
    leaves = [rng.normal(size=np.shape(x)).astype(np.asarray(x).dtype) for x in leaves]
    return jax.tree.unflatten(treedef, leaves), count


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _own(state, directory: str, repeats: int) -> tuple[float, float, int]:
    def save():
        _ckpt.write(directory, _ckpt.encode({"state": state}, {"epoch": 1}))

    def restore():
        path = os.path.join(directory, _ckpt.CURRENT)
        _, trees = _ckpt.decode(_ckpt.read_bytes(path), path)
        out = _ckpt.restore_tree(state, trees["state"], "state", path)
        jax.block_until_ready(out)

    t_save = _median(save, repeats)
    t_restore = _median(restore, repeats)
    return t_save, t_restore, os.path.getsize(os.path.join(directory, _ckpt.CURRENT))


def _orbax(state, directory: str, repeats: int) -> tuple[float, float, int]:
    import orbax.checkpoint as ocp  # noqa: PLC0415

    checkpointer = ocp.StandardCheckpointer()
    counter = iter(range(10**6))
    state = jax.tree.map(np.asarray, state)
    last = []

    def save():
        path = os.path.join(directory, f"orbax-{next(counter)}")
        checkpointer.save(path, state)
        checkpointer.wait_until_finished()
        last[:] = [path]

    def restore():
        out = checkpointer.restore(last[0], state)
        jax.block_until_ready(out)

    t_save = _median(save, repeats)
    t_restore = _median(restore, repeats)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(last[0]) for f in fs)
    checkpointer.close()
    return t_save, t_restore, size


def _import_seconds(module: str, repeats: int = 3) -> float:
    code = (
        "import time, jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready(); t = time.perf_counter(); "
        f"import {module}; print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def checkpoint_table(width: int, repeats: int) -> str:
    state, count = _state(width)
    rows = []
    with tempfile.TemporaryDirectory() as own_dir, tempfile.TemporaryDirectory() as orbax_dir:
        results = {
            "own format (robustlearn)": (_own(state, own_dir, repeats), "robustlearn._src.training.checkpoint"),
            "orbax StandardCheckpointer": (_orbax(state, orbax_dir, repeats), "orbax.checkpoint"),
        }
    for name, ((t_save, t_restore, size), module) in results.items():
        rows.append([name, f"{1e3 * t_save:.0f}", f"{1e3 * t_restore:.0f}", f"{size / 1e6:.1f}",
                     f"{_import_seconds(module):.2f}"])  # fmt: skip
    return (
        f"Train state of an MLP with {count / 1e6:.2f}M parameters plus its Adam state, median of {repeats}.\n\n"
        + table(["format", "save (ms)", "restore (ms)", "size (MB)", "import after jax (s)"], rows)
    )


def _estimator_fit(objective: str, n: int, cache: str) -> dict:
    """``RobustClassifier(objective)``'s fits in a fresh process (P1's worker, ``estimator:`` problems)."""
    return fit_ours_fresh(f"estimator:{objective}", n, cache)


def estimator_table(n: int) -> str:
    """``RobustClassifier``'s first fit in a fresh process: cold, with a warm compilation cache, and compiled."""
    rows = []
    for objective in ("cvar", "chi_square", "kl"):
        with tempfile.TemporaryDirectory() as cache:
            cold = _estimator_fit(objective, n, "-")
            _estimator_fit(objective, n, cache)  # fills the cache
            warm = _estimator_fit(objective, n, cache)
        rows.append([objective, f"{cold['import']:.2f}", f"{cold['first']:.2f}", f"{warm['first']:.2f}",
                     f"{warm['second']:.3f}"])  # fmt: skip
    return (
        f"`RobustClassifier(objective).fit(x, y)` on P1's data (n = {n}, d = 20), each in a fresh process; "
        "warm cache: JAX's persistent compilation cache filled by an earlier process; compiled: a second fit "
        "in the same process.\n\n"
        + table(["objective", "import (s)", "first fit, cold (s)", "first fit, warm cache (s)", "compiled (s)"], rows)
    )


def run(quick: bool = False) -> str:
    n, epochs = (1024, 2) if quick else (8192, 3)
    width, repeats = (256, 3) if quick else (1000, 7)
    return "\n".join([
        "### P6: Trainer fixed costs: compile once per grid; checkpoint formats",
        "",
        f"MLP 20-64-64-2, batch 256, {n} training examples, {epochs} epochs per fit, validation on {n // 4}.",
        "",
        grid_table(n, epochs),
        "",
        checkpoint_table(width, repeats),
        "",
        estimator_table(1000 if quick else 10_000),
    ])  # fmt: skip


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
