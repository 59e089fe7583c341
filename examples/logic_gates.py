"""Logic gates with the perceptron
===============================

Rosenblatt's perceptron on the two-input logic gates: it learns AND, OR, NAND and NOR,
and never learns XOR, because no straight line separates XOR's two classes."""
import argparse

from fastmlp.classic import Perceptron
from fastmlp.datasets import logic_gate

SEPARABLE_GATES = ("and", "or", "nand", "nor")


def describe_line(weights):
    """The decision boundary w0 + w1 x1 + w2 x2 = 0 as text."""
    w0, w1, w2 = weights
    return f"{w0:+g} {w1:+g}*x1 {w2:+g}*x2 = 0"


def train_gate(name, max_epochs):
    X, y = logic_gate(name)
    model = Perceptron(lr=1.0, max_epochs=max_epochs).fit(X, y)
    outputs = model.predict(X)
    print(f"{name.upper():>4}: converged={model.converged_} after {model.n_epochs_} epochs, "
          f"weights [w0, w1, w2] = {model.weights_.tolist()}")
    print(f"      boundary {describe_line(model.weights_)}; targets {y.tolist()}, "
          f"outputs {outputs.tolist()}, mistakes per epoch {model.mistakes_per_epoch_[:8]}"
          + (" ..." if len(model.mistakes_per_epoch_) > 8 else ""))
    return model


def main(argv=None):
    """Train a perceptron on each gate; return {gate name: fitted Perceptron}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="cap XOR at 20 epochs, not 100")
    args = parser.parse_args(argv)
    max_epochs = 20 if args.quick else 100
    models = {name: train_gate(name, max_epochs) for name in SEPARABLE_GATES}
    models["xor"] = train_gate("xor", max_epochs)
    print()
    print("XOR is not linearly separable: the points (0,1) and (1,0) must be on one side of")
    print("a line and (0,0) and (1,1) on the other, but any line with both of the first pair")
    print("on its positive side has their midpoint (0.5, 0.5) there too, and that is also the")
    print("midpoint of (0,0) and (1,1), so one of those is positive as well. The perceptron")
    print(f"rule therefore keeps making mistakes until the cap of {max_epochs} epochs; a hidden")
    print("layer (examples/xor_mlp.py) is needed.")
    return models


if __name__ == "__main__":
    main()
