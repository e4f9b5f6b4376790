"""Float32 (what users run) at the extremes: every float32 reproduction of the 0.1 review and both ends of
every hyperparameter's range, against float64 references and documented limits; and the
fast paths (subsample-started solves, the loop-free accelerator path) against references.

The suite forces x64 on; these tests turn it off explicitly. Tolerance: 32 eps (float32) of
the largest |loss| (see tests/test_reference.py), plus each case's own reference error
(a documented limit stands for the exact value within a stated bound).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import robustlearn as rl
from benchmarks.perf import evaluations
from robustlearn._src.reductions import engine, kernels, rootfind
from tests import _references as ref
from tests.strategies import CASE_IDS, CASES

EPS32 = float(np.finfo(np.float32).eps)
TOL32 = 32 * EPS32

# "l in [0, 1]" of the review: five float32 losses (one shape: one compilation per reduction).
U = np.array([0.05, 0.93, 0.41, 0.77, 0.26], np.float32)
BIG = np.array([-3e38, 3e38, 0.0, 1e38, -1e37], np.float32)
P5 = np.full(5, 0.2)


def _mean(losses, p):
    return float(p @ losses)


def _max(losses, p):
    return float(losses[p > 0].max())


def _ref(name, **hyper):
    return lambda losses, p: ref.value(name, losses, p, hyper)


def _closed_chi_square(radius):
    # No weight clipped (checked): mean + sqrt(2 rho) std, exactly.
    def expected(losses, p):
        mu = p @ losses
        sd = np.sqrt(p @ (losses - mu) ** 2)
        assert mu - sd / np.sqrt(2 * radius) <= losses.min()
        return float(mu + np.sqrt(2 * radius) * sd)

    return expected


def _closed_chi_square_penalty(lam):
    # No weight clipped (checked): mean + variance / (2 lam), exactly.
    def expected(losses, p):
        mu = p @ losses
        assert np.all(1 + (losses[p > 0] - mu) / lam >= 0)
        return float(mu + p @ (losses - mu) ** 2 / (2 * lam))

    return expected


def row(label, name, hyper, losses=U, weights=None, expected=None, extra=0.0):
    """(id, reduction, hyperparameters, losses, weights, expected(losses64, p), extra tolerance).

    ``expected`` defaults to the float64 reference of the same problem (tests/_references.py).
    """
    return (label, name, hyper, losses, weights, expected or _ref(name, **hyper), extra)


KL_HALF = _ref("kl", radius=0.5)

TABLE = [
    # kl_penalty around the mean (was 0.517896 vs 0.516910 at 1e4, the maximum from 1e6 on)
    row("kl_penalty lam=1e4", "kl_penalty", {"lam": 1e4}),
    row("kl_penalty lam=1e6", "kl_penalty", {"lam": 1e6}),
    row("kl_penalty lam=1e8", "kl_penalty", {"lam": 1e8}),
    row("kl_penalty lam=1e30 -> mean", "kl_penalty", {"lam": 1e30}, expected=_mean),
    # Cressie-Read for huge k (was the maximum), k = 1e6 (was off by 5e-4), k -> 1 (was off, then NaN)
    row("cressie_read k=1e20", "cressie_read", {"radius": 0.5, "k": 1e20}),
    row("cressie_read k=1e30", "cressie_read", {"radius": 0.5, "k": 1e30}),
    row("cressie_read k=1e6", "cressie_read", {"radius": 0.5, "k": 1e6}),
    row("cressie_read k=1+1e-5", "cressie_read", {"radius": 0.5, "k": 1 + 1e-5}),
    # |CR_k - KL| = O(k - 1) of the range; the bound is the extra tolerance.
    row("cressie_read k=1+1e-7 -> KL", "cressie_read", {"radius": 0.5, "k": 1 + 1e-7}, expected=KL_HALF, extra=1e-6),
    row("cressie_read k=1+1e-9 -> KL", "cressie_read", {"radius": 0.5, "k": 1 + 1e-9}, expected=KL_HALF, extra=1e-8),
    # small radii: closed form / continuity at 0 (radius 1e-8 was off by 3.4x the increment)
    row("chi_square radius=1e-8", "chi_square", {"radius": 1e-8}, expected=_closed_chi_square(1e-8)),
    row("chi_square radius=1e-30", "chi_square", {"radius": 1e-30}, expected=_closed_chi_square(1e-30)),
    row("chi_square radius=0", "chi_square", {"radius": 0.0}, expected=_mean),
    row("cressie_read radius=1e-8", "cressie_read", {"radius": 1e-8, "k": 1.5}),
    # value - mean <= sqrt(2 rho) std < 1e-14 of the range at rho = 1e-30
    row("cressie_read radius=1e-30", "cressie_read", {"radius": 1e-30, "k": 3.0}, expected=_mean, extra=1e-14),
    row("kl radius=1e-30", "kl", {"radius": 1e-30}, expected=_mean, extra=1e-14),
    # between the expansion and ordinary radii the dual value needs log A and N - 1 to eps
    # of themselves (from log1p(A - 1) they were off by eps/beta: 1e-4 of the range at 1e-9)
    row("kl radius=1e-9", "kl", {"radius": 1e-9}),
    row("kl radius=1e-8", "kl", {"radius": 1e-8}),
    row("kl radius=1e-7", "kl", {"radius": 1e-7}),
    row("cressie_read radius=1e-9", "cressie_read", {"radius": 1e-9, "k": 1.5}),
    row("cressie_read radius=1e-7 k=3", "cressie_read", {"radius": 1e-7, "k": 3.0}),
    # hyperparameters that float32 flushes or overflows: the documented limit (was NaN)
    row("cvar alpha=1e-39 -> max", "cvar", {"alpha": 1e-39}, expected=_max),
    row("kl_penalty lam=1e-40 -> max", "kl_penalty", {"lam": 1e-40}, expected=_max),
    row("chi_square_penalty lam=1e-40 -> max", "chi_square_penalty", {"lam": 1e-40}, expected=_max),
    row("chi_square radius=1e39 -> max", "chi_square", {"radius": 1e39}, expected=_max),
    row("kl radius=1e300 -> max", "kl", {"radius": 1e300}, expected=_max),
    # an overflowing range (the penalized forms were NaN)
    row("chi_square_penalty lam=1e38 on +-3e38", "chi_square_penalty", {"lam": 1e38}, losses=BIG),
]

# Weights that float64 holds and float32 does not (erm/cvar gave the minimum, 0, NaN), and an
# overflowing range: every reduction.
WEIGHTS = {
    "all 1e38": np.full(5, 1e38),
    "all 1e-50": np.full(5, 1e-50),
    "1e39 and ones": np.array([1e39, 1, 1, 1, 1.0]),
}
for _case in CASES:
    for _label, _w in WEIGHTS.items():
        TABLE.append(row(f"{_case.name} weights {_label}", _case.name, _case.hyper, weights=_w))
    TABLE.append(row(f"{_case.name} on +-3e38", _case.name, _case.hyper, losses=BIG))
# [1e39, 1, 1, 1, 1] normalizes to [1, 1e-39, ...]: below float32's smallest normal, the small
# weights leave the support (documented). TV moves mass to the largest loss of the support
# whatever its weight, and the KL ball can move about rho / log(1/p_i) onto an example: their
# values depend on such examples, so their float32 reference is the float32 support. (The
# other reductions change by less than the tolerance.)
SUPPORT_SENSITIVE = ("tv weights 1e39 and ones", "kl weights 1e39 and ones")
TABLE = [r if r[0] not in SUPPORT_SENSITIVE else r[:4] + (np.eye(5)[0],) + r[5:] for r in TABLE]

# Both ends of every hyperparameter's range, from the registry: the documented limits.
LIMITS = {
    # name: (value near the low end, expected there, value near the high end, expected there)
    "alpha": (1e-45, _max, 1.0, _mean),
    "radius": (0.0, _mean, 1e300, _max),
    "lam": (1e-300, _max, 1e300, _mean),
}
for _case in CASES:
    for _h in _case.record.hyper:
        if _h.name == "k":
            ends = [(1 + 1e-12, _ref("kl", radius=_case.hyper["radius"]), 1e-6), (1e300, _mean, 1e-12)]
        elif _case.name == "tv":
            ends = [(0.0, _mean, 0), (1.0, _max, 0)]
        else:
            lo_v, lo_e, hi_v, hi_e = LIMITS[_h.name]
            ends = [(lo_v, lo_e, 0), (hi_v, hi_e, 0)]
        assert _h.contains(ends[0][0]) and _h.contains(ends[1][0])
        for _v, _e, _extra in ends:
            _hyper = dict(_case.hyper, **{_h.name: _v})
            TABLE.append((f"{_case.name} {_h.name}={_v:g}", _case.name, _hyper, U, None, _e, _extra))


@pytest.mark.default_codegen
@pytest.mark.parametrize(
    ("name", "hyper", "losses", "weights", "expected", "extra"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_extreme_inputs_in_float32(name, hyper, losses, weights, expected, extra):
    _check_extreme(name, hyper, losses, weights, expected, extra)


def _check_extreme(name, hyper, losses, weights, expected, extra):
    fn = getattr(rl, name)
    with jax.enable_x64(False):
        value = fn(losses, **hyper, weights=weights)
        assert value.dtype == jnp.float32
    value = float(value)
    l64 = losses.astype(np.float64)
    p = ref.nominal(len(l64), weights)  # the nominal distribution in float64
    want = expected(l64, p)
    scale = float(np.abs(l64).max())
    assert np.isfinite(value)
    assert abs(value - want) <= TOL32 * scale + extra * scale + 1e-37, (value, want)


# Reductions that sort a short vector on the loop-free path: CVaR and TV for the value-at-risk,
# the chi-square ball and penalty for the active set.
SORTING = ("cvar", "tv", "chi_square", "chi_square_penalty")
SORTED_TABLE = [row for row in TABLE if row[1] in SORTING]


@pytest.mark.parametrize(
    ("name", "hyper", "losses", "weights", "expected", "extra"),
    [pytest.param(*row[1:], id=row[0]) for row in SORTED_TABLE],
)
def test_extreme_inputs_on_the_sorted_path(name, hyper, losses, weights, expected, extra):
    with engine.force_loop_free(True):
        _check_extreme(name, hyper, losses, weights, expected, extra)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_small_radius_is_continuous_at_zero(case):
    # The value at a tiny hyperparameter equals the limit up to the documented first-order
    # term (mean + sqrt(2 rho) std for the balls), not a jump of sqrt(eps).
    if case.knob != "radius" or case.name == "tv":
        pytest.skip("no radius with a square-root expansion")
    with jax.enable_x64(False):
        at_zero = float(case.value(U, **dict(case.hyper, radius=0.0)))
        tiny = float(case.value(U, **dict(case.hyper, radius=1e-30)))
    assert at_zero == pytest.approx(float(U.astype(np.float64).mean()), abs=TOL32)
    assert abs(tiny - at_zero) <= TOL32


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_hyperparameters_are_cast_inside_their_range(case):
    # A value validated in float64 is never cast to an invalid 0, inf or open end: the
    # result is finite (no NaN from the cast) at both ends.
    for h in case.record.hyper:
        for v in (h.low + (1e-300 if h.low_open else 0.0), 1e300 if h.high == np.inf else h.high):
            if not h.contains(v):
                continue
            with jax.enable_x64(False):
                value = float(case.value(U, **dict(case.hyper, **{h.name: v})))
            assert np.isfinite(value), (h.name, v)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_losses_keep_float32_under_x64(case):
    # With jax_enable_x64 on (this module's default), float64 hyperparameters must not
    # promote the value, the gradient or the weights of float32 losses (a custom-JVP
    # rule with a float64 tangent fails under grad).
    losses = jnp.asarray(U)
    value, grad = jax.value_and_grad(lambda x: case.value(x, **case.hyper))(losses)
    assert value.dtype == grad.dtype == jnp.float32
    np.testing.assert_allclose(grad, case.weights(losses, **case.hyper), atol=1e-6)


def test_cast_keeps_an_allowed_infinity_and_clamps_finite_overflow():
    from robustlearn._src.checks import cast_in_interval

    f32 = np.float32
    assert cast_in_interval(np.inf, f32, 0.0, np.inf, False, False) == np.inf  # e.g. kappa = inf: labels fixed
    assert cast_in_interval(1e39, f32, 0.0, np.inf, False, False) == np.finfo(f32).max
    assert cast_in_interval(1e-40, f32, 0.0, np.inf, True, False) == np.finfo(f32).tiny


# -------------------------------------------------------------------------- fast paths

PATH_SIZES = (600,)


def _path_problem(seed, n, weighted):
    rng = np.random.default_rng(seed)
    losses = rng.normal(size=n) * rng.choice([0.5, 3.0]) + rng.choice([0.0, 2.0])
    if seed == 2:
        losses = rng.lognormal(0.0, 1.5, size=n)  # heavy tail: a subsample misses the largest losses
    if seed % 3 == 0:
        losses = np.round(losses, 1)  # ties
    weights = rng.uniform(0.0, 2.0, size=n) * (rng.random(n) > 0.1) if weighted else None
    return losses, weights


# Each problem is weighted (uniform weights for three of the four seeds: the same compiled
# function as the random ones), so a path costs one compilation per reduction; the
# unweighted variants (a scalar p) run with the slow tests. ERM and the KL penalty are closed
# forms with no root to find (no subsample start; no loop to unroll).
WEIGHTED = ((0, "ones"), (1, "random"), (2, "ones"), (3, "ones"))
UNWEIGHTED = ((0, None), (3, None))
PATH_CASES = [c for c in CASES if c.name not in ("erm", "kl_penalty")]
PATH_IDS = [c.name for c in PATH_CASES]


def _check_path(case, levels, loop_free, seeds=WEIGHTED, sort_max=engine.SORT_MAX, share_max=engine.SHARE_MAX):
    for seed, weighting in seeds:
        losses, w = _path_problem(seed, PATH_SIZES[0], weighting == "random")
        if weighting == "ones":
            w = np.ones_like(losses)
        p = ref.nominal(len(losses), w)
        with (
            engine.subsample_levels(levels),
            engine.force_loop_free(loop_free),
            engine.sort_limit(sort_max),
            engine.share_limit(share_max),
        ):
            value, q = jax.value_and_grad(lambda x, w=w: case.value(x, **case.hyper, weights=w))(jnp.asarray(losses))
        _check_solution(case.name, case.hyper, losses, p, value, q, 1e-6, float(np.abs(losses).max()))


def _check_solution(name, hyper, losses, p, value, q, rtol, scale):
    """The value against the float64 reference (to ``rtol * scale``), and ``q`` a distribution on the
    support whose mean loss minus the penalty is the value (to 1e-9 of the scale)."""
    value, q = float(value), np.asarray(q)
    expected = ref.value(name, losses, p, hyper)
    assert abs(value - expected) <= rtol * scale, (value, expected)
    assert np.all(q >= 0) and abs(q.sum() - 1) <= 1e-9 and np.all(q[p == 0] == 0)
    assert abs(float(q @ losses) - ref.penalty(name, q, p, hyper) - value) <= 1e-9 * scale


@pytest.mark.parametrize("case", PATH_CASES, ids=PATH_IDS)
def test_loop_free_path_matches_the_reference(case):
    # The accelerator's path: a fixed number of unrolled steps from the analytic start and
    # one fallback cond, no data-dependent loop unless they did not converge.
    _check_path(case, (), True)


SORTED_CASES = [c for c in PATH_CASES if c.name in SORTING]


@pytest.mark.parametrize("case", SORTED_CASES, ids=[c.name for c in SORTED_CASES])
def test_unsorted_loop_free_path_matches_the_reference(case):
    # Vectors longer than engine.SORT_MAX count (CVaR, TV) or run the unrolled Newton steps
    # (chi-square) instead of sorting (a 600-example vector here).
    _check_path(case, (), True, sort_max=0)


@pytest.mark.parametrize("case", PATH_CASES, ids=PATH_IDS)
def test_subsample_started_path_matches_the_reference(case):
    # Tiny subsample levels make a 600-example vector take the subsample-started path that
    # real vectors take from 32768 examples on (the loop path, CPU).
    _check_path(case, (16, 64), False)


SHARING_CASES = [c for c in PATH_CASES if c.name in ("kl", "cressie_read")]


@pytest.mark.parametrize("levels", [(), (16, 64)], ids=["analytic-start", "subsample-start"])
@pytest.mark.parametrize("case", SHARING_CASES, ids=[c.name for c in SHARING_CASES])
def test_long_vector_passes_match_the_reference(case, levels):
    # Vectors longer than engine.SHARE_MAX compute every pass's terms anew (a short one
    # shares them between the sums of an evaluation): a 600-example vector here.
    _check_path(case, levels, False, share_max=0)


@pytest.mark.slow
@pytest.mark.parametrize("case", PATH_CASES, ids=PATH_IDS)
def test_unweighted_paths_match_the_reference(case):
    _check_path(case, (), True, UNWEIGHTED)
    _check_path(case, (16, 64), False, UNWEIGHTED)


@pytest.mark.slow
@pytest.mark.parametrize("case", PATH_CASES, ids=PATH_IDS)
def test_subsample_started_loop_free_path_matches_the_reference(case):
    # The 64-example subsample sorts (CVaR, TV), the 600-example vector does not.
    _check_path(case, (16, 64), True, sort_max=100)


@pytest.mark.slow
@pytest.mark.parametrize("dist", ["normal", "lognormal"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_real_subsample_path_at_600k_in_float32(case, dist):
    # The real levels (4096 and 65536 examples) at n = 6e5, float32, against float64 references.
    rng = np.random.default_rng(7)
    losses = (rng.normal(size=600_000) if dist == "normal" else rng.lognormal(0, 1.5, size=600_000)).astype(np.float32)
    with jax.enable_x64(False):
        value = float(case.value(losses, **case.hyper))
    l64 = losses.astype(np.float64)
    expected = ref.value(case.name, l64, np.full(len(l64), 1 / len(l64)), case.hyper)
    assert abs(value - expected) <= TOL32 * float(np.abs(l64).max())


def _root_with_sides(d_lo, d_hi):
    """A converged :class:`Root` whose two sides, 1e-7 apart, have mean losses -1e-3 + d_lo and -1e-3 + d_hi."""
    side = lambda x, f, v: (jnp.float32(x), jnp.float32(f), (jnp.float32(1), jnp.float32(v)))  # noqa: E731
    low, high = side(0.5, -1e-3, -1e-3 + d_lo), side(0.5 + 1e-7, 2e-3, -1e-3 + d_hi)
    return rootfind.Root(high[0], high[2], jnp.asarray(True), low, high, jnp.asarray(True), jnp.asarray(True), 1.0)


@pytest.mark.parametrize(("d_hi", "mixed"), [(0.5, False), (0.9, False), (1.5, True), (30.0, True)])
def test_the_two_sides_are_mixed_only_when_their_mean_losses_differ(d_hi, mixed):
    # The weights pass evaluates both sides of the root (two passes over the data) only when
    # their mean losses differ by more than the tolerance (4 eps here): otherwise the last
    # point's weights have the value's mean loss within that tolerance.
    tol = 4 * EPS32
    vz = -1e-3 + d_hi * tol / 3  # the dual value, a third of the way from the low side
    _, (use, theta, final, _, _) = kernels._solution(
        _root_with_sides(0.0, d_hi * tol), tol, lambda x, e: jnp.float32(vz), lambda x, e: e[1] / e[0]
    )
    assert bool(use) == mixed
    assert float(theta) == pytest.approx(1 / 3, rel=1e-3)  # reported either way
    assert float(final[0]) == pytest.approx(0.5 + 1e-7)


@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        ("kl", {"radius": 1.0}),
        ("cressie_read", {"radius": 1.0, "k": 1.5}),
        ("cressie_read", {"radius": 0.3, "k": 3.0}),
        ("chi_square", {"radius": 0.5}),
    ],
)
def test_weights_mean_is_the_value_in_float32(name, hyper):
    # The weights' mean loss against the value, both from one float32 solve of 20,000 normal
    # losses (subsample-started): within a few roundings of z (4 eps of the range; 1.1-4.0
    # measured), whether or not the weights pass mixed the two sides of the root.
    losses = np.random.default_rng(3).normal(size=20_000).astype(np.float32)
    with jax.enable_x64(False):
        value, q = jax.value_and_grad(lambda x: getattr(rl, name)(x, **hyper))(jnp.asarray(losses))
    q = np.asarray(q, np.float64)
    spread = float(losses.max() - losses.min())
    assert abs(q.sum() - 1) <= 8 * EPS32
    assert abs(q @ losses.astype(np.float64) - float(value)) <= 8 * EPS32 * spread


def _cressie_read_start_and_root(losses, rho, k):
    """Cressie--Read's subsample-started and analytic-started roots (log t) on one vector."""
    cr = kernels.CressieReadKernel()
    kappa = cr._kappa(jnp.asarray(k, losses.dtype), losses.dtype)
    a, lc = 1 / kappa, kernels._cr_log_c_times(1 + kappa, kappa, jnp.asarray(rho, losses.dtype))
    d, _, _ = engine._data(losses, None, 0, (512,))
    start, _ = kernels._start_by_subsamples(d, lambda sub, x: cr._root(sub, lc, a, x), cr._analytic(rho, a))
    root = cr._root(d, lc, a, cr._analytic(rho, a)(d)).x
    return start, root


def test_subsample_start_when_the_subsample_misses_the_maximum():
    # The subsamples use the full vector's standardization; a stride that skips the maximum
    # (an outlier at index 1) left every 1 + z t of the subsample clipped at large t, a NaN
    # dual, and a 100-step stall that handed the full solve a start far from its root.
    losses = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    losses[1] = 30.0
    start, root = jax.jit(_cressie_read_start_and_root, static_argnums=(1, 2))(jnp.asarray(losses), 1.0, 1.5)
    start, root = float(start), float(root)
    # A 512-example subsample's root is within a few percent of the full one (0.06 here);
    # the stalled start was 15.6 away.
    assert np.isfinite(start) and abs(start - root) <= 0.15, (start, root)


ACTIVE_SET_CASES = [c for c in PATH_CASES if c.name in ("chi_square", "chi_square_penalty")]


@pytest.mark.parametrize("case", ACTIVE_SET_CASES, ids=[c.name for c in ACTIVE_SET_CASES])
@settings(max_examples=60, deadline=None)
# A weight of 1e-217 on the largest loss: the active set's mean, rounded to an ulp of 1, once
# swamped the spread (1e-109) of the weights and put all the weight on that loss (CI found it).
@example(losses=np.array([0.9765625] + [-1.0] * 7), weights=np.array([1.3e-217] + [1.0] * 7), log_knob=0.0)
# Weights of 1e-38 beside a weight of 1: the weights' slope r is 1e19, and z rounded differently in
# the weights pass than in the moments pass clipped the heavy example's weight to 0 (hypothesis).
@example(losses=np.array([-1.0] * 7 + [1.5]), weights=np.array([1.0] + [1.17549435e-38] * 7), log_knob=0.0)
# Weights at the smallest normal number beside weights of 1: their probabilities (half of it)
# were flushed to 0 while the examples stayed in the support, and the penalty's sorted path
# returned -0.5 with NaN weights (hypothesis, CI-sized run).
@example(
    losses=np.array([-1.0] * 7 + [0.0]), weights=np.array([1.0, 1.0] + [2.2250738585072014e-308] * 6), log_knob=0.0
)
@given(
    # Magnitudes below 1e-6 become 0: the scipy reference divides by the losses' spread, and
    # tiny scales are the extreme table's job.
    losses=hnp.arrays(
        np.float64,
        8,
        elements=st.sampled_from([-1.0, 0.0, 0.5, 0.5001, 2.0]) | st.floats(-3, 3).map(lambda x: x * (abs(x) >= 1e-6)),
    ),
    weights=hnp.arrays(np.float64, 8, elements=st.sampled_from([0.0, 1.0]) | st.floats(0, 2)),
    log_knob=st.floats(-4, 3),
)
def test_sorted_active_set_matches_the_reference(case, losses, weights, log_knob):
    # The chi-square ball and penalty on the loop-free path choose their active set from one
    # sort (the first group of equal losses whose next loss is inactive), then solve it by
    # exact passes: ties at the boundary, zero weights, all or only the top group active.
    assume(weights.max() > 0)
    hyper = dict(case.hyper, **{case.knob: 10.0**log_knob})
    p = ref.nominal(len(losses), weights)
    with engine.force_loop_free(True):
        value, q = jax.value_and_grad(lambda x: case.value(x, **hyper, weights=weights))(jnp.asarray(losses))
    _check_solution(case.name, hyper, losses, p, value, q, 1e-7, max(float(np.abs(losses).max()), 1e-5))


# A weight of 1 beside weights of 1e-213 or 1e-38: the spread of z under p is below the rounding
# of z, so the closed forms' slopes (sqrt(2 rho) / sigma, 1 / lam) are 1e16 or more. A rounding of
# the heavy example's z - mu once made its term negative and the renormalization flipped every
# sign (chi-square), and a variance polluted by that rounding gave the maximum loss as the value
# (penalty with lam = 1e-35: 1.5 instead of -0.9963) (hypothesis, on the CPU's default path).
TINY_BESIDE_ONE = [
    ([-1.0] * 7 + [0.5001], [1.0] + [1.63858622e-213] * 7),
    ([-1.0, -1.0, -1.0, -1.0, -1.40625, -1.0, -1.0, -1.0], [8.22659265e-130, 0, 0, 0, 1.0, 0, 0, 0]),
    ([-1.0] * 7 + [1.5], [1.0] + [1.17549435e-38] * 7),
]
# (name, hyperparameters, closed form, |q @ l - penalty - value| bound). The penalty's weights
# need z - mu to 1e-38 for a slope 1 / lam of 1e35; a mean of -1 + 3e-38 is not a float, so
# the weights are off by 3e-8 in q @ l (the value itself is exact).
CLOSED_FORMS = [
    ("chi_square", {"radius": 1.0}, _closed_chi_square(1.0), 1e-9),
    ("chi_square_penalty", {"lam": 1e-35}, _closed_chi_square_penalty(1e-35), 1e-7),
]


@pytest.mark.parametrize("loop_free", [False, True], ids=["loops", "loop-free"])
@pytest.mark.parametrize(("losses", "weights"), TINY_BESIDE_ONE, ids=["1e-213", "1e-130", "1e-38"])
@pytest.mark.parametrize(("name", "hyper", "closed", "primal_tol"), CLOSED_FORMS, ids=[c[0] for c in CLOSED_FORMS])
def test_closed_forms_beside_tiny_weights(name, hyper, closed, primal_tol, losses, weights, loop_free):
    losses, weights = np.array(losses), np.array(weights)
    p = ref.nominal(len(losses), weights)
    with engine.force_loop_free(loop_free):
        value, q = jax.value_and_grad(lambda x: getattr(rl, name)(x, **hyper, weights=weights))(jnp.asarray(losses))
    value, q = float(value), np.asarray(q)
    assert np.all(q >= 0) and abs(q.sum() - 1) <= 1e-12 and np.all(q[p == 0] == 0)
    # No weight is clipped: the closed form (the scipy reference resolves these only to ~4e-9).
    assert abs(value - closed(losses, p)) <= 1e-12
    assert abs(float(q @ losses) - ref.penalty(name, q, p, hyper) - value) <= primal_tol


def test_kl_weights_give_the_value_in_float32():
    # A Newton stop that accepted |f| within 16 eps of f's terms (tried, reverted) left KL's
    # weights 9e-6 off the value here, over the float32 bound of tests/test_reference.py
    # (8e-6); bisecting the rounding band to a closed bracket gives 7e-8 (CI found it).
    losses = np.array([0.0, -2.0, 0.0, 1.0, -2.0, -2.0, -2.0, -2.0], np.float32)
    weights = np.array([1, 3, 2, 0.125, 2, 3, 0, 0], np.float32)
    radius = float(np.float32(0.001))
    with jax.enable_x64(False):
        value, q = jax.value_and_grad(lambda x: rl.kl(x, radius, weights=weights))(jnp.asarray(losses))
    q = np.asarray(q, np.float64)
    q = q / q.sum()
    l64 = losses.astype(np.float64)
    assert (
        abs(float(value) - ref.value("kl", l64, ref.nominal(8, weights.astype(np.float64)), {"radius": radius}))
        <= TOL32 * 2
    )
    assert abs(float(q @ l64) - float(value)) <= TOL32 * 2 * (1 + np.sqrt(2 * radius))


def _kl_penalty_problem(kind):
    rng = np.random.default_rng(11)
    losses = rng.normal(size=257) * 2.0 + 1.0
    if kind == "outlier":
        losses[5] = 40.0
    elif kind == "equal":
        losses[:] = 0.7
    elif kind == "huge":  # differences l - M overflow float32
        losses = np.where(rng.random(257) < 0.5, -3e38, 3e38) * rng.uniform(0.5, 1.0, 257)
    return losses.astype(np.float32)


@pytest.mark.parametrize("kind", ["normal", "outlier", "equal", "huge"])
@pytest.mark.parametrize("lam_over_range", [1e-3, 0.05, 1.0, 30.0, 1e6])
def test_kl_penalty_value_without_weights(kind, lam_over_range):
    # The unweighted value takes the maximum and one sum (A <= 1/2) or hands the problem to
    # the general path (large lam, overflowing differences); both against float64.
    losses = _kl_penalty_problem(kind)
    l64 = losses.astype(np.float64)
    lam = min(lam_over_range * max(float(l64.max() - l64.min()), 1.0), 1e38)  # a float32
    with jax.enable_x64(False):
        value = float(jax.jit(rl.kl_penalty)(losses, np.float32(lam)))
        weighted = float(rl.kl_penalty(losses, lam, weights=np.ones_like(losses)))  # always the general path
    expected = ref.kl_penalty_stable(l64, np.full(len(l64), 1 / len(l64)), lam)
    scale = float(np.abs(l64).max())
    assert abs(value - expected) <= TOL32 * scale, (value, expected)
    assert abs(value - weighted) <= TOL32 * scale, (value, weighted)
    if kind == "equal":
        assert value == losses[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_kl_penalty_value_without_weights_is_nan_for_a_non_finite_loss(bad):
    losses = _kl_penalty_problem("normal")
    losses[3] = bad
    with jax.enable_x64(False):
        assert np.isnan(float(jax.jit(rl.kl_penalty)(losses, np.float32(0.5))))
        assert np.isnan(float(rl.kl_penalty(losses, 0.5, weights=np.ones_like(losses))))


def _evaluations_of_a_solve(name, hyper, losses):
    """Evaluations of the float32 root finder solving ``name``'s dual on ``losses`` from its analytic start."""

    def solve(losses):
        d = engine._data(losses, None, 0)[0]
        if name == "kl":
            rho = jnp.float32(hyper["radius"])
            c, var = kernels._mean_var(d)
            return kernels.KlKernel._root(d, rho, kernels.KlKernel._analytic(rho, var), c, jnp.sqrt(var)).x
        cr = kernels.CressieReadKernel
        rho, kappa = jnp.float32(hyper["radius"]), cr._kappa(jnp.float32(hyper["k"]), jnp.float32)
        a, lc = 1 / kappa, kernels._cr_log_c_times(1 + kappa, kappa, rho)
        return cr._root(d, lc, a, cr._analytic(rho, a)(d)).x

    with evaluations.counting(clear_programs=False) as counter, jax.enable_x64(False):
        jax.block_until_ready(jax.jit(solve)(jnp.asarray(losses, jnp.float32)))
        jax.effects_barrier()
    return counter["n"]


@pytest.mark.default_codegen(also_here=True)  # the suite's generator once failed it differently
@pytest.mark.parametrize(
    ("name", "hyper", "dist", "seed"),
    [
        ("cressie_read", {"radius": 0.05, "k": 6.0}, "normal", 2),  # 101 evaluations: the cap
        ("cressie_read", {"radius": 0.05, "k": 1.2}, "exponential", 1),  # 31
        ("kl", {"radius": 0.1}, "exponential", 0),  # 32
    ],
)
def test_a_solve_with_f_at_its_rounding_ends_in_a_few_evaluations(name, hyper, dist, seed):
    # Near the root f is at its float32 rounding. Under XLA's default code generator
    # (tests/test_codegen.py runs this test there) these solves cycled until the cap or
    # bisected the bracket from its far end: its two ends, updated in separate fusions, saw
    # f rounded to opposite signs, so neither moved. Under the suite's quick generator the
    # second one still did (31 evaluations): a Newton step within a few tolerances that did
    # not halve the one before bisected the bracket. 8-10 evaluations now.
    losses = getattr(np.random.default_rng(seed), dist)(size=1024).astype(np.float32)
    evaluations_ = _evaluations_of_a_solve(name, hyper, losses)
    assert 2 <= evaluations_ <= 16, evaluations_  # at least a start and a step: the count ran
    with jax.enable_x64(False):
        value = float(getattr(rl, name)(jnp.asarray(losses), **hyper))
    expected = float(getattr(rl, name)(jnp.asarray(losses, jnp.float64), **hyper))
    assert abs(value - expected) <= TOL32 * float(np.abs(losses).max())


@pytest.mark.parametrize("radius", [1e-3, 1e-2])
def test_kl_weights_at_small_radii_are_float32_exact(radius):
    # About the nominal mean the sums of KL's dual are each O(beta^2 sigma^2); about 0 they
    # were two terms of size beta |mean| whose difference is f + rho, lost in their rounding:
    # the root was found by bisection within that noise, and the weights were off by up to
    # 54 eps (relative to the largest) on these vectors. At most 2.6 eps now.
    f = jax.jit(jax.grad(lambda x: rl.kl(x, radius)))
    worst = 0.0
    for seed in (11, 12, 13):
        g = np.random.default_rng(seed)
        for losses in (g.exponential(size=1024), g.normal(size=1024), g.lognormal(size=1024)):
            losses = losses.astype(np.float32)
            with jax.enable_x64(False):
                q32 = np.asarray(f(jnp.asarray(losses)), np.float64)
            q64 = np.asarray(f(jnp.asarray(losses, jnp.float64)))
            worst = max(worst, float(np.max(np.abs(q32 - q64)) / np.max(q64)))
    assert worst <= 4 * EPS32, worst / EPS32


def _spread_losses(kind, n):
    g = np.random.default_rng(7)
    if kind == "exponential":
        return g.exponential(size=n)
    if kind == "ties":
        return np.round(g.exponential(size=n), 1)
    if kind == "binades":  # 2^-60 .. 2^60: points evenly spaced in value barely move the low end
        return g.permutation(2.0 ** np.linspace(-60, 60, n))
    return np.concatenate([g.uniform(size=n - 3), [1e20, 1e21, 1e22]])  # "outliers"


@pytest.mark.parametrize("n", [1000, 4096])  # 15 and 7 thresholds per counting pass (1 above 10,922)
@pytest.mark.parametrize("kind", ["exponential", "ties", "binades", "outliers"])
def test_cvar_and_tv_searches_test_several_thresholds_per_pass_on_short_vectors(n, kind):
    # Below 2^15 / k examples a counting pass tests k thresholds at once: CVaR's value, its
    # weights and TV read 1,000 exponential losses 42-56 times in all before, 13-19 now
    # (4,096: 48-56, now 16-24). Values and weights against the sorted losses, in float32.
    losses = _spread_losses(kind, n).astype(np.float32)
    x = jnp.asarray(losses)
    exact = losses.astype(np.float64)
    p = np.full(n, 1 / n)
    scale = float(np.abs(exact).max())
    with evaluations.counting(full_passes_of=n) as counter:
        solve = jax.jit(lambda v, a: (rl.cvar(v, a), rl.cvar_weights(v, a), rl.tv(v, a)))
        for alpha in (0.1, 0.5, 0.003):
            jax.effects_barrier()
            counter.clear()
            value, q, tv = jax.block_until_ready(solve(x, np.float32(alpha)))
            jax.effects_barrier()
            assert abs(float(value) - ref.cvar_sorted(exact, p, alpha)) <= TOL32 * scale, (alpha, float(value))
            q = np.asarray(q, np.float64)
            assert np.all(q >= 0) and np.all(q <= p / alpha * (1 + 4 * EPS32)) and abs(q.sum() - 1) <= 4 * n * EPS32
            assert abs(q @ exact - ref.cvar_sorted(exact, p, alpha)) <= TOL32 * scale
            assert abs(float(tv) - ref.tv_sorted(exact, p, alpha)) <= TOL32 * scale, (alpha, float(tv))
            if kind == "exponential":
                assert 5 <= counter["n"] <= 30, (alpha, counter["n"])  # the three solves' passes
