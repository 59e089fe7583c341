"""decay_biases=False (weight decay on the dense weight matrices only, never on biases or
batch norm's gamma and beta) for every optimizer: float64 trajectories against ReferenceMLP
and against torch.optim with two parameter groups, an analytic zero-gradient step, the
default left as torch's, options checks, and save/load (also of files without the key)."""
import json

import numpy as np
import pytest

import fastmlp
from fastmlp import optim
from fastmlp.reference import ReferenceMLP

# Every optimizer with a weight decay large enough to matter within a few steps.
OPTIMIZERS = [
    lambda **o: optim.SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.2, **o),
    lambda **o: optim.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.2, **o),
    lambda **o: optim.Adagrad(lr=0.05, lr_decay=0.01, weight_decay=0.2, initial_accumulator_value=0.1, **o),
    lambda **o: optim.Adadelta(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.2, **o),
    lambda **o: optim.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.2, momentum=0.5, centered=True, **o),
    lambda **o: optim.Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.2, amsgrad=True, **o),
    lambda **o: optim.AdamW(lr=0.01, betas=(0.85, 0.995), weight_decay=0.5, **o),
]
IDS = ["sgd-momentum", "sgd-nesterov", "adagrad", "adadelta", "rmsprop-centered", "adam-amsgrad", "adamw"]
CLASSES = [optim.SGD, optim.Adagrad, optim.Adadelta, optim.RMSprop, optim.Adam, optim.AdamW]
SIZES, ACTIVATIONS, BATCH, STEPS = [5, 7, 6, 3], ["tanh", "relu"], 8, 15


def batches(seed=7, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(BATCH, SIZES[0])), rng.integers(0, SIZES[-1], BATCH)) for _ in range(steps)]


def model_with(optimizer, **options):
    """A float64 model whose biases start away from 0 (so a decay on them would show)."""
    model = fastmlp.MLP(SIZES, activation=ACTIVATIONS, optimizer=optimizer, dtype="float64", seed=3,
                        **options)
    rng = np.random.default_rng(5)
    model.set_weights(model.weights, [rng.uniform(-1, 1, b.shape) for b in model.biases])
    return model


@pytest.mark.parametrize("decay_biases", [False, True])
@pytest.mark.parametrize("make", OPTIMIZERS, ids=IDS)
def test_trajectories_follow_the_reference(make, decay_biases):
    optimizer = make(decay_biases=decay_biases)
    model = model_with(optimizer)
    reference = ReferenceMLP(SIZES, ACTIVATIONS, optimizer=optimizer.name,
                             optimizer_options=dict(optimizer.options), seed=3)
    reference.set_flat_params(model.flat_parameters)
    for x, y in batches():
        np.testing.assert_allclose(model.train_step(x, y), reference.train_step(x, y), rtol=1e-10)
    np.testing.assert_allclose(model.flat_parameters, reference.params, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("make", OPTIMIZERS, ids=IDS)
def test_the_two_settings_differ_by_the_decay_on_the_biases_only(make):
    """Same batches, both settings: the trajectories part (so the option does something),
    and with weight_decay 0 the option changes no bit."""
    runs = {}
    for decay_biases in (False, True):
        model = model_with(make(decay_biases=decay_biases))
        for x, y in batches(steps=5):
            model.train_step(x, y)
        runs[decay_biases] = model
    assert not np.allclose(runs[False].biases[0], runs[True].biases[0], rtol=1e-6, atol=0)
    plain = []
    for decay_biases in (False, True):
        options = dict(make().options, weight_decay=0.0, decay_biases=decay_biases)
        model = model_with(type(make())(**options))
        for x, y in batches(steps=5):
            model.train_step(x, y)
        plain.append(model.flat_parameters)
    assert np.array_equal(plain[0], plain[1])


def torch_options(optimizer):
    options = {key: value for key, value in optimizer.options.items()
               if key not in ("decay_biases", "eps_hat")}  # fastmlp's own options
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    return options


TORCH_NAMES = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop",
               "adam": "Adam", "adamw": "AdamW"}


@pytest.mark.parametrize("decay_biases", [False, True])
@pytest.mark.parametrize("make", OPTIMIZERS, ids=IDS)
def test_trajectories_match_torch_with_a_no_decay_group_for_biases(make, decay_biases):
    """decay_biases=False is torch with two parameter groups (weight_decay 0 for the biases);
    True is torch's single group."""
    torch = pytest.importorskip("torch")
    optimizer = make(decay_biases=decay_biases)
    model = model_with(optimizer)
    weights = [torch.tensor(w, requires_grad=True) for w in model.weights]
    biases = [torch.tensor(b, requires_grad=True) for b in model.biases]
    options = torch_options(optimizer)
    if decay_biases:
        groups = [{"params": weights + biases}]
    else:
        groups = [{"params": weights}, {"params": biases, "weight_decay": 0.0}]
    torch_optimizer = getattr(torch.optim, TORCH_NAMES[optimizer.name])(groups, **options)
    activations = [torch.tanh, torch.relu]
    for x, y in batches():
        model.train_step(x, y)
        torch_optimizer.zero_grad()
        a = torch.tensor(x)
        for layer, (w, b) in enumerate(zip(weights, biases)):
            a = a @ w + b
            if layer < len(activations):
                a = activations[layer](a)
        torch.nn.functional.cross_entropy(a, torch.tensor(y)).backward()
        torch_optimizer.step()
    for ours, theirs in zip(model.weights + model.biases, weights + biases):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("make", OPTIMIZERS, ids=IDS)
def test_zero_gradient_leaves_biases_and_batch_norm_alone(make):
    """With the output weights at 0 no gradient reaches the hidden layer, so one step changes
    its bias, gamma and beta only through weight decay: not at all with decay_biases=False
    (every optimizer's update of a zero gradient is exactly 0), and they move with True.
    The hidden weights move towards 0; for SGD and AdamW by exactly the textbook factor."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(BATCH, 4)), rng.integers(0, 3, BATCH)
    for decay_biases in (False, True):
        optimizer = make(decay_biases=decay_biases)
        model = fastmlp.MLP([4, 6, 3], activation="relu", optimizer=optimizer, batch_norm=True,
                            dtype="float64", seed=1)
        model.set_weights([model.weights[0], np.zeros((6, 3))], [rng.uniform(-1, 1, 6), np.zeros(3)])
        hidden = model._network.layers[0]
        params = model._network.params
        params[hidden["gamma"]:hidden["gamma"] + 6] = rng.uniform(0.5, 1.5, 6)
        params[hidden["beta"]:hidden["beta"] + 6] = rng.uniform(-1, 1, 6)
        before = model.flat_parameters
        model.train_step(x, y)
        after = model.flat_parameters
        w = slice(hidden["weight"], hidden["bias"])            # W_0
        rest = slice(hidden["bias"], hidden["beta"] + 6)       # b_0, gamma_0, beta_0
        if decay_biases:
            assert np.all(after[rest] != before[rest])
        else:
            assert np.array_equal(after[rest], before[rest])
        # Each weight moves against its sign (an adaptive step may cross 0).
        assert np.all(np.sign(before[w]) * (before[w] - after[w]) > 0)
        lr, wd = optimizer.options["lr"], optimizer.options["weight_decay"]
        if optimizer.name == "sgd":  # momentum's first step is the gradient itself
            step = (wd * before[w]) * (1 + optimizer.options["momentum"] * optimizer.options["nesterov"])
            np.testing.assert_allclose(after[w], before[w] - lr * step, rtol=1e-15)
        if optimizer.name == "adamw":  # the moments of a zero gradient are 0: only the shrink
            assert np.array_equal(after[w], before[w] * (1 - lr * wd))


def test_default_is_torchs_every_parameter_decays():
    """No option and decay_biases=True are the same optimizer and the same bits, and both
    follow the flat kernel over the whole buffer (biases decayed), computed independently
    from the model's gradients."""
    for cls in CLASSES:
        assert cls().options["decay_biases"] is True
        assert cls() == cls(decay_biases=True)
    data = batches(steps=6)
    runs = [continue_training(model_with(optimizer), data)
            for optimizer in (optim.SGD(lr=0.05, momentum=0.9, weight_decay=0.2),
                              optim.SGD(lr=0.05, momentum=0.9, weight_decay=0.2, decay_biases=True))]
    assert np.array_equal(runs[0], runs[1])
    kernels = fastmlp._core.kernels
    model = model_with(optim.SGD(lr=0.05, weight_decay=0.2))
    params = model.flat_parameters
    for x, y in data[:3]:
        _, grads = model.loss_and_gradient(params, x, y)
        params, _ = kernels.sgd_update(params, np.zeros_like(params), grads, 0.05, 0.0, 0.0, False, 0.2, 1)
        model.train_step(x, y)
    np.testing.assert_array_equal(model.flat_parameters, params)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [1, 0, "False", None, 1.0])
def test_a_decay_biases_that_is_not_a_bool_is_refused_naming_it(cls, value):
    with pytest.raises(TypeError, match=rf"^decay_biases must be True or False, got {value!r}$"):
        cls(decay_biases=value)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_repr_config_and_equality_carry_the_option(cls):
    optimizer = cls(decay_biases=False)
    assert "decay_biases=False" in repr(optimizer)
    config = optimizer.to_config()
    assert config["options"]["decay_biases"] is False
    assert optim.make_optimizer(json.loads(json.dumps(config))) == optimizer
    assert optimizer != cls()
    # MLP's weight_decay override keeps it.
    model = fastmlp.MLP([3, 4, 2], optimizer=optimizer, weight_decay=0.25)
    assert model.optimizer.options["decay_biases"] is False
    assert model.optimizer.options["weight_decay"] == 0.25


def continue_training(model, data):
    for x, y in data:
        model.train_step(x, y)
    return model.flat_parameters


def test_save_load_round_trip_keeps_decay_biases(tmp_path):
    model = model_with(optim.Adam(lr=0.01, weight_decay=0.3, decay_biases=False))
    continue_training(model, batches(steps=4))
    model.save(tmp_path / "m.npz")
    loaded = fastmlp.load(tmp_path / "m.npz")
    assert loaded.optimizer == model.optimizer and loaded.optimizer.options["decay_biases"] is False
    rest = batches(seed=8, steps=4)
    assert np.array_equal(continue_training(loaded, rest), continue_training(model, rest))


def rewrite_header(path, change):
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_a_file_written_before_the_option_loads_as_torchs_semantics(tmp_path):
    model = model_with(optim.Adam(lr=0.01, weight_decay=0.3))
    continue_training(model, batches(steps=3))
    path = tmp_path / "old.npz"
    model.save(path)
    rewrite_header(path, lambda header: header["optimizer"]["options"].pop("decay_biases"))
    with np.load(path) as archive:
        assert "decay_biases" not in archive["header"].tobytes().decode()
    loaded = fastmlp.load(path)
    assert loaded.optimizer.options["decay_biases"] is True
    rest = batches(seed=9, steps=3)
    assert np.array_equal(continue_training(loaded, rest), continue_training(model, rest))


def test_a_forged_decay_biases_in_a_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "forged.npz"
    model_with(optim.SGD(lr=0.1)).save(path)
    rewrite_header(path, lambda header: header["optimizer"]["options"].update(decay_biases="no"))
    with pytest.raises(ValueError, match="not a valid fastmlp model file.*decay_biases must be True or False"):
        fastmlp.load(path)
