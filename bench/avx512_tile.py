"""The AVX-512 float32 tiles side by side (docs/guide/performance.md, "The float32 tile"): the
16 x 16 tile sized for Zen 4 against the 8 x 32 tile fastmlp picks on Intel CPUs, on the MLP's
GEMM shapes and a 2048^3 product next to NumPy (OpenBLAS) and torch.matmul, and whole epochs
of 784-1024-1024-10 and 784-256-10 (Adam 1e-3, batch 128) against the measured FMA peak.

    python bench/avx512_tile.py            # about 6 minutes on 2 quiet cores
    python bench/avx512_tile.py --quick    # a smoke run at small sizes (seconds)

Contestants run interleaved (A B C A B C ...), medians with the min-max range; the tile is
switched in process with kernels.set_avx512_tile, so both see the same machine. Both tiles give
the same bits (the canonical summation order), so only the times differ.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: timing, peers, peaks, epochs)

import fastmlp  # noqa: E402
from fastmlp import datasets  # noqa: E402
from fastmlp._core import kernels  # noqa: E402

TILES = ("16x16", "8x32")
# (label, M, K, N, transpose_a, transpose_b): 784-1024-1024-10 at batch 128 (forward, weight
# gradients dW = X^T dY, input gradient dX = dY W^T), the small network's first layer, 2048^3.
SHAPES = [
    ("fwd 128x784x1024", 128, 784, 1024, False, False),
    ("fwd 128x1024x1024", 128, 1024, 1024, False, False),
    ("dW 784x128x1024", 784, 128, 1024, True, False),
    ("dW 1024x128x1024", 1024, 128, 1024, True, False),
    ("dX 128x1024x1024", 128, 1024, 1024, False, True),
    ("dX 128x1024x784", 128, 1024, 784, False, True),
    ("fwd 128x784x256", 128, 784, 256, False, False),
    ("2048^3", 2048, 2048, 2048, False, False),
]
QUICK_SHAPES = [("fwd 64x100x96", 64, 100, 96, False, False), ("dX 64x96x100", 64, 96, 100, False, True)]
NETWORKS = ([784, 1024, 1024, 10], [784, 256, 10])


def with_tile(tile: str, function: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        kernels.set_avx512_tile(tile)
        function()
    return call


def gemm_contestants(M: int, K: int, N: int, transpose_a: bool, transpose_b: bool) -> Dict[str, Callable[[], None]]:
    a, b = run.gemm_operands(M, K, N, transpose_a, transpose_b)
    peers = run.gemm_contestants(a, b, transpose_a, transpose_b)
    contestants = {f"fastmlp {tile}": with_tile(tile, peers["fastmlp"]) for tile in TILES}
    contestants["numpy"] = peers["numpy"]
    if "torch" in peers:
        contestants["torch"] = peers["torch"]
    return contestants


def bench_gemms(args: argparse.Namespace, peaks: Dict[int, float]) -> None:
    print("## GEMM (float32), GFLOP/s: median (min-max)\n")
    for index, (label, M, K, N, transpose_a, transpose_b) in enumerate(QUICK_SHAPES if args.quick else SHAPES):
        flops = 2.0 * M * K * N
        contestants = gemm_contestants(M, K, N, transpose_a, transpose_b)
        if index == 0:
            print("| shape | threads | " + " | ".join(contestants) + " | 8x32 / 16x16 | 8x32 % of peak |")
            print("|" + "---|" * (len(contestants) + 4))
        for n in args.threads:
            with run.threads(n):
                calls = run.calls_for(contestants["fastmlp 16x16"], 0.05)
                samples = run.interleaved(contestants, args.repetitions, calls)
            gflops = {name: flops / s.median / 1e9 for name, s in samples.items()}
            cells = [f"{gflops[name]:.0f} ({flops / max(s.seconds) / 1e9:.0f}-{flops / min(s.seconds) / 1e9:.0f})"
                     for name, s in samples.items()]
            print(f"| {label} | {n} | " + " | ".join(cells)
                  + f" | {gflops['fastmlp 8x32'] / gflops['fastmlp 16x16']:.2f}x"
                  + f" | {run.percent_of(gflops['fastmlp 8x32'], peaks[n])} |", flush=True)
    kernels.set_avx512_tile("auto")


def bench_epochs(args: argparse.Namespace, peaks: Dict[int, float]) -> None:
    if args.quick:
        X, y = np.random.default_rng(0).random((512, 784), dtype=np.float32), np.arange(512) % 10
        source = "random rows"
    else:
        X, y, _, _ = datasets.load_fashion_mnist()
        source = f"Fashion-MNIST ({X.shape[0]} rows)"
    n = args.epoch_threads
    print(f"\n## Epochs ({source}, Adam 1e-3, batch 128, {n} threads), seconds: median (min-max)\n")
    print("| network | " + " | ".join(f"fastmlp {t}" for t in TILES) + " | 8x32 GFLOP/s | 8x32 % of peak |")
    print("|---|---|---|---|---|")
    for sizes in NETWORKS:
        flops = run.epoch_flops(sizes, X.shape[0])
        contestants = {f"fastmlp {tile}": with_tile(tile, run.fastmlp_epoch(sizes, X, y, 128, 1e-3)) for tile in TILES}
        with run.threads(n):
            samples = run.interleaved(contestants, args.epoch_repetitions)
        wide = flops / samples["fastmlp 8x32"].median / 1e9
        print(f"| {'-'.join(map(str, sizes))} | " + " | ".join(s.cell() for s in samples.values())
              + f" | {wide:.0f} | {run.percent_of(wide, peaks[n])} |", flush=True)
    kernels.set_avx512_tile("auto")


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions")
    parser.add_argument("--repetitions", type=int, default=15, help="GEMM repetitions (default 15)")
    parser.add_argument("--epoch-repetitions", type=int, default=5, help="epoch repetitions (default 5; 0: no epochs)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="GEMM thread counts")
    parser.add_argument("--epoch-threads", type=int, default=2, help="threads of the epochs (default 2)")
    args = parser.parse_args(argv)
    if not kernels.cpu_supports_isa("avx512"):
        raise SystemExit("this CPU has no AVX-512: the tiles compared here do not run")
    if args.quick:
        args.repetitions = args.epoch_repetitions = 3
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    peaks = {n: run.fma_peak(n, 0.5 if args.quick else 2.0) for n in sorted(set(args.threads) | {args.epoch_threads})}
    print(f"# AVX-512 float32 tiles: {run.cpu_model()}; CPU's tile {kernels.avx512_tile()}; "
          f"load average {' '.join(load)}; measured FMA peak "
          + ", ".join(f"{n} thread{'s' if n > 1 else ''} {p:.0f} GFLOP/s" for n, p in peaks.items()) + "\n", flush=True)
    bench_gemms(args, peaks)
    if args.epoch_repetitions > 0:
        bench_epochs(args, peaks)
    with open("/proc/loadavg") as f:
        print(f"\nload average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main(sys.argv[1:])
