"""Data for fastmlp: an IDX reader for (Fashion-)MNIST files, a generated stand-in for them
(blob images), and small seeded problems (logic gates, XOR, spirals, 1-D regression, Gaussian
clusters) for examples and tests."""
import gzip
import io
import os
import zlib
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
from numpy.typing import NDArray

PathLike = Union[str, "os.PathLike[str]"]
# (X_train, y_train, X_test, y_test): float32 images scaled to [0, 1], int64 labels.
Split = Tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]

__all__ = [
    "load_idx",
    "find_mnist_files",
    "load_fashion_mnist",
    "load_mnist",
    "make_blob_images",
    "load_fashion_mnist_or_blob_images",
    "logic_gate",
    "make_xor",
    "make_spirals",
    "make_regression",
    "make_classification",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist/"
MNIST_DIR = "/usr/share/datasets/mnist/"

# IDX type code -> big-endian NumPy dtype (the format stores every number big-endian).
_IDX_DTYPES: Dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data by more than about 1032:1, so a gzip'd file can never
# hold more payload than this many times its own size; used to reject absurd headers
# before reading anything.
_MAX_DEFLATE_RATIO = 1100
_READ_CHUNK = 1 << 20

# The four files of an MNIST-format data set, keyed by the role the loaders return them in.
_MNIST_FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_FASHION_HINT = (
    "the Debian package dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`) "
    "provides Fashion-MNIST in " + FASHION_MNIST_DIR
)


# --------------------------------------------------------------------------- IDX files


def _check_path(path: Any, name: str = "path") -> str:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}: {path!r}")
    return os.fsdecode(os.fspath(path))


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_exactly(stream: io.BufferedIOBase, n_bytes: int, path: str) -> bytes:
    """Read up to n_bytes + 1 bytes in bounded chunks (the extra byte reveals trailing data)."""
    chunks = []
    remaining = n_bytes + 1
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _parse_header(stream: io.BufferedIOBase, path: str) -> Tuple[np.dtype, Tuple[int, ...]]:
    """Return (dtype, shape) from an IDX header, checking the magic number and type code."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise ValueError(f"IDX file {path!r} is truncated: {len(magic)} bytes, "
                         "shorter than the 4-byte magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"IDX file {path!r} has a bad magic number {magic.hex()}: "
                         "the first two bytes must be zero")
    type_code, n_dims = magic[2], magic[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(f"IDX file {path!r} has an unknown data type code 0x{type_code:02X} "
                         f"(known: {known})")
    if n_dims == 0:
        raise ValueError(f"IDX file {path!r} declares 0 dimensions; at least 1 is needed")
    dims_bytes = stream.read(4 * n_dims)
    if len(dims_bytes) < 4 * n_dims:
        raise ValueError(f"IDX file {path!r} is truncated inside its header: it declares "
                         f"{n_dims} dimensions but holds only {len(dims_bytes)} of "
                         f"{4 * n_dims} dimension bytes")
    shape = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    return _IDX_DTYPES[type_code], shape


def load_idx(path: PathLike) -> NDArray[Any]:
    """Read an IDX file (the MNIST format), gzip-compressed or raw.

    Compression is detected from the gzip magic bytes, not from the file name.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.

    Returns
    -------
    numpy.ndarray
        An array with the shape given by the header and the header's data type, in
        native byte order (uint8, int8, int16, int32, float32 or float64).

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If the file is not a valid IDX file: bad magic number, unknown type code,
        zero dimensions, a header that promises more (or less) data than the file
        holds, or a corrupted gzip stream.
    """
    path = _check_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: path={path!r}")
    compressed = _is_gzip(path)
    file_size = os.path.getsize(path)
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            dtype, shape = _parse_header(stream, path)
            header_size = 4 + 4 * len(shape)
            n_payload = int(np.prod(shape, dtype=object)) * dtype.itemsize
            # Check the promised size against what the file could possibly hold before
            # reading, so a corrupted header cannot make us allocate terabytes.
            limit = (file_size * _MAX_DEFLATE_RATIO if compressed else file_size - header_size)
            if n_payload > limit:
                raise ValueError(
                    f"IDX file {path!r} is truncated or its header is corrupted: shape "
                    f"{shape} needs {n_payload} bytes of data but the file "
                    + (f"({file_size} bytes compressed) cannot hold that many"
                       if compressed else f"holds only {max(limit, 0)}"))
            payload = _read_exactly(stream, n_payload, path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        # gzip reports truncated or damaged streams in three different ways; present
        # all of them as one invalid-file error.
        raise ValueError(f"IDX file {path!r} is not a readable gzip stream: {error}") from error
    if len(payload) < n_payload:
        raise ValueError(f"IDX file {path!r} is truncated: shape {shape} needs {n_payload} "
                         f"bytes of data, found {len(payload)}")
    if len(payload) > n_payload:
        raise ValueError(f"IDX file {path!r} has trailing data after the {n_payload} bytes "
                         f"its header declares for shape {shape}")
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------- MNIST-format data sets


def _find_file(directory: str, base_name: str) -> Optional[str]:
    for candidate in (base_name, base_name + ".gz"):
        full_path = os.path.join(directory, candidate)
        if os.path.isfile(full_path):
            return full_path
    return None


def find_mnist_files(data_dir: PathLike) -> Optional[Dict[str, str]]:
    """Locate the four standard MNIST-format files in a directory.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Directory to look in. Each file may be raw or have a ``.gz`` suffix.

    Returns
    -------
    dict or None
        ``{"train_images", "train_labels", "test_images", "test_labels"} -> path`` when
        all four files are present, otherwise None.
    """
    data_dir = _check_path(data_dir, "data_dir")
    if not os.path.isdir(data_dir):
        return None
    found = {role: _find_file(data_dir, name) for role, name in _MNIST_FILE_NAMES.items()}
    paths = {role: path for role, path in found.items() if path is not None}
    return paths if len(paths) == len(found) else None


def _require_mnist_files(data_dir: PathLike, dataset_name: str) -> Dict[str, str]:
    data_dir = _check_path(data_dir, "data_dir")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{dataset_name} directory not found: data_dir={data_dir!r}; "
                                f"{_FASHION_HINT}")
    files = {}
    for role, name in _MNIST_FILE_NAMES.items():
        path = _find_file(data_dir, name)
        if path is None:
            raise FileNotFoundError(
                f"{dataset_name} file {name!r} (or {name + '.gz'!r}) not found in "
                f"data_dir={data_dir!r}; {_FASHION_HINT}")
        files[role] = path
    return files


def _images_and_labels(images_path: str, labels_path: str) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{images_path!r} should hold uint8 images of shape (N, 28, 28), "
                         f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels_path!r} should hold {images.shape[0]} labels (one per "
                         f"image in {images_path!r}), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{labels_path!r} holds labels outside 0..9 "
                         f"(min {labels.min()}, max {labels.max()})")
    X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return X, labels.astype(np.int64)


def _load_mnist_format(data_dir: PathLike, dataset_name: str) -> Split:
    files = _require_mnist_files(data_dir, dataset_name)
    X_train, y_train = _images_and_labels(files["train_images"], files["train_labels"])
    X_test, y_test = _images_and_labels(files["test_images"], files["test_labels"])
    return X_train, y_train, X_test, y_test


def load_fashion_mnist(data_dir: Optional[PathLike] = None) -> Split:
    """Load Fashion-MNIST from its four IDX files.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``).
        Defaults to ``/usr/share/datasets/fashion-mnist/``, where the Debian package
        ``dataset-fashion-mnist`` installs them.

    Returns
    -------
    X_train : ndarray of float32, shape (60000, 784), values in [0, 1]
    y_train : ndarray of int64, shape (60000,), values 0..9
    X_test : ndarray of float32, shape (10000, 784), values in [0, 1]
    y_test : ndarray of int64, shape (10000,), values 0..9

    Raises
    ------
    FileNotFoundError
        If the directory or one of the files is missing.
    ValueError
        If a file is not a valid IDX file or holds the wrong kind of array.
    """
    return _load_mnist_format(FASHION_MNIST_DIR if data_dir is None else data_dir,
                              "Fashion-MNIST")


def load_mnist(data_dir: Optional[PathLike] = None) -> Split:
    """Load MNIST (handwritten digits) from its four IDX files.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory of the files; default ``/usr/share/datasets/mnist/``.

    Returns
    -------
    X_train, y_train, X_test, y_test
        As :func:`load_fashion_mnist` returns them, with the same errors.
    """
    return _load_mnist_format(MNIST_DIR if data_dir is None else data_dir, "MNIST")


# --------------------------------------------------------------------------- a stand-in for them

# The ten class patterns are fixed (this seed), as a data set's classes are; `seed` only
# draws the samples.
_BLOB_PATTERN_SEED = 20261207
_BLOBS_PER_PATTERN = 4
_BLOB_MAX_SHIFT = 3       # pixels, each direction
_BLOB_MAX_BLEND = 0.5     # weight of another class's pattern mixed into a sample, at most
_BLOB_NOISE = 0.2         # standard deviation of the per-pixel Gaussian noise
_BLOB_CHUNK = 8192        # samples generated at a time (bounds the temporary memory)


def _blob_patterns() -> NDArray[np.float32]:
    """(10, 28, 28) patterns in [0, 1], each the sum of a few Gaussian blobs near the centre."""
    rng = np.random.default_rng(_BLOB_PATTERN_SEED)
    rows, columns = np.mgrid[0:28, 0:28]
    patterns = np.zeros((10, 28, 28))
    for pattern in patterns:
        for _ in range(_BLOBS_PER_PATTERN):
            centre_row, centre_column = rng.uniform(7, 21, size=2)
            width_rows, width_columns = rng.uniform(1.5, 4.5, size=2)
            pattern += rng.uniform(0.5, 1.0) * np.exp(-0.5 * (((rows - centre_row) / width_rows) ** 2
                                                             + ((columns - centre_column) / width_columns) ** 2))
    return np.clip(patterns, 0.0, 1.0).astype(np.float32)


def _shifted_patterns() -> NDArray[np.float32]:
    """(10, S, 784): every class pattern at every shift of up to _BLOB_MAX_SHIFT pixels."""
    shifts = range(-_BLOB_MAX_SHIFT, _BLOB_MAX_SHIFT + 1)
    return np.array([[np.roll(pattern, (down, right), axis=(0, 1)).reshape(-1)
                      for down in shifts for right in shifts] for pattern in _blob_patterns()])


def make_blob_images(n_samples: int = 1000,
                     seed: Optional[int] = None) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Generated 28x28 images of ten classes: a stand-in for Fashion-MNIST without its files.

    Each class is a fixed pattern of four Gaussian blobs (the same for every seed). A sample is
    its class's pattern shifted by up to 3 pixels each way, blended with another class's
    (shifted) pattern at a weight of up to 0.5, scaled by a contrast in [0.6, 1], plus
    Gaussian noise of standard deviation 0.2, clipped to [0, 1]. Shifts and blends make it a
    problem for a non-linear model: with 784-256-10 and Adam at lr 1e-3, 5,000 training images
    give about 0.80 test accuracy after 20 epochs (training accuracy 1.0: a generalisation
    gap to regularise), 60,000 give about 0.89 after 3 epochs; a linear model gets about 0.68
    from 5,000. Chance is 0.1.

    Parameters
    ----------
    n_samples : int, default 1000
        Number of images (>= 10); classes are as balanced as possible.
    seed : int or None
        Seed of the random generator that draws the samples.

    Returns
    -------
    X : ndarray of float32, shape (n_samples, 784), values in [0, 1]
    y : ndarray of int64, shape (n_samples,), values 0..9
    """
    n_samples = _check_int("n_samples", n_samples, 10)
    rng = _check_seed(seed)
    shifted = _shifted_patterns()
    n_shifts = shifted.shape[1]
    y = np.arange(n_samples, dtype=np.int64) % 10
    rng.shuffle(y)
    X = np.empty((n_samples, 784), dtype=np.float32)
    for start in range(0, n_samples, _BLOB_CHUNK):
        labels = y[start:start + _BLOB_CHUNK]
        n = len(labels)
        own = shifted[labels, rng.integers(n_shifts, size=n)]
        others = shifted[(labels + rng.integers(1, 10, size=n)) % 10, rng.integers(n_shifts, size=n)]
        blend = rng.uniform(0.0, _BLOB_MAX_BLEND, size=(n, 1)).astype(np.float32)
        contrast = rng.uniform(0.6, 1.0, size=(n, 1)).astype(np.float32)
        images = contrast * ((1 - blend) * own + blend * others)
        images += np.float32(_BLOB_NOISE) * rng.standard_normal(size=(n, 784), dtype=np.float32)
        X[start:start + n] = np.clip(images, 0.0, 1.0)
    return X, y


def load_fashion_mnist_or_blob_images(data_dir: Optional[PathLike] = None, n_train: int = 60000,
                                      n_test: int = 10000, seed: int = 0) -> Tuple[Split, str]:
    """Fashion-MNIST when its files are there, else :func:`make_blob_images`; and which it was.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        As :func:`load_fashion_mnist` (default ``/usr/share/datasets/fashion-mnist/``).
    n_train, n_test : int, default 60000 and 10000
        How many training and test images to generate when the files are absent (the real
        data set is returned whole).
    seed : int, default 0
        Seed of the generated images.

    Returns
    -------
    (X_train, y_train, X_test, y_test), description
        The arrays as :func:`load_fashion_mnist` returns them, and a sentence saying where
        they came from: it begins with "Fashion-MNIST" for the real data; for the generated
        images it says how to get the real ones.
    """
    directory = FASHION_MNIST_DIR if data_dir is None else _check_path(data_dir, "data_dir")
    if find_mnist_files(directory) is not None:
        split = load_fashion_mnist(directory)
        return split, f"Fashion-MNIST IDX files in {directory}"
    n_train = _check_int("n_train", n_train, 10)
    n_test = _check_int("n_test", n_test, 10)
    X, y = make_blob_images(n_train + n_test, seed=seed)
    split = (X[:n_train], y[:n_train], X[n_train:], y[n_train:])
    return split, (f"no Fashion-MNIST files in {directory}, so generated 28x28 blob images of "
                   f"10 classes (datasets.make_blob_images, seed {seed}; {_FASHION_HINT})")


# --------------------------------------------------------------------------- argument checks


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_nonnegative_float(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_seed(seed: Optional[int]) -> np.random.Generator:
    if seed is not None and (isinstance(seed, (bool, np.bool_))
                             or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be None or an int, got {type(seed).__name__}: {seed!r}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- small problems

_LOGIC_GATES = {
    "and": (0, 0, 0, 1),
    "or": (0, 1, 1, 1),
    "nand": (1, 1, 1, 0),
    "nor": (1, 0, 0, 0),
    "xor": (0, 1, 1, 0),
}


def logic_gate(name: str) -> Tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Truth table of a two-input logic gate.

    Parameters
    ----------
    name : {"and", "or", "nand", "nor", "xor"}
        The gate (case-insensitive).

    Returns
    -------
    X : ndarray of float64, shape (4, 2)
        The inputs (0, 0), (0, 1), (1, 0), (1, 1).
    y : ndarray of int64, shape (4,)
        The gate's output for each row of X.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}: {name!r}")
    if name.lower() not in _LOGIC_GATES:
        raise ValueError(f"name must be one of {sorted(_LOGIC_GATES)}, got {name!r}")
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array(_LOGIC_GATES[name.lower()], dtype=np.int64)
    return X, y


def make_xor() -> Tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The XOR truth table, ``logic_gate("xor")``: the classic problem that is not
    linearly separable.

    Returns
    -------
    X : ndarray of shape (4, 2), float64
    y : ndarray of shape (4,), int64
    """
    return logic_gate("xor")


def make_spirals(n_samples: int = 200, noise: float = 0.1,
                 seed: Optional[int] = None) -> Tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Two interleaved spirals in the plane, one per class.

    Each spiral turns 1.75 times around the origin with a radius growing linearly
    from 0 to 1; the second is the first rotated by 180 degrees. Gaussian noise of
    standard deviation `noise` is added to both coordinates.

    Parameters
    ----------
    n_samples : int, default 200
        Total number of points (>= 2); classes get n_samples // 2 and the rest.
    noise : float, default 0.1
        Standard deviation of the added noise (>= 0).
    seed : int or None
        Seed of the random generator.

    Returns
    -------
    X : ndarray of float64, shape (n_samples, 2)
    y : ndarray of int64, shape (n_samples,), values 0 and 1
    """
    n_samples = _check_int("n_samples", n_samples, 2)
    noise = _check_nonnegative_float("noise", noise)
    rng = _check_seed(seed)
    counts = (n_samples // 2, n_samples - n_samples // 2)
    X_parts, y_parts = [], []
    for label, count in enumerate(counts):
        radius = rng.uniform(0.05, 1.0, size=count)
        angle = radius * 1.75 * 2 * np.pi + label * np.pi
        points = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
        X_parts.append(points + rng.normal(0.0, noise, size=points.shape))
        y_parts.append(np.full(count, label, dtype=np.int64))
    order = rng.permutation(n_samples)
    return np.concatenate(X_parts)[order], np.concatenate(y_parts)[order]


def make_regression(n_samples: int = 200, noise: float = 0.1, seed: Optional[int] = None,
                    heteroscedastic: bool = False) -> Tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A 1-D noisy regression problem: ``y = sin(2 x) + 0.5 x + noise``.

    x is drawn uniformly from [-3, 3]. The noise is Gaussian with standard deviation
    `noise` everywhere, or, when `heteroscedastic`, ``noise * (x + 3) / 3`` (zero at
    x = -3, twice `noise` at x = 3), so a model that predicts a variance (Gaussian
    NLL) has something to learn.

    Parameters
    ----------
    n_samples : int, default 200
        Number of points (>= 1).
    noise : float, default 0.1
        Noise scale (>= 0).
    seed : int or None
        Seed of the random generator.
    heteroscedastic : bool, default False
        Whether the noise grows with x.

    Returns
    -------
    X : ndarray of float64, shape (n_samples, 1)
    y : ndarray of float64, shape (n_samples,)
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    noise = _check_nonnegative_float("noise", noise)
    if not isinstance(heteroscedastic, (bool, np.bool_)):
        raise TypeError(f"heteroscedastic must be a bool, got "
                        f"{type(heteroscedastic).__name__}: {heteroscedastic!r}")
    rng = _check_seed(seed)
    x = rng.uniform(-3.0, 3.0, size=n_samples)
    noise_std = noise * (x + 3.0) / 3.0 if heteroscedastic else np.full(n_samples, noise)
    y = np.sin(2.0 * x) + 0.5 * x + rng.normal(size=n_samples) * noise_std
    return x.reshape(-1, 1), y


def make_classification(n_samples: int = 1000, n_features: int = 20, n_classes: int = 2,
                        seed: Optional[int] = None,
                        class_sep: float = 3.0) -> Tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Gaussian clusters: one isotropic unit-variance cluster per class.

    Class centres are drawn from a normal distribution scaled by
    ``class_sep / sqrt(n_features)``, so two centres lie about ``class_sep * sqrt(2)``
    apart whatever the dimension: the classes overlap a little (the best possible
    accuracy is below 100% for the default class_sep), which keeps the problem
    learnable but not trivial. It stands in for Fashion-MNIST (784 features, 10
    classes) in tests that need separable clusters; :func:`make_blob_images` is the image-like
    stand-in the examples use.

    Parameters
    ----------
    n_samples : int, default 1000
        Total number of points (>= n_classes); classes are as balanced as possible.
    n_features : int, default 20
        Dimension of each point (>= 1).
    n_classes : int, default 2
        Number of classes (>= 2).
    seed : int or None
        Seed of the random generator.
    class_sep : float, default 3.0
        Typical distance between centres, in units of the cluster's standard deviation,
        divided by sqrt(2). Larger is easier.

    Returns
    -------
    X : ndarray of float64, shape (n_samples, n_features)
    y : ndarray of int64, shape (n_samples,), values 0..n_classes-1
    """
    n_classes = _check_int("n_classes", n_classes, 2)
    n_samples = _check_int("n_samples", n_samples, n_classes)
    n_features = _check_int("n_features", n_features, 1)
    class_sep = _check_nonnegative_float("class_sep", class_sep)
    rng = _check_seed(seed)
    centres = rng.normal(size=(n_classes, n_features)) * (class_sep / np.sqrt(n_features))
    y = np.arange(n_samples, dtype=np.int64) % n_classes
    rng.shuffle(y)
    X = centres[y] + rng.normal(size=(n_samples, n_features))
    return X, y
