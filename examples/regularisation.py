"""The regularisation toolbox
==========================

The regularisation toolbox on a Fashion-MNIST subset (generated blob images without the files):
the same 784-256-10 network trained plainly and with dropout, weight decay, batch norm, early
stopping, mixup, a cosine learning rate schedule and as an ensemble; a table of train and test
accuracy shows the generalisation gap each one leaves, and k-fold cross-validation estimates
the plain network's test accuracy from the training subset alone."""
import argparse
import time

import numpy as np

import fastmlp
from fastmlp import datasets, optim, schedules


def load_subset(n_train, n_test, data_dir):
    """The first n_train / n_test Fashion-MNIST images, or generated blob images without them."""
    (X, y, X_test, y_test), source = datasets.load_fashion_mnist_or_blob_images(
        data_dir, n_train=n_train, n_test=n_test)
    return source, X[:n_train], y[:n_train], X_test[:n_test], y_test[:n_test]


def make_model(seed=0, **options):
    options.setdefault("optimizer", optim.Adam(lr=1e-3))
    return fastmlp.MLP([784, 256, 10], activation="relu", seed=seed, **options)


# Each method: (model options, fit options). Early stopping holds out 10% of the training
# subset to watch; the others train on all of it for the full number of epochs.
def methods(epochs):
    return {
        "plain": ({}, {}),
        "dropout 0.5": ({"dropout": 0.5}, {}),
        "weight decay (AdamW 0.1)": ({"optimizer": optim.AdamW(lr=1e-3, weight_decay=0.1)}, {}),
        "L2 (Adam weight_decay 1e-3)": ({"weight_decay": 1e-3}, {}),
        "batch norm": ({"batch_norm": True}, {}),
        "early stopping (patience 3)": ({}, {"early_stopping": True, "patience": 3,
                                             "validation_split": 0.1}),
        "mixup alpha 0.4": ({}, {"mixup": 0.4}),
        "cosine lr schedule": ({}, {"lr_schedule": schedules.CosineAnnealingLR(T_max=epochs)}),
    }


def accuracies(model, X, y, X_test, y_test):
    return model.score(X, y), model.score(X_test, y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny subset, 3 epochs (smoke test)")
    parser.add_argument("--train", type=int, default=None, help="training images (default 5000)")
    parser.add_argument("--epochs", type=int, default=None, help="default 20")
    parser.add_argument("--members", type=int, default=None, help="ensemble size (default 5)")
    parser.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    args = parser.parse_args(argv)
    n_train = args.train or (600 if args.quick else 5000)
    epochs = args.epochs or (3 if args.quick else 20)
    members = args.members or (2 if args.quick else 5)
    source, X, y, X_test, y_test = load_subset(n_train, 600 if args.quick else 10000, args.data)
    print(f"{source}: {len(X)} training and {len(X_test)} test images; 784-256-10 relu, Adam "
          f"lr 1e-3, batch 64, up to {epochs} epochs\n")
    print(f"{'method':30s} | train acc | test acc |   gap  | epochs | seconds")
    rows = {}

    def show(name, train_accuracy, test_accuracy, epochs_run, seconds):
        rows[name] = {"train": train_accuracy, "test": test_accuracy, "epochs": epochs_run}
        print(f"{name:30s} |   {train_accuracy:.4f}  |  {test_accuracy:.4f}  | "
              f"{train_accuracy - test_accuracy:+.4f} | {epochs_run:6d} | {seconds:6.1f}")

    for name, (model_options, fit_options) in methods(epochs).items():
        started = time.perf_counter()
        model = make_model(**model_options)
        history = model.fit(X, y, epochs=epochs, batch_size=64, **fit_options)
        show(name, *accuracies(model, X, y, X_test, y_test), len(history),
             time.perf_counter() - started)

    started = time.perf_counter()
    ensemble = fastmlp.Ensemble.train(make_model, X, y, n_members=members, seed=100,
                                      epochs=epochs, batch_size=64)
    show(f"ensemble of {members} plain", *accuracies(ensemble, X, y, X_test, y_test), epochs,
         time.perf_counter() - started)
    member_tests = [model.score(X_test, y_test) for model in ensemble.models]
    print(f"\nensemble members alone: test accuracy {min(member_tests):.4f} .. "
          f"{max(member_tests):.4f}; averaging their probabilities gives {rows[f'ensemble of {members} plain']['test']:.4f}")

    folds = 2 if args.quick else 5
    started = time.perf_counter()
    cv = fastmlp.cross_validate(make_model, X, y, k=folds, seed=0, epochs=epochs, batch_size=64)
    print(f"{folds}-fold cross-validation of the plain network on the training subset: fold "
          f"accuracies {np.round(cv['test_score'], 4).tolist()}, mean "
          f"{cv['test_score'].mean():.4f} +- {cv['test_score'].std():.4f} "
          f"(the test set says {rows['plain']['test']:.4f}; {time.perf_counter() - started:.0f}s)")
    return {"rows": rows, "member_test_accuracies": member_tests, "cv": cv, "source": source}


if __name__ == "__main__":
    main()
