"""scikit-learn's alpha through fastmlp's adapter: an L2 penalty on the weight matrices only
(decay_biases=False), checked against scikit-learn itself in float64 with a large alpha so
that decaying the biases too would show; and fastmlp's extra weight_decay, which has
alpha's reach (lbfgs included)."""
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnClassifier

from fastmlp.sklearn import SOLVERS, MLPClassifier


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


@pytest.mark.parametrize("batch_size", [150, 50])
def test_sgd_with_a_large_alpha_follows_scikit_learn(batch_size):
    """Measured: the parameters agree to 2e-16 (7e-3 and 9e-2 while the biases decayed too)."""
    theirs, ours = fitted_pair("sgd", batch_size)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("batch_size", [150, 50])
def test_adam_with_a_large_alpha_is_close_to_scikit_learn(batch_size):
    """Adam differs by where epsilon sits (torch's formula divides sqrt(v) by the bias
    correction first), not by alpha any more: measured 7e-7 (3.7e-2 and 7.6e-2 before)."""
    theirs, ours = fitted_pair("adam", batch_size)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=0, atol=1e-5)


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
