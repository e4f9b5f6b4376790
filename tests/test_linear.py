"""fit_linear against independent scipy/sklearn solves of the same convex problems.

Each reference writes the regularized objective in its own form (primal variables plus
the dual or epigraph variables of the objective) with numpy and minimizes it with scipy
(BFGS/Nelder-Mead, SLSQP, or an exact LP with linprog), or uses a closed form or
scikit-learn; nothing here calls robustlearn to build a reference. The solver's exact
objective value must match to 1e-4 relative (the references' own accuracy).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special

import robustlearn as rl
from robustlearn import objectives, wasserstein
from robustlearn._src.reductions import engine
from robustlearn.objectives import Objective
from tests.conftest import xla_has_the_flag

L2 = 0.05
N, D = 60, 3


def _data(seed=0, n=N, d=D):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ np.array([1.5, -1.0, 0.5])[:d] + 0.5 * rng.normal(size=n) > 0).astype(float)
    return x, y


def _logistic(theta, x, y):
    w, b = theta[: x.shape[1]], theta[x.shape[1]]
    return np.logaddexp(0, -(2 * y - 1) * (x @ w + b))


def _reg(theta, d, l2=L2):
    return 0.5 * l2 * np.sum(theta[:d] ** 2)


def _minimize(fun, z0):
    best = None
    for method in ("BFGS", "Nelder-Mead"):
        res = optimize.minimize(fun, z0 if best is None else best.x, method=method,
                                options={"gtol": 1e-10, "maxiter": 20000} if method == "BFGS" else
                                {"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40000, "maxfev": 40000})  # fmt: skip
        best = res if best is None or res.fun < best.fun else best
    return best.fun


def _slsqp(obj, z0, constraints, bounds):
    res = optimize.minimize(obj, z0, method="SLSQP", constraints=constraints, bounds=bounds,
                            options={"ftol": 1e-13, "maxiter": 3000})  # fmt: skip
    assert res.success, res.message
    return res.fun


# --------------------------------------------------- references for every reduction


def ref_erm(x, y):
    d = x.shape[1]
    return _minimize(lambda t: _logistic(t, x, y).mean() + _reg(t, d), np.zeros(d + 1))


def ref_cvar(x, y, alpha):
    # min eta + 1/(alpha n) sum s_i + reg  s.t.  s_i >= loss_i - eta, s_i >= 0.
    n, d = x.shape
    m = d + 2
    cons = {"type": "ineq", "fun": lambda z: z[m:] - _logistic(z[: d + 1], x, y) + z[d + 1]}
    z0 = np.concatenate([np.zeros(d + 1), [0.0], np.full(n, 1.0)])
    bounds = [(None, None)] * m + [(0, None)] * n
    return _slsqp(lambda z: z[d + 1] + z[m:].sum() / (alpha * n) + _reg(z, d), z0, [cons], bounds)


def ref_tv(x, y, radius):
    # sup over TV(q, p) <= rho moves rho of the mass to the largest loss, taken from the
    # smallest: rho t + (1 - rho) eta + mean(s)  s.t.  t >= loss_i, s_i >= loss_i - eta, s >= 0.
    n, d = x.shape
    m = d + 3  # theta, t, eta

    def obj(z):
        return radius * z[d + 1] + (1 - radius) * z[d + 2] + z[m:].mean() + _reg(z, d)

    cons = [
        {"type": "ineq", "fun": lambda z: z[d + 1] - _logistic(z[: d + 1], x, y)},
        {"type": "ineq", "fun": lambda z: z[m:] - _logistic(z[: d + 1], x, y) + z[d + 2]},
    ]
    z0 = np.concatenate([np.zeros(d + 1), [1.0, 0.0], np.full(n, 1.0)])
    return _slsqp(obj, z0, cons, [(None, None)] * m + [(0, None)] * n)


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


# One reference per registered reduction: a new reduction fails here until it has one.
REFERENCES = {
    "erm": ({}, ref_erm),
    "cvar": ({"alpha": 0.3}, lambda x, y: ref_cvar(x, y, 0.3)),
    "chi_square": ({"radius": 0.5}, lambda x, y: ref_chi_square(x, y, 0.5)),
    "kl": ({"radius": 0.5}, lambda x, y: ref_kl(x, y, 0.5)),
    "cressie_read": ({"radius": 0.5, "k": 3.0}, lambda x, y: ref_cressie_read(x, y, 0.5, 3.0)),
    "tv": ({"radius": 0.2}, lambda x, y: ref_tv(x, y, 0.2)),
    "chi_square_penalty": ({"lam": 1.0}, lambda x, y: ref_chi_square_penalty(x, y, 1.0)),
    "kl_penalty": ({"lam": 0.5}, lambda x, y: ref_kl_penalty(x, y, 0.5)),
}


def test_every_registered_reduction_has_a_reference():
    assert set(REFERENCES) == set(rl.REDUCTIONS)


@pytest.mark.parametrize("name", list(rl.REDUCTIONS))
def test_every_reduction_matches_scipy(name):
    hyper, reference = REFERENCES[name]
    objective = objectives.from_reduction(name, **hyper)
    x, y = _data()
    solution = rl.train.fit_linear(x, y, objective, l2=L2)
    assert bool(solution.converged)
    assert float(solution.value) == pytest.approx(reference(x, y), rel=1e-4)
    # The reported value is the exact objective at the returned parameters.
    theta = np.concatenate([np.asarray(solution.params["w"]), [float(solution.params["b"])]])
    losses = _logistic(theta, x, y)
    exact = float(getattr(rl, name)(jnp.asarray(losses), **hyper)) + _reg(theta, D)
    assert exact == pytest.approx(float(solution.value), rel=1e-10)


def test_a_wrapped_objective_takes_the_path_of_its_flag():
    # A user wrapper around CVaR (another function, same flag and smoothed form) is solved
    # as CVaR: the solver is chosen by `smooth`, never by the identity of the objective.
    inner = objectives.cvar(0.3)

    def loss(loss_fn, params, batch, state, key):
        return inner.loss(loss_fn, params, batch, state, key)

    wrapped = Objective(inner.init, loss, "wrapped", smooth=False, smoothed=inner.smoothed, aux_init=inner.aux_init)
    x, y = _data()
    assert float(rl.train.fit_linear(x, y, wrapped, l2=L2).value) == pytest.approx(ref_cvar(x, y, 0.3), rel=1e-4)


# ------------------------------------------------------------ objectives beyond reductions


def test_worst_group_matches_slsqp_epigraph():
    x, y = _data(1)
    rng = np.random.default_rng(1)
    groups = rng.choice(3, size=N, p=[0.6, 0.3, 0.1])
    weights = rng.uniform(0.5, 2.0, size=N)
    solution = rl.train.fit_linear(x, y, objectives.worst_group(3), l2=L2, weights=weights, columns={"group": groups})
    d = x.shape[1]

    def group_means(theta):
        losses = _logistic(theta, x, y)
        return np.array([np.sum((weights * losses)[groups == g]) / np.sum(weights[groups == g]) for g in range(3)])

    # min t + reg  s.t.  t >= R_g(theta) for every group.
    cons = {"type": "ineq", "fun": lambda z: z[d + 1] - group_means(z[: d + 1])}
    expected = _slsqp(lambda z: z[d + 1] + _reg(z, d), np.concatenate([np.zeros(d + 1), [1.0]]), [cons], None)
    assert float(solution.value) == pytest.approx(expected, rel=1e-4)
    theta = np.concatenate([np.asarray(solution.params["w"]), [float(solution.params["b"])]])
    assert float(solution.metrics["worst_group_loss"]) == pytest.approx(group_means(theta).max(), rel=1e-10)


@pytest.mark.parametrize("self_normalize", [True, False])
def test_importance_weighted_matches_scipy(self_normalize):
    x, y = _data(2)
    weights = np.random.default_rng(2).exponential(size=N)
    objective = objectives.importance_weighted(self_normalize=self_normalize)
    solution = rl.train.fit_linear(x, y, objective, l2=L2, weights=weights)
    norm = weights.sum() if self_normalize else N
    expected = _minimize(lambda t: np.sum(weights * _logistic(t, x, y)) / norm + _reg(t, D), np.zeros(D + 1))
    assert float(solution.value) == pytest.approx(expected, rel=1e-4)


def _margin(loss):
    return (lambda z: np.logaddexp(0, -z)) if loss == "logistic" else (lambda z: np.maximum(1 - z, 0))


def test_wasserstein_logistic_l2_matches_slsqp():
    # min lam eps + sum_i p_i s_i + reg  s.t. s_i >= L(z_i), s_i >= L(-z_i) - lam kappa, lam^2 >= |w|^2, lam >= 0.
    x, y = _data(3)
    eps, kappa = 0.2, 1.0
    objective = wasserstein.linear_classification_objective(eps, kappa=kappa, norm="l2")
    solution = rl.train.fit_linear(x, y, objective, l2=L2)
    n, d = x.shape
    sign = 2 * y - 1
    m = d + 2
    loss = _margin("logistic")

    def margins(z):
        return sign * (x @ z[:d] + z[d])

    cons = [
        {"type": "ineq", "fun": lambda z: z[m:] - loss(margins(z))},
        {"type": "ineq", "fun": lambda z: z[m:] - loss(-margins(z)) + z[d + 1] * kappa},
        {"type": "ineq", "fun": lambda z: np.array([z[d + 1] ** 2 - np.sum(z[:d] ** 2)])},
    ]
    z0 = np.concatenate([np.zeros(d + 1), [1.0], np.full(n, 1.0)])
    bounds = [(None, None)] * (d + 1) + [(0, None)] + [(None, None)] * n
    expected = _slsqp(lambda z: eps * z[d + 1] + z[m:].mean() + _reg(z, d), z0, cons, bounds)
    assert float(solution.value) == pytest.approx(expected, rel=1e-4)
    # The reported value is the exact worst case at the returned parameters.
    w, b = solution.params["w"], solution.params["b"]
    exact = float(wasserstein.linear_classification(w, x, y, eps, kappa=kappa, intercept=b))
    assert exact + 0.5 * L2 * float(jnp.sum(w**2)) == pytest.approx(float(solution.value), rel=1e-10)


@pytest.mark.parametrize("norm", ["l1", "linf"])
def test_wasserstein_hinge_matches_the_linear_program(norm):
    # Hinge loss, polyhedral dual norm, no ridge: the whole problem is one LP.
    x, y = _data(4)
    eps, kappa = 0.1, 0.5
    objective = wasserstein.linear_classification_objective(eps, kappa=kappa, norm=norm, loss="hinge")
    solution = rl.train.fit_linear(x, y, objective, l2=0.0)
    n, d = x.shape
    sign = 2 * y - 1
    # Variables: w (d), b, lam, u (d) with u >= |w|, s (n).
    nv = d + 2 + d + n
    iw, ib, il, iu, isl = 0, d, d + 1, d + 2, d + 2 + d
    rows, rhs = [], []

    def row():
        r = np.zeros(nv)
        rows.append(r)
        return r

    for i in range(n):
        # s_i >= 1 - z_i  <=>  -s_i - sign_i x_i w - sign_i b <= -1
        r = row()
        r[iw:ib] = -sign[i] * x[i]
        r[ib] = -sign[i]
        r[isl + i] = -1
        rhs.append(-1.0)
        # s_i >= 1 + z_i - kappa lam  <=>  sign_i x_i w + sign_i b - kappa lam - s_i <= -1
        r = row()
        r[iw:ib] = sign[i] * x[i]
        r[ib] = sign[i]
        r[il] = -kappa
        r[isl + i] = -1
        rhs.append(-1.0)
    for j in range(d):  # u_j >= +-w_j
        for s in (1.0, -1.0):
            r = row()
            r[iw + j] = s
            r[iu + j] = -1
            rhs.append(0.0)
    if norm == "linf":  # dual l1: lam >= sum u
        r = row()
        r[iu : iu + d] = 1
        r[il] = -1
        rhs.append(0.0)
    else:  # dual linf: lam >= u_j
        for j in range(d):
            r = row()
            r[iu + j] = 1
            r[il] = -1
            rhs.append(0.0)
    c = np.zeros(nv)
    c[il] = eps
    c[isl:] = 1.0 / n
    bounds = [(None, None)] * (d + 1) + [(0, None)] * (1 + d + n)
    res = optimize.linprog(c, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds, method="highs")
    assert res.status == 0, res.message
    assert float(solution.value) == pytest.approx(res.fun, rel=1e-4)


# ------------------------------------------------------------ objectives written by a user


def _second_moment(c):
    """A user objective following the contract: mean + c * mean of squares, c in the state."""

    def init(key):
        del key
        return {"c": jnp.asarray(c, jnp.result_type(float))}

    def loss(loss_fn, params, batch, state, key):
        del key
        losses = loss_fn(params, batch)
        value = jnp.mean(losses) + state["c"] * jnp.mean(losses**2)
        return value, (state, {"objective": value})

    return Objective(init, loss, f"second_moment({c})", {"c": c})


def _max_loss():
    """A non-smooth user objective (the largest loss) with its own smoothed form."""

    def loss(loss_fn, params, batch, state, key):
        value = jnp.max(loss_fn(params, batch))
        return value, (state, {})

    def smoothed(loss_fn, params, batch, state, aux, tau):
        return tau * jax.nn.logsumexp(loss_fn(params, batch) / tau)  # within tau log n above

    return Objective(lambda key: (), loss, "max_loss", smooth=False, smoothed=smoothed, aux_init=lambda dtype: ())


def _previous_weighted():
    """A user objective that reads its own batch column."""

    def loss(loss_fn, params, batch, state, key):
        value = jnp.sum(batch["previous"] * loss_fn(params, batch)) / jnp.sum(batch["previous"])
        return value, (state, {})

    def check(data):
        if np.any(np.asarray(data["previous"]) < 0):
            raise ValueError("`previous` must be non-negative.")

    return Objective(lambda key: (), loss, "previous", check=check, requires=("previous",))


def test_user_smooth_objective_matches_scipy():
    x, y = _data(5)
    solution = rl.train.fit_linear(x, y, _second_moment(0.3), l2=L2)
    expected = _minimize(lambda t: _logistic(t, x, y).mean() + 0.3 * np.mean(_logistic(t, x, y) ** 2) + _reg(t, D),
                         np.zeros(D + 1))  # fmt: skip
    assert float(solution.value) == pytest.approx(expected, rel=1e-4)


def test_user_nonsmooth_objective_matches_slsqp_epigraph():
    x, y = _data(6)
    solution = rl.train.fit_linear(x, y, _max_loss(), l2=L2)
    d = x.shape[1]
    cons = {"type": "ineq", "fun": lambda z: z[d + 1] - _logistic(z[: d + 1], x, y)}
    expected = _slsqp(lambda z: z[d + 1] + _reg(z, d), np.concatenate([np.zeros(d + 1), [1.0]]), [cons], None)
    assert float(solution.value) == pytest.approx(expected, rel=1e-4)


def test_user_objective_reads_its_column():
    x, y = _data(7)
    previous = np.random.default_rng(7).uniform(0, 3, size=N)
    solution = rl.train.fit_linear(x, y, _previous_weighted(), l2=L2, columns={"previous": previous})
    expected = _minimize(lambda t: np.sum(previous * _logistic(t, x, y)) / previous.sum() + _reg(t, D),
                         np.zeros(D + 1))  # fmt: skip
    assert float(solution.value) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="`previous` must be non-negative"):
        rl.train.fit_linear(x, y, _previous_weighted(), columns={"previous": -previous})


# ------------------------------------------------------------- losses, units and scaling


def test_squared_erm_is_ridge_in_original_units_on_badly_scaled_data():
    # Closed form: (X'X/n + l2 I_w) [w; b] = X'y/n with the intercept unpenalized.
    rng = np.random.default_rng(8)
    x = rng.normal(size=(N, D)) * np.array([1e-3, 1.0, 1e4]) + np.array([0.0, 5e3, -2e5])
    y = 1e4 * (x @ np.array([2e3, -1.0, 3e-4]) + rng.normal(size=N))
    l2 = 1e-3
    solution = rl.train.fit_linear(x, y, objectives.erm(), loss="squared", l2=l2)
    xa = np.hstack([x, np.ones((N, 1))])
    a = xa.T @ xa / N + np.diag([l2] * D + [0.0])
    expected = np.linalg.solve(a, xa.T @ y / N)
    got = np.concatenate([np.asarray(solution.params["w"]), [float(solution.params["b"])]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_softmax_erm_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, N)
    x = rng.normal(size=(N, D)) + np.eye(3)[y] * 1.5
    solution = rl.train.fit_linear(x, y, objectives.erm(), loss="softmax", l2=L2)
    # sklearn: min C sum_i loss_i + |W|^2 / 2, i.e. l2 = 1 / (n C).
    ref = LogisticRegression(C=1.0 / (N * L2), tol=1e-12, max_iter=10000).fit(x, y)
    scores = x @ np.asarray(solution.params["w"]) + np.asarray(solution.params["b"])
    np.testing.assert_allclose(special.softmax(scores, axis=1), ref.predict_proba(x), atol=1e-6)


def test_standardization_changes_nothing_but_the_conditioning():
    x, y = _data(10)
    on = rl.train.fit_linear(x, y, objectives.kl(0.5), l2=L2)
    off = rl.train.fit_linear(x, y, objectives.kl(0.5), l2=L2, standardize=False)
    np.testing.assert_allclose(on.params["w"], off.params["w"], rtol=1e-5)
    assert float(on.value) == pytest.approx(float(off.value), rel=1e-10)


@pytest.mark.parametrize("value", [0.1, 1.0, 37.0])
def test_a_column_constant_on_the_weighted_rows_is_harmless(value):
    # A one-hot column that is constant on the rows carrying weight (zero-weight padding
    # rows differ) must not be blown up by its rounding-error variance: the fit equals the
    # fit without the column, whose coefficient is then 0 (the ridge; the intercept absorbs it).
    x, y = _data(12)
    n = len(y)
    weights = np.r_[np.ones(n), np.zeros(5)]
    col = np.r_[np.full(n, value), np.zeros(5)]
    x_pad = np.c_[np.r_[x, np.ones((5, x.shape[1]))], col]
    y_pad = np.r_[y, np.zeros(5, y.dtype)]
    with_col = rl.train.fit_linear(x_pad, y_pad, objectives.kl(0.5), l2=L2, weights=weights)
    without = rl.train.fit_linear(x, y, objectives.kl(0.5), l2=L2)
    np.testing.assert_allclose(with_col.params["w"][:-1], without.params["w"], atol=1e-6)
    assert abs(float(with_col.params["w"][-1])) < 1e-6
    assert float(with_col.value) == pytest.approx(float(without.value), rel=1e-8)


def test_rescaled_features_give_rescaled_coefficients():
    # Without a ridge, scaling feature j by s_j divides w_j by s_j (the same classifier).
    x, y = _data(11)
    scales = np.array([1e-4, 1.0, 1e4])
    base = rl.train.fit_linear(x, y, objectives.cvar(0.3))
    scaled = rl.train.fit_linear(x * scales, y, objectives.cvar(0.3))
    np.testing.assert_allclose(np.asarray(scaled.params["w"]) * scales, base.params["w"], rtol=1e-4)
    assert float(scaled.value) == pytest.approx(float(base.value), rel=1e-6)


@pytest.mark.parametrize("objective", [objectives.cvar(0.3), objectives.kl(0.5)], ids=["cvar", "kl"])
def test_float32_stops_early_and_matches_float64(objective):
    # The default tolerance follows the dtype: float32 stages end well before max_iter.
    x, y = _data(3)
    sol32 = rl.train.fit_linear(x.astype(np.float32), y.astype(np.float32), objective, l2=L2)
    sol64 = rl.train.fit_linear(x, y, objective, l2=L2)
    assert sol32.value.dtype == np.float32 and sol32.params["w"].dtype == np.float32
    assert int(sol32.iterations) < 1000
    assert float(sol32.value) == pytest.approx(float(sol64.value), rel=1e-4)


@pytest.mark.parametrize("stored", [False, True], ids=["jit", "program-store"])
def test_fit_linear_reuses_compiled_solver(stored, monkeypatch):
    # Other hyperparameters, l2, tol, weights and data of the same shapes must not recompile
    # the solver; a new objective structure must (one program: non-smooth objectives'
    # exact value at the end is part of it). Both ways a program is obtained count:
    # jax.jit's cache, and the program store (on with the tests' compilation cache), which
    # takes robustlearn's objectives but not this file's _second_moment (defined outside
    # robustlearn: always jitted).
    from robustlearn._src import program_store
    from robustlearn._src.training import linear as _linear

    if not stored:
        monkeypatch.setattr(program_store, "_directory", lambda: None)
    elif not jax.config.jax_compilation_cache_dir:
        pytest.skip("the program store needs JAX's compilation cache (conftest turns it on)")

    def programs():  # without the store the solver is compiled for compilation speed
        jitted = sum(f._cache_size() for f in (_linear._solve, _linear._solve_quick, _linear._solve_quickest))
        return jitted + program_store.stats["stored"] + program_store.stats["loaded"]

    x, y = _data(12, n=37 if stored else 38)  # shapes no other test compiles
    n = x.shape[0]
    for make, first, second in [
        (objectives.cvar, 0.3, 0.5),
        (_second_moment, 0.1, 0.7),
        (lambda r: wasserstein.linear_classification_objective(r, kappa=1.0), 0.1, 0.3),
    ]:
        before = programs()
        rl.train.fit_linear(x, y, make(first), l2=L2, weights=np.ones(n))
        assert programs() == before + 1
        rl.train.fit_linear(x + 1.0, y, make(second), l2=0.1, tol=1e-6, weights=np.arange(1.0, n + 1.0))
        assert programs() == before + 1


@pytest.mark.default_codegen  # under the suite's flags both programs are the same code
@pytest.mark.parametrize(
    "objective",
    [objectives.cvar(0.3), wasserstein.linear_classification_objective(0.1, kappa=1.0)],
    ids=["cvar", "wasserstein"],
)
def test_the_quick_compiled_solver_finds_the_default_solution(objective, monkeypatch):
    # Without a persistent cache fit_linear compiles with program_store.QUICK_OPTIONS (XLA:CPU's
    # elemental generator); under XLA's defaults that is other code than the stored program's.
    from robustlearn._src import program_store
    from robustlearn._src.training import linear as _linear

    monkeypatch.setattr(program_store, "_directory", lambda: None)
    monkeypatch.setattr(program_store, "stats", dict.fromkeys(program_store.stats, 0))
    x, y = _data(15, n=300)
    quick = rl.train.fit_linear(x, y, objective, l2=L2)
    assert program_store.stats["quick"] == (1 if xla_has_the_flag() else 0)  # an XLA without the option: defaults
    monkeypatch.setattr(_linear, "QUICK_MAX_ELEMENTS", -1)
    default = rl.train.fit_linear(x, y, objective, l2=L2)
    assert float(quick.value) == pytest.approx(float(default.value), rel=1e-10)
    for a, b in zip(jax.tree.leaves(quick.params), jax.tree.leaves(default.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_the_quick_solver_starts_the_duals_without_subsamples_on_up_to_2_18_rows(monkeypatch):
    # A process without a persistent cache compiles fit_linear's solver for compilation
    # speed; up to QUICK_SUBSAMPLES_FROM_ROWS rows its reductions solve from their analytic
    # start, without a copy of the solve per subsample level (~0.1-0.3 s less compilation),
    # to the optimum of the stored program, which keeps them.
    from robustlearn._src import program_store
    from robustlearn._src.reductions import kernels
    from robustlearn._src.training import linear as _linear

    seen = []
    real = kernels._levels
    monkeypatch.setattr(kernels, "_levels", lambda d: seen.append(d.levels) or real(d))
    monkeypatch.setattr(program_store, "_directory", lambda: None)
    x, y = _data(16, n=40_000)
    objective = objectives.chi_square(0.5)
    quick = rl.train.fit_linear(x[:, :3], y, objective, l2=L2)
    assert seen and set(seen) == ({()} if xla_has_the_flag() else {engine.SUBSAMPLE_LEVELS}), seen
    seen.clear()
    monkeypatch.setattr(_linear, "QUICK_MAX_ELEMENTS", -1)
    default = rl.train.fit_linear(x[:, :3], y, objective, l2=L2)
    assert set(seen) == {engine.SUBSAMPLE_LEVELS}, seen
    assert float(quick.value) == pytest.approx(float(default.value), rel=1e-10)


# ------------------------------------------------------------------------- bad inputs


def _bad(**kwargs):
    x, y = _data()
    args = {"x": x, "y": y, "objective": objectives.erm()} | kwargs
    rl.train.fit_linear(args.pop("x"), args.pop("y"), args.pop("objective"), **args)


NAN_X = _data()[0].copy()
NAN_X[3, 1] = np.nan
INF_X = _data()[0].copy()
INF_X[0, 0] = np.inf


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": NAN_X}, ValueError, r"`x` must be finite; got 1 NaN"),
        ({"x": INF_X}, ValueError, r"`x` must be finite"),
        ({"x": _data()[0] + 1j}, TypeError, r"`x` must be real; got complex"),
        ({"x": _data()[0].astype(str)}, TypeError, r"`x` must hold real numbers"),
        ({"x": _data()[0][:, 0]}, ValueError, r"`x` must have 2 dimension"),
        ({"x": np.zeros((N, 0))}, ValueError, r"`x` must have at least one row and one column"),
        ({"y": _data()[1][:-1]}, ValueError, r"`y` must have shape \(60,\)"),
        ({"y": _data()[1] + 1}, ValueError, r"\{0, 1\}"),
        ({"y": np.where(_data()[1] > 0, np.nan, 0.0)}, ValueError, r"`y` must be finite"),
        ({"y": np.arange(N) % 3 - 1, "loss": "softmax"}, ValueError, r"integer class ids >= 0"),
        ({"y": np.arange(N) % 3 + 0.5, "loss": "softmax"}, ValueError, r"integer class ids"),
        ({"y": np.arange(N) % 3, "loss": "softmax", "num_classes": 2}, ValueError, r"`num_classes` must be >= 2"),
        ({"weights": np.ones(N - 1)}, ValueError, r"`weights` must have shape \(60,\)"),
        ({"weights": -np.ones(N)}, ValueError, r"`weights` must be in \[0, inf\); got 60 negative"),
        ({"weights": np.full(N, np.nan)}, ValueError, r"`weights` must be finite"),
        ({"weights": np.zeros(N)}, ValueError, r"`weights` must have a positive total"),
        ({"max_iter": "many"}, TypeError, r"`max_iter` must be a positive int; got 'many'"),
        ({"max_iter": 1.5}, TypeError, r"`max_iter` must be a positive int"),
        ({"max_iter": 0}, ValueError, r"`max_iter` must be a positive int; got 0"),
        ({"tol": -1.0}, ValueError, r"`tol` must be in \[0, inf\)"),
        ({"tol": float("nan")}, ValueError, r"`tol` must be in \[0, inf\)"),
        ({"tol": "tight"}, TypeError, r"`tol` must be a real number"),
        ({"l2": -1.0}, ValueError, r"`l2` must be in \[0, inf\)"),
        ({"l2": float("inf")}, ValueError, r"`l2` must be in \[0, inf\)"),
        ({"loss": "hinge"}, ValueError, "`loss` must be one of"),
        ({"objective": rl.cvar}, TypeError, "`objective` must be a robustlearn.objectives.Objective"),
        ({"objective": objectives.worst_group(2)}, ValueError, r"requires the batch column\(s\) \['group'\]"),
        ({"objective": objectives.importance_weighted()}, ValueError, r"\['weight'\]; pass `weights=`"),
        ({"objective": objectives.worst_group(2), "columns": {"group": np.full(N, 2)}}, ValueError, r"ids must be in"),
        ({"columns": {"group": np.zeros(N - 1, int)}}, ValueError, r"`columns\['group'\]` must have a leading dim"),
        ({"columns": {"weight": np.ones(N)}}, ValueError, r"pass nominal weights as `weights=`"),
        ({"columns": [1, 2]}, TypeError, r"`columns` must be a mapping"),
        ({"columns": {"group": np.array(["a"] * N)}}, TypeError, r"`columns\['group'\]` must hold booleans or real"),
        ({"standardize": 1}, TypeError, r"`standardize` must be a bool"),
        (
            {"objective": objectives.group_dro(2, step_size=1.0), "columns": {"group": np.arange(N) % 2}},
            ValueError,
            "advances its state",
        ),
        (
            {"objective": objectives.cvar(0.5)._replace(smoothed=None)},
            ValueError,
            "is not smooth and has no `smoothed` form",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        _bad(**kwargs)


def test_softmax_losses_match_optax():
    # fit_linear writes the softmax cross-entropy out, so that importing it does not import optax.
    import optax  # noqa: PLC0415

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)) * 4), "b": jnp.asarray(rng.normal(size=3))}
    got = rl.train.linear_losses(params, jnp.asarray(x), jnp.asarray(y), "softmax")
    scores = x @ np.asarray(params["w"]) + np.asarray(params["b"])
    np.testing.assert_allclose(got, optax.softmax_cross_entropy_with_integer_labels(scores, y), rtol=1e-13)
    np.testing.assert_allclose(got, special.logsumexp(scores, axis=1) - scores[np.arange(40), y], rtol=1e-12)
