"""bfloat16 compute against float32 in accuracy: the same networks trained from the same seed on
Fashion-MNIST in both precisions, per-epoch losses and test accuracy, and a plot of the curves.

    python bench/bfloat16_accuracy.py           # issue 16's setting: ~3 minutes on 2 idle cores
    python bench/bfloat16_accuracy.py --quick   # a smoke run: 2,000 / 1,000 images, 2 epochs

The networks are 784-256-10 and 784-1024-1024-10 (relu, cross-entropy, Adam lr 1e-3, batch 128,
10 epochs, seed 0). For each, float32 and bfloat16 start from the same weights and see the same
batches (the shuffle follows the seed); the test figures come from each model as it predicts
(bfloat16 products for the bfloat16 model). Written: a table on stdout, a PNG of the train and
test loss per epoch (--plot) and the figures as JSON (--json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

import fastmlp
from fastmlp.datasets import load_fashion_mnist

NETWORKS = {"784-256-10": [784, 256, 10], "784-1024-1024-10": [784, 1024, 1024, 10]}
PRECISIONS = {"float32": None, "bfloat16": "bfloat16"}  # name -> MLP's compute_dtype


def train(layer_sizes: Sequence[int], compute_dtype: Optional[str], data: Sequence[np.ndarray],
          epochs: int, seed: int) -> Dict[str, Any]:
    """One run: per-epoch train loss, test loss and test accuracy, and the training seconds
    (the test evaluation after each epoch included)."""
    X, y, X_test, y_test = data
    model = fastmlp.MLP(layer_sizes, activation="relu", loss="cross_entropy",
                        optimizer=fastmlp.optim.Adam(lr=1e-3), seed=seed, compute_dtype=compute_dtype)
    started = time.perf_counter()
    history = model.fit(X, y, epochs=epochs, batch_size=128, validation_data=(X_test, y_test))
    return {"train_loss": [float(v) for v in history["loss"]],
            "test_loss": [float(v) for v in history["val_loss"]],
            "test_accuracy": [float(v) for v in history["val_accuracy"]],
            "seconds": time.perf_counter() - started}


def print_table(network: str, runs: Dict[str, Dict[str, Any]]) -> None:
    print(f"\n{network}: per epoch, float32 | bfloat16")
    print("epoch | " + " | ".join(f"{title:^15}" for title in ("train loss", "test loss", "test accuracy")))
    f32, bf16 = runs["float32"], runs["bfloat16"]
    for epoch in range(len(f32["train_loss"])):
        cells = [f"{f32[key][epoch]:.4f} | {bf16[key][epoch]:.4f}"
                 for key in ("train_loss", "test_loss", "test_accuracy")]
        print(f"{epoch + 1:5d} | " + " | ".join(cells))
    gap = bf16["test_accuracy"][-1] - f32["test_accuracy"][-1]
    print(f"final test accuracy: float32 {f32['test_accuracy'][-1]:.4f}, bfloat16 "
          f"{bf16['test_accuracy'][-1]:.4f} (bfloat16 - float32 = {100 * gap:+.2f} points); "
          f"{f32['seconds']:.0f} s and {bf16['seconds']:.0f} s")


def plot(results: Dict[str, Dict[str, Dict[str, Any]]], path: str) -> None:
    """One panel per network: train (solid) and test (dashed) loss per epoch, both precisions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    # float32 drawn wide and pale beneath bfloat16, so the curves stay visible where they meet.
    styles = {"float32": {"color": "tab:blue", "linewidth": 3.5, "alpha": 0.5},
              "bfloat16": {"color": "tab:orange", "linewidth": 1.3}}
    for axis, (network, runs) in zip(axes[0], results.items()):
        for precision, run in runs.items():
            epochs = np.arange(1, len(run["train_loss"]) + 1)
            accuracy = run["test_accuracy"][-1]
            axis.plot(epochs, run["train_loss"], "-", label=f"{precision} train", **styles[precision])
            axis.plot(epochs, run["test_loss"], "--", label=f"{precision} test (accuracy {accuracy:.4f})",
                      **styles[precision])
        axis.set_title(f"Fashion-MNIST {network}, Adam 1e-3, batch 128")
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel("cross-entropy")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, Dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2,000 training / 1,000 test images, 2 epochs (smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (2 with --quick)")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--plot", default="bfloat16_loss_curves.png", help="PNG of the loss curves")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 10)

    data = load_fashion_mnist(args.data)
    if args.quick:
        data = (data[0][:2000], data[1][:2000], data[2][:1000], data[3][:1000])
    info = fastmlp.build_info()
    print(f"Fashion-MNIST {len(data[0])} / {len(data[2])} images, {epochs} epochs, seed {args.seed}, "
          f"{fastmlp.get_num_threads()} threads, bfloat16 native: {info['bfloat16_native']}")

    results: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for network in args.networks:
        results[network] = {precision: train(NETWORKS[network], compute_dtype, data, epochs, args.seed)
                            for precision, compute_dtype in PRECISIONS.items()}
        print_table(network, results[network])

    plot(results, args.plot)
    print(f"\nwrote {args.plot}")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                       "epochs": epochs, "seed": args.seed, "quick": args.quick,
                       "threads": fastmlp.get_num_threads(), "build_info": {
                           key: info[key] for key in ("bfloat16_native", "cpu_avx512_bf16") if key in info},
                       "results": results}, stream, indent=1)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
