"""fastmlp's default thread choice against n_threads=1, on an idle machine and with busy
processes competing for every core: is the default ever much slower than one thread?

    python bench/contention.py                # idle, then contended (about 2-3 minutes)
    python bench/contention.py --quick        # a smoke run at tiny sizes (seconds)
    python bench/contention.py --only contended --competitors 2

For each workload the same model runs interleaved with its default threads (n_threads=None:
fastmlp's rule picks the count from the call's size) and with n_threads=1 (A B A B ...).
Cells are medians (p90 for the per-call rows); "ratio" is default / n_threads=1, so > 1 means
the default was slower. The issue's target: contended ratio <= 1.3 everywhere, and the idle
epoch no slower than before. Competitors are separate Python processes, each a one-thread
NumPy matmul loop; each stops by itself at its deadline (or when this script exits).
"""
from __future__ import annotations

import argparse
import datetime as _datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import fastmlp
from fastmlp import datasets

WORKLOADS = ["predict1", "predict100", "iris", "small", "epoch"]
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TARGET_RATIO = 1.3

# One competitor: a single-threaded NumPy loop until its deadline, or until its parent is
# gone (a killed benchmark must not leave busy processes behind).
COMPETITOR_CODE = """
import os, sys, time
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
deadline, parent = time.monotonic() + float(sys.argv[1]), os.getppid()
a = np.random.default_rng(0).random((192, 192))
print("started", flush=True)
while time.monotonic() < deadline and os.getppid() == parent:
    for _ in range(20):
        a = a @ a
        a /= np.abs(a).max()
"""


class Competitors:
    """`count` busy processes for at most `seconds`, stopped on exit of the with block."""

    def __init__(self, count: int, seconds: float) -> None:
        self.count, self.seconds = count, seconds
        self.processes: List[subprocess.Popen] = []

    def __enter__(self) -> "Competitors":
        for _ in range(self.count):
            self.processes.append(subprocess.Popen(
                [sys.executable, "-c", COMPETITOR_CODE, str(self.seconds)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        for process in self.processes:  # wait until each one is actually computing
            process.stdout.readline()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def still_running(self) -> int:
        return sum(process.poll() is None for process in self.processes)


# ---- timing --------------------------------------------------------------------------------------


def interleaved_calls(run: Callable[[], None], model_of: Callable[[Optional[int]], None],
                      repetitions: int, warmup: int = 3) -> Dict[str, List[float]]:
    """Times run() once per repetition with the default threads, then once with n_threads=1,
    alternating; model_of(n) switches the workload's thread setting."""
    times: Dict[str, List[float]] = {"default": [], "n_threads=1": []}
    for _ in range(warmup):
        for n in (None, 1):
            model_of(n)
            run()
    for _ in range(repetitions):
        for label, n in (("default", None), ("n_threads=1", 1)):
            model_of(n)
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ---- workloads ---------------------------------------------------------------------------------


class Workload:
    """One thing a user does, timed per call at both thread settings."""

    def __init__(self, name: str, unit: str, repetitions: int, run: Callable[[], None],
                 set_threads: Callable[[Optional[int]], None], threads_used: Callable[[], int],
                 warmup: int = 3) -> None:
        self.name, self.unit, self.repetitions, self.warmup = name, unit, repetitions, warmup
        self.run, self.set_threads, self.threads_used = run, set_threads, threads_used

    def measure(self) -> dict:
        times = interleaved_calls(self.run, self.set_threads, self.repetitions, self.warmup)
        self.set_threads(None)
        self.run()
        chosen = self.threads_used()  # what the default picked for this call
        row = {"workload": self.name, "unit": self.unit, "default_threads": chosen, "seconds": times}
        for label, values in times.items():
            row[label] = {"median": statistics.median(values), "p90": percentile(values, 90)}
        row["ratio"] = row["default"]["median"] / row["n_threads=1"]["median"]
        row["ratio_p90"] = row["default"]["p90"] / row["n_threads=1"]["p90"]
        return row


def predict_workload(rows: int, repetitions: int, X: np.ndarray, y: np.ndarray) -> Workload:
    model = fastmlp.MLP([784, 256, 10], activation="relu", seed=0)
    model.fit(X[:512], y[:512], epochs=1, batch_size=128)
    batch = np.ascontiguousarray(X[:rows])

    def set_threads(n: Optional[int]) -> None:
        model.n_threads = n
    return Workload(f"predict, {rows} row{'s' if rows > 1 else ''} (784-256-10)", "us", repetitions,
                    lambda: model.predict(batch), set_threads,
                    lambda: model._network.last_call_threads)


def sklearn_fit_workload(name: str, X: np.ndarray, y: np.ndarray, repetitions: int,
                         max_iter: int) -> Workload:
    from fastmlp.sklearn import MLPClassifier

    estimator = MLPClassifier(random_state=0, max_iter=max_iter)

    def set_threads(n: Optional[int]) -> None:
        estimator.n_threads = n

    def fit() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at a small max_iter
            estimator.fit(X, y)
    return Workload(name, "ms", repetitions, fit, set_threads,
                    lambda: estimator._model._network.last_call_threads)


def epoch_workload(X: np.ndarray, y: np.ndarray, repetitions: int) -> Workload:
    model = fastmlp.MLP([784, 256, 10], activation="relu", optimizer=fastmlp.optim.Adam(lr=1e-3), seed=0)

    def set_threads(n: Optional[int]) -> None:
        model.n_threads = n
    return Workload(f"fit, one epoch 784-256-10 ({X.shape[0]} rows, batch 128)", "s", repetitions,
                    lambda: model.fit(X, y, epochs=1, batch_size=128, verbose=0), set_threads,
                    lambda: model._network.last_call_threads, warmup=1)


def workloads(args: argparse.Namespace) -> List[Workload]:
    X, y, description = load_data(args.quick)
    args.data_description = description
    scale = 0.1 if args.quick else 1.0
    rng = np.random.default_rng(0)
    X_small = rng.normal(size=(500, 20)).astype(np.float32)
    y_small = (X_small[:, :3].sum(axis=1) > 0).astype(np.int64) + (X_small[:, 3] > 1)
    from sklearn.datasets import load_iris
    X_iris, y_iris = load_iris(return_X_y=True)
    fit_repetitions, max_iter = max(2, int(9 * scale)), 10 if args.quick else 200
    makers = {
        "predict1": lambda: predict_workload(1, max(20, int(2000 * scale)), X, y),
        "predict100": lambda: predict_workload(100, max(20, int(600 * scale)), X, y),
        "iris": lambda: sklearn_fit_workload("fastmlp.sklearn.MLPClassifier.fit, iris (150x4, 100 hidden)",
                                             X_iris, y_iris, fit_repetitions, max_iter),
        "small": lambda: sklearn_fit_workload("fastmlp.sklearn.MLPClassifier.fit, 500x20 (100 hidden)",
                                              X_small, y_small, fit_repetitions, max_iter),
        "epoch": lambda: epoch_workload(X, y, 1 if args.quick else args.epoch_repetitions),
    }
    return [makers[name]() for name in args.workloads or WORKLOADS]


def load_data(quick: bool):
    """Fashion-MNIST's training set if installed (random rows of its shape for --quick)."""
    if not quick:
        try:
            X, y, _, _ = datasets.load_fashion_mnist()
            return X, y, f"Fashion-MNIST training set ({X.shape[0]} rows)"
        except (FileNotFoundError, OSError):
            pass
    rows = 1024 if quick else 60000
    rng = np.random.default_rng(0)
    return (rng.random((rows, 784), dtype=np.float32), rng.integers(0, 10, rows).astype(np.int64),
            f"random data of Fashion-MNIST's shape ({rows} rows)")


# ---- report ----------------------------------------------------------------------------------------

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(phase: str, rows: List[dict]) -> List[str]:
    lines = [f"## {phase}", "",
             "| workload | threads chosen by default | default | n_threads=1 | ratio (median) | ratio (p90) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        scale = UNITS[row["unit"]]

        def cell(label: str) -> str:
            stats = row[label]
            return f"{stats['median'] / scale:.3g} {row['unit']} (p90 {stats['p90'] / scale:.3g})"
        verdict = "" if phase.startswith("idle") else (" ok" if row["ratio"] <= TARGET_RATIO else " OVER")
        lines.append(f"| {row['workload']} | {row['default_threads']} | {cell('default')} | "
                     f"{cell('n_threads=1')} | {row['ratio']:.2f}x{verdict} | {row['ratio_p90']:.2f}x |")
    return lines + [""]


def header(args: argparse.Namespace) -> List[str]:
    info = fastmlp.build_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    wait = {name: os.environ.get(name, "(unset)") for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return [
        f"# fastmlp under contention{' (--quick smoke run)' if args.quick else ''}", "",
        f"- date: {_datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- fastmlp {fastmlp.__version__}: isa {info.get('isa', info.get('gemm_kernel'))}, "
        f"default threads {fastmlp.get_num_threads()}; user's wait settings: "
        + ", ".join(f"{k}={v}" for k, v in wait.items()) + " (else fastmlp's GOMP_SPINCOUNT=10000)",
        f"- contended phase: {args.competitors} competing processes (one-thread NumPy matmul loops)",
        f"- data: {args.data_description}",
        "- cells: median (p90) per call; ratio = default / n_threads=1 (> 1: the default is slower); "
        f"target: contended ratio <= {TARGET_RATIO}",
        "",
    ]


def run_phase(contended: bool, args: argparse.Namespace, loads: List[Workload]) -> List[dict]:
    if not contended:
        return [workload.measure() for workload in loads]
    with Competitors(args.competitors, args.max_competitor_seconds) as competitors:
        rows = []
        for workload in loads:
            rows.append(workload.measure())
            rows[-1]["competitors_running"] = competitors.still_running()
    args.competitor_pids = [process.pid for process in competitors.processes]
    return rows


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run at tiny sizes")
    parser.add_argument("--only", choices=["idle", "contended"], action="append",
                        help="run only this phase (repeatable)")
    parser.add_argument("--workload", dest="workloads", choices=WORKLOADS, action="append",
                        help="run only these workloads (repeatable; default: all)")
    parser.add_argument("--competitors", type=int, default=os.cpu_count() or 2,
                        help="busy processes in the contended phase (default: one per logical CPU)")
    parser.add_argument("--epoch-repetitions", type=int, default=3,
                        help="interleaved epochs per thread setting (default 3)")
    parser.add_argument("--max-competitor-seconds", type=float, default=None,
                        help="the competitors' own deadline (default 600, --quick 60)")
    parser.add_argument("--out", default=RESULTS_DIR, help="directory for the .md/.json results")
    args = parser.parse_args(argv)
    if args.competitors < 1:
        parser.error(f"--competitors must be >= 1, got {args.competitors}")
    if args.epoch_repetitions < 1:
        parser.error(f"--epoch-repetitions must be >= 1, got {args.epoch_repetitions}")
    if args.max_competitor_seconds is None:
        args.max_competitor_seconds = 60.0 if args.quick else 600.0
    if not args.max_competitor_seconds > 0:
        parser.error(f"--max-competitor-seconds must be > 0, got {args.max_competitor_seconds}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    phases = args.only or ["idle", "contended"]
    loads = workloads(args)
    lines = header(args)
    print("\n".join(lines), flush=True)
    results: dict = {"machine": cpu_model(), "cpus": os.cpu_count(), "competitors": args.competitors,
                     "default_threads": fastmlp.get_num_threads()}
    for phase in phases:
        title = "idle" if phase == "idle" else f"contended: {args.competitors} busy processes"
        rows = run_phase(phase == "contended", args, loads)
        results[phase] = rows
        if phase == "contended":
            results["competitor_pids"] = args.competitor_pids
        section = table(title, rows)
        lines += section
        print("\n".join(section), flush=True)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, "contention-" + _datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines))
    with open(base + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print(f"results: {base}.md, .json")
    results["files"] = [base + ".md", base + ".json"]
    return results


if __name__ == "__main__":
    main()
