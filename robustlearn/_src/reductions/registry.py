r"""The one list of reductions.

A :class:`Reduction` record holds what every layer needs to know about a reduction: its
name, its exact solver (kernel), its hyperparameters with their allowed ranges, and
whether its value is smooth in the losses. The public functions
(``robustlearn.cvar``), the Objective factories (``robustlearn.objectives.cvar``), the
estimators' choices, ``fit_linear``'s dispatch (smooth: L-BFGS on the value; not smooth:
a smoothed reformulation with continuation), the reference-test tables and the benchmark
tables all read :data:`REDUCTIONS`. Adding a reduction is a kernel, a record here, the
two public functions, its reference test and its docs section (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from robustlearn._src import checks as _checks
from robustlearn._src.reductions import engine as _engine
from robustlearn._src.reductions import kernels as _kernels


@dataclasses.dataclass(frozen=True)
class Hyper:
    """A scalar hyperparameter and its allowed interval.

    Attributes:
        name: the keyword, e.g. ``"alpha"``.
        low, high: the interval's ends.
        low_open, high_open: whether each end is excluded.
        doc: one line for the docs.
    """

    name: str
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    doc: str = ""

    @property
    def interval(self) -> str:
        """The allowed range in interval notation, e.g. ``(0, 1]``."""
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def check(self, value) -> tuple[jax.Array, jax.Array]:
        """Validates ``value``: raises for concrete values outside the interval, else returns ``(value, ok)``."""
        return _checks.scalar(
            self.name, value, low=self.low, high=self.high, low_open=self.low_open, high_open=self.high_open
        )

    def contains(self, value: float) -> bool:
        """Whether a concrete ``value`` lies in the interval."""
        lo_ok = value > self.low if self.low_open else value >= self.low
        hi_ok = value < self.high if self.high_open else value <= self.high
        return bool(lo_ok and hi_ok)


@dataclasses.dataclass(frozen=True)
class Reduction:
    """One reduction: its name, exact kernel, hyperparameters and smoothness.

    Attributes:
        name: the public name (``robustlearn.<name>``, ``robustlearn.<name>_weights``,
            ``robustlearn.objectives.<name>``).
        kernel: ``kernel(ls, p, scale, *hyper) -> (q, penalty)`` on standardized losses
            (see :mod:`robustlearn._src.reductions.kernels`).
        hyper: the hyperparameters, in positional order.
        smooth: whether the value is differentiable in the losses wherever they are not
            all equal; ``fit_linear`` minimizes smooth reductions directly by L-BFGS.
        summary: one line for tables and docs.
        smoothed: for non-smooth reductions, ``smoothed(losses, p, aux, tau, *hyper)``: a
            smooth function of the losses and of auxiliary variables ``aux`` whose minimum
            over ``aux`` is within ``O(tau)`` of the value (``fit_linear``'s continuation).
        aux_init: ``aux_init(dtype)``, the starting auxiliary variables of ``smoothed``.
    """

    name: str
    kernel: _engine.Kernel
    hyper: tuple[Hyper, ...]
    smooth: bool
    summary: str
    smoothed: Callable[..., jax.Array] | None = None
    aux_init: Callable[[Any], Any] | None = None

    @property
    def hyper_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hyper)

    def bind(self, args: tuple, kwargs: dict) -> tuple:
        """The hyperparameter values in positional order, from positional or keyword arguments."""
        names = self.hyper_names
        if len(args) > len(names):
            raise TypeError(f"{self.name}() takes {len(names)} hyperparameter(s) {names}; got {len(args)}.")
        values = dict(zip(names, args, strict=False))
        for key, val in kwargs.items():
            if key not in names:
                raise TypeError(f"{self.name}() got an unexpected hyperparameter {key!r}; it takes {names}.")
            if key in values:
                raise TypeError(f"{self.name}() got multiple values for {key!r}.")
            values[key] = val
        missing = [n for n in names if n not in values]
        if missing:
            raise TypeError(f"{self.name}() is missing the hyperparameter(s) {missing}.")
        return tuple(values[n] for n in names)

    def check(self, *values) -> tuple[tuple[jax.Array, jax.Array], ...]:
        """Validates positional hyperparameter values; returns ``(value, ok)`` pairs."""
        return tuple(h.check(v) for h, v in zip(self.hyper, values, strict=True))

    def value(self, losses, *args, weights=None, where=None, axis=-1, **kwargs) -> jax.Array:
        """The reduction of ``losses`` (the public function ``robustlearn.<name>``)."""
        hyper = self.check(*self.bind(args, kwargs))
        return _engine.run(self.kernel, losses, hyper, weights=weights, where=where, axis=axis)

    def weights(self, losses, *args, weights=None, where=None, axis=-1, **kwargs) -> jax.Array:
        """The worst-case distribution (the public function ``robustlearn.<name>_weights``)."""
        hyper = self.check(*self.bind(args, kwargs))
        return _engine.run(self.kernel, losses, hyper, weights=weights, where=where, axis=axis, want_weights=True)


# ------------------------------------------------------------ smoothed reformulations


def _softplus_excess(losses, p, eta, tau):
    """sum_i p_i tau softplus((l_i - eta)/tau): within tau log 2 of sum_i p_i (l_i - eta)_+."""
    return jnp.sum(jnp.where(p > 0, p * tau * jax.nn.softplus((losses - eta) / tau), 0))


def _cvar_smoothed(losses, p, eta, tau, alpha):
    # CVaR = min_eta eta + E_p (l - eta)_+ / alpha (Rockafellar & Uryasev).
    return eta + _softplus_excess(losses, p, eta, tau) / alpha


def _tv_smoothed(losses, p, eta, tau, radius):
    # TV = radius max l + min_eta (1 - radius) eta + E_p (l - eta)_+; the max by log-sum-exp.
    smooth_max = tau * jax.nn.logsumexp(jnp.where(p > 0, losses / tau, -jnp.inf))
    return radius * smooth_max + (1 - radius) * eta + _softplus_excess(losses, p, eta, tau)


def _scalar_zero(dtype):
    return jax.device_put(np.zeros((), dtype))  # no program to compile


# ----------------------------------------------------------------------- the registry

_ALPHA = Hyper("alpha", 0.0, 1.0, low_open=True, high_open=False, doc="tail fraction of the nominal mass")
_RADIUS = Hyper("radius", 0.0, doc="ball radius, in the divergence's units")
_LAM = Hyper("lam", 0.0, low_open=True, doc="penalty multiplier, in the units of the losses")
_K = Hyper("k", 1.0, low_open=True, doc="Cressie-Read exponent")
_TV_RADIUS = Hyper("radius", 0.0, 1.0, high_open=False, doc="total variation moved, a fraction of the mass")

_RECORDS = (
    Reduction("erm", _kernels.erm_kernel, (), True, "mean loss under the nominal distribution"),
    Reduction(
        "cvar",
        _kernels.cvar_kernel,
        (_ALPHA,),
        False,
        "mean of the worst alpha fraction of the mass",
        smoothed=_cvar_smoothed,
        aux_init=_scalar_zero,
    ),
    Reduction("chi_square", _kernels.chi_square_kernel, (_RADIUS,), True, "worst case over a chi-square ball"),
    Reduction("kl", _kernels.kl_kernel, (_RADIUS,), True, "worst case over a Kullback-Leibler ball"),
    Reduction("cressie_read", _kernels.cressie_read_kernel, (_RADIUS, _K), True, "worst case over a Cressie-Read ball"),
    Reduction(
        "tv",
        _kernels.tv_kernel,
        (_TV_RADIUS,),
        False,
        "worst case over a total-variation ball",
        smoothed=_tv_smoothed,
        aux_init=_scalar_zero,
    ),
    Reduction("chi_square_penalty", _kernels.chi_square_penalty_kernel, (_LAM,), True, "penalized chi-square DRO"),
    Reduction("kl_penalty", _kernels.kl_penalty_kernel, (_LAM,), True, "penalized KL DRO (tilted risk)"),
)

REDUCTIONS: Mapping[str, Reduction] = types.MappingProxyType({r.name: r for r in _RECORDS})
"""Every reduction, by name, in a fixed order (ERM first)."""


def get(name: str) -> Reduction:
    """The record of reduction ``name``, or a ValueError listing the valid names."""
    if name not in REDUCTIONS:
        raise ValueError(f"unknown reduction {name!r}; choose from {list(REDUCTIONS)}.")
    return REDUCTIONS[name]
