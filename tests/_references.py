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
    res = optimize.linprog(
        -losses,
        A_eq=np.ones((1, len(losses))),
        b_eq=[1.0],
        bounds=[(0, pi / alpha) for pi in p],
        method="highs",
    )
    assert res.status == 0, res.message
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
        # log E_p exp(z) = log1p(E_p expm1(z)) stays accurate when z = (x - max)/lambda ~ 0.
        lam = np.exp(log_lam)
        return lmax + lam * radius + lam * np.log1p(np.sum(ps * np.expm1((x - lmax) / lam)))

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
    assert res.status == 0, res.message
    return float(losses @ res.x[:n])
