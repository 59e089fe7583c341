"""fastmlp's speed, side by side with NumPy (OpenBLAS), PyTorch, onnxruntime and scikit-learn
on this machine.

    pip install ".[bench]"            # scikit-learn, matplotlib, threadpoolctl; torch is optional
    python bench/run.py               # the full run (a few minutes on 2 cores)
    python bench/run.py --quick       # a smoke run at small sizes (seconds)

Every comparison runs its contestants interleaved (A B C A B C ...), so a background load
hits them alike, and reports the median with the min-max range of the repetitions. Prints
markdown and writes bench/results/<time>.md, .json and .png (the directory is gitignored).

Run as a script, it drops OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from its environment before
NumPy loads OpenBLAS (--keep-openblas-env keeps them): forcing an older core type (Haswell)
makes current OpenBLAS run slower kernels than it picks itself, and the peers should run as
fast as they can. The header says which kernel OpenBLAS chose.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _datetime
import json
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# OpenBLAS reads these once, when NumPy (or torch) loads it, so they go before any import of
# NumPy, and only when this file runs as the benchmark: imported (tests/test_bench.py) it
# changes nothing, and the tests keep the environment they were given.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _drop_openblas_overrides(argv: Sequence[str]) -> Dict[str, str]:
    """The overrides removed from os.environ (name -> old value); none when NumPy is loaded
    already or --keep-openblas-env is given."""
    if "numpy" in sys.modules or "--keep-openblas-env" in argv:
        return {}
    return {name: os.environ.pop(name) for name in OPENBLAS_OVERRIDES if name in os.environ}


DROPPED_OPENBLAS_OVERRIDES = _drop_openblas_overrides(sys.argv[1:]) if __name__ == "__main__" else {}

import numpy as np  # noqa: E402  (after the environment is cleaned)

import fastmlp  # noqa: E402
from fastmlp import datasets, reference  # noqa: E402
from fastmlp._core import kernels  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# ---- optional peers -------------------------------------------------------------------------


def _optional(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


torch = _optional("torch")
sklearn = _optional("sklearn")
threadpoolctl = _optional("threadpoolctl")
onnxruntime = _optional("onnxruntime")
onnx = _optional("onnx")  # MLP.to_onnx needs it


@contextlib.contextmanager
def threads(n: int):
    """Every library at n threads: fastmlp, OpenBLAS under NumPy (threadpoolctl), torch."""
    previous = fastmlp.get_num_threads()
    fastmlp.set_num_threads(n)
    if torch is not None:
        torch_previous = torch.get_num_threads()
        torch.set_num_threads(n)
    limiter = threadpoolctl.threadpool_limits(n) if threadpoolctl else contextlib.nullcontext()
    try:
        with limiter:
            yield
    finally:
        fastmlp.set_num_threads(previous)
        if torch is not None:
            torch.set_num_threads(torch_previous)


# ---- timing ---------------------------------------------------------------------------------------


class Samples:
    """Seconds per call of one contestant over the repetitions."""

    def __init__(self) -> None:
        self.seconds: List[float] = []

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def cell(self, scale: float = 1.0, digits: int = 3) -> str:
        """'median (min-max)' in units of `scale` seconds."""
        lo, hi = min(self.seconds) / scale, max(self.seconds) / scale
        return f"{self.median / scale:.{digits}g} ({lo:.{digits}g}-{hi:.{digits}g})"


# Pause before each timed contestant. The thread pools of the peers keep spinning after a
# call (OpenBLAS's idle threads for about 2^28 cycles, ~70 ms here; libgomp and onnxruntime
# for shorter), and whoever runs next shares the cores with them: a 10k-row fastmlp predict
# started right after an onnxruntime run or a NumPy 2048^3 matmul took 63 and 71 ms, 27-30 ms
# after this pause (and 27 ms with nothing before it). The pause lets those threads go to
# sleep, so each contestant starts on the same quiet machine.
SETTLE_SECONDS = 0.15


def interleaved(contestants: Dict[str, Callable[[], None]], repetitions: int,
                calls: int = 1, warmup: int = 1, settle: float = SETTLE_SECONDS) -> Dict[str, Samples]:
    """Runs each contestant `calls` times per repetition, A B C A B C ..., and records the
    time per call, `settle` seconds after the previous contestant stopped. A warm-up round
    comes first and is not recorded."""
    for function in contestants.values():
        for _ in range(warmup):
            function()
    samples = {name: Samples() for name in contestants}
    for _ in range(repetitions):
        for name, function in contestants.items():
            time.sleep(settle)
            start = time.perf_counter()
            for _ in range(calls):
                function()
            samples[name].seconds.append((time.perf_counter() - start) / calls)
    return samples


def calls_for(function: Callable[[], None], budget_seconds: float) -> int:
    """How many calls fill about `budget_seconds` (at least 1)."""
    start = time.perf_counter()
    function()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(budget_seconds / once))


def ratio(peer: Samples, ours: Samples) -> str:
    return f"{peer.median / ours.median:.2f}x"


# ---- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fastmlp_isa() -> str:
    """The instruction set fastmlp's kernels (and its FMA peak loop) run: portable, avx2, avx512."""
    info = fastmlp.build_info()
    return str(info.get("isa", info["gemm_kernel"]))


def blas_kernels() -> str:
    """What threadpoolctl reports of the loaded BLAS and OpenMP libraries: library, the
    kernel (core type) it runs, threads."""
    if threadpoolctl is None:
        return "threadpoolctl not installed"
    described = []
    for info in threadpoolctl.threadpool_info():
        name = f"{info.get('internal_api')} {info.get('version') or ''}".strip()
        architecture = info.get("architecture")
        described.append(f"{name}" + (f" kernel {architecture}" if architecture else "")
                         + f" ({info.get('num_threads')} threads, {os.path.basename(info.get('filepath', ''))})")
    return "; ".join(described) or "none loaded"


def openblas_environment() -> str:
    kept = {name: os.environ[name] for name in OPENBLAS_OVERRIDES if name in os.environ}
    parts = []
    if DROPPED_OPENBLAS_OVERRIDES:
        parts.append("unset for this run (were " + ", ".join(f"{k}={v}" for k, v in DROPPED_OPENBLAS_OVERRIDES.items()) + ")")
    if kept:
        parts.append("in force: " + ", ".join(f"{k}={v}" for k, v in kept.items()))
    return "; ".join(parts) or "not set"


def fma_peak(n_threads: int, seconds: float) -> Optional[float]:
    """Measured fp32 FMA throughput in GFLOP/s: fastmlp's register loop, in the instruction set
    its kernels use (fastmlp_isa()), run on n_threads Python threads at once (the loop
    releases the GIL)."""
    if not fastmlp.build_info().get("cpu_avx2_fma"):
        return None
    results: List[float] = [0.0] * n_threads

    def run(index: int) -> None:
        # The best of several short runs: a background load only ever lowers the figure.
        results[index] = max(kernels.fma_peak_gflops(seconds / 5) for _ in range(5))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(results)


def header(args: argparse.Namespace, peaks: Dict[int, Optional[float]]) -> List[str]:
    versions = [f"fastmlp {fastmlp.__version__}", f"numpy {np.__version__}"]
    for module, name in ((torch, "torch"), (sklearn, "scikit-learn"), (onnxruntime, "onnxruntime")):
        versions.append(f"{name} {module.__version__}" if module else f"{name} (not installed)")
    info = fastmlp.build_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    peak_text = ", ".join(f"{n} thread{'s' if n > 1 else ''}: {p:.0f} GFLOP/s" if p else
                          f"{n} threads: n/a" for n, p in peaks.items())
    return [
        f"# fastmlp benchmark{' (--quick smoke run: sizes too small to mean anything)' if args.quick else ''}",
        "",
        f"- date: {_datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (a loaded machine means noisy figures)",
        f"- threads: {args.threads} (fastmlp, OpenBLAS via threadpoolctl, torch) unless a table says otherwise; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}",
        f"- versions: {', '.join(versions)}, Python {platform.python_version()}",
        f"- fastmlp build: {info.get('compiler')}, kernels {fastmlp_isa()} (CPU's widest: "
        f"{info.get('cpu_widest_isa', 'n/a')})",
        f"- measured fp32 FMA peak ({fastmlp_isa()} registers): {peak_text}",
        f"- NumPy/torch BLAS (threadpoolctl): {blas_kernels()}",
        f"- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: {openblas_environment()}",
        f"- repetitions: {args.repetitions}, interleaved, each after a {args.settle} s pause; cells are median (min-max)",
        "",
    ]


# ---- GEMM -----------------------------------------------------------------------------------------

# (label, M, K, N, transpose_a, transpose_b): c (M, N) = op(a) (M, K) @ op(b) (K, N).
GEMM_SHAPES = [
    ("2048^3", 2048, 2048, 2048, False, False),
    ("128x784x256 (forward)", 128, 784, 256, False, False),
    ("784x128x256 (dW = x^T dz)", 784, 128, 256, True, False),
    ("128x256x784 (dX = dz W^T)", 128, 256, 784, False, True),
    ("128x256x10 (output layer)", 128, 256, 10, False, False),
    ("1x784x256 (one sample)", 1, 784, 256, False, False),
]
QUICK_GEMM_SHAPES = [("64x96x80", 64, 96, 80, False, False), ("96x64x80 (a^T)", 96, 64, 80, True, False)]


def gemm_operands(M: int, K: int, N: int, transpose_a: bool, transpose_b: bool):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if transpose_a else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if transpose_b else (K, N), dtype=np.float32)
    return a, b


def bench_gemm(args: argparse.Namespace, peaks: Dict[int, Optional[float]]) -> Tuple[List[str], dict]:
    shapes = QUICK_GEMM_SHAPES if args.quick else GEMM_SHAPES
    lines = ["## GEMM, float32: GFLOP/s", "",
             "fastmlp `kernels.gemm` vs NumPy `@` (OpenBLAS) vs `torch.matmul`, transposes as views.",
             "Ratios are fastmlp's speed over the peer's (> 1: fastmlp faster).", ""]
    columns = ["shape", "threads", "fastmlp", "numpy", "fastmlp/numpy"]
    if torch is not None:
        columns += ["torch", "fastmlp/torch"]
    columns += ["fastmlp % of peak", "fastmlp time (us)"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    data = []
    for label, M, K, N, ta, tb in shapes:
        a, b = gemm_operands(M, K, N, ta, tb)
        a_op, b_op = (a.T if ta else a), (b.T if tb else b)
        out = np.empty((M, N), np.float32)
        contestants = {
            "fastmlp": lambda: kernels.gemm(a, b, ta, tb, out),
            "numpy": lambda: np.matmul(a_op, b_op, out=out),
        }
        if torch is not None:
            ta_t, tb_t, out_t = torch.from_numpy(a_op), torch.from_numpy(b_op), torch.from_numpy(out)
            contestants["torch"] = lambda: torch.matmul(ta_t, tb_t, out=out_t)
        flops = 2.0 * M * N * K
        for n in args.thread_counts:
            with threads(n):
                calls = calls_for(contestants["numpy"], 0.02 if args.quick else 0.1)
                samples = interleaved(contestants, args.repetitions, calls, settle=args.settle)
            gflops = {name: flops / s.median / 1e9 for name, s in samples.items()}
            row = [label, str(n), samples_gflops_cell(samples["fastmlp"], flops),
                   samples_gflops_cell(samples["numpy"], flops), ratio(samples["numpy"], samples["fastmlp"])]
            if torch is not None:
                row += [samples_gflops_cell(samples["torch"], flops), ratio(samples["torch"], samples["fastmlp"])]
            peak = peaks.get(n)
            row += [f"{100 * gflops['fastmlp'] / peak:.0f}%" if peak else "n/a",
                    f"{samples['fastmlp'].median * 1e6:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
            data.append({"shape": label, "threads": n, "gflops": gflops,
                         "seconds": {k: s.seconds for k, s in samples.items()}})
    return lines + [""], {"gemm": data}


def samples_gflops_cell(samples: Samples, flops: float) -> str:
    speeds = [flops / s / 1e9 for s in samples.seconds]
    return f"{statistics.median(speeds):.1f} ({min(speeds):.0f}-{max(speeds):.0f})"


# ---- training ---------------------------------------------------------------------------------

def load_data(quick: bool):
    """Fashion-MNIST's training set if installed, else random data of its shape (and always
    random rows for --quick, which must not depend on the dataset); (X, y, description)."""
    if not quick:
        try:
            X, y, _, _ = datasets.load_fashion_mnist()
            return X, y, f"Fashion-MNIST training set ({X.shape[0]} rows)"
        except (FileNotFoundError, OSError):
            pass
    rows = 1024 if quick else 60000
    rng = np.random.default_rng(0)
    X = rng.random((rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, rows).astype(np.int64)
    return X, y, f"random data of Fashion-MNIST's shape ({rows} rows)"


def epoch_flops(sizes: Sequence[int], rows: int) -> float:
    """Multiply-adds x 2 of an epoch: forward, dW everywhere, dX for every layer but the first."""
    per_row = 0
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        per_row += fan_in * fan_out * (2 if index == 0 else 3)
    return 2.0 * per_row * rows


def fastmlp_epoch(sizes, X, y, batch_size, lr):
    model = fastmlp.MLP(list(sizes), activation="relu", optimizer=fastmlp.optim.Adam(lr=lr), seed=0)
    return lambda: model.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)


def torch_epoch(sizes, X, y, batch_size, lr):
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(fan_in, fan_out))
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.randperm(X_t.shape[0], generator=generator)
        for start in range(0, X_t.shape[0], batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(X_t[index]), y_t[index])
            loss.backward()
            optimizer.step()
    return epoch


def sklearn_epoch(sizes, X, y, batch_size, lr):
    from sklearn.neural_network import MLPClassifier
    model = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), solver="adam", batch_size=batch_size,
                          alpha=0.0, learning_rate_init=lr, random_state=0)
    classes = np.arange(sizes[-1])

    def epoch():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.partial_fit(X, y, classes=classes)  # one pass over the data
    return epoch


def reference_epoch(sizes, X, y, batch_size, lr):
    model = reference.ReferenceMLP(sizes, "relu", optimizer="adam", optimizer_options={"lr": lr},
                                   dtype=np.float32)
    rng = np.random.default_rng(0)

    def epoch():
        order = rng.permutation(X.shape[0])
        for start in range(0, X.shape[0], batch_size):
            index = order[start:start + batch_size]
            model.train_step(X[index], y[index])
    return epoch


def training_table(title: str, sizes: Sequence[int], X, y, peers: Dict[str, Callable],
                   args: argparse.Namespace, peak: Optional[float]) -> Tuple[List[str], dict]:
    batch_size, lr = 128, 1e-3
    contestants = {"fastmlp": fastmlp_epoch(sizes, X, y, batch_size, lr)}
    contestants.update({name: make(sizes, X, y, batch_size, lr) for name, make in peers.items()})
    with threads(args.threads):
        samples = interleaved(contestants, args.repetitions, settle=args.settle)
    flops = epoch_flops(sizes, X.shape[0])
    ours = samples["fastmlp"]
    lines = [f"## {title}", "",
             f"{'-'.join(map(str, sizes))}, relu, softmax cross-entropy, Adam lr 1e-3, batch 128, float32, "
             f"{args.threads} threads; {X.shape[0]} rows per epoch, about {flops / 1e9:.1f} GFLOP.", "",
             "| implementation | seconds per epoch | fastmlp is faster by | GFLOP/s | % of FMA peak |",
             "|---|---|---|---|---|"]
    for name, s in samples.items():
        speed = flops / s.median / 1e9
        lines.append(f"| {name} | {s.cell()} | {'-' if name == 'fastmlp' else ratio(s, ours)} | "
                     f"{speed:.0f} | {f'{100 * speed / peak:.0f}%' if peak else 'n/a'} |")
    return lines + [""], {"sizes": list(sizes), "seconds": {k: s.seconds for k, s in samples.items()}}


def bench_training(args: argparse.Namespace, peaks: Dict[int, Optional[float]]) -> Tuple[List[str], dict]:
    X, y, description = load_data(args.quick)
    peak = peaks.get(args.threads)
    peers = {}
    if torch is not None:
        peers["torch eager"] = torch_epoch
    if sklearn is not None:
        peers["scikit-learn MLPClassifier"] = sklearn_epoch
    peers["NumPy reference"] = reference_epoch
    lines = [f"Training data: {description}.", ""]
    small, small_data = training_table("Training: one epoch, 784-256-10", [784, 256, 10], X, y,
                                       peers, args, peak)
    wide_sizes = [784, 128, 128, 10] if args.quick else [784, 1024, 1024, 10]
    wide_peers = {"torch eager": torch_epoch} if torch is not None else {}
    wide, wide_data = training_table(f"Training: one epoch, {'-'.join(map(str, wide_sizes))}", wide_sizes,
                                     X, y, wide_peers, args, peak)
    return lines + small + wide, {"training": [small_data, wide_data], "data": description}


def bench_thread_scaling(args: argparse.Namespace) -> Tuple[List[str], dict]:
    X, y, _ = load_data(args.quick)
    counts = sorted(set(args.thread_counts))
    epochs = {}
    for n in counts:
        epoch = fastmlp_epoch([784, 256, 10], X, y, 128, 1e-3)
        epochs[n] = epoch

    def at(n):
        def run():
            with threads(n):
                epochs[n]()
        return run

    samples = interleaved({f"{n} thread{'s' if n > 1 else ''}": at(n) for n in counts}, args.repetitions,
                          settle=args.settle)
    base = samples[next(iter(samples))]
    lines = ["## Thread scaling: fastmlp epoch 784-256-10", "",
             "| threads | seconds per epoch | speed-up over 1 thread |", "|---|---|---|"]
    for name, s in samples.items():
        lines.append(f"| {name.split()[0]} | {s.cell()} | {base.median / s.median:.2f}x |")
    return lines + [""], {"thread_scaling": {k: s.seconds for k, s in samples.items()}}


# ---- inference ----------------------------------------------------------------------------------

def onnx_session(model: "fastmlp.MLP", n_threads: int):
    """An onnxruntime session of the model's MLP.to_onnx graph on n_threads intra-op threads
    (one inter-op thread: the graph is a chain), or None without onnx/onnxruntime."""
    if onnxruntime is None or onnx is None:
        return None
    import tempfile
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.onnx")
        model.to_onnx(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def bench_inference(args: argparse.Namespace) -> Tuple[List[str], dict]:
    X, y, _ = load_data(args.quick)
    sizes = [784, 256, 10]
    model = fastmlp.MLP(sizes, activation="relu", seed=0)
    model.fit(X[:1024], y[:1024], epochs=1, batch_size=128)
    one, many = X[:1].copy(), X[: min(10000, X.shape[0])].copy()
    contestants_one = {"fastmlp": lambda: model.predict(one)}
    contestants_many = {"fastmlp": lambda: model.predict(many)}
    if torch is not None:
        net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
        with torch.no_grad():
            for layer, (w, b) in zip((net[0], net[2]), zip(model.weights, model.biases)):
                layer.weight.copy_(torch.from_numpy(w.T.copy()))
                layer.bias.copy_(torch.from_numpy(b))
        net.eval()

        def torch_predict(x):
            with torch.no_grad():
                return net(torch.from_numpy(x)).argmax(1).numpy()
        contestants_one["torch"] = lambda: torch_predict(one)
        contestants_many["torch"] = lambda: torch_predict(many)
        np.testing.assert_array_equal(torch_predict(many), model.predict(many))
    session = onnx_session(model, args.threads)
    if session is not None:
        def onnx_predict(x):
            return session.run(["label"], {"X": x})[0]
        contestants_one["onnxruntime"] = lambda: onnx_predict(one)
        contestants_many["onnxruntime"] = lambda: onnx_predict(many)
        agreement = float(np.mean(onnx_predict(many).reshape(-1) == model.predict(many)))
        assert agreement >= 0.999, f"onnxruntime agrees with fastmlp on only {agreement:.2%} of the rows"
    with threads(args.threads):
        one_samples = interleaved(contestants_one, args.repetitions,
                                  calls_for(contestants_one["fastmlp"], 0.05 if args.quick else 0.2),
                                  settle=args.settle)
        many_samples = interleaved(contestants_many, args.repetitions,
                                   calls_for(contestants_many["fastmlp"], 0.05 if args.quick else 0.2),
                                   settle=args.settle)
    lines = ["## Inference, 784-256-10 float32: `predict` (class labels) from Python", "",
             "torch: eager `nn.Sequential` under `no_grad`, argmax; onnxruntime: the `MLP.to_onnx` graph's "
             f"`label` output, intra_op_num_threads={args.threads}.", "",
             "| workload | implementation | time | fastmlp is faster by |", "|---|---|---|---|"]
    for label, samples, scale, unit in (("1 sample", one_samples, 1e-6, "us"),
                                        (f"{many.shape[0]} samples", many_samples, 1e-3, "ms")):
        for name, s in samples.items():
            faster = "-" if name == "fastmlp" else ratio(s, samples["fastmlp"])
            lines.append(f"| {label} | {name} | {s.cell(scale)} {unit} | {faster} |")
    throughput = many.shape[0] / many_samples["fastmlp"].median
    lines += ["", f"fastmlp throughput: {throughput:,.0f} samples/s.", ""]
    return lines, {"inference": {"one": {k: s.seconds for k, s in one_samples.items()},
                                 "many": {k: s.seconds for k, s in many_samples.items()}}}


# ---- plot and main ------------------------------------------------------------------------------

def plot(results: dict, path: str) -> Optional[str]:
    """A PNG: GEMM GFLOP/s per shape (top) and epoch seconds per implementation (bottom)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 9))
    rows = [r for r in results["gemm"] if r["threads"] == max(r2["threads"] for r2 in results["gemm"])]
    names = list(rows[0]["gflops"]) if rows else []
    width = 0.8 / max(1, len(names))
    for offset, name in enumerate(names):
        top.bar([i + offset * width for i in range(len(rows))], [r["gflops"][name] for r in rows],
                width, label=name)
    if results.get("peak"):
        top.axhline(results["peak"], color="black", linestyle="--", label=f"measured FMA peak ({results.get('peak_isa', '?')})")
    top.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(rows))])
    top.set_xticklabels([r["shape"] for r in rows], rotation=15, fontsize=8)
    top.set_ylabel("GFLOP/s (float32)")
    top.set_title(f"GEMM at {rows[0]['threads'] if rows else '?'} threads")
    top.legend(fontsize=8)
    table = results["training"][0]
    labels = list(table["seconds"])
    medians = [statistics.median(table["seconds"][k]) for k in labels]
    bottom.barh(labels, medians, color=["tab:blue"] + ["tab:gray"] * (len(labels) - 1))
    bottom.set_xlabel("seconds per epoch (median)")
    bottom.set_title(f"One training epoch, {'-'.join(map(str, table['sizes']))}, batch 128, Adam")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run at small sizes")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="threads for the training and inference tables (default 2)")
    parser.add_argument("--repetitions", type=int, default=None,
                        help="interleaved repetitions per comparison (default 5, --quick 2)")
    parser.add_argument("--only", choices=["gemm", "training", "inference", "threads"], action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--out", default=RESULTS_DIR, help="directory for the .md/.json/.png results")
    parser.add_argument("--keep-openblas-env", action="store_true",
                        help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for NumPy (by default a script "
                             "run unsets them before NumPy loads)")
    parser.add_argument("--settle", type=float, default=None,
                        help=f"seconds of pause before each timed contestant (default {SETTLE_SECONDS}, --quick 0)")
    args = parser.parse_args(argv)
    if args.settle is None:
        args.settle = 0.0 if args.quick else SETTLE_SECONDS
    if not args.settle >= 0:
        parser.error(f"--settle must be >= 0, got {args.settle}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.repetitions is None:
        args.repetitions = 2 if args.quick else 5
    if args.repetitions < 1:
        parser.error(f"--repetitions must be >= 1, got {args.repetitions}")
    args.thread_counts = sorted({1, args.threads})
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    sections = args.only or ["gemm", "training", "inference", "threads"]
    peak_seconds = 0.05 if args.quick else 0.5
    peaks = {n: fma_peak(n, peak_seconds) for n in args.thread_counts}
    header_lines = header(args, peaks)
    lines = list(header_lines)
    results: dict = {"peak": peaks.get(max(args.thread_counts)), "peaks": peaks, "peak_isa": fastmlp_isa(),
                     "blas": blas_kernels(), "openblas_environment": openblas_environment()}
    runners = {"gemm": lambda: bench_gemm(args, peaks), "training": lambda: bench_training(args, peaks),
               "inference": lambda: bench_inference(args), "threads": lambda: bench_thread_scaling(args)}
    for section in sections:
        section_lines, data = runners[section]()
        lines += section_lines
        results.update(data)
        print("\n".join(section_lines), flush=True)
    os.makedirs(args.out, exist_ok=True)
    stamp = _datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(args.out, stamp)
    png = plot(results, base + ".png") if "gemm" in results and "training" in results else None
    if png:
        lines += [f"![benchmark plot]({os.path.basename(png)})", ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines))
    with open(base + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print("\n".join(header_lines))
    print(f"results: {base}.md, .json{', .png' if png else ' (no plot: matplotlib not installed)'}")
    results["files"] = [base + ".md", base + ".json"] + ([png] if png else [])
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
