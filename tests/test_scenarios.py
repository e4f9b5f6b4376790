"""The benchmark scenario generators do what their predictions assume (quick sizes; numpy only)."""

import functools

import numpy as np
import pytest

from benchmarks.scenarios import SCENARIOS, SPLIT_NAMES, Scenario, take_generations
from benchmarks.scenarios._adult import load_adult
from benchmarks.scenarios.images import _digits, _mnist5k

NAMES = sorted(SCENARIOS)
LEARNED = ("copula_adult", "mode_dropping", "vae_digits")  # scenarios with a learned generator
ADULT = ("copula_adult", "label_noise", "mode_dropping", "support_cut")


pytestmark = pytest.mark.usefixtures("bench_cache")  # tests/conftest.py: one cache per test run


@functools.cache
def build(name: str, seed: int = 0, **kwargs) -> Scenario:
    if name in LEARNED:
        kwargs = {"quality": False} | kwargs  # quality numbers: tests/test_generators.py
    if name == "vae_digits":
        kwargs = {"n_synthetic": 1000} | kwargs  # the size tests/test_generators.py uses: one cVAE training
    return SCENARIOS[name](seed, True, **kwargs)


def raw_x(s: Scenario, split: str) -> np.ndarray:
    """Undo the standardization recorded in info."""
    st = s.info["standardization"]
    return s.splits[split]["x"].astype(np.float64) * st["scale"] + st["mean"]


def binomial_tol(p: float, n: int, z: float = 4.0) -> float:
    return z * np.sqrt(p * (1 - p) / n) + 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_contract_shapes_and_dtypes(name):
    s = build(name)
    assert isinstance(s, Scenario) and s.name == name and s.task == "classification"
    assert isinstance(s.prediction, str) and len(s.prediction) > 20
    assert set(s.splits) == set(SPLIT_NAMES)
    d = s.splits["synthetic"]["x"].shape[1]
    assert 0 < d <= 100
    for split, arrays in s.splits.items():
        assert set(arrays) == {"x", "y", "group", "source"}, split
        n = arrays["x"].shape[0]
        assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (n, d)
        for key in ("y", "group", "source"):
            assert arrays[key].dtype == np.int32 and arrays[key].shape == (n,), (split, key)
        assert np.all(np.isfinite(arrays["x"]))
        if n:
            assert arrays["y"].min() >= 0 and arrays["y"].max() < s.num_classes
            assert arrays["group"].min() >= 0 and arrays["group"].max() < s.num_groups
        if split in ("synthetic", "synthetic_val"):
            assert n > 0 and np.all(arrays["source"] >= 1)
        else:
            assert np.all(arrays["source"] == 0)
        assert len(s.info["row_ids"][split]) == n
    assert len(s.info["feature_names"]) == d
    metric, maximize = s.info["primary_metric"]
    assert metric in ("accuracy", "worst_group_accuracy", "loss") and maximize == (metric != "loss")
    assert isinstance(s.info["training_rows"], str) and s.info["n_real_train"] == len(s.splits["real_train"]["y"])
    assert s.info["negative_control"] is False or isinstance(s.info["negative_control"], str)
    if s.info["negative_control"]:
        assert "negative control" in s.prediction.lower() or "does not grow" in s.prediction
    for split in ("real_val", "real_test", "real_full_train"):
        assert s.splits[split]["x"].shape[0] > 0
    assert sum(len(s.splits[k]["y"]) for k in SPLIT_NAMES) <= 12000  # quick sizes stay small


@pytest.mark.parametrize("name", NAMES)
def test_real_test_disjoint_from_every_other_split(name):
    s = build(name)
    ids = s.info["row_ids"]
    test_ids = set(ids["real_test"].tolist())
    assert len(test_ids) == len(ids["real_test"])  # no repeated test rows either
    for split in SPLIT_NAMES:
        if split != "real_test":
            assert test_ids.isdisjoint(ids[split].tolist()), split
    assert set(ids["real_train"].tolist()) <= set(ids["real_full_train"].tolist())
    assert set(ids["real_val"].tolist()).isdisjoint(ids["real_full_train"].tolist())
    # Resampled real rows in the synthetic splits come from real_full_train, and the held-out synthetic split
    # shares none of them with the synthetic training split.
    syn, syn_val = ids["synthetic"][ids["synthetic"] >= 0], ids["synthetic_val"][ids["synthetic_val"] >= 0]
    assert set(syn.tolist()) | set(syn_val.tolist()) <= set(ids["real_full_train"].tolist())
    assert set(syn.tolist()).isdisjoint(syn_val.tolist())


@pytest.mark.parametrize("name", NAMES)
def test_synthetic_val_is_held_out_generated_data(name):
    s = build(name)
    a, b = s.splits["synthetic"], s.splits["synthetic_val"]
    assert 0 < len(b["y"]) <= len(a["y"])
    rows_a = {r.tobytes() for r in a["x"]}
    shared = sum(r.tobytes() in rows_a for r in b["x"])
    # Adult's generators only produce seen values, and Adult has many equal feature vectors of different people:
    # a few equal rows are expected there. Image generators essentially never repeat one.
    assert shared <= (0.1 if name in ADULT else 0.01) * len(b["y"]), shared
    # Same generator: class frequencies of the two splits agree within binomial noise.
    pa = np.bincount(a["y"], minlength=s.num_classes) / len(a["y"])
    pb = np.bincount(b["y"], minlength=s.num_classes) / len(b["y"])
    assert np.all(np.abs(pa - pb) <= 4 * np.sqrt(pa * (1 - pa) / len(b["y"])) + 1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_row_ids_point_at_the_rows_they_claim(name):
    """The disjointness test above is only as good as row_ids: rebuild the real rows from the source data."""
    s = build(name)
    for split in ("real_train", "real_val", "real_test", "real_full_train"):
        ids = s.info["row_ids"][split]
        if name in ADULT:
            adult = load_adult()
            expect_x, expect_y = adult.x[ids], adult.y[ids]
        elif name == "colored_mnist":
            images, digits = _mnist5k()
            size = s.info["image_size"]
            b = 28 // size
            expect_x = images[ids].reshape(-1, size, b, size, b).mean(axis=(2, 4)).reshape(len(ids), -1)
            expect_y = (digits[ids] < 5).astype(int)
            got = raw_x(s, split).reshape(len(ids), 2, -1).sum(axis=1)  # ink, whichever channel holds it
            np.testing.assert_allclose(got, expect_x, atol=1e-4)
            np.testing.assert_array_equal(s.splits[split]["y"], expect_y)
            continue
        else:
            xd, yd = _digits()
            expect_x, expect_y = xd[ids], yd[ids]
        np.testing.assert_allclose(raw_x(s, split), expect_x, atol=1e-3)
        np.testing.assert_array_equal(s.splits[split]["y"], expect_y)


@pytest.mark.parametrize("name", NAMES)
def test_standardized_with_synthetic_and_real_train_only(name):
    s = build(name)
    if name == "model_collapse":
        parts = [s.splits["synthetic"]["x"][s.splits["synthetic"]["source"] == 1], s.splits["real_train"]["x"]]
    else:
        parts = [s.splits["synthetic"]["x"], s.splits["real_train"]["x"]]
    fit = np.concatenate(parts).astype(np.float64)
    np.testing.assert_allclose(fit.mean(axis=0), 0.0, atol=1e-4)
    std = fit.std(axis=0)
    varying = s.info["standardization"]["scale"] != 1.0
    np.testing.assert_allclose(std[varying], 1.0, atol=1e-3)


@pytest.mark.parametrize(
    "name", ["mode_dropping", "copula_adult", "label_noise", "colored_mnist", "sim_to_real_digits"]
)
def test_deterministic_in_seed_and_seeds_differ(name, monkeypatch):
    monkeypatch.setenv("ROBUSTLEARN_BENCH_CACHE", "off")  # regenerate: a cache hit would prove nothing
    kw = {"n_synthetic": 300} if name == "sim_to_real_digits" else {}  # rendering is the slow part
    kw |= {"quality": False} if name in LEARNED else {}
    a, b, c = SCENARIOS[name](0, True, **kw), SCENARIOS[name](0, True, **kw), SCENARIOS[name](1, True, **kw)
    for split in SPLIT_NAMES:
        for key in ("x", "y", "group", "source"):
            np.testing.assert_array_equal(a.splits[split][key], b.splits[split][key])
    assert not np.array_equal(a.splits["synthetic"]["x"][:50], c.splits["synthetic"]["x"][:50])
    assert not np.array_equal(a.info["row_ids"]["real_test"], c.info["row_ids"]["real_test"])


def test_model_collapse_and_support_cut_deterministic():
    for name in ("model_collapse", "support_cut"):
        a, b = build(name, 0), SCENARIOS[name](0, True)
        np.testing.assert_array_equal(a.splits["synthetic"]["x"], b.splits["synthetic"]["x"])
        assert not np.array_equal(a.splits["synthetic"]["x"][:20], build(name, 1).splits["synthetic"]["x"][:20])


def test_mode_dropping_removes_the_mode_from_synthetic_data_only():
    s = build("mode_dropping")
    feature, value, label = s.info["mode"]
    j = s.info["feature_names"].index(feature)
    for split in SPLIT_NAMES:  # groups recomputed from the raw features: 1 = in the mode
        x, y = raw_x(s, split), s.splits[split]["y"]
        in_mode = (np.abs(x[:, j] - value) < 1e-3) & (y == label)
        np.testing.assert_array_equal(s.splits[split]["group"], in_mode.astype(np.int32), err_msg=split)
    assert s.num_groups == 2
    assert s.splits["synthetic"]["group"].sum() == 0 and s.splits["synthetic_val"]["group"].sum() == 0
    # The mode is large in real data (married people earning <=50K: about a quarter), so its accuracy is measured
    # on hundreds of test rows.
    assert 0.15 <= s.splits["real_test"]["group"].mean() <= 0.4
    assert (s.splits["real_test"]["group"] == 1).sum() >= 300
    # Class frequencies stay the real ones, so the mode's rows were replaced by other rows of the same class.
    p_real = s.splits["real_full_train"]["y"].mean()
    assert abs(s.splits["synthetic"]["y"].mean() - p_real) <= 1e-3
    # Outside the mode, the synthetic rows are the learned copula's: e.g. the rate of `feature` in the other class
    # matches the real one within binomial noise.
    other = 1 - label
    syn = raw_x(s, "synthetic")[s.splits["synthetic"]["y"] == other, j]
    real = raw_x(s, "real_full_train")[s.splits["real_full_train"]["y"] == other, j]
    assert abs(syn.mean() - real.mean()) <= binomial_tol(real.mean(), len(syn)) + binomial_tol(real.mean(), len(real))
    assert s.info["training_rows"].endswith("only (no real rows)") and s.info["negative_control"]


def test_mode_dropping_small_real_set_shows_the_mode_in_its_real_proportion():
    s = build("mode_dropping", n_real_train=100)
    assert len(s.splits["real_train"]["y"]) == 100 and "real_train (100" in s.info["training_rows"]
    p = s.splits["real_full_train"]["group"].mean()
    assert abs(s.splits["real_train"]["group"].mean() - p) <= binomial_tol(p, 100)
    with pytest.raises(ValueError, match="mode feature"):
        SCENARIOS["mode_dropping"](0, True, mode=("nope", 1.0, 0), quality=False)


def test_label_noise_flips_exactly_where_info_says():
    s = build("label_noise")
    syn = s.splits["synthetic"]
    flipped, clean = s.info["flipped"], s.info["clean_y"]
    n = len(syn["y"])
    assert flipped.dtype == bool and flipped.shape == (n,)
    assert flipped.sum() == round(0.2 * n)
    np.testing.assert_array_equal(syn["y"] != clean, flipped)
    # the clean labels are the real labels of the resampled rows (a flawless generator)
    adult = load_adult()
    np.testing.assert_array_equal(clean, adult.y[s.info["row_ids"]["synthetic"]])
    np.testing.assert_allclose(raw_x(s, "synthetic"), adult.x[s.info["row_ids"]["synthetic"]], atol=1e-3)
    assert set(s.info["row_ids"]["synthetic"].tolist()) <= set(s.info["row_ids"]["real_full_train"].tolist())
    # the flipped rows are a random subset: their clean-label rate matches the others' within binomial noise
    p = clean.mean()
    assert abs(clean[flipped].mean() - p) <= binomial_tol(p, int(flipped.sum()))
    # the held-out synthetic split has the same flaw
    val = s.splits["synthetic_val"]
    assert s.info["flipped_val"].sum() == round(0.2 * len(val["y"]))
    np.testing.assert_array_equal(val["y"] != s.info["clean_y_val"], s.info["flipped_val"])
    np.testing.assert_array_equal(s.info["clean_y_val"], adult.y[s.info["row_ids"]["synthetic_val"]])
    assert (
        "Linear learner (negative control)" in s.prediction
        and "MLP" in s.prediction
        and s.info["negative_control"] == "linear learner only"
    )


def test_support_cut_removes_the_region_from_synthetic_only():
    s = build("support_cut")
    lo, hi = s.info["age_range"]
    age_col = s.info["feature_names"].index("age")
    for split in SPLIT_NAMES:
        age = raw_x(s, split)[:, age_col]
        np.testing.assert_allclose(age, s.info["raw_age"][split], atol=1e-3)
        inside = (age >= lo - 1e-3) & (age < hi - 1e-3)
        np.testing.assert_array_equal(s.splits[split]["group"], inside.astype(np.int32))
    assert s.splits["synthetic"]["group"].sum() == 0 and s.splits["synthetic_val"]["group"].sum() == 0
    assert s.splits["real_test"]["group"].mean() >= 0.1
    assert s.splits["real_train"]["group"].sum() > 0  # the small real set covers the region


def test_support_cut_real_train_size_parameter():
    s0 = build("support_cut", n_real_train=0)
    assert s0.splits["real_train"]["x"].shape == (0, s0.splits["synthetic"]["x"].shape[1])
    s1 = build("support_cut", n_real_train=37)
    assert len(s1.splits["real_train"]["y"]) == 37
    with pytest.raises(ValueError, match="n_real_train"):
        SCENARIOS["support_cut"](0, True, n_real_train=10**6)


@pytest.mark.parametrize("real_agreement", [0.5, 0.1])
def test_colored_mnist_colour_label_agreement_rates(real_agreement):
    s = build("colored_mnist", real_agreement=real_agreement)
    for split in ("synthetic", "synthetic_val", "real_val", "real_test", "real_full_train"):
        x = raw_x(s, split).reshape(len(s.splits[split]["y"]), 2, -1)
        colour = (x[:, 1].sum(axis=1) > x[:, 0].sum(axis=1)).astype(int)  # the channel that holds the ink
        y = s.splits[split]["y"]
        np.testing.assert_array_equal(colour, s.info["colour"][split])
        np.testing.assert_array_equal(s.splits[split]["group"], 2 * y + colour)
        stated = 0.9 if split.startswith("synthetic") else real_agreement
        rate = np.mean(colour == y)
        assert abs(rate - stated) <= binomial_tol(stated, len(y)), (split, rate, stated)
    # the label itself is balanced enough that colour alone is not the label
    assert 0.3 < s.splits["real_test"]["y"].mean() < 0.7


def test_sim_to_real_digits_rendering_and_real_train():
    s = build("sim_to_real_digits")
    x = raw_x(s, "synthetic")
    assert x.min() >= -1e-3 and x.max() <= 16 + 1e-3
    np.testing.assert_allclose(x, np.round(x), atol=1e-3)  # block counts, like optdigits
    counts = np.bincount(s.splits["synthetic"]["y"], minlength=10)
    assert counts.min() == counts.max()
    assert len(s.splits["real_train"]["y"]) == 0
    # each class's rendered mean image is closer to the same class's real mean than to most other classes
    xr, yr = raw_x(s, "real_full_train"), s.splits["real_full_train"]["y"]
    syn_means = np.stack([x[s.splits["synthetic"]["y"] == c].mean(0) for c in range(10)])
    real_means = np.stack([xr[yr == c].mean(0) for c in range(10)])
    dist = np.linalg.norm(syn_means[:, None] - real_means[None], axis=-1)
    assert np.mean(np.argmin(dist, axis=1) == np.arange(10)) >= 0.6
    s30 = build("sim_to_real_digits", n_real_train=30, n_synthetic=100)
    assert np.bincount(s30.splits["real_train"]["y"], minlength=10).min() >= 2


@pytest.mark.parametrize("mode", ["replace", "accumulate", "mix"])
def test_model_collapse_generations(mode):
    s = build("model_collapse", mode=mode, generations=4, n_per_generation=300)
    syn, val = s.splits["synthetic"], s.splits["synthetic_val"]
    assert s.info["generations"] == 4 and s.info["mode"] == mode
    np.testing.assert_array_equal(np.bincount(syn["source"])[1:], [300] * 4)
    np.testing.assert_array_equal(np.bincount(val["source"])[1:], [60] * 4)
    sizes = s.info["fit_sizes"]
    n_real = len(s.splits["real_full_train"]["y"])
    if mode == "accumulate":
        assert sizes == [n_real + 300 * g for g in range(4)]
    elif mode == "replace":
        assert sizes == [n_real] + [300] * 3
    else:
        assert sizes == [300 * t for t in range(1, 5)]  # the model after round t is fitted on rounds 1..t
    if mode != "mix":
        assert s.info["mean_drift"][0] == 0.0  # generation 0 is fitted on the real data itself
        assert s.info["alpha"] is None and s.info["generated"].all()
    for g in range(1, 5):
        sub = take_generations(s, g)
        assert sub.splits["synthetic"]["source"].max() == g and len(sub.splits["synthetic"]["y"]) == 300 * g
        assert sub.splits["synthetic_val"]["source"].max() == g and len(sub.splits["synthetic_val"]["y"]) == 60 * g
        assert len(sub.info["generated"]) == 300 * g and len(sub.info["row_ids"]["synthetic_val"]) == 60 * g
        last = take_generations(s, g, only_last=True)
        assert np.all(last.splits["synthetic"]["source"] == g)
        assert sub.splits["real_test"] is s.splits["real_test"]
    with pytest.raises(ValueError):
        take_generations(s, 5)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_model_collapse_mix_follows_amin_et_al(alpha):
    """alpha is the synthetic fraction; round 1 is real; each model is fitted on all rounds so far."""
    s = build("model_collapse", mode="mix", alpha=alpha, generations=4, n_per_generation=300)
    assert s.info["alpha"] == alpha
    gen = s.splits["synthetic"]["source"]
    generated = s.info["generated"]
    np.testing.assert_array_equal(generated, s.info["row_ids"]["synthetic"] < 0)
    assert generated[gen == 1].sum() == 0  # round 1: fresh real rows only
    for t in range(2, 5):
        assert generated[gen == t].sum() == round(alpha * 300)  # exactly alpha of every later round
    assert s.info["generated_fraction"] == [0.0] + [round(alpha * 300) / 300] * 3
    # Real rows are real: rebuild them from the digits (through their row ids).
    xd, yd = _digits()
    rows = s.info["row_ids"]["synthetic"][~generated]
    np.testing.assert_allclose(raw_x(s, "synthetic")[~generated], xd[rows], atol=1e-3)
    np.testing.assert_array_equal(s.splits["synthetic"]["y"][~generated], yd[rows])
    # The model after round t is fitted on the pooled rounds 1..t: its class means, recomputed here from the pooled
    # raw rows, give the recorded drift from the real class means.
    x, y = raw_x(s, "synthetic"), s.splits["synthetic"]["y"]
    full = s.info["row_ids"]["real_full_train"]
    real_means = np.stack([xd[full][yd[full] == c].mean(0) for c in range(10)])
    for t in range(1, 5):
        pooled = gen <= t
        means = np.stack([x[pooled & (y == c)].mean(0) for c in range(10)])
        drift = np.mean(np.linalg.norm(means - real_means, axis=1))
        assert drift == pytest.approx(s.info["mean_drift"][t - 1], rel=1e-3, abs=1e-3)
    # Held out: synthetic_val's real rows are other real rows than the rounds' (the two splits share none).
    val_rows = s.info["row_ids"]["synthetic_val"]
    assert set(val_rows[val_rows >= 0].tolist()).isdisjoint(rows.tolist())
    assert "alpha" in s.prediction and "Amin" in s.prediction


def test_model_collapse_docstring_uses_the_papers_convention():
    from benchmarks.scenarios import collapse

    doc = " ".join(collapse.__doc__.split())
    assert "*synthetic* fraction" in doc and "all rounds" in doc and "our adaptation" in doc


def test_model_collapse_replace_drifts_more_than_accumulate():
    """Accumulating real + all generations keeps the fitted means nearer the real ones than replacing."""
    drift = {
        mode: np.mean([build("model_collapse", seed, mode=mode).info["mean_drift"][-1] for seed in range(3)])
        for mode in ("replace", "accumulate")
    }
    assert drift["replace"] > drift["accumulate"]


def test_scenario_cards_print_floor_ceiling_and_a_consistent_gap_verdict(capsys):
    from benchmarks.scenarios import __main__ as cards

    assert cards.main(["--variant", "support_cut_no_real", "--seeds", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| support_cut_no_real")]
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    metric, floor, erm, ceiling, diff, half, gap = cells[1:8]
    assert metric == "worst_group_accuracy"
    floor, erm, ceiling, diff, half = map(float, (floor, erm, ceiling, diff, half))
    assert 0 <= floor <= 1 and 0 <= ceiling <= 1
    assert erm == floor  # no real rows: ERM on the training rows is the floor
    assert diff == pytest.approx(ceiling - floor, abs=2e-3)
    assert gap == ("yes" if diff > half else "no")
