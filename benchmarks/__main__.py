"""Benchmarks CLI.

    python -m benchmarks run [--quick | --full] [--scenario NAME] [--out DIR]
    python -m benchmarks report DIR     # rebuild DIR/report.md and plots from DIR/results.json
    python -m benchmarks contamination [--quick | --full] [--out DIR]   # recursive contamination (issue 12)

The performance suite has its own entry point, ``python -m benchmarks.perf``.
"""

import sys

from benchmarks import gap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "report":
        print(gap.rebuild(argv[1]))
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
