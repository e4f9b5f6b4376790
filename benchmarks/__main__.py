"""Benchmarks CLI.

    python -m benchmarks run [--quick | --full] [--scenario NAME] [--part I/K] [--out DIR]   # the gap suite
    python -m benchmarks run --full --list-parts K         # how --part I/K splits the full run
    python -m benchmarks merge DIR PART_DIR [PART_DIR ...]  # one results.json (and report) from the pieces
    python -m benchmarks report DIR [--docs]               # rebuild DIR/report.md and plots from DIR/results.json;
                                                           # --docs also rewrites docs/benchmarks.md's results
    python -m benchmarks contamination [--quick | --full] [--out DIR]   # recursive contamination alone (issue 12)

The performance suite has its own entry point, ``python -m benchmarks.perf``.
"""

import sys

from benchmarks import gap


def compile_cache() -> str | None:
    """JAX's persistent compilation cache in the benchmarks' cache directory (``jax/`` there).

    A later run loads the programs an earlier one compiled instead of compiling them again
    (compilation is about 45% of a quick run). ``ROBUSTLEARN_BENCH_CACHE=off`` turns this
    off along with the generator cache. Programs that compile in under 0.2 s are not stored.
    """
    import robustlearn as rl
    from benchmarks.scenarios import generators

    directory = generators.cache_dir()
    return None if directory is None else rl.enable_compilation_cache(directory / "jax", min_compile_seconds=0.2)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("run", "contamination"):
        compile_cache()
    if argv and argv[0] == "report" and len(argv) in (2, 3) and (len(argv) == 2 or argv[2] == "--docs"):
        from benchmarks import gap_report

        print(gap_report.rebuild(argv[1]), end="")
        if len(argv) == 3:
            gap_report.write_docs(argv[1])
            print("Rewrote the generated section of docs/benchmarks.md", file=sys.stderr)
        return 0
    if argv and argv[0] == "merge" and len(argv) >= 3:
        from benchmarks import gap_report

        gap_report.merge(argv[1], argv[2:])
        gap_report.rebuild(argv[1])
        print(f"Merged {len(argv) - 2} runs into {argv[1]}/results.json and report.md", file=sys.stderr)
        return 0
    if argv and argv[0] == "contamination":
        from benchmarks import contamination

        return contamination.main(argv[1:])
    if not argv or argv[0] != "run":
        print(__doc__, file=sys.stderr)
        return 2
    return gap.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
