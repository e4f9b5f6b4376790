"""The gap suite's CLI (the README's main job) at tiny settings: the report's structure, not its numbers."""

import json

import numpy as np
import pytest

from benchmarks import __main__ as cli
from benchmarks import gap

# One scenario per code path: binary with a real set (IW, sources, Wasserstein, flipped-label mass),
# and multi-class recursive generations without real training data.
SMOKE = ["label_noise", "model_collapse"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gap")
    args = ["run", "--quick", "--seeds", "1", "--steps", "2", "--quiet", "--out", str(out)]
    for name in SMOKE:
        args += ["--scenario", name]
    assert cli.main(args) == 0
    return out


def _table(text, scenario):
    section = text.split(f"## {scenario}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return header, [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


def test_report_has_one_table_per_scenario_with_floor_and_ceiling(run):
    text = (run / "report.md").read_text()
    for name in SMOKE:
        header, rows = _table(text, name)
        assert header[:7] == ["method", "n_seeds", "mean", "ci95", "diff", "diff_ci95", "gap_closed"]
        methods = [r["method"] for r in rows]
        assert methods[0] == "erm" and methods[-2:] == ["erm_synthetic", "erm_real"]
        assert {"cvar", "chi_square", "kl"} <= set(methods)
        assert all(r["n_seeds"] == "1" for r in rows)
        floor = next(r for r in rows if r["method"] == "erm_synthetic")
        assert floor["gap_closed"] in ("0.000", "-0.000", "–")
    _, rows = _table(text, "label_noise")
    assert {"wasserstein", "iw_erm", "source_mix", "source_dro", "group_dro"} <= {r["method"] for r in rows}
    assert all(0.0 <= float(r["mass_on_flipped"]) <= 1.0 for r in rows if r["method"] in ("cvar", "erm"))
    _, rows = _table(text, "model_collapse")  # no real training data: no real-data methods
    assert not {"iw_erm", "source_mix", "source_dro"} & {r["method"] for r in rows}


def test_json_holds_every_seed_method_and_generation(run):
    data = json.loads((run / "results.json").read_text())
    assert data["quick"] and data["seeds"] == [0]
    by_name = {s["scenario"]: s for s in data["scenarios"]}
    assert list(by_name) == SMOKE
    for s in data["scenarios"]:
        for r in s["results"]:
            assert set(r) == {"method", "seed", "hyper", "val", "test", "extra"}
            assert r["hyper"] in [dict(h) for h in gap.grids(True)[gap.KIND[r["method"]]]]
            assert np.isfinite(r["test"]["accuracy"]) and 0 <= r["test"]["accuracy"] <= 1
    gens = {g["generation"] for g in by_name["model_collapse"]["generations"]}
    assert len(gens) == 3 and min(gens) == 1  # first, middle and last generation, for the plot
    assert "generation_weighted" in {r["method"] for r in by_name["model_collapse"]["results"]}


def test_plots_are_written(run):
    for name in ("gap_closed.png", "worst_vs_average.png", "model_collapse.png"):
        assert (run / name).stat().st_size > 1000


def test_cli_rejects_unknown_commands(capsys):
    assert cli.main(["bench"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["run", "--scenario", "nope"])


def test_report_is_rebuilt_identically_from_the_json(run, capsys):
    before = (run / "report.md").read_text()
    assert cli.main(["report", str(run)]) == 0
    assert (run / "report.md").read_text() == before
