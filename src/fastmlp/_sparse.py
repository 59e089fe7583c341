"""Sparse input for fastmlp.MLP: scipy.sparse matrices recognised without importing scipy,
checked once and handed to the C++ core as CSR arrays, which it densifies one batch at a time.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["CsrRows", "is_sparse", "as_csr_rows"]


def is_sparse(X: Any) -> bool:
    """Whether X is a scipy.sparse matrix or array. scipy is never imported here: an object of
    scipy's classes can only exist once the user's code has imported scipy.sparse."""
    sparse_module = sys.modules.get("scipy.sparse")
    return sparse_module is not None and bool(sparse_module.issparse(X))


class CsrRows:
    """The CSR arrays the core reads (``format``, ``shape``, ``data``, ``indices``, ``indptr``,
    the attributes of scipy's csr_matrix): data in the model's dtype, indices int32 or int64,
    row r's entries at ``indptr[r]:indptr[r + 1]``; duplicate columns count as their sum."""

    format = "csr"

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                 shape: Tuple[int, int]) -> None:
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (int(shape[0]), int(shape[1]))

    @property
    def nnz(self) -> int:
        """Stored entries (explicit zeros and duplicates included)."""
        return int(self.indptr[-1])

    def take_rows(self, rows: np.ndarray) -> "CsrRows":
        """The rows `rows` (in that order) as a new CSR matrix: a copy of their entries only."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.indptr[rows].astype(np.int64)
        lengths = self.indptr[rows + 1].astype(np.int64) - starts
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        positions = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return CsrRows(self.data[positions], self.indices[positions], indptr,
                       (rows.size, self.shape[1]))

    def toarray(self) -> np.ndarray:
        """The dense matrix (duplicates summed), for small matrices and tests."""
        out = np.zeros(self.shape, dtype=self.data.dtype)
        row_of_entry = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        np.add.at(out, (row_of_entry, self.indices[:self.nnz]), self.data[:self.nnz])
        return out

    def __repr__(self) -> str:
        return f"CsrRows(shape={self.shape}, nnz={self.nnz}, dtype={self.data.dtype})"


def _check_structure(name: str, indices: np.ndarray, indptr: np.ndarray, n_rows: int,
                     n_cols: int, nnz: int) -> None:
    """indptr a non-decreasing run from 0 within the stored entries; every column in range.
    (The core checks each row again where it reads it, so no input can make it read out of
    bounds; this check gives the error before training starts.)"""
    if indptr.ndim != 1 or indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}.indptr must have {n_rows + 1} entries (rows + 1), got shape {indptr.shape}")
    if indptr[0] != 0 or indptr[-1] > nnz:
        raise ValueError(f"{name}.indptr must start at 0 and end within the {nnz} stored entries, "
                         f"got indptr[0] = {indptr[0]}, indptr[-1] = {indptr[-1]}")
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        row = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(f"{name}.indptr decreases at row {row} ({indptr[row]} then {indptr[row + 1]})")
    used = indices[:indptr[-1]]
    if used.size and (used.min() < 0 or used.max() >= n_cols):
        position = int(np.flatnonzero((used < 0) | (used >= n_cols))[0])
        raise ValueError(f"{name}.indices[{position}] = {used[position]} is not a column in [0, {n_cols})")


def as_csr_rows(X: Any, name: str, dtype: np.dtype, width: Optional[int] = None) -> CsrRows:
    """A scipy.sparse X (any format; CSC and the others are converted to CSR once, which
    copies their entries) as checked CSR arrays: data converted to `dtype` when it is not
    that already (a copy of the stored values only, never of the dense matrix)."""
    if getattr(X, "ndim", 2) != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got a sparse array of shape {X.shape}")
    if X.format != "csr":
        X = X.tocsr()
    n_rows, n_cols = X.shape
    if n_rows == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}")
    if width is not None and n_cols != width:
        raise ValueError(f"{name} must have {width} columns (the model's input width), got shape {X.shape}")
    data = np.asarray(X.data)
    if data.dtype == object or data.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {data.dtype}")
    indices, indptr = np.asarray(X.indices), np.asarray(X.indptr)
    if indices.dtype not in (np.dtype(np.int32), np.dtype(np.int64)) or indptr.dtype.kind != "i":
        raise TypeError(f"{name} must have int32 or int64 indices, got {indices.dtype} and {indptr.dtype}")
    if indices.ndim != 1 or data.ndim != 1 or indices.shape != data.shape:
        raise ValueError(f"{name}.indices and {name}.data must be 1-D of one length, got shapes "
                         f"{indices.shape} and {data.shape}")
    _check_structure(name, indices, indptr, n_rows, n_cols, data.shape[0])
    data = np.ascontiguousarray(data, dtype=dtype)
    if not np.isfinite(data).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return CsrRows(data, np.ascontiguousarray(indices), np.ascontiguousarray(indptr), (n_rows, n_cols))
