"""The whole network against its NumPy mirror: 20-step training trajectories of fastmlp.MLP
and ReferenceMLP in float64 for every optimizer (non-default options), every loss, dropout
and batch norm; and the network's gradients against central finite differences of its own
loss for every activation x loss."""
import numpy as np
import pytest

import fastmlp
from fastmlp import optim
from fastmlp.reference import ReferenceMLP

from conftest import numerical_gradient

ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "gelu"]
LOSSES = ["cross_entropy", "mse", "bce", "gaussian_nll"]

# Every optimizer with options away from torch's defaults, so each option's term is exercised.
OPTIMIZERS = [
    optim.SGD(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=1e-3),
    optim.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    optim.Adagrad(lr=0.05, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1,
                  eps=1e-8),
    optim.Adadelta(lr=0.5, rho=0.8, eps=1e-5, weight_decay=1e-3),
    optim.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=1e-3, momentum=0.5, centered=True),
    optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3, amsgrad=True),
    optim.AdamW(lr=0.01, betas=(0.85, 0.995), eps=1e-7, weight_decay=0.05, amsgrad=False),
]

N_FEATURES, N_OUTPUTS, BATCH, STEPS = 5, 3, 8, 20


def targets_for(loss, rng, rows, n_outputs=N_OUTPUTS):
    """Random targets of the kind each loss takes."""
    if loss == "cross_entropy":
        return rng.integers(0, n_outputs, rows)
    if loss == "bce":
        return (rng.random((rows, n_outputs)) < 0.5).astype(np.float64)
    return rng.normal(size=(rows, n_outputs))


def twin_models(loss="cross_entropy", optimizer=None, activations=("tanh", "relu"), **options):
    """fastmlp.MLP and a ReferenceMLP with the same architecture, options and starting bits."""
    optimizer = optimizer or optim.Adam(lr=0.01)
    sizes = [N_FEATURES, 7, 6, N_OUTPUTS]
    model = fastmlp.MLP(sizes, activation=list(activations), loss=loss, optimizer=optimizer,
                        dtype="float64", seed=3, **options)
    reference_sizes = list(sizes)
    if loss == "gaussian_nll":
        reference_sizes[-1] *= 2  # a mean and a log-variance per target
    reference = ReferenceMLP(reference_sizes, list(activations), loss=loss,
                             optimizer=optimizer.name, optimizer_options=dict(optimizer.options),
                             dropout=options.get("dropout", 0.0),
                             batch_norm=options.get("batch_norm", False), seed=3,
                             label_smoothing=options.get("label_smoothing", 0.0),
                             class_weights=options.get("class_weights"))
    reference.set_flat_params(model.flat_parameters)
    return model, reference


def train_both(model, reference, loss, rng, steps=STEPS):
    for step in range(steps):
        x = rng.normal(size=(BATCH, N_FEATURES))
        y = targets_for(loss, rng, BATCH)
        ours = model.train_step(x, y)
        theirs = reference.train_step(x, y)
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, err_msg=f"loss at step {step}")


def redundant_bias_mask(model):
    """True at the biases of dense layers followed by batch norm: the batch mean removes
    them, so their gradient is zero up to rounding and their values are rounding noise
    (amplified by adaptive optimizers), equal in no two summation orders."""
    mask = np.zeros(model.n_parameters, dtype=bool)
    if model.batch_norm:
        for layer in model._network.layers[:-1]:
            mask[layer["bias"]:layer["bias"] + layer["fan_out"]] = True
    return mask


def assert_same_parameters(model, reference):
    ours, theirs = model.flat_parameters, reference.params
    redundant = redundant_bias_mask(model)
    np.testing.assert_allclose(ours[~redundant], theirs[~redundant], rtol=1e-10, atol=1e-13)
    assert np.all(np.abs(ours[redundant]) < 1e-8) and np.all(np.abs(theirs[redundant]) < 1e-8)


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: f"{o.name}-{sorted(o.options.items())}")
def test_every_optimizer_follows_the_reference_for_20_steps(optimizer):
    rng = np.random.default_rng(7)
    model, reference = twin_models(optimizer=optimizer)
    train_both(model, reference, "cross_entropy", rng)
    assert_same_parameters(model, reference)
    # The parameters did move: a trajectory test of a frozen model would prove nothing.
    assert np.max(np.abs(reference.params - twin_models(optimizer=optimizer)[1].params)) > 1e-3


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_follows_the_reference_for_20_steps(loss):
    rng = np.random.default_rng(11)
    model, reference = twin_models(loss=loss, optimizer=optim.SGD(lr=0.05, momentum=0.9))
    train_both(model, reference, loss, rng)
    assert_same_parameters(model, reference)


@pytest.mark.parametrize("options", [
    dict(dropout=0.3),
    dict(batch_norm=True),
    dict(batch_norm=True, dropout=0.2),
    dict(label_smoothing=0.1, class_weights=[1.0, 2.0, 0.5]),
], ids=str)
def test_regularised_training_follows_the_reference_for_20_steps(options):
    rng = np.random.default_rng(13)
    model, reference = twin_models(optimizer=optim.RMSprop(lr=0.01, momentum=0.3), **options)
    train_both(model, reference, "cross_entropy", rng)
    assert_same_parameters(model, reference)
    if options.get("batch_norm"):
        mean, var = model._network.running_mean, model._network.running_var
        # The running mean carries the redundant biases' rounding noise (mean(xW + b) =
        # mean(x)W + b); the variance is shift-invariant and so is held to the strict bound.
        np.testing.assert_allclose(mean, np.concatenate(reference.running_mean), rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(var, np.concatenate(reference.running_var), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss", LOSSES)
def test_predictions_after_training_match_the_reference(loss):
    rng = np.random.default_rng(17)
    model, reference = twin_models(loss=loss, batch_norm=True)
    train_both(model, reference, loss, rng, steps=5)
    # Same state in both (see redundant_bias_mask), so this checks the evaluation forward.
    reference.set_flat_params(model.flat_parameters)
    widths = np.cumsum([0] + [len(m) for m in reference.running_mean])
    for layer, (start, stop) in enumerate(zip(widths[:-1], widths[1:])):
        reference.running_mean[layer] = model._network.running_mean[start:stop].copy()
        reference.running_var[layer] = model._network.running_var[start:stop].copy()
    X = rng.normal(size=(11, N_FEATURES))
    ours = model._network.predict(X)
    np.testing.assert_allclose(ours, reference.predict(X), rtol=1e-10, atol=1e-13)


def network_loss(model, X, y):
    """The C++ network's mean loss in evaluation mode."""
    loss_sum, _, rows = model._network.evaluate(X, model._targets(y, X.shape[0]))
    return loss_sum / rows


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_finite_differences_of_the_network_loss(activation, loss):
    rng = np.random.default_rng(19)
    model = fastmlp.MLP([4, 5, 4, 3], activation=activation, loss=loss, dtype="float64", seed=1)
    X = rng.normal(size=(6, 4))
    y = targets_for(loss, rng, 6)
    loss_value, analytic = model.gradients(X, y)
    params = model._network.params  # a view of the C++ buffer: writes reach the network

    def loss_at(flat):
        params[:] = flat
        return network_loss(model, X, y)

    start = params.copy()
    numeric = numerical_gradient(loss_at, start)
    params[:] = start
    assert loss_value == pytest.approx(network_loss(model, X, y), rel=1e-12)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)
    # An all-zero gradient would match a constant loss; make sure this one is informative.
    assert np.linalg.norm(numeric) > 1e-3
