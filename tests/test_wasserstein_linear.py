"""Exact Wasserstein-1 DRO of linear classifiers against primal linear programs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu
from scipy import optimize

from robustlearn import wasserstein

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
        ({"eps": -0.1}, r"`eps` must be in \[0, inf\)"),
        ({"kappa": -1.0}, r"`kappa` must be in \[0, inf\]"),
        ({"norm": "l3"}, "`norm` must be one of"),
        ({"norm": 0.5}, "`norm` must be one of"),
        ({"loss": "squared"}, "`loss` must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    theta, x, y, _ = _instance(0)
    args = {"eps": 0.1} | kwargs
    eps = args.pop("eps")
    with pytest.raises(ValueError, match=match):
        wasserstein.linear_classification(theta, x, y, eps, **args)


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
    value, _ = objective.loss(None, params, batch, (), None)
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
    with pytest.raises(ValueError, match=r"`eps` must be in \[0, inf\)"):
        wasserstein.linear_regression(theta, x, y.astype(float), -1.0)
