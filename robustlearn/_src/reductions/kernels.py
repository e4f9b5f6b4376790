r"""Exact solvers ("kernels") of the reductions' convex problems, one per reduction.

Each kernel sees standardized losses ``ls`` (max 0, range 1 on the support, -1 off it),
the nominal ``p`` (0 off the support, sums to 1) and the loss range ``scale``, and
returns ``(q, penalty)``: the worst-case weights and the penalty in standardized units
(0 for constrained problems). The engine (:mod:`.engine`) turns that into a value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustlearn._src.reductions.rootfind import increasing_root


def erm_kernel(ls, p, scale):
    del scale
    return p, 0.0


def ordered_keys(x):
    """Integers in the same order as the floats ``x`` (IEEE-754 bit trick; -0.0 and 0.0 tie)."""
    itype = jnp.int32 if x.dtype.itemsize == 4 else jnp.int64
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, jnp.zeros_like(x), x), itype)
    return bits ^ ((bits >> (8 * x.dtype.itemsize - 1)) & jnp.iinfo(itype).max)


def upper_tail(x, p, mass):
    """The mass ``mass`` of ``p`` that sits on the largest ``x``: allocation ``a`` with ``0 <= a <= p``.

    ``a_i = p_i`` above the threshold ``v``, a common fraction of ``p_i`` at ``v`` (tied
    examples are treated alike) and 0 below, with ``sum(a) = mass``. The threshold is the
    smallest support value whose strictly larger values carry less than ``mass``. That sum
    only changes at values of ``x``, so a bisection over the integers that order the
    floats finds ``v`` exactly in 32 (float32) or 64 (float64) passes of O(n), without a
    sort.
    """
    in_support = p > 0
    key = ordered_keys(x)
    info = jnp.iinfo(key.dtype)

    def heavy(k):  # does the mass strictly above key k fill the budget?
        return jnp.sum(jnp.where(in_support & (key > k), p, 0)) >= mass

    lo = jnp.min(jnp.where(in_support, key, info.max)) - 1  # all the mass is above lo
    hi = jnp.max(jnp.where(in_support, key, info.min))  # no mass is above hi

    def bisect(_, bounds):
        lo, hi = bounds
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        big = heavy(mid)
        return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

    _, hi = jax.lax.fori_loop(0, 8 * key.dtype.itemsize, bisect, (lo, hi))
    threshold = jnp.max(jnp.where(in_support & (key <= hi), x, -jnp.inf))
    above = in_support & (x > threshold)
    at = in_support & (x == threshold)
    rest = mass - jnp.sum(jnp.where(above, p, 0))
    at_mass = jnp.sum(jnp.where(at, p, 0))
    fraction = jnp.clip(rest / jnp.where(at_mass > 0, at_mass, 1), 0, 1)
    return jnp.where(above, p, jnp.where(at, fraction * p, 0))


def cvar_kernel(ls, p, scale, alpha):
    """The largest losses get ``p / alpha`` until the budget is spent (fractional top-k)."""
    del scale
    return upper_tail(ls, p, alpha) / alpha, 0.0


def tv_kernel(ls, p, scale, radius):
    """Moves the mass ``radius`` from the smallest losses onto the largest one.

    Removing the lowest ``radius`` of the mass and adding it to the maximizers (in
    proportion to ``p`` when tied) is optimal: the value is
    ``radius * max + (1 - radius) * CVaR_{1 - radius}``, and the total variation moved is
    exactly ``radius`` (less when every loss is equal).
    """
    del scale
    in_support = p > 0
    at_max = in_support & (ls == 0)  # the standardized maximum is exactly 0
    max_mass = jnp.sum(jnp.where(at_max, p, 0))
    q = p - upper_tail(-ls, p, radius) + radius * jnp.where(at_max, p, 0) / max_mass
    return q, 0.0


def bounds(dtype):
    """Log-scale bracket wide enough to reach float precision at both ends."""
    log_eps = jnp.log(jnp.finfo(dtype).eps)
    return 2 * log_eps, -2 * log_eps


def cressie_read_kernel(ls, p, scale, radius, k):
    r"""Dual in the shift :math:`\eta = -e^s` (the maximum loss is 0).

    With :math:`c = (1 + k(k-1)\rho)^{1/k}`, :math:`a = 1/(k-1)` and
    :math:`\tilde x = (\ell - \eta)_+ / (-\eta)`, the optimal shift solves
    :math:`\log c + \log E_p[\tilde x^{a}] - \tfrac1k \log E_p[\tilde x^{a+1}] = 0`,
    which is increasing in :math:`s`; then :math:`q \propto p\,\tilde x^{a}`.
    """
    del scale
    a = 1 / (k - 1)
    log_c = jnp.log1p(k * (k - 1) * radius) / k
    in_support = p > 0

    def shifted(s):
        x = 1 + ls * jnp.exp(-s)
        active = in_support & (x > 0)
        return active, jnp.where(active, x, 1)

    def stationarity(s):
        active, x = shifted(s)
        n_moment = jnp.sum(jnp.where(active, p * x**a, 0))
        m_moment = jnp.sum(jnp.where(active, p * x ** (a + 1), 0))
        return log_c + jnp.log(n_moment) - jnp.log(m_moment) / k

    s_lo, s_max = bounds(ls.dtype)
    # c * (1 - e^{-s})^a >= 1 guarantees a non-negative stationarity value at s_hi.
    s_hi = -jnp.log(-jnp.expm1(-(k - 1) * log_c))
    s_hi = jnp.clip(jnp.where(jnp.isnan(s_hi), s_max, s_hi), s_lo, s_max)
    s = increasing_root(stationarity, s_lo, s_hi)
    active, x = shifted(s)
    weight = jnp.where(active, p * x**a, 0)
    q = weight / jnp.sum(weight)
    return jnp.where(radius > 0, q, p), 0.0


def chi_square_kernel(ls, p, scale, radius):
    return cressie_read_kernel(ls, p, scale, radius, jnp.asarray(2, ls.dtype))


def tilted(ls, p, beta):
    """Exponential tilt q ∝ p exp(beta ls) and its log-normalizer."""
    logits = jnp.where(p > 0, beta * ls + jnp.log(jnp.where(p > 0, p, 1)), -jnp.inf)
    log_z = jax.nn.logsumexp(logits)
    return jnp.exp(logits - log_z), log_z


def kl_kernel(ls, p, scale, radius):
    r"""Dual in :math:`u = \log\lambda`: solve :math:`KL(q_\lambda \| p) = \rho`.

    :math:`\rho - KL(q_\lambda\|p)` is the derivative of the dual objective and increases
    with :math:`\lambda`. Since the standardized range is 1, Hoeffding's lemma gives
    :math:`KL(q_\lambda\|p) \le 1/(8\lambda^2)`, so :math:`\lambda = 1/\sqrt{8\rho}`
    is a valid upper end of the bracket.
    """
    del scale

    def excess(u):
        beta = jnp.exp(-u)
        q, log_z = tilted(ls, p, beta)
        return radius - (beta * jnp.sum(q * ls) - log_z)

    u_lo, u_max = bounds(ls.dtype)
    u_hi = jnp.clip(-0.5 * jnp.log(8 * radius), u_lo, u_max)
    u = increasing_root(excess, u_lo, u_hi)
    q, _ = tilted(ls, p, jnp.exp(-u))
    return jnp.where(radius > 0, q, p), 0.0


def chi_square_penalty_kernel(ls, p, scale, lam):
    r"""Solve :math:`\sum_i p_i (1 + (\ell_i - \eta)/\lambda)_+ = 1` for :math:`\eta`.

    The left side is piecewise linear and decreasing in :math:`\eta`, so the safeguarded
    Newton iteration lands on the exact root. The bracket is :math:`[E_p \ell, \lambda]`
    (the sum is at least 1 at :math:`E_p\ell` and 0 at :math:`\lambda \ge \max \ell`).
    """
    lam = lam / scale
    in_support = p > 0

    def excess(eta):
        return 1 - jnp.sum(jnp.where(in_support, p * jnp.maximum(1 + (ls - eta) / lam, 0), 0))

    eta = increasing_root(excess, jnp.sum(p * ls), lam)
    ratio = jnp.where(in_support, jnp.maximum(1 + (ls - eta) / lam, 0), 0)
    q = p * ratio
    # lam * p (t - 1)^2 / 2 written without squaring the (possibly huge) ratio t.
    penalty = 0.5 * jnp.sum(jnp.where(ratio > 0, (ls - eta) * (q - p), lam * p))
    return q, penalty


def kl_penalty_kernel(ls, p, scale, lam):
    lam = lam / scale
    q, log_z = tilted(ls, p, 1 / lam)
    # lam * KL(q || p) = sum(q * ls) - lam * log Z.
    return q, jnp.sum(q * ls) - lam * log_z
