"""How much of a training step the optimizer takes (issue 16, item 6): `MLP.train_step` against
`MLP.gradients` on one batch, interleaved, medians, for float32 and (where the build has it)
compute_dtype="bfloat16".

    python bench/optimizer_share.py             # medians of 30, both networks (about a minute)
    python bench/optimizer_share.py --trained-epochs 3   # after 3 epochs of Fashion-MNIST
    python bench/optimizer_share.py --quick     # a smoke run (3 repetitions)

With --trained-epochs N the Adam models first train N epochs on Fashion-MNIST (generated blob
images where its files are missing): their optimizer states then hold what training leaves,
first moments stuck among the subnormals included (docs/guide/performance.md, "Optimizer states
near zero"), and the step is timed on a batch of those images.

Per network and precision, five contestants run interleaved on the same 128-row batch:
`train_step` (gradients + Adam, which runs inside the weight-gradient GEMMs on each strip of
dW as it is finished, + the finiteness check of the parameters), the same step of an identical
copy of the model with `update_in_weight_gradients = False` (the whole gradient first, then
Adam's flat loop over it: the same bits), `gradients` (the public method: gradients + a copy
of them into a new array), the core's `compute_gradients` (the gradients alone, no copy), and
`train_step` of the same network with plain SGD (no state: 12 bytes per parameter moved
against Adam's 28). The step beyond the gradients is a train_step minus the core's gradients;
its share of the step, what updating inside the GEMMs saved (measured), and what the bytes it
no longer moves account for (the gradient's write and read, 8 of the 28 bytes per parameter
of the update after the gradient) follow. On trained states the saving measured exceeds the
bytes' share: the update of each strip also overlaps the other thread's GEMM work.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastmlp

NETWORKS = ([784, 256, 10], [784, 1024, 1024, 10])
BATCH = 128
# Bytes an Adam step moves per parameter: read parameter, gradient, both moments (16), write
# parameter and both moments (12). A fused update (applied while the weight-gradient tile is
# in cache) no longer writes the gradient to memory nor reads it back: 8 of them.
ADAM_BYTES, SGD_BYTES, FUSED_SAVES_BYTES = 28, 12, 8


def has_bf16_model() -> bool:
    return "compute_dtype" in inspect.signature(fastmlp.MLP).parameters


def make_model(sizes: Sequence[int], optimizer: str, compute_dtype: str, n_threads: int) -> fastmlp.MLP:
    options = {"compute_dtype": compute_dtype} if compute_dtype != "float32" else {}
    optimizer_object = fastmlp.optim.Adam(lr=1e-3) if optimizer == "adam" else fastmlp.optim.SGD(lr=1e-3)
    return fastmlp.MLP(list(sizes), activation="relu", optimizer=optimizer_object, seed=0,
                       n_threads=n_threads, **options)


def training_images() -> Tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's training rows (or blob images of their shape where it is missing)."""
    import fastmlp.datasets
    (X, y, _, _), _ = fastmlp.datasets.load_fashion_mnist_or_blob_images()
    return X, y


def contestants(sizes: Sequence[int], compute_dtype: str, n_threads: int,
                trained_epochs: int = 0) -> Dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], BATCH).astype(np.int64)
    adam = make_model(sizes, "adam", compute_dtype, n_threads)
    if trained_epochs:
        X, labels = training_images()
        adam.fit(X, labels, epochs=trained_epochs, batch_size=BATCH, verbose=0)
        x, y = np.ascontiguousarray(X[:BATCH]), labels[:BATCH].astype(np.int64)
    sgd = make_model(sizes, "sgd", compute_dtype, n_threads)
    # The same model and states: both take the same steps, so they stay the same bits.
    adam_after_gradient = copy.deepcopy(adam)
    adam_after_gradient._network.update_in_weight_gradients = False
    return {
        "train_step": lambda: adam.train_step(x, y),
        "train_step, update after the gradient": lambda: adam_after_gradient.train_step(x, y),
        "gradients": lambda: adam.gradients(x, y),  # evaluation mode, and a copy of the gradient
        # The gradients alone (no copy into a new array), by train_step's own forward pass: in
        # training mode, whose products convert the weights each call (an evaluation-mode pass
        # would read the weights packed once per change, which a step's forward cannot).
        "core gradients": lambda: adam._network.compute_gradients(x, y, True),
        "train_step SGD": lambda: sgd.train_step(x, y),
    }


def interleaved_medians(functions: Dict[str, Callable[[], object]], repetitions: int) -> Dict[str, List[float]]:
    """Seconds per call of each function, A B C D A B C D ..., after one untimed round."""
    for function in functions.values():
        function()
    seconds: Dict[str, List[float]] = {name: [] for name in functions}
    for _ in range(repetitions):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def summarise(sizes: Sequence[int], compute_dtype: str, seconds: Dict[str, List[float]]) -> dict:
    median = {name: statistics.median(s) for name, s in seconds.items()}
    n_parameters = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    step, gradients = median["train_step"], median["core gradients"]
    beyond = step - gradients
    unfused_step = median["train_step, update after the gradient"]
    beyond_unfused = unfused_step - gradients
    # The gradient's write and read: their share of the bytes of the memory-bound update.
    fused_saving = max(beyond_unfused, 0.0) * FUSED_SAVES_BYTES / ADAM_BYTES
    return {
        "sizes": list(sizes), "compute_dtype": compute_dtype, "parameters": n_parameters,
        "median_seconds": median, "seconds": seconds,
        "beyond_gradients": beyond,
        "beyond_gradients_update_after": beyond_unfused,
        "fused_saved": unfused_step - step,
        "beyond_public_gradients": step - median["gradients"],
        "share": beyond / step,
        # The same update beside GEMMs twice as fast (what bf16 aims at): gradients halved.
        "share_if_gemms_halved": beyond / (gradients / 2 + beyond),
        "adam_gbytes_per_second": ADAM_BYTES * n_parameters / beyond / 1e9 if beyond > 0 else float("nan"),
        "sgd_beyond_gradients": median["train_step SGD"] - gradients,
        "fused_saving": fused_saving,
        "fused_saving_share": fused_saving / unfused_step,
    }


def table(rows: List[dict]) -> List[str]:
    lines = ["| network | precision | train_step | train_step, update after the gradient | gradients (public) | "
             "core gradients | step beyond the gradients | its share of the step | share if the GEMMs ran 2x "
             "faster | implied Adam GB/s | SGD's step beyond the gradients | updating in the GEMMs saved | "
             "the gradient's bytes' share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ms = {name: 1e3 * s for name, s in row["median_seconds"].items()}
        lines.append(
            f"| {'-'.join(map(str, row['sizes']))} | {row['compute_dtype']} | {ms['train_step']:.3f} ms | "
            f"{ms['train_step, update after the gradient']:.3f} ms | {ms['gradients']:.3f} ms | {ms['core gradients']:.3f} ms | {1e3 * row['beyond_gradients']:.3f} ms | "
            f"{100 * row['share']:.0f}% | {100 * row['share_if_gemms_halved']:.0f}% | "
            f"{row['adam_gbytes_per_second']:.1f} | {1e3 * row['sgd_beyond_gradients']:.3f} ms | "
            f"{1e3 * row['fused_saved']:.3f} ms | "
            f"{1e3 * row['fused_saving']:.3f} ms ({100 * row['fused_saving_share']:.1f}% of that step) |")
    return lines


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 repetitions")
    parser.add_argument("--repetitions", type=int, default=None, help="interleaved repetitions (default 30)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="the models' n_threads (default 2)")
    parser.add_argument("--trained-epochs", type=int, default=0,
                        help="epochs of Fashion-MNIST the Adam models train first (default 0: fresh)")
    args = parser.parse_args(argv)
    if args.trained_epochs < 0:
        parser.error(f"--trained-epochs must be >= 0, got {args.trained_epochs}")
    if args.repetitions is None:
        args.repetitions = 3 if args.quick else 30
    if args.repetitions < 1:
        parser.error(f"--repetitions must be >= 1, got {args.repetitions}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_args(argv)
    precisions = ["float32"] + (["bfloat16"] if has_bf16_model() else [])
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    trained = (f"Adam models trained {args.trained_epochs} epochs of Fashion-MNIST first" if args.trained_epochs
               else "fresh models")
    print(f"# The optimizer's share of a training step: batch {BATCH}, Adam, {args.threads} threads, {trained}, "
          f"medians of {args.repetitions} interleaved repetitions; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    if not has_bf16_model():
        print("bfloat16: n/a (this build has no bfloat16 path)")
    rows = []
    for sizes in NETWORKS:
        for precision in precisions:
            functions = contestants(sizes, precision, args.threads, args.trained_epochs)
            seconds = interleaved_medians(functions, args.repetitions)
            rows.append(summarise(sizes, precision, seconds))
    print("\n".join([""] + table(rows) + [""]))
    print(f"Step beyond the gradients = train_step - core gradients (Adam over {ADAM_BYTES} bytes per "
          "parameter, the parameters' finiteness check, the Python around the call); `gradients` also "
          "copies the gradient out. Updating in the GEMMs saved = the step with the update after the "
          f"gradient - train_step; the gradient's bytes' share = {FUSED_SAVES_BYTES}/{ADAM_BYTES} of that "
          "step's part beyond the gradients.")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
