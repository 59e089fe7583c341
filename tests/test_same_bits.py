"""The canonical summation order, tested as a user sees it: the same bits for a row whatever
batch it is predicted in, at any thread count, and with the AVX2 or AVX-512 kernels -- for
the GEMM alone and for whole models, predictions and training trajectories, float32 and
float64. (Agreement with NumPy's values is test_gemm.py's and test_kernels.py's job.)"""
import contextlib

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, reference

kernels = _core.kernels
DTYPES = [np.float32, np.float64]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]
FMA_ISAS = [isa for isa in ("avx2", "avx512") if kernels.cpu_supports_isa(isa)]
ISAS = ["portable"] + FMA_ISAS
# The FMA GEMMs: AVX2's and each AVX-512 float tile ("isa:tile"; "avx512" alone: the CPU's tile).
FMA_GEMMS = [name for isa in FMA_ISAS for name in ([f"{isa}:16x16", f"{isa}:8x32"] if isa == "avx512" else [isa])]


@contextlib.contextmanager
def isa(name):
    """The kernels of instruction set `name`, or "avx512:<tile>"."""
    isa_name, _, tile = name.partition(":")
    kernels.set_isa(isa_name)
    kernels.set_avx512_tile(tile or "auto")
    try:
        yield
    finally:
        kernels.set_isa("auto")
        kernels.set_avx512_tile("auto")


@contextlib.contextmanager
def threads(n):
    saved = _core.get_num_threads()
    _core.set_num_threads(n)
    try:
        yield
    finally:
        _core.set_num_threads(saved)


def operands(rng, M, K, N, dtype, transpose_a, transpose_b):
    a = rng.standard_normal((K, M) if transpose_a else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if transpose_b else (K, N)).astype(dtype)
    return a, b


def rows_of(a, rows, transpose_a):
    """The operand whose op() is op(a)[rows]."""
    return np.ascontiguousarray(a[:, rows] if transpose_a else a[rows])


# Shapes that take every path: the row path (M == 1), the skinny one (N <= 16), the packed
# one with edges in M, N and several K blocks (K > 256), and the network's own.
SHAPES = [(37, 784, 256), (40, 256, 10), (29, 300, 1), (23, 700, 70), (16, 5, 33), (50, 1000, 17)]


@pytest.mark.parametrize("name", ["portable"] + FMA_GEMMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose_a,transpose_b", TRANSPOSES)
def test_gemm_rows_do_not_depend_on_the_other_rows(name, dtype, transpose_a, transpose_b):
    rng = np.random.default_rng(3)
    with isa(name):
        for M, K, N in SHAPES:
            a, b = operands(rng, M, K, N, dtype, transpose_a, transpose_b)
            whole = kernels.gemm(a, b, transpose_a, transpose_b)
            for rows in (slice(0, 1), slice(M - 1, M), slice(3, 4), slice(1, M - 2), slice(5, 18)):
                part = kernels.gemm(rows_of(a, rows, transpose_a), b, transpose_a, transpose_b)
                assert np.array_equal(part, whole[rows]), (name, M, K, N, rows)
            # and with accumulation into an existing c
            c0 = rng.standard_normal((M, N)).astype(dtype)
            whole = kernels.gemm(a, b, transpose_a, transpose_b, c=c0.copy(), accumulate=True)
            one = kernels.gemm(rows_of(a, slice(2, 3), transpose_a), b, transpose_a, transpose_b,
                               c=c0[2:3].copy(), accumulate=True)
            assert np.array_equal(one, whole[2:3]), (name, M, K, N)


@pytest.mark.skipif(len(FMA_ISAS) < 2, reason="needs a CPU with both AVX2 and AVX-512")
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_avx2_and_avx512_tiles_give_the_same_bits(dtype):
    rng = np.random.default_rng(4)
    shapes = SHAPES + [(1, 784, 256), (128, 784, 256), (784, 128, 256), (128, 256, 784), (157, 600, 2100)]
    # around the AVX-512 tiles' edges: MR 8 / 16, NR 16 / 32, the K blocks, MC 96, NC 1024
    shapes += [(9, 257, 33), (17, 255, 31), (96, 513, 1025), (97, 16, 1024), (128, 1024, 784)]
    shapes += [tuple(int(v) for v in rng.integers(1, 300, 3)) for _ in range(30)]
    for M, K, N in shapes:
        for transpose_a, transpose_b in TRANSPOSES:
            a, b = operands(rng, M, K, N, dtype, transpose_a, transpose_b)
            c0 = rng.standard_normal((M, N)).astype(dtype)
            results = []
            for name in FMA_GEMMS:
                with isa(name):
                    results.append((kernels.gemm(a, b, transpose_a, transpose_b),
                                    kernels.gemm(a, b, transpose_a, transpose_b, c=c0.copy(),
                                                 accumulate=True)))
            for name, (plain, summed) in zip(FMA_GEMMS[1:], results[1:]):
                assert np.array_equal(results[0][0], plain), (name, M, K, N, transpose_a, transpose_b)
                assert np.array_equal(results[0][1], summed), (name, M, K, N, transpose_a, transpose_b)


# ---- whole models ------------------------------------------------------------------------

MODELS = {
    "classifier relu": dict(layer_sizes=[784, 256, 10], activation="relu", loss="cross_entropy"),
    "classifier tanh+gelu, batch norm": dict(layer_sizes=[300, 70, 33, 10], activation=["tanh", "gelu"],
                                             loss="cross_entropy", batch_norm=True),
    "regressor sigmoid": dict(layer_sizes=[50, 40, 1], activation="sigmoid", loss="mse"),
    # gelu alone, both tails of the vectorised erf taken (inputs of unit scale, 2 hidden layers)
    "regressor gelu": dict(layer_sizes=[20, 48, 48, 2], activation="gelu", loss="mse"),
}


def trained(spec, dtype, X, y, epochs=2):
    model = fastmlp.MLP(**spec, dtype=dtype, seed=5)
    model.fit(X, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def data(spec, rows=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, spec["layer_sizes"][0])).astype(np.float32)
    outputs = spec["layer_sizes"][-1]
    y = rng.integers(0, outputs, rows) if spec["loss"] == "cross_entropy" else rng.standard_normal((rows, outputs))
    return X, y


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_predict_of_a_row_does_not_depend_on_its_batch_or_the_threads(name, dtype, model_name):
    spec = MODELS[model_name]
    X, y = data(spec)
    with isa(name):
        model = trained(spec, dtype, X, y, epochs=1)
        with threads(2):
            whole = model.predict(X)
        for n in (1, 2):
            with threads(n):
                for start, stop in ((0, 1), (299, 300), (17, 18), (0, 7), (5, 133), (100, 300)):
                    assert np.array_equal(model.predict(X[start:stop]), whole[start:stop]), \
                        (name, dtype, model_name, n, start, stop)
        # every row alone
        singles = np.concatenate([model.predict(X[i:i + 1]) for i in range(0, 300, 7)])
        assert np.array_equal(singles, whole[::7])


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_finiteness_check_finds_every_nan_and_infinity_in_every_isa(name, dtype):
    """The core's bit test (vectorised per ISA) against np.isfinite: one bad value at each
    position of short and vector-tail lengths, and extreme finite values that must pass."""
    model = fastmlp.MLP([37, 3], dtype=np.dtype(dtype).name, seed=0)
    model.fitted = True
    info = np.finfo(dtype)
    finite_extremes = np.array([info.max, -info.max, info.tiny, info.tiny / 4, -0.0], dtype)
    with isa(name):
        for rows in (1, 3, 4000):  # 4000 x 37 elements: split among threads
            X = np.random.default_rng(rows).standard_normal((rows, 37)).astype(dtype)
            X.flat[:5] = finite_extremes
            model._network.predict(X, check_finite=True)  # extremes are finite: no error
            for position in sorted({0, 1, 15, 16, 17, X.size // 2, X.size - 1}):
                for bad in (np.nan, np.inf, -np.inf):
                    Y = X.copy()
                    Y.flat[position] = bad
                    assert not np.isfinite(Y).all()
                    with pytest.raises(ValueError, match="X contains NaN or infinity"):
                        model._network.predict(Y, check_finite=True)
                    assert kernels.all_finite(Y) is False
            assert kernels.all_finite(X) is True


@pytest.mark.parametrize("model_name", list(MODELS))
def test_prediction_chunks_shared_among_threads_give_the_bits_of_one_thread(model_name):
    """A large prediction at 2 threads goes to the threads chunk by chunk (each chunk's kernels on
    one thread); the rows must come out as at 1 thread, also when every chunk is its own
    parallel region (a signal check after each) and for MLP.predict's labels."""
    spec = MODELS[model_name]
    X, y = data(spec, rows=300)
    model = trained(spec, "float32", X, y, epochs=1)
    # Enough rows for several chunks (>= 128 rows each) and for a 2-thread call (5e7 multiply-adds).
    rows_needed = int(2e8 // sum(a * b for a, b in zip(spec["layer_sizes"], spec["layer_sizes"][1:]))) + 1
    big = np.random.default_rng(1).standard_normal((max(rows_needed, 1500), X.shape[1])).astype(np.float32)
    with threads(1):
        alone = model.predict_proba(big) if spec["loss"] == "cross_entropy" else model.predict(big)
        assert model._network.last_call_threads == 1
    labels_alone = model.predict(big)
    for interval in (0.1, 0.0):
        _core._set_signal_check_interval(interval)
        try:
            with threads(2):
                shared = model.predict_proba(big) if spec["loss"] == "cross_entropy" else model.predict(big)
                assert model._network.last_call_threads == 2
                labels = model.predict(big)
        finally:
            _core._set_signal_check_interval(0.1)
        assert np.array_equal(shared, alone), (model_name, interval)
        assert np.array_equal(labels, labels_alone), (model_name, interval)


@pytest.mark.skipif(len(FMA_ISAS) < 2, reason="needs a CPU with both AVX2 and AVX-512")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_training_trajectories_are_the_same_with_avx2_and_avx512(dtype, model_name):
    spec = MODELS[model_name]
    X, y = data(spec)
    runs = []
    for name in FMA_GEMMS:
        with isa(name):
            model = trained(spec, dtype, X, y, epochs=2)
            runs.append((model.flat_parameters.copy(), model.predict(X)))
    for name, (parameters, predictions) in zip(FMA_GEMMS[1:], runs[1:]):
        assert np.array_equal(runs[0][0], parameters), name
        assert np.array_equal(runs[0][1], predictions), name


def _update_calls(state):
    """Each optimizer kernel, in several variants, on copies of `state` (5 float arrays)."""
    p, s0, s1, s2, g = state
    copies = lambda *arrays: [a.copy() for a in arrays]  # noqa: E731
    return {
        "sgd": lambda: kernels.sgd_update(*copies(p, s0, g), 1e-2, 0.0, 0.0, False, 1e-3, 3),
        "sgd momentum first step": lambda: kernels.sgd_update(*copies(p, s0, g), 1e-2, 0.9, 0.1, False, 0.0, 1),
        "sgd nesterov": lambda: kernels.sgd_update(*copies(p, s0, g), 1e-2, 0.9, 0.0, True, 1e-3, 4),
        "adagrad": lambda: kernels.adagrad_update(*copies(p, s1, g), 1e-2, 1e-3, 1e-3, 1e-10, 5),
        "adadelta": lambda: kernels.adadelta_update(*copies(p, s1, s2, g), 1.0, 0.9, 1e-6, 1e-3),
        "rmsprop": lambda: kernels.rmsprop_update(*copies(p, s1, s0, s2, g), 1e-2, 0.99, 1e-8, 0.0, 0.0, False),
        "rmsprop centered momentum": lambda: kernels.rmsprop_update(*copies(p, s1 + 1, s0 * 0.1, s2, g), 1e-2,
                                                                    0.99, 1e-8, 1e-3, 0.9, True),
        "adam": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.01, False, False, 7),
        "adam amsgrad": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.01, True,
                                                    False, 7),
        "adamw": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.01, False, True, 7),
        # weight decay 0: what decay_biases=False runs over biases, gamma and beta
        "adam no decay": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.0, False,
                                                     False, 7),
        "adamw no decay": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.0, True,
                                                      True, 7),
        "adagrad no decay": lambda: kernels.adagrad_update(*copies(p, s1, g), 1e-2, 1e-3, 0.0, 1e-10, 5),
        # eps_hat: scikit-learn's epsilon placement, its own loop per ISA
        "adam eps_hat": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.01, False,
                                                    False, 7, True),
        "adam amsgrad eps_hat": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.0,
                                                            True, False, 7, True),
        "adamw eps_hat": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.01, False,
                                                     True, 7, True),
        "adamw amsgrad eps_hat": lambda: kernels.adam_update(*copies(p, s0, s1, s2, g), 1e-3, 0.9, 0.999, 1e-8, 0.01,
                                                             True, True, 7, True),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", list(_update_calls([None] * 5)))
def test_optimizer_loops_give_the_same_bits_in_every_isa(dtype, optimizer):
    """The optimizer loops are compiled once per ISA without FMA contraction: identical updates."""
    rng = np.random.default_rng(8)
    n = 70001   # threads split it, and it is no multiple of any vector width
    state = [rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype) * 0.1,
             rng.random(n).astype(dtype), rng.random(n).astype(dtype), rng.standard_normal(n).astype(dtype)]
    results = []
    for name in ISAS:
        with isa(name):
            results.append(_update_calls(state)[optimizer]())
    for other in results[1:]:
        for mine, theirs in zip(results[0], other):
            assert np.array_equal(mine, theirs)
    # and the update did something
    assert not np.array_equal(results[0][0], state[0])



# decay_biases=False runs the loops once per layer range (weights with their decay, biases,
# gamma and beta with none); the first weight range is long enough for threads to split it.
NO_BIAS_DECAY = {
    "sgd nesterov": fastmlp.optim.SGD(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-2, decay_biases=False),
    "adagrad": fastmlp.optim.Adagrad(lr=1e-2, weight_decay=1e-2, decay_biases=False),
    "adadelta": fastmlp.optim.Adadelta(weight_decay=1e-2, decay_biases=False),
    "rmsprop centered": fastmlp.optim.RMSprop(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-2,
                                              decay_biases=False),
    "adam": fastmlp.optim.Adam(lr=1e-3, weight_decay=1e-2, decay_biases=False),
    "adamw amsgrad": fastmlp.optim.AdamW(lr=1e-3, amsgrad=True, decay_biases=False),
    "adam eps_hat": fastmlp.optim.Adam(lr=1e-3, weight_decay=1e-2, decay_biases=False, eps_hat=True),
}


@pytest.mark.parametrize("optimizer", list(NO_BIAS_DECAY))
def test_no_bias_decay_trajectories_are_the_same_bits_with_avx2_avx512_and_any_threads(optimizer):
    spec = dict(layer_sizes=[784, 64, 10], activation="relu", loss="cross_entropy", batch_norm=True,
                optimizer=NO_BIAS_DECAY[optimizer])
    X, y = data(spec)
    for dtype in ("float32", "float64"):
        runs = []
        for name in FMA_ISAS or ISAS:  # the portable GEMM rounds without FMA: other bits
            for n in (1, 2):
                with isa(name), threads(n):
                    runs.append(trained(spec, dtype, X, y, epochs=1).flat_parameters)
        for other in runs[1:]:
            assert np.array_equal(runs[0], other), (optimizer, dtype)
        assert not np.array_equal(runs[0], fastmlp.MLP(**spec, dtype=dtype, seed=5).flat_parameters)

# ---- the vectorised exp (softmax) and sigmoid ---------------------------------------------


def _exp_inputs(dtype):
    rng = np.random.default_rng(9)
    wide = 100.0 if dtype == np.float32 else 800.0
    specials = [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 20.0, -20.0, 88.0, -87.0, 700.0, -700.0,
                np.inf, -np.inf, np.nan]
    return np.concatenate([rng.uniform(-wide, wide, 50001), rng.uniform(-3, 3, 50001),
                           specials]).astype(dtype)


def _sigmoid_exact(x):
    """sigmoid in long double (64-bit mantissa on x86), an independent reference."""
    v = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-v))


def _ulps(actual, exact, dtype):
    """|actual - exact| in units of the last place of exact (at dtype's precision)."""
    exact_rounded = exact.astype(dtype)
    spacing = np.spacing(np.abs(exact_rounded)).astype(np.longdouble)
    return np.abs(actual.astype(np.longdouble) - exact) / spacing


def _tanh_exact(x):
    return np.tanh(x.astype(np.longdouble))


EXACT = {"sigmoid": _sigmoid_exact, "tanh": _tanh_exact}
# Measured: sigmoid at most 2.07 ulps in float32 and 2.02 in float64 (the same formula
# through NumPy's libm exp: 3.0 in float32); tanh 2.49 and 2.61 (glibc's tanh: 1.3 and 1.2,
# at 25-80x the time).
ULP_BOUNDS = {"sigmoid": 2.5, "tanh": 3.0}


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_vectorised_activations_are_accurate(name, dtype, activation):
    x = _exp_inputs(dtype)
    x = np.concatenate([x, np.geomspace(1e-30, 1, 2000).astype(dtype), -np.geomspace(1e-30, 1, 2000).astype(dtype)])
    with isa(name):
        y = kernels.activation_forward(x, activation)
    assert np.isnan(y[np.isnan(x)]).all()
    low = 0.0 if activation == "sigmoid" else -1.0
    assert y[x == np.inf].tolist() == [1.0] and y[x == -np.inf].tolist() == [low]
    exact = EXACT[activation](x)
    # Normal results: within the bound. Below the smallest normal number exp flushes to zero
    # (documented), so there the error is at most that number.
    finite = np.isfinite(x)
    normal = finite & (np.abs(exact) >= np.finfo(dtype).tiny)
    assert _ulps(y[normal], exact[normal], dtype).max() <= ULP_BOUNDS[activation]
    assert np.all(np.abs(y[finite].astype(np.longdouble) - exact[finite])
                  <= np.maximum(3 * np.spacing(np.abs(exact[finite]).astype(dtype)), np.finfo(dtype).tiny))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_matches_a_long_double_reference(dtype):
    rng = np.random.default_rng(10)
    logits = (rng.standard_normal((500, 10)) * 8).astype(dtype)
    # The shift by the row's maximum is rounded in dtype by any implementation; from there on
    # the reference is exact (long double).
    v = (logits - logits.max(axis=1, keepdims=True)).astype(np.longdouble)
    e = np.exp(v)
    exact = e / e.sum(axis=1, keepdims=True)
    for name in ISAS:
        with isa(name):
            probs = kernels.softmax_forward(logits)
        # Measured: 1.7 ulps in float32 (NumPy's exp with the same formula: 2.9), 5.0 in
        # float64 (3.9 with glibc's exp, which is more accurate than ours in double).
        assert _ulps(probs, exact, dtype).max() <= (2.5 if dtype == np.float32 else 6.0), name


@pytest.mark.skipif(len(FMA_ISAS) < 2, reason="needs a CPU with both AVX2 and AVX-512")
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_tanh_and_softmax_are_the_same_bits_with_avx2_and_avx512(dtype):
    x = _exp_inputs(dtype)
    logits = x[np.isfinite(x)][: 10 * 5000].reshape(-1, 10) / 10
    results = []
    for name in FMA_ISAS:
        with isa(name):
            results.append((kernels.activation_forward(x, "sigmoid"), kernels.activation_forward(x, "tanh"),
                            kernels.softmax_forward(logits)))
    assert np.array_equal(results[0][0], results[1][0], equal_nan=True)
    assert np.array_equal(results[0][1], results[1][1], equal_nan=True)
    assert np.array_equal(results[0][2], results[1][2])


# ---- the vectorised erf and gelu ----------------------------------------------------------
# References in long double (64-bit mantissa on x86), computed independently of the core's
# fits: erf from its everywhere-positive series, erfc from its continued fraction.

_SQRT_PI = np.longdouble("1.7724538509055160272981674833411452")


def _square_parts(v):
    """v^2 (v a float64 array, as long double) as three parts whose sum is exact."""
    high = (v.astype(np.float32)).astype(np.longdouble)  # 24 bits: products of parts are exact
    low = v.astype(np.longdouble) - high
    return high * high, 2 * high * low, low * low


def _exp_minus_square(v):
    """e^(-v^2), without the rounding of v^2 (which would cost ulps at large v)."""
    a, b, c = _square_parts(v)
    return np.exp(-a) * np.exp(-b) * np.exp(-c)


def _erf_series(a):
    """2/sqrt(pi) e^-a^2 sum_n 2^n a^(2n+1) / (1 3 ... (2n+1)): positive terms, a in [0, 1]."""
    term = a.copy()
    total = a.copy()
    for n in range(1, 200):
        term = term * 2 * a * a / (2 * n + 1)
        total = total + term
    return 2 / _SQRT_PI * _exp_minus_square(a) * total


def _erfc_continued_fraction(a):
    """e^-a^2 / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...)))), a >= 1."""
    tail = np.zeros_like(a)
    for k in range(400, 0, -1):
        tail = (k / np.longdouble(2)) / (a + tail)
    return _exp_minus_square(a) / _SQRT_PI / (a + tail)


def _erfc_exact(a):
    """erfc(a) for a >= 0 (long double)."""
    a = a.astype(np.longdouble)
    near = np.minimum(a, 1.0)
    far = np.maximum(a, 1.0)
    return np.where(a < 1, 1 - _erf_series(near), _erfc_continued_fraction(far))


def _erf_exact(x):
    a = np.abs(x).astype(np.longdouble)
    near = np.minimum(a, 1.0)
    magnitude = np.where(a < 1, _erf_series(near), 1 - _erfc_continued_fraction(np.maximum(a, 1.0)))
    return np.where(x < 0, -magnitude, magnitude)


def _normal_parts_exact(x):
    """Phi(x) and x phi(x) in long double, Phi from erfc on both sides (no cancellation)."""
    v = x.astype(np.longdouble)
    z = v / np.sqrt(np.longdouble(2))
    half_erfc = _erfc_exact(np.abs(z)) / 2
    cdf = np.where(x < 0, half_erfc, 1 - half_erfc)
    # e^(-x^2/2) = e^(-(x/2)^2)^2 with x/2 exact
    x_phi = v * _exp_minus_square(x / 2) ** 2 / np.sqrt(2 * np.longdouble(np.pi))
    return cdf, x_phi


def _erf_gelu_inputs(dtype, low=-7.0):
    rng = np.random.default_rng(11)
    tiny = np.geomspace(np.finfo(dtype).tiny / 2**10 if dtype == np.float32 else 1e-300, 1e-3, 3000)
    positive = np.concatenate([tiny, np.linspace(0, 10, 40001), rng.uniform(0, 45, 10000)])
    return np.concatenate([positive, -positive]).astype(dtype)


def test_the_long_double_references_agree_with_libm():
    """The references above, held against math.erf / math.erfc (float64, < 1 ulp)."""
    import math
    x = np.concatenate([np.linspace(-6, 6, 2001), [1e-300, 0.875, 1 - 1e-12, 1.0]])
    assert np.allclose(_erf_exact(x).astype(np.float64), [math.erf(v) for v in x], rtol=3e-16, atol=0)
    a = np.linspace(0, 26, 2001)
    assert np.allclose(_erfc_exact(a).astype(np.float64), [math.erfc(v) for v in a], rtol=2e-15, atol=0)


# Measured (max over the grid, every ISA): erf 2.26 ulps in float32 and 1.60 in float64.
ERF_ULP_BOUND = 4.0


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_erf_is_accurate_odd_and_exact_at_its_special_values(name, dtype):
    x = _erf_gelu_inputs(dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 6.0, -6.0, 4.0, -4.0], dtype)
    with isa(name):
        y = kernels.erf_forward(x)
        s = kernels.erf_forward(specials)
    exact = _erf_exact(x)
    normal = np.abs(exact) >= np.finfo(dtype).tiny
    assert _ulps(y[normal], exact[normal], dtype).max() <= ERF_ULP_BOUND
    # subnormal results: erf(x) = 1.128 x rounded, within a subnormal spacing
    assert np.all(np.abs(y[~normal].astype(np.longdouble) - exact[~normal]) <= np.finfo(dtype).smallest_subnormal)
    half = x.size // 2
    assert np.array_equal(y[half:], -y[:half])  # odd, bit for bit
    assert np.all(np.abs(y) <= 1)
    assert s[0] == 0 and not np.signbit(s[0]) and s[1] == 0 and np.signbit(s[1])
    assert s[2:4].tolist() == [1, -1] and np.isnan(s[4])
    # erf rounds to +-1 from 3.92 (float32) and 5.93 (float64) on: exactly 1 there
    assert s[5:7].tolist() == [1, -1] and s[7:9].tolist() == [1, -1]
    assert (s[9:11].tolist() == [1, -1]) == (dtype == np.float32)
    with pytest.raises(TypeError, match="x must be float32 or float64, got int64"):
        kernels.erf_forward(np.arange(3, dtype=np.int64))


# Measured (max over the grid, every ISA): gelu 4.7 ulps in float32 and 4.3 in float64,
# also on the far left where Phi = erfc(-x / sqrt2) / 2 is tiny (libm's 1 + erf(x / sqrt2),
# used before, lost every digit there from x = -6 in float32); gelu' 4.9 and 5.1 ulps of its
# larger term (Phi(x) and x phi(x) cancel near its root, x = -0.75).
GELU_ULP_BOUND = 6.0


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_and_its_derivative_are_accurate_to_the_far_left_tail(name, dtype):
    x = _erf_gelu_inputs(dtype)
    with isa(name):
        y = kernels.activation_forward(x, "gelu")
        dx = kernels.activation_backward(np.ones_like(x), x, y, "gelu")
    cdf, x_phi = _normal_parts_exact(x)
    tiny = np.finfo(dtype).tiny
    # Where Phi(x) is a normal number: within the bound. Below, e^(-x^2/2) flushes to zero as
    # exp does, so the error is a few of the smallest normal numbers.
    normal = cdf >= tiny
    gelu = x.astype(np.longdouble) * cdf
    assert _ulps(y[normal], gelu[normal], dtype).max() <= GELU_ULP_BOUND
    assert np.all(np.abs(y[~normal].astype(np.longdouble) - gelu[~normal]) <= 2 * tiny)
    derivative = cdf + x_phi
    larger = np.maximum(cdf, np.abs(x_phi))
    normal = _exp_minus_square(x / 2) ** 2 >= tiny  # e^(-x^2/2) not flushed
    error_in_ulps_of_the_larger_term = (np.abs(dx[normal].astype(np.longdouble) - derivative[normal])
                                        / np.spacing(larger[normal].astype(dtype)).astype(np.longdouble))
    assert error_in_ulps_of_the_larger_term.max() <= GELU_ULP_BOUND
    assert np.all(np.abs(dx[~normal].astype(np.longdouble) - derivative[~normal]) <= 16 * tiny)  # |x| phi < 16 tiny
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype)
    with isa(name):
        ys = kernels.activation_forward(specials, "gelu")
        ds = kernels.activation_backward(np.ones_like(specials), specials, ys, "gelu")
    # NaN stays NaN; gelu(inf) = inf; -inf * Phi(-inf) = -inf * 0 is NaN, and so is the slope
    # Phi + x phi at +-inf (inf * 0), as in the NumPy reference (and the libm formula before);
    # gelu(+-0) = +-0 with slope 1/2.
    assert np.isnan(ys[0]) and ys[1] == np.inf and np.isnan(ys[2])
    assert ys[3] == 0 and not np.signbit(ys[3]) and ys[4] == 0 and np.signbit(ys[4])
    assert np.isnan(ds[:3]).all() and ds[3:].tolist() == [0.5, 0.5]
    with np.errstate(invalid="ignore"):  # inf * 0
        reference_slopes = reference.activation_backward(np.ones_like(specials), specials, ys, "gelu")
    assert np.array_equal(ds, reference_slopes, equal_nan=True)


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_gemm_epilogue_gives_the_bits_of_the_gelu_kernels(name, dtype):
    """dense_forward applies gelu in its GEMM epilogue, dense_backward its derivative: the same
    loops as activation_forward / activation_backward, so the same bits."""
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((37, 70)) * 2).astype(dtype)
    w = rng.standard_normal((70, 45)).astype(dtype)
    b = rng.standard_normal(45).astype(dtype)
    dy = rng.standard_normal((37, 45)).astype(dtype)
    with isa(name):
        z, y = kernels.dense_forward(x, w, b, "gelu")
        assert np.array_equal(y, kernels.activation_forward(z, "gelu"))
        dx, _, _ = kernels.dense_backward(dy, x, w, z, y, "gelu")
        dz = kernels.activation_backward(dy, z, y, "gelu")
        assert np.array_equal(dx, kernels.gemm(dz, w, False, True))
    assert np.any(z < -3) and np.any(z > 3)  # both tails taken


@pytest.mark.skipif(len(FMA_ISAS) < 2, reason="needs a CPU with both AVX2 and AVX-512")
@pytest.mark.parametrize("dtype", DTYPES)
def test_erf_and_gelu_are_the_same_bits_with_avx2_and_avx512(dtype):
    x = np.concatenate([_exp_inputs(dtype), _erf_gelu_inputs(dtype)])
    dy = np.random.default_rng(13).standard_normal(x.size).astype(dtype)
    results = []
    for name in FMA_ISAS:
        with isa(name):
            y = kernels.activation_forward(x, "gelu")
            results.append((kernels.erf_forward(x), y, kernels.activation_backward(dy, x, y, "gelu")))
    for mine, theirs in zip(*results):
        assert np.array_equal(mine, theirs, equal_nan=True)
