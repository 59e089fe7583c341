"""The training loop behind fastmlp.MLP.fit: epochs of batches run through the core, validation,
history, early stopping, callbacks, lr schedules, mixup, sample weights, non-finite steps and
Ctrl-C. It trains any model that has what TrainableModel lists (fastmlp.MLP)."""
from __future__ import annotations

import math
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, TypeVar

import numpy as np

from ._checks import CLASSIFICATION_LOSSES, _INT64_MAX, _as_sample_weight, _check_choice, \
    _check_fraction, _check_positive_int, _require_weight, _take_rows
from .distributed import Ranks, ranks_of, shard_bounds, shares_of_batches
from .feedback import CallbackLike, History, check_callbacks, epoch_ends, epoch_line, \
    progress_bar, train_begins, train_ends
from .mixup import check_mixup_alpha, mixup_plan
from .schedules import LRSchedule, check_schedule, step_schedule

ON_NAN = ("raise", "restore")

_T = TypeVar("_T")

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

    def _require_class_weight(self, labels: np.ndarray, sample_weight: Optional[np.ndarray], what: str,
                              rows: Optional[np.ndarray] = ...) -> None: ...

    def _evaluate_arrays(self, X: Any, y: np.ndarray, prefix: str = ...,
                         sample_weight: Optional[np.ndarray] = ...) -> Dict[str, float]: ...

    def _snapshot(self) -> Dict[str, np.ndarray]: ...

    def _restore(self, snapshot: Dict[str, np.ndarray]) -> None: ...

    def _training_state(self, reuse: Optional[Dict[str, Any]] = ...) -> Dict[str, Any]: ...

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
    and weighted correct count (the rows and the correct count without sample or class weights)."""

    def __init__(self) -> None:
        self.loss_sum, self.rows, self.weight, self.weighted_correct = 0.0, 0, 0.0, 0.0

    def add(self, part: Sequence[Any], weighted: bool, weights_at: int = 5) -> None:
        """Add a train_batches result (loss_sum, correct, rows, nonfinite_batch, params_finite,
        then weight_sum and weighted_correct with sample or class weights) or last_run_totals (the
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
        lr_schedule: Optional[LRSchedule], on_nan: str, sample_weight: Any,
        comm: Any = None, sharded: bool = False) -> History:
    """MLP.fit: check the arguments, then train (see MLP.fit for their meaning). With a
    communicator of several ranks every rank checks its own, and all raise the first failing
    rank's error before the first step."""
    refuse_during_data_parallel_fit(model, "fit")
    if not isinstance(sharded, (bool, np.bool_)):
        raise TypeError(f"sharded must be True or False, got {sharded!r}")
    ranks = ranks_of(comm, bool(sharded))
    # validation_split holds out the rows rank 0's seed picks, on every rank: ranks whose
    # models drew seeds of their own (seed=None) would otherwise train on different rows.
    split_seed = model.seed if ranks is None else int(ranks.comm.bcast(model.seed, root=0))

    def prepare() -> Tuple[FitLoop, int, List[CallbackLike], Optional[LRSchedule], int]:
        checked_epochs = _check_positive_int("epochs", epochs)
        checked_batch_size = _check_positive_int("batch_size", batch_size)
        checked_patience = _check_positive_int("patience", patience)
        if checked_batch_size > _INT64_MAX // 2:  # the core computes batch offsets in int64
            raise ValueError(f"batch_size must be an integer <= {_INT64_MAX // 2}, got {batch_size!r}")
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        checked_on_nan = _check_choice("on_nan", on_nan, ON_NAN)
        if not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        checked_mixup = check_mixup_alpha(mixup, model.class_weights)
        checked_schedule = check_schedule(lr_schedule)
        checked_callbacks = check_callbacks(callbacks)
        data = _training_data(model, X, y, validation_data, validation_split, sample_weight, split_seed)
        loop = FitLoop(model, data, checked_batch_size, shuffle=shuffle, verbose=verbose,
                       mixup=checked_mixup, on_nan=checked_on_nan, ranks=ranks)
        return loop, checked_epochs, checked_callbacks, checked_schedule, checked_patience

    loop, epochs, callbacks, lr_schedule, patience = prepare() if ranks is None else ranks.agree(prepare)
    if ranks is not None:
        # Options that set how many steps and collectives each rank runs, or what it decides
        # from the agreed figures: a rank with other ones would wait for the rest, or part from them.
        ranks.require_same("fit's options (epochs, batch_size, shuffle, mixup, on_nan, early stopping's "
                           "patience, min_delta and restore_best_weights, whether validation data was given)",
                           (epochs, loop.batch_size, bool(loop.shuffle), loop.mixup, loop.on_nan,
                            patience if early_stopping else None, float(min_delta), bool(restore_best_weights),
                            loop.data.X_val is not None))
        loop.join_ranks()
    return loop.run(epochs, callbacks, lr_schedule, patience=patience if early_stopping else None,
                    min_delta=min_delta, restore_best_weights=restore_best_weights)


def refuse_during_data_parallel_fit(model: TrainableModel, what: str) -> None:
    """RuntimeError when a data-parallel fit of `model` is running (a callback of it calls
    `what`): each of that fit's steps is summed over the ranks inside the core, so a step
    or a fit of this rank's own would wait there for ranks that never join it, or break
    the replicas. The error goes to every rank as a callback's does."""
    if model._network.reduces_gradient:
        raise RuntimeError(f"{what} cannot be called during a data-parallel fit (comm=...) of this model, "
                           "e.g. from one of its callbacks: that fit sums every step's gradient over the "
                           "ranks; call it after fit returns, or on a copy of the model")


def _training_data(model: TrainableModel, X: Any, y: Any, validation_data: Optional[Tuple[Any, ...]],
                   validation_split: float, sample_weight: Any, split_seed: int) -> TrainingData:
    """fit's arrays checked and converted, validation_split's rows (chosen by split_seed) held out."""
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
        data.rows, validation_rows = split_rows(split_seed, X.shape[0], _check_fraction(
            "validation_split", validation_split))
        data.X_val, data.y_val = _take_rows(X, validation_rows), y[validation_rows]  # the held-out rows only
        if weights is not None:
            weights_val = weights[validation_rows]
            _require_weight("sample_weight of the validation_split rows", weights_val)
            _require_weight("sample_weight of the training rows", weights[data.rows])
    model._require_class_weight(y, weights, "the training rows of y", data.rows)
    if data.y_val is not None:
        model._require_class_weight(data.y_val, weights_val, "the validation labels")
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
    early stopping, callbacks and the lr schedule, and what a non-finite step or Ctrl-C does.

    Data-parallel training (`ranks`, several MPI processes) is this loop with one seam: each
    step's gradient and figures are summed over the ranks inside the core's step (the hook of
    Network.set_gradient_reduction), so every rank applies the same update, and the epoch's
    figures (validation, time, a callback's stop) are combined before anything is decided
    from them. Each rank trains on its share of every global batch (see _epoch_batches)."""

    def __init__(self, model: TrainableModel, data: TrainingData, batch_size: int, *, shuffle: bool,
                 verbose: int, mixup: float, on_nan: str, ranks: Optional[Ranks] = None) -> None:
        self.model, self.data, self.batch_size = model, data, batch_size
        self.shuffle, self.verbose, self.mixup, self.on_nan = shuffle, verbose, mixup, on_nan
        self.ranks = ranks
        # What is printed: rank 0 prints for all (verbose still sets every rank's calls per epoch).
        self.shown = verbose if ranks is None or ranks.rank == 0 else 0
        self.global_rows = data.n_rows  # the ranks' rows together
        self.validation_shared = False  # every rank passed the same validation rows
        self.last_epoch = 0
        # The training state at the start of the latest run of batches, and of the one before.
        self.last_good: Optional[Dict[str, Any]] = None
        self.before_good: Optional[Dict[str, Any]] = None

    def join_ranks(self) -> None:
        """Before the first step of a data-parallel fit: check that the ranks hold one model
        and (unless sharded) one dataset, start every rank from rank 0's parameters, optimizer
        state, counters and random generators, and take this rank's share of the node's cores."""
        model, data, ranks = self.model, self.data, self.ranks
        assert ranks is not None
        network = model._network
        ranks.require_same("the model (dtype, loss, parameters, batch norm, optimizer state)",
                           (model.dtype.name, model.loss, int(network.params.size),
                            int(network.running_mean.size), sorted(network.optimizer_state)))
        if ranks.sharded:
            self.global_rows = int(ranks.sum([float(data.n_rows)])[0])
        else:
            require_same_data(ranks, (data.n_rows,), data.y, data.weights.get("sample_weight"))
        if data.X_val is not None and data.y_val is not None:
            X_val = data.X_val
            self.validation_shared = ranks.all_same((
                X_val.shape, _checksum(X_val) if isinstance(X_val, np.ndarray) else None,
                _checksum(data.y_val), _checksum(data.val_weights.get("sample_weight"))))
        generators = {"shuffle": model._shuffle_rng, "mixup": model._mixup_rng}
        # (The scikit-learn adapter's stand-in shuffler has no bit generator: it draws from a
        # random_state the adapter has made the same on every rank.)
        generators = {name: generator for name, generator in generators.items()
                      if isinstance(generator, np.random.Generator)}
        state = ranks.broadcast_state(network, {
            "step": int(network.step), "lr": model.learning_rate, "epochs_trained": model.epochs_trained,
            "fitted": model.fitted, **{name: generator.bit_generator.state for name, generator in generators.items()}})
        network.step = state["step"]
        model.learning_rate = state["lr"]
        model.epochs_trained, model.fitted = state["epochs_trained"], state["fitted"]
        for name, generator in generators.items():
            generator.bit_generator.state = state[name]
        ranks.take_core_share()

    def run(self, epochs: int, callbacks: Sequence[CallbackLike], lr_schedule: Optional[LRSchedule], *,
            patience: Optional[int], min_delta: float, restore_best_weights: bool) -> History:
        """Train `epochs` epochs; early stopping when `patience` is not None."""
        network = self.model._network
        if self.ranks is None:
            return self._epochs(epochs, callbacks, lr_schedule, patience=patience, min_delta=min_delta,
                                restore_best_weights=restore_best_weights)
        self.ranks.connect(network)
        try:
            history = self._epochs(epochs, callbacks, lr_schedule, patience=patience, min_delta=min_delta,
                                   restore_best_weights=restore_best_weights)
        except BaseException:
            self.ranks.disconnect(network, cleanly=False)  # no collective: other ranks may be gone
            raise
        self.ranks.disconnect(network)
        return history

    def _epochs(self, epochs: int, callbacks: Sequence[CallbackLike], lr_schedule: Optional[LRSchedule], *,
                patience: Optional[int], min_delta: float, restore_best_weights: bool) -> History:
        """run's epochs, once the ranks (if any) are connected."""
        model, data = self.model, self.data
        self.last_epoch = model.epochs_trained + epochs
        history = History()
        best: Tuple[float, Optional[Dict[str, np.ndarray]]] = (math.inf, None)  # (monitored loss, saved state)
        epochs_without_improvement = 0
        self._agreed(lambda: train_begins(callbacks, model))
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
                    logs.update(self._validation_logs(data.X_val, data.y_val, data.val_weights))
                logs["lr"] = epoch_lr
                history.append(model.epochs_trained, logs)
                if lr_schedule is not None:
                    model.learning_rate = step_schedule(lr_schedule, logs)
                if self.shown:
                    print(epoch_line(model.epochs_trained, self.last_epoch, logs), flush=True)
                stop = self._callbacks_stop(callbacks, logs, history)
            except KeyboardInterrupt as interruption:
                if self.ranks is not None:
                    # The other ranks may be waiting in this step's reduction: ending the
                    # process is what frees them (python -m mpi4py aborts every rank).
                    raise KeyboardInterrupt("interrupted: a data-parallel fit ends on every rank") from None
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
        self._agreed(lambda: train_ends(callbacks, history))
        return history

    def _callbacks_stop(self, callbacks: Sequence[CallbackLike], logs: Dict[str, float],
                        history: History) -> bool:
        """Whether a callback asks to stop. Across ranks: one that stops any rank stops them
        all, and one that raises on any rank raises on every rank (none is left waiting)."""
        epoch = self.model.epochs_trained
        stop = self._agreed(lambda: epoch_ends(callbacks, epoch, logs, history))
        return stop if self.ranks is None else self.ranks.any(stop)

    def _agreed(self, action: Callable[[], _T]) -> _T:
        """action() (a callback's hook); across ranks, when it raises on any rank, the same
        error on every rank (Ranks.agree), so that none goes on to wait for the others."""
        return action() if self.ranks is None else self.ranks.agree(action)

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
        if self.shown:
            partial = (f" after {history.partial_epoch_rows} training rows (loss: "
                       f"{history['loss'][-1]:.4f})" if history.partial_epoch else "")
            print(f"\ninterrupted in epoch {model.epochs_trained}{partial}: the model keeps the "
                  f"{model._network.step} steps taken so far", file=sys.stderr, flush=True)

    def train_epoch(self) -> Tuple[Dict[str, float], int]:
        """One pass over the training rows: the epoch's logs and the rows it trained. Ctrl-C
        raises _EpochInterrupted with the logs of the steps taken."""
        model, data, batch_size = self.model, self.data, self.batch_size
        network, weights = model._network, data.weights
        # The core's totals carry weights with sample weights and with class weights.
        weighted = bool(weights) or model.class_weights is not None
        order, bounds, mixing = self._epoch_batches()
        n_batches = -(-self.global_rows // batch_size)
        calls = _PROGRESS_CALLS_PER_EPOCH if self.verbose == 1 else _SILENT_CALLS_PER_EPOCH
        per_call = max(1, -(-n_batches // calls))
        started = time.perf_counter()
        totals = _EpochTotals()
        bar = progress_bar(n_batches, f"Epoch {model.epochs_trained}/{self.last_epoch}") \
            if self.shown == 1 else None
        try:
            for first in range(0, n_batches, per_call):
                count = min(per_call, n_batches - first)
                # Kept under both policies: an update can overflow the parameters although its
                # gradient was finite, and the core finds that only after it (a copy of the
                # parameters and the optimizer state per tenth of an epoch, into the arrays of
                # the state dropped here: ~1% of an epoch of 784-1024-1024-10). The state
                # before is kept too (no copy): when the call's first step finds its logits
                # NaN/inf, the previous call's last update overflowed the forward pass, which
                # only the last call of an epoch checks directly (a forward of its last batch).
                dropped = self.before_good
                self.before_good, last_good = self.last_good, model._training_state(reuse=dropped)
                self.last_good = last_good
                try:
                    part = network.train_batches(data.X, data.y, order, batch_size, first, count, *mixing,
                                                 bounds=bounds, check_outputs=self._checks_outputs(first + count),
                                                 **weights)
                except KeyboardInterrupt:
                    # the steps the call took before Ctrl-C
                    totals.add(network.last_run_totals, weighted=weighted, weights_at=4)
                    raise
                totals.add(part, weighted=weighted)
                if part[3] >= 0:
                    good = last_good
                    if not part[4] and part[3] == first and self.before_good is not None:
                        good = self.before_good
                    self._stop_at_non_finite_step(part[3], n_batches, good, params_overflowed=not part[4])
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
        self._gather_optimizer_state()
        if self.ranks is not None:  # one history on every rank
            seconds = self.ranks.first_ranks(seconds)
        if totals.rows == 0:
            raise ValueError("no batch could be trained (batch_norm needs batches of 2+ rows)")
        logs = self._epoch_logs(totals, seconds)
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"the training loss became {logs['loss']} in epoch {model.epochs_trained}; "
                                     "lower the learning rate or check the data")
        return logs, totals.rows

    def _gather_optimizer_state(self) -> None:
        """Across ranks, where all of them stop training alike: each rank's optimizer state
        whole again (a rank updates only its chunk of it during an epoch)."""
        if self.ranks is not None:
            self.ranks.gather_optimizer_state(self.model._network)

    def _checks_outputs(self, end: int) -> bool:
        """Whether the run of batches ending before batch `end` checks the outputs after its
        last update (a forward of its batch): the epoch's last run, in one process. A rank
        would check its own rows only and could decide alone; across ranks the next step's
        logits, whose finiteness the reduction combines, tell instead."""
        return self.ranks is None and end == -(-self.global_rows // self.batch_size)

    def _epoch_batches(self) -> Tuple[np.ndarray, Optional[np.ndarray], Tuple[np.ndarray, ...]]:
        """The epoch's rows of X in the order this process trains them, the bounds of its
        batches in that order (None: batch_size rows each) and the mixup plan (empty without).

        One process: a permutation of the training rows from the model's generator. Ranks
        that share X (way (a)) draw that same permutation and each takes its share of every
        global batch, so the global batches are a single process's. Ranks with rows of their
        own (way (b), sharded) each shuffle their rows with a generator of their own (seeded
        from the model's, which takes the same draws on every rank) and cut them into as many
        near-equal runs as the global batches, the ranks' k-th runs making global batch k.
        """
        model, data, ranks, batch_size = self.model, self.data, self.ranks, self.batch_size
        n = data.n_rows
        if ranks is not None and ranks.sharded:
            stream: Optional[int] = ranks.rank
            generator = np.random.default_rng([int(model._shuffle_rng.integers(2 ** 63)), ranks.rank])
            bounds: Optional[np.ndarray] = shard_bounds(n, -(-self.global_rows // batch_size))
        else:
            stream, generator, bounds = None, model._shuffle_rng, None
        order = generator.permutation(n) if self.shuffle else np.arange(n)
        order = (order if data.rows is None else data.rows[order]).astype(np.int64)
        mixing: Tuple[np.ndarray, ...] = mixup_plan(model._mixup_rng, order, batch_size, self.mixup, model.dtype,
                                                    bounds, stream) if self.mixup else ()
        if ranks is None or ranks.sharded:
            return order, bounds, mixing
        positions, bounds = shares_of_batches(n, batch_size, ranks.rank, ranks.size)
        if mixing:
            mixing = (np.ascontiguousarray(mixing[0][positions]), mixing[1])
        return np.ascontiguousarray(order[positions]), bounds, mixing

    def _validation_logs(self, X_val: Any, y_val: np.ndarray,
                         val_weights: Dict[str, np.ndarray]) -> Dict[str, float]:
        """val_loss (and val_accuracy) over the validation rows. Ranks that passed the same
        rows (same size and checksums) evaluate a part each; ranks that passed parts of their
        own evaluate those; the parts' weighted sums are then added in rank order."""
        model, ranks = self.model, self.ranks
        if ranks is None:
            return model._evaluate_arrays(X_val, y_val, prefix="val_", **val_weights)
        weights = val_weights.get("sample_weight")
        if self.validation_shared:
            n = X_val.shape[0]
            part = np.arange(ranks.rank * n // ranks.size, (ranks.rank + 1) * n // ranks.size)
            X_val, y_val = _take_rows(X_val, part), y_val[part]
            weights = None if weights is None else weights[part]
        weight = float(y_val.shape[0] if weights is None else np.sum(weights, dtype=np.float64))
        logs = {} if weight == 0 else model._evaluate_arrays(
            X_val, y_val, prefix="val_", **({} if weights is None else {"sample_weight": weights}))
        loss_sum, correct_sum, total = ranks.sum([logs.get("val_loss", 0.0) * weight,
                                                  logs.get("val_accuracy", 0.0) * weight, weight])
        combined = {"val_loss": float(loss_sum / total)}
        if model.loss in CLASSIFICATION_LOSSES:
            combined["val_accuracy"] = float(correct_sum / total)
        return combined

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
        update that made parameters NaN/inf or made them overflow the forward pass
        (`params_overflowed`: the core finds the first within a signal-check interval, the
        second when a refused step's logits are NaN/inf or at the end of its call; `batch` is
        then the last one trained). With on_nan="restore"
        `last_good` is put back and a warning follows; with "raise" an overflow is still
        rolled back to `last_good` (the model is never left NaN), a refused step needs
        nothing (it was not applied), and FloatingPointError follows."""
        model = self.model
        if params_overflowed:
            finite = model._network.params_finite()
            if self.ranks is not None:
                # Ranks stepping in one shared copy of the parameters look before any of them
                # puts last_good back into it, and say what every rank saw: alone, a later rank
                # could find the copy a faster one had already restored.
                finite = self.ranks.all_finite(finite)
            how = ("NaN or infinite" if not finite else
                   "so large that the network's outputs on a batch are NaN or infinite")
            what = (f"parameters became {how} in epoch {model.epochs_trained}, by step "
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
            self._gather_optimizer_state()
            raise FloatingPointError(
                f"{what} and training stopped. {fix}fit(..., on_nan='restore') returns the "
                "history instead of raising")
        model._set_training_state(last_good)
        self._gather_optimizer_state()
        raise _RestoredAfterNonFinite(
            f"{what}; training stopped and the weights after step {last_good['step']} were restored")


def require_same_data(ranks: Ranks, shape: Tuple[int, ...], y: np.ndarray, sample_weight: Optional[np.ndarray],
                      *more: Any) -> None:
    """ValueError on every rank unless the ranks hold the same training data, as a data-parallel
    fit of every rank's same X (way (a)) needs: the same `shape` (rows; columns where they
    make the model), checksums of y and sample_weight, and whatever else `more` says."""
    ranks.require_same("the training data (unless fit(sharded=True), every rank passes the same X, y "
                       "and sample_weight): shape, and checksums of y and sample_weight",
                       (tuple(int(size) for size in shape), _checksum(y), _checksum(sample_weight), *more))


def _checksum(array: Optional[np.ndarray]) -> Optional[int]:
    """CRC-32 of an array's bytes (None for None): ranks compare their labels cheaply."""
    return None if array is None else zlib.crc32(np.ascontiguousarray(array).tobytes())
