"""Runs the performance suite and prints one markdown table per part.

python -m benchmarks.perf [--part p1,p2,p3,p4,p5,p6,p7] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import time

from benchmarks.perf._common import machine_line

PARTS = {
    "p1": "benchmarks.perf.p1_linear",
    "p2": "benchmarks.perf.p2_minibatch",
    "p3": "benchmarks.perf.p3_reductions",
    "p4": "benchmarks.perf.p4_wasserstein",
    "p5": "benchmarks.perf.p5_devices",
    "p6": "benchmarks.perf.p6_trainer",
    "p7": "benchmarks.perf.p7_processes",
}


def _versions() -> str:
    names = []
    for pkg in ("flax", "optax", "dro", "torch", "cvxpy"):
        try:
            module = importlib.import_module(pkg) if pkg not in ("dro", "torch", "cvxpy") else None
            if module is None:
                from importlib.metadata import version  # noqa: PLC0415

                names.append(f"{pkg} {version(pkg)}")
            else:
                names.append(f"{pkg} {module.__version__}")
        except Exception:  # not installed
            names.append(f"{pkg} absent")
    return ", ".join(names)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default=",".join(PARTS), help="comma-separated parts (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    parts = [p.strip().lower() for p in args.part.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")

    header = [
        f"robustlearn performance suite, {datetime.date.today().isoformat()}{' (--quick)' if args.quick else ''}",
        "",
        machine_line(),
        _versions(),
    ]
    sections = ["\n".join(header)]
    print(sections[0] + "\n", flush=True)
    for part in parts:
        start = time.perf_counter()
        text = importlib.import_module(PARTS[part]).run(quick=args.quick)
        text += f"\n\n({part} ran in {time.perf_counter() - start:.0f} s)"
        print(text + "\n", flush=True)
        sections.append(text)
    report = "\n\n".join(sections) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return report


if __name__ == "__main__":
    main()
