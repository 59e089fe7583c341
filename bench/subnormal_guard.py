"""The float32 optimizer loops with and without the subnormal guard (docs/guide/performance.md,
"Optimizer states near zero"): on Intel cores a product or quotient of a subnormal runs in
microcode, and the guard sends each 64 elements holding a state near 0 to a twin computing in
double; Zen 4 takes subnormals in its float unit, and the guard is off there by default.

    python bench/subnormal_guard.py              # about 3 minutes on 2 quiet cores
    python bench/subnormal_guard.py --quick      # a smoke run (random data, few repetitions)

Per network and precision, an Adam model (lr 1e-3, batch 128) trains --trained-epochs epochs on
Fashion-MNIST (random data of its shape where it is missing), which leaves first moments stuck
among the subnormals (dead units' columns, blank pixels' rows); then its `train_step` on one
batch runs with the guard on and off, interleaved (the guard is switched in process, so both
see the same machine and the same states), medians with the min-max range. Then one epoch each
way, interleaved, on two copies of the trained model. The same bits either way: only the times
differ.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: timing, the machine, data)

import fastmlp  # noqa: E402
from fastmlp._core import kernels  # noqa: E402

NETWORKS = ([784, 256, 10], [784, 1024, 1024, 10])
BATCH = 128
GUARDS = ("on", "off")


def guarded(guard: str, function):
    """function run with the subnormal guard `guard`, the CPU's choice restored after it."""
    def call() -> None:
        kernels.set_subnormal_guard(guard)
        try:
            function()
        finally:
            kernels.set_subnormal_guard("auto")
    return call


def tiny_first_moments(model: fastmlp.MLP) -> float:
    """The share of first moments whose magnitude is below 2^-100 but not 0: the guard's trigger."""
    moments = np.abs(model._network.optimizer_state["exp_avg"])
    return float(np.count_nonzero((moments > 0) & (moments < 2.0 ** -100))) / moments.size


def bench_network(sizes, precision: str, X, y, args: argparse.Namespace) -> dict:
    options = {"compute_dtype": precision} if precision != "float32" else {}
    model = fastmlp.MLP(list(sizes), activation="relu", optimizer=fastmlp.optim.Adam(lr=1e-3), seed=0, **options)
    model.fit(X, y, epochs=args.trained_epochs, batch_size=BATCH, verbose=0)
    tiny_share = tiny_first_moments(model)
    x, labels = np.ascontiguousarray(X[:BATCH]), y[:BATCH]
    steps = run.interleaved({guard: guarded(guard, lambda: model.train_step(x, labels)) for guard in GUARDS},
                            args.repetitions, calls=10, settle=0.0)
    twins = {guard: copy.deepcopy(model) for guard in GUARDS}
    epochs = run.interleaved(
        {guard: guarded(guard, lambda m=twins[guard]: m.fit(X, y, epochs=1, batch_size=BATCH, verbose=0))
         for guard in GUARDS}, args.epoch_repetitions, warmup=0)
    return {"sizes": list(sizes), "precision": precision, "tiny_first_moments": tiny_share,
            "steps": steps, "epochs": epochs}


def table_row(result: dict) -> str:
    steps, epochs = result["steps"], result["epochs"]
    return (f"| {'-'.join(map(str, result['sizes']))} | {result['precision']} | "
            f"{100 * result['tiny_first_moments']:.1f}% | {steps['on'].cell(1e-3)} | {steps['off'].cell(1e-3)} | "
            f"{run.ratio(steps['on'], steps['off'])} | {epochs['on'].cell()} | {epochs['off'].cell()} | "
            f"{run.ratio(epochs['on'], epochs['off'])} |")


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: random data, few repetitions")
    parser.add_argument("--trained-epochs", type=int, default=3, help="epochs before the timing (default 3)")
    parser.add_argument("--repetitions", type=int, default=15, help="interleaved rounds of 10 steps (default 15)")
    parser.add_argument("--epoch-repetitions", type=int, default=2, help="interleaved epochs each way (default 2)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="threads (default 2)")
    args = parser.parse_args(argv)
    for name in ("trained_epochs", "repetitions", "epoch_repetitions", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.quick:
        args.trained_epochs, args.repetitions, args.epoch_repetitions = 1, 2, 1
    return args


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    X, y, data = run.load_data(args.quick)
    precisions = ["float32"] + (["bfloat16"] if run.has_bf16_model() else [])
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"# The subnormal guard on and off: {run.cpu_model()}, {args.threads} threads, kernels "
          f"{run.fastmlp_isa()}, the CPU's choice '{kernels.subnormal_guard()}'; {data}; Adam models trained "
          f"{args.trained_epochs} epochs first; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
          flush=True)
    results = []
    with run.threads(args.threads):
        for sizes in NETWORKS:
            for precision in precisions:
                results.append(bench_network(sizes, precision, X, y, args))
                print(table_row(results[-1]), flush=True)
    print("\n".join(["", "| network | precision | first moments below 2^-100 | train_step, guard on (ms) | "
                     "guard off (ms) | on / off | next epoch, guard on (s) | guard off (s) | on / off |",
                     "|---|---|---|---|---|---|---|---|---|"] + [table_row(result) for result in results]))
    print("\nMedians (min-max) of interleaved runs; a ratio above 1 means the guard costs time here.")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
