"""bfloat16 compute against float32 on this machine: the GEMM at 2048^3 and at the MLP's
shapes (AMX and VDPBF16PS where the CPU has them, and the emulation), a training epoch and
predict.

    python bench/bfloat16.py            # about 2 minutes on 2 idle cores
    python bench/bfloat16.py --quick    # a smoke run at tiny sizes (seconds)

Every cell is the median of interleaved repetitions (float32, amx, vdpbf16ps, emulated,
float32, ...). "amx" is the amx_bf16 instruction set (TDPBF16PS for c wider than 16 columns;
its own summation order), "vdpbf16ps" the avx512_bf16 one (VDPBF16PS in the packed path),
"emulated" the avx512 one (float32 FMA kernels over rounded operands); the last two give the
same bits but for denormals. Prediction packs the weights once for the instruction set's
kernels (AMX tiles, VDPBF16PS panels, or the emulation's rounded float32) and is timed per
instruction set at 1 and 2 threads, against float32's predict of the same model.
"""
from __future__ import annotations

import argparse
import copy
import time
from typing import Callable, Dict, List

import numpy as np

import fastmlp
from fastmlp._core import kernels


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def interleaved(variants: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, float]:
    """Each variant's median over `rounds` rounds that run every variant once, in turn."""
    seen: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            seen[name].append(measure())
    return {name: float(np.median(values)) for name, values in seen.items()}


def with_isa(isa: str, run: Callable[[], float]) -> Callable[[], float]:
    def measure() -> float:
        kernels.set_isa(isa)
        try:
            return run()
        finally:
            kernels.set_isa("auto")
    return measure


def bfloat16_isas() -> Dict[str, str]:
    isas = {"emulated": "avx512" if kernels.cpu_supports_isa("avx512") else "auto"}
    if kernels.cpu_supports_isa("avx512_bf16"):
        isas = {"vdpbf16ps": "avx512_bf16", **isas}
    if kernels.cpu_supports_isa("amx_bf16"):
        isas = {"amx": "amx_bf16", **isas}
    return isas


def gemm_rows(quick: bool, rounds: int) -> None:
    rng = np.random.default_rng(0)
    shapes = [(2048, 2048, 2048, False, False), (128, 784, 256, False, False), (784, 128, 256, True, False),
              (128, 256, 784, False, True), (128, 1024, 1024, False, False), (1024, 128, 1024, True, False)]
    if quick:
        shapes = [(64, 100, 48, False, False)]
    print("GEMM, GFLOP/s (M x K x N, transposes): float32 | bfloat16 by kernel")
    for M, K, N, transpose_a, transpose_b in shapes:
        a = rng.standard_normal((K, M) if transpose_a else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if transpose_b else (K, N)).astype(np.float32)
        repeats = 3 if M * N * K > 1e9 else 30
        variants = {"float32": lambda: median_seconds(lambda: kernels.gemm(a, b, transpose_a, transpose_b), repeats)}
        for label, isa in bfloat16_isas().items():
            variants[label] = with_isa(isa, lambda: median_seconds(
                lambda: kernels.gemm_bfloat16(a, b, transpose_a, transpose_b), repeats))
        seconds = interleaved(variants, rounds)
        flops = 2.0 * M * N * K
        cells = "  ".join(f"{name} {flops / value / 1e9:.0f}" for name, value in seconds.items())
        print(f"  {M}x{K}x{N} {'T' if transpose_a else 'N'}{'T' if transpose_b else 'N'}: {cells}", flush=True)


def model_rows(quick: bool, rounds: int) -> None:
    rng = np.random.default_rng(1)
    rows = 2000 if quick else 20000
    X = rng.standard_normal((rows, 784)).astype(np.float32)
    y = rng.integers(0, 10, rows)
    for sizes in ([784, 256, 10], [784, 1024, 1024, 10]) if not quick else ([784, 64, 10],):
        models = {None: fastmlp.MLP(sizes, seed=0), "bfloat16": fastmlp.MLP(sizes, seed=0, compute_dtype="bfloat16")}

        def epoch(compute_dtype):
            return lambda: median_seconds(lambda: models[compute_dtype].fit(X, y, epochs=1, batch_size=128), 1)
        variants = {"float32": epoch(None)}
        for label, isa in bfloat16_isas().items():
            variants[label] = with_isa(isa, epoch("bfloat16"))
        seconds = interleaved(variants, rounds)
        name = "-".join(map(str, sizes))
        print(f"epoch {name} ({rows} rows, batch 128), s: "
              + "  ".join(f"{key} {value:.3f}" for key, value in seconds.items()), flush=True)
        if sizes[1] != 256 and not quick:
            continue
        prediction_rows(models[None], name, X, rounds)


def prediction_rows(model: fastmlp.MLP, name: str, X: np.ndarray, rounds: int) -> None:
    """MLP.predict of one row and of 10,000, float32 against bfloat16 on each instruction set,
    at 1 and 2 threads: a copy of the model switched to compute_dtype="bfloat16" per set, so
    each keeps its weights packed (as a bf16 model does between predictions)."""
    one, many = X[:1].copy(), X[:10000].copy()
    copies = {label: (isa, copy.deepcopy(model)) for label, isa in bfloat16_isas().items()}
    for _, bf16_model in copies.values():
        bf16_model.compute_dtype = "bfloat16"
    for n_threads in (1, 2):
        for label, rows, repeats in (("1 row, us", one, 2000), ("10,000 rows, ms", many, 10)):
            scale = 1e6 if rows.shape[0] == 1 else 1e3
            variants = {"float32": lambda: median_seconds(lambda: model.predict(rows), repeats) * scale}
            for key, (isa, bf16_model) in copies.items():
                variants[key] = with_isa(isa, lambda m=bf16_model: median_seconds(lambda: m.predict(rows), repeats)
                                         * scale)
            model.n_threads = n_threads
            for _, bf16_model in copies.values():
                bf16_model.n_threads = n_threads
            results = interleaved(variants, rounds)
            print(f"predict {name}, {label}, {n_threads} thread{'s' if n_threads > 1 else ''}: "
                  + "  ".join(f"{key} {value:.2f}" for key, value in results.items()), flush=True)
    model.n_threads = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    info = fastmlp.build_info()
    print(f"kernels {info['isa']}, bfloat16 path: {info['bfloat16_path']}, "
          f"{fastmlp.get_num_threads()} threads")
    gemm_rows(args.quick, rounds)
    model_rows(args.quick, rounds)


if __name__ == "__main__":
    main()
