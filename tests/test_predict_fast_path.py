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


def inputs_not_taken_as_they_are(X):
    """X's first rows in forms the core must not take as they are: MLP.predict converts them."""
    rows = X[:5]
    other_dtype = np.float64 if X.dtype == np.float32 else np.float32
    return {
        "fortran order": np.asfortranarray(rows),
        "a strided view": X[:10:2],
        "another dtype": rows.astype(other_dtype),
        "an equal dtype object": rows.astype(pickle.loads(pickle.dumps(X.dtype))),
        "a list": rows.tolist(),
        "np.matrix": np.asmatrix(rows),
        "a masked array": np.ma.array(rows),
        "big-endian": rows.astype(rows.dtype.newbyteorder(">")),
    }


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("kind", ["fortran order", "a strided view", "another dtype", "an equal dtype object",
                                  "a list", "np.matrix", "a masked array", "big-endian"])
def test_the_core_takes_as_they_are_only_rows_it_would_not_convert(fitted, kind):
    model, X = fitted
    rows = inputs_not_taken_as_they_are(X)[kind]
    assert model._network.predict_labels(rows, True, True) is None
    assert model._network.predict(rows, True, True) is None
    # MLP.predict converts them: the labels and outputs of the same rows taken as they are.
    expected = np.ascontiguousarray(np.asarray(rows, dtype=X.dtype))
    np.testing.assert_array_equal(model.predict(rows), model._network.predict_labels(expected, True, True))
    np.testing.assert_array_equal(model.predict_proba(rows), model._network.predict(expected, True, True))


@pytest.mark.parametrize("rows, message", [(lambda X: X[0], "X must be 2-D"),
                                           (lambda X: X[:0], "X is empty"),
                                           (lambda X: np.ascontiguousarray(X[:3, :11]), "X must have 12 columns"),
                                           (lambda X: None, "X must hold real numbers")])
def test_rows_the_core_refuses_are_refused_by_the_python_checks(fitted, rows, message):
    model, X = fitted
    bad = rows(X)
    assert model._network.predict_labels(bad, True, True) is None
    with pytest.raises((ValueError, TypeError), match=message):
        model.predict(bad)
    with pytest.raises((ValueError, TypeError), match=message):
        model.predict_proba(bad)


def test_rows_taken_as_they_are_give_the_bits_of_the_checked_call(fitted):
    model, X = fitted
    labels = model._network.predict_labels(X, True, True)
    assert type(labels) is np.ndarray and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, model._network.predict_labels(X, True))
    np.testing.assert_array_equal(model._network.predict(X, True, True), model._network.predict(X, True))
    assert model.predict(X[3:4]).tolist() == [labels[3]]
