"""Independent numpy/scipy references for the reductions.

Nothing here calls robustlearn. Constrained problems are certified two-sided: a
feasible ``q`` gives a lower bound on the optimum, and the Lagrangian dual evaluated at
any multipliers gives an upper bound (weak duality); scipy minimizes the dual.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special


def nominal(n, weights=None, where=None):
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if where is not None:
        w = np.where(where, w, 0.0)
    return w / w.sum()


def f_cressie_read(t, k):
    return (t**k - k * t + k - 1) / (k * (k - 1))


def f_conjugate_cressie_read(s, k):
    """sup_{t >= 0} s t - f_k(t), from the first-order condition f_k'(t) = s."""
    t = np.maximum(1 + (k - 1) * s, 0) ** (1 / (k - 1))
    return s * t - f_cressie_read(t, k)


def divergence(name, q, p, k=None):
    """D(q || p) for the divergence ``name`` (inf when q leaves the support of p)."""
    if np.any((p == 0) & (q > 0)):
        return np.inf
    s = p > 0
    if name == "kl":
        qs = q[s]
        return float(np.sum(np.where(qs > 0, qs * np.log(np.where(qs > 0, qs, 1) / p[s]), 0)))
    k = 2.0 if name == "chi_square" else k
    return float(np.sum(p[s] * f_cressie_read(q[s] / p[s], k)))


def cvar(losses, p, alpha):
    """CVaR by scipy's LP; by sorting where HiGHS cannot certify an optimum.

    HiGHS answers "model status unknown" on some degenerate problems (losses 1e-16 apart in
    [-1, 0]); :func:`cvar_sorted` is the other independent route.
    """
    res = optimize.linprog(
        -losses,
        A_eq=np.ones((1, len(losses))),
        b_eq=[1.0],
        bounds=[(0, pi / alpha) for pi in p],
        method="highs",
    )
    if res.status != 0:
        return cvar_sorted(losses, p, alpha)
    return float(losses @ res.x)


def _min_scalar(fn, lo, hi):
    res = optimize.minimize_scalar(fn, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13, "maxiter": 2000})
    return float(res.fun)


def kl_dual_upper(losses, p, radius):
    """min over lambda of lambda*rho + lambda*log E_p exp(x/lambda), and its limit max x."""
    s = p > 0
    x, ps = losses[s], p[s]
    lmax = float(x.max())

    def dual(log_lam):
        # log E_p exp(z) = log1p(E_p expm1(z)) stays accurate when z = (x - max)/lambda ~ 0;
        # log-sum-exp where E_p exp(z) is small.
        lam = np.exp(log_lam)
        z = (x - lmax) / lam
        s = np.sum(ps * np.expm1(z))
        log_e = np.log1p(s) if s > -0.5 else special.logsumexp(z, b=ps)
        return lmax + lam * radius + lam * log_e

    return min(lmax, _min_scalar(dual, -35.0, 15.0))


def cressie_read_dual_upper(losses, p, radius, k):
    """min over (lambda, eta) of lambda*rho + eta + lambda * E_p f*((x - eta)/lambda)."""
    s = p > 0
    x, ps = losses[s], p[s]
    lmax, spread = float(x.max()), float(x.max() - x.min()) + 1.0

    def over_eta(log_lam):
        lam = np.exp(log_lam)

        def dual(eta):
            return lam * radius + eta + lam * np.sum(ps * f_conjugate_cressie_read((x - eta) / lam, k))

        return _min_scalar(dual, float(x.min()) - 50 * spread, lmax + 50 * spread)

    return min(lmax, _min_scalar(over_eta, -30.0, 12.0))


def chi_square_penalty_dual_upper(losses, p, lam):
    s = p > 0
    x, ps = losses[s], p[s]
    spread = float(x.max() - x.min()) + lam

    def dual(eta):
        return eta + lam * np.sum(ps * f_conjugate_cressie_read((x - eta) / lam, 2.0))

    return _min_scalar(dual, float(x.min()) - 10 * spread, float(x.max()) + 10 * spread)


def kl_penalty(losses, p, lam):
    s = p > 0
    return float(lam * special.logsumexp(losses[s] / lam, b=p[s]))


def tv(losses, p, radius):
    """max q.l s.t. q >= 0, sum q = 1, sum t <= 2 radius, t >= |q - p|, by scipy's LP (variables q, t).

    q stays on the support of p: masked or zero-weight examples are not in the data set.
    Where HiGHS cannot certify an optimum (see :func:`cvar`), :func:`tv_sorted`.
    """
    n = len(losses)
    eye = np.eye(n)
    cost = np.concatenate([-losses, np.zeros(n)])
    a_ub = np.block([[eye, -eye], [-eye, -eye], [np.zeros((1, n)), np.ones((1, n))]])
    b_ub = np.concatenate([p, -p, [2 * radius]])
    a_eq = np.concatenate([np.ones(n), np.zeros(n)])[None, :]
    q_bounds = [(0, None if pi > 0 else 0) for pi in p]
    res = optimize.linprog(
        cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0], bounds=q_bounds + [(0, None)] * n, method="highs"
    )
    if res.status != 0:
        return tv_sorted(losses, p, radius)
    return float(losses @ res.x[:n])


def cressie_read_eta_dual(losses, p, radius, k):
    """The one-dimensional dual min over eta of eta + c_k(rho) E_p((l - eta)_+^k*)^(1/k*), k* = k/(k-1).

    A second, independent route (scipy's bounded scalar minimizer over eta on this convex
    function; Duchi & Namkoong 2021) usable at large n, where the two-variable dual above
    is slow, and for k near 1 or huge: the k*-norm is taken in logarithms (log-sum-exp),
    and c_k as exp(log1p(k (k-1) rho) / k) by logaddexp. For k -> 1 the optimal eta moves
    to about -range/(k-1): the search interval follows, and the float64 cancellation there
    is about 1e-16 (range/(k-1)).
    """
    s = p > 0
    x, ps = losses[s], p[s]
    lmax, spread = float(x.max()), float(x.max() - x.min())
    if spread == 0 or radius == 0:
        return float(np.sum(ps * x))
    kstar = k / (k - 1)
    log_c = np.logaddexp(0.0, np.log(k) + np.log(k - 1) + np.log(radius)) / k

    def dual(eta):
        r = np.maximum(x - eta, 0) / spread
        pos = r > 0
        if not np.any(pos):
            return eta
        log_m = special.logsumexp(kstar * np.log(r[pos]), b=ps[pos])
        return eta + spread * np.exp(log_c + log_m / kstar)

    reach = (1 + 1 / np.sqrt(radius)) * max(1.0, 4 / (k - 1))
    return min(lmax, _min_scalar(dual, float(x.min()) - spread * reach, lmax))


def kl_penalty_stable(losses, p, lam):
    """lam log E_p exp(l / lam) around the maximum with log1p/expm1: exact for any lam in float64."""
    s = p > 0
    x, ps = losses[s], p[s]
    lmax = float(x.max())
    z = (x - lmax) / lam
    if lam >= float(x.max() - x.min()):
        return lmax + lam * np.log1p(np.sum(ps * np.expm1(z)))
    return lmax + lam * special.logsumexp(z, b=ps)


def cvar_sorted(losses, p, alpha):
    """CVaR by sorting (for large n): the largest losses get p/alpha until the mass alpha is spent."""
    s = p > 0
    order = np.argsort(-losses[s], kind="stable")
    x, ps = losses[s][order], p[s][order]
    before = np.concatenate([[0.0], np.cumsum(ps)[:-1]])
    take = np.clip(alpha - before, 0, ps)
    return float(np.sum(take * x) / alpha)


def tv_sorted(losses, p, radius):
    """TV by sorting: the mass radius of the smallest losses moves onto the largest."""
    s = p > 0
    x = losses[s]
    lower = -cvar_sorted(-x, p[s] / p[s].sum(), radius) if radius > 0 else 0.0
    return float(np.sum(p[s] * x) + radius * (x.max() - lower))


def value(name, losses, p, hyper):
    """The reference value of reduction ``name`` (float64), from the routes above.

    Every reduction is equivariant under ``l -> a + b l`` (``b > 0``; penalties ``lam ->
    b lam``): the losses are standardized to ``[-1, 0]`` first, so that the solvers'
    search intervals fit losses of any size (1e38 included).
    """
    s = p > 0
    top, spread = float(losses[s].max()), float(losses[s].max() - losses[s].min())
    if spread == 0:  # every q on the support gives that loss (and every penalty is >= 0 at q = p)
        return top
    if name != "erm":
        z = (losses - top) / spread
        h = {k: (v / spread if k == "lam" else v) for k, v in hyper.items()}
        return top + spread * _standardized_value(name, z, p, h)
    return _standardized_value(name, losses, p, hyper)


def _standardized_value(name, losses, p, hyper):
    h = hyper
    if name == "erm":
        return float(p[p > 0] @ losses[p > 0])
    # The LP solver for small n; sorting for large n or losses near the float range (HiGHS
    # fails on coefficients of 1e38).
    by_lp = len(losses) <= 2000 and np.max(np.abs(losses)) < 1e30
    if name == "cvar":
        return cvar(losses, p, h["alpha"]) if by_lp else cvar_sorted(losses, p, h["alpha"])
    if name == "tv":
        return tv(losses, p, h["radius"]) if by_lp else tv_sorted(losses, p, h["radius"])
    if name == "kl":
        return kl_dual_upper(losses, p, h["radius"]) if h["radius"] > 0 else float(p[p > 0] @ losses[p > 0])
    if name in ("chi_square", "cressie_read"):
        k = 2.0 if name == "chi_square" else h["k"]
        if h["radius"] == 0:
            return float(p[p > 0] @ losses[p > 0])
        if len(losses) <= 2000 and 1.1 <= k <= 20:  # where the two-variable dual's powers stay finite
            return cressie_read_dual_upper(losses, p, h["radius"], k)
        return cressie_read_eta_dual(losses, p, h["radius"], k)
    if name == "chi_square_penalty":
        return chi_square_penalty_dual_upper(losses, p, h["lam"])
    if name == "kl_penalty":
        return kl_penalty_stable(losses, p, h["lam"])
    raise KeyError(name)


def penalty(name, q, p, hyper):
    """The penalty subtracted from sum(q * l) in the value of ``name`` (0 for constrained forms)."""
    if name == "chi_square_penalty":
        return hyper["lam"] * divergence("chi_square", q, p)
    if name == "kl_penalty":
        return hyper["lam"] * divergence("kl", q, p)
    return 0.0
