"""The fused training path (bias + activation in the forward GEMM's epilogue, the activation
derivative in the dX GEMM's, bias gradients summed while dz is packed) is taken by layers
without dropout or batch norm: it must keep the same bits at 1 and 2 threads and agree with
the NumPy reference step for step."""
import numpy as np
import pytest

import fastmlp
from fastmlp import reference


def blobs(n, features, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.standard_normal((n, features)) + 2.0 * np.eye(classes, features)[y]
    return X, y


def trained_params(threads, activation, dtype):
    previous = fastmlp.get_num_threads()
    fastmlp.set_num_threads(threads)
    try:
        X, y = blobs(n=500, features=70)
        # Widths that are not multiples of 6, 8 or 16, and layers big enough to run in parallel.
        model = fastmlp.MLP([70, 301, 133, 3], activation=activation, seed=2, dtype=dtype)
        model.fit(X, y, epochs=2, batch_size=130)
        return model.flat_parameters
    finally:
        fastmlp.set_num_threads(previous)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "leaky_relu"])
def test_fused_path_gives_the_same_bits_at_one_and_two_threads(activation):
    one = trained_params(1, activation, "float32")
    np.testing.assert_array_equal(one, trained_params(2, activation, "float32"))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "gelu"])
def test_fused_path_follows_the_reference_step_for_step(activation):
    X, y = blobs(n=96, features=21, seed=1)
    sizes = [21, 37, 19, 3]
    model = fastmlp.MLP(sizes, activation=activation, seed=4, dtype="float64",
                        optimizer=fastmlp.optim.Adam(lr=1e-2))
    ref = reference.ReferenceMLP(sizes, activation, optimizer="adam", optimizer_options={"lr": 1e-2},
                                 dtype=np.float64)
    ref.params[:] = model.flat_parameters
    for step in range(6):
        rows = slice(16 * step, 16 * step + 16)
        expected = ref.train_step(X[rows], y[rows])
        assert model.train_step(X[rows], y[rows]) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(model.flat_parameters, ref.params, rtol=1e-10, atol=1e-12)
