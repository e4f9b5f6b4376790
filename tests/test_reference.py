"""Every reduction against an independent reference: in float64 to 1e-6 of the loss scale,
and in float32 (x64 off, what users run) to 32 eps of the largest loss.

CVaR is compared with scipy's LP solver; the divergence balls and the chi-square penalty
are certified two-sided (our weights are feasible, so their expected loss is a lower
bound; scipy minimizes the Lagrangian dual, an upper bound); the KL penalty has a
closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import robustlearn as rl
from tests import _references as ref
from tests.strategies import CASE_IDS, CASES, alphas, ks, lams, problems, radii

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


# ----------------------------------------------------------------------------- float32
#
# What users run: x64 off, float32 losses. The reference is the float64 optimum of the
# float32 problem (losses, weights and hyperparameters rounded to float32 first). Every
# input carries a relative rounding of eps/2 (eps = 2^-23), every pass sums terms of
# relative error a few eps, and the duals are solved until the next step is below 4 eps
# of the variable (CVaR/TV: a certificate of 4 eps of the range): the tolerance is 32 eps
# of the largest |loss| (>= half the range and >= |value|; the float32 result itself is
# only known to eps of its size), plus 1e-30 absolute (the float64 references' own floor
# on all-zero losses; subnormal float32 losses are flushed to 0 on CPU). The largest error
# measured is reported in docs/objectives.md. One vector length and value_and_grad (the
# value and q in one compilation) keep this to two compilations per reduction.

EPS32 = float(np.finfo(np.float32).eps)
TOL32 = 32 * EPS32

float32_hyper = {"alpha": alphas, "radius": radii, "k": ks, "lam": lams}


@pytest.mark.default_codegen
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@given(problem=problems(min_n=8, max_n=8), data=st.data())
def test_float32_matches_the_float64_reference(case, problem, data):
    losses, w, where = problem
    if where is not None:  # a mask is a zero weight: one compiled variant for both
        w = np.where(where, 1.0 if w is None else w, 0.0)
    hyper = {}
    for h in case.record.hyper:
        strategy = tv_radii if (case.name == "tv" and h.name == "radius") else float32_hyper[h.name]
        hyper[h.name] = float(np.float32(data.draw(strategy)))
    l32 = losses.astype(np.float32)
    w32 = None if w is None else w.astype(np.float32)
    with jax.enable_x64(False):
        value, q = jax.value_and_grad(lambda x: case.value(x, **hyper, weights=w32))(jnp.asarray(l32))
        assert value.dtype == np.float32 and q.dtype == np.float32
    value, q = float(value), np.asarray(q, np.float64)
    l64 = l32.astype(np.float64)
    p = ref.nominal(len(l64), None if w32 is None else w32.astype(np.float64))
    expected = ref.value(case.name, l64, p, hyper)
    tol = TOL32 * float(np.max(np.abs(l64))) + 1e-30
    assert abs(value - expected) <= tol, (value, expected)
    # The gradient (= the weights) is a distribution on the support that gives the value.
    assert np.all(q >= 0) and np.all(q[p == 0] == 0)
    assert abs(q.sum() - 1) <= 16 * EPS32
    # The penalty of the float32 weights: normalized (their sum is 1 to 16 eps, and q @ l
    # moves by at most that times max |l|), each q_i is then p_i (1 + delta_i) with |delta_i|
    # a few eps more than the exact weight's, so rounding adds at most lam * sum p delta^2
    # <= 16 lam eps^2 to either penalty (second order: their gradients cancel at q).
    # In a ball the weights are p (1 + sqrt(2 rho) (z - mu) / sigma) (or a power of it) and
    # may cancel to a small q_i: each carries a rounding of eps times its largest term, up to
    # sqrt(2 rho) times q_i's scale, so q @ l is checked to (1 + sqrt(2 rho)) times the tolerance.
    q = q / q.sum()
    rounding = 16 * hyper.get("lam", 0.0) * EPS32**2
    ball = 1 + np.sqrt(2 * hyper.get("radius", 0.0))
    assert abs(float(q @ l64) - ref.penalty(case.name, q, p, hyper) - value) <= tol * ball + rounding
