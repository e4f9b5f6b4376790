"""P5: data parallelism over 8 simulated CPU devices against 1 device: same result, step time.

    python -m benchmarks.perf --part p5 [--quick]

Runs itself in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(the flag must be set before JAX starts), trains the P2 MLP with ``Trainer(devices=None)``
and ``Trainer(devices=jax.devices())`` from the same initialization and seed, and reports
the largest absolute difference of the final parameters and the epoch-time ratio.
Simulated devices share the machine's real cores, so this checks correctness and
overhead, not speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.perf._common import table


def _child(epochs: int, steps: int, repeats: int) -> dict:
    import jax  # noqa: PLC0415  (after XLA_FLAGS is set)
    import numpy as np  # noqa: PLC0415

    from benchmarks.perf.p2_minibatch import BATCH, epoch_seconds, make_data, trainer  # noqa: PLC0415
    from robustlearn import objectives  # noqa: PLC0415

    data = make_data(steps * BATCH)
    single, multi = trainer(objectives.cvar(0.1)), trainer(objectives.cvar(0.1), devices=jax.devices())
    single.fit(data, epochs=epochs)
    multi.fit(data, epochs=epochs)
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), single.params, multi.params)
    return {
        "devices": len(jax.devices()),
        "max_abs_diff": max(jax.tree.leaves(diffs)),
        "t_single": epoch_seconds(single, data, repeats) / steps,
        "t_multi": epoch_seconds(multi, data, repeats) / steps,
    }


def run(quick: bool = False, epochs: int | None = None, steps: int | None = None, repeats: int | None = None) -> str:
    epochs, steps, repeats = epochs or (2 if quick else 5), steps or (10 if quick else 50), repeats or 3
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "benchmarks.perf.p5_devices", str(epochs), str(steps), str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    rows = [
        ["1 device", f"{1e3 * r['t_single']:.3g}", "1.00", ""],
        [f"{r['devices']} simulated devices", f"{1e3 * r['t_multi']:.3g}", f"{r['t_multi'] / r['t_single']:.2f}",
         f"{r['max_abs_diff']:.1e}"],
    ]  # fmt: skip
    return "\n".join([
        f"### P5: Trainer data parallelism, {r['devices']} simulated CPU devices against 1",
        "",
        f"P2's MLP, cvar(0.1), batch 1024, {epochs} epochs of {steps} steps from the same initialization and seed.",
        "",
        table(["setup", "step (ms)", "/ 1 device", "max abs diff of final params"], rows),
    ])  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(_child(*(int(a) for a in sys.argv[1:4]))))
