"""The vocabulary of fastmlp.MLP (activations, losses) and the checks of what users pass in:
arrays, labels, targets' widths, sample weights and scalar options, each refused with a clear
exception naming the parameter and the value."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from . import _core
from ._sparse import CsrRows, as_csr_rows, is_sparse

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "gelu")
LOSSES = ("cross_entropy", "mse", "bce", "gaussian_nll", "poisson")
CLASSIFICATION_LOSSES = ("cross_entropy", "bce")


def _unmasked(value: Any, name: str) -> np.ndarray:
    """np.asarray(value), refusing a masked array with masked entries: np.asarray keeps the
    values under the mask, which fastmlp would then read as data."""
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        count = int(np.count_nonzero(value.mask))
        raise ValueError(f"{name} is a masked array with {count} masked {'entry' if count == 1 else 'entries'}, "
                         f"whose values fastmlp would read as data: fill them ({name}.filled(value)) or drop "
                         "their rows")
    return np.asarray(value)


def _as_float_matrix(X: Any, name: str, dtype: np.dtype, width: Optional[int] = None) -> Any:
    """X as a C-contiguous (n, width) array of dtype, converted once; rejects what is not numeric.
    A scipy.sparse X becomes checked CSR arrays instead (fastmlp._sparse), never densified here."""
    if isinstance(X, CsrRows) or is_sparse(X):
        return X if isinstance(X, CsrRows) else as_csr_rows(X, name, dtype, width)
    array = _unmasked(X, name)
    if array.dtype == object or array.dtype.kind in "cUSVMm":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 1 and width == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {array.shape}")
    if width is not None and array.shape[1] != width:
        raise ValueError(f"{name} must have {width} columns (the model's input width), "
                         f"got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=dtype)
    if not _all_finite(array):
        raise ValueError(f"{name} contains NaN or infinity")
    return array


# Rows checked per block by _all_finite: about 16 MB of data.
_FINITE_CHECK_BYTES = 1 << 24


def _all_finite(array: np.ndarray) -> bool:
    """np.isfinite(array).all(): for a contiguous float32/float64 array the core's check
    (vectorised, threaded, no temporary: 6 ms against NumPy's 10 for Fashion-MNIST's 188 MB),
    else NumPy over blocks of rows, so that a large dataset (a memmap) is checked without a
    boolean temporary of its full size."""
    if array.dtype in (np.float32, np.float64) and array.flags.c_contiguous:
        return bool(_core.kernels.all_finite(array))
    row_bytes = max(1, array.itemsize * int(np.prod(array.shape[1:])))
    rows = max(1, _FINITE_CHECK_BYTES // row_bytes)
    return all(np.isfinite(array[start:start + rows]).all() for start in range(0, len(array), rows))


def _as_labels(y: Any, name: str, n_rows: int, n_classes: int) -> np.ndarray:
    labels = _unmasked(y, name)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels, got shape {labels.shape}")
    if labels.shape[0] != n_rows:
        raise ValueError(f"{name} has {labels.shape[0]} labels but X has {n_rows} rows")
    if labels.dtype.kind == "b" or labels.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integer class labels, got dtype {labels.dtype}")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if not np.all(labels == np.round(labels)):
            bad = labels[labels != np.round(labels)][0].item()
            raise ValueError(f"{name} must hold integer class labels, got {bad!r}")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise ValueError(f"{name} holds label {labels[bad][0].item()!r}, outside [0, {n_classes}) "
                         f"for a model with {n_classes} outputs")
    return np.ascontiguousarray(labels, dtype=np.int64)


def _as_sample_weight(sample_weight: Any, n_rows: int, dtype: np.dtype,
                      name: str = "sample_weight") -> Optional[np.ndarray]:
    """sample_weight as a C-contiguous (n_rows,) array of dtype, or None for none: finite,
    non-negative and not all zero (a scalar weighs every row alike)."""
    if sample_weight is None:
        return None
    weights = _unmasked(sample_weight, name)
    if weights.dtype == object or weights.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {weights.dtype}")
    if weights.ndim == 0:
        weights = np.full(n_rows, weights, dtype=dtype)
    if weights.ndim != 1 or weights.shape[0] != n_rows:
        raise ValueError(f"{name} must have one weight per row of X ({n_rows}), got shape {weights.shape}")
    converted = np.ascontiguousarray(weights, dtype=dtype)
    if not np.isfinite(converted).all():
        bad = int(np.flatnonzero(~np.isfinite(converted))[0])
        raise ValueError(f"{name}[{bad}] = {weights[bad].item()!r} is not finite (in {dtype.name})")
    if (converted < 0).any():
        bad = int(np.flatnonzero(converted < 0)[0])
        raise ValueError(f"{name}[{bad}] = {weights[bad].item()!r} is negative; weights must be >= 0")
    if not converted.any():
        raise ValueError(f"{name} is all zero (in {dtype.name}): no row would count")
    return converted


def _require_weight(what: str, weights: np.ndarray) -> None:
    if not weights.any():
        raise ValueError(f"{what} are all zero: no row would count")


def _take_rows(X: Any, rows: np.ndarray) -> Any:
    """X's rows `rows`, copied (dense or CSR)."""
    return X.take_rows(rows) if isinstance(X, CsrRows) else X[rows]


def _check_choice(name: str, value: Any, valid: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        resolved: Optional[np.dtype] = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


# The largest values the core's integer arguments hold (int64 counts, a uint64 seed, int thread
# counts capped as a model file's are): a larger Python int is refused naming its parameter.
_INT64_MAX = 2 ** 63 - 1
_UINT64_MAX = 2 ** 64 - 1


def _check_positive_int(name: str, value: Any, minimum: int = 1, maximum: int = _INT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value!r}")
    return int(value)


def _check_finite_in_dtype(name: str, value: float, dtype: np.dtype) -> None:
    """Refuse a number that is finite in Python but infinite once the core rounds it to dtype."""
    if abs(value) > float(np.finfo(dtype).max):
        raise ValueError(f"{name}={value!r} is infinite in {dtype.name}, the model's dtype "
                         f"(at most {float(np.finfo(dtype).max):.6g})")


def _check_fraction(name: str, value: Any, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not (0 <= value < 1) or (not allow_zero and value == 0):
        low = "[0" if allow_zero else "(0"
        raise ValueError(f"{name} must be in {low}, 1), got {value!r}")
    return float(value)
