r"""Exact solvers ("kernels") of the reductions' convex problems, one per reduction.

Each kernel works on a :class:`~robustlearn._src.reductions.engine.Data`: the losses, the
nominal ``p`` and the support maximum ``M`` and range, through the standardized losses
:math:`z = (\ell - M)/(M - m) \in [-1, 0]`. ``solve`` returns the value (from the sums of
its last pass over the data) and what ``weights`` needs to form :math:`q^\star`; the
engine adds masks, weights, batching, gradients and the NaN policy.

Performance model (XLA on CPU): a pass is one reduction ``sum_i p_i f(z_i)`` whose
elementwise work fuses into it; comparisons and selects do not fuse, so a step function
is written ``ceil(max(y, 0))`` (exactly 0 or 1 for ``y`` in ``[-1, 1]``), and a long
vector's passes store no ``n``-sized temporary. A reduction costs a handful of such passes: the
one-dimensional duals start from the solution on a strided subsample
(:data:`~robustlearn._src.reductions.engine.SUBSAMPLE` examples) and need two or three
evaluations on the full vector (KL by Newton steps; :math:`\chi^2` and Cressie--Read,
whose derivative costs two passes, by secant steps from the subsample's derivative);
CVaR and TV find the value-at-risk by a few counting passes from a subsample bracket.
On a short vector (:data:`~robustlearn._src.reductions.engine.SHARE_MAX`) the
Cressie--Read sums of one evaluation, its derivative's included, share one power per
example. On the loop-free path (accelerators), a
minibatch-sized vector is sorted once instead: CVaR and TV read the value-at-risk, the
:math:`\chi^2` ball and penalty their active set, from the sorted losses.

Float32 accuracy model: every formula is written so that rounding errors are relative to
the loss range, not to a quantity that cancels: ``expm1``/``log1p`` wherever a tilt is
close to the identity, the Cressie--Read dual in the variable :math:`t = R/(M - \eta)`
with :math:`a \log(1 + z t)` (stable as :math:`k \to 1`, where it tends to the KL dual,
and as :math:`k \to \infty`), logarithms where :math:`k(k-1)\rho` overflows, and the
closed forms or the proven asymptotic expansion where a root finder cannot resolve the
dual (see each kernel).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from robustlearn._src.reductions import engine as _engine
from robustlearn._src.reductions.rootfind import Root, increasing_root, newton

# ------------------------------------------------------------------------- helpers


def _step(y, s=None):
    """``1`` where ``y > 0`` and ``0`` where ``y <= 0``, exactly (for ``|y| <= 2``).

    ``min(max(y * 2^126, 0), 1)`` fuses into a reduction where a comparison would not;
    ``s`` salts the constants of a pass (see :meth:`Data.fresh`).
    """
    big = 2.0 ** (jnp.finfo(y.dtype).maxexp - 2)  # 2^126: maps every positive normal y to >= 1
    # Salted too: XLA stores the broadcast of a constant that two passes share (40 MB at 1e7).
    zero, one, big = (0.0, 1.0, big) if s is None else (s(0.0), s(1.0), s(big))
    return jnp.minimum(jnp.maximum(y * big, zero), one)


def _gt(a, b, s=None):
    r"""``1`` where ``a > b`` and ``0`` elsewhere, exactly, by arithmetic that fuses into a sum.

    A comparison and its conversion to a number do not fuse into XLA:CPU's vectorized
    reductions: the indicator is written to memory and read back, which made every
    counting pass of CVaR and TV 5-10 times slower than a sum. The difference ``a - b``
    alone is not exact either: two distinct floats near the smallest normal number may
    differ by a subnormal amount, which the CPU flushes to 0. Scaled first by
    :math:`k = 2^{m+1}` (``m`` mantissa bits), :math:`A = ka` and :math:`B = kb` are exact
    (the engine keeps every ``|y| \le 2^{100}``) and, when ``a > b``, differ by at least
    :math:`2^{e_{min}+1}` (both are 0 or at least :math:`2^{e_{min}+m+1}` in size, so
    their difference is 0 or at least one unit in the last place there), a normal number
    that :func:`_step`'s :math:`2^{e_{max}-1}` maps to at least 1 (or +inf, which it clips
    to 1); ``a <= b`` gives at most 0. Subnormal inputs are zeros to the CPU's comparisons
    and products alike.
    """
    k = 2.0 ** (jnp.finfo(jnp.result_type(a, b)).nmant + 1)
    k = k if s is None else s(k)
    return _step(a * k - b * k, s)


def _renormalized(q):
    """``q / sum(q)``: weights whose terms cancel (``1 + z t`` or ``z - c`` near 0) are
    rounded differently in the weights pass than in the pass that computed their sum (XLA
    may contract ``1 + z t`` into a fused multiply-add in one and not the other), which can
    leave their sum off 1 by many ulps; one more pass makes it a distribution again."""
    return q / jnp.sum(q)


def _branch(d, pred, if_true, if_false, *args):
    """``lax.cond`` on a scalar; both branches and a select on the loop-free path.

    On an accelerator a ``lax.cond`` reads its predicate on the host; the loop-free path
    computes both sides instead (a pass more, no round trip).
    """
    if d.unroll:
        a, b = if_true(*args), if_false(*args)
        return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)
    return jax.lax.cond(pred, if_true, if_false, *args)


def _centred(d, m, mass=1, active=None):
    """The mean and variance of ``z`` about a first mean ``m``, by the corrected two-pass form.

    Under ``p`` restricted by ``active(salt)`` (an indicator; all examples by default) of
    total ``mass``. The second round sums ``z - m`` beside its square: that sum holds the
    rounding of ``m`` (relative to ``|m|``) and of ``z`` in the first pass (XLA may round
    ``z`` differently in another fusion), so neither counts as spread. With a weight of 1
    beside weights of 1e-38 the spread is below that rounding: the plain centred form gave a
    variance of 1e-32 instead of 1e-38, and the closed forms built on it the maximum loss.
    """

    def sums(f):
        z, s = d.fresh(m)
        dz = z - s(m)
        return d.E(f(dz) if active is None else active(m) * f(dz)) / mass

    c = sums(lambda dz: dz)
    v = sums(jnp.square)
    return m + c, jnp.maximum(v - c * c, 0)


def _mean_var(d):
    """``E_p z`` and ``Var_p z``: one pass for the mean, then :func:`_centred`."""
    return _centred(d, d.E(d.z()))


def _newton(d, evaluate, derivative, x0, lo, hi, trust=True, df0=None, free_derivative=False):
    """:func:`newton` to float precision with the options of ``d`` (loop-free path, fallback).

    ``df0``: the subsample's slope at ``x0`` (:func:`_start_by_subsamples`): secant steps.
    ``free_derivative``: ``derivative`` reads only the evaluation's sums (a short vector's
    shared pass), so the root finder takes it at every step.
    """
    options = {"ok": d.ok, "trust": trust, "unrolled": d.unroll, "fallback": d.fallback, "df0": df0}
    return newton(evaluate, derivative, x0, lo, hi, tol=_tol(d.dtype), free_derivative=free_derivative, **options)


def _log_bracket(dtype):
    log_eps = jnp.log(jnp.finfo(dtype).eps)
    return 2 * log_eps, -2 * log_eps


def _tol(dtype):
    return 4 * jnp.finfo(dtype).eps


# -------------------------------------------------------------------------------- ERM


class ErmKernel:
    r"""The nominal mean :math:`\sum_i p_i \ell_i`.

    Without weights it is one pass, ``c + sum_i (l_i - c)/n`` with ``c`` the first loss
    and every term scaled by 1/4 (so neither a difference nor the sum can overflow, and
    equal losses return that loss exactly); a non-finite loss makes the sum non-finite.
    """

    needs_stats = True

    def prepare(self, *hyper):
        return hyper

    def solve_plain(self, path, want_weights, losses):
        n = losses.shape[0]
        c = losses[0]
        quarter = jnp.asarray(0.25, losses.dtype)
        s = jnp.sum((losses * quarter - c * quarter) * jnp.asarray(1.0 / n, losses.dtype))
        top = jnp.finfo(losses.dtype).max
        value = jnp.clip((c * quarter + s) * 4, -top, top)
        q = jnp.full(losses.shape, 1.0 / n, losses.dtype) if want_weights else None
        return value, q, jnp.isfinite(s)

    def solve(self, d, *hyper):
        return d.value(d.E(d.z())), None

    def weights(self, d, aux, *hyper):
        return jnp.broadcast_to(d.p, d.shape)


# ----------------------------------------------------------------------- KL penalty


def _fresh_about(d, salt, shift):
    """``(z - shift, s)``: :meth:`Data.fresh`'s standardized losses about ``shift`` (``None``: 0)."""
    z, s = d.fresh(salt)
    return (z if shift is None else z - s(shift)), s


def _tilt_sums(d, beta, shift=None, near=None):
    """``(A, log A)`` with ``A = E_p exp(beta z)``: by ``expm1``/``log1p`` when ``beta <= 1``.

    With ``shift``, of ``z - shift`` in place of ``z``, by ``expm1``/``log1p`` where
    ``near`` (see :class:`KlKernel`).

    For ``beta <= 1`` every ``exp(beta z)`` is in ``[1/e, 1]``, ``A - 1 = E expm1(beta z)``
    is accurate relative to itself and so is ``log1p`` of it (``log A`` ~ ``beta E z`` is
    then exact to a few ulps however small ``beta`` is). For ``beta > 1``, ``A`` itself
    (a sum of positive terms) has a small relative error and ``log A`` an absolute error
    of a few ulps, which ``1/beta`` shrinks.
    """

    def large(beta):
        y, s = _fresh_about(d, beta, shift)
        a = d.E(jnp.exp(s(beta) * y))
        return a, jnp.log(a)

    near = beta <= 1 if near is None else near
    return _branch(d, near, lambda beta: _tilt_by_expm1(d, beta, shift), large, beta)


def _tilt_by_expm1(d, beta, shift=None):
    """``(A, log A)`` of :func:`_tilt_sums` for ``beta <= 1``: ``1 + E expm1(beta z)``, ``log1p``."""
    y, s = _fresh_about(d, beta, shift)
    sm1 = d.E(jnp.expm1(s(beta) * y))
    return 1 + sm1, jnp.log1p(sm1)


class KlPenaltyKernel:
    r"""Tilted risk :math:`\lambda \log E_p e^{\ell/\lambda}`, written around the maximum.

    With :math:`\beta = (M - m)/\lambda` the value is :math:`M + (M - m)\,\log A / \beta`,
    :math:`A = E_p e^{\beta z} \in [p(\arg\max), 1]`: one pass. For large
    :math:`\lambda` (:math:`\beta \le 1`), :math:`\log A = \mathrm{log1p}(E_p
    \mathrm{expm1}(\beta z))` keeps full relative accuracy, so the value tends to the mean
    without cancellation (``sum(q l) - lam log Z`` loses every digit there).
    """

    needs_stats = True

    def prepare(self, lam):
        return (lam,)

    def solve_plain(self, path, want_weights, losses, lam):
        r"""The value without weights, on the loop path: the maximum and one sum, as ``logsumexp``.

        :math:`A = \frac1n\sum_i e^{(\ell_i - M)/\lambda}` needs neither the minimum nor the
        standardization. When :math:`A \le 1/2` (:math:`|\log A| \ge \log 2`, so ``log``
        of a sum of positive terms is accurate to a few ulps) the value is
        :math:`M + \lambda \log A`. Otherwise (a large :math:`\lambda`, where the
        ``expm1`` form is needed), and for a non-finite loss or an overflowing difference
        :math:`\ell_i - M` (``d - d`` is NaN for those and 0 else, added to the sum at no
        extra pass), the problem goes to the general path behind one ``lax.cond``. The
        weights (:meth:`solve_with_weights`) and the loop-free path (where a ``lax.cond``
        reads its predicate on the host) always take the general path.
        """
        if path.unroll or want_weights:
            return self._standard(path, want_weights, losses, lam)
        n = losses.shape[0]
        dtype = losses.dtype
        big = jnp.max(losses)
        lam_c = jnp.maximum(lam, jnp.finfo(dtype).tiny).astype(dtype)
        diff = losses - big
        e = jnp.exp(diff / lam_c)
        a = jnp.sum(e + (diff - diff)) * jnp.asarray(1.0 / n, dtype)
        plain = jnp.isfinite(big) & jnp.isfinite(a) & (a <= 0.5)

        def direct(_):
            return big + lam_c * jnp.log(a)

        def general(_):
            return self._standard(path, False, losses, lam)[0]

        return jax.lax.cond(plain, direct, general, None), None, jnp.asarray(True)

    def _standard(self, path, want_weights, losses, lam):
        value, q = _engine.solve_standard(self, path, want_weights, losses, None, lam)
        return value, q, jnp.asarray(True)  # the general path applied the NaN policy itself

    def _beta(self, d, lam):
        tiny = jnp.finfo(d.dtype).tiny
        lam = jnp.maximum(lam, tiny)
        beta = (d.R / lam) / d.scale  # = (M - m) / lam, standardized inverse temperature
        # beta below 2^-100: the value is the mean to 2^-100 of the range (no 0/0).
        return jnp.clip(beta, 2.0**-100, jnp.finfo(d.dtype).max)

    def solve(self, d, lam):
        beta = self._beta(d, lam)
        _, log_a = _tilt_sums(d, beta)
        return d.value(log_a / beta), None

    def solve_with_weights(self, d, lam):
        """The value and the weights (the engine's only path to them) from one array of ``exp(beta z)``.

        For ``beta > 1`` its mean is ``A`` and the weights are ``p exp(beta z) / A``: one
        exponential per example for both (as ``jax.nn.logsumexp`` and its gradient), not one
        in the value's pass and another in the weights'. For ``beta <= 1`` ``A`` comes
        from the ``expm1`` pass of :func:`_tilt_sums`, as for the value alone.
        """
        beta = self._beta(d, lam)
        e = jnp.exp(beta * d.z())
        a_exp = d.E(e)

        large = lambda _: (a_exp, jnp.log(a_exp))  # noqa: E731
        a, log_a = _branch(d, beta <= 1, lambda beta: _tilt_by_expm1(d, beta), large, beta)
        return d.value(log_a / beta), d.p * e / a


# ------------------------------------------------------------------ subsample starts


def _levels(d):
    """The chain of strided subsamples (smallest first) that start a full-data solve."""
    subs = []
    for size in d.levels:
        if 8 * size <= d.n:
            subs.append(d.subsample(size))
    return subs


def _start_by_subsamples(d, root, analytic):
    """A starting point for ``root(d, x0) -> (x, extras)`` on ``d``.

    Solves on the smallest subsample from ``analytic(sub)``, then on each larger one from
    the previous solution. The subsample root differs from the full-data root by about
    ``1/sqrt(size)`` (relative): from the 65536-example level one Newton step on the full
    vector typically reaches float32 precision, so the full data is read about five times.

    Returns ``(x0, df0)``: with it the last subsample's derivative at its root, the slope
    of the full solve's first (secant) step (``None`` without a subsample, or from a root
    that does not report one).
    """
    subs = _levels(d)
    if not subs:
        return analytic(d), None
    x = analytic(subs[0])
    for sub in subs:
        r = root(sub, x)
        x = r.x
    return x, getattr(r, "df", None)


def _solution(root: Root, tol, dual, primal):
    """The value and what the weights pass needs, from a :class:`Root` of a dual.

    The value is the *dual* objective at the last point: an upper bound that is exact to
    second order in the error of the root (the dual is stationary there), and that stays
    exact where the primal weights cannot be represented (Cressie--Read with large ``k``:
    the weight of an example at the shift is ``x^a`` for an ``x`` below the smallest
    float). The weights are the primal solution at the last point or, when the two sides
    of the root are both known and close (always when the bracket closed on a jump), the
    mixture ``(1 - theta) q_low + theta q_high`` whose mean loss equals the value: the
    fraction of the mass of the examples at the jump (as CVaR's boundary example).

    The mixture is skipped when the two sides' mean losses (standardized, in ``[-1, 0]``)
    differ by at most ``tol``: the last point is one of the two sides, so its weights' mean
    loss is then within ``tol`` of the mixture's (a few roundings of ``z``), and the
    weights pass reads the data once instead of twice. A solve that converged smoothly
    ends there (1e6 normal losses, Cressie--Read: 2.7e-7 in float32); a jump does not.

    Returns ``(vz, (use_mix, theta, final, low, high))`` with each point ``(x, extras)``.
    """
    use, _ = root.blend(tol)
    (x_lo, _, e_lo), (x_hi, _, e_hi) = root.low, root.high
    vz = dual(root.x, root.extras)
    v_lo, v_hi = primal(x_lo, e_lo), primal(x_hi, e_hi)
    den = v_hi - v_lo
    theta = jnp.clip(jnp.where(den != 0, (vz - v_lo) / jnp.where(den != 0, den, 1), 0), 0, 1)
    use = use & ~(jnp.abs(den) <= tol)
    return vz, (use, theta, (root.x, root.extras), (x_lo, e_lo), (x_hi, e_hi))


def _mixed(d, sol, fn):
    """``fn(x, extras)`` at the solution: the last point, or the mixture of the two sides.

    By :func:`_branch`: the loops evaluate ``fn`` (a pass over the data) at the last point
    or at the two sides, not at all three.
    """
    use, theta, final, low, high = sol

    def mix(_):
        return jax.tree.map(lambda a, b: (1 - theta) * a + theta * b, fn(*low), fn(*high))

    return _branch(d, use, mix, lambda _: fn(*final), None)


# ------------------------------------------------------------------------------- KL


def _kl_expansion_ok(rho, var, eps):
    """Whether :math:`\\rho \\le \\varepsilon\\,\\mathrm{Var}_p z / 12` (see :class:`KlKernel`)."""
    return 12 * rho <= eps * var


def _expansion(d, rho):
    """``(use, vz, aux)`` of the small-radius expansion, computed only for radii below eps/48."""
    eps = d.eps

    def expansion(_):
        mu, var = _mean_var(d)
        sigma = jnp.sqrt(var)
        return _kl_expansion_ok(rho, var, eps), mu + jnp.sqrt(2 * rho) * sigma, (mu, sigma)

    def no_expansion(_):
        zero = jnp.zeros_like(rho)
        return jnp.asarray(False), zero, (zero, zero)

    # Var z <= 1/4: only radii below eps/48 can take the expansion.
    return _branch(d, 48 * rho <= eps, expansion, no_expansion, None)


def _linear_weights(d, rho, mu, sigma):
    """:math:`q = p(1 + \\sqrt{2\\rho}(z - \\mu)/\\sigma)`, the weights of the expansion (its gradient).

    Nonnegative where they apply; with a weight of 1 beside weights of 1e-213, ``sigma`` is at
    the rounding of ``z`` and a rounding of ``z - mu`` once made the heavy example's term
    negative, and the renormalization flipped every sign. Deviations within the rounding of
    ``z`` count as 0 (:func:`_deviation`) and a negative term as 0.
    """
    safe = jnp.where(sigma > 0, sigma, 1)
    term = jnp.maximum(1 + jnp.sqrt(2 * rho) * _deviation(d, d.z(), mu) / safe, 0)
    return _renormalized(jnp.broadcast_to(d.p * term, d.shape))


def _deviation(d, z, m):
    """``z - m``, with differences within the rounding of ``z`` (4 eps; ``z`` in ``[-1, 0]``) set to 0.

    The active-set weights are ``1 + (z - m) r``, and ``r`` may be huge when the active set
    is nearly one value (weights of 1e-38 on the others). Passes of different fusions round
    ``z`` differently (XLA may divide by multiplying by the reciprocal in one and not the
    other), and a rounding of eps times ``r`` would clip the weights of that value to 0.
    Treating such differences as 0 changes a weight by at most the error it had anyway.
    """
    dz = z - m
    return jnp.where(jnp.abs(dz) <= 4 * d.eps, 0, dz)


_KL_SHIFT_LIMIT = 16  # KL's sums are taken about the nominal mean for beta <= this


class KlKernel:
    r"""Worst case over a KL ball: the tilt :math:`q \propto p\,e^{\beta z}` with
    :math:`KL(q_\beta\|p) = \rho`.

    Newton in :math:`u = \log\beta` on :math:`f(u) = \beta E_q z - \log E_p e^{\beta z} -
    \rho`, :math:`f'(u) = \beta^2 \mathrm{Var}_q z`, with :math:`\log E_p e^{\beta z}` as
    in :func:`_tilt_sums`: two passes per evaluation (:math:`A = E_p e^{\beta z}`,
    :math:`B = E_p z e^{\beta z}`), one more for the derivative (:math:`E_p z^2
    e^{\beta z}`); the value :math:`M + (M - m) B/A` comes from the last evaluation. On a
    vector of at most ``engine.SHARE_MAX`` examples the three sums share one exponential
    per example in one pass, and the derivative costs no pass (the value and gradient of 1,024
    float32 losses took 8-17% less time on 2 CPU cores, over five loss distributions).

    :math:`f` is the same for :math:`y = z - c` in place of :math:`z` (any constant
    :math:`c`; then :math:`E_q z = c + B_y/A_y` and :math:`\log A = \beta c + \log A_y`).
    For :math:`\beta \le 16` the sums are taken about :math:`c = E_p z` (of the smallest
    subsample, or of all; every :math:`e^{\beta y} \le e^{16}`; above, :math:`c = 0` and
    :math:`z \le 0`), :math:`A_y - 1 \approx (\beta\sigma)^2/2` by ``expm1`` where
    :math:`\beta \le 1` or :math:`\beta\sigma \le 1/4` (``expm1`` costs 1.7 ``exp`` on
    XLA:CPU, and above that :math:`A_y` itself keeps :math:`A_y - 1` to a few ulps). About
    0, :math:`\beta E_q z` and :math:`\log A` are both :math:`\approx \beta\mu`, and
    :math:`f + \rho = KL(q\|p)` was their difference, lost in their rounding at small radii:
    the root finder closed its bracket by bisection within that noise, and the weights
    carried it. About :math:`c` each term is itself :math:`O(\beta^2\sigma^2)`. Float32,
    21 vectors of 1,024 losses (``benchmarks.perf.evaluations``' distributions), the
    weights' largest error against float64, relative to the largest weight: 54 → 1.5 eps at
    radius 0.001, 47 → 2.6 at 0.01, 30 → 8.7 at 0.1, 21 → 6.5 at 1 (16 at 3, unchanged);
    evaluations at radius 0.01: 7.5 → 3.9 on average; passes over 10⁶ losses 17.7 → 9.0.

    Small radius: with :math:`\mu, \sigma^2` the nominal mean and variance of :math:`z`,
    :math:`|V_z - \mu - \sqrt{2\rho}\,\sigma| \le \max(\rho/(12\sigma^2), 4\rho/3)` for
    :math:`\rho \le \sigma^2/8` (upper bound: the dual at :math:`\beta = \sqrt{2\rho}/
    \sigma` with :math:`|K'''| \le 1/4` for a cumulant generating function on a unit
    interval; lower bound: the feasible :math:`q = p(1 + t(z - \mu))`, :math:`t \le 1/2`,
    whose divergence is at most :math:`t^2\sigma^2/2 + t^3\sigma^2/3`). For
    :math:`\rho \le \varepsilon\sigma^2/12` the bound is below :math:`\varepsilon/30` and
    the expansion is returned: continuous at :math:`\rho = 0`, where the root finder can
    no longer resolve :math:`\beta`.
    """

    needs_stats = True

    def prepare(self, rho):
        return (rho,)

    @staticmethod
    def _root(d, rho, u0, c, sigma):
        def shared(beta, shift, near):
            # One exponential per example for A, B and the derivative's E_p y^2 e^{beta y}.
            y, s = _fresh_about(d, beta, shift)
            by = s(beta) * y
            if near:
                em1 = jnp.expm1(by)
                e = em1 + 1
                a1 = d.E(em1)
                a, log_a = 1 + a1, jnp.log1p(a1)
            else:
                e = jnp.exp(by)
                a = d.E(e)
                log_a = jnp.log(a)
            return a, log_a, d.E(y * e), d.E(y * y * e)

        def evaluate(u):
            beta = jnp.exp(u)
            shifted = beta <= _KL_SHIFT_LIMIT
            shift = jnp.where(shifted, c, 0)  # y = z - shift: e^{beta y} <= e^{beta}
            near = (beta <= 1) | (shifted & (4 * beta * sigma <= 1))  # A_y - 1 ~ (beta sigma)^2 / 2
            if d.shares:
                a, log_a, b, c2 = _branch(
                    d, near, lambda bt: shared(bt, shift, True), lambda bt: shared(bt, shift, False), beta
                )
                return beta * (b / a) - log_a - rho, (a, b, log_a, shift, c2)
            a, log_a = _tilt_sums(d, beta, shift, near)
            y, s = _fresh_about(d, u, shift)
            b = d.E(y * jnp.exp(s(beta) * y))
            return beta * (b / a) - log_a - rho, (a, b, log_a, shift)

        def derivative(u, ab):
            a, b, shift = ab[0], ab[1], ab[3]
            beta = jnp.exp(u)
            if d.shares:
                c2 = ab[4]  # a short vector's evaluation computed it
            else:
                y, s = _fresh_about(d, u, shift)
                c2 = d.E(y * y * jnp.exp(s(beta) * y))
            eq = b / a
            return beta * beta * jnp.maximum(c2 / a - eq * eq, 0)

        lo, hi = _log_bracket(d.dtype)
        return _newton(d, evaluate, derivative, u0, lo, hi, free_derivative=d.shares)

    @staticmethod
    def _analytic(rho, var):
        tiny = jnp.finfo(var.dtype).tiny
        sigma = jnp.sqrt(jnp.maximum(var, tiny))
        return jnp.log(jnp.maximum(jnp.sqrt(2 * rho), tiny) / sigma)

    def solve(self, d, rho):
        use, vz_exp, (mu, sigma) = _expansion(d, rho)

        def root(_):
            # Newton steps, not secant ones: the derivative is one pass beside the
            # evaluation's two, and under heavy tails the dual is so convex in u that secant
            # steps from a subsample slope took more passes (1e6 lognormal losses: 22-28 vs 20-26).
            subs = _levels(d)
            c, var = _mean_var(subs[0] if subs else d)
            sd = jnp.sqrt(var)
            start = self._analytic(rho, var)
            u0, _ = _start_by_subsamples(d, lambda sub, x: self._root(sub, rho, x, c, sd), lambda _: start)

            # Dual value shift + (rho + log A_y) / beta with log A_y as the evaluation computed
            # it (by log1p of E expm1 near 1: A_y - 1 from A_y would lose eps/beta); primal
            # shift + B_y / A_y.
            def dual(u, ab):
                return ab[3] + (rho + ab[2]) / jnp.exp(u)

            return _solution(self._root(d, rho, u0, c, sd), _tol(d.dtype), dual, lambda u, ab: ab[3] + ab[1] / ab[0])

        def keep(_):
            zero = jnp.zeros_like(rho)
            point = (zero, (mu, sigma, zero, zero) + ((zero,) if d.shares else ()))
            return vz_exp, (jnp.asarray(False), zero, point, point, point)

        vz, sol = _branch(d, use, keep, root, None)
        return d.value(vz), (use, mu, sigma, sol)

    def weights(self, d, aux, rho):
        use, mu, sigma, sol = aux

        def term(u, ab):
            # A fresh z in the branch: one built outside would be stored (a pass more).
            y, s = _fresh_about(d, u, ab[3])
            return d.p * jnp.exp(s(jnp.exp(u)) * y) / ab[0]

        def tilt(_):
            return _mixed(d, sol, term)

        def linear(_):
            return _linear_weights(d, rho, mu, sigma)

        return jnp.broadcast_to(_branch(d, use, linear, tilt, None), d.shape)


# ------------------------------------------------------------------- Cressie--Read


def _cr_log_c_times(k, kappa, rho):
    r""":math:`(a + 1)\log c_k(\rho) = \log(1 + k\kappa\rho)/\kappa` (:math:`\kappa = k - 1`).

    By logarithms where :math:`k\kappa\rho` overflows (:math:`k = 10^{20}`); tends to
    :math:`\rho` as :math:`\kappa \to 0`.
    """
    prod = k * kappa * rho
    big = ~jnp.isfinite(prod)
    log_prod = jnp.log(k) + jnp.log(kappa) + jnp.log(jnp.where(rho > 0, rho, 1))
    safe = jnp.where(big, 0, prod)
    return jnp.where(big, log_prod, jnp.log1p(safe)) / kappa


class CressieReadKernel:
    r"""Worst case over a Cressie--Read ball, :math:`f_k(t) = (t^k - kt + k - 1)/(k(k-1))`.

    With :math:`a = 1/(k-1)`, the shift :math:`\eta` of the dual and the variable
    :math:`t = (M - m)/(M - \eta) > 0`, let :math:`x_i = (1 + z_i t)_+` (the largest is 1)
    and :math:`q \propto p\,x^a`. With :math:`N = E_p x^a`, :math:`B = E_p z x^a` the
    optimality condition of the dual is

    .. math::

        G(t) = (a + 1)\log c_k(\rho) + \log N - a \log\big(1 + tB/N\big) = 0,

    decreasing in :math:`t`, and the value is :math:`M + (M - m) B/N`. Powers are
    :math:`x^a = \exp(a\,\mathrm{log1p}(zt))`: as :math:`k \to 1` (:math:`a \to \infty`,
    :math:`at \to \beta`) every term tends to its KL counterpart, so there is no
    cancellation of size :math:`a` (the issue with :math:`(\ell - \eta)^{1/(k-1)}`), and
    :math:`k = 1 + 10^{-9}` is as accurate as the KL ball; :math:`(a+1)\log c_k` is taken
    by logarithms for :math:`k = 10^{20}`. Newton in :math:`\log t`: two passes per
    evaluation, two more for the derivative; on a vector long enough for subsamples,
    secant steps from the subsample's derivative instead (no derivative pass). Small radii use the expansion of
    :class:`KlKernel` (:math:`f_k''(1) = 1` for every :math:`k`), with the same switch.
    """

    needs_stats = True

    def prepare(self, rho, k):
        return rho, k

    @staticmethod
    def _kappa(k, dtype):
        # k - 1 >= eps^2/16: k validated > 1 in float64 may round to 1 in float32, and
        # below that gap the value differs from the limit by O(eps^2) of the range.
        # and k - 1 <= 1/(16 tiny), so that a = 1/(k - 1) stays a normal number.
        fi = jnp.finfo(dtype)
        return jnp.clip(k - 1, fi.eps**2 / 16, 1 / (16 * fi.tiny))

    @staticmethod
    def _log_power(z, t, a, s=None):
        """``a log(1 + z t)``: ``log x^a``, ``-inf`` where clipped."""
        return a * jnp.log1p(jnp.maximum(z * t, -1.0 if s is None else s(-1.0)))

    @classmethod
    def _root(cls, d, lc, a, s0, df0=None):
        floor = jnp.finfo(d.dtype).eps

        def evaluate(log_t):
            t = jnp.exp(log_t)

            def small(t):
                z, s = d.fresh(t)
                n1 = d.E(jnp.expm1(cls._log_power(z, s(t), s(a), s)))
                return 1 + n1, jnp.log1p(n1), n1

            def large(t):
                z, s = d.fresh(t)
                n = d.E(jnp.exp(cls._log_power(z, s(t), s(a), s)))
                return n, jnp.log(n), n - 1

            def shared(t, near):
                # One x^a per example for N, B and the derivative's two moments.
                z, s = d.fresh(t)
                log_power = cls._log_power(z, s(t), s(a), s)
                em1 = jnp.expm1(log_power) if near else None
                w = em1 + 1 if near else jnp.exp(log_power)
                w1 = w / jnp.maximum(s(1.0) + z * s(t), s(floor))
                m1, m2 = d.E(z * w1), d.E(z * z * w1)
                if near:
                    n1 = d.E(em1)
                    return 1 + n1, jnp.log1p(n1), n1, d.E(z * w), m1, m2
                n = d.E(w)
                return n, jnp.log(n), n - 1, d.E(z * w), m1, m2

            # x >= 1 - t: for t <= 1/2 and a t <= 1/2 every x^a >= 1/2 and N - 1 is the
            # accurate quantity (kept: the dual value needs it to eps of itself).
            near = (t <= 0.5) & (a * t <= 0.5)
            if d.shares:
                n, log_n, n1, b, m1, m2 = _branch(d, near, lambda t: shared(t, True), lambda t: shared(t, False), t)
                more = (m1, m2)
            else:
                n, log_n, n1 = _branch(d, near, small, large, t)
                z, s = d.fresh(t)
                b = d.E(z * jnp.exp(cls._log_power(z, s(t), s(a), s)))
                more = ()
            r = t * b / n
            return -(lc + log_n - a * jnp.log1p(r)), (n, b, n1, *more)

        def derivative(log_t, nb):
            n, b = nb[0], nb[1]
            t = jnp.exp(log_t)

            def moment(power):
                # E z^power x^(a-1): x^a / max(x, eps) is x^(a-1) on the active set, 0 where clipped.
                z, s = d.fresh(t)
                w = jnp.exp(cls._log_power(z, s(t), s(a), s)) / jnp.maximum(s(1.0) + z * s(t), s(floor))
                return d.E(z * w) if power == 1 else d.E(z * z * w)

            # A short vector's evaluation computed both moments; a long one's takes a pass each.
            m1, m2 = (nb[3], nb[4]) if d.shares else (moment(1), moment(2))
            r = t * b / n
            n_s, b_s = a * t * m1, a * t * m2
            dr = r + t * b_s / n - t * b * n_s / (n * n)
            return -(n_s / n - a * dr / (1 + r))

        log_eps = jnp.log(d.eps)
        lo = 2 * log_eps - jnp.log1p(a)
        hi = -2 * log_eps
        # x^a has an unbounded slope at x = 0 when a < 1 (k > 2): no Newton-step stop there.
        return _newton(d, evaluate, derivative, s0, lo, hi, trust=a >= 1, df0=df0, free_derivative=d.shares)

    @staticmethod
    def _analytic(rho, a):
        def start(d):
            # The chi-square ball's unclipped root (exact for k = 2), shifted by -log(a)/2
            # for k < 2 (a > 1) only: over 360 problems (six loss distributions, 1024
            # examples, radii 0.05-3, k = 1.2-6) 7.2 evaluations on average; 7.7 with the
            # shift for every k (for k = 6 it starts far right of the root: 14.6 vs 12.5),
            # 11.2 from sqrt(2 rho)/sigma/sqrt(a(a+1)).
            mu, var = _mean_var(d)
            tiny = jnp.finfo(d.dtype).tiny
            sigma = jnp.sqrt(jnp.maximum(var, tiny))
            r2 = jnp.maximum(jnp.sqrt(2 * rho), tiny)
            return jnp.log(r2 / (sigma - mu * r2)) - 0.5 * jnp.maximum(jnp.log(a), 0)

        return start

    def solve(self, d, rho, k):
        kappa = self._kappa(k, d.dtype)
        k = 1 + kappa
        a = 1 / kappa
        lc = _cr_log_c_times(k, kappa, rho)
        use, vz_exp, (mu, sigma) = _expansion(d, rho)

        def root(_):
            s0, df0 = _start_by_subsamples(d, lambda sub, x: self._root(sub, lc, a, x), self._analytic(rho, a))

            # Dual value (c D^(1/(a+1)) - 1) / t with D = N + t B; primal E_q z = B / N.
            def dual(log_t, nb):
                b, n1 = nb[1], nb[2]
                t = jnp.exp(log_t)
                return jnp.expm1(lc / (a + 1) + jnp.log1p(n1 + t * b) / (a + 1)) / t

            return _solution(self._root(d, lc, a, s0, df0), _tol(d.dtype), dual, lambda log_t, nb: nb[1] / nb[0])

        def keep(_):
            zero = jnp.zeros_like(rho)
            point = (zero, (mu, sigma, zero) + ((zero, zero) if d.shares else ()))
            return vz_exp, (jnp.asarray(False), zero, point, point, point)

        vz, sol = _branch(d, use, keep, root, None)
        return d.value(vz), (use, mu, sigma, sol)

    def weights(self, d, aux, rho, k):
        use, mu, sigma, sol = aux
        a = 1 / self._kappa(k, d.dtype)

        def term(log_t, nb):
            z, s = d.fresh(log_t)  # built in the branch: see KlKernel.weights
            return d.p * jnp.exp(self._log_power(z, s(jnp.exp(log_t)), s(a), s)) / nb[0]

        def power(_):
            return _renormalized(jnp.broadcast_to(_mixed(d, sol, term), d.shape))

        def linear(_):
            return _linear_weights(d, rho, mu, sigma)

        return jnp.broadcast_to(_branch(d, use, linear, power, None), d.shape)


# -------------------------------------------------------------------------- chi-square


# --------------------------------------------------------- active sets by a sort


def _sorted_moments(d):
    r"""The losses in descending order and the moments of each top set, for choosing an active set.

    With :math:`y_{(1)} \ge y_{(2)} \ge \dots` the losses (``scale * l``) in descending order and
    :math:`T_k` the top :math:`k` examples: their mass :math:`P_k = \sum_{j \le k} p_{(j)}`,
    the mass outside :math:`Q_k = 1 - P_k`, and the mean :math:`m_k` and variance
    :math:`v_k` of :math:`z` under :math:`p` restricted to :math:`T_k`; ``nxt[k]`` is the next
    :math:`z` below (:math:`-\infty` after the last) and ``end[k]`` whether :math:`k` ends a
    group of equal losses (only such :math:`T_k` are candidate active sets). One sort and
    cumulative sums: on an accelerator a few kernels for a minibatch. Cumulative sums lose
    precision (a variance from :math:`E z^2 - m^2`); they only choose the active set, and
    :func:`_active_moments` recomputes what the answer uses by exact passes.

    Returns:
        ``(ys, nxt, end, P, Q, m, v)``, each of shape ``(n,)``.
    """
    n = d.n
    y = d.losses * d.scale
    if d.weighted:
        neg, p = jax.lax.sort((-y, d.p), num_keys=1)
    else:
        neg, p = jnp.sort(-y), None
    ys = -neg
    zs = (ys - d.Ms) / d.R
    if p is None:
        k = jnp.arange(1, n + 1, dtype=d.dtype)
        P, Q = k * d.p, (n - k) * d.p
        m, e2 = jnp.cumsum(zs) / k, jnp.cumsum(zs * zs) / k
    else:
        P = jnp.cumsum(p)
        Q = 1 - P
        safe = jnp.where(P > 0, P, 1)
        m, e2 = jnp.cumsum(p * zs) / safe, jnp.cumsum(p * zs * zs) / safe
    v = jnp.maximum(e2 - m * m, 0)
    nxt = jnp.concatenate([zs[1:], jnp.full((1,), -jnp.inf, d.dtype)])
    end = jnp.concatenate([ys[1:] < ys[:-1], jnp.ones((1,), bool)])
    return ys, nxt, end, P, Q, m, v


def _first_active_set(ys, end, contains_root):
    r"""The smallest loss of the first top set whose next loss below is left of the root.

    ``contains_root[k]``: the root of the dual lies at or above the next :math:`z` below
    :math:`T_k`, i.e. every example outside :math:`T_k` is inactive. The condition is
    monotone in :math:`k` (false, then true), so the first group end where it holds is the
    active set; if rounding makes it hold nowhere, every example is active.
    """
    n = ys.shape[0]
    k = jnp.min(jnp.where(end & contains_root, jnp.arange(n), n - 1))
    return ys[k]


def _active(d, tau, salt):
    r"""The indicator of the active set :math:`\{y \ge \tau\}` as a fresh expression (see :meth:`Data.fresh`)."""
    zero = _engine.fresh_zero(salt)
    return jnp.where(d.losses * d.scale >= tau, 1 + zero, zero)


def _active_moments(d, tau):
    r"""``(P, Q, m, v)`` of the active set :math:`A = \{y \ge \tau\}`, by exact passes (two rounds).

    :math:`P = E_p 1_A` (1 where ``A`` has no mass, which no caller's set lacks),
    :math:`Q = E_p 1_{A^c}` (exactly 0 when every example is active), and the mean
    :math:`m` and centred variance :math:`v` of :math:`z` under :math:`p` restricted to
    :math:`A`.
    """
    z, s = d.fresh(tau)
    a = _active(d, tau, tau)
    P, Q, S = d.E(a), d.E(s(1.0) - a), d.E(z * a)
    P = jnp.where(P > 0, P, 1)
    # The weights use z - m: a mean off by an ulp of 1 would swamp a spread of 1e-109 (a
    # weight of 1e-217 on the largest loss), hence the corrected form.
    m, v = _centred(d, S / P, P, lambda salt: _active(d, tau, salt))
    return P, Q, m, v


class ChiSquareKernel:
    r"""Worst case over a :math:`\chi^2` ball (Cressie--Read with :math:`k = 2`, :math:`a = 1`).

    While no weight is clipped the solution is closed-form: with :math:`\mu, \sigma` the
    nominal mean and standard deviation of :math:`z`, :math:`V_z = \mu + \sqrt{2\rho}\,
    \sigma` and :math:`q = p(1 + \sqrt{2\rho}(z - \mu)/\sigma)`, valid exactly when
    :math:`\sigma \ge \sqrt{2\rho}\,(1 + \mu)` (the smallest weight is then
    :math:`\ge 0`); two passes, and continuous at :math:`\rho = 0` (the root finder's
    shift :math:`\eta \to -\infty` there). Otherwise Newton on :math:`G(t)` of
    :class:`CressieReadKernel` with :math:`x^a = (1 + zt)_+` (no transcendental): two
    passes per evaluation, two more for the derivative (none for the secant steps of a
    subsample-started solve, as there).

    On the loop-free path a vector of at most
    :data:`~robustlearn._src.reductions.engine.SORT_MAX` examples is solved without
    iterating. The optimum is :math:`q = p\,(z - \eta)_+ / E_p(z - \eta)_+`, and on an
    active set :math:`A = \{z > \eta\}` of mass :math:`P` (mass :math:`Q = 1 - P` outside)
    where :math:`z` has mean :math:`m` and variance :math:`v`, the constraint gives
    :math:`m - \eta = \sqrt{v/(cP - 1)}` with :math:`c = 1 + 2\rho`, so
    :math:`V_z = m + \sqrt{v\,(cP - 1)}` and :math:`q = (p/P)\,(1 + (z - m)\sqrt{(cP -
    1)/v})_+` on :math:`A`. One sort gives these moments for every top set
    (:func:`_sorted_moments`); the active set is the first whose :math:`\eta` is at or above
    the next loss below (:func:`_first_active_set`), and two exact passes recompute
    :math:`P, Q, m, v` on it. :math:`cP - 1` is formed as :math:`2\rho P - Q`, so every
    radius down to 0 (all active: the closed form above) keeps its precision.
    """

    needs_stats = True

    def prepare(self, rho):
        return (rho,)

    @staticmethod
    def _root(d, lc, s0, df0=None):
        def evaluate(log_t):
            t = jnp.exp(log_t)

            def small(t):
                z, s = d.fresh(t)
                n1 = d.E(jnp.maximum(z * s(t), s(-1.0)))
                return 1 + n1, jnp.log1p(n1), n1

            def large(t):
                z, s = d.fresh(t)
                n = d.E(jnp.maximum(s(1.0) + z * s(t), s(0.0)))
                return n, jnp.log(n), n - 1

            n, log_n, n1 = _branch(d, t <= 0.5, small, large, t)
            z, s = d.fresh(t)
            b = d.E(z * jnp.maximum(s(1.0) + z * s(t), s(0.0)))
            return -(lc + log_n - jnp.log1p(t * b / n)), (n, b, n1)

        def derivative(log_t, nb):
            n, b = nb[0], nb[1]
            t = jnp.exp(log_t)
            z, s = d.fresh(t)
            p_ = d.E(z * _step(s(1.0) + z * s(t), s))  # 1 on the active set, 0 where clipped
            z, s = d.fresh(t)
            q_ = d.E(z * z * _step(s(1.0) + z * s(t), s))
            r = t * b / n
            n_s, b_s = t * p_, t * q_
            dr = r + t * b_s / n - t * b * n_s / (n * n)
            return -(n_s / n - dr / (1 + r))

        lo, hi = _log_bracket(d.dtype)
        return _newton(d, evaluate, derivative, s0, lo, hi, df0=df0)

    @staticmethod
    def _analytic(rho):
        def start(d):
            mu, var = _mean_var(d)
            tiny = jnp.finfo(d.dtype).tiny
            sigma = jnp.sqrt(jnp.maximum(var, tiny))
            r2 = jnp.maximum(jnp.sqrt(2 * rho), tiny)
            # The closed-form t (exact without clipping) is a lower bound of the clipped one.
            return jnp.log(r2 / (sigma - mu * r2))

        return start

    @staticmethod
    def _gap(rho, P, Q):
        # c P - 1 with c = 1 + 2 rho, written so that it is exactly 2 rho P when Q = 0.
        return 2 * rho * P - Q

    def _solve_sorted(self, d, rho):
        ys, nxt, end, P, Q, m, v = _sorted_moments(d)
        gap = self._gap(rho, P, Q)
        eta = m - jnp.sqrt(v / jnp.where(gap > 0, gap, 1))
        tau = _first_active_set(ys, end, (gap > 0) & (eta >= nxt))
        P, Q, m, v = _active_moments(d, tau)
        gap = jnp.maximum(self._gap(rho, P, Q), 0)
        vz = m + jnp.where(v > 0, jnp.sqrt(v) * jnp.sqrt(gap), 0)
        r = jnp.where(v > 0, jnp.minimum(jnp.sqrt(gap) / jnp.sqrt(jnp.where(v > 0, v, 1)), jnp.finfo(d.dtype).max), 0)
        return d.value(vz), (tau, P, m, r)

    def _weights_sorted(self, d, aux):
        tau, P, m, r = aux
        z = d.z()
        q = d.p * _active(d, tau, r) * jnp.maximum(1 + _deviation(d, z, m) * r, 0) / P
        return _renormalized(jnp.broadcast_to(q, d.shape))

    def solve(self, d, rho):
        if d.sorts:
            return self._solve_sorted(d, rho)
        mu, var = _mean_var(d)
        sigma = jnp.sqrt(var)
        r2 = jnp.sqrt(2 * rho)
        closed = sigma >= r2 * (1 + mu)
        lc = jnp.log1p(2 * rho)

        def closed_form(_):
            zero = jnp.zeros_like(rho)
            point = (zero, (mu, sigma, zero))
            return mu + r2 * sigma, (jnp.asarray(False), zero, point, point, point)

        def root(_):
            subs = _levels(d)
            if subs:
                s0, df0 = _start_by_subsamples(d, lambda sub, x: self._root(sub, lc, x), self._analytic(rho))
            else:
                tiny = jnp.finfo(d.dtype).tiny
                s0, df0 = jnp.log(jnp.maximum(r2, tiny) / (jnp.maximum(sigma, tiny) - mu * r2)), None

            # Dual value (c sqrt(D) - 1) / t with D = N + t B, c = sqrt(1 + 2 rho); primal B / N.
            def dual(log_t, nb):
                _, b, n1 = nb
                t = jnp.exp(log_t)
                return jnp.expm1((lc + jnp.log1p(n1 + t * b)) / 2) / t

            return _solution(self._root(d, lc, s0, df0), _tol(d.dtype), dual, lambda log_t, nb: nb[1] / nb[0])

        vz, sol = _branch(d, closed, closed_form, root, None)
        return d.value(vz), (closed, mu, sigma, sol)

    def weights(self, d, aux, rho):
        if d.sorts:
            return self._weights_sorted(d, aux)
        closed, mu, sigma, sol = aux

        def term(log_t, nb):
            z, s = d.fresh(log_t)  # built in the branch: see KlKernel.weights
            return d.p * jnp.maximum(s(1.0) + z * s(jnp.exp(log_t)), s(0.0)) / nb[0]

        def linear(_):
            return _linear_weights(d, rho, mu, sigma)

        def clipped(_):
            return _renormalized(jnp.broadcast_to(_mixed(d, sol, term), d.shape))

        return jnp.broadcast_to(_branch(d, closed, linear, clipped, None), d.shape)


# ------------------------------------------------------------------ chi-square penalty


class _AsRoot(NamedTuple):
    x: jax.Array
    extras: jax.Array


class ChiSquarePenaltyKernel:
    r"""Penalized :math:`\chi^2`: :math:`q = p\,(z - c)_+/\lambda_z` with
    :math:`E_p(z - c)_+ = \lambda_z` (:math:`\lambda_z = \lambda/(M - m)`).

    Without clipping (:math:`\lambda_z \ge 1 + \mu`) the value is the closed form
    :math:`\mu + \sigma^2/(2\lambda_z)` (two passes). Otherwise :math:`E_p(z - c)_+` is
    convex and piecewise linear in :math:`c`; Newton from :math:`c_0 = \mu - \lambda_z`
    (left of the root) increases monotonically and lands exactly on the root once its
    active set is right (one pass per evaluation, one more, a count, for the derivative).
    With :math:`S_j = E_p (z - c)_+^j`, :math:`q = p(z - c)_+/S_1` and the value is
    :math:`c + S_2/S_1 - \lambda_z (S_2/S_1^2 - 1)/2`.

    On the loop-free path a vector of at most
    :data:`~robustlearn._src.reductions.engine.SORT_MAX` examples takes its active set
    :math:`A = \{z > c\}` from one sort, as :class:`ChiSquareKernel` does: with :math:`P,
    Q, m, v` as there, :math:`c = m - \lambda_z/P`, and the value is :math:`m + Pv/(2
    \lambda_z) - \lambda_z Q/(2P)` (:math:`\mu + \sigma^2/(2\lambda_z)` when all are active).
    """

    needs_stats = True

    def prepare(self, lam):
        return (lam,)

    @staticmethod
    def _lam_z(d, lam):
        dtype = d.dtype
        lam_z = (jnp.maximum(lam, jnp.finfo(dtype).tiny) / d.R) * d.scale
        return jnp.clip(lam_z, jnp.finfo(dtype).tiny, jnp.finfo(dtype).max)

    @staticmethod
    def _root(d, lam_z, c0):
        def evaluate(c):
            z, s = d.fresh(c)
            s1 = d.E(jnp.maximum(z - s(c), s(0.0)))
            return lam_z - s1, s1

        def derivative(c, s1):
            z, s = d.fresh(c)
            return d.E(_step(z - s(c), s))

        lo, hi = -jnp.ones_like(c0), jnp.zeros_like(c0)
        root = _newton(d, evaluate, derivative, c0, lo, hi)
        return root.x, root.extras

    def _solve_sorted(self, d, lam_z):
        ys, nxt, end, P, _, m, _ = _sorted_moments(d)
        c = m - lam_z / jnp.where(P > 0, P, 1)
        tau = _first_active_set(ys, end, c >= nxt)
        P, Q, m, v = _active_moments(d, tau)
        # On the active set S_1 = lam_z and S_2 = P v + lam_z^2 / P.
        vz = m + P * v / (2 * lam_z) - (lam_z / 2) * (Q / P)
        return d.value(vz), (tau, P, m)

    def solve(self, d, lam):
        lam_z = self._lam_z(d, lam)
        if d.sorts:
            return self._solve_sorted(d, lam_z)
        mu, var = _mean_var(d)
        closed = lam_z >= 1 + mu

        def closed_form(_):
            return mu + var / (2 * lam_z), (jnp.asarray(True), mu, jnp.ones_like(mu))

        def clipped(_):
            def analytic(sub):
                return jnp.maximum(sub.E(sub.z()) - lam_z, -1)

            c0, _ = _start_by_subsamples(d, lambda sub, x: _AsRoot(*self._root(sub, lam_z, x)), analytic)
            if not _levels(d):
                c0 = jnp.maximum(mu - lam_z, -1)
            c, s1 = self._root(d, lam_z, c0)
            z, s = d.fresh(c)
            s2 = d.E(jnp.square(jnp.maximum(z - s(c), s(0.0))))
            vz = c + s2 / s1 - lam_z * (s2 / (s1 * s1) - 1) / 2
            return vz, (jnp.asarray(False), c, s1)

        vz, aux = _branch(d, closed, closed_form, clipped, None)
        return d.value(vz), aux

    def weights(self, d, aux, lam):
        lam_z = self._lam_z(d, lam)
        z = d.z()
        if d.sorts:
            # q = p (z - c)_+ / lam_z with c = m - lam_z / P, on the active set.
            tau, P, m = aux
            q = d.p * _active(d, tau, m) * jnp.maximum(1 + _deviation(d, z, m) * (P / lam_z), 0) / P
            return _renormalized(jnp.broadcast_to(q, d.shape))
        closed, c_or_mu, s1 = aux

        def linear(_):
            # As in _linear_weights: a slope 1/lam_z of 1e36 amplifies the rounding of z - mu.
            term = jnp.maximum(1 + _deviation(d, z, c_or_mu) / lam_z, 0)
            return _renormalized(jnp.broadcast_to(d.p * term, d.shape))

        def clipped(_):
            return _renormalized(jnp.broadcast_to(d.p * jnp.maximum(z - c_or_mu, 0) / s1, d.shape))

        return jnp.broadcast_to(_branch(d, closed, linear, clipped, None), d.shape)


# ------------------------------------------------------------------- CVaR and TV


def ordered_keys(x):
    """Integers in the same order as the floats ``x`` (IEEE-754 bit trick; -0.0 and 0.0 tie)."""
    itype = jnp.int32 if x.dtype.itemsize == 4 else jnp.int64
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, jnp.zeros_like(x), x), itype)
    return bits ^ ((bits >> (8 * x.dtype.itemsize - 1)) & jnp.iinfo(itype).max)


def _from_key(k, dtype):
    itype = k.dtype
    bits = k ^ ((k >> (8 * dtype.itemsize - 1)) & jnp.iinfo(itype).max)
    return jax.lax.bitcast_convert_type(bits, dtype)


def _halfway(a, b):
    """The integer halfway between keys ``a`` and ``b`` (rounded down), without overflow."""
    return (a >> 1) + (b >> 1) + (a & b & 1)


def _key_mid(lo, hi, dtype):
    """The float halfway between ``lo`` and ``hi`` in the order of the floats."""
    return _normal(_from_key(_halfway(ordered_keys(lo), ordered_keys(hi)), dtype))


def _normal(x):
    """``x`` with a subnormal magnitude replaced by 0 (CPUs flush subnormals: they are 0 there)."""
    return jnp.where(jnp.abs(x) < jnp.finfo(x.dtype).tiny, jnp.zeros_like(x), x)


def _below(x):
    """The largest non-subnormal float below ``x``: no loss can lie strictly between.

    A bracket end, not a differentiable quantity (``nextafter`` has no derivative): weights
    differentiated inside a user's program must not fail here."""
    x = jax.lax.stop_gradient(x)
    r = jnp.nextafter(x, jnp.asarray(-jnp.inf, x.dtype))
    tiny = jnp.finfo(x.dtype).tiny
    return jnp.where(jnp.abs(r) < tiny, jnp.where(x > 0, 0, -tiny).astype(x.dtype), r)


def _signed(d, sign, salt):
    """``(y, s)``: ``y = sign * scale * l`` as a fresh expression and its salt (see :meth:`Data.fresh`)."""
    zero = _engine.fresh_zero(salt)
    return sign * d.losses * (d.scale + zero), lambda x: x + zero


def _mass_above(d, sign, t):
    """:math:`C(t) = E_p [y > t]`: one fused pass."""
    y, s = _signed(d, sign, t)
    return d.E(_gt(y, s(t), s))


def _excess(d, sign, t):
    """:math:`S(t) = E_p (y - t)_+`: one fused pass."""
    y, s = _signed(d, sign, t)
    return d.E(jnp.maximum(y - s(t), s(0.0)))


# A counting pass over a short vector may test several thresholds at once: the (k, n)
# comparisons cost little more than one while k n stays within this many elements (on
# XLA:CPU, past ~2**15 the pass got several times slower: 15 x 4096 took 16 us, 7 x 4096 2.7).
MULTI_COUNT_ELEMENTS = 2**15


def _thresholds(n):
    """How many thresholds a counting pass over ``n`` examples tests: 15, 7, 3 or 1."""
    for k in (15, 7, 3):
        if k * n <= MULTI_COUNT_ELEMENTS:
            return k
    return 1


def _masses_above(d, sign, ts):
    """:math:`C(t_k) = E_p [y > t_k]` for a vector of thresholds: one fused pass over ``(k, n)``."""
    y, s = _signed(d, sign, ts[0])
    return d.E(_gt(y[None, :], s(ts)[:, None], s), axis=-1)


def _key_grid(lo, hi, dtype, k):
    """``k`` (odd) floats splitting ``[lo, hi]`` about evenly in the order of the floats.

    Offsets from the middle key by ``half // ((k + 1) / 2)``, ``half`` the difference of the
    halved keys, so that no integer overflows (the keys' own difference may not fit)."""
    a, b = ordered_keys(lo), ordered_keys(hi)
    m = (k + 1) // 2
    steps = jnp.arange(1 - m, m, dtype=a.dtype)
    return _normal(_from_key(_halfway(a, b) + ((b >> 1) - (a >> 1)) // m * steps, dtype))


def _tail(d, sign, alpha, lo0=None, hi0=None, tol=None):
    r"""The mass ``alpha`` of ``p`` on the largest ``y = sign * scale * l`` (``sign`` = +-1).

    The search works on the losses themselves (``y`` is exact: a sign and a power of 2),
    so a comparison ``y > t`` is decided identically in every pass. Finds thresholds
    ``lo < hi`` with ``C(lo) >= alpha > C(hi)``, :math:`C(t) = E_p[y > t]`, such that the
    certificate :math:`(hi - lo)(C(lo) - C(hi)) \le \tau\alpha R` holds (:math:`\tau =
    4\varepsilon`, ``R`` the range of ``y``) or no support value lies in ``(lo, hi)``
    other than ``hi``. The allocation :math:`a = p` above ``hi`` and :math:`\theta p` on
    ``(lo, hi]`` (:math:`\theta = (\alpha - C(hi))/(C(lo) - C(hi))`) has mass ``alpha``
    and :math:`a \le p`; its mean of ``y`` is within the certificate of the optimum (by
    convexity of :math:`\eta + E_p(y - \eta)_+/\alpha`), and exact in the second case
    (the value-at-risk is ``hi``; its ties share the remainder). Candidates: linear
    interpolation of ``C`` kept 1/64 of the bracket from its ends, a bisection in the
    order of the floats every third step (at most 32 or 64 of those reach adjacent
    floats), and, once the bracket holds at most 8 examples' mass, the largest support
    value ``<= hi`` and the smallest ``> lo`` (one pass each), which close it exactly.
    Every pass is one fused sum, ``C(t) = E_p [y > t]``. On a vector of at most
    :data:`MULTI_COUNT_ELEMENTS` / 3 examples a pass tests ``k`` = 15, 7 or 3 thresholds at
    once (:func:`_thresholds`; ``k n`` comparisons), evenly spaced in value or, every third
    step, in the order of the floats, and the bracket moves to the last with
    :math:`C \ge \alpha` and the first below: on 1,024 losses 3-5 passes instead of ~18, each
    a little dearer (a minibatch's CVaR went from 22 to 14 us on 2 CPU cores).

    On the loop-free path a vector of at most :data:`~robustlearn._src.reductions.engine.SORT_MAX`
    examples closes the bracket by one sort instead (:func:`_tail_by_sort`).

    Returns ``(lo, hi, C(lo), C(hi), S(lo), S(hi))`` with :math:`S(t) = E_p (y - t)_+`.
    """
    if d.sorts:
        return _tail_by_sort(d, sign, alpha)
    dtype = d.dtype
    tol = 4 * jnp.finfo(dtype).eps if tol is None else tol
    lo_y, hi_y = (d.m * d.scale, d.Ms) if sign > 0 else (-d.Ms, -d.m * d.scale)
    y = lambda salt: _signed(d, sign, salt)  # noqa: E731
    count = lambda t: _mass_above(d, sign, t)  # noqa: E731

    one = jnp.ones((), dtype)
    zero = jnp.zeros((), dtype)
    lo, c_lo = _below(lo_y), one
    hi, c_hi = hi_y, zero
    if lo0 is not None:
        c = count(lo0)
        good = (c >= alpha) & (lo0 > lo)  # the subsample bracket may miss: keep the full one
        lo, c_lo = jnp.where(good, lo0, lo), jnp.where(good, c, c_lo)
    if hi0 is not None:
        c = count(hi0)
        good = (c < alpha) & (hi0 < hi)
        hi, c_hi = jnp.where(good, hi0, hi), jnp.where(good, c, c_hi)
    unit = jnp.max(d.p) if d.weighted else d.p
    width = hi_y - lo_y

    def closed(lo, hi, c_lo, c_hi):
        return (_below(hi) <= lo) | ((hi - lo) * (c_lo - c_hi) <= tol * alpha * width)

    def snap(args):
        lo, hi = args
        (y1, s1), (y2, s2) = y(hi), y(lo)
        # The largest support y <= hi and the smallest > lo (the others are pushed past the ends).
        top = jnp.max(y1 - s1(2 * width + 1) * _gt(y1, s1(hi), s1))
        bottom = jnp.min(y2 + s2(2 * width + 1) * (s2(1.0) - _gt(y2, s2(lo), s2)))
        single = bottom >= top
        return jnp.where(single, jnp.maximum(_below(top), lo), lo), jnp.minimum(top, hi)

    def narrow_one(lo, hi, c_lo, c_hi, it):
        frac = (c_lo - alpha) / (c_lo - c_hi)
        margin = (hi - lo) * jnp.asarray(1 / 64, dtype)
        interp = jnp.clip(lo + (hi - lo) * jnp.clip(frac, 0, 1), lo + margin, hi - margin)
        mid = _key_mid(lo, hi, dtype)
        t = jnp.where(it % 3 == 2, mid, interp)
        t = jnp.where((t > lo) & (t < hi), t, mid)
        c = count(t)
        heavy = c >= alpha
        lo, c_lo = jnp.where(heavy, t, lo), jnp.where(heavy, c, c_lo)
        hi, c_hi = jnp.where(heavy, hi, t), jnp.where(heavy, c_hi, c)
        return lo, hi, c_lo, c_hi

    k = _thresholds(d.n)

    def narrow_many(lo, hi, c_lo, c_hi, it):
        # k points evenly spaced in value (every third step: in the order of the floats,
        # which bounds the steps by about log_{k+1} of the floats between the ends); the
        # bracket moves to the last point with C >= alpha and the first with C < alpha.
        steps = jnp.arange(1, k + 1, dtype=dtype) / (k + 1)
        by_key = _key_grid(lo, hi, dtype, k)
        ts = jnp.where(it % 3 == 2, by_key, lo + (hi - lo) * steps)
        ts = jnp.where((ts > lo) & (ts < hi), ts, by_key)
        cs = _masses_above(d, sign, ts)
        # C is non-increasing in t, also as computed: the rows of one pass sum nested sets
        # of non-negative terms in the same order. So the last t with C >= alpha has the
        # smallest such C, and the first below it the largest.
        heavy = cs >= alpha
        lo, c_lo = jnp.max(jnp.where(heavy, ts, lo)), jnp.min(jnp.where(heavy, cs, c_lo))
        hi, c_hi = jnp.min(jnp.where(heavy, hi, ts)), jnp.max(jnp.where(heavy, c_hi, cs))
        return lo, hi, c_lo, c_hi

    narrow = narrow_many if k > 1 else narrow_one

    def body(state):
        lo, hi, c_lo, c_hi, it, _ = state
        lo, hi, c_lo, c_hi = narrow(lo, hi, c_lo, c_hi, it)
        few = (c_lo - c_hi <= 8 * unit) & ~closed(lo, hi, c_lo, c_hi)
        lo, hi = _branch(d, few, snap, lambda a: a, (lo, hi))
        return lo, hi, c_lo, c_hi, it + 1, closed(lo, hi, c_lo, c_hi)

    max_iter = 16 * dtype.itemsize * 8
    state = (lo, hi, c_lo, c_hi, jnp.zeros((), jnp.int32), closed(lo, hi, c_lo, c_hi) | ~d.ok)

    def cond(state):
        return (~state[5]) & (state[4] < max_iter)

    def keep_if_done(state):
        new = body(state)
        return jax.tree.map(lambda a, b: jnp.where(state[5], a, b), state, new)

    if d.unroll:
        for _ in range(d.unroll):
            state = keep_if_done(state)
        if d.fallback:
            state = jax.lax.cond(state[5], lambda s: s, lambda s: jax.lax.while_loop(cond, body, s), state)
    else:
        state = jax.lax.while_loop(cond, body, state)
    lo, hi, c_lo, c_hi, _, _ = state
    return lo, hi, c_lo, c_hi, _excess(d, sign, lo), _excess(d, sign, hi)


def _tail_by_sort(d, sign, alpha):
    r""":func:`_tail` by one sort: exact, with the bracket closed on the value-at-risk.

    With :math:`y_{(1)} \ge y_{(2)} \ge \dots` and :math:`P_k = \sum_{j \le k} p_{(j)}`,
    the value-at-risk is :math:`y_{(k)}` for the first :math:`k` with :math:`P_k \ge
    \alpha`: ``hi`` is that value and ``lo`` the float below it, so no support value lies
    in ``(lo, hi)``. The masses ``C`` and sums ``S`` come from the same passes as on the
    counting path (rounded as there); where their rounding disagrees with the sorted
    cumulative sum, they are clipped to the bracket's invariant ``C(lo) >= alpha >= C(hi)``.
    On an accelerator a sort of a minibatch is one kernel, against a dozen passes (each a
    kernel launch) for the counting search.
    """
    n = d.n
    y = sign * d.losses * d.scale
    if d.weighted:
        neg, p = jax.lax.sort((-y, d.p), num_keys=1)
        mass = jnp.cumsum(p)
    else:
        neg = jnp.sort(-y)
        mass = jnp.arange(1, n + 1, dtype=d.dtype) * d.p
    k = jnp.minimum(jnp.sum(mass < alpha), n - 1)  # the first index holding mass >= alpha
    hi = _normal(-neg[k])  # a subnormal compares as 0 on a CPU that flushes them
    lo = _below(hi)
    c_lo = jnp.maximum(_mass_above(d, sign, lo), alpha)
    c_hi = jnp.minimum(_mass_above(d, sign, hi), alpha)
    return lo, hi, c_lo, c_hi, _excess(d, sign, lo), _excess(d, sign, hi)


def _tail_start(d, sign, alpha):
    """A bracket ``(lo, hi)`` of the value-at-risk from a strided subsample, or ``(None, None)``.

    The tails of mass ``alpha +- 4 sd + 2/m`` of the largest subsample (``m`` examples,
    ``sd`` the binomial standard deviation of a mass estimate), each by :func:`_tail` on
    the subsample; the full-data passes check that they bracket.
    """
    subs = _levels(d)
    if not subs or d.sorts:
        return None, None
    sub = subs[-1]
    m = sub.n
    spread = 4 * jnp.sqrt(alpha * (1 - alpha) / m) + 2 / m
    wide = jnp.minimum(alpha + spread, 1)
    narrow = jnp.maximum(alpha - spread, jnp.asarray(0.5 / m, alpha.dtype))
    loose = jnp.asarray(1 / m, alpha.dtype)
    lo = _tail(sub, sign, wide, tol=loose)[0]
    hi = _tail(sub, sign, narrow, tol=loose)[1]
    return lo, hi


def _tail_value(alpha, lo, hi, c_lo, c_hi, s_lo, s_hi):
    """The mean of ``y`` under the allocation of :func:`_tail` divided by ``alpha`` (CVaR of ``y``)."""
    den = c_lo - c_hi
    theta = jnp.where(den > 0, (alpha - c_hi) / jnp.where(den > 0, den, 1), 0)
    return hi + (s_hi + theta * (s_lo - s_hi - (hi - lo) * c_lo)) / alpha, theta


def _tail_fraction(y, lo, hi, theta):
    """The allocation of :func:`_tail` as a fraction of ``p`` (in ``[0, 1]``)."""
    upper = _gt(y, hi)
    return upper + theta * (_gt(y, lo) - upper)


class CvarKernel:
    r"""CVaR: the largest losses get :math:`p/\alpha` until the mass is spent.

    The value-at-risk is bracketed by a strided subsample, then narrowed by counting
    passes (:func:`_tail`); the value is :math:`\sum_i q_i \ell_i` for the returned
    allocation (within :math:`4\varepsilon (M - m)` of the optimum by the certificate,
    and exact when the bracket closes on a support value).
    """

    needs_stats = True

    def prepare(self, alpha):
        return (alpha,)

    @staticmethod
    def _alpha(alpha, dtype):
        return jnp.clip(alpha, jnp.finfo(dtype).tiny, 1)

    def solve(self, d, alpha):
        alpha = self._alpha(alpha, d.dtype)
        lo0, hi0 = _tail_start(d, 1, alpha)
        lo, hi, c_lo, c_hi, s_lo, s_hi = _tail(d, 1, alpha, lo0, hi0)
        cvar_y, theta = _tail_value(alpha, lo, hi, c_lo, c_hi, s_lo, s_hi)
        return d.value((cvar_y - d.Ms) / d.R), (lo, hi, theta)

    def weights(self, d, aux, alpha):
        lo, hi, theta = aux
        return d.p * _tail_fraction(d.losses * d.scale, lo, hi, theta) / self._alpha(alpha, d.dtype)


class TvKernel:
    r"""TV ball: the mass :math:`\rho` of the smallest losses moves to the largest.

    The removed mass is the :math:`\rho`-tail of :math:`y = -\ell` (:func:`_tail`), and
    :math:`V = \mu + \rho\,(M + \mathrm{CVaR}_\rho(-\ell))`; the maximizers share
    :math:`\rho` in proportion to :math:`p`.
    """

    needs_stats = True

    def prepare(self, radius):
        return (radius,)

    def solve(self, d, radius):
        dtype = d.dtype
        rho = jnp.clip(radius, 0, 1)
        alpha = jnp.maximum(rho, jnp.finfo(dtype).tiny)
        mu = d.E(d.z())
        lo0, hi0 = _tail_start(d, -1, alpha)
        lo, hi, c_lo, c_hi, s_lo, s_hi = _tail(d, -1, alpha, lo0, hi0)
        cvar_y, theta = _tail_value(alpha, lo, hi, c_lo, c_hi, s_lo, s_hi)
        vz = mu + rho * (d.Ms + cvar_y) / d.R
        zero = _engine.fresh_zero(lo)
        top = d.E(_gt(d.losses * (d.scale + zero), _below(d.Ms) + zero))  # mass at the maximum
        return d.value(vz), (lo, hi, theta, top)

    def weights(self, d, aux, radius):
        lo, hi, theta, top = aux
        dtype = d.dtype
        rho = jnp.clip(radius, 0, 1)
        alpha = jnp.maximum(rho, jnp.finfo(dtype).tiny)
        y = d.losses * d.scale
        removed = d.p * _tail_fraction(-y, lo, hi, theta) * (rho / alpha)  # rho / alpha: 1, or 0 at rho = 0
        at_max = _gt(y, _below(d.Ms))
        return d.p - removed + rho * d.p * at_max / top


erm_kernel = ErmKernel()
cvar_kernel = CvarKernel()
tv_kernel = TvKernel()
chi_square_kernel = ChiSquareKernel()
kl_kernel = KlKernel()
cressie_read_kernel = CressieReadKernel()
chi_square_penalty_kernel = ChiSquarePenaltyKernel()
kl_penalty_kernel = KlPenaltyKernel()

__all__ = [
    "chi_square_kernel",
    "chi_square_penalty_kernel",
    "cressie_read_kernel",
    "cvar_kernel",
    "erm_kernel",
    "increasing_root",
    "kl_kernel",
    "kl_penalty_kernel",
    "ordered_keys",
    "tv_kernel",
]
