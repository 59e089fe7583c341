"""What issue 18's checks cost on the hot paths: fit (the fork gate around every step, one
evaluation-mode forward per run of batches), train_step (one such forward per call) and
predict (the finiteness check of every chunk's outputs), for two builds side by side.

    python bench/hardening_overhead.py --python /path/to/other/venv/bin/python [--repeats 7]

runs each measurement in this interpreter and in the other one, interleaved (A B A B ...),
and prints the median and min-max of each side; without --python only this build is timed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

# Run in a fresh interpreter per repetition: each prints a JSON dict of seconds.
MEASURE = r"""
import json, time
import numpy as np
import fastmlp

def best_of(call, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)

rng = np.random.default_rng(0)
X = rng.normal(size=(20000, 784)).astype(np.float32)
y = rng.integers(0, 10, size=20000)
model = fastmlp.MLP([784, 256, 10], seed=0)
model.fit(X[:1024], y[:1024], epochs=1)
tiny = fastmlp.MLP([8, 16, 3], seed=0)
X_tiny, y_tiny = X[:, :8].copy(), y % 3
tiny.fit(X_tiny[:64], y_tiny[:64], epochs=1)
result = {
    "fit 784-256-10, 20000 rows, batch 128 (1 epoch)": best_of(lambda: model.fit(X, y, epochs=1, batch_size=128), 3),
    "fit 8-16-3, 20000 rows, batch 32 (625 steps)": best_of(lambda: tiny.fit(X_tiny, y_tiny, epochs=1, batch_size=32), 5),
    "train_step 784-256-10, batch 128 (x50)": best_of(lambda: [model.train_step(X[:128], y[:128]) for _ in range(50)], 3),
    "predict_proba 784-256-10, 20000 rows": best_of(lambda: model.predict_proba(X), 5),
    "predict 784-256-10, 1 row (x2000)": best_of(lambda: [model.predict(X[:1]) for _ in range(2000)], 3),
}
print(json.dumps(result))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", help="the other build's interpreter (e.g. one built from main)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sides = {"this build": sys.executable}
    if args.python:
        sides["other build"] = args.python
    runs: dict = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side, python in sides.items():
            output = subprocess.run([python, "-c", MEASURE], capture_output=True, text=True, check=True)
            runs[side].append(json.loads(output.stdout))
    for name in runs["this build"][0]:
        cells = []
        for side in sides:
            values = [run[name] * 1e3 for run in runs[side]]
            cells.append(f"{side}: {statistics.median(values):8.2f} ms ({min(values):.2f}-{max(values):.2f})")
        print(f"{name:52s} " + "   ".join(cells))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
