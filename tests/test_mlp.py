"""fastmlp.MLP end to end: learning, determinism, persistence, and every bad input's error."""
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastmlp
from fastmlp import optim

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([0, 1, 1, 0])


def blobs(n=200, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    return (centres[y] + rng.normal(size=(n, features))).astype(np.float32), y


def trained_model(**kwargs):
    X, y = blobs()
    options = dict(activation="relu", optimizer=optim.Adam(lr=1e-2), seed=3)
    options.update(kwargs)
    model = fastmlp.MLP([5, 16, 3], **options)
    model.fit(X, y, epochs=3, batch_size=32)
    return model, X, y


# ---- learning ----------------------------------------------------------------------------------------


def test_two_layer_mlp_learns_xor():
    model = fastmlp.MLP([2, 8, 2], activation="tanh", optimizer=optim.Adam(lr=0.05), seed=0,
                        dtype="float64")
    model.fit(XOR_X, XOR_Y, epochs=300, batch_size=4)
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0
    np.testing.assert_array_equal(model.predict(XOR_X), XOR_Y)


def test_single_layer_cannot_learn_xor():
    # A linear model's best on XOR is 3 of 4 points: no line separates the classes.
    for seed in range(3):
        model = fastmlp.MLP([2, 2], optimizer=optim.Adam(lr=0.05), seed=seed, dtype="float64")
        model.fit(XOR_X, XOR_Y, epochs=300, batch_size=4)
        assert model.evaluate(XOR_X, XOR_Y)["accuracy"] <= 0.75


def test_history_records_each_epoch_and_loss_falls():
    X, y = blobs()
    model = fastmlp.MLP([5, 16, 3], seed=0, optimizer=optim.Adam(lr=1e-2))
    history = model.fit(X, y, epochs=5, batch_size=16, validation_split=0.25)
    assert len(history) == 5 and history.epoch == [1, 2, 3, 4, 5]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
        assert len(history[key]) == 5
    assert history["loss"][-1] < history["loss"][0]
    # The reported train loss is the mean of the batches' losses; evaluate agrees in scale.
    assert 0 <= history["accuracy"][-1] <= 1


def test_fit_again_continues_training():
    X, y = blobs()
    model = fastmlp.MLP([5, 16, 3], seed=0)
    model.fit(X, y, epochs=2)
    before = model.flat_parameters
    history = model.fit(X, y, epochs=1)
    assert history.epoch == [3]
    assert not np.array_equal(before, model.flat_parameters)


def test_early_stopping_restores_best_weights():
    X, y = blobs(n=120)
    Xv, yv = blobs(n=60, seed=1)
    # A very large learning rate makes the validation loss wander; the best epoch comes back.
    model = fastmlp.MLP([5, 64, 3], seed=0, optimizer=optim.SGD(lr=0.5, momentum=0.9))
    history = model.fit(X, y, epochs=40, batch_size=8, validation_data=(Xv, yv),
                        early_stopping=True, patience=2)
    best = min(history["val_loss"])
    assert history.stopped_early or len(history) == 40
    assert model.evaluate(Xv, yv)["loss"] == pytest.approx(best, rel=1e-5)


def test_callback_returning_false_stops():
    X, y = blobs()
    seen = []
    model = fastmlp.MLP([5, 8, 3], seed=0)
    history = model.fit(X, y, epochs=10, callbacks=[lambda epoch, logs: seen.append(epoch) or epoch < 2])
    assert seen == [1, 2] and len(history) == 2


def test_predict_proba_rows_are_probabilities_and_match_predict():
    model, X, _ = trained_model()
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(X), proba.argmax(axis=1))
    # One sample predicts what it predicts inside a batch.
    np.testing.assert_allclose(model.predict_proba(X[3:4])[0], proba[3], rtol=1e-6)


def test_weights_have_fan_in_fan_out_shapes_and_round_trip():
    model = fastmlp.MLP([784, 256, 10], seed=0)
    assert [w.shape for w in model.weights] == [(784, 256), (256, 10)]
    assert [b.shape for b in model.biases] == [(256,), (10,)]
    weights = [w * 2 for w in model.weights]
    biases = [b + 1 for b in model.biases]
    model.set_weights(weights, biases)
    for got, want in zip(model.weights + model.biases, weights + biases):
        np.testing.assert_array_equal(got, want.astype(np.float32))


def test_forward_matches_an_independent_numpy_forward():
    model, X, _ = trained_model(activation="tanh")
    hidden = np.tanh(X.astype(np.float64) @ model.weights[0] + model.biases[0])
    logits = hidden @ model.weights[1] + model.biases[1]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X), expected, atol=1e-5)


def test_initialisation_scales():
    relu = fastmlp.MLP([1000, 500, 10], activation="relu", seed=0)
    tanh = fastmlp.MLP([1000, 500, 10], activation="tanh", seed=0)
    assert np.std(relu.weights[0]) == pytest.approx(np.sqrt(2 / 1000), rel=0.02)  # He
    assert np.std(tanh.weights[0]) == pytest.approx(np.sqrt(2 / 1500), rel=0.02)  # Glorot
    assert all(np.all(b == 0) for b in relu.biases)


def test_regression_losses_fit_a_line():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(256, 1))
    y = 3 * X[:, 0] - 1
    for loss in ("mse", "gaussian_nll"):
        model = fastmlp.MLP([1, 1], loss=loss, optimizer=optim.Adam(lr=0.05), seed=0, dtype="float64")
        model.fit(X, y, epochs=150, batch_size=64)
        np.testing.assert_allclose(model.weights[0][0, 0], 3, atol=0.05)
        assert model.predict(X).shape == (256,)
    mean, variance = model.predict_distribution(X)
    assert mean.shape == variance.shape == (256, 1) and np.all(variance > 0)


def test_bce_multilabel():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0], axis=1).astype(float)
    model = fastmlp.MLP([4, 16, 2], loss="bce", optimizer=optim.Adam(lr=1e-2), seed=0)
    model.fit(X, Y, epochs=30, batch_size=32)
    assert model.evaluate(X, Y)["accuracy"] > 0.9
    assert model.predict(X).shape == (300, 2)


def test_dropout_and_batch_norm_train():
    X, y = blobs(n=300)
    model = fastmlp.MLP([5, 32, 32, 3], dropout=0.2, batch_norm=True, seed=0,
                        optimizer=optim.Adam(lr=1e-2))
    model.fit(X, y, epochs=10, batch_size=32)
    assert model.evaluate(X, y)["accuracy"] > 0.9
    # Evaluation is deterministic (no dropout, running statistics).
    np.testing.assert_array_equal(model.predict_proba(X), model.predict_proba(X))


# ---- determinism ---------------------------------------------------------------------------------------


def fit_params(threads, **kwargs):
    previous = fastmlp.get_num_threads()
    fastmlp.set_num_threads(threads)
    try:
        X, y = blobs(n=600, features=40)
        model = fastmlp.MLP([40, 300, 200, 3], seed=5, dropout=0.1, **kwargs)
        model.fit(X, y, epochs=2, batch_size=200)
        return model.flat_parameters
    finally:
        fastmlp.set_num_threads(previous)


@pytest.mark.parametrize("kwargs", [{}, {"batch_norm": True, "dtype": "float64"}])
def test_same_seed_same_bits_at_one_and_two_threads(kwargs):
    one = fit_params(1, **kwargs)
    np.testing.assert_array_equal(one, fit_params(1, **kwargs))
    np.testing.assert_array_equal(one, fit_params(2, **kwargs))


def test_different_seeds_differ():
    X, y = blobs()
    a = fastmlp.MLP([5, 8, 3], seed=1)
    b = fastmlp.MLP([5, 8, 3], seed=2)
    assert not np.array_equal(a.flat_parameters, b.flat_parameters)


# ---- persistence -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"batch_norm": True, "dropout": 0.3, "optimizer": optim.SGD(lr=0.01, momentum=0.9, nesterov=True)},
    {"dtype": "float64", "optimizer": optim.RMSprop(centered=True, momentum=0.5)},
])
def test_save_load_predicts_identically_and_resumes_exactly(tmp_path, kwargs):
    model, X, y = trained_model(**kwargs)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastmlp.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    model.fit(X, y, epochs=2, batch_size=16)
    loaded.fit(X, y, epochs=2, batch_size=16)
    np.testing.assert_array_equal(loaded.flat_parameters, model.flat_parameters)
    assert loaded.epochs_trained == model.epochs_trained == 5


@pytest.mark.parametrize("n_threads", [None, 1, 3])
def test_save_load_keeps_the_models_own_thread_count(tmp_path, n_threads):
    model, X, _ = trained_model(n_threads=n_threads)
    model.save(tmp_path / "model.npz")
    loaded = fastmlp.load(tmp_path / "model.npz")
    assert loaded.n_threads == n_threads
    # The count its calls are held to (0: the process's); a call this small still runs on one
    # thread (tests/test_threads.py covers how a call applies it).
    assert loaded._network.num_threads == (n_threads or 0)
    loaded.predict(X)
    assert loaded._network.last_call_threads == 1


def test_files_saved_without_n_threads_load_with_none(tmp_path):
    import json

    model, X, _ = trained_model(n_threads=2)
    model.save(tmp_path / "model.npz")

    def as_written_before_n_threads_was_saved(arrays):
        header = json.loads(arrays["header"].tobytes())
        del header["n_threads"]
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)

    old = rewrite(tmp_path, tmp_path / "model.npz", "old.npz", as_written_before_n_threads_was_saved)
    with np.load(old) as archive:
        assert "n_threads" not in json.loads(archive["header"].tobytes())
    loaded = fastmlp.load(old)
    assert loaded.n_threads is None
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path):
    model, _, _ = trained_model()
    path = tmp_path / "model.npz"
    model.save(path)
    model.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]


def damaged_copies(tmp_path, source):
    data = source.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    return [truncated, garbage]


def rewrite(tmp_path, source, name, change):
    with np.load(source) as archive:
        arrays = {key: archive[key] for key in archive.files}
    change(arrays)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_load_rejects_damaged_and_forged_files(tmp_path):
    import json

    model, _, _ = trained_model()
    source = tmp_path / "model.npz"
    model.save(source)

    def header_edit(**fields):
        def change(arrays):
            header = json.loads(arrays["header"].tobytes())
            header.update(fields)
            arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        return change

    bad_files = damaged_copies(tmp_path, source) + [
        rewrite(tmp_path, source, "version.npz", header_edit(format_version=99)),
        rewrite(tmp_path, source, "sizes.npz", header_edit(layer_sizes=[5, 17, 3])),
        rewrite(tmp_path, source, "no_params.npz", lambda arrays: arrays.pop("params")),
        rewrite(tmp_path, source, "short.npz", lambda arrays: arrays.update(params=arrays["params"][:-1])),
        rewrite(tmp_path, source, "huge.npz", header_edit(layer_sizes=[5, 10 ** 12, 3])),
        rewrite(tmp_path, source, "header.npz", lambda arrays: arrays.update(header=np.arange(3.0))),
    ]
    for path in bad_files:
        with pytest.raises(ValueError, match="not a valid fastmlp model file"):
            fastmlp.load(path)


def test_load_refuses_pickled_arrays(tmp_path):
    model, _, _ = trained_model()
    source = tmp_path / "model.npz"
    model.save(source)
    path = rewrite(tmp_path, source, "pickled.npz",
                   lambda arrays: arrays.update(params=np.array([object()], dtype=object)))
    with pytest.raises(ValueError, match="not a valid fastmlp model file"):
        fastmlp.load(path)


def test_load_missing_file():
    with pytest.raises(FileNotFoundError):
        fastmlp.load("/nonexistent/model.npz")


def test_save_to_a_bad_place_names_the_path(tmp_path):
    model = fastmlp.MLP([3, 2], seed=0)
    missing = tmp_path / "no" / "m.npz"
    with pytest.raises(FileNotFoundError, match=f"cannot save to '{missing}'.*does not exist"):
        model.save(missing)
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        model.save(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_a_network_too_large_for_memory_says_so():
    with pytest.raises(MemoryError, match=r"layer_sizes=\[1000000, 1000000, 3\] need 1,000,004,000,003 parameters"):
        fastmlp.MLP([10**6, 10**6, 3], seed=0)


# ---- bad inputs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, message", [
    ({"activation": "swish"}, ValueError, "unknown activation 'swish'; valid: identity, sigmoid"),
    ({"activation": "step"}, ValueError, "Perceptron"),
    ({"activation": ["relu", "tanh"]}, ValueError, "one name per hidden layer"),
    ({"loss": "hinge"}, ValueError, "unknown loss 'hinge'; valid: cross_entropy, mse, bce, gaussian_nll"),
    ({"optimizer": "lbfgs"}, ValueError, "unknown optimizer 'lbfgs'; valid: sgd, adagrad"),
    ({"optimizer": 3}, TypeError, "optimizer must be a name"),
    ({"dropout": 1.0}, ValueError, "dropout must be in"),
    ({"dtype": "float16"}, ValueError, "dtype must be float32 or float64"),
    ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
    ({"class_weights": [1, 2]}, ValueError, "class_weights must be 3"),
    ({"label_smoothing": 1.5}, ValueError, "label_smoothing must be in"),
])
def test_bad_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastmlp.MLP([5, 16, 3], **kwargs)


@pytest.mark.parametrize("sizes, message", [([5], "at least an input"), ([5, 0, 3], r"layer_sizes\[1\]"),
                                            ("53", "sequence of ints"), ([5, 2.5, 3], r"layer_sizes\[1\]")])
def test_bad_layer_sizes(sizes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fastmlp.MLP(sizes)


@pytest.mark.parametrize("option, value, message", [
    ("lr", -1, r"lr must be in \[0.0, inf\], got -1.0"),
    ("betas", (0.9, 1.0), r"betas\[1\] must be in"),
    ("eps", float("nan"), "eps must be in"),
])
def test_bad_optimizer_options(option, value, message):
    with pytest.raises(ValueError, match=message):
        optim.Adam(**{option: value})
    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0"):
        optim.SGD(nesterov=True)


def bad_fit_inputs():
    X, y = blobs(n=10)
    return [
        ("wrong width", X[:, :4], y, ValueError, "X must have 5 columns"),
        ("1-D X", X[0], y, ValueError, "X must be 2-D"),
        ("empty", X[:0], y[:0], ValueError, "X is empty"),
        ("complex", X.astype(complex), y, TypeError, "X must hold real numbers"),
        ("object", X.astype(object), y, TypeError, "X must hold real numbers"),
        ("strings", np.full((10, 5), "a"), y, TypeError, "X must hold real numbers"),
        ("NaN", np.where(np.eye(10, 5) > 0, np.nan, X), y, ValueError, "X contains NaN"),
        ("inf", np.where(np.eye(10, 5) > 0, np.inf, X), y, ValueError, "X contains NaN or infinity"),
        ("label too big", X, np.where(y == 0, 3, y), ValueError, r"label 3, outside \[0, 3\)"),
        ("negative label", X, np.where(y == 0, -1, y), ValueError, r"label -1, outside"),
        ("fractional label", X, y + 0.5, ValueError, "integer class labels, got 0.5|integer class labels"),
        ("label count", X, y[:-1], ValueError, "9 labels but X has 10 rows"),
        ("string labels", X, y.astype(str), TypeError, "integer class labels"),
    ]


@pytest.mark.parametrize("case", bad_fit_inputs(), ids=lambda case: case[0])
def test_bad_fit_inputs(case):
    _, X, y, error, message = case
    model = fastmlp.MLP([5, 8, 3], seed=0)
    with pytest.raises(error, match=message):
        model.fit(X, y, epochs=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"verbose": 3}, "verbose must be 0, 1 or 2"),
    ({"validation_split": 1.0}, "validation_split must be in"),
    ({"validation_data": (1, 2, 3, 4)}, "validation_data must be a pair"),
])
def test_bad_fit_options(kwargs, message):
    X, y = blobs(n=10)
    with pytest.raises(ValueError, match=message):
        fastmlp.MLP([5, 8, 3], seed=0).fit(X, y, **kwargs)


def test_non_contiguous_inputs_are_copied_not_misread():
    X, y = blobs(n=50)
    wide = np.zeros((50, 10), dtype=np.float32)
    wide[:, ::2] = X
    strided = wide[:, ::2]
    assert not strided.flags.c_contiguous
    model, _, _ = trained_model()
    np.testing.assert_array_equal(model.predict_proba(strided), model.predict_proba(X))
    np.testing.assert_array_equal(model.predict_proba(X[::-1]), model.predict_proba(X)[::-1])


def test_predict_before_fit_raises():
    model = fastmlp.MLP([5, 8, 3])
    with pytest.raises(fastmlp.NotFittedError, match="not fitted"):
        model.predict(np.zeros((1, 5)))
    with pytest.raises(fastmlp.NotFittedError):
        model.evaluate(np.zeros((1, 5)), [0])


def test_predict_proba_needs_a_classifier():
    model = fastmlp.MLP([1, 1], loss="mse", seed=0).set_weights([np.ones((1, 1))], [np.zeros(1)])
    with pytest.raises(ValueError, match="predict_proba needs loss"):
        model.predict_proba(np.zeros((2, 1)))


def test_set_weights_checks_shapes():
    model = fastmlp.MLP([5, 8, 3], seed=0)
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \(8, 3\), got \(3, 8\)"):
        model.set_weights([np.zeros((5, 8)), np.zeros((3, 8))], [np.zeros(8), np.zeros(3)])
    with pytest.raises(ValueError, match="needs 2 weight matrices"):
        model.set_weights([np.zeros((5, 8))], [np.zeros(8)])


def test_diverging_training_raises_instead_of_returning_a_broken_model():
    X, y = blobs()
    model = fastmlp.MLP([5, 16, 3], seed=0, optimizer=optim.SGD(lr=1e6))
    # The updates overflow the forward pass (NaN/inf logits), so the model goes back to the
    # last state whose outputs were finite.
    with pytest.raises(FloatingPointError, match="network's outputs on a batch are NaN or infinite"):
        model.fit(X * 1e3, y, epochs=5)
    assert np.isfinite(model._network.predict(X * 1e3)).all()


def test_threads_setting():
    previous = fastmlp.get_num_threads()
    try:
        fastmlp.set_num_threads(1)
        assert fastmlp.get_num_threads() == 1
        with pytest.raises(ValueError, match=r"n must be an integer in \[1, 4096\] or None, got 0"):
            fastmlp.set_num_threads(0)
    finally:
        fastmlp.set_num_threads(previous)


def test_omp_num_threads_is_honoured():
    code = "import fastmlp; print(fastmlp.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_build_info_reports_the_build():
    info = fastmlp.build_info()
    assert info["openmp"] is True and info["openmp_version"] >= 201107
    assert "portable" in info["simd_compiled"]
    assert info["gemm_kernel"] in info["simd_compiled"]
    assert info["compiler"]


# ---- float32 prediction weights packed once ---------------------------------------------------------

FLOAT_ISAS = [isa for isa in ("portable", "avx2", "avx512") if fastmlp._core.kernels.cpu_supports_isa(isa)]


@pytest.fixture(params=FLOAT_ISAS)
def float_isa(request):
    fastmlp._core.kernels.set_isa(request.param)
    yield request.param
    fastmlp._core.kernels.set_isa("auto")


def forward_with_gemm(model, X):
    """A relu network's outputs (mse: no link) through kernels.gemm layer by layer, which packs
    W_l as it goes; bias and relu in NumPy (float32 adds and max, the epilogue's bits)."""
    h = X
    for layer, (w, b) in enumerate(zip(model.weights, model.biases)):
        h = fastmlp._core.kernels.gemm(h, w) + b
        if layer < len(model.weights) - 1:
            h = np.maximum(h, np.float32(0))
    return h


def assert_same_bits(actual, expected):
    assert actual.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


def test_float32_predictions_read_weights_packed_once_with_the_bits_of_the_product(float_isa):
    # Several rows read each W_l packed once per change of the weights (one row reads W_l in
    # place): every batch size and thread count gives each row the product's bits.
    model = fastmlp.MLP([784, 256, 40, 10], activation="relu", loss="mse", seed=3)
    model.fitted = True
    X = np.random.default_rng(23).standard_normal((300, 784)).astype(np.float32)
    expected = forward_with_gemm(model, X)
    assert_same_bits(model.predict(X), expected)
    for first, last in ((0, 1), (7, 10), (20, 37), (100, 300), (0, 2)):
        assert_same_bits(model.predict(X[first:last]), expected[first:last])
    model.n_threads = 2
    assert_same_bits(model.predict(X), expected)
    assert_same_bits(model.predict(X[5:15]), expected[5:15])


def test_float32_packed_prediction_weights_follow_every_change_of_weights_dtype_and_isa(float_isa, tmp_path):
    # Bit for bit against the product after each change the packed weights must follow: a
    # step, fit, set_weights, a write through the parameter view, assign, load, a detour
    # through compute_dtype="bfloat16" with training there, set_isa.
    model = fastmlp.MLP([30, 48, 20, 3], activation="relu", loss="mse", seed=3)
    model.fitted = True
    rng = np.random.default_rng(24)
    X = rng.standard_normal((64, 30)).astype(np.float32)
    y = rng.standard_normal((64, 3)).astype(np.float32)

    def assert_current(m=model):
        assert_same_bits(m.predict(X), forward_with_gemm(m, X))
        assert_same_bits(m.predict(X[3:13]), forward_with_gemm(m, X[3:13]))

    assert_current()
    model.train_step(X, y)
    assert_current()
    model.fit(X, y, epochs=2, batch_size=16)
    assert_current()
    model.set_weights([w[:, ::-1].copy() if w.shape[1] > 3 else w for w in model.weights], model.biases)
    assert_current()
    model._network.params[:] *= 1.5
    assert_current()
    model._network.assign("params", model.flat_parameters[::-1].copy())
    assert_current()
    model.save(tmp_path / "model.npz")
    loaded = fastmlp.load(tmp_path / "model.npz")
    assert_current(loaded)
    before = model.predict(X)
    model.compute_dtype = "bfloat16"
    model.train_step(X, y)  # in bfloat16: the float32 packed weights are stale now
    model.compute_dtype = None
    assert_current()
    assert not np.array_equal(model.predict(X), before)
    if float_isa != "portable":  # another instruction set packs for its own kernels
        fastmlp._core.kernels.set_isa("portable")
        assert_current()
        fastmlp._core.kernels.set_isa(float_isa)
        assert_current()
