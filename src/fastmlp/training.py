"""The training loop behind fastmlp.MLP.fit: epochs of batches run through the core, validation,
history, early stopping, callbacks, lr schedules, mixup, sample weights, non-finite steps and
Ctrl-C. It trains any model that has what TrainableModel lists (fastmlp.MLP)."""
from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ._checks import CLASSIFICATION_LOSSES, _INT64_MAX, _as_sample_weight, _check_choice, \
    _check_fraction, _check_positive_int, _require_weight, _take_rows
from .feedback import CallbackLike, History, check_callbacks, epoch_ends, epoch_line, \
    progress_bar, train_begins, train_ends
from .mixup import check_mixup_alpha, mixup_plan
from .schedules import LRSchedule, check_schedule, step_schedule

ON_NAN = ("raise", "restore")

# Batches per C++ call when nothing is shown: often enough for Ctrl-C to be honoured within a
# fraction of a second, rarely enough that the Python overhead is nil.
_SILENT_CALLS_PER_EPOCH = 10
_PROGRESS_CALLS_PER_EPOCH = 30


class TrainableModel(Protocol):
    """What the loop uses of a model: its core network, options, counters, random generators,
    input preparation, evaluation and state copies (fastmlp.MLP has them all)."""

    _network: Any
    loss: str
    dtype: np.dtype
    seed: int
    batch_norm: bool
    class_weights: Optional[List[float]]
    epochs_trained: int
    fitted: bool
    _shuffle_rng: np.random.Generator
    _mixup_rng: np.random.Generator

    @property
    def learning_rate(self) -> float: ...

    @learning_rate.setter
    def learning_rate(self, lr: float) -> None: ...

    def _prepare(self, X: Any, y: Any, name_x: str = ..., name_y: str = ...) -> Tuple[Any, np.ndarray]: ...

    def _evaluate_arrays(self, X: Any, y: np.ndarray, prefix: str = ...,
                         sample_weight: Optional[np.ndarray] = ...) -> Dict[str, float]: ...

    def _snapshot(self) -> Dict[str, np.ndarray]: ...

    def _restore(self, snapshot: Dict[str, np.ndarray]) -> None: ...

    def _training_state(self) -> Dict[str, Any]: ...

    def _set_training_state(self, state: Dict[str, Any]) -> None: ...


class _RestoredAfterNonFinite(FloatingPointError):
    """fit(on_nan="restore") met a NaN/inf step and put the last good state back."""


class _EpochInterrupted(KeyboardInterrupt):
    """Ctrl-C during an epoch's training: carries the epoch's record over the steps taken
    (None when it took none) and the rows they trained."""

    def __init__(self, logs: Optional[Dict[str, float]], rows: int) -> None:
        super().__init__()
        self.logs, self.rows = logs, rows


class _EpochTotals:
    """The core's running totals over an epoch's calls: loss_sum, rows, and the rows' weight
    and weighted correct count (the rows and the correct count without sample weights)."""

    def __init__(self) -> None:
        self.loss_sum, self.rows, self.weight, self.weighted_correct = 0.0, 0, 0.0, 0.0

    def add(self, part: Sequence[Any], weighted: bool, weights_at: int = 5) -> None:
        """Add a train_batches result (loss_sum, correct, rows, nonfinite_batch, params_finite,
        then weight_sum and weighted_correct with sample weights) or last_run_totals (the
        same without params_finite: weights_at=4)."""
        self.loss_sum += part[0]
        self.rows += part[2]
        if weighted:
            self.weight += part[weights_at]
            self.weighted_correct += part[weights_at + 1]
        else:
            self.weight += part[2]
            self.weighted_correct += part[1]


@dataclass
class TrainingData:
    """fit's checked arrays: the training rows of X (`rows`: None for all of them, else the
    indices of those validation_split left), the core's sample_weight keywords (empty
    without weights) and the validation arrays (None without validation)."""

    X: Any
    y: np.ndarray
    rows: Optional[np.ndarray] = None
    weights: Dict[str, np.ndarray] = field(default_factory=dict)
    X_val: Optional[Any] = None
    y_val: Optional[np.ndarray] = None
    val_weights: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0] if self.rows is None else self.rows.size)


def fit(model: TrainableModel, X: Any, y: Any, epochs: int, batch_size: int, *,
        validation_data: Optional[Tuple[Any, ...]], validation_split: float, shuffle: bool,
        early_stopping: bool, patience: int, min_delta: float, restore_best_weights: bool,
        verbose: int, callbacks: Optional[Sequence[CallbackLike]], mixup: float,
        lr_schedule: Optional[LRSchedule], on_nan: str, sample_weight: Any) -> History:
    """MLP.fit: check the arguments, then train (see MLP.fit for their meaning)."""
    epochs = _check_positive_int("epochs", epochs)
    batch_size = _check_positive_int("batch_size", batch_size)
    patience = _check_positive_int("patience", patience)
    if batch_size > _INT64_MAX // 2:  # the core computes batch offsets in int64
        raise ValueError(f"batch_size must be an integer <= {_INT64_MAX // 2}, got {batch_size!r}")
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    on_nan = _check_choice("on_nan", on_nan, ON_NAN)
    if not isinstance(min_delta, (int, float)) or not min_delta >= 0:
        raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
    mixup = check_mixup_alpha(mixup, model.class_weights)
    lr_schedule = check_schedule(lr_schedule)
    data = _training_data(model, X, y, validation_data, validation_split, sample_weight)
    loop = FitLoop(model, data, batch_size, shuffle=shuffle, verbose=verbose, mixup=mixup,
                   on_nan=on_nan, last_epoch=model.epochs_trained + epochs)
    return loop.run(epochs, check_callbacks(callbacks), lr_schedule,
                    patience=patience if early_stopping else None, min_delta=min_delta,
                    restore_best_weights=restore_best_weights)


def _training_data(model: TrainableModel, X: Any, y: Any, validation_data: Optional[Tuple[Any, ...]],
                   validation_split: float, sample_weight: Any) -> TrainingData:
    """fit's arrays checked and converted, validation_split's rows held out."""
    X, y = model._prepare(X, y)
    weights = _as_sample_weight(sample_weight, X.shape[0], model.dtype)
    data = TrainingData(X, y, weights={} if weights is None else {"sample_weight": weights})
    weights_val: Optional[np.ndarray] = None
    if validation_data is not None:
        if validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a pair (X_val, y_val) or a triple "
                             "(X_val, y_val, sample_weight_val)")
        data.X_val, data.y_val = model._prepare(validation_data[0], validation_data[1], "X_val", "y_val")
        if len(validation_data) == 3:
            weights_val = _as_sample_weight(validation_data[2], data.X_val.shape[0], model.dtype,
                                            "sample_weight_val")
    elif validation_split:
        data.rows, validation_rows = split_rows(model.seed, X.shape[0], _check_fraction(
            "validation_split", validation_split))
        data.X_val, data.y_val = _take_rows(X, validation_rows), y[validation_rows]  # the held-out rows only
        if weights is not None:
            weights_val = weights[validation_rows]
            _require_weight("sample_weight of the validation_split rows", weights_val)
            _require_weight("sample_weight of the training rows", weights[data.rows])
    if weights_val is not None:
        data.val_weights = {"sample_weight": weights_val}
    if model.batch_norm and data.n_rows < 2:
        raise ValueError("batch_norm needs at least 2 training rows")
    return data


def split_rows(seed: int, n: int, fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """validation_split's (training rows, validation rows) of n, each sorted: a choice seeded
    by the model's seed. Training indexes X's rows in place, so a memmap is not copied."""
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split={fraction!r} leaves no rows for training or validation "
                         f"out of {n}")
    order = np.random.default_rng([seed, 2]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class FitLoop:
    """One fit call's epochs over `data`: training through the core, validation, the history,
    early stopping, callbacks and the lr schedule, and what a non-finite step or Ctrl-C does."""

    def __init__(self, model: TrainableModel, data: TrainingData, batch_size: int, *, shuffle: bool,
                 verbose: int, mixup: float, on_nan: str, last_epoch: int) -> None:
        self.model, self.data, self.batch_size = model, data, batch_size
        self.shuffle, self.verbose, self.mixup, self.on_nan = shuffle, verbose, mixup, on_nan
        self.last_epoch = last_epoch

    def run(self, epochs: int, callbacks: Sequence[CallbackLike], lr_schedule: Optional[LRSchedule], *,
            patience: Optional[int], min_delta: float, restore_best_weights: bool) -> History:
        """Train `epochs` epochs; early stopping when `patience` is not None."""
        model, data = self.model, self.data
        history = History()
        best: Tuple[float, Optional[Dict[str, np.ndarray]]] = (math.inf, None)  # (monitored loss, saved state)
        epochs_without_improvement = 0
        train_begins(callbacks, model)
        if lr_schedule is not None:
            model.learning_rate = lr_schedule.start(model.learning_rate, owner=model)
        for _ in range(epochs):
            model.epochs_trained += 1
            epoch_lr = model.learning_rate
            trained: Optional[Tuple[Dict[str, float], int]] = None  # the epoch's training logs and rows
            try:  # Ctrl-C anywhere in the epoch, validation and callbacks included
                logs, rows = self.train_epoch()
                trained = (dict(logs), rows)
                if data.X_val is not None and data.y_val is not None:
                    logs.update(model._evaluate_arrays(data.X_val, data.y_val, prefix="val_",
                                                       **data.val_weights))
                logs["lr"] = epoch_lr
                history.append(model.epochs_trained, logs)
                if lr_schedule is not None:
                    model.learning_rate = step_schedule(lr_schedule, logs)
                if self.verbose:
                    print(epoch_line(model.epochs_trained, self.last_epoch, logs), flush=True)
                stop = epoch_ends(callbacks, model.epochs_trained, logs, history)
            except KeyboardInterrupt as interruption:
                if isinstance(interruption, _EpochInterrupted):
                    trained = None if interruption.logs is None else (interruption.logs, interruption.rows)
                recorded = bool(history.epoch) and history.epoch[-1] == model.epochs_trained
                if trained is not None and not recorded:
                    self._record_partial_epoch(history, *trained, epoch_lr)
                self._interrupted(history)
                break
            except _RestoredAfterNonFinite as failure:
                history.stopped_on_nan = True
                warnings.warn(str(failure), RuntimeWarning, stacklevel=5)  # the caller of MLP.fit
                break
            if patience is not None:
                monitored = logs.get("val_loss", logs["loss"])
                if monitored < best[0] - min_delta:
                    best = (monitored, model._snapshot() if restore_best_weights else None)
                    epochs_without_improvement = 0
                else:
                    epochs_without_improvement += 1
                    if epochs_without_improvement >= patience:
                        history.stopped_early = stop = True
            if stop:
                break
        if best[1] is not None:
            model._restore(best[1])
        train_ends(callbacks, history)
        return history

    def _record_partial_epoch(self, history: History, logs: Dict[str, float], rows: int,
                              lr: float) -> None:
        """Append the epoch Ctrl-C cut short: its training logs over the `rows` it trained, NaN
        for the validation it did not run (so every key's list stays as long as the epochs')."""
        logs = dict(logs)
        if self.data.X_val is not None:
            logs["val_loss"] = math.nan
            if self.model.loss in CLASSIFICATION_LOSSES:
                logs["val_accuracy"] = math.nan
        logs["lr"] = lr
        history.append(self.model.epochs_trained, logs)
        history.partial_epoch, history.partial_epoch_rows = True, rows

    def _interrupted(self, history: History) -> None:
        """After Ctrl-C: the steps the core took are kept, so the model counts as fitted."""
        model = self.model
        history.interrupted = True
        model.fitted = model.fitted or model._network.step > 0
        if self.verbose:
            partial = (f" after {history.partial_epoch_rows} training rows (loss: "
                       f"{history['loss'][-1]:.4f})" if history.partial_epoch else "")
            print(f"\ninterrupted in epoch {model.epochs_trained}{partial}: the model keeps the "
                  f"{model._network.step} steps taken so far", file=sys.stderr, flush=True)

    def train_epoch(self) -> Tuple[Dict[str, float], int]:
        """One pass over the training rows: the epoch's logs and the rows it trained. Ctrl-C
        raises _EpochInterrupted with the logs of the steps taken."""
        model, data, batch_size = self.model, self.data, self.batch_size
        network, weights = model._network, data.weights
        n = data.n_rows
        order = model._shuffle_rng.permutation(n) if self.shuffle else np.arange(n)
        order = (order if data.rows is None else data.rows[order]).astype(np.int64)
        mixing = mixup_plan(model._mixup_rng, order, batch_size, self.mixup, model.dtype) if self.mixup else ()
        n_batches = (n + batch_size - 1) // batch_size
        calls = _PROGRESS_CALLS_PER_EPOCH if self.verbose == 1 else _SILENT_CALLS_PER_EPOCH
        per_call = max(1, -(-n_batches // calls))
        started = time.perf_counter()
        totals = _EpochTotals()
        bar = progress_bar(n_batches, f"Epoch {model.epochs_trained}/{self.last_epoch}") \
            if self.verbose == 1 else None
        try:
            for first in range(0, n_batches, per_call):
                count = min(per_call, n_batches - first)
                # Kept under both policies: an update can overflow the parameters although its
                # gradient was finite, and the core finds that only after it (3 copies of the
                # parameters per tenth of an epoch: ~1% of a 784-256-10 epoch).
                last_good = model._training_state()
                try:
                    part = network.train_batches(data.X, data.y, order, batch_size, first, count, *mixing,
                                                 **weights)
                except KeyboardInterrupt:
                    # the steps the call took before Ctrl-C
                    totals.add(network.last_run_totals, weighted=bool(weights), weights_at=4)
                    raise
                totals.add(part, weighted=bool(weights))
                if part[3] >= 0:
                    self._stop_at_non_finite_step(part[3], n_batches, last_good,
                                                  params_overflowed=not part[4])
                model.fitted = True
                if bar is not None:
                    bar.update(first + count, totals.loss_sum / max(totals.weight, 1e-300) if totals.rows else 0.0)
        except KeyboardInterrupt:
            seconds = time.perf_counter() - started
            logs = self._epoch_logs(totals, seconds) if totals.rows else None
            raise _EpochInterrupted(logs, totals.rows) from None
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
        if totals.rows == 0:
            raise ValueError("no batch could be trained (batch_norm needs batches of 2+ rows)")
        logs = self._epoch_logs(totals, seconds)
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"the training loss became {logs['loss']} in epoch {model.epochs_trained}; "
                                     "lower the learning rate or check the data")
        return logs, totals.rows

    def _epoch_logs(self, totals: _EpochTotals, seconds: float) -> Dict[str, float]:
        """An epoch's record from the core's running totals over its trained rows: loss and
        accuracy per unit of weight (per row without sample weights)."""
        weight = totals.weight
        logs = {"loss": totals.loss_sum / weight if weight > 0 else math.nan}
        if self.model.loss in CLASSIFICATION_LOSSES:
            logs["accuracy"] = totals.weighted_correct / weight if weight > 0 else math.nan
        logs["seconds"] = seconds
        logs["samples_per_second"] = totals.rows / seconds if seconds > 0 else math.inf
        return logs

    def _stop_at_non_finite_step(self, batch: int, n_batches: int, last_good: Dict[str, Any],
                                 params_overflowed: bool = False) -> None:
        """Raise for the step the C++ core refused (its loss or gradient was NaN/inf), or for the
        update that made parameters NaN/inf (`params_overflowed`: the core finds that within a
        signal-check interval; `batch` is then the last one trained). With on_nan="restore"
        `last_good` is put back and a warning follows; with "raise" an overflow is still
        rolled back to `last_good` (the model is never left NaN), a refused step needs
        nothing (it was not applied), and FloatingPointError follows."""
        model = self.model
        if params_overflowed:
            what = (f"parameters became NaN or infinite in epoch {model.epochs_trained}, by step "
                    f"{int(model._network.step)} at the latest (batch {batch + 1} of {n_batches} of "
                    "the epoch), although the loss and gradients were finite")
            fix = (f"Lower the learning rate; the weights after step {last_good['step']} (the last "
                   "finite ones) were put back. ")
        else:
            what = (f"the training loss became NaN or infinite (or a gradient did) in epoch "
                    f"{model.epochs_trained}, step {int(model._network.step) + 1} (batch {batch + 1} of "
                    f"{n_batches} of the epoch); that step was not applied")
            fix = "Lower the learning rate or check the data; "
        if self.on_nan == "raise":
            if params_overflowed:
                model._set_training_state(last_good)
            raise FloatingPointError(
                f"{what} and training stopped. {fix}fit(..., on_nan='restore') returns the "
                "history instead of raising")
        model._set_training_state(last_good)
        raise _RestoredAfterNonFinite(
            f"{what}; training stopped and the weights after step {last_good['step']} were restored")
