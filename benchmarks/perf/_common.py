"""Helpers shared by the parts of the performance suite: machine line, tables, timing."""

from __future__ import annotations

import contextlib
import io
import os
import platform
from collections.abc import Callable, Sequence

import jax

from benchmarks._timing import median_seconds

__all__ = ["captured", "cpu_model", "machine_line", "median_seconds", "table"]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line naming the machine: CPU model, cores, JAX version and backend."""
    devices = jax.devices()
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}, "
        f"backend {jax.default_backend()} ({len(devices)} device(s)); python {platform.python_version()}"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table from a header and rows of cells (already formatted or str()-able)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def captured(title: str, main: Callable[[Sequence[str]], object], argv: Sequence[str]) -> str:
    """What a part's printing ``main(argv)`` writes to stdout, under a ``### title`` heading."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print(f"### {title}\n")
        main(argv)
    return out.getvalue().rstrip()
