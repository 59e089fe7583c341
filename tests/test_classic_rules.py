"""The compiled per-sample rules (fastmlp._classic_rules, Cython) against their NumPy mirrors in
fastmlp.reference, over shapes, dtypes, sample orders and learning rates; and fastmlp.classic's
estimators against the reference loops driven by the same random stream."""
import numpy as np
import pytest

from fastmlp import _classic_rules, reference
from fastmlp.classic import Adaline, HebbianLayer, LinearRegressionGD, Perceptron

DTYPES = [np.float32, np.float64]
# Tolerance for sums taken in another order: the rules are otherwise the same formula.
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
# (n_samples, n_features): one sample, one feature, and sizes that are multiples of nothing.
SHAPES = [(1, 1), (1, 9), (5, 1), (17, 7), (64, 8), (101, 33)]
ORDERS = ["shuffled", "in order", "with repeats"]


def sample_order(kind, n, rng):
    if kind == "shuffled":
        return rng.permutation(n)
    if kind == "in order":
        return np.arange(n, dtype=np.int64)
    return rng.integers(0, n, size=2 * n + 1)  # any index list works, repeats included


def assert_close(compiled, expected, dtype):
    assert compiled.dtype == expected.dtype == dtype
    np.testing.assert_allclose(compiled, expected, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * max(1.0, float(np.abs(expected).max())))


# --------------------------------------------------------------------------- perceptron


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order_kind", ORDERS)
def test_perceptron_epoch_matches_reference_bit_for_bit_on_small_integers(dtype, shape, order_kind):
    # Small integers and an integer rate make every sum exact, whatever its order: the
    # compiled epoch must then give the reference's weights and mistakes exactly.
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    X = rng.integers(-3, 4, size=shape).astype(dtype)
    y = rng.integers(0, 2, size=shape[0])
    weights = np.zeros(shape[1] + 1, dtype=dtype)
    expected = weights.copy()
    for _ in range(4):
        order = sample_order(order_kind, shape[0], rng)
        mistakes = _classic_rules.perceptron_epoch(X, y, order, weights, 2.0)
        expected, expected_mistakes = reference.perceptron_epoch(X, y, order, expected, 2.0)
        assert mistakes == expected_mistakes
        np.testing.assert_array_equal(weights, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lr", [1.0, 0.037])
def test_perceptron_epoch_matches_reference_on_real_data(dtype, shape, lr):
    rng = np.random.default_rng(7 + shape[1])
    X = rng.normal(size=shape).astype(dtype)
    y = (X @ rng.normal(size=shape[1]) + 0.1 * rng.normal(size=shape[0]) > 0).astype(np.int64)
    weights = rng.normal(size=shape[1] + 1).astype(dtype)
    expected = weights.copy()
    for _ in range(3):
        order = rng.permutation(shape[0])
        mistakes = _classic_rules.perceptron_epoch(X, y, order, weights, lr)
        expected, expected_mistakes = reference.perceptron_epoch(X, y, order, expected, lr)
        assert mistakes == expected_mistakes
        assert_close(weights, expected, dtype)


def test_perceptron_epoch_counts_no_mistake_on_a_separated_set():
    X = np.array([[1.0], [2.0], [-1.0]])
    y = np.array([1, 1, 0])
    weights = np.array([0.0, 1.0])
    assert _classic_rules.perceptron_epoch(X, y, np.arange(3), weights, 1.0) == 0
    np.testing.assert_array_equal(weights, [0.0, 1.0])


# --------------------------------------------------------------------------- Adaline


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order_kind", ORDERS)
def test_adaline_online_epoch_matches_reference(dtype, shape, order_kind):
    rng = np.random.default_rng(shape[0] + 3 * shape[1])
    X = rng.uniform(-1, 1, size=shape).astype(dtype)
    targets = rng.choice([-1.0, 1.0], size=shape[0]).astype(dtype)
    weights = rng.normal(0, 0.1, size=shape[1] + 1).astype(dtype)
    expected = weights.copy()
    lr = 0.5 / (shape[1] + 1)  # small enough not to diverge
    for _ in range(3):
        order = sample_order(order_kind, shape[0], rng)
        _classic_rules.adaline_online_epoch(X, targets, order, weights, lr)
        expected = reference.adaline_online_epoch(X, targets, order, expected, lr)
        assert_close(weights, expected, dtype)


# --------------------------------------------------------------------------- Hebbian rules

HEBBIAN_SHAPES = [(1, 1, 1), (1, 6, 3), (9, 1, 1), (23, 5, 1), (40, 13, 3), (77, 30, 7), (50, 4, 4)]


@pytest.mark.parametrize("rule", ["hebb", "oja", "sanger"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", HEBBIAN_SHAPES)
@pytest.mark.parametrize("rate", [0.01, 0.1])
def test_hebbian_epochs_match_reference(rule, dtype, shape, rate):
    n_samples, n_inputs, n_outputs = shape
    lr = rate / n_inputs  # lr * |x|^2 < 2: Oja and Sanger stay stable
    rng = np.random.default_rng(n_samples * n_inputs + n_outputs)
    X = rng.normal(size=(n_samples, n_inputs)).astype(dtype)
    weights = rng.normal(0, 0.1, size=(n_inputs, n_outputs)).astype(dtype)
    expected = weights.copy()
    outputs = np.empty(n_outputs, dtype=dtype)
    compiled_epoch = getattr(_classic_rules, f"{rule}_epoch")
    reference_epoch = getattr(reference, f"{rule}_epoch")
    for _ in range(2):
        order = rng.permutation(n_samples)
        compiled_epoch(X, order, weights, lr, outputs)
        expected = reference_epoch(X, order, expected, lr)
        assert_close(weights, expected, dtype)


def test_sanger_with_one_output_is_oja():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 6))
    order = rng.permutation(30)
    start = rng.normal(size=(6, 1))
    oja, sanger = start.copy(), start.copy()
    _classic_rules.oja_epoch(X, order, oja, 0.05, np.empty(1))
    _classic_rules.sanger_epoch(X, order, sanger, 0.05, np.empty(1))
    np.testing.assert_allclose(sanger, oja, rtol=1e-13)


# --------------------------------------------------------------------------- linear regression


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_samples", [1, 2, 37, 250])
@pytest.mark.parametrize("order_kind", ORDERS)
def test_linear_regression_online_epoch_matches_reference(dtype, n_samples, order_kind):
    rng = np.random.default_rng(n_samples)
    x = rng.uniform(-2, 2, size=n_samples).astype(dtype)
    y = (1.5 * x - 0.5 + 0.1 * rng.normal(size=n_samples)).astype(dtype)
    line = np.zeros(2, dtype=dtype)
    expected = line.copy()
    for _ in range(3):
        order = sample_order(order_kind, n_samples, rng)
        _classic_rules.linear_regression_online_epoch(x, y, order, line, 0.05)
        expected = reference.linear_regression_online_epoch(x, y, order, expected, 0.05)
        assert_close(line, expected, dtype)


# --------------------------------------------------------------------------- the estimators


def reference_perceptron_fit(X, y, lr, max_epochs, shuffle, seed):
    """fastmlp.classic.Perceptron.fit's loop, run on the reference epochs."""
    rng = np.random.default_rng(seed)
    weights, mistakes_per_epoch = np.zeros(X.shape[1] + 1), []
    for _ in range(max_epochs):
        order = rng.permutation(len(y)) if shuffle else np.arange(len(y))
        weights, mistakes = reference.perceptron_epoch(X, y, order, weights, lr)
        mistakes_per_epoch.append(mistakes)
        if mistakes == 0:
            break
    return weights, mistakes_per_epoch


@pytest.mark.parametrize("shuffle", [False, True])
def test_perceptron_fit_follows_the_reference_sample_order(shuffle):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 6))
    y = (X @ rng.normal(size=6) + 0.3 * rng.normal(size=150) > 0).astype(int)
    model = Perceptron(lr=0.3, max_epochs=6, shuffle=shuffle, seed=11).fit(X, y)
    weights, mistakes = reference_perceptron_fit(X, y, 0.3, 6, shuffle, 11)
    assert model.mistakes_per_epoch_ == mistakes
    np.testing.assert_allclose(model.weights_, weights, rtol=1e-12, atol=1e-12)


def test_perceptron_fit_accepts_fortran_order_and_float32():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(80, 5))
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    expected = Perceptron(shuffle=True, seed=2).fit(X, y).weights_
    np.testing.assert_array_equal(Perceptron(shuffle=True, seed=2).fit(np.asfortranarray(X), y).weights_,
                                  expected)
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(Perceptron(shuffle=True, seed=2).fit(X32, y).weights_,
                                  Perceptron(shuffle=True, seed=2).fit(X32.astype(np.float64), y).weights_)


def test_adaline_online_fit_follows_the_reference_sample_order():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + 0.5 * X[:, 2] > 0).astype(int)
    model = Adaline(lr=0.01, max_epochs=4, mode="online", tol=1e-12, seed=9).fit(X, y)
    order_rng, targets = np.random.default_rng(9), 2.0 * y - 1.0
    weights = np.zeros(5)
    for _ in range(4):
        weights = reference.adaline_online_epoch(X, targets, order_rng.permutation(60), weights, 0.01)
    np.testing.assert_allclose(model.weights_, weights, rtol=1e-12)


@pytest.mark.parametrize("rule", ["hebb", "oja", "sanger"])
def test_hebbian_fit_follows_the_reference_stream(rule):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(40, 5))
    model = HebbianLayer(5, 3, lr=0.01, rule=rule, seed=13).fit(X, epochs=3)
    stream = np.random.default_rng(13)  # initial weights first, then one permutation per epoch
    weights = stream.normal(0.0, 0.1, size=(5, 3))
    for _ in range(3):
        weights = getattr(reference, f"{rule}_epoch")(X, stream.permutation(40), weights, 0.01)
    np.testing.assert_allclose(model.weights_, weights, rtol=1e-12)


def test_linear_regression_online_fit_follows_the_reference_and_approaches_polyfit():
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, size=300)
    y = 2.0 * x + 0.7 + 0.05 * rng.normal(size=300)
    model = LinearRegressionGD(lr=0.01, epochs=30, mode="online", seed=4).fit(x, y)
    stream, line = np.random.default_rng(4), np.zeros(2)
    for _ in range(30):
        line = reference.linear_regression_online_epoch(x, y, stream.permutation(300), line, 0.01)
    np.testing.assert_allclose([model.coef_, model.intercept_], line, rtol=1e-12)
    slope, intercept = np.polyfit(x, y, 1)
    assert abs(model.coef_ - slope) < 0.05 and abs(model.intercept_ - intercept) < 0.05
    assert len(model.loss_curve_) == 30 and model.loss_curve_[-1] < 0.01


def test_linear_regression_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be 'batch' or 'online', got 'sgd'"):
        LinearRegressionGD(mode="sgd").fit([0.0, 1.0], [0.0, 1.0])


# --------------------------------------------------------------------------- float32 samples


@pytest.mark.parametrize("rule", ["perceptron", "hebb", "oja", "sanger"])
def test_float32_samples_with_float64_weights_are_the_float64_run_exactly(rule):
    # Widening float32 to float64 is exact, so reading float32 rows must change no bit.
    rng = np.random.default_rng(12)
    X32 = rng.normal(size=(45, 11)).astype(np.float32)
    X64 = X32.astype(np.float64)
    order = rng.permutation(45)
    if rule == "perceptron":
        y = (X64[:, 0] > 0.2).astype(np.int64)
        w32, w64 = np.zeros(12), np.zeros(12)
        assert (_classic_rules.perceptron_epoch(X32, y, order, w32, 0.3)
                == _classic_rules.perceptron_epoch(X64, y, order, w64, 0.3))
    else:
        w32 = rng.normal(0, 0.1, size=(11, 3))
        w64 = w32.copy()
        epoch = getattr(_classic_rules, f"{rule}_epoch")
        epoch(X32, order, w32, 0.01, np.empty(3))
        epoch(X64, order, w64, 0.01, np.empty(3))
    np.testing.assert_array_equal(w32, w64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_perceptron_mistakes_matches_reference(dtype, shape):
    rng = np.random.default_rng(shape[0])
    X = rng.integers(-3, 4, size=shape).astype(dtype)
    y = rng.integers(0, 2, size=shape[0])
    weights = rng.integers(-2, 3, size=shape[1] + 1).astype(dtype)  # exact sums, zeros included
    assert _classic_rules.perceptron_mistakes(X, y, weights) == reference.perceptron_mistakes(X, y, weights)


def test_read_only_inputs_are_accepted():
    # np.load(..., mmap_mode="r") and other read-only buffers: the rules never write X.
    rng = np.random.default_rng(14)
    X = rng.normal(size=(30, 4))
    y = (X[:, 0] > 0).astype(int)
    expected = Perceptron(shuffle=True, seed=1).fit(X, y).weights_
    X.setflags(write=False)
    np.testing.assert_array_equal(Perceptron(shuffle=True, seed=1).fit(X, y).weights_, expected)
    layer = HebbianLayer(4, 2, rule="sanger", seed=0).fit(X, epochs=2)
    assert np.all(np.isfinite(layer.weights_))
