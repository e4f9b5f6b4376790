"""P7: two processes (jax.distributed on localhost) against one: same result, overhead.

    python -m benchmarks.perf --part p7 [--quick]

Trains P2's MLP (20 -> 64 -> 64 -> 2, float32, Adam, batch 1024) with cvar(0.1), from
the same initialization and seed, once in a single process and once in 2 processes
joined by ``jax.distributed`` (coordinator on 127.0.0.1, gloo CPU collectives, one CPU
device each), each holding half of the rows (``fit(..., process_local=True)``). Reports
the step time (a fit of several epochs after a warm-up fit that compiles, median of
repeats, divided by the steps), the first fit (tracing, compilation, the processes'
agreement), and the largest difference of the final parameters.

Both processes run on the same machine and share its cores: this measures the cost of
the collectives (gloo over localhost TCP) and of the agreement between processes, not a
speed-up. On a machine with fewer idle cores than processes the ratio also counts the
processes waiting for each other's time slices.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from benchmarks.perf._common import table


def _child(args) -> dict:
    import jax  # noqa: PLC0415

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes, process_id=args.process_id
        )
    import numpy as np  # noqa: PLC0415

    from benchmarks.perf.p2_minibatch import BATCH, make_data, trainer  # noqa: PLC0415
    from robustlearn import objectives  # noqa: PLC0415

    data = make_data(args.steps * BATCH)
    if args.num_processes > 1:
        data = {k: np.array_split(v, args.num_processes)[args.process_id] for k, v in data.items()}
    devices = jax.devices() if args.num_processes > 1 else None
    tr = trainer(objectives.cvar(0.1), devices=devices)
    start = time.perf_counter()
    tr.fit(data, epochs=1, process_local=args.num_processes > 1)
    jax.block_until_ready(tr.params)
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        tr.fit(data, epochs=args.epochs, process_local=args.num_processes > 1)
        jax.block_until_ready(tr.params)
        times.append(time.perf_counter() - start)
    params = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(tr.params)])
    out = {"first": first, "step": statistics.median(times) / (args.epochs * args.steps), "params": params.tolist()}
    if args.num_processes > 1:
        jax.distributed.shutdown()
    return out


def _launch(n: int, steps: int, epochs: int, repeats: int, timeout: float = 1200) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "benchmarks.perf.p7_processes", "--num-processes", str(n), "--port", str(port),
           "--steps", str(steps), "--epochs", str(epochs), "--repeats", str(repeats)]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen([*cmd, "--process-id", str(i)], env=env, **pipes) for i in range(n)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise RuntimeError(f"a P7 process failed (exit {p.returncode}):\n{err[-3000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])  # process 0's numbers


def run(quick: bool = False, steps: int | None = None, epochs: int | None = None, repeats: int | None = None) -> str:
    steps, epochs = steps or (8 if quick else 32), epochs or (2 if quick else 4)
    repeats = repeats or (3 if quick else 5)
    import numpy as np  # noqa: PLC0415

    one = _launch(1, steps, epochs, repeats)
    two = _launch(2, steps, epochs, repeats)
    diff = float(np.max(np.abs(np.asarray(one["params"]) - np.asarray(two["params"]))))
    rows = [
        ["1 process", f"{1e3 * one['step']:.3g}", "1.00", f"{one['first']:.2f}", ""],
        ["2 processes", f"{1e3 * two['step']:.3g}", f"{two['step'] / one['step']:.2f}", f"{two['first']:.2f}",
         f"{diff:.1e}"],
    ]  # fmt: skip
    return "\n".join([
        "### P7: Trainer on 2 processes (jax.distributed, localhost) against 1",
        "",
        f"P2's MLP, cvar(0.1), float32, batch 1024, {steps} steps per epoch, each process holding half of the rows; "
        f"step time from fits of {epochs} epochs (median of {repeats}). Both processes share this machine's cores.",
        "",
        table(["setup", "step (ms)", "/ 1 process", "first fit (s)", "max abs diff of final params"], rows),
    ])  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--process-id", "--num-processes", "--port", "--steps", "--epochs", "--repeats"):
        parser.add_argument(name, type=int, default=0)
    print(json.dumps(_child(parser.parse_args())))
