"""The contamination-corrected objective: unbiasedness with a known f*, jit/grad/Trainer/fit_linear, bad input.

References: the label distribution enumerated exactly, a Monte Carlo simulation with a stated
interval, a numpy implementation of the formulas written here, scipy's minimizers.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

import robustlearn as rl
from robustlearn.objectives import ReductionState, contamination_corrected

C, D = 3, 2


def _linear_loss(params, batch):
    scores = batch["x"] @ params["w"] + params["b"][None, :]
    return optax.softmax_cross_entropy_with_integer_labels(scores, batch["y"])


def _np_ce(params, x, y):
    s = x @ np.asarray(params["w"]) + np.asarray(params["b"])
    s = s - s.max(1, keepdims=True)
    return np.log(np.exp(s).sum(1)) - s[np.arange(len(y)), y]


def _np_corrected(params, x, y, prev, alpha, w=None):
    """The corrected value, written from the formula (clean rows: prev = -1)."""
    w = np.ones(len(y)) if w is None else w
    a = np.where(prev < 0, 0.0, alpha)
    per = (_np_ce(params, x, y) - a * _np_ce(params, x, np.where(prev < 0, y, prev))) / (1 - a)
    return float(np.sum(w * per) / np.sum(w))


def _np_nonnegative(params, x, y, prev, alpha, num_classes):
    a = np.where(prev < 0, 0.0, alpha)
    ly, lp = _np_ce(params, x, y), _np_ce(params, x, np.where(prev < 0, y, prev))
    risks = [np.sum(((y == c) * ly - a * (prev == c) * lp) / (1 - a)) / len(y) for c in range(num_classes)]
    return float(np.sum(np.maximum(risks, 0))), risks


def _problem(rng, n, alpha, num_classes=C):
    """Linear teacher f*, a different previous model, labels copied from it with probability alpha."""
    x = rng.standard_normal((n, D))
    w_star, w_prev = rng.standard_normal((D, num_classes)), rng.standard_normal((D, num_classes))
    f_star, prev = np.argmax(x @ w_star, 1), np.argmax(x @ w_prev, 1)
    y = np.where(rng.random(n) < alpha, prev, f_star)
    return x, y, prev, f_star


def _params(rng, num_classes=C):
    return {"w": jnp.asarray(rng.standard_normal((D, num_classes))), "b": jnp.asarray(rng.standard_normal(num_classes))}


def _value(obj, params, batch):
    return jax.jit(lambda p, b: obj.loss(_linear_loss, p, b, obj.init(None), None)[0])(params, batch)


def test_matches_the_formula_and_the_exact_expectation_is_the_clean_risk():
    rng = np.random.default_rng(0)
    alpha = 0.6
    x, y, prev, f_star = _problem(rng, 40, alpha)
    prev[:5] = -1  # clean rows
    params = _params(rng)
    obj = contamination_corrected(alpha)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "previous": jnp.asarray(prev)}
    assert float(_value(obj, params, batch)) == pytest.approx(_np_corrected(params, x, y, prev, alpha), rel=1e-12)
    # Each contaminated row's label is prev w.p. alpha, else f*; clean rows carry f*. The value is
    # an average of per-row terms, so its expectation is the alpha-mix of the two extreme labelings.
    y_copy = np.where(prev < 0, f_star, prev)
    v_clean = float(_value(obj, params, {**batch, "y": jnp.asarray(f_star)}))
    v_copy = float(_value(obj, params, {**batch, "y": jnp.asarray(y_copy)}))
    expectation = (1 - alpha) * v_clean + alpha * v_copy
    assert expectation == pytest.approx(_np_ce(params, x, f_star).mean(), rel=1e-12)


def test_unbiased_for_the_clean_risk_and_its_gradient_in_simulation():
    # Known f* and previous model; x and the coins redrawn R times; z-tests against the clean risk.
    rng = np.random.default_rng(1)
    alpha, n, reps = 0.7, 50, 2000
    w_star, w_prev = rng.standard_normal((D, C)), rng.standard_normal((D, C))
    params = _params(rng)
    obj = contamination_corrected(alpha)
    state = obj.init(None)
    xs = rng.standard_normal((reps, n, D))
    f_star, prev = np.argmax(xs @ w_star, -1), np.argmax(xs @ w_prev, -1)
    ys = np.where(rng.random((reps, n)) < alpha, prev, f_star)

    def corrected(p, x, y, pr):
        return obj.loss(_linear_loss, p, {"x": x, "y": y, "previous": pr}, state, None)[0]

    def clean(p, x, f):
        return jnp.mean(_linear_loss(p, {"x": x, "y": f}))

    def naive(p, x, y):
        return jnp.mean(_linear_loss(p, {"x": x, "y": y}))

    vg = jax.jit(jax.vmap(jax.value_and_grad(corrected), in_axes=(None, 0, 0, 0)))
    cg = jax.jit(jax.vmap(jax.value_and_grad(clean), in_axes=(None, 0, 0)))
    v, g = vg(params, jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(prev))
    v0, g0 = cg(params, jnp.asarray(xs), jnp.asarray(f_star))
    v_naive = jax.jit(jax.vmap(naive, in_axes=(None, 0, 0)))(params, jnp.asarray(xs), jnp.asarray(ys))
    diff = np.asarray(v - v0)
    se = diff.std(ddof=1) / math.sqrt(reps)
    assert abs(diff.mean()) <= 4 * se, (diff.mean(), se)
    naive_diff = np.asarray(v_naive - v0)
    assert abs(naive_diff.mean()) > 10 * naive_diff.std(ddof=1) / math.sqrt(reps)  # the test has power
    for key in ("w", "b"):
        gd = np.asarray(g[key] - g0[key]).reshape(reps, -1)
        se_g = gd.std(0, ddof=1) / math.sqrt(reps)
        # Bonferroni over the coordinates: 4.5 standard errors each.
        assert np.all(np.abs(gd.mean(0)) <= 4.5 * se_g), (key, gd.mean(0), se_g)


def test_jit_grad_and_traced_alpha():
    rng = np.random.default_rng(2)
    x, y, prev, _ = _problem(rng, 30, 0.4)
    params = _params(rng)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "previous": jnp.asarray(prev)}
    obj = contamination_corrected(0.4)

    @jax.jit
    def value_at(alpha, p):
        return obj.loss(_linear_loss, p, batch, ReductionState({"alpha": alpha}), None)[0]

    for alpha in (0.0, 0.4, 0.9):
        assert float(value_at(alpha, params)) == pytest.approx(_np_corrected(params, x, y, prev, alpha), rel=1e-12)
    # The gradient against central differences of the numpy formula.
    grad = jax.grad(value_at, argnums=1)(0.4, params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    h = 1e-6
    fd = np.array(
        [
            (
                _np_corrected(unravel(flat.at[i].add(h)), x, y, prev, 0.4)
                - _np_corrected(unravel(flat.at[i].add(-h)), x, y, prev, 0.4)
            )
            / (2 * h)
            for i in range(flat.size)
        ]
    )
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(grad)[0], fd, rtol=1e-6, atol=1e-8)
    # alpha out of range when traced: NaN, not a number.
    assert np.isnan(float(value_at(1.0, params)))
    assert np.isnan(float(value_at(-0.2, params)))


def test_weights_and_mask_are_the_nominal_distribution():
    rng = np.random.default_rng(3)
    x, y, prev, _ = _problem(rng, 12, 0.5)
    params = _params(rng)
    w = rng.random(12)
    w[3] = 0.0
    mask = np.ones(12, bool)
    mask[7] = False
    obj = contamination_corrected(0.5)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "previous": jnp.asarray(prev)}
    got = _value(obj, params, {**batch, "weight": jnp.asarray(w), "mask": jnp.asarray(mask)})
    assert float(got) == pytest.approx(_np_corrected(params, x, y, prev, 0.5, w * mask), rel=1e-12)
    # All weight zero: 0, as for every reduction.
    assert float(_value(obj, params, {**batch, "weight": jnp.zeros(12)})) == 0.0


_NN = contamination_corrected(0.5, nonnegative=True, num_classes=C)  # alpha comes from the state below


@jax.jit
def _nn_value_and_smoothed(params, batch, alpha, tau):
    state = ReductionState({"alpha": alpha})
    value = _NN.loss(_linear_loss, params, batch, state, None)[0]
    return value, _NN.smoothed(_linear_loss, params, batch, state, _NN.aux_init(jnp.float64), tau)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 10**6),
    alpha=st.floats(0.0, 0.95),
    clean=st.integers(0, 6),
)
def test_nonnegative_matches_the_formula_and_is_never_negative(seed, alpha, clean):
    rng = np.random.default_rng(seed)
    x, y, prev, _ = _problem(rng, 8, alpha)
    prev[:clean] = -1
    params = {"w": jnp.asarray(5 * rng.standard_normal((D, C))), "b": jnp.asarray(rng.standard_normal(C))}
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "previous": jnp.asarray(prev)}
    ref, risks = _np_nonnegative(params, x, y, prev, alpha, C)
    tau = 0.05
    got, smooth = (float(v) for v in _nn_value_and_smoothed(params, batch, alpha, tau))
    assert got == pytest.approx(ref, rel=1e-10, abs=1e-12)
    assert got >= 0
    # The class risks add up to the unbiased value, so clipping can only raise it.
    plain = _np_corrected(params, x, y, prev, alpha)
    assert sum(risks) == pytest.approx(plain, rel=1e-10, abs=1e-12)
    assert got >= plain - 1e-12
    # Smoothed form: above the value, within C tau log 2.
    assert got - 1e-12 <= smooth <= got + C * tau * math.log(2) + 1e-12


def test_nonnegative_clips_when_a_flexible_model_overfits():
    # A model that puts a huge loss on prev where y != prev drives the plain estimate far below 0.
    y = np.array([0, 0, 1, 1])
    prev = np.array([0, 1, 1, 0])
    table = np.array([[0.1, 50.0], [0.1, 50.0], [50.0, 0.1], [50.0, 0.1]])  # loss of class c at example i

    def loss_fn(params, batch):
        return params[jnp.arange(4), batch["y"]]

    batch = {"x": jnp.zeros(4), "y": jnp.asarray(y), "previous": jnp.asarray(prev)}
    plain = contamination_corrected(0.5)
    nn = contamination_corrected(0.5, nonnegative=True, num_classes=2)
    v_plain = float(jax.jit(lambda t: plain.loss(loss_fn, t, batch, plain.init(None), None)[0])(jnp.asarray(table)))
    v_nn = float(jax.jit(lambda t: nn.loss(loss_fn, t, batch, nn.init(None), None)[0])(jnp.asarray(table)))
    # Per example: (0.1 - 0.05)/0.5 = 0.1, (0.1 - 25)/0.5 = -49.8, 0.1, -49.8 -> mean -24.85.
    assert v_plain == pytest.approx(-24.85)
    # Class 0: (0.1 + 0.1 - 0.5 * 0.1 - 0.5 * 50) / 0.5 / 4 = -12.425 -> 0; class 1 likewise.
    assert v_nn == 0.0


def _trainer_problem():
    # f* is not linear (a disc), so the clean risk of a linear model has a finite minimizer and the
    # corrected objective is bounded below. (With a linear f* the clean labels are separable: the
    # clean risk's infimum 0 is approached at infinity, and the unbiased estimate, whose slope along
    # f*'s direction is a random walk, is unbounded below about half the time; use l2 or the
    # non-negative variant there.)
    rng = np.random.default_rng(4)
    n, alpha = 200, 0.3
    x = rng.standard_normal((n, D))
    f_star = (np.sum(x**2, 1) < 1.4).astype(np.int32)
    prev = (x @ np.array([0.3, 1.0]) > 0.2).astype(np.int32)
    y = np.where(rng.random(n) < alpha, prev, f_star).astype(np.int32)
    return x, y, prev, alpha


def test_trainer_minimizes_the_corrected_objective():
    x, y, prev, alpha = _trainer_problem()
    obj = contamination_corrected(alpha)

    def apply(params, inputs):
        return inputs @ params["w"] + params["b"][None, :]

    params0 = {"w": jnp.zeros((D, 2)), "b": jnp.zeros(2)}
    trainer = rl.train.Trainer(
        apply, optax.softmax_cross_entropy_with_integer_labels, obj, optax.adam(0.1), params=params0, verbose=False
    )
    trainer.fit({"x": x, "y": y, "previous": prev}, epochs=300)
    got = _np_corrected(trainer.params, x, y, prev, alpha)

    def ref(theta):  # the same model class as a margin: scores (0, x v + c)
        return _np_corrected(
            {"w": np.stack([np.zeros(D), theta[:D]], 1), "b": np.array([0.0, theta[D]])}, x, y, prev, alpha
        )

    best = optimize.minimize(ref, np.zeros(D + 1), method="BFGS", options={"gtol": 1e-9})
    assert best.success, best.message
    assert got == pytest.approx(best.fun, abs=1e-4)
    with pytest.raises(ValueError, match="previous"):
        trainer.fit({"x": x, "y": y}, epochs=1)


def _fit_linear_reference(x, y, prev, alpha, l2, nonnegative):
    def unpack(theta):
        return {"w": theta[:4].reshape(D, 2), "b": theta[4:6]}

    def reg(theta):
        return 0.5 * l2 * np.sum(theta[:4] ** 2)

    if not nonnegative:
        res = optimize.minimize(
            lambda th: _np_corrected(unpack(th), x, y, prev, alpha) + reg(th), np.zeros(6), method="BFGS"
        )
        return res.fun
    # Epigraph form of sum_c max(R_c, 0): min sum u + reg s.t. u_c >= R_c(theta), u_c >= 0 (convex).
    cons = [
        {"type": "ineq", "fun": lambda z, c=c: z[6 + c] - _np_nonnegative(unpack(z), x, y, prev, alpha, 2)[1][c]}
        for c in range(2)
    ]
    res = optimize.minimize(
        lambda z: z[6:].sum() + reg(z),
        np.concatenate([np.zeros(6), [1.0, 1.0]]),
        method="SLSQP",
        constraints=cons,
        bounds=[(None, None)] * 6 + [(0, None)] * 2,
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return res.fun


@pytest.mark.parametrize("nonnegative", [False, True])
def test_fit_linear_with_the_previous_column(nonnegative):
    # Needs fit_linear(..., columns=...) for any Objective (the `linear` branch); fails before that lands.
    x, y, prev, alpha = _trainer_problem()
    obj = contamination_corrected(alpha, nonnegative=nonnegative, num_classes=2)
    sol = rl.train.fit_linear(x, y, obj, loss="softmax", l2=1e-2, num_classes=2, columns={"previous": prev})
    ref = _fit_linear_reference(x, y, prev, alpha, 1e-2, nonnegative)
    exact = (
        _np_nonnegative(sol.params, x, y, prev, alpha, 2)[0]
        if nonnegative
        else _np_corrected(sol.params, x, y, prev, alpha)
    ) + 0.5 * 1e-2 * float(np.sum(np.asarray(sol.params["w"]) ** 2))
    assert exact == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: contamination_corrected(1.0), ValueError, r"alpha.*\[0, 1\).*1 is excluded"),
        (lambda: contamination_corrected(-0.1), ValueError, "alpha"),
        (lambda: contamination_corrected(float("nan")), ValueError, "alpha"),
        (lambda: contamination_corrected("0.5"), TypeError, "alpha"),
        (lambda: contamination_corrected(0.5, nonnegative=True), ValueError, "num_classes"),
        (lambda: contamination_corrected(0.5, num_classes=1), ValueError, "num_classes"),
        (lambda: contamination_corrected(0.5, previous_key=""), TypeError, "previous_key"),
    ],
)
def test_bad_configuration(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "data,error,match",
    [
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2])}, ValueError, "'previous'"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2]), "previous": np.array([0, 3, 1])}, ValueError, r"\[-1, 2\]"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2]), "previous": np.array([0, -2, 1])}, ValueError, r"\[-1, 2\]"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2]), "previous": np.array([0, 0.5, 1])}, ValueError, "integer"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2]), "previous": np.array(["a", "b", "c"])}, TypeError, "int"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2]), "previous": np.array([0, 1])}, ValueError, "shape"),
    ],
)
def test_bad_previous_column(data, error, match):
    obj = contamination_corrected(0.5, num_classes=3)
    with pytest.raises(error, match=match):
        obj.check(data)


def test_missing_or_out_of_range_previous_when_calling_the_loss():
    obj = contamination_corrected(0.5, num_classes=3)
    params = {"w": jnp.zeros((D, C)), "b": jnp.zeros(C)}
    batch = {"x": jnp.zeros((3, D)), "y": jnp.array([0, 1, 2])}
    with pytest.raises(ValueError, match="'previous'"):
        _value(obj, params, batch)
    # Under jit the labels cannot be inspected: out of range gives NaN, not a number.
    bad = {**batch, "previous": jnp.array([0, 7, 1])}
    assert np.isnan(float(jax.jit(lambda b: _value(obj, params, b))(bad)))
    # Without num_classes the concrete check bounds the labels by the largest label seen (at least 1).
    loose = contamination_corrected(0.5)
    with pytest.raises(ValueError, match=r"\[-1, 2\].*num_classes"):
        loose.check({**batch, "previous": np.array([0, 3, 1])})
    loose.check({**batch, "previous": np.array([0, 2, -1])})
