"""Sparse X (scipy.sparse CSR/CSC): the densifying kernel against scipy and the NumPy reference,
fit/predict/evaluate/train_step giving the same bits as the dense matrix, malformed matrices
refused by name (never read out of bounds), a large matrix trained without its dense form,
and scipy never imported by fastmlp itself."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp
from fastmlp import _core
from fastmlp import reference as R
from fastmlp._sparse import CsrRows

sparse = pytest.importorskip("scipy.sparse")
K = _core.kernels


def random_csr(rng, n, d, density=0.2, dtype=np.float32, index_dtype=np.int32, duplicates=False,
               unsorted=False, empty_rows=True):
    """A CSR matrix with random entries; optionally duplicate and unsorted column indices and
    some empty rows (scipy keeps duplicates and order as given)."""
    rows, cols, vals = [], [], []
    for r in range(n):
        if empty_rows and r % 5 == 2:
            continue
        k = rng.binomial(d, density)
        c = rng.choice(d, k, replace=False)
        if duplicates and k:
            c = np.concatenate([c, rng.choice(c, max(1, k // 2))])
        if not unsorted:
            c = np.sort(c)
        rows += [r] * len(c)
        cols += list(c)
        vals += list(rng.normal(size=len(c)))
    indptr = np.zeros(n + 1, np.int64)
    np.add.at(indptr, np.asarray(rows, np.int64) + 1, 1)
    indptr = np.cumsum(indptr)
    X = sparse.csr_matrix((np.asarray(vals, dtype), np.asarray(cols), indptr), shape=(n, d))
    X.indices, X.indptr = X.indices.astype(index_dtype), X.indptr.astype(index_dtype)  # scipy picks int32
    return X


# ---- the kernel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_csr_rows_to_dense_matches_scipy_and_the_reference(rng, dtype, index_dtype):
    X = random_csr(rng, 40, 13, dtype=dtype, index_dtype=index_dtype, duplicates=True, unsorted=True)
    assert X.indices.dtype == index_dtype
    dense = X.toarray()
    for rows in [None, rng.integers(0, 40, 25)]:
        out, bad = K.csr_rows_to_dense(X.data, X.indices, X.indptr, rows, 13)
        expected = dense if rows is None else dense[rows]
        assert bad == -1
        np.testing.assert_array_equal(out, expected)  # duplicates summed in storage order, as scipy
        ref, ref_bad = R.csr_rows_to_dense(X.data, X.indices, X.indptr, rows, 13)
        assert ref_bad == -1
        np.testing.assert_array_equal(out, ref)


def test_csr_rows_to_dense_names_the_first_malformed_row_without_reading_out_of_bounds():
    data = np.ones(4)
    good_indptr = np.array([0, 1, 2, 4])
    cases = [
        (np.array([0, 1, 9, 0]), good_indptr, 2),            # column past cols
        (np.array([0, -1, 2, 0]), good_indptr, 1),           # negative column
        (np.array([0, 1, 2, 0]), np.array([0, 3, 2, 4]), 1),  # indptr decreasing
        (np.array([0, 1, 2, 0]), np.array([0, 1, 2, 99]), 2),  # past the stored entries
        (np.array([0, 1, 2, 0]), np.array([-5, 1, 2, 4]), 0),  # negative start
    ]
    for indices, indptr, bad_row in cases:
        for kernel in (K.csr_rows_to_dense, R.csr_rows_to_dense):
            _, bad = kernel(data, indices, indptr, None, 3)
            assert bad == bad_row


# ---- the model: sparse == dense, bit for bit ---------------------------------------------------------


def classification_data(rng, n=90, d=12, **kwargs):
    X = random_csr(rng, n, d, density=0.3, **kwargs)
    y = rng.integers(0, 3, n)
    return X, y


def twin_models(dtype="float32", **kwargs):
    make = lambda: fastmlp.MLP([12, 16, 3], "relu", dtype=dtype, seed=7, **kwargs)  # noqa: E731
    return make(), make()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_predict_evaluate_on_sparse_equal_dense_bitwise(rng, dtype):
    X, y = classification_data(rng, duplicates=True, unsorted=True, dtype=np.float64)
    # The stored values are converted to the model's dtype, then duplicates summed: the dense
    # equivalent is the converted matrix's toarray.
    dense = X.astype(dtype).toarray()
    w = rng.uniform(0, 2, len(y))
    on_sparse, on_dense = twin_models(dtype)
    options = dict(epochs=3, batch_size=16, validation_split=0.2, mixup=0.2, sample_weight=w)
    history = on_sparse.fit(X, y, **options)
    dense_history = on_dense.fit(dense, y, **options)
    np.testing.assert_array_equal(on_sparse.flat_parameters, on_dense.flat_parameters)
    assert history["loss"] == dense_history["loss"] and history["val_loss"] == dense_history["val_loss"]
    for variant in (X, X.tocsc(), sparse.csr_array(X)):
        np.testing.assert_array_equal(on_sparse.predict_proba(variant), on_dense.predict_proba(dense))
        np.testing.assert_array_equal(on_sparse.predict(variant), on_dense.predict(dense))
    assert on_sparse.evaluate(X, y) == on_dense.evaluate(dense, y)


def test_csc_and_int64_indices_and_train_step_equal_dense(rng):
    X, y = classification_data(rng, index_dtype=np.int64)
    dense = X.toarray().astype(np.float32)
    a, b = twin_models(batch_norm=True)
    a.fit(X.tocsc(), y, epochs=2, batch_size=10)
    b.fit(dense, y, epochs=2, batch_size=10)
    np.testing.assert_array_equal(a.flat_parameters, b.flat_parameters)
    assert a.train_step(X[:10], y[:10]) == b.train_step(dense[:10], y[:10])
    np.testing.assert_array_equal(a.flat_parameters, b.flat_parameters)
    assert a.gradients(X[:10], y[:10])[0] == b.gradients(dense[:10], y[:10])[0]
    # without duplicates every format converts to the same CSR values
    for variant in (sparse.coo_matrix(X), sparse.lil_matrix(X), sparse.csc_array(X)):
        np.testing.assert_array_equal(a.predict_proba(variant), b.predict_proba(dense))


def test_sparse_regression_and_large_evaluation_chunks(rng):
    X = random_csr(rng, 2100, 12, density=0.1)  # more rows than one evaluation chunk (1024)
    Y = rng.normal(size=(2100, 2)).astype(np.float32)
    a = fastmlp.MLP([12, 8, 2], "tanh", "mse", seed=1)
    b = fastmlp.MLP([12, 8, 2], "tanh", "mse", seed=1)
    a.fit(X, Y, epochs=1, batch_size=256)
    b.fit(X.toarray(), Y, epochs=1, batch_size=256)
    np.testing.assert_array_equal(a.predict(X), b.predict(X.toarray()))
    assert a.evaluate(X, Y) == b.evaluate(X.toarray(), Y)


# ---- bad sparse input ----------------------------------------------------------------------------------


def bad_matrix(indices, indptr, shape=(3, 12)):
    """A CSR object scipy would refuse to build, handed to the model as if it were one."""
    return CsrRows(np.ones(len(indices), np.float32), np.asarray(indices, np.int32),
                   np.asarray(indptr, np.int64), shape)


def test_malformed_sparse_matrices_are_refused_by_name(rng):
    y = np.array([0, 1, 2])
    model = fastmlp.MLP([12, 4, 3], seed=0)
    X = random_csr(rng, 3, 12, density=0.5)
    X_bad_column = X.copy()
    X_bad_column.indices[-1] = 12
    with pytest.raises(ValueError, match=r"X.indices\[\d+\] = 12 is not a column in \[0, 12\)"):
        model.fit(X_bad_column, y)
    X_negative = X.copy()
    X_negative.indptr[1] = -1
    with pytest.raises(ValueError, match="indptr decreases|indptr must start"):
        model.fit(X_negative, y)
    with pytest.raises(ValueError, match=r"X must have 12 columns .* got shape \(3, 7\)"):
        model.fit(sparse.csr_matrix((3, 7), dtype=np.float32), y)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.fit(sparse.csr_matrix(np.array([[np.nan] + [0] * 11] * 3)), y)
    with pytest.raises(ValueError, match="X is empty"):
        model.fit(sparse.csr_matrix((0, 12), dtype=np.float32), y[:0])



def test_a_csr_like_object_whose_shape_is_not_numbers_is_refused_naming_the_types():
    # The core's cast error names both types in every build (pybind11's detailed errors stay
    # on where NDEBUG drops its GIL checks).
    class NotQuiteCsr:
        format = "csr"
        shape = ("three", 12)
        data = np.zeros(0, np.float32)
        indices = np.zeros(0, np.int32)
        indptr = np.zeros(4, np.int64)

    model = fastmlp.MLP([12, 4, 3], seed=0)
    model.train_step(np.zeros((3, 12), np.float32), np.array([0, 1, 2]))
    with pytest.raises(RuntimeError, match="Unable to cast Python instance of type <class 'str'> to C.. type"):
        model._network.predict(NotQuiteCsr())

def test_the_core_checks_every_row_it_reads(rng):
    """Past the Python checks (the core called directly), a malformed row is found where the
    batch is densified: a ValueError naming it, after the batches before it, no crash."""
    network = fastmlp.MLP([12, 4, 3], seed=0)._network
    y = np.array([0, 1, 2])
    cases = [
        (bad_matrix([0, 1, 40, 0], [0, 1, 2, 4]), r"row 2 has column index 40 \(indices\[2\]\), outside \[0, 12\)"),
        (bad_matrix([0, 1, -3, 0], [0, 1, 2, 4]), r"row 2 has column index -3"),
        (bad_matrix([0, 1, 2, 0], [0, 3, 2, 4]), r"row 0 spans indptr\[0\] = 0 to indptr\[1\] = 3|row 1 spans"),
        (bad_matrix([0, 1, 2, 0], [0, 1, 2, 1000000]), r"row 2 spans .* not a range within its 4 stored entries"),
    ]
    for X, message in cases:
        with pytest.raises(ValueError, match=message):
            network.train_batches(X, y, np.arange(3), 1, 0, 3)
        with pytest.raises(ValueError, match=message):
            network.predict(X)
        with pytest.raises(ValueError, match=message):
            network.evaluate(X, y)
        with pytest.raises(ValueError, match=message):
            network.train_step(X, y)
    steps = network.step
    with pytest.raises(ValueError, match="row 2"):
        network.train_batches(cases[0][0], y, np.arange(3), 1, 0, 3)
    assert network.step == steps + 2  # the two batches before the bad row were trained
    with pytest.raises(ValueError, match=r"X.indptr must have 4 entries"):
        network.predict(bad_matrix([0], [0, 1]))
    with pytest.raises(TypeError, match="must have dtype int32 or int64"):
        network.predict(CsrRows(np.ones(1, np.float32), np.zeros(1, np.int16), np.array([0, 1, 1, 1]), (3, 12)))
    with pytest.raises(TypeError, match="X.data must have dtype float32"):
        network.predict(CsrRows(np.ones(1), np.zeros(1, np.int32), np.array([0, 1, 1, 1]), (3, 12)))


def test_a_parallel_prediction_names_the_first_malformed_row(rng):
    """At 2 threads a large sparse prediction is split into chunks that threads take in turn;
    with malformed rows in two chunks, the error names the first of them, as at 1 thread."""
    model = fastmlp.MLP([784, 256, 10], seed=0)
    model.fitted = True
    X = random_csr(rng, 3000, 784, density=0.02)
    csr = CsrRows(X.data.copy(), X.indices.copy(), X.indptr.astype(np.int64), X.shape)
    for row in (1700, 2600):
        csr.indices[csr.indptr[row]] = 5000  # outside [0, 784)
    for n_threads in (2, 1):
        model.n_threads = n_threads
        with pytest.raises(ValueError, match=r"row 1700 has column index 5000"):
            model._network.predict(csr)
        assert model._network.last_call_threads == n_threads


# ---- memory and imports ----------------------------------------------------------------------------------


def run_python(code):
    environment = dict(os.environ, OMP_NUM_THREADS="2")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300, env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.skipif(os.environ.get("FASTMLP_SANITIZED") == "1", reason="ASan's shadow memory distorts RSS")
def test_a_large_sparse_matrix_trains_without_its_dense_form():
    """200,000 x 5,000 at 0.1%: 4 GB dense in float32, 12 MB as CSR. Training an epoch,
    predicting every row and the full-batch loss and gradient (lbfgs's call) must raise the
    process's peak memory by far less than the dense form."""
    out = run_python("""
        import resource
        import numpy as np, scipy.sparse as sparse, fastmlp
        rng = np.random.default_rng(0)
        n, d, nnz = 200_000, 5_000, 1_000_000
        X = sparse.csr_matrix((rng.normal(size=nnz).astype(np.float32),
                               (rng.integers(0, n, nnz), rng.integers(0, d, nnz))), shape=(n, d))
        y = rng.integers(0, 2, n)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
        model = fastmlp.MLP([d, 4, 2], seed=0)
        model.fit(X, y, epochs=1, batch_size=512)
        labels = model.predict(X)
        loss, gradient = model.loss_and_gradient(model.flat_parameters, X, y)
        assert np.isfinite(loss) and gradient.shape == (model.n_parameters,)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert labels.shape == (n,)
        print((after - before) // 1024)
    """)
    growth_mib = int(out.split()[-1])
    assert growth_mib < 400, f"peak memory grew by {growth_mib} MiB (the dense matrix is 3815 MiB)"


def test_fastmlp_does_not_import_scipy():
    out = run_python("""
        import sys, fastmlp
        print(sorted(name for name in sys.modules if name.split('.')[0] in ('scipy', 'sklearn')))
    """)
    assert out.strip() == "[]"


def test_sparse_training_gives_the_same_bits_at_any_thread_count(rng):
    X = random_csr(rng, 600, 300, density=0.05, duplicates=True)  # 256 x 300 batches: parallel gathers
    y = rng.integers(0, 3, 600)
    models = [fastmlp.MLP([300, 16, 3], seed=2, n_threads=threads) for threads in (1, 2)]
    for m in models:
        m.fit(X, y, epochs=2, batch_size=256, early_stopping=True, validation_split=0.25)
    np.testing.assert_array_equal(models[0].flat_parameters, models[1].flat_parameters)
    np.testing.assert_array_equal(models[0].predict_proba(X), models[1].predict_proba(X))
