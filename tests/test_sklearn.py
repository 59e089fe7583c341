"""fastmlp.MLPClassifier / MLPRegressor as scikit-learn estimators: check_estimator, the
model-selection tools, scikit-learn's attributes and stopping rules, compared with
scikit-learn's own MLP where that is meaningful."""
import inspect
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_methods_sample_order_invariance, check_methods_subset_invariance,
    parametrize_with_checks)

import fastmlp  # noqa: E402
import sklearn.neural_network  # noqa: E402
from fastmlp.sklearn import MLPClassifier, MLPRegressor, expected_failed_checks  # noqa: E402

# One thread: these fits are tiny, and on a busy 2-core machine a fork/join per kernel
# costs more than it saves.
FAST = dict(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.01, n_threads=1)


# The checks that fail by design come with their reason from fastmlp.sklearn (scikit-learn
# >= 1.6 takes them through expected_failed_checks, the successor of the _xfail_checks tag).
@parametrize_with_checks([MLPClassifier(**FAST), MLPRegressor(**FAST)],
                         expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_predictions_do_not_depend_on_the_batch(estimator, dtype):
    # No check is expected to fail, float32 included: every GEMM path sums in one order.
    model = estimator(**FAST, dtype=dtype)
    assert not [name for name in expected_failed_checks(model) if "subset" in name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_methods_subset_invariance(estimator.__name__, model)
        check_methods_sample_order_invariance(estimator.__name__, model)


# ---- data --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)


def blobs(n=240, classes=3, features=6, seed=0):
    X, y = make_classification(n_samples=n, n_features=features, n_informative=4,
                               n_classes=classes, n_clusters_per_class=1, class_sep=2.0,
                               random_state=seed)
    return X, y


# ---- import laziness ------------------------------------------------------------------------------


def test_importing_fastmlp_does_not_import_sklearn():
    code = ("import sys, fastmlp; assert 'sklearn' not in sys.modules; "
            "fastmlp.MLPClassifier; assert 'sklearn' in sys.modules; "
            "assert fastmlp.MLPRegressor is __import__('fastmlp.sklearn').sklearn.MLPRegressor")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unknown_attribute_still_raises():
    with pytest.raises(AttributeError, match="no attribute 'MLPClassifer'"):
        fastmlp.MLPClassifer  # noqa: B018


# ---- compared with scikit-learn's MLP ------------------------------------------------------------


def test_accuracy_and_attributes_match_scikit_learns_mlp(digits):
    X_train, X_test, y_train, y_test = digits
    ours = MLPClassifier(hidden_layer_sizes=(64,), max_iter=40, random_state=0, n_threads=1)
    theirs = SklearnMLPClassifier(hidden_layer_sizes=(64,), max_iter=40, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X_train, y_train)
        theirs.fit(X_train, y_train)
    accuracy, reference = ours.score(X_test, y_test), theirs.score(X_test, y_test)
    assert accuracy > 0.95 and abs(accuracy - reference) < 0.03, (accuracy, reference)
    for name in ("n_layers_", "n_outputs_", "n_iter_", "out_activation_", "n_features_in_", "t_"):
        assert getattr(ours, name) == getattr(theirs, name), name
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    assert [w.shape for w in ours.coefs_] == [w.shape for w in theirs.coefs_]
    assert [b.shape for b in ours.intercepts_] == [b.shape for b in theirs.intercepts_]
    assert len(ours.loss_curve_) == len(theirs.loss_curve_) == 40
    # Same loss definition: both end within a factor of two of each other, well below log(10).
    assert 0.5 < ours.loss_ / theirs.loss_ < 2 and ours.loss_ < 0.5
    assert ours.predict_proba(X_test).shape == theirs.predict_proba(X_test).shape


def test_binary_problem_has_one_logistic_output_like_scikit_learn():
    X, y = blobs(classes=2)
    labels = np.where(y == 1, "spam", "ham")
    ours = MLPClassifier(**FAST, random_state=0).fit(X, labels)
    theirs = SklearnMLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(X, labels)
    assert ours.out_activation_ == theirs.out_activation_ == "logistic"
    assert ours.n_outputs_ == theirs.n_outputs_ == 1
    assert [w.shape for w in ours.coefs_] == [w.shape for w in theirs.coefs_]
    probabilities = ours.predict_proba(X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    predicted = ours.predict(X)
    np.testing.assert_array_equal(predicted, ours.classes_[probabilities.argmax(axis=1)])
    assert ours.score(X, labels) > 0.9


# ---- labels, outputs, dtypes ------------------------------------------------------------------------


def test_any_label_type_comes_back_unchanged():
    X, y = blobs()
    for labels in (np.array(["cat", "dog", "emu"])[y], np.array([-7, 3, 40])[y],
                   np.array([1.0, 3.0, 7.0])[y]):
        model = MLPClassifier(**FAST, random_state=0).fit(X, labels)
        np.testing.assert_array_equal(model.classes_, np.unique(labels))
        assert model.predict(X).dtype == labels.dtype
        assert model.score(X, labels) > 0.9


def test_multilabel_indicator_targets():
    X, y = blobs()
    Y = np.stack([y == 0, y != 1, y == 2], axis=1).astype(int)
    model = MLPClassifier(**FAST, random_state=0).fit(X, Y)
    assert model.out_activation_ == "logistic" and model.n_outputs_ == 3
    assert model.predict(X).shape == (X.shape[0], 3) and set(np.unique(model.predict(X))) <= {0, 1}
    assert model.predict_proba(X).shape == (X.shape[0], 3)
    assert model.score(X, Y) > 0.8  # subset accuracy


def test_multi_output_regression_against_a_linear_target():
    X, Y = make_regression(n_samples=300, n_features=5, n_targets=3, noise=0.0, random_state=0)
    Y = Y / Y.std(axis=0)
    model = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32,), max_iter=200,
                                                         random_state=0, n_threads=1,
                                                         learning_rate_init=0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, Y)
    regressor = model[-1]
    assert regressor.n_outputs_ == 3 and regressor.out_activation_ == "identity"
    assert model.predict(X).shape == (300, 3)
    assert model.score(X, Y) > 0.98  # R^2 averaged over the outputs
    # loss_ is scikit-learn's: half the mean squared error (+ a small L2 term).
    half_mse = 0.5 * np.mean((model.predict(X) - Y) ** 2)
    assert regressor.loss_ == pytest.approx(half_mse, rel=0.5, abs=5e-3)


def test_predictions_follow_the_input_dtype_and_dtype_parameter():
    X, y = blobs()
    model = MLPRegressor(**FAST, random_state=0).fit(X, y.astype(float))
    assert model.predict(X).dtype == np.float64
    assert model.predict(X.astype(np.float32)).dtype == np.float32
    # The network's dtype follows the training input's float dtype, as scikit-learn's coefs_.
    assert X.dtype == np.float64 and model.coefs_[0].dtype == np.float64
    model32 = MLPRegressor(**FAST, random_state=0).fit(X.astype(np.float32), y.astype(float))
    assert model32.coefs_[0].dtype == np.float32 and model32.intercepts_[0].dtype == np.float32
    forced = MLPRegressor(**FAST, random_state=0, dtype="float32").fit(X, y.astype(float))
    assert forced.coefs_[0].dtype == np.float32


# ---- scikit-learn's training semantics ------------------------------------------------------------


def test_batch_size_auto_is_min_200_n_and_t_counts_samples():
    X, y = blobs(n=250)
    model = MLPClassifier(**FAST, random_state=0).fit(X, y)
    assert model._model.optimizer.options["weight_decay"] == pytest.approx(1e-4 / 200)
    assert model.t_ == 250 * model.n_iter_
    with pytest.warns(UserWarning, match="batch_size=1000 larger than the 250 samples"):
        MLPClassifier(**FAST, batch_size=1000, random_state=0).fit(X, y)


def test_stops_when_the_training_loss_stalls_as_scikit_learn_defines_it():
    X, y = blobs()
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, tol=1e-2, n_iter_no_change=3,
                          random_state=0, n_threads=1).fit(X, y)
    assert model.n_iter_ < 500
    curve = np.array(model.loss_curve_)
    # The rule: an epoch "does not improve" when its loss > best so far - tol; stop after
    # n_iter_no_change + 1 such epochs in a row.
    best, count = np.inf, 0
    for loss in curve:
        count = count + 1 if loss > best - 1e-2 else 0
        best = min(best, loss)
    assert count == 4 and model.best_loss_ == curve.min()
    assert model.validation_scores_ is None


def test_ctrl_c_ends_fit_keeping_the_model_and_the_finished_iterations(monkeypatch):
    X, y = blobs()
    train_epoch, calls = fastmlp.training.FitLoop.train_epoch, []

    def interrupted_third_epoch(loop, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return train_epoch(loop, *args, **kwargs)

    monkeypatch.setattr(fastmlp.training.FitLoop, "train_epoch", interrupted_third_epoch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(X, y)
    assert len(calls) == 3 and model.n_iter_ == 2 and len(model.loss_curve_) == 2
    assert model.t_ == 2 * len(X) and model.predict(X).shape == y.shape


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = blobs(n=400)
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, early_stopping=True,
                          validation_fraction=0.2, n_iter_no_change=4, tol=1e-3,
                          learning_rate_init=0.01,
                          random_state=0, n_threads=1).fit(X, y)
    assert model.best_loss_ is None and len(model.validation_scores_) == model.n_iter_
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.n_iter_ < 300
    assert model.score(X, y) > 0.9


def test_partial_fit_needs_classes_first_then_learns():
    X, y = blobs()
    labels = np.array(["a", "b", "c"])[y]
    model = MLPClassifier(**FAST, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        model.partial_fit(X, labels)
    model.partial_fit(X[:100], labels[:100], classes=["a", "b", "c"])
    first = model.score(X, labels)
    for _ in range(30):
        model.partial_fit(X, labels)
    # scikit-learn counts n_iter_ per call (1 for partial_fit) and t_ over all of them.
    assert model.n_iter_ == 1 and model.t_ == 100 + 30 * len(X)
    assert model.score(X, labels) > max(first, 0.9)
    with pytest.raises(ValueError, match=r"`y` has classes \['z'\] not in classes_"):
        model.partial_fit(X[:3], np.array(["a", "b", "z"]))
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        MLPRegressor(early_stopping=True).partial_fit(X, y.astype(float))


def test_partial_fit_takes_scikit_learns_argument_order():
    """scikit-learn >= 1.7: partial_fit(X, y, sample_weight=None, classes=None), for the
    classifier as for the regressor; the third positional argument is sample_weight."""
    ours = list(inspect.signature(MLPClassifier.partial_fit).parameters)
    theirs = list(inspect.signature(SklearnMLPClassifier.partial_fit).parameters)
    assert ours == theirs == ["self", "X", "y", "sample_weight", "classes"]
    X, y = blobs()
    weights = np.where(y == 0, 0.0, 1.0)  # rows of class 0 count for nothing
    weighted = MLPClassifier(**FAST, random_state=0).partial_fit(X, y, weights, np.unique(y))
    by_name = MLPClassifier(**FAST, random_state=0).partial_fit(X, y, sample_weight=weights,
                                                                classes=np.unique(y))
    unweighted = MLPClassifier(**FAST, random_state=0).partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_array_equal(weighted.coefs_[0], by_name.coefs_[0])
    assert not np.array_equal(weighted.coefs_[0], unweighted.coefs_[0])


def test_warm_start_continues_from_the_previous_weights():
    X, y = blobs()
    model = MLPClassifier(**dict(FAST, max_iter=1), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = model.fit(X, y).coefs_[0]
        assert np.array_equal(model.fit(X, y).coefs_[0], first)  # cold: the same fresh start
        model.set_params(warm_start=True)
        second = model.fit(X, y).coefs_[0]
    # One more Adam epoch (2 batches, lr 1e-2) moves each weight by about 2e-2 at most.
    assert 0 < np.abs(second - first).max() < 0.03
    # n_iter_ counts this fit's epochs (scikit-learn resets it); loss_curve_ keeps them all.
    assert model.n_iter_ == 1 and len(model.loss_curve_) == 2 and model.t_ == 2 * len(X)
    with pytest.raises(ValueError, match="hidden_layer_sizes changed"):
        model.set_params(hidden_layer_sizes=(8,)).fit(X, y)


def test_solvers_and_fastmlp_extras_train():
    X, y = blobs()
    for solver in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
        model = MLPClassifier(**FAST, solver=solver, random_state=0)
        assert model.fit(X, y).score(X, y) > 0.85, solver
    extras = MLPClassifier(**FAST, dropout=0.1, batch_norm=True, weight_decay=1e-4,
                           activation="logistic", random_state=0).fit(X, y)
    assert extras.score(X, y) > 0.85
    sgd = MLPClassifier(solver="sgd", momentum=0.5, nesterovs_momentum=True).fit(X, y)
    assert sgd._model.optimizer.options["nesterov"] and sgd._model.optimizer.options["momentum"] == 0.5


@pytest.mark.parametrize("params, message", [
    ({"learning_rate": "optimal"}, "learning_rate must be one of constant, invscaling"),
    ({"n_iter_no_change": 0.5}, "n_iter_no_change must be an integer >= 1, got 0.5"),
    ({"verbose": -1}, "verbose must be True, False or an integer >= 0, got -1"),
    ({"solver": "newton"}, "solver must be one of"),
    ({"activation": "softplus"}, "activation must be one of"),
    ({"hidden_layer_sizes": (10, 0)}, r"hidden_layer_sizes must be .* got \(10, 0\)"),
    ({"batch_size": 0}, "batch_size must be 'auto' or an integer >= 1, got 0"),
    ({"learning_rate_init": 0.0}, "learning_rate_init must be a number in"),
    ({"validation_fraction": 1.0}, "validation_fraction must be a number in"),
    ({"max_iter": 0}, "max_iter must be an integer >= 1, got 0"),
    ({"dropout": 1.0}, "dropout must be a number in"),
    ({"dtype": "int8"}, "dtype must be None .*, 'float32' or 'float64', got 'int8'"),
    ({"n_threads": 0}, "n_threads must be an integer >= 1, got 0"),
])
def test_bad_parameters_are_named_at_fit(params, message):
    X, y = blobs(n=30)
    model = MLPClassifier(**params)  # __init__ only stores, as scikit-learn requires
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


def test_unfitted_and_one_class_errors():
    X, y = blobs(n=30)
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    # One class trains (one logistic output learning 0), as scikit-learn's does.
    single = MLPClassifier(**FAST).fit(X, np.full(30, 7))
    assert np.array_equal(single.predict(X), np.full(30, 7))
    assert single.predict_proba(X).shape == (30, 1) and single.predict_proba(X).min() > 0.5


# ---- in scikit-learn's tools --------------------------------------------------------------------


def test_pipeline_grid_search_and_cross_val_score(digits):
    X_train, X_test, y_train, y_test = digits
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(max_iter=15, random_state=0,
                                                             learning_rate_init=0.01,
                                                             n_threads=1))
    search = GridSearchCV(pipeline, {"mlpclassifier__hidden_layer_sizes": [(8,), (64,)],
                                     "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_train, y_train)
        scores = cross_val_score(clone(pipeline), X_train, y_train, cv=3)
    assert search.best_params_["mlpclassifier__hidden_layer_sizes"] == (64,)
    assert search.score(X_test, y_test) > 0.93
    assert scores.shape == (3,) and scores.min() > 0.9


def test_fitted_estimator_pickles_and_clones():
    X, y = blobs()
    model = MLPClassifier(**FAST, random_state=0).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    restored.partial_fit(X, y)  # the optimizer state travelled too
    assert restored.n_iter_ == 1 and restored.t_ == model.t_ + len(X)
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(clone(model), "coefs_")


@pytest.mark.parametrize("solver, alpha, estimators", [
    ("sgd", 1e-4, (MLPRegressor, "MLPRegressor")), ("adam", 0.0, (MLPClassifier, "MLPClassifier"))])
def test_loss_curve_follows_scikit_learns_from_the_same_random_state(solver, alpha, estimators):
    # The same Glorot-uniform draws, gradient scale (half-MSE for regression), alpha,
    # learning rate and Adam epsilon: the epoch losses equal scikit-learn's own MLP's (shuffle
    # off here; tests/test_sklearn_parity.py shuffles too).
    ours_class, name = estimators
    theirs_class = getattr(sklearn.neural_network, name)
    X, y = load_digits(n_class=3, return_X_y=True)
    X = X[:300] / 16.0
    target = y[:300] if ours_class is MLPClassifier else y[:300] / 2.0
    params = dict(hidden_layer_sizes=(12,), solver=solver, learning_rate_init=0.01,
                  max_iter=8, shuffle=False, random_state=3, batch_size=50, alpha=alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = ours_class(**params).fit(X, target)
        theirs = theirs_class(**params).fit(X, target)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    assert isinstance(ours.model_, fastmlp.MLP) and len(ours.history_) == ours.n_iter_ == 8
    np.testing.assert_allclose(ours.model_.predict(X).reshape(ours.predict(X).shape) if ours_class
                               is MLPRegressor else ours.model_.predict_proba(X),
                               ours.predict(X) if ours_class is MLPRegressor else ours.predict_proba(X))


def test_learning_rate_schedules_and_verbose_ints(capsys):
    X, y = blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(**dict(FAST, max_iter=3), solver="sgd", learning_rate="invscaling",
                              power_t=0.25, verbose=2, random_state=0).fit(X, y)
    assert model._optimizer.learning_rate == pytest.approx(0.01 / (3 * len(X) + 1) ** 0.25)
    assert model.model_.learning_rate == pytest.approx(model._optimizer.learning_rate)
    assert capsys.readouterr().out.count("Iteration") == 3
