"""The gap suite (python -m benchmarks run): its CLI at tiny settings, its report, its statistics, and that it
has no training loop of its own. The numbers of a tiny run mean nothing; these tests check structure."""

import ast
import contextlib
import io
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from scipy import stats

import robustlearn as rl
from benchmarks import __main__ as cli
from benchmarks import gap, gap_report
from benchmarks import gap_learners as L
from benchmarks import gap_methods as M
from robustlearn import importance
from robustlearn._src.training import linear as linear_module

# One binary scenario with a real set (IW/source methods, flipped-label mass) and one with generations
# (alpha estimated, the collapse plot); a few methods so that the run compiles few programs.
TINY = ["label_noise", "model_collapse_mix"]
TINY_CONTEXTS = [(seed, g) for seed in (0, 1) for g in (None,)] + [(seed, g) for seed in (0, 1) for g in (1, 5)]
# ERM-kind objectives (one program per learner and shape) and radius_from_data (calibrate.fit_robust, linear).
METHODS = "erm,source_mix,generation_weighted_est,radius_from_data"
BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True, scope="module")
def _x64():  # the suite runs in float32, as users do (overrides the float64 default of conftest.py)
    with jax.enable_x64(False):
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny CLI run (in process, stderr not a terminal), counting the calls of the library's entry points."""
    out = tmp_path_factory.mktemp("gap")
    args = ["run", "--quick", "--seeds", "2", "--epochs", "1", "--methods", METHODS, "--no-contamination"]
    args += ["--out", str(out)] + [a for name in TINY for a in ("--scenario", name)]
    calls = {"fit_linear": 0, "Trainer.fit": 0, "fit_robust -> fit_linear": 0}
    fit_linear, trainer_fit = rl.train.fit_linear, rl.train.Trainer.fit

    def counted_fit_linear(*a, **k):
        calls["fit_linear"] += 1
        return fit_linear(*a, **k)

    def counted_inner_fit_linear(*a, **k):  # calibrate.fit_robust imports it from here when called
        if sys._getframe(1).f_code.co_name == "fit_robust":  # not the density-ratio fits behind the radius
            calls["fit_robust -> fit_linear"] += 1
        return fit_linear(*a, **k)

    def counted_trainer_fit(self, *a, **k):
        calls["Trainer.fit"] += 1
        return trainer_fit(self, *a, **k)

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        mp.setattr(rl.train, "fit_linear", counted_fit_linear)
        mp.setattr(linear_module, "fit_linear", counted_inner_fit_linear)
        # radius_from_data's divergence with the logistic ratio model only: the default also compiles the
        # quadratic and MLP candidates for every cross-fitting fold (about 10 s more); the path is the same.
        mp.setattr(L, "RADIUS_ESTIMATOR", importance.ProbabilisticClassifier("logistic"))
        mp.setattr(rl.train.Trainer, "fit", counted_trainer_fit)
        assert cli.main(args) == 0
    return out, err.getvalue(), calls


def _tables(text: str) -> list[list[str]]:
    """The header cells of every markdown table in ``text``."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[i + 1].startswith("| ---") and (i == 0 or not lines[i - 1].startswith("|")):
            out.append([c.strip() for c in line.strip("|").split("|")])
    return out


def _section(text: str, title: str) -> str:
    return text.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_structure_every_column_defined(run):
    out, *_ = run
    text = (out / "report.md").read_text()
    assert text.startswith("# Synthetic-to-real gap: quick run")
    assert "2 seeds cannot separate methods" in text and "docs/benchmarks.md" in text
    for title in (
        "## Verdicts at a glance",
        "## How to read this report",
        "## Methods and grids",
        *[f"## {n}" for n in TINY],
    ):
        assert f"\n{title}\n" in text, title
    for name in TINY:
        section = _section(text, f"## {name}")
        assert "### linear" in section and "### mlp" in section and "Prediction: **" in section
        assert "Floor " in section and "ceiling " in section
    defined = set(gap_report.COLUMNS) | set(M.SPECS)
    for header in _tables(text):
        for cell in header:
            cell = re.sub(r"^\((a|b)\) ", "", cell)
            assert cell in defined or re.fullmatch(r"\d+ gen\.", cell), f"column {cell!r} is not defined"
    reading = _section(text, "## How to read this report")
    assert all(f"`{k}`" in reading for k in gap_report.COLUMNS)
    methods = _section(text, "## Methods and grids")
    assert all(f"`{m}`" in methods for m in M.SPECS)
    # Both rules in every method table; the ceiling is selected on real data only.
    _, rows = _table_rows(_section(text, "## label_noise").split("### linear", 1)[1])
    names = [r["method"] for r in rows]
    assert names[0] == "erm" and names[-2:] == ["erm_synthetic", "erm_real"]
    assert "source_mix" in names and "cvar" not in names  # --methods
    assert next(r for r in rows if r["method"] == "erm_real")["(b) mean ± ci"] == "(a)"
    assert 0 < float(next(r for r in rows if r["method"] == "erm")["flipped mass"]) < 1


def _table_rows(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) != len(header):
            break
        body.append(dict(zip(header, cells, strict=True)))
    return header, body


def test_json_fields_rules_learners_and_grids(run):
    out, *_ = run
    data = json.loads((out / "results.json").read_text())
    assert data["quick"] and data["seeds"] == [0, 1] and data["learners"] == ["linear", "mlp"]
    assert {"seconds", "cpu_seconds", "machine", "command", "grids", "mlp", "shapes"} <= set(data)
    # The same budget for every method and learner, but radius_from_data (one configuration, linear only).
    assert len({r["configurations"] for r in data["grids"] if r["method"] != "radius_from_data"}) == 1
    assert [(r["learner"], r["configurations"]) for r in data["grids"] if r["method"] == "radius_from_data"] == [
        ("linear", 1)
    ]
    by_name = {s["scenario"]: s for s in data["scenarios"]}
    assert list(by_name) == TINY
    for s in data["scenarios"]:
        assert {"prediction", "metric", "maximize", "training_rows", "negative_control", "skipped", "seconds"} <= set(s)
        keys = {(r["learner"], r["rule"]) for r in s["results"]}
        assert keys == {(lrn, rule) for lrn in ("linear", "mlp") for rule in gap.RULES}
        for r in s["results"]:
            assert set(r) == {"learner", "rule", "generation", "method", "seed", "hyper", "val", "test", "extra"}
            assert r["hyper"] in M.grid(M.SPECS[r["method"]], r["learner"], True)
            assert 0 <= r["test"]["accuracy"] <= 1 and math.isfinite(r["test"]["loss"])
            assert not (r["rule"] == "synthetic_val" and r["method"] == "erm_real")
    collapse = by_name["model_collapse_mix"]
    assert collapse["generations"] == [1, 5] and collapse["alpha"] == 0.8
    assert all(0 <= e["low"] <= e["alpha"] <= e["high"] <= 1 for e in collapse["diagnostics"]["alpha_estimate"])
    # wasserstein was not asked for; source_mix needs real training rows, which model collapse lacks.
    assert "no real training rows" in collapse["skipped"]["linear"]["source_mix"]


def test_plots_are_written(run):
    out, *_ = run
    for name in ("vs_erm_linear.png", "vs_erm_mlp.png", "model_collapse.png"):
        assert (out / name).stat().st_size > 5000


def test_report_is_rebuilt_identically_and_docs_section(run, tmp_path, monkeypatch):
    out, *_ = run
    before = (out / "report.md").read_text()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == before
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text(f"# Page\n\nhand-written\n\n{gap_report.MARKER_BEGIN}\nOLD-XYZ\n{gap_report.MARKER_END}\n\ntail\n")
    first = gap_report.write_docs(str(out), str(page))
    text = page.read_text()
    assert text.startswith("# Page\n\nhand-written") and text.endswith("tail\n") and "OLD-XYZ" not in text
    assert "\n### Verdicts at a glance\n" in first and "\n## " not in first  # under the page's "## Results"
    prefix = os.path.relpath(out, page.parent)
    assert f"]({prefix}/vs_erm_linear.png)" in first and f"]({prefix}/report.md)" in first
    gap_report.write_docs(str(out), str(page))
    assert page.read_text() == text  # idempotent


def test_merge_pieces(run, tmp_path):
    out, *_ = run
    data = json.loads((out / "results.json").read_text())
    a, b = tmp_path / "a", tmp_path / "b"
    for d, keep in ((a, TINY[:1]), (b, TINY[1:])):
        d.mkdir()
        piece = dict(data, scenarios=[s for s in data["scenarios"] if s["scenario"] in keep])
        (d / "results.json").write_text(json.dumps(piece))
    merged = gap_report.merge(str(tmp_path / "m"), [str(b), str(a)])
    assert [s["scenario"] for s in merged["scenarios"]] == TINY  # back in the suite's order
    body = lambda d: gap_report.report(d).split("\n## Verdicts at a glance\n", 1)[1]  # noqa: E731
    assert body(merged) == body(data)  # the same tables, verdicts and sections
    assert merged["seconds"] == pytest.approx(2 * data["seconds"]) and merged["command"] == data["command"]
    with pytest.raises(ValueError, match="learners"):
        (b / "results.json").write_text(json.dumps(dict(data, learners=["linear"])))
        gap_report.merge(str(tmp_path / "m2"), [str(a), str(b)])


def test_merged_pieces_with_more_seeds_state_the_range(run):
    # A scenario rerun with 10 seeds and merged into a 5-seed run: the header must not call it all one count.
    out, *_ = run
    data = json.loads((out / "results.json").read_text())
    n = len(data["seeds"])
    assert f"{n} seeds; learners" in gap_report.report(data)
    rerun = dict(data["scenarios"][0], seeds=list(range(n + 3)))
    mixed = dict(data, seeds=list(range(n + 3)), scenarios=[rerun, *data["scenarios"][1:]])
    assert f"{n}–{n + 3} seeds (per scenario: see its table); learners" in gap_report.report(mixed)


def test_progress_prints_plain_lines_when_not_a_terminal(run):
    out, err, _ = run
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    steps = len(TINY_CONTEXTS) * 2  # one line per (seed, generation) context and learner
    assert "\r" not in err and len(lines) == steps, err
    assert re.fullmatch(rf"\[1/{steps} +\d+ s\] label_noise seed 0 linear: \d+ fits", lines[0])
    assert re.fullmatch(
        rf"\[{steps}/{steps} +\d+ s\] model_collapse_mix seed 1, 5 generations mlp: \d+ fits", lines[-1]
    )

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    p = gap.Progress(2, stream=tty)
    p.step("one")
    p.step("two")
    p.close()
    assert tty.getvalue().count("\r") == 2 and "\n" not in tty.getvalue()[:-1] and tty.getvalue().endswith("\n")


def test_runs_keep_compiled_programs_in_the_benchmark_cache(tmp_path):
    # A fresh process (the test process already has its own JAX cache): JAX's persistent
    # compilation cache goes to <benchmark cache>/jax, and "off" turns it off with the rest.
    code = (
        "from benchmarks.__main__ import compile_cache; import jax; "
        "print(compile_cache(), jax.config.jax_compilation_cache_dir)"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    for setting, expected in ((str(tmp_path), f"{tmp_path / 'jax'} {tmp_path / 'jax'}"), ("off", "None None")):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROBUSTLEARN_", "JAX_COMPILATION"))}
        env |= {"ROBUSTLEARN_BENCH_CACHE": setting, "JAX_PLATFORMS": "cpu"}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split("\n")[-2] == expected


def test_chosen_configuration_breaks_ties_by_the_earliest_seed():
    # Two seeds, two configurations chosen once each: the earliest seed's, whatever the order
    # of the results (it once took a set's order, which changes with the process's hash seed).
    row = lambda seed, alpha: types.SimpleNamespace(method="cvar", seed=seed, hyper={"alpha": alpha})  # noqa: E731
    for results in ([row(0, 0.1), row(1, 0.3)], [row(1, 0.3), row(0, 0.1)]):
        assert gap_report.Summary.chosen(types.SimpleNamespace(results=results), "cvar") == "alpha=0.1"
    most = [row(0, 0.1), row(1, 0.3), row(2, 0.3)]
    assert gap_report.Summary.chosen(types.SimpleNamespace(results=most), "cvar") == "alpha=0.3"


def test_cli_rejects_unknown_names(capsys):
    assert cli.main(["bench"]) == 2
    for bad in (["--scenario", "nope"], ["--methods", "nope"], ["--learners", "cnn"], ["--part", "3/2"]):
        with pytest.raises(SystemExit):
            cli.main(["run", *bad])


def test_parts_cover_the_full_run_once():
    cfg = gap.make_config(False)
    for k in (1, 3, 6):
        pieces = gap.parts(cfg, k)
        flat = [n for p in pieces for n in p]
        expected = gap.variant_list(cfg) + ([gap.CONTAMINATION] if k > 1 else [])
        assert sorted(flat) == sorted(expected) and len(flat) == len(set(flat))


# ------------------------------------------------------------------------------------- no training loop


BANNED = {"apply_updates", "grad", "value_and_grad", "vjp", "jacrev", "jacfwd", "minimize"}


def _training_loop_uses(path: pathlib.Path) -> list[str]:
    """Gradients, optimizer steps or optimizer updates in a source file (``h.update`` etc. on dicts allowed)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if name in BANNED:
            found.append(f"{path.name}:{node.lineno} uses {name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
            owner = ast.unparse(node.func.value)
            if owner not in ("h", "row", "out", "extra"):
                found.append(f"{path.name}:{node.lineno}: {owner}.update(...)")
    return found


def test_the_suite_has_no_training_loop_of_its_own(tmp_path):
    """No optimizer step, gradient or optimizer update anywhere in the suite's sources (scenarios included)."""
    files = sorted(BENCH.glob("gap*.py")) + [BENCH / "contamination.py", BENCH / "__main__.py"]
    files += sorted((BENCH / "scenarios").glob("*.py"))
    assert len(files) >= 8
    assert [u for f in files for u in _training_loop_uses(f)] == []
    # The check is not vacuous: a hand-written step is caught.
    fake = tmp_path / "gap_fake.py"
    fake.write_text("import jax, optax\n\ng = jax.grad(f)(p)\nu, s = opt.update(g, s)\np = optax.apply_updates(p, u)\n")
    assert len(_training_loop_uses(fake)) == 3


def test_every_fit_goes_through_the_library(run):
    """Every configuration the run trained is one call of fit_linear (linear) or Trainer.fit (MLP), no more."""
    out, err, calls = run
    data = json.loads((out / "results.json").read_text())
    fits = {lrn: sum(s["fits"][lrn] for s in data["scenarios"]) for lrn in ("linear", "mlp")}
    # radius_from_data fits through calibrate.fit_robust, which calls fit_linear once (label_noise: 2 seeds).
    certified = calls["fit_robust -> fit_linear"]
    assert certified == 2
    assert calls["fit_linear"] + certified == fits["linear"] and calls["Trainer.fit"] == fits["mlp"]
    assert min(fits.values()) > 0
    # One training per configuration serves both selection rules: the fits are exactly the grids of the methods
    # that ran (each context), and rule (b) has a row for every method but the ceiling.
    for s in data["scenarios"]:
        for learner in ("linear", "mlp"):
            rows = [r for r in s["results"] if r["learner"] == learner]
            contexts = {(r["seed"], r["generation"]) for r in rows}
            methods = {r["method"] for r in rows}
            grids = sum(len(M.grid(M.SPECS[m], learner, True)) for m in methods)
            assert s["fits"][learner] == grids * len(contexts)
            a = [r for r in rows if r["rule"] == "real_val"]
            b = [r for r in rows if r["rule"] == "synthetic_val"]
            assert len(a) == len(b) + len(contexts) and all(r["method"] != "erm_real" for r in b)


# ------------------------------------------------------------------------------------------ radius from data


def _radius_rows(data: dict, scenario: str = "label_noise") -> list[dict]:
    s = next(s for s in data["scenarios"] if s["scenario"] == scenario)
    return [r for r in s["results"] if r["method"] == "radius_from_data"]


def test_radius_from_data_records_and_certificate(run):
    out, *_ = run
    data = json.loads((out / "results.json").read_text())
    rows = _radius_rows(data)
    assert {(r["learner"], r["rule"], r["seed"]) for r in rows} == {
        ("linear", rule, seed) for rule in gap.RULES for seed in (0, 1)
    }  # linear only, both rules, every seed
    by_seed: dict = {}
    for r in rows:
        e = r["extra"]
        assert r["hyper"] == {"l2": 1e-3}
        assert {"bound", "empirical_risk", "premium", "radius", "real_test_loss", "covered", "tightness",
                "certified_rows_loss", "num_real", "num_certify"} <= set(e)  # fmt: skip
        assert e["kind"] == "chi_square" and e["confidence"] == 0.95 and e["num_real"] > 0
        # The certified loss is the evaluated loss: the log loss on real_test.
        assert e["real_test_loss"] == pytest.approx(r["test"]["loss"], rel=1e-9)
        assert e["tightness"] == pytest.approx(e["bound"] - e["real_test_loss"])
        assert e["covered"] == (e["real_test_loss"] <= e["bound"] * (1 + L.COVER_RTOL)) and e["logit_sd"] >= 0
        # The bound is at least the model's own mean loss on the certification rows, recomputed by the suite
        # from the returned parameters (a wrong model, loss or split breaks it), and it is that mean + premium.
        assert e["certified_rows_loss"] == pytest.approx(e["empirical_risk"], abs=1e-4)
        assert e["bound"] >= e["certified_rows_loss"] - 1e-6 and e["premium"] >= 0
        assert e["bound"] == pytest.approx(e["empirical_risk"] + e["premium"], abs=1e-6)
        assert e["radius"] >= e["radius_statistical"] > 0
        by_seed.setdefault(r["seed"], []).append(r)
    for pair in by_seed.values():  # one configuration: both rules report the same model
        assert pair[0]["test"] == pair[1]["test"] and pair[0]["extra"] == pair[1]["extra"]
    collapse = next(s for s in data["scenarios"] if s["scenario"] == "model_collapse_mix")
    assert collapse["skipped"]["linear"]["radius_from_data"] == "no real training rows"
    assert collapse["skipped"]["mlp"]["radius_from_data"].startswith("mlp learner: not offered")


def _radius_table(text: str) -> dict[str, dict[str, str]]:
    section = text.split("Radius from data: certificate coverage and tightness\n", 1)[1].split("\n## ", 1)[0]
    _, body = _table_rows(section)
    return {r["scenario"]: r for r in body}


def test_radius_from_data_report_coverage(run):
    out, *_ = run
    data = json.loads((out / "results.json").read_text())
    text = (out / "report.md").read_text()
    assert "\n## Radius from data: certificate coverage and tightness\n" in text
    records = {r["seed"]: r["extra"] for r in _radius_rows(data) if r["rule"] == "real_val"}
    row = _radius_table(text)["label_noise"]
    k, n = (int(v) for v in row["coverage"].split("/"))
    assert n == len(records) == int(row["seeds"]) and 0 <= k / n <= 1
    assert k == sum(e["covered"] for e in records.values())
    assert float(row["tightness"]) == pytest.approx(np.mean([e["tightness"] for e in records.values()]), abs=5e-4)
    assert "model_collapse_mix (no real training rows)" in text.split("Radius from data", 1)[1]
    assert "\n### Radius from data: certificate coverage and tightness\n" in gap_report.docs_section(data, str(out))
    # Not vacuous: a seed whose real test loss exceeds its bound is counted as not covered.
    s = json.loads(json.dumps(next(s for s in data["scenarios"] if s["scenario"] == "label_noise")))
    for r in s["results"]:
        if r["method"] == "radius_from_data" and r["seed"] == 1:
            e = r["extra"]
            e["real_test_loss"] = e["bound"] + 0.5
            e["covered"], e["tightness"] = False, -0.5
    row = _radius_table("\n".join(gap_report.radius_section([s])))["label_noise"]
    assert row["coverage"] == f"{int(records[0]['covered'])}/2"
    assert row["constant"] == f"{sum(e['logit_sd'] < gap_report.CONSTANT_SD for e in records.values())}/2"


# -------------------------------------------------------------------------------- statistics and verdicts


def _fake(diffs: dict[str, list[float]], metric="accuracy", maximize=True, scenario="copula_adult") -> dict:
    """A scenario output whose methods score ERM's value + a per-seed difference."""
    rng = np.random.default_rng(0)
    n = len(next(iter(diffs.values())))
    erm = 0.8 + 0.02 * rng.standard_normal(n)
    results = []
    for method, d in {"erm": [0.0] * n, **diffs}.items():
        for seed in range(n):
            v = float(erm[seed] + d[seed])
            test = {"accuracy": v, "loss": 1 - v, "worst_group_accuracy": v - 0.1, "worst_group_loss": 1.1 - v}
            for rule in gap.RULES:
                if rule == "synthetic_val" and method == "erm_real":
                    continue
                row = {"learner": "linear", "rule": rule, "generation": None, "method": method, "seed": seed}
                results.append(row | {"hyper": {"l2": 1e-3}, "val": test, "test": test, "extra": {}})
    return {"scenario": scenario, "metric": metric, "maximize": maximize, "results": results, "generations": []}


def test_paired_differences_and_noise_against_scipy():
    d_cvar = [0.03, 0.05, 0.02, 0.04, 0.06]
    d_kl = [0.01, -0.02, 0.03, -0.01, 0.0]
    out = _fake({"cvar": d_cvar, "kl": d_kl, "chi_square": [-0.05, -0.04, -0.06, -0.05, -0.03],
                 "erm_synthetic": [-0.02] * 5, "erm_real": [0.01, 0.02, 0.015, 0.012, 0.018]})  # fmt: skip
    s = gap_report.Summary(out, "linear", "real_val")
    mean, half = s.paired("cvar")
    sem = stats.sem(d_cvar)
    assert mean == pytest.approx(np.mean(d_cvar)) and half == pytest.approx(stats.t.ppf(0.975, 4) * sem)
    assert s.beat() == ["cvar"] and s.hurt() == ["chi_square"] and s.beyond("kl") == 0
    # Losses: lower is better, so the sign flips.
    loss = _fake({"cvar": d_cvar}, metric="loss", maximize=False)
    assert gap_report.Summary(loss, "linear", "real_val").paired("cvar")[0] == pytest.approx(np.mean(d_cvar))
    # Fewer than 3 seeds: nothing is called beyond noise, however large.
    two = _fake({"cvar": [0.2, 0.21]})
    assert gap_report.Summary(two, "linear", "real_val").beyond("cvar") is None


def test_prediction_clauses_follow_the_numbers():
    # copula_adult: "within 1 point" and "no objective beats ERM".
    held = _fake({"cvar": [0.001, -0.002, 0.0, 0.002, -0.001], "erm_synthetic": [0.0] * 5,
                  "erm_real": [0.004, 0.006, 0.005, 0.003, 0.007]})  # fmt: skip
    rows = gap_report.verdicts(held, "linear")
    assert [r["held"] for r in rows] == [True, True]
    assert gap_report.prediction_word(rows, 5) == "held"
    failed = _fake({"cvar": [0.03, 0.05, 0.02, 0.04, 0.06], "erm_synthetic": [0.0] * 5,
                    "erm_real": [0.02, 0.03, 0.025, 0.02, 0.03]})  # fmt: skip
    rows = gap_report.verdicts(failed, "linear")
    assert [r["held"] for r in rows] == [False, False] and "cvar" in rows[1]["detail"]
    assert gap_report.prediction_word(rows, 5) == "failed (2 of 2 clauses)"
    assert gap_report.prediction_word(rows, 2).endswith("(not conclusive: 2 seeds)")
    # Every scenario variant of the suite has a checkable prediction.
    from benchmarks.scenarios import VARIANTS

    assert set(gap_report.CHECKS) == set(VARIANTS)


def test_contamination_section_lists_every_verdict():
    c = {
        "config": {
            "datasets": ["adult"],
            "learners": ["linear"],
            "alphas": [0.3, 0.9],
            "seeds": [0],
            "rounds": 10,
            "methods": ["erm_pooled"],
        },  # fmt: skip
        "verdicts": [{"id": "P1", "where": "adult/linear, alpha=0.9", "held": True, "detail": "r = 0.98"}],
        "mean_verdicts": [{"id": "M1", "where": "all alphas", "held": False, "detail": "3/10 points inside"}],
        "seconds": 12.0,
    }
    text = "\n".join(gap_report.contamination_section(c, "contamination.md"))
    assert "| P1 | adult/linear, alpha=0.9 | yes | r = 0.98 |" in text and "| M1 | all alphas | **no** |" in text


def test_a_reused_trainer_fits_exactly_as_a_fresh_one():
    """The suite reuses one Trainer per program structure; each fit must equal that of a fresh Trainer."""
    import optax

    rng = np.random.default_rng(0)
    n, d, rows, dims = 120, 5, 128, 8
    x = rng.normal(size=(n, d)).astype(np.float32)
    y, g = (x[:, 0] > 0).astype(np.int32), (x[:, 1] > 0).astype(np.int32)
    sel = {"real_val": {"x": x[:40], "y": y[:40], "group": g[:40]}}
    cfg = L.MLPConfig(hidden=8, batch_size=32, max_epochs=2, patience=5)
    shapes = L.Shapes(rows, dims, eval_rows=64)

    def fresh(hyper, seed):
        train = {"x": L.pad_x(x, rows, dims), "y": L.pad_rows(y, rows), "group": L.pad_rows(g, rows),
                 "weight": L.pad_rows(np.ones(n, np.float32), rows)}  # fmt: skip
        select = L.Selection(sel, "accuracy", True, cfg.patience, shapes)
        obj = L.objective_for("group", hyper, learner="mlp", num_groups=2)
        opt = L._ADAMW(learning_rate=cfg.learning_rate, weight_decay=hyper["wd"])
        init = L.mlp_init(seed, d, dims, cfg.hidden, 2)
        loss = optax.softmax_cross_entropy_with_integer_labels
        trainer = rl.train.Trainer(L.mlp_apply, loss, obj, opt, params=init, batch_size=32, seed=seed,
                                   callbacks=[select], verbose=False)  # fmt: skip
        trainer.fit(train, epochs=cfg.max_epochs)
        return select.params["real_val"]

    data = L.Data(x, y, np.ones(n), g)
    results = []
    for hyper, seed in (({"step_size": 0.1, "wd": 0.1}, 0), ({"step_size": 1.0, "wd": 1.0}, 1)):
        reused = L.fit_mlp_model("group", hyper, data, 2, 2, sel, "accuracy", True, seed, cfg, shapes)
        results.append(reused.params["real_val"])
        expected = fresh(hyper, seed)
        for k in expected:
            np.testing.assert_array_equal(np.asarray(results[-1][k]), np.asarray(expected[k]), err_msg=k)
    assert not np.array_equal(np.asarray(results[0]["w3"]), np.asarray(results[1]["w3"]))
