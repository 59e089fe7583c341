"""Scores of fastmlp.sklearn's MLPClassifier / MLPRegressor and scikit-learn's own MLP, side
by side at scikit-learn's default parameters, on scikit-learn's bundled data sets.

    python bench/sklearn_scores.py                 # 5 seeds, every data set (about a minute)
    python bench/sklearn_scores.py --seeds 2 --datasets iris diabetes --threads 2

Each seed draws one 75/25 split and seeds both estimators with it; both see the same
standardised X (and standardised y for regression, undone for scoring). Reported: the mean
(and min-max) test score over the seeds -- accuracy for classification, R^2 for regression --
and the median fit + predict time. The two libraries run interleaved per seed, with the same
thread count (--threads, default 1: these fits are small, and on a shared machine OpenMP
threads waiting for a busy core cost more than they save).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from sklearn import datasets
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import fastmlp

from fastmlp.sklearn import MLPClassifier, MLPRegressor

DATASETS: Dict[str, Tuple[str, Callable[[], Tuple[np.ndarray, np.ndarray]]]] = {
    "iris": ("classification", lambda: datasets.load_iris(return_X_y=True)),
    "digits": ("classification", lambda: datasets.load_digits(return_X_y=True)),
    "wine": ("classification", lambda: datasets.load_wine(return_X_y=True)),
    "breast_cancer": ("classification", lambda: datasets.load_breast_cancer(return_X_y=True)),
    "diabetes": ("regression", lambda: datasets.load_diabetes(return_X_y=True)),
    "friedman1": ("regression", lambda: datasets.make_friedman1(n_samples=1000, noise=1.0,
                                                                random_state=0)),
    "make_regression": ("regression", lambda: datasets.make_regression(
        n_samples=1000, n_features=20, n_informative=10, noise=10.0, random_state=0)),
}
LIBRARIES = ("fastmlp", "scikit-learn")


def make_estimator(library: str, task: str, seed: int):
    """The library's estimator at scikit-learn's defaults (but random_state), standardised."""
    if task == "classification":
        model = (MLPClassifier if library == "fastmlp" else SkClassifier)(random_state=seed)
        return make_pipeline(StandardScaler(), model)
    model = (MLPRegressor if library == "fastmlp" else SkRegressor)(random_state=seed)
    return TransformedTargetRegressor(make_pipeline(StandardScaler(), model),
                                      transformer=StandardScaler())


def run_one(library: str, task: str, split: Sequence[np.ndarray], seed: int) -> Tuple[float, float]:
    X_train, X_test, y_train, y_test = split
    estimator = make_estimator(library, task, seed)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X_train, y_train)
    score = float(estimator.score(X_test, y_test))
    return score, time.perf_counter() - started


def compare(names: Sequence[str], seeds: int) -> List[Dict[str, object]]:
    rows = []
    for name in names:
        task, load = DATASETS[name]
        X, y = load()
        scores: Dict[str, List[float]] = {library: [] for library in LIBRARIES}
        seconds: Dict[str, List[float]] = {library: [] for library in LIBRARIES}
        for seed in range(seeds):
            split = train_test_split(X, y, test_size=0.25, random_state=seed,
                                     stratify=y if task == "classification" else None)
            for library in LIBRARIES:
                score, elapsed = run_one(library, task, split, seed)
                scores[library].append(score)
                seconds[library].append(elapsed)
        rows.append({"dataset": name, "task": task, "shape": X.shape,
                     "scores": scores, "seconds": seconds})
    return rows


def markdown(rows: List[Dict[str, object]], seeds: int) -> str:
    lines = [f"Mean test score over {seeds} seeds (min-max); median fit+predict seconds.", "",
             "| data set | n x d | metric | fastmlp | scikit-learn | fastmlp s | scikit-learn s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        scores, seconds = row["scores"], row["seconds"]
        cells = []
        for library in LIBRARIES:
            values = scores[library]  # type: ignore[index]
            cells.append(f"{np.mean(values):.4f} ({min(values):.3f}-{max(values):.3f})")
        times = [f"{statistics.median(seconds[library]):.2f}" for library in LIBRARIES]  # type: ignore[index]
        metric = "accuracy" if row["task"] == "classification" else "R^2"
        n, d = row["shape"]  # type: ignore[misc]
        lines.append(f"| {row['dataset']} | {n} x {d} | {metric} | {cells[0]} | {cells[1]} | "
                     f"{times[0]} | {times[1]} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="splits/seeds per data set")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for both (fastmlp's OpenMP, scikit-learn's BLAS)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv=None) -> List[Dict[str, object]]:
    args = parse_args(argv)
    saved = fastmlp.get_num_threads()
    fastmlp.set_num_threads(args.threads)
    try:
        with threadpool_limits(limits=args.threads):
            rows = compare(args.datasets, args.seeds)
    finally:
        fastmlp.set_num_threads(saved)
    print(markdown(rows, args.seeds))
    return rows


if __name__ == "__main__":
    main()
