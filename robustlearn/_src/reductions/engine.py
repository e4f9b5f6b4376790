"""The machinery behind every reduction: nominal distribution, statistics, exact gradients,
batching, hyperparameter casting and the final NaN policy.

A reduction is a *kernel* acting on one 1-D loss vector. The engine hands it a
:class:`Data`: the losses, the nominal distribution ``p``, and the statistics every kernel
needs (support maximum ``M`` and minimum ``m``, computed in one fused pass). Kernels work
on the standardized losses ``z = (l - M) / (M - m)`` (in ``[-1, 0]`` on the support, the
maximum exactly 0), formed inside each fused reduction, never stored: every pass over the
data is one reduction that XLA fuses with its elementwise work. A kernel returns the value
(from the sums of its last pass, no extra pass) and, only when a gradient or the weights
are asked for, the worst-case weights ``q``; a kernel with ``solve_with_weights`` returns
both from shared elementwise work (the KL penalty: one exponential per example, as
``jax.nn.logsumexp`` and its gradient).

Float32 is what users run, so the engine takes care of what float32 cannot hold:

* Nominal weights are divided by their maximum before anything is summed (concrete weights
  in float64, before the cast; traced ones in the kernel), so weights of 1e38 or 1e-50
  (exact in float64) neither overflow nor flush to zero.
* Hyperparameters validated in float64 are cast with limits: a nonzero value below the
  smallest normal number becomes that number, a value above the largest finite number
  becomes that number (never 0 or inf, which would turn a valid input into NaN).
* Losses beyond 2^100 in size (+-3e38: their range overflows, and the reciprocal of the
  range is below the smallest normal number) are scaled by a power of 2 inside every
  pass (exact), and the value back.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from robustlearn._src import checks as _checks

# Legacy kernel signature, still accepted: kernel(ls, p, scale, *hyper) -> (q, penalty).
Kernel = Callable[..., tuple[jax.Array, jax.Array]]

# Strided subsample sizes (smallest first) that start a full-data solve close to the
# answer; a level is used when the vector has at least 8 times as many examples.
SUBSAMPLE_LEVELS = (4096, 65536)
SUBSAMPLE = SUBSAMPLE_LEVELS[0]

# Steps unrolled by the loop-free path before its single fallback ``lax.cond``.
UNROLLED_STEPS = 6

# On the loop-free path, CVaR and TV find the value-at-risk, and the chi-square ball and
# penalty their active set, of a vector of at most this many examples by one sort (one kernel
# on an accelerator) instead of counting passes or Newton steps.
SORT_MAX = 65536

# A vector of at most this many examples (256 KB in float32, in cache) may share the
# elementwise terms of one evaluation between its sums: XLA stores them once instead of
# computing the transcendentals again in every pass. A longer one must not store them.
SHARE_MAX = 65536

# An eager (not traced) call of a reduction's value on at most this many losses runs the
# program of the value and the weights (see :func:`run`).
EAGER_SHARED_MAX = 65536

# Settings forced by the context managers below (None: automatic); part of the compile key.
_FORCED: dict = {"loop_free": None, "levels": None, "sort_max": None, "share_max": None}
_SALTS = itertools.count(1)


class Path(NamedTuple):
    """How a reduction is solved; static (part of the compilation cache key).

    Attributes:
        unroll: steps of the loop-free path (0: loops).
        levels: strided subsample sizes that start a full-data solve.
        sort_max: on the loop-free path, the longest vector whose tail (CVaR, TV) or active set
            (chi-square) is found by a sort.
        share_max: the longest vector whose passes of one evaluation share their terms.
    """

    unroll: int
    levels: tuple[int, ...]
    sort_max: int
    share_max: int


@contextlib.contextmanager
def _forcing(name: str, value):
    old = _FORCED[name]
    _FORCED[name] = value
    try:
        yield
    finally:
        _FORCED[name] = old


def loop_free() -> bool:
    """Whether the reductions use their loop-free path (default: on any non-CPU backend).

    On an accelerator every iteration of a data-dependent ``while_loop`` costs a round
    trip to the host; the loop-free path runs a fixed number of steps from a tight
    starting point and falls back to the loop (behind one ``lax.cond``) only if they did
    not converge.
    """
    if _FORCED["loop_free"] is not None:
        return _FORCED["loop_free"]
    return jax.default_backend() != "cpu"


def _path() -> Path:
    """The path of a call now: the forced settings, else the defaults of the backend."""
    free = loop_free()
    levels = _FORCED["levels"]
    if levels is None:
        levels = () if free else SUBSAMPLE_LEVELS
    sort_max = SORT_MAX if _FORCED["sort_max"] is None else _FORCED["sort_max"]
    share_max = SHARE_MAX if _FORCED["share_max"] is None else _FORCED["share_max"]
    return Path(UNROLLED_STEPS if free else 0, levels, sort_max, share_max)


def levels_forced() -> bool:
    """Whether :func:`subsample_levels` is in force."""
    return _FORCED["levels"] is not None


def subsample_levels(levels: tuple[int, ...]):
    """Context manager setting the subsample levels (tests use tiny levels to reach the
    subsample-started paths with small vectors, on either path). Part of the compilation
    cache key. Without it: :data:`SUBSAMPLE_LEVELS` on the loop path, none on the
    loop-free path (on an accelerator a pass costs a kernel launch whatever its length, so
    subsamples save nothing; the full vector is solved from the analytic start)."""
    return _forcing("levels", tuple(levels))


def sort_limit(n: int):
    """Context manager setting :data:`SORT_MAX` (0: no reduction sorts; CVaR and TV count, chi-square iterates).

    Tests and benchmarks use it to reach both variants of the loop-free path; part of the
    compilation cache key like :func:`force_loop_free`.
    """
    return _forcing("sort_max", int(n))


def share_limit(n: int):
    """Context manager setting :data:`SHARE_MAX` (0: every pass computes its own terms).

    Tests use it to reach the long-vector variant of a solve with short vectors; part of
    the compilation cache key.
    """
    return _forcing("share_max", int(n))


def force_loop_free(flag: bool | None):
    """Context manager forcing the loop-free path on (True) or off (False); None: automatic.

    Functions already compiled keep their path: the choice is part of the compilation
    cache key of the public functions, so calls inside the context compile their own
    variant.
    """
    return _forcing("loop_free", flag)


def fresh_zero(v):
    """A zero that makes a pass distinct (:meth:`Data.fresh`): ``(v - v) * k``, ``k`` a new integer.

    Floats do not simplify ``v - v`` (NaN), so XLA neither shares nor hoists what it salts.
    """
    return (v - v) * (next(_SALTS) % 2**20 + 1)


class Data:
    """One 1-D reduction problem as the kernels see it.

    Attributes:
        l: the losses (compute dtype); off the support replaced by ``M`` when weighted.
        p: ``1/n`` (a scalar, no weights) or the nominal probabilities (0 off the support).
        weighted: whether ``p`` is an array.
        n: the static length.
        M, m: support maximum and minimum (0 when the problem is not well posed).
        scale: 1, or the power of 2 that brings ``max(|M|, |m|)`` below 2^100 (or, when it
            is below 2^-100, up to ``[1/2, 1)``); every pass uses ``scale * l``.
        R: ``scale * (M - m)``, or 1 when every loss is equal.
        ok: finite losses on a non-empty support.
        unroll: steps of the loop-free path (0: loops).
        sort_max: on the loop-free path, the longest vector whose tail is found by a sort.
        share_max: the longest vector whose passes of one evaluation share their terms.
    """

    def __init__(self, losses, p, weighted, n, M, m, scale, R, ok, unroll, levels=(), sort_max=0, share_max=SHARE_MAX):
        self.losses, self.p, self.weighted, self.n = losses, p, weighted, n
        self.M, self.m, self.scale, self.R, self.ok, self.unroll = M, m, scale, R, ok, unroll
        self.levels = levels
        self.sort_max = sort_max
        self.share_max = share_max
        self.fallback = True  # False on subsamples: a loop-free start needs no loop behind it
        self.Ms = M * scale

    @property
    def dtype(self):
        return self.losses.dtype

    @property
    def shape(self):
        return self.losses.shape

    @property
    def sorts(self) -> bool:
        """Whether tails (CVaR, TV) and active sets (chi-square) are found by a sort: the loop-free
        path on a short vector."""
        return bool(self.unroll) and self.n <= self.sort_max

    @property
    def shares(self) -> bool:
        """Whether the passes of one evaluation may share their elementwise terms (a short vector)."""
        return self.n <= self.share_max

    @property
    def eps(self):
        return jnp.finfo(self.dtype).eps

    def z(self, salt=None):
        """Standardized losses ``(l - M) / (M - m)`` in ``[-1, 0]`` as a fresh expression.

        XLA stores (in an ``n``-sized temporary, a page-faulting allocation at 10^7) any
        elementwise subexpression that two reductions share, and hoists loop-invariant
        ones out of loops. So every pass builds its own ``z``, made distinct by a "salt":
        ``(v - v) * k``, zero, with ``v`` a scalar of the caller (inside a loop: one that
        changes every iteration) and ``k`` a fresh integer, added to the scale factor.
        Floats do not simplify ``v - v`` (NaN), so nothing is shared or hoisted.
        """
        return self.fresh(salt)[0]

    def fresh(self, salt=None):
        """``(z, s)``: a fresh ``z`` and the function that salts any other scalar of the same pass.

        XLA also shares (and stores) the broadcast of a scalar used by two passes, so every
        scalar that enters a pass's elementwise work goes through ``s``.
        """
        zero = fresh_zero(self.R if salt is None else salt)
        z = (self.losses * (self.scale + zero) - (self.Ms + zero)) / (self.R + zero)
        return z, lambda x: x + zero

    def E(self, f, axis=None):
        """``sum_i p_i f_i``: one fused pass (``axis=-1``: one per row of a ``(k, n)`` ``f``)."""
        if self.weighted:
            # Broadcast explicitly: under jax_numpy_rank_promotion="raise" (n,) * (k, n) raises.
            p = self.p if jnp.ndim(f) <= 1 else jnp.broadcast_to(self.p, jnp.shape(f))
            return jnp.sum(p * f, axis=axis)
        return jnp.sum(f, axis=axis) * self.p

    def value(self, vz):
        """The value in the losses' units from a standardized value ``vz`` in ``[-1, 0]``."""
        return (self.Ms + self.R * vz) / self.scale

    def subsample(self, size: int = SUBSAMPLE) -> Data | None:
        """A strided subsample of about ``size`` examples (None if the vector is not larger).

        Its first example is replaced by the support maximum ``M`` (with at least the
        subsample's mean weight): the standardization is the full vector's, and without
        an example at ``z = 0`` a subsample's sums can all vanish (Cressie--Read with a
        large ``t`` clips every ``1 + z t`` of a subsample whose own maximum is below
        ``M``: ``N = 0`` and a NaN dual, after which its root finder ran to its 100-step
        limit and handed the full solve a useless start).
        """
        if self.n <= size:
            return None
        stride = self.n // size
        count = size
        idx = slice(0, stride * count, stride)
        losses = self.losses[idx].at[0].set(self.M)
        if self.weighted:
            p = self.p[idx]
            p = p.at[0].set(jnp.maximum(p[0], jnp.mean(p)))
            mass = jnp.sum(p)
            p = jnp.where(mass > 0, p / jnp.where(mass > 0, mass, 1), 1.0 / count)
        else:
            p = jnp.asarray(1.0 / count, self.dtype)
        args = (self.M, self.m, self.scale, self.R, self.ok, self.unroll, self.levels, self.sort_max, self.share_max)
        sub = Data(losses, p, self.weighted, count, *args)
        sub.fallback = False
        return sub


def _max_min(x, y=None):
    """Maximum of ``x`` and minimum of ``y`` (default ``x``) in one fused pass (NaN propagates)."""
    y = x if y is None else y
    return jax.lax.reduce(
        (x, y),
        (jnp.asarray(-jnp.inf, x.dtype), jnp.asarray(jnp.inf, y.dtype)),
        lambda a, b: (jax.lax.max(a[0], b[0]), jax.lax.min(a[1], b[1])),
        (0,),
    )


def _data(losses, w, unroll, levels=(), sort_max=0, share_max=SHARE_MAX):
    """The :class:`Data` of one 1-D problem and the flags ``(finite, empty)``."""
    n = losses.shape[0]
    dtype = losses.dtype
    if w is None:
        M, m = _max_min(losses)
        p = jnp.asarray(1.0 / n, dtype)
        empty = jnp.asarray(False)
    else:
        support = w > 0
        w_max = jnp.max(w)
        if n <= share_max:
            # A short vector: the support's extremes in one pass, as without weights (two
            # reductions were two fusions of their own). Not with the weights' maximum: JAX
            # cannot differentiate a variadic reduce some of whose operands have tangents
            # and some none (the weights).
            M, m = _max_min(jnp.where(support, losses, -jnp.inf), jnp.where(support, losses, jnp.inf))
        else:
            M = jnp.max(jnp.where(support, losses, -jnp.inf))
            m = jnp.min(jnp.where(support, losses, jnp.inf))
        empty = w_max <= 0
        pw = w / jnp.where(empty, 1, w_max)  # in [0, 1]: the sum cannot overflow
        mass = jnp.sum(pw)
        p = pw / jnp.where(empty, 1, mass)
        # A weight near the smallest normal number gives a subnormal probability, which the
        # CPU flushes to 0: kept at the smallest normal, so p > 0 exactly on the support
        # (the sum moves by at most n times that, far below the rounding of 1).
        p = jnp.where(support, jnp.maximum(p, jnp.finfo(dtype).tiny), 0)
        losses = jnp.where(support, losses, jnp.where(jnp.isfinite(M), M, 0))
        # XLA:CPU's vectorized max and min (from ~10^4 elements, jax 0.10) can skip a NaN,
        # and CVaR's counting passes would then drop that example silently: a sum of
        # `l - l` (NaN for a non-finite supported loss, else 0) flags it.
        M = jnp.where(jnp.isfinite(jnp.sum(losses - losses)), M, jnp.nan)
    finite = (jnp.isfinite(M) & jnp.isfinite(m)) | empty
    ok = finite & ~empty
    M = jnp.where(ok, M, 0)
    m = jnp.where(ok, m, 0)
    # Losses beyond 2^100 in size are scaled by a power of 2 that brings them below it:
    # exact, and it keeps M - m finite and 1/(M - m) normal (XLA divides by multiplying by
    # the reciprocal, which the CPU flushes to 0 below the smallest normal number).
    big = jnp.maximum(jnp.abs(M), jnp.abs(m))
    _, exponent = jnp.frexp(big)
    limit = 100
    # Losses all below 2^-100 in size are scaled up by a power of 2 to [1/2, 1): the difference
    # of two such floats may be subnormal (flushed to 0 on CPU), which would hide an order.
    one = jnp.ones((), dtype)
    up = (big < 2.0**-limit) & (big > 0)
    scale = jnp.where(big > 2.0**limit, jnp.ldexp(one, limit - exponent), jnp.where(up, jnp.ldexp(one, -exponent), 1))
    scale = scale.astype(dtype)
    R = M * scale - m * scale
    R = jnp.where(R > 0, R, 1)
    return Data(losses, p, w is not None, n, M, m, scale, R, ok, unroll, levels, sort_max, share_max), finite, empty


class LegacyKernel:
    """Adapts a kernel ``kernel(ls, p, scale, *hyper) -> (q, penalty)`` (docs/extending.md)."""

    needs_stats = True

    def __init__(self, fn):
        self.fn = fn

    def prepare(self, *hyper):
        return hyper

    def _q(self, d: Data, *hyper):
        p = jnp.broadcast_to(d.p, d.shape)
        q, penalty = self.fn(d.z(), p, d.R / d.scale, *hyper)
        return q, penalty

    def solve(self, d: Data, *hyper):
        q, penalty = self._q(d, *hyper)
        vz = jnp.sum(q * d.z()) - penalty
        return d.value(vz), None

    def weights(self, d: Data, aux, *hyper):
        return self._q(d, *hyper)[0]


def as_kernel(kernel):
    """A kernel object (``solve``/``weights``) from a kernel object or a legacy function."""
    return kernel if hasattr(kernel, "solve") else LegacyKernel(kernel)


def _solve(kernel, path: Path, want_weights: bool, losses, w, *hyper):
    """Value (and weights) for one 1-D loss vector (compute dtype)."""
    hyper = kernel.prepare(*hyper)
    if w is None and hasattr(kernel, "solve_plain"):
        # Without weights some kernels need fewer passes than the statistics take (ERM: one;
        # the KL penalty: the maximum and one sum, as logsumexp); they may hand a problem
        # back to the general path (`solve_standard`).
        value, q, finite = kernel.solve_plain(path, want_weights, losses, *hyper)
        value = jnp.where(finite, value, jnp.nan)
        if not want_weights:
            return value, None
        return value, jnp.where(finite, q, jnp.nan)
    return solve_standard(kernel, path, want_weights, losses, w, *hyper)


def solve_standard(kernel, path: Path, want_weights: bool, losses, w, *hyper):
    """:func:`_solve` through :class:`Data` (the statistics, then the kernel), hyperparameters prepared."""
    d, finite, empty = _data(losses, w, *path)
    if want_weights and hasattr(kernel, "solve_with_weights"):
        # Kernels whose value and weights share elementwise work (the KL penalty's exponentials).
        value, q = kernel.solve_with_weights(d, *hyper)
    else:
        (value, aux), q = kernel.solve(d, *hyper), None
    # Every reduction lies between the smallest and largest loss; the clip only
    # removes rounding (all-equal losses then return that loss exactly).
    value = jnp.clip(value, d.m, d.M)
    value = jnp.where(empty, 0, jnp.where(finite, value, jnp.nan))
    if not want_weights:
        return value, None
    if q is None:
        q = kernel.weights(d, aux, *hyper)
    q = q.astype(losses.dtype)  # (a float64 hyperparameter must not promote q)
    q = jnp.broadcast_to(q, losses.shape)
    q = jnp.where(empty, 0, jnp.where(finite, q, jnp.nan))
    return value, q


def _cast(h, dtype):
    """Casts a hyperparameter to ``dtype`` with limits: nonzero magnitudes are kept in
    ``[tiny, max]`` of ``dtype`` instead of flushing to 0 or overflowing to inf."""
    h = jnp.asarray(h)
    if not jnp.issubdtype(h.dtype, jnp.floating):
        return h.astype(dtype)
    fi = jnp.finfo(dtype)
    if jnp.finfo(h.dtype).bits > fi.bits:
        mag = jnp.abs(h)
        limited = jnp.sign(h) * jnp.clip(mag, jnp.asarray(fi.tiny, h.dtype), jnp.asarray(fi.max, h.dtype))
        h = jnp.where((mag == 0) | jnp.isnan(h), h, limited)
    return h.astype(dtype)


@functools.cache
def _compiled(
    kernel,
    n_hyper: int,
    want_weights: bool,
    axes: tuple[int, ...],
    ndim: int,
    weighted: bool,
    path: Path,
):
    """The jitted reduction (or its weights) over ``axes``, batched over the other axes.

    The value's derivative rule sits outside the jitted programs: differentiated, the value
    is one call of the program that solves once for the value and the weights, and nothing
    traces the value-only program or differentiates through a solve (the rule inside the
    program made every differentiated call trace the solve twice and linearize it).
    """
    both = _batched(kernel, n_hyper, True, axes, ndim, weighted, path)
    if want_weights:
        # The program the value's derivative runs (its value is a scalar more).
        return lambda *args: jax.lax.stop_gradient(both(*args)[1])
    value = _batched(kernel, n_hyper, False, axes, ndim, weighted, path)

    @jax.custom_jvp
    def reduction(losses, weights, ok, *hyper):
        return value(losses, weights, ok, *hyper)

    @reduction.defjvp
    def reduction_jvp(primals, tangents):
        # Danskin: d value = sum_i q_i d l_i; the nominal weights and the hyperparameters are
        # constants for differentiation.
        v, q = both(*primals)
        dv = jnp.sum(_first_order_only(q) * tangents[0], axis=axes).astype(v.dtype)
        return v, jnp.where(primals[2], dv, 0)

    return reduction


@jax.custom_jvp
def _first_order_only(q):
    """``q``, with an error instead of a derivative: differentiated through its solve, the
    weights gave a Hessian of 0 (KL, chi-square) or NaN (CVaR), which is wrong."""
    return q


@_first_order_only.defjvp
def _first_order_only_jvp(primals, tangents):
    del primals, tangents
    raise NotImplementedError(
        "robustlearn's reductions have first derivatives only: the derivative of the value with "
        "respect to the losses is the worst-case weights (Danskin's theorem), and the weights' "
        "own derivative is not implemented, so second derivatives (jax.hessian, a jvp of a grad) "
        "of a reduction are not available."
    )


@functools.cache
def _batched(kernel, n_hyper: int, want_weights: bool, axes, ndim: int, weighted: bool, path: Path):
    """The jitted solve over ``axes``, batched over the other axes: the value, or the value
    and the weights (shaped like the losses). Shared by the weights and the value's
    derivative, so a shape traced for one is traced for both."""
    k = as_kernel(kernel)
    fn = lambda *args: _solve(k, path, want_weights, *args)[: 1 + want_weights]  # noqa: E731
    core_out = "->(),(n)" if want_weights else "->()"
    w_core = "(n)" if weighted else "()"
    signature = "(n)," + w_core + ",()" * n_hyper + core_out
    if weighted:
        vectorized = jnp.vectorize(fn, signature=signature)
    else:
        core_signature = "(n)" + ",()" * n_hyper + core_out
        core = jnp.vectorize(lambda losses, *hyper: fn(losses, None, *hyper), signature=core_signature)
        vectorized = lambda losses, w, *hyper: core(losses, *hyper)  # noqa: E731
    last = tuple(range(ndim - len(axes), ndim))

    def to_vectors(a):
        # The reduced axes go last, in order, and are flattened into one example axis.
        moved = jnp.moveaxis(a, axes, last)
        return moved.reshape(moved.shape[: ndim - len(axes)] + (-1,)), moved.shape

    def run(losses, weights, ok, *hyper):
        compute = jnp.promote_types(losses.dtype, jnp.float32)
        # Hyperparameters and nominal weights are constants for differentiation: the
        # gradient flows to the losses only (Danskin).
        w = None
        if weighted:
            w, _ = to_vectors(jax.lax.stop_gradient(weights.astype(compute)))
        hyper = tuple(jax.lax.stop_gradient(_cast(h, compute)) for h in hyper)
        flat, moved_shape = to_vectors(losses.astype(compute))
        value, *q = vectorized(flat, w, *hyper)
        value = jnp.where(ok, value, jnp.nan).astype(losses.dtype)
        if not want_weights:
            return value
        q = jnp.moveaxis(q[0].reshape(moved_shape), last, axes)
        return value, jnp.where(ok, q, jnp.nan).astype(losses.dtype)

    return jax.jit(run)


def run(kernel: Kernel, losses, hyper, *, weights, where, axis, want_weights: bool = False):
    """Validates the arguments and runs ``kernel`` as a reduction over ``axis``.

    ``hyper`` is a tuple of ``(value, ok)`` pairs from :func:`_checks.scalar`; ``axis``
    an int, a tuple of ints or None (all axes). Returns the value (``losses.shape``
    without the reduced axes) or, with ``want_weights``, the worst-case weights shaped
    like ``losses``; both in the dtype of ``losses``.
    """
    losses = _checks.as_float_losses(losses)
    axes = _checks.normalize_axes(axis, losses.ndim)
    if math.prod(losses.shape[a] for a in axes) == 0:
        raise ValueError(
            f"`losses` has no examples to reduce: shape {losses.shape}, reduced axes {axes}. "
            "(All-masked or all-zero-weight inputs of positive size give 0.)"
        )
    ok = jnp.asarray(True)
    if weights is not None:
        weights, ok = _checks.max_normalized_weights(weights, losses.shape, axes)
    if where is not None:
        # Masked examples leave the nominal distribution: fold the mask into the weights,
        # a mask alone as weights of the dtype concrete weights have, so that a mask,
        # weights or both compile one program (not one per combination or dtype).
        where = _checks.mask(where, losses.shape)
        if weights is None:
            weights = jnp.where(where, 1, 0).astype(jnp.result_type(float))
        else:
            weights = jnp.where(where, weights, 0)
    for _, h_ok in hyper:
        ok = ok & h_ok
    values = tuple(v for v, _ in hyper)
    weighted, path = weights is not None, _path()
    if not want_weights and losses.size <= EAGER_SHARED_MAX and not _traced(losses, weights, ok, *values):
        # Eagerly, a minibatch's value comes from the program that also gives the weights
        # (and the gradient): a value, its weights and its gradient at one shape compile one
        # program, not two, for the cost of a weights pass over at most 65,536 losses.
        both = _batched(kernel, len(hyper), True, axes, losses.ndim, weighted, path)
        return both(losses, weights, ok, *values)[0]
    fn = _compiled(kernel, len(hyper), want_weights, axes, losses.ndim, weighted, path)
    return fn(losses, weights, ok, *values)


def _traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


__all__ = [
    "EAGER_SHARED_MAX",
    "SUBSAMPLE",
    "SHARE_MAX",
    "SORT_MAX",
    "SUBSAMPLE_LEVELS",
    "Data",
    "Kernel",
    "Path",
    "as_kernel",
    "force_loop_free",
    "fresh_zero",
    "loop_free",
    "run",
    "share_limit",
    "sort_limit",
    "subsample_levels",
]
