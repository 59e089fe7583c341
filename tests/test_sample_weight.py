"""Per-row sample weights: every loss kernel against the NumPy reference, torch
(reduction="none", then the weighted mean) and scikit-learn's own MLP losses, finite-difference
gradients, the invariances (all-ones == none bitwise, integer weights == repeated rows, zero
weight == row removed) and MLP.fit / train_step / evaluate with their checks."""
import numpy as np
import pytest

import fastmlp
from fastmlp import _core
from fastmlp import reference as R

K = _core.kernels


def close(a, b, dtype, scale=1.0):
    tolerance = (1e-5 if dtype == np.float32 else 1e-12) * scale
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=tolerance, atol=tolerance)


def weights_for(rng, B, dtype, zeros=True):
    w = rng.uniform(0, 3, B).astype(dtype)
    if zeros and B > 2:
        w[rng.choice(B, B // 3, replace=False)] = 0
        w[0] = 1.5  # never all zero
    return w


# ---- kernels ---------------------------------------------------------------------------------------


def loss_cases(rng, B, C, dtype):
    """(name, forward(weights) -> loss, backward(weights) -> grad, reference forward, reference
    backward) for every loss kernel."""
    logits = rng.normal(size=(B, C)).astype(dtype)
    labels = rng.integers(0, C, B)
    class_weights = rng.uniform(0.5, 2, C).astype(dtype)
    soft = rng.dirichlet(np.ones(C), B).astype(dtype)
    target = rng.uniform(0, 1, (B, C)).astype(dtype)
    out = rng.normal(size=(B, 2 * C)).astype(dtype)
    probs = K.softmax_xent_forward(logits, labels)[1]
    return [
        ("xent", lambda s: K.softmax_xent_forward(logits, labels, class_weights, 0.1, s)[0],
         lambda s: K.softmax_xent_backward(probs, labels, class_weights, 0.1, s),
         lambda s: R.softmax_xent_forward(logits, labels, class_weights, 0.1, s)[0],
         lambda s: R.softmax_xent_backward(probs, labels, class_weights, 0.1, s)),
        ("soft xent", lambda s: K.softmax_xent_soft_forward(logits, soft, s)[0],
         lambda s: K.softmax_xent_soft_backward(probs, soft, s),
         lambda s: R.softmax_xent_soft_forward(logits, soft, s)[0],
         lambda s: R.softmax_xent_soft_backward(probs, soft, s)),
        ("mse", lambda s: K.mse_forward(logits, target, s), lambda s: K.mse_backward(logits, target, s),
         lambda s: R.mse_forward(logits, target, s), lambda s: R.mse_backward(logits, target, s)),
        ("bce", lambda s: K.bce_logits_forward(logits, target, s),
         lambda s: K.bce_logits_backward(logits, target, s),
         lambda s: R.bce_logits_forward(logits, target, s), lambda s: R.bce_logits_backward(logits, target, s)),
        ("gaussian_nll", lambda s: K.gaussian_nll_forward(out, target, s),
         lambda s: K.gaussian_nll_backward(out, target, s),
         lambda s: R.gaussian_nll_forward(out, target, s), lambda s: R.gaussian_nll_backward(out, target, s)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,C", [(1, 3), (7, 5), (33, 10)])
def test_weighted_losses_match_the_reference(rng, dtype, B, C):
    w = weights_for(rng, B, dtype)
    for name, forward, backward, ref_forward, ref_backward in loss_cases(rng, B, C, dtype):
        close(forward(w), ref_forward(w), dtype, scale=10)
        close(backward(w), ref_backward(w), dtype)
        # all-ones weights and no weights run the same arithmetic: the same bits
        ones = np.ones(B, dtype)
        assert forward(ones) == forward(None), name
        np.testing.assert_array_equal(backward(ones), backward(None), err_msg=name)


def test_weighted_losses_match_torch_reduction_none_then_weighted_mean(rng):
    torch = pytest.importorskip("torch")
    B, C = 17, 4
    w = weights_for(rng, B, np.float64)
    tw = torch.tensor(w)
    logits = rng.normal(size=(B, C))
    labels = rng.integers(0, C, B)
    target = rng.uniform(0, 1, (B, C))
    out = rng.normal(size=(B, 2 * C))
    tl = torch.tensor(logits)

    def weighted(per_row):  # (B,) or (B, D) losses -> sum_i w_i loss_i / (sum_i w_i * D)
        per_row = per_row.reshape(B, -1)
        return float((per_row * tw[:, None]).sum() / (tw.sum() * per_row.shape[1]))

    ce = torch.nn.functional.cross_entropy(tl, torch.tensor(labels), reduction="none")
    close(K.softmax_xent_forward(logits, labels, None, 0.0, w)[0], weighted(ce), np.float64)
    mse = torch.nn.functional.mse_loss(tl, torch.tensor(target), reduction="none")
    close(K.mse_forward(logits, target, w), weighted(mse), np.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(tl, torch.tensor(target), reduction="none")
    close(K.bce_logits_forward(logits, target, w), weighted(bce), np.float64)
    mean, log_var = torch.tensor(out[:, :C]), torch.tensor(out[:, C:])
    nll = torch.nn.functional.gaussian_nll_loss(mean, torch.tensor(target), log_var.exp(), eps=0.0,
                                                reduction="none")
    close(K.gaussian_nll_forward(out, target, w), weighted(nll), np.float64)
    # and the gradients, through autograd of the weighted mean
    for loss_name, make in [("ce", lambda z: torch.nn.functional.cross_entropy(z, torch.tensor(labels), reduction="none")),
                            ("mse", lambda z: torch.nn.functional.mse_loss(z, torch.tensor(target), reduction="none"))]:
        z = torch.tensor(logits, requires_grad=True)
        per_row = make(z).reshape(B, -1)
        ((per_row * tw[:, None]).sum() / (tw.sum() * per_row.shape[1])).backward()
        ours = (K.softmax_xent_backward(K.softmax_forward(logits), labels, None, 0.0, w) if loss_name == "ce"
                else K.mse_backward(logits, target, w))
        close(ours, z.grad.numpy(), np.float64)


def test_weighted_losses_match_scikit_learns_mlp_losses(rng):
    """scikit-learn's MLP (sklearn.neural_network._base, >= 1.7) averages each sample's loss
    with np.average(..., weights=sample_weight): the same normalisation as ours (its squared
    loss is half our mse; its binary log-loss sums the outputs where ours averages them)."""
    base = pytest.importorskip("sklearn.neural_network._base")
    B, C = 23, 3
    w = weights_for(rng, B, np.float64)
    logits = rng.normal(size=(B, C))
    labels = rng.integers(0, C, B)
    probs = K.softmax_forward(logits)
    close(K.softmax_xent_forward(logits, labels, None, 0.0, w)[0],
          base.log_loss(np.eye(C)[labels], probs, w), np.float64)
    target = rng.normal(size=(B, C))
    close(0.5 * K.mse_forward(logits, target, w), base.squared_loss(target, logits, w), np.float64)
    binary = rng.integers(0, 2, (B, C)).astype(np.float64)
    close(C * K.bce_logits_forward(logits, binary, w),
          base.binary_log_loss(binary, 1 / (1 + np.exp(-logits)), w), np.float64)


def test_weighted_loss_gradients_match_finite_differences(rng):
    B, C, h = 6, 4, 1e-6
    w = weights_for(rng, B, np.float64)
    logits = rng.normal(size=(B, C))
    labels = rng.integers(0, C, B)
    target = rng.uniform(0, 1, (B, C))
    out = rng.normal(size=(B, 2 * C))
    cases = [
        (logits, lambda z: K.softmax_xent_forward(z, labels, None, 0.2, w)[0],
         K.softmax_xent_backward(K.softmax_forward(logits), labels, None, 0.2, w)),
        (logits, lambda z: K.mse_forward(z, target, w), K.mse_backward(logits, target, w)),
        (logits, lambda z: K.bce_logits_forward(z, target, w), K.bce_logits_backward(logits, target, w)),
        (out, lambda z: K.gaussian_nll_forward(z, target, w), K.gaussian_nll_backward(out, target, w)),
    ]
    for point, loss, gradient in cases:
        numeric = np.zeros_like(point)
        for index in np.ndindex(point.shape):
            up, down = point.copy(), point.copy()
            up[index] += h
            down[index] -= h
            numeric[index] = (loss(up) - loss(down)) / (2 * h)
        np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-8)


def test_loss_kernels_reject_bad_weights():
    logits, target = np.zeros((3, 2)), np.zeros((3, 2))
    with pytest.raises(ValueError, match="sample_weights must have shape"):
        K.mse_forward(logits, target, np.ones(2))
    with pytest.raises(ValueError, match="finite and >= 0"):
        K.mse_forward(logits, target, np.array([1.0, -1.0, 1.0]))
    with pytest.raises(TypeError, match="float64"):
        K.mse_forward(logits, target, np.ones(3, np.float32))


# ---- the model -------------------------------------------------------------------------------------


def blobs(rng, n=60, features=5, classes=3):
    X = rng.normal(size=(n, features))
    y = rng.integers(0, classes, n)
    X[np.arange(n), y % features] += 2.5
    return X, y


def model(loss="cross_entropy", outputs=3, dtype="float64", **kwargs):
    sizes = [5, 8, outputs]
    return fastmlp.MLP(sizes, "tanh", loss, fastmlp.optim.SGD(lr=0.1), dtype=dtype, seed=3, **kwargs)


def targets_for(rng, loss, n):
    if loss == "cross_entropy":
        return rng.integers(0, 3, n)
    if loss == "bce":
        return rng.integers(0, 2, (n, 3)).astype(float)
    return rng.normal(size=(n, 3))


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce", "gaussian_nll"])
def test_model_gradients_match_the_reference_and_finite_differences(rng, loss):
    X = rng.normal(size=(9, 5))
    y = targets_for(rng, loss, 9)
    w = weights_for(rng, 9, np.float64)
    ours = model(loss)
    reference = R.ReferenceMLP(ours._network_sizes, "tanh", loss, "sgd", {"lr": 0.1})
    reference.set_flat_params(ours.flat_parameters)
    targets = ours._targets(y, 9)
    loss_value, gradient = ours.gradients(X, y, sample_weight=w)
    ref_loss, ref_gradient = reference.compute_gradients(X, targets, sample_weights=w)
    close(loss_value, ref_loss, np.float64)
    close(gradient, ref_gradient, np.float64)
    flat, h = ours.flat_parameters, 1e-6
    for index in rng.choice(flat.size, 12, replace=False):
        up, down = flat.copy(), flat.copy()
        up[index] += h
        down[index] -= h
        numeric = (reference.loss_at(up, X, targets, sample_weights=w)
                   - reference.loss_at(down, X, targets, sample_weights=w)) / (2 * h)
        assert gradient[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_ones_weights_train_exactly_as_no_weights(rng, dtype):
    X, y = blobs(rng)
    options = dict(epochs=3, batch_size=8, validation_split=0.2, early_stopping=True, patience=1)
    plain, weighted = model(dtype=dtype), model(dtype=dtype)
    history = plain.fit(X, y, mixup=0.3, **options)
    weighted_history = weighted.fit(X, y, mixup=0.3, sample_weight=np.ones(len(X)), **options)
    np.testing.assert_array_equal(plain.flat_parameters, weighted.flat_parameters)
    assert history["loss"] == weighted_history["loss"]
    assert history["val_loss"] == weighted_history["val_loss"]
    assert plain.evaluate(X, y) == weighted.evaluate(X, y, sample_weight=np.ones(len(X)))


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_integer_weights_equal_repeated_rows_and_zero_weights_removed_rows(rng, loss):
    X = rng.normal(size=(12, 5))
    y = targets_for(rng, loss, 12)
    counts = np.array([2, 0, 1, 3, 1, 0, 1, 2, 1, 1, 0, 4])
    weighted, repeated = model(loss), model(loss)
    weighted.fit(X, y, epochs=5, batch_size=len(X), shuffle=False, sample_weight=counts)
    rows = np.repeat(np.arange(12), counts)
    repeated.fit(X[rows], y[rows], epochs=5, batch_size=len(rows), shuffle=False)
    np.testing.assert_allclose(weighted.flat_parameters, repeated.flat_parameters, rtol=1e-11, atol=1e-13)
    kept = counts > 0
    binary, removed = model(loss), model(loss)
    binary.fit(X, y, epochs=5, batch_size=len(X), shuffle=False, sample_weight=kept.astype(float))
    removed.fit(X[kept], y[kept], epochs=5, batch_size=int(kept.sum()), shuffle=False)
    np.testing.assert_allclose(binary.flat_parameters, removed.flat_parameters, rtol=1e-11, atol=1e-13)


def test_fit_matches_reference_training_step_for_step(rng):
    X, y = blobs(rng, n=20)
    w = weights_for(rng, 20, np.float64)
    ours = model()
    reference = R.ReferenceMLP(ours._network_sizes, "tanh", "cross_entropy", "sgd", {"lr": 0.1})
    reference.set_flat_params(ours.flat_parameters)
    ours.fit(X, y, epochs=2, batch_size=6, shuffle=False, sample_weight=w)
    for _ in range(2):
        for start in range(0, 20, 6):
            reference.train_step(X[start:start + 6], y[start:start + 6], sample_weights=w[start:start + 6])
    close(ours.flat_parameters, reference.params, np.float64)


def test_history_and_evaluate_are_weighted(rng):
    X, y = blobs(rng)
    w = weights_for(rng, len(X), np.float64)
    m = model()
    Xv, yv, wv = X[:20], y[:20], w[:20]
    history = m.fit(X[20:], y[20:], epochs=2, batch_size=len(X) - 20, shuffle=False,
                    sample_weight=w[20:], validation_data=(Xv, yv, wv))
    result = m.evaluate(Xv, yv, sample_weight=wv)
    assert history["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-12)
    reference = R.ReferenceMLP(m._network_sizes, "tanh", "cross_entropy", "sgd", {"lr": 0.1})
    reference.set_flat_params(m.flat_parameters)
    ref_loss, ref_accuracy = reference.evaluate(Xv, yv, sample_weights=wv)
    assert result["loss"] == pytest.approx(ref_loss, rel=1e-10)
    correct = np.argmax(m.predict_proba(Xv), axis=1) == yv
    assert result["accuracy"] == pytest.approx(np.average(correct, weights=wv), rel=1e-12)
    assert result["accuracy"] == pytest.approx(ref_accuracy, rel=1e-12)
    assert m.score(Xv, yv, sample_weight=wv) == result["accuracy"]


def test_a_batch_of_zero_weights_takes_no_step(rng):
    X, y = blobs(rng, n=12)
    w = np.ones(12)
    w[4:8] = 0  # the second batch of four
    m = model()
    m.fit(X, y, epochs=1, batch_size=4, shuffle=False, sample_weight=w)
    assert m._network.step == 2
    twin = model()
    twin.fit(np.delete(X, range(4, 8), 0), np.delete(y, range(4, 8)), epochs=1, batch_size=4, shuffle=False)
    np.testing.assert_array_equal(m.flat_parameters, twin.flat_parameters)


def test_train_step_with_weights_matches_the_reference(rng):
    X, y = blobs(rng, n=8)
    w = weights_for(rng, 8, np.float64)
    m = model()
    reference = R.ReferenceMLP(m._network_sizes, "tanh", "cross_entropy", "sgd", {"lr": 0.1})
    reference.set_flat_params(m.flat_parameters)
    assert m.train_step(X, y, sample_weight=w) == pytest.approx(reference.train_step(X, y, sample_weights=w), rel=1e-12)
    close(m.flat_parameters, reference.params, np.float64)


@pytest.mark.parametrize("weights,error,message", [
    (np.ones(5), ValueError, r"sample_weight must have one weight per row of X \(60\), got shape \(5,\)"),
    (np.ones((60, 1)), ValueError, "one weight per row"),
    (np.r_[-1.0, np.ones(59)], ValueError, r"sample_weight\[0\] = -1.0 is negative"),
    (np.r_[np.ones(3), np.nan, np.ones(56)], ValueError, r"sample_weight\[3\] = nan is not finite"),
    (np.r_[np.inf, np.ones(59)], ValueError, r"sample_weight\[0\] = inf is not finite"),
    (np.zeros(60), ValueError, "sample_weight is all zero"),
    (np.array(["a"] * 60), TypeError, "sample_weight must hold real numbers"),
])
def test_bad_sample_weights_are_refused_by_name(rng, weights, error, message):
    X, y = blobs(rng)
    m = model()
    with pytest.raises(error, match=message):
        m.fit(X, y, epochs=1, sample_weight=weights)
    with pytest.raises(error, match=message.replace("(60)", "(60)")):
        m.train_step(X, y, sample_weight=weights)
    m.fit(X, y, epochs=1)
    with pytest.raises(error, match=message):
        m.evaluate(X, y, sample_weight=weights)


def test_weights_that_leave_a_side_of_validation_split_empty_are_refused(rng):
    X, y = blobs(rng)
    m = model()
    order = np.random.default_rng([m.seed, 2]).permutation(len(X))
    w = np.ones(len(X))
    w[order[:12]] = 0  # exactly the held-out rows of validation_split=0.2
    with pytest.raises(ValueError, match="sample_weight of the validation_split rows are all zero"):
        m.fit(X, y, epochs=1, validation_split=0.2, sample_weight=w)
    with pytest.raises(ValueError, match="sample_weight_val must have one weight per row"):
        m.fit(X, y, epochs=1, validation_data=(X, y, np.ones(3)))


def test_the_core_checks_weights_itself(rng):
    X, y = blobs(rng, n=6)
    network = model()._network
    with pytest.raises(ValueError, match=r"sample_weight\[1\] = -2.* is not a finite number >= 0"):
        network.train_step(X, y, np.array([1.0, -2.0, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="sample_weight must have one weight per row"):
        network.evaluate(X, y, np.ones(5))
    with pytest.raises(TypeError, match="float64"):
        network.train_batches(X, y, np.arange(6), 2, 0, 3, sample_weight=np.ones(6, np.float32))
