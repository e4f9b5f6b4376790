"""The contamination benchmark's bookkeeping: padding, verdicts of the predictions, the report (no training)."""

import json

import numpy as np
import pytest

from benchmarks import contamination as bc


def test_pad_gives_zero_weight_rows_marked_clean():
    data = {
        "x": np.ones((3, 2)),
        "y": np.array([1, 0, 1]),
        "previous": np.array([0, 1, -1]),
        "group": np.array([0, 1, 1]),
    }
    out = bc._pad(data, 5)
    np.testing.assert_array_equal(out["weight"], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["previous"], [0, 1, -1, -1, -1])
    assert out["x"].shape == (5, 2) and out["x"].dtype == np.float32 and out["y"].dtype == np.int32
    with pytest.raises(ValueError, match="padded size"):
        bc._pad(data, 2)


def _errors(curve, seeds=3):
    return [list(curve) for _ in range(seeds)]


def test_verdicts_compute_the_stated_ratios():
    cfg = bc.make_config(True, datasets=("adult",), alphas=(0.3, 0.9), rounds=10)
    flat = np.full(10, 0.05)
    falling = 0.1 / np.sqrt(np.arange(1, 11))
    pac = {
        "errors": {
            "adult/linear/0.9": {
                "erm_pooled": _errors(flat),  # plateau: P1 holds
                "corrected": _errors(falling + 0.03),  # improves (P3 holds), worse than ERM at T (P4 holds)
                "corrected_nn": _errors(falling + 0.04),  # 1 point worse: P5 fails for linear
                "erm_latest": _errors(flat + 0.01),
            },
            "adult/linear/0.3": {
                "erm_pooled": _errors(flat),  # P2 fails: no improvement at 0.3
                "corrected": _errors(falling),
            },
        }
    }
    got = {(v["id"], v["where"]): v["held"] for v in bc.verdicts(pac, cfg)}
    assert got[("P1", "adult/linear, alpha=0.9")] is True
    assert got[("P2", "adult/linear, alpha=0.3")] is False
    assert got[("P3", "adult/linear, alpha=0.9")] is True
    assert got[("P4", "adult/linear, alpha=0.9")] is True
    assert got[("P5", "adult/linear, alpha=0.9")] is False
    assert got[("P7", "adult/linear, alpha=0.9")] is True
    # err(T)/err(3) exactly: 0.1/sqrt(10) / (0.1/sqrt(3)) = 0.548.
    detail = next(v["detail"] for v in bc.verdicts(pac, cfg) if v["id"] == "P3" and "0.3" in v["where"])
    assert detail == "r = 0.55"


def test_report_renders_tables_and_intervals():
    cfg = bc.make_config(True, datasets=("adult",), alphas=(0.9,), rounds=4, seeds=(0, 1))
    errs = {"erm_pooled": [[0.1, 0.08, 0.07, 0.07], [0.12, 0.1, 0.09, 0.09]]}
    pac = bc.empty_pac() | {"errors": {"adult/linear/0.9": errs}, "paths": {"adult/linear": {"fit_linear": 8}}}
    data = {
        "config": bc.dataclasses.asdict(cfg),
        "pac": pac,
        "means": {"rows": [], "reps": 0, "rounds": 0},
        "verdicts": bc.verdicts(pac, cfg),
        "mean_verdicts": [],
        "seconds": 1.0,
    }
    text = bc.report(data)
    assert "### adult, linear, alpha = 0.9" in text
    # Round 1: mean 11.0%, t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.01414 / 1.414 = 12.7 points.
    assert "| 1 | 11.0 ± 12.7 |" in text


def _piece(tmp_path, name, learner, errs):
    cfg = bc.make_config(True, datasets=("adult",), learners=(learner,), alphas=(0.9,), rounds=4, seeds=(0, 1))
    key = f"adult/{learner}/0.9"
    pac = bc.empty_pac() | {"errors": {key: errs}, "paths": {f"adult/{learner}": {"fit_linear": 8}}}
    data = {
        "config": bc.dataclasses.asdict(cfg),
        "pac": pac,
        "means": {"rows": [], "reps": 0, "rounds": 0},
        "alpha_estimation": [],
        "verdicts": bc.verdicts(pac, cfg),
        "mean_verdicts": [],
        "seconds": 1.0,
    }
    bc.write(data, str(tmp_path / name), plot=False)
    return str(tmp_path / name)


def test_merge_joins_pieces_and_recomputes_verdicts(tmp_path):
    flat = [[0.1, 0.1, 0.1, 0.1], [0.12, 0.12, 0.12, 0.12]]
    falling = [[0.1, 0.08, 0.05, 0.03], [0.12, 0.1, 0.06, 0.04]]
    a = _piece(tmp_path, "a", "linear", {"erm_pooled": flat})
    b = _piece(tmp_path, "b", "mlp", {"erm_pooled": falling})
    text = bc.merge(str(tmp_path / "out"), [a, b], plot=False)
    assert "### adult, linear, alpha = 0.9" in text and "### adult, mlp, alpha = 0.9" in text
    got = {
        v["where"]: v["held"]
        for v in json.loads((tmp_path / "out" / "contamination.json").read_text())["verdicts"]
        if v["id"] == "P1"
    }
    assert got == {"adult/linear, alpha=0.9": True, "adult/mlp, alpha=0.9": False}
    with pytest.raises(ValueError, match="repeats pieces"):
        bc.merge(str(tmp_path / "again"), [a, a], plot=False)
