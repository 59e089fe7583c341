"""Fashion-MNIST with a 784-256-10 MLP
===================================

The classic 784-256-10 MLP on Fashion-MNIST: parameter shapes, an evaluation function,
per-epoch training loss and accuracy, and the test accuracy (>= 0.88 at full size). Adam's
learning rate is annealed along a cosine to 0 over the run, which settles the last epochs.

Reads the IDX files (Debian: apt-get install dataset-fashion-mnist, or --data DIR); without them
it trains on generated blob images (fastmlp.datasets.make_blob_images) and says so."""
import argparse
import time

import numpy as np

import fastmlp
from fastmlp.datasets import load_fashion_mnist_or_blob_images

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")


def evaluate(model, X, y):
    """Accuracy of the model's most probable class, and the mean cross-entropy, in NumPy."""
    probabilities = model.predict_proba(X)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == y))
    true_class = np.clip(probabilities[np.arange(len(y)), y], 1e-12, 1.0)
    return {"accuracy": accuracy, "loss": float(-np.mean(np.log(true_class)))}


def per_class_accuracy(model, X, y, class_names):
    predicted = model.predict(X)
    return {name: float(np.mean(predicted[y == c] == c)) for c, name in enumerate(class_names)}


def main(argv=None):
    """Train and report; return a dict with the shapes, history and test figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="2000 training / 1000 test images, 2 epochs (smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="default 15 (2 with --quick)")
    parser.add_argument("--data", default=None, help="directory of the IDX files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 15)

    (X, y, X_test, y_test), source = load_fashion_mnist_or_blob_images(
        args.data, **({"n_train": 2000, "n_test": 1000} if args.quick else {}))
    if args.quick:
        X, y, X_test, y_test = X[:2000], y[:2000], X_test[:1000], y_test[:1000]
    class_names = CLASS_NAMES if source.startswith("Fashion-MNIST") else [f"blob {c}" for c in range(10)]
    print(f"{source}: {len(X)} training and {len(X_test)} test images of 28x28 = 784 pixels")

    model = fastmlp.MLP([784, 256, 10], activation="relu", loss="cross_entropy",
                        optimizer=fastmlp.optim.Adam(lr=1e-3), seed=args.seed)
    shapes = [w.shape for w in model.weights] + [b.shape for b in model.biases]
    shapes = [shapes[0], shapes[2], shapes[1], shapes[3]]  # W1, b1, W2, b2
    print("parameters: W1 {}, b1 {}, W2 {}, b2 {} -> {} in all".format(
        *shapes, model.n_parameters))

    def report(epoch, logs):
        test = evaluate(model, X_test, y_test)
        print(f"epoch {epoch:2d}: train loss {logs['loss']:.4f}, train accuracy "
              f"{logs['accuracy']:.4f}, test accuracy {test['accuracy']:.4f} "
              f"(lr {logs['lr']:.2e}, {logs['seconds']:.1f}s)")

    started = time.perf_counter()
    history = model.fit(X, y, epochs=epochs, batch_size=128, callbacks=[report],
                        lr_schedule=fastmlp.schedules.CosineAnnealingLR(T_max=epochs))
    seconds = time.perf_counter() - started
    test = evaluate(model, X_test, y_test)
    print(f"test accuracy {test['accuracy']:.4f}, test loss {test['loss']:.4f} after {epochs} "
          f"epochs ({seconds:.0f}s with evaluation)")
    print("per class: " + ", ".join(f"{name} {accuracy:.2f}" for name, accuracy
                                     in per_class_accuracy(model, X_test, y_test, class_names).items()))
    return {"shapes": shapes, "history": history, "test": test, "source": source,
            "core_evaluate": model.evaluate(X_test, y_test)}


if __name__ == "__main__":
    main()
