"""The comparison protocol: tuning never sees the test split; summaries match their formulas."""

import numpy as np
import pytest
from scipy import stats

from robustlearn import benchmark


def _split(rng, n):
    return {"x": rng.normal(size=(n, 2)), "y": rng.integers(0, 2, n)}


def _splits():
    rng = np.random.default_rng(0)
    return {"train": _split(rng, 20), "other": _split(rng, 15), "val": _split(rng, 10), "test": _split(rng, 10)}


def test_test_split_is_evaluated_once_after_tuning_and_never_trained_on():
    splits = _splits()
    log = []

    def fit(method, hyper, train, seed):
        assert train is splits[method.train_split]
        log.append(("fit", method.name, seed, hyper["c"]))
        return {"c": hyper["c"], "extra": {"seen": train["x"].shape[0]}}

    def evaluate(model, split):
        which = next(k for k, v in splits.items() if v is split)
        log.append(("eval", which, model["c"]))
        return {"score": -abs(model["c"] - 2) if which == "val" else model["c"] * 10.0}

    methods = [benchmark.Method("a", [{"c": 1}, {"c": 2}, {"c": 3}]), benchmark.Method("b", [{"c": 5}], "other")]
    results = benchmark.compare(methods, fit, evaluate, splits, select="score", seeds=[0, 1])
    test_evals = [e for e in log if e[:2] == ("eval", "test")]
    assert len(test_evals) == len(results) == 4  # once per (method, seed)
    # Within each (method, seed) block, the test evaluation comes after every fit and validation.
    blocks = "".join("F" if e[0] == "fit" else ("T" if e[1] == "test" else "V") for e in log)
    assert blocks == "FVFVFVTFVTFVFVFVTFVT"
    assert not any(e[0] == "eval" and e[1] in ("train", "other") for e in log)
    a0 = next(r for r in results if r.method == "a" and r.seed == 0)
    assert a0.hyper == {"c": 2} and a0.test == {"score": 20.0} and a0.extra == {"seen": 20}


def test_passing_test_arrays_to_training_or_validation_fails_loudly():
    splits = _splits()
    leaky = dict(splits, train={"x": splits["test"]["x"][:5], "y": splits["train"]["y"][:5]})

    def fit(method, hyper, train, seed):
        return {}

    def evaluate(model, split):
        return {"score": 0.0}

    with pytest.raises(AssertionError, match="test split reached training"):
        benchmark.compare([benchmark.Method("a")], fit, evaluate, leaky, select="score", seeds=[0])
    leaky_val = dict(splits, val=splits["test"])
    with pytest.raises(AssertionError, match="test split reached validation"):
        benchmark.compare([benchmark.Method("a")], fit, evaluate, leaky_val, select="score", seeds=[0])


def test_minimizing_selection_picks_the_smallest_validation_loss():
    splits = _splits()

    def evaluate(model, split):
        return {"loss": (model - 0.3) ** 2}

    res = benchmark.compare(
        [benchmark.Method("a", [{"v": v} for v in (0.0, 0.25, 1.0)])],
        lambda m, h, t, s: h["v"],
        evaluate,
        splits,
        select="loss",
        maximize=False,
        seeds=[0],
    )
    assert res[0].hyper == {"v": 0.25}


def test_summary_matches_its_formulas():
    rng = np.random.default_rng(1)
    acc = {m: rng.uniform(0.5, 0.9, 5) for m in ("erm", "dro")}
    acc |= {"floor": rng.uniform(0.3, 0.4, 5), "ceiling": rng.uniform(0.9, 0.95, 5)}
    results = [benchmark.Result(m, s, {}, {}, {"accuracy": float(v[s])}, {}) for m, v in acc.items() for s in range(5)]
    rows = {r["method"]: r for r in benchmark.summarize(results, "accuracy", floor="floor", ceiling="ceiling")}
    t = stats.t.ppf(0.975, 4)
    d = acc["dro"] - acc["erm"]
    assert rows["dro"]["mean"] == pytest.approx(acc["dro"].mean())
    assert rows["dro"]["ci95"] == pytest.approx(t * acc["dro"].std(ddof=1) / np.sqrt(5), rel=1e-3)
    assert rows["dro"]["diff"] == pytest.approx(d.mean())
    assert rows["dro"]["diff_ci95"] == pytest.approx(t * d.std(ddof=1) / np.sqrt(5), rel=1e-3)
    e = {m: 1 - v.mean() for m, v in acc.items()}
    assert rows["dro"]["gap_closed"] == pytest.approx((e["floor"] - e["dro"]) / (e["floor"] - e["ceiling"]))
    assert rows["floor"]["gap_closed"] == pytest.approx(0.0) and rows["ceiling"]["gap_closed"] == pytest.approx(1.0)
    table = benchmark.to_markdown(list(rows.values()), ["method", "mean"])
    assert table.splitlines()[0] == "| method | mean |" and len(table.splitlines()) == 6


@pytest.mark.parametrize(
    "splits,methods,match",
    [
        ({"val": {}}, [benchmark.Method("a")], "must contain 'test'"),
        ({"val": {}, "test": {}, "train": {}}, [benchmark.Method("a"), benchmark.Method("a")], "unique"),
        ({"val": {}, "test": {}}, [benchmark.Method("a")], "not a training split"),
        ({"val": {}, "test": {}, "train": {}}, [benchmark.Method("a", [])], "empty grid"),
    ],
)
def test_bad_protocol_input_raises(splits, methods, match):
    with pytest.raises(ValueError, match=match):
        benchmark.compare(methods, lambda *a: None, lambda *a: {"s": 0.0}, splits, select="s")


def test_gap_closed_is_undefined_when_floor_and_ceiling_are_indistinguishable():
    acc = {"erm": [0.8, 0.7, 0.9], "floor": [0.80, 0.71, 0.88], "ceiling": [0.81, 0.70, 0.89]}
    results = [benchmark.Result(m, s, {}, {}, {"a": v[s]}, {}) for m, v in acc.items() for s in range(3)]
    rows = benchmark.summarize(results, "a", floor="floor", ceiling="ceiling")
    assert all(np.isnan(r["gap_closed"]) for r in rows)
