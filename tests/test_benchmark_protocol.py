"""The comparison protocol: tuning never sees the test split; summaries match their formulas."""

import pathlib
import subprocess
import sys

import jax.numpy as jnp
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


def _noop_fit(method, hyper, train, seed):
    return {}


def _noop_eval(model, split):
    return {"score": 0.0}


def _run(splits, **kw):
    return benchmark.compare([benchmark.Method("a")], _noop_fit, _noop_eval, splits, select="score", seeds=[0], **kw)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_copied_test_row_is_caught_in_training_and_validation(backend):
    splits = _splits()
    conv = np.asarray if backend == "numpy" else jnp.asarray
    splits = {k: {c: conv(a) for c, a in v.items()} for k, v in splits.items()}
    test_x = splits["test"]["x"]
    # A fancy-indexed copy (new memory) of one test row, appended to training:
    leaky_x = conv(np.concatenate([np.asarray(splits["train"]["x"]), np.asarray(test_x)[[3]]]))
    leaky = dict(splits, train={"x": leaky_x, "y": conv(np.zeros(21, np.int32))})
    assert not np.may_share_memory(np.asarray(leaky_x), np.asarray(test_x))
    with pytest.raises(benchmark.LeakageError, match="split 'train' \\(training\\)") as err:
        _run(leaky)
    assert isinstance(err.value, ValueError)
    assert (err.value.split, err.value.count, err.value.rows) == ("train", 1, (20,))
    # The same row in another dtype (float32 copy of float64 values that are exact in float32) is still caught.
    val_x = np.asarray(splits["val"]["x"]).copy()
    val_x[5] = np.asarray(test_x)[0]
    leaky_val = dict(splits, val={"x": conv(val_x.astype(np.float32)), "y": splits["val"]["y"]})
    leaky_val["test"] = {"x": conv(np.asarray(test_x).astype(np.float32)), "y": splits["test"]["y"]}
    with pytest.raises(benchmark.LeakageError, match="split 'val' \\(validation\\)") as err:
        _run(leaky_val)
    assert err.value.rows == (5,)


def test_a_disjoint_strided_split_of_one_array_passes():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(90, 3)), rng.integers(0, 2, 90)
    # Views of one buffer (memory is shared, rows are not): the protocol must accept them.
    splits = {
        "train": {"x": x[0::3], "y": y[0::3]},
        "val": {"x": x[1::3], "y": y[1::3]},
        "test": {"x": x[2::3], "y": y[2::3]},
    }
    assert np.may_share_memory(splits["train"]["x"], splits["test"]["x"])
    assert len(_run(splits)) == 1


def test_leakage_keys_select_the_columns_and_none_turns_the_check_off():
    splits = _splits()
    # Training holds rows equal to every test row, but they are other examples (other ids): genuine duplicates.
    dup = {
        "train": {"x": splits["test"]["x"].copy(), "y": 1 - splits["test"]["y"], "id": np.arange(10)},
        "val": dict(splits["val"], id=np.arange(10, 20)),
        "test": dict(splits["test"], id=np.arange(100, 110)),
    }
    with pytest.raises(benchmark.LeakageError):
        _run(dup)
    assert len(_run(dup, leakage_keys="id")) == 1
    assert len(_run(dup, leakage_keys=None)) == 1
    assert len(_run(dup, leakage_keys=("x", "y"))) == 1  # a row is the concatenation: the labels differ
    dup["train"]["y"] = splits["test"]["y"]
    with pytest.raises(benchmark.LeakageError, match="10 row"):
        _run(dup, leakage_keys=("x", "y"))
    with pytest.raises(ValueError, match="'group', which split 'test' lacks"):
        _run(dup, leakage_keys="group")
    with pytest.raises(ValueError, match="at least one"):
        _run(dup, leakage_keys=())


def test_leakage_check_survives_python_dash_O():
    code = (
        "import numpy as np; from robustlearn import benchmark\n"
        "x = np.arange(12.0).reshape(6, 2)\n"
        "s = {'train': {'x': x[[0, 1, 4]]}, 'val': {'x': x[[2]]}, 'test': {'x': x[4:]}}\n"
        "try:\n"
        "    benchmark.compare([benchmark.Method('a')], lambda *a: 0, lambda *a: {'s': 0.0}, s, select='s')\n"
        "except benchmark.LeakageError as e:\n"
        "    print('caught', e.split, e.count)\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.stdout.strip() == "caught train 1", out.stdout + out.stderr


def test_splits_as_a_function_of_the_seed_redraws_the_data():
    calls, seen = [], {}

    def splits(seed):
        calls.append(seed)
        rng = np.random.default_rng(seed)
        return {"train": _split(rng, 20), "val": _split(rng, 10), "test": _split(rng, 10)}

    def fit(method, hyper, train, seed):
        seen.setdefault(seed, []).append(np.asarray(train["x"]).copy())
        return {}

    results = benchmark.compare(
        [benchmark.Method("a", [{"c": 1}, {"c": 2}]), benchmark.Method("b")],
        fit,
        _noop_eval,
        splits,
        select="score",
        seeds=[4, 7],
    )
    assert calls == [4, 7] and [(r.method, r.seed) for r in results] == [("a", 4), ("b", 4), ("a", 7), ("b", 7)]
    for seed in (4, 7):  # every fit of a seed saw that seed's draw ...
        expect = _split(np.random.default_rng(seed), 20)["x"]
        assert len(seen[seed]) == 3 and all(np.array_equal(x, expect) for x in seen[seed])
    assert not np.array_equal(seen[4][0], seen[7][0])  # ... and the seeds' draws differ


def test_each_redrawn_split_is_checked_for_leakage():
    def splits(seed):
        rng = np.random.default_rng(seed)
        s = {"train": _split(rng, 20), "val": _split(rng, 10), "test": _split(rng, 10)}
        if seed == 1:  # only the second draw leaks
            s["val"] = {"x": s["test"]["x"][::-1].copy(), "y": s["val"]["y"]}
        return s

    fits = []
    with pytest.raises(benchmark.LeakageError, match="10 row\\(s\\) of split 'val'"):
        benchmark.compare(
            [benchmark.Method("a")], lambda *a: fits.append(a[3]), _noop_eval, splits, select="score", seeds=[0, 1]
        )
    assert fits == [0]  # seed 0 ran; seed 1 stopped before any training
    with pytest.raises(TypeError, match="must be a mapping"):
        _run(lambda seed: [1, 2])


def test_unknown_select_metric_names_the_available_ones():
    with pytest.raises(ValueError, match=r"'acc'.*available: \['loss', 'score'\]"):
        benchmark.compare(
            [benchmark.Method("a")], _noop_fit, lambda m, s: {"score": 0.0, "loss": 1.0}, _splits(), select="acc"
        )


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
