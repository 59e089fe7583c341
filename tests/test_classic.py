"""Tests of fastmlp.classic against independent computations: hand-worked updates,
Novikoff's mistake bound, np.linalg.lstsq / polyfit, and np.linalg.eigh for Hebbian PCA."""
import numpy as np
import pytest

from fastmlp.classic import Adaline, HebbianLayer, LinearRegressionGD, Perceptron
from fastmlp.datasets import logic_gate


def with_ones(X):
    return np.column_stack([np.ones(len(X)), X])


def separable_problem(n_samples=200, margin=0.2, seed=0):
    """Points in [-1, 1]^2 labelled by a known line, the band |w* . [1, x]| < margin removed."""
    rng = np.random.default_rng(seed)
    true_weights = np.array([0.3, 1.0, -2.0])
    X = rng.uniform(-1, 1, size=(4 * n_samples, 2))
    net = with_ones(X) @ true_weights / np.linalg.norm(true_weights)
    keep = np.abs(net) >= margin
    X, net = X[keep][:n_samples], net[keep][:n_samples]
    return X, (net > 0).astype(int), true_weights


def gaussian_data(covariance, n_samples=3000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(np.zeros(len(covariance)), covariance, size=n_samples)
    return X - X.mean(axis=0)


def principal_components(X):
    """Eigenvectors of the covariance, largest eigenvalue first (the reference for PCA)."""
    values, vectors = np.linalg.eigh(X.T @ X / len(X))
    return vectors[:, ::-1]


# --------------------------------------------------------------------------- Perceptron


@pytest.mark.parametrize("gate", ["and", "or", "nand", "nor"])
def test_perceptron_learns_linearly_separable_gates(gate):
    X, y = logic_gate(gate)
    model = Perceptron().fit(X, y)
    assert model.converged_
    assert model.n_epochs_ < 100 and model.mistakes_per_epoch_[-1] == 0
    # Check the separating line directly, not through predict.
    net = with_ones(X) @ model.weights_
    np.testing.assert_array_equal(net >= 0, y == 1)
    assert model.score(X, y) == 1.0


def test_perceptron_fails_on_xor():
    X, y = logic_gate("xor")
    model = Perceptron(max_epochs=50).fit(X, y)
    assert not model.converged_
    assert model.n_epochs_ == 50
    assert min(model.mistakes_per_epoch_) > 0
    assert model.score(X, y) < 1.0


def test_perceptron_update_worked_by_hand():
    # One point (2, 3) with label 0. Zero weights give net 0 -> output 1, error -1, so
    # the rule sets w = lr * (-1) * [1, 2, 3]; then net = -0.5 * 14 < 0 and it is right.
    model = Perceptron(lr=0.5).fit([[2.0, 3.0]], [0])
    np.testing.assert_allclose(model.weights_, [-0.5, -1.0, -1.5])
    assert model.n_epochs_ == 2 and model.mistakes_per_epoch_ == [1, 0]
    assert model.converged_


def test_perceptron_obeys_novikoff_bound():
    X, y, true_weights = separable_problem()
    model = Perceptron(max_epochs=1000).fit(X, y)
    inputs = with_ones(X)
    radius = np.max(np.linalg.norm(inputs, axis=1))
    signs = 2 * y - 1
    margin = np.min(signs * (inputs @ true_weights)) / np.linalg.norm(true_weights)
    assert model.converged_
    assert sum(model.mistakes_per_epoch_) <= (radius / margin) ** 2


def test_perceptron_learning_rate_only_scales_weights():
    X, y, _ = separable_problem(seed=1)
    unit = Perceptron(lr=1.0).fit(X, y)
    scaled = Perceptron(lr=0.25).fit(X, y)
    np.testing.assert_allclose(scaled.weights_, 0.25 * unit.weights_)
    assert scaled.n_epochs_ == unit.n_epochs_


def test_perceptron_shuffle_is_seeded():
    X, y, _ = separable_problem(seed=2)
    a = Perceptron(shuffle=True, seed=3).fit(X, y)
    b = Perceptron(shuffle=True, seed=3).fit(X, y)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert a.converged_


# --------------------------------------------------------------------------- Adaline


def adaline_problem(seed=0):
    """Well-conditioned, nearly balanced labels from a noisy linear rule."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 3))
    y = (X @ [1.0, -2.0, 0.5] + 0.3 + 0.5 * rng.normal(size=300) > 0).astype(int)
    least_squares = np.linalg.lstsq(with_ones(X), 2.0 * y - 1.0, rcond=None)[0]
    return X, y, least_squares


def test_adaline_batch_reaches_least_squares():
    X, y, least_squares = adaline_problem()
    model = Adaline(lr=0.05, max_epochs=10000, tol=1e-12).fit(X, y)
    assert model.converged_
    np.testing.assert_allclose(model.weights_, least_squares, atol=1e-8)
    best_loss = np.mean((2.0 * y - 1.0 - with_ones(X) @ least_squares) ** 2)
    assert model.loss_curve_[-1] == pytest.approx(best_loss, rel=1e-10)
    assert np.all(np.diff(model.loss_curve_) <= 1e-15)  # gradient descent never goes up here


def test_adaline_online_approaches_least_squares():
    X, y, least_squares = adaline_problem()
    model = Adaline(lr=0.0005, max_epochs=60, mode="online", seed=0).fit(X, y)
    np.testing.assert_allclose(model.weights_, least_squares, atol=0.02)
    assert model.score(X, y) > 0.85


def test_adaline_predict_thresholds_net_input():
    X, y, _ = adaline_problem()
    model = Adaline(lr=0.05, max_epochs=500).fit(X, y)
    net = with_ones(X) @ model.weights_
    np.testing.assert_allclose(model.decision_function(X), net)
    np.testing.assert_array_equal(model.predict(X), (net >= 0).astype(int))


def test_adaline_diverging_lr_is_reported():
    X, y, _ = adaline_problem()
    with pytest.raises(ValueError, match="lr=5"):
        Adaline(lr=5.0, max_epochs=1000).fit(X, y)


# --------------------------------------------------------------------------- Hebbian learning


def test_oja_finds_first_principal_component():
    X = gaussian_data([[3.0, 1.0], [1.0, 1.0]])
    model = HebbianLayer(2, 1, lr=0.002, rule="oja", seed=0).fit(X, epochs=15)
    w = model.weights_[:, 0]
    first = principal_components(X)[:, 0]
    assert np.linalg.norm(w) == pytest.approx(1.0, abs=0.02)
    assert abs(w @ first) / np.linalg.norm(w) > 0.999  # same line, either sign


def test_oja_subspace_rule_spans_leading_subspace():
    X = gaussian_data(np.diag([5.0, 2.0, 0.3]) + 0.2, seed=1)
    model = HebbianLayer(3, 2, lr=0.002, rule="oja", seed=1).fit(X, epochs=20)
    W = model.weights_
    np.testing.assert_allclose(W.T @ W, np.eye(2), atol=0.05)
    leading = principal_components(X)[:, :2]
    np.testing.assert_allclose(W @ W.T, leading @ leading.T, atol=0.05)


def test_sanger_finds_ordered_components():
    X = gaussian_data(np.diag([5.0, 2.0, 0.3]) + 0.2, seed=2)
    model = HebbianLayer(3, 2, lr=0.002, rule="sanger", seed=2).fit(X, epochs=25)
    components = principal_components(X)
    for j in range(2):
        w = model.weights_[:, j]
        assert np.linalg.norm(w) == pytest.approx(1.0, abs=0.05)
        assert abs(w @ components[:, j]) / np.linalg.norm(w) > 0.99


def test_plain_hebb_grows_without_bound():
    X = gaussian_data([[3.0, 1.0], [1.0, 1.0]])
    model = HebbianLayer(2, 1, lr=0.001, rule="hebb", seed=0).fit(X, epochs=6)
    norms = model.weight_norm_curve_
    assert np.all(np.diff(norms) > 0)
    assert norms[-1] > 1e6 * norms[0]
    # It does point along the first principal component, just with an exploding length.
    w = model.weights_[:, 0]
    assert abs(w @ principal_components(X)[:, 0]) / np.linalg.norm(w) > 0.99


def test_plain_hebb_overflow_warns_and_keeps_finite_weights():
    X = gaussian_data([[3.0, 1.0], [1.0, 1.0]], n_samples=500)
    model = HebbianLayer(2, 1, lr=0.05, rule="hebb", seed=0)
    with pytest.warns(RuntimeWarning, match="overflowed"):
        model.fit(X, epochs=100)
    assert np.all(np.isfinite(model.weights_))


@pytest.mark.parametrize("rule, expected", [
    ("hebb", lambda W, x, lr: W + lr * np.outer(x, x @ W)),
    ("oja", lambda W, x, lr: W + lr * (np.outer(x, x @ W) - W @ np.outer(x @ W, x @ W))),
    ("sanger", lambda W, x, lr: W + lr * (np.outer(x, x @ W)
                                          - W @ np.triu(np.outer(x @ W, x @ W)))),
])
def test_single_hebbian_step_matches_formula(rule, expected):
    start = np.array([[0.2, -0.1], [0.4, 0.3], [-0.5, 0.1]])
    x = np.array([1.0, -2.0, 0.5])
    model = HebbianLayer(3, 2, lr=0.1, rule=rule)
    model.weights_ = start.copy()
    model.fit(x[None, :], epochs=1)
    np.testing.assert_allclose(model.weights_, expected(start, x, 0.1))
    np.testing.assert_allclose(model.transform(x[None, :]), x[None, :] @ model.weights_)


# --------------------------------------------------------------------------- linear regression


def line_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=200)
    return x, 3.0 * x - 1.5 + rng.normal(0, 0.7, size=200)


def test_linear_regression_gd_reaches_polyfit():
    x, y = line_data()
    model = LinearRegressionGD(lr=0.1, epochs=2000).fit(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert model.coef_ == pytest.approx(slope, abs=1e-9)
    assert model.intercept_ == pytest.approx(intercept, abs=1e-9)
    best = np.mean((y - slope * x - intercept) ** 2)
    assert model.loss_curve_[-1] == pytest.approx(best, rel=1e-12)
    assert np.all(np.diff(model.loss_curve_) <= 1e-15)
    np.testing.assert_allclose(model.predict(x), slope * x + intercept, atol=1e-8)


def test_linear_regression_first_step_is_the_gradient():
    # From w = b = 0 the gradients are -2 mean(y x) and -2 mean(y).
    x, y = line_data(seed=1)
    model = LinearRegressionGD(lr=0.05, epochs=1).fit(x, y)
    assert model.coef_ == pytest.approx(0.05 * 2 * np.mean(y * x))
    assert model.intercept_ == pytest.approx(0.05 * 2 * np.mean(y))


def test_linear_regression_accepts_column_vector():
    x, y = line_data(seed=2)
    flat = LinearRegressionGD(epochs=50).fit(x, y)
    column = LinearRegressionGD(epochs=50).fit(x[:, None], y)
    assert flat.coef_ == column.coef_ and flat.intercept_ == column.intercept_
    assert column.score(x[:, None], y) == pytest.approx(flat.score(x, y))


def test_linear_regression_diverging_lr_is_reported():
    x, y = line_data()
    with pytest.raises(ValueError, match="lr=3"):
        LinearRegressionGD(lr=3.0, epochs=5000).fit(x, y)


# --------------------------------------------------------------------------- bad inputs

X_OK, Y_OK = logic_gate("and")
CLASSIFIERS = [Perceptron, Adaline]


@pytest.mark.parametrize("model_class", CLASSIFIERS)
@pytest.mark.parametrize("X, y, error, parameter", [
    (X_OK[:, 0], Y_OK, ValueError, "X must be 2-D"),
    (X_OK, Y_OK[:3], ValueError, "y has 3 values"),
    (X_OK, Y_OK[:, None], ValueError, "y must be 1-D"),
    (X_OK, [0, 1, 2, 1], ValueError, r"only the labels 0 and 1, got \[2.0\]"),
    (X_OK, [-1, 1, 1, -1], ValueError, r"labels 0 and 1, got \[-1.0\]"),
    (np.where(X_OK == 1, np.nan, X_OK), Y_OK, ValueError, "X must be finite"),
    (X_OK, [0, np.nan, 1, 1], ValueError, "y must be finite"),
    (np.empty((0, 2)), [], ValueError, "X must have at least one sample"),
    ([["a", "b"]] * 4, Y_OK, TypeError, "X must be a numeric array"),
])
def test_classifiers_reject_bad_data(model_class, X, y, error, parameter):
    with pytest.raises(error, match=parameter):
        model_class().fit(X, y)


@pytest.mark.parametrize("model", [
    Perceptron(lr=0), Perceptron(lr=-1.0), Perceptron(lr=float("nan")),
    Adaline(lr=0), Adaline(lr=-0.1), HebbianLayer(2, lr=0), LinearRegressionGD(lr=-1)])
def test_nonpositive_learning_rates(model):
    data = (X_OK,) if isinstance(model, HebbianLayer) else (X_OK[:, :1], Y_OK)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        model.fit(*data)


@pytest.mark.parametrize("model, error, parameter", [
    (Perceptron(max_epochs=0), ValueError, "max_epochs"),
    (Perceptron(max_epochs=2.5), TypeError, "max_epochs"),
    (Perceptron(shuffle="yes"), TypeError, "shuffle"),
    (Perceptron(seed=-3), ValueError, "seed"),
    (Perceptron(lr="fast"), TypeError, "lr"),
    (Adaline(mode="stochastic"), ValueError, "mode"),
    (Adaline(tol=0), ValueError, "tol"),
])
def test_bad_hyperparameters(model, error, parameter):
    with pytest.raises(error, match=parameter):
        model.fit(X_OK, Y_OK)


def test_hebbian_bad_arguments():
    X = gaussian_data([[1.0, 0.0], [0.0, 1.0]], n_samples=10)
    with pytest.raises(ValueError, match="rule"):
        HebbianLayer(2, rule="anti-hebb").fit(X)
    with pytest.raises(ValueError, match="X has 2 features but the model was fitted with 3"):
        HebbianLayer(3).fit(X)
    with pytest.raises(ValueError, match="n_outputs"):
        HebbianLayer(2, n_outputs=0).fit(X)
    with pytest.raises(ValueError, match="epochs"):
        HebbianLayer(2).fit(X, epochs=0)
    with pytest.raises(ValueError, match="finite"):
        HebbianLayer(2).fit(np.full((3, 2), np.inf))


def test_linear_regression_bad_shapes():
    with pytest.raises(ValueError, match="X must be 1-D"):
        LinearRegressionGD().fit(np.ones((5, 2)), np.ones(5))
    with pytest.raises(ValueError, match="y has 4 values"):
        LinearRegressionGD().fit(np.ones(5), np.ones(4))
    with pytest.raises(ValueError, match="y must be finite"):
        LinearRegressionGD().fit(np.ones(3), [1.0, np.nan, 2.0])


@pytest.mark.parametrize("model", [Perceptron(), Adaline(), LinearRegressionGD(),
                                   HebbianLayer(2)])
def test_use_before_fit(model):
    method = model.transform if isinstance(model, HebbianLayer) else model.predict
    with pytest.raises(RuntimeError, match="not fitted"):
        method(X_OK)


def test_predict_with_wrong_number_of_features():
    model = Perceptron().fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match="X has 3 features but the model was fitted with 2"):
        model.predict(np.ones((2, 3)))
