r"""WRM: the Lagrangian (penalized) Wasserstein robust surrogate of Sinha, Namkoong & Duchi.

.. math::

    \phi_\gamma(\theta; x, y) = \sup_{z}\ \ell(\theta; z, y) - \gamma\, \|z - x\|_2^2,
    \qquad \text{objective} = E_{\hat P}[\phi_\gamma(\theta; x, y)].

The inner supremum is taken by a fixed number of gradient-ascent steps from ``z = x``
(jit- and vmap-friendly: no data-dependent loop). It is concave in ``z`` whenever
:math:`\ell` is smooth with curvature below :math:`2\gamma`, and then the ascent converges
linearly. By weak duality, for every radius :math:`\rho \ge 0`,

.. math::

    \sup_{Q:\ W_c(Q, \hat P) \le \rho} E_Q[\ell] \le \gamma\rho + E_{\hat P}[\phi_\gamma],

with :math:`c(z, x) = \|z - x\|_2^2`: the certificate :func:`wrm_certificate`. The
gradient in :math:`\theta` is :math:`E[\nabla_\theta \ell(\theta; z^\star, y)]`
(Danskin); the ascent itself is not differentiated.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robustlearn._src import checks as _checks
from robustlearn._src.objectives.base import Batch, LossFn, Objective
from robustlearn._src.reductions import api as _reductions


def _validate(gamma, steps, step_size):
    _checks.scalar("gamma", gamma, low=0.0, low_open=True)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be an int in [0, inf); got {steps!r}.")
    if step_size is not None:
        _checks.scalar("step_size", step_size, low=0.0, low_open=True)


def wrm_perturb(
    loss_fn: LossFn,
    params: Any,
    batch: Batch,
    gamma: float,
    *,
    steps: int = 15,
    step_size: float | None = None,
    input_key: str = "x",
) -> tuple[jax.Array, jax.Array]:
    r"""Approximate inner maximizers :math:`z^\star` and the surrogate :math:`\phi_\gamma`.

    Args:
        loss_fn: per-example losses ``loss_fn(params, batch) -> (n,)``; example ``i``'s
            loss must depend on example ``i``'s input only.
        params: model parameters.
        batch: dict with the inputs under ``input_key`` (leading axis = examples).
        gamma: penalty :math:`\gamma > 0` on the squared transport distance.
        steps: number of gradient-ascent steps.
        step_size: ascent step; default :math:`1/(2\gamma)`, the inverse curvature of the
            penalty.
        input_key: the batch entry to perturb.

    Returns:
        ``(z, phi)``: perturbed inputs shaped like ``batch[input_key]`` and the per-example
        surrogate values :math:`\ell(z_i) - \gamma\|z_i - x_i\|^2`, shape ``(n,)``. Both are
        computed with ``params`` held constant (no gradient flows through them);
        :func:`wrm` re-evaluates the loss at ``z`` to differentiate.

    Examples:
        >>> import jax.numpy as jnp
        >>> from robustlearn import wasserstein
        >>> loss_fn = lambda w, b: 0.5 * (b["y"] - b["x"] @ w) ** 2
        >>> batch = {"x": jnp.array([[1.0, 0.0]]), "y": jnp.array([0.0])}
        >>> z, phi = wasserstein.wrm_perturb(loss_fn, jnp.array([1.0, 0.0]), batch, gamma=1.0, steps=200)
        >>> round(float(phi[0]), 4)  # closed form gamma r^2 / (2 gamma - |w|^2) = 1
        1.0
    """
    _validate(gamma, steps, step_size)
    x = jax.lax.stop_gradient(batch[input_key])
    params = jax.lax.stop_gradient(params)
    eta = 1.0 / (2.0 * gamma) if step_size is None else step_size
    axes = tuple(range(1, x.ndim))

    def surrogate(z):
        losses = loss_fn(params, {**batch, input_key: z})
        return losses - gamma * jnp.sum((z - x) ** 2, axis=axes)

    def ascend(z, _):
        grad = jax.grad(lambda z: jnp.sum(surrogate(z)))(z)
        return z + eta * grad, None

    z, _ = jax.lax.scan(ascend, x, None, length=steps)
    return z, surrogate(z)


def wrm(gamma: float, *, steps: int = 15, step_size: float | None = None, input_key: str = "x") -> Objective:
    r"""WRM as an Objective: minimize :math:`E[\phi_\gamma(\theta; x, y)]`.

    Metrics: ``objective`` (the surrogate mean), ``mean_loss`` (clean loss),
    ``perturbed_loss`` (loss at :math:`z^\star`) and ``transport`` (mean squared distance
    moved, the :math:`\rho` that the certificate :math:`\gamma\rho + E\phi` covers at
    this point).

    Args:
        gamma: penalty :math:`\gamma > 0`; larger means a smaller effective radius.
        steps: gradient-ascent steps of the inner maximization.
        step_size: ascent step (default :math:`1/(2\gamma)`).
        input_key: the batch entry to perturb.

    Returns:
        An :class:`~robustlearn.objectives.Objective` with empty state.

    References:
        Sinha, Namkoong & Duchi, *Certifying some distributional robustness with
        principled adversarial training*, ICLR 2018.
    """
    _validate(gamma, steps, step_size)

    def loss(loss_fn, params, batch, state, key):
        del key
        z, _ = wrm_perturb(loss_fn, params, batch, gamma, steps=steps, step_size=step_size, input_key=input_key)
        z = jax.lax.stop_gradient(z)
        axes = tuple(range(1, z.ndim))
        moved = jnp.sum((z - batch[input_key]) ** 2, axis=axes)
        perturbed = loss_fn(params, {**batch, input_key: z})
        mask = batch.get("mask")
        value = _reductions.erm(perturbed - gamma * moved, weights=batch.get("weight"), where=mask)
        metrics = {
            "objective": value,
            "mean_loss": _reductions.erm(loss_fn(params, batch), where=mask),
            "perturbed_loss": _reductions.erm(perturbed, where=mask),
            "transport": _reductions.erm(moved, where=mask),
        }
        return value, (state, metrics)

    config = {"gamma": gamma, "steps": steps, "step_size": step_size, "input_key": input_key}
    return Objective(lambda key: (), loss, f"wrm(gamma={gamma!r}, steps={steps})", config)


def wrm_certificate(surrogate_mean: ArrayLike, gamma: float, rho: ArrayLike) -> jax.Array:
    r"""Upper bound :math:`\gamma\rho + E[\phi_\gamma]` on the worst-case risk at radius ``rho``.

    Valid for every :math:`\rho \ge 0` (weak duality) provided ``surrogate_mean`` is the
    exact :math:`E[\phi_\gamma]`; with an inexact inner maximization it is an estimate.

    Args:
        surrogate_mean: :math:`E[\phi_\gamma]`, e.g. the ``objective`` metric of :func:`wrm`.
        gamma: the penalty used.
        rho: radius (mean squared transport distance), scalar or array.

    Returns:
        The bound, broadcast over ``rho``.
    """
    _checks.scalar("gamma", gamma, low=0.0, low_open=True)
    rho = jnp.asarray(rho)
    return gamma * rho + surrogate_mean
