r"""The PAC protocol of recursive contamination, and learners for it.

Round :math:`t = 1, \dots, T`: draw ``size`` fresh inputs :math:`x \sim D`; label each by the model
deployed before the round, :math:`f_{t-1}(x)`, with probability :math:`\alpha`, else by the teacher
:math:`f^\star(x)`; a learner maps all rounds so far (and the previous model's predictions on
them) to a new model, which is deployed. This is the setting of Amin et al. (2026); the
learners below are our reconstructions, not the paper's pseudocode (which we have not seen).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from robustlearn._src.contamination.means import check_alpha
from robustlearn._src.objectives.base import Objective, erm
from robustlearn._src.objectives.contamination import contamination_corrected

Model = Callable[[np.ndarray], np.ndarray]
Fit = Callable[[dict, Objective, int, int], Callable[[np.ndarray], np.ndarray]]


class Rounds(NamedTuple):
    """The data a learner sees after a round: every round so far, stacked.

    Attributes:
        x: inputs, shape ``(m, ...)``.
        y: observed labels, shape ``(m,)`` (int).
        previous: the label the model deployed before the example's round predicts, shape
            ``(m,)``; -1 where no model was deployed (a clean first round).
        round: 0-based round index of each example, shape ``(m,)``.
        models: ``models[s]`` is the model deployed before round ``s`` (``models[0]`` is the
            initial model, or None for a clean first round); ``models[-1]`` is the current one.
        seed: an integer for the learner's own randomness (derived from the simulation's seed).
    """

    x: np.ndarray
    y: np.ndarray
    previous: np.ndarray
    round: np.ndarray
    models: tuple
    seed: int

    @property
    def num_rounds(self) -> int:
        """Number of rounds observed."""
        return len(self.models)

    def latest(self) -> Rounds:
        """The rows of the last round only (same ``models`` and ``seed``)."""
        keep = self.round == self.round.max()
        return self._replace(x=self.x[keep], y=self.y[keep], previous=self.previous[keep], round=self.round[keep])

    def batch(self, previous_key: str = "previous") -> dict:
        """``{"x", "y", previous_key, "group"}`` arrays for training (``group`` = round index)."""
        return {"x": self.x, "y": self.y, previous_key: self.previous, "group": self.round}


class Simulation(NamedTuple):
    """Result of :func:`simulate_rounds`.

    Attributes:
        models: ``T + 1`` models: ``models[0]`` the initial one (or None), ``models[t]`` the one
            deployed after round ``t``.
        rounds: all the data (:class:`Rounds` with ``models[:T]``).
        synthetic: which labels copied the previous model, shape ``(m,)`` (hidden from the learner).
        pool_index: row of ``pool`` each example was drawn from, shape ``(m,)``.
        test_error: if ``test`` was given, the error of ``models[1..T]`` against the teacher on it,
            shape ``(T,)``; else None.
    """

    models: tuple
    rounds: Rounds
    synthetic: np.ndarray
    pool_index: np.ndarray
    test_error: np.ndarray | None


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"`{name}` must be a positive int; got {v!r}.")
    return int(v)


def _labels_of(model, x, name: str, n: int) -> np.ndarray:
    out = np.asarray(model(x))
    if out.shape != (n,):
        raise ValueError(f"{name} must return one label per input, shape ({n},); got shape {out.shape}.")
    if out.dtype == bool or not (np.issubdtype(out.dtype, np.integer) or np.issubdtype(out.dtype, np.floating)):
        raise TypeError(f"{name} must return integer class labels; got dtype {out.dtype}.")
    if not np.all(np.isfinite(out)) or not np.all(out == np.round(out)) or (out.size and out.min() < 0):
        raise ValueError(f"{name} must return class labels >= 0 (integers).")
    return out.astype(np.int64)


def simulate_rounds(
    pool: Any,
    teacher: Model,
    learner: Callable[[Rounds], Model],
    *,
    alpha: float,
    rounds: int,
    size: int,
    seed: int = 0,
    initial: Model | None = None,
    test: Any = None,
    replace: bool = False,
) -> Simulation:
    r"""Runs the recursive-contamination protocol on a pool of inputs.

    .. math::

        y_i = \begin{cases} f_{t-1}(x_i) & \text{with probability } \alpha, \\
        f^\star(x_i) & \text{otherwise,} \end{cases} \qquad
        f_t = \mathrm{learner}(\text{rounds } 1..t).

    Round ``t`` draws ``size`` inputs from ``pool`` (without replacement across all rounds,
    so every round's inputs are fresh, unless ``replace``). The first round is clean
    (``previous = -1``) unless an ``initial`` model is given. Everything random (draws, coins,
    the learner's ``seed``) derives from ``seed``: the result is a function of the arguments
    (for a deterministic learner).

    Args:
        pool: inputs to draw from, an array with a leading example axis.
        teacher: :math:`f^\star`, maps inputs ``(n, ...)`` to integer labels ``(n,)``.
        learner: maps a :class:`Rounds` to a model (a callable of the same kind as ``teacher``).
        alpha: the synthetic fraction, in ``[0, 1]``.
        rounds: number of rounds ``T >= 1``.
        size: examples per round, ``>= 1``.
        seed: integer seed.
        initial: the model deployed before the first round, or None for a clean first round.
        test: optional held-out inputs on which each deployed model's error against the
            teacher is recorded.
        replace: draw with replacement (rounds may share inputs).

    Returns:
        A :class:`Simulation`.

    Examples:
        >>> import numpy as np
        >>> pool = np.linspace(-1, 1, 400)[:, None]
        >>> teacher = lambda x: (x[:, 0] > 0.1).astype(int)
        >>> def learner(r):  # the midpoint between the two classes' means (ERM-like, for illustration)
        ...     cut = 0.5 * (r.x[r.y == 0, 0].mean() + r.x[r.y == 1, 0].mean())
        ...     return lambda x: (x[:, 0] > cut).astype(int)
        >>> sim = simulate_rounds(pool, teacher, learner, alpha=0.5, rounds=3, size=50, test=pool)
        >>> sim.rounds.x.shape, sim.test_error.shape
        ((150, 1), (3,))
    """
    a = check_alpha(alpha, allow_one=True)
    rounds = _positive_int("rounds", rounds)
    size = _positive_int("size", size)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be an int; got {seed!r}.")
    for name, fn in (("teacher", teacher), ("learner", learner)):
        if not callable(fn):
            raise TypeError(f"`{name}` must be callable; got {type(fn).__name__}.")
    if initial is not None and not callable(initial):
        raise TypeError(f"`initial` must be a callable model or None; got {type(initial).__name__}.")
    pool = np.asarray(pool)
    if pool.ndim < 1 or pool.shape[0] == 0:
        raise ValueError(f"`pool` must hold at least one input along its first axis; got shape {pool.shape}.")
    if not replace and rounds * size > pool.shape[0]:
        raise ValueError(
            f"`pool` has {pool.shape[0]} inputs but `rounds` x `size` = {rounds * size} fresh ones are needed; "
            "use a larger pool, fewer or smaller rounds, or replace=True."
        )
    if test is not None:
        test = np.asarray(test)
        test_labels = _labels_of(teacher, test, "`teacher`", test.shape[0])
    rng = np.random.default_rng(seed)
    order = None if replace else rng.permutation(pool.shape[0])[: rounds * size]
    models: list = [initial]
    xs, ys, prevs, rids, syns, idxs, errors = [], [], [], [], [], [], []
    for t in range(rounds):
        idx = rng.integers(0, pool.shape[0], size) if replace else order[t * size : (t + 1) * size]
        x = pool[idx]
        clean = _labels_of(teacher, x, "`teacher`", size)
        coins = rng.random(size) < a
        deployed = models[-1]
        if deployed is None:
            prev = np.full(size, -1, np.int64)
            syn = np.zeros(size, bool)
            y = clean
        else:
            prev = _labels_of(deployed, x, f"the model deployed before round {t + 1}", size)
            syn = coins
            y = np.where(coins, prev, clean)
        xs.append(x)
        ys.append(y)
        prevs.append(prev)
        rids.append(np.full(size, t, np.int64))
        syns.append(syn)
        idxs.append(np.asarray(idx))
        data = Rounds(
            np.concatenate(xs),
            np.concatenate(ys),
            np.concatenate(prevs),
            np.concatenate(rids),
            tuple(models),
            int(rng.integers(2**31 - 1)),
        )
        model = learner(data)
        if not callable(model):
            raise TypeError(f"`learner` must return a callable model; got {type(model).__name__} after round {t + 1}.")
        models.append(model)
        if test is not None:
            predicted = _labels_of(model, test, f"the model of round {t + 1}", test.shape[0])
            errors.append(float(np.mean(predicted != test_labels)))
    return Simulation(
        tuple(models),
        data,
        np.concatenate(syns),
        np.concatenate(idxs),
        None if test is None else np.asarray(errors),
    )


# ------------------------------------------------------------------------------------ learners


def _argmax_model(scores_fn) -> Model:
    def model(x):
        return np.asarray(np.argmax(np.asarray(scores_fn(x)), axis=-1), dtype=np.int64)

    return model


def _check_fit_args(fit, num_classes):
    if not callable(fit):
        raise TypeError(f"`fit` must be callable fit(data, objective, num_classes, seed); got {type(fit).__name__}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2; got {num_classes!r}.")
    return int(num_classes)


def pooled_learner(
    fit: Fit,
    objective: Objective | Callable[[Rounds], Objective],
    *,
    num_classes: int,
    latest_only: bool = False,
) -> Callable[[Rounds], Model]:
    r"""A learner that minimizes ``objective`` on every round so far (or the latest one) and deploys the argmax.

    With :func:`robustlearn.objectives.erm` this is the paper's repeated ERM on pooled rounds
    (or ERM on the latest round); with
    :func:`robustlearn.objectives.contamination_corrected` it is ERM on the unbiased clean risk
    (identity (ii) of docs/contamination.md), which is also the unbiased PU risk of the
    regions :math:`\{h \neq f_{s-1}\}` summed over rounds.

    Args:
        fit: ``fit(data, objective, num_classes, seed) -> scores``, training a model of your class
            on ``data = {"x", "y", "previous", "group"}`` (``group``: round index; ``previous``: -1
            for clean rows), returning a function that maps inputs to scores ``(n, num_classes)``.
        objective: an Objective, or a function of the :class:`Rounds` returning one (e.g. with an
            alpha estimated from the data so far).
        num_classes: number of classes.
        latest_only: train on the last round only.

    Returns:
        ``learner(rounds) -> model`` for :func:`simulate_rounds`.
    """
    num_classes = _check_fit_args(fit, num_classes)
    if not (isinstance(objective, Objective) or callable(objective)):
        raise TypeError("`objective` must be an Objective or a function of the rounds returning one.")

    def learner(rounds: Rounds) -> Model:
        data = rounds.latest() if latest_only else rounds
        obj = objective if isinstance(objective, Objective) else objective(rounds)
        return _argmax_model(fit(data.batch(), obj, num_classes, rounds.seed))

    return learner


def region_features(x: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    r"""Inputs of the region learner: :math:`[x \otimes e_{g(x)},\ e_{g(x)}]`, shape ``(n, C (d + 1))``.

    One linear function of :math:`x` per label of the current model :math:`g`, so the class of
    regions contains :math:`\{f^\star \neq g\} = \bigcup_c \{g = c,\ f^\star \neq c\}` exactly when
    :math:`f^\star` is a binary linear classifier (given :math:`g = c` the region is a half-space),
    whatever :math:`g` is.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    onehot = np.eye(num_classes)[labels]
    return np.concatenate([(x[:, None, :] * onehot[:, :, None]).reshape(len(x), -1), onehot], axis=1)


class DisagreementModel:
    r"""A deployed model :math:`f_t(x) = f_{t-1}(x)` outside the learned region, the correction inside.

    Attributes:
        base: the previous model :math:`f_{t-1}`.
        region: scores ``(n, 2)`` of "``base`` is wrong at x" from :func:`region_features` inputs.
        labels: scores ``(n, C)`` of the class inside the region (None for binary: the other class).
        num_classes: number of classes ``C``.
    """

    def __init__(self, base: Model, region, labels, num_classes: int):
        self.base, self.region, self.labels, self.num_classes = base, region, labels, num_classes

    def __call__(self, x) -> np.ndarray:
        g = np.asarray(self.base(x), dtype=np.int64)
        wrong = np.argmax(np.asarray(self.region(region_features(x, g, self.num_classes))), axis=-1) == 1
        if self.labels is None:
            fix = 1 - g
        else:
            scores = np.array(self.labels(x), dtype=np.float64)
            scores[np.arange(len(g)), g] = -np.inf  # the correction must differ from f_{t-1}
            fix = np.argmax(scores, axis=-1)
        return np.where(wrong, fix, g).astype(np.int64)


def disagreement_learner(
    fit: Fit,
    alpha: float | Callable[[Rounds], float],
    *,
    num_classes: int,
    history: str = "all",
) -> Callable[[Rounds], Model]:
    r"""Reconstruction of the PU route: learn where the deployed model is wrong, then correct it there.

    With :math:`g = f_{t-1}` the current model and :math:`D = \{f^\star \neq g\}`, an example of round
    :math:`t-1` (generated with :math:`g`) with :math:`y \neq g(x)` is a *certain* positive of
    :math:`D` (a synthetic label equals :math:`g(x)`), observed with probability :math:`1-\alpha` inside
    :math:`D` and never outside: :math:`\delta = \mathbf 1\{y \neq g(x)\}` are positive-unlabeled labels
    with propensity :math:`1-\alpha`. For an older round :math:`s`, :math:`\delta` equals
    :math:`\mathbf 1_D(x)` with probability :math:`1-\alpha` and :math:`q = \mathbf 1\{f_{s-1}(x) \neq g(x)\}`
    otherwise, which is the contamination model again with ``previous`` :math:`= q` (:math:`q = 0`
    for round :math:`t-1`). So the region learner minimizes
    :func:`robustlearn.objectives.contamination_corrected` with ``nonnegative=True`` on the binary
    task :math:`(x, \delta, q)`; on the latest round alone this is exactly the non-negative PU risk
    of Kiryo et al. (2017). Its inputs are :func:`region_features` (one linear function per
    label of :math:`g`). The deployed model is :class:`DisagreementModel`: :math:`g` outside the
    learned region; inside, the other class (binary) or, for :math:`C > 2`, the best class other
    than :math:`g(x)` of a classifier trained by ERM on the certain positives of every round
    (:math:`y \neq f_{s-1}(x)`, whose labels are :math:`f^\star(x)`) and the clean rows. The first
    model (nothing deployed yet) is ERM on the clean first round.

    Caveat: :math:`g` was trained on the rounds before :math:`t-1`, so on those rows :math:`\delta` is
    not independent of :math:`g` (a model that fits its training labels shows fewer
    disagreements there); ``history="latest"`` avoids this at the price of using one round.
    This is our reconstruction from the paper's description ("learning disagreements from
    positive examples"), not its algorithm.

    Args:
        fit: as in :func:`pooled_learner`; it is called on tasks with 2 classes (the region) and
            with ``num_classes`` classes (the correction), with different input widths.
        alpha: the synthetic fraction in ``[0, 1)``, or a function of the :class:`Rounds`
            returning an estimate.
        num_classes: number of classes ``C``.
        history: ``"all"`` rounds (with the correction above) or the ``"latest"`` one.

    Returns:
        ``learner(rounds) -> model`` for :func:`simulate_rounds`.
    """
    num_classes = _check_fit_args(fit, num_classes)
    if history not in ("all", "latest"):
        raise ValueError(f"`history` must be 'all' or 'latest'; got {history!r}.")
    if not callable(alpha):
        check_alpha(alpha, allow_one=False)

    def learner(rounds: Rounds) -> Model:
        g = rounds.models[-1]
        if g is None:  # a clean first round and nothing deployed yet: plain ERM
            return _argmax_model(fit(rounds.batch(), erm(), num_classes, rounds.seed))
        a = check_alpha(alpha(rounds) if callable(alpha) else alpha, allow_one=False)
        data = rounds.latest() if history == "latest" else rounds
        gx = np.asarray(g(data.x), dtype=np.int64)
        delta = (data.y != gx).astype(np.int64)
        q = np.where(data.previous < 0, -1, (data.previous != gx).astype(np.int64))
        task = {"x": region_features(data.x, gx, num_classes), "y": delta, "previous": q, "group": data.round}
        region = fit(task, contamination_corrected(a, nonnegative=True, num_classes=2), 2, rounds.seed)
        labels = None
        if num_classes > 2:
            certain = (rounds.previous < 0) | (rounds.y != rounds.previous)
            if not np.any(certain):  # no example with a known clean label: nothing to correct with
                return g
            labels_data = {k: v[certain] for k, v in rounds.batch().items()}
            labels_data["previous"] = np.full(int(certain.sum()), -1, np.int64)
            labels = fit(labels_data, erm(), num_classes, rounds.seed + 1)
        return DisagreementModel(g, region, labels, num_classes)

    return learner
