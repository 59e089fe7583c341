"""scikit-learn's alpha through fastmlp's adapter: an L2 penalty on the weight matrices only
(decay_biases=False), checked against scikit-learn itself in float64 with a large alpha so
that decaying the biases too would show; and fastmlp's extra weight_decay, which has
alpha's reach (lbfgs included)."""
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnClassifier
from sklearn.neural_network import MLPRegressor as SklearnRegressor

import fastmlp
from fastmlp import optim
from fastmlp.reference import ReferenceMLP
from fastmlp.sklearn import SOLVERS, MLPClassifier, MLPRegressor


def iris():
    X, y = load_iris(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y


def fitted_pair(solver, batch_size, max_iter=30, alpha=1.0, fastmlp_only=None, **options):
    """scikit-learn's and fastmlp's classifier, same options (and `fastmlp_only` for ours),
    same initial weights (the adapter draws scikit-learn's from random_state), no shuffling."""
    X, y = iris()
    common = dict(hidden_layer_sizes=(8,), solver=solver, alpha=alpha, batch_size=batch_size,
                  max_iter=max_iter, shuffle=False, random_state=0, tol=0.0,
                  n_iter_no_change=10 ** 6, **options)
    if solver == "sgd":
        common.update(momentum=0.0, learning_rate_init=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = SklearnClassifier(**common).fit(X, y)
        ours = MLPClassifier(**common, **(fastmlp_only or {}), dtype="float64").fit(X, y)
    return theirs, ours


def flat(estimator):
    return np.concatenate([a.ravel() for a in estimator.coefs_ + estimator.intercepts_])


@pytest.mark.parametrize("solver", [s for s in SOLVERS if s != "lbfgs"])
def test_every_stochastic_solver_decays_the_weights_only(solver):
    model = MLPClassifier(solver=solver, max_iter=2).fit(*iris())
    assert model.model_.optimizer.options["decay_biases"] is False


@pytest.mark.parametrize("batch_size", [150, 50, 32])  # 32: a last batch of 22 rows
def test_sgd_with_a_large_alpha_follows_scikit_learn(batch_size):
    """Measured: loss_curve_ to 1e-15 relative and the parameters to 2e-16. Before (biases
    decayed, alpha / batch_size for a short last batch too, the penalty reported at the
    epoch's last weights): 9e-4 / 1.5e-2 relative in loss_curve_, 7e-3 / 9e-2 in the
    parameters, for batches of 150 / 50."""
    theirs, ours = fitted_pair("sgd", batch_size)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-12, atol=1e-13)


def test_sgd_regressor_with_a_short_last_batch_and_sample_weights_follows_scikit_learn():
    """442 rows in batches of 200, 200, 42 (batch_size="auto"): alpha / 42 on the last one;
    with sample weights alpha / (the batch's weight sum), and loss_curve_ averages the
    batches' weighted mean losses by their rows, as scikit-learn's."""
    X, y = load_diabetes(return_X_y=True)
    X, y = (X - X.mean(axis=0)) / X.std(axis=0), (y - y.mean()) / y.std()
    options = dict(hidden_layer_sizes=(8,), solver="sgd", alpha=1.0, momentum=0.0, learning_rate_init=0.01,
                   max_iter=20, shuffle=False, random_state=0, tol=0.0, n_iter_no_change=10 ** 6)
    weights = np.random.default_rng(1).uniform(0.2, 2.0, X.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for sample_weight in (None, weights):
            theirs = SklearnRegressor(**options).fit(X, y, sample_weight=sample_weight)
            ours = MLPRegressor(**options, dtype="float64").fit(X, y, sample_weight=sample_weight)
            np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)


def test_sgd_poisson_regressor_with_two_outputs_and_a_large_alpha_follows_scikit_learn():
    """loss="poisson" folds n_outputs into the gradient scale; alpha's decay is divided by it
    like the squared error's. 300 rows in batches of 64 (a last batch of 44)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = rng.poisson(np.exp(0.3 * X[:, :2]))
    options = dict(hidden_layer_sizes=(8,), loss="poisson", solver="sgd", alpha=1.0, batch_size=64,
                   momentum=0.0, learning_rate_init=0.01, max_iter=15, shuffle=False, random_state=0,
                   tol=0.0, n_iter_no_change=10 ** 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = SklearnRegressor(**options).fit(X, y)
        ours = MLPRegressor(**options, dtype="float64").fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("batch_size", [150, 50, 32])
def test_adam_with_a_large_alpha_follows_scikit_learn(batch_size):
    """The adapter's adam puts epsilon where scikit-learn does (eps_hat=True): measured 1e-15
    relative in loss_curve_ and 2e-16 in the parameters. With torch's epsilon placement:
    1.2e-7 and 7e-7 (and 2e-5 / 1.5e-4 and 3.7e-2 / 7.6e-2 before alpha was scikit-learn's)."""
    theirs, ours = fitted_pair("adam", batch_size)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-12, atol=1e-13)


def test_lbfgs_weight_decay_acts_as_alpha_divided_by_the_samples():
    """lbfgs minimises the loss + 0.5 (alpha / n + weight_decay) ||W||^2: scikit-learn's
    objective with alpha + n * weight_decay; loss_ leaves weight_decay's term out."""
    n, weight_decay = iris()[0].shape[0], 0.01
    theirs, ours = fitted_pair("lbfgs", "auto", max_iter=50, alpha=0.5)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-6, atol=1e-7)
    theirs_equivalent, _ = fitted_pair("lbfgs", "auto", max_iter=50, alpha=0.5 + n * weight_decay)
    _, ours_decayed = fitted_pair("lbfgs", "auto", max_iter=50, alpha=0.5,
                                  fastmlp_only={"weight_decay": weight_decay})
    np.testing.assert_allclose(flat(ours_decayed), flat(theirs_equivalent), rtol=1e-6, atol=1e-7)
    assert np.max(np.abs(flat(ours_decayed) - flat(ours))) > 1e-2
    squares = sum(float(np.sum(w * w)) for w in ours_decayed.coefs_)
    np.testing.assert_allclose(ours_decayed.loss_, theirs_equivalent.loss_ - 0.5 * weight_decay * squares,
                               rtol=1e-9)


# ---- the core's support: the decay scaled per batch, ||W||^2 summed before each step ------


def test_decay_reference_weight_scales_each_steps_decay_and_squares_are_summed_before_it():
    """Against ReferenceMLP stepped with weight_decay * reference / rows, and ||W||^2 taken
    from the reference's weights before each step."""
    optimizer = optim.SGD(lr=0.1, weight_decay=0.3, decay_biases=False)
    model = fastmlp.MLP([4, 5, 3], activation="tanh", optimizer=optimizer, dtype="float64", seed=2)
    network = model._network
    network.decay_reference_weight = 8.0
    network.track_weight_squares = True
    rng = np.random.default_rng(4)
    expected_squares = 0.0
    for rows in (8, 8, 3, 5):
        x, y = rng.normal(size=(rows, 4)), rng.integers(0, 3, rows)
        options = dict(optimizer.options, weight_decay=0.3 * 8.0 / rows)
        reference = ReferenceMLP([4, 5, 3], ["tanh"], optimizer="sgd", optimizer_options=options)
        reference.set_flat_params(model.flat_parameters)
        expected_squares += sum(float(np.sum(w * w)) for w in reference.weights)
        model.train_step(x, y)
        reference.train_step(x, y)
        np.testing.assert_allclose(model.flat_parameters, reference.params, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(network.weight_squares_sum, expected_squares, rtol=1e-13)


def test_the_defaults_change_nothing_and_bad_values_are_refused():
    network = fastmlp.MLP([3, 4, 2])._network
    assert network.decay_reference_weight == 0 and network.track_weight_squares is False
    assert network.weight_squares_sum == 0
    for name in ("decay_reference_weight", "weight_squares_sum"):
        for value in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
                setattr(network, name, value)


def test_batch_mean_loss_sum_adds_each_steps_mean_loss_times_its_rows():
    """Against ReferenceMLP's weighted mean loss before each step, times the step's rows (not
    its weight sum); NaN / inf are refused."""
    model = fastmlp.MLP([4, 5, 3], activation="tanh", optimizer=optim.SGD(lr=0.1),
                        dtype="float64", seed=2)
    network = model._network
    assert network.batch_mean_loss_sum == 0
    rng = np.random.default_rng(5)
    expected = 0.0
    for rows in (8, 3, 5):
        x, y = rng.normal(size=(rows, 4)), rng.integers(0, 3, rows)
        weights = rng.uniform(0.1, 2.0, rows)
        weights[0] = 0.0
        reference = ReferenceMLP([4, 5, 3], ["tanh"], optimizer="sgd",
                                 optimizer_options=model.optimizer.options)
        reference.set_flat_params(model.flat_parameters)
        expected += rows * float(reference.loss_at(model.flat_parameters, x, y, training=True,
                                                   sample_weights=weights))
        model.train_step(x, y, sample_weight=weights)
    np.testing.assert_allclose(network.batch_mean_loss_sum, expected, rtol=1e-13)
    network.batch_mean_loss_sum = -1.5  # a loss can be negative (gaussian_nll)
    assert network.batch_mean_loss_sum == -1.5
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="batch_mean_loss_sum must be a finite number"):
            network.batch_mean_loss_sum = value
