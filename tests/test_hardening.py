"""Failures that lose nothing: extreme numerics, NaN/inf during training, damaged and forged
model files, a writer killed mid-save, threads, SIGINT, memory growth, 64-bit indexing and
memmap'd datasets larger than what should be copied."""
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, optim
from fastmlp import reference as R
from test_mlp import blobs

K = _core.kernels
# Set by .ci/sanitize.sh: ASan's quarantine and shadow memory distort RSS, and shadowing a
# 16 GiB array would itself need gigabytes.
SANITIZED = os.environ.get("FASTMLP_SANITIZED") == "1"
not_under_sanitizer = pytest.mark.skipif(SANITIZED, reason="RSS and huge arrays are meaningless under ASan")


def small_model(**kwargs):
    options = dict(activation="tanh", optimizer=optim.SGD(lr=0.05), seed=7)
    options.update(kwargs)
    return fastmlp.MLP([5, 8, 3], **options)


# ---- numerics --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_of_huge_logits_is_finite_and_exact(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [5e3, 5e3, -1e4]], dtype=dtype)
    labels = np.array([1, 1, 2])
    loss, probs = K.softmax_xent_forward(logits, labels)
    dlogits = K.softmax_xent_backward(probs, labels)
    # -log softmax: row 0 misses by 2e4, row 1 is certain, row 2 misses by 1.5e4 + log 2.
    expected = (2e4 + 0.0 + 1.5e4 + np.log(2.0)) / 3
    assert np.isfinite(loss) and np.all(np.isfinite(probs)) and np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(dlogits, R.softmax_xent_backward(R.softmax_forward(logits), labels),
                               atol=1e-7)
    np.testing.assert_allclose(dlogits[0], [1 / 3, -1 / 3, 0], atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturating_activations_and_bce_never_give_nan(dtype):
    big = np.finfo(dtype).max
    x = np.array([-big, -1e30, -1e4, -100.0, 0.0, 100.0, 1e4, 1e30, big], dtype=dtype)
    for act, low, high in (("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0)):
        y = K.activation_forward(x, act)
        assert np.all(np.isfinite(y)), act
        np.testing.assert_array_equal(y[[0, 1, 2]], low)
        np.testing.assert_array_equal(y[[-3, -2, -1]], high)
        dx = K.activation_backward(np.ones_like(x), x, y, act)
        assert np.all(np.isfinite(dx)), act
        np.testing.assert_array_equal(dx[[0, -1]], 0.0)
    target = (x > 0).astype(dtype)
    assert np.isfinite(K.bce_logits_forward(x[1:-1], target[1:-1]))
    assert np.all(np.isfinite(K.bce_logits_backward(x, target)))


def test_model_with_saturated_logits_trains_on_finite_loss_and_gradients():
    model = fastmlp.MLP([2, 3], loss="cross_entropy", optimizer="sgd", seed=0)
    model.set_weights([np.array([[1e4, -1e4, 0], [0, 0, 0]])], [np.zeros(3)])
    x = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    y = np.array([1, 1])
    loss, grads = model.gradients(x, y)
    assert np.isclose(loss, (2e4 + 0.0) / 2, rtol=1e-6)
    assert np.all(np.isfinite(grads))
    assert np.isfinite(model.train_step(x, y))


def inf_target_data(bad_row):
    """An mse problem whose squared error overflows float32 on one row (target 1e30)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 5)).astype(np.float32)
    Y = rng.normal(size=(20, 3)).astype(np.float32)
    Y[bad_row] = 1e30
    return X, Y


def mse_model():
    return fastmlp.MLP([5, 8, 3], activation="tanh", loss="mse", optimizer=optim.SGD(lr=0.01), seed=4)


def model_after_clean_steps(X, Y, steps, batch_size):
    model = mse_model()
    for k in range(steps):
        model.train_step(X[k * batch_size:(k + 1) * batch_size], Y[k * batch_size:(k + 1) * batch_size])
    return model


def test_nan_loss_stops_at_the_step_naming_epoch_and_step_without_applying_it():
    X, Y = inf_target_data(bad_row=10)  # in batch 3 (of 5) with batch_size 4
    model = mse_model()
    with pytest.raises(FloatingPointError, match=r"in epoch 1, step 3 \(batch 3 of 5 of the epoch\)"):
        model.fit(X, Y, epochs=3, batch_size=4, shuffle=False)
    # Steps 1 and 2 were taken, step 3 was refused: exactly the model of two clean steps.
    expected = model_after_clean_steps(X, Y, 2, 4)
    assert model._network.step == 2
    np.testing.assert_array_equal(model.flat_parameters, expected.flat_parameters)


def test_nan_in_a_later_fit_names_the_epoch_counted_across_fits():
    X, Y = inf_target_data(bad_row=10)
    model = mse_model()
    model.fit(X[:8], Y[:8], epochs=2, batch_size=4, shuffle=False)  # clean rows: epochs 1, 2
    with pytest.raises(FloatingPointError, match=r"in epoch 3, step 7 \(batch 3 of 5"):
        model.fit(X, Y, epochs=1, batch_size=4, shuffle=False)


def test_on_nan_restore_puts_back_the_last_good_weights_and_warns():
    X, Y = inf_target_data(bad_row=10)
    model = mse_model()
    with pytest.warns(RuntimeWarning, match=r"epoch 1, step 3 .* weights after step 2 were restored"):
        history = model.fit(X, Y, epochs=3, batch_size=4, shuffle=False, on_nan="restore")
    assert history.stopped_on_nan and len(history) == 0
    expected = model_after_clean_steps(X, Y, 2, 4)
    np.testing.assert_array_equal(model.flat_parameters, expected.flat_parameters)
    for name, buffer in model._network.optimizer_state.items():
        np.testing.assert_array_equal(buffer, expected._network.optimizer_state[name])
    assert model._network.step == 2
    assert np.all(np.isfinite(model.predict(X)))


@pytest.mark.parametrize("bad_step,restored_step", [(7, 4), (27, 24)])
def test_on_nan_restore_goes_back_to_the_start_of_the_run_of_batches(bad_step, restored_step):
    # 40 batches in 10 runs of 4: a failure in batch 7 restores the state after batch 4. From
    # the third run on, fit keeps that state in the arrays of a state it no longer needs: a
    # failure in batch 27 restores the state after batch 24, not an older one whose arrays
    # were reused. Parameters and optimizer state both.
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    Y = rng.normal(size=(40, 3)).astype(np.float32)
    Y[bad_step - 1] = 1e30
    model = mse_model()
    with pytest.warns(RuntimeWarning, match=f"step {bad_step} .* after step {restored_step} were restored"):
        model.fit(X, Y, epochs=1, batch_size=1, shuffle=False, on_nan="restore")
    expected = model_after_clean_steps(X, Y, restored_step, 1)
    np.testing.assert_array_equal(model.flat_parameters, expected.flat_parameters)
    for name, buffer in model._network.optimizer_state.items():
        np.testing.assert_array_equal(buffer, expected._network.optimizer_state[name])
    assert model._network.step == restored_step


def test_fit_reuses_only_the_state_two_runs_old_and_fills_it_with_the_current_one():
    # The states fit keeps before each run of batches: the last (restored when a run fails)
    # and the one before it (restored when the last run's final update overflowed the
    # parameters). Only the state before those may take the next copy.
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    Y = rng.normal(size=(40, 3)).astype(np.float32)
    model = fastmlp.MLP([5, 8, 3], activation="tanh", loss="mse", optimizer=optim.Adam(lr=0.01), seed=4)
    take_state, returned = model._training_state, []

    def recording(reuse=None):
        if len(returned) >= 2:
            assert reuse is returned[-2]  # two runs old: neither of the states fit keeps
        state = take_state(reuse=reuse)
        fresh = take_state()
        for name in ("params", "running_mean", "running_var"):
            np.testing.assert_array_equal(state[name], fresh[name])
        for name in fresh["optimizer"]:
            np.testing.assert_array_equal(state["optimizer"][name], fresh["optimizer"][name])
        assert state["step"] == fresh["step"] == model._network.step
        returned.append(state)
        return state

    model._training_state = recording
    model.fit(X, Y, epochs=1, batch_size=1, shuffle=False, on_nan="restore")
    assert len(returned) == 10 and len({id(state) for state in returned}) == 2  # two sets of arrays


def test_on_nan_must_be_a_known_choice():
    X, y = blobs()
    with pytest.raises(ValueError, match="unknown on_nan 'ignore'; valid: raise, restore"):
        small_model().fit(X, y, on_nan="ignore")


def test_train_step_refuses_a_non_finite_step():
    X, Y = inf_target_data(bad_row=0)
    model = mse_model()
    before = model.flat_parameters
    with pytest.raises(FloatingPointError, match="at step 1; the step was not applied"):
        model.train_step(X[:4], Y[:4])
    np.testing.assert_array_equal(model.flat_parameters, before)
    assert model._network.step == 0 and not model.fitted


def weight_gradient_overflow(sizes, compute_dtype=None):
    """A model and a batch whose loss is finite but whose first weight gradient overflows:
    feature 0 is 1e24 with its row of first-layer weights 0 (so the outputs stay small), the
    targets -1e18 (squares of 1e36), so dW[0], about 1e24 x 1e18 / outputs over 4 rows, passes 3.4e38."""
    rng = np.random.default_rng(6)
    model = fastmlp.MLP(sizes, activation="relu", loss="mse", optimizer=optim.SGD(lr=1e-30), seed=2,
                        compute_dtype=compute_dtype)
    weights, biases = model.weights, model.biases
    weights[0][0, :] = 0
    model.set_weights(weights, biases)
    X = rng.normal(size=(4, sizes[0])).astype(np.float32)
    X[:, 0] = 1e24
    Y = np.full((4, sizes[-1]), -1e18, np.float32)
    return model, X, Y


@pytest.mark.parametrize("compute_dtype", [None, "bfloat16"])
@pytest.mark.parametrize("sizes", [[5, 3], [5, 8, 3], [40, 64, 20]])
def test_a_weight_gradient_that_overflows_under_a_finite_loss_refuses_the_step(sizes, compute_dtype):
    # A weight gradient's finiteness comes from a bound on its operands, and the gradient is
    # read only when the bound cannot rule an overflow out: this is the case only that read
    # catches (the loss and the biases' gradient are finite).
    model, X, Y = weight_gradient_overflow(sizes, compute_dtype)
    loss, gradient = model.gradients(X, Y)
    assert np.isfinite(loss) and not np.all(np.isfinite(gradient))
    before = model.flat_parameters
    with pytest.raises(FloatingPointError, match="at step 1; the step was not applied"):
        model.train_step(X, Y)
    np.testing.assert_array_equal(model.flat_parameters, before)
    with pytest.raises(FloatingPointError, match=r"in epoch 1, step 1"):
        model.fit(X, Y, epochs=1, batch_size=4, shuffle=False)
    np.testing.assert_array_equal(model.flat_parameters, before)
    # The same model a step later, on rows whose gradient is finite, steps again: the look's
    # flag does not stick to the next step.
    X[:, 0] = 1.0
    model.train_step(X, Y * 1e-18)
    assert not np.array_equal(model.flat_parameters, before)


# ---- model files -----------------------------------------------------------------------------------------


def saved_model(tmp_path):
    X, y = blobs()
    model = small_model(optimizer=optim.Adam(lr=1e-2))
    model.fit(X, y, epochs=2)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path


def members(path):
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def write_npz(path, arrays, raw=()):
    """An .npz of `arrays`, plus members given as raw (name, bytes) pairs."""
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as archive:
        for name, data in raw:
            archive.writestr(name + ".npy", data)
    return path


def npy_bytes(descr, shape, payload=b""):
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + payload


def assert_rejected(path, message="not a valid fastmlp model file"):
    with pytest.raises(ValueError, match=message):
        fastmlp.load(path)


def test_load_rejects_every_truncation(tmp_path):
    _, path = saved_model(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    for length in sorted({0, 1, 4, 30, 100} | set(range(0, len(data), max(1, len(data) // 40)))):
        cut.write_bytes(data[:length])
        assert_rejected(cut)


def test_load_rejects_wrong_magic_and_version(tmp_path):
    model, path = saved_model(tmp_path)
    header = model._header()
    for field, value in (("format", "other-model"), ("format_version", 2), ("format_version", "1")):
        forged = dict(header, **{field: value})
        arrays = members(path)
        arrays["header"] = np.frombuffer(json.dumps(forged).encode(), dtype=np.uint8)
        assert_rejected(write_npz(tmp_path / "forged.npz", arrays), "format")
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    assert_rejected(plain, "single array")


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(running_mean=np.zeros(4, np.float32)), "running_mean"),
    (lambda a: a.update(params=a["params"].astype(np.float64)), "params"),
    (lambda a: a.pop("optimizer_exp_avg"), "'optimizer_exp_avg' is missing"),
    (lambda a: a.update(optimizer_exp_avg_sq=a["optimizer_exp_avg_sq"][:-1]), "exp_avg_sq"),
    (lambda a: a.update(params=a["params"].reshape(-1, 1)), "params"),
    (lambda a: a.update(header=np.frombuffer(b"{not json", dtype=np.uint8)), "not JSON"),
    (lambda a: a.update(header=np.zeros(3, np.float32)), "not JSON bytes"),
])
def test_load_rejects_arrays_that_disagree_with_the_header(tmp_path, change, message):
    _, path = saved_model(tmp_path)
    arrays = members(path)
    change(arrays)
    assert_rejected(write_npz(tmp_path / "bad.npz", arrays), message)


def test_load_rejects_bad_header_fields(tmp_path):
    model, path = saved_model(tmp_path)
    for field, value in (("layer_sizes", "5,8,3"), ("layer_sizes", [5, -8, 3]), ("dropout", float("nan")),
                         ("step", -1), ("learning_rate", "fast"), ("activations", ["relu", "x"]),
                         ("shuffle_state", {"state": 1}), ("dtype", "float16"), ("loss", None),
                         ("n_threads", 0), ("n_threads", "2"), ("n_threads", True), ("n_threads", 1.5),
                         ("n_threads", 10 ** 6)):
        arrays = members(path)
        forged = dict(model._header(), **{field: value})
        arrays["header"] = np.frombuffer(json.dumps(forged).encode(), dtype=np.uint8)
        assert_rejected(write_npz(tmp_path / "field.npz", arrays))
    arrays["header"] = np.frombuffer(json.dumps(dict(model._header(), n_threads=10 ** 6)).encode(),
                                     dtype=np.uint8)
    assert_rejected(write_npz(tmp_path / "threads.npz", arrays), "n_threads=1000000 in the header is more")


def test_load_refuses_huge_claimed_sizes_before_allocating(tmp_path):
    _, path = saved_model(tmp_path)
    arrays = members(path)
    params = arrays.pop("params")
    # A .npy header claiming 10^12 floats over 64 real bytes.
    huge = npy_bytes("<f4", (10 ** 12,), params[:16].tobytes())
    assert_rejected(write_npz(tmp_path / "huge.npz", arrays, [("params", huge)]), "claims shape")
    arrays = members(path)
    arrays.pop("header")
    big_header = npy_bytes("|u1", (1 << 40,), b"{}")
    assert_rejected(write_npz(tmp_path / "header.npz", arrays, [("header", big_header)]), "claims shape")
    arrays = members(path)
    arrays["header"] = np.zeros((1 << 20) + 1, np.uint8)
    assert_rejected(write_npz(tmp_path / "long_header.npz", arrays), "a few kB")


def test_load_never_unpickles(tmp_path):
    _, path = saved_model(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    arrays = members(path)
    arrays.pop("params")
    payload = npy_bytes("|O", (1,), pickle.dumps(np.array([Exploit()], dtype=object), protocol=2))
    assert_rejected(write_npz(tmp_path / "evil.npz", arrays, [("params", payload)]), "Python objects")
    assert not marker.exists()


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    import fastmlp

    model = fastmlp.MLP([256, 512, 512, 10], seed=0)   # ~0.4 M parameters, a 3 MB file
    weights, biases = model.weights, model.biases
    version = 0
    while True:
        version += 1
        model.set_weights([np.full_like(w, version) for w in weights],
                          [np.full_like(b, version) for b in biases])
        model.save(sys.argv[1])
        if version == 1:
            print("saved", flush=True)
""")


def test_killing_a_writer_mid_save_never_destroys_the_file(tmp_path):
    path = tmp_path / "model.npz"
    rng = np.random.default_rng(0)
    versions = []
    for _ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "saved"
        time.sleep(rng.uniform(0.05, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        model = fastmlp.load(path)  # whole, never a torn mixture of two saves
        params = model.flat_parameters
        assert params.size == model.n_parameters and np.all(params == params[0]) and params[0] >= 1
        versions.append(int(params[0]))
    # The killed writers leave at most their one temporary file each, never a damaged model.
    leftovers = [name for name in os.listdir(tmp_path) if name != "model.npz"]
    assert all(name.startswith(".fastmlp-") and name.endswith(".tmp") for name in leftovers)
    assert len(leftovers) <= len(versions)


# ---- concurrency ---------------------------------------------------------------------------------------------


def test_predict_from_four_threads_equals_sequential():
    X, y = blobs(n=600)
    model = small_model()
    model.fit(X, y, epochs=2)
    chunks = [X[i::7] for i in range(7)] * 6
    sequential = [model.predict_proba(chunk) for chunk in chunks]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(model.predict_proba, chunks))
    for got, want in zip(concurrent, sequential):
        np.testing.assert_array_equal(got, want)


def test_fit_while_another_model_predicts():
    X, y = blobs(n=2000)
    predictor = small_model(seed=1)
    predictor.fit(X, y, epochs=1)
    expected = predictor.predict_proba(X)
    trainer, twin = small_model(seed=2), small_model(seed=2)
    done = threading.Event()

    def train():
        trainer.fit(X, y, epochs=4, batch_size=16)
        done.set()

    thread = threading.Thread(target=train)
    thread.start()
    predictions = 0
    while not done.is_set() or predictions == 0:
        np.testing.assert_array_equal(predictor.predict_proba(X), expected)
        predictions += 1
    thread.join()
    twin.fit(X, y, epochs=4, batch_size=16)  # the same seed alone: the same bits
    np.testing.assert_array_equal(trainer.flat_parameters, twin.flat_parameters)


def test_fit_on_one_model_from_two_threads_serialises():
    X, y = blobs(n=1000)
    shared, sequential = small_model(seed=3), small_model(seed=3)
    with ThreadPoolExecutor(2) as pool:
        histories = list(pool.map(lambda _: shared.fit(X, y, epochs=3, batch_size=8), range(2)))
    sequential.fit(X, y, epochs=3, batch_size=8)
    sequential.fit(X, y, epochs=3, batch_size=8)
    assert shared.epochs_trained == 6 and shared._network.step == sequential._network.step
    assert sorted(h.epoch for h in histories) == [[1, 2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(shared.flat_parameters, sequential.flat_parameters)


def test_train_step_and_save_from_threads_take_turns(tmp_path):
    X, y = blobs(n=64)
    model = small_model()

    def steps(_):
        for start in range(0, 64, 8):
            model.train_step(X[start:start + 8], y[start:start + 8])
        model.save(tmp_path / "m.npz")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(steps, range(4)))
    assert model._network.step == 32
    assert fastmlp.load(tmp_path / "m.npz")._network.step in (8, 16, 24, 32)


INTERRUPTED = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    import fastmlp

    # Python's own Ctrl-C handler, also when this test runs from a background job (whose
    # children inherit SIGINT ignored, and Python then installs no handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=20000)
    model = fastmlp.MLP([64, 256, 256, 10], seed=0)
    print("ready", flush=True)
    history = model.fit(X, y, epochs=1000, batch_size=32)
    returned = time.time()
    finite = bool(np.all(np.isfinite(model.flat_parameters)))
    model.save(sys.argv[1])
    print(returned, history.interrupted, model._network.step, finite, flush=True)
""")


def test_sigint_during_fit_stops_it_and_leaves_a_consistent_model(tmp_path):
    path = tmp_path / "m.npz"
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    sent = time.time()
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    returned, interrupted, step, finite = out.split()
    print(f"SIGINT honoured after {float(returned) - sent:.3f} s")
    assert child.returncode == 0 and interrupted == "True" and finite == "True"
    model = fastmlp.load(path)
    assert model._network.step == int(step) > 0
    assert np.all(np.isfinite(model.predict_proba(np.zeros((3, 64), np.float32))))


# ---- memory ----------------------------------------------------------------------------------------------------


def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@not_under_sanitizer
def test_rss_stays_flat_over_10000_train_step_predict_calls():
    X, y = blobs(n=64)
    model = small_model()

    def alternate(times):
        for i in range(times):
            start = (i * 8) % 64
            model.train_step(X[start:start + 8], y[start:start + 8])
            model.predict(X[:16])

    alternate(500)  # warm-up: workspace, allocator pools, caches
    before = resident_bytes()
    alternate(10_000)
    growth = resident_bytes() - before
    print(f"RSS growth over 10000 train_step/predict pairs: {growth / 1e6:.3f} MB")
    assert growth < 5e6


@not_under_sanitizer
def test_kernel_indexes_more_than_2_31_elements():
    n = 2 ** 31 + 16  # float32 zeros: untouched calloc pages, no real memory
    pred, target = np.zeros(n, np.float32), np.zeros(n, np.float32)
    pred[-1] = 3.0     # past 2^31: a 32-bit index would wrap and miss (or misplace) these
    target[2 ** 31 + 1] = 4.0
    loss = K.mse_forward(pred, target)
    np.testing.assert_allclose(loss, (9.0 + 16.0) / n, rtol=1e-6)


# ---- large inputs --------------------------------------------------------------------------------------------


def rss_anon_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def write_memmap(path, rows, features, seed=0):
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, features))
    rng = np.random.default_rng(seed)
    for start in range(0, rows, 8192):
        block = data[start:start + 8192]
        block[:] = rng.standard_normal(block.shape, dtype=np.float32)
    data.flush()
    del data
    return np.load(path, mmap_mode="r")


def rss_anon_growth(run):
    """(run()'s result, the peak growth of anonymous RSS while it ran, sampled every 5 ms)."""
    baseline, peak = rss_anon_bytes(), [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    return result, max(peak[0], rss_anon_bytes()) - baseline


@not_under_sanitizer
def test_memmap_dataset_trains_without_being_copied(tmp_path):
    rows, features = 160_000, 512  # 328 MB
    X = write_memmap(tmp_path / "X.npy", rows, features)
    y = (np.asarray(X[:, 0]) > 0).astype(np.int64)
    model = fastmlp.MLP([features, 8, 2], optimizer=optim.SGD(lr=0.01), seed=0)
    history, growth = rss_anon_growth(lambda: model.fit(X, y, epochs=1, batch_size=256))
    print(f"anonymous RSS growth training on a {X.nbytes / 1e6:.0f} MB memmap: {growth / 1e6:.1f} MB")
    assert np.isfinite(history["loss"][0])
    assert growth < X.nbytes / 20


@not_under_sanitizer
def test_validation_split_of_a_memmap_copies_only_the_validation_rows(tmp_path):
    rows, features = 20_000, 512  # 41 MB, of which validation_split=0.1 holds out 4 MB
    X = write_memmap(tmp_path / "X.npy", rows, features)
    y = (np.asarray(X[:, 0]) > 0).astype(np.int64)
    model = fastmlp.MLP([features, 8, 2], optimizer=optim.SGD(lr=0.01), seed=0)
    history, growth = rss_anon_growth(
        lambda: model.fit(X, y, epochs=1, batch_size=256, validation_split=0.1))
    print(f"anonymous RSS growth with validation_split=0.1 on a {X.nbytes / 1e6:.0f} MB memmap: "
          f"{growth / 1e6:.1f} MB")
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    assert growth < X.nbytes / 4  # a copy of the training rows alone would be 0.9 of it


def test_memmap_and_in_memory_datasets_train_identically(tmp_path):
    X = write_memmap(tmp_path / "X.npy", 300, 5)
    y = (np.asarray(X[:, 0]) > 0).astype(np.int64)
    on_disk, in_memory = small_model(), small_model()
    on_disk.fit(X, y, epochs=2)
    in_memory.fit(np.array(X), y, epochs=2)
    np.testing.assert_array_equal(on_disk.flat_parameters, in_memory.flat_parameters)


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_validation_split_trains_as_on_the_rows_it_keeps(tmp_path, mixup):
    X = write_memmap(tmp_path / "X.npy", 300, 5)
    y = (np.asarray(X[:, 0]) > 0).astype(np.int64)
    split, explicit = small_model(batch_norm=True), small_model(batch_norm=True)
    history = split.fit(X, y, epochs=3, batch_size=16, validation_split=0.2, mixup=mixup)
    # The held-out rows: 60 of a permutation seeded by the model's seed, as fit documents.
    held_out = np.zeros(300, bool)
    held_out[np.random.default_rng([7, 2]).permutation(300)[:60]] = True
    X_in_memory = np.array(X)
    expected = explicit.fit(X_in_memory[~held_out], y[~held_out], epochs=3, batch_size=16,
                            validation_data=(X_in_memory[held_out], y[held_out]), mixup=mixup)
    np.testing.assert_array_equal(split.flat_parameters, explicit.flat_parameters)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history[key] == expected[key]


# ---- masked arrays ----------------------------------------------------------------------------------


def masked_inputs():
    X, y = blobs(n=40)
    weights = np.linspace(0.5, 2.0, len(y))
    return X, y, weights


@pytest.mark.parametrize("where", ["X", "y", "sample_weight"])
def test_masked_entries_are_refused_naming_the_argument(where):
    # np.asarray keeps the values under a mask: reading them as data would be silently wrong.
    X, y, weights = masked_inputs()
    arguments = {"X": X, "y": y, "sample_weight": weights}
    value = arguments[where]
    mask = np.zeros(value.shape, dtype=bool)
    mask.flat[3] = True
    arguments[where] = np.ma.masked_array(value, mask=mask)
    model = fastmlp.MLP([X.shape[1], 8, 3], seed=0)
    with pytest.raises(ValueError, match=rf"^{where} is a masked array with 1 masked entry,"):
        model.fit(arguments["X"], arguments["y"], sample_weight=arguments["sample_weight"], epochs=1)
    assert not model.fitted
    step_names = {"X": "x", "y": "y", "sample_weight": "sample_weight"}
    with pytest.raises(ValueError, match=rf"^{step_names[where]} is a masked array"):
        model.train_step(arguments["X"], arguments["y"], sample_weight=arguments["sample_weight"])
    assert model._network.step == 0
    if where == "X":
        model.fit(X, y, epochs=1)
        with pytest.raises(ValueError, match="^X is a masked array"):
            model.predict(arguments["X"])


def test_masked_regression_targets_are_refused():
    X, _, _ = masked_inputs()
    targets = np.ma.masked_invalid(np.where(np.arange(len(X))[:, None] == 5, np.nan, X[:, :2]))
    model = fastmlp.MLP([X.shape[1], 8, 2], loss="mse", seed=0)
    with pytest.raises(ValueError, match="^y is a masked array with 2 masked entries,"):
        model.fit(X, targets, epochs=1)


def test_a_masked_array_without_masked_entries_trains_as_its_data():
    X, y, weights = masked_inputs()
    plain, masked = (fastmlp.MLP([X.shape[1], 8, 3], seed=0) for _ in range(2))
    plain.fit(X, y, sample_weight=weights, epochs=2, batch_size=16)
    masked.fit(np.ma.masked_array(X), np.ma.masked_array(y), sample_weight=np.ma.masked_array(weights),
               epochs=2, batch_size=16)
    np.testing.assert_array_equal(plain.flat_parameters, masked.flat_parameters)
    np.testing.assert_array_equal(plain.predict_proba(X), masked.predict_proba(np.ma.masked_array(X)))
