"""bfloat16 training against float32 and against PyTorch (eager float32 and bf16 autocast) on
issue 16's two networks, and where the time of one bfloat16 training step goes.

    python bench/bfloat16_training.py                  # both networks, 20,000 rows, 2 threads
    python bench/bfloat16_training.py --rows 60000     # bench/run.py's full epoch
    python bench/bfloat16_training.py --no-epochs      # the profile alone (a minute)
    python bench/bfloat16_training.py --quick          # a smoke run (seconds)

Epochs: fastmlp float32, fastmlp compute_dtype="bfloat16", torch float32 and torch under
torch.autocast("cpu", dtype=torch.bfloat16), Adam 1e-3, batch 128, Fashion-MNIST (random rows
of its shape without it), interleaved (A B C D A B C D ...) after an untimed epoch each;
medians and the min-max range, and the ratios issue 16's targets are stated in. The profile
times each product of one 128-row step on its own (kernels.gemm_bfloat16 and kernels.gemm:
packing and conversion included; 1 thread unless --profile-threads), to set beside the whole
step (an epoch's time per batch: the products, the element-wise kernels, the loss, Adam).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

import fastmlp
from fastmlp._core import kernels


def _load_bench_run():
    """bench/run.py (its contestants and interleaving) as a module of its own name, without
    putting bench/ on sys.path, where its distributed.py would hide dask's."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")
    spec = importlib.util.spec_from_file_location("fastmlp_bench_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_run = _load_bench_run()

NETWORKS = ([784, 256, 10], [784, 1024, 1024, 10])
BATCH, LR = 128, 1e-3


def epoch_table(sizes: Sequence[int], X, y, repetitions: int, n_threads: int) -> Tuple[List[str], Dict[str, float]]:
    """The interleaved epochs' table and each contestant's median seconds."""
    makers: Dict[str, Callable] = {
        "fastmlp float32": bench_run.fastmlp_epoch,
        "fastmlp bf16": lambda *a: bench_run.fastmlp_epoch(*a, compute_dtype="bfloat16"),
    }
    if bench_run.torch is not None:
        makers["torch float32"] = bench_run.torch_epoch
        makers["torch bf16 autocast"] = lambda *a: bench_run.torch_epoch(*a, autocast=True)
    epochs = {name: make(sizes, X, y, BATCH, LR) for name, make in makers.items()}
    with bench_run.threads(n_threads):
        samples = bench_run.interleaved(epochs, repetitions)
    lines = [f"### {'-'.join(map(str, sizes))}: one epoch of {X.shape[0]} rows, {n_threads} threads, "
             f"load {os.getloadavg()[0]:.1f}", "",
             "| implementation | seconds (min-max) | ms per step |", "|---|---|---|"]
    steps = -(-X.shape[0] // BATCH)
    for name, s in samples.items():
        lines.append(f"| {name} | {s.cell()} | {s.median / steps * 1e3:.3f} |")
    pairs = [("fastmlp bf16", "fastmlp float32"), ("fastmlp bf16", "torch bf16 autocast"),
             ("fastmlp float32", "torch float32")]
    lines += [""] + [f"- {a} / {b}: {samples[a].median / samples[b].median:.3f}"
                     for a, b in pairs if a in samples and b in samples]
    return lines + [""], {name: s.median for name, s in samples.items()}


def step_products(sizes: Sequence[int]) -> List[Tuple[str, int, int, int, bool, bool]]:
    """(name, M, K, N, transpose_a, transpose_b) of every product of one training step."""
    products = []
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        products.append((f"forward {l}", BATCH, fan_in, fan_out, False, False))
        products.append((f"dW {l}", fan_in, BATCH, fan_out, True, False))
        if l > 0:
            products.append((f"dX {l}", BATCH, fan_out, fan_in, False, True))
    return products


def profile_table(sizes: Sequence[int], repetitions: int, n_threads: int) -> Tuple[List[str], Dict[str, Dict[str, float]]]:
    """The products' table and each product's median seconds, float32 and bf16."""
    rng = np.random.default_rng(0)
    lines = [f"### {'-'.join(map(str, sizes))}: the products of one {BATCH}-row step, {n_threads} threads, "
             "medians in us", "", "| product | M x K x N | float32 | bf16 |", "|---|---|---|---|"]
    totals = {"float32": 0.0, "bf16": 0.0}
    seconds = {}
    with bench_run.threads(n_threads):
        for name, M, K, N, transpose_a, transpose_b in step_products(sizes):
            a = rng.standard_normal((K, M) if transpose_a else (M, K)).astype(np.float32)
            b = rng.standard_normal((N, K) if transpose_b else (K, N)).astype(np.float32)
            samples = bench_run.interleaved(
                {"float32": lambda: kernels.gemm(a, b, transpose_a, transpose_b),
                 "bf16": lambda: kernels.gemm_bfloat16(a, b, transpose_a, transpose_b)},
                repetitions, calls=10, settle=0)
            seconds[name] = {key: samples[key].median for key in totals}
            for key in totals:
                totals[key] += samples[key].median
            lines.append(f"| {name} | {M} x {K} x {N} | {samples['float32'].median * 1e6:.1f} | "
                         f"{samples['bf16'].median * 1e6:.1f} |")
    lines.append(f"| all products | | {totals['float32'] * 1e6:.0f} | {totals['bf16'] * 1e6:.0f} |")
    return lines + [""], seconds


def main(argv: Sequence[str] = None) -> Dict[str, dict]:
    """Prints the tables; returns, per network ("784-256-10"), "products" (name -> seconds by
    precision) and, unless --no-epochs, "epochs" (contestant -> median seconds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="rows per epoch (default 20000)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="threads of the epochs (default 2)")
    parser.add_argument("--profile-threads", type=int, default=1,
                        help="threads of the per-product profile (default 1: steadier on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="random rows, tiny epochs")
    parser.add_argument("--no-epochs", dest="epochs", action="store_false", help="the profile only")
    args = parser.parse_args(argv)
    if args.rows < BATCH or min(args.repetitions, args.threads, args.profile_threads) < 1:
        parser.error("--rows must be >= 128, --repetitions, --threads and --profile-threads >= 1")
    X, y, description = bench_run.load_data(args.quick)
    rows = 512 if args.quick else args.rows
    X, y = X[:rows], y[:rows]
    print(f"{description}, first {rows} rows; bfloat16 path {fastmlp.build_info()['bfloat16_path']}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    results = {}
    for sizes in NETWORKS:
        lines, products = profile_table(sizes, args.repetitions * 5, args.profile_threads)
        print("\n".join(lines), flush=True)
        results["-".join(map(str, sizes))] = {"products": products}
        if args.epochs:
            lines, epochs = epoch_table(sizes, X, y, args.repetitions, args.threads)
            print("\n".join(lines), flush=True)
            results["-".join(map(str, sizes))]["epochs"] = epochs
    return results


if __name__ == "__main__":
    main()
