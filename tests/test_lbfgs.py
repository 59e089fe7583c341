"""The full-batch loss and gradient L-BFGS-B runs on (MLP.loss_and_gradient, one call into the
core) against finite differences and the NumPy reference, and solver='lbfgs' against
scikit-learn's own lbfgs from the same initial weights."""
import warnings

import numpy as np
import pytest

from conftest import numerical_gradient

import fastmlp
from fastmlp.reference import ReferenceMLP

pytest.importorskip("scipy")
sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402

from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

CASES = [("cross_entropy", "tanh", 4), ("bce", "sigmoid", 3), ("mse", "relu", 2)]


def _problem(loss, n_outputs, rng, n=23):
    X = rng.normal(size=(n, 5))
    if loss == "cross_entropy":
        return X, rng.integers(0, n_outputs, size=n)
    if loss == "bce":
        return X, (rng.uniform(size=(n, n_outputs)) > 0.5).astype(float)
    return X, rng.normal(size=(n, n_outputs))


@pytest.mark.parametrize("loss, activation, n_outputs", CASES)
def test_loss_and_gradient_match_finite_differences_and_the_reference(loss, activation, n_outputs, rng):
    X, y = _problem(loss, n_outputs, rng)
    sizes = [5, 7, 6, n_outputs]
    model = fastmlp.MLP(sizes, activation=activation, loss=loss, dtype="float64", seed=3)
    theta = rng.normal(scale=0.5, size=model.n_parameters)
    value, gradient = model.loss_and_gradient(theta, X, y)
    np.testing.assert_array_equal(model.flat_parameters, theta)  # theta became the parameters
    numeric = numerical_gradient(lambda t: model.loss_and_gradient(t, X, y)[0], theta)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-8)
    reference = ReferenceMLP(sizes, activation, loss=loss, dtype=np.float64)
    ref_value, ref_gradient = reference.loss_and_gradient(theta, X, y)
    assert value == pytest.approx(float(ref_value), rel=1e-12)
    np.testing.assert_allclose(gradient, ref_gradient, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss, activation, n_outputs", CASES + [("poisson", "relu", 2)])
def test_loss_and_gradient_over_many_rows_goes_in_chunks_dense_or_sparse(loss, activation, n_outputs, rng):
    """Over more than 1024 rows the core sums per-chunk gradients (a sparse X is densified one
    chunk at a time): the whole set's mean loss and gradient all the same, against the NumPy
    reference, with and without sample weights, and sparse X gives the dense X's bits."""
    sparse = pytest.importorskip("scipy.sparse")
    X, y = _problem(loss, n_outputs, rng, n=2600)
    if loss == "poisson":
        y = rng.poisson(1.5, size=(2600, n_outputs)).astype(float)
    X[rng.uniform(size=X.shape) < 0.6] = 0.0
    sizes = [5, 7, n_outputs]
    model = fastmlp.MLP(sizes, activation=activation, loss=loss, dtype="float64", seed=3)
    reference = ReferenceMLP(sizes, activation, loss=loss, dtype=np.float64)
    theta = rng.normal(scale=0.5, size=model.n_parameters)
    for weights in (None, rng.uniform(0.0, 2.0, size=2600)):
        value, gradient = model.loss_and_gradient(theta, X, y, sample_weight=weights)
        ref_value, ref_gradient = reference.loss_and_gradient(theta, X, y, sample_weights=weights)
        assert value == pytest.approx(float(ref_value), rel=1e-12)
        np.testing.assert_allclose(gradient, ref_gradient, rtol=1e-10, atol=1e-13)
        sparse_value, sparse_gradient = model.loss_and_gradient(theta, sparse.csr_matrix(X), y,
                                                                sample_weight=weights)
        assert sparse_value == value
        np.testing.assert_array_equal(sparse_gradient, gradient)


def test_loss_and_gradient_checks_the_parameter_vector(rng):
    model = fastmlp.MLP([3, 4, 2], dtype="float64")
    with pytest.raises(ValueError, match=f"flat_parameters must be {model.n_parameters} real numbers"):
        model.loss_and_gradient(np.zeros(5), np.zeros((2, 3)), [0, 1])


def _digits():
    X, y = load_digits(n_class=3, return_X_y=True)
    return X[:200] / 16.0, y[:200]


@pytest.mark.parametrize("activation", ["logistic", "relu"])
def test_lbfgs_classifier_follows_scikit_learn_from_the_same_start(activation):
    # Same random_state -> the same Glorot-uniform draws; the same loss, gradient and L2
    # penalty -> L-BFGS-B takes the same path (up to rounding) for a few iterations.
    X, y = _digits()
    params = dict(solver="lbfgs", hidden_layer_sizes=(10,), activation=activation,
                  alpha=1e-3, max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPClassifier(**params).fit(X, y), SkClassifier(**params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ == 15
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-5)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-4)


def test_lbfgs_regressor_follows_scikit_learn_and_max_fun_limits_it():
    X, y = make_regression(n_samples=120, n_features=6, noise=5.0, random_state=1)
    y = y / y.std()
    params = dict(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=10, random_state=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPRegressor(**params).fit(X, y), SkRegressor(**params).fit(X, y)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-5)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        limited = MLPRegressor(**dict(params, max_iter=200, max_fun=5)).fit(X, y)
    assert limited.n_iter_ <= 5
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")


def test_lbfgs_with_sample_weight_follows_scikit_learn():
    # Weighted mean loss and gradient from the core, L2 over the total weight (scikit-learn's).
    X, y = _digits()
    weights = np.random.default_rng(0).uniform(0.2, 3.0, size=len(y))
    params = dict(solver="lbfgs", hidden_layer_sizes=(10,), alpha=1e-3, max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**params).fit(X, y, sample_weight=weights)
        theirs = SkClassifier(**params).fit(X, y, sample_weight=weights)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-5)
