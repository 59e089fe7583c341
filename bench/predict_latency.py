"""Latency of MLP.predict on a few rows (issue 16: one-row bf16 predict of 784-256-10 in at
most 6 us): float32 and bfloat16, 1 row and 10 rows, at one thread, rounds interleaved.

    python bench/predict_latency.py                 # 20,000 calls per figure, 3 rounds
    python bench/predict_latency.py --calls 2000 --rounds 1

Each figure is the median and the minimum over every call of every round, in microseconds;
the load average is printed before and after (timings on a shared machine are noisy).
"""
import argparse
import os
import time
from typing import Callable, Dict, List

import numpy as np

import fastmlp

SIZES = [784, 256, 10]


def call_times(call: Callable[[], object], calls: int) -> np.ndarray:
    """Seconds of each of `calls` calls."""
    times = np.empty(calls)
    clock = time.perf_counter
    for k in range(calls):
        start = clock()
        call()
        times[k] = clock() - start
    return times


def load_average() -> str:
    """The 1, 5 and 15-minute load averages."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def fitted_model(compute_dtype, X: np.ndarray) -> fastmlp.MLP:
    """A one-thread 784-256-10 classifier after one training step (predict needs a fitted model)."""
    model = fastmlp.MLP(SIZES, n_threads=1, seed=0, compute_dtype=compute_dtype)
    model.train_step(X[:32], np.arange(32) % SIZES[-1])
    return model


def main(argv: List[str] = None) -> Dict[str, List[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per figure and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    X = np.random.default_rng(0).standard_normal((32, SIZES[0])).astype(np.float32)
    models = {"float32": fitted_model(None, X), "bfloat16": fitted_model("bfloat16", X)}
    inputs = {"1 row": X[:1].copy(), "10 rows": X[:10].copy()}
    times: Dict[str, list] = {f"{p} {r}": [] for p in models for r in inputs}
    print(f"{'-'.join(map(str, SIZES))}, kernels {fastmlp.build_info()['isa']}, "
          f"bfloat16 path {fastmlp.build_info()['bfloat16_path']}, 1 thread; "
          f"load average {load_average()}")
    for _ in range(args.rounds):
        for precision, model in models.items():
            for rows, x in inputs.items():
                times[f"{precision} {rows}"].append(call_times(lambda: model.predict(x), args.calls))
    figures = {}
    for key, runs in times.items():
        every = np.concatenate(runs) * 1e6
        figures[key] = [float(np.median(every)), float(every.min())]
        print(f"predict {key}: median {figures[key][0]:.2f} us, min {figures[key][1]:.2f} us")
    print(f"load average after: {load_average()}")
    return figures


if __name__ == "__main__":
    main()
