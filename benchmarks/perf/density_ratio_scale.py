"""Time, peak memory and ratio quality of KMM and KLIEP as the sample grows.

    python -m benchmarks.perf.density_ratio_scale [--sizes 2000 5000 20000] [--dim 500]
        [--methods kmm kliep] [--paths default exact subset] [--subset-size 500 1000]
        [--sigma S]
        [--threads N] [--timeout 600] [--out FILE]

Each configuration runs in its own subprocess (``--one``) so that its peak resident
memory (``VmHWM``, polled from ``/proc``; the jax/numpy baseline is included and reported
on its own row) and its time limit are its own; a configuration past ``--timeout``
seconds is killed and reported as ``> timeout``. ``n`` real and ``n`` synthetic rows:
real ``N(mu, I_d)``, synthetic ``N(0, I_d)`` with ``mu = 0.5 / sqrt(d) * (1, ..., 1)``
(``|mu| = 0.5``), so the true ratio is ``exp(<mu, x> - |mu|^2 / 2)``. Quality is the
Spearman correlation between ``est.weights(synthetic)`` and the true ratio at the
synthetic rows, plus the correlation between the fast and the exact weights where both
ran (``--paths default exact`` at the same n).

``--sigma S`` fixes the bandwidth (no cross-validation): the paths then differ only in the
approximation. ``--paths`` (KMM only; KLIEP has one path): ``default`` is the estimator as constructed
with no size argument (what a user gets: above 2,000 synthetic rows, the subset
approximation), ``exact`` passes ``approximation="exact"`` (every synthetic row, O(n^2)),
``subset`` forces ``approximation="subset"`` with ``--subset-size`` rows, to compare its
quality with the exact path at a size where both run. Against an older robustlearn without
these arguments, only ``default`` exists: put the old package first on ``PYTHONPATH`` (and
run from a directory without ``robustlearn/``) to measure "before". ``--threads N`` sets
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` and XLA's CPU thread pool to ``N`` in the
subprocesses (on an oversubscribed machine, multithreaded BLAS on small matrices thrashes);
default: the libraries' own choice. Wall times on a shared machine are noisy: run on an idle one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

PATH_ARGS = {"default": {}, "exact": {"approximation": "exact"}, "subset": {"approximation": "subset"}}


def gaussian_pair(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mu = np.full(d, 0.5 / np.sqrt(d))
    real = (rng.normal(size=(n, d)) + mu).astype(np.float32)
    syn = rng.normal(size=(n, d)).astype(np.float32)
    log_ratio = syn.astype(np.float64) @ mu - mu @ mu / 2
    return real, syn, log_ratio


def one(method: str, n: int, d: int, path: str, out_weights: str | None, subset_size: int, sigma: float | None) -> dict:
    """Fits one estimator and returns its time and quality (run inside the subprocess)."""
    from scipy import stats

    from robustlearn import importance

    real, syn, log_ratio = gaussian_pair(n, d)
    cls = {"kmm": importance.KMM, "kliep": importance.KLIEP}[method]
    start = time.perf_counter()
    kwargs = dict(PATH_ARGS[path])
    if path == "subset":
        kwargs["subset_size"] = subset_size
    if sigma:
        kwargs["sigmas"] = (sigma,)
    est = cls(**kwargs).fit(real, syn)
    fit_s = time.perf_counter() - start
    w = est.weights(syn)
    total_s = time.perf_counter() - start
    if out_weights:
        np.save(out_weights, w)
    return {
        "fit_s": fit_s,
        "total_s": total_s,
        "spearman": float(stats.spearmanr(w, log_ratio).statistic),
        "sigma": float(est.sigma_),
        "approximation": getattr(est, "approximation_", "n/a"),
    }


def _peak_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _env(threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env.update({"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)})
        flags = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags + f"intra_op_parallelism_threads={threads}").strip()
    return env


def measure(
    method: str,
    n: int,
    d: int,
    path: str,
    timeout: float,
    weights_file: str | None,
    subset_size: int,
    threads,
    sigma: float | None = None,
) -> dict:
    """Runs ``one`` in a subprocess, polling its peak RSS; kills it after ``timeout`` seconds."""
    cmd = [sys.executable, "-m", "benchmarks.perf.density_ratio_scale", "--one", method, str(n), str(d), path]
    cmd += ["--subset-size", str(subset_size)] + (["--sigma", str(sigma)] if sigma else [])
    if weights_file:
        cmd += ["--weights-file", weights_file]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(threads))
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _peak_mb(proc.pid) if proc.poll() is None else 0.0)
        if time.perf_counter() - start > timeout:
            proc.kill()
            proc.wait()
            return {"timeout": True, "wall_s": time.perf_counter() - start, "peak_mb": peak}
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}", "peak_mb": peak}
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_mb"] = peak
    return result


def baseline_mb(threads=None) -> float:
    """Peak RSS of a process that imports robustlearn.importance and runs a tiny KLIEP fit."""
    code = (
        "import numpy as np; from robustlearn import importance as i; "
        "i.KLIEP(folds=2, sigmas=(1.0,)).fit(np.zeros((4, 2)) + np.arange(4)[:, None], np.ones((4, 2)))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(threads))
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _peak_mb(proc.pid))
        time.sleep(0.1)
    return peak


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 20000])
    parser.add_argument("--dim", type=int, default=500)
    parser.add_argument("--methods", nargs="+", default=["kmm", "kliep"], choices=["kmm", "kliep"])
    parser.add_argument("--paths", nargs="+", default=["default"], choices=list(PATH_ARGS))
    parser.add_argument("--subset-size", type=int, nargs="+", default=[500], help="rows of the `subset` path(s)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/XLA threads in the subprocesses")
    parser.add_argument("--sigma", type=float, default=None, help="a fixed bandwidth (no cross-validation)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "N", "D", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--weights-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        method, n, d, path = args.one
        print(json.dumps(one(method, int(n), int(d), path, args.weights_file, args.subset_size[0], args.sigma)))
        return ""

    from scipy import stats

    lines = [
        f"density-ratio scale: n real = n synthetic, d = {args.dim}; {os.cpu_count()} cores, "
        f"threads {args.threads or 'default'}; baseline peak RSS (import + tiny fit) "
        f"{baseline_mb(args.threads):.0f} MB",
        "",
        "| method | path | n | fit + weights (s) | peak RSS (MB) | Spearman vs true ratio | vs exact | chosen sigma |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    tmp = f"/tmp/density_ratio_scale_{os.getpid()}"
    for method in args.methods:
        for n in args.sizes:
            saved, rows = {}, {}
            paths = args.paths if method == "kmm" else ["default"]
            runs = [(p, size) for p in paths for size in (args.subset_size if p == "subset" else [0])]
            paths = [f"{p} {size}" if p == "subset" else p for p, size in runs]
            for (path, size), key in zip(runs, paths, strict=True):
                wf = f"{tmp}_{method}_{n}_{path}{size}.npy"
                r = measure(method, n, args.dim, path, args.timeout, wf, size, args.threads, args.sigma)
                if "timeout" in r:
                    rows[key] = [method, key, n, f"> {args.timeout:.0f} (killed)", f">= {r['peak_mb']:.0f}", "", ""]
                elif "error" in r:
                    rows[key] = [method, key, n, "error: " + r["error"][:80], f"{r['peak_mb']:.0f}", "", ""]
                else:
                    saved[key] = np.load(wf)
                    os.remove(wf)
                    label = key if r["approximation"] == "n/a" else f"{key} ({r['approximation']})"
                    rows[key] = [method, label, n, f"{r['total_s']:.1f}", f"{r['peak_mb']:.0f}",
                                 f"{r['spearman']:.3f}", f"{r['sigma']:.3g}"]  # fmt: skip
            for path in paths:
                vs = ""
                if path != "exact" and path in saved and "exact" in saved:
                    vs = f"{stats.spearmanr(saved[path], saved['exact']).statistic:.3f}"
                row = rows[path][:6] + [vs] + rows[path][6:]
                line = "| " + " | ".join(str(c) for c in row) + " |"
                lines.append(line)
                print(line, flush=True)
    text = "\n".join(lines)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
