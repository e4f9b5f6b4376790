"""The README's main command and the benchmark scripts run and print their tables."""

from benchmarks import perf_reductions, quick_compare


def test_quick_compare_prints_one_row_per_objective(capsys):
    quick_compare.main(["--seeds", "1", "--steps", "5"])
    out = capsys.readouterr().out.splitlines()
    header = out.index("| objective | test accuracy | worst-group accuracy |")
    rows = out[header + 2 :]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == list(quick_compare.OBJECTIVES)


def test_perf_reductions_prints_ratios(capsys):
    perf_reductions.main(["--max-n", "1000", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "| 1e+03 |" in out and "Largest ratio:" in out
