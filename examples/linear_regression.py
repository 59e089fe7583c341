"""Linear regression by gradient descent
=====================================

Linear regression y = w x + b by gradient descent on the mean squared error, compared
with the closed-form least-squares line."""
import argparse

import numpy as np

from fastmlp.classic import LinearRegressionGD


def closed_form_line(x, y):
    """Least squares in closed form: w = cov(x, y) / var(x), b = mean(y) - w mean(x)."""
    slope = np.mean((x - x.mean()) * (y - y.mean())) / np.mean((x - x.mean()) ** 2)
    return slope, y.mean() - slope * x.mean()


def main(argv=None):
    """Fit a noisy line both ways; return a dict with both answers and the loss curve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer points")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=500)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n_samples = 50 if args.quick else 500
    x = rng.uniform(-2.0, 2.0, size=n_samples)
    y = 3.0 * x + 2.0 + rng.normal(0.0, 0.5, size=n_samples)
    print(f"data: {n_samples} points from y = 3 x + 2 + N(0, 0.5^2)")

    model = LinearRegressionGD(lr=args.lr, epochs=args.epochs).fit(x, y)
    for epoch in (1, 5, 10, 50, 100, args.epochs):
        if epoch <= args.epochs:
            print(f"  epoch {epoch:4d}: MSE {model.loss_curve_[epoch - 1]:.6f}")
    slope, intercept = closed_form_line(x, y)
    closed_form_loss = np.mean((y - slope * x - intercept) ** 2)
    print(f"gradient descent: w = {model.coef_:.6f}, b = {model.intercept_:.6f}")
    print(f"closed form:      w = {slope:.6f}, b = {intercept:.6f}  (MSE {closed_form_loss:.6f})")
    print(f"difference:       |dw| = {abs(model.coef_ - slope):.2e}, "
          f"|db| = {abs(model.intercept_ - intercept):.2e}")
    return {"gd": (model.coef_, model.intercept_), "closed_form": (slope, intercept),
            "loss_curve": model.loss_curve_, "closed_form_loss": closed_form_loss}


if __name__ == "__main__":
    main()
