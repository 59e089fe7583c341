"""k-fold cross-validation (fastmlp.cross_validate) and ensembles (fastmlp.Ensemble)."""
import numpy as np
import pytest

import fastmlp
from fastmlp import optim
from fastmlp.classic import Perceptron
from fastmlp.model_selection import k_fold_splits


def blobs(n=90, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return rng.normal(size=(n, 4)) + 2.5 * y[:, None], y


# ---- folds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stratified", [False, True])
def test_folds_partition_the_rows_evenly(stratified):
    y = np.array([0] * 23 + [1] * 7 + [2] * 13)
    folds = k_fold_splits(y, k=5, seed=1, stratified=stratified)
    tests = [test for _, test in folds]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(len(y)))
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    for train, test in folds:
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    if stratified:  # each fold holds floor or ceil of its share of every class
        for c, count in zip(range(3), (23, 7, 13)):
            per_fold = [np.sum(y[test] == c) for test in tests]
            assert set(per_fold) <= {count // 5, -(-count // 5)}


def test_folds_follow_the_seed():
    y = np.arange(20) % 2
    same = [test for _, test in k_fold_splits(y, 4, seed=3)]
    again = [test for _, test in k_fold_splits(y, 4, seed=3)]
    other = [test for _, test in k_fold_splits(y, 4, seed=4)]
    assert all(np.array_equal(a, b) for a, b in zip(same, again))
    assert not all(np.array_equal(a, b) for a, b in zip(same, other))


def test_stratified_folds_warn_about_rare_classes():
    with pytest.warns(UserWarning, match="smallest class has 2 members, fewer than k=3"):
        k_fold_splits(np.array([0, 0, 0, 0, 1, 1]), k=3, stratified=True)


# ---- cross_validate ------------------------------------------------------------------------------


def test_cross_validate_scores_each_fold_like_a_manual_loop():
    X, y = blobs()

    def make_model():
        return fastmlp.MLP([4, 8, 3], optimizer=optim.Adam(lr=0.05), seed=0)

    result = fastmlp.cross_validate(make_model, X, y, k=3, seed=5, epochs=15, batch_size=16)
    assert result["test_score"].shape == (3,) and len(result["histories"]) == 3
    assert np.all(result["test_score"] >= 0.9)  # well separated blobs
    for (train, test), score in zip(k_fold_splits(y, 3, seed=5, stratified=True),
                                    result["test_score"]):
        model = make_model()
        model.fit(X[train], y[train], epochs=15, batch_size=16)
        assert model.score(X[test], y[test]) == score


def test_cross_validate_regression_and_classic_models():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    y = X @ np.array([1.5, -2.0]) + 0.5
    result = fastmlp.cross_validate(
        lambda: fastmlp.MLP([2, 1], loss="mse", optimizer=optim.SGD(lr=0.1), seed=0),
        X, y, k=4, epochs=100, batch_size=8)
    assert np.all(result["test_score"] < 0) and np.all(result["test_score"] > -1e-3)  # -MSE
    # A perceptron (no loss attribute, integer labels) is stratified and scored by accuracy.
    labels = (X[:, 0] > 0).astype(int)
    X[:, 0] += np.where(labels == 1, 0.5, -0.5)  # a margin, so the perceptron converges fast
    result = fastmlp.cross_validate(lambda: Perceptron(max_epochs=50), X, labels, k=5)
    assert np.all(result["train_score"] == 1.0) and np.mean(result["test_score"]) >= 0.9


def test_cross_validate_bad_arguments():
    X, y = blobs(n=10)

    def make_model():
        return fastmlp.MLP([4, 3], seed=0)

    with pytest.raises(ValueError, match="k must be an integer >= 2, got 1"):
        fastmlp.cross_validate(make_model, X, y, k=1)
    with pytest.raises(ValueError, match="k=11 folds need at least 11 samples, got 10"):
        fastmlp.cross_validate(make_model, X, y, k=11)
    with pytest.raises(ValueError, match="same number of rows"):
        fastmlp.cross_validate(make_model, X, y[:-1])
    with pytest.raises(TypeError, match="make_model must be a callable"):
        fastmlp.cross_validate(make_model(), X, y)
    with pytest.raises(TypeError, match="must return a model with fit and score"):
        fastmlp.cross_validate(lambda: "model", X, y)
    shared = make_model()
    with pytest.raises(ValueError, match="must return a new model on every call"):
        fastmlp.cross_validate(lambda: shared, X, y, k=2, epochs=1)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        fastmlp.cross_validate(make_model, X, y, seed=-1)


# ---- ensembles ------------------------------------------------------------------------------------


def make_classifier(seed):
    return fastmlp.MLP([4, 8, 3], optimizer=optim.Adam(lr=0.05), seed=seed, dtype="float64")


def test_ensemble_train_members_are_the_models_of_their_seeds():
    X, y = blobs()
    ensemble = fastmlp.Ensemble.train(make_classifier, X, y, n_members=3, seed=10, epochs=3)
    assert len(ensemble) == 3 and len(ensemble.histories) == 3
    for offset, member in enumerate(ensemble.models):
        alone = make_classifier(10 + offset)
        alone.fit(X, y, epochs=3)
        np.testing.assert_array_equal(member.flat_parameters, alone.flat_parameters)


def test_ensemble_averages_probabilities():
    X, y = blobs()
    ensemble = fastmlp.Ensemble.train(make_classifier, X, y, n_members=3, epochs=2)
    members = np.array([model.predict_proba(X) for model in ensemble.models])
    average = (members[0] + members[1] + members[2]) / 3
    np.testing.assert_allclose(ensemble.predict_proba(X), average, rtol=1e-12)
    np.testing.assert_array_equal(ensemble.predict(X), np.argmax(average, axis=1))
    result = ensemble.evaluate(X, y)
    assert result["loss"] == pytest.approx(-np.mean(np.log(average[np.arange(len(y)), y])))
    assert result["accuracy"] == ensemble.score(X, y) == np.mean(np.argmax(average, 1) == y)


def test_ensemble_of_regressors_and_gaussian_mixture_moments():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 2))
    y = X[:, :1] * 2.0
    regressors = [fastmlp.MLP([2, 4, 1], loss="mse", seed=s, dtype="float64") for s in (0, 1)]
    for model in regressors:
        model.fit(X, y, epochs=2)
    ensemble = fastmlp.Ensemble(regressors)
    average = (regressors[0].predict(X) + regressors[1].predict(X)) / 2
    np.testing.assert_allclose(ensemble.predict(X), average, rtol=1e-12)
    assert ensemble.evaluate(X, y)["loss"] == pytest.approx(np.mean((average - y[:, 0]) ** 2))

    gaussians = [fastmlp.MLP([2, 4, 1], loss="gaussian_nll", seed=s, dtype="float64") for s in (0, 1)]
    for model in gaussians:
        model.fit(X, y, epochs=2)
    (m1, v1), (m2, v2) = (model.predict_distribution(X) for model in gaussians)
    mean, variance = fastmlp.Ensemble(gaussians).predict_distribution(X)
    # Two equal-weight components: the mean's spread adds ((m1 - m2) / 2)^2 to the variance.
    np.testing.assert_allclose(mean, (m1 + m2) / 2, rtol=1e-12)
    np.testing.assert_allclose(variance, (v1 + v2) / 2 + ((m1 - m2) / 2) ** 2, rtol=1e-10)


def trained_gaussians(n_members, n_targets=2, dtype="float64"):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 3))
    y = np.stack([X[:, 0] - X[:, 1], 0.5 * X[:, 2]], axis=1)[:, :n_targets]
    y = y + rng.normal(scale=0.3, size=y.shape)
    models = [fastmlp.MLP([3, 6, n_targets], loss="gaussian_nll", seed=s, dtype=dtype)
              for s in range(n_members)]
    for model in models:
        model.fit(X, y, epochs=3, batch_size=8)
    return models, X, y


def test_ensemble_gaussian_nll_is_the_mixtures_negative_log_likelihood():
    models, X, y = trained_gaussians(n_members=3)
    # The mixture's density per row, straight from the definition (no log space): the mean over
    # members of the product over targets of N(y; mean, var) without the 1/sqrt(2 pi) factor.
    densities = []
    for model in models:
        mean, variance = model.predict_distribution(X)
        densities.append(np.prod(np.exp(-(y - mean) ** 2 / (2 * variance)) / np.sqrt(variance), axis=1))
    expected = np.mean(-np.log(np.mean(densities, axis=0))) / y.shape[1]
    ensemble = fastmlp.Ensemble(models)
    assert ensemble.evaluate(X, y)["loss"] == pytest.approx(expected, rel=1e-12)
    assert ensemble.score(X, y) == -ensemble.evaluate(X, y)["loss"]
    # Not the Gaussian of the mixture's moments, which is what predict_distribution gives.
    mean, variance = ensemble.predict_distribution(X)
    moment_matched = np.mean(0.5 * (np.log(variance) + (y - mean) ** 2 / variance))
    assert abs(moment_matched - expected) > 1e-3


@pytest.mark.parametrize("n_targets, dtype", [(1, "float64"), (2, "float64"), (2, "float32")])
def test_one_member_ensemble_loss_is_its_members(n_targets, dtype):
    (model,), X, y = trained_gaussians(n_members=1, n_targets=n_targets, dtype=dtype)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert fastmlp.Ensemble([model]).evaluate(X, y)["loss"] == \
        pytest.approx(model.evaluate(X, y)["loss"], rel=rtol)


def test_ensemble_gaussian_nll_survives_densities_below_the_smallest_float():
    # Two members predicting mean 0 with log-variances -30 and -40 for the target 1: their
    # densities, exp(-e^30 / 2) and exp(-e^40 / 2), are 0 in floating point.
    members = []
    for log_variance in (-30.0, -40.0):
        model = fastmlp.MLP([1, 1], loss="gaussian_nll", dtype="float64")
        members.append(model.set_weights([np.zeros((1, 2))], [np.array([0.0, log_variance])]))
    loss = fastmlp.Ensemble(members).evaluate(np.zeros((2, 1)), np.ones(2))["loss"]
    # -log(0.5 e^a + 0.5 e^b) with a = -0.5 (-30 + e^30) far above b: -a + log 2.
    assert loss == pytest.approx(0.5 * (-30 + np.exp(30)) + np.log(2), rel=1e-12)


def test_ensemble_bad_arguments():
    X, y = blobs(n=12)
    with pytest.raises(ValueError, match="non-empty sequence"):
        fastmlp.Ensemble([])
    with pytest.raises(TypeError, match=r"models\[1\] must be a fastmlp.MLP"):
        fastmlp.Ensemble([make_classifier(0), "model"])
    with pytest.raises(ValueError, match=r"models\[1\] \(mse, 4 inputs, 3 outputs\) differs"):
        fastmlp.Ensemble([make_classifier(0), fastmlp.MLP([4, 3], loss="mse")])
    regressors = fastmlp.Ensemble([fastmlp.MLP([4, 3], loss="mse")])
    with pytest.raises(ValueError, match="predict_proba needs loss cross_entropy or bce"):
        regressors.predict_proba(X)
    with pytest.raises(ValueError, match="n_members must be an integer >= 1, got 0"):
        fastmlp.Ensemble.train(make_classifier, X, y, n_members=0)
    with pytest.raises(TypeError, match=r"make_model\(0\) must return a fastmlp.MLP"):
        fastmlp.Ensemble.train(lambda seed: None, X, y, n_members=2)
    with pytest.raises(fastmlp.NotFittedError):
        fastmlp.Ensemble([make_classifier(0)]).predict(X)
