"""Adam's eps_hat option (epsilon added to the uncorrected sqrt(v), scikit-learn's form): the
kernel against the NumPy mirror, scikit-learn's own AdamOptimizer and a one-step analytic
value; float64 trajectories against ReferenceMLP; the default left as torch's, bit for bit;
options checks; save/load (also of files without the key); and the sklearn adapter's adam,
which now follows scikit-learn's MLP to 1e-12 instead of 1e-7."""
import json
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnClassifier
from sklearn.neural_network import MLPRegressor as SklearnRegressor
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer

import fastmlp
from fastmlp import _core, optim
from fastmlp import reference as R
from fastmlp.reference import ReferenceMLP
from fastmlp.sklearn import MLPClassifier, MLPRegressor

K = _core.kernels
SIZES, ACTIVATIONS, BATCH, STEPS = [5, 7, 6, 3], ["tanh", "relu"], 8, 15
OPTIMIZERS = [
    lambda **o: optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.2, **o),
    lambda **o: optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-3, amsgrad=True, decay_biases=False, **o),
    lambda **o: optim.AdamW(lr=0.01, betas=(0.85, 0.995), eps=1e-3, weight_decay=0.5, **o),
]
IDS = ["adam", "adam-amsgrad", "adamw"]


def batches(seed=7, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(BATCH, SIZES[0])), rng.integers(0, SIZES[-1], BATCH)) for _ in range(steps)]


def trained(optimizer, data):
    model = fastmlp.MLP(SIZES, activation=ACTIVATIONS, optimizer=optimizer, dtype="float64", seed=3)
    for x, y in data:
        model.train_step(x, y)
    return model


def kernel_steps(eps_hat, dtype, steps=6, amsgrad=False, decoupled=False, weight_decay=0.0):
    """`steps` updates of the compiled kernel and of its NumPy mirror from the same state."""
    rng = np.random.default_rng(4)
    n = 1000
    params = rng.standard_normal(n).astype(dtype)
    ours = [params] + [np.zeros(n, dtype)] * 3
    mirror = list(ours)
    for step in range(1, steps + 1):
        grads = (rng.standard_normal(n) * [2.0, 0.5, 1e-6, 1.5, 1e-4, 1.0][step % 6]).astype(dtype)
        args = (0.01, 0.9, 0.999, 1e-5, weight_decay, amsgrad, decoupled, step)
        ours = list(K.adam_update(*ours, grads, *args, eps_hat))
        mirror = list(R.adam_update(*mirror, grads, *args, eps_hat))
    return ours, mirror


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad,decoupled", [(False, False), (True, False), (False, True), (True, True)])
def test_kernel_matches_the_numpy_mirror(dtype, amsgrad, decoupled):
    ours, mirror = kernel_steps(True, dtype, amsgrad=amsgrad, decoupled=decoupled, weight_decay=0.1)
    for mine, theirs in zip(ours, mirror):
        assert mine.dtype == dtype
        single = dtype == np.float32  # parameters near 1 that cancel to ~1e-4: absolute error
        np.testing.assert_allclose(mine, theirs, rtol=1e-5 if single else 1e-14, atol=1e-6 if single else 1e-15)


def test_kernel_is_scikit_learns_adam_to_the_bit():
    """scikit-learn's own AdamOptimizer, fed the same gradients: the same bits, step after step."""
    rng = np.random.default_rng(6)
    params = rng.standard_normal(5000)
    theirs = [params.copy()]
    sklearn_adam = AdamOptimizer(theirs, learning_rate_init=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-5)
    ours = [params.copy()] + [np.zeros_like(params)] * 3
    for step in range(1, 9):
        grads = rng.standard_normal(params.size) * 10.0 ** -rng.integers(0, 7)
        sklearn_adam.update_params(theirs, [grads])
        ours = list(K.adam_update(*ours, grads, 0.01, 0.9, 0.999, 1e-5, 0.0, False, False, step, True))
        assert np.array_equal(ours[0], theirs[0]), step
    # torch's placement does not give these bits
    torch_form = K.adam_update(params, *[np.zeros_like(params)] * 3, grads, 0.01, 0.9, 0.999, 1e-5, 0.0,
                               False, False, 1)[0]
    first = K.adam_update(params, *[np.zeros_like(params)] * 3, grads, 0.01, 0.9, 0.999, 1e-5, 0.0,
                          False, False, 1, True)[0]
    assert not np.allclose(torch_form, first, rtol=1e-9, atol=0)


def test_first_step_is_the_analytic_value():
    """From zero moments: m = (1 - b1) g, v = (1 - b2) g^2, so the step is
    lr sqrt(1 - b2) g / (sqrt(1 - b2) |g| + eps) with eps_hat, lr g / (|g| + eps) without."""
    g = np.array([3.0, -1e-4, 1e-7, -2.5e-9, 0.0])
    zeros = [np.zeros_like(g)] * 3
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-6
    for eps_hat, expected in ((True, lr * np.sqrt(1 - b2) * g / (np.sqrt(1 - b2) * np.abs(g) + eps)),
                              (False, lr * g / (np.abs(g) + eps))):
        params = K.adam_update(np.ones_like(g), *zeros, g, lr, b1, b2, eps, 0.0, False, False, 1, eps_hat)[0]
        np.testing.assert_allclose(1 - params, expected, rtol=1e-9, atol=1e-17)


@pytest.mark.parametrize("eps_hat", [False, True])
@pytest.mark.parametrize("make", OPTIMIZERS, ids=IDS)
def test_trajectories_follow_the_reference(make, eps_hat):
    optimizer = make(eps_hat=eps_hat)
    model = fastmlp.MLP(SIZES, activation=ACTIVATIONS, optimizer=optimizer, dtype="float64", seed=3)
    reference = ReferenceMLP(SIZES, ACTIVATIONS, optimizer=optimizer.name,
                             optimizer_options=dict(optimizer.options), seed=3)
    reference.set_flat_params(model.flat_parameters)
    for x, y in batches():
        np.testing.assert_allclose(model.train_step(x, y), reference.train_step(x, y), rtol=1e-10)
    np.testing.assert_allclose(model.flat_parameters, reference.params, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("make", OPTIMIZERS, ids=IDS)
def test_default_is_torchs_formula_bit_for_bit_and_the_option_changes_it(make):
    """No option, eps_hat=False, and the kernel called as before the option existed (no
    eps_hat argument) give the same bits; eps_hat=True moves the trajectory (eps=1e-3 here)."""
    assert make().options["eps_hat"] is False and make() == make(eps_hat=False)
    data = batches(steps=8)
    default, off, on = (trained(o, data).flat_parameters for o in (make(), make(eps_hat=False), make(eps_hat=True)))
    assert np.array_equal(default, off)
    assert not np.allclose(default, on, rtol=1e-6, atol=0)
    ours, _ = kernel_steps(False, np.float64, amsgrad=True, decoupled=True, weight_decay=0.1)
    rng = np.random.default_rng(4)
    old = [rng.standard_normal(1000)] + [np.zeros(1000)] * 3
    for step in range(1, 7):
        grads = rng.standard_normal(1000) * [2.0, 0.5, 1e-6, 1.5, 1e-4, 1.0][step % 6]
        old = list(K.adam_update(*old, grads, 0.01, 0.9, 0.999, 1e-5, 0.1, True, True, step))
    for mine, before in zip(ours, old):
        assert np.array_equal(mine, before)


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW], ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [1, 0, "True", None, 1.0])
def test_an_eps_hat_that_is_not_a_bool_is_refused_naming_it(cls, value):
    with pytest.raises(TypeError, match=rf"^eps_hat must be True or False, got {value!r}$"):
        cls(eps_hat=value)


def test_other_optimizers_have_no_such_option():
    with pytest.raises(TypeError, match="eps_hat"):
        optim.SGD(eps_hat=True)
    with pytest.raises(ValueError, match="sgd has no option 'eps_hat'"):
        R.optimizer_options_with_defaults("sgd", {"eps_hat": True})


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW], ids=lambda c: c.__name__)
def test_repr_config_and_equality_carry_the_option(cls):
    optimizer = cls(eps_hat=True)
    assert "eps_hat=True" in repr(optimizer)
    config = optimizer.to_config()
    assert config["options"]["eps_hat"] is True
    assert optim.make_optimizer(json.loads(json.dumps(config))) == optimizer
    assert optimizer != cls()


def rewrite_header(path, change):
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def continue_training(model, data):
    for x, y in data:
        model.train_step(x, y)
    return model.flat_parameters


def test_save_load_round_trip_keeps_eps_hat(tmp_path):
    model = trained(optim.Adam(lr=0.01, eps=1e-3, eps_hat=True), batches(steps=4))
    model.save(tmp_path / "m.npz")
    loaded = fastmlp.load(tmp_path / "m.npz")
    assert loaded.optimizer == model.optimizer and loaded.optimizer.options["eps_hat"] is True
    rest = batches(seed=8, steps=4)
    assert np.array_equal(continue_training(loaded, rest), continue_training(model, rest))


def test_a_file_written_before_the_option_loads_as_torchs_formula(tmp_path):
    model = trained(optim.AdamW(lr=0.01, eps=1e-3), batches(steps=3))
    path = tmp_path / "old.npz"
    model.save(path)
    rewrite_header(path, lambda header: header["optimizer"]["options"].pop("eps_hat"))
    with np.load(path) as archive:
        assert "eps_hat" not in archive["header"].tobytes().decode()
    loaded = fastmlp.load(path)
    assert loaded.optimizer.options["eps_hat"] is False
    rest = batches(seed=9, steps=3)
    assert np.array_equal(continue_training(loaded, rest), continue_training(model, rest))


def test_a_forged_eps_hat_in_a_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "forged.npz"
    trained(optim.Adam(), batches(steps=1)).save(path)
    rewrite_header(path, lambda header: header["optimizer"]["options"].update(eps_hat="yes"))
    with pytest.raises(ValueError, match="not a valid fastmlp model file.*eps_hat must be True or False"):
        fastmlp.load(path)


# ---- the sklearn adapter's adam is scikit-learn's ----------------------------------------


def standardized(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


def fitted_pair(theirs_cls, ours_cls, X, y, **options):
    common = dict(hidden_layer_sizes=(8,), solver="adam", shuffle=False, random_state=0, tol=0.0,
                  n_iter_no_change=10 ** 6, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return theirs_cls(**common).fit(X, y), ours_cls(**common, dtype="float64").fit(X, y)


def flat(estimator):
    return np.concatenate([a.ravel() for a in estimator.coefs_ + estimator.intercepts_])


@pytest.mark.parametrize("batch_size,alpha", [(150, 1e-4), (32, 1.0)])  # 32: a last batch of 22
def test_adapter_classifier_adam_follows_scikit_learn(batch_size, alpha):
    """Measured: loss_curve_ to 7e-16 relative, the parameters to 1.1e-16 (1.3e-7 and 5e-7
    with torch's epsilon placement)."""
    X, y = load_iris(return_X_y=True)
    theirs, ours = fitted_pair(SklearnClassifier, MLPClassifier, standardized(X), y,
                               batch_size=batch_size, alpha=alpha, max_iter=40)
    assert ours.model_.optimizer.options["eps_hat"] is True
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("outputs", [1, 2])
def test_adapter_regressor_adam_follows_scikit_learn(outputs):
    """Squared error: the gradient scale (1/2 per output) and epsilon / scale in play.
    Measured: loss_curve_ to 7e-16 relative, the parameters to 1.7e-16 (1e-6 and 1.2e-5 with
    torch's epsilon placement)."""
    X, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()
    if outputs == 2:
        y = np.column_stack([y, 0.5 * y ** 2])
    theirs, ours = fitted_pair(SklearnRegressor, MLPRegressor, standardized(X), y, max_iter=25,
                               learning_rate_init=0.01)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-12, atol=1e-13)


def test_adapter_adamw_stays_torchs():
    X, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(solver="adamw", max_iter=2).fit(standardized(X), y)
    assert model.model_.optimizer.options["eps_hat"] is False
