"""Property-based fuzzing of every function of fastmlp._core (kernels, GEMM, the network) and
of the public API: random shapes (0, 1, large, mismatched), dtypes, non-contiguous and
negative-stride views, NaN/inf, huge and tiny values, labels out of range. Each call must
either raise a Python exception or return what the NumPy reference returns; a crash, a hang
or a write outside a buffer (caught by .ci/sanitize.sh) fails the run.

The number of calls made is printed at the end of the run (`pytest -s`, or the terminal
summary) for the record."""
import collections
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmlp
from fastmlp import _core
from fastmlp import reference as R

K = _core.kernels
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
# Exceptions a bad input may raise; anything else (or a crash) is a failure.
REJECTIONS = (TypeError, ValueError, OverflowError, MemoryError, IndexError)
COUNTS = collections.Counter()

ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "gelu", "step"]
DTYPES = [np.float32, np.float64]
ODD_DTYPES = [np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64]
SIZES = [0, 1, 1, 2, 3, 5, 7, 16, 17, 33]
SPECIALS = [np.nan, np.inf, -np.inf, 1e30, -1e30, 1e300, 1e-45, -1e-310, 0.0, 1e4, -1e4]


# The fewest results each comparing test must check against the reference (about a third of
# what its derandomized examples check): a change that made most calls raise, or skip the
# comparison, would otherwise still pass. The network and public-API tests only look for
# crashes and exceptions of the wrong kind.
MIN_CHECKED = {"test_fuzz_activations": 25, "test_fuzz_softmax_losses": 30,
               "test_fuzz_regression_losses": 50, "test_fuzz_dense": 8, "test_fuzz_gemm": 10,
               "test_fuzz_dropout_and_batch_norm": 35, "test_fuzz_optimizers": 50,
               "test_fuzz_random_bits": 40}


@pytest.fixture(autouse=True)
def enough_results_checked(request):
    before = COUNTS["checked"]
    yield
    name = request.function.__name__
    checked = COUNTS["checked"] - before
    assert checked >= MIN_CHECKED.get(name, 0), \
        f"{name} checked only {checked} results against the reference (at least {MIN_CHECKED[name]} expected)"


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    total = COUNTS["raised"] + COUNTS["returned"]
    print(f"\nfuzz: {total} calls ({COUNTS['returned']} returned, {COUNTS['checked']} of them "
          f"checked against the reference; {COUNTS['raised']} raised a Python exception)")


# ---- strategies ------------------------------------------------------------------------------------


@st.composite
def values(draw, shape, dtype, finite=False):
    """An array of `shape`: normal values, maybe scaled huge or tiny, maybe with specials."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 1e-20, 1e3, 1e20]))
    array = rng.normal(size=shape) * scale
    if not finite and array.size and draw(st.booleans()) and draw(st.booleans()):
        flat = array.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(SPECIALS))
    with np.errstate(all="ignore"):
        return array.astype(dtype)


@st.composite
def layout(draw, array):
    """The same values, viewed contiguous, reversed (negative strides), strided or Fortran."""
    kind = draw(st.sampled_from(["c", "c", "reversed", "strided", "fortran"]))
    if kind == "reversed" and array.ndim:
        return np.flip(np.flip(array).copy())  # a negative-stride view of equal values
    if kind == "strided" and array.ndim:
        spread = np.repeat(array, 2, axis=-1)
        return spread[..., ::2]
    if kind == "fortran":
        return np.asfortranarray(array)
    return array


@st.composite
def corrupt(draw, args, array_positions):
    """Usually args unchanged; sometimes one array argument made wrong: odd dtype, wrong
    shape or rank, a Python list, or None."""
    if not array_positions or draw(st.integers(0, 3)) != 0:
        return list(args)
    args = list(args)
    position = draw(st.sampled_from(array_positions))
    original = np.asarray(args[position])
    how = draw(st.sampled_from(["dtype", "shape", "rank", "list", "none", "other_float"]))
    if how == "dtype":
        with np.errstate(all="ignore"):
            args[position] = original.astype(draw(st.sampled_from(ODD_DTYPES)))
    elif how == "shape":
        args[position] = np.zeros(tuple(s + draw(st.integers(1, 3)) for s in original.shape), original.dtype)
    elif how == "rank":
        args[position] = original.reshape(-1) if original.ndim > 1 else original.reshape(1, -1, 1)
    elif how == "list":
        args[position] = original.tolist()
    elif how == "none":
        args[position] = None
    else:
        other = np.float64 if original.dtype == np.float32 else np.float32
        args[position] = original.astype(other)
    return args


# ---- checking ----------------------------------------------------------------------------------------


def finite_inputs(args):
    for arg in args:
        if isinstance(arg, np.ndarray) and arg.dtype.kind == "f" and not np.all(np.isfinite(arg)):
            return False
    return True


def tolerance(args):
    dtype = next((a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"), np.float64)
    magnitude = max([float(np.max(np.abs(a))) for a in args
                     if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size] + [1.0])
    length = max([max(a.shape) for a in args if isinstance(a, np.ndarray) and a.ndim] + [1])
    eps = 1e-5 if dtype == np.float32 else 1e-12
    return eps, min(eps * length * magnitude * magnitude, 1e300)


def assert_same(actual, expected, rtol, atol):
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e, rtol, atol)
        return
    if expected is None:
        assert actual is None
        return
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape
    # NaN where the reference has NaN, the same infinities where it has infinities: a kernel
    # returning NaN or inf in place of numbers must not pass.
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN positions differ")
    infinite = np.isinf(actual) | np.isinf(expected)
    np.testing.assert_array_equal(actual[infinite], expected[infinite], err_msg="infinities differ")
    both = np.isfinite(actual) & np.isfinite(expected)
    np.testing.assert_allclose(actual[both], expected[both], rtol=rtol, atol=atol)


def call(name, args, kwargs=None, compare=True):
    """Call K.<name>: a Python exception or the reference's result, nothing else."""
    kwargs = kwargs or {}
    try:
        result = getattr(K, name)(*args, **kwargs)
    except REJECTIONS:
        COUNTS["raised"] += 1
        return None
    COUNTS["returned"] += 1
    if compare and finite_inputs(args):
        with np.errstate(all="ignore"):
            expected = getattr(R, name)(*[np.asarray(a) if isinstance(a, list) else a for a in args], **kwargs)
        assert_same(result, expected, *tolerance(args))
        COUNTS["checked"] += 1
    return result


# ---- kernels ---------------------------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_fuzz_activations(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    shape = tuple(data.draw(st.lists(st.sampled_from(SIZES), min_size=0, max_size=3)))
    act = data.draw(st.sampled_from(ACTIVATIONS + ["swish"]))
    x = data.draw(layout(data.draw(values(shape, dtype))))
    y = np.asarray(R.activation_forward(np.asarray(x, dtype), "identity"))
    dy = data.draw(values(shape, dtype))
    slope = data.draw(st.sampled_from([0.01, 0.0, -1.0, 1e30]))
    call("activation_forward", data.draw(corrupt([x, act, slope], [0])))
    with np.errstate(all="ignore"):
        y = R.activation_forward(y, act if act != "swish" else "identity", slope)
    call("activation_backward", data.draw(corrupt([dy, x, y, act, slope], [0, 1, 2])))


@FUZZ
@given(st.data())
def test_fuzz_softmax_losses(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    B, C = data.draw(st.sampled_from(SIZES)), data.draw(st.sampled_from(SIZES))
    logits = data.draw(layout(data.draw(values((B, C), dtype))))
    labels = np.asarray(data.draw(st.lists(st.integers(-2, max(C, 1) + 1), min_size=B, max_size=B)), np.int64)
    labels = labels.astype(data.draw(st.sampled_from([np.int64, np.int32, np.uint8, np.uint64, np.float64])))
    weights = data.draw(st.one_of(st.none(), values((C,), dtype, finite=True).map(np.abs)))
    smoothing = data.draw(st.sampled_from([0.0, 0.1, 1.0, -0.5, 2.0, float("nan")]))
    call("softmax_forward", data.draw(corrupt([logits], [0])))
    result = call("softmax_xent_forward", data.draw(corrupt([logits, labels, weights, smoothing], [0, 1])))
    probs = result[1] if result is not None else np.abs(data.draw(values((B, C), dtype, finite=True)))
    call("softmax_xent_backward", data.draw(corrupt([probs, labels, weights, smoothing], [0, 1])))
    targets = np.abs(data.draw(values((B, C), dtype)))
    call("softmax_xent_soft_forward", data.draw(corrupt([logits, targets], [0, 1])))
    call("softmax_xent_soft_backward", data.draw(corrupt([probs, targets], [0, 1])))


@FUZZ
@given(st.data())
def test_fuzz_regression_losses(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    shape = tuple(data.draw(st.lists(st.sampled_from(SIZES), min_size=1, max_size=2)))
    pred = data.draw(layout(data.draw(values(shape, dtype))))
    target = data.draw(layout(data.draw(values(shape, dtype))))
    for name in ("mse_forward", "mse_backward", "bce_logits_forward", "bce_logits_backward"):
        call(name, data.draw(corrupt([pred, target], [0, 1])))
    B, D = data.draw(st.sampled_from(SIZES)), data.draw(st.sampled_from(SIZES))
    out = data.draw(layout(data.draw(values((B, 2 * D + data.draw(st.sampled_from([0, 0, 1]))), dtype))))
    target = data.draw(values((B, D), dtype))
    for name in ("gaussian_nll_forward", "gaussian_nll_backward"):
        call(name, data.draw(corrupt([out, target], [0, 1])))


@FUZZ
@given(st.data())
def test_fuzz_dense(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    B, IN, OUT = (data.draw(st.sampled_from(SIZES)) for _ in range(3))
    x = data.draw(layout(data.draw(values((B, IN), dtype))))
    w = data.draw(layout(data.draw(values((IN, OUT), dtype))))
    b = data.draw(values((OUT,), dtype))
    act = data.draw(st.sampled_from(ACTIVATIONS))
    result = call("dense_forward", data.draw(corrupt([x, w, b, act], [0, 1, 2])))
    z, y = result if result is not None else (np.zeros((B, OUT), dtype),) * 2
    dy = data.draw(values((B, OUT), dtype))
    need_dx = data.draw(st.booleans())
    call("dense_backward", data.draw(corrupt([dy, x, w, z, y, act, 0.01, need_dx], [0, 1, 2, 3, 4])))


@FUZZ
@given(st.data())
def test_fuzz_gemm(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    M, N, Kdim = (data.draw(st.sampled_from(SIZES + [64, 97])) for _ in range(3))
    ta, tb = data.draw(st.booleans()), data.draw(st.booleans())
    a = data.draw(layout(data.draw(values((Kdim, M) if ta else (M, Kdim), dtype))))
    b = data.draw(layout(data.draw(values((N, Kdim) if tb else (Kdim, N), dtype))))
    args = data.draw(corrupt([a, b], [0, 1]))
    accumulate = data.draw(st.booleans())
    c = data.draw(st.one_of(st.none(), values((M, N), dtype).flatmap(layout)))
    try:
        result = K.gemm(*args, transpose_a=ta, transpose_b=tb, c=None if c is None else c.copy(order="K"),
                        accumulate=accumulate)
    except REJECTIONS:
        COUNTS["raised"] += 1
        return
    COUNTS["returned"] += 1
    a64, b64 = (np.asarray(v, np.float64) for v in args)
    expected = (a64.T if ta else a64) @ (b64.T if tb else b64)
    if accumulate:
        expected = expected + c
    if finite_inputs(args + [c]):
        assert_same(result, expected, *tolerance(args))
        COUNTS["checked"] += 1


@FUZZ
@given(st.data())
def test_fuzz_dropout_and_batch_norm(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    B, F = data.draw(st.sampled_from(SIZES)), data.draw(st.sampled_from(SIZES))
    x = data.draw(layout(data.draw(values((B, F), dtype))))
    p = data.draw(st.sampled_from([0.0, 0.5, 0.999, 1.0, -0.1, float("nan")]))
    seed, counter = data.draw(st.integers(0, 2 ** 64 - 1)), data.draw(st.integers(0, 2 ** 64 - 1))
    result = call("dropout_forward", data.draw(corrupt([x, p, seed, counter], [0])))
    mask = result[1] if result is not None else np.ones_like(x)
    call("dropout_backward", data.draw(corrupt([x, mask], [0, 1])))
    gamma, beta = data.draw(values((F,), dtype)), data.draw(values((F,), dtype))
    mean, var = data.draw(values((F,), dtype)), np.abs(data.draw(values((F,), dtype)))
    momentum, eps = data.draw(st.sampled_from([0.1, 0.0, 1.0])), data.draw(st.sampled_from([1e-5, 0.0, 1.0]))
    result = call("batchnorm_forward_train",
                  data.draw(corrupt([x, gamma, beta, mean, var, momentum, eps], [0, 1, 2, 3, 4])))
    call("batchnorm_forward_eval", data.draw(corrupt([x, gamma, beta, mean, var, eps], [0, 1, 2, 3, 4])))
    if result is not None:
        _, xhat, _, invstd, _, _ = result
        call("batchnorm_backward", data.draw(corrupt([x, xhat, gamma, invstd], [0, 1, 2, 3])))


@FUZZ
@given(st.data())
def test_fuzz_optimizers(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    n = data.draw(st.sampled_from(SIZES + [1000]))
    params, grads = data.draw(values((n,), dtype)), data.draw(layout(data.draw(values((n,), dtype))))
    state = [np.abs(data.draw(values((n,), dtype))) for _ in range(3)]
    lr = data.draw(st.sampled_from([1e-3, 0.0, 1e6, -1.0]))
    step = data.draw(st.sampled_from([1, 2, 10 ** 6, 0, -1]))
    bits = data.draw(st.lists(st.booleans(), min_size=3, max_size=3))
    calls = {
        "sgd_update": [params, state[0], grads, lr, 0.9, 0.1, bits[0], 1e-2, step],
        "adagrad_update": [params, state[0], grads, lr, 0.01, 1e-2, 1e-10, step],
        "adadelta_update": [params, state[0], state[1], grads, lr, 0.9, 1e-6, 1e-2],
        "rmsprop_update": [params, state[0], state[1], state[2], grads, lr, 0.99, 1e-8, 1e-2, 0.9, bits[1]],
        "adam_update": [params, state[0], state[1], state[2], grads, lr, 0.9, 0.999, 1e-8, 1e-2, bits[1],
                        bits[2], step],
    }
    for name, args in calls.items():
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        call(name, data.draw(corrupt(args, arrays)))


@FUZZ
@given(st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1))
def test_fuzz_random_bits(seed, counter, index):
    assert K.random_bits(seed, counter, index) == R.random_bits(seed, counter, index)
    assert K.random_uniform(seed, counter, index) == R.random_uniform(seed, counter, index)
    COUNTS["returned"] += 2
    COUNTS["checked"] += 2
    for bad in (-1, 2 ** 64, 1.5, None):
        with pytest.raises(TypeError):
            K.random_bits(bad, counter, index)
        COUNTS["raised"] += 1


# ---- the network --------------------------------------------------------------------------------------------


@st.composite
def networks(draw):
    dtype = draw(st.sampled_from(DTYPES))
    loss = draw(st.sampled_from(["cross_entropy", "mse", "bce", "gaussian_nll"]))
    sizes = draw(st.lists(st.integers(1, 9), min_size=2, max_size=4))
    if loss == "gaussian_nll":
        sizes[-1] *= 2
    activations = [draw(st.sampled_from(ACTIVATIONS[:-1])) for _ in sizes[2:]]
    optimizer = {"name": draw(st.sampled_from(["sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw"])),
                 "lr": draw(st.sampled_from([1e-3, 0.1]))}
    batch_norm = draw(st.booleans())
    network_class = _core.NetworkFloat32 if dtype == np.float32 else _core.NetworkFloat64
    network = network_class(sizes, activations, loss, optimizer, dropout=draw(st.sampled_from([0.0, 0.5])),
                            batch_norm=batch_norm, seed=draw(st.integers(0, 2 ** 32)))
    network.params[:] = draw(values((network.params.size,), dtype, finite=True)) * 0.5
    return network, dtype, loss, sizes, activations, batch_norm


def network_targets(draw, loss, rows, sizes, dtype):
    if loss == "cross_entropy":
        labels = draw(st.lists(st.integers(-1, sizes[-1]), min_size=rows, max_size=rows))
        return np.asarray(labels, dtype=draw(st.sampled_from([np.int64, np.int64, np.int32, np.float64])))
    width = sizes[-1] // 2 if loss == "gaussian_nll" else sizes[-1]
    targets = draw(values((rows, width), dtype))
    return np.clip(targets, 0, 1) if loss == "bce" else targets


def independent_predict(network, X, loss, activations):
    """The network's forward in NumPy, layer by layer from its layer table (no batch norm)."""
    h = np.asarray(X, np.float64)
    params = np.asarray(network.params, np.float64)
    for index, layer in enumerate(network.layers):
        w = params[layer["weight"]:layer["weight"] + layer["fan_in"] * layer["fan_out"]]
        b = params[layer["bias"]:layer["bias"] + layer["fan_out"]]
        h = h @ w.reshape(layer["fan_in"], layer["fan_out"]) + b
        if index < len(activations):
            h = R.activation_forward(h, activations[index])
    if loss == "cross_entropy":
        return R.softmax_forward(h)
    return R.activation_forward(h, "sigmoid") if loss == "bce" else h


@settings(FUZZ, max_examples=80)
@given(networks(), st.data())
def test_fuzz_network_methods(network_and_options, data):
    network, dtype, loss, sizes, activations, batch_norm = network_and_options
    rows = data.draw(st.sampled_from([0, 1, 2, 3, 17]))
    width = data.draw(st.sampled_from([sizes[0]] * 4 + [sizes[0] + 1, 0]))
    X = data.draw(layout(data.draw(values((rows, width), data.draw(st.sampled_from(DTYPES + [np.int64]))))))
    y = network_targets(data.draw, loss, rows, sizes, dtype)
    args = data.draw(corrupt([X, y], [0, 1]))
    method = data.draw(st.sampled_from(["predict", "evaluate", "train_step", "compute_gradients", "train_batches"]))
    extra = ()
    if method == "train_batches":
        order = data.draw(st.permutations(range(rows))) if data.draw(st.booleans()) else \
            data.draw(st.lists(st.integers(-1, rows), min_size=rows, max_size=rows))
        extra = (np.asarray(order, np.int64), data.draw(st.sampled_from([1, 2, 5, 0, -1])),
                 data.draw(st.sampled_from([0, 1, 3, -1])), data.draw(st.sampled_from([0, 1, 10, -1])))
    elif method == "compute_gradients":
        extra = (data.draw(st.booleans()),)
    if method == "predict":
        args = args[:1]
    try:
        result = getattr(network, method)(*args, *extra)
    except REJECTIONS:
        COUNTS["raised"] += 1
        return
    COUNTS["returned"] += 1
    if method == "predict" and not batch_norm and finite_inputs(args):
        with np.errstate(all="ignore"):
            expected = independent_predict(network, args[0], loss, activations)
        assert_same(result, expected, 1e-4 if dtype == np.float32 else 1e-10, 1e-5)
        COUNTS["checked"] += 1
    elif method != "predict":
        assert len(result) in (3, 4) and 0 <= result[2] <= max(rows, 0)


# ---- the public API ------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=40)
@given(st.data())
def test_fuzz_public_api(data):
    loss = data.draw(st.sampled_from(["cross_entropy", "mse", "bce"]))
    features, outputs = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    model = fastmlp.MLP([features, data.draw(st.integers(1, 8)), outputs], loss=loss,
                        dtype=data.draw(st.sampled_from(["float32", "float64"])), seed=0,
                        batch_norm=data.draw(st.booleans()))
    rows = data.draw(st.sampled_from([0, 1, 2, 9]))
    width = data.draw(st.sampled_from([features, features, features + 1]))
    X = data.draw(layout(data.draw(values((rows, width), data.draw(st.sampled_from(DTYPES + ODD_DTYPES))))))
    if loss == "cross_entropy":
        y = np.asarray(data.draw(st.lists(st.integers(-1, outputs), min_size=rows, max_size=rows)))
    else:
        y = np.clip(data.draw(values((rows, outputs), np.float64)), 0, 1)
    method = data.draw(st.sampled_from(["fit", "train_step", "evaluate_after_fit", "predict_after_fit"]))
    try:
        if method == "fit":
            history = model.fit(X, y, epochs=2, batch_size=data.draw(st.sampled_from([1, 4, 100])))
            assert len(history) == 2 and all(math.isfinite(v) for v in history["loss"])
        elif method == "train_step":
            assert math.isfinite(model.train_step(X, y))
        else:
            model.set_weights(model.weights, model.biases)
            if method == "predict_after_fit":
                out = model.predict(X)
                assert len(out) == len(X)
            else:
                assert math.isfinite(model.evaluate(X, y)["loss"])
    except (REJECTIONS + (FloatingPointError,)):
        COUNTS["raised"] += 1
        return
    COUNTS["returned"] += 1
