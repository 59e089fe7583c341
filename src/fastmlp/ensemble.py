"""``fastmlp.Ensemble``: several MLPs that vote by averaging, class probabilities for
classifiers and outputs for regression, and ``Ensemble.train`` to fit n members that differ
only in their seed (initialisation, shuffling, dropout)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from .feedback import History
from .mlp import CLASSIFICATION_LOSSES, MLP

__all__ = ["Ensemble"]

# Probabilities are clipped to [_TINY, 1 - _TINY] before logarithms so that a member's
# confident mistake gives a large, finite loss.
_TINY = 1e-12


class Ensemble:
    """Average the predictions of fitted ``fastmlp.MLP`` members of one kind (same loss,
    input and output widths).

    ``predict_proba`` averages the members' probabilities (cross_entropy, bce) and
    ``predict`` takes the argmax / 0.5 threshold of the average; for mse it averages the
    outputs; for gaussian_nll ``predict_distribution`` gives the mixture's mean and
    variance. ``evaluate`` scores the averaged prediction with the members' loss; for
    gaussian_nll it scores the mixture itself (its negative log-likelihood), not a Gaussian
    of the mixture's moments.

    Parameters
    ----------
    models : sequence of MLP
        The fitted members, all with the same loss, input width and output width.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        if isinstance(models, MLP) or not hasattr(models, "__len__") or len(models) == 0:
            raise ValueError(f"models must be a non-empty sequence of fastmlp.MLP, got {models!r}")
        for index, model in enumerate(models):
            if not isinstance(model, MLP):
                raise TypeError(f"models[{index}] must be a fastmlp.MLP, got {type(model).__name__}")
        first = models[0]
        for index, model in enumerate(models):
            if (model.loss, model.layer_sizes[0], model.layer_sizes[-1]) != \
                    (first.loss, first.layer_sizes[0], first.layer_sizes[-1]):
                raise ValueError(f"models[{index}] ({model.loss}, {model.layer_sizes[0]} inputs, "
                                 f"{model.layer_sizes[-1]} outputs) differs from models[0] "
                                 f"({first.loss}, {first.layer_sizes[0]} inputs, "
                                 f"{first.layer_sizes[-1]} outputs)")
        self.models: List[MLP] = list(models)
        self.loss = first.loss
        self.histories: List[Any] = []

    @classmethod
    def train(cls, make_model: Callable[[int], MLP], X: Any, y: Any, n_members: int = 5,
              seed: int = 0, **fit_options: Any) -> "Ensemble":
        """Fit ``n_members`` models ``make_model(seed + i)`` on (X, y), each with
        ``fit_options`` (epochs, batch_size, ...); their histories are kept in ``histories``."""
        if isinstance(n_members, bool) or not isinstance(n_members, (int, np.integer)) \
                or n_members < 1:
            raise ValueError(f"n_members must be an integer >= 1, got {n_members!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if not callable(make_model):
            raise TypeError(f"make_model must be a callable taking a seed, got {make_model!r}")
        models: List[MLP] = []
        histories: List[History] = []
        for member in range(int(n_members)):
            model = make_model(int(seed) + member)
            if not isinstance(model, MLP):
                raise TypeError(f"make_model({int(seed) + member}) must return a fastmlp.MLP, "
                                f"got {type(model).__name__}")
            if any(model is other for other in models):
                raise ValueError("make_model must return a new model on every call")
            histories.append(model.fit(X, y, **fit_options))
            models.append(model)
        ensemble = cls(models)
        ensemble.histories = histories
        return ensemble

    def __len__(self) -> int:
        return len(self.models)

    def predict_proba(self, X: Any) -> np.ndarray:
        """The members' class probabilities, averaged.

        Parameters
        ----------
        X : array-like of shape (n, n_features)

        Returns
        -------
        ndarray of shape (n, n_outputs)
        """
        if self.loss not in CLASSIFICATION_LOSSES:
            raise ValueError(f"predict_proba needs loss cross_entropy or bce, these models use "
                             f"{self.loss!r}")
        return np.asarray(np.mean([model.predict_proba(X) for model in self.models], axis=0))

    def predict_distribution(self, X: Any) -> Tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the equal-weight mixture of the members' Gaussians
        (gaussian_nll): mean of the means; mean of (variance + mean^2) minus mean^2.

        Parameters
        ----------
        X : array-like of shape (n, n_features)

        Returns
        -------
        mean, variance : ndarray of shape (n, n_targets)
        """
        if self.loss != "gaussian_nll":
            raise ValueError(f"predict_distribution needs loss 'gaussian_nll', these models use "
                             f"{self.loss!r}")
        means, variances = zip(*(model.predict_distribution(X) for model in self.models))
        means, variances = np.array(means), np.array(variances)
        mean = means.mean(axis=0)
        return mean, (variances + means ** 2).mean(axis=0) - mean ** 2

    def _averaged_outputs(self, X: Any) -> np.ndarray:
        """(n, width) averaged probabilities (classification) or means (regression)."""
        if self.loss in CLASSIFICATION_LOSSES:
            return self.predict_proba(X)
        if self.loss == "gaussian_nll":
            return self.predict_distribution(X)[0]
        return np.asarray(np.mean([model._outputs(X) for model in self.models], axis=0))

    def predict(self, X: Any) -> np.ndarray:
        """The ensemble's predictions.

        Parameters
        ----------
        X : array-like of shape (n, n_features)

        Returns
        -------
        ndarray
            Labels (argmax of the averaged probabilities; bce: averaged probability >= 0.5)
            or averaged outputs (a single regression output as shape (n,)).
        """
        outputs = self._averaged_outputs(X)
        if self.loss == "cross_entropy":
            return np.asarray(np.argmax(outputs, axis=1))
        if self.loss == "bce":
            return (outputs >= 0.5).astype(np.int64)
        return outputs[:, 0].copy() if outputs.shape[1] == 1 else outputs

    def evaluate(self, X: Any, y: Any) -> Dict[str, float]:
        """The members' loss on the averaged prediction, and accuracy for classifiers.

        cross_entropy: mean -log of the averaged probability of the true class; bce: binary
        cross-entropy of the averaged probabilities; mse: squared error of the averaged
        outputs; poisson: mean(mu - y log(mu)) of the averaged means mu (MLP.evaluate's loss
        with z = log(mu)); gaussian_nll: the negative log-likelihood of the ensemble's predictive
        distribution, the equal-weight mixture of the members' Gaussians (diagonal over the
        targets), ``-log(mean_m N(y; mean_m, var_m))`` per row (computed in log space), averaged
        over rows and divided by the number of targets. Like ``MLP.evaluate``'s gaussian_nll it
        leaves out the constant 0.5 * log(2 pi) per target, so a one-member ensemble's loss is
        its member's and ensemble and single-model losses compare directly.

        Parameters
        ----------
        X : array-like of shape (n, n_features)
        y : array-like
            Labels or targets, as for ``MLP.evaluate``.

        Returns
        -------
        dict
            ``{"loss": ...}``, plus ``"accuracy"`` for classification losses.
        """
        X, y = self.models[0]._prepare(X, y)
        if self.loss == "cross_entropy":
            probs = self.predict_proba(X)
            true_class = np.clip(probs[np.arange(len(y)), y], _TINY, 1.0)
            return {"loss": float(-np.mean(np.log(true_class))),
                    "accuracy": float(np.mean(np.argmax(probs, axis=1) == y))}
        if self.loss == "bce":
            probs = np.clip(self.predict_proba(X), _TINY, 1 - _TINY)
            loss = -np.mean(y * np.log(probs) + (1 - y) * np.log(1 - probs))
            correct = np.all((probs >= 0.5) == (y >= 0.5), axis=1)
            return {"loss": float(loss), "accuracy": float(np.mean(correct))}
        if self.loss == "gaussian_nll":
            return {"loss": self._mixture_nll(X, y)}
        if self.loss == "poisson":
            return {"loss": _poisson_nll_of_means(self._averaged_outputs(X), y)}
        return {"loss": float(np.mean((self._averaged_outputs(X) - y) ** 2))}

    def _mixture_nll(self, X: np.ndarray, y: np.ndarray) -> float:
        """Mean over rows of -log(mean_m N(y; mean_m, var_m)) / n_targets, without the
        0.5 * log(2 pi) per target (the convention of the core's gaussian_nll)."""
        n_targets = self.models[0].layer_sizes[-1]
        # (members, n, 2 * n_targets): means, then log-variances (exact, not log(exp(.))).
        outputs = np.array([model._outputs(X) for model in self.models], dtype=np.float64)
        means, log_variances = outputs[..., :n_targets], outputs[..., n_targets:]
        log_densities = -0.5 * np.sum(log_variances + (y - means) ** 2 * np.exp(-log_variances),
                                      axis=2)  # (members, n)
        # log of the mean of exp(log_densities) over members, shifted by the largest so that
        # densities far below the smallest float still count.
        largest = log_densities.max(axis=0)
        if not np.all(np.isfinite(largest)):  # every member gives the row density 0
            return float("inf")
        log_mixture = largest + np.log(np.mean(np.exp(log_densities - largest), axis=0))
        return float(-np.mean(log_mixture) / n_targets)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy for classification losses, else the negative loss (as MLP.score).

        Parameters
        ----------
        X : array-like of shape (n, n_features)
        y : array-like
            Labels or targets, as for ``MLP.evaluate``.

        Returns
        -------
        float
        """
        result = self.evaluate(X, y)
        return result.get("accuracy", -result["loss"])

    def __repr__(self) -> str:
        return f"Ensemble({len(self.models)} x MLP, loss={self.loss!r})"


def _poisson_nll_of_means(mean: np.ndarray, y: np.ndarray) -> float:
    """mean(mu - y log(mu)) over every element, y log(mu) taken as 0 where y is 0 (so a mean
    that underflowed to 0 costs nothing where nothing was counted)."""
    mean, y = mean.astype(np.float64), y.astype(np.float64)
    log_term = np.zeros_like(y)
    counted = y > 0
    with np.errstate(divide="ignore"):
        log_term[counted] = y[counted] * np.log(mean[counted])
    return float(np.mean(mean - log_term))
