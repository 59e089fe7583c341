"""Mixup: the soft-target cross-entropy kernel, and fit(mixup=alpha) step for step against
the NumPy reference (the same plan of partners and Beta draws, blended in NumPy)."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close, numerical_gradient

import fastmlp
from fastmlp import _core, optim
from fastmlp import reference as R
from fastmlp.mixup import mixup_plan

K = _core.kernels


# ---- the soft-target cross-entropy kernel ------------------------------------------------------


def random_soft_targets(rng, B, C):
    targets = rng.uniform(0.0, 1.0, (B, C))
    return targets / targets.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, C", [(1, 1), (1, 10), (7, 3), (13, 17), (129, 10)])
def test_soft_cross_entropy_matches_reference(rng, dtype, B, C):
    logits = rng.normal(0, 3, (B, C)).astype(dtype)
    targets = random_soft_targets(rng, B, C).astype(dtype)
    loss, probs = K.softmax_xent_soft_forward(logits, targets)
    ref_loss, ref_probs = R.softmax_xent_soft_forward(logits, targets)
    assert_close(loss, ref_loss, dtype, scale=10)
    assert_close(probs, ref_probs, dtype)
    assert_close(K.softmax_xent_soft_backward(probs, targets),
                 R.softmax_xent_soft_backward(probs, targets), dtype)


def test_soft_cross_entropy_gradient_and_one_hot_limit(rng):
    B, C = 5, 4
    logits = rng.normal(0, 2, (B, C))
    targets = random_soft_targets(rng, B, C)
    _, probs = K.softmax_xent_soft_forward(logits, targets)
    numeric = numerical_gradient(lambda z: K.softmax_xent_soft_forward(z, targets)[0], logits)
    np.testing.assert_allclose(K.softmax_xent_soft_backward(probs, targets), numeric, atol=1e-8)
    # One-hot targets give the integer-label cross-entropy.
    labels = rng.integers(0, C, B)
    soft_loss, _ = K.softmax_xent_soft_forward(logits, np.eye(C)[labels])
    hard_loss, _ = K.softmax_xent_forward(logits, labels, None, 0.0)
    np.testing.assert_allclose(soft_loss, hard_loss, rtol=1e-13)


# ---- mixup in the training loop -------------------------------------------------------------------


def problem(rng, n=37, features=5, classes=3):
    X = rng.normal(size=(n, features))
    return X, rng.integers(0, classes, n)


def reference_epochs(model, X, y, epochs, batch_size, alpha, n_classes=None):
    """Train a ReferenceMLP like model.fit(mixup=alpha): the same shuffles and mixup plans
    drawn from the same seeds, blended and trained in NumPy. Returns (reference, per-epoch
    (mean loss, accuracy))."""
    reference = R.ReferenceMLP(model._network_sizes, model.activations, model.loss,
                               optimizer="sgd", optimizer_options={"lr": 0.1, "momentum": 0.9},
                               label_smoothing=model.label_smoothing)
    reference.set_flat_params(model.flat_parameters)
    shuffle_rng = np.random.default_rng([model.seed, 1])
    mixup_rng = np.random.default_rng([model.seed, 3])
    logs = []
    for _ in range(epochs):
        order = shuffle_rng.permutation(len(X))
        partners, lambdas = mixup_plan(mixup_rng, order, batch_size, alpha, np.float64)
        loss_sum = correct = 0.0
        for batch, start in enumerate(range(0, len(X), batch_size)):
            rows, mates = order[start:start + batch_size], partners[start:start + batch_size]
            x, targets = R.mixup_batch(X, y, rows, mates, lambdas[batch], n_classes,
                                       model.label_smoothing)
            logits, _ = reference._forward(x, training=True, update_running_stats=False)
            if n_classes is not None:
                correct += np.sum(np.argmax(logits, 1) == np.argmax(targets, 1))
            loss_sum += reference.train_step(x, targets) * len(rows)
        logs.append((loss_sum / len(X), correct / len(X)))
    return reference, logs


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_fit_with_mixup_matches_reference_step_for_step(rng, label_smoothing):
    X, y = problem(rng)
    model = fastmlp.MLP([5, 8, 3], activation="tanh", optimizer=optim.SGD(lr=0.1, momentum=0.9),
                        dtype="float64", seed=3, label_smoothing=label_smoothing)
    reference, logs = reference_epochs(model, X, y, epochs=3, batch_size=8, alpha=0.4,
                                       n_classes=3)
    history = model.fit(X, y, epochs=3, batch_size=8, mixup=0.4)
    np.testing.assert_allclose(model.flat_parameters, reference.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(history["loss"], [loss for loss, _ in logs], rtol=1e-10)
    np.testing.assert_allclose(history["accuracy"], [accuracy for _, accuracy in logs])


def test_fit_with_mixup_blends_regression_targets(rng):
    X = rng.normal(size=(30, 3))
    y = X @ rng.normal(size=(3, 2))
    model = fastmlp.MLP([3, 6, 2], activation="relu", loss="mse",
                        optimizer=optim.SGD(lr=0.1, momentum=0.9), dtype="float64", seed=1)
    reference, logs = reference_epochs(model, X, y, epochs=2, batch_size=7, alpha=1.0)
    history = model.fit(X, y, epochs=2, batch_size=7, mixup=1.0)
    np.testing.assert_allclose(model.flat_parameters, reference.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(history["loss"], [loss for loss, _ in logs], rtol=1e-10)


def test_mixup_plan_pairs_rows_within_their_batch():
    order = np.random.default_rng(0).permutation(23)
    partners, lambdas = mixup_plan(np.random.default_rng(1), order, 5, 0.2, np.float32)
    assert lambdas.shape == (5,) and lambdas.dtype == np.float32
    assert np.all((lambdas >= 0) & (lambdas <= 1))
    for start in range(0, 23, 5):
        np.testing.assert_array_equal(np.sort(partners[start:start + 5]),
                                      np.sort(order[start:start + 5]))


def test_mixup_is_seeded_changes_training_and_survives_save_load(rng, tmp_path):
    X, y = problem(rng, n=40)

    def trained(mixup):
        model = fastmlp.MLP([5, 8, 3], seed=7)
        model.fit(X, y, epochs=2, batch_size=8, mixup=mixup)
        return model

    np.testing.assert_array_equal(trained(0.3).flat_parameters, trained(0.3).flat_parameters)
    assert not np.array_equal(trained(0.3).flat_parameters, trained(0.0).flat_parameters)
    # Resuming from a file continues the same mixup draws.
    straight = trained(0.3)
    straight.fit(X, y, epochs=1, batch_size=8, mixup=0.3)
    resumed = trained(0.3)
    resumed.save(tmp_path / "m.npz")
    resumed = fastmlp.load(tmp_path / "m.npz")
    resumed.fit(X, y, epochs=1, batch_size=8, mixup=0.3)
    np.testing.assert_array_equal(resumed.flat_parameters, straight.flat_parameters)


@pytest.mark.parametrize("alpha", [-0.1, float("nan"), float("inf"), "0.2", True])
def test_bad_mixup_alpha(rng, alpha):
    X, y = problem(rng)
    with pytest.raises(ValueError, match="mixup must be"):
        fastmlp.MLP([5, 3], seed=0).fit(X, y, mixup=alpha)


def test_mixup_rejects_class_weights(rng):
    X, y = problem(rng)
    model = fastmlp.MLP([5, 3], seed=0, class_weights=[1, 2, 1])
    with pytest.raises(ValueError, match="class_weights"):
        model.fit(X, y, mixup=0.2)


def test_core_checks_the_mixup_plan(rng):
    X, y = problem(rng, n=10)
    network = fastmlp.MLP([5, 3], seed=0)._network
    X32, order = X.astype(np.float32), np.arange(10, dtype=np.int64)
    good_lambdas = np.full(3, 0.5, np.float32)
    with pytest.raises(ValueError, match="both partners and lambdas"):
        network.train_batches(X32, y, order, 4, 0, 3, order, None)
    with pytest.raises(ValueError, match=r"partners must have one index per entry of order \(10\), got shape \(5,\)"):
        network.train_batches(X32, y, order, 4, 0, 3, order[:5], good_lambdas)
    with pytest.raises(ValueError, match=r"partners\[3\] is not a row"):
        network.train_batches(X32, y, order, 4, 0, 3, np.where(order == 3, 99, order), good_lambdas)
    with pytest.raises(ValueError, match="one value per batch of the epoch"):
        network.train_batches(X32, y, order, 4, 0, 3, order, good_lambdas[:2])
    with pytest.raises(ValueError, match=r"lambdas\[1\] = 1.5.* not in \[0, 1\]"):
        network.train_batches(X32, y, order, 4, 0, 3, order, np.array([0.5, 1.5, 0.5], np.float32))
    with pytest.raises(TypeError, match="lambdas must have dtype float32"):
        network.train_batches(X32, y, order, 4, 0, 3, order, good_lambdas.astype(np.float64))
