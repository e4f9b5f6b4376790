"""Every reduction against an independent reference, in float64, to 1e-6 of the loss scale.

CVaR is compared with scipy's LP solver; the divergence balls and the chi-square penalty
are certified two-sided (our weights are feasible, so their expected loss is a lower
bound; scipy minimizes the Lagrangian dual, an upper bound); the KL penalty has a
closed form.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import robustlearn as rl
from tests import _references as ref
from tests.strategies import alphas, ks, lams, problems, radii

TOL = 1e-6


def _scale(losses):
    return max(1.0, float(np.max(np.abs(losses))))


def _assert_certified(value, q, losses, p, divergence, radius, upper):
    tol = TOL * _scale(losses)
    q = np.asarray(q)
    assert np.all(q >= 0)
    assert abs(q.sum() - 1) <= 1e-9
    assert divergence <= radius + 1e-8 * max(1.0, radius)
    lower = float(q @ losses)
    assert lower <= upper + tol, "weak duality violated: the reference is wrong"
    assert abs(value - upper) <= tol
    assert abs(value - lower) <= tol


@given(problems())
def test_erm_matches_weighted_mean(problem):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    expected = float(np.sum(p[p > 0] * losses[p > 0]))
    assert abs(float(rl.erm(losses, weights=w, where=where)) - expected) <= TOL * _scale(losses)


@given(problems(), alphas)
def test_cvar_matches_linear_program(problem, alpha):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    got = float(rl.cvar(losses, alpha, weights=w, where=where))
    assert abs(got - ref.cvar(losses, p, alpha)) <= TOL * _scale(losses)


@given(problems(), alphas)
def test_cvar_weights_solve_the_linear_program(problem, alpha):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    q = np.asarray(rl.cvar_weights(losses, alpha, weights=w, where=where))
    assert np.all(q >= 0) and np.all(q <= p / alpha + 1e-12)
    assert abs(q.sum() - 1) <= 1e-9
    assert abs(float(q @ losses) - ref.cvar(losses, p, alpha)) <= TOL * _scale(losses)


tv_radii = st.one_of(st.sampled_from([0.0, 1.0, 0.25, 0.5]), st.floats(0.0, 1.0))


@given(problems(), tv_radii)
def test_tv_matches_linear_program(problem, radius):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    expected = ref.tv(losses, p, radius)
    assert abs(float(rl.tv(losses, radius, weights=w, where=where)) - expected) <= TOL * _scale(losses)
    # The weights are feasible for the LP and attain its optimum.
    q = np.asarray(rl.tv_weights(losses, radius, weights=w, where=where))
    assert np.all(q >= 0) and abs(q.sum() - 1) <= 1e-9 and np.all(q[p == 0] == 0)
    assert 0.5 * np.abs(q - p).sum() <= radius + 1e-12
    assert abs(float(q @ losses) - expected) <= TOL * _scale(losses)


@given(problems(), radii)
def test_kl_certified_by_dual(problem, radius):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    value = float(rl.kl(losses, radius, weights=w, where=where))
    q = np.asarray(rl.kl_weights(losses, radius, weights=w, where=where))
    upper = ref.kl_dual_upper(losses, p, radius) if radius > 0 else float(p @ losses)
    _assert_certified(value, q, losses, p, ref.divergence("kl", q, p), radius, upper)


@given(problems(), radii)
def test_chi_square_certified_by_dual(problem, radius):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    value = float(rl.chi_square(losses, radius, weights=w, where=where))
    q = np.asarray(rl.chi_square_weights(losses, radius, weights=w, where=where))
    upper = ref.cressie_read_dual_upper(losses, p, radius, 2.0) if radius > 0 else float(p @ losses)
    _assert_certified(value, q, losses, p, ref.divergence("chi_square", q, p), radius, upper)


@given(problems(), radii, ks)
def test_cressie_read_certified_by_dual(problem, radius, k):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    value = float(rl.cressie_read(losses, radius, k, weights=w, where=where))
    q = np.asarray(rl.cressie_read_weights(losses, radius, k, weights=w, where=where))
    upper = ref.cressie_read_dual_upper(losses, p, radius, k) if radius > 0 else float(p @ losses)
    _assert_certified(value, q, losses, p, ref.divergence("cressie_read", q, p, k), radius, upper)


@given(problems(), lams)
def test_chi_square_penalty_certified_by_dual(problem, lam):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    value = float(rl.chi_square_penalty(losses, lam, weights=w, where=where))
    q = np.asarray(rl.chi_square_penalty_weights(losses, lam, weights=w, where=where))
    tol = TOL * _scale(losses)
    assert np.all(q >= 0) and abs(q.sum() - 1) <= 1e-9
    lower = float(q @ losses) - lam * ref.divergence("chi_square", q, p)
    upper = ref.chi_square_penalty_dual_upper(losses, p, lam)
    assert lower <= upper + tol
    assert abs(value - upper) <= tol
    assert abs(value - lower) <= tol


@given(problems(), lams)
def test_kl_penalty_matches_log_sum_exp(problem, lam):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    got = float(rl.kl_penalty(losses, lam, weights=w, where=where))
    assert abs(got - ref.kl_penalty(losses, p, lam)) <= TOL * _scale(losses)
    q = np.asarray(rl.kl_penalty_weights(losses, lam, weights=w, where=where))
    lower = float(q @ losses) - lam * ref.divergence("kl", q, p)
    assert abs(got - lower) <= TOL * _scale(losses)


@given(st.integers(2, 12), st.floats(1e-3, 0.15))
def test_chi_square_small_radius_is_mean_plus_std(n, radius):
    # Without clipping the closed form is mean + sqrt(2 rho) * std (population std).
    losses = np.linspace(0.0, 1.0, n)
    eta = losses.mean() - losses.std() / np.sqrt(2 * radius)
    assert eta < losses.min()  # the precondition: no weight is clipped at 0
    expected = losses.mean() + np.sqrt(2 * radius) * losses.std()
    assert abs(float(rl.chi_square(losses, radius)) - expected) <= 1e-9


def test_cressie_read_k2_is_chi_square():
    losses = np.array([0.3, -1.0, 2.0, 2.0, 0.1])
    for radius in (0.0, 0.05, 0.5, 5.0):
        assert abs(float(rl.cressie_read(losses, radius, 2.0)) - float(rl.chi_square(losses, radius))) <= 1e-12
