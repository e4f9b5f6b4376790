"""The safeguarded Newton root finder behind the KL and Cressie--Read duals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustlearn._src.reductions.rootfind import newton


def _solve(undefined_above, x0, lo, hi):
    """Root of ``x - 0.3`` (NaN above ``undefined_above``) and the number of evaluations."""
    calls = []

    def evaluate(x):
        jax.debug.callback(lambda: calls.append(1))
        f = jnp.where(x > undefined_above, jnp.nan, x - 0.3)
        return f, ()

    def derivative(x, extras):
        return jnp.ones_like(x)

    root = jax.jit(lambda: newton(evaluate, derivative, x0, lo, hi, tol=1e-14))()
    jax.block_until_ready(root.x)
    return float(root.x), len(calls)


def test_a_nan_at_a_trial_point_is_left_by_bisection():
    # f(1.5) is NaN; the bisection step to the midpoint 0.5 of [-1, 2] recovers.
    x, _ = _solve(1.0, 1.5, -1.0, 2.0)
    assert x == pytest.approx(0.3, abs=1e-12)


def test_a_nan_at_the_midpoint_too_stops_instead_of_retrying_it():
    # NaN at the start and at the midpoint 1.5 of [-1, 4]: the bracket cannot move, so
    # every later step would evaluate 1.5 again (it ran to the 100-step limit).
    x, evaluations = _solve(1.0, 3.0, -1.0, 4.0)
    assert np.isclose(x, 1.5) and evaluations <= 3, (x, evaluations)


@pytest.mark.parametrize("x0, lo, hi", [(1.5, -1.0, 2.0), (-0.8, -1.0, 2.0), (3.0, -1.0, 4.0)])
def test_the_sides_are_the_last_points_either_side_of_the_root_with_their_extras(x0, lo, hi):
    # The root finder keeps (x, f, extras) of the last point with f <= 0 and with f > 0 in one
    # array; checked against the evaluations as they happened. NaN (above 1) is on no side:
    # from x0 = 3 both evaluations are NaN, and neither side is known.
    seen = []

    def evaluate(x):
        jax.debug.callback(lambda x: seen.append(float(x)), x, ordered=True)
        return jnp.where(x > 1.0, jnp.nan, x - 0.3), (2 * x, x * x)

    with jax.enable_x64(True):
        root = jax.jit(lambda: newton(evaluate, lambda x, e: jnp.ones_like(x), jnp.float64(x0), lo, hi, tol=1e-14))()
        jax.block_until_ready(root.x)
        jax.effects_barrier()
    lows = [x for x in seen if x <= 1.0 and x - 0.3 <= 0]
    highs = [x for x in seen if x <= 1.0 and x - 0.3 > 0]
    assert bool(root.have_low) == bool(lows) and bool(root.have_high) == bool(highs), (seen, root)
    for side, xs in ((root.low, lows), (root.high, highs)):
        if xs:
            x, f, (twice, square) = (np.asarray(v) for v in (side[0], side[1], side[2]))
            assert x == xs[-1] and f == xs[-1] - 0.3 and twice == 2 * xs[-1] and square == xs[-1] ** 2, (side, seen)


# Secant steps (``df0``): roots in closed form, from a start and a first slope that a
# subsample could give (off by up to 10x), on convex, concave and inflected functions.
SECANT_FUNCTIONS = {
    # name: (f, root, derivative)
    "exp": (lambda x: jnp.exp(3 * x) - 2.0, np.log(2.0) / 3, lambda x: 3 * jnp.exp(3 * x)),
    "log": (lambda x: jnp.log1p(x) - 0.5, np.expm1(0.5), lambda x: 1 / (1 + x)),
    "cubic": (lambda x: x**3 + 0.1 * x - 0.2, np.roots([1, 0, 0.1, -0.2]).real.max(), lambda x: 3 * x**2 + 0.1),
}


def _secant(name, x0, slope_factor):
    f, root, fprime = SECANT_FUNCTIONS[name]
    evaluations, derivatives = [], []

    def evaluate(x):
        jax.debug.callback(lambda: evaluations.append(1))
        return f(x), ()

    def derivative(x, extras):
        jax.debug.callback(lambda: derivatives.append(1))
        return fprime(x)

    with jax.enable_x64(True):
        x0 = jnp.float64(x0)
        df0 = fprime(x0) * slope_factor
        found = jax.jit(lambda: newton(evaluate, derivative, x0, -0.9, 30.0, tol=4 * 2.0**-52, df0=df0))()
        jax.block_until_ready(found.x)
    return float(found.x), root, len(evaluations), len(derivatives)


@pytest.mark.parametrize("name", sorted(SECANT_FUNCTIONS))
def test_secant_steps_reach_the_root_without_derivatives(name):
    counts = []
    for offset in (-0.3, -0.01, 0.01, 0.3):
        for slope_factor in (0.1, 0.5, 1.0, 2.0, 10.0):
            x, root, evaluations, derivatives = _secant(name, SECANT_FUNCTIONS[name][1] + offset, slope_factor)
            assert abs(x - root) <= 1e-13 * max(abs(root), 1), (offset, slope_factor, x, root)
            assert derivatives == 0, (offset, slope_factor, derivatives)
            counts.append(evaluations)
    # 7-9 evaluations on average (10-12 when a step that did not halve the last one
    # bisected the interval [-0.9, 30] before a point beyond the root was known).
    assert sum(counts) <= 9 * len(counts) and max(counts) <= 20, counts


@pytest.mark.parametrize("df0", [0.0, -1.0, np.nan, np.inf])
def test_an_unusable_first_slope_takes_the_derivative(df0):
    f, root, fprime = SECANT_FUNCTIONS["exp"]
    derivatives = []

    def derivative(x, extras):
        jax.debug.callback(lambda: derivatives.append(1))
        return fprime(x)

    with jax.enable_x64(True):
        found = jax.jit(lambda: newton(lambda x: (f(x), ()), derivative, 0.0, -0.9, 3.0, tol=1e-15, df0=df0))()
        x = float(found.x)
    assert abs(x - root) <= 1e-14 and len(derivatives) >= 1, (x, derivatives)


def _untrusted(name, x0, trust):
    f, root, fprime = SECANT_FUNCTIONS[name]
    evaluations = []

    def evaluate(x):
        jax.debug.callback(lambda: evaluations.append(1))
        return f(x), ()

    r = jax.jit(lambda: newton(evaluate, lambda x, e: fprime(x), x0, -1.0, 2.0, tol=1e-12, trust=trust))()
    jax.block_until_ready(r.x)
    return r, root, len(evaluations)


@pytest.mark.parametrize("name", sorted(SECANT_FUNCTIONS))
def test_untrusted_steps_close_the_bracket_one_evaluation_after_newton(name):
    # trust=False (Cressie-Read with k > 2) stops only on a closed bracket: a Newton step
    # below the tolerance goes 0.9 tolerances, past the root, and the bracket with the
    # point before closes at once. The old overshoot of a full tolerance past the Newton
    # point, with the bracket checked one evaluation late, took 2-3 more than Newton.
    _, root, _ = _untrusted(name, 0.0, True)
    extra = []
    for x0 in np.linspace(root - 0.4, root + 0.6, 11):
        _, _, n_trusted = _untrusted(name, float(x0), True)
        r, _, n_untrusted = _untrusted(name, float(x0), False)
        (x_lo, f_lo, _), (x_hi, f_hi, _) = r.low, r.high
        assert abs(float(r.x) - root) <= 2e-12 * max(1.0, abs(root))
        if float(f_lo) != 0 and float(f_hi) != 0:  # no exact hit: a bracket closed around the root
            assert bool(r.have_low) and bool(r.have_high) and float(f_lo) < 0 < float(f_hi)
            assert 0 < float(x_hi) - float(x_lo) <= 1e-12 * max(1.0, abs(float(r.x))) * (1 + 1e-9)
        extra.append(n_untrusted - n_trusted)
    assert max(extra) <= 1, extra


def _wobbling(x0):
    """Root of ``0.02 (x - 0.3)`` plus a wobble of 1e-7 (f at its float32 rounding) in [-32, 32]."""
    calls = []

    def evaluate(x):
        jax.debug.callback(lambda: calls.append(1))
        return 0.02 * (x - 0.3) + 1e-7 * jnp.sin(1e9 * x), ()

    with jax.enable_x64(True):
        derivative = lambda x, extras: jnp.full_like(x, 0.02)  # noqa: E731
        found = jax.jit(lambda: newton(evaluate, derivative, jnp.float64(x0), -32.0, 32.0, tol=4.8e-7))()
        x = float(found.x)
    jax.effects_barrier()
    return x, len(calls)


@pytest.mark.parametrize("x0", [0.0, 0.5, 5.0])
def test_steps_at_the_rounding_of_f_do_not_bisect_the_whole_bracket(x0):
    # Every point on one side of the root: the bracket's far end is still the search limit.
    # Near the root the wobble moves each Newton step by a few tolerances, so a step need
    # not halve the one before there; such a step used to trigger a bisection of the whole
    # bracket, and 20 more back to the root (29-30 evaluations from 0 and 0.5).
    x, evaluations = _wobbling(x0)
    assert abs(x - 0.3) <= 1e-5  # the wobble makes a root anywhere within 1e-7 / 0.02
    assert evaluations <= 10, evaluations


def _iterates(name, free):
    """The points evaluated, the number of derivatives taken and the root, from root + 0.3."""
    f, root, fprime = SECANT_FUNCTIONS[name]
    xs, derivatives = [], []

    def evaluate(x):
        jax.debug.callback(lambda x: xs.append(float(x)), x, ordered=True)
        return f(x), (fprime(x),)

    def derivative(x, extras):
        jax.debug.callback(lambda: derivatives.append(1), ordered=True)
        return extras[0]

    with jax.enable_x64(True):
        x0 = jnp.float64(root + 0.3)
        found = jax.jit(lambda: newton(evaluate, derivative, x0, -0.9, 30.0, tol=1e-14, free_derivative=free))()
        jax.block_until_ready(found.x)
        jax.effects_barrier()
    return xs, len(derivatives), float(found.x)


@pytest.mark.parametrize("name", sorted(SECANT_FUNCTIONS))
def test_a_free_derivative_is_taken_at_every_step_and_changes_nothing_else(name):
    # free_derivative: the derivative reads the evaluation's extras, so it is computed at
    # every step instead of behind a cond; the iterates and the root are the same.
    root = SECANT_FUNCTIONS[name][1]
    xs_cond, d_cond, x_cond = _iterates(name, False)
    xs_free, d_free, x_free = _iterates(name, True)
    for x in (x_cond, x_free):
        assert abs(x - root) <= 1e-13 * max(abs(root), 1), (x_cond, x_free, root)
    assert xs_free == xs_cond, (xs_cond, xs_free)
    assert d_free == len(xs_free) and d_cond <= d_free, (d_cond, d_free, len(xs_free))
