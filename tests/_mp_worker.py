"""One process of a multi-process test run (launched by tests/test_multiprocess.py).

Usage (from the repository root)::

    python -m tests._mp_worker --process-id I --num-processes N --port PORT --out DIR
        --scenarios train,reductions,callbacks,agreement,killed [--checkpoint-dir D] [--kill-dir K] [--resume]

With N > 1 the process joins ``jax.distributed`` (coordinator 127.0.0.1:PORT, gloo CPU
collectives) and holds only its shard of the data (``fit(..., process_local=True)``);
with N = 1 it is the single-process reference and trains on the concatenation of the
shards. Everything runs in float64. The results of the scenarios done so far are in
``DIR/result-I.json`` after each scenario. Importing this module changes no JAX
setting (``main`` does).

The scenario ``killed`` trains like ``callbacks`` (checkpoints in ``--kill-dir``), and
process 1 kills itself (SIGKILL) right after launching the program of epoch 4, so that
the processes are in the middle of that epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

STARTED = time.perf_counter()

import jax  # noqa: E402

N_TRAIN, N_VAL, BATCH, EPOCHS, LR = 61, 26, 16, 3, 0.05
# Uneven shards (including padding rows): the cut points of the global dataset per process count.
CUTS = {1: [], 2: [27], 4: [9, 27, 44]}
VAL_CUTS = {1: [], 2: [11], 4: [5, 11, 20]}
KILL_EPOCH = 4


def dataset(n: int, seed: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    group = (rng.random(n) < 0.3).astype(np.int32)
    logit = np.where(group == 0, x[:, 0] - x[:, 1], x[:, 2]) + 0.5 * rng.normal(size=n)
    return {"x": x, "y": (logit > 0).astype(np.int32), "group": group}


def shard(data: dict, cuts: list[int], p: int) -> dict:
    import numpy as np

    return {k: np.split(v, cuts)[p] for k, v in data.items()}


def init_params() -> dict:
    import numpy as np

    rng = np.random.default_rng(1)
    return {
        "w1": 0.5 * rng.normal(size=(3, 8)),
        "b1": np.zeros(8),
        "w2": np.zeros((8, 2)),
        "b2": np.zeros(2),
    }


def mlp(p, x):
    import jax.numpy as jnp

    return jnp.tanh(x @ p["w1"] + p["b1"][None]) @ p["w2"] + p["b2"][None]


def objectives():
    import robustlearn as rl

    return {
        "erm": rl.objectives.erm(),
        "cvar": rl.objectives.cvar(0.3),
        "kl": rl.objectives.kl(0.5),
        "group_dro": rl.objectives.group_dro(2, step_size=0.5),
        "wrm": rl.wasserstein.wrm(2.0, steps=3),
    }


def tolist(tree):
    import numpy as np

    return [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(tree)]


def trainer(objective, devices, cls=None, **kwargs):
    import optax

    import robustlearn as rl

    kwargs.setdefault("verbose", False)
    return (cls or rl.train.Trainer)(
        mlp, optax.softmax_cross_entropy_with_integer_labels, objective, optax.sgd(LR, momentum=0.9),
        params=init_params(), batch_size=BATCH, devices=devices, **kwargs,
    )  # fmt: skip


def my_data(args, data, cuts):
    """(data to pass, process_local): this process's shard, or everything for the reference."""
    if args.num_processes == 1:
        return data, False
    return shard(data, cuts[args.num_processes], args.process_id), True


def error_record(fn) -> dict:
    try:
        fn()
    except Exception as e:
        return {"type": type(e).__name__, "message": str(e)}
    return {"type": None, "message": ""}


# ---------------------------------------------------------------------- scenarios


def scenario_train(args, devices) -> dict:
    """Every objective trained on the shards (process-local), and ERM from the full data on every process."""
    train, local = my_data(args, dataset(N_TRAIN, 0), CUTS)
    out = {}
    for name, objective in objectives().items():
        start = time.perf_counter()
        t = trainer(objective, devices)
        history = t.fit(train, epochs=EPOCHS, process_local=local)
        out[name] = {"params": tolist(t.params), "history": history.rows, "seconds": time.perf_counter() - start}
    if args.num_processes > 1:  # the whole dataset on every process (the default)
        t = trainer(objectives()["erm"], devices)
        t.fit(dataset(N_TRAIN, 0), epochs=EPOCHS)
        out["erm_global_data"] = {"params": tolist(t.params)}
    return out


def scenario_reductions(args, devices) -> dict:
    """Every registered reduction of a loss vector sharded across the processes: its value and gradient.

    The reference (1 process) also gives the worst-case weights.
    """
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from tests.strategies import CASES

    losses = reduction_losses()
    n = args.num_processes
    local = np.split(losses, n)[args.process_id]
    mesh = Mesh(np.array(devices or jax.devices()[:1]), ("data",))
    sharded = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)

    def everything(x):
        out = {}
        for c in CASES:
            value, grad = jax.value_and_grad(lambda v, c=c: c.value(v, **c.hyper))(x)
            # Sharded like the losses: XLA may otherwise replicate a gradient that does not
            # depend on the losses' values (ERM's), and each process would hold all of it.
            grad = jax.lax.with_sharding_constraint(grad, NamedSharding(mesh, P("data")))
            out[c.name] = {"value": value, "grad": grad}
            if n == 1:
                out[c.name]["weights"] = c.weights(x, **c.hyper)
        return out

    result = jax.jit(everything)(sharded)
    return {
        name: {
            **{k: np.asarray(v.addressable_data(0)).tolist() for k, v in entry.items()},  # this process's shard
            "devices": len(entry["grad"].sharding.device_set),
        }
        for name, entry in result.items()
    }


def reduction_losses():
    import numpy as np

    return np.random.default_rng(2).standard_normal(24) * 2.0


def scenario_callbacks(args, devices, directory=None, kill_epoch=0) -> dict:
    """Validation, early stopping, progress output and checkpoints; killed mid-epoch, or resumed."""
    import robustlearn as rl
    from robustlearn._src.training import checkpoint as ckpt

    directory = directory or args.checkpoint_dir
    train, local = my_data(args, dataset(N_TRAIN, 0), CUTS)
    val, _ = my_data(args, dataset(N_VAL, 1), VAL_CUTS)
    writes = []
    original_write = ckpt.write

    def counting_write(where, data):
        writes.append(where)
        return original_write(where, data)

    class Killed(rl.train.Trainer):
        def _run_epoch(self, epoch, state, data, order, val_data, epoch_fn, eval_fn, base_key, callbacks):
            if epoch == kill_epoch and jax.process_index() == 1:
                # Launch the epoch (asynchronous dispatch: the processes are now inside
                # it, exchanging its collectives), then die without finishing it.
                epoch_fn(state, data, order, jax.random.fold_in(base_key, epoch))
                sys.stderr.write("worker: killing myself mid-epoch\n")
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return super()._run_epoch(epoch, state, data, order, val_data, epoch_fn, eval_fn, base_key, callbacks)

    # The same program as the group DRO run of scenario_train (compiled once), a stateful
    # objective (its group weights are in the checkpoint). val_loss falls until epoch 7,
    # then rises: early stopping stops after epoch 9 and restores epoch 7.
    t = trainer(
        objectives()["group_dro"], devices, cls=Killed if kill_epoch else None, checkpoint_dir=directory,
        callbacks=[rl.train.EarlyStopping("val_loss", patience=2)], verbose=True,
    )  # fmt: skip
    ckpt.write = counting_write
    try:
        history = t.fit(train, val, epochs=12, resume=args.resume, process_local=local)
    finally:
        ckpt.write = original_write
    return {
        "params": tolist(t.params),
        "last_state": tolist(t.state),
        "history": history.rows,
        "stopped_epoch": t.stopped_epoch,
        "best_epoch": t.best_epoch,
        "restored_epoch": history.restored_epoch,
        "start_epoch": t._start_epoch,
        "notes": history.notes,
        "writes": len(writes),
        "files": sorted(os.listdir(directory)),
    }


def scenario_killed(args, devices) -> dict:
    return scenario_callbacks(args, devices, directory=args.kill_dir, kill_epoch=KILL_EPOCH)


def scenario_agreement(args, devices) -> dict:
    """Processes that disagree, or fail on one process only, raise on every process."""
    import numpy as np

    me = args.process_id
    full = dataset(N_TRAIN, 0)
    train, _ = my_data(args, full, CUTS)
    erm = objectives()["erm"]
    out = {}
    out["seed"] = error_record(lambda: trainer(erm, devices, seed=me).fit(train, epochs=1, process_local=True))
    out["global_data"] = error_record(lambda: trainer(erm, devices).fit(train, epochs=1))
    bad = dict(train, x=train["x"].copy())
    if me == 1:
        bad["x"][0, 0] = np.nan
    out["nan_on_one"] = error_record(lambda: trainer(erm, devices).fit(bad, epochs=1, process_local=True))
    directory = args.checkpoint_dir if me == 0 else os.path.join(args.out, f"empty-{me}")
    out["checkpoint"] = error_record(
        lambda: trainer(erm, devices, checkpoint_dir=directory).fit(train, epochs=1, resume=True, process_local=True)
    )
    t = trainer(erm, devices, seed=None)
    t.fit(train, epochs=1, process_local=True)
    out["drawn_seed"] = t.seed
    x = np.random.default_rng(10 + me).normal(size=(5, 3))
    out["predict"] = {"x": x.tolist(), "out": np.asarray(t.predict(x)).tolist(), "params": tolist(t.params)}
    return out


SCENARIOS = {
    "train": scenario_train,
    "reductions": scenario_reductions,
    "callbacks": scenario_callbacks,
    "agreement": scenario_agreement,
    "killed": scenario_killed,
}


def write_result(args, result: dict) -> None:
    path = os.path.join(args.out, f"result-{args.process_id}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--scenarios", required=True)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--kill-dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")  # as in the test suite (conftest.py)
    devices = None
    if args.num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=120,
            heartbeat_timeout_seconds=20,
            shutdown_timeout_seconds=30,
        )
        devices = jax.devices()
        assert len(devices) == args.num_processes and len(jax.local_devices()) == 1, devices
    result = {
        "process_index": jax.process_index(),
        "seconds": {"start": time.perf_counter() - STARTED},
        "cpu_seconds": {"start": time.process_time()},
    }
    for name in args.scenarios.split(","):
        try:
            start, cpu = time.perf_counter(), time.process_time()
            result[name] = SCENARIOS[name](args, devices)
            result["seconds"][name] = time.perf_counter() - start
            result["cpu_seconds"][name] = time.process_time() - cpu
        except Exception:
            result[name] = {"crashed": traceback.format_exc()}
            write_result(args, result)
            raise
        write_result(args, result)
    if args.num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
