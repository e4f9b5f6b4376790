"""Step time of the Wasserstein objectives (WRM, Sinkhorn, exact linear) over ERM.

    python -m benchmarks.perf --part p4 [--quick]
    python -m benchmarks.perf.p4_wasserstein [--batch 1024] [--repeats 20]

One jitted training step (value, gradient, Adam update) per objective, timed as the
median of ``--repeats`` runs after warm-up. WRM's cost grows with its inner ascent
steps: the table reports the ratio to ERM and the ratio per inner step. All ratios come
from one run on one machine.
"""

from __future__ import annotations

import argparse
import platform

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._timing import median_seconds
from benchmarks.perf._common import captured
from robustlearn import objectives, wasserstein


def mlp_init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_apply(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None, :])
    return x @ params[-1]["w"] + params[-1]["b"][None, :]


def step_time(objective, loss_fn, params, batch, repeats):
    opt = optax.adam(1e-3)
    obj_state = objective.init(jax.random.PRNGKey(0))

    @jax.jit
    def step(params, state, key):
        grads, _ = jax.grad(lambda p: objective.loss(loss_fn, p, batch, obj_state, key), has_aux=True)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    key = jax.random.PRNGKey(0)
    return median_seconds(lambda: step(params, state, key), repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, args.dim)).astype(np.float32))
    y = jnp.asarray((rng.random(args.batch) < 0.5).astype(np.int32))
    batch = {"x": x, "y": y}
    params = mlp_init(jax.random.PRNGKey(0), [args.dim, 128, 128, 2])

    def mlp_loss(p, b):
        return optax.softmax_cross_entropy_with_integer_labels(mlp_apply(p, b["x"]), b["y"])

    print(f"device: {jax.devices()[0].device_kind}, {platform.machine()}; jax {jax.__version__}; float32")
    print(f"MLP {args.dim}-128-128-2, batch {args.batch}, one Adam step, median of {args.repeats}\n")
    base = step_time(objectives.erm(), mlp_loss, params, batch, args.repeats)
    print("| objective | step (ms) | / ERM | / ERM per inner step |")
    print("| --- | --- | --- | --- |")
    print(f"| erm() | {1e3 * base:.3g} | 1.00 | |")
    for steps in (1, 5, 15):
        t = step_time(wasserstein.wrm(1.0, steps=steps), mlp_loss, params, batch, args.repeats)
        print(f"| wrm(gamma=1, steps={steps}) | {1e3 * t:.3g} | {t / base:.2f} | {t / base / steps:.2f} |")
    for samples in (8, 32):
        t = step_time(wasserstein.sinkhorn(0.1, 0.05, num_samples=samples), mlp_loss, params, batch, args.repeats)
        print(f"| sinkhorn(radius=0.1, entropic_eps=0.05, num_samples={samples}) | {1e3 * t:.3g} | {t / base:.2f} | |")

    lin = {"w": jnp.zeros(args.dim), "b": jnp.zeros(())}
    sign = jnp.where(y > 0, 1.0, -1.0)

    def lin_loss(p, b):
        return jax.nn.softplus(-sign * (b["x"] @ p["w"] + p["b"]))

    base_lin = step_time(objectives.erm(), lin_loss, lin, batch, args.repeats)
    exact = wasserstein.linear_classification_objective(0.1, kappa=1.0)
    t_lin = step_time(exact, lin_loss, lin, batch, args.repeats)
    print(f"\nLinear logistic, d = {args.dim}, batch {args.batch}\n")
    print("| objective | step (ms) | / ERM |")
    print("| --- | --- | --- |")
    print(f"| erm() | {1e3 * base_lin:.3g} | 1.00 |")
    print(f"| wasserstein_linear(radius=0.1, kappa=1) | {1e3 * t_lin:.3g} | {t_lin / base_lin:.2f} |")


def run(quick: bool = False) -> str:
    """The tables as text (5 timing repeats with ``quick``, else 20)."""
    return captured("P4: Wasserstein objectives' step time over ERM", main, ["--repeats", "5" if quick else "20"])


if __name__ == "__main__":
    main()
