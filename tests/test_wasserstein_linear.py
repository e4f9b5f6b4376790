"""Exact Wasserstein-1 DRO of linear classifiers against primal linear programs."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax import test_util as jtu
from scipy import optimize

from robustlearn import objectives, wasserstein

LOSSES = {"logistic": lambda z: np.logaddexp(0, -z), "hinge": lambda z: np.maximum(1 - z, 0)}
DUAL = {
    "l1": lambda t: np.max(np.abs(t)),
    "l2": np.linalg.norm,
    "linf": lambda t: np.sum(np.abs(t)),
    3.0: lambda t: np.linalg.norm(t, ord=1.5),
}


def _steepest(theta, norm):
    """Unit vector v (in `norm`) with <theta, v> = ||theta||_*."""
    if norm == "l2":
        return theta / np.linalg.norm(theta)
    if norm == "l1":
        j = np.argmax(np.abs(theta))
        return np.eye(len(theta))[j] * np.sign(theta[j])
    if norm == "linf":
        return np.sign(theta)
    q = norm / (norm - 1)  # general p-norm: Hoelder's equality case
    v = np.sign(theta) * np.abs(theta) ** (q - 1)
    return v / np.linalg.norm(v, ord=norm)


def _instance(seed, n=5, d=3):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    y = rng.choice([-1, 1], size=n)
    p = rng.uniform(0.5, 2.0, size=n)
    return theta, x, y, p / p.sum()


def primal_lp(theta, x, y, p, eps, kappa, norm, loss):
    """max over plans moving each point along the steepest direction (both labels)."""
    v = _steepest(theta, norm)
    grid = np.concatenate([np.linspace(0, 5, 201), np.geomspace(5.5, 1e4, 80)])
    rows, gains, costs = [], [], []
    for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
        for label in (yi, -yi):
            if label != yi and not np.isfinite(kappa):
                continue
            for s in grid:
                x_new = xi - label * s * v  # lowers the margin label * <theta, x>
                rows.append(i)
                gains.append(LOSSES[loss](label * (x_new @ theta)))
                costs.append(s + (kappa if label != yi else 0.0))
    rows, gains, costs = np.asarray(rows), np.asarray(gains), np.asarray(costs)
    a_eq = (rows[None, :] == np.arange(len(y))[:, None]).astype(float)
    res = optimize.linprog(-gains, A_ub=costs[None, :], b_ub=[eps], A_eq=a_eq, b_eq=p, bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    return -res.fun


CONFIGS = list(
    itertools.product(
        [0, 1], ["l1", "l2", "linf", 3.0], [0.5, 2.0, np.inf, 0.0], ["hinge", "logistic"], [0.05, 0.4, 1.0]
    )
)


@pytest.mark.parametrize(("seed", "norm", "kappa", "loss", "eps"), CONFIGS)
def test_exact_value_matches_the_primal_linear_program(seed, norm, kappa, loss, eps):
    theta, x, y, p = _instance(seed)
    exact = float(wasserstein.linear_classification(theta, x, y, eps, kappa=kappa, norm=norm, loss=loss, weights=p))
    lp = primal_lp(theta, x, y, p, eps, kappa, norm, loss)
    assert lp <= exact + 1e-9  # the LP is a feasible worst case: never above the exact sup
    # Hinge is piecewise linear: the grid realizes the sup. Logistic approaches it as mass
    # moves far (its slope tends to 1), so the bounded grid falls short by O(eps / 1e4).
    tol = 1e-7 if loss == "hinge" else 1e-7 + 1e-3 * eps * DUAL[norm](theta)
    assert exact - lp <= tol, (exact, lp)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf", 3.0])
@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_labels_fixed_is_erm_plus_dual_norm(norm, loss):
    theta, x, y, p = _instance(3)
    eps = 0.25
    expected = np.sum(p * LOSSES[loss](y * (x @ theta))) + eps * DUAL[norm](theta)
    got = float(wasserstein.linear_classification(theta, x, y, eps, norm=norm, loss=loss, weights=p))
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_explicit_shifts_never_exceed_the_exact_value(norm):
    theta, x, y, p = _instance(4)
    eps, kappa = 0.3, 1.0
    exact = float(wasserstein.linear_classification(theta, x, y, eps, kappa=kappa, norm=norm, weights=p))
    rng = np.random.default_rng(0)
    ord_ = {"l1": 1, "l2": 2, "linf": np.inf}[norm]
    for _ in range(200):
        flip = rng.random(len(y)) < 0.3
        label_cost = kappa * np.sum(p * flip)
        if label_cost > eps:
            continue
        shifts = rng.normal(size=x.shape)
        shifts /= np.linalg.norm(shifts, ord=ord_, axis=1, keepdims=True)
        share = rng.dirichlet(np.ones(len(y)))  # how the remaining budget is spread
        lengths = (eps - label_cost) * share / p
        x_new, y_new = x + lengths[:, None] * shifts, np.where(flip, -y, y)
        attacked = np.sum(p * LOSSES["logistic"](y_new * (x_new @ theta)))
        assert attacked <= exact + 1e-12


def test_monotone_in_eps_and_decreasing_in_kappa():
    theta, x, y, p = _instance(5)
    f = lambda eps, kappa: float(wasserstein.linear_classification(theta, x, y, eps, kappa=kappa))  # noqa: E731
    by_eps = [f(e, 1.0) for e in (0.0, 0.01, 0.1, 0.5, 2.0)]
    by_kappa = [f(0.3, k) for k in (0.0, 0.1, 1.0, 10.0, np.inf)]
    assert np.all(np.diff(by_eps) >= -1e-12) and np.all(np.diff(by_kappa) <= 1e-12)
    assert by_eps[0] == pytest.approx(np.mean(LOSSES["logistic"](y * (x @ theta))), rel=1e-12)


def test_gradient_matches_finite_differences():
    theta, x, y, _ = _instance(6)
    fn = lambda t: wasserstein.linear_classification(t, x, y, 0.2, kappa=1.5)  # noqa: E731
    jtu.check_grads(fn, (jnp.asarray(theta),), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius": -0.1}, r"`radius` must be in \[0, inf\)"),
        ({"kappa": -1.0}, r"`kappa` must be in \[0, inf\]"),
        ({"norm": "l3"}, "`norm` must be one of"),
        ({"norm": 0.5}, "`norm` must be one of"),
        ({"norm": np.nan}, "`norm` must be one of"),
        ({"loss": "squared"}, "`loss` must be one of"),
        ({"intercept": np.zeros(5)}, "`intercept` must be a scalar"),
    ],
)
def test_bad_arguments(kwargs, match):
    theta, x, y, _ = _instance(0)
    args = {"radius": 0.1} | kwargs
    radius = args.pop("radius")
    with pytest.raises(ValueError, match=match):
        wasserstein.linear_classification(theta, x, y, radius, **args)


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_cheap_label_flips_on_well_separated_data(loss):
    # Every example gains more by flipping than kappa * ||theta||_*, and the budget covers
    # flipping all of them: the optimal multiplier is ||theta||_* itself.
    theta = np.array([2.0, -1.0])
    x = np.array([[1.0, -0.5], [2.0, 0.0], [-1.5, 0.5], [-2.0, 1.0]])
    y = np.sign(x @ theta).astype(int)
    p = np.full(4, 0.25)
    eps, kappa = 0.5, 0.2
    exact = float(wasserstein.linear_classification(theta, x, y, eps, kappa=kappa, norm="l2", loss=loss))
    lp = primal_lp(theta, x, y, p, eps, kappa, "l2", loss)
    assert lp <= exact + 1e-9
    assert exact - lp <= 1e-7 + 1e-3 * eps * np.linalg.norm(theta)


def test_objective_trains_through_the_trainer_and_matches_the_function():
    import optax

    import robustlearn as rl

    theta, x, _, _ = _instance(7, n=64, d=2)
    y = np.where(x @ theta > 0, 1, -1)  # labels with signal: the robust optimum is not w = 0
    objective = wasserstein.linear_classification_objective(0.1, kappa=1.0)
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    value, _ = objective.loss(None, params, batch, objective.init(None), None)
    assert float(value) == pytest.approx(float(wasserstein.linear_classification(params["w"], x, y, 0.1, kappa=1.0)))

    def apply(p, x):
        return x @ p["w"] + p["b"]

    def margin_loss(scores, y):
        return jnp.logaddexp(0.0, -jnp.where(y > 0, 1.0, -1.0) * scores)

    trainer = rl.train.Trainer(apply, margin_loss, objective, optax.adam(0.05), params=params, verbose=False)
    history = trainer.fit({"x": x, "y": y}, epochs=50)
    assert history.rows[-1]["train_objective"] < history.rows[0]["train_objective"]
    final = float(
        wasserstein.linear_classification(trainer.params["w"], x, y, 0.1, kappa=1.0, intercept=trainer.params["b"])
    )
    assert final == pytest.approx(history.rows[-1]["train_objective"], rel=0.05)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_gradient_is_finite_at_zero_weights(norm):
    _, x, y, _ = _instance(8)
    grad = jax.grad(lambda t: wasserstein.linear_classification(t, x, y, 0.1, norm=norm))(jnp.zeros(x.shape[1]))
    assert np.all(np.isfinite(grad))


HUBER = 0.7
REG_LOSSES = {
    "absolute": (np.abs, 1.0),
    "huber": (lambda r: np.where(np.abs(r) <= HUBER, 0.5 * r**2, HUBER * (np.abs(r) - 0.5 * HUBER)), HUBER),
}


def regression_lp(theta, x, y, p, eps, norm, loss):
    """max over plans moving each x along +-v (targets fixed)."""
    v = _steepest(theta, norm)
    grid = np.concatenate([np.linspace(0, 5, 201), np.geomspace(5.5, 1e4, 80)])
    rows, gains, costs = [], [], []
    for i in range(len(y)):
        for direction in (1.0, -1.0):
            for s in grid:
                rows.append(i)
                gains.append(REG_LOSSES[loss][0](y[i] - (x[i] + direction * s * v) @ theta))
                costs.append(s)
    rows, gains, costs = np.asarray(rows), np.asarray(gains), np.asarray(costs)
    a_eq = (rows[None, :] == np.arange(len(y))[:, None]).astype(float)
    res = optimize.linprog(-gains, A_ub=costs[None, :], b_ub=[eps], A_eq=a_eq, b_eq=p, bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    return -res.fun


@pytest.mark.parametrize("norm", ["l1", "l2", "linf", 3.0])
@pytest.mark.parametrize("loss", ["absolute", "huber"])
@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_regression_matches_the_primal_linear_program(norm, loss, eps):
    theta, x, _, p = _instance(9)
    y = x @ theta + np.random.default_rng(9).normal(size=len(p))
    exact = float(wasserstein.linear_regression(theta, x, y, eps, norm=norm, loss=loss, delta=HUBER, weights=p))
    expected = np.sum(p * REG_LOSSES[loss][0](y - x @ theta)) + eps * REG_LOSSES[loss][1] * DUAL[norm](theta)
    assert exact == pytest.approx(expected, rel=1e-12)
    lp = regression_lp(theta, x, y, p, eps, norm, loss)
    assert lp <= exact + 1e-9
    assert exact - lp <= 1e-7 + 1e-3 * eps * DUAL[norm](theta)


def test_regression_bad_arguments():
    theta, x, y, _ = _instance(0)
    with pytest.raises(ValueError, match="`loss` must be one of"):
        wasserstein.linear_regression(theta, x, y.astype(float), 0.1, loss="squared")
    with pytest.raises(ValueError, match=r"`delta` must be in \(0, inf\)"):
        wasserstein.linear_regression(theta, x, y.astype(float), 0.1, loss="huber", delta=0.0)
    with pytest.raises(ValueError, match=r"`radius` must be in \[0, inf\)"):
        wasserstein.linear_regression(theta, x, y.astype(float), -1.0)


# --------------------------------------------------------------------------- labels, norms, names, state


@pytest.mark.parametrize(
    "y",
    [[2, 1, -1, 1, -1], [0.5, 1, 0, 0, 1], [np.nan, 1, 0, 0, 1], [-1, 0, 1, 1, 0], [3, 3, 3, 3, 3]],
    ids=["two", "half", "nan", "mixed_-1_0", "three"],
)
def test_labels_outside_the_two_label_sets_raise_or_give_nan_when_traced(y):
    theta, x, _, _ = _instance(10)
    y = np.asarray(y)
    with pytest.raises(ValueError, match=r"`y` must hold labels in \{-1, \+1\} or in \{0, 1\}"):
        wasserstein.linear_classification(theta, x, y, 0.1)
    traced = jax.jit(lambda y: wasserstein.linear_classification(theta, x, y, 0.1, kappa=1.0))(jnp.asarray(y))
    assert np.isnan(traced)


def test_zero_one_and_boolean_labels_are_the_signed_labels():
    theta, x, y, p = _instance(11)
    signed = float(wasserstein.linear_classification(theta, x, y, 0.2, kappa=0.7, weights=p))
    for labels in ((y + 1) // 2, y > 0, ((y + 1) // 2).astype(float)):
        assert float(wasserstein.linear_classification(theta, x, labels, 0.2, kappa=0.7, weights=p)) == signed
    # Independent of the solver: labels fixed is ERM + radius * ||theta||_2 on the signed margins.
    expected = np.sum(p * LOSSES["logistic"](y * (x @ theta))) + 0.2 * np.linalg.norm(theta)
    assert float(wasserstein.linear_classification(theta, x, y > 0, 0.2, weights=p)) == pytest.approx(expected)


def _lse_norm(theta, q):
    """||theta||_q = exp(logsumexp(q log|theta|) / q), in float64 from logs: no overflow or underflow."""
    from scipy.special import logsumexp

    a = np.abs(np.asarray(theta, np.float64))
    return float(np.exp(logsumexp(q * np.log(a[a > 0])) / q)) if np.any(a > 0) else 0.0


@pytest.mark.parametrize("norm", [np.int64(2), np.float64(3.0), np.float32(1.5), 2, 1.0, np.inf])
def test_dual_norm_accepts_numpy_and_python_numbers(norm):
    theta = np.array([0.5, -2.0, 1.5])
    p = float(norm)
    expected = np.abs(theta).max() if p == 1 else np.abs(theta).sum() if p == np.inf else _lse_norm(theta, p / (p - 1))
    assert float(wasserstein.dual_norm(jnp.asarray(theta), norm)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("norm,error", [(True, TypeError), (jnp.asarray(2.0), TypeError), (0.99, ValueError)])
def test_dual_norm_rejects_non_numbers_and_orders_below_one(norm, error):
    with pytest.raises(error, match="`norm` must be one of"):
        wasserstein.dual_norm(jnp.ones(2), norm)


@pytest.mark.parametrize(
    "theta,p",
    [
        ([3e-30, 4e-30], 2.0),
        ([3e30, -4e30], 2.0),
        ([3.0, 4.0], 1 + 1e-7),
        ([3.0, 4.0, 4.0], 1 + 1e-3),
        ([1e-20, 2.0], 1e6),
    ],
)
def test_dual_norm_float32_neither_overflows_nor_underflows(theta, p):
    with jax.enable_x64(False):
        got = wasserstein.dual_norm(jnp.asarray(theta, jnp.float32), p)
        assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(_lse_norm(theta, p / (p - 1)), rel=2e-6)


@given(
    base=hnp.arrays(np.float64, 4, elements=st.floats(-10, 10)),
    log_scale=st.floats(-250, 250),
    p=st.floats(1.001, 60.0),
)
@example(base=np.array([6.72475374e-230, 0.0, 0.0, 0.0]), log_scale=-79.0, p=2.0)  # a subnormal entry
@example(base=np.array([3.0, 2.1, 0.0, 0.0]), log_scale=-308.0, p=2.0)  # a normal maximum, a subnormal entry
def test_dual_norm_is_exact_at_every_scale(base, log_scale, p):
    theta = base * 10.0**log_scale
    got = float(wasserstein.dual_norm(jnp.asarray(theta), p))
    # XLA:CPU flushes subnormal numbers to zero (as dual_norm's docstring says): entries
    # below the smallest normal float64 count as 0 (hypothesis found 6.7e-309 -> 0).
    normal = np.where(np.abs(theta) < np.finfo(np.float64).tiny, 0.0, theta)
    assert got == pytest.approx(_lse_norm(normal, p / (p - 1)), rel=1e-12, abs=0.0)


@pytest.mark.parametrize("norm", [1.5, "l2", 4.0])
def test_dual_norm_gradient_matches_finite_differences(norm):
    theta = jnp.array([0.3, -1.2, 0.7])
    jtu.check_grads(lambda t: wasserstein.dual_norm(t, norm), (theta,), order=1, modes=["rev"], eps=1e-6)


def _deprecated(fn, *args, old, **kwargs):
    with pytest.warns(DeprecationWarning, match=f"`{old}` is deprecated"):
        return fn(*args, **kwargs)


def test_eps_is_a_deprecated_alias_of_radius():
    theta, x, y, p = _instance(12)
    new = float(wasserstein.linear_classification(theta, x, y, radius=0.3, kappa=1.0, weights=p))
    old = _deprecated(wasserstein.linear_classification, theta, x, y, old="eps", eps=0.3, kappa=1.0, weights=p)
    assert float(old) == new
    yr = x @ theta
    new = float(wasserstein.linear_regression(theta, x, yr + 1, radius=0.3))
    assert float(_deprecated(wasserstein.linear_regression, theta, x, yr + 1, old="eps", eps=0.3)) == new
    obj = _deprecated(wasserstein.linear_classification_objective, old="eps", eps=0.3, kappa=1.0)
    assert obj.hyperparams["radius"] == 0.3 and "eps" not in obj.hyperparams
    with pytest.raises(TypeError, match="got both `radius` and its deprecated name `eps`"):
        wasserstein.linear_classification(theta, x, y, radius=0.3, eps=0.3)


def test_objective_reads_radius_and_kappa_from_its_state():
    """Objectives differing only in radius or in a finite kappa trace to the same program (a
    grid compiles once) and follow the state they are given; kappa = inf is a program of its
    own, without the label-flip solves, which gives NaN for a state with a finite kappa."""
    theta, x, y, p = _instance(13, n=8)
    params = {"w": jnp.asarray(theta), "b": jnp.asarray(0.2)}
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "weight": jnp.asarray(p)}
    a = wasserstein.linear_classification_objective(0.1, kappa=3.0)
    b = wasserstein.linear_classification_objective(0.5, kappa=1.0)
    c = wasserstein.linear_classification_objective(0.1, kappa=np.inf)
    d = wasserstein.linear_classification_objective(0.5, kappa=np.inf)

    def program(obj):
        return str(jax.make_jaxpr(lambda s: obj.loss(None, params, batch, s, None)[0])(obj.init(None)))

    def value(obj, state):
        return float(jax.jit(lambda s: obj.loss(None, params, batch, s, None)[0])(state))

    assert program(a) == program(b)
    assert program(c) == program(d)
    assert "while" in program(a) and "while" not in program(c)  # CVaR's solves: finite kappa only
    flips = float(wasserstein.linear_classification(theta, x, y, 0.5, kappa=1.0, intercept=0.2, weights=p))
    assert value(a, b.init(None)) == pytest.approx(flips, rel=1e-12)
    assert value(b, b.init(None)) == pytest.approx(flips, rel=1e-12)
    expected = np.sum(p * LOSSES["logistic"](y * (x @ theta + 0.2))) + 0.5 * np.linalg.norm(theta)
    assert value(c, d.init(None)) == pytest.approx(expected, rel=1e-12)
    assert flips > expected + 0.05  # flips at cost 1 raise the worst case: the states differ
    assert np.isnan(value(c, b.init(None)))
    bad = objectives.ReductionState({"radius": jnp.asarray(-1.0), "kappa": jnp.asarray(1.0)})
    assert np.isnan(value(a, bad))


def test_objective_checks_training_labels_before_compiling():
    import optax

    import robustlearn as rl

    objective = wasserstein.linear_classification_objective(0.1)
    with pytest.raises(ValueError, match="`y` must hold labels"):
        objective.check({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2])})
    trainer = rl.train.Trainer(
        lambda p, x: x @ p["w"] + p["b"], lambda s, y: s, objective, optax.sgd(0.1),
        params={"w": jnp.zeros(2), "b": jnp.zeros(())}, verbose=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="`y` must hold labels"):
        trainer.fit({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0.5, 1])}, epochs=1)


def test_weights_near_the_float32_limits_are_the_uniform_problem():
    theta, x, y, _ = _instance(14)
    with jax.enable_x64(False):
        args = (jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32), y, 0.2)
        uniform = wasserstein.linear_classification(*args, kappa=0.5)
        for w in (np.full(5, 3e38, np.float32), np.full(5, 1e-50)):
            assert float(wasserstein.linear_classification(*args, kappa=0.5, weights=w)) == pytest.approx(
                float(uniform), rel=1e-6
            )
        traced = jax.jit(lambda w: wasserstein.linear_classification(*args, kappa=0.5, weights=w))
        assert float(traced(jnp.full(5, 3e38, jnp.float32))) == pytest.approx(float(uniform), rel=1e-6)
    lp = primal_lp(theta, x, y, np.full(5, 0.2), 0.2, 0.5, "l2", "logistic")
    assert float(uniform) >= lp - 1e-5 and float(uniform) - lp <= 1e-5 + 1e-3 * 0.2 * np.linalg.norm(theta)


@pytest.fixture
def compilations():
    """Counts JAX's traces and compilations (persistent-cache hits included) from here on."""
    counts = collections.Counter()
    names = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")

    def listener(name, duration, **kwargs):
        if name in names:
            counts[name] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield counts
    jax.monitoring.unregister_event_duration_listener(listener)


def _logistic_loss(params, batch):
    return jnp.log1p(jnp.exp(-(2.0 * batch["y"] - 1) * (batch["x"] @ params["w"] + params["b"])))


@pytest.mark.parametrize(
    "call",
    [
        lambda x, y, th: wasserstein.linear_classification(th, x, y, 0.05, kappa=2.0),
        lambda x, y, th: wasserstein.wrm_perturb(
            _logistic_loss, {"w": jnp.asarray(th), "b": jnp.zeros(())}, {"x": jnp.asarray(x), "y": jnp.asarray(y)}, 1.0
        ),
    ],
    ids=["linear_classification", "wrm_perturb"],
)
def test_eager_calls_compile_once(call, compilations):
    # Loops and conds of functions defined inside a call are traced again at every eager call
    # unless the call is jitted: a finite kappa recompiled 0.5 s per call (a scipy loop over
    # the value ran out of memory).
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), (rng.random(40) < 0.5).astype(np.int32)
    jax.block_until_ready(call(x, y, rng.normal(size=3)))
    before = sum(compilations.values())
    for _ in range(2):
        jax.block_until_ready(call(x, y, rng.normal(size=3)))
    assert sum(compilations.values()) == before
