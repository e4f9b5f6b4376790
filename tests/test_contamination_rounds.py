"""The PAC protocol (simulate_rounds) and the learners: the label mechanism, determinism, composition, bad input."""

import math

import numpy as np
import pytest
from scipy import stats

import robustlearn as rl
from robustlearn import contamination as rc


def _teacher(x):
    return (x[:, 0] + 0.5 * x[:, 1] > 0.1).astype(np.int64)


def _pool(n=3000, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2))


def _threshold_learner(rounds):
    """A deterministic toy learner: threshold on the first coordinate at the midpoint of the class means."""
    x, y = rounds.x, rounds.y
    cut = 0.0 if len(np.unique(y)) < 2 else 0.5 * (x[y == 0, 0].mean() + x[y == 1, 0].mean())
    return lambda z: (z[:, 0] > cut).astype(np.int64)


def test_deterministic_in_the_seed():
    a = rc.simulate_rounds(
        _pool(), _teacher, _threshold_learner, alpha=0.6, rounds=4, size=100, seed=3, test=_pool(500, 1)
    )
    b = rc.simulate_rounds(
        _pool(), _teacher, _threshold_learner, alpha=0.6, rounds=4, size=100, seed=3, test=_pool(500, 1)
    )
    c = rc.simulate_rounds(
        _pool(), _teacher, _threshold_learner, alpha=0.6, rounds=4, size=100, seed=4, test=_pool(500, 1)
    )
    for field in ("x", "y", "previous", "round"):
        np.testing.assert_array_equal(getattr(a.rounds, field), getattr(b.rounds, field))
    np.testing.assert_array_equal(a.synthetic, b.synthetic)
    np.testing.assert_array_equal(a.test_error, b.test_error)
    assert not np.array_equal(a.rounds.x, c.rounds.x)


def test_label_mechanism_matches_the_protocol():
    # The deployed models are fixed and wrong on a known region, so the label law can be checked.
    alpha, size, rounds = 0.7, 4000, 3
    pool = _pool(rounds * size, 2)

    def wrong(x):  # disagrees with the teacher on a band
        return (x[:, 0] > 0.6).astype(np.int64)

    sim = rc.simulate_rounds(pool, _teacher, lambda r: wrong, alpha=alpha, rounds=rounds, size=size, seed=0)
    r = sim.rounds
    first = r.round == 0
    # Round 1 is clean: no previous model, labels from the teacher.
    assert np.all(r.previous[first] == -1) and not np.any(sim.synthetic[first])
    np.testing.assert_array_equal(r.y[first], _teacher(r.x[first]))
    later = ~first
    np.testing.assert_array_equal(r.previous[later], wrong(r.x[later]))
    f_star = _teacher(r.x[later])
    # Where the previous model agrees with f*, every label is f*; where it disagrees, a label
    # copies it with probability alpha (binomial 99.9% interval).
    agree = r.previous[later] == f_star
    np.testing.assert_array_equal(r.y[later][agree], f_star[agree])
    copies = int(np.sum(r.y[later][~agree] == r.previous[later][~agree]))
    n = int(np.sum(~agree))
    lo, hi = stats.binom.ppf([0.0005, 0.9995], n, alpha)
    assert lo <= copies <= hi, (copies, n)
    # `synthetic` records the coin: a synthetic label always equals the previous prediction.
    np.testing.assert_array_equal(r.y[later][sim.synthetic[later]], r.previous[later][sim.synthetic[later]])
    assert abs(np.mean(sim.synthetic[later]) - alpha) < 5 * math.sqrt(alpha * (1 - alpha) / later.sum())


def test_inputs_are_fresh_and_the_learner_sees_the_right_models():
    seen = []

    def learner(rounds):
        seen.append(rounds)
        return _threshold_learner(rounds)

    pool = _pool(1000, 3)
    sim = rc.simulate_rounds(
        pool, _teacher, learner, alpha=0.5, rounds=5, size=150, seed=1, initial=lambda x: np.zeros(len(x), int)
    )
    assert len(np.unique(sim.pool_index)) == 5 * 150  # without replacement across rounds
    np.testing.assert_array_equal(pool[sim.pool_index], sim.rounds.x)
    assert len(sim.models) == 6 and sim.test_error is None
    for t, rounds in enumerate(seen):
        assert rounds.num_rounds == t + 1 and rounds.models == sim.models[: t + 1]
        for s in range(t + 1):  # previous = the model deployed before the row's round, on the row
            rows = rounds.round == s
            np.testing.assert_array_equal(rounds.previous[rows], sim.models[s](rounds.x[rows]))
        latest = rounds.latest()
        assert np.all(latest.round == t) and len(latest.y) == 150
    # With an initial model even round 1 is contaminated.
    assert np.all(sim.rounds.previous[sim.rounds.round == 0] == 0)


def test_test_error_is_the_error_against_the_teacher():
    test = _pool(700, 4)
    sim = rc.simulate_rounds(_pool(), _teacher, _threshold_learner, alpha=0.3, rounds=3, size=80, seed=2, test=test)
    for t in range(3):
        assert sim.test_error[t] == pytest.approx(np.mean(sim.models[t + 1](test) != _teacher(test)))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"size": 0}, ValueError, "`size`"),
        ({"rounds": 0}, ValueError, "`rounds`"),
        ({"size": 2.5}, ValueError, "`size`"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"alpha": float("nan")}, ValueError, "alpha"),
        ({"size": 2000}, ValueError, "`pool`"),
        ({"seed": "a"}, TypeError, "seed"),
        ({"initial": 3}, TypeError, "initial"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"alpha": 0.5, "rounds": 2, "size": 10, **kwargs}
    with pytest.raises(error, match=match):
        rc.simulate_rounds(_pool(1000), _teacher, _threshold_learner, **args)


def test_bad_models():
    with pytest.raises(ValueError, match="teacher"):
        rc.simulate_rounds(_pool(), lambda x: np.zeros((len(x), 2)), _threshold_learner, alpha=0.5, rounds=2, size=5)
    with pytest.raises(ValueError, match="teacher"):
        rc.simulate_rounds(_pool(), lambda x: -np.ones(len(x)), _threshold_learner, alpha=0.5, rounds=2, size=5)
    with pytest.raises(TypeError, match="callable model"):
        rc.simulate_rounds(_pool(), _teacher, lambda r: None, alpha=0.5, rounds=2, size=5)
    with pytest.raises(ValueError, match="deployed before round 2"):
        rc.simulate_rounds(_pool(), _teacher, lambda r: lambda x: np.zeros(3), alpha=0.5, rounds=2, size=5)


# -------------------------------------------------------------------------------------------- learners


def _oracle_fit(log, num_classes_total):
    """A `fit` that records its calls and returns exact scores: the region {f* != g} or f* itself."""

    def fit(data, objective, num_classes, seed):
        log.append((data, objective, num_classes))
        if num_classes == 2 and data["x"].shape[1] == num_classes_total * 3:  # the region task, d = 2

            def region(features):
                onehot = features[:, -num_classes_total:]
                x = features[:, :-num_classes_total].reshape(len(features), num_classes_total, 2).sum(1)
                g = np.argmax(onehot, 1)
                return np.eye(2)[(_multi_teacher(x, num_classes_total) != g).astype(int)]

            return region
        return lambda x: np.eye(num_classes)[_multi_teacher(x, num_classes)]

    return fit


def _multi_teacher(x, c):
    return (np.floor(np.arctan2(x[:, 1], x[:, 0]) / (2 * np.pi) * c) % c).astype(np.int64)


@pytest.mark.parametrize("c", [2, 4])
def test_disagreement_learner_with_exact_fits_recovers_f_star(c):
    log = []
    learner = rc.disagreement_learner(_oracle_fit(log, c), 0.6, num_classes=c)
    pool = _pool(2000, 5)
    sim = rc.simulate_rounds(
        pool,
        lambda x: _multi_teacher(x, c),
        learner,
        alpha=0.6,
        rounds=3,
        size=100,
        seed=0,
        initial=lambda x: np.zeros(len(x), np.int64),
        test=_pool(500, 6),
    )
    assert np.all(sim.test_error == 0.0)
    # The region task it built: delta = [y != g(x)], previous q = [f_{s-1}(x) != g(x)], the
    # non-negative corrected objective with the given alpha, 2 classes.
    data, objective, k = log[0]
    assert k == 2 and objective.hyperparams == {"alpha": 0.6} and objective.smooth is False
    g = sim.models[0](sim.rounds.x[:100])
    np.testing.assert_array_equal(data["y"], (sim.rounds.y[:100] != g).astype(int))
    np.testing.assert_array_equal(data["previous"], np.zeros(100, int))  # round 1 was made by g itself
    if c > 2:  # the correction classifier trains on the certain positives only (their labels are f*)
        labels_data = log[1][0]
        np.testing.assert_array_equal(labels_data["y"], _multi_teacher(labels_data["x"], c))


def test_region_features_represent_a_binary_linear_disagreement_exactly():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((500, 3))
    w_star, b_star = rng.standard_normal(3), 0.3
    f_star = (x @ w_star + b_star > 0).astype(int)
    g = rng.integers(0, 2, 500)  # any current model
    feats = rc.region_features(x, g, 2)
    # Given g = 0 the region is {f* = 1}: score w*.x + b*; given g = 1 it is {f* = 0}: -(w*.x + b*).
    weights = np.concatenate([w_star, -w_star, [b_star, -b_star]])
    np.testing.assert_array_equal(feats @ weights > 0, f_star != g)


def test_pooled_learner_passes_rounds_and_objective():
    log = []

    def fit(data, objective, num_classes, seed):
        log.append((data, objective, num_classes, seed))
        return lambda x: np.eye(num_classes)[_teacher(x)]

    obj = rl.objectives.contamination_corrected(0.4)
    sim = rc.simulate_rounds(
        _pool(), _teacher, rc.pooled_learner(fit, obj, num_classes=2), alpha=0.4, rounds=3, size=50
    )
    assert [len(d["y"]) for d, *_ in log] == [50, 100, 150]
    assert all(o is obj and k == 2 for _, o, k, _ in log)
    np.testing.assert_array_equal(log[-1][0]["group"], sim.rounds.round)
    latest = []
    rc.simulate_rounds(
        _pool(),
        _teacher,
        rc.pooled_learner(
            lambda d, o, k, s: latest.append(len(d["y"])) or fit(d, o, k, s),
            rl.objectives.erm(),
            num_classes=2,
            latest_only=True,
        ),
        alpha=0.4,
        rounds=3,
        size=50,
    )
    assert latest == [50, 50, 50]
    # An objective built from the rounds (e.g. with an estimated alpha).
    built = []

    def make(rounds):
        built.append(rounds.num_rounds)
        return rl.objectives.erm()

    rc.simulate_rounds(_pool(), _teacher, rc.pooled_learner(fit, make, num_classes=2), alpha=0.4, rounds=2, size=50)
    assert built == [1, 2]


def test_learner_bad_arguments():
    fit = _oracle_fit([], 2)
    with pytest.raises(ValueError, match="alpha"):
        rc.disagreement_learner(fit, 1.0, num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        rc.disagreement_learner(fit, 0.5, num_classes=1)
    with pytest.raises(ValueError, match="history"):
        rc.disagreement_learner(fit, 0.5, num_classes=2, history="some")
    with pytest.raises(TypeError, match="fit"):
        rc.pooled_learner(None, rl.objectives.erm(), num_classes=2)
    with pytest.raises(TypeError, match="objective"):
        rc.pooled_learner(fit, 3, num_classes=2)
