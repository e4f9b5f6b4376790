"""Structural properties shared by every reduction: weights, gradients, transforms, dtypes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax import test_util as jtu

import robustlearn as rl
from robustlearn._src.reductions import engine
from tests import _references as ref
from tests.strategies import CASE_IDS, CASES, ROBUST, loss_vectors, problems

TOL = 1e-9


def _penalty(case, q, p):
    """Penalty subtracted from sum(q * l) in the value (0 for constrained forms)."""
    if case.name == "chi_square_penalty":
        return case.hyper["lam"] * ref.divergence("chi_square", q, p)
    if case.name == "kl_penalty":
        return case.hyper["lam"] * ref.divergence("kl", q, p)
    return 0.0


def _inside_ball(case, q, p):
    h = case.hyper
    if case.name == "cvar":
        return np.all(q <= p / h["alpha"] + 1e-12)
    if case.name in ("chi_square", "kl", "cressie_read"):
        return ref.divergence(case.name, q, p, h.get("k")) <= h["radius"] + 1e-9
    if case.name == "tv":
        return 0.5 * np.abs(q - p).sum() <= h["radius"] + 1e-12
    if case.name == "erm":
        return np.allclose(q, p, atol=1e-12)
    return ref.divergence("kl" if case.name == "kl_penalty" else "chi_square", q, p) < np.inf


# One test for the properties of the weights and the value on the same draws: each draw
# compiles the value, its gradient and the weights once (compilations dominate the suite).
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@given(problem=problems())
def test_weights_are_the_gradient_a_distribution_in_the_ball_and_give_the_value(case, problem):
    losses, w, where = problem
    p = ref.nominal(len(losses), w, where)
    q = np.asarray(case.weights(losses, **case.hyper, weights=w, where=where))
    value, grad = jax.value_and_grad(lambda x: case.value(x, **case.hyper, weights=w, where=where))(jnp.asarray(losses))
    value = float(value)
    assert q.shape == losses.shape
    assert np.all(q >= 0)
    assert abs(q.sum() - 1) <= TOL
    assert np.all(q[p == 0] == 0)
    assert _inside_ball(case, q, p)
    np.testing.assert_allclose(grad, q, atol=1e-12)
    scale = max(1.0, float(np.abs(losses).max()))
    assert abs(value - (float(q @ losses) - _penalty(case, q, p))) <= 1e-9 * scale
    # Between the mean and the largest loss on the support (ERM: the mean).
    mean, top = float(p @ losses), float(losses[p > 0].max())
    assert mean - 1e-12 * scale <= value <= top + 1e-12 * scale


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_matches_finite_differences(case):
    # Distinct losses: every reduction is differentiable there.
    losses = jnp.asarray(np.random.default_rng(0).normal(size=9))
    fn = lambda x: case.value(x, **case.hyper)  # noqa: E731
    jtu.check_grads(fn, (losses,), order=1, modes=["fwd", "rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


KNOB_GRIDS = {
    "alpha": [1.0, 0.7, 0.4, 0.2, 0.05, 0.001],  # decreasing alpha = growing set
    "radius": [0.0, 1e-3, 0.05, 0.3, 1.0, 5.0, 50.0],
    "lam": [100.0, 3.0, 1.0, 0.3, 0.05, 0.005],  # decreasing lam = weaker penalty
}


@pytest.mark.parametrize("case", ROBUST, ids=[c.name for c in ROBUST])
@given(problem=problems())
def test_monotone_in_the_size_of_the_set(case, problem):
    losses, w, where = problem
    values = []
    for knob in [v for v in KNOB_GRIDS[case.knob] if case.record.hyper[0].contains(v)]:
        hyper = dict(case.hyper, **{case.knob: knob})
        values.append(float(case.value(losses, **hyper, weights=w, where=where)))
    scale = max(1.0, float(np.abs(losses).max()))
    assert np.all(np.diff(values) >= -1e-12 * scale), values


@pytest.mark.parametrize("case", ROBUST, ids=[c.name for c in ROBUST])
def test_large_radius_gives_the_maximum_over_the_support(case):
    losses = np.array([0.5, 3.0, -2.0, 3.0, 9.0])
    where = np.array([True, True, True, True, False])
    hyper = dict(case.hyper)
    if case.knob == "radius":
        hyper["radius"] = min(1e3, case.record.hyper[0].high)
    elif case.knob == "alpha":
        hyper["alpha"] = 1e-9
    else:
        hyper["lam"] = 1e-9
    assert float(case.value(losses, **hyper, where=where)) == pytest.approx(3.0, abs=1e-9)
    q = np.asarray(case.weights(losses, **hyper, where=where))
    np.testing.assert_allclose(q, [0, 0.5, 0, 0.5, 0], atol=1e-9)


@functools.cache
def _transformed(name):
    """jit(vmap(value)) and vmap(weights) for one case, compiled once per module."""
    case = next(c for c in CASES if c.name == name)
    value = jax.jit(jax.vmap(lambda x: case.value(x, **case.hyper)))
    weights = jax.jit(jax.vmap(lambda x: case.weights(x, **case.hyper)))
    return value, weights


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@given(batch=hnp.arrays(np.float64, (3, 5), elements=st.floats(-5, 5) | st.sampled_from([0.0, 1.0])))
def test_jit_vmap_and_batched_axes_agree_with_a_loop(case, batch):
    value_vmap, weights_vmap = _transformed(case.name)
    loop = np.array([float(case.value(row, **case.hyper)) for row in batch])
    for out in (value_vmap(batch), case.value(batch, **case.hyper, axis=1), case.value(batch.T, **case.hyper, axis=0)):
        np.testing.assert_allclose(out, loop, rtol=1e-12, atol=1e-12)
    q_loop = np.stack([np.asarray(case.weights(row, **case.hyper)) for row in batch])
    np.testing.assert_allclose(weights_vmap(batch), q_loop, atol=1e-12)
    np.testing.assert_allclose(case.weights(batch.T, **case.hyper, axis=0).T, q_loop, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@given(losses=loss_vectors(2, 8), data=st.data())
def test_masked_equals_sliced(case, losses, data):
    where = data.draw(hnp.arrays(np.bool_, losses.shape))
    where[0] = True
    poisoned = np.where(where, losses, np.nan)  # masked entries must not leak
    masked = float(case.value(poisoned, **case.hyper, where=where))
    sliced = float(case.value(losses[where], **case.hyper))
    assert masked == pytest.approx(sliced, rel=1e-12, abs=1e-12)
    q = np.asarray(case.weights(poisoned, **case.hyper, where=where))
    np.testing.assert_allclose(q[where], case.weights(losses[where], **case.hyper), atol=1e-12)
    assert np.all(q[~where] == 0)


TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"  # jax's event for each trace of a jitted function


def _fresh_jit_caches(monkeypatch):
    """Swaps the reductions' jit caches for empty ones for one test (restored after), so a
    call traces afresh (emptying JAX's caches instead cost ~2 s and made the worker's later
    tests retrace)."""
    for cached in ("_compiled", "_batched"):
        monkeypatch.setattr(engine, cached, functools.cache(getattr(engine, cached).__wrapped__))


def _counted_solves(monkeypatch):
    """Fresh jit caches and the list to which each traced solve appends its ``want_weights``."""
    _fresh_jit_caches(monkeypatch)
    solves = []
    solve = engine._solve

    def counting(kernel, path, want_weights, *args):
        solves.append(want_weights)
        return solve(kernel, path, want_weights, *args)

    monkeypatch.setattr(engine, "_solve", counting)
    return solves


def test_a_mask_weights_or_both_are_one_compiled_program(monkeypatch):
    # where= folds into the weights: an eager call with a mask, with weights or with both
    # traces (and compiles) the reduction's program once, not once per dtype of the weights.
    rng = np.random.default_rng(4)
    losses, w = rng.normal(size=11), rng.uniform(0.5, 2.0, size=11)
    mask = losses < 1.0
    mask[0] = True
    traced = []

    def listener(event, duration, **kwargs):
        if event == TRACE_EVENT and kwargs.get("fun_name") == "run":
            traced.append(duration)

    # An earlier test may have traced this shape already.
    _fresh_jit_caches(monkeypatch)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        calls = ({"where": mask}, {"weights": w}, {"weights": w, "where": mask})
        values = [float(rl.kl(losses, 0.3, **kw)) for kw in calls]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(traced) == 1
    assert values[0] == pytest.approx(float(rl.kl(losses[mask], 0.3)), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_a_differentiated_reduction_solves_once_for_value_and_weights(monkeypatch, weighted):
    # The derivative rule sits outside the jitted programs: a gradient traces one solve
    # (value and weights together), not the value-only solve beside it.
    losses = jnp.asarray(np.random.default_rng(5).normal(size=(3, 13)))
    w = jnp.asarray(np.random.default_rng(6).uniform(0.5, 2.0, size=(3, 13))) if weighted else None
    solves = _counted_solves(monkeypatch)
    f = lambda x: jnp.sum(rl.chi_square(x, 0.5, axis=1, weights=w) * jnp.arange(1.0, 4.0))  # noqa: E731
    value, grad = jax.jit(jax.value_and_grad(f))(losses)
    assert solves == [True]
    q = rl.chi_square_weights(losses, 0.5, axis=1, weights=w)
    assert solves == [True]  # the weights are the same program: no second trace
    np.testing.assert_allclose(grad, q * jnp.arange(1.0, 4.0)[:, None], rtol=1e-12, atol=1e-15)
    assert float(value) == pytest.approx(float(f(losses)), rel=1e-12)


@pytest.mark.parametrize("limit, solves", [(13, [True]), (12, [False, True])], ids=["minibatch", "longer"])
def test_an_eager_value_its_weights_and_its_gradient_are_one_program(monkeypatch, limit, solves):
    # Outside jit the value of at most EAGER_SHARED_MAX losses comes from the program of the
    # value and the weights, which the weights and the gradient run too: one trace at a
    # shape. A longer vector's value keeps its own program (no weights pass).
    losses = jnp.asarray(np.random.default_rng(7).normal(size=13))
    traced = _counted_solves(monkeypatch)
    monkeypatch.setattr(engine, "EAGER_SHARED_MAX", limit)
    value = float(rl.kl(losses, 0.3))
    q = rl.kl_weights(losses, 0.3)
    grad = jax.grad(lambda x: rl.kl(x, 0.3))(losses)
    assert traced == solves
    np.testing.assert_array_equal(grad, q)
    assert value == pytest.approx(float(q @ losses), rel=1e-12)


@pytest.mark.parametrize("name", ["kl", "cvar"])
def test_second_derivatives_raise_instead_of_a_wrong_hessian(name):
    # The weights' own derivative is not implemented: differentiated through the solve they
    # gave a Hessian of 0 (KL) or NaN (CVaR). First derivatives in both modes still work.
    case = next(c for c in CASES if c.name == name)
    losses = jnp.asarray(np.random.default_rng(7).normal(size=6))
    f = lambda x: case.value(x, **case.hyper)  # noqa: E731
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        jax.hessian(f)(losses)
    q = case.weights(losses, **case.hyper)
    np.testing.assert_allclose(jax.jacfwd(f)(losses), q, atol=1e-12)
    np.testing.assert_allclose(jax.grad(f)(losses), q, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_integer_weights_equal_repeated_examples(case):
    losses = np.array([0.1, 2.0, -0.5, 1.2])
    counts = np.array([1, 3, 2, 1])
    repeated = np.repeat(losses, counts)
    got = float(case.value(losses, **case.hyper, weights=counts))
    assert got == pytest.approx(float(case.value(repeated, **case.hyper)), abs=1e-9)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64])
def test_dtype_is_preserved(case, dtype):
    losses = jnp.asarray([0.3, 1.5, -0.2, 2.0, 0.9], dtype)
    value = case.value(losses, **case.hyper)
    q = case.weights(losses, **case.hyper)
    assert value.dtype == dtype and q.dtype == dtype
    exact = float(case.value(losses.astype(jnp.float64), **case.hyper))
    assert float(value) == pytest.approx(exact, rel=float(jnp.finfo(dtype).eps) * 4, abs=1e-6)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_without_x64(case):
    with jax.enable_x64(False):
        losses = jnp.asarray([0.3, 1.5, -0.2, 2.0, 0.9])
        assert losses.dtype == jnp.float32
        value = jax.jit(lambda x: case.value(x, **case.hyper))(losses)
        assert value.dtype == jnp.float32
        grad = jax.grad(lambda x: case.value(x, **case.hyper))(losses)
        assert grad.dtype == jnp.float32
    exact = float(case.value(np.asarray(losses, np.float64), **case.hyper))
    assert float(value) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize(
    "losses",
    [
        # One length but for the single example: each length compiles its own programs.
        [1e30, -1e30, 0.0, 5.0, -3.0],
        [-1e30, -1e30, -1e30, -1e30, -1e30],
        [2.5, 2.5, 2.5, 2.5, 2.5],
        [7.0],
        [0.0, 0.0, 1.0, 1.0, 1.0],
        [1e-30, 2e-30, 0.0, 3e-30, 1e-30],
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_on_extreme_inputs(case, losses, dtype):
    losses = np.asarray(losses, dtype)
    value = float(case.value(losses, **case.hyper))
    q = np.asarray(case.weights(losses, **case.hyper), np.float64)
    assert np.isfinite(value) and np.all(np.isfinite(q))
    assert abs(q.sum() - 1) <= 1e-5
    lo, hi = float(losses.mean(dtype=np.float64)), float(losses.max())
    slack = 1e-5 * max(abs(lo), abs(hi), 1e-30)
    assert lo - slack <= value <= hi + slack
    if np.all(losses == losses[0]):
        assert value == losses[0]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_nan_in_the_support_propagates(case):
    losses = np.array([0.1, np.nan, 0.3])
    assert np.isnan(float(case.value(losses, **case.hyper)))
    assert np.all(np.isnan(case.weights(losses, **case.hyper)))
    losses_inf = np.array([0.1, np.inf, 0.3])
    assert np.isnan(float(case.value(losses_inf, **case.hyper)))
    grad = jax.grad(lambda x: case.value(x, **case.hyper))(jnp.asarray(losses))
    assert np.all(np.isnan(grad))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_all_masked_gives_zero(case):
    losses = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
    where = jnp.asarray([[False, False], [True, False]])
    np.testing.assert_array_equal(case.value(losses, **case.hyper, where=where), [0.0, 3.0])
    np.testing.assert_array_equal(case.weights(losses, **case.hyper, where=where), [[0, 0], [1, 0]])
    grad = jax.grad(lambda x: case.value(x, **case.hyper, where=where).sum())(losses)
    np.testing.assert_array_equal(grad, [[0, 0], [1, 0]])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_axis_none_and_tuples_equal_the_flattened_reduction(case):
    # axis=None reduces everything to a scalar, like losses.mean(); a tuple of axes is the
    # reduction of those axes flattened (in order), batched over the others.
    losses = np.random.default_rng(1).normal(size=(2, 3, 4))
    w = np.random.default_rng(2).uniform(0.1, 2.0, size=(2, 3, 4))
    flat = case.value(losses.reshape(-1), **case.hyper, weights=w.reshape(-1))
    np.testing.assert_allclose(case.value(losses, **case.hyper, weights=w, axis=None), flat, rtol=1e-12)
    np.testing.assert_allclose(case.value(losses, **case.hyper, weights=w, axis=(0, 1, 2)), flat, rtol=1e-12)
    moved, wm = np.moveaxis(losses, 1, 0), np.moveaxis(w, 1, 0)  # reduce axes (0, 2), keep axis 1
    expected = [case.value(moved[j].reshape(-1), **case.hyper, weights=wm[j].reshape(-1)) for j in range(3)]
    np.testing.assert_allclose(case.value(losses, **case.hyper, weights=w, axis=(2, 0)), expected, rtol=1e-12)
    q = case.weights(losses, **case.hyper, weights=w, axis=(0, 2))
    q_expected = np.stack(
        [
            np.asarray(case.weights(moved[j].reshape(-1), **case.hyper, weights=wm[j].reshape(-1))).reshape(2, 4)
            for j in range(3)
        ]
    )
    np.testing.assert_allclose(np.moveaxis(q, 1, 0), q_expected, rtol=1e-12, atol=1e-15)
