"""Feedback while training: the History of a fit, progress bars (tqdm when installed, else a
plain one-line bar), the Keras-like per-epoch line, user callbacks, and drawing a history's
curves with matplotlib. It knows nothing of the model (the training loop hands it what it shows).
"""
from __future__ import annotations

import importlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, KeysView, List, Optional, Protocol, Sequence, Union

from ._files import PathLike, write_atomically

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["History", "Callback", "EpochCallable", "CallbackLike"]

EpochCallable = Callable[[int, Dict[str, float]], Any]


class Callback:
    """Base class of training callbacks: override the hooks you need.

    ``MLP.fit(..., callbacks=[...])`` accepts instances of this class and plain callables
    ``f(epoch, logs)``; both stop training by returning ``False``.

    Examples
    --------
    >>> class StopAtAccuracy(fastmlp.Callback):
    ...     def on_epoch_end(self, epoch, logs, history):
    ...         return logs["accuracy"] < 0.99      # False stops training
    """

    def on_train_begin(self, model: Any) -> None:
        """Called once when ``fit`` starts, before the first epoch.

        Parameters
        ----------
        model : MLP
            The model being trained.
        """

    def on_epoch_end(self, epoch: int, logs: Dict[str, float],
                     history: "History") -> Optional[bool]:
        """Called after every epoch.

        Parameters
        ----------
        epoch : int
            The epoch just finished, counting across calls to ``fit`` (1 for the first).
        logs : dict of str to float
            The epoch's record: loss, accuracy (classification), val_loss, val_accuracy
            (with validation data), seconds, samples_per_second. A copy: changing it has
            no effect.
        history : History
            The records of this ``fit`` so far, this epoch included. Read it, do not change it.

        Returns
        -------
        bool or None
            ``False`` stops training after this epoch; anything else continues.
        """
        return None

    def on_train_end(self, history: "History") -> None:
        """Called once when ``fit`` returns (also after Ctrl-C or early stopping).

        Parameters
        ----------
        history : History
            The records of this ``fit``; after Ctrl-C its last record may be of the epoch
            it cut short (``history.partial_epoch``), which ``on_epoch_end`` never saw.
        """


CallbackLike = Union[Callback, EpochCallable]


def check_callbacks(callbacks: Optional[Sequence[CallbackLike]]) -> List[CallbackLike]:
    """The callbacks as a list, each a Callback or a callable; a clear TypeError otherwise."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks):
        raise TypeError(f"callbacks must be a list of callbacks, got a single one: {callbacks!r}; "
                        "write callbacks=[...]")
    checked = list(callbacks)
    for index, callback in enumerate(checked):
        if not isinstance(callback, Callback) and not callable(callback):
            raise TypeError(f"callbacks[{index}] must be a fastmlp.Callback or a callable "
                            f"f(epoch, logs), got {callback!r}")
    return checked


def train_begins(callbacks: Sequence[CallbackLike], model: Any) -> None:
    """Tell every Callback instance that training starts."""
    for callback in callbacks:
        if isinstance(callback, Callback):
            callback.on_train_begin(model)


def epoch_ends(callbacks: Sequence[CallbackLike], epoch: int, logs: Dict[str, float],
               history: "History") -> bool:
    """Run every callback for this epoch (all of them, even after one asked to stop);
    True when one returned False."""
    stop = False
    for callback in callbacks:
        if isinstance(callback, Callback):
            answer = callback.on_epoch_end(epoch, dict(logs), history)
        else:
            answer = callback(epoch, dict(logs))
        stop = stop or answer is False
    return stop


def train_ends(callbacks: Sequence[CallbackLike], history: "History") -> None:
    """Tell every Callback instance that training ended."""
    for callback in callbacks:
        if isinstance(callback, Callback):
            callback.on_train_end(history)


# ---- the per-epoch line --------------------------------------------------------------------------


def epoch_line(epoch: int, last_epoch: int, logs: Dict[str, float]) -> str:
    """Keras' summary of an epoch: ``Epoch 3/10 - 1.24s - loss: 0.4012 - accuracy: 0.8561 ...``."""
    parts = [f"Epoch {epoch}/{last_epoch}", f"{logs['seconds']:.2f}s"]
    parts += [f"{key}: {logs[key]:.4f}" for key in ("loss", "accuracy", "val_loss", "val_accuracy")
              if key in logs]
    return " - ".join(parts)


# ---- progress bars ---------------------------------------------------------------------------------


class ProgressBar(Protocol):
    """What fit needs of a progress bar: the batches done so far and the running loss."""

    def update(self, done: int, loss: float) -> None: ...

    def close(self) -> None: ...


class PlainProgressBar:
    """A one-line bar redrawn in place on stderr: ``epoch 2 120/469 [=======.......] 0.8s loss: 0.41``."""

    def __init__(self, total: int, label: str, width: int = 30) -> None:
        self.total, self.label, self.width = total, label, width
        self.started = time.perf_counter()

    def update(self, done: int, loss: float) -> None:
        filled = int(self.width * done / self.total)
        bar = "=" * filled + "." * (self.width - filled)
        seconds = time.perf_counter() - self.started
        print(f"\r{self.label} {done}/{self.total} [{bar}] {seconds:.1f}s loss: {loss:.4f}",
              end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr, flush=True)


class TqdmProgressBar:
    """The same bar drawn by tqdm (notebook widgets included, through tqdm.auto)."""

    def __init__(self, tqdm_class: Any, total: int, label: str) -> None:
        self.bar = tqdm_class(total=total, desc=label, unit="batch", leave=False, file=sys.stderr)
        self.done = 0

    def update(self, done: int, loss: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        self.bar.close()


def tqdm_class() -> Any:
    """tqdm.auto.tqdm when tqdm is installed, else None (then the plain bar is used)."""
    try:  # imported by name: tqdm ships no type information, and none is needed here
        return importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        return None


def progress_bar(total: int, label: str) -> ProgressBar:
    """A progress bar over ``total`` batches: tqdm's if installed, else the plain one."""
    found = tqdm_class()
    if found is None:
        return PlainProgressBar(total, label)
    return TqdmProgressBar(found, total, label)


# ---- plotting ----------------------------------------------------------------------------------------


def plot_history(history: "History", path: PathLike) -> "Figure":
    """Draw loss (and accuracy, when recorded) per epoch into an image file; see History.plot."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("History.plot needs matplotlib: pip install matplotlib") from None
    path = os.fspath(path)
    if len(history) == 0:
        raise ValueError("history has no epochs to plot")
    extension = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    figure = Figure(figsize=(10, 4) if "accuracy" in history else (5, 4))
    canvas = FigureCanvasAgg(figure)
    if extension not in canvas.get_supported_filetypes():
        raise ValueError(f"path {path!r}: matplotlib cannot write {extension!r} files; use .png")
    panels = [("loss", "val_loss")]
    if "accuracy" in history:
        panels.append(("accuracy", "val_accuracy"))
    for index, keys in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for key in keys:
            if key in history:
                axes.plot(history.epoch, history[key], marker="o", label=key)
        axes.set_xlabel("epoch")
        axes.set_ylabel(keys[0])
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.tight_layout()
    write_atomically(path, lambda file: figure.savefig(file, format=extension))
    return figure


class History:
    """Per-epoch records of a fit: ``history["loss"]``, ``history["val_accuracy"]`` ...

    Keys: loss, accuracy (classification), val_loss, val_accuracy (with validation data),
    lr (the learning rate the epoch used), seconds, samples_per_second. ``epoch`` lists the
    epoch numbers (counting across fits).

    Attributes
    ----------
    stopped_early, stopped_on_nan, interrupted : bool
        Why fit stopped before its last epoch, if it did (``interrupted``: Ctrl-C).
    partial_epoch : bool
        True when the last record is of an epoch that Ctrl-C cut short: its loss and accuracy
        cover the steps the epoch took (``partial_epoch_rows`` rows); its val_loss and
        val_accuracy are NaN (validation did not run); callbacks did not see it.
    partial_epoch_rows : int
        The training rows the partial record covers (0 when ``partial_epoch`` is False).
    """

    def __init__(self) -> None:
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []
        self.stopped_early = False
        self.stopped_on_nan = False
        self.interrupted = False
        self.partial_epoch = False
        self.partial_epoch_rows = 0

    def append(self, epoch: int, logs: Dict[str, float]) -> None:
        """Record one epoch.

        Parameters
        ----------
        epoch : int
            The epoch's number.
        logs : dict of str to float
            Its values; a key seen for the first time starts a new list.
        """
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> List[float]:
        return self.history[key]

    def __contains__(self, key: object) -> bool:
        return key in self.history

    def keys(self) -> KeysView[str]:
        """The recorded quantities.

        Returns
        -------
        KeysView of str
            loss, accuracy, val_loss, val_accuracy, lr, seconds, samples_per_second:
            those recorded.
        """
        return self.history.keys()

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"

    def plot(self, path: PathLike) -> "Figure":
        """Draw the loss curves (loss, val_loss) and, for classifiers, the accuracy curves
        (accuracy, val_accuracy) per epoch into an image file.

        Parameters
        ----------
        path : str or os.PathLike
            Destination; the format follows the extension (PNG when there is none). The
            file is written beside its destination and renamed into place.

        Returns
        -------
        matplotlib.figure.Figure
            The figure drawn (no pyplot state is touched, so this works without a display).

        Raises
        ------
        ImportError
            When matplotlib is not installed (it is optional: ``pip install matplotlib``).
        ValueError
            When the history is empty or the extension is not an image format.
        """
        return plot_history(self, path)
