"""The benchmark scenario generators do what their predictions assume (quick sizes; numpy only)."""

import functools

import numpy as np
import pytest

from benchmarks.scenarios import SCENARIOS, SPLIT_NAMES, Scenario, take_generations
from benchmarks.scenarios._adult import load_adult
from benchmarks.scenarios.images import _digits, _mnist5k

NAMES = sorted(SCENARIOS)


@functools.cache
def build(name: str, seed: int = 0, **kwargs) -> Scenario:
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
        if split == "synthetic":
            assert n > 0 and np.all(arrays["source"] >= 1)
        else:
            assert np.all(arrays["source"] == 0)
        assert len(s.info["row_ids"][split]) == n
    assert len(s.info["feature_names"]) == d
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


@pytest.mark.parametrize("name", NAMES)
def test_row_ids_point_at_the_rows_they_claim(name):
    """The disjointness test above is only as good as row_ids: rebuild the real rows from the source data."""
    s = build(name)
    for split in ("real_train", "real_val", "real_test", "real_full_train"):
        ids = s.info["row_ids"][split]
        if name in ("mode_dropping", "label_noise", "support_cut"):
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


@pytest.mark.parametrize("name", ["mode_dropping", "label_noise", "colored_mnist", "sim_to_real_digits"])
def test_deterministic_in_seed_and_seeds_differ(name):
    kw = {"n_synthetic": 300} if name == "sim_to_real_digits" else {}  # rendering is the slow part
    a, b, c = build(name, 0, **kw), SCENARIOS[name](0, True, **kw), build(name, 1, **kw)
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


def test_mode_dropping_starves_the_dropped_components():
    s = build("mode_dropping")
    k = len(s.info["component_weights"][0])
    dropped = s.info["dropped_groups"]
    assert len(dropped) == 2  # one per class by default
    # the generator never samples a dropped component ...
    sampled_groups = s.splits["synthetic"]["y"] * k + s.info["sampled_component"]
    assert not np.isin(sampled_groups, dropped).any()
    # ... and the dropped sub-populations are (nearly) absent from synthetic but present in real test
    syn = np.bincount(s.splits["synthetic"]["group"], minlength=s.num_groups) / len(s.splits["synthetic"]["y"])
    test = np.bincount(s.splits["real_test"]["group"], minlength=s.num_groups) / len(s.splits["real_test"]["y"])
    for g in dropped:
        assert test[g] >= 0.01, (g, test[g])
        assert syn[g] <= 0.1 * test[g], (g, syn[g], test[g])
    kept = [g for g in range(s.num_groups) if g not in dropped and test[g] >= 0.02]
    assert all(syn[g] > 0 for g in kept)
    # the dropped components are the smallest ones of weight >= min_weight
    for c, comp in s.info["dropped_components"]:
        w = s.info["component_weights"][c]
        assert w[comp] >= 0.05 and all(w[j] >= w[comp] for j in range(k) if w[j] >= 0.05)


def test_mode_dropping_more_drops_starve_more_groups():
    s = build("mode_dropping", n_drop=2)
    assert len(s.info["dropped_groups"]) == 4
    syn = np.bincount(s.splits["synthetic"]["group"], minlength=s.num_groups)
    assert syn[s.info["dropped_groups"]].sum() <= 0.02 * len(s.splits["synthetic"]["y"])


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


def test_support_cut_removes_the_region_from_synthetic_only():
    s = build("support_cut")
    lo, hi = s.info["age_range"]
    age_col = s.info["feature_names"].index("age")
    for split in SPLIT_NAMES:
        age = raw_x(s, split)[:, age_col]
        np.testing.assert_allclose(age, s.info["raw_age"][split], atol=1e-3)
        inside = (age >= lo - 1e-3) & (age < hi - 1e-3)
        np.testing.assert_array_equal(s.splits[split]["group"], inside.astype(np.int32))
    assert s.splits["synthetic"]["group"].sum() == 0
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
    for split in ("synthetic", "real_val", "real_test", "real_full_train"):
        x = raw_x(s, split).reshape(len(s.splits[split]["y"]), 2, -1)
        colour = (x[:, 1].sum(axis=1) > x[:, 0].sum(axis=1)).astype(int)  # the channel that holds the ink
        y = s.splits[split]["y"]
        np.testing.assert_array_equal(colour, s.info["colour"][split])
        np.testing.assert_array_equal(s.splits[split]["group"], 2 * y + colour)
        stated = 0.9 if split == "synthetic" else real_agreement
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
    syn = s.splits["synthetic"]
    assert s.info["generations"] == 4 and s.info["mode"] == mode
    np.testing.assert_array_equal(np.bincount(syn["source"])[1:], [300] * 4)
    sizes = s.info["fit_sizes"]
    n_real = len(s.splits["real_full_train"]["y"])
    if mode == "accumulate":
        assert sizes == [n_real + 300 * g for g in range(4)]
    else:
        assert sizes == [n_real] + [300] * 3
    assert s.info["mean_drift"][0] == 0.0  # generation 0 is fitted on the real data itself
    for g in range(1, 5):
        sub = take_generations(s, g)
        assert sub.splits["synthetic"]["source"].max() == g and len(sub.splits["synthetic"]["y"]) == 300 * g
        last = take_generations(s, g, only_last=True)
        assert np.all(last.splits["synthetic"]["source"] == g)
        assert sub.splits["real_test"] is s.splits["real_test"]
    with pytest.raises(ValueError):
        take_generations(s, 5)


def test_model_collapse_replace_drifts_more_than_accumulate():
    """Accumulating real + all generations keeps the fitted means nearer the real ones than replacing."""
    drift = {
        mode: np.mean([build("model_collapse", seed, mode=mode).info["mean_drift"][-1] for seed in range(3)])
        for mode in ("replace", "accumulate")
    }
    assert drift["replace"] > drift["accumulate"]
