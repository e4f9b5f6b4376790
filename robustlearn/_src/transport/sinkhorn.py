r"""Entropic (Sinkhorn) Wasserstein DRO, in the dual of Wang, Gao & Xie (2021).

With the transport cost :math:`c(x, z) = \tfrac12\|z - x\|_2^2`, entropic regularization
:math:`\varepsilon > 0` relative to Lebesgue measure and the Sinkhorn discrepancy
:math:`W_\varepsilon(P, Q) = \inf_\gamma E_\gamma[c] + \varepsilon H(\gamma \mid P\otimes
\mathrm{Leb})`, the worst case :math:`\sup\{E_Q[\ell] : W_\varepsilon(\hat P, Q) \le \rho\}`
has the dual

.. math::

    \inf_{\lambda > 0}\ \lambda\bar\rho + \lambda\varepsilon\, E_{x\sim\hat P}
        \log E_{z\sim N(x,\ \varepsilon I)} \exp\!\Big(\frac{\ell(z)}{\lambda\varepsilon}\Big),
    \qquad \bar\rho = \rho + \varepsilon \log (2\pi\varepsilon)^{D/2},

:math:`D` the input dimension. We parametrize by :math:`\bar\rho \ge 0` (``radius``, the
budget above the entropic floor): :math:`\bar\rho = 0` gives the Gaussian-smoothed risk
:math:`E_x E_{z\sim N(x,\varepsilon I)}\ell(z)`, which tends to ERM as
:math:`\varepsilon \to 0`. With :math:`m` samples :math:`z_{ij}` per example (antithetic
pairs), the dual equals a KL-constrained problem on the sample cloud,

.. math::

    \sup_{w_i \in \Delta_m} \sum_i p_i \sum_j w_{ij}\ell_{ij}
    \quad\text{s.t.}\quad \sum_i p_i\, \mathrm{KL}(w_i \,\|\, \mathrm{unif}_m) \le \bar\rho/\varepsilon,

solved exactly: :math:`w_{ij} \propto e^{\beta\ell_{ij}}` with :math:`\beta = 1/(\lambda\varepsilon)`
found by safeguarded Newton. The multiplier is minimized per batch rather than carried as a
trained parameter; the gradient is :math:`\sum_{ij} p_i w_{ij} \nabla\ell_{ij}` (Danskin).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robustlearn._src import checks as _checks
from robustlearn._src.objectives.base import Objective
from robustlearn._src.reductions.rootfind import increasing_root


def sample_cloud_dual(
    losses: ArrayLike, budget: ArrayLike, weights: ArrayLike | None = None
) -> tuple[jax.Array, jax.Array]:
    r"""Solves :math:`\sup_w \sum_i p_i \sum_j w_{ij}\ell_{ij}` s.t. :math:`\sum_i p_i KL(w_i\|u) \le` ``budget``.

    Args:
        losses: ``(m, n)``: loss of sample ``j`` of example ``i`` at ``[j, i]``.
        budget: :math:`\bar\rho/\varepsilon \ge 0`.
        weights: nominal weights of the ``n`` examples (default uniform).

    Returns:
        ``(value, w)``: the optimal value (scalar) and the weights ``(m, n)`` (each column
        sums to 1); ``w`` is a constant for differentiation, the value's gradient with
        respect to ``losses`` is ``p * w``.
    """
    losses = jnp.asarray(losses)
    m, n = losses.shape
    p = jnp.full((n,), 1.0 / n, losses.dtype) if weights is None else jnp.asarray(weights, losses.dtype)
    p = p / jnp.sum(p)
    sg = jax.lax.stop_gradient(losses)
    top, bottom = jnp.max(sg, axis=0), jnp.min(sg, axis=0)
    spread = jnp.max(top - bottom)
    scale = jnp.where(spread > 0, spread, 1.0)
    # Per-example shift (each column's maximum becomes exactly 0) and one global scale:
    # the tilt of each column is invariant to its shift, and logits stay <= 0.
    ls = (sg - top[None, :]) / scale

    def tilt(beta):
        logits = beta * ls
        lse = jax.nn.logsumexp(logits, axis=0)
        w = jnp.exp(logits - lse[None, :])
        kl = beta * jnp.sum(w * ls, axis=0) - lse + jnp.log(m)
        return w, kl

    def excess(u):
        return jnp.sum(p * tilt(jnp.exp(u))[1]) - budget

    log_eps = jnp.log(jnp.finfo(ls.dtype).eps)
    u = increasing_root(excess, 2 * log_eps, -2 * log_eps)
    w, _ = tilt(jnp.exp(u))
    w = jnp.where(budget > 0, w, 1.0 / m)
    w = jax.lax.stop_gradient(w)
    return jnp.sum(p[None, :] * w * losses), w


def sinkhorn(radius: float, eps: float, *, num_samples: int = 32, input_key: str = "x") -> Objective:
    r"""Entropic Wasserstein DRO as an Objective (squared-Euclidean cost, Gaussian kernel).

    Each step draws ``num_samples`` perturbed copies :math:`z = x \pm \sqrt{\varepsilon}\,\xi`
    of every input (antithetic pairs, from the step's PRNG key), evaluates the per-example
    loss at all of them and returns the dual value above. Metrics: ``objective``,
    ``mean_loss`` (clean), ``smoothed_loss`` (the :math:`\bar\rho = 0` value).

    Args:
        radius: :math:`\bar\rho \ge 0`, the budget above the entropic floor.
        eps: entropic regularization :math:`\varepsilon > 0`; also the variance of the
            Gaussian kernel. Small ``eps`` approaches unregularized Wasserstein DRO but
            needs more samples.
        num_samples: samples per example, a positive even number.
        input_key: the batch entry to perturb.

    Returns:
        An :class:`~robustlearn.objectives.Objective` with empty state (it needs the
        ``key`` argument).

    References:
        Wang, Gao & Xie, *Sinkhorn distributionally robust optimization*, 2021
        (Operations Research 2025). Azizian, Iutzeler & Malick, *Regularization for
        Wasserstein distributionally robust optimization*, ESAIM COCV 2023.
    """
    _checks.scalar("radius", radius, low=0.0)
    _checks.scalar("eps", eps, low=0.0, low_open=True)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2 or num_samples % 2:
        raise ValueError(f"`num_samples` must be a positive even int; got {num_samples!r}.")

    def loss(loss_fn, params, batch, state, key):
        if key is None:
            raise ValueError("the sinkhorn objective needs a PRNG `key` to sample perturbations.")
        x = batch[input_key]
        n = x.shape[0]
        half = jax.random.normal(key, (num_samples // 2, *x.shape), x.dtype) * jnp.sqrt(jnp.asarray(eps, x.dtype))
        z = x[None] + jnp.concatenate([half, -half])  # (m, n, ...)
        rest = {k: jnp.broadcast_to(v[None], (num_samples, *v.shape)).reshape(num_samples * n, *v.shape[1:])
                for k, v in batch.items() if k != input_key}  # fmt: skip
        flat = {**rest, input_key: z.reshape(num_samples * n, *x.shape[1:])}
        sample_losses = loss_fn(params, flat).reshape(num_samples, n)
        mask = batch.get("mask")
        weights = batch.get("weight")
        p = jnp.ones((n,), sample_losses.dtype) if weights is None else jnp.asarray(weights, sample_losses.dtype)
        if mask is not None:
            p = jnp.where(mask, p, 0)
        value, _ = sample_cloud_dual(sample_losses, jnp.asarray(radius / eps, sample_losses.dtype), p)
        clean = loss_fn(params, batch)
        metrics = {
            "objective": value,
            "mean_loss": jnp.sum(p * clean) / jnp.sum(p),
            "smoothed_loss": jnp.sum(p[None, :] * sample_losses) / (num_samples * jnp.sum(p)),
        }
        return value, (state, metrics)

    name = f"sinkhorn(radius={radius!r}, eps={eps!r}, num_samples={num_samples})"
    config = {"radius": radius, "eps": eps, "num_samples": num_samples, "input_key": input_key}
    return Objective(lambda key: (), loss, name, config)
