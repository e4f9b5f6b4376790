"""Coverage simulations behind docs/radius.md: divergence upper bounds, statistical radii, certificates.

    python -m benchmarks.radius_coverage divergence --config gauss2d --reps 500 [--out FILE.json]
    python -m benchmarks.radius_coverage statistical --reps 2000
    python -m benchmarks.radius_coverage certificate --reps 200

Every part simulates from a known distribution, so the truth is a closed form (or a 1-D
quadrature), and prints a markdown table; ``--out`` also writes the raw numbers as JSON.

* ``divergence``: ``importance.divergence`` (default estimator, n = 2,000 real / 2,000
  synthetic, or ``DiscreteRatio`` on discrete data): relative error, bias, the standard
  error against the spread of the estimates, and the coverage of the 95% upper bound. One
  cross-fit serves every divergence kind of a replicate (the public function is that
  cross-fit plus ``bound``; the support check is skipped here).
* ``statistical``: coverage of the population mean by the robust value at
  ``calibrate.statistical_radius(n, 0.95)`` for a fixed model (i.i.d. losses from a known
  law), n in {50, 500, 5,000}, for each ball.
* ``certificate``: coverage of the real risk by ``calibrate.certificate`` at
  ``calibrate.radius(n, real=..., synthetic=...)`` for a fixed loss under a known shift,
  and the same with the true divergence in place of its upper bound (the composition rule
  alone).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import numpy as np

# --------------------------------------------------------------------------- closed forms


def _gaussian_log_power(mu_p, cov_p, mu_q, cov_q, k):
    ip, iq = np.linalg.inv(cov_p), np.linalg.inv(cov_q)
    a = k * ip + (1 - k) * iq
    b = k * ip @ mu_p + (1 - k) * iq @ mu_q
    c = k * mu_p @ ip @ mu_p + (1 - k) * mu_q @ iq @ mu_q
    ld = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    return -k / 2 * ld(cov_p) - (1 - k) / 2 * ld(cov_q) - 0.5 * ld(a) + 0.5 * (b @ np.linalg.solve(a, b) - c)


def gaussian_truth(kind, k, mu_p, cov_p, mu_q, cov_q):
    if kind == "kl":
        iq, diff = np.linalg.inv(cov_q), mu_q - mu_p
        logdet = np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1]
        return 0.5 * (np.trace(iq @ cov_p) + diff @ iq @ diff - len(mu_p) + logdet)
    return (math.exp(_gaussian_log_power(mu_p, cov_p, mu_q, cov_q, k)) - 1) / (k * (k - 1))


def discrete_truth(kind, k, p, q):
    if kind == "kl":
        return float(np.sum(p * np.log(p / q)))
    return float((np.sum(p**k * q ** (1 - k)) - 1) / (k * (k - 1)))


KINDS = (("chi_square", 2.0), ("kl", None), ("cressie_read", 1.5))

# name -> (dimension, real mean shift along e1, real sd, synthetic sd) or "discrete"
DIVERGENCE_CONFIGS = {
    "gauss2d": (2, 0.5, 1.0, 1.3),
    "gauss10d": (10, 0.5, 1.0, 1.3),
    "mean2d": (2, 0.7, 1.0, 1.0),
    "mean10d": (10, 0.7, 1.0, 1.0),
    "discrete": "discrete",
}
DISCRETE_P = np.array([0.1, 0.2, 0.3, 0.4])
DISCRETE_Q = np.array([0.25, 0.25, 0.25, 0.25])


def run_divergence(config: str, reps: int, n: int = 2000, confidence: float = 0.95, seed0: int = 0) -> dict:
    from robustlearn import importance
    from robustlearn._src.weighting.divergence import bound, cross_fit

    spec = DIVERGENCE_CONFIGS[config]
    rows = {kind: [] for kind, _ in KINDS}
    chosen = {}
    start = time.time()
    for rep in range(reps):
        rng = np.random.default_rng(seed0 + rep)
        if spec == "discrete":
            real = rng.choice(4, n, p=DISCRETE_P)[:, None].astype(float)
            syn = rng.choice(4, n, p=DISCRETE_Q)[:, None].astype(float)
            estimator = importance.DiscreteRatio()
        else:
            d, mu, sp, sq = spec
            real = rng.normal(size=(n, d)) * sp
            real[:, 0] += mu
            syn = rng.normal(size=(n, d)) * sq
            estimator = None
        fit = cross_fit(real, syn, estimator, 5, rep, support=False)
        model = getattr(fit.full, "model_", type(fit.full).__name__)
        chosen[model] = chosen.get(model, 0) + 1
        for kind, k in KINDS:
            est = bound(fit, kind, None if kind == "kl" else k, confidence)
            rows[kind].append((est.estimate, est.upper, est.std_error))
        if (rep + 1) % 50 == 0:
            print(f"  {config}: {rep + 1}/{reps} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    out = {"config": config, "reps": reps, "n": n, "confidence": confidence, "models": chosen, "kinds": {}}
    for kind, k in KINDS:
        if spec == "discrete":
            truth = discrete_truth(kind, k, DISCRETE_P, DISCRETE_Q)
        else:
            d, mu, sp, sq = spec
            mp = np.r_[mu, np.zeros(d - 1)]
            truth = gaussian_truth(kind, k, mp, sp**2 * np.eye(d), np.zeros(d), sq**2 * np.eye(d))
        est, up, se = (np.array(col) for col in zip(*rows[kind], strict=True))
        cover = float(np.mean(up >= truth))
        out["kinds"][kind] = {
            "truth": truth,
            "mean_estimate": float(est.mean()),
            "relative_error": float(np.mean(np.abs(est - truth)) / truth),
            "relative_bias": float((est.mean() - truth) / truth),
            "sd_estimate": float(est.std(ddof=1)),
            "mean_std_error": float(se.mean()),
            "coverage": cover,
            "coverage_se": math.sqrt(cover * (1 - cover) / reps),
        }
    out["seconds"] = time.time() - start
    return out


def divergence_table(results: list[dict]) -> str:
    lines = [
        "| setting | divergence | truth | mean estimate | mean abs. rel. error | rel. bias | sd of estimates "
        "| mean std. error | coverage of 95% bound | reps |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for res in results:
        for kind, r in res["kinds"].items():
            lines.append(
                f"| {res['config']} | {kind} | {r['truth']:.4f} | {r['mean_estimate']:.4f} | "
                f"{r['relative_error']:.1%} | {r['relative_bias']:+.1%} | {r['sd_estimate']:.4f} | "
                f"{r['mean_std_error']:.4f} | {r['coverage']:.1%} ± {r['coverage_se']:.1%} | {res['reps']} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- statistical radius

LOSS_LAWS = {
    "bernoulli(0.1)": (lambda rng, shape: (rng.random(shape) < 0.1).astype(float), 0.1),
    "beta(2, 5)": (lambda rng, shape: rng.beta(2, 5, shape), 2 / 7),
    "exponential(1)": (lambda rng, shape: rng.exponential(1.0, shape), 1.0),
    "lognormal(0, 1)": (lambda rng, shape: rng.lognormal(0.0, 1.0, shape), math.exp(0.5)),
}
STAT_KINDS = (("chi_square", None), ("kl", None), ("cressie_read", 1.5))


def run_statistical(reps: int, ns=(50, 500, 5000), confidence: float = 0.95, chunk: int = 250) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import robustlearn as rl
    from robustlearn import calibrate

    out = {"reps": reps, "confidence": confidence, "rows": []}
    for law, (draw, mean) in LOSS_LAWS.items():
        for n in ns:
            r = calibrate.statistical_radius(n, confidence)
            hits = {kind: 0 for kind, _ in STAT_KINDS}
            hits["normal_ucb"] = 0
            rng = np.random.default_rng(12345 + n)
            for start in range(0, reps, chunk):
                m = min(chunk, reps - start)
                losses = draw(rng, (m, n))
                for kind, k in STAT_KINDS:
                    args = (r, k) if k is not None else (r,)
                    value = np.asarray(rl.REDUCTIONS[kind].value(losses, *args, axis=-1))
                    hits[kind] += int(np.sum(value >= mean))
                z = math.sqrt(2 * r * n)
                ucb = losses.mean(1) + z * losses.std(1, ddof=1) / math.sqrt(n)
                hits["normal_ucb"] += int(np.sum(ucb >= mean))
            out["rows"].append({"law": law, "n": n, "radius": r, **{k: v / reps for k, v in hits.items()}})
            print(f"  {law} n={n}: {out['rows'][-1]}", file=sys.stderr, flush=True)
    return out


def statistical_table(res: dict) -> str:
    lines = [
        "| losses | n | radius | chi_square | kl | cressie_read (k=1.5) | mean + z·s/√n |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in res["rows"]:
        lines.append(
            f"| {row['law']} | {row['n']:,} | {row['radius']:.3g} | {row['chi_square']:.1%} | {row['kl']:.1%} | "
            f"{row['cressie_read']:.1%} | {row['normal_ucb']:.1%} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- certificate under shift

SHIFT_MU = 0.5  # real N(0.5, 1) vs synthetic N(0, 1): chi^2 = (e^0.25 - 1)/2, KL = 0.125


def _loss(x):
    return 1.0 / (1.0 + np.exp(-2.0 * x))  # bounded, increasing along the shift: the adverse case


def _real_risk() -> float:
    from scipy import integrate, stats

    return integrate.quad(lambda t: _loss(t) * stats.norm(SHIFT_MU, 1).pdf(t), -30, 30)[0]


def run_certificate(reps: int, n_syn: int = 2000, n_reals=(20, 100, 1000), confidence: float = 0.95) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from robustlearn import calibrate
    from robustlearn._src.weighting.divergence import bound, cross_fit

    truth = _real_risk()
    true_div = {"chi_square": 0.5 * (math.exp(SHIFT_MU**2) - 1), "kl": SHIFT_MU**2 / 2}
    out = {"reps": reps, "n_synthetic": n_syn, "real_risk": truth, "confidence": confidence, "rows": []}
    delta = 1 - confidence
    for n_real in n_reals:
        hits = {kind: {"estimated": 0, "true_divergence": 0} for kind in true_div}
        slack = {kind: [] for kind in true_div}
        start = time.time()
        for rep in range(reps):
            rng = np.random.default_rng(777 + rep)
            real = rng.normal(SHIFT_MU, 1, (n_real, 1))
            syn = rng.normal(0, 1, (n_syn, 1))
            losses = _loss(syn[:, 0])
            fit = cross_fit(real, syn, None, 5, rep, support=False)
            for kind in true_div:
                est = bound(fit, kind, 2.0 if kind == "chi_square" else None, 1 - delta / 2)
                rad = calibrate.radius(n_syn, kind=kind, confidence=confidence, divergence_estimate=est)
                b = calibrate.certificate(losses, kind, rad).bound
                hits[kind]["estimated"] += b >= truth
                slack[kind].append(b - truth)
                stat = calibrate.statistical_radius(n_syn, 1 - delta / 2)
                oracle = calibrate.combine_radii(stat, true_div[kind])
                hits[kind]["true_divergence"] += calibrate.certificate(losses, kind, oracle).bound >= truth
            if (rep + 1) % 50 == 0:
                print(f"  certificate n_real={n_real}: {rep + 1}/{reps} ({time.time() - start:.0f} s)", file=sys.stderr)
        for kind in true_div:
            out["rows"].append(
                {
                    "n_real": n_real,
                    "kind": kind,
                    "coverage": hits[kind]["estimated"] / reps,
                    "coverage_true_divergence": hits[kind]["true_divergence"] / reps,
                    "mean_tightness": float(np.mean(slack[kind])),
                }
            )
    return out


def certificate_table(res: dict) -> str:
    lines = [
        f"Real risk {res['real_risk']:.4f}; n = {res['n_synthetic']:,} synthetic rows; {res['reps']} replicates.",
        "",
        "| real rows | ball | coverage (radius from data) | coverage (true divergence) | mean bound − real risk |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in res["rows"]:
        lines.append(
            f"| {row['n_real']} | {row['kind']} | {row['coverage']:.1%} | {row['coverage_true_divergence']:.1%} | "
            f"{row['mean_tightness']:.4f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["divergence", "statistical", "certificate"])
    parser.add_argument("--config", action="append", choices=list(DIVERGENCE_CONFIGS))
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.part == "divergence":
        results = [run_divergence(c, args.reps or 500) for c in (args.config or ["gauss2d"])]
        print(divergence_table(results))
        payload = results
    elif args.part == "statistical":
        payload = run_statistical(args.reps or 2000)
        print(statistical_table(payload))
    else:
        payload = run_certificate(args.reps or 200)
        print(certificate_table(payload))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
