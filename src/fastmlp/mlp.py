"""fastmlp.MLP: the public model (options, initialisation, parameters, predict/evaluate) and its
file format (save/load). Its training loop is fastmlp.training; every number is crunched in C++
(fastmlp._core), one call per run of batches with the GIL released.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import os
import stat
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union, TypeVar

import numpy as np

from . import _core, training
from ._checks import ACTIVATIONS, CLASSIFICATION_LOSSES, LOSSES, _INT64_MAX, _UINT64_MAX, _all_finite, \
    _as_float_matrix, _as_labels, _as_sample_weight, _check_choice, _check_dtype, _unmasked, \
    _check_finite_in_dtype, _check_fraction, _check_positive_int
from ._files import PathLike, write_atomically
from .feedback import CallbackLike, History
from .optim import Optimizer, make_optimizer
from .schedules import LRSchedule

__all__ = ["MLP", "History", "NotFittedError", "load", "ACTIVATIONS", "LOSSES", "CLASSIFICATION_LOSSES"]

RELU_LIKE = ("relu", "leaky_relu", "gelu")
FORMAT_NAME = "fastmlp-model"
FORMAT_VERSION = 1


class NotFittedError(ValueError, AttributeError):
    """Raised when a model is used for prediction before it was fitted or given weights."""


_T = TypeVar("_T")


# Every model that has made its lock. A thread of the parent may hold one when another
# forks (a fit in progress): the child, which has no such thread, gives each a fresh lock.
_MODELS_WITH_LOCKS: "weakref.WeakSet[MLP]" = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    for model in list(_MODELS_WITH_LOCKS):
        model.__dict__.pop("_lock", None)  # made again, unlocked, on first use


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_in_child)


def _holding_model_lock(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run `method` with the model's lock held, so fit, train_step, set_weights and save called
    on one model from several threads take turns: epochs, counters, history and the saved
    file each come from one call, never from two interleaved ones (predict needs no Python
    lock: the C++ core serialises calls on one model)."""
    @functools.wraps(method)
    def locked(self: "MLP", *args: Any, **kwargs: Any) -> _T:
        with self._model_lock:
            return method(self, *args, **kwargs)
    return locked


# ---- the model ----------------------------------------------------------------------------------------


def _same_layout(state: Dict[str, Any], arrays: Dict[str, np.ndarray], optimizer: Dict[str, np.ndarray]) -> bool:
    """Whether a training state's arrays have the shapes and dtypes of the model's now."""
    def fits(old: Any, new: np.ndarray) -> bool:
        return isinstance(old, np.ndarray) and old.shape == new.shape and old.dtype == new.dtype
    return (all(fits(state.get(name), array) for name, array in arrays.items())
            and state["optimizer"].keys() == optimizer.keys()
            and all(fits(state["optimizer"][name], buffer) for name, buffer in optimizer.items()))


class MLP:
    """A multi-layer perceptron trained by the C++ core.

    Parameters
    ----------
    layer_sizes : sequence of int
        Input width, hidden widths, output width, e.g. ``[784, 256, 10]``. For
        ``loss="gaussian_nll"`` the output width is the number of targets; the network then
        has twice as many output units (a mean and a log-variance per target).
    activation : str or sequence of str
        Hidden activation, one for all hidden layers or one per hidden layer:
        identity, sigmoid, tanh, relu, leaky_relu, gelu.
    loss : str
        cross_entropy (integer labels, softmax outputs), mse, bce (binary / multi-label
        targets, sigmoid outputs), gaussian_nll (mean and variance per target), poisson
        (counts or rates y >= 0; log link: the last layer gives z = log(mean), predict
        returns exp(z); loss mean(exp(z) - y z), torch's PoissonNLLLoss(log_input=True)).
    optimizer : str or fastmlp.optim.Optimizer
        A name (sgd, adagrad, adadelta, rmsprop, adam, adamw) with torch's defaults, or an
        object such as ``fastmlp.optim.Adam(lr=1e-3)``.
    weight_decay : float, optional
        Overrides the optimizer's weight_decay (L2 for all but AdamW, decoupled for AdamW);
        the optimizer's decay_biases says whether biases and batch norm's gamma and beta
        decay too (True, torch's default) or only the weight matrices.
    dropout : float
        Probability of zeroing each hidden activation in training (inverted dropout).
    batch_norm : bool
        Batch normalisation after each hidden dense layer, before its activation.
    dtype : float32 (default, fast) or float64.
    seed : int, optional
        Seeds initialisation, shuffling and dropout. None draws one (kept in ``seed``).
    class_weights : sequence of float, optional
        Per-class weights of the cross-entropy (torch's ``weight``).
    label_smoothing : float
        Cross-entropy label smoothing in [0, 1).
    leaky_relu_slope : float
        Negative slope of leaky_relu.
    n_threads : int, optional
        OpenMP threads for this model's training and prediction calls, applied per call
        without changing fastmlp's process-wide setting. None uses that setting
        (``fastmlp.set_num_threads``, else OMP_NUM_THREADS / threadpoolctl limits).
    compute_dtype : None, "float32" or "bfloat16"
        The precision of the matrix products. None (default) or the model's dtype: computed
        in that dtype. "bfloat16" (float32 models only): every matrix product -- forward,
        weight and input gradients, prediction -- rounds its operands (layer inputs, weights,
        output gradients) to bfloat16 and sums their products in float32; parameters,
        optimizer state, activations, the loss and every other sum stay float32. Runs with
        AMX on CPUs (and OSes) allowing AMX-BF16, summed in AMX's own order, else with
        VDPBF16PS on CPUs with AVX512_BF16, else emulated with VDPBF16PS's results
        (``fastmlp.build_info()["bfloat16_path"]``). Settable after training: a float32 model
        switched to bfloat16 prediction, or back. See the bfloat16 guide.
    """

    def __init__(self, layer_sizes: Sequence[int], activation: Union[str, Sequence[str]] = "relu",
                 loss: str = "cross_entropy", optimizer: Union[str, Optimizer] = "adam", *,
                 weight_decay: Optional[float] = None, dropout: float = 0.0,
                 batch_norm: bool = False, dtype: Any = "float32", seed: Optional[int] = None,
                 class_weights: Optional[Sequence[float]] = None, label_smoothing: float = 0.0,
                 leaky_relu_slope: float = 0.01, n_threads: Optional[int] = None,
                 compute_dtype: Optional[str] = None) -> None:
        self.layer_sizes = self._check_layer_sizes(layer_sizes)
        self.loss = _check_choice("loss", loss, LOSSES)
        self.activations = self._check_activations(activation, len(self.layer_sizes) - 2)
        self.optimizer = make_optimizer(optimizer)
        if weight_decay is not None:
            options = dict(self.optimizer.options)
            options["weight_decay"] = weight_decay
            self.optimizer = type(self.optimizer)(**options)
        self.dropout = _check_fraction("dropout", dropout)
        if not isinstance(batch_norm, (bool, np.bool_)):
            raise TypeError(f"batch_norm must be True or False, got {batch_norm!r}")
        self.batch_norm = bool(batch_norm)
        self.dtype = _check_dtype(dtype)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.seed = _check_positive_int("seed", seed, minimum=0, maximum=_UINT64_MAX)
        self.class_weights = self._check_class_weights(class_weights)
        self.label_smoothing = _check_fraction("label_smoothing", label_smoothing)
        if isinstance(leaky_relu_slope, bool) or not isinstance(leaky_relu_slope, (int, float)) \
                or not math.isfinite(leaky_relu_slope):
            raise ValueError(f"leaky_relu_slope must be a finite number, got {leaky_relu_slope!r}")
        _check_finite_in_dtype("leaky_relu_slope", float(leaky_relu_slope), self.dtype)
        for option, value in self.optimizer.core_options().items():
            if isinstance(value, float):
                _check_finite_in_dtype(f"{type(self.optimizer).__name__} {option}", value, self.dtype)
        self.leaky_relu_slope = float(leaky_relu_slope)
        self._network = self._new_network()
        self.n_threads = n_threads
        self.compute_dtype = compute_dtype
        self._initialise_parameters()
        self._shuffle_rng = np.random.default_rng([self.seed, 1])
        self._mixup_rng = np.random.default_rng([self.seed, 3])
        self.epochs_trained = 0
        self.fitted = False

    # ---- construction helpers ----

    @staticmethod
    def _check_layer_sizes(layer_sizes: Any) -> List[int]:
        if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
            raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}")
        if len(layer_sizes) < 2:
            raise ValueError(f"layer_sizes needs at least an input and an output width, "
                             f"got {list(layer_sizes)!r}")
        return [_check_positive_int(f"layer_sizes[{i}]", size) for i, size in enumerate(layer_sizes)]

    @staticmethod
    def _check_activations(activation: Any, n_hidden: int) -> List[str]:
        names = [activation] * n_hidden if isinstance(activation, str) else list(activation)
        if len(names) != n_hidden:
            raise ValueError(f"activation needs one name per hidden layer ({n_hidden}), "
                             f"got {activation!r}")
        for name in names:
            if name == "step":
                raise ValueError("activation 'step' has no gradient and cannot be trained by "
                                 "backpropagation; use fastmlp.classic.Perceptron")
            _check_choice("activation", name, ACTIVATIONS)
        return names

    def _check_class_weights(self, class_weights: Any) -> Optional[List[float]]:
        if class_weights is None:
            return None
        if self.loss != "cross_entropy":
            raise ValueError("class_weights applies to loss='cross_entropy' only")
        weights = np.asarray(class_weights, dtype=np.float64)
        if weights.shape != (self.layer_sizes[-1],) or not np.all(np.isfinite(weights)) \
                or np.any(weights < 0):
            raise ValueError(f"class_weights must be {self.layer_sizes[-1]} finite non-negative "
                             f"numbers, got {class_weights!r}")
        if not weights.any():
            raise ValueError(f"class_weights are all zero ({class_weights!r}): no row would count")
        return [float(weight) for weight in weights]

    def _require_class_weight(self, labels: np.ndarray, sample_weight: Optional[np.ndarray],
                              what: str, rows: Optional[np.ndarray] = None) -> None:
        """With class_weights, refuse rows (`rows` of labels, or all) that all weigh 0 (sample
        weight x class weight, the cross-entropy's normaliser), as all-zero sample weights
        are: no row would count. A batch of such rows inside a larger set takes no step
        instead (the core's rule)."""
        if self.class_weights is None:
            return
        row_weights = np.take(self.class_weights, labels if rows is None else labels[rows])
        if sample_weight is not None:
            row_weights = row_weights * (sample_weight if rows is None else sample_weight[rows])
        if not row_weights.any():
            raise ValueError(f"class_weights={self.class_weights!r} give every row of {what} weight 0 "
                             "(each row weighs its class's weight times its sample weight): no row "
                             "would count")

    @property
    def _network_sizes(self) -> List[int]:
        sizes = list(self.layer_sizes)
        if self.loss == "gaussian_nll":
            sizes[-1] *= 2
        return sizes

    def _new_network(self) -> Union[_core.NetworkFloat32, _core.NetworkFloat64]:
        network_class = _core.NetworkFloat32 if self.dtype == np.float32 else _core.NetworkFloat64
        self._check_network_fits()
        try:
            return self._construct_network(network_class)
        except MemoryError:
            sizes = self._network_sizes
            count = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
            raise MemoryError(f"layer_sizes={self.layer_sizes!r} need {count:,} parameters "
                              f"({count * self.dtype.itemsize / 2**30:,.1f} GiB each for the "
                              "parameters, gradients and optimizer state): not enough memory") from None

    def _check_network_fits(self) -> None:
        """Refuse, naming layer_sizes, widths the core cannot hold (its own rule:
        _core.network_size_problem), before anything is allocated."""
        sizes = self._network_sizes
        if sizes[-1] > _INT64_MAX:
            raise ValueError(f"layer_sizes={self.layer_sizes!r}: loss='gaussian_nll' needs 2 x "
                             f"{self.layer_sizes[-1]} output units (a mean and a log-variance per "
                             f"target), more than the core can hold (at most {_INT64_MAX})")
        problem = _core.network_size_problem(sizes, self.batch_norm, self.dtype.itemsize)
        if problem:
            raise ValueError(f"layer_sizes={self.layer_sizes!r} {problem}")

    def _construct_network(self, network_class: Union[Type[_core.NetworkFloat32], Type[_core.NetworkFloat64]]
                           ) -> Union[_core.NetworkFloat32, _core.NetworkFloat64]:
        return network_class(self._network_sizes, self.activations, self.loss,
                             self.optimizer.core_options(), dropout=self.dropout,
                             batch_norm=self.batch_norm, seed=self.seed,
                             class_weights=self.class_weights or [],
                             label_smoothing=self.label_smoothing, slope=self.leaky_relu_slope)

    def _initialise_parameters(self) -> None:
        """He-normal before relu-like activations, Glorot-uniform otherwise; zero biases."""
        rng = np.random.default_rng([self.seed, 0])
        params = self._network.params
        following = self.activations + ["identity"]
        for layer, activation in zip(self._network.layers, following):
            fan_in, fan_out = layer["fan_in"], layer["fan_out"]
            if activation in RELU_LIKE:
                weights = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_in, fan_out))
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                weights = rng.uniform(-limit, limit, size=(fan_in, fan_out))
            params[layer["weight"]:layer["weight"] + weights.size] = weights.ravel()

    @property
    def n_threads(self) -> Optional[int]:
        """This model's own thread count, or None to use the process-wide one."""
        return self._network.num_threads or None

    @n_threads.setter
    def n_threads(self, n: Optional[int]) -> None:
        self._network.num_threads = 0 if n is None else _check_positive_int("n_threads", n,
                                                                             maximum=_MAX_FILE_THREADS)

    @property
    def compute_dtype(self) -> Optional[str]:
        """The matrix products' precision: None (the model's dtype), "float32" or "bfloat16"."""
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, value: Optional[str]) -> None:
        allowed = (None, self.dtype.name) + (("bfloat16",) if self.dtype == np.float32 else ())
        if isinstance(value, str) and value == "bfloat16" and self.dtype != np.float32:
            raise ValueError(f"compute_dtype='bfloat16' needs a float32 model; this one is {self.dtype.name} "
                             "(bfloat16 products with float32 master weights)")
        if not (value is None or isinstance(value, str)) or value not in allowed:
            raise ValueError(f"compute_dtype must be one of {allowed}, got {value!r}")
        self._network.bfloat16_compute = value == "bfloat16"
        self._compute_dtype = value

    # ---- parameters ----

    def _slice(self, buffer: np.ndarray, offset: int, shape: Tuple[int, ...]) -> np.ndarray:
        return buffer[offset:offset + int(np.prod(shape))].reshape(shape).copy()

    @property
    def weights(self) -> List[np.ndarray]:
        """Copies of the weight matrices, W of shape (fan_in, fan_out)."""
        params = self._network.params
        return [self._slice(params, layer["weight"], (layer["fan_in"], layer["fan_out"]))
                for layer in self._network.layers]

    @property
    def biases(self) -> List[np.ndarray]:
        """Copies of the bias vectors, b of shape (fan_out,)."""
        params = self._network.params
        return [self._slice(params, layer["bias"], (layer["fan_out"],))
                for layer in self._network.layers]

    @property
    def flat_parameters(self) -> np.ndarray:
        """A copy of every parameter in the core's flat layout (W_l, b_l, [gamma_l, beta_l])."""
        return self._network.params.copy()

    @property
    def n_parameters(self) -> int:
        """The number of trainable parameters (weights, biases, batch norm's gamma and beta)."""
        return int(self._network.params.size)

    @_holding_model_lock
    def set_weights(self, weights: Sequence[Any], biases: Sequence[Any]) -> "MLP":
        """Replace every weight matrix and bias vector; the model then counts as fitted.

        Parameters
        ----------
        weights : sequence of array-like
            One (fan_in, fan_out) matrix per layer, finite real numbers.
        biases : sequence of array-like
            One (fan_out,) vector per layer.

        Returns
        -------
        MLP
            The model itself.

        Raises
        ------
        ValueError
            When a count, a shape or a value does not fit (the message names it).
        """
        layers = self._network.layers
        if len(weights) != len(layers) or len(biases) != len(layers):
            raise ValueError(f"set_weights needs {len(layers)} weight matrices and bias vectors, "
                             f"got {len(weights)} and {len(biases)}")
        checked = []
        for index, (layer, w, b) in enumerate(zip(layers, weights, biases)):
            expected_w, expected_b = (layer["fan_in"], layer["fan_out"]), (layer["fan_out"],)
            w, b = np.asarray(w), np.asarray(b)
            if w.shape != expected_w:
                raise ValueError(f"weights[{index}] must have shape {expected_w}, got {w.shape}")
            if b.shape != expected_b:
                raise ValueError(f"biases[{index}] must have shape {expected_b}, got {b.shape}")
            for name, array in ((f"weights[{index}]", w), (f"biases[{index}]", b)):
                if array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
                    raise ValueError(f"{name} must hold finite real numbers")
            checked.append((layer, w, b))
        params = self._network.params.copy()
        for layer, w, b in checked:
            params[layer["weight"]:layer["weight"] + w.size] = w.ravel()
            params[layer["bias"]:layer["bias"] + b.size] = b
        # One locked copy in the core: a concurrent predict sees the old weights or the new.
        self._network.assign("params", params)
        self.fitted = True
        return self

    # ---- training ----

    def _targets(self, y: Any, n_rows: int, name: str = "y") -> np.ndarray:
        if self.loss == "cross_entropy":
            return _as_labels(y, name, n_rows, self.layer_sizes[-1])
        width = self.layer_sizes[-1]
        values = _unmasked(y, name)
        if values.dtype == object or values.dtype.kind in "cUSVMm":
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        if values.ndim == 1 and width == 1:
            values = values.reshape(-1, 1)
        if values.ndim != 2 or values.shape != (n_rows, width):
            raise ValueError(f"{name} must have shape ({n_rows}, {width}), got {values.shape}")
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if not np.isfinite(values).all():
            row, column = (int(index) for index in np.argwhere(~np.isfinite(values))[0])
            raise ValueError(f"{name} contains NaN or infinity ({float(values[row, column])!r} in "
                             f"{_place(row, column, width)})")
        if self.loss == "bce" and (np.any(values < 0) or np.any(values > 1)):
            raise ValueError(f"{name} must lie in [0, 1] for loss='bce'")
        if self.loss == "poisson" and np.any(values < 0):
            row, column = (int(index) for index in np.argwhere(values < 0)[0])
            raise ValueError(f"{name} must be >= 0 for loss='poisson' (counts or rates), got "
                             f"{float(values[row, column])!r} in {_place(row, column, width)}")
        return values

    def _prepare(self, X: Any, y: Any, name_x: str = "X", name_y: str = "y") -> Tuple[Any, np.ndarray]:
        X = _as_float_matrix(X, name_x, self.dtype, self.layer_sizes[0])
        return X, self._targets(y, X.shape[0], name_y)

    def _weights(self, sample_weight: Any, n_rows: int, y: np.ndarray) -> Dict[str, Any]:
        """The core's sample_weight keyword for `sample_weight` (empty when there is none),
        once the rows of labels `y` are known not to weigh 0 all together."""
        weights = _as_sample_weight(sample_weight, n_rows, self.dtype)
        self._require_class_weight(y, weights, "y")
        return {} if weights is None else {"sample_weight": weights}

    @staticmethod
    def _mean_loss(totals: Sequence[Any]) -> float:
        """loss_sum over the rows' weight: the rows (no sample weights) or the weights' sum."""
        return float(totals[0] / (totals[3] if len(totals) == 5 else totals[2]))

    @_holding_model_lock
    def train_step(self, x: Any, y: Any, sample_weight: Any = None) -> float:
        """One optimizer step on one batch, for custom training loops.

        Parameters
        ----------
        x : array-like or scipy.sparse matrix of shape (batch, n_features)
        y : array-like
            Labels (batch,) for cross_entropy, targets (batch, n_outputs) otherwise.
        sample_weight : array-like of shape (batch,), optional
            Per-row weights (see ``fit``): the loss is sum_i w_i loss_i / sum_i w_i.

        Returns
        -------
        float
            The batch's (weighted) mean loss before the step.

        Raises
        ------
        FloatingPointError
            When the loss or a gradient is NaN or infinite; the step is then not applied (the
            message says when the parameters, finite, overflow the forward pass of this batch:
            an earlier step's update was too large). Also when the step was applied but made
            parameters NaN/inf; the model keeps that step. A step that leaves finite parameters
            whose outputs overflow is not looked for here (it would cost a forward pass per
            call): the next train_step says so, and predictions raise FloatingPointError.
        RuntimeError
            When called during a data-parallel fit of this model (``comm``; from a callback):
            that fit's steps are summed over the ranks, and a step of one rank's own would
            wait there for the others. ``gradients`` may be called: this rank's rows' gradient.
        """
        training.refuse_during_data_parallel_fit(self, "train_step")
        x, y = self._prepare(x, y, "x", "y")
        weights = self._weights(sample_weight, x.shape[0], y)
        step = self._network.step
        totals = self._network.train_step(x, y, **weights)
        if self._network.step == step:
            raise FloatingPointError(f"the loss ({self._mean_loss(totals)}) or its gradient is NaN or "
                                     f"infinite at step {step + 1}; the step was not applied"
                                     f"{self._overflow_note(x)}")
        self.fitted = True
        if not self._network.params_finite():
            raise FloatingPointError(f"step {step + 1} made parameters NaN or infinite (its loss "
                                     f"{self._mean_loss(totals)} and gradient were finite): lower the "
                                     "learning rate; the model's predictions raise FloatingPointError "
                                     "until its weights are replaced")
        return self._mean_loss(totals)

    def _overflow_note(self, x: Any) -> str:
        """For a refused step: why, when the parameters themselves overflow the forward pass of
        its batch `x` (only looked at on this failure path: one evaluation-mode forward)."""
        try:
            self._network.predict(x)
        except FloatingPointError:
            return (": the model's outputs on this batch are NaN or infinite, its parameters (finite) "
                    "overflow the forward pass, so an earlier step's update was too large; lower the "
                    "learning rate and replace the weights")
        return ""

    def gradients(self, x: Any, y: Any, training: bool = False,
                  sample_weight: Any = None) -> Tuple[float, np.ndarray]:
        """The batch's mean loss and its gradient over the flat parameters (no step).

        Parameters
        ----------
        x : array-like of shape (batch, n_features)
        y : array-like
            Labels (batch,) for cross_entropy, targets (batch, n_outputs) otherwise.
        training : bool
            Use a training-mode forward (batch statistics, the dropout of the next step)
            without moving batch norm's running statistics.
        sample_weight : array-like of shape (batch,), optional
            Per-row weights: the loss is the weighted mean sum_i w_i loss_i / sum_i w_i.

        Returns
        -------
        loss : float
        gradient : ndarray
            In the layout of ``flat_parameters``.
        """
        x, y = self._prepare(x, y, "x", "y")
        totals = self._network.compute_gradients(x, y, bool(training),
                                                 **self._weights(sample_weight, x.shape[0], y))
        return self._mean_loss(totals), self._network.grads.copy()

    @_holding_model_lock
    def loss_and_gradient(self, flat_parameters: Any, X: Any, y: Any,
                          sample_weight: Any = None) -> Tuple[float, np.ndarray]:
        """The mean loss over all of (X, y) and its gradient at ``flat_parameters``, which
        become the model's parameters: one full-batch call into the core, no optimizer step
        (what a quasi-Newton solver such as scipy's L-BFGS-B needs).

        Parameters
        ----------
        flat_parameters : array-like of shape (n_parameters,)
            In the layout of ``flat_parameters``; finite.
        X : array-like of shape (n_samples, n_features)
        y : array-like
            Labels (n_samples,) for cross_entropy, targets (n_samples, n_outputs) otherwise.
        sample_weight : array-like of shape (n_samples,), optional
            Per-row weights (see ``fit``): the loss is then the weighted mean.

        Returns
        -------
        loss : float
        gradient : ndarray of shape (n_parameters,), in the model's dtype
        """
        theta = np.asarray(flat_parameters)
        if theta.shape != (self.n_parameters,) or theta.dtype.kind not in "iuf":
            raise ValueError(f"flat_parameters must be {self.n_parameters} real numbers, got "
                             f"shape {theta.shape} and dtype {theta.dtype}")
        X, y = self._prepare(X, y)
        weights = self._weights(sample_weight, X.shape[0], y)
        self._network.params[:] = theta  # NaN/inf give a NaN/inf loss, for the solver to see
        totals = self._network.compute_gradients(X, y, False, **weights)
        return self._mean_loss(totals), self._network.grads.copy()

    @property
    def learning_rate(self) -> float:
        """The optimizer's current learning rate (settable, e.g. by a schedule)."""
        return float(self._network.lr)

    @learning_rate.setter
    def learning_rate(self, lr: float) -> None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0 or not math.isfinite(lr):
            raise ValueError(f"learning_rate must be a finite number >= 0, got {lr!r}")
        _check_finite_in_dtype("learning_rate", float(lr), self.dtype)
        self._network.lr = float(lr)

    @_holding_model_lock
    def fit(self, X: Any, y: Any, epochs: int = 10, batch_size: int = 32, *,
            validation_data: Optional[Tuple[Any, Any]] = None, validation_split: float = 0.0,
            shuffle: bool = True, early_stopping: bool = False, patience: int = 5,
            min_delta: float = 0.0, restore_best_weights: bool = True, verbose: int = 0,
            callbacks: Optional[Sequence[CallbackLike]] = None,
            mixup: float = 0.0, lr_schedule: Optional[LRSchedule] = None,
            on_nan: str = "raise", sample_weight: Any = None, comm: Any = None,
            sharded: bool = False) -> History:
        """Train for ``epochs`` passes over (X, y); calling fit again continues training.

        Parameters
        ----------
        X : array (n_samples, n_features), or a scipy.sparse matrix
            Used in place, batches gathered from it, when it is a C-contiguous array of the
            model's dtype: a NumPy memmap of that kind trains without being read into memory.
            Anything else (another dtype, a Fortran-order or strided array, a list) is
            converted once, which copies it whole. A scipy.sparse matrix or array is never
            densified whole: the core densifies each batch from its CSR arrays (a CSC or
            other format is converted to CSR once, a copy of its stored entries; data of
            another dtype is converted, a copy of the stored values). Duplicate entries count
            as their sum, as in scipy. Training on the same seed gives the same bits for a
            sparse X as for its dense equivalent.
        y : labels (n_samples,) for cross_entropy; targets (n_samples, n_outputs) otherwise.
            Labels are used as an int64 array and targets as one of the model's dtype
            (copied when they are not that already).
        epochs, batch_size : int
        validation_data : (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Converted as X and y are; with weights, val_loss and val_accuracy are weighted.
        validation_split : float
            Fraction of (X, y) held out (a seeded random choice) when no validation_data.
            The held-out rows are copied; training indexes the others in X in place. Their
            sample weights go with them.
        shuffle : bool
            Reshuffle every epoch from the model's seed.
        early_stopping : bool
            Stop when the monitored loss (val_loss if validation data, else loss) has not
            improved by more than ``min_delta`` for ``patience`` epochs; with
            ``restore_best_weights`` the best epoch's parameters are put back.
        verbose : {0, 1, 2}
            Keras' meanings: 0 silent; 1 a progress bar per epoch (tqdm if installed, else a
            one-line bar on stderr) and a line per epoch (``Epoch 3/10 - 1.24s - loss: ...``
            on stdout); 2 the line per epoch only.
        callbacks : list of fastmlp.Callback or callables ``f(epoch, logs)``
            Called after every epoch (a Callback's ``on_epoch_end`` also gets the history so
            far); returning False stops training.
        mixup : float
            alpha > 0 trains on mixup batches (fastmlp.mixup): each batch blended with a
            permutation of itself by lambda ~ Beta(alpha, alpha), targets too (soft
            cross-entropy for class labels). 0 (default) is off.
        lr_schedule : fastmlp.schedules schedule, optional
            Sets the learning rate of every epoch (torch.optim.lr_scheduler semantics);
            ``history["lr"]`` records the rate each epoch used.
        on_nan : "raise" (default) or "restore"
            A step whose loss or gradient is NaN or infinite is never applied and training
            stops there. "raise": FloatingPointError naming the epoch and the step; an update
            that made the parameters themselves NaN/inf, or finite but so large that the
            network's outputs overflow (a huge learning rate), is first rolled back to the last
            good point (as below), so the model stays finite and answers. Such an update is
            found when the parameters are checked (every ~0.1 s), when a later step's logits
            come out NaN/inf (the model then goes back past the state that step started
            from), and at the end of every epoch (an evaluation-mode forward pass of its last
            batch), so the good point put back is one whose outputs were finite. "restore": the parameters, optimizer state and batch-norm
            statistics of the last good point (at most a tenth of an epoch before the
            failure) are put back, a RuntimeWarning names the step, and the history so far is
            returned (``stopped_on_nan`` is True).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative finite per-row weights (not all zero). Each batch's loss, for every
            loss, is the weighted mean sum_i w_i loss_i / sum_i w_i over the batch's rows
            (each element of a row weighing w_i for mse, bce, gaussian_nll and poisson), as
            scikit-learn's MLP normalises it (by the batch's weight sum) and as torch's
            ``reduction="none"`` followed by a weighted average gives; with class_weights a
            row weighs w_i * class_weights[y_i] (torch's normaliser generalised). The weights
            are gathered with their rows, so shuffling keeps them together. All-ones weights
            train exactly as no weights (same bits); a weight of 0 removes the row from the
            loss (for a full batch, the same as deleting it); integer weights equal repeating
            rows (full batch). A batch whose rows all weigh 0 (their sample weights, times
            their classes' class_weights with class weights) takes no optimizer step and
            counts in neither history's loss nor its accuracy; training rows, validation rows
            or labels that all weigh 0 are refused (ValueError).
            history's loss and accuracy are weighted (sum over batches of mean loss x batch
            weight, over the total weight). With mixup a blended row's weight is blended
            like its targets, lambda * w_a + (1 - lambda) * w_b (equal weights stay exact). Batch norm's batch
            statistics and dropout do not use the weights. Early stopping monitors the
            weighted loss (the weighted val_loss when there is validation data).
        comm : mpi4py communicator, optional
            Synchronous data-parallel training over the processes of ``comm`` (e.g.
            ``MPI.COMM_WORLD``; launch with ``mpiexec -n 4 python -m mpi4py train.py``).
            ``batch_size`` is the global batch: each step every rank computes the gradient of
            its share of it, the gradients are summed over the ranks in a fixed order (every
            rank gets the same bits) and every rank applies the same update, starting from rank
            0's parameters and optimizer state. Validation figures, early stopping, schedules
            and callbacks' stops are decided from figures combined over the ranks; ``verbose``
            prints on rank 0. Dropout draws each rank's masks from its own stream; batch norm
            normalises with each rank's own batch statistics (as torch's DDP) and every rank
            keeps rank 0's running statistics. Bad input on any rank raises the same error on
            every rank before the first step. One process (or None): an ordinary fit, same bits.
            While it runs, ``fit`` and ``train_step`` of this model raise RuntimeError (from a
            callback: on every rank). See docs/guide/distributed.md.
        sharded : bool
            With ``comm``: False (default) when every rank passes the same X, y and
            sample_weight (a memmap on a shared disk, say): the global batches are then exactly
            those of a one-process fit with the same seed. True when each rank passes its own
            rows: each shuffles its rows and the ranks' sub-batches make up every global batch
            (shards of different sizes give sub-batches in proportion). Either way,
            validation data may be the same on every rank (each then evaluates a part) or
            each rank's own part: fit compares sizes and checksums to tell.

        Ctrl-C (KeyboardInterrupt) stops training within about 0.1 s, after the step in
        progress: the model keeps every step taken and the returned history has
        ``history.interrupted`` set. It records the finished epochs and then, when Ctrl-C cut
        an epoch short after at least one step (or during its validation), that epoch too,
        with ``history.partial_epoch`` True: its loss and accuracy are the means over the
        ``history.partial_epoch_rows`` rows its steps trained, its val_loss and val_accuracy
        are NaN, and no callback's ``on_epoch_end`` nor the lr_schedule saw it. The
        interrupted epoch counts in ``epochs_trained`` (which counts epochs begun), so the
        next fit starts with the following epoch number and a fresh shuffle.

        Returns
        -------
        History of this call's epochs.
        """
        return training.fit(self, X, y, epochs, batch_size, validation_data=validation_data,
                            validation_split=validation_split, shuffle=shuffle,
                            early_stopping=early_stopping, patience=patience, min_delta=min_delta,
                            restore_best_weights=restore_best_weights, verbose=verbose,
                            callbacks=callbacks, mixup=mixup, lr_schedule=lr_schedule,
                            on_nan=on_nan, sample_weight=sample_weight, comm=comm, sharded=sharded)

    def _training_state(self, reuse: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Copies of everything a training step changes (for fit's on_nan="restore"), written
        into the arrays of `reuse` (an earlier state of this model no longer needed) when given:
        fit keeps one every tenth of an epoch, and new arrays of 784-1024-1024-10's 30 MB took
        9 ms a copy (page faults), filling old ones 2.4."""
        network = self._network
        arrays = {"params": network.params, "running_mean": network.running_mean,
                  "running_var": network.running_var}
        optimizer = network.optimizer_state
        if reuse is None or not _same_layout(reuse, arrays, optimizer):
            return {**{name: array.copy() for name, array in arrays.items()}, "step": int(network.step),
                    "optimizer": {name: buffer.copy() for name, buffer in optimizer.items()},
                    "fitted": self.fitted}
        for name, array in arrays.items():
            np.copyto(reuse[name], array)
        for name, buffer in optimizer.items():
            np.copyto(reuse["optimizer"][name], buffer)
        reuse["step"], reuse["fitted"] = int(network.step), self.fitted
        return reuse

    def _set_training_state(self, state: Dict[str, Any]) -> None:
        network = self._network
        self._restore(state)
        for name in network.optimizer_state:
            network.assign(name, state["optimizer"][name])
        network.step = state["step"]
        self.fitted = state["fitted"]

    @property
    def _model_lock(self) -> "threading.RLock":
        """Created on first use (setdefault is atomic), so every way of making an MLP has one.
        Re-entrant: a fit callback may save the model or call train_step."""
        lock: Optional["threading.RLock"] = self.__dict__.get("_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_lock", threading.RLock())
            _MODELS_WITH_LOCKS.add(self)
        return lock

    def _snapshot(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters and batch-norm statistics (early stopping's best epoch)."""
        return {"params": self._network.params.copy(),
                "running_mean": self._network.running_mean.copy(),
                "running_var": self._network.running_var.copy()}

    def _restore(self, snapshot: Dict[str, np.ndarray]) -> None:
        for name in ("params", "running_mean", "running_var"):
            self._network.assign(name, snapshot[name])

    def __deepcopy__(self, memo: Dict[int, Any]) -> "MLP":
        """An independent model: its own network (parameters, optimizer state, running
        statistics, step), equal options, RNG states and counters, and its own lock."""
        with self._model_lock:
            clone = MLP.__new__(MLP)
            memo[id(self)] = clone
            memo[id(self.dtype)] = self.dtype  # the canonical dtype object, which the core requires
            for key, value in self.__dict__.items():
                if key not in ("_network", "_lock"):
                    clone.__dict__[key] = copy.deepcopy(value, memo)
            clone._network = clone._new_network()
            network = self._network
            clone._network.num_threads = network.num_threads
            clone._network.bfloat16_compute = network.bfloat16_compute
            for name in ("params", "running_mean", "running_var"):
                clone._network.assign(name, getattr(network, name))
            for name, buffer in network.optimizer_state.items():
                clone._network.assign(name, buffer)
            clone._network.step = network.step
            clone._network.lr = network.lr
        return clone

    def __copy__(self) -> "MLP":
        """copy.copy gives an independent model too: a shallow copy would share the C++
        network, so training one would silently train the other."""
        return self.__deepcopy__({})

    # ---- inference ----

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError("this MLP is not fitted yet: call fit, train_step or set_weights "
                                 "before predicting")

    def _outputs(self, X: Any) -> np.ndarray:
        self._check_fitted()
        # The core takes X as it is when it can (a C-contiguous (n >= 1, width) ndarray of the
        # model's dtype object; an equal dtype from a memmap's header does not count) and checks
        # its finiteness itself; anything else gives None and is converted and checked here (a
        # sparse X is then densified chunk by chunk in the core).
        outputs = self._network.predict(X, True, True)
        if outputs is not None:
            return outputs
        return self._network.predict(_as_float_matrix(X, "X", self.dtype, self.layer_sizes[0]))

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for the rows of X.

        Parameters
        ----------
        X : array-like of shape (n, n_features)

        Returns
        -------
        ndarray
            Class labels (n,) for cross_entropy, 0/1 indicators (n, n_outputs) for bce, or
            predicted values (means for gaussian_nll, the means exp(z) for poisson); a single
            regression output comes back as shape (n,).

        Raises
        ------
        FloatingPointError
            When the network's outputs for a row are NaN or infinite (parameters that
            overflow the forward pass, or poisson's exp(z)): the message names the first
            such row. predict_proba, predict_distribution and evaluate do the same.
        """
        if self.loss == "cross_entropy" and self.fitted:
            # One call into the core (argmax there): the latency of one-sample predict. None
            # when X is not taken as it is (see _outputs): X is then converted below.
            labels = self._network.predict_labels(X, True, True)
            if labels is not None:
                return labels
        outputs = self._outputs(X)
        if self.loss == "cross_entropy":
            return np.asarray(np.argmax(outputs, axis=1))
        if self.loss == "bce":
            return (outputs >= 0.5).astype(np.int64)
        means = outputs[:, : self.layer_sizes[-1]]
        return means[:, 0].copy() if means.shape[1] == 1 else means

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n, n_features)

        Returns
        -------
        ndarray of shape (n, n_outputs)
            Softmax rows (cross_entropy) or independent sigmoids (bce).
        """
        if self.loss not in CLASSIFICATION_LOSSES:
            raise ValueError(f"predict_proba needs loss cross_entropy or bce, this model uses {self.loss!r}")
        return self._outputs(X)

    def predict_distribution(self, X: Any) -> Tuple[np.ndarray, np.ndarray]:
        """The predicted Gaussian of a gaussian_nll model.

        Parameters
        ----------
        X : array-like of shape (n, n_features)

        Returns
        -------
        mean, variance : ndarray of shape (n, n_targets)
        """
        if self.loss != "gaussian_nll":
            raise ValueError(f"predict_distribution needs loss 'gaussian_nll', this model uses {self.loss!r}")
        outputs = self._outputs(X)
        d = self.layer_sizes[-1]
        return outputs[:, :d].copy(), np.exp(outputs[:, d:])

    def evaluate(self, X: Any, y: Any, sample_weight: Any = None) -> Dict[str, float]:
        """Loss and accuracy in evaluation mode (no dropout, batch norm's running statistics).

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n, n_features)
        y : array-like
            Labels (n,) for cross_entropy, targets (n, n_outputs) otherwise.
        sample_weight : array-like of shape (n,), optional
            Per-row weights: the loss is sum_i w_i loss_i / sum_i w_i and the accuracy the
            weights of the correct rows over all the weights.

        Returns
        -------
        dict
            ``{"loss": mean loss}``, plus ``"accuracy"`` (fraction correct) for
            classification losses, and ``"deviance"`` for poisson: the mean Poisson deviance
            2 (y log(y / mu) - y + mu) of the predicted means mu (0 for a perfect fit;
            scikit-learn's mean_poisson_deviance), weighted like the loss.
        """
        self._check_fitted()
        X, y = self._prepare(X, y)
        weights = self._weights(sample_weight, X.shape[0], y)
        result = self._evaluate_arrays(X, y, **weights)
        if self.loss == "poisson":
            result["deviance"] = _mean_poisson_deviance(y, self._outputs(X), weights.get("sample_weight"))
        return result

    def _evaluate_arrays(self, X: Any, y: np.ndarray, prefix: str = "",
                         sample_weight: Optional[np.ndarray] = None) -> Dict[str, float]:
        weights = {} if sample_weight is None else {"sample_weight": sample_weight}
        totals: Sequence[Any] = self._network.evaluate(X, y, **weights)
        weight, correct = (totals[3], totals[4]) if len(totals) == 5 else (totals[2], totals[1])
        result = {prefix + "loss": totals[0] / weight}
        if self.loss in CLASSIFICATION_LOSSES:
            result[prefix + "accuracy"] = correct / weight
        return result

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """A single score, higher is better.

        Parameters
        ----------
        X : array-like of shape (n, n_features)
        y : array-like
            Labels or targets, as for ``evaluate``.
        sample_weight : array-like of shape (n,), optional
            Per-row weights, as for ``evaluate``.

        Returns
        -------
        float
            Accuracy for classification losses, else the negative mean loss.
        """
        result = self.evaluate(X, y, sample_weight)
        return result.get("accuracy", -result["loss"])

    # ---- persistence ----

    def _header(self) -> Dict[str, Any]:
        return {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "layer_sizes": self.layer_sizes, "activations": self.activations, "loss": self.loss,
            "dtype": self.dtype.name, "optimizer": self.optimizer.to_config(),
            "learning_rate": self.learning_rate, "step": int(self._network.step),
            "dropout": self.dropout, "batch_norm": self.batch_norm, "seed": self.seed,
            "class_weights": self.class_weights, "label_smoothing": self.label_smoothing,
            "leaky_relu_slope": self.leaky_relu_slope, "epochs_trained": self.epochs_trained,
            "fitted": self.fitted, "shuffle_state": self._shuffle_rng.bit_generator.state,
            "mixup_state": self._mixup_rng.bit_generator.state,
            "optimizer_state": sorted(self._network.optimizer_state),
            "n_threads": self.n_threads, "compute_dtype": self.compute_dtype,
        }

    @_holding_model_lock
    def save(self, path: PathLike) -> None:
        """Write the model (parameters, optimizer state, RNG state, its own ``n_threads``)
        to an .npz file.

        Parameters
        ----------
        path : str or os.PathLike
            Destination. The file is written beside it and renamed into place, so an
            existing file is never left half-written.
        """
        path = os.fspath(path)
        arrays: Dict[str, Any] = {"header": np.frombuffer(json.dumps(self._header()).encode("utf-8"), dtype=np.uint8),
                  "params": self._network.params, "running_mean": self._network.running_mean,
                  "running_var": self._network.running_var}
        for name, buffer in self._network.optimizer_state.items():
            arrays["optimizer_" + name] = buffer
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist")
        if os.path.isdir(path):
            raise IsADirectoryError(f"cannot save to {path!r}: it is a directory")
        write_atomically(path, lambda file: np.savez(file, **arrays))

    def to_onnx(self, path: PathLike) -> None:
        """Write the model, in evaluation mode, as an ONNX graph.

        Needs the optional ``onnx`` package (``pip install fastmlp[onnx]``). The graph takes
        ``X`` (N, n_features) in the model's dtype; hidden layers are Gemm nodes followed by
        their activation (GELU exactly, through Erf), batch norm folded into the Gemm with the
        running statistics, dropout left out. Outputs, by loss: ``label`` and
        ``probabilities`` (cross_entropy: ArgMax and Softmax; bce: threshold 0.5 and
        Sigmoid), ``predictions`` (mse; poisson: the means, Exp of the last Gemm), ``mean`` and
        ``variance`` (gaussian_nll). The weights written are the float32 (or float64) master
        weights: the graph computes in the model's dtype, whatever its ``compute_dtype``.

        Parameters
        ----------
        path : str or os.PathLike
            Destination (``.onnx`` by convention). Written beside it and renamed into place,
            so an existing file is never left half-written.

        Raises
        ------
        NotFittedError
            When the model has not been fitted.
        ImportError
            When the onnx package is not installed.
        OSError
            When ``path`` cannot be written (the message names it).

        Examples
        --------
        >>> model.to_onnx("model.onnx")
        >>> import onnxruntime
        >>> session = onnxruntime.InferenceSession("model.onnx")
        >>> label, probabilities = session.run(None, {"X": X_test.astype("float32")})
        """
        from .onnx_export import to_onnx
        to_onnx(self, path)

    def __repr__(self) -> str:
        return (f"MLP({self.layer_sizes}, activation={self.activations!r}, loss={self.loss!r}, "
                f"optimizer={self.optimizer!r}, dtype={self.dtype.name}"
                + (f", compute_dtype={self.compute_dtype!r}" if self.compute_dtype else "") + ")")


def _place(row: int, column: int, width: int) -> str:
    """Where a bad target is, in the words of the caller's y (1-D for one output)."""
    return f"row {row}" if width == 1 else f"row {row}, column {column}"


def _mean_poisson_deviance(y: np.ndarray, mean: np.ndarray, sample_weight: Optional[np.ndarray]) -> float:
    """2 (y log(y / mu) - y + mu) averaged over every element (rows weighted), in float64;
    y log(y / mu) is 0 where y is 0, as in the limit."""
    y, mean = y.astype(np.float64), mean.astype(np.float64)
    positive = y > 0
    ratio_term = np.zeros_like(y)
    ratio_term[positive] = y[positive] * (np.log(y[positive]) - np.log(mean[positive]))
    per_row = np.mean(2.0 * (ratio_term - y + mean), axis=1)
    return float(np.average(per_row, weights=sample_weight))


# ---- loading -----------------------------------------------------------------------------------------


def _model_file_error(path: str, reason: str) -> ValueError:
    return ValueError(f"{path!r} is not a valid fastmlp model file: {reason}")


# A real header is a few kB of JSON; anything near this is forged.
_MAX_HEADER_BYTES = 1 << 20
# A model's own thread count read from a file starts that many OpenMP threads on its first
# call: above this, the number is forged rather than a machine's core count.
_MAX_FILE_THREADS = 4096
# Deflate expands data at most about 1032 times: a member claiming more than this many bytes
# per stored byte is forged (np.savez stores members uncompressed, a ratio of 1).
_MAX_EXPANSION = 1100


def _member_layout(path: str, archive: Any, name: str, file_size: int) -> Tuple[Tuple[int, ...], np.dtype]:
    """(shape, dtype) of the archive's array `name` (in a file of `file_size` bytes), read
    from its .npy header alone, once the bytes it claims are known to be in the file: no
    allocation is sized by an unchecked number, and an array of Python objects (a pickle) or of
    a zero-size dtype (whose claimed size says nothing) is refused before anything is read."""
    try:
        info = archive.zip.getinfo(name + ".npy")
    except KeyError:
        raise _model_file_error(path, f"the array {name!r} is missing") from None
    if info.compress_size > file_size or \
            info.file_size > _MAX_EXPANSION * info.compress_size + 4096:
        raise _model_file_error(path, f"the array {name!r} claims {info.file_size} bytes, stored in "
                                f"{info.compress_size} of a {file_size}-byte file")
    with archive.zip.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise _model_file_error(path, f"the array {name!r} has .npy format version {version}")
    if dtype.hasobject:
        raise _model_file_error(path, f"the array {name!r} holds Python objects (pickled data), "
                                "which fastmlp never loads")
    if dtype.itemsize == 0:
        raise _model_file_error(path, f"the array {name!r} has the zero-size dtype {dtype.str!r}")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > info.file_size:
        raise _model_file_error(path, f"the array {name!r} claims shape {shape} of {dtype} "
                                f"({claimed} bytes), but its member holds {info.file_size} bytes")
    return tuple(shape), dtype


def _read_header(path: str, archive: Any, file_size: int) -> Dict[str, Any]:
    if "header" not in archive.files:
        raise _model_file_error(path, "no header")
    shape, dtype = _member_layout(path, archive, "header", file_size)
    if dtype != np.uint8 or len(shape) != 1:
        raise _model_file_error(path, "the header is not JSON bytes")
    if shape[0] > _MAX_HEADER_BYTES:
        raise _model_file_error(path, f"the header claims {shape[0]} bytes; a model header is a "
                                f"few kB (at most {_MAX_HEADER_BYTES})")
    raw = archive["header"]
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _model_file_error(path, f"the header is not JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise _model_file_error(path, "the header does not name the fastmlp format")
    if header.get("format_version") != FORMAT_VERSION:
        raise _model_file_error(path, f"format version {header.get('format_version')!r} is not "
                                f"{FORMAT_VERSION}, the one this fastmlp reads")
    return header


# Optimizer states that are sums or averages of squares: negative values are forged (the
# update takes their square root).
_NON_NEGATIVE_STATES = ("sum", "square_avg", "acc_delta", "exp_avg_sq", "max_exp_avg_sq")


def _load_array(path: str, archive: Any, name: str, expected: np.ndarray, file_size: int,
                non_negative: bool = False) -> np.ndarray:
    """The archive's array `name`, refused unless it has expected's shape and dtype and holds
    finite numbers (non-negative ones when asked): what set_weights would refuse never loads."""
    shape, dtype = _member_layout(path, archive, name, file_size)
    if shape != expected.shape or dtype != expected.dtype:
        raise _model_file_error(path, f"the array {name!r} has shape {shape} and dtype "
                                f"{dtype}; the header implies {expected.shape} {expected.dtype}")
    array: np.ndarray = archive[name]
    if not _all_finite(array):
        raise _model_file_error(path, f"the array {name!r} holds NaN or infinity")
    if non_negative and array.size and array.min() < 0:
        raise _model_file_error(path, f"the array {name!r} holds a negative value ({array.min()!r}); "
                                "it is an average of squares")
    return array


# The most optimizer steps a model file may claim (the core's counter never overflows below it).
_MAX_STEP = 2 ** 62


def _open_model_file(path: str) -> Tuple[Any, int]:
    """The file opened for reading and its size, refused unless it is a regular file: opened
    without blocking and checked on the open descriptor, so a FIFO (which would block forever),
    a device or a directory never reaches the zip reader, whatever replaces the path meanwhile."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise _model_file_error(path, f"cannot be opened ({type(error).__name__}: {error.strerror})") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise _model_file_error(path, "it is not a regular file (a FIFO, a device or a directory)")
    if hasattr(os, "set_blocking"):
        os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb"), info.st_size


def _implied_parameter_count(header: Dict[str, Any]) -> int:
    """Parameters the header's sizes imply, computed before anything is allocated."""
    sizes = [int(size) for size in header["layer_sizes"]]
    if header["loss"] == "gaussian_nll":
        sizes[-1] *= 2
    count = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))
    if header["batch_norm"]:
        count += 2 * sum(sizes[1:-1])
    return count


def _file_thread_count(path: str, n_threads: Any) -> Optional[int]:
    """The header's n_threads (None: the process-wide setting), refused when forged."""
    if n_threads is None:
        return None
    count = _check_positive_int("n_threads", n_threads)
    if count > _MAX_FILE_THREADS:
        raise _model_file_error(path, f"n_threads={count} in the header is more than "
                                f"{_MAX_FILE_THREADS}, the most a model file may ask for")
    return count


def load(path: PathLike) -> MLP:
    """Read a model written by ``MLP.save``.

    Never unpickles; every array is checked against the header before it is used.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    MLP
        The model, ready to predict or to continue training exactly where it stopped, with
        the ``n_threads`` and ``compute_dtype`` it was saved with (None for files written
        before fastmlp saved them).

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    ValueError
        When the file is not a valid fastmlp model file (the message says why): not a regular
        file (a FIFO or device is refused without blocking), damaged or forged members, NaN/inf
        or negative variances, a step count above 2**62.
    """
    path = os.fspath(path)
    file, file_size = _open_model_file(path)
    with file:
        return _load_from(path, file, file_size)


def _load_from(path: str, file: Any, file_size: int) -> MLP:
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as error:  # zipfile, OSError, ValueError from a damaged file
        raise _model_file_error(path, f"cannot be read as .npz ({type(error).__name__}: {error})") from None
    if not hasattr(archive, "files"):
        raise _model_file_error(path, "it holds a single array, not an .npz archive")
    with archive:
        try:
            header = _read_header(path, archive, file_size)
            params_shape, params_dtype = _member_layout(path, archive, "params", file_size)
            if params_dtype != _check_dtype(header["dtype"]):
                raise _model_file_error(path, f"the array 'params' has dtype {params_dtype}; the "
                                        f"header says {header['dtype']!r}")
            stored = math.prod(params_shape)
            if _implied_parameter_count(header) != stored:
                raise _model_file_error(path, f"the header's layer sizes imply "
                                        f"{_implied_parameter_count(header)} parameters, the file "
                                        f"holds {stored}")
            model = MLP(header["layer_sizes"], header["activations"], header["loss"],
                        make_optimizer(header["optimizer"]), dropout=header["dropout"],
                        batch_norm=header["batch_norm"], dtype=header["dtype"], seed=header["seed"],
                        class_weights=header["class_weights"],
                        label_smoothing=header["label_smoothing"],
                        leaky_relu_slope=header["leaky_relu_slope"])
            network = model._network
            network.params[:] = _load_array(path, archive, "params", network.params, file_size)
            network.running_mean[:] = _load_array(path, archive, "running_mean", network.running_mean,
                                                  file_size)
            network.running_var[:] = _load_array(path, archive, "running_var", network.running_var,
                                                 file_size, non_negative=True)
            for name, buffer in network.optimizer_state.items():
                buffer[:] = _load_array(path, archive, "optimizer_" + name, buffer, file_size,
                                        non_negative=name in _NON_NEGATIVE_STATES)
            step = header["step"]
            if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= _MAX_STEP:
                raise _model_file_error(path, f"step={step!r} in the header is not an optimizer step "
                                        f"count in [0, 2**62]")
            network.step = step
            model.learning_rate = float(header["learning_rate"])
            model.epochs_trained = int(header["epochs_trained"])
            model.fitted = bool(header["fitted"])
            model._shuffle_rng.bit_generator.state = header["shuffle_state"]
            if "mixup_state" in header:  # files written before mixup existed lack it
                model._mixup_rng.bit_generator.state = header["mixup_state"]
            model.n_threads = _file_thread_count(path, header.get("n_threads"))  # older files: None
            model.compute_dtype = header.get("compute_dtype")  # older files: None
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            if isinstance(error, ValueError) and "not a valid fastmlp model file" in str(error):
                raise
            raise _model_file_error(path, f"bad header field ({type(error).__name__}: {error})") from None
        except Exception as error:  # a damaged member raises zipfile/zlib errors on access
            raise _model_file_error(path, f"damaged contents ({type(error).__name__}: {error})") from None
    return model
