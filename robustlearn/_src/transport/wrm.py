r"""WRM: the Lagrangian (penalized) Wasserstein robust surrogate of Sinha, Namkoong & Duchi.

.. math::

    \phi_\gamma(\theta; x, y) = \sup_{z}\ \ell(\theta; z, y) - \gamma\, \|z - x\|_2^2,
    \qquad \text{objective} = E_{\hat P}[\phi_\gamma(\theta; x, y)].

The inner supremum is taken by a fixed number of gradient-ascent steps from ``z = x``
(jit- and vmap-friendly: no data-dependent loop). It is concave in ``z`` whenever
:math:`\ell` is smooth with curvature below :math:`2\gamma`, and then the ascent converges
linearly. By weak duality, for every radius :math:`\rho \ge 0` (``radius``),

.. math::

    \sup_{Q:\ W_c(Q, \hat P) \le \rho} E_Q[\ell] \le \gamma\rho + E_{\hat P}[\phi_\gamma],

with :math:`c(z, x) = \|z - x\|_2^2`: the certificate :func:`wrm_certificate`. The
gradient in :math:`\theta` is :math:`E[\nabla_\theta \ell(\theta; z^\star, y)]`
(Danskin); the ascent itself is not differentiated.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from robustlearn._src import checks as _checks
from robustlearn._src.objectives.base import Batch, LossFn, Objective, ReductionState
from robustlearn._src.reductions import api as _reductions
from robustlearn._src.transport._common import hyper_array, renamed

# Above this, gamma is used as this value: 2 * gamma * |z - x| in the ascent's gradient must not
# overflow, and the surrogate then differs from the clean loss by |grad loss|^2 / (4 * gamma) <=
# |grad loss|^2 * 2.5e-31, below float64 resolution for any gradient below 1e7.
_GAMMA_CAP = 1e30


def _validate(gamma, steps, step_size) -> jax.Array:
    """Raises for concrete bad values; returns a flag that is False for traced bad ones."""
    _, ok = _checks.scalar("gamma", gamma, low=0.0, low_open=True)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"`steps` must be an int in [0, inf); got {steps!r}.")
    if step_size is not None:
        _, step_ok = _checks.scalar("step_size", step_size, low=0.0, low_open=True)
        ok = ok & step_ok
    return ok


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
        gamma: penalty :math:`\gamma > 0` on the squared transport distance; values
            above ``1e30`` are used as ``1e30`` (the surrogate is then the clean loss to
            float precision, and ``2 gamma |z - x|`` cannot overflow).
        steps: number of gradient-ascent steps.
        step_size: ascent step; default :math:`1/(2\gamma)`, the inverse curvature of the
            penalty.
        input_key: the batch entry to perturb.

    Returns:
        ``(z, phi)``: perturbed inputs shaped like ``batch[input_key]`` and the per-example
        surrogate values :math:`\ell(z_i) - \gamma\|z_i - x_i\|^2`, shape ``(n,)``. Both are
        computed with ``params`` held constant (no gradient flows through them);
        :func:`wrm` re-evaluates the loss at ``z`` to differentiate. ``gamma`` and
        ``step_size`` may be traced; traced values outside their ranges give NaN.

    Examples:
        >>> import jax.numpy as jnp
        >>> from robustlearn import wasserstein
        >>> loss_fn = lambda w, b: 0.5 * (b["y"] - b["x"] @ w) ** 2
        >>> batch = {"x": jnp.array([[1.0, 0.0]]), "y": jnp.array([0.0])}
        >>> z, phi = wasserstein.wrm_perturb(loss_fn, jnp.array([1.0, 0.0]), batch, gamma=1.0, steps=200)
        >>> round(float(phi[0]), 4)  # closed form gamma r^2 / (2 gamma - |w|^2) = 1
        1.0
    """
    ok = _validate(gamma, steps, step_size)
    if input_key not in batch:
        raise ValueError(f"WRM perturbs batch[{input_key!r}]; got keys {sorted(batch)}.")
    x = jax.lax.stop_gradient(batch[input_key])
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"batch[{input_key!r}] must be real floating to be perturbed; got dtype {x.dtype}.")
    params = jax.lax.stop_gradient(params)
    gamma = jnp.minimum(jnp.asarray(gamma), _GAMMA_CAP)
    eta = 1.0 / (2.0 * gamma) if step_size is None else jnp.asarray(step_size)
    args = (loss_fn, params, {**batch, input_key: x}, gamma, eta, ok)
    try:
        hash(loss_fn)
    except TypeError:  # not usable as a static argument: traced in place (compiled per eager call)
        return _ascend(*args, steps=int(steps), input_key=input_key)
    return _ascend_jitted(*args, steps=int(steps), input_key=input_key)


def _ascend(loss_fn, params, batch, gamma, eta, ok, *, steps: int, input_key: str):
    """``steps`` gradient-ascent steps on the surrogate from ``batch[input_key]``: ``(z, phi)``."""
    x = batch[input_key]
    axes = tuple(range(1, x.ndim))

    def surrogate(z):
        losses = loss_fn(params, {**batch, input_key: z})
        return losses - gamma * jnp.sum((z - x) ** 2, axis=axes)

    def ascend(z, _):
        grad = jax.grad(lambda z: jnp.sum(surrogate(z)))(z)
        return z + eta * grad, None

    z, _ = jax.lax.scan(ascend, x, None, length=steps)
    return z, jnp.where(ok, surrogate(z), jnp.nan)


# Jitted with the loss function static: an eager call would otherwise trace and compile
# its scan again every time (a loop of functions defined inside).
_ascend_jitted = jax.jit(_ascend, static_argnames=("loss_fn", "steps", "input_key"))


def wrm(gamma: float, *, steps: int = 15, step_size: float | None = None, input_key: str = "x") -> Objective:
    r"""WRM as an Objective: minimize :math:`E[\phi_\gamma(\theta; x, y)]`.

    .. math::

        \text{value}(\theta) = \sum_i p_i \Big(\ell(\theta; z_i^\star, y_i) - \gamma\|z_i^\star - x_i\|_2^2\Big),

    :math:`z^\star` from :func:`wrm_perturb`, :math:`p` the nominal weights (``"weight"``,
    ``"mask"``). Metrics: ``objective`` (the surrogate mean), ``mean_loss`` (clean loss),
    ``perturbed_loss`` (loss at :math:`z^\star`) and ``transport`` (mean squared distance
    moved, the :math:`\rho` that the certificate :math:`\gamma\rho + E\phi` covers at
    this point). ``gamma`` and ``step_size`` live in the state as arrays
    (:class:`~robustlearn.objectives.ReductionState`; the default step
    :math:`1/(2\gamma)` is stored as a number), so a grid over them compiles once;
    ``steps`` and ``input_key`` are structural.

    Args:
        gamma: penalty :math:`\gamma > 0`; larger means a smaller effective radius
            (values above ``1e30`` are used as ``1e30``, see :func:`wrm_perturb`).
        steps: gradient-ascent steps of the inner maximization, an int ``>= 0``.
        step_size: ascent step ``> 0`` (default :math:`1/(2\gamma)`).
        input_key: the batch entry to perturb.

    Returns:
        An :class:`~robustlearn.objectives.Objective`; its state holds ``gamma`` and
        ``step_size``.

    References:
        Sinha, Namkoong & Duchi, *Certifying some distributional robustness with
        principled adversarial training*, ICLR 2018.
    """
    _validate(gamma, steps, step_size)
    steps = int(steps)
    if not isinstance(input_key, str):
        raise TypeError(f"`input_key` must be a str; got {input_key!r}.")
    step = 1.0 / (2.0 * min(float(gamma), _GAMMA_CAP)) if step_size is None else float(step_size)

    def init(key):
        del key
        return ReductionState({"gamma": hyper_array(min(float(gamma), _GAMMA_CAP)), "step_size": hyper_array(step)})

    def loss(loss_fn, params, batch, state, key):
        del key
        g, eta = state.hyperparams["gamma"], state.hyperparams["step_size"]
        z, _ = wrm_perturb(loss_fn, params, batch, g, steps=steps, step_size=eta, input_key=input_key)
        z = jax.lax.stop_gradient(z)
        axes = tuple(range(1, z.ndim))
        moved = jnp.sum((z - batch[input_key]) ** 2, axis=axes)
        perturbed = loss_fn(params, {**batch, input_key: z})
        mask = batch.get("mask")
        value = _reductions.erm(perturbed - g.astype(perturbed.dtype) * moved, weights=batch.get("weight"), where=mask)
        value = jnp.where((g > 0) & (eta > 0), value, jnp.nan)
        metrics = {
            "objective": value,
            "mean_loss": _reductions.erm(loss_fn(params, batch), where=mask),
            "perturbed_loss": _reductions.erm(perturbed, where=mask),
            "transport": _reductions.erm(moved, where=mask),
        }
        return value, (state, metrics)

    config = {"gamma": float(gamma), "steps": steps, "step_size": step_size, "input_key": input_key}
    return Objective(init, loss, f"wrm(gamma={gamma!r}, steps={steps})", config)


@renamed(rho="radius")
def wrm_certificate(surrogate_mean: ArrayLike, gamma: float, radius: ArrayLike) -> jax.Array:
    r"""Upper bound :math:`\gamma\rho + E[\phi_\gamma]` on the worst-case risk at radius :math:`\rho`.

    .. math::

        \sup_{Q:\ W_c(Q, \hat P) \le \rho} E_Q[\ell] \le \gamma\rho + E_{\hat P}[\phi_\gamma]

    for every :math:`\rho \ge 0` (weak duality), provided ``surrogate_mean`` is the exact
    :math:`E[\phi_\gamma]`; with an inexact inner maximization it is an estimate. A
    negative radius has no meaning (the bound would fall below the surrogate itself).

    Args:
        surrogate_mean: :math:`E[\phi_\gamma]`, e.g. the ``objective`` metric of :func:`wrm`.
        gamma: the penalty used, ``> 0``.
        radius: :math:`\rho` (mean squared transport distance), scalar or array, in
            ``[0, inf]``; concrete negative or NaN entries raise ``ValueError``, traced ones
            give NaN. (The keyword ``rho`` is a deprecated alias.)

    Returns:
        The bound, broadcast over ``radius``.

    Examples:
        >>> float(wrm_certificate(1.0, 2.0, 0.25))
        1.5
    """
    gamma, ok = _checks.scalar("gamma", gamma, low=0.0, low_open=True)
    radius = jnp.asarray(radius)
    if not _checks.is_traced(radius):
        r = np.asarray(radius)
        if not (np.issubdtype(r.dtype, np.floating) or np.issubdtype(r.dtype, np.integer)):
            raise TypeError(f"`radius` must be real numbers; got dtype {r.dtype}.")
        if np.any(np.isnan(r)):
            raise ValueError("`radius` must be in [0, inf]; got NaN.")
        if np.any(r < 0):
            raise ValueError(f"`radius` must be in [0, inf]; got minimum {float(r.min())!r}.")
    return jnp.where(ok & (radius >= 0), gamma * radius + surrogate_mean, jnp.nan)
