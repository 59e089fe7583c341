"""Optimizers compared on two spirals
==================================

SGD, momentum, Nesterov, Adagrad, Adadelta, RMSprop and Adam on one problem (two spirals,
a 2-64-64-2 relu network, the same initial weights and batches for all): the training loss
per epoch as a table, and as a PNG plot when matplotlib is installed."""
import argparse

import numpy as np

import fastmlp
from fastmlp import optim
from fastmlp.datasets import make_spirals

# Learning rates near each method's usual range for this problem (torch's defaults otherwise).
OPTIMIZERS = {
    "SGD": lambda: optim.SGD(lr=0.05),
    "momentum": lambda: optim.SGD(lr=0.05, momentum=0.9),
    "Nesterov": lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "Adagrad": lambda: optim.Adagrad(lr=0.05),
    "Adadelta": lambda: optim.Adadelta(lr=1.0),
    "RMSprop": lambda: optim.RMSprop(lr=0.002),
    "Adam": lambda: optim.Adam(lr=0.005),
}


def loss_curves(X, y, epochs, seed=0):
    """{name: (per-epoch training losses, final training accuracy)}; every model starts from
    the same weights and sees the same batches (same seed)."""
    curves = {}
    for name, make_optimizer in OPTIMIZERS.items():
        model = fastmlp.MLP([2, 64, 64, 2], activation="relu", optimizer=make_optimizer(),
                            dtype="float64", seed=seed)
        history = model.fit(X, y, epochs=epochs, batch_size=32)
        curves[name] = (history["loss"], model.score(X, y))
    return curves


def plot(curves, path):
    """Write the loss curves to `path` (PNG); returns False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, (losses, _) in curves.items():
        axes.plot(np.arange(1, len(losses) + 1), losses, label=name)
    axes.set_xlabel("epoch")
    axes.set_ylabel("training cross-entropy")
    axes.set_yscale("log")
    axes.set_title("Optimizers on two spirals (2-64-64-2 relu, batch 32)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer points and epochs (smoke test)")
    parser.add_argument("--plot", default="optimizers.png", help="PNG file for the loss curves")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    n_samples, epochs = (200, 15) if args.quick else (600, 100)
    X, y = make_spirals(n_samples, noise=0.05, seed=0)
    print(f"two spirals, {n_samples} points, {epochs} epochs of batch 32\n")
    curves = loss_curves(X, y, epochs)

    shown = sorted({1, 2, 5, 10, 20, 50, epochs} & set(range(1, epochs + 1)))
    print("epoch " + "".join(f"{name:>10s}" for name in curves))
    for epoch in shown:
        print(f"{epoch:5d} " + "".join(f"{losses[epoch - 1]:10.4f}" for losses, _ in curves.values()))
    print("acc.  " + "".join(f"{accuracy:10.3f}" for _, accuracy in curves.values()))
    written = False if args.no_plot else plot(curves, args.plot)
    if written:
        print(f"\nloss curves written to {args.plot}")
    elif not args.no_plot:
        print("\n(matplotlib is not installed: no plot; pip install matplotlib)")
    return {"curves": curves, "plot": args.plot if written else None}


if __name__ == "__main__":
    main()
