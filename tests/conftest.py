"""Shared test helpers: per-dtype tolerances, random inputs and central finite differences."""
import numpy as np
import pytest

DTYPES = [np.float32, np.float64]

# Tolerances for a compiled kernel against the NumPy reference. float32 results differ by
# rounding order (GEMM sums, exp) only, so a few ulps times the reduction length suffices.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13),
}


def assert_close(actual, expected, dtype, scale=1.0):
    """assert_allclose with the dtype's tolerance, loosened by `scale` (e.g. reduction length)."""
    tol = TOLERANCES[np.dtype(dtype)]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"] * scale, atol=tol["atol"] * scale)


def numerical_gradient(loss_of, x, eps=1e-6):
    """d loss_of(x) / dx by central differences, one element at a time (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, flat_grad = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = float(loss_of(x))
        flat[i] = saved - eps
        minus = float(loss_of(x))
        flat[i] = saved
        flat_grad[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """Put fastmlp's thread count back after a test that changes it."""
    from fastmlp import _core

    saved = _core.get_num_threads()
    yield
    _core.set_num_threads(saved)
