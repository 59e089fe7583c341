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
import functools
import inspect
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


def measured_peak(loop: Callable[[float], float], n_threads: int, seconds: float) -> float:
    """GFLOP/s of a register-only peak loop of fastmlp._core.kernels run on n_threads Python
    threads at once (the loops release the GIL)."""
    results: List[float] = [0.0] * n_threads

    def run(index: int) -> None:
        # The best of several short runs: a background load only ever lowers the figure.
        results[index] = max(loop(seconds / 5) for _ in range(5))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(results)


def fma_peak(n_threads: int, seconds: float) -> Optional[float]:
    """Measured fp32 FMA throughput in GFLOP/s: fastmlp's register loop, in the instruction set
    its kernels use (fastmlp_isa()); None on a CPU without AVX2/FMA."""
    if not fastmlp.build_info().get("cpu_avx2_fma"):
        return None
    return measured_peak(kernels.fma_peak_gflops, n_threads, seconds)


def bf16_peak(n_threads: int, seconds: float) -> Optional[float]:
    """Measured bfloat16 throughput in GFLOP/s: VDPBF16PS on zmm registers, 4 flops per lane
    (kernels.bf16_peak_gflops); None on a CPU without AVX512_BF16 (the loop raises
    RuntimeError there) or a build without the loop."""
    if not hasattr(kernels, "bf16_peak_gflops"):
        return None
    try:
        kernels.bf16_peak_gflops(1e-3)
    except RuntimeError:
        return None
    return measured_peak(kernels.bf16_peak_gflops, n_threads, seconds)


def amx_peak(n_threads: int, seconds: float) -> Optional[float]:
    """Measured AMX bfloat16 throughput in GFLOP/s: TDPBF16PS from tiles loaded once
    (kernels.amx_bf16_peak_gflops); None where amx_bf16 is not available (CPU, OS or build)."""
    if not hasattr(kernels, "amx_bf16_peak_gflops") or not kernels.cpu_supports_isa("amx_bf16"):
        return None
    return measured_peak(kernels.amx_bf16_peak_gflops, n_threads, seconds)


def measure_peaks(thread_counts: Sequence[int], seconds: float) -> Dict[str, Dict[int, Optional[float]]]:
    """Each engine's measured peak (GFLOP/s) per thread count: {"float32": {n: ...},
    "bfloat16": {n: ...} (VDPBF16PS), "amx": {n: ...}}; each figure is set against the peak of
    the engine it ran on (bf16_engine)."""
    return {"float32": {n: fma_peak(n, seconds) for n in thread_counts},
            "bfloat16": {n: bf16_peak(n, seconds) for n in thread_counts},
            "amx": {n: amx_peak(n, seconds) for n in thread_counts}}


# The engines a bfloat16 product runs on: (label, key of its peak in measure_peaks).
ENGINE_AMX, ENGINE_VDPBF16PS, ENGINE_EMULATED = ("AMX", "amx"), ("VDPBF16PS", "bfloat16"), \
    ("float32 FMA (emulated)", "float32")


def bf16_engine(contestant: str, N: Optional[int] = None) -> Tuple[str, str]:
    """The engine of a bf16 contestant: fastmlp's from its bfloat16_path (products of at most 16
    columns, N, are emulated except under AMX, which takes every width); torch's (oneDNN) AMX on
    a CPU that has it, else VDPBF16PS."""
    if contestant.startswith("torch"):
        return ENGINE_AMX if amx_bf16() else ENGINE_VDPBF16PS
    path = kernels.bfloat16_path() if hasattr(kernels, "bfloat16_path") else "emulated"
    if N is not None and N <= 16 and path != "amx_bf16":
        return ENGINE_EMULATED
    return {"amx_bf16": ENGINE_AMX, "avx512_bf16": ENGINE_VDPBF16PS}.get(path, ENGINE_EMULATED)


# A bfloat16 contestant of fastmlp where the build has no bfloat16 path yet.
NO_BF16 = "n/a (this build has no bfloat16 path)"


def has_bf16_gemm() -> bool:
    return hasattr(kernels, "gemm_bfloat16")


def has_bf16_model() -> bool:
    return "compute_dtype" in inspect.signature(fastmlp.MLP).parameters


def percent_of(gflops: float, peak: Optional[float]) -> str:
    return f"{100 * gflops / peak:.0f}%" if peak else "n/a"


def amx_bf16() -> bool:
    """Whether the CPU has AMX-BF16 tiles (Linux's flag): oneDNN (torch's bf16 matmuls) may use
    them, and their throughput is far above VDPBF16PS's, which the bf16 peak measures."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        return False


def peak_text(peaks: Dict[int, Optional[float]]) -> str:
    return ", ".join(f"{n} thread{'s' if n > 1 else ''}: {p:.0f} GFLOP/s" if p else
                     f"{n} thread{'s' if n > 1 else ''}: n/a" for n, p in peaks.items())


def header(args: argparse.Namespace, peaks: Dict[str, Dict[int, Optional[float]]]) -> List[str]:
    versions = [f"fastmlp {fastmlp.__version__}", f"numpy {np.__version__}"]
    for module, name in ((torch, "torch"), (sklearn, "scikit-learn"), (onnxruntime, "onnxruntime")):
        versions.append(f"{name} {module.__version__}" if module else f"{name} (not installed)")
    info = fastmlp.build_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
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
        f"- measured fp32 FMA peak ({fastmlp_isa()} registers): {peak_text(peaks['float32'])}",
        f"- measured bf16 peak (VDPBF16PS on zmm, 4 flops per lane): "
        + (peak_text(peaks["bfloat16"]) if any(peaks["bfloat16"].values()) else "n/a (no AVX512_BF16)"),
        f"- measured AMX bf16 peak (TDPBF16PS from loaded tiles, 16,384 flops per instruction): "
        + (peak_text(peaks["amx"]) if any(peaks["amx"].values()) else "n/a (no AMX-BF16 here)")
        + ("; torch's bf16 (oneDNN) runs on AMX on this CPU" if amx_bf16() else ""),
        f"- fastmlp bf16 products wider than 16 columns run on: "
        f"{bf16_engine('fastmlp bf16')[0]}; each bf16 figure is a % of its engine's peak",
        f"- fastmlp bfloat16 path: {'yes' if has_bf16_gemm() and has_bf16_model() else NO_BF16}",
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


def gemm_contestants(a, b, transpose_a: bool, transpose_b: bool) -> Dict[str, Callable[[], None]]:
    """The GEMM contestants on one shape, float32 and bfloat16 side by side (one interleaved
    group): fastmlp, NumPy, torch in float32; fastmlp's bf16 GEMM (float32 in and out, bf16
    products summed in float32) and torch.matmul on bf16 tensors where they exist."""
    a_op, b_op = (a.T if transpose_a else a), (b.T if transpose_b else b)
    out = np.empty((a_op.shape[0], b_op.shape[1]), np.float32)
    contestants = {
        "fastmlp": lambda: kernels.gemm(a, b, transpose_a, transpose_b, out),
        "numpy": lambda: np.matmul(a_op, b_op, out=out),
    }
    if torch is not None:
        ta_t, tb_t, out_t = torch.from_numpy(a_op), torch.from_numpy(b_op), torch.from_numpy(out)
        contestants["torch"] = lambda: torch.matmul(ta_t, tb_t, out=out_t)
    if has_bf16_gemm():
        contestants["fastmlp bf16"] = lambda: kernels.gemm_bfloat16(a, b, transpose_a, transpose_b)
    if hasattr(kernels, "pack_bfloat16_b"):
        # b packed once outside the timing, as a bf16 model's weights for prediction (and as
        # torch's bf16 tensors are converted once below).
        packed = kernels.pack_bfloat16_b(b, transpose_b)
        contestants["fastmlp bf16 packed b"] = lambda: kernels.gemm_bfloat16_packed(a, packed, transpose_a)
    if torch is not None:
        # Converted once, outside the timing; the transposes stay views, as in float32.
        a_bf16, b_bf16 = (torch.from_numpy(x).to(torch.bfloat16) for x in (a, b))
        a_bf16, b_bf16 = (a_bf16.T if transpose_a else a_bf16), (b_bf16.T if transpose_b else b_bf16)
        out_bf16 = torch.empty(out.shape, dtype=torch.bfloat16)
        contestants["torch bf16"] = lambda: torch.matmul(a_bf16, b_bf16, out=out_bf16)
    return contestants


def bench_gemm(args: argparse.Namespace, peaks: Dict[str, Dict[int, Optional[float]]]) -> Tuple[List[str], dict]:
    shapes = QUICK_GEMM_SHAPES if args.quick else GEMM_SHAPES
    columns = ["shape", "threads", "fastmlp", "numpy", "fastmlp/numpy"]
    if torch is not None:
        columns += ["torch", "fastmlp/torch"]
    columns += ["fastmlp % of peak", "fastmlp time (us)"]
    lines = ["## GEMM, float32: GFLOP/s", "",
             "fastmlp `kernels.gemm` vs NumPy `@` (OpenBLAS) vs `torch.matmul`, transposes as views.",
             "Ratios are fastmlp's speed over the peer's (> 1: fastmlp faster).", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    bf16_columns = ["shape", "threads", "engine", "fastmlp bf16", "fastmlp bf16/float32", "fastmlp bf16 packed b"]
    if torch is not None:
        bf16_columns += ["torch bf16 (AMX)" if amx_bf16() else "torch bf16", "fastmlp bf16/torch bf16",
                         "packed b/torch bf16"]
    bf16_columns += ["fastmlp bf16 % of engine peak", "packed b % of engine peak", "fastmlp bf16 time (us)",
                     "packed b time (us)"]
    bf16_lines = ["## GEMM, bfloat16 operands: GFLOP/s", "",
                  "fastmlp `kernels.gemm_bfloat16` (float32 a and b, rounded to bf16 as they are packed, "
                  "products summed in float32, float32 out), and `kernels.gemm_bfloat16_packed` with b "
                  "packed once outside the timing (`pack_bfloat16_b`, as a bf16 model's prediction packs "
                  "its weights), vs `torch.matmul` on bf16 tensors (converted once; bf16 out), timed in "
                  "the same interleaved rounds as the float32 table. \"engine\" is what fastmlp's product "
                  "ran on; its percentages are of that engine's measured peak (AMX, VDPBF16PS, or the "
                  "float32 FMA for the emulation)." + ("" if has_bf16_gemm() else f" fastmlp bf16: {NO_BF16}."),
                  "", "| " + " | ".join(bf16_columns) + " |", "|" + "---|" * len(bf16_columns)]
    data = []
    for label, M, K, N, ta, tb in shapes:
        a, b = gemm_operands(M, K, N, ta, tb)
        contestants = gemm_contestants(a, b, ta, tb)
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
            row += [percent_of(gflops["fastmlp"], peaks["float32"].get(n)),
                    f"{samples['fastmlp'].median * 1e6:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
            bf16_lines.append("| " + " | ".join(bf16_gemm_row(label, n, N, samples, flops, peaks)) + " |")
            data.append({"shape": label, "threads": n, "gflops": gflops,
                         "seconds": {k: s.seconds for k, s in samples.items()}})
    return lines + [""] + bf16_lines + [""], {"gemm": data}


def bf16_gemm_row(label: str, n: int, N: int, samples: Dict[str, Samples], flops: float,
                  peaks: Dict[str, Dict[int, Optional[float]]]) -> List[str]:
    """One row of the bf16 GEMM table (fastmlp bf16, raw and with b packed once, against its
    float32 self and torch bf16; percentages of the peak of the engine it ran on)."""
    ours, packed = samples.get("fastmlp bf16"), samples.get("fastmlp bf16 packed b")
    engine, peak_key = bf16_engine("fastmlp bf16", N)
    peak = peaks.get(peak_key, {}).get(n)
    row = [label, str(n), engine]
    row += ([samples_gflops_cell(ours, flops), ratio(samples["fastmlp"], ours)] if ours else [NO_BF16, "n/a"])
    row += [samples_gflops_cell(packed, flops) if packed else "n/a"]
    if "torch bf16" in samples:
        theirs = samples["torch bf16"]
        row += [samples_gflops_cell(theirs, flops), ratio(theirs, ours) if ours else "n/a",
                ratio(theirs, packed) if packed else "n/a"]
    for s in (ours, packed):
        row.append(percent_of(flops / s.median / 1e9, peak) if s else "n/a")
    row += [f"{s.median * 1e6:.1f}" if s else "n/a" for s in (ours, packed)]
    return row


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


def fastmlp_epoch(sizes, X, y, batch_size, lr, compute_dtype: str = "float32"):
    options = {"compute_dtype": compute_dtype} if compute_dtype != "float32" else {}
    model = fastmlp.MLP(list(sizes), activation="relu", optimizer=fastmlp.optim.Adam(lr=lr), seed=0, **options)
    return lambda: model.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)


def torch_epoch(sizes, X, y, batch_size, lr, autocast: bool = False, compile: bool = False):
    """One epoch of torch's MLP: eager float32, or under bf16 autocast (oneDNN's bf16 kernels,
    float32 weights and Adam, as fastmlp's compute_dtype="bfloat16"), or torch.compile'd."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(fan_in, fan_out))
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    forward = torch.compile(model) if compile else model
    loss_fn = torch.nn.CrossEntropyLoss()
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(0)
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def epoch():
        order = torch.randperm(X_t.shape[0], generator=generator)
        for start in range(0, X_t.shape[0], batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad()
            with precision:
                loss = loss_fn(forward(X_t[index]), y_t[index])
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


# A training contestant: (make(sizes, X, y, batch_size, lr) -> one epoch, or None where this
# build lacks it; the precision of its GEMMs, whose peak its GFLOP/s are set against).
Contestant = Tuple[Optional[Callable], str]


def training_contestants(args: argparse.Namespace, wide: bool) -> Tuple[Dict[str, Contestant], List[str]]:
    """fastmlp float32 and bf16, torch eager float32 and bf16 autocast, torch.compile of both
    (unless --no-torch-compile or --quick), and on the small network scikit-learn and the NumPy
    reference. fastmlp bf16 without a bfloat16 path in this build has no maker (its row says
    so); the notes say what was left out."""
    contestants: Dict[str, Contestant] = {
        "fastmlp": (fastmlp_epoch, "float32"),
        "fastmlp bf16": (functools.partial(fastmlp_epoch, compute_dtype="bfloat16") if has_bf16_model() else None,
                         "bfloat16"),
    }
    notes = []
    if torch is not None:
        contestants["torch eager"] = (torch_epoch, "float32")
        contestants["torch bf16 autocast"] = (functools.partial(torch_epoch, autocast=True), "bfloat16")
        if args.torch_compile:
            contestants["torch.compile"] = (functools.partial(torch_epoch, compile=True), "float32")
            contestants["torch.compile bf16 autocast"] = (
                functools.partial(torch_epoch, autocast=True, compile=True), "bfloat16")
        else:
            notes.append("torch.compile: not run (--quick or --no-torch-compile).")
    if not wide:
        if sklearn is not None:
            contestants["scikit-learn MLPClassifier"] = (sklearn_epoch, "float32")
        contestants["NumPy reference"] = (reference_epoch, "float32")
    return contestants, notes


def first_epoch_or_failure(name: str, epoch: Callable[[], None]) -> Tuple[Optional[Callable], str]:
    """Runs one epoch untimed (torch.compile compiles then): (epoch, a note on the first epoch's
    time) or (None, why it failed) -- a compiler that fails here costs its row only."""
    start = time.perf_counter()
    try:
        epoch()
    except Exception as error:  # noqa: BLE001 (torch.compile's failures have many types)
        return None, f"{name}: failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    return epoch, f"{name}: first epoch (compilation included) {time.perf_counter() - start:.1f} s"


def training_table(title: str, sizes: Sequence[int], X, y, contestants: Dict[str, Contestant],
                   notes: List[str], args: argparse.Namespace,
                   peaks: Dict[str, Optional[float]]) -> Tuple[List[str], dict]:
    batch_size, lr = 128, 1e-3
    epochs: Dict[str, Callable[[], None]] = {}
    missing: Dict[str, str] = {}
    for name, (make, _) in contestants.items():
        if make is None:
            missing[name] = NO_BF16
            continue
        epoch = make(sizes, X, y, batch_size, lr)
        if name.startswith("torch.compile"):
            epoch, note = first_epoch_or_failure(name, epoch)
            notes = notes + [note]
            if epoch is None:
                missing[name] = "failed: see the notes"
                continue
        epochs[name] = epoch
    with threads(args.threads):
        samples = interleaved(epochs, args.repetitions, settle=args.settle)
    flops = epoch_flops(sizes, X.shape[0])
    ours = samples["fastmlp"]
    lines = [f"## {title}", "",
             f"{'-'.join(map(str, sizes))}, relu, softmax cross-entropy, Adam lr 1e-3, batch 128, "
             f"{args.threads} threads; {X.shape[0]} rows per epoch, about {flops / 1e9:.1f} GFLOP. "
             "bf16 rows: float32 weights and optimizer, bf16 GEMM operands (fastmlp "
             "compute_dtype=\"bfloat16\"; torch autocast); % of the peak of the engine their wide "
             "products ran on (in brackets; fastmlp's output layer, 10 columns, is emulated on the "
             "float32 FMA except under AMX, which takes it too).", "",
             "| implementation | precision | seconds per epoch | fastmlp float32 is faster by | GFLOP/s | % of own peak |",
             "|---|---|---|---|---|---|"]
    for name, (_, precision) in contestants.items():
        if name in missing:
            lines.append(f"| {name} | {precision} | {missing[name]} | n/a | n/a | n/a |")
            continue
        s = samples[name]
        speed = flops / s.median / 1e9
        engine, peak_key = bf16_engine(name) if precision == "bfloat16" else ("", precision)
        shown = f"{precision} ({engine})" if engine else precision
        lines.append(f"| {name} | {shown} | {s.cell()} | {'-' if name == 'fastmlp' else ratio(s, ours)} | "
                     f"{speed:.0f} | {percent_of(speed, peaks[peak_key])} |")
    lines += [""] + bf16_training_summary(samples) + [f"- {note}" for note in notes]
    return lines + [""], {"sizes": list(sizes), "seconds": {k: s.seconds for k, s in samples.items()},
                          "missing": missing}


def bf16_training_summary(samples: Dict[str, Samples]) -> List[str]:
    """The ratios issue 16's targets are stated in, where both sides ran."""
    pairs = [("fastmlp bf16", "fastmlp", "fastmlp bf16 epoch / fastmlp float32 epoch"),
             ("fastmlp bf16", "torch bf16 autocast", "fastmlp bf16 epoch / torch bf16 autocast epoch"),
             ("fastmlp bf16", "torch.compile bf16 autocast", "fastmlp bf16 epoch / torch.compile bf16 autocast epoch"),
             ("torch bf16 autocast", "torch eager", "torch bf16 autocast epoch / torch float32 epoch")]
    return [f"- {text}: {samples[a].median / samples[b].median:.2f}" for a, b, text in pairs
            if a in samples and b in samples]


def bench_training(args: argparse.Namespace, peaks: Dict[str, Dict[int, Optional[float]]]) -> Tuple[List[str], dict]:
    X, y, description = load_data(args.quick)
    own_peaks = {precision: by_threads.get(args.threads) for precision, by_threads in peaks.items()}
    lines = [f"Training data: {description}.", ""]
    small_sizes = [784, 256, 10]
    wide_sizes = [784, 128, 128, 10] if args.quick else [784, 1024, 1024, 10]
    tables, data = [], []
    for sizes, wide in ((small_sizes, False), (wide_sizes, True)):
        contestants, notes = training_contestants(args, wide)
        table, table_data = training_table(f"Training: one epoch, {'-'.join(map(str, sizes))}", sizes, X, y,
                                           contestants, notes, args, own_peaks)
        tables += table
        data.append(table_data)
    return lines + tables, {"training": data, "data": description}


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
    if has_bf16_model():
        # Trained as the float32 model is; its own weights, so no agreement is asserted.
        model_bf16 = fastmlp.MLP(sizes, activation="relu", seed=0, compute_dtype="bfloat16")
        model_bf16.fit(X[:1024], y[:1024], epochs=1, batch_size=128)
        contestants_one["fastmlp bf16"] = lambda: model_bf16.predict(one)
        contestants_many["fastmlp bf16"] = lambda: model_bf16.predict(many)
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
        def torch_bf16_predict(x):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return net(torch.from_numpy(x)).argmax(1).numpy()
        contestants_one["torch"] = lambda: torch_predict(one)
        contestants_many["torch"] = lambda: torch_predict(many)
        contestants_one["torch bf16 autocast"] = lambda: torch_bf16_predict(one)
        contestants_many["torch bf16 autocast"] = lambda: torch_bf16_predict(many)
        np.testing.assert_array_equal(torch_predict(many), model.predict(many))
    session = onnx_session(model, args.threads)
    if session is not None:
        def onnx_predict(x):
            return session.run(["label"], {"X": x})[0]
        contestants_one["onnxruntime"] = lambda: onnx_predict(one)
        contestants_many["onnxruntime"] = lambda: onnx_predict(many)
        agreement = float(np.mean(onnx_predict(many).reshape(-1) == model.predict(many)))
        assert agreement >= 0.999, f"onnxruntime agrees with fastmlp on only {agreement:.2%} of the rows"
    lines = ["## Inference, 784-256-10: `predict` (class labels) from Python", "",
             "torch: eager `nn.Sequential` under `no_grad`, argmax (bf16: under `torch.autocast`); "
             f"onnxruntime: the `MLP.to_onnx` graph's `label` output, intra_op_num_threads={args.threads}; "
             "fastmlp bf16: a model of compute_dtype=\"bfloat16\" (weights packed once for the "
             f"{bf16_engine('fastmlp bf16')[0]} kernels)" + ("" if has_bf16_model() else f" -- {NO_BF16}")
             + ".", "",
             "| workload | threads | implementation | time | fastmlp float32 is faster by |", "|---|---|---|---|---|"]
    summary, data = [], {}
    for n in args.thread_counts:
        with threads(n):
            one_samples = interleaved(contestants_one, args.repetitions,
                                      calls_for(contestants_one["fastmlp"], 0.05 if args.quick else 0.2),
                                      settle=args.settle)
            many_samples = interleaved(contestants_many, args.repetitions,
                                       calls_for(contestants_many["fastmlp"], 0.05 if args.quick else 0.2),
                                       settle=args.settle)
        for label, samples, scale, unit in (("1 sample", one_samples, 1e-6, "us"),
                                            (f"{many.shape[0]} samples", many_samples, 1e-3, "ms")):
            for name, s in samples.items():
                faster = "-" if name == "fastmlp" else ratio(s, samples["fastmlp"])
                lines.append(f"| {label} | {n} | {name} | {s.cell(scale)} {unit} | {faster} |")
        throughput = many.shape[0] / many_samples["fastmlp"].median
        summary.append(f"- {n} thread{'s' if n > 1 else ''}: fastmlp throughput {throughput:,.0f} samples/s.")
        if "fastmlp bf16" in one_samples:
            summary[-1] += (f" fastmlp bf16's speed over float32's (> 1: bf16 faster): "
                            f"{ratio(one_samples['fastmlp'], one_samples['fastmlp bf16'])} (1 sample, "
                            f"{one_samples['fastmlp bf16'].median * 1e6:.1f} us against "
                            f"{one_samples['fastmlp'].median * 1e6:.1f} us), "
                            f"{ratio(many_samples['fastmlp'], many_samples['fastmlp bf16'])} "
                            f"({many.shape[0]} samples).")
        data[n] = {"one": {k: s.seconds for k, s in one_samples.items()},
                   "many": {k: s.seconds for k, s in many_samples.items()}}
    return lines + [""] + summary + [""], {"inference": dict(data[args.threads], by_threads=data)}


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
    parser.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                        help="leave out the torch.compile rows of the training tables (--quick always does)")
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
    args.torch_compile = args.torch_compile and not args.quick
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    sections = args.only or ["gemm", "training", "inference", "threads"]
    peak_seconds = 0.05 if args.quick else 0.5
    peaks = measure_peaks(args.thread_counts, peak_seconds)
    header_lines = header(args, peaks)
    lines = list(header_lines)
    results: dict = {"peak": peaks["float32"].get(max(args.thread_counts)), "peaks": peaks["float32"],
                     "bf16_peaks": peaks["bfloat16"], "amx_peaks": peaks["amx"], "peak_isa": fastmlp_isa(),
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
