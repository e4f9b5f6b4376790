r"""Full-batch solver for robust objectives of convex linear models.

.. math::

    \min_{w, b}\ R\big(\ell(w, b; z_1), \dots, \ell(w, b; z_n)\big) + \tfrac{\mu}{2}\|w\|_2^2

with :math:`R` a robust reduction (convex and non-decreasing in each loss) and
:math:`\ell` a convex loss of the linear score, so the problem is convex. Smooth
reductions (the registry's ``smooth`` flag) are minimized directly by L-BFGS (Armijo
backtracking). Non-smooth ones (CVaR, TV) are solved in the registry's smoothed joint
form, e.g. for CVaR :math:`\min_{w,b,\eta} \eta + \frac1\alpha \sum_i p_i
(\ell_i - \eta)_+` with :math:`(u)_+` replaced by :math:`\tau\,
\mathrm{softplus}(u/\tau)`, :math:`\tau` decreasing by 10× per stage with warm starts
(the smoothing error is at most :math:`\tau \log 2/\alpha`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from robustlearn._src.objectives.base import Objective

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


def _lbfgs(fun, x0, max_iter: int, rtol, memory: int = 10, max_backtracks: int = 30):
    """L-BFGS with a backtracking Armijo line search (quadratic interpolation) from ``x0``.

    One loop whose body evaluates ``jax.value_and_grad(fun)`` once, at a trial point:
    accepted trials update the iterate and the curvature memory, rejected ones shrink the
    step. Keeping a single copy of the objective in the program keeps compilation short.
    Stops after ``max_iter`` accepted steps, when the gradient norm is at most
    ``rtol * max(1, |f|)``, or when ``max_backtracks`` trials in a row fail to lower ``f``
    by more than its float resolution. Returns
    ``(x, f(x), iterations, grad_norm)``.
    """
    flat0, unravel = ravel_pytree(x0)
    dtype = flat0.dtype
    dim = flat0.shape[0]
    value_and_grad = jax.value_and_grad(lambda v: fun(unravel(v)))
    c1 = 1e-4

    def direction(g, s_mem, y_mem, rho, count):
        # Two-loop recursion over the (circular) memory, newest first.
        newest = (count - 1) % memory
        valid = jnp.arange(memory) < jnp.minimum(count, memory)

        def backward(j, carry):
            q, a = carry
            i = (newest - j) % memory
            ai = jnp.where(valid[i], rho[i] * (s_mem[i] @ q), 0.0)
            return q - ai * y_mem[i], a.at[i].set(ai)

        q, a = jax.lax.fori_loop(0, memory, backward, (g, jnp.zeros((memory,), dtype)))
        yy = y_mem[newest] @ y_mem[newest]
        gamma = jnp.where(count > 0, (s_mem[newest] @ y_mem[newest]) / jnp.where(yy > 0, yy, 1.0), 1.0)
        r = gamma * q

        def forward(j, r):
            i = (newest - (memory - 1 - j)) % memory
            bi = rho[i] * (y_mem[i] @ r)
            return r + jnp.where(valid[i], a[i] - bi, 0.0) * s_mem[i]

        return -jax.lax.fori_loop(0, memory, forward, r)

    def step(c):
        trial = c["x"] + c["t"] * c["d"]
        f_t, g_t = value_and_grad(trial)
        first = c["k"] < 0
        slope = c["g"] @ c["d"]
        accept = first | (jnp.isfinite(f_t) & (f_t <= c["f"] + c1 * c["t"] * slope))
        s, yv = trial - c["x"], g_t - c["g"]
        sy = s @ yv
        update = accept & ~first & (sy > jnp.finfo(dtype).eps * jnp.sqrt((s @ s) * (yv @ yv)))
        slot = c["m"] % memory
        s_mem = jnp.where(update, c["s"].at[slot].set(s), c["s"])
        y_mem = jnp.where(update, c["y"].at[slot].set(yv), c["y"])
        rho = jnp.where(update, c["rho"].at[slot].set(1.0 / jnp.where(update, sy, 1.0)), c["rho"])
        m = c["m"] + update.astype(jnp.int32)
        d_new = direction(g_t, s_mem, y_mem, rho, m)
        # Not a descent direction (numerical trouble): restart from steepest descent.
        bad = ~(g_t @ d_new < 0)
        d_new = jnp.where(bad, -g_t, d_new)
        m = jnp.where(bad, 0, m)
        gnorm = jnp.linalg.norm(g_t)
        t_first = jnp.where(m > 0, 1.0, 1.0 / jnp.maximum(1.0, gnorm))
        # Rejected: minimizer of the quadratic through f, slope and f_t, kept in [0.1 t, 0.5 t].
        curv = f_t - c["f"] - c["t"] * slope
        t_quad = -slope * c["t"] ** 2 / (2 * jnp.where(curv > 0, curv, 1.0))
        t_back = jnp.clip(
            jnp.where((curv > 0) & jnp.isfinite(t_quad), t_quad, 0.5 * c["t"]), 0.1 * c["t"], 0.5 * c["t"]
        )
        return {
            "x": jnp.where(accept, trial, c["x"]),
            "f": jnp.where(accept, f_t, c["f"]),
            "g": jnp.where(accept, g_t, c["g"]),
            "d": jnp.where(accept, d_new, c["d"]),
            "t": jnp.where(accept, t_first, t_back),
            "s": s_mem,
            "y": y_mem,
            "rho": rho,
            "m": jnp.where(accept, m, c["m"]),
            "k": c["k"] + accept.astype(jnp.int32),
            # A rejected trial, or an accepted one that lowers f by no more than its float
            # resolution, makes no progress; max_backtracks of them in a row end the loop.
            "fails": jnp.where(accept & (c["f"] - f_t > 4 * jnp.finfo(dtype).eps * jnp.abs(f_t)), 0, c["fails"] + 1),
        }

    def cond(c):
        gnorm = jnp.linalg.norm(c["g"])
        converged = gnorm <= rtol * jnp.maximum(1.0, jnp.abs(c["f"]))
        return (c["k"] < 0) | ((c["k"] < max_iter) & ~converged & (c["fails"] < max_backtracks))

    init = {
        "x": flat0,
        "f": jnp.asarray(jnp.inf, dtype),
        "g": jnp.zeros((dim,), dtype),
        "d": jnp.zeros((dim,), dtype),
        "t": jnp.zeros((), dtype),
        "s": jnp.zeros((memory, dim), dtype),
        "y": jnp.zeros((memory, dim), dtype),
        "rho": jnp.zeros((memory,), dtype),
        "m": jnp.zeros((), jnp.int32),
        "k": -jnp.ones((), jnp.int32),  # -1: the first trial (t = 0) evaluates f at x0
        "fails": jnp.zeros((), jnp.int32),
    }
    c = jax.lax.while_loop(cond, step, init)
    return unravel(c["x"]), c["f"], c["k"], jnp.linalg.norm(c["g"])


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
    tol: float | None = None,
) -> LinearSolution:
    """Solves the regularized robust objective of a linear model to high accuracy.

    The solver is compiled once per reduction, loss, ``max_iter``, shapes and dtypes;
    later calls with other data, hyperparameters, ``l2``, ``tol`` or ``weights`` of the
    same shapes reuse the compiled code.

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
        tol: stop a stage when the gradient norm is at most ``tol * max(1, |f|)`` (``f``
            the stage's objective). Default ``sqrt(eps)`` of the dtype of ``x``
            (1.5e-8 in float64, 3.5e-4 in float32). A stage also stops when an iteration
            no longer lowers ``f`` (the float resolution of ``f`` is reached).


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
    if not isinstance(objective, Objective) or objective.reduction is None:
        raise TypeError("`objective` must be a reduction objective from robustlearn.objectives (e.g. cvar(0.1)).")
    if loss not in _LOSSES:
        raise ValueError(f"`loss` must be one of {_LOSSES}; got {loss!r}.")
    if not l2 >= 0:
        raise ValueError(f"`l2` must be in [0, inf); got {l2!r}.")
    if tol is not None and not tol >= 0:
        raise ValueError(f"`tol` must be in [0, inf) or None; got {tol!r}.")
    if int(max_iter) < 1:
        raise ValueError(f"`max_iter` must be >= 1; got {max_iter!r}.")
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
    if weights is not None:
        weights = jnp.asarray(weights, x.dtype)
    reduction = objective.reduction
    hyper = {k: jnp.asarray(v, x.dtype) for k, v in objective.hyperparams.items()}
    finfo = np.finfo(np.dtype(x.dtype))
    rtol = float(np.sqrt(finfo.eps)) if tol is None else float(tol)
    # Non-smooth reductions: smoothing scales 1, 0.1, ... down to 10x below the square root
    # of the resolution.
    stages = 0 if reduction.smooth else int(np.ceil(1 - np.log10(finfo.eps) / 2))
    return _solve(
        x,
        y,
        weights,
        w0,
        hyper,
        jnp.asarray(l2, x.dtype),
        jnp.asarray(rtol, x.dtype),
        reduction=reduction,
        loss=loss,
        max_iter=int(max_iter),
        stages=stages,
    )


def _regularizer(params, l2):
    return 0.5 * l2 * jnp.sum(params["w"] ** 2)


@functools.partial(jax.jit, static_argnames=("reduction", "loss", "max_iter", "stages"))
def _solve(x, y, weights, params0, hyper, l2, rtol, *, reduction, loss, max_iter, stages):
    """The compiled solver: one compilation per (reduction, loss, max_iter, shapes, dtypes).

    ``hyper``, ``l2``, ``rtol`` and ``weights`` are traced, so new hyperparameters or data
    of the same shape reuse the compiled code. ``stages`` is the number of smoothing
    stages (0 for smooth reductions).
    """

    def exact(params):
        return reduction.value(linear_losses(params, x, y, loss), **hyper, weights=weights) + _regularizer(params, l2)

    if reduction.smooth:
        params, value, iters, gnorm = _lbfgs(exact, params0, max_iter, rtol)
        return LinearSolution(params, value, iters, gnorm)

    n = x.shape[0]
    p = jnp.full((n,), 1.0 / n, x.dtype) if weights is None else weights / jnp.sum(weights)
    values = tuple(hyper[name] for name in reduction.hyper_names)

    def stage(i, carry):
        z, total, _ = carry
        # From a smoothing scale of the order of the losses (1) down by 10x per stage.
        tau = jnp.asarray(10.0, x.dtype) ** -i.astype(x.dtype)

        def smooth(z):
            losses = linear_losses(z["params"], x, y, loss)
            return reduction.smoothed(losses, p, z["aux"], tau, *values) + _regularizer(z["params"], l2)

        z, _, iters, gnorm = _lbfgs(smooth, z, max_iter, rtol)
        return z, total + iters, gnorm

    z0 = {"params": params0, "aux": reduction.aux_init(x.dtype)}
    init = (z0, jnp.zeros((), jnp.int32), jnp.zeros((), x.dtype))
    z, total, gnorm = jax.lax.fori_loop(0, stages, stage, init)
    return LinearSolution(z["params"], exact(z["params"]), total, gnorm)
