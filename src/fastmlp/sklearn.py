"""scikit-learn estimators on top of fastmlp.MLP: MLPClassifier and MLPRegressor take
scikit-learn's parameter names and expose its fitted attributes. Importing this module imports
scikit-learn; the rest of fastmlp never does.
"""
from __future__ import annotations

import functools
import inspect
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
from sklearn.utils.metaestimators import available_if  # type: ignore[import-untyped]
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import (  # type: ignore[import-untyped]
    _check_sample_weight, check_is_fitted, column_or_1d, validate_data)
from sklearn.metrics import accuracy_score, r2_score  # type: ignore[import-untyped]

from . import optim
from .distributed import Ranks, ranks_of
from .mlp import MLP, load
from .training import require_same_data

__all__ = ["MLPClassifier", "MLPRegressor", "expected_failed_checks"]

# scikit-learn's activation names -> fastmlp's ("logistic" is scikit-learn's sigmoid).
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "sigmoid": "sigmoid",
               "tanh": "tanh", "relu": "relu", "leaky_relu": "leaky_relu", "gelu": "gelu"}
SOLVERS = ("sgd", "adam", "lbfgs", "adamw", "rmsprop", "adagrad", "adadelta")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
# Changing one of these between fits with warm_start (or partial_fit) would need new weights.
ARCHITECTURE_PARAMS = ("hidden_layer_sizes", "activation", "dropout", "batch_norm", "dtype", "loss")


SAMPLE_WEIGHT_CHECKS = ("check_sample_weights_pandas_series", "check_sample_weights_not_an_array",
                        "check_sample_weights_list", "check_sample_weights_shape",
                        "check_sample_weights_not_overwritten",
                        "check_sample_weight_equivalence_on_dense_data",
                        "check_classifiers_one_label_sample_weights")


def _mlp_takes_sample_weight() -> bool:
    return "sample_weight" in inspect.signature(MLP.fit).parameters


def expected_failed_checks(estimator: Any) -> Dict[str, str]:
    """scikit-learn's estimator checks that ``estimator`` fails by design, with the reason:
    pass it as ``expected_failed_checks`` to ``check_estimator`` / ``parametrize_with_checks``
    (scikit-learn >= 1.6's successor of the ``_xfail_checks`` tag): the weight-equivalence
    checks only if fastmlp.MLP.fit had no sample_weight (an older core): none otherwise."""
    # Predictions of a batch and of any subset of it are bitwise equal in float32 and float64
    # (every GEMM path sums in one canonical order), so check_methods_subset_invariance passes.
    # The weight-equivalence checks pass too: their data sets fit in one batch, where weighted
    # rows and repeated rows give the same loss, and alpha's decay follows each batch's weight
    # sum as scikit-learn's does. (With several batches per epoch they would not: repeated rows
    # make other batches.)
    failing: Dict[str, str] = {}
    if not _mlp_takes_sample_weight():
        failing.update({name: "needs fastmlp.MLP.fit(sample_weight=...), not in this build"
                        for name in SAMPLE_WEIGHT_CHECKS})
    return failing


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


class _SolverState:
    """What scikit-learn keeps as ``_optimizer`` and tests read: the current learning rate
    (scikit-learn's value, before fastmlp's gradient-scale folding)."""

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate


class _BaseMLP(BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type hints
    """What MLPClassifier and MLPRegressor share: parameters, the training loop with
    scikit-learn's stopping rules, warm starts, partial_fit, lbfgs, fitted attributes, pickling."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # CSR / CSC X go to fastmlp.MLP as they are: the core densifies one batch at a time.
        tags.input_tags.sparse = True
        return tags

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate: str = "constant", learning_rate_init: float = 0.001,
                 power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, verbose: Any = False,
                 warm_start: bool = False, momentum: float = 0.9, nesterovs_momentum: bool = True,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 n_iter_no_change: Any = 10, max_fun: int = 15000, dropout: float = 0.0,
                 batch_norm: bool = False, weight_decay: float = 0.0, dtype: Any = None,
                 n_threads: Optional[int] = None, compute_dtype: Optional[str] = None,
                 comm: Any = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.weight_decay = weight_decay
        self.dtype = dtype
        self.n_threads = n_threads
        self.compute_dtype = compute_dtype
        self.comm = comm

    # -- what the subclasses provide --

    def _encode_targets(self, y: np.ndarray, first: bool, incremental: bool,
                        classes: Any) -> np.ndarray:
        """Targets as fastmlp.MLP wants them; on the first fit also sets the output layout."""
        raise NotImplementedError

    def _check_y(self, y: np.ndarray) -> np.ndarray:
        return y

    def _stratify(self, targets: np.ndarray) -> Optional[np.ndarray]:
        return None

    def _validation_score(self, outputs: np.ndarray, y: np.ndarray,
                          sample_weight: Optional[np.ndarray]) -> float:
        raise NotImplementedError

    def _loss_name(self) -> str:
        return "squared_error"

    def _row_loss_constants(self, targets: np.ndarray) -> Optional[np.ndarray]:
        """What scikit-learn's loss adds to fastmlp's (scaled) loss, per row (None: nothing)."""
        return None

    def _loss_constant(self, targets: np.ndarray, sample_weight: Optional[np.ndarray]) -> float:
        """What scikit-learn's loss adds to fastmlp's (scaled) loss on these training rows:
        the rows' constants averaged with the sample weights."""
        constants = self._row_loss_constants(targets)
        return 0.0 if constants is None else float(np.average(constants, weights=sample_weight))

    def _check_stochastic(self) -> bool:
        """partial_fit exists for the stochastic solvers only (scikit-learn's available_if)."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers; "
                                 "solver='lbfgs' is not stochastic")
        return True

    # -- checks --

    def _check_params(self) -> Dict[str, Any]:
        """Every parameter checked, with the value fastmlp.MLP needs."""
        if self.solver not in SOLVERS:
            raise _bad("solver", self.solver, f"one of {', '.join(SOLVERS)}")
        if self.activation not in ACTIVATIONS:
            raise _bad("activation", self.activation, f"one of {', '.join(ACTIVATIONS)}")
        if self.learning_rate not in LEARNING_RATES:
            raise _bad("learning_rate", self.learning_rate, f"one of {', '.join(LEARNING_RATES)}")
        if self.batch_size != "auto":
            try:
                _check_int("batch_size", self.batch_size, 1)
            except ValueError:
                raise _bad("batch_size", self.batch_size, "'auto' or an integer >= 1") from None
        if self.dtype not in (None, "float32", "float64", np.float32, np.float64):
            raise _bad("dtype", self.dtype, "None (the input's float dtype), 'float32' or 'float64'")
        if self.n_threads is not None:
            _check_int("n_threads", self.n_threads, 1)
        if not (self.compute_dtype is None or (isinstance(self.compute_dtype, str) and self.compute_dtype
                                                in ("float32", "float64", "bfloat16"))):
            raise _bad("compute_dtype", self.compute_dtype, "None, 'float32', 'float64' or 'bfloat16'")
        if self.compute_dtype == "bfloat16" and self.dtype not in (None, "float32", np.float32):
            raise _bad("compute_dtype", self.compute_dtype, f"None or the dtype with dtype={self.dtype!r} "
                       "('bfloat16' needs float32 master weights)")
        if isinstance(self.verbose, (bool, np.bool_)):
            pass
        elif not isinstance(self.verbose, Integral) or self.verbose < 0:
            raise _bad("verbose", self.verbose, "True, False or an integer >= 0")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping", "batch_norm"):
            _check_flag(name, getattr(self, name))
        _check_int("max_iter", self.max_iter, 1)
        _check_int("max_fun", self.max_fun, 1)
        if not (isinstance(self.n_iter_no_change, Real) and not isinstance(self.n_iter_no_change, bool)
                and self.n_iter_no_change == np.inf):
            _check_int("n_iter_no_change", self.n_iter_no_change, 1)
        _check_real("alpha", self.alpha, 0.0)
        _check_real("weight_decay", self.weight_decay, 0.0)
        _check_real("learning_rate_init", self.learning_rate_init, 0.0, low_open=True)
        _check_real("power_t", self.power_t, 0.0)
        _check_real("tol", self.tol, 0.0)
        _check_real("momentum", self.momentum, 0.0, 1.0, high_open=False)
        _check_real("validation_fraction", self.validation_fraction, 0.0, 1.0, low_open=True)
        _check_real("beta_1", self.beta_1, 0.0, 1.0)
        _check_real("beta_2", self.beta_2, 0.0, 1.0)
        _check_real("epsilon", self.epsilon, 0.0, low_open=True)
        _check_real("dropout", self.dropout, 0.0, 1.0)
        return {"hidden_layer_sizes": _check_hidden_layer_sizes(self.hidden_layer_sizes),
                "activation": ACTIVATIONS[self.activation], "dropout": float(self.dropout),
                "batch_norm": bool(self.batch_norm),
                # bfloat16 products keep float32 master weights, whatever the input's dtype.
                "dtype": ("float32" if self.compute_dtype == "bfloat16" else None) if self.dtype is None
                else np.dtype(self.dtype).name,
                "loss": self._loss_name()}

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        if int(self.batch_size) > n_samples:
            warnings.warn(f"Got batch_size={self.batch_size} larger than the {n_samples} "
                          "samples; it is clipped to the sample count", UserWarning)
        return min(int(self.batch_size), n_samples)

    def _fastmlp_optimizer(self, batch_size: int) -> optim.Optimizer:
        """The solver as a fastmlp optimizer, with scikit-learn's gradient scale folded in.

        scikit-learn's gradient is fastmlp's times _gradient_scale (e.g. 1/2 for one squared-
        error output), and alpha adds alpha * W / batch_size to it. SGD steps lr * (c g + d W)
        = (lr c) (g + (d / c) W); Adam is invariant to the gradient's scale but for epsilon,
        so it takes epsilon / c. solver="adam" is scikit-learn's Adam: eps_hat=True adds
        epsilon to the uncorrected sqrt(v), in scikit-learn's operation order ("adamw" stays
        torch's AdamW). The decay d / c reaches the weight matrices only
        (decay_biases=False), as alpha does in scikit-learn; fastmlp's weight_decay is added
        to it and so has the same reach (and the same per-batch scaling, see
        _apply_alpha_per_batch)."""
        scale = self._gradient_scale
        lr = float(self.learning_rate_init)
        decay = (self.alpha / batch_size + self.weight_decay) / scale
        if self.solver == "sgd":
            return optim.SGD(lr=lr * scale, momentum=self.momentum, weight_decay=decay,
                             nesterov=bool(self.nesterovs_momentum) and self.momentum > 0,
                             decay_biases=False)
        if self.solver in ("adam", "adamw", "lbfgs"):  # lbfgs: any; scipy steps instead
            cls = optim.AdamW if self.solver == "adamw" else optim.Adam
            return cls(lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon / scale,
                       weight_decay=decay, decay_biases=False, eps_hat=self.solver != "adamw")
        return optim.OPTIMIZERS[self.solver](lr=lr, weight_decay=decay, decay_biases=False)

    # -- fitting --

    # Set by the first fit: the architecture it used, the random state every later draw comes
    # from, the fastmlp model, and the output layout.
    _config: Dict[str, Any]
    _random_state: np.random.RandomState
    model_: MLP
    _n_outputs: int
    _network_outputs: int
    _loss: str
    _loss_scale: float
    _gradient_scale: float
    _loss_offset = 0.0  # the training rows' _loss_constant, added to loss_

    @property
    def _model(self) -> MLP:
        """The fitted fastmlp.MLP under its earlier private name (model_ is the public one)."""
        return self.model_

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None,
             sample_weight: Any = None) -> "_BaseMLP":
        if incremental and self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers; "
                                 "solver='lbfgs' is not stochastic")
        ranks = self._ranks()
        checked = functools.partial(self._checked_input, X, y, incremental, classes, sample_weight)
        # Across ranks every rank checks its own arguments and all raise the first failing
        # rank's error (as fastmlp.MLP.fit does); then the ranks make sure they hold the same
        # data and draw rank 0's random stream. From there on every rank computes the same
        # thing from the same inputs (validation split, batch size, loss constant, lbfgs's
        # objective over the ranks), so an error further on is raised on every rank alike.
        config, continuing, X, y, sample_weight, targets = checked() if ranks is None else ranks.agree(checked)
        if ranks is not None:  # every rank draws rank 0's stream: one model, one split, one order
            require_same_data(ranks, X.shape, targets, sample_weight,
                              np.asarray(getattr(self, "classes_", [])).tolist())
            self._random_state.set_state(ranks.comm.bcast(self._random_state.get_state(), root=0))
        if not continuing:
            self._config = dict(config, dtype_requested=config["dtype"],
                                dtype=config["dtype"] or X.dtype.name)
            held_out = int(np.ceil(self.validation_fraction * X.shape[0])) if self.early_stopping else 0
            self._n_samples_hint = max(1, X.shape[0] - held_out)  # the first optimizer's batch size
            self.model_ = self._new_model(X.shape[1])
            self._reset_progress()
        self.model_.n_threads = self.n_threads
        self.model_.compute_dtype = self.compute_dtype
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, targets, sample_weight)
        else:
            self._fit_stochastic(X, targets, y, sample_weight, incremental, continuing)
        self._set_fitted_attributes()
        return self

    def _checked_input(self, X: Any, y: Any, incremental: bool, classes: Any,
                       sample_weight: Any) -> Tuple[Dict[str, Any], bool, Any, np.ndarray,
                                                    Optional[np.ndarray], np.ndarray]:
        """_fit's parameters and arrays checked: (config, whether the fit continues the last
        model, X, y, sample_weight, the targets for fastmlp.MLP). The first fit also sets the
        output layout (classes_, ...); every call takes random_state afresh."""
        config = self._check_params()
        continuing = hasattr(self, "model_") and (incremental or self.warm_start)
        if continuing:
            fitted = dict(self._config, dtype=self._config["dtype_requested"])
            fitted.pop("dtype_requested")
            if config != fitted:
                changed = [key for key in ARCHITECTURE_PARAMS if config[key] != fitted[key]]
                raise ValueError(f"{', '.join(changed)} changed since the model was fitted; "
                                 "fit again with warm_start=False to start over")
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32),
                             multi_output=True, y_numeric=isinstance(self, RegressorMixin),
                             reset=not continuing)
        y = self._check_y(y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        targets = self._encode_targets(y, not continuing, incremental, classes)
        # scikit-learn takes random_state afresh on every fit and partial_fit call (an int
        # gives the same stream each time): initialisation, then the validation split, then
        # the epochs' shuffles all draw from it, in that order.
        self._random_state = check_random_state(self.random_state)
        return config, continuing, X, y, sample_weight, targets

    def _new_model(self, n_features: int) -> MLP:
        """A fastmlp.MLP with scikit-learn's initialisation: Glorot-uniform weights and
        biases, bound sqrt(6 / (fan_in + fan_out)) (2 instead of 6 for logistic), drawn from
        random_state layer by layer as scikit-learn draws them."""
        config = self._config
        sizes = [n_features, *config["hidden_layer_sizes"], self._network_outputs]
        factor = 2.0 if self.activation == "logistic" else 6.0
        weights, biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            weights.append(self._random_state.uniform(-bound, bound, (fan_in, fan_out)))
            biases.append(self._random_state.uniform(-bound, bound, fan_out))
        # fastmlp's own seed (dropout, mixup) from a copy of the stream: a draw from
        # random_state itself would move scikit-learn's validation split and shuffles.
        peek = np.random.RandomState()
        peek.set_state(self._random_state.get_state())
        seed = int(peek.randint(np.iinfo(np.int32).max))
        model = MLP(sizes, activation=config["activation"], loss=self._loss,
                    optimizer=self._fastmlp_optimizer(min(200, self._n_samples_hint)), dropout=config["dropout"],
                    batch_norm=config["batch_norm"], dtype=config["dtype"], seed=seed)
        params, layers = model._network.params, model._network.layers
        for layer, w, b in zip(layers, weights, biases):
            params[layer["weight"]:layer["weight"] + w.size] = w.ravel()
            params[layer["bias"]:layer["bias"] + b.size] = b
        model.fitted = True  # initialised weights predict (as set_weights would allow)
        return model

    _n_samples_hint = 200

    STOCHASTIC_BOOKS = ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_")

    def _reset_progress(self) -> None:
        """A first fit's counters; the per-epoch books only for the stochastic solvers, as
        scikit-learn (lbfgs has no loss_curve_, best_loss_ or validation scores: an earlier
        stochastic fit's are removed, not left stale)."""
        self.n_iter_ = 0
        self.t_ = 0
        self._best_state: Optional[Dict[str, np.ndarray]] = None
        if self.solver != "lbfgs":
            self._start_stochastic_books()
            return
        for name in self.STOCHASTIC_BOOKS:
            if name in self.__dict__:
                delattr(self, name)

    def _start_stochastic_books(self) -> None:
        self.loss_curve_: List[float] = []
        self._no_improvement_count = 0
        self._start_stopping_books()

    def _start_stopping_books(self) -> None:
        """What the stopping rule reads: the validation scores with early_stopping (the best
        weights so far start as the current ones, as scikit-learn's _best_coefs: kept if no
        epoch scores better than -inf), else the best training loss."""
        if self.early_stopping:
            self.validation_scores_: Optional[List[float]] = []
            self.best_validation_score_: Optional[float] = -np.inf
            self.best_loss_: Optional[float] = None
            self._best_state = self.model_._snapshot()
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _split_validation(self, X: np.ndarray, targets: np.ndarray, y: np.ndarray,
                          sample_weight: Optional[np.ndarray]) -> Tuple[Any, ...]:
        arrays = [X, targets, y] + ([] if sample_weight is None else [sample_weight])
        parts = train_test_split(*arrays, random_state=self._random_state,
                                 test_size=self.validation_fraction,
                                 stratify=self._stratify(targets))
        X_train, X_val, t_train, _, _, y_val = parts[:6]
        w_train, w_val = (parts[6], parts[7]) if sample_weight is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             f"(validation_fraction={self.validation_fraction!r} leaves "
                             f"{X_val.shape[0]} samples) or the size of your dataset.")
        return X_train, t_train, w_train, X_val, y_val, w_val

    def _fit_stochastic(self, X: np.ndarray, targets: np.ndarray, y: np.ndarray,
                        sample_weight: Optional[np.ndarray], incremental: bool,
                        continuing: bool) -> None:
        """One MLP.fit call of max_iter epochs (1 for partial_fit); a callback after every
        epoch keeps scikit-learn's books (loss_, n_iter_, validation, learning rate) and stops."""
        validation = None
        w_train = sample_weight
        if not hasattr(self, "loss_curve_"):  # warm-started from an lbfgs fit
            self._start_stochastic_books()
        elif self.early_stopping != (self.validation_scores_ is not None):
            self._start_stopping_books()  # early_stopping switched for a warm start
        if self.early_stopping:
            X, targets, w_train, X_val, y_val, w_val = self._split_validation(X, targets, y, sample_weight)
            validation = (X_val, y_val, w_val)
        batch_size = self._batch_size(X.shape[0])
        self._loss_offset = self._loss_constant(targets, w_train)
        self._prepare_optimizer(batch_size, fresh_optimizer=not incremental or not continuing)
        model = self.model_
        self._apply_alpha_per_batch(batch_size)
        self.n_iter_ = 0
        epochs = 1 if incremental else self.max_iter
        shuffler = _ScikitLearnShuffle(self._random_state, X.shape[0])
        stopper = _StoppingRules(self, X.shape[0], validation, incremental, epochs)
        stopper.follow_batches(shuffler, batch_size, self._row_loss_constants(targets), w_train)
        fit_options: Dict[str, Any] = {}
        if w_train is not None:
            if not _mlp_takes_sample_weight():
                raise NotImplementedError("sample_weight needs fastmlp.MLP.fit(sample_weight=...), "
                                          "which this build of fastmlp does not have")
            fit_options["sample_weight"] = w_train
        own_shuffle = model._shuffle_rng
        model._shuffle_rng = shuffler  # type: ignore[assignment]  # has what fit draws: permutation
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # on_nan's notice; recorded below
                history = model.fit(X, targets, epochs=epochs, batch_size=batch_size,
                                    shuffle=bool(self.shuffle), callbacks=[stopper],
                                    on_nan="restore", comm=self.comm, **fit_options)
        finally:
            model._shuffle_rng = own_shuffle
        self.history_ = history
        if history.stopped_on_nan:
            stopper.record_divergence()
        if history.interrupted:
            warnings.warn("Training interrupted by user.")
        elif stopper.ran_out and not incremental:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                          "reached and the optimization hasn't converged yet.",
                          ConvergenceWarning)
        if self.early_stopping and self._best_state is not None:
            model._restore(self._best_state)
        elif history.stopped_on_nan:
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")

    @property
    def _core_lr_factor(self) -> float:
        """scikit-learn's learning rate -> the core's (SGD folds the gradient scale into it)."""
        return self._gradient_scale if self.solver == "sgd" else 1.0

    def _prepare_optimizer(self, batch_size: int, fresh_optimizer: bool) -> None:
        """The solver for this batch size on model_; scikit-learn starts a new optimizer on
        every fit (zero moments, learning_rate_init) and keeps it across partial_fit calls."""
        model = self.model_
        wanted = self._fastmlp_optimizer(batch_size)
        if wanted.options != model.optimizer.options or type(wanted) is not type(model.optimizer):
            self.model_ = model = _rebuilt(model, wanted, keep_state=not fresh_optimizer)
        elif fresh_optimizer:
            for buffer in model._network.optimizer_state.values():
                buffer[:] = 0
            model._network.step = 0
        if fresh_optimizer or not hasattr(self, "_optimizer"):
            self._optimizer = _SolverState(float(self.learning_rate_init))
        model.learning_rate = self._optimizer.learning_rate * self._core_lr_factor

    def _reported_loss(self, batch_mean_losses: float, n_samples: int,
                       weight_squares: float) -> float:
        """The epoch's loss as scikit-learn defines loss_: each batch's (sample-weighted) mean
        of its loss function (see _loss_scale, and its data constant _loss_offset) plus the
        L2 penalty 0.5 * alpha * ||W||^2 / (the batch's size, or its weight sum) at the
        weights that batch saw, averaged over the batches by their rows (not their weights).
        The core sums both over the steps, each times the batch's rows (batch_mean_losses,
        weight_squares: see _take_epoch_sums)."""
        return float((batch_mean_losses * self._loss_scale
                      + 0.5 * self.alpha * weight_squares) / n_samples + self._loss_offset)

    def _apply_alpha_per_batch(self, batch_size: int) -> None:
        """scikit-learn divides alpha by each batch's size (or weight sum), so a short last
        batch decays more: the core scales the optimizer's decay (alpha / batch_size) by
        batch_size / (the batch's weight), and sums ||W||^2 before every step for loss_."""
        network = self.model_._network
        network.decay_reference_weight = float(batch_size)
        network.track_weight_squares = bool(self.alpha > 0)
        network.weight_squares_sum = 0.0
        network.batch_mean_loss_sum = 0.0

    def _take_epoch_sums(self) -> Tuple[float, float]:
        """The epoch's sums over its steps of the batch's mean loss * rows and of ||W||^2 *
        rows / weight sum; restarts both at 0."""
        network = self.model_._network
        sums = float(network.batch_mean_loss_sum), float(network.weight_squares_sum)
        network.batch_mean_loss_sum = network.weight_squares_sum = 0.0
        return sums

    # -- lbfgs --

    def _weight_mask(self) -> np.ndarray:
        """True at the weights (not biases) of the flat parameter buffer: alpha's reach."""
        mask = np.zeros(self.model_.n_parameters, dtype=bool)
        for layer in self.model_._network.layers:
            mask[layer["weight"]:layer["weight"] + layer["fan_in"] * layer["fan_out"]] = True
        return mask

    def _fit_lbfgs(self, X: np.ndarray, targets: np.ndarray,
                   sample_weight: Optional[np.ndarray]) -> None:
        """scipy's L-BFGS-B on the full-batch loss and gradient the C++ core computes
        (MLP.loss_and_gradient), plus alpha's L2 penalty on the weights, as scikit-learn.
        fastmlp's weight_decay adds 0.5 * weight_decay * ||W||^2 (the objective whose
        gradient is the stochastic solvers' decay); loss_ leaves it out, as they do."""
        import scipy.optimize  # type: ignore[import-untyped]
        model, mask = self.model_, self._weight_mask()
        # scikit-learn divides the L2 penalty by the total weight (n without weights).
        n = X.shape[0] if sample_weight is None else float(np.sum(sample_weight))
        # Converted once for the solver's many calls (a sparse X stays sparse; the core
        # densifies it 1024 rows at a time for each full-batch loss and gradient).
        X = X.tocsr().astype(model.dtype) if hasattr(X, "tocsr") else np.ascontiguousarray(X, dtype=model.dtype)
        scale, decay = self._loss_scale, float(self.alpha) / n + float(self.weight_decay)
        # In the value L-BFGS-B sees, as scikit-learn's: its relative-decrease test reads it.
        offset = self._loss_offset = self._loss_constant(targets, sample_weight)

        full_batch = _RowsOfThisRank(self._ranks(), X, targets, sample_weight)

        def loss_and_gradient(theta: np.ndarray) -> Tuple[float, np.ndarray]:
            loss, gradient = full_batch.loss_and_gradient(model, theta)
            weights = theta[mask]
            loss = loss * scale + offset + 0.5 * decay * float(weights @ weights)
            gradient = gradient.astype(np.float64) * scale
            gradient[mask] += decay * weights
            return loss, gradient

        options: Dict[str, Any] = {"maxfun": self.max_fun, "maxiter": self.max_iter,
                                   "gtol": self.tol}
        if _scipy_takes_iprint():
            options["iprint"] = 1 if self._prints() else -1
        result = scipy.optimize.minimize(loss_and_gradient, model.flat_parameters.astype(np.float64),
                                         method="L-BFGS-B", jac=True, options=options)
        if result.status != 0:
            message = result.message.decode() if isinstance(result.message, bytes) else result.message
            warnings.warn(f"lbfgs failed to converge after {result.nit} iteration(s) "
                          f"(status={result.status}): {message}. Increase the number of "
                          "iterations (max_iter) or scale the data.", ConvergenceWarning)
        self.n_iter_ = min(int(result.nit), self.max_iter)
        final_weights = result.x[mask]
        self.loss_ = float(result.fun) - 0.5 * float(self.weight_decay) * float(final_weights @ final_weights)
        model._network.params[:] = result.x
        model.fitted = True
        if not np.all(np.isfinite(result.x)):
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")

    def _ranks(self) -> Optional[Ranks]:
        """The ranks of a data-parallel fit (comm of several processes), else None."""
        return ranks_of(self.comm)

    def _prints(self) -> bool:
        """Whether this process prints the verbose lines: rank 0 only in a data-parallel fit."""
        ranks = self._ranks()
        return bool(self.verbose) and (ranks is None or ranks.rank == 0)

    def _set_fitted_attributes(self) -> None:
        self.coefs_ = self.model_.weights
        self.intercepts_ = self.model_.biases
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = self._n_outputs

    # -- prediction --

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _forward(self, X: Any) -> np.ndarray:
        """The network's outputs (after the loss's link) in the input's float dtype."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32),
                          reset=False)
        return self._outputs(X)

    def _outputs(self, X: np.ndarray) -> np.ndarray:
        """Outputs for an already validated X (no feature-name checks: early stopping's
        validation set is an array split from a DataFrame)."""
        self.model_.n_threads = self.n_threads
        self.model_.compute_dtype = self.compute_dtype
        return self.model_._outputs(X).astype(X.dtype, copy=False)

    # -- pickling: the compiled model travels as fastmlp's own .npz file --

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        model = state.pop("model_", None)
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
                self.model_ = load(path)


class _RowsOfThisRank:
    """lbfgs's full-batch loss and gradient: over all rows in one process; over this rank's
    part of them, the parts' weighted means then combined over the ranks, with several."""

    def __init__(self, ranks: Optional[Ranks], X: Any, targets: np.ndarray,
                 sample_weight: Optional[np.ndarray]) -> None:
        self.ranks = ranks
        if ranks is not None:
            n = X.shape[0]
            part = np.arange(ranks.rank * n // ranks.size, (ranks.rank + 1) * n // ranks.size)
            X, targets = X[part], targets[part]
            sample_weight = None if sample_weight is None else sample_weight[part]
        self.X, self.targets, self.sample_weight = X, targets, sample_weight
        rows = targets.shape[0]
        self.weight = float(rows if sample_weight is None else np.sum(sample_weight, dtype=np.float64))

    def loss_and_gradient(self, model: MLP, theta: np.ndarray) -> Tuple[float, np.ndarray]:
        if self.ranks is None:
            return model.loss_and_gradient(theta, self.X, self.targets, sample_weight=self.sample_weight)

        def own_part() -> Tuple[float, np.ndarray]:
            if self.weight > 0:
                return model.loss_and_gradient(theta, self.X, self.targets, sample_weight=self.sample_weight)
            model._network.params[:] = theta  # no rows (more ranks than rows), or weights all 0
            return 0.0, np.zeros(theta.size, dtype=model.dtype)

        # A rank's part can fail where the others' do not (a negative sample weight among its
        # rows): every rank then raises that error instead of waiting in the sum for it.
        loss, gradient = self.ranks.agree(own_part)
        return self.ranks.weighted_mean(loss, gradient, self.weight)


class _ScikitLearnShuffle:
    """Stands in for fastmlp.MLP's shuffling generator during the adapter's fit, so the
    epochs see scikit-learn's orders: each epoch permutes the previous epoch's order (the
    identity at the start of every fit / partial_fit call) by random_state.shuffle."""

    def __init__(self, random_state: np.random.RandomState, n_samples: int) -> None:
        self.random_state = random_state
        self.order = np.arange(n_samples)

    def permutation(self, n: int) -> np.ndarray:
        positions = np.arange(n)
        self.random_state.shuffle(positions)
        self.order = self.order[positions]
        return self.order.copy()


class _StoppingRules:
    """MLP.fit's callback: after every epoch, scikit-learn's bookkeeping and stopping rules
    (loss_, loss_curve_, n_iter_, t_, validation score, learning-rate schedule)."""

    def __init__(self, estimator: _BaseMLP, n_samples: int,
                 validation: Optional[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]],
                 incremental: bool,
                 epochs: int) -> None:
        self.estimator, self.n_samples = estimator, n_samples
        self.validation, self.incremental, self.epochs = validation, incremental, epochs
        self.prints = estimator._prints()
        self.ran_out = False
        self.shuffler: Optional[_ScikitLearnShuffle] = None
        self.batch_size = n_samples
        self.row_constants: Optional[np.ndarray] = None
        self.sample_weight: Optional[np.ndarray] = None

    def follow_batches(self, shuffler: "_ScikitLearnShuffle", batch_size: int,
                       row_constants: Optional[np.ndarray],
                       sample_weight: Optional[np.ndarray]) -> None:
        """The epochs' batches, for a loss constant that differs per batch: scikit-learn
        averages it with the sample weights inside each batch (without weights the epoch's
        average is the plain mean, the estimator's _loss_offset)."""
        self.shuffler, self.batch_size = shuffler, batch_size
        self.row_constants, self.sample_weight = row_constants, sample_weight

    def _epoch_loss_offset(self) -> float:
        est = self.estimator
        if self.row_constants is None or self.sample_weight is None or self.shuffler is None:
            return est._loss_offset
        order = self.shuffler.order  # this epoch's (the identity without shuffle)
        constants, weights = self.row_constants[order], self.sample_weight[order]
        starts = np.arange(0, self.n_samples, self.batch_size)
        batch_weights = np.add.reduceat(weights, starts)
        batch_means = np.add.reduceat(weights * constants, starts) / np.where(batch_weights > 0, batch_weights, 1.0)
        rows = np.diff(np.append(starts, self.n_samples))
        return float(batch_means @ rows / self.n_samples)

    def __call__(self, epoch: int, logs: Dict[str, float]) -> bool:
        self._record(logs["loss"])
        return not self._should_stop()

    def record_divergence(self) -> None:
        """The core refused a NaN/inf step: the epoch counts with a NaN loss (and score).
        scikit-learn trains on with NaN weights, so every later epoch is NaN too until its
        stopping rules end the fit: those epochs are recorded without being run."""
        self._record(np.nan)
        while not self._should_stop() and self.estimator.n_iter_ < self.epochs:
            self._record(np.nan)

    def _record(self, mean_loss: float) -> None:
        est = self.estimator
        est.n_iter_ += 1
        est.t_ += self.n_samples
        batch_mean_losses, weight_squares = est._take_epoch_sums()
        if np.isfinite(mean_loss):
            est._loss_offset = self._epoch_loss_offset()
            est.loss_ = est._reported_loss(batch_mean_losses, self.n_samples, weight_squares)
        else:
            est.loss_ = float(mean_loss)
        est.loss_curve_.append(est.loss_)
        if self.prints:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        self._update_no_improvement(np.isfinite(mean_loss))

    def _update_no_improvement(self, finite: bool) -> None:
        est = self.estimator
        if self.validation is None:
            last, best = est.loss_curve_[-1], float(est.best_loss_)  # type: ignore[arg-type]
            # scikit-learn's test, so a NaN loss resets the count (its fit then runs to max_iter)
            if last > best - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if last < best:
                est.best_loss_ = last
            return
        X_val, y_val, w_val = self.validation
        outputs = est._outputs(X_val) if finite else None
        score = np.nan if outputs is None or not np.all(np.isfinite(outputs)) \
            else float(est._validation_score(outputs, y_val, w_val))
        assert est.validation_scores_ is not None and est.best_validation_score_ is not None
        est.validation_scores_.append(score)
        if self.prints:
            print(f"Validation score: {score:f}")
        if score < est.best_validation_score_ + est.tol:  # NaN resets the count, as there
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_state = est.model_._snapshot()

    def _should_stop(self) -> bool:
        est = self.estimator
        self._schedule_learning_rate()
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            message = (f"{what} did not improve more than tol={est.tol:f} for "
                       f"{est.n_iter_no_change} consecutive epochs.")
            if self._trigger_stopping(message):
                return True
            est._no_improvement_count = 0
        if self.incremental:
            return True
        if est.n_iter_ == self.epochs:
            self.ran_out = True
        return False

    def _schedule_learning_rate(self) -> None:
        """scikit-learn's invscaling (sgd only): lr = learning_rate_init / (t_ + 1) ** power_t."""
        est = self.estimator
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            self._set_learning_rate(float(est.learning_rate_init) / (est.t_ + 1) ** est.power_t)

    def _set_learning_rate(self, lr: float) -> None:
        """A new learning rate for the next steps. scikit-learn's sgd velocity holds steps
        already multiplied by the learning rate (v = momentum v - lr g), fastmlp's momentum
        buffer the gradients (b = momentum b + g, step lr b): for the same next steps the
        buffer is rescaled by old / new learning rate."""
        est = self.estimator
        old = est._optimizer.learning_rate
        est._optimizer.learning_rate = lr
        est.model_.learning_rate = lr * est._core_lr_factor
        network = est.model_._network
        if est.solver == "sgd" and "momentum_buffer" in network.optimizer_state and lr > 0 and lr != old:
            buffer = network.optimizer_state["momentum_buffer"]
            network.assign("momentum_buffer", buffer * buffer.dtype.type(old / lr))

    def _trigger_stopping(self, message: str) -> bool:
        """scikit-learn's rule: stop, except that sgd with learning_rate='adaptive' first
        divides the learning rate by 5 until it is 1e-6 or less."""
        est = self.estimator
        if est.solver == "sgd" and est.learning_rate == "adaptive":
            if est._optimizer.learning_rate > 1e-6:
                self._set_learning_rate(est._optimizer.learning_rate / 5.0)
                if self.prints:
                    print(f"{message} Setting learning rate to {est._optimizer.learning_rate:f}")
                return False
        if self.prints:
            print(message + " Stopping.")
        return True


def _rebuilt(model: MLP, optimizer: optim.Optimizer, keep_state: bool) -> MLP:
    """model with another optimizer configuration (the core fixes it at construction): the
    same parameters, seed and shuffling stream; the optimizer's moments too with keep_state."""
    new = MLP(model.layer_sizes, activation=model.activations, loss=model.loss,
              optimizer=optimizer, dropout=model.dropout, batch_norm=model.batch_norm,
              dtype=model.dtype, seed=model.seed, compute_dtype=model.compute_dtype)
    new._restore(model._snapshot())
    new._shuffle_rng = model._shuffle_rng
    new.epochs_trained, new.fitted = model.epochs_trained, model.fitted
    if keep_state:
        for name, buffer in new._network.optimizer_state.items():
            buffer[:] = model._network.optimizer_state[name]
        new._network.step = model._network.step
    return new


def _scipy_takes_iprint() -> bool:
    """scipy >= 1.15 dropped L-BFGS-B's iprint option (it warns, later refuses)."""
    import scipy
    major, minor = (int(part) for part in scipy.__version__.split(".")[:2])
    return (major, minor) < (1, 15)



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
        "sgd", "adam" or "lbfgs" (scikit-learn's; lbfgs is scipy's L-BFGS-B on the full-batch
        loss and gradient of the C++ core), or fastmlp's "adamw", "rmsprop", "adagrad",
        "adadelta" (with torch's defaults beyond the learning rate).
    alpha : float, default 1e-4
        L2 penalty scaled as scikit-learn does, 0.5 * alpha * ||W||^2 / (the batch's size,
        or its sample weights' sum) per batch (lbfgs: / n_samples), on the weight matrices
        only: the stochastic solvers run with decay_biases=False, so biases never decay.
    batch_size : int or "auto", default "auto"
        Rows per step; "auto" is min(200, n_samples); larger values are clipped with a warning.
    learning_rate : "constant", "invscaling" or "adaptive", default "constant"
        scikit-learn's schedules for "sgd": invscaling sets learning_rate_init / (``t_`` + 1) **
        power_t after every epoch; adaptive divides the rate by 5 where training would stop,
        and stops once it is 1e-6 or less.
    learning_rate_init : float, default 1e-3
        The solver's initial learning rate (scikit-learn's gradient scale).
    power_t : float, default 0.5
        The exponent of "invscaling".
    max_iter : int, default 200
        Epochs at most (per fit).
    shuffle : bool, default True
        Reshuffle the samples every epoch.
    random_state : int, RandomState or None, default None
        Seeds initialisation, shuffling, dropout and the validation split.
    tol : float, default 1e-4
        Training stops after more than n_iter_no_change epochs in a row whose loss (or, with
        early_stopping, validation score) did not improve on the best by tol.
    verbose : bool or int, default False
        Print the loss of every epoch (any true value); on rank 0 only in a data-parallel fit.
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
    n_iter_no_change : int or np.inf, default 10
        Epochs without improvement tolerated (see tol).
    max_fun : int, default 15000
        lbfgs: the most loss-and-gradient evaluations.
    dropout : float, default 0.0
        fastmlp: probability of zeroing each hidden unit while training.
    batch_norm : bool, default False
        fastmlp: batch normalisation after each hidden dense layer.
    weight_decay : float, default 0.0
        fastmlp: added to the decay that alpha implies (alpha / batch_size), with the same
        reach (the weight matrices, not the biases) and scaling (a shorter last batch
        decays by more, as alpha does); decoupled for "adamw". It is not part
        of ``loss_`` or ``loss_curve_`` (scikit-learn's loss holds alpha's penalty only); lbfgs adds
        0.5 * weight_decay * ||W||^2 to the objective it minimises.
    dtype : None, "float32" or "float64", default None
        fastmlp: the precision the network trains and predicts in; None takes the training
        input's float dtype (float32 stays float32, anything else float64), as scikit-learn.
    n_threads : int or None, default None
        fastmlp: OpenMP threads for this estimator's calls; None uses fastmlp's setting.
    compute_dtype : None, "float32", "float64" or "bfloat16", default None
        fastmlp: the precision of the matrix products (``fastmlp.MLP``'s compute_dtype): None
        the model's dtype; "bfloat16" rounds their operands to bfloat16 and sums in float32,
        with float32 weights (dtype None then means float32). Applied at every fit and
        predict, so it can be changed between them.
    comm : mpi4py communicator or None, default None
        fastmlp: data-parallel training over the ranks of ``comm`` (``MPI.COMM_WORLD``; see
        ``fastmlp.MLP.fit``), every rank passing the same X, y and sample_weight. Rank 0's
        random_state stream is used on every rank. sgd and adam: each batch_size batch is
        shared out over the ranks, whose gradients are summed (the batches of a one-process
        fit); lbfgs: each rank computes the loss and gradient of a part of the rows, summed
        over the ranks before every solver call. Every rank ends with the same model. Input
        that fails a check on one rank raises the same error on every rank, naming that rank.
"""

_SHARED_ATTRIBUTES = """
    coefs_ : list of ndarray
        Copies of the weight matrices, ``coefs_[i]`` of shape (fan_in, fan_out), in the model's dtype.
    intercepts_ : list of ndarray
        Copies of the bias vectors.
    loss_ : float
        The last epoch's loss as scikit-learn defines it (see the class description),
        plus the L2 penalty.
    loss_curve_ : list of float
        ``loss_`` of every epoch (stochastic solvers only: lbfgs has none, as in scikit-learn;
        nor ``best_loss_``, ``validation_scores_``, ``best_validation_score_``).
    best_loss_ : float or None
        The lowest ``loss_`` (None with early_stopping).
    validation_scores_ : list of float or None
        The held-out score of every epoch with early_stopping (else None), weighted by
        the held-out rows' sample weights.
    best_validation_score_ : float or None
        Their best.
    n_iter_ : int
        Epochs of the last fit / partial_fit call (lbfgs: its iterations).
    model_ : fastmlp.MLP
        The fitted network (to_onnx, save, predict ...); ``history_`` is its last fit's History.
    t_ : int
        Training samples seen.
    n_features_in_ : int
        Input width; ``feature_names_in_`` too when X had string column names.
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
    ``loss_`` is the mean log-loss (summed over labels for multi-label), as scikit-learn reports it.
"""

    @_fill_doc
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPClassifier":
        """Train for up to max_iter epochs (with warm_start, from the last weights).

        Parameters
        ----------
        {X}
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 0/1 indicator matrix for multi-label classification.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the samples in the loss (passed to fastmlp.MLP.fit).

        Returns
        -------
        MLPClassifier
            self.
        """
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @available_if(lambda self: self._check_stochastic())  # type: ignore[untyped-decorator]
    @_fill_doc
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None,
                    classes: Any = None) -> "MLPClassifier":
        """One epoch over (X, y), continuing the current model and optimizer state.
        scikit-learn's argument order (>= 1.7): sample_weight comes before classes.

        Parameters
        ----------
        {X}
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 0/1 indicator matrix.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the samples in the loss.
        classes : array-like, optional
            Every label that will ever be seen; required on the first call.

        Returns
        -------
        MLPClassifier
            self.
        """
        return self._fit(X, y, incremental=True, classes=classes, sample_weight=sample_weight)

    def _loss_name(self) -> str:
        return "log_loss"

    def _encode_targets(self, y: np.ndarray, first: bool, incremental: bool,
                        classes: Any) -> np.ndarray:
        if first:
            self._set_classes(y, incremental, classes)
        else:
            self._check_classes(y, incremental, classes)
        if self._layout == "multilabel":
            if y.ndim != 2 or y.shape[1] != len(self.classes_):
                raise ValueError(f"y must be a {len(self.classes_)}-column indicator matrix as in "
                                 f"the first fit, got shape {y.shape}")
            return np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D labels as in the first fit, got shape {y.shape}")
        indices = np.searchsorted(self.classes_, y)
        if self._layout == "binary":
            return indices.astype(np.float64).reshape(-1, 1)
        return indices

    def _check_classes(self, y: np.ndarray, incremental: bool, classes: Any) -> None:
        """scikit-learn's rules for the labels of a warm-started fit or a later partial_fit."""
        if incremental and classes is not None and not np.array_equal(
                np.unique(column_or_1d(classes)), self.classes_):
            raise ValueError(f"classes={classes!r} is not the same as on the first call to "
                             f"partial_fit, was: {self.classes_!r}")
        if self._layout == "multilabel":
            return
        seen = unique_labels(y)
        if self.warm_start and not incremental:
            if set(seen) != set(self.classes_):
                raise ValueError("warm_start can only be used where `y` has the same classes as "
                                 f"in the previous call to fit. Previously got {self.classes_}, "
                                 f"`y` has {seen}")
        elif np.setdiff1d(seen, self.classes_).size:
            raise ValueError(f"`y` has classes {np.setdiff1d(seen, self.classes_).tolist()} not "
                             f"in classes_ = {self.classes_.tolist()}; fit with warm_start=False "
                             "to learn new classes")

    def _set_classes(self, y: np.ndarray, incremental: bool, classes: Any) -> None:
        """The label layout: multi-label, binary (one logistic output) or multi-class."""
        if type_of_target(y) == "multilabel-indicator":
            self._layout, self.classes_ = "multilabel", np.arange(y.shape[1])
            self._n_outputs = self._network_outputs = y.shape[1]
            # fastmlp's bce averages over labels; scikit-learn sums them (loss and gradient).
            self._loss = "bce"
            self._loss_scale = self._gradient_scale = float(y.shape[1])
            self.out_activation_ = "logistic"
            return
        if classes is None and incremental:
            raise ValueError("classes must be passed on the first call to partial_fit")
        self.classes_ = np.unique(y if classes is None else column_or_1d(classes))
        if classes is not None and np.setdiff1d(y, self.classes_).size:
            raise ValueError(f"y has classes {np.setdiff1d(y, self.classes_).tolist()} not in "
                             f"classes={self.classes_.tolist()}")
        binary = len(self.classes_) <= 2  # one class: one logistic output learning 0, as sklearn
        self._layout = "binary" if binary else "multiclass"
        self._n_outputs = self._network_outputs = 1 if binary else len(self.classes_)
        self._loss, self._loss_scale = ("bce" if binary else "cross_entropy"), 1.0
        self._gradient_scale = 1.0
        self.out_activation_ = "logistic" if binary else "softmax"

    def _check_y(self, y: np.ndarray) -> np.ndarray:
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return y

    def _stratify(self, targets: np.ndarray) -> Optional[np.ndarray]:
        """scikit-learn stratifies only where its binarized labels are one column (one or two
        classes), on that boolean column, so its error names classes 'True' / 'False' the
        same way; with three or more classes (one column each) or multi-label it does not."""
        if self._layout == "binary":
            return targets > 0.5
        return None

    def _labels(self, outputs: np.ndarray) -> np.ndarray:
        if self._layout == "multilabel":
            return (outputs > 0.5).astype(np.int64)
        if self._layout == "binary":
            positive = (outputs[:, 0] > 0.5).astype(np.intp)
            return np.asarray(self.classes_[np.minimum(positive, len(self.classes_) - 1)])
        return np.asarray(self.classes_[np.argmax(outputs, axis=1)])

    def _validation_score(self, outputs: np.ndarray, y: np.ndarray,
                          sample_weight: Optional[np.ndarray]) -> float:
        return float(accuracy_score(y, self._labels(outputs), sample_weight=sample_weight))

    @_fill_doc
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        {X}

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_`` (multi-label: each label's), in X's
            float dtype.
        """
        outputs = self._forward(X)
        if self._layout == "binary":
            return np.hstack([1 - outputs, outputs][:len(self.classes_)])
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
            Labels from ``classes_`` (multi-label: a 0/1 matrix).
        """
        return self._labels(self._forward(X))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


# ---- the regressor ---------------------------------------------------------------------------


class MLPRegressor(RegressorMixin, _BaseMLP):  # type: ignore[misc]
    __doc__ = """A multi-layer perceptron regressor with scikit-learn's interface, trained by fastmlp.

    It minimises the mean squared error with an identity output layer, or with
    loss="poisson" the Poisson deviance with an exp output (log link, y >= 0); y may be 1-D
    or (n_samples, n_outputs) for multi-output regression.
""" + _SHARED_PARAMETERS + """    loss : "squared_error" or "poisson", default "squared_error"
        scikit-learn's names. "poisson" trains fastmlp.MLP(loss="poisson"): predictions are
        exp of the last layer's output (``out_activation_`` "exp"), y must be >= 0.
""" + """
    Attributes
    ----------""" + _SHARED_ATTRIBUTES + """
    ``loss_`` is scikit-learn's: half the mean squared error, or for poisson half the Poisson
    deviance, mean(y log(y / mu) - y + mu) summed over the outputs; ``validation_scores_`` are R^2.
"""

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 loss: str = "squared_error", solver: str = "adam", alpha: float = 0.0001,
                 batch_size: Any = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
                 shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
                 verbose: Any = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: Any = 10, max_fun: int = 15000,
                 dropout: float = 0.0, batch_norm: bool = False, weight_decay: float = 0.0,
                 dtype: Any = None, n_threads: Optional[int] = None,
                 compute_dtype: Optional[str] = None, comm: Any = None) -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
            max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            dropout=dropout, batch_norm=batch_norm, weight_decay=weight_decay, dtype=dtype,
            n_threads=n_threads, compute_dtype=compute_dtype, comm=comm)
        self.loss = loss

    _loss = "mse"
    _loss_scale = 0.5  # scikit-learn's squared loss is half the mean squared error

    def _loss_name(self) -> str:
        if self.loss not in ("squared_error", "poisson"):
            raise _bad("loss", self.loss, "'squared_error' or 'poisson'")
        return str(self.loss)

    def _check_y(self, y: np.ndarray) -> np.ndarray:
        if self.loss == "poisson" and np.any(y < 0):
            # scikit-learn's PoissonRegressor words it so; its MLPRegressor would train on NaN.
            raise ValueError("Some value(s) of y are out of the valid range of the loss "
                             f"'poisson': y must be >= 0, got {float(np.min(y))!r}.")
        return y

    def _row_loss_constants(self, targets: np.ndarray) -> Optional[np.ndarray]:
        """scikit-learn's poisson loss is fastmlp's times n_outputs plus the (sample-weighted)
        mean of y log(y) - y summed over the outputs: a constant of the data, added to loss_."""
        if self.loss != "poisson":
            return None
        y = np.asarray(targets, dtype=np.float64)
        y_log_y = np.zeros_like(y)  # 0 log 0 = 0, its limit
        counted = y > 0
        y_log_y[counted] = y[counted] * np.log(y[counted])
        return np.asarray(np.sum(y_log_y - y, axis=1))

    @_fill_doc
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPRegressor":
        """Train for up to max_iter epochs (with warm_start, from the last weights).

        Parameters
        ----------
        {X}
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the samples in the loss (passed to fastmlp.MLP.fit).

        Returns
        -------
        MLPRegressor
            self.
        """
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @available_if(lambda self: self._check_stochastic())  # type: ignore[untyped-decorator]
    @_fill_doc
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> "MLPRegressor":
        """One epoch over (X, y), continuing the current model and optimizer state.

        Parameters
        ----------
        {X}
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the samples in the loss.

        Returns
        -------
        MLPRegressor
            self.
        """
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def _encode_targets(self, y: np.ndarray, first: bool, incremental: bool,
                        classes: Any) -> np.ndarray:
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        if first and self.loss == "poisson":
            self._n_outputs = self._network_outputs = targets.shape[1]
            # fastmlp's poisson loss is the mean over the B K elements, its gradient
            # (mu - y) / (B K); scikit-learn's sums the outputs' means, gradient (mu - y) / B.
            self._loss, self._loss_scale = "poisson", float(targets.shape[1])
            self._gradient_scale = float(targets.shape[1])
            self.out_activation_ = "exp"
        elif first:
            self._n_outputs = self._network_outputs = targets.shape[1]
            self._loss, self._loss_scale = "mse", 0.5
            # fastmlp's mse gradient is 2 (p - y) / (B K); scikit-learn's is (p - y) / B.
            self._gradient_scale = targets.shape[1] / 2.0
            self.out_activation_ = "identity"
        elif targets.shape[1] != self._n_outputs:
            raise ValueError(f"y has {targets.shape[1]} outputs, the model was fitted with "
                             f"{self._n_outputs}")
        return targets

    def _validation_score(self, outputs: np.ndarray, y: np.ndarray,
                          sample_weight: Optional[np.ndarray]) -> float:
        return float(r2_score(y, outputs[:, 0] if y.ndim == 1 else outputs,
                              sample_weight=sample_weight))

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
