r"""Full-batch solver for robust objectives of convex linear models.

.. math::

    \min_{w, b}\ R\big(\ell(w, b; z_1), \dots, \ell(w, b; z_n)\big) + \tfrac{\mu}{2}\|w\|_2^2

with :math:`R` a robust reduction (convex and non-decreasing in each loss) and
:math:`\ell` a convex loss of the linear score, so the problem is convex. Smooth
reductions are minimized directly by L-BFGS (optax, zoom line search). CVaR is not
smooth; it is solved in its joint form :math:`\min_{w,b,\eta} \eta + \frac1\alpha
\sum_i p_i (\ell_i - \eta)_+` with :math:`(u)_+` replaced by :math:`\tau\,
\mathrm{softplus}(u/\tau)`, :math:`\tau` decreasing by 10× per stage with warm starts
(the smoothing error is at most :math:`\tau \log 2/\alpha`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from robustlearn import _reductions
from robustlearn._objectives import Objective

_LOSSES = ("logistic", "softmax", "squared")


class LinearSolution(NamedTuple):
    """Result of :func:`fit_linear`.

    Attributes:
        params: ``{"w": (d,) or (d, C), "b": () or (C,)}``.
        value: the exact regularized robust objective at ``params``.
        iterations: L-BFGS iterations used (all stages).
        grad_norm: norm of the gradient at the end of the last stage.
    """

    params: dict
    value: jax.Array
    iterations: jax.Array
    grad_norm: jax.Array


def linear_losses(params, x, y, loss: str):
    """Per-example losses of a linear model: logistic (y in {0,1}), softmax (int y), squared."""
    b = params["b"]
    scores = x @ params["w"] + (b[None, :] if b.ndim else b)
    if loss == "logistic":
        return jax.nn.softplus(-(2 * y - 1) * scores)
    if loss == "softmax":
        return optax.softmax_cross_entropy_with_integer_labels(scores, y)
    return 0.5 * (scores - y) ** 2


def _lbfgs(fun, x0, max_iter: int, tol: float):
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state

    def cond(carry):
        _, state = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        return (count == 0) | ((count < max_iter) & (optax.tree.norm(grad) >= tol))

    x, state = jax.lax.while_loop(cond, step, (x0, opt.init(x0)))
    return x, optax.tree.get(state, "count"), optax.tree.norm(optax.tree.get(state, "grad"))


def fit_linear(
    x: ArrayLike,
    y: ArrayLike,
    objective: Objective,
    *,
    loss: str = "logistic",
    l2: float = 0.0,
    weights: ArrayLike | None = None,
    num_classes: int | None = None,
    max_iter: int = 2000,
    tol: float = 1e-9,
) -> LinearSolution:
    """Solves the regularized robust objective of a linear model to high accuracy.

    Args:
        x: features, shape ``(n, d)``.
        y: targets, shape ``(n,)``: {0, 1} for ``"logistic"``, class ids for
            ``"softmax"``, reals for ``"squared"``.
        objective: a reduction objective from :mod:`robustlearn.objectives`.
        loss: ``"logistic"``, ``"softmax"`` or ``"squared"``.
        l2: ridge strength :math:`\\mu \\ge 0` on ``w`` (not on the intercept).
        weights: optional nominal weights of the examples, shape ``(n,)``.
        num_classes: number of classes for ``"softmax"`` (default ``max(y) + 1``).
        max_iter: L-BFGS iterations per stage.
        tol: stop a stage when the gradient norm falls below this.

    Returns:
        A :class:`LinearSolution`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> x = jnp.array([[0.0], [1.0], [2.0], [3.0]]); y = jnp.array([0, 0, 1, 1])
        >>> sol = rl.train.fit_linear(x, y, rl.objectives.cvar(0.5), l2=0.1)
        >>> bool(sol.params["w"][0] > 0)
        True
    """
    if not isinstance(objective, Objective) or objective.spec is None:
        raise TypeError("`objective` must be a reduction objective from robustlearn.objectives (e.g. cvar(0.1)).")
    if loss not in _LOSSES:
        raise ValueError(f"`loss` must be one of {_LOSSES}; got {loss!r}.")
    if not l2 >= 0:
        raise ValueError(f"`l2` must be in [0, inf); got {l2!r}.")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    y = jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"`x` must be (n, d) and `y` (n,) with n >= 1; got {x.shape} and {y.shape}.")
    if loss == "logistic" and not bool(jnp.all((y == 0) | (y == 1))):
        raise ValueError("`y` must be in {0, 1} for the logistic loss.")
    if loss == "softmax":
        num_classes = int(jnp.max(y)) + 1 if num_classes is None else num_classes
        if int(jnp.min(y)) < 0 or int(jnp.max(y)) >= num_classes:
            raise ValueError(f"`y` must hold class ids in [0, {num_classes - 1}].")
        w0 = {"w": jnp.zeros((x.shape[1], num_classes), x.dtype), "b": jnp.zeros((num_classes,), x.dtype)}
    else:
        w0 = {"w": jnp.zeros((x.shape[1],), x.dtype), "b": jnp.zeros((), x.dtype)}
    y = y.astype(x.dtype) if loss != "softmax" else y
    reduction, hyper = objective.spec
    return _solve(reduction, hyper, x, y, weights, w0, loss=loss, l2=float(l2), max_iter=max_iter, tol=tol)


def _solve(reduction, hyper, x, y, weights, params0, *, loss, l2, max_iter, tol):
    def regularizer(params):
        return 0.5 * l2 * jnp.sum(params["w"] ** 2)

    def exact(params):
        return reduction(linear_losses(params, x, y, loss), **hyper, weights=weights) + regularizer(params)

    if reduction is not _reductions.cvar:
        params, iters, gnorm = jax.jit(lambda p: _lbfgs(exact, p, max_iter, tol))(params0)
        return LinearSolution(params, exact(params), iters, gnorm)

    alpha = hyper["alpha"]
    n = x.shape[0]
    p = jnp.full((n,), 1.0 / n, x.dtype) if weights is None else jnp.asarray(weights, x.dtype) / jnp.sum(weights)

    @jax.jit
    def stage(z, tau):
        def smooth(z):
            losses = linear_losses(z["params"], x, y, loss)
            excess = tau * jax.nn.softplus((losses - z["eta"]) / tau)
            return z["eta"] + jnp.sum(p * excess) / alpha + regularizer(z["params"])

        return _lbfgs(smooth, z, max_iter, tol)

    z = {"params": params0, "eta": jnp.zeros((), x.dtype)}
    total = jnp.zeros((), jnp.int32)
    finfo = np.finfo(np.dtype(x.dtype))
    # From a smoothing scale of the order of the losses down to float resolution.
    for tau in 10.0 ** np.arange(0, np.log10(finfo.eps) / 2 - 1, -1):
        z, iters, gnorm = stage(z, jnp.asarray(tau, x.dtype))
        total = total + iters
    return LinearSolution(z["params"], exact(z["params"]), total, gnorm)
