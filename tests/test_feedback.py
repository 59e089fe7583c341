"""Feedback while training: verbose levels, progress bars, the per-epoch line, callbacks,
History.plot, and Ctrl-C during fit (real SIGINTs, in a subprocess)."""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp
import fastmlp.feedback

EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+) - (\d+\.\d\d)s - loss: (\d+\.\d{4}) - accuracy: "
                        r"(\d\.\d{4}) - val_loss: (\d+\.\d{4}) - val_accuracy: (\d\.\d{4})$")


def blobs(rng, n=240, features=4, classes=3):
    centres = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    return (centres[y] + rng.normal(size=(n, features))).astype(np.float32), y


def small_model(**kwargs):
    return fastmlp.MLP([4, 16, 3], seed=0, **kwargs)


def fit_quietly(rng, **fit_kwargs):
    X, y = blobs(rng)
    model = small_model()
    return model, model.fit(X[:200], y[:200], batch_size=20, validation_data=(X[200:], y[200:]),
                            **fit_kwargs)


# ---- verbose levels ------------------------------------------------------------------------------


def test_verbose_0_prints_nothing(rng, capsys):
    fit_quietly(rng, epochs=2, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_verbose_2_prints_one_keras_line_per_epoch_with_the_history_values(rng, capsys):
    model, history = fit_quietly(rng, epochs=3, verbose=2)
    out, err = capsys.readouterr()
    assert err == ""  # no progress bar at verbose=2
    lines = out.splitlines()
    assert len(lines) == 3
    for index, line in enumerate(lines):
        match = EPOCH_LINE.match(line)
        assert match, line
        assert (int(match[1]), int(match[2])) == (index + 1, 3)
        for group, key in zip(range(3, 8), ("seconds", "loss", "accuracy", "val_loss", "val_accuracy")):
            decimals = 2 if key == "seconds" else 4
            assert match[group] == f"{history[key][index]:.{decimals}f}"


def test_epoch_numbers_continue_across_fits(rng, capsys):
    X, y = blobs(rng)
    model = small_model()
    model.fit(X, y, epochs=2)
    model.fit(X, y, epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert [line.split(" - ")[0] for line in out.splitlines()] == ["Epoch 3/4", "Epoch 4/4"]


def test_verbose_1_plain_bar_when_tqdm_is_missing(rng, capsys, monkeypatch):
    monkeypatch.setattr(fastmlp.feedback, "tqdm_class", lambda: None)
    model, history = fit_quietly(rng, epochs=2, verbose=1)
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and all(EPOCH_LINE.match(line) for line in out.splitlines())
    # 200 rows in batches of 20: the bar ends at 10/10 in each epoch, redrawn in place.
    for epoch in (1, 2):
        final = re.findall(rf"\rEpoch {epoch}/2 10/10 \[=+\] \d+\.\ds loss: (\d+\.\d{{4}})", err)
        assert len(final) == 1, err
        assert float(final[0]) == pytest.approx(history["loss"][epoch - 1], abs=1e-4)
    assert err.count("\n") == 2  # each epoch's bar is closed by one newline


def test_verbose_1_uses_tqdm_when_installed(rng, capsys):
    pytest.importorskip("tqdm")
    fit_quietly(rng, epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err
    assert "/10 [" in err and "batch" in err  # tqdm's counter and unit


def test_verbose_must_be_0_1_or_2(rng):
    X, y = blobs(rng)
    for bad in (3, -1, True, "1"):
        with pytest.raises(ValueError, match="verbose must be 0, 1 or 2"):
            small_model().fit(X, y, epochs=1, verbose=bad)


# ---- callbacks -------------------------------------------------------------------------------------


class Recorder(fastmlp.Callback):
    """Keeps what each hook saw; asks to stop after `stop_after` epochs."""

    def __init__(self, stop_after=None):
        self.stop_after = stop_after
        self.begun_with = None
        self.epochs = []
        self.history_lengths = []
        self.losses_seen = []
        self.ended_with = None

    def on_train_begin(self, model):
        self.begun_with = model

    def on_epoch_end(self, epoch, logs, history):
        self.epochs.append(epoch)
        self.history_lengths.append(len(history))
        self.losses_seen.append(list(history["loss"]))
        logs["loss"] = -1.0  # a copy: must not reach the history
        return None if self.stop_after is None else len(self.epochs) < self.stop_after

    def on_train_end(self, history):
        self.ended_with = history


def test_callback_class_sees_the_history_so_far_and_can_stop(rng):
    X, y = blobs(rng)
    model = small_model()
    recorder = Recorder(stop_after=3)
    history = model.fit(X, y, epochs=10, callbacks=[recorder])
    assert recorder.begun_with is model
    assert recorder.epochs == [1, 2, 3] and recorder.history_lengths == [1, 2, 3]
    assert recorder.losses_seen[-1] == history["loss"]
    assert all(loss > 0 for loss in history["loss"])
    assert recorder.ended_with is history and len(history) == 3 and not history.stopped_early


def test_callback_objects_and_plain_callables_mix_and_all_run_in_the_stopping_epoch(rng):
    X, y = blobs(rng)
    calls = []
    recorder = Recorder()
    history = small_model().fit(X, y, epochs=5, callbacks=[
        lambda epoch, logs: calls.append((epoch, sorted(logs))) or epoch < 2, recorder])
    assert len(history) == 2
    assert [epoch for epoch, _ in calls] == [1, 2] and recorder.epochs == [1, 2]
    assert calls[0][1] == ["accuracy", "loss", "lr", "samples_per_second", "seconds"]


def test_base_callback_changes_nothing(rng):
    X, y = blobs(rng)
    plain, hooked = small_model(), small_model()
    plain.fit(X, y, epochs=3)
    history = hooked.fit(X, y, epochs=3, callbacks=[fastmlp.Callback()])
    assert len(history) == 3
    np.testing.assert_array_equal(plain.flat_parameters, hooked.flat_parameters)


@pytest.mark.parametrize("callbacks, message", [
    ([3], r"callbacks\[0\] must be a fastmlp.Callback or a callable f\(epoch, logs\), got 3"),
    ([print, "stop"], r"callbacks\[1\] must be .* got 'stop'"),
    (print, "callbacks must be a list of callbacks, got a single one"),
    (fastmlp.Callback(), "callbacks must be a list of callbacks, got a single one"),
])
def test_bad_callbacks_are_rejected_before_training(rng, callbacks, message):
    X, y = blobs(rng)
    model = small_model()
    with pytest.raises(TypeError, match=message):
        model.fit(X, y, epochs=1, callbacks=callbacks)
    assert model.epochs_trained == 0 and not model.fitted


def test_ctrl_c_in_a_callback_ends_fit_with_the_finished_epochs(rng):
    X, y = blobs(rng)
    model = small_model()
    ended = []

    class Interrupter(fastmlp.Callback):
        def on_epoch_end(self, epoch, logs, history):
            if epoch == 2:
                raise KeyboardInterrupt

        def on_train_end(self, history):
            ended.append(history)

    history = model.fit(X, y, epochs=5, callbacks=[Interrupter()])
    assert history.interrupted and history.epoch == [1, 2] and ended == [history]
    assert model.fitted and model.score(X, y) > 0


def replayed_steps(X, y, batch_size, full_epochs, n_steps, **model_kwargs):
    """A twin of small_model (same seed: same initialisation and shuffles) trained for
    `full_epochs` epochs, then for the first `n_steps` batches of the next epoch one
    train_step at a time: the twin and those steps' (loss_sum, correct, rows)."""
    twin = small_model(**model_kwargs)
    twin.fit(X, y, epochs=full_epochs, batch_size=batch_size)
    order = twin._shuffle_rng.permutation(len(X))
    steps = [twin._network.train_step(X[order[k * batch_size:(k + 1) * batch_size]],
                                      y[order[k * batch_size:(k + 1) * batch_size]])
             for k in range(n_steps)]
    return twin, np.array(steps, dtype=np.float64)


def test_ctrl_c_between_core_calls_records_the_partial_epoch(rng, monkeypatch, capsys):
    X, y = blobs(rng)  # 240 rows in batches of 4: 60 steps per epoch, 2 per core call at verbose=1
    X_val, y_val = blobs(rng, n=40)

    class InterruptingBar:
        def __init__(self, total, label):
            self.label, self.updates = label, 0

        def update(self, done, loss):
            self.updates += 1
            if self.label.startswith("Epoch 2/") and self.updates == 3:
                raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(fastmlp.training, "progress_bar", InterruptingBar)
    model, recorder = small_model(), Recorder()
    history = model.fit(X, y, epochs=5, batch_size=4, validation_data=(X_val, y_val), verbose=1,
                        callbacks=[recorder])
    assert history.interrupted and history.partial_epoch and history.partial_epoch_rows == 24
    assert history.epoch == [1, 2] and model.epochs_trained == 2 and model._network.step == 66
    twin, steps = replayed_steps(X, y, 4, full_epochs=1, n_steps=6)
    np.testing.assert_array_equal(twin.flat_parameters, model.flat_parameters)  # the same 66 steps
    assert history["loss"][1] == pytest.approx(steps[:, 0].sum() / 24, rel=1e-12)
    assert history["accuracy"][1] == steps[:, 1].sum() / 24
    assert np.isfinite(history["val_loss"][0]) and np.isnan(history["val_loss"][1])
    assert np.isfinite(history["val_accuracy"][0]) and np.isnan(history["val_accuracy"][1])
    assert all(len(history[key]) == 2 for key in history.keys())
    assert history["samples_per_second"][1] == pytest.approx(24 / history["seconds"][1])
    assert recorder.epochs == [1] and recorder.ended_with is history  # on_epoch_end saw no partial
    _, err = capsys.readouterr()
    assert (f"interrupted in epoch 2 after 24 training rows (loss: {history['loss'][1]:.4f}): "
            "the model keeps the 66 steps taken so far") in err
    more = model.fit(X, y, epochs=1, batch_size=4)  # the next fit starts epoch 3
    assert more.epoch == [3] and not more.partial_epoch and more.partial_epoch_rows == 0


def test_ctrl_c_during_validation_records_the_trained_epoch_without_validation(rng):
    X, y = blobs(rng)
    X_val, y_val = blobs(rng, n=40)
    model = small_model()
    evaluate, calls = model._evaluate_arrays, []

    def interrupted_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    model._evaluate_arrays = interrupted_second_time
    history = model.fit(X, y, epochs=5, batch_size=16, validation_data=(X_val, y_val))
    reference = small_model().fit(X, y, epochs=2, batch_size=16)
    assert history.epoch == [1, 2] and history.partial_epoch and history.partial_epoch_rows == 240
    assert history["loss"] == reference["loss"] and history["accuracy"] == reference["accuracy"]
    assert np.isnan(history["val_loss"][1]) and np.isnan(history["val_accuracy"][1])


def test_ctrl_c_before_the_first_step_of_an_epoch_adds_no_record(rng):
    X, y = blobs(rng)
    model = small_model()
    training_state, calls = model._training_state, []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(model.epochs_trained)
        if model.epochs_trained == 2:
            raise KeyboardInterrupt
        return training_state(*args, **kwargs)

    model._training_state = interrupted_in_epoch_2  # taken before each core call with on_nan="restore"
    history = model.fit(X, y, epochs=5, batch_size=16, on_nan="restore")
    assert history.interrupted and history.epoch == [1] and not history.partial_epoch
    assert model._network.step == 15 and model.epochs_trained == 2


# ---- History.plot ----------------------------------------------------------------------------------


def test_history_plot_draws_loss_and_accuracy_curves_to_a_png(rng, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image
    _, history = fit_quietly(rng, epochs=4)
    path = tmp_path / "curves.png"
    figure = history.plot(path)
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).ndim == 3
    assert os.listdir(tmp_path) == ["curves.png"]  # no temporary left behind
    loss_axes, accuracy_axes = figure.axes
    for axes, keys in ((loss_axes, ("loss", "val_loss")), (accuracy_axes, ("accuracy", "val_accuracy"))):
        assert [line.get_label() for line in axes.lines] == list(keys)
        for line, key in zip(axes.lines, keys):
            np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
            np.testing.assert_array_equal(line.get_ydata(), history[key])


def test_history_plot_of_a_regression_has_only_the_loss_panel(rng, tmp_path):
    pytest.importorskip("matplotlib")
    X = rng.normal(size=(50, 2))
    model = fastmlp.MLP([2, 8, 1], loss="mse", seed=0)
    history = model.fit(X, X.sum(axis=1), epochs=2)
    figure = history.plot(str(tmp_path / "loss"))  # no extension: PNG
    assert len(figure.axes) == 1 and [line.get_label() for line in figure.axes[0].lines] == ["loss"]
    with open(tmp_path / "loss", "rb") as file:
        assert file.read(4) == b"\x89PNG"


def test_history_plot_errors(rng, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="history has no epochs to plot"):
        fastmlp.History().plot(tmp_path / "empty.png")
    _, history = fit_quietly(rng, epochs=1)
    with pytest.raises(ValueError, match=r"matplotlib cannot write 'xyz' files"):
        history.plot(tmp_path / "curves.xyz")
    with pytest.raises(FileNotFoundError, match="cannot write .*missing"):
        history.plot(tmp_path / "missing" / "curves.png")
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(ImportError, match="History.plot needs matplotlib: pip install matplotlib"):
        history.plot(tmp_path / "curves.png")
    assert os.listdir(tmp_path) == []


# ---- Ctrl-C during fit ------------------------------------------------------------------------------

# Runs in a child process: a thread watches the step counter and sends a real SIGINT to the
# process while the C++ core runs a whole epoch in one call with the GIL released.
INTERRUPT_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    import numpy as np
    import fastmlp, fastmlp.feedback, fastmlp.training
    from fastmlp import _core

    # Python's own Ctrl-C handler, also when this test runs from a background job (whose
    # children inherit SIGINT ignored, and Python then installs no handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    check_every_step = sys.argv[1] == "every-step"
    if check_every_step:
        _core._set_signal_check_interval(0.0)
    fastmlp.training._SILENT_CALLS_PER_EPOCH = 1     # a whole epoch per C++ call
    fastmlp.training._PROGRESS_CALLS_PER_EPOCH = 1
    fastmlp.feedback.tqdm_class = lambda: None  # the plain bar, on our stderr

    rng = np.random.default_rng(0)
    batch_size, n_batches = 16, 300
    X = rng.normal(size=(batch_size * n_batches, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=batch_size * n_batches)
    model = fastmlp.MLP([32, 64, 64, 10], seed=0, batch_norm=True)
    target = n_batches + n_batches // 10        # in the second epoch
    seen = {}

    def interrupter():
        while model._network.step < target:
            time.sleep(0.0005)
        seen["step_at_signal"] = model._network.step
        os.kill(os.getpid(), signal.SIGINT)

    if check_every_step:
        # A handler of the user's own that uses the model: the core checks for signals
        # without holding the model's lock, so this must not deadlock.
        def handler(signum, frame):
            seen["rows_predicted_in_handler"] = len(model.predict(X[:5]))
            raise KeyboardInterrupt
        signal.signal(signal.SIGINT, handler)

    threading.Thread(target=interrupter, daemon=True).start()
    history = model.fit(X, y, epochs=4, batch_size=batch_size, verbose=int(sys.argv[2]))
    step = model._network.step
    proba = model.predict_proba(X[:200])
    # The model's own weights, applied by NumPy (eval batch norm folded into the first layer).
    (w1, w2, w3), (b1, b2, b3) = model.weights, model.biases
    params = model.flat_parameters
    layers = model._network.layers
    def bn(z, index):
        layer = layers[index]
        gamma = params[layer["gamma"]:layer["gamma"] + layer["fan_out"]]
        beta = params[layer["beta"]:layer["beta"] + layer["fan_out"]]
        offset = 0 if index == 0 else layers[0]["fan_out"]
        mean = model._network.running_mean[offset:offset + layer["fan_out"]]
        var = model._network.running_var[offset:offset + layer["fan_out"]]
        return gamma * (z - mean) / np.sqrt(var + 1e-5) + beta
    h = np.maximum(bn(X[:200].astype(np.float64) @ w1 + b1, 0), 0)
    h = np.maximum(bn(h @ w2 + b2, 1), 0)
    logits = h @ w3 + b3
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    # The partial epoch's record against its steps replayed one at a time on a twin model.
    full_epochs, taken = divmod(step, n_batches)
    twin = fastmlp.MLP([32, 64, 64, 10], seed=0, batch_norm=True)
    twin.fit(X, y, epochs=full_epochs, batch_size=batch_size)
    order = twin._shuffle_rng.permutation(len(X))
    steps = np.array([twin._network.train_step(X[order[k * batch_size:(k + 1) * batch_size]],
                                               y[order[k * batch_size:(k + 1) * batch_size]])
                      for k in range(taken)], dtype=np.float64).reshape(-1, 3)
    replayed = {"same_params": bool(np.array_equal(twin.flat_parameters, model.flat_parameters)),
                "rows": int(steps[:, 2].sum()), "loss_sum": float(steps[:, 0].sum()),
                "correct": int(steps[:, 1].sum())}
    more = model.fit(X, y, epochs=1, batch_size=batch_size)
    print(json.dumps({
        "partial_epoch": history.partial_epoch, "partial_epoch_rows": history.partial_epoch_rows,
        "last_record": {key: history[key][-1] for key in ("loss", "accuracy")},
        "replayed": replayed,
        "step_at_signal": seen["step_at_signal"], "step": step, "n_batches": n_batches,
        "epochs_recorded": len(history), "epoch_numbers": history.epoch,
        "interrupted": history.interrupted, "fitted": model.fitted,
        "rows_predicted_in_handler": seen.get("rows_predicted_in_handler"),
        "max_difference": float(np.abs(proba - expected).max()),
        "after": {"epochs": len(more), "interrupted": more.interrupted,
                  "steps": model._network.step - step, "loss": more["loss"][0]}}))
""")


def run_interrupted_fit(check, verbose):
    result = subprocess.run([sys.executable, "-c", INTERRUPT_SCRIPT, check, str(verbose)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


def assert_partial_epoch_matches_its_replayed_steps(report):
    """The interrupted epoch's record covers exactly the steps the core took in it (in one
    C++ call that the signal cut short): the same rows, loss and correct count."""
    replayed, taken = report["replayed"], report["step"] % report["n_batches"]
    assert replayed["same_params"]
    assert report["partial_epoch"] and report["partial_epoch_rows"] == replayed["rows"] == 16 * taken
    record = report["last_record"]
    assert record["loss"] == pytest.approx(replayed["loss_sum"] / replayed["rows"], rel=1e-12)
    assert record["accuracy"] == replayed["correct"] / replayed["rows"]


def test_sigint_stops_after_the_current_step_not_the_current_call():
    report, stderr = run_interrupted_fit("every-step", verbose=0)
    n = report["n_batches"]
    # The epoch ran as one C++ call: stopping at its end would give step == 2 * n. The
    # signal is honoured at the next step boundary (one more step may finish meanwhile).
    assert report["step_at_signal"] <= report["step"] <= report["step_at_signal"] + 2
    assert report["step"] < 2 * n
    assert report["interrupted"] and report["fitted"]
    assert report["rows_predicted_in_handler"] == 5
    assert report["epochs_recorded"] == 2 and report["epoch_numbers"] == [1, 2]
    assert report["max_difference"] < 1e-5  # predictions are what the kept weights imply
    assert_partial_epoch_matches_its_replayed_steps(report)
    after = report["after"]  # and training goes on from there
    assert after == {"epochs": 1, "interrupted": False, "steps": n, "loss": after["loss"]}
    assert np.isfinite(after["loss"])
    assert stderr == ""  # verbose=0 says nothing, not even about the interrupt


def test_sigint_with_the_default_check_interval_and_a_progress_bar():
    report, stderr = run_interrupted_fit("default", verbose=1)
    assert report["interrupted"] and report["fitted"]
    assert report["step_at_signal"] <= report["step"] <= 2 * report["n_batches"]
    assert report["max_difference"] < 1e-5
    if report["step"] % report["n_batches"]:  # cut within epoch 2, not at its very end
        assert report["epochs_recorded"] == 2
        assert_partial_epoch_matches_its_replayed_steps(report)
        assert f"after {report['partial_epoch_rows']} training rows" in stderr
    assert f"steps taken so far" in stderr and "interrupted in epoch 2" in stderr
