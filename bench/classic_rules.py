"""Benchmark of the compiled classic rules: fastmlp.classic.Perceptron against scikit-learn's
Perceptron on Fashion-MNIST (T-shirt/top vs rest) at equal epochs, and Sanger's rule per epoch,
NumPy reference loop against the compiled one.

    python bench/classic_rules.py [--repetitions 5] [--sanger-rows 20000] [--quick]

Repetitions are interleaved (fastmlp, scikit-learn, fastmlp, ...) so that a noisy machine
slows both alike; medians are reported. Both perceptrons are single-threaded.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import fastmlp
from fastmlp import reference
from fastmlp.classic import HebbianLayer, Perceptron
from fastmlp.datasets import load_fashion_mnist

T_SHIRT = 0  # Fashion-MNIST class 0, "T-shirt/top"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5, help="timed runs of each (median)")
    parser.add_argument("--epochs", type=int, default=5, help="perceptron epochs, both libraries")
    parser.add_argument("--sanger-rows", type=int, default=20000)
    parser.add_argument("--sanger-outputs", type=int, default=8)
    parser.add_argument("--quick", action="store_true",
                        help="2000 training rows, one repetition: checks the script runs")
    args = parser.parse_args(argv)
    if args.repetitions < 1 or args.epochs < 1 or args.sanger_rows < 1 or args.sanger_outputs < 1:
        parser.error("--repetitions, --epochs, --sanger-rows and --sanger-outputs must be >= 1")
    return args


def machine():
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} hardware threads, Python {platform.python_version()}"


def timed(function, cpu_seconds=None):
    """Wall-clock seconds of function() and its result; its process CPU seconds are appended
    to cpu_seconds if given (on a shared machine, CPU time is the steadier figure)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    if cpu_seconds is not None:
        cpu_seconds.append(time.process_time() - start_cpu)
    return time.perf_counter() - start, result


def perceptron_section(X, y, X_test, y_test, epochs, repetitions):
    from sklearn.linear_model import Perceptron as SklearnPerceptron
    ours = lambda: Perceptron(lr=1.0, max_epochs=epochs, shuffle=True, seed=0).fit(X, y)
    theirs = lambda: SklearnPerceptron(max_iter=epochs, tol=None, shuffle=True, eta0=1.0,
                                       random_state=0).fit(X, y)
    seconds = {"fastmlp": [], "scikit-learn": []}
    cpu = {"fastmlp": [], "scikit-learn": []}
    for _ in range(repetitions):
        for name, fit in (("fastmlp", ours), ("scikit-learn", theirs)):
            elapsed, model = timed(fit, cpu[name])
            seconds[name].append(elapsed)
            if name == "fastmlp":
                ours_model = model
            else:
                theirs_model = model
    # The rule as fastmlp ran it before it was compiled, once: it takes seconds.
    rng, weights = np.random.default_rng(0), np.zeros(X.shape[1] + 1)
    X64 = X.astype(np.float64)
    start = time.perf_counter()
    for _ in range(epochs):
        weights, _ = reference.perceptron_epoch(X64, y, rng.permutation(len(y)), weights, 1.0)
    reference_seconds = time.perf_counter() - start
    assert np.allclose(weights, ours_model.weights_, rtol=1e-9, atol=1e-9), "compiled != reference"
    return {
        "median_seconds": {name: statistics.median(times) for name, times in seconds.items()},
        "median_cpu_seconds": {name: statistics.median(times) for name, times in cpu.items()},
        "seconds": seconds,
        "reference_seconds": reference_seconds,
        "test_accuracy": {"fastmlp": ours_model.score(X_test, y_test),
                          "scikit-learn": float(theirs_model.score(X_test, y_test))},
        "train_accuracy": {"fastmlp": ours_model.score(X, y),
                           "scikit-learn": float(theirs_model.score(X, y))},
    }


def sanger_section(X, n_outputs, repetitions):
    X = X - X.mean(axis=0)
    lr = 1e-4
    start_weights = np.random.default_rng(0).normal(0.0, 0.1, size=(X.shape[1], n_outputs))
    order = np.random.default_rng(1).permutation(X.shape[0])
    compiled, compiled_cpu = [], []
    for _ in range(repetitions):
        layer = HebbianLayer(X.shape[1], n_outputs, lr=lr, rule="sanger", seed=0)
        layer.weights_ = start_weights.copy()
        compiled.append(timed(lambda: layer.fit(X, epochs=1), compiled_cpu)[0])
    reference_runs = max(1, min(repetitions, 2))  # about a second each
    numpy_cpu = []
    numpy_loop = [timed(lambda: reference.sanger_epoch(X, order, start_weights, lr), numpy_cpu)[0]
                  for _ in range(reference_runs)]
    return {"rows": X.shape[0], "inputs": X.shape[1], "outputs": n_outputs,
            "median_seconds": {"NumPy reference": statistics.median(numpy_loop),
                               "compiled": statistics.median(compiled)},
            "median_cpu_seconds": {"NumPy reference": statistics.median(numpy_cpu),
                                   "compiled": statistics.median(compiled_cpu)}}


def report(results):
    p, s = results["perceptron"], results["sanger"]
    ours, theirs = p["median_seconds"]["fastmlp"], p["median_seconds"]["scikit-learn"]
    ours_cpu, theirs_cpu = p["median_cpu_seconds"]["fastmlp"], p["median_cpu_seconds"]["scikit-learn"]
    lines = [
        f"machine: {results['machine']}",
        f"versions: fastmlp {fastmlp.__version__}, numpy {np.__version__}, "
        f"scikit-learn {results['sklearn_version']}",
        "",
        f"## Perceptron, Fashion-MNIST T-shirt/top vs rest, {results['rows']} rows x 784, "
        f"{results['epochs']} epochs, shuffled, eta0 = lr = 1",
        "",
        "| | median fit (s) | median CPU (s) | test accuracy | train accuracy |",
        "|---|---|---|---|---|",
        f"| fastmlp.classic.Perceptron | {ours:.3f} | {ours_cpu:.3f} | "
        f"{p['test_accuracy']['fastmlp']:.4f} | {p['train_accuracy']['fastmlp']:.4f} |",
        f"| sklearn.linear_model.Perceptron | {theirs:.3f} | {theirs_cpu:.3f} | "
        f"{p['test_accuracy']['scikit-learn']:.4f} | {p['train_accuracy']['scikit-learn']:.4f} |",
        f"| NumPy reference loop (1 run) | {p['reference_seconds']:.3f} | | | |",
        "",
        f"fastmlp is {theirs / ours:.2f}x as fast as scikit-learn in wall-clock time, "
        f"{theirs_cpu / ours_cpu:.2f}x in CPU time ({results['repetitions']} interleaved "
        "repetitions)",
        "",
        f"## Sanger's rule, one epoch, {s['rows']} rows x {s['inputs']} inputs, "
        f"{s['outputs']} outputs",
        "",
        "| | median epoch (s) | median CPU (s) |",
        "|---|---|---|",
        f"| NumPy reference loop (before) | {s['median_seconds']['NumPy reference']:.3f} | "
        f"{s['median_cpu_seconds']['NumPy reference']:.3f} |",
        f"| compiled (HebbianLayer.fit) | {s['median_seconds']['compiled']:.3f} | "
        f"{s['median_cpu_seconds']['compiled']:.3f} |",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    import sklearn
    X, labels, X_test, labels_test = load_fashion_mnist()
    repetitions = 1 if args.quick else args.repetitions
    rows = 2000 if args.quick else X.shape[0]
    X, labels = X[:rows], labels[:rows]
    y, y_test = (labels == T_SHIRT).astype(np.int64), (labels_test == T_SHIRT).astype(np.int64)
    sanger_rows = min(args.sanger_rows, 500 if args.quick else X.shape[0])
    results = {
        "machine": machine(), "sklearn_version": sklearn.__version__, "rows": rows,
        "epochs": args.epochs, "repetitions": repetitions,
        "perceptron": perceptron_section(X, y, X_test, y_test, args.epochs, repetitions),
        "sanger": sanger_section(X[:sanger_rows].astype(np.float64), args.sanger_outputs,
                                 repetitions),
    }
    results["markdown"] = report(results)
    print(results["markdown"])
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
