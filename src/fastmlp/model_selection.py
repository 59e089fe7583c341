"""k-fold cross-validation: ``fastmlp.cross_validate(make_model, X, y, k=5, seed=0)`` trains a
fresh model on each k-1 folds and scores it on the fold left out (stratified by class for
classification, so every fold keeps the class proportions)."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

__all__ = ["cross_validate", "k_fold_splits"]


def _check_k(k: Any, n_samples: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if k > n_samples:
        raise ValueError(f"k={k} folds need at least {k} samples, got {n_samples}")
    return int(k)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def k_fold_splits(y: Any, k: int = 5, seed: int = 0,
                  stratified: bool = False) -> List[Tuple[np.ndarray, np.ndarray]]:
    """k (train_indices, test_indices) pairs whose test parts partition range(len(y)).

    The rows are shuffled from `seed`; fold sizes differ by at most one. With `stratified`
    the rows are grouped by class (y holds labels) before being dealt round-robin into the
    folds, so each fold holds each class in (nearly) its overall proportion.
    """
    labels = np.asarray(y)
    if labels.ndim == 0:
        raise ValueError(f"y must be an array with one entry per sample, got {y!r}")
    n = labels.shape[0]
    k = _check_k(k, n)
    rng = np.random.default_rng(_check_seed(seed))
    if stratified:
        if labels.ndim != 1:
            raise ValueError(f"stratified folds need 1-D class labels, got shape {labels.shape}")
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() < k:
            warnings.warn(f"the smallest class has {counts.min()} members, fewer than k={k}: "
                          "some folds will not contain it", UserWarning, stacklevel=3)
        dealt = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in classes])
    else:
        dealt = rng.permutation(n)
    fold_of_row = np.empty(n, dtype=np.int64)
    fold_of_row[dealt] = np.arange(n) % k
    return [(np.flatnonzero(fold_of_row != fold), np.flatnonzero(fold_of_row == fold))
            for fold in range(k)]


def _is_classifier(model: Any, y: np.ndarray) -> bool:
    loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        return loss == "cross_entropy"
    return y.ndim == 1 and y.dtype.kind in "biu"


def cross_validate(make_model: Callable[[], Any], X: Any, y: Any, k: int = 5, seed: int = 0,
                   stratified: Any = None, **fit_options: Any) -> Dict[str, Any]:
    """Train and score one new model per fold.

    Parameters
    ----------
    make_model : callable with no arguments
        Returns a new, unfitted model (a fastmlp.MLP, or anything with ``fit(X, y, ...)`` and
        ``score(X, y)``), e.g. ``lambda: fastmlp.MLP([4, 16, 3], seed=0)``.
    X, y : arrays with one row / entry per sample.
    k : int
        Number of folds (>= 2).
    seed : int
        Shuffles the rows before they are dealt into folds.
    stratified : bool or None
        None (default): stratify when the model is a classifier (loss="cross_entropy", or
        integer labels for models without a ``loss``).
    **fit_options
        Passed to every ``fit`` (epochs, batch_size, ...).

    Returns
    -------
    dict with ``test_score`` and ``train_score`` (arrays of k scores: ``model.score``, the
    accuracy for classifiers, the negative mean loss for regression), ``histories`` (what
    each fit returned) and ``folds`` (the (train_indices, test_indices) pairs).
    """
    if not callable(make_model):
        raise TypeError(f"make_model must be a callable returning a new model, got {make_model!r}")
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got shapes {X.shape} "
                         f"and {y.shape}")
    first_model = make_model()
    for method in ("fit", "score"):
        if not callable(getattr(first_model, method, None)):
            raise TypeError(f"make_model() must return a model with fit and score, "
                            f"got {first_model!r}")
    if stratified is None:
        stratified = _is_classifier(first_model, y)
    folds = k_fold_splits(y, k, seed, stratified=bool(stratified))
    test_scores, train_scores, histories = [], [], []
    for fold, (train, test) in enumerate(folds):
        model = first_model if fold == 0 else make_model()
        if fold > 0 and model is first_model:
            raise ValueError("make_model must return a new model on every call")
        histories.append(model.fit(X[train], y[train], **fit_options))
        train_scores.append(model.score(X[train], y[train]))
        test_scores.append(model.score(X[test], y[test]))
    return {"test_score": np.array(test_scores), "train_score": np.array(train_scores),
            "histories": histories, "folds": folds}
