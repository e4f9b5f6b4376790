"""The full-batch linear solver against independent scipy solves of the same convex problems.

Each reference writes the robust objective in its own joint form (primal variables plus
the dual variables of the reduction) with numpy and minimizes it with scipy, never
calling robustlearn. The solver's exact objective value must match to 1e-4 relative.
"""

import numpy as np
import pytest
from scipy import optimize, special

import robustlearn as rl
from robustlearn import objectives

L2 = 0.05


def _data(seed=0, n=120, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ np.array([1.5, -1.0, 0.5])[:d] + 0.5 * rng.normal(size=n) > 0).astype(float)
    return x, y


def _logistic(theta, x, y):
    w, b = theta[: x.shape[1]], theta[x.shape[1]]
    return np.logaddexp(0, -(2 * y - 1) * (x @ w + b))


def _reg(theta, d):
    return 0.5 * L2 * np.sum(theta[:d] ** 2)


def _minimize(fun, z0):
    best = None
    for method in ("BFGS", "Nelder-Mead"):
        res = optimize.minimize(fun, z0 if best is None else best.x, method=method,
                                options={"gtol": 1e-10, "maxiter": 20000} if method == "BFGS" else
                                {"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40000, "maxfev": 40000})  # fmt: skip
        best = res if best is None or res.fun < best.fun else best
    return best.fun


def ref_erm(x, y):
    d = x.shape[1]
    return _minimize(lambda t: _logistic(t, x, y).mean() + _reg(t, d), np.zeros(d + 1))


def ref_cvar(x, y, alpha):
    # min eta + 1/(alpha n) sum s_i + reg  s.t.  s_i >= loss_i - eta, s_i >= 0 (SLSQP).
    n, d = x.shape
    m = d + 2

    def obj(z):
        return z[d + 1] + z[m:].sum() / (alpha * n) + _reg(z, d)

    cons = {"type": "ineq", "fun": lambda z: z[m:] - _logistic(z[: d + 1], x, y) + z[d + 1]}
    z0 = np.concatenate([np.zeros(d + 1), [0.0], np.full(n, 1.0)])
    bounds = [(None, None)] * m + [(0, None)] * n
    res = optimize.minimize(obj, z0, method="SLSQP", constraints=[cons], bounds=bounds,
                            options={"ftol": 1e-13, "maxiter": 2000})  # fmt: skip
    assert res.success, res.message
    return res.fun


def ref_chi_square(x, y, radius):
    d = x.shape[1]
    c = np.sqrt(1 + 2 * radius)

    def fun(z):
        losses = _logistic(z[: d + 1], x, y)
        eta = z[d + 1]
        return eta + c * np.sqrt(np.mean(np.maximum(losses - eta, 0) ** 2)) + _reg(z, d)

    return _minimize(fun, np.concatenate([np.zeros(d + 1), [0.0]]))


def ref_kl(x, y, radius):
    d = x.shape[1]

    def fun(z):
        losses = _logistic(z[: d + 1], x, y)
        lam = np.exp(z[d + 1])
        return (
            lam * radius + lam * special.logsumexp(losses / lam, b=np.full(len(losses), 1 / len(losses))) + _reg(z, d)
        )

    return _minimize(fun, np.concatenate([np.zeros(d + 1), [0.0]]))


def ref_kl_penalty(x, y, lam):
    d = x.shape[1]
    n = len(y)
    return _minimize(
        lambda t: lam * special.logsumexp(_logistic(t, x, y) / lam, b=np.full(n, 1 / n)) + _reg(t, d), np.zeros(d + 1)
    )


def ref_chi_square_penalty(x, y, lam):
    d = x.shape[1]

    def conj(s):  # f2*(s) = sup_{t>=0} s t - (t-1)^2/2
        return np.where(s >= -1, s + 0.5 * s**2, -0.5)

    def fun(z):
        losses = _logistic(z[: d + 1], x, y)
        eta = z[d + 1]
        return eta + lam * np.mean(conj((losses - eta) / lam)) + _reg(z, d)

    return _minimize(fun, np.concatenate([np.zeros(d + 1), [0.5]]))


def ref_cressie_read(x, y, radius, k):
    # Lagrangian dual over (lambda, eta) with the conjugate of f_k, jointly with theta.
    d = x.shape[1]

    def conj(s):  # sup_{t>=0} s t - f_k(t), at t = (1 + (k-1) s)_+^(1/(k-1))
        t = np.maximum(1 + (k - 1) * s, 0) ** (1 / (k - 1))
        return s * t - (t**k - k * t + k - 1) / (k * (k - 1))

    def fun(z):
        losses = _logistic(z[: d + 1], x, y)
        lam, eta = np.exp(z[d + 1]), z[d + 2]
        return lam * radius + eta + lam * np.mean(conj((losses - eta) / lam)) + _reg(z, d)

    return _minimize(fun, np.concatenate([np.zeros(d + 1), [0.0, 0.5]]))


CASES = [
    (objectives.erm(), ref_erm),
    (objectives.cvar(0.3), lambda x, y: ref_cvar(x, y, 0.3)),
    (objectives.chi_square(0.5), lambda x, y: ref_chi_square(x, y, 0.5)),
    (objectives.kl(0.5), lambda x, y: ref_kl(x, y, 0.5)),
    (objectives.kl_penalty(0.5), lambda x, y: ref_kl_penalty(x, y, 0.5)),
    (objectives.chi_square_penalty(1.0), lambda x, y: ref_chi_square_penalty(x, y, 1.0)),
    (objectives.cressie_read(0.5, 3.0), lambda x, y: ref_cressie_read(x, y, 0.5, 3.0)),
]


@pytest.mark.parametrize(("objective", "reference"), CASES, ids=[c[0].name for c in CASES])
def test_full_batch_linear_matches_scipy(objective, reference):
    x, y = _data()
    solution = rl.train.fit_linear(x, y, objective, l2=L2)
    expected = reference(x, y)
    assert float(solution.value) == pytest.approx(expected, rel=1e-4)
    # The solver's value is exact at its parameters; recompute it independently.
    theta = np.concatenate([np.asarray(solution.params["w"]), [float(solution.params["b"])]])
    losses = _logistic(theta, x, y)
    assert float(objective.loss(lambda p, b: losses, None, {}, objective.init(None), None)[0]) + _reg(
        theta, 3
    ) == pytest.approx(float(solution.value), rel=1e-10)


def test_full_batch_softmax_and_squared_run():
    x, y = _data(1)
    sm = rl.train.fit_linear(x, y.astype(int), objectives.kl(0.2), loss="softmax", l2=L2)
    assert sm.params["w"].shape == (3, 2) and np.isfinite(float(sm.value))
    sq = rl.train.fit_linear(x, x[:, 0] * 2.0, objectives.chi_square(0.1), loss="squared", l2=0.0)
    np.testing.assert_allclose(sq.params["w"], [2.0, 0.0, 0.0], atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"loss": "hinge"}, ValueError, "`loss` must be one of"),
        ({"l2": -1.0}, ValueError, r"`l2` must be in \[0, inf\)"),
        ({"objective": rl.cvar}, TypeError, "reduction objective"),
    ],
)
def test_fit_linear_bad_arguments(kwargs, error, match):
    x, y = _data()
    args = {"objective": objectives.erm()} | kwargs
    with pytest.raises(error, match=match):
        rl.train.fit_linear(x, y, **args)


def test_fit_linear_rejects_non_binary_logistic_labels():
    x, y = _data()
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        rl.train.fit_linear(x, y + 1, objectives.erm())


def test_fit_linear_reuses_compiled_solver():
    # Other hyperparameters, l2, tol and data of the same shapes must not recompile.
    from robustlearn._src.training import linear as _linear

    x, y = _data(2)
    rl.train.fit_linear(x, y, objectives.cvar(0.3), l2=L2)
    size = _linear._solve._cache_size()
    rl.train.fit_linear(x + 1.0, y, objectives.cvar(0.5), l2=0.1, tol=1e-6)
    assert _linear._solve._cache_size() == size


@pytest.mark.parametrize("objective", [objectives.cvar(0.3), objectives.kl(0.5)], ids=["cvar", "kl"])
def test_fit_linear_float32_stops_early_and_matches_float64(objective):
    # The default tolerance follows the dtype: float32 stages end well before max_iter.
    x, y = _data(3)
    sol32 = rl.train.fit_linear(x.astype(np.float32), y.astype(np.float32), objective, l2=L2)
    sol64 = rl.train.fit_linear(x, y, objective, l2=L2)
    assert sol32.value.dtype == np.float32
    assert int(sol32.iterations) < 1000
    assert float(sol32.value) == pytest.approx(float(sol64.value), rel=1e-4)
