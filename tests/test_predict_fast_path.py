"""MLP.predict / predict_proba on input the core takes as is (C-contiguous, the model's
dtype) go straight to C++; they must agree with the converting path and keep its checks."""
import pickle
import tracemalloc

import numpy as np
import pytest

import fastmlp


@pytest.fixture(scope="module", params=[np.float32, np.float64])
def fitted(request):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 12)).astype(request.param)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    model = fastmlp.MLP([12, 16, 3], seed=1, dtype=request.param)
    model.fit(X, y, epochs=3, batch_size=32)
    return model, X


def test_ready_input_predicts_as_converted_input(fitted):
    model, X = fitted
    other_dtype = np.float64 if X.dtype == np.float32 else np.float32
    converted = np.asfortranarray(X)  # not C-contiguous: takes the converting path
    np.testing.assert_array_equal(model.predict(X), model.predict(converted))
    np.testing.assert_array_equal(model.predict_proba(X), model.predict_proba(converted))
    np.testing.assert_array_equal(model.predict(X), model.predict_proba(X).argmax(axis=1))
    assert model.predict(X).dtype == np.int64
    # Other dtypes, lists and single rows are converted and give the same labels.
    np.testing.assert_array_equal(model.predict(X.astype(other_dtype)).shape, (300,))
    np.testing.assert_array_equal(model.predict(X[:5].tolist()), model.predict(X[:5]))
    for i in (0, 7, 299):
        assert model.predict(X[i:i + 1])[0] == model.predict(X)[i]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_ready_input_with_non_finite_values_is_refused(fitted, bad):
    model, X = fitted
    x = X[:4].copy()
    x[2, 5] = bad
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.predict(x)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.predict_proba(x)


@pytest.mark.parametrize("position", [0, 40_000, 99_999])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_single_non_finite_value_in_a_large_input_is_found_anywhere(fitted, position, threads,
                                                                       restore_threads):
    # 100,000 values: at 2 threads the check is split in two parts; each must be looked at.
    model, X = fitted
    rows = np.resize(X, (100_000 // 12 + 1, 12))
    flat = rows.reshape(-1)
    flat[position] = np.inf
    fastmlp.set_num_threads(threads)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.predict(rows)
    flat[position] = 0.5
    assert model.predict(rows).shape == (rows.shape[0],)


def test_ready_input_of_the_wrong_width_names_the_width(fitted):
    model, X = fitted
    with pytest.raises(ValueError, match="X must have 12 columns"):
        model.predict(np.ascontiguousarray(X[:, :11]))


def test_an_equal_but_not_canonical_dtype_takes_the_converting_path(fitted):
    # An unpickled dtype (joblib's memmaps carry one) equals the model's but is another
    # object, which the core's strict dtype check refuses: predict must convert it.
    model, X = fitted
    twin = pickle.loads(pickle.dumps(X.dtype))
    assert twin == X.dtype and twin is not X.dtype
    rows = X[:20].astype(twin)
    np.testing.assert_array_equal(model.predict(rows), model.predict(X[:20]))
    np.testing.assert_array_equal(model.predict_proba(rows), model.predict_proba(X[:20]))


def test_a_one_row_predict_allocates_its_labels_and_little_else(fitted):
    # The core's checked input must not make placeholder arrays for the CSR members a dense X
    # leaves unused (five empty NumPy arrays, ~0.6 us of a one-row predict): the traced peak
    # of the call is about its one-label result (~100 bytes), not ~500.
    model, X = fitted
    x = X[:1].copy()
    model.predict(x)
    peaks = []
    tracemalloc.start()
    try:
        for _ in range(5):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            labels = model.predict(x)
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    assert labels.tolist() == [model.predict(X)[0]]
    assert min(peaks) < 256, peaks
