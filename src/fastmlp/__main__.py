"""Command line: `python -m fastmlp train` trains an MLP and prints a per-epoch table;
`python -m fastmlp info` prints the build and thread information."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastmlp
from fastmlp import datasets
from fastmlp.optim import OPTIMIZERS, make_optimizer

TABLE_COLUMNS = ("epoch", "loss", "accuracy", "val_accuracy", "seconds", "samples/s")


def _layer_sizes(text: str) -> List[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden must be comma-separated integers, got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"--hidden sizes must be >= 1, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastmlp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train an MLP and print a per-epoch table")
    train.add_argument("--data", default=datasets.FASHION_MNIST_DIR,
                       help="directory of (Fashion-)MNIST IDX files (default: %(default)s); "
                            "generated blob images are used when they are absent")
    train.add_argument("--hidden", type=_layer_sizes, default=[256],
                       help="hidden layer widths, comma-separated (default: 256)")
    train.add_argument("--activation", default="relu", choices=fastmlp.mlp.ACTIVATIONS)
    train.add_argument("--epochs", type=_positive_int, default=5)
    train.add_argument("--batch-size", type=_positive_int, default=128)
    train.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS))
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")
    train.add_argument("--threads", type=_positive_int, default=None, help="OpenMP threads")
    train.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    train.add_argument("--compute-dtype", default=None, choices=("float32", "float64", "bfloat16"),
                       help="precision of the matrix products (default: --dtype); bfloat16 rounds their "
                            "operands to bfloat16 and sums in float32, weights float32")
    train.add_argument("--dropout", type=float, default=0.0)
    train.add_argument("--batch-norm", action="store_true")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--limit", type=_positive_int, default=None,
                       help="use only the first N training rows (quick runs)")
    train.add_argument("--save", default=None, help="write the trained model to this .npz file")
    commands.add_parser("info", help="print build information (compiler, OpenMP, SIMD, threads)")
    return parser


def _load_data(data_dir: str, limit: Optional[int],
               seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(X, y, X_test, y_test, description): real IDX files if present, else generated images."""
    (X, y, X_test, y_test), description = datasets.load_fashion_mnist_or_blob_images(
        data_dir, n_train=10000, n_test=2000, seed=seed)
    description += f" ({X.shape[0]} train / {X_test.shape[0]} test rows)"
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, y, X_test, y_test, description


def _print_row(values: Sequence[str]) -> None:
    print(" | ".join(f"{value:>12}" for value in values), flush=True)


def train(args: argparse.Namespace) -> int:
    if args.threads is not None:
        fastmlp.set_num_threads(args.threads)
    X, y, X_test, y_test, description = _load_data(args.data, args.limit, args.seed)
    optimizer = make_optimizer(args.optimizer)
    if args.lr is not None:
        optimizer = type(optimizer)(**dict(optimizer.options, lr=args.lr))
    sizes = [X.shape[1], *args.hidden, int(max(y.max(), y_test.max())) + 1]
    model = fastmlp.MLP(sizes, activation=args.activation, optimizer=optimizer, dtype=args.dtype,
                        dropout=args.dropout, batch_norm=args.batch_norm, seed=args.seed,
                        compute_dtype=args.compute_dtype)
    print(f"data: {description}")
    print(f"model: {'-'.join(map(str, sizes))} {args.activation}, softmax cross-entropy, "
          f"{optimizer!r}, batch {args.batch_size}, {args.dtype}"
          f"{' (products in ' + args.compute_dtype + ')' if args.compute_dtype else ''}, "
          f"{fastmlp.get_num_threads()} threads, {model.n_parameters} parameters")
    _print_row(TABLE_COLUMNS)
    _print_row(["-" * 12] * len(TABLE_COLUMNS))

    def print_epoch(epoch: int, logs: Dict[str, float]) -> None:
        _print_row([str(epoch), f"{logs['loss']:.4f}", f"{logs['accuracy']:.4f}",
                    f"{logs['val_accuracy']:.4f}", f"{logs['seconds']:.2f}",
                    f"{logs['samples_per_second']:.0f}"])

    started = time.perf_counter()
    model.fit(X, y, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(X_test, y_test), callbacks=[print_epoch])
    final = model.evaluate(X_test, y_test)
    print(f"test accuracy {final['accuracy']:.4f}, test loss {final['loss']:.4f}, "
          f"total {time.perf_counter() - started:.1f}s")
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        info = fastmlp.build_info()
        info["fastmlp"] = fastmlp.__version__
        info["numpy"] = np.__version__
        print(json.dumps(info, indent=2))
        return 0
    try:
        return train(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
