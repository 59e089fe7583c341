"""Tests of fastmlp.datasets: the IDX reader against files written here with struct, the
(Fashion-)MNIST loaders, and properties of the generated problems."""
import gzip
import os
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastmlp import datasets

# The IDX type codes, written out independently of the module under test.
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array, type_code=None, shape=None):
    """Serialise an array as IDX: two zero bytes, type code, ndim, big-endian dims, data."""
    array = np.asarray(array)
    code = IDX_CODES[array.dtype.type] if type_code is None else type_code
    shape = array.shape if shape is None else shape
    header = struct.pack(">BBBB", 0, 0, code, len(shape))
    header += b"".join(struct.pack(">I", d) for d in shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, content, compress=False):
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(content)
    return str(path)


# --------------------------------------------------------------------------- load_idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("array", [
    np.arange(7, dtype=np.uint8),
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.linspace(-1.5, 2.5, 12, dtype=np.float32).reshape(3, 2, 2),
    np.array([-1e300, 0.5, 3.25], dtype=np.float64),
    np.array([[-300, 12], [7, 32000]], dtype=np.int16),
    np.array([-(2 ** 31), 2 ** 31 - 1], dtype=np.int32),
], ids=["u8-1d", "u8-3d", "f32-3d", "f64-1d", "i16-2d", "i32-1d"])
def test_idx_round_trip(tmp_path, array, compress):
    path = write(tmp_path / "data.idx", idx_bytes(array), compress)
    loaded = datasets.load_idx(path)
    assert loaded.dtype == array.dtype
    assert loaded.dtype.isnative
    assert loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       dtype=st.sampled_from(sorted(IDX_CODES, key=lambda t: t.__name__)),
       compress=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_idx_round_trip_any_shape(shape, dtype, compress, seed):
    raw = np.random.default_rng(seed).integers(0, 100, size=shape)
    array = raw.astype(dtype)
    with tempfile.TemporaryDirectory() as directory:
        path = write(os.path.join(directory, "a"), idx_bytes(array), compress)
        loaded = datasets.load_idx(path)
    assert loaded.shape == tuple(shape) and loaded.dtype == array.dtype
    np.testing.assert_array_equal(loaded, array)


def test_compression_detected_by_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    gzipped_without_suffix = write(tmp_path / "plain-name", idx_bytes(array), compress=True)
    raw_with_gz_suffix = write(tmp_path / "misleading.gz", idx_bytes(array), compress=False)
    np.testing.assert_array_equal(datasets.load_idx(gzipped_without_suffix), array)
    np.testing.assert_array_equal(datasets.load_idx(raw_with_gz_suffix), array)


def test_accepts_pathlike(tmp_path):
    path = tmp_path / "x.idx"
    write(path, idx_bytes(np.arange(3, dtype=np.uint8)))
    np.testing.assert_array_equal(datasets.load_idx(path), [0, 1, 2])


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_payload(tmp_path, compress):
    content = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    path = write(tmp_path / "short.idx", content[:-1], compress)
    with pytest.raises(ValueError, match=r"short\.idx.*truncated"):
        datasets.load_idx(path)


def test_trailing_data(tmp_path):
    path = write(tmp_path / "long.idx", idx_bytes(np.arange(5, dtype=np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match=r"long\.idx.*trailing"):
        datasets.load_idx(path)


@pytest.mark.parametrize("content, message", [
    (b"", "truncated"),
    (b"\x00\x00", "truncated"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "type code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 1), "header"),
], ids=["empty", "short-magic", "bad-magic", "bad-dtype", "zero-dims", "short-dims"])
def test_corrupted_header(tmp_path, content, message):
    path = write(tmp_path / "bad.idx", content)
    with pytest.raises(ValueError, match=message) as info:
        datasets.load_idx(path)
    assert "bad.idx" in str(info.value)


@pytest.mark.parametrize("compress", [False, True])
def test_absurd_header_is_rejected_before_reading(tmp_path, compress):
    # 3 dimensions of 2**32 - 1 float64s: about 6e29 bytes. Must fail fast with
    # ValueError, not MemoryError or a long read.
    content = idx_bytes(np.zeros(4, dtype=np.float64), shape=(2 ** 32 - 1,) * 3)
    path = write(tmp_path / "huge.idx", content, compress)
    with pytest.raises(ValueError, match=r"huge\.idx"):
        datasets.load_idx(path)


def test_corrupted_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = write(tmp_path / "cut.idx.gz", compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match=r"cut\.idx\.gz"):
        datasets.load_idx(path)
    damaged = bytearray(compressed)
    damaged[-8] ^= 0xFF  # the CRC32 of the payload
    path = write(tmp_path / "crc.idx.gz", bytes(damaged))
    with pytest.raises(ValueError, match=r"crc\.idx\.gz"):
        datasets.load_idx(path)


def test_missing_file_and_bad_path_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.idx"):
        datasets.load_idx(tmp_path / "nowhere.idx")
    with pytest.raises(TypeError, match="path"):
        datasets.load_idx(42)


# --------------------------------------------------------------------------- MNIST-format loaders

STANDARD_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def write_fake_mnist(directory, n_train=12, n_test=5, seed=0, compress_train=True):
    """A tiny data set in the standard layout: train files gzip'd, test files raw."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, size=(n_train, 28, 28)).astype(np.uint8),
              rng.integers(0, 10, size=n_train).astype(np.uint8),
              rng.integers(0, 256, size=(n_test, 28, 28)).astype(np.uint8),
              rng.integers(0, 10, size=n_test).astype(np.uint8)]
    for name, array in zip(STANDARD_NAMES, arrays):
        compress = compress_train and name.startswith("train")
        write(os.path.join(directory, name + (".gz" if compress else "")), idx_bytes(array),
              compress)
    return arrays


@pytest.mark.parametrize("loader", [datasets.load_fashion_mnist, datasets.load_mnist])
def test_loader_on_small_files(tmp_path, loader):
    images, labels, test_images, test_labels = write_fake_mnist(tmp_path)
    X_train, y_train, X_test, y_test = loader(tmp_path)
    assert X_train.shape == (12, 784) and X_test.shape == (5, 784)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    np.testing.assert_allclose(X_train, images.reshape(12, -1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(X_test, test_images.reshape(5, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, labels)
    np.testing.assert_array_equal(y_test, test_labels)


def test_find_mnist_files(tmp_path):
    assert datasets.find_mnist_files(tmp_path / "absent") is None
    assert datasets.find_mnist_files(tmp_path) is None
    write_fake_mnist(tmp_path)
    found = datasets.find_mnist_files(tmp_path)
    assert found == {
        "train_images": str(tmp_path / "train-images-idx3-ubyte.gz"),
        "train_labels": str(tmp_path / "train-labels-idx1-ubyte.gz"),
        "test_images": str(tmp_path / "t10k-images-idx3-ubyte"),
        "test_labels": str(tmp_path / "t10k-labels-idx1-ubyte"),
    }
    os.remove(found["test_labels"])
    assert datasets.find_mnist_files(tmp_path) is None


def test_missing_directory_message(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_fashion_mnist(missing)
    message = str(info.value)
    assert str(missing) in message and "data_dir" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_missing_file_message(tmp_path):
    write_fake_mnist(tmp_path)
    os.remove(tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_fashion_mnist(tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_wrong_image_shape_and_label_count(tmp_path):
    write_fake_mnist(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((5, 28, 27), np.uint8)))
    with pytest.raises(ValueError, match="28, 28"):
        datasets.load_mnist(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((6, 28, 28), np.uint8)))
    with pytest.raises(ValueError, match="6 labels"):
        datasets.load_mnist(tmp_path)


def test_labels_out_of_range(tmp_path):
    write_fake_mnist(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 2, 3, 10], np.uint8)))
    with pytest.raises(ValueError, match="0..9"):
        datasets.load_mnist(tmp_path)


FASHION_DIR = datasets.FASHION_MNIST_DIR


@pytest.mark.skipif(datasets.find_mnist_files(FASHION_DIR) is None,
                    reason=f"Fashion-MNIST not installed in {FASHION_DIR} "
                           "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    X_train, y_train, X_test, y_test = datasets.load_fashion_mnist()
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= X_train.min() and X_train.max() <= 1.0
    assert X_train.max() == 1.0  # some pixel is saturated: the scaling is by 255
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [1000] * 10)


# --------------------------------------------------------------------------- generated problems


@pytest.mark.parametrize("name, truth", [
    ("and", lambda a, b: a and b), ("or", lambda a, b: a or b),
    ("nand", lambda a, b: not (a and b)), ("nor", lambda a, b: not (a or b)),
    ("xor", lambda a, b: a != b), ("XOR", lambda a, b: a != b)])
def test_logic_gates(name, truth):
    X, y = datasets.logic_gate(name)
    assert X.shape == (4, 2) and X.dtype == np.float64
    assert y.shape == (4,) and y.dtype == np.int64
    assert {tuple(row) for row in X} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for (a, b), label in zip(X.astype(bool), y):
        assert label == int(truth(a, b))


def test_logic_gate_bad_names():
    with pytest.raises(ValueError, match="'xnor'"):
        datasets.logic_gate("xnor")
    with pytest.raises(TypeError, match="name"):
        datasets.logic_gate(3)


def test_make_xor_is_the_xor_gate():
    X, y = datasets.make_xor()
    np.testing.assert_array_equal(y, (X[:, 0] != X[:, 1]).astype(int))


def linear_least_squares_accuracy(X, y):
    """Accuracy of the best least-squares linear classifier (a linear-separability probe)."""
    A = np.column_stack([np.ones(len(X)), X])
    w = np.linalg.lstsq(A, 2.0 * y - 1.0, rcond=None)[0]
    return np.mean((A @ w > 0) == y)


def test_spirals_geometry():
    X, y = datasets.make_spirals(n_samples=301, noise=0.0, seed=3)
    assert X.shape == (301, 2) and y.shape == (301,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [150, 151])
    radius = np.hypot(X[:, 0], X[:, 1])
    assert np.all((radius >= 0.05 - 1e-12) & (radius <= 1.0 + 1e-12))
    # Without noise each point sits on its spiral: angle = 3.5 pi r (+ pi for class 1).
    expected_angle = 3.5 * np.pi * radius + np.pi * y
    np.testing.assert_allclose(np.cos(expected_angle), X[:, 0] / radius, atol=1e-9)
    np.testing.assert_allclose(np.sin(expected_angle), X[:, 1] / radius, atol=1e-9)
    # The point of the data set: no line separates the spirals well.
    assert linear_least_squares_accuracy(X, y) < 0.8


def test_spirals_seed_and_noise():
    a = datasets.make_spirals(100, 0.2, seed=1)
    b = datasets.make_spirals(100, 0.2, seed=1)
    c = datasets.make_spirals(100, 0.2, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_regression_noise_levels():
    X, y = datasets.make_regression(n_samples=40000, noise=0.3, seed=0)
    x = X[:, 0]
    assert X.shape == (40000, 1) and y.shape == (40000,)
    assert -3 <= x.min() and x.max() <= 3
    residual = y - (np.sin(2 * x) + 0.5 * x)
    assert abs(residual.mean()) < 0.01
    assert residual.std() == pytest.approx(0.3, rel=0.03)

    X, y = datasets.make_regression(n_samples=40000, noise=0.3, seed=0, heteroscedastic=True)
    x = X[:, 0]
    residual = y - (np.sin(2 * x) + 0.5 * x)
    # Within a narrow bin around x0 the std should be noise * (x0 + 3) / 3.
    for x0 in (-2.0, 0.0, 2.0):
        in_bin = np.abs(x - x0) < 0.1
        assert residual[in_bin].std() == pytest.approx(0.3 * (x0 + 3) / 3, rel=0.12)


def test_regression_without_noise_is_the_function():
    X, y = datasets.make_regression(n_samples=50, noise=0.0, seed=5)
    np.testing.assert_allclose(y, np.sin(2 * X[:, 0]) + 0.5 * X[:, 0])


def test_classification_is_learnable_not_trivial():
    X, y = datasets.make_classification(n_samples=3000, n_features=784, n_classes=10, seed=0)
    assert X.shape == (3000, 784) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [300] * 10)
    train, test = slice(0, 2000), slice(2000, None)
    centroids = np.stack([X[train][y[train] == k].mean(axis=0) for k in range(10)])
    distances = ((X[test][:, None, :] - centroids[None]) ** 2).sum(axis=2)
    accuracy = np.mean(distances.argmin(axis=1) == y[test])
    assert 0.5 < accuracy < 0.98, accuracy  # far above chance (0.1), yet not solved


def test_classification_is_seeded():
    a = datasets.make_classification(50, 3, 2, seed=7)
    b = datasets.make_classification(50, 3, 2, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_blob_images_shape_range_balance_and_seed():
    X, y = datasets.make_blob_images(n_samples=1005, seed=3)
    assert X.shape == (1005, 784) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.bincount(y).min() == 100 and np.bincount(y).max() == 101
    again, labels_again = datasets.make_blob_images(n_samples=1005, seed=3)
    np.testing.assert_array_equal(X, again)
    np.testing.assert_array_equal(y, labels_again)
    assert not np.array_equal(X, datasets.make_blob_images(n_samples=1005, seed=4)[0])


def test_blob_images_are_learnable_by_an_mlp_and_not_linearly_solved():
    """The stand-in for Fashion-MNIST must teach something: an MLP gets far above chance (0.1);
    nearest class mean (a linear rule) stays well below it, so the MLP's hidden layer matters."""
    import fastmlp

    X, y = datasets.make_blob_images(n_samples=4000, seed=0)
    train, test = slice(0, 3000), slice(3000, None)
    model = fastmlp.MLP([784, 128, 10], seed=0, optimizer=fastmlp.optim.Adam(lr=1e-3))
    model.fit(X[train], y[train], epochs=8, batch_size=64)
    mlp_accuracy = model.score(X[test], y[test])
    centroids = np.stack([X[train][y[train] == k].mean(axis=0) for k in range(10)])
    distances = ((X[test][:, None, :] - centroids[None]) ** 2).sum(axis=2)
    centroid_accuracy = np.mean(distances.argmin(axis=1) == y[test])
    assert mlp_accuracy > 0.6, mlp_accuracy
    assert centroid_accuracy < mlp_accuracy - 0.1, (centroid_accuracy, mlp_accuracy)


def test_fashion_mnist_or_blob_images(tmp_path):
    (X, y, X_test, y_test), description = datasets.load_fashion_mnist_or_blob_images(
        tmp_path, n_train=30, n_test=20, seed=1)
    assert X.shape == (30, 784) and X_test.shape == (20, 784) and len(y) == 30 and len(y_test) == 20
    generated, labels = datasets.make_blob_images(50, seed=1)
    np.testing.assert_array_equal(np.concatenate([X, X_test]), generated)
    np.testing.assert_array_equal(np.concatenate([y, y_test]), labels)
    assert "generated 28x28 blob images" in description and str(tmp_path) in description
    assert "apt-get install dataset-fashion-mnist" in description
    images = write_fake_mnist(tmp_path)[0]
    (X, _, _, _), description = datasets.load_fashion_mnist_or_blob_images(tmp_path, n_train=30)
    np.testing.assert_allclose(X, images.reshape(12, -1) / 255.0, rtol=1e-6)  # the files, whole
    assert description == f"Fashion-MNIST IDX files in {tmp_path}"


@pytest.mark.parametrize("call, error, parameter", [
    (lambda: datasets.make_spirals(n_samples=1), ValueError, "n_samples"),
    (lambda: datasets.make_spirals(n_samples=10.5), TypeError, "n_samples"),
    (lambda: datasets.make_spirals(noise=-0.1), ValueError, "noise"),
    (lambda: datasets.make_spirals(noise=float("nan")), ValueError, "noise"),
    (lambda: datasets.make_spirals(seed="zero"), TypeError, "seed"),
    (lambda: datasets.make_regression(n_samples=0), ValueError, "n_samples"),
    (lambda: datasets.make_regression(heteroscedastic="yes"), TypeError, "heteroscedastic"),
    (lambda: datasets.make_classification(n_classes=1), ValueError, "n_classes"),
    (lambda: datasets.make_classification(n_samples=3, n_classes=4), ValueError, "n_samples"),
    (lambda: datasets.make_classification(n_features=0), ValueError, "n_features"),
    (lambda: datasets.make_classification(seed=-1), ValueError, "seed"),
    (lambda: datasets.make_blob_images(n_samples=9), ValueError, "n_samples"),
    (lambda: datasets.make_blob_images(seed=1.5), TypeError, "seed"),
    (lambda: datasets.load_fashion_mnist_or_blob_images("/nonexistent", n_test=0), ValueError, "n_test"),
    (lambda: datasets.load_fashion_mnist_or_blob_images(3), TypeError, "data_dir"),
])
def test_generator_argument_errors(call, error, parameter):
    with pytest.raises(error, match=parameter):
        call()
