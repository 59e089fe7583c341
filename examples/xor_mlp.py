"""XOR with a 2-4-1 MLP
====================

A 2-4-1 MLP solves XOR, which no single perceptron can: its hidden layer maps the four
points to features in which the two classes ARE linearly separable (a perceptron trained on
the hidden features converges, one trained on the raw inputs does not)."""
import argparse

import numpy as np

import fastmlp
from fastmlp.classic import Perceptron
from fastmlp.datasets import make_xor


def hidden_features(model, X):
    """The hidden layer's outputs tanh(X W1 + b1), computed from the learned weights."""
    return np.tanh(X @ model.weights[0] + model.biases[0])


def train_xor(hidden, epochs, seed):
    """A 2-hidden-1 network with tanh units and one sigmoid output (binary cross-entropy)."""
    X, y = make_xor()
    model = fastmlp.MLP([2, hidden, 1], activation="tanh", loss="bce",
                        optimizer=fastmlp.optim.Adam(lr=0.05), dtype="float64", seed=seed)
    model.fit(X, y.reshape(-1, 1), epochs=epochs, batch_size=4)
    return model


def main(argv=None):
    """Train, print the hidden features; return a dict of what was shown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer epochs (smoke test)")
    parser.add_argument("--hidden", type=int, default=4, help="hidden units (2 also works)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = 300 if args.quick else 1000
    X, y = make_xor()

    raw = Perceptron(max_epochs=100).fit(X, y)
    print(f"perceptron on the raw inputs: converged={raw.converged_} "
          f"(accuracy {raw.score(X, y):.2f}) -- XOR is not linearly separable")

    model = train_xor(args.hidden, epochs, args.seed)
    probabilities = model.predict_proba(X)[:, 0]
    accuracy = float(np.mean(model.predict(X)[:, 0] == y))
    print(f"\n2-{args.hidden}-1 MLP (tanh, sigmoid output), {epochs} epochs of Adam: "
          f"accuracy {accuracy:.2f}")
    features = hidden_features(model, X)
    print("  x1 x2 | target | P(y=1) | hidden features tanh(x W1 + b1)")
    for point, target, p, h in zip(X, y, probabilities, features):
        print(f"  {point[0]:2.0f} {point[1]:2.0f} |   {target}    | {p:6.3f} | "
              + " ".join(f"{value:+.3f}" for value in h))

    on_features = Perceptron(max_epochs=1000).fit(features, y)
    print(f"\nperceptron on the hidden features: converged={on_features.converged_} after "
          f"{on_features.n_epochs_} epochs -- the hidden layer made XOR linearly separable")
    readout = features @ model.weights[1][:, 0] + model.biases[1][0]
    separates = bool(np.all((readout > 0) == (y == 1)))
    print("the output unit's net input h W2 + b2 per point: "
          + ", ".join(f"{value:+.2f}" for value in readout)
          + f"; positive exactly for the XOR-true points: {separates}")
    return {"accuracy": accuracy, "raw_perceptron_converged": raw.converged_,
            "feature_perceptron_converged": on_features.converged_, "hidden": features,
            "readout_separates": separates}


if __name__ == "__main__":
    main()
