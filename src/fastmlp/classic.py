"""The classic single-layer learning rules: Rosenblatt's perceptron, Widrow and Hoff's Adaline
(delta rule), Hebbian learning (plain Hebb, Oja, Sanger) and 1-D linear regression by gradient
descent. The per-sample loops run compiled (fastmlp._classic_rules, Cython); their NumPy
mirrors in fastmlp.reference are what the tests hold them against."""
import warnings
from typing import Any, List, Optional

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _classic_rules

Floats = NDArray[np.floating[Any]]
Labels = NDArray[np.int64]

__all__ = ["Perceptron", "Adaline", "HebbianLayer", "LinearRegressionGD"]


# --------------------------------------------------------------------------- argument checks


def _check_positive_float(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}: {value!r}")
    return bool(value)


def _check_seed(seed: Any) -> Optional[int]:
    if seed is not None and (isinstance(seed, (bool, np.bool_))
                             or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
    return None if seed is None else int(seed)


def _check_X(X: ArrayLike, n_features: Optional[int] = None, name: str = "X",
             float32_ok: bool = False) -> Floats:
    """Return X as a finite 2-D C-contiguous float64 array, with n_features columns if given.
    With float32_ok a float32 array stays float32: the compiled rules widen each value to
    float64 exactly as they read it, so the results are those of the float64 copy."""
    keep = float32_ok and getattr(X, "dtype", None) == np.float32
    try:
        X = np.asarray(X, dtype=np.float32 if keep else np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array, got {type(X).__name__}") from error
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, "
                         f"got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} must be finite; it contains NaN or infinity")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features but the model was fitted "
                         f"with {n_features}")
    return np.ascontiguousarray(X)  # the compiled rules read rows as contiguous memory


def _check_targets(y: ArrayLike, n_samples: int, name: str = "y") -> Floats:
    """Return y as a finite 1-D float64 array with one value per sample."""
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array, got {type(y).__name__}") from error
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} values but X has {n_samples} samples")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name} must be finite; it contains NaN or infinity")
    return y


def _check_binary_labels(y: ArrayLike, n_samples: int) -> Labels:
    """Return y as an int64 array of 0/1 labels."""
    y = _check_targets(y, n_samples)
    bad = np.setdiff1d(np.unique(y), [0.0, 1.0])
    if bad.size:
        raise ValueError(f"y must contain only the labels 0 and 1, got {bad[:5].tolist()}")
    return y.astype(np.int64)


def _check_fitted(model: object, attribute: str) -> None:
    if not hasattr(model, attribute):
        raise RuntimeError(f"this {type(model).__name__} is not fitted yet; call fit first")


def _sample_order(rng: np.random.Generator, n_samples: int, shuffle: bool = True) -> Labels:
    """The visiting order of one epoch: a fresh permutation from rng, or 0..n-1."""
    return rng.permutation(n_samples) if shuffle else np.arange(n_samples, dtype=np.int64)


def _net_input(X: Floats, weights: Floats) -> Floats:
    """``w0 + X @ w`` for ``weights = [w0, w]``, without copying X into ``[1, X]``."""
    net_input: Floats = X @ weights[1:] + weights[0]
    return net_input


def _with_bias_input(X: Floats) -> Floats:
    """Prepend the constant input 1 whose weight w0 plays the role of the bias."""
    return np.column_stack([np.ones(X.shape[0]), X])


def _step(net_input: Floats) -> Labels:
    """Heaviside step: 1 where the net input is >= 0, else 0."""
    return (net_input >= 0).astype(np.int64)


# --------------------------------------------------------------------------- perceptron


class _ThresholdUnit:
    """What Perceptron and Adaline share once trained: the net input ``w0 + w . x`` with the
    bias as weight w0 on a constant input, thresholded at 0 into the labels 0 and 1."""

    weights_: Floats
    n_features_in_: int

    def decision_function(self, X: ArrayLike) -> Floats:
        """Net input ``w0 + w . x`` for each row of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        _check_fitted(self, "weights_")
        X = _check_X(X, self.n_features_in_)
        return _net_input(X, self.weights_)

    def predict(self, X: ArrayLike) -> Labels:
        """Predicted labels: 1 where the net input is >= 0, else 0.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,), int64
        """
        return _step(self.decision_function(X))

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Fraction of rows of X whose predicted label equals y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels 0 and 1.

        Returns
        -------
        float
        """
        predictions = self.predict(X)
        y = _check_binary_labels(y, predictions.shape[0])
        return float(np.mean(predictions == y))


class Perceptron(_ThresholdUnit):
    """Rosenblatt's perceptron: a step unit trained by the perceptron learning rule.

    The output is ``step(w0 + w1 x1 + ... + wn xn)`` with ``step(z) = 1 if z >= 0 else 0``;
    the bias is the weight w0 on a constant input 1. Each training point that is
    misclassified moves the weights by ``lr * (y - y_hat) * x`` (with x including the
    constant 1); correctly classified points change nothing. On linearly separable
    data the rule stops making mistakes after finitely many updates (Novikoff's
    theorem); on data that is not separable, such as XOR, it never does.

    Parameters
    ----------
    lr : float, default 1.0
        Learning rate (> 0). Starting from zero weights it only scales the weights, so
        it does not change the predictions the rule makes.
    max_epochs : int, default 100
        Maximum number of passes over the training set.
    shuffle : bool, default False
        Whether to visit the training points in a new random order each epoch.
    seed : int or None
        Seed for the shuffling.

    Attributes
    ----------
    weights_ : ndarray of shape (n_features + 1,)
        ``[w0, w1, ..., wn]``, the bias weight first.
    converged_ : bool
        Whether the final weights classify every training point correctly.
    n_epochs_ : int
        Epochs run: up to and including the first epoch without a mistake, or
        `max_epochs` if there was none.
    mistakes_per_epoch_ : list of int
        Number of updates made in each epoch.
    """

    def __init__(self, lr: float = 1.0, max_epochs: int = 100, shuffle: bool = False,
                 seed: Optional[int] = None) -> None:
        self.lr = lr
        self.max_epochs = max_epochs
        self.shuffle = shuffle
        self.seed = seed

    def fit(self, X: ArrayLike, y: ArrayLike) -> "Perceptron":
        """Train on X and labels y in {0, 1}.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels 0 and 1.

        Returns
        -------
        self
        """
        lr = _check_positive_float("lr", self.lr)
        max_epochs = _check_positive_int("max_epochs", self.max_epochs)
        shuffle = _check_bool("shuffle", self.shuffle)
        rng = np.random.default_rng(_check_seed(self.seed))
        X = _check_X(X, float32_ok=True)
        y = _check_binary_labels(y, X.shape[0])
        weights = np.zeros(X.shape[1] + 1)
        self.mistakes_per_epoch_ = []
        for _ in range(max_epochs):
            order = _sample_order(rng, len(y), shuffle)
            mistakes = int(_classic_rules.perceptron_epoch(X, y, order, weights, lr))
            self.mistakes_per_epoch_.append(mistakes)
            if mistakes == 0:
                break
        self.weights_ = weights
        self.n_features_in_ = X.shape[1]
        self.n_epochs_ = len(self.mistakes_per_epoch_)
        self.converged_ = _classic_rules.perceptron_mistakes(X, y, weights) == 0
        return self


# --------------------------------------------------------------------------- Adaline


class Adaline(_ThresholdUnit):
    """Adaline: a linear unit trained by the delta rule (Widrow-Hoff / LMS).

    Labels 0 and 1 are mapped to the targets -1 and +1. Training is gradient descent on
    the mean squared error between the targets and the *net input*
    ``z = w0 + w . x`` (the output before the threshold), ``L = mean((t - z)^2)``, so the
    weights approach the least-squares solution of ``[1, X] w = t``. Prediction
    thresholds the net input at 0.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate (> 0). Too large a rate makes the loss diverge, which raises
        ValueError.
    max_epochs : int, default 1000
        Maximum number of passes over the training set.
    mode : {"batch", "online"}, default "batch"
        "batch": one step per epoch along the full gradient
        ``dL/dw = -2/N * [1, X]^T (t - z)``. "online": the LMS rule, one step per
        sample, ``w += lr * 2 * (t_i - z_i) * [1, x_i]``, samples in a random order.
    tol : float, default 1e-6
        Stop when no weight changed by more than tol over an epoch.
    seed : int or None
        Seed for the order of samples in online mode.

    Attributes
    ----------
    weights_ : ndarray of shape (n_features + 1,)
        ``[w0, w1, ..., wn]``, the bias weight first.
    loss_curve_ : list of float
        Mean squared error over the training set after each epoch.
    n_epochs_ : int
        Epochs run.
    converged_ : bool
        Whether the `tol` criterion was met before `max_epochs`.
    """

    def __init__(self, lr: float = 0.01, max_epochs: int = 1000, mode: str = "batch",
                 tol: float = 1e-6, seed: Optional[int] = None) -> None:
        self.lr = lr
        self.max_epochs = max_epochs
        self.mode = mode
        self.tol = tol
        self.seed = seed

    def fit(self, X: ArrayLike, y: ArrayLike) -> "Adaline":
        """Train on X and labels y in {0, 1}.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels 0 and 1.

        Returns
        -------
        self
        """
        lr = _check_positive_float("lr", self.lr)
        max_epochs = _check_positive_int("max_epochs", self.max_epochs)
        tol = _check_positive_float("tol", self.tol)
        if self.mode not in ("batch", "online"):
            raise ValueError(f"mode must be 'batch' or 'online', got {self.mode!r}")
        rng = np.random.default_rng(_check_seed(self.seed))
        X = _check_X(X)
        targets = 2.0 * _check_binary_labels(y, X.shape[0]) - 1.0
        inputs = _with_bias_input(X)
        weights: Floats = np.zeros(inputs.shape[1])
        epoch_step = self._batch_epoch if self.mode == "batch" else self._online_epoch
        self.loss_curve_ = []
        self.converged_ = False
        with np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(max_epochs):
                previous = weights.copy()
                weights = epoch_step(weights, X, inputs, targets, lr, rng)
                loss = float(np.mean((targets - inputs @ weights) ** 2))
                if not np.isfinite(loss):
                    raise ValueError(f"lr={self.lr!r} is too large: the loss diverged at "
                                     f"epoch {epoch + 1}")
                self.loss_curve_.append(loss)
                if np.max(np.abs(weights - previous)) < tol:
                    self.converged_ = True
                    break
        self.weights_ = weights
        self.n_features_in_ = X.shape[1]
        self.n_epochs_ = len(self.loss_curve_)
        return self

    @staticmethod
    def _batch_epoch(weights: Floats, X: Floats, inputs: Floats, targets: Floats, lr: float,
                     rng: np.random.Generator) -> Floats:
        errors = targets - inputs @ weights
        gradient = -2.0 / len(targets) * (inputs.T @ errors)
        return weights - lr * gradient

    @staticmethod
    def _online_epoch(weights: Floats, X: Floats, inputs: Floats, targets: Floats, lr: float,
                      rng: np.random.Generator) -> Floats:
        weights = weights.copy()
        _classic_rules.adaline_online_epoch(X, targets, _sample_order(rng, len(targets)),
                                            weights, lr)
        return weights


# --------------------------------------------------------------------------- Hebbian learning


class HebbianLayer:
    """A layer of linear units ``y = x @ W`` trained by an unsupervised Hebbian rule.

    `W` has shape (n_inputs, n_outputs), as everywhere in fastmlp. After each sample x
    with outputs y (a pre- and post-synaptic activity), the rules update:

    - ``"hebb"``: ``W += lr * outer(x, y)`` -- "fire together, wire together". The
      weights grow along the data's main direction and their norm grows without bound.
    - ``"oja"``: ``W += lr * (outer(x, y) - W @ outer(y, y))`` (Oja's subspace rule; for
      one output this is Oja's rule ``w += lr * y * (x - y * w)``). The decay term keeps
      the weights bounded: on centred data one output converges to the unit-norm first
      principal component, several outputs to an orthonormal basis of the leading
      principal subspace (in no particular order).
    - ``"sanger"``: ``W += lr * (outer(x, y) - W @ triu(outer(y, y)))`` (Sanger's
      generalised Hebbian algorithm): output j converges to the j-th principal component.

    Centre the data first for the PCA interpretation.

    Parameters
    ----------
    n_inputs : int
        Number of inputs (features).
    n_outputs : int, default 1
        Number of linear units.
    lr : float, default 0.01
        Learning rate (> 0).
    rule : {"hebb", "oja", "sanger"}, default "oja"
    seed : int or None
        Seed for the initial weights (normal, std 0.1) and the order of samples.

    Attributes
    ----------
    weights_ : ndarray of shape (n_inputs, n_outputs)
    weight_norm_curve_ : list of float
        Frobenius norm of the weights after each epoch.
    """

    _RULES = ("hebb", "oja", "sanger")

    def __init__(self, n_inputs: int, n_outputs: int = 1, lr: float = 0.01, rule: str = "oja",
                 seed: Optional[int] = None) -> None:
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.lr = lr
        self.rule = rule
        self.seed = seed

    def fit(self, X: ArrayLike, epochs: int = 20) -> "HebbianLayer":
        """Run `epochs` passes of the rule over the rows of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_inputs)
        epochs : int
            Passes over X, each in a new random order.

        Returns
        -------
        self

        Notes
        -----
        Calling fit again continues from the current weights, and ``weights_`` of shape
        (n_inputs, n_outputs) set before the first fit are used as the starting point
        (otherwise they are drawn from a normal distribution with std 0.1). If the plain
        Hebb rule overflows, training stops at the last finite weights with a
        RuntimeWarning.
        """
        n_inputs = _check_positive_int("n_inputs", self.n_inputs)
        n_outputs = _check_positive_int("n_outputs", self.n_outputs)
        lr = _check_positive_float("lr", self.lr)
        epochs = _check_positive_int("epochs", epochs)
        if self.rule not in self._RULES:
            raise ValueError(f"rule must be one of {self._RULES}, got {self.rule!r}")
        X = _check_X(X, n_inputs, float32_ok=True)
        if not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(_check_seed(self.seed))
        initial = getattr(self, "weights_", None)
        if initial is None or np.shape(initial) != (n_inputs, n_outputs):
            self.weights_ = self._rng.normal(0.0, 0.1, size=(n_inputs, n_outputs))
            self.weight_norm_curve_: List[float] = []
        self.weights_ = np.array(self.weights_, dtype=np.float64)
        if not hasattr(self, "weight_norm_curve_"):
            self.weight_norm_curve_ = []
        epoch_rule = {"hebb": _classic_rules.hebb_epoch, "oja": _classic_rules.oja_epoch,
                      "sanger": _classic_rules.sanger_epoch}[self.rule]
        outputs = np.empty(n_outputs)  # the compiled loops' scratch space for x @ W
        with np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(epochs):
                weights = self.weights_.copy()
                epoch_rule(X, _sample_order(self._rng, X.shape[0]), weights, lr, outputs)
                if not np.all(np.isfinite(weights)):
                    warnings.warn(f"the {self.rule!r} rule's weights overflowed in epoch "
                                  f"{epoch + 1}; stopping at the last finite weights",
                                  RuntimeWarning, stacklevel=2)
                    break
                self.weights_ = weights
                self.weight_norm_curve_.append(float(np.linalg.norm(weights)))
        return self

    def transform(self, X: ArrayLike) -> Floats:
        """The layer's outputs ``X @ weights_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_inputs)

        Returns
        -------
        ndarray of shape (n_samples, n_outputs)
        """
        _check_fitted(self, "weights_")
        return _check_X(X, self.weights_.shape[0]) @ self.weights_


# --------------------------------------------------------------------------- linear regression


class LinearRegressionGD:
    """Fit ``y = w x + b`` to 1-D data by gradient descent on the mean squared error.

    ``L = 1/N sum (y - w x - b)^2`` with gradients
    ``dL/dw = -2/N sum (y - w x - b) x`` and ``dL/db = -2/N sum (y - w x - b)``;
    each epoch takes one step ``w -= lr * dL/dw``, ``b -= lr * dL/db`` from w = b = 0.
    It converges to the least-squares line when ``lr`` is small enough (below
    ``1 / largest eigenvalue of mean([x, 1] [x, 1]^T)``).

    Parameters
    ----------
    lr : float, default 0.1
        Learning rate (> 0). A diverging loss raises ValueError.
    epochs : int, default 1000
        Number of passes over the data.
    mode : {"batch", "online"}, default "batch"
        "batch": one step per epoch along the full gradient above. "online": one step per
        sample, in a new random order each epoch, along the gradient of that sample's
        squared error: ``r = y_i - w x_i - b``, ``w -= lr * (-2 r x_i)``,
        ``b -= lr * (-2 r)`` (stochastic gradient descent; it hovers around the
        least-squares line at a distance that shrinks with ``lr``).
    seed : int or None
        Seed for the order of samples in online mode.

    Attributes
    ----------
    coef_ : float
        The slope w.
    intercept_ : float
        The intercept b.
    loss_curve_ : list of float
        The MSE after each step (one value per epoch).
    """

    def __init__(self, lr: float = 0.1, epochs: int = 1000, mode: str = "batch",
                 seed: Optional[int] = None) -> None:
        self.lr = lr
        self.epochs = epochs
        self.mode = mode
        self.seed = seed

    @staticmethod
    def _check_x(x: ArrayLike) -> Floats:
        x = np.asarray(x)
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1:
            raise ValueError(f"X must be 1-D (n_samples,) or (n_samples, 1), got shape "
                             f"{x.shape}")
        return _check_X(x.reshape(-1, 1))[:, 0]

    def fit(self, X: ArrayLike, y: ArrayLike) -> "LinearRegressionGD":
        """Fit the line by gradient descent on the mean squared error.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        lr = _check_positive_float("lr", self.lr)
        epochs = _check_positive_int("epochs", self.epochs)
        if self.mode not in ("batch", "online"):
            raise ValueError(f"mode must be 'batch' or 'online', got {self.mode!r}")
        rng = np.random.default_rng(_check_seed(self.seed))
        x = self._check_x(X)
        y = np.ascontiguousarray(_check_targets(y, x.shape[0]))
        slope, intercept = 0.0, 0.0
        self.loss_curve_ = []
        with np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(epochs):
                if self.mode == "online":
                    line = np.array([slope, intercept])
                    _classic_rules.linear_regression_online_epoch(
                        x, y, _sample_order(rng, len(y)), line, lr)
                    slope, intercept = float(line[0]), float(line[1])
                else:
                    residual = y - slope * x - intercept
                    slope -= lr * (-2.0 * float(np.mean(residual * x)))
                    intercept -= lr * (-2.0 * float(np.mean(residual)))
                loss = float(np.mean((y - slope * x - intercept) ** 2))
                if not np.isfinite(loss):
                    raise ValueError(f"lr={self.lr!r} is too large: the loss diverged at "
                                     f"epoch {epoch + 1}")
                self.loss_curve_.append(loss)
        self.coef_ = float(slope)
        self.intercept_ = float(intercept)
        return self

    def predict(self, X: ArrayLike) -> Floats:
        """``coef_ * x + intercept_`` for each x.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        _check_fitted(self, "coef_")
        return self.coef_ * self._check_x(X) + self.intercept_

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Coefficient of determination R^2 of the predictions.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
        y : array-like of shape (n_samples,)

        Returns
        -------
        float
            R^2, NaN when y is constant.
        """
        predictions = self.predict(X)
        y = _check_targets(y, predictions.shape[0])
        total = np.sum((y - y.mean()) ** 2)
        return float(1.0 - np.sum((y - predictions) ** 2) / total) if total > 0 else float("nan")
