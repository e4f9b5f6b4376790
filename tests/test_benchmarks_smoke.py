"""The README's main command and the performance suite run and print their tables (tiny sizes, no timing checks)."""

import pytest

from benchmarks import float32_error, quick_compare
from benchmarks.perf import __main__ as perf_cli
from benchmarks.perf import evaluations, p1_linear, p2_minibatch, p3_reductions, p5_devices, p6_trainer
from robustlearn import objectives
from robustlearn._src.reductions import engine, kernels


def _rows(text, header):
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_quick_compare_prints_one_row_per_objective(capsys):
    quick_compare.main(["--seeds", "1", "--steps", "5"])
    out = capsys.readouterr().out.splitlines()
    header = out.index("| objective | test accuracy | worst-group accuracy |")
    rows = out[header + 2 :]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == list(quick_compare.OBJECTIVES)


def test_perf_reductions_prints_ratios(capsys):
    p3_reductions.main(["--max-n", "1000", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "| 1e+03 |" in out and "Largest ratio:" in out


def test_perf_cli_prints_machine_and_part_tables_and_writes_out(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(p3_reductions, "run", lambda quick: "### P3\n\n| a |\n| --- |\n| 1 |")
    out_file = tmp_path / "perf.md"
    report = perf_cli.main(["--part", "p3", "--quick", "--out", str(out_file)])
    printed = capsys.readouterr().out
    for text in (report, printed, out_file.read_text()):
        assert "machine:" in text and "cores; jax" in text and "### P3" in text and "| 1 |" in text


def test_perf_cli_rejects_unknown_part():
    try:
        perf_cli.main(["--part", "p9"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("an unknown part must exit with a usage error")


def test_p1_without_dro_times_ours_and_says_dro_is_skipped(monkeypatch):
    monkeypatch.setattr(p1_linear, "have_dro", lambda: False)
    text = p1_linear.run(sizes=(200,), names=["wasserstein"])
    header = next(line for line in text.splitlines() if line.startswith("| problem |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    rows = [dict(zip(names, r, strict=True)) for r in _rows(text, header)]
    assert [r["problem"] for r in rows] == [p1_linear.PROBLEMS["wasserstein"][2]]
    assert all(r["n"] == "2e+02" and r["dro (s)"] == "not installed" and float(r["objective ours"]) > 0 for r in rows)
    assert "`dro` is not installed" in text


def test_p6_estimator_first_fit_in_a_fresh_process_reports_its_times(tmp_path):
    # One cold process with a cache directory (which it fills), then one that loads from it.
    cold = p6_trainer._estimator_fit("chi_square", 300, str(tmp_path))
    warm = p6_trainer._estimator_fit("chi_square", 300, str(tmp_path))
    assert any(tmp_path.iterdir())  # the first process wrote compiled programs
    for times in (cold, warm):
        assert set(times) == {"import", "first", "second", "compile"} and times["compile"] >= 0
        assert all(times[k] > 0 for k in ("import", "first", "second"))


@pytest.mark.slow  # two MLPs compiled per objective (~30 s); the other parts' smoke tests stay in the suite
def test_p2_prints_one_row_per_objective_and_skips_dro(monkeypatch):
    monkeypatch.setattr(p2_minibatch, "OBJECTIVES", {"erm": objectives.erm, "cvar(0.1)": lambda: objectives.cvar(0.1)})
    monkeypatch.setattr(p2_minibatch.importlib.util, "find_spec", lambda name: None)
    text = p2_minibatch.run(steps=2, repeats=1)
    rows = _rows(text, "| objective | step (ms) | extra per step (µs) | / ERM |")
    assert [r[0] for r in rows] == ["erm", "cvar(0.1)", "erm (again: noise control)"] and rows[0][3] == "1.000"
    assert text.count("### P2: minibatch MLP") == 2  # the small MLP and the wide one
    assert "`dro` is not installed" in text


def test_p5_same_result_on_8_simulated_devices():
    text = p5_devices.run(epochs=1, steps=2, repeats=1)
    rows = _rows(text, "| setup | step (ms) | / 1 device | max abs diff of final params |")
    assert [r[0] for r in rows] == ["1 device", "8 simulated devices"]
    assert float(rows[1][3]) < 1e-4


@pytest.mark.parametrize("short, long, step, fixed", [(20, 80, 1.5e-3, 0.02), (100, 1000, 4e-5, 0.03)])
def test_per_step_recovers_a_linear_cost(short, long, step, fixed):
    from benchmarks._timing import per_step

    got = per_step(fixed + short * step, fixed + long * step, short, long)
    assert got == pytest.approx((step, fixed), rel=1e-9)


def test_interleaved_medians_calls_every_function_in_every_round():
    from benchmarks._timing import interleaved_medians

    calls = []
    medians = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 interleaved rounds
    assert set(medians) == {"a", "b"} and all(m >= 0 for m in medians.values())


@pytest.mark.parametrize("full_passes", [False, True])
def test_evaluation_counts_are_positive_and_the_library_is_restored(full_passes):
    newton, e = kernels.newton, engine.Data.E
    rows = evaluations.count(64, "float64", full_passes, problems=[("kl", (1.0,))])
    assert kernels.newton is newton and engine.Data.E is e
    ((label, counts),) = rows
    assert label == "kl(1.0,)" and len(counts) == 21 and min(counts) >= 2, counts


def test_float32_weights_errors_are_measured_per_hyperparameter(monkeypatch):
    monkeypatch.setattr(float32_error, "WEIGHT_GRID", {"kl": [{"radius": 1.0}]})
    ((name, hyper, worst, median),) = float32_error.weights_errors()
    assert (name, hyper) == ("kl", {"radius": 1.0})
    assert 0 <= median <= worst <= 16, (median, worst)  # 6.5 and 3.5 eps measured
