"""A step in one process updates each weight matrix inside the GEMM that makes its gradient,
block by block while the block is in cache (csrc/network.cpp: step_in_weight_gradients), when
the whole gradient is finite for certain beforehand. It must give the bits of making the whole
gradient first and then updating (`update_in_weight_gradients = False`): parameters, every
optimizer state, the gradient buffer and the losses, for every optimizer, precision and
regularisation, and when the step is refused."""
import numpy as np
import pytest

import fastmlp
from fastmlp import _core, optim

OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.05),
    "sgd-nesterov-decay": lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2,
                                            decay_biases=False),
    "adagrad": lambda: optim.Adagrad(lr=0.05, lr_decay=1e-3, weight_decay=1e-3),
    "adadelta": lambda: optim.Adadelta(weight_decay=1e-3, decay_biases=False),
    "rmsprop-centered": lambda: optim.RMSprop(lr=1e-2, momentum=0.5, centered=True),
    "adam": lambda: optim.Adam(lr=1e-2),
    "adam-decay-eps-hat": lambda: optim.Adam(lr=1e-2, weight_decay=1e-2, decay_biases=False, eps_hat=True),
    "adamw-amsgrad": lambda: optim.AdamW(lr=1e-2, weight_decay=0.1, amsgrad=True),
}

PRECISIONS = {
    "float32": {"dtype": "float32"},
    "float64": {"dtype": "float64"},
    "bfloat16": {"dtype": "float32", "compute_dtype": "bfloat16"},
}


def blobs(n, features, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.standard_normal((n, features)) + 2.0 * np.eye(classes, features)[y]
    return X, y


def model_state(model):
    network = model._network
    state = {"params": network.params.copy(), "grads": network.grads.copy(), "step": network.step}
    state.update({name: buffer.copy() for name, buffer in network.optimizer_state.items()})
    return state


def assert_same_bits(one, other):
    assert one.keys() == other.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], other[name], err_msg=name)


def steps(fused, optimizer, precision, threads, model_options=(), x_scale=1.0):
    # Widths that are not multiples of any register tile (edge tiles in every GEMM), rows that
    # split unevenly between two threads, and a first layer big enough to run in parallel.
    X, y = blobs(n=4 * 130, features=70)
    options = {"activation": "relu", **PRECISIONS[precision], **dict(model_options)}
    model = fastmlp.MLP([70, 301, 133, 3], seed=2, optimizer=OPTIMIZERS[optimizer](), n_threads=threads, **options)
    model._network.update_in_weight_gradients = fused
    losses = []
    for batch in range(4):
        rows = slice(130 * batch, 130 * batch + 130)
        try:
            losses.append(model.train_step(X[rows] * x_scale, y[rows]))
        except FloatingPointError as error:
            losses.append(str(error))
    return losses, model_state(model)


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_a_step_inside_the_weight_gradients_gives_the_bits_of_gradient_then_update(optimizer, precision):
    fused_losses, fused = steps(True, optimizer, precision, threads=2)
    losses, unfused = steps(False, optimizer, precision, threads=2)
    assert fused_losses == losses
    assert_same_bits(fused, unfused)
    assert fused["step"] == 4


@pytest.mark.parametrize("model_options", [{"batch_norm": True}, {"dropout": 0.3}],
                         ids=["batch-norm", "dropout"])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_same_bits_with_batch_norm_or_dropout_at_any_thread_count(model_options, threads):
    for precision in ("float32", "bfloat16"):
        fused_losses, fused = steps(True, "adam", precision, threads, model_options.items())
        losses, unfused = steps(False, "adam", precision, threads, model_options.items())
        assert fused_losses == losses
        assert_same_bits(fused, unfused)


def test_optimizer_states_among_the_subnormals_give_the_same_bits():
    # Adam's first moments of weights whose gradient stays 0 decay into float32's subnormals;
    # behind the subnormal guard the loops then compute those groups in double, without it in
    # float: the same bits, inside the GEMM as outside it.
    results = []
    try:
        for guard in ("on", "off"):
            _core.kernels.set_subnormal_guard(guard)
            for fused in (True, False):
                results.append(subnormal_steps(fused))
    finally:
        _core.kernels.set_subnormal_guard("auto")
    assert np.count_nonzero(np.abs(results[0]["exp_avg"]) < np.finfo(np.float32).tiny) > 100
    for other in results[1:]:
        assert_same_bits(results[0], other)


def subnormal_steps(fused):
    """The state after four steps of a model whose Adam states were set among the subnormals."""
    X, y = blobs(n=260, features=70)
    model = fastmlp.MLP([70, 301, 133, 3], seed=2, optimizer=optim.Adam(lr=1e-2), n_threads=2)
    model._network.update_in_weight_gradients = fused
    model.train_step(X[:130], y[:130])
    state = model._network.optimizer_state
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    state["exp_avg"][::7] = tiny * np.arange(1, 5, dtype=np.float32)[np.arange(state["exp_avg"][::7].size) % 4]
    state["exp_avg_sq"][::11] = tiny
    model._network.step = 16  # the next step looks at the states (every 16th does)
    for _ in range(3):
        model.train_step(X[130:], y[130:])
    return model_state(model)


@pytest.mark.parametrize("x_scale", [1e30, 2e37])
def test_huge_activations_give_the_same_bits(x_scale):
    # Activations of 1e30 keep the weight gradients' bound (max |input| max |dz| rows) far
    # below float32's largest value / 8: the step runs inside the GEMMs. At 2e37 the first and
    # output layers' bounds pass that limit (1.1 and 1.5 times it at the first step): the
    # gradient is made, read, then the step taken.
    options = {"activation": "identity"}.items()
    fused_losses, fused = steps(True, "adam", "float32", 2, options, x_scale=x_scale)
    losses, unfused = steps(False, "adam", "float32", 2, options, x_scale=x_scale)
    assert fused_losses == losses
    assert all(isinstance(loss, float) and loss > x_scale / 100 for loss in losses), losses
    assert_same_bits(fused, unfused)
    assert fused["step"] == 4


def test_the_finiteness_the_step_saw_is_forgotten_at_the_next_write_of_the_parameters():
    # A step inside the weight gradients looks at every parameter it writes, so params_finite
    # (train_step's check) need not read them again -- until anything else writes them.
    X, y = blobs(n=130, features=70)
    model = fastmlp.MLP([70, 301, 133, 3], seed=2, optimizer=optim.Adam(lr=1e-2), n_threads=2)
    model.train_step(X, y)
    network = model._network
    assert network.params_finite()
    network.params[5] = np.inf  # through a fresh view, as every writer of the core's buffer does
    assert not network.params_finite()
    network.params[5] = 0.0
    assert network.params_finite()
    model.train_step(X, y)
    assert network.params_finite()
    network.params[-1] = np.nan
    assert not network.params_finite()


@pytest.mark.parametrize("fused", [True, False])
def test_an_update_that_overflows_the_parameters_is_reported_either_way(fused):
    X, y = blobs(n=130, features=70)
    model = fastmlp.MLP([70, 301, 133, 3], seed=2, optimizer=optim.SGD(lr=1e38), n_threads=2)
    model._network.update_in_weight_gradients = fused
    with pytest.raises(FloatingPointError, match="step 1 made parameters NaN or infinite"):
        model.train_step(X * 1e3, y)
    assert model._network.step == 1 and not model._network.params_finite()
