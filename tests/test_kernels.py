"""Every compiled kernel (fastmlp._core.kernels) against its NumPy reference, its own forward
(finite differences), torch where available, and its input validation."""
import math

import numpy as np
import pytest
from conftest import DTYPES, assert_close, numerical_gradient

from fastmlp import _core
from fastmlp import reference as R

K = _core.kernels

# Shapes chosen to include 1, primes and sizes that are not multiples of 6, 8 or 16.
BATCHES = [1, 2, 7, 13, 64, 129]
WIDTHS = [1, 3, 10, 17, 33]
ACTIVATIONS = list(R.ACTIVATIONS)
SMOOTH_ACTIVATIONS = [a for a in ACTIVATIONS if a != "step"]


def away_from_kinks(rng, shape, dtype, scale=2.0):
    """Random values with |x| >= 0.05, so relu/leaky_relu/step never sit on their kink."""
    x = rng.uniform(0.05, scale, shape) * rng.choice([-1.0, 1.0], shape)
    return x.astype(dtype)


# ---- activations ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1,), (7, 3), (13, 17), (129, 33)])
def test_activation_forward_backward_match_reference(rng, dtype, act, shape):
    x = away_from_kinks(rng, shape, dtype, scale=4.0)
    dy = rng.standard_normal(shape).astype(dtype)
    y = K.activation_forward(x, act, 0.07)
    assert y.dtype == dtype and y.shape == shape
    assert_close(y, R.activation_forward(x, act, 0.07), dtype)
    dx = K.activation_backward(dy, x, y, act, 0.07)
    assert_close(dx, R.activation_backward(dy, x, y, act, 0.07), dtype)


def test_activation_reference_values_against_textbook_formulas():
    # The reference itself, held against math for a few hand-picked points.
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    assert_close(R.activation_forward(x, "sigmoid"), [1 / (1 + math.exp(-v)) for v in x], np.float64)
    assert_close(R.activation_forward(x, "gelu"),
                 [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x], np.float64)
    np.testing.assert_array_equal(R.activation_forward(x, "step"), [0, 0, 1, 1, 1])
    assert_close(R.activation_forward(x, "leaky_relu", 0.1), [-0.3, -0.05, 0, 0.5, 3], np.float64)
    # relu's derivative at exactly 0 is 0, as torch.
    np.testing.assert_array_equal(K.activation_backward(np.ones(1), np.zeros(1), np.zeros(1), "relu"), [0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "gelu"])
def test_saturating_activations_stay_finite(dtype, act):
    x = np.array([-1e4, -800.0, -100.0, 100.0, 800.0, 1e4], dtype=dtype)
    y = K.activation_forward(x, act)
    dx = K.activation_backward(np.ones_like(x), x, y, act)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    low, high = {"sigmoid": (0, 1), "tanh": (-1, 1), "gelu": (0, x[3:])}[act]
    np.testing.assert_allclose(y[:3], low, atol=1e-30)
    np.testing.assert_allclose(y[3:], high)
    # Flat on both sides, except gelu whose slope tends to 1 on the right.
    np.testing.assert_allclose(dx[[0, 1]], 0, atol=1e-30)
    np.testing.assert_allclose(dx[[4, 5]], 1 if act == "gelu" else 0, atol=1e-30)


@pytest.mark.parametrize("act", SMOOTH_ACTIVATIONS)
def test_activation_backward_is_the_derivative_of_forward(rng, act):
    x = away_from_kinks(rng, (5, 4), np.float64)
    weights = rng.standard_normal((5, 4))
    numeric = numerical_gradient(lambda v: np.sum(K.activation_forward(v, act, 0.05) * weights), x)
    y = K.activation_forward(x, act, 0.05)
    np.testing.assert_allclose(K.activation_backward(weights, x, y, act, 0.05), numeric, rtol=1e-7, atol=1e-9)


# ---- losses --------------------------------------------------------------------------------


def class_weights_for(rng, C, weighted, dtype):
    return rng.uniform(0.2, 2.0, C).astype(dtype) if weighted else None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("C", WIDTHS)
def test_softmax_match_reference(rng, dtype, B, C):
    logits = (3 * rng.standard_normal((B, C))).astype(dtype)
    probs = K.softmax_forward(logits)
    assert_close(probs, R.softmax_forward(logits), dtype)
    assert_close(probs.sum(axis=1), np.ones(B), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("C", WIDTHS)
@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.0), (False, 0.15), (True, 0.3)])
def test_softmax_xent_match_reference(rng, dtype, B, C, weighted, smoothing):
    logits = (3 * rng.standard_normal((B, C))).astype(dtype)
    labels = rng.integers(0, C, B)
    weights = class_weights_for(rng, C, weighted, dtype)
    loss, probs = K.softmax_xent_forward(logits, labels, weights, smoothing)
    ref_loss, ref_probs = R.softmax_xent_forward(logits, labels, weights, smoothing)
    assert_close(loss, ref_loss, dtype, scale=10)
    assert_close(probs, ref_probs, dtype)
    dlogits = K.softmax_xent_backward(probs, labels, weights, smoothing)
    assert_close(dlogits, R.softmax_xent_backward(probs, labels, weights, smoothing), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_is_stable_on_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    labels = np.array([1, 2, 0])
    loss, probs = K.softmax_xent_forward(logits, labels, None, 0.1)
    dlogits = K.softmax_xent_backward(probs, labels, None, 0.1)
    assert np.isfinite(loss) and np.all(np.isfinite(probs)) and np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(probs, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]], rtol=1e-6)
    # Row 0 pays 2e4 for its label; the others are log 3 and log 2 (plus smoothing terms).
    assert_close(loss, R.softmax_xent_forward(logits.astype(np.float64), labels, None, 0.1)[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C", [(1, 1), (7, 3), (13, 17), (129, 10)])
def test_soft_target_xent_match_reference(rng, dtype, B, C):
    logits = rng.standard_normal((B, C)).astype(dtype)
    targets = rng.dirichlet(np.ones(C), B).astype(dtype)
    loss, probs = K.softmax_xent_soft_forward(logits, targets)
    ref_loss, ref_probs = R.softmax_xent_soft_forward(logits, targets)
    assert_close(loss, ref_loss, dtype, scale=10)
    assert_close(probs, ref_probs, dtype)
    assert_close(K.softmax_xent_soft_backward(probs, targets), R.softmax_xent_soft_backward(probs, targets), dtype)


def test_soft_targets_equal_hard_labels_when_one_hot(rng):
    logits = rng.standard_normal((13, 5))
    labels = rng.integers(0, 5, 13)
    one_hot = np.eye(5)[labels]
    assert_close(K.softmax_xent_soft_forward(logits, one_hot)[0], K.softmax_xent_forward(logits, labels)[0], np.float64)


ELEMENTWISE_LOSSES = [("mse_forward", "mse_backward"), ("bce_logits_forward", "bce_logits_backward")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forward,backward", ELEMENTWISE_LOSSES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (13, 17), (129, 33)])
def test_elementwise_losses_match_reference(rng, dtype, forward, backward, shape):
    pred = (3 * rng.standard_normal(shape)).astype(dtype)
    target = rng.uniform(0, 1, shape).astype(dtype)
    assert_close(getattr(K, forward)(pred, target), getattr(R, forward)(pred, target), dtype, scale=10)
    assert_close(getattr(K, backward)(pred, target), getattr(R, backward)(pred, target), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_is_stable_on_huge_logits(dtype):
    logits = np.array([1e4, -1e4, 100.0, -100.0], dtype=dtype)
    target = np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    loss = K.bce_logits_forward(logits, target)
    assert_close(loss, 50.0, dtype)  # (0 + 0 + 100 + 100) / 4
    assert np.all(np.isfinite(K.bce_logits_backward(logits, target)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,D", [(1, 1), (7, 3), (13, 17), (64, 2)])
def test_gaussian_nll_match_reference(rng, dtype, B, D):
    out = rng.standard_normal((B, 2 * D)).astype(dtype)
    target = rng.standard_normal((B, D)).astype(dtype)
    assert_close(K.gaussian_nll_forward(out, target), R.gaussian_nll_forward(out, target), dtype, scale=10)
    assert_close(K.gaussian_nll_backward(out, target), R.gaussian_nll_backward(out, target), dtype)


def test_gaussian_nll_with_zero_log_variance_is_half_the_squared_error(rng):
    mean, target = rng.standard_normal((7, 3)), rng.standard_normal((7, 3))
    out = np.concatenate([mean, np.zeros((7, 3))], axis=1)
    assert_close(K.gaussian_nll_forward(out, target), 0.5 * K.mse_forward(mean, target), np.float64)


def loss_gradient_cases(rng):
    """(name, loss of the prediction, gradient kernel's answer, prediction) for every loss."""
    B, C = 5, 4
    logits = rng.standard_normal((B, C))
    labels = rng.integers(0, C, B)
    weights = rng.uniform(0.5, 2, C)
    soft = rng.dirichlet(np.ones(C), B)
    target = rng.uniform(0, 1, (B, C))
    gauss_target = rng.standard_normal((B, C // 2))
    probs = K.softmax_forward(logits)
    return [
        ("xent", lambda z: K.softmax_xent_forward(z, labels)[0],
         K.softmax_xent_backward(probs, labels)),
        ("xent weighted smoothed", lambda z: K.softmax_xent_forward(z, labels, weights, 0.2)[0],
         K.softmax_xent_backward(probs, labels, weights, 0.2)),
        ("soft xent", lambda z: K.softmax_xent_soft_forward(z, soft)[0],
         K.softmax_xent_soft_backward(probs, soft)),
        ("mse", lambda z: K.mse_forward(z, target), K.mse_backward(logits, target)),
        ("bce", lambda z: K.bce_logits_forward(z, target), K.bce_logits_backward(logits, target)),
        ("gaussian nll", lambda z: K.gaussian_nll_forward(z, gauss_target),
         K.gaussian_nll_backward(logits, gauss_target)),
    ], logits


def test_loss_backwards_are_derivatives_of_their_forwards(rng):
    cases, logits = loss_gradient_cases(rng)
    for name, loss_of, analytic in cases:
        numeric = numerical_gradient(loss_of, logits)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9, err_msg=name)


# ---- dense ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("IN,OUT", [(1, 1), (3, 10), (17, 33), (33, 3)])
@pytest.mark.parametrize("act", ["identity", "tanh", "leaky_relu", "gelu"])
def test_dense_match_reference(rng, dtype, B, IN, OUT, act):
    x = rng.standard_normal((B, IN)).astype(dtype)
    w = rng.standard_normal((IN, OUT)).astype(dtype)
    b = rng.standard_normal(OUT).astype(dtype)
    z, y = K.dense_forward(x, w, b, act, 0.1)
    ref_z, ref_y = R.dense_forward(x, w, b, act, 0.1)
    scale = 4 * IN  # a sum over IN products, rounded in a different order
    assert_close(z, ref_z, dtype, scale)
    assert_close(y, ref_y, dtype, scale)
    dy = rng.standard_normal((B, OUT)).astype(dtype)
    dx, dw, db = K.dense_backward(dy, x, w, z, y, act, 0.1)
    ref_dx, ref_dw, ref_db = R.dense_backward(dy, x, w, z, y, act, 0.1)
    assert_close(dx, ref_dx, dtype, 4 * OUT)
    assert_close(dw, ref_dw, dtype, 4 * B)
    assert_close(db, ref_db, dtype, 4 * B)
    first_layer_dx, dw_again, _ = K.dense_backward(dy, x, w, z, y, act, 0.1, need_dx=False)
    assert first_layer_dx is None
    np.testing.assert_array_equal(dw_again, dw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,OUT", [(1, 1), (5, 7), (130, 20)])
def test_dense_backward_of_a_layer_without_inputs_still_gives_the_bias_gradient(rng, dtype, B, OUT):
    # IN == 0 makes the dW product empty (M == 0), but db = sum of dy over the batch is not:
    # the fused GEMM once returned before writing it, handing back uninitialised memory.
    x, w = np.zeros((B, 0), dtype), np.zeros((0, OUT), dtype)
    z, y = K.dense_forward(x, w, rng.standard_normal(OUT).astype(dtype), "identity")
    dy = rng.standard_normal((B, OUT)).astype(dtype)
    for _ in range(3):
        del_me = np.full(OUT, np.nan, dtype)  # freed just before the call: its memory is
        del del_me                              # what an unwritten db would show
        dx, dw, db = K.dense_backward(dy, x, w, z, y, "identity")
        assert dx.shape == (B, 0) and dw.shape == (0, OUT)
        assert_close(db, dy.astype(np.float64).sum(axis=0), dtype, 4 * B)


@pytest.mark.parametrize("act", ["identity", "sigmoid", "relu", "gelu"])
def test_dense_backward_is_the_derivative_of_forward(rng, act):
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((4, 5))
    b = rng.standard_normal(5)
    weights = rng.standard_normal((3, 5))
    z, y = K.dense_forward(x, w, b, act)
    dx, dw, db = K.dense_backward(weights, x, w, z, y, act)
    objective = lambda x_, w_, b_: np.sum(K.dense_forward(x_, w_, b_, act)[1] * weights)
    np.testing.assert_allclose(dx, numerical_gradient(lambda v: objective(v, w, b), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_gradient(lambda v: objective(x, v, b), w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, numerical_gradient(lambda v: objective(x, w, v), b), rtol=1e-6, atol=1e-8)


def test_dense_and_softmax_are_identical_at_one_and_two_threads(rng, restore_threads):
    x = rng.standard_normal((200, 129))
    w = rng.standard_normal((129, 67))
    b = rng.standard_normal(67)
    dy = rng.standard_normal((200, 67))
    results = []
    for threads in (1, 2):
        _core.set_num_threads(threads)
        z, y = K.dense_forward(x, w, b, "gelu")
        results.append((z, y, *K.dense_backward(dy, x, w, z, y, "gelu")[::1], K.softmax_forward(z)))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


# ---- random bits and dropout -----------------------------------------------------------------


@pytest.mark.parametrize("seed,counter,index", [(0, 0, 0), (1, 2, 3), (2**64 - 1, 2**64 - 1, 2**64 - 1),
                                                 (12345, 7 * 1024 + 2, 999_999), (2**63, 1, 2**40)])
def test_random_bits_match_reference(seed, counter, index):
    assert K.random_bits(seed, counter, index) == R.random_bits(seed, counter, index)
    assert K.random_uniform(seed, counter, index) == R.random_uniform(seed, counter, index)
    assert 0 <= R.random_uniform(seed, counter, index) < 1


def test_random_bits_reference_follows_the_splitmix_recipe_in_python_ints():
    # An independent spelling of kernels.h's formula with explicit modular arithmetic.
    def mix(z):
        z = (z + 0x9E3779B97F4A7C15) % 2**64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        return z ^ (z >> 31)

    for seed, counter in [(0, 0), (99, 3), (2**64 - 1, 5)]:
        expected = [mix(mix(mix(seed) ^ counter) ^ i) for i in range(5)]
        assert list(R.random_bits(seed, counter, np.arange(5))) == expected
        assert [K.random_bits(seed, counter, i) for i in range(5)] == expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(1,), (7, 3), (129, 33)])
def test_dropout_mask_equals_reference_bit_for_bit(rng, dtype, p, shape):
    x = rng.standard_normal(shape).astype(dtype)
    y, mask = K.dropout_forward(x, p, 2**63 + 17, 5 * 1024 + 1)
    ref_y, ref_mask = R.dropout_forward(x, p, 2**63 + 17, 5 * 1024 + 1)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(y, ref_y)
    dy = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(K.dropout_backward(dy, mask), R.dropout_backward(dy, mask))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_about_one_minus_p_and_rescales(p):
    n = 200_000
    y, mask = K.dropout_forward(np.ones(n), p, 3, 1)
    kept = mask > 0
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    np.testing.assert_allclose(mask[kept], 1 / (1 - p))
    assert abs(y.mean() - 1) < 5 * sigma / (1 - p)  # inverted dropout keeps the mean


def test_dropout_masks_differ_across_counters_and_seeds():
    x = np.ones(1000)
    base = K.dropout_forward(x, 0.5, 1, 1)[1]
    assert not np.array_equal(base, K.dropout_forward(x, 0.5, 1, 2)[1])
    assert not np.array_equal(base, K.dropout_forward(x, 0.5, 2, 1)[1])
    np.testing.assert_array_equal(base, K.dropout_forward(x, 0.5, 1, 1)[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_is_identical_at_one_and_two_threads(rng, dtype, restore_threads):
    x = rng.standard_normal(300_001).astype(dtype)  # above the kernel's parallel threshold
    outputs = []
    for threads in (1, 2):
        _core.set_num_threads(threads)
        outputs.append(K.dropout_forward(x, 0.3, 42, 9))
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1], R.dropout_forward(x, 0.3, 42, 9)[1])


# ---- batch norm ---------------------------------------------------------------------------------


def batchnorm_inputs(rng, B, F, dtype):
    x = (2 * rng.standard_normal((B, F)) + 0.5).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, F).astype(dtype)
    beta = rng.standard_normal(F).astype(dtype)
    running_mean = rng.standard_normal(F).astype(dtype)
    running_var = rng.uniform(0.5, 2, F).astype(dtype)
    return x, gamma, beta, running_mean, running_var


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [2, 7, 13, 64, 129])
@pytest.mark.parametrize("F", WIDTHS)
def test_batchnorm_match_reference(rng, dtype, B, F):
    x, gamma, beta, running_mean, running_var = batchnorm_inputs(rng, B, F, dtype)
    got = K.batchnorm_forward_train(x, gamma, beta, running_mean, running_var, 0.2, 1e-3)
    expected = R.batchnorm_forward_train(x, gamma, beta, running_mean, running_var, 0.2, 1e-3)
    for name, a, e in zip(["y", "xhat", "mean", "invstd", "running_mean", "running_var"], got, expected):
        assert_close(a, e, dtype, scale=4 * B), name
    # Running statistics are returned updated, the inputs left alone.
    assert not np.array_equal(got[4], running_mean)
    dy = rng.standard_normal((B, F)).astype(dtype)
    _, xhat, _, invstd, new_mean, new_var = got
    for a, e in zip(K.batchnorm_backward(dy, xhat, gamma, invstd), R.batchnorm_backward(dy, xhat, gamma, invstd)):
        assert_close(a, e, dtype, scale=4 * B)
    assert_close(K.batchnorm_forward_eval(x, gamma, beta, new_mean, new_var, 1e-3),
                 R.batchnorm_forward_eval(x, gamma, beta, new_mean, new_var, 1e-3), dtype, scale=4)


def test_batchnorm_running_statistics_follow_torch_rule(rng):
    x, gamma, beta, running_mean, running_var = batchnorm_inputs(rng, 9, 4, np.float64)
    *_, new_mean, new_var = K.batchnorm_forward_train(x, gamma, beta, running_mean, running_var, 0.1, 1e-5)
    assert_close(new_mean, 0.9 * running_mean + 0.1 * x.mean(axis=0), np.float64)
    assert_close(new_var, 0.9 * running_var + 0.1 * x.var(axis=0, ddof=1), np.float64)


def test_batchnorm_training_output_is_normalised(rng):
    x, _, _, running_mean, running_var = batchnorm_inputs(rng, 50, 6, np.float64)
    y = K.batchnorm_forward_train(x, np.ones(6), np.zeros(6), running_mean, running_var, 0.1, 0.0)[0]
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1, rtol=1e-12)


def test_batchnorm_backward_is_the_derivative_of_forward(rng):
    x, gamma, beta, running_mean, running_var = batchnorm_inputs(rng, 5, 3, np.float64)
    weights = rng.standard_normal((5, 3))

    def objective(x_, gamma_, beta_):
        return np.sum(K.batchnorm_forward_train(x_, gamma_, beta_, running_mean, running_var, 0.1, 1e-5)[0] * weights)

    _, xhat, _, invstd, _, _ = K.batchnorm_forward_train(x, gamma, beta, running_mean, running_var, 0.1, 1e-5)
    dx, dgamma, dbeta = K.batchnorm_backward(weights, xhat, gamma, invstd)
    np.testing.assert_allclose(dx, numerical_gradient(lambda v: objective(v, gamma, beta), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, numerical_gradient(lambda v: objective(x, v, beta), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, numerical_gradient(lambda v: objective(x, gamma, v), beta), rtol=1e-6, atol=1e-8)


# ---- optimizers ---------------------------------------------------------------------------


OPTIMIZER_CASES = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd", dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.02)),
    ("adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.3, eps=1e-8)),
    ("adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.5, centered=True)),
    ("rmsprop", dict(lr=0.01, alpha=0.95)),
    ("rmsprop", dict(lr=0.01, momentum=0.3)),
    ("adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01, amsgrad=True)),
    ("adam", dict(lr=0.02)),
    ("adamw", dict(lr=0.01, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.1)),
    ("adamw", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(OPTIMIZER_CASES)]


def kernel_optimizer_step(optimizer, o, params, state, grads, step):
    """reference.optimizer_step, through the compiled kernels."""
    if optimizer == "sgd":
        params, buf = K.sgd_update(params, state["momentum_buffer"], grads, o["lr"], o["momentum"],
                                   o["dampening"], o["nesterov"], o["weight_decay"], step)
        return params, {"momentum_buffer": buf}
    if optimizer == "adagrad":
        params, total = K.adagrad_update(params, state["state_sum"], grads, o["lr"], o["lr_decay"],
                                         o["weight_decay"], o["eps"], step)
        return params, {"state_sum": total}
    if optimizer == "adadelta":
        params, square, acc = K.adadelta_update(params, state["square_avg"], state["acc_delta"], grads,
                                                o["lr"], o["rho"], o["eps"], o["weight_decay"])
        return params, {"square_avg": square, "acc_delta": acc}
    if optimizer == "rmsprop":
        new = K.rmsprop_update(params, state["square_avg"], state["grad_avg"], state["momentum_buffer"], grads,
                               o["lr"], o["alpha"], o["eps"], o["weight_decay"], o["momentum"], o["centered"])
        return new[0], dict(zip(R.OPTIMIZER_STATE["rmsprop"], new[1:]))
    new = K.adam_update(params, state["exp_avg"], state["exp_avg_sq"], state["max_exp_avg_sq"], grads, o["lr"],
                        o["betas"][0], o["betas"][1], o["eps"], o["weight_decay"], o["amsgrad"],
                        optimizer == "adamw", step)
    return new[0], dict(zip(R.OPTIMIZER_STATE["adam"], new[1:]))


def initial_state(optimizer, options, n, dtype):
    state = {name: np.zeros(n, dtype) for name in R.OPTIMIZER_STATE[optimizer]}
    if optimizer == "adagrad":
        state["state_sum"][:] = options["initial_accumulator_value"]
    return state


def gradient_sequence(rng, n, steps, dtype):
    # Shrinking then growing magnitudes so amsgrad's running maximum matters.
    scales = [2.0, 1.0, 0.3, 0.1, 1.5, 0.05][:steps]
    return [(s * rng.standard_normal(n)).astype(dtype) for s in scales]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 13, 1000])
@pytest.mark.parametrize("optimizer,options", OPTIMIZER_CASES, ids=CASE_IDS)
def test_optimizer_kernels_match_reference(rng, dtype, n, optimizer, options):
    options = R.optimizer_options_with_defaults(optimizer, options)
    params = rng.standard_normal(n).astype(dtype)
    kernel_params, kernel_state = params.copy(), initial_state(optimizer, options, n, dtype)
    ref_params, ref_state = params.copy(), initial_state(optimizer, options, n, dtype)
    for step, grads in enumerate(gradient_sequence(rng, n, 6, dtype), start=1):
        kernel_params, kernel_state = kernel_optimizer_step(optimizer, options, kernel_params, kernel_state, grads, step)
        ref_params, ref_state = R.optimizer_step(optimizer, options, ref_params, ref_state, grads, step)
    assert kernel_params.dtype == dtype
    assert_close(kernel_params, ref_params, dtype, scale=10)
    for name in kernel_state:
        assert_close(kernel_state[name], ref_state[name], dtype, scale=10)
    assert not np.allclose(kernel_params, params)  # the steps moved something


def test_optimizer_inputs_are_not_modified(rng):
    params, buf, grads = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5)
    saved = params.copy(), buf.copy()
    K.sgd_update(params, buf, grads, 0.1, 0.9, 0.0, False, 0.0, 2)
    np.testing.assert_array_equal(params, saved[0])
    np.testing.assert_array_equal(buf, saved[1])


# ---- the reference against torch itself -------------------------------------------------


TORCH_OPTIMIZERS = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop",
                    "adam": "Adam", "adamw": "AdamW"}


@pytest.mark.parametrize("optimizer,options", OPTIMIZER_CASES, ids=CASE_IDS)
def test_reference_optimizers_match_torch(rng, optimizer, options):
    torch = pytest.importorskip("torch")
    merged = R.optimizer_options_with_defaults(optimizer, options)
    params = rng.standard_normal(17)
    tensor = torch.tensor(params.copy(), dtype=torch.float64, requires_grad=True)
    torch_optimizer = getattr(torch.optim, TORCH_OPTIMIZERS[optimizer])([tensor], **options)
    ref_params, ref_state = params.copy(), initial_state(optimizer, merged, 17, np.float64)
    for step, grads in enumerate(gradient_sequence(rng, 17, 6, np.float64), start=1):
        tensor.grad = torch.tensor(grads)
        torch_optimizer.step()
        ref_params, ref_state = R.optimizer_step(optimizer, merged, ref_params, ref_state, grads, step)
    np.testing.assert_allclose(ref_params, tensor.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_reference_optimizer_defaults_are_torchs():
    torch = pytest.importorskip("torch")
    for optimizer, torch_name in TORCH_OPTIMIZERS.items():
        defaults = getattr(torch.optim, torch_name)([torch.zeros(1, requires_grad=True)]).defaults
        for name, value in R.OPTIMIZER_DEFAULTS[optimizer].items():
            assert defaults[name] == value, (optimizer, name)


@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.0), (False, 0.2), (True, 0.35)])
def test_softmax_xent_matches_torch_cross_entropy(rng, weighted, smoothing):
    torch = pytest.importorskip("torch")
    B, C = 13, 7
    logits = 2 * rng.standard_normal((B, C))
    labels = rng.integers(0, C, B)
    weights = class_weights_for(rng, C, weighted, np.float64)
    logits_tensor = torch.tensor(logits, requires_grad=True)
    torch_loss = torch.nn.functional.cross_entropy(
        logits_tensor, torch.tensor(labels), weight=None if weights is None else torch.tensor(weights),
        label_smoothing=smoothing)
    torch_loss.backward()
    for module in (R, K):
        loss, probs = module.softmax_xent_forward(logits, labels, weights, smoothing)
        np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-12)
        np.testing.assert_allclose(module.softmax_xent_backward(probs, labels, weights, smoothing),
                                   logits_tensor.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_batchnorm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, gamma, beta, running_mean, running_var = batchnorm_inputs(rng, 11, 5, np.float64)
    layer = torch.nn.BatchNorm1d(5, eps=1e-3, momentum=0.2, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(gamma))
        layer.bias.copy_(torch.tensor(beta))
        layer.running_mean.copy_(torch.tensor(running_mean))
        layer.running_var.copy_(torch.tensor(running_var))
    expected = layer(torch.tensor(x)).detach().numpy()
    y, *_, new_mean, new_var = K.batchnorm_forward_train(x, gamma, beta, running_mean, running_var, 0.2, 1e-3)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new_mean, layer.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(new_var, layer.running_var.numpy(), rtol=1e-12)


# ---- input validation of the bindings -------------------------------------------------------


def test_wrong_dtypes_raise_type_error_naming_the_argument():
    x64 = np.ones((3, 4))
    with pytest.raises(TypeError, match="x must be float32 or float64, got int64"):
        K.activation_forward(np.ones(3, dtype=np.int64), "relu")
    with pytest.raises(TypeError, match="w must be float32.*got float64"):
        K.dense_forward(x64.astype(np.float32), np.ones((4, 2)), np.ones(2, np.float32), "relu")
    with pytest.raises(TypeError, match="class_weights"):
        K.softmax_xent_forward(x64, np.zeros(3, np.int64), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="labels must be an integer array, got float64"):
        K.softmax_xent_forward(x64, np.zeros(3))
    with pytest.raises(TypeError, match="float16"):
        K.softmax_forward(x64.astype(np.float16))


def test_wrong_shapes_raise_value_error_naming_the_argument_and_shapes():
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"w must have shape \(IN, OUT\) with IN = x.shape\[1\] = 4, got \(5, 2\)"):
        K.dense_forward(x, np.ones((5, 2)), np.ones(2), "relu")
    with pytest.raises(ValueError, match=r"b must have shape \(2,\), got \(3,\)"):
        K.dense_forward(x, np.ones((4, 2)), np.ones(3), "relu")
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\), got \(4,\)"):
        K.softmax_xent_forward(x, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="target"):
        K.mse_forward(x, np.ones((4, 3)))
    with pytest.raises(ValueError, match="even width"):
        K.gaussian_nll_forward(np.ones((3, 3)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="momentum_buffer"):
        K.sgd_update(np.ones(3), np.ones(4), np.ones(3), 0.1, 0.9, 0.0, False, 0.0, 1)
    with pytest.raises(ValueError, match="logits must not be empty"):
        K.softmax_forward(np.ones((3, 0)))
    with pytest.raises(ValueError, match="logits must be 2-dimensional"):
        K.softmax_xent_forward(np.ones(3), np.zeros(3, np.int64))


@pytest.mark.parametrize("bad", [-1, 4, 2**40])
def test_bad_labels_raise_value_error_naming_the_label(bad):
    labels = np.array([0, 1, bad], dtype=np.int64)
    with pytest.raises(ValueError, match=rf"labels must be in \[0, 4\), got {bad} at index 2"):
        K.softmax_xent_forward(np.ones((3, 4)), labels)
    with pytest.raises(ValueError, match=rf"got {bad}"):
        K.softmax_xent_backward(np.ones((3, 4)) / 4, labels)


def test_huge_unsigned_labels_do_not_wrap_into_range():
    labels = np.array([0, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(ValueError, match="labels must be in"):
        K.softmax_xent_forward(np.ones((2, 4)), labels)


def test_bad_values_raise_value_error():
    with pytest.raises(ValueError, match="activation must be one of identity, sigmoid, tanh, relu, leaky_relu, gelu, step"):
        K.activation_forward(np.ones(3), "swish")
    for p in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
            K.dropout_forward(np.ones(3), p, 0, 0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        K.batchnorm_forward_train(np.ones((1, 3)), np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="step must be >= 1"):
        K.adam_update(*[np.ones(3)] * 5, 0.1, 0.9, 0.99, 1e-8, 0.0, False, False, 0)
    with pytest.raises(ValueError, match="label_smoothing"):
        K.softmax_xent_forward(np.ones((2, 3)), np.zeros(2, np.int64), None, 1.5)


def test_non_contiguous_and_byte_swapped_inputs_are_copied_not_misread(rng):
    big = rng.standard_normal((14, 9))
    x = big[::2, ::2]  # (7, 5), strided
    w_transposed = rng.standard_normal((3, 5)).T  # (5, 3), Fortran order
    b = rng.standard_normal(6)[::2]
    z, y = K.dense_forward(x, w_transposed, b, "tanh")
    ref_z, ref_y = K.dense_forward(np.ascontiguousarray(x), np.ascontiguousarray(w_transposed), b.copy(), "tanh")
    np.testing.assert_array_equal(z, ref_z)
    np.testing.assert_array_equal(y, ref_y)
    swapped = np.ascontiguousarray(x).astype(">f8")
    np.testing.assert_array_equal(K.activation_forward(swapped, "tanh"), K.activation_forward(x, "tanh"))
    labels = np.arange(14)[::2] % 5
    np.testing.assert_array_equal(K.softmax_xent_forward(x, labels)[1], K.softmax_forward(np.ascontiguousarray(x)))


def test_objects_that_are_not_arrays_raise_type_error():
    for not_an_array in ([[-1.0, 2.0]], None, "x"):
        with pytest.raises(TypeError):
            K.activation_forward(not_an_array, "relu")
