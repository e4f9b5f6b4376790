"""Callbacks: early stopping, progress output, custom metrics and stopping, objective metrics in the history."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import robustlearn as rl
from robustlearn import objectives, wasserstein

CE = optax.softmax_cross_entropy_with_integer_labels


def linear_apply(params, x):
    return x @ params["w"] + params["b"][None, :]


def _data(seed, n=96):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.int32)  # label noise: validation plateaus
    return {"x": x, "y": y}


TRAIN, VAL = _data(0), _data(1, 48)


def _trainer(optimizer=None, **kwargs):
    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    kwargs = {"batch_size": 32, "verbose": False} | kwargs
    return rl.train.Trainer(linear_apply, CE, objectives.erm(), optimizer or optax.adam(0.3), params=params, **kwargs)


def _expected_early_stop(values, patience, maximize):
    """Best epoch and stop epoch by the rule 'stop after `patience` epochs without a strict improvement'."""
    best, best_epoch, wait = None, None, 0
    for epoch, v in enumerate(values, start=1):
        if best is None or (v > best if maximize else v < best):
            best, best_epoch, wait = v, epoch, 0
        else:
            wait += 1
        if wait >= patience:
            return best_epoch, epoch
    return best_epoch, None


@pytest.mark.parametrize(("monitor", "mode"), [("val_loss", "auto"), ("val_accuracy", "max")])
def test_early_stopping_stops_restores_and_says_so(monitor, mode):
    stopper = rl.train.EarlyStopping(monitor, mode=mode, patience=2)
    stream = io.StringIO()
    trainer = _trainer(callbacks=[stopper, rl.train.ProgressBar(stream=stream)])
    history = trainer.fit(TRAIN, VAL, epochs=40)
    values = history.columns()[monitor]
    # The whole run (until the stop) is in the history; redo the rule on it.
    best_epoch, stop_epoch = _expected_early_stop(values, 2, maximize=monitor == "val_accuracy")
    assert stop_epoch == len(history) < 40, values
    assert stopper.stopped_epoch == history.stopped_epoch == trainer.stopped_epoch == stop_epoch
    assert stopper.best_epoch == trainer.best_epoch == history.restored_epoch == best_epoch
    # The kept parameters are the best epoch's: they reproduce its metric. (The accuracy is
    # counted in NumPy: np.mean of a JAX array calls its own float32 mean, 43/48 -> 0.89583337.)
    out = trainer.predict(VAL["x"])
    if monitor == "val_loss":
        value = float(jnp.mean(CE(out, VAL["y"])))
    else:
        value = float(np.mean(np.asarray(out.argmax(-1)) == VAL["y"]))
    assert value == pytest.approx(values[best_epoch - 1], rel=1e-9)
    # It says so: in the history's notes and in the progress output.
    notes = " | ".join(history.notes)
    assert f"early stopping after epoch {stop_epoch}" in notes
    printed = stream.getvalue()
    assert f"early stopping after epoch {stop_epoch}" in printed
    if best_epoch != stop_epoch:
        assert f"restored the parameters of epoch {best_epoch}" in notes and f"epoch {best_epoch}" in printed


def test_the_old_keywords_are_shorthands_for_the_callbacks(capsys):
    trainer = _trainer(monitor="val_accuracy", patience=2, verbose=True)
    history = trainer.fit(TRAIN, VAL, epochs=40)
    reference = _trainer(callbacks=[rl.train.EarlyStopping("val_accuracy", patience=2)])
    assert reference.fit(TRAIN, VAL, epochs=40).rows == history.rows
    assert reference.best_epoch == trainer.best_epoch
    err = capsys.readouterr().err
    assert f"epoch {len(history):>2}/40" in err and "val_accuracy=" in err
    with pytest.raises(ValueError, match="either to the Trainer or to EarlyStopping"):
        _trainer(patience=2, callbacks=[rl.train.EarlyStopping()]).fit(TRAIN, epochs=1)


class _Gap(rl.train.Callback):
    """Adds a custom metric and stops after `stop_at` epochs."""

    provides = ("gap",)

    def __init__(self, stop_at):
        self.stop_at, self.calls, self.ended = stop_at, [], None

    def on_epoch_end(self, trainer, row):
        row["gap"] = row["val_loss"] - row["train_mean_loss"]
        self.calls.append(row["epoch"])
        return row["epoch"] >= self.stop_at

    def on_fit_end(self, trainer, error):
        self.ended = error


def test_a_user_callback_adds_metrics_stops_training_and_can_be_monitored():
    gap = _Gap(stop_at=4)
    stopper = rl.train.EarlyStopping("gap", mode="min")
    trainer = _trainer(callbacks=[stopper, gap])  # runs before EarlyStopping (order 0 < 50)
    history = trainer.fit(TRAIN, VAL, epochs=10)
    assert gap.calls == [1, 2, 3, 4] and len(history) == 4 and gap.ended is None
    assert history.stopped_epoch == trainer.stopped_epoch == 4
    assert "_Gap stopped training after epoch 4" in history.notes
    rows = history.rows
    assert [r["gap"] for r in rows] == [r["val_loss"] - r["train_mean_loss"] for r in rows]
    assert stopper.best_epoch == 1 + int(np.argmin([r["gap"] for r in rows]))


def test_callbacks_hear_about_errors():
    class Recorder(rl.train.Callback):
        def on_fit_end(self, trainer, error):
            self.error = error

    recorder = Recorder()
    data = {"x": TRAIN["x"], "y": TRAIN["x"][:, 0]}
    trainer = rl.train.Trainer(
        linear_apply, lambda out, y: (out[:, 0] - y) ** 2, objectives.erm(), optax.sgd(3.0),  # diverges
        params={"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)}, callbacks=[recorder], verbose=False,
    )  # fmt: skip
    with pytest.raises(FloatingPointError):
        trainer.fit(data, epochs=500)
    assert isinstance(recorder.error, FloatingPointError)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_progress_lines_fit_80_columns_and_use_carriage_returns_only_on_a_terminal(tty):
    stream = _Terminal() if tty else io.StringIO()
    bar = rl.train.ProgressBar(keys=("train_objective", "train_mean_loss", "val_loss", "val_objective"), stream=stream)
    history = _trainer(callbacks=[bar], patience=3).fit(TRAIN, VAL, epochs=12)
    out = stream.getvalue()
    assert ("\r" in out) == tty
    segments = [s for s in out.replace("\r", "\n").split("\n") if s.strip()]
    assert all(len(s) <= 80 for s in segments), [len(s) for s in segments]
    epochs = [s for s in segments if s.startswith("epoch")]
    assert len(epochs) == len(history) and epochs[-1].startswith(f"epoch {len(history):>2}/12")
    assert out.endswith("\n")


def test_progress_is_printed_by_process_zero_only(monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    stream = io.StringIO()
    _trainer(callbacks=[rl.train.ProgressBar(stream=stream)]).fit(TRAIN, VAL, epochs=2)
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: rl.train.EarlyStopping(patience=1.5), r"`patience` must be a positive int or None"),
        (lambda: rl.train.EarlyStopping(patience=0), r"`patience` must be a positive int or None"),
        (lambda: rl.train.EarlyStopping(mode="up"), r"`mode` must be one of"),
        (lambda: rl.train.EarlyStopping(min_delta=-1.0), r"`min_delta` must be a number in \[0, inf\)"),
        (lambda: rl.train.EarlyStopping(restore_best="yes"), r"`restore_best` must be a bool"),
        (lambda: rl.train.ProgressBar(width=0), r"`width` must be a positive int"),
        (lambda: rl.train.Checkpointer("d", every=2.5), r"`every` must be a positive int"),
        (lambda: rl.train.Checkpointer(None), r"`directory` must be a path"),
    ],
)
def test_bad_callback_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_an_unknown_monitor_is_refused_before_training():
    with pytest.raises(ValueError, match=r"unknown `monitor` metric 'val_acc'; available: \["):
        _trainer(callbacks=[rl.train.EarlyStopping("val_acc")]).fit(TRAIN, VAL, epochs=1)


def test_the_wrm_certificate_from_a_trainer_history():
    # Squared loss 0.5 (y - <w, x>)^2 has the WRM surrogate in closed form (residual r):
    # phi = gamma r^2 / (2 gamma - |w|^2), moved distance t = |w| |r| / (2 gamma - |w|^2).
    gamma, rho = 2.0, 0.1
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 2))
    data = {"x": x, "y": x @ np.array([0.8, -0.5]) + 0.3 * rng.normal(size=64)}
    trainer = rl.train.Trainer(
        lambda w, x: x @ w, lambda out, y: 0.5 * (y - out) ** 2, wasserstein.wrm(gamma, steps=60),
        optax.adam(0.1), params=jnp.zeros(2), verbose=False, restore_best=False,
    )  # fmt: skip
    history = trainer.fit(data, data, epochs=6)
    last = history.rows[-1]
    for key in ("train_transport", "train_perturbed_loss", "val_transport", "val_perturbed_loss", "val_objective"):
        assert isinstance(last[key], float), key
    w = np.asarray(trainer.params)
    r, norm2 = data["y"] - x @ w, w @ w
    phi = gamma * r**2 / (2 * gamma - norm2)
    moved = (np.sqrt(norm2) * np.abs(r) / (2 * gamma - norm2)) ** 2
    assert last["val_objective"] == pytest.approx(phi.mean(), rel=1e-6)
    assert last["val_transport"] == pytest.approx(moved.mean(), rel=1e-6)
    certificate = float(wasserstein.wrm_certificate(last["val_objective"], gamma, rho))
    assert certificate == pytest.approx(gamma * rho + phi.mean(), rel=1e-6)
    # At rho = the transport actually used, the bound is attained by the perturbed loss.
    attained = float(wasserstein.wrm_certificate(last["val_objective"], gamma, last["val_transport"]))
    assert attained == pytest.approx(last["val_perturbed_loss"], rel=1e-6)
