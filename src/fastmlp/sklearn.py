"""scikit-learn estimators on top of fastmlp.MLP: MLPClassifier and MLPRegressor take
scikit-learn's parameter names and expose its fitted attributes. Importing this module imports
scikit-learn; the rest of fastmlp never does.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from numbers import Integral, Real
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin  # type: ignore[import-untyped]
except ImportError as error:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastmlp.MLPClassifier and fastmlp.MLPRegressor need scikit-learn: "
                      "pip install scikit-learn") from error
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sklearn.utils import check_random_state  # type: ignore[import-untyped]
from sklearn.utils.multiclass import check_classification_targets, type_of_target  # type: ignore[import-untyped]
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data  # type: ignore[import-untyped]

from . import optim
from .mlp import MLP, load

__all__ = ["MLPClassifier", "MLPRegressor", "expected_failed_checks"]

# scikit-learn's activation names -> fastmlp's ("logistic" is scikit-learn's sigmoid).
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "sigmoid": "sigmoid",
               "tanh": "tanh", "relu": "relu", "leaky_relu": "leaky_relu", "gelu": "gelu"}
SOLVERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
# Changing one of these between fits with warm_start (or partial_fit) would need new weights.
ARCHITECTURE_PARAMS = ("hidden_layer_sizes", "activation", "dropout", "batch_norm", "dtype")


def expected_failed_checks(estimator: Any) -> Dict[str, str]:
    """scikit-learn's estimator checks that ``estimator`` fails by design, with the reason:
    pass it as ``expected_failed_checks`` to ``check_estimator`` / ``parametrize_with_checks``
    (scikit-learn >= 1.6's successor of the ``_xfail_checks`` tag). Empty for both estimators."""
    # None today: predictions of a batch and of any subset of it are bitwise equal in float32
    # and float64 (every GEMM path sums in one canonical order), so
    # check_methods_subset_invariance passes too. Kept so callers need not change when a
    # check fails by design again.
    return {}


# ---- parameter checks (in fit, as scikit-learn requires: __init__ only stores) ---------------


def _bad(name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"{name} must be {expected}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise _bad(name, value, f"an integer >= {minimum}")
    return int(value)


def _check_real(name: str, value: Any, low: float, high: float = np.inf, *,
                low_open: bool = False, high_open: bool = True) -> float:
    ok = not isinstance(value, bool) and isinstance(value, Real) and not np.isnan(float(value))
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise _bad(name, value, f"a number in {interval}")
    return float(value)


def _check_hidden_layer_sizes(value: Any) -> List[int]:
    sizes = [value] if isinstance(value, Integral) and not isinstance(value, bool) else value
    try:
        sizes = list(sizes)
    except TypeError:
        raise _bad("hidden_layer_sizes", value, "an int or a sequence of ints >= 1") from None
    if any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in sizes):
        raise _bad("hidden_layer_sizes", value, "an int or a sequence of ints >= 1")
    return [int(s) for s in sizes]


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _bad(name, value, "True or False")
    return bool(value)


# ---- the shared estimator ------------------------------------------------------------------


class _BaseMLP(BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type hints
    """What MLPClassifier and MLPRegressor share: parameters, the training loop with
    scikit-learn's stopping rules, warm starts, partial_fit, fitted attributes, pickling."""

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate_init: float = 0.001, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, verbose: bool = False,
                 warm_start: bool = False, momentum: float = 0.9, nesterovs_momentum: bool = True,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 n_iter_no_change: int = 10, dropout: float = 0.0, batch_norm: bool = False,
                 weight_decay: float = 0.0, dtype: Any = "float32",
                 n_threads: Optional[int] = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.weight_decay = weight_decay
        self.dtype = dtype
        self.n_threads = n_threads

    # -- what the subclasses provide --

    def _encode_targets(self, y: np.ndarray, first: bool, incremental: bool,
                        classes: Any) -> np.ndarray:
        """Targets as fastmlp.MLP wants them; on the first fit also sets the output layout."""
        raise NotImplementedError

    def _check_y(self, y: np.ndarray) -> np.ndarray:
        return y

    def _stratify(self, y: np.ndarray) -> Optional[np.ndarray]:
        return None

    # -- checks --

    def _check_params(self) -> Dict[str, Any]:
        """Every parameter checked, with the value fastmlp.MLP needs."""
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not supported: fastmlp trains with stochastic "
                             f"optimizers only; valid: {', '.join(SOLVERS)}")
        if self.solver not in SOLVERS:
            raise _bad("solver", self.solver, f"one of {', '.join(SOLVERS)}")
        if self.activation not in ACTIVATIONS:
            raise _bad("activation", self.activation, f"one of {', '.join(ACTIVATIONS)}")
        if self.batch_size != "auto":
            try:
                _check_int("batch_size", self.batch_size, 1)
            except ValueError:
                raise _bad("batch_size", self.batch_size, "'auto' or an integer >= 1") from None
        if self.dtype not in ("float32", "float64", np.float32, np.float64):
            raise _bad("dtype", self.dtype, "'float32' or 'float64'")
        if self.n_threads is not None:
            _check_int("n_threads", self.n_threads, 1)
        if self.verbose not in (0, 1, False, True):
            raise _bad("verbose", self.verbose, "True or False")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping", "batch_norm"):
            _check_flag(name, getattr(self, name))
        _check_int("max_iter", self.max_iter, 1)
        _check_int("n_iter_no_change", self.n_iter_no_change, 1)
        _check_real("alpha", self.alpha, 0.0)
        _check_real("weight_decay", self.weight_decay, 0.0)
        _check_real("learning_rate_init", self.learning_rate_init, 0.0, low_open=True)
        _check_real("tol", self.tol, 0.0)
        _check_real("momentum", self.momentum, 0.0, 1.0, high_open=False)
        _check_real("validation_fraction", self.validation_fraction, 0.0, 1.0, low_open=True)
        _check_real("beta_1", self.beta_1, 0.0, 1.0)
        _check_real("beta_2", self.beta_2, 0.0, 1.0)
        _check_real("epsilon", self.epsilon, 0.0, low_open=True)
        _check_real("dropout", self.dropout, 0.0, 1.0)
        return {"hidden_layer_sizes": _check_hidden_layer_sizes(self.hidden_layer_sizes),
                "activation": ACTIVATIONS[self.activation], "dropout": float(self.dropout),
                "batch_norm": bool(self.batch_norm), "dtype": np.dtype(self.dtype).name}

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        if int(self.batch_size) > n_samples:
            warnings.warn(f"Got batch_size={self.batch_size} larger than the {n_samples} "
                          "samples; it is clipped to the sample count", UserWarning)
        return min(int(self.batch_size), n_samples)

    def _optimizer(self, batch_size: int) -> optim.Optimizer:
        """The solver as a fastmlp optimizer. alpha is scikit-learn's L2 penalty, 0.5 * alpha *
        ||W||^2 / batch_size added to each batch's loss, i.e. a weight decay of alpha / batch_size."""
        lr, decay = float(self.learning_rate_init), self.alpha / batch_size + self.weight_decay
        if self.solver == "sgd":
            return optim.SGD(lr=lr, momentum=self.momentum, weight_decay=decay,
                             nesterov=bool(self.nesterovs_momentum) and self.momentum > 0)
        if self.solver in ("adam", "adamw"):
            cls = optim.Adam if self.solver == "adam" else optim.AdamW
            return cls(lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon, weight_decay=decay)
        return optim.OPTIMIZERS[self.solver](lr=lr, weight_decay=decay)

    # -- fitting --

    # Set by the first fit: the architecture it used, the random state every later draw comes
    # from, the fastmlp model, and the output layout.
    _config: Dict[str, Any]
    _random_state: np.random.RandomState
    _model: MLP
    _n_outputs: int
    _network_outputs: int
    _loss: str
    _loss_scale: float

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None) -> "_BaseMLP":
        config = self._check_params()
        continuing = hasattr(self, "_model") and (incremental or self.warm_start)
        if continuing and config != self._config:
            changed = [key for key in ARCHITECTURE_PARAMS if config[key] != self._config[key]]
            raise ValueError(f"{', '.join(changed)} changed since the model was fitted; "
                             "fit again with warm_start=False to start over")
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=isinstance(self, RegressorMixin), reset=not continuing)
        y = self._check_y(y)
        targets = self._encode_targets(y, not continuing, incremental, classes)
        batch_size = self._batch_size(X.shape[0])
        if not continuing:
            self._config = config
            self._random_state = check_random_state(self.random_state)
            self._model = self._new_model(X.shape[1], batch_size)
            self._reset_progress()
        elif not incremental:  # warm_start: scikit-learn starts a new optimizer on each fit
            self._model = self._new_model(X.shape[1], batch_size, start_from=self._model)
        self._model.n_threads = self.n_threads
        self._start_stopping_state(not continuing, incremental)
        self._train(X, targets, y, batch_size, incremental)
        self._set_fitted_attributes()
        return self

    def _new_model(self, n_features: int, batch_size: int, start_from: Optional[MLP] = None) -> MLP:
        config = self._config
        seed = int(self._random_state.randint(np.iinfo(np.int32).max))
        model = MLP([n_features, *config["hidden_layer_sizes"], self._network_outputs],
                    activation=config["activation"], loss=self._loss,
                    optimizer=self._optimizer(batch_size), dropout=config["dropout"],
                    batch_norm=config["batch_norm"], dtype=config["dtype"], seed=seed)
        if start_from is not None:
            model._restore(start_from._snapshot())
            model.fitted = True
        return model

    def _reset_progress(self) -> None:
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_: List[float] = []

    def _start_stopping_state(self, fresh: bool, incremental: bool) -> None:
        """scikit-learn's bookkeeping: best validation score with early stopping, else best
        loss; kept across warm-started fits and partial_fit calls."""
        if not incremental:
            self._no_improvement_count = 0
        if not fresh and self.early_stopping == (self.validation_scores_ is not None):
            return
        if self.early_stopping:
            self.validation_scores_: Optional[List[float]] = []
            self.best_validation_score_: Optional[float] = -np.inf
            self.best_loss_: Optional[float] = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _split_validation(self, X: np.ndarray, targets: np.ndarray,
                          y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        X_train, X_val, t_train, _, _, y_val = train_test_split(
            X, targets, y, random_state=self._random_state, test_size=self.validation_fraction,
            stratify=self._stratify(y))
        if X_val.shape[0] < 2:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} leaves "
                             f"{X_val.shape[0]} validation samples; early stopping needs 2+: "
                             "raise it or give more samples")
        return X_train, t_train, X_val, y_val

    def _train(self, X: np.ndarray, targets: np.ndarray, y: np.ndarray, batch_size: int,
               incremental: bool) -> None:
        """Epochs with scikit-learn's stopping rules; y (as given) scores the validation set."""
        validation = None
        if self.early_stopping:
            X, targets, X_val, y_val = self._split_validation(X, targets, y)
            validation = (X_val, y_val)
            batch_size = min(batch_size, X.shape[0])
        best_state = None
        for epoch in range(1 if incremental else self.max_iter):
            history = self._model.fit(X, targets, epochs=1, batch_size=batch_size,
                                      shuffle=bool(self.shuffle))
            if len(history) == 0 or history.partial_epoch:
                break  # Ctrl-C cut the epoch short: keep the model as it is, count no iteration
            self.n_iter_ += 1
            self.t_ += X.shape[0]
            self.loss_ = self._reported_loss(history["loss"][-1], batch_size)
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if self._update_no_improvement(validation):
                best_state = self._model._snapshot()
            if incremental or history.interrupted:
                break
            if self._no_improvement_count > self.n_iter_no_change:
                if self.verbose:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    print(f"{what} did not improve more than tol={self.tol} for "
                          f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                break
            if epoch == self.max_iter - 1:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning)
        if best_state is not None:
            self._model._restore(best_state)

    def _reported_loss(self, mean_loss: float, batch_size: int) -> float:
        """The epoch's loss as scikit-learn defines loss_: its loss function (see
        _loss_scale) plus the L2 penalty 0.5 * alpha * ||W||^2 / batch_size."""
        squares = sum(float(np.dot(w.ravel(), w.ravel())) for w in self._model.weights)
        return float(mean_loss * self._loss_scale + 0.5 * self.alpha * squares / batch_size)

    def _update_no_improvement(self, validation: Optional[Tuple[np.ndarray, np.ndarray]]) -> bool:
        """scikit-learn's stopping rule; True when this epoch is the best so far (early stopping)."""
        if validation is None:
            last, best = self.loss_curve_[-1], float(self.best_loss_)  # type: ignore[arg-type]
            if last > best - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(best, last)
            return False
        score = float(self.score(*validation))  # accuracy or R^2, as scikit-learn
        best = float(self.best_validation_score_)  # type: ignore[arg-type]
        assert self.validation_scores_ is not None
        self.validation_scores_.append(score)
        if score < best + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > best:
            self.best_validation_score_ = score
            return True
        return False

    def _set_fitted_attributes(self) -> None:
        self.coefs_ = self._model.weights
        self.intercepts_ = self._model.biases
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = self._n_outputs

    # -- prediction --

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_model")

    def _forward(self, X: Any) -> np.ndarray:
        """The network's outputs (after the loss's link) in the input's float dtype."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        self._model.n_threads = self.n_threads
        return self._model._outputs(X).astype(X.dtype, copy=False)

    # -- pickling: the compiled model travels as fastmlp's own .npz file --

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        model = state.pop("_model", None)
        if model is not None:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, "model.npz")
                model.save(path)
                with open(path, "rb") as file:
                    state["_model_npz"] = file.read()
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        saved = state.pop("_model_npz", None)
        super().__setstate__(state)
        if saved is not None:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, "model.npz")
                with open(path, "wb") as file:
                    file.write(saved)
                self._model = load(path)


# ---- the classifier --------------------------------------------------------------------------

_SHARED_PARAMETERS = """
    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Width of each hidden layer.
    activation : str, default "relu"
        Hidden activation: "identity", "logistic", "tanh", "relu" (scikit-learn's), or
        fastmlp's "leaky_relu", "gelu".
    solver : str, default "adam"
        "sgd" or "adam" (scikit-learn's), or fastmlp's "adamw", "rmsprop", "adagrad",
        "adadelta" (with torch's defaults beyond the learning rate). "lbfgs" is not available.
    alpha : float, default 1e-4
        L2 penalty scaled as scikit-learn does, 0.5 * alpha * ||W||^2 / batch_size per batch:
        a weight decay of alpha / batch_size (fastmlp applies it to biases too).
    batch_size : int or "auto", default "auto"
        Rows per step; "auto" is min(200, n_samples); larger values are clipped with a warning.
    learning_rate_init : float, default 1e-3
        The solver's (constant) learning rate.
    max_iter : int, default 200
        Epochs at most (per fit).
    shuffle : bool, default True
        Reshuffle the samples every epoch.
    random_state : int, RandomState or None, default None
        Seeds initialisation, shuffling, dropout and the validation split.
    tol : float, default 1e-4
        Training stops after more than n_iter_no_change epochs in a row whose loss (or, with
        early_stopping, validation score) did not improve on the best by tol.
    verbose : bool, default False
        Print the loss of every epoch.
    warm_start : bool, default False
        fit starts from the previous solution (with a new optimizer, as scikit-learn).
    momentum : float, default 0.9
        Momentum of "sgd".
    nesterovs_momentum : bool, default True
        Nesterov momentum for "sgd" (when momentum > 0).
    early_stopping : bool, default False
        Hold out validation_fraction of the data (stratified for single-label
        classification), stop on its score, keep the best epoch's weights.
    validation_fraction : float, default 0.1
        Share of the data held out by early_stopping.
    beta_1, beta_2, epsilon : float, default 0.9, 0.999, 1e-8
        Adam's (and AdamW's) moment decays and epsilon.
    n_iter_no_change : int, default 10
        Epochs without improvement tolerated (see tol).
    dropout : float, default 0.0
        fastmlp: probability of zeroing each hidden unit while training.
    batch_norm : bool, default False
        fastmlp: batch normalisation after each hidden dense layer.
    weight_decay : float, default 0.0
        fastmlp: added to the decay that alpha implies (decoupled for "adamw").
    dtype : "float32" or "float64", default "float32"
        fastmlp: the precision the network trains and predicts in.
    n_threads : int or None, default None
        fastmlp: OpenMP threads for this estimator's calls; None uses fastmlp's setting.
"""

_SHARED_ATTRIBUTES = """
    coefs_ : list of ndarray
        Copies of the weight matrices, coefs_[i] of shape (fan_in, fan_out), in the model's dtype.
    intercepts_ : list of ndarray
        Copies of the bias vectors.
    loss_ : float
        The last epoch's loss as scikit-learn defines it (see the class description),
        plus the L2 penalty.
    loss_curve_ : list of float
        loss_ of every epoch.
    best_loss_ : float or None
        The lowest loss_ (None with early_stopping).
    validation_scores_ : list of float or None
        The held-out score of every epoch with early_stopping (else None).
    best_validation_score_ : float or None
        Their best.
    n_iter_ : int
        Epochs trained.
    t_ : int
        Training samples seen.
    n_features_in_ : int
        Input width; feature_names_in_ too when X had string column names.
    n_layers_ : int
        Layers, input and output included.
    n_outputs_ : int
        Output units.
    out_activation_ : str
        The output activation.
"""

_X_DOC = """X : array-like of shape (n_samples, n_features)
            Input samples."""
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _fill_doc(method: _Method) -> _Method:
    """Put the shared description of X into the method's docstring."""
    method.__doc__ = (method.__doc__ or "").replace("{X}", _X_DOC)
    return method


class MLPClassifier(ClassifierMixin, _BaseMLP):  # type: ignore[misc]
    __doc__ = """A multi-layer perceptron classifier with scikit-learn's interface, trained by fastmlp.

    It minimises the log-loss: softmax outputs for 3+ classes, a single logistic output for
    two (as scikit-learn), logistic outputs for a multi-label indicator matrix. Labels may be
    of any type (strings, non-contiguous integers).
""" + _SHARED_PARAMETERS + """
    Attributes
    ----------
    classes_ : ndarray
        The class labels (for multi-label, 0..n_labels-1).""" + _SHARED_ATTRIBUTES + """
    loss_ is the mean log-loss (summed over labels for multi-label), as scikit-learn reports it.
"""

    @_fill_doc
    def fit(self, X: Any, y: Any) -> "MLPClassifier":
        """Train for up to max_iter epochs (with warm_start, from the last weights).

        Parameters
        ----------
        {X}
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 0/1 indicator matrix for multi-label classification.

        Returns
        -------
        MLPClassifier
            self.
        """
        return self._fit(X, y, incremental=False)

    @_fill_doc
    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "MLPClassifier":
        """One epoch over (X, y), continuing the current model and optimizer state.

        Parameters
        ----------
        {X}
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 0/1 indicator matrix.
        classes : array-like, optional
            Every label that will ever be seen; required on the first call.

        Returns
        -------
        MLPClassifier
            self.
        """
        return self._fit(X, y, incremental=True, classes=classes)

    def _encode_targets(self, y: np.ndarray, first: bool, incremental: bool,
                        classes: Any) -> np.ndarray:
        if first:
            self._set_classes(y, incremental, classes)
        if self._layout == "multilabel":
            if y.ndim != 2 or y.shape[1] != len(self.classes_):
                raise ValueError(f"y must be a {len(self.classes_)}-column indicator matrix as in "
                                 f"the first fit, got shape {y.shape}")
            return np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D labels as in the first fit, got shape {y.shape}")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"y has classes {unknown.tolist()} not seen in the first fit "
                             f"(classes_ = {self.classes_.tolist()}); fit with "
                             "warm_start=False to learn new classes")
        indices = np.searchsorted(self.classes_, y)
        if self._layout == "binary":
            return indices.astype(np.float64).reshape(-1, 1)
        return indices

    def _set_classes(self, y: np.ndarray, incremental: bool, classes: Any) -> None:
        """The label layout: multi-label, binary (one logistic output) or multi-class."""
        if type_of_target(y) == "multilabel-indicator":
            self._layout, self.classes_ = "multilabel", np.arange(y.shape[1])
            self._n_outputs = self._network_outputs = y.shape[1]
            # fastmlp's bce averages over labels too; scikit-learn sums them.
            self._loss, self._loss_scale = "bce", float(y.shape[1])
            self.out_activation_ = "logistic"
            return
        if classes is None and incremental:
            raise ValueError("classes must be passed on the first call to partial_fit")
        self.classes_ = np.unique(y if classes is None else column_or_1d(classes))
        if classes is not None and np.setdiff1d(y, self.classes_).size:
            raise ValueError(f"y has classes {np.setdiff1d(y, self.classes_).tolist()} not in "
                             f"classes={self.classes_.tolist()}")
        if len(self.classes_) < 2:
            raise ValueError(f"MLPClassifier needs samples of at least 2 classes; got 1 class "
                             f"({self.classes_.tolist()})")
        binary = len(self.classes_) == 2
        self._layout = "binary" if binary else "multiclass"
        self._n_outputs = self._network_outputs = 1 if binary else len(self.classes_)
        self._loss, self._loss_scale = ("bce" if binary else "cross_entropy"), 1.0
        self.out_activation_ = "logistic" if binary else "softmax"

    def _check_y(self, y: np.ndarray) -> np.ndarray:
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return y

    def _stratify(self, y: np.ndarray) -> Optional[np.ndarray]:
        return y if self._layout != "multilabel" else None

    @_fill_doc
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        {X}

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Probabilities in the order of classes_ (multi-label: each label's), in X's
            float dtype.
        """
        outputs = self._forward(X)
        if self._layout == "binary":
            return np.hstack([1 - outputs, outputs])
        return outputs

    @_fill_doc
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithms of the class probabilities.

        Parameters
        ----------
        {X}

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            log(predict_proba(X)).
        """
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(self.predict_proba(X)))

    @_fill_doc
    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample.

        Parameters
        ----------
        {X}

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_labels)
            Labels from classes_ (multi-label: a 0/1 matrix).
        """
        outputs = self._forward(X)
        if self._layout == "multilabel":
            return (outputs > 0.5).astype(np.int64)
        if self._layout == "binary":
            return np.asarray(self.classes_[(outputs[:, 0] > 0.5).astype(np.intp)])
        return np.asarray(self.classes_[np.argmax(outputs, axis=1)])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


# ---- the regressor ---------------------------------------------------------------------------


class MLPRegressor(RegressorMixin, _BaseMLP):  # type: ignore[misc]
    __doc__ = """A multi-layer perceptron regressor with scikit-learn's interface, trained by fastmlp.

    It minimises the mean squared error with an identity output layer; y may be 1-D or
    (n_samples, n_outputs) for multi-output regression.
""" + _SHARED_PARAMETERS + """
    Attributes
    ----------""" + _SHARED_ATTRIBUTES + """
    loss_ is half the mean squared error, scikit-learn's definition; validation_scores_ are R^2.
"""

    _loss = "mse"
    _loss_scale = 0.5  # scikit-learn's squared loss is half the mean squared error

    @_fill_doc
    def fit(self, X: Any, y: Any) -> "MLPRegressor":
        """Train for up to max_iter epochs (with warm_start, from the last weights).

        Parameters
        ----------
        {X}
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.

        Returns
        -------
        MLPRegressor
            self.
        """
        return self._fit(X, y, incremental=False)

    @_fill_doc
    def partial_fit(self, X: Any, y: Any) -> "MLPRegressor":
        """One epoch over (X, y), continuing the current model and optimizer state.

        Parameters
        ----------
        {X}
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.

        Returns
        -------
        MLPRegressor
            self.
        """
        return self._fit(X, y, incremental=True)

    def _encode_targets(self, y: np.ndarray, first: bool, incremental: bool,
                        classes: Any) -> np.ndarray:
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        if first:
            self._n_outputs = self._network_outputs = targets.shape[1]
            self.out_activation_ = "identity"
        elif targets.shape[1] != self._n_outputs:
            raise ValueError(f"y has {targets.shape[1]} outputs, the model was fitted with "
                             f"{self._n_outputs}")
        return targets

    @_fill_doc
    def predict(self, X: Any) -> np.ndarray:
        """Predicted values.

        Parameters
        ----------
        {X}

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            One column per output (1-D for one output), in X's float dtype.
        """
        outputs = self._forward(X)
        return outputs[:, 0].copy() if outputs.shape[1] == 1 else outputs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
