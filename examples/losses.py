"""MSE, Gaussian NLL and cross-entropy
===================================

Three losses and what they assume.

1. Regression, MSE vs Gaussian likelihood: on data whose noise grows with x, a network with a
   mean head and a (log-)variance head trained by Gaussian NLL predicts a variance that tracks
   the noise; MSE is the NLL with the variance fixed, so it can only give the mean.
2. MSE and outliers: squaring the residual lets a few far-off points dominate the loss and
   drag the least-squares line; a least-absolute-deviation line barely moves.
3. Classification with cross-entropy (softmax + negative log-likelihood) on two spirals.
"""
import argparse

import numpy as np

import fastmlp
from fastmlp.datasets import make_regression, make_spirals

NOISE = 0.3


def true_noise_std(x):
    """make_regression's heteroscedastic noise: NOISE * (x + 3) / 3."""
    return NOISE * (x + 3.0) / 3.0


def regression_heads(n_samples, epochs):
    X, y = make_regression(n_samples, noise=NOISE, heteroscedastic=True, seed=0)
    models = {}
    for loss in ("mse", "gaussian_nll"):
        model = fastmlp.MLP([1, 64, 64, 1], activation="tanh", loss=loss,
                            optimizer=fastmlp.optim.Adam(lr=0.01), dtype="float64", seed=0)
        model.fit(X, y, epochs=epochs, batch_size=64)
        models[loss] = model
    grid = np.linspace(-2.5, 2.5, 11).reshape(-1, 1)
    mean, variance = models["gaussian_nll"].predict_distribution(grid)
    predicted_std = np.sqrt(variance[:, 0])
    truth = np.sin(2 * grid[:, 0]) + 0.5 * grid[:, 0]
    print(f"1. y = sin(2x) + x/2 + noise of std {NOISE} (x + 3) / 3, {n_samples} points, "
          f"{epochs} epochs")
    print("      x | true mean |  MSE mean | NLL mean | NLL std | true std")
    for i in range(0, 11, 2):
        x = grid[i, 0]
        print(f"  {x:+5.1f} | {truth[i]:+9.3f} | {models['mse'].predict(grid[i:i + 1])[0]:+9.3f} |"
              f" {mean[i, 0]:+8.3f} | {predicted_std[i]:7.3f} | {true_noise_std(x):8.3f}")
    correlation = float(np.corrcoef(predicted_std, true_noise_std(grid[:, 0]))[0, 1])
    print(f"  correlation of predicted and true std over the grid: {correlation:.3f}")
    return {"std_correlation": correlation, "predicted_std": predicted_std,
            "true_std": true_noise_std(grid[:, 0])}


def least_absolute_deviation_line(x, y, iterations=100):
    """The L1 line by iteratively reweighted least squares (weights 1 / |residual|)."""
    design = np.column_stack([x, np.ones_like(x)])
    weights = np.ones_like(x)
    for _ in range(iterations):
        root = np.sqrt(weights)
        coef = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)[0]
        weights = 1.0 / np.maximum(np.abs(y - design @ coef), 1e-6)
    return coef


def fastmlp_line(x, y, epochs):
    """A one-layer linear network y = w x + b trained by full-batch gradient descent on MSE."""
    model = fastmlp.MLP([1, 1], loss="mse", optimizer=fastmlp.optim.SGD(lr=0.1),
                        dtype="float64", seed=0)
    model.fit(x.reshape(-1, 1), y, epochs=epochs, batch_size=len(x), shuffle=False)
    return np.array([model.weights[0][0, 0], model.biases[0][0]])


def outliers(n_samples, epochs):
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, n_samples)
    y_clean = 2.0 * x + 1.0 + rng.normal(0, 0.3, n_samples)
    y = y_clean.copy()
    bad = np.argsort(x)[-max(2, n_samples // 20):]  # 5% of the points, at the right end
    y[bad] -= 15.0
    design = np.column_stack([x, np.ones_like(x)])
    lines = {
        "MSE, clean data (fastmlp)": fastmlp_line(x, y_clean, epochs),
        "MSE, with outliers (fastmlp)": fastmlp_line(x, y, epochs),
        "MSE, with outliers (lstsq)": np.linalg.lstsq(design, y, rcond=None)[0],
        "L1, with outliers (IRLS)": least_absolute_deviation_line(x, y),
    }
    squared = (y - design @ lines["MSE, with outliers (fastmlp)"]) ** 2
    share = float(squared[bad].sum() / squared.sum())
    print(f"\n2. y = 2x + 1 + N(0, 0.3^2), {n_samples} points; {len(bad)} of them "
          f"({len(bad) / n_samples:.0%}) moved down by 15")
    for name, (slope, intercept) in lines.items():
        print(f"  {name:30s} slope {slope:+.3f}, intercept {intercept:+.3f}")
    print(f"  the outliers make {share:.0%} of the MSE at its minimum: squared residuals let "
          "them pull the line")
    return {"lines": lines, "outlier_share_of_loss": share}


def classification(n_samples, epochs):
    X, y = make_spirals(n_samples, noise=0.05, seed=0)
    model = fastmlp.MLP([2, 64, 64, 2], activation="relu", loss="cross_entropy",
                        optimizer=fastmlp.optim.Adam(lr=0.01), dtype="float64", seed=0)
    history = model.fit(X, y, epochs=epochs, batch_size=32)
    probabilities = model.predict_proba(X)
    nll = float(-np.mean(np.log(probabilities[np.arange(len(y)), y])))
    result = model.evaluate(X, y)
    print(f"\n3. two spirals, {n_samples} points, 2-64-64-2 relu, {epochs} epochs: training "
          f"accuracy {result['accuracy']:.3f}")
    print(f"  cross-entropy = -mean log p(true class): {nll:.5f} from predict_proba in NumPy, "
          f"{result['loss']:.5f} from the C++ loss (first epoch {history['loss'][0]:.3f})")
    return {"accuracy": result["accuracy"], "numpy_nll": nll, "core_loss": result["loss"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args(argv)
    quick = args.quick
    return {"regression": regression_heads(400 if quick else 2000, 60 if quick else 300),
            "outliers": outliers(100, 500),
            "classification": classification(200 if quick else 600, 100 if quick else 300)}


if __name__ == "__main__":
    main()
