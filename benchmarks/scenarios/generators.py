r"""Learned generators, trained on a scenario's real training split, their quality, and a disk cache.

- :class:`GaussianCopula`: a class-conditional Gaussian copula for tabular data with numeric, binary and
  one-hot categorical columns (Adult). Every column is mapped to a normal score by its empirical
  class-conditional distribution function (randomized within ties, so discrete and categorical columns
  are handled alike), the normal scores get a full correlation matrix per class (calibrated by simulation
  so that the samples' rank correlations match the data's), and samples are mapped back through the
  empirical quantile functions. Samples therefore take only values seen in training,
  one-hot groups stay one-hot, and each class's one-dimensional margins match the training data's; what
  the copula cannot represent is dependence beyond pairwise rank correlation (e.g. interactions, and for
  categorical variables any dependence that their arbitrary level order hides).
- :class:`ConditionalVAE`: a conditional variational autoencoder for 8x8 digits (pixels are counts
  0..16 of "on" cells in a 4x4 block), written in flax nnx and trained through
  :class:`robustlearn.train.Trainer` on the negative ELBO as an :class:`~robustlearn.objectives.Objective`
  (:func:`elbo_objective`):

  .. math::

      -\mathrm{ELBO}(x, c) = \mathbb{E}_{q(z\mid x, c)}\big[-\log p(x\mid z, c)\big]
      + \mathrm{KL}\big(q(z\mid x, c)\,\|\,\mathcal N(0, I)\big),

  with :math:`q = \mathcal N(\mu(x, c), \mathrm{diag}\,\sigma^2(x, c))` and a binomial likelihood,
  :math:`x_j \mid z, c \sim \mathrm{Binomial}(16, \mathrm{sigmoid}(f_j(z, c)))`. The reparameterization
  noise is drawn from the step's PRNG key. Samples draw :math:`z \sim \mathcal N(0, I)` and each pixel
  from its binomial, so they are integers in [0, 16].

Quality (:func:`quality`), measured on data the generator never saw: the classifier two-sample test
AUC (real vs synthetic, a logistic regression fitted by :func:`robustlearn.train.fit_linear` on half of
the pooled rows, AUC on the other half; 0.5 = indistinguishable by a linear classifier) and
train-on-synthetic-test-on-real accuracy (TSTR), next to train-on-real-test-on-real (TRTR) of the same
classifier.

Generated data are cached per (scenario, generator, seed, parameters, training data) in
``$ROBUSTLEARN_BENCH_CACHE`` (default ``~/.cache/robustlearn-benchmarks``; ``off`` disables the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# Bump when a generator's code changes what it produces: old cache entries are then ignored.
VERSION = {"gaussian_copula": 2, "cvae": 1, "quality": 2}

# ---------------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path | None:
    """The cache directory, or None when ``ROBUSTLEARN_BENCH_CACHE`` is ``off`` (or ``0``, ``none``)."""
    env = os.environ.get("ROBUSTLEARN_BENCH_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "none", "false", ""):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "robustlearn-benchmarks"


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cached(
    name: str, meta: dict, inputs: Sequence[np.ndarray], build: Callable[[], tuple[dict[str, np.ndarray], dict]]
) -> tuple[dict[str, np.ndarray], dict]:
    """``build()`` once per key; later calls load its arrays and info from the cache.

    Args:
        name: a short name for the file (e.g. ``"vae_digits-seed0"``).
        meta: everything (JSON-serializable) the output depends on besides ``inputs``.
        inputs: the arrays the generator is trained on (hashed into the key).
        build: returns ``(arrays, info)``; ``info`` must be JSON-serializable.

    Returns:
        ``(arrays, info)``; ``info["cached"]`` says whether they came from the cache.
    """
    directory = cache_dir()
    key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode() + _digest(*inputs).encode())
    path = None if directory is None else directory / f"{name}-{key.hexdigest()[:20]}.npz"
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files if k != "__info__"}
                info = json.loads(str(f["__info__"]))
            return arrays, info | {"cached": True}
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry: rebuild it
    arrays, info = build()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, __info__=np.array(json.dumps(info, default=float)), **arrays)
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
    return arrays, info | {"cached": False}


# ------------------------------------------------------------------------------------------ Gaussian copula


class Column(NamedTuple):
    """One variable of a table: ``kind`` is ``"numeric"`` or ``"categorical"``.

    A categorical variable is stored one-hot over ``columns`` (one column: a 0/1 indicator, two levels);
    with ``implicit_level`` an all-zero row is one more level (e.g. Adult's workclass "other").
    """

    name: str
    kind: str
    columns: tuple[int, ...]
    implicit_level: bool = False


def adult_columns(feature_names: Sequence[str]) -> list[Column]:
    """The variables of :func:`~benchmarks.scenarios._adult.load_adult`'s encoding (11 variables, d = 26)."""
    names = list(feature_names)
    idx = {n: i for i, n in enumerate(names)}
    cols = [Column(n, "numeric", (idx[n],)) for n in names[:5]]
    cols += [Column(n, "categorical", (idx[n],)) for n in ("male", "white", "us_born", "married")]
    cols.append(
        Column("workclass", "categorical", tuple(i for i, n in enumerate(names) if n.startswith("workclass_")), True)
    )
    cols.append(
        Column("occupation", "categorical", tuple(i for i, n in enumerate(names) if n.startswith("occupation_")))
    )
    covered = sorted(i for c in cols for i in c.columns)
    if covered != list(range(len(names))):
        raise ValueError(f"the Adult columns do not cover the features exactly: {names}")
    return cols


def _codes(x: np.ndarray, col: Column) -> np.ndarray:
    """Per-row level (categorical) or value (numeric)."""
    block = x[:, list(col.columns)]
    if col.kind == "numeric":
        return block[:, 0].astype(np.float64)
    if len(col.columns) == 1:
        return np.rint(block[:, 0]).astype(np.int64)
    code = np.argmax(block, axis=1).astype(np.int64)
    if col.implicit_level:
        code = np.where(block.max(axis=1) > 0.5, code, len(col.columns))
    return code


def _uncode(values: np.ndarray, col: Column, d: int) -> np.ndarray:
    out = np.zeros((len(values), d))
    if col.kind == "numeric" or len(col.columns) == 1:
        out[:, col.columns[0]] = values
        return out
    for level, j in enumerate(col.columns):
        out[:, j] = values == level
    return out


class _Margin(NamedTuple):
    values: np.ndarray  # the levels/values, in the order of the normal scores
    cum: np.ndarray  # cumulative probabilities, cum[-1] == 1


def _margin(codes: np.ndarray, kind: str) -> _Margin:
    values, counts = np.unique(codes, return_counts=True)
    if kind == "categorical":  # no natural order: most frequent level first
        order = np.argsort(-counts, kind="stable")
        values, counts = values[order], counts[order]
    cum = np.cumsum(counts) / counts.sum()
    cum[-1] = 1.0
    return _Margin(values, cum)


_EPS = 1e-9


def _positions(codes: np.ndarray, margin: _Margin) -> np.ndarray:
    """Index of each code in ``margin.values`` (every code must be one of them)."""
    sorter = np.argsort(margin.values, kind="stable")
    idx = np.clip(np.searchsorted(margin.values, codes, sorter=sorter), 0, len(sorter) - 1)
    pos = sorter[idx]
    if not np.array_equal(margin.values[pos], codes):
        raise ValueError("a value is not in the fitted margin")
    return pos


def _to_normal(codes: np.ndarray, margin: _Margin, rng: np.random.Generator) -> np.ndarray:
    from scipy.special import ndtri

    pos = _positions(codes, margin)
    lo = np.where(pos > 0, margin.cum[np.maximum(pos - 1, 0)], 0.0)
    u = lo + rng.random(len(codes)) * (margin.cum[pos] - lo)  # randomized PIT within the value's mass
    return ndtri(np.clip(u, _EPS, 1 - _EPS))


def _from_normal(z, margin: _Margin) -> np.ndarray:
    from scipy.special import ndtr

    pos = np.minimum(np.searchsorted(margin.cum, ndtr(z), side="left"), len(margin.values) - 1)
    return margin.values[pos]


def _mid_scores(pos: np.ndarray, margin: _Margin) -> np.ndarray:
    """Mid-distribution scores: the centre of each value's probability mass (average ranks, scaled to (0, 1))."""
    lo = np.where(pos > 0, margin.cum[np.maximum(pos - 1, 0)], 0.0)
    return 0.5 * (lo + margin.cum[pos])


def _corr(a: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns; a constant column correlates 0 with the others."""
    a = a - a.mean(0)
    sd = np.sqrt((a**2).mean(0))
    z = np.where(sd > 1e-12, a / np.where(sd > 1e-12, sd, 1.0), 0.0)
    r = z.T @ z / len(a)
    np.fill_diagonal(r, 1.0)
    return r


def _nearest_correlation(r: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Symmetric, eigenvalues >= ``floor``, unit diagonal (clip the spectrum, rescale)."""
    r = 0.5 * (r + r.T)
    w, v = np.linalg.eigh(r)
    r = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(r))
    return r / d[:, None] / d[None, :]


class GaussianCopula:
    """Class-conditional Gaussian copula with empirical margins (see the module docstring).

    Per class, the latent correlation matrix starts from the correlation of the normal scores (randomized
    within ties) and is then calibrated by simulation: ``calibration`` rounds of
    ``R <- R + (S_real - S(R))``, with ``S`` the rank correlation (of mid-distribution scores) of the coded
    variables in the data and in ``calibration_rows`` simulated rows (the same draws every round). Without
    it, dependence between discrete variables (e.g. two binary ones) comes out attenuated: the normal scores
    of a binary variable take only two values.

    Args:
        columns: the table's variables (:class:`Column`), covering every feature column once.
        num_classes: labels are in ``[0, num_classes)``.
        shrinkage: the correlation matrix of each class is ``(1 - shrinkage) R + shrinkage I``.
        calibration: rounds of the calibration (0: none).
        calibration_rows: simulated rows per round.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        num_classes: int,
        *,
        shrinkage: float = 1e-3,
        calibration: int = 20,
        calibration_rows: int = 20000,
    ):
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        if calibration < 0 or calibration_rows < 2:
            raise ValueError(
                f"calibration must be >= 0 and calibration_rows >= 2, got {calibration}, {calibration_rows}"
            )
        self.columns, self.num_classes, self.shrinkage = list(columns), int(num_classes), float(shrinkage)
        self.calibration, self.calibration_rows = int(calibration), int(calibration_rows)

    def _simulated_scores(self, z: np.ndarray, margins) -> np.ndarray:
        from scipy.special import ndtr

        out = np.empty_like(z)
        for j, m in enumerate(margins):
            pos = np.minimum(np.searchsorted(m.cum, ndtr(z[:, j]), side="left"), len(m.values) - 1)
            out[:, j] = _mid_scores(pos, m)
        return out

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> GaussianCopula:
        """Fits margins and correlations per class on ``(x (n, d), y (n,))``; ``seed`` draws the tie-breaking."""
        x, y = np.asarray(x, np.float64), np.asarray(y)
        rng = np.random.default_rng([seed, 101])
        self.d_ = x.shape[1]
        self.margins_, self.chol_, self.priors_ = [], [], np.bincount(y, minlength=self.num_classes) / len(y)
        self.calibration_error_ = []
        for c in range(self.num_classes):
            xc = x[y == c]
            if len(xc) < 2:
                raise ValueError(f"class {c} has {len(xc)} training rows; the copula needs at least 2")
            codes = [_codes(xc, col) for col in self.columns]
            margins = [_margin(k, col.kind) for k, col in zip(codes, self.columns, strict=True)]
            z = np.stack([_to_normal(k, m, rng) for k, m in zip(codes, margins, strict=True)], 1)
            r = _nearest_correlation(_corr(z))
            target = _corr(np.stack([_mid_scores(_positions(k, m), m) for k, m in zip(codes, margins, strict=True)], 1))
            base = rng.standard_normal((self.calibration_rows, len(self.columns)))
            error = np.nan
            for _ in range(self.calibration):
                simulated = _corr(self._simulated_scores(base @ np.linalg.cholesky(r).T, margins))
                error = float(np.max(np.abs(target - simulated)))
                r = _nearest_correlation(np.clip(r + (target - simulated), -0.999, 0.999))
            r = (1 - self.shrinkage) * r + self.shrinkage * np.eye(len(r))
            self.calibration_error_.append(error)
            self.margins_.append(margins)
            self.chol_.append(np.linalg.cholesky(r))
        return self

    def sample(self, rng: np.random.Generator, counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``counts[c]`` rows of class ``c`` each, in class order: ``(x (n, d), y (n,))``."""
        xs, ys = [], []
        for c, k in enumerate(counts):
            z = rng.standard_normal((int(k), len(self.columns))) @ self.chol_[c].T
            out = np.zeros((int(k), self.d_))
            for j, (col, m) in enumerate(zip(self.columns, self.margins_[c], strict=True)):
                out += _uncode(_from_normal(z[:, j], m), col, self.d_)
            xs.append(out)
            ys.append(np.full(int(k), c))
        return np.concatenate(xs), np.concatenate(ys)


# -------------------------------------------------------------------------------------- conditional VAE


def binomial_nll(logits, counts, total: int):
    """Per-example negative log-likelihood of ``counts ~ Binomial(total, sigmoid(logits))``, summed over pixels."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import gammaln

    log_choose = gammaln(total + 1.0) - gammaln(counts + 1.0) - gammaln(total - counts + 1.0)
    ll = counts * jax.nn.log_sigmoid(logits) + (total - counts) * jax.nn.log_sigmoid(-logits) + log_choose
    return -jnp.sum(ll, axis=-1)


def elbo_objective(graphdef, d: int, total: int):
    r"""The negative ELBO of a :class:`ConditionalVAE` as an :class:`~robustlearn.objectives.Objective`.

    .. math::

        \text{value} = \frac{1}{|B|}\sum_{i \in B} \Big[-\log p\big(x_i \mid \mu_i + \sigma_i \odot
        \varepsilon_i, c_i\big) + \tfrac12 \sum_k \big(\sigma_{ik}^2 + \mu_{ik}^2 - 1 - \log \sigma_{ik}^2\big)\Big],
        \qquad \varepsilon_i \sim \mathcal N(0, I),

    over the unmasked examples of the batch; ``batch["x"]`` is ``[x / total, onehot(c)]`` and
    ``batch["y"]`` the pixel counts. :math:`\varepsilon` comes from the step's ``key``. Metrics:
    ``objective``, ``mean_loss`` (the trainer's per-example loss: reconstruction through the
    posterior mean) and ``kl``.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import robustlearn as rl
    from robustlearn.objectives import Objective

    def loss(loss_fn, params, batch, state, key):
        model = nnx.merge(graphdef, params)
        xc = batch["x"]
        mu, logvar = model.encode(xc)
        eps = jax.random.normal(key, mu.shape, mu.dtype)
        z = mu + jnp.exp(0.5 * logvar) * eps
        nll = binomial_nll(model.decode(z, xc[:, d:]), batch["y"], total)
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mu**2 - 1.0 - logvar, axis=-1)
        where = batch.get("mask")
        value = rl.erm(nll + kl, where=where)
        metrics = {
            "objective": value,
            "mean_loss": rl.erm(loss_fn(params, batch), where=where),
            "kl": rl.erm(kl, where=where),
        }
        return value, (state, metrics)

    return Objective(lambda key: (), loss, "negative_elbo", {"total": total})


def _cvae_module():
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class CVAE(nnx.Module):
        def __init__(self, d: int, num_classes: int, latent: int, hidden: int, rngs: nnx.Rngs):
            self.d = d
            self.enc = nnx.Sequential(
                nnx.Linear(d + num_classes, hidden, rngs=rngs), jax.nn.relu, nnx.Linear(hidden, hidden, rngs=rngs)
            )
            self.mu = nnx.Linear(hidden, latent, rngs=rngs)
            self.logvar = nnx.Linear(hidden, latent, rngs=rngs)
            self.dec = nnx.Sequential(
                nnx.Linear(latent + num_classes, hidden, rngs=rngs),
                jax.nn.relu,
                nnx.Linear(hidden, hidden, rngs=rngs),
                jax.nn.relu,
                nnx.Linear(hidden, d, rngs=rngs),
            )

        def encode(self, xc):
            h = jax.nn.relu(self.enc(xc))
            return self.mu(h), jnp.clip(self.logvar(h), -10.0, 10.0)

        def decode(self, z, c):
            return self.dec(jnp.concatenate([z, c], axis=-1))

        def __call__(self, xc):  # reconstruction (logits) through the posterior mean
            mu, _ = self.encode(xc)
            return self.decode(mu, xc[:, self.d :])

    return CVAE


class ConditionalVAE:
    """Conditional VAE for count images (see the module docstring), trained through the library's Trainer.

    Args:
        num_classes: number of classes (the condition).
        total: the largest pixel value (16 for scikit-learn's digits).
        latent: latent dimension.
        hidden: width of the two hidden layers of encoder and decoder.
        epochs: training epochs at most; the epoch with the best held-out negative ELBO is kept.
        batch_size: minibatch size.
        learning_rate: Adam's learning rate.
        patience: early-stopping patience in epochs.
        holdout: fraction of the training rows held out (per class) for early stopping.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        total: int = 16,
        latent: int = 8,
        hidden: int = 128,
        epochs: int = 150,
        batch_size: int = 64,
        learning_rate: float = 2e-3,
        patience: int = 30,
        holdout: float = 0.15,
    ):
        self.num_classes, self.total, self.latent, self.hidden = num_classes, total, latent, hidden
        self.epochs, self.batch_size, self.learning_rate, self.patience = epochs, batch_size, learning_rate, patience
        self.holdout = holdout

    def config(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("total", "latent", "hidden", "epochs", "batch_size", "learning_rate", "patience", "holdout")
        }

    def _data(self, x, y):
        onehot = np.eye(self.num_classes, dtype=np.float32)[y]
        return {"x": np.concatenate([x / self.total, onehot], axis=1).astype(np.float32), "y": x.astype(np.float32)}

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> ConditionalVAE:
        """Trains on ``x`` (n, d) counts in ``[0, total]`` with labels ``y``; deterministic in ``seed``."""
        import jax
        import optax
        from flax import nnx

        from robustlearn.train import Trainer

        x, y = np.asarray(x, np.float64), np.asarray(y, np.int64)
        if x.min() < 0 or x.max() > self.total:
            raise ValueError(f"pixel values must be in [0, {self.total}], got [{x.min()}, {x.max()}]")
        rng = np.random.default_rng([seed, 102])
        held = np.zeros(len(y), bool)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            held[rng.choice(idx, max(1, round(self.holdout * len(idx))), replace=False)] = True
        with jax.enable_x64(False):  # the same program (and samples) whatever the caller's precision
            model = _cvae_module()(x.shape[1], self.num_classes, self.latent, self.hidden, nnx.Rngs(seed))
            graphdef, params = nnx.split(model)

            def apply(p, xc):
                return nnx.merge(graphdef, p)(xc)

            trainer = Trainer(
                apply,
                lambda logits, counts: binomial_nll(logits, counts, self.total),
                elbo_objective(graphdef, x.shape[1], self.total),
                optax.adam(self.learning_rate),
                params=params,
                batch_size=min(self.batch_size, int((~held).sum())),
                seed=seed,
                monitor="val_objective",
                patience=self.patience,
                verbose=False,
            )
            trainer.fit(self._data(x[~held], y[~held]), self._data(x[held], y[held]), epochs=self.epochs)
        self.graphdef_, self.params_, self.d_ = graphdef, trainer.params, x.shape[1]
        self.history_, self.best_epoch_ = trainer.history, trainer.best_epoch
        return self

    def sample(self, rng: np.random.Generator, counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``counts[c]`` images of class ``c`` each, in class order: ``(x (n, d) integers in [0, total], y (n,))``."""
        import jax
        import jax.numpy as jnp
        from flax import nnx

        y = np.repeat(np.arange(self.num_classes), np.asarray(counts, int))
        z = rng.standard_normal((len(y), self.latent)).astype(np.float32)
        with jax.enable_x64(False):
            model = nnx.merge(self.graphdef_, self.params_)
            logits = model.decode(jnp.asarray(z), jnp.asarray(np.eye(self.num_classes, dtype=np.float32)[y]))
            p = np.asarray(jax.nn.sigmoid(logits), np.float64)
        return rng.binomial(self.total, p).astype(np.float64), y


# ---------------------------------------------------------------------------------------------- quality


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney, ties count one half)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("auc needs both classes")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def c2st_auc(real: np.ndarray, synthetic: np.ndarray, seed: int, *, l2: float = 1e-2) -> tuple[float, int]:
    """Classifier two-sample test: held-out AUC of a logistic regression telling real from synthetic rows.

    Both samples are subsampled to the smaller size ``m``; each is split in halves, a logistic
    regression (``robustlearn.train.fit_linear``, ERM, ridge ``l2``, features standardized on the fitting
    half) is fitted on the first halves and scored on the second. Returns ``(auc, m)``.
    """
    import robustlearn as rl

    rng = np.random.default_rng([seed, 103])
    m = min(len(real), len(synthetic))
    if m < 4:
        raise ValueError(f"c2st needs at least 4 rows of each sample, got {m}")
    real = np.asarray(real, np.float64)[rng.choice(len(real), m, replace=False)]
    synthetic = np.asarray(synthetic, np.float64)[rng.choice(len(synthetic), m, replace=False)]
    h = m // 2
    x_fit, x_eval = np.concatenate([real[:h], synthetic[:h]]), np.concatenate([real[h:], synthetic[h:]])
    y_fit = np.r_[np.ones(h), np.zeros(h)].astype(np.int32)
    y_eval = np.r_[np.ones(m - h), np.zeros(m - h)]
    mean, scale = x_fit.mean(0), x_fit.std(0)
    scale = np.where(scale < 1e-8, 1.0, scale)
    sol = rl.train.fit_linear(((x_fit - mean) / scale).astype(np.float32), y_fit, rl.objectives.erm(), l2=l2)
    w, b = np.asarray(sol.params["w"], np.float64), float(sol.params["b"])
    return auc(((x_eval - mean) / scale) @ w + b, y_eval), m


def linear_accuracy(train_x, train_y, test_x, test_y, num_classes: int, *, l2: float = 1e-3) -> float:
    """Accuracy on ``test`` of an L2-regularized linear classifier fitted (``fit_linear``, ERM) on ``train``."""
    import robustlearn as rl

    loss = "logistic" if num_classes == 2 else "softmax"
    x = np.asarray(train_x, np.float32)
    sol = rl.train.fit_linear(
        x,
        np.asarray(train_y, np.int32),
        rl.objectives.erm(),
        loss=loss,
        l2=l2,
        num_classes=num_classes if num_classes > 2 else None,
    )
    scores = np.asarray(test_x, np.float64) @ np.asarray(sol.params["w"], np.float64) + np.asarray(
        sol.params["b"], np.float64
    )
    pred = (scores > 0).astype(int) if num_classes == 2 else np.argmax(scores, axis=1)
    return float(np.mean(pred == np.asarray(test_y)))


def quality(splits: dict[str, dict[str, np.ndarray]], num_classes: int, seed: int) -> dict[str, Any]:
    """A generator's quality from a scenario's splits, on data it never saw (``real_val``, ``synthetic_val``).

    Returns ``{"c2st_auc", "c2st_auc_quadratic", "c2st_rows" (per sample), "tstr_accuracy" (fitted on
    synthetic), "trtr_accuracy" (fitted on real_full_train), "evaluated_on"}``; both accuracies are of the same
    linear classifier on ``real_val``. The two-sample tests compare ``real_val`` with ``synthetic_val``:
    ``c2st_auc`` with a logistic regression on the features, ``c2st_auc_quadratic`` on the features and their
    squares (which also sees differences of spread, e.g. a VAE's blur).
    """
    syn, syn_val, real_val, real = (splits[k] for k in ("synthetic", "synthetic_val", "real_val", "real_full_train"))
    r, f = np.asarray(real_val["x"], np.float64), np.asarray(syn_val["x"], np.float64)
    auc_value, m = c2st_auc(r, f, seed)
    auc_quad, _ = c2st_auc(np.c_[r, r**2], np.c_[f, f**2], seed)
    return {
        "c2st_auc": auc_value,
        "c2st_auc_quadratic": auc_quad,
        "c2st_rows": m,
        "tstr_accuracy": linear_accuracy(syn["x"], syn["y"], real_val["x"], real_val["y"], num_classes),
        "trtr_accuracy": linear_accuracy(real["x"], real["y"], real_val["x"], real_val["y"], num_classes),
        "evaluated_on": "c2st: real_val vs synthetic_val; tstr/trtr: accuracy on real_val",
    }


def record(name, config, ginfo, n_train, scenario, with_quality, seed, cache_name, meta) -> dict:
    """The ``info["generator"]`` record of a scenario; its quality is computed once per cache key and cached too."""
    out = {
        "name": name,
        "config": config,
        "trained_on": "real_full_train",
        "train_rows": int(n_train),
        "train_seconds": float(ginfo["train_seconds"]),
        "cached": bool(ginfo["cached"]),
    }
    if with_quality:
        s = scenario.splits
        inputs = [s[k][c] for k in ("synthetic", "synthetic_val", "real_val", "real_full_train") for c in ("x", "y")]
        _, q = cached(
            f"{cache_name}-quality",
            meta | {"what": "quality", "quality_version": VERSION["quality"]},
            inputs,
            lambda: ({}, quality(s, scenario.num_classes, seed)),
        )
        out["quality"] = {k: v for k, v in q.items() if k != "cached"}
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
