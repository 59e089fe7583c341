"""Hebbian learning: Oja's rule and plain Hebb
===========================================

Hebbian learning on centred 2-D Gaussian data: Oja's rule finds the first principal
component (checked against NumPy's eigenvector) while plain Hebb's weights blow up."""
import argparse

import numpy as np

from fastmlp.classic import HebbianLayer


def first_principal_component(X):
    """Eigenvector of the covariance with the largest eigenvalue, and all eigenvalues."""
    eigenvalues, eigenvectors = np.linalg.eigh(X.T @ X / len(X))
    return eigenvectors[:, -1], eigenvalues[::-1]


def angle_degrees(u, v):
    """Angle between the lines spanned by u and v (the sign of a component is arbitrary)."""
    cosine = abs(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.degrees(np.arccos(min(cosine, 1.0))))


def main(argv=None):
    """Run Oja's and Hebb's rules; return a dict with the weights and the reference."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples and epochs")
    args = parser.parse_args(argv)
    n_samples, epochs = (1000, 10) if args.quick else (5000, 20)
    rng = np.random.default_rng(0)
    covariance = np.array([[3.0, 1.2], [1.2, 1.0]])
    X = rng.multivariate_normal([0.0, 0.0], covariance, size=n_samples)
    X -= X.mean(axis=0)  # Oja's rule finds principal components of centred data
    reference, eigenvalues = first_principal_component(X)
    print(f"{n_samples} centred points, covariance eigenvalues {np.round(eigenvalues, 3)}")
    print(f"NumPy's first eigenvector: {np.round(reference, 4)}")

    oja = HebbianLayer(2, 1, lr=0.002, rule="oja", seed=0).fit(X, epochs=epochs)
    w = oja.weights_[:, 0]
    print(f"Oja's rule after {epochs} epochs: w = {np.round(w, 4)}, |w| = "
          f"{np.linalg.norm(w):.4f}, angle to the eigenvector {angle_degrees(w, reference):.2f} deg")

    hebb = HebbianLayer(2, 1, lr=0.0002, rule="hebb", seed=0).fit(X, epochs=5)
    print("plain Hebb, weight norm per epoch: "
          + ", ".join(f"{norm:.3g}" for norm in hebb.weight_norm_curve_)
          + "  (grows without bound: nothing in W += lr * x y^T ever shrinks the weights)")
    return {"oja_weights": w, "reference": reference,
            "oja_norms": oja.weight_norm_curve_, "hebb_norms": hebb.weight_norm_curve_}


if __name__ == "__main__":
    main()
