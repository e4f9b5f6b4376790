"""Where the Trainer's step time goes: a plain optax loop with the Trainer's per-step pieces added one at a time.

    python -m benchmarks.perf.step_parts [--hidden 64] [--repeats 7]

P2's MLP and batch (1024 rows of 20 features), Adam, one jitted ``lax.scan`` per epoch. The
step time of each variant is the slope between epochs of 20 and 80 steps (which removes each
call's fixed cost), median of interleaved rounds:

- ``plain``: contiguous minibatches (``dynamic_slice``), ``jnp.mean`` of the losses;
- ``+ shuffled gather``: each step gathers its rows by a random permutation drawn in the program
  (``jax.random.permutation``: a sort of random keys, as the Trainer did until 2026-11-27);
- ``+ gather per epoch``: the same permutation, one gather of the whole permuted data per epoch,
  then contiguous slices;
- ``+ host order``: each step gathers its rows by a permutation drawn by NumPy on the host and
  passed in (as the Trainer does now; the draw is inside the timed call);
- ``+ finiteness check``: the Trainer's check of the value and gradients and the select that keeps
  the last finite state;
- ``+ erm(where=mask)``: robustlearn's ERM reduction with the minibatch mask instead of ``jnp.mean``;
- ``Trainer``: ``robustlearn.train.Trainer`` with ``objectives.erm()`` on the same data.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import robustlearn as rl
from benchmarks._timing import interleaved_medians, per_step
from benchmarks.perf import p2_minibatch as p2
from benchmarks.perf._common import machine_line, table

VARIANTS = {
    "plain": {},
    "+ shuffled gather": {"gather": "step"},
    "+ gather per epoch": {"gather": "epoch"},
    "+ host order": {"gather": "host"},
    "+ finiteness check": {"finite": True},
    "+ erm(where=mask)": {"reduce": "erm"},
}


def plain_epoch(steps: int, hidden: int, gather: str = "", finite: bool = False, reduce: str = "mean"):
    """An epoch ``(X, Y) -> (params, state)`` (jitted) of ``steps`` minibatches with the chosen pieces."""
    graphdef, params = nnx.split(p2.MLP(nnx.Rngs(0), hidden))
    opt = optax.adam(1e-3)
    batch = p2.BATCH

    def loss(params, x, y, mask):
        losses = optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, params)(x), y)
        return jnp.mean(losses) if reduce == "mean" else rl.erm(losses, where=mask)

    @jax.jit
    def epoch(params, state, xs, ys, key, host_perm):
        n = xs.shape[0]
        starts = jnp.arange(steps) * batch
        perm = host_perm
        if gather in ("step", "epoch"):
            perm = jax.random.permutation(key, n)
        if gather == "epoch":
            xs, ys = xs[perm], ys[perm]

        def step(carry, k):
            params, state = carry
            if gather in ("step", "host"):
                rows = jax.lax.dynamic_slice_in_dim(perm, starts[k], batch)
                x, y = xs[rows], ys[rows]
            else:
                x = jax.lax.dynamic_slice_in_dim(xs, starts[k], batch)
                y = jax.lax.dynamic_slice_in_dim(ys, starts[k], batch)
            value, grads = jax.value_and_grad(loss)(params, x, y, jnp.ones(batch, bool))
            updates, new_state = opt.update(grads, state, params)
            new = (optax.apply_updates(params, updates), new_state)
            if finite:
                leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]
                ok = jnp.isfinite(value) & jnp.all(jnp.asarray(leaves))
                new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, (params, state))
            return new, value

        return jax.lax.scan(step, (params, state), jnp.arange(steps))[0]

    state = opt.init(params)

    def run(xs, ys):
        n = xs.shape[0]
        host_perm = jnp.asarray(np.random.default_rng(0).permutation(n).astype(np.int32)) if gather == "host" else None
        return epoch(params, state, xs, ys, jax.random.key(0), host_perm)

    return run


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=p2.HIDDEN)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    short, long = 20, 80
    medians = {}
    for steps in (short, long):
        data = p2.make_data(steps * p2.BATCH)
        xs, ys = jnp.asarray(data["x"]), jnp.asarray(data["y"])
        fns = {
            name: functools.partial(plain_epoch(steps, args.hidden, **opts), xs, ys) for name, opts in VARIANTS.items()
        }
        fns["Trainer"] = functools.partial(p2.fit_one_epoch, p2.trainer(rl.objectives.erm(), hidden=args.hidden), data)
        medians[steps] = interleaved_medians(fns, args.repeats)
    slopes = {name: per_step(medians[short][name], medians[long][name], short, long) for name in medians[short]}
    base = slopes["plain"][0]
    rows = [
        [name, f"{1e3 * step:.3g}", f"{step / base:.2f}", f"{1e3 * fixed:.3g}"]
        for name, (step, fixed) in slopes.items()
    ]
    text = "\n\n".join(
        [
            machine_line(),
            f"MLP {p2.DIM}-{args.hidden}-{args.hidden}-2, batch {p2.BATCH}; step = slope between epochs of {short} and "
            f"{long} steps, median of {args.repeats} interleaved rounds",
            table(["variant", "step (ms)", "/ plain", "fixed per call (ms)"], rows),
        ]
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
