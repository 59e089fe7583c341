"""loss='poisson' (log link) end to end: the kernels against the NumPy reference and torch's
PoissonNLLLoss, network gradients against finite differences, trajectories against
ReferenceMLP, validation and on_nan, evaluate's deviance, save/load, ONNX, and the
scikit-learn adapter against scikit-learn's own MLPRegressor(loss='poisson')."""
import warnings

import numpy as np
import pytest

from conftest import DTYPES, assert_close, numerical_gradient

import fastmlp
from fastmlp import optim
from fastmlp import reference as R
from fastmlp._core import kernels as K
from fastmlp.mlp import ACTIVATIONS
from fastmlp.reference import ReferenceMLP


def counts(rng, shape, mean=2.0):
    """Poisson counts, zeros included (the y log y = 0 corner)."""
    return rng.poisson(mean, size=shape).astype(np.float64)


def poisson_problem(rng, n=200, n_features=4, n_outputs=1):
    """Counts whose log-mean is linear in X, so a small network can learn them."""
    X = rng.normal(size=(n, n_features))
    log_mean = 0.3 + X[:, :n_outputs] * 0.6 - 0.4 * X[:, n_outputs:n_outputs + 1]
    y = rng.poisson(np.exp(log_mean)).astype(np.float64)
    return X, (y[:, 0] if n_outputs == 1 else y)


# ---- kernels ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (13, 17), (129, 33)])
@pytest.mark.parametrize("weighted", [False, True])
def test_kernels_match_the_reference(rng, dtype, shape, weighted):
    log_mean = (1.5 * rng.standard_normal(shape)).astype(dtype)
    target = counts(rng, shape).astype(dtype)
    weights = rng.uniform(0, 2, shape[0]).astype(dtype) if weighted else None
    loss = K.poisson_nll_forward(log_mean, target, weights)
    assert_close(loss, R.poisson_nll_forward(log_mean, target, weights), dtype, scale=10)
    gradient = K.poisson_nll_backward(log_mean, target, weights)
    assert gradient.dtype == dtype and gradient.shape == shape
    assert_close(gradient, R.poisson_nll_backward(log_mean, target, weights), dtype)


def test_kernels_equal_the_formula_and_weights_are_a_weighted_mean(rng):
    z, y = rng.standard_normal((9, 2)), counts(rng, (9, 2))
    per_element = np.exp(z) - y * z
    assert K.poisson_nll_forward(z, y) == pytest.approx(per_element.mean(), rel=1e-13)
    np.testing.assert_allclose(K.poisson_nll_backward(z, y), (np.exp(z) - y) / z.size, rtol=1e-13)
    # Integer weights repeat rows; all-ones weights give the same bits as none.
    w = rng.integers(0, 4, 9).astype(np.float64)
    repeated = np.repeat(np.arange(9), w.astype(int))
    assert K.poisson_nll_forward(z, y, w) == pytest.approx(
        K.poisson_nll_forward(z[repeated], y[repeated]), rel=1e-13)
    assert K.poisson_nll_forward(z, y, np.ones(9)) == K.poisson_nll_forward(z, y)
    np.testing.assert_array_equal(K.poisson_nll_backward(z, y, np.ones(9)), K.poisson_nll_backward(z, y))


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_overflow_to_infinity_without_crashing(dtype):
    z = np.array([[1000.0, 0.0]], dtype=dtype) if dtype == np.float64 else np.array([[100.0, 0.0]], dtype=dtype)
    y = np.array([[1.0, 2.0]], dtype=dtype)
    assert K.poisson_nll_forward(z, y) == np.inf
    assert np.isinf(K.poisson_nll_backward(z, y)[0, 0])


@pytest.mark.parametrize("weighted", [False, True])
def test_kernels_match_torch_poisson_nll_loss(rng, weighted):
    torch = pytest.importorskip("torch")
    z, y = 1.5 * rng.standard_normal((31, 3)), counts(rng, (31, 3), mean=3.0)
    w = rng.uniform(0, 2, 31) if weighted else None
    z_torch = torch.tensor(z, requires_grad=True)
    if weighted:
        per_element = torch.nn.PoissonNLLLoss(log_input=True, full=False, reduction="none")(
            z_torch, torch.tensor(y))
        w_torch = torch.tensor(w)[:, None]
        loss = (per_element * w_torch).sum() / (w_torch.sum() * 3)
    else:
        loss = torch.nn.PoissonNLLLoss(log_input=True, full=False)(z_torch, torch.tensor(y))
    loss.backward()
    assert K.poisson_nll_forward(z, y, w) == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(K.poisson_nll_backward(z, y, w), z_torch.grad.numpy(), rtol=1e-12, atol=1e-15)


# ---- the network -------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_network_gradients_match_finite_differences(rng, activation, weighted):
    model = fastmlp.MLP([4, 5, 3], activation=activation, loss="poisson", dtype="float64", seed=1)
    X, y = rng.normal(size=(8, 4)), counts(rng, (8, 3))
    w = rng.uniform(0.1, 2, 8) if weighted else None
    loss, analytic = model.gradients(X, y, sample_weight=w)
    start = model.flat_parameters
    numeric = numerical_gradient(lambda theta: model.loss_and_gradient(theta, X, y, sample_weight=w)[0], start)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)
    assert np.linalg.norm(numeric) > 1e-3
    reference = ReferenceMLP([4, 5, 3], activation, loss="poisson", dtype=np.float64)
    reference.set_flat_params(start)
    ref_loss, ref_gradient = reference.compute_gradients(X, y, sample_weights=w)
    assert loss == pytest.approx(float(ref_loss), rel=1e-12)
    np.testing.assert_allclose(analytic, ref_gradient, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_training_follows_the_reference_for_20_steps(rng, weighted):
    optimizer = optim.SGD(lr=0.02, momentum=0.9)
    model = fastmlp.MLP([5, 7, 3], activation="tanh", loss="poisson", optimizer=optimizer,
                        dtype="float64", seed=3)
    reference = ReferenceMLP([5, 7, 3], "tanh", loss="poisson", optimizer="sgd",
                             optimizer_options=dict(optimizer.options))
    reference.set_flat_params(model.flat_parameters)
    start = model.flat_parameters
    for step in range(20):
        x, y = rng.normal(size=(8, 5)), counts(rng, (8, 3))
        w = rng.uniform(0, 2, 8) if weighted else None
        ours, theirs = model.train_step(x, y, sample_weight=w), reference.train_step(x, y, w)
        assert ours == pytest.approx(float(theirs), rel=1e-10), f"loss at step {step}"
    np.testing.assert_allclose(model.flat_parameters, reference.params, rtol=1e-10, atol=1e-13)
    assert np.max(np.abs(model.flat_parameters - start)) > 1e-2  # it did move
    X = rng.normal(size=(11, 5))
    np.testing.assert_allclose(model.predict(X), reference.predict(X), rtol=1e-10)


def test_predict_is_exp_of_the_last_layer_and_fit_learns_the_means(rng):
    X, y = poisson_problem(rng, n=2000)
    model = fastmlp.MLP([4, 16, 1], loss="poisson", optimizer=optim.Adam(lr=0.01), seed=0,
                        dtype="float64")
    history = model.fit(X, y, epochs=15, batch_size=32)
    assert history["loss"][-1] < history["loss"][0]
    (w0, w1), (b0, b1) = model.weights, model.biases
    log_mean = np.maximum(X @ w0 + b0, 0) @ w1 + b1
    np.testing.assert_allclose(model.predict(X), np.exp(log_mean[:, 0]), rtol=1e-12)
    true_mean = np.exp(0.3 + 0.6 * X[:, 0] - 0.4 * X[:, 1])
    # Far closer to the true means than the best constant (the mean count) is.
    assert np.mean((model.predict(X) - true_mean) ** 2) < 0.25 * np.var(true_mean)


def test_evaluate_reports_the_loss_and_scikit_learns_mean_poisson_deviance(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    X, y = poisson_problem(rng, n=300, n_outputs=2)
    model = fastmlp.MLP([4, 8, 2], loss="poisson", seed=0)
    model.fit(X, y, epochs=3)
    w = rng.uniform(0.1, 3, 300).astype(np.float32).astype(np.float64)  # what the model uses
    for weights in (None, w):
        result = model.evaluate(X, y, sample_weight=weights)
        mean = model.predict(X).astype(np.float64)
        assert set(result) == {"loss", "deviance"}
        per_row = np.mean(mean - y * np.log(mean), axis=1)
        assert result["loss"] == pytest.approx(np.average(per_row, weights=weights), rel=1e-5)
        expected = np.mean([metrics.mean_poisson_deviance(y[:, k], mean[:, k], sample_weight=weights)
                            for k in range(2)])
        assert result["deviance"] == pytest.approx(expected, rel=1e-10)
    assert model.score(X, y) == pytest.approx(-model.evaluate(X, y)["loss"])


def test_ensemble_loss_is_the_poisson_loss_of_the_averaged_means(rng):
    X, y = poisson_problem(rng, n=100)
    members = [fastmlp.MLP([4, 6, 1], loss="poisson", seed=seed, dtype="float64") for seed in (1, 2)]
    for member in members:
        member.fit(X, y, epochs=2)
    single = fastmlp.Ensemble(members[:1]).evaluate(X, y)["loss"]
    assert single == pytest.approx(members[0].evaluate(X, y)["loss"], rel=1e-10)
    mean = (members[0].predict(X) + members[1].predict(X)) / 2
    assert fastmlp.Ensemble(members).evaluate(X, y)["loss"] == pytest.approx(
        np.mean(mean - y * np.log(mean)), rel=1e-10)


# ---- errors and divergence -------------------------------------------------------------


def test_negative_or_non_finite_targets_are_refused_by_name_and_value(rng):
    X = rng.normal(size=(5, 3))
    model = fastmlp.MLP([3, 4, 2], loss="poisson", seed=0)
    y = counts(rng, (5, 2))
    y[3, 1] = -0.5
    with pytest.raises(ValueError, match=r"y must be >= 0 for loss='poisson' .*got -0\.5 in row 3, column 1"):
        model.fit(X, y)
    with pytest.raises(ValueError, match=r"y must be >= 0 .*got -0\.5"):
        model.train_step(X, y)
    with pytest.raises(ValueError, match=r"y must be >= 0 .*got -0\.5"):
        model.loss_and_gradient(model.flat_parameters, X, y)
    with pytest.raises(ValueError, match=r"y_val must be >= 0 .*got -0\.5"):
        model.fit(X, np.abs(y), validation_data=(X, y))
    single = fastmlp.MLP([3, 1], loss="poisson", seed=0)
    with pytest.raises(ValueError, match=r"y must be >= 0 .*got -2\.0 in row 1$"):
        single.fit(X, [0.0, -2.0, 1.0, 3.0, 0.0])
    y[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"y contains NaN or infinity \(nan in row 3, column 1\)"):
        model.fit(X, y)
    with pytest.raises(TypeError, match="y must hold real numbers"):
        model.fit(X, np.array([["a", "b"]] * 5))
    assert not model.fitted  # nothing was trained on the refused targets


def test_exp_overflow_follows_on_nan(rng):
    X, y = poisson_problem(rng, n=64, n_features=3)

    def diverging():  # a step of lr 1e4 sends the log-means far past exp's range
        return fastmlp.MLP([3, 1], loss="poisson", optimizer=optim.SGD(lr=1e4), seed=0)

    model = diverging()
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        model.fit(X, y, epochs=3, batch_size=8)
    model = diverging()
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        history = model.fit(X, y, epochs=3, batch_size=8, on_nan="restore")
    # The last good point: the parameters before the refused step, finite.
    assert history.stopped_on_nan and len(history) == 0
    assert model._network.step >= 1 and np.all(np.isfinite(model.flat_parameters))
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        huge = fastmlp.MLP([3, 1], loss="poisson", seed=0)
        huge.set_weights([np.full((3, 1), 100.0)], [np.zeros(1)])
        huge.train_step(np.ones((2, 3)), [1.0, 2.0])


# ---- persistence and export -------------------------------------------------------------


def test_save_and_load_round_trip(rng, tmp_path):
    X, y = poisson_problem(rng, n=120)
    model = fastmlp.MLP([4, 6, 1], loss="poisson", seed=5, dtype="float64")
    model.fit(X, y, epochs=2)
    model.save(tmp_path / "model.npz")
    loaded = fastmlp.load(tmp_path / "model.npz")
    assert loaded.loss == "poisson"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # Training continues exactly where it stopped.
    model.fit(X, y, epochs=1)
    loaded.fit(X, y, epochs=1)
    np.testing.assert_array_equal(loaded.flat_parameters, model.flat_parameters)


@pytest.mark.parametrize("dtype, tolerance", [("float32", dict(rtol=1e-5)), ("float64", dict(rtol=1e-12))])
def test_onnx_predicts_the_means(rng, tmp_path, dtype, tolerance):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    X, y = poisson_problem(rng, n=200, n_outputs=2)
    model = fastmlp.MLP([4, 9, 2], activation="tanh", loss="poisson", seed=3, dtype=dtype,
                        batch_norm=True)
    model.fit(X, y, epochs=3)
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert ops[-1] == "Exp" and ops.count("Gemm") == 2
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["predictions"]
    (predictions,) = session.run(None, {"X": X.astype(dtype)})
    np.testing.assert_allclose(predictions, model.predict(X.astype(dtype)), **tolerance)


# ---- the scikit-learn adapter -----------------------------------------------------------


def _sklearn():
    pytest.importorskip("scipy")
    return pytest.importorskip("sklearn.neural_network")


def test_sklearn_lbfgs_reaches_scikit_learns_loss_and_predictions(rng):
    sk = _sklearn()
    from fastmlp.sklearn import MLPRegressor
    X, y = poisson_problem(rng, n=300)
    # Both converge (well within max_iter) from the same Glorot-uniform start.
    params = dict(loss="poisson", solver="lbfgs", hidden_layer_sizes=(3,), activation="relu",
                  alpha=1e-2, max_iter=1000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning
        ours, theirs = MLPRegressor(**params).fit(X, y), sk.MLPRegressor(**params).fit(X, y)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    assert ours.n_iter_ < 1000
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-5)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-3)
    # loss_ is scikit-learn's half Poisson deviance (+ the L2 penalty) of our predictions.
    from scipy.special import xlogy
    mean = ours.predict(X)
    squares = sum(float(np.sum(w ** 2)) for w in ours.coefs_)
    assert ours.loss_ == pytest.approx(np.mean(xlogy(y, y / mean) - y + mean)
                                       + 0.5 * 1e-2 * squares / len(y), rel=1e-8)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_sklearn_stochastic_loss_curve_follows_scikit_learns(rng, solver):
    # Same initial draws, no shuffling, full-size batches: the loss curves agree only if the
    # gradient scale (n_outputs, with two outputs here) and loss_'s constant are scikit-learn's.
    sk = _sklearn()
    from fastmlp.sklearn import MLPRegressor
    from sklearn.exceptions import ConvergenceWarning
    X, y = poisson_problem(rng, n=200, n_outputs=2)
    params = dict(loss="poisson", solver=solver, hidden_layer_sizes=(8,), learning_rate_init=0.01,
                  max_iter=8, shuffle=False, batch_size=50, alpha=0.0, random_state=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPRegressor(**params).fit(X, y), sk.MLPRegressor(**params).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-3)
    assert ours.model_.loss == "poisson"


def test_sklearn_refuses_negative_targets_and_unknown_losses(rng):
    _sklearn()
    from fastmlp.sklearn import MLPRegressor
    X, y = poisson_problem(rng, n=20)
    y[4] = -1.0
    with pytest.raises(ValueError, match=r"out of the valid range of the loss 'poisson'.*-1\.0"):
        MLPRegressor(loss="poisson", max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="gamma", max_iter=2).fit(X, np.abs(y))
    # squared_error keeps taking any real y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert MLPRegressor(max_iter=2).fit(X, y).out_activation_ == "identity"
