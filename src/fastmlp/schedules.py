"""Learning-rate schedules for ``MLP.fit(..., lr_schedule=...)``, with the names, options and
per-epoch semantics of ``torch.optim.lr_scheduler``.

A schedule starts from the model's learning rate (``base_lr``) when ``fit`` first uses it,
sets the rate of epoch 0, and is stepped once after every epoch, as in torch's loop
``for epoch ...: train(); scheduler.step()``. Calling ``fit`` again with the same schedule
continues it; a schedule given to a different model starts over from that model's rate.
Without a schedule the learning rate stays constant.
"""
from __future__ import annotations

import bisect
import math
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = ["LRSchedule", "ConstantLR", "LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR",
           "CosineAnnealingLR", "ReduceLROnPlateau"]


def _check_number(name: str, value: Any, low: float, high: float = math.inf,
                  low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (value == low and not low_inclusive) or value > high \
            or (value == high and not high_inclusive):
        left, right = "[" if low_inclusive else "(", "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return float(value)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class LRSchedule:
    """The protocol ``fit`` drives: ``start`` once per fit, ``step`` after every epoch.

    ``base_lr`` is the rate the schedule started from, ``last_epoch`` the number of steps
    taken, ``last_lr`` the rate in force (torch's ``get_last_lr()[0]``).
    """

    def __init__(self) -> None:
        self.base_lr: Optional[float] = None
        self.last_epoch = 0
        self.last_lr: Optional[float] = None
        self._owner: Optional["weakref.ref[Any]"] = None

    def start(self, lr: float, owner: Any = None) -> float:
        """The rate for the next epoch. The first call (or the first for a new `owner`)
        records ``lr`` as base_lr and returns the rate of epoch 0; later calls continue."""
        same_owner = self._owner is not None and self._owner() is owner
        if self.base_lr is None or not same_owner:
            self.base_lr = float(lr)
            self.last_epoch = 0
            self._reset()
            self.last_lr = self.lr_at(0)
            self._owner = weakref.ref(owner) if owner is not None else None
        return self._last()

    def _last(self) -> float:
        """last_lr, which start sets."""
        if self.last_lr is None:
            raise RuntimeError(f"{type(self).__name__}: start was not called")
        return self.last_lr

    def step(self, metric: Optional[float] = None) -> float:
        """Advance one epoch; returns the rate for the next one. `metric` is read by
        ReduceLROnPlateau only."""
        if self.base_lr is None:
            raise RuntimeError(f"{type(self).__name__}.step called before start")
        self.last_epoch += 1
        self.last_lr = self.lr_at(self.last_epoch)
        return self.last_lr

    def lr_at(self, epoch: int) -> float:
        """The rate of `epoch` (0-based) in closed form, from base_lr."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget state other than base_lr and last_epoch (stateful schedules)."""

    def _base(self) -> float:
        if self.base_lr is None:
            raise RuntimeError(f"{type(self).__name__} has no base_lr yet: call start(lr) first")
        return self.base_lr

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self._options().items())
        return f"{type(self).__name__}({options})"

    def _options(self) -> Dict[str, Any]:
        return {}


class ConstantLR(LRSchedule):
    """torch's ConstantLR: ``base_lr * factor`` for the first ``total_iters`` epochs, then
    ``base_lr`` (a warm-up at a reduced rate). ``factor=1`` keeps the rate constant."""

    def __init__(self, factor: float = 1.0 / 3, total_iters: int = 5) -> None:
        super().__init__()
        self.factor = _check_number("factor", factor, 0.0, 1.0)
        self.total_iters = _check_int("total_iters", total_iters, 0)

    def lr_at(self, epoch: int) -> float:
        return self._base() * (self.factor if epoch < self.total_iters else 1.0)

    def _options(self) -> Dict[str, Any]:
        return {"factor": self.factor, "total_iters": self.total_iters}


class LambdaLR(LRSchedule):
    """torch's LambdaLR: ``base_lr * lr_lambda(epoch)``."""

    def __init__(self, lr_lambda: Callable[[int], float]) -> None:
        super().__init__()
        if not callable(lr_lambda):
            raise TypeError(f"lr_lambda must be callable, got {lr_lambda!r}")
        self.lr_lambda = lr_lambda

    def lr_at(self, epoch: int) -> float:
        factor = self.lr_lambda(epoch)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) \
                or not math.isfinite(factor) or factor < 0:
            raise ValueError(f"lr_lambda({epoch}) must return a finite number >= 0, got {factor!r}")
        return self._base() * float(factor)

    def _options(self) -> Dict[str, Any]:
        return {"lr_lambda": self.lr_lambda}


class StepLR(LRSchedule):
    """torch's StepLR (step decay): ``base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        super().__init__()
        self.step_size = _check_int("step_size", step_size, 1)
        self.gamma = _check_number("gamma", gamma, 0.0)

    def lr_at(self, epoch: int) -> float:
        return self._base() * self.gamma ** (epoch // self.step_size)

    def _options(self) -> Dict[str, Any]:
        return {"step_size": self.step_size, "gamma": self.gamma}


class MultiStepLR(LRSchedule):
    """torch's MultiStepLR: multiply by ``gamma`` at each epoch listed in ``milestones``."""

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1) -> None:
        super().__init__()
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise ValueError(f"milestones must be a sequence of epochs, got {milestones!r}")
        self.milestones: List[int] = sorted(_check_int("milestones[i]", m, 1) for m in milestones)
        self.gamma = _check_number("gamma", gamma, 0.0)

    def lr_at(self, epoch: int) -> float:
        return self._base() * self.gamma ** bisect.bisect_right(self.milestones, epoch)

    def _options(self) -> Dict[str, Any]:
        return {"milestones": self.milestones, "gamma": self.gamma}


class ExponentialLR(LRSchedule):
    """torch's ExponentialLR: ``base_lr * gamma ** epoch``."""

    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = _check_number("gamma", gamma, 0.0)

    def lr_at(self, epoch: int) -> float:
        return self._base() * self.gamma ** epoch

    def _options(self) -> Dict[str, Any]:
        return {"gamma": self.gamma}


class CosineAnnealingLR(LRSchedule):
    """torch's CosineAnnealingLR (without restarts):
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.
    Past ``T_max`` the cosine continues (back up), as torch's does."""

    def __init__(self, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803 - torch's name
        super().__init__()
        self.T_max = _check_int("T_max", T_max, 1)
        self.eta_min = _check_number("eta_min", eta_min, 0.0)

    def lr_at(self, epoch: int) -> float:
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self._base() - self.eta_min) * cosine

    def _options(self) -> Dict[str, Any]:
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class ReduceLROnPlateau(LRSchedule):
    """torch's ReduceLROnPlateau: multiply the rate by ``factor`` when the monitored metric
    has not improved for more than ``patience`` epochs, then wait ``cooldown`` epochs.

    ``fit`` passes ``val_loss`` when it has validation data, else the training ``loss``
    (``monitor`` names another key of the epoch's logs, e.g. ``"val_accuracy"`` with
    ``mode="max"``). Improvement means ``metric < best * (1 - threshold)`` (mode min,
    threshold_mode rel), ``metric < best - threshold`` (abs), or the mirror for mode max.
    The rate never goes below ``min_lr``, and changes smaller than ``eps`` are skipped.
    """

    def __init__(self, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float = 0.0, eps: float = 1e-8, monitor: Optional[str] = None) -> None:
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if monitor is not None and not isinstance(monitor, str):
            raise ValueError(f"monitor must be None or a log key such as 'val_loss', got {monitor!r}")
        self.mode, self.threshold_mode, self.monitor = mode, threshold_mode, monitor
        self.factor = _check_number("factor", factor, 0.0, 1.0, low_inclusive=True,
                                    high_inclusive=False)
        self.patience = _check_int("patience", patience, 0)
        self.threshold = _check_number("threshold", threshold, 0.0)
        self.cooldown = _check_int("cooldown", cooldown, 0)
        self.min_lr = _check_number("min_lr", min_lr, 0.0)
        self.eps = _check_number("eps", eps, 0.0)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def lr_at(self, epoch: int) -> float:
        if epoch == 0:
            return self._base()
        raise ValueError("ReduceLROnPlateau's rate depends on the metrics seen; read last_lr")

    def _is_better(self, metric: float) -> bool:
        if self.mode == "min":
            bound = self.best * (1 - self.threshold) if self.threshold_mode == "rel" \
                else self.best - self.threshold
            return metric < bound
        bound = self.best * (1 + self.threshold) if self.threshold_mode == "rel" \
            else self.best + self.threshold
        return metric > bound

    def step(self, metric: Optional[float] = None) -> float:
        if self.base_lr is None:
            raise RuntimeError("ReduceLROnPlateau.step called before start")
        if isinstance(metric, bool) or not isinstance(metric, (int, float)) or math.isnan(metric):
            raise ValueError(f"ReduceLROnPlateau.step needs the monitored metric, got {metric!r}")
        self.last_epoch += 1
        if self._is_better(metric):
            self.best, self.num_bad_epochs = float(metric), 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            reduced = max(self._last() * self.factor, self.min_lr)
            if self._last() - reduced > self.eps:
                self.last_lr = reduced
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self._last()

    def metric_from(self, logs: Dict[str, float]) -> float:
        """The logged value this schedule watches: ``monitor``, else val_loss, else loss."""
        key = self.monitor or ("val_loss" if "val_loss" in logs else "loss")
        if key not in logs:
            raise ValueError(f"ReduceLROnPlateau monitors {key!r}, which this fit does not log; "
                             f"logged: {', '.join(logs)}")
        return logs[key]

    def _options(self) -> Dict[str, Any]:
        return {"mode": self.mode, "factor": self.factor, "patience": self.patience,
                "threshold": self.threshold, "threshold_mode": self.threshold_mode,
                "cooldown": self.cooldown, "min_lr": self.min_lr, "eps": self.eps,
                "monitor": self.monitor}


def check_schedule(schedule: Any) -> Optional[LRSchedule]:
    """``fit``'s lr_schedule argument: None or an LRSchedule."""
    if schedule is not None and not isinstance(schedule, LRSchedule):
        raise TypeError(f"lr_schedule must be a fastmlp.schedules schedule (StepLR, "
                        f"ExponentialLR, ...) or None, got {schedule!r}")
    return schedule


def step_schedule(schedule: LRSchedule, logs: Dict[str, float]) -> float:
    """Step `schedule` after an epoch with `logs`; returns the next epoch's rate."""
    if isinstance(schedule, ReduceLROnPlateau):
        return schedule.step(schedule.metric_from(logs))
    return schedule.step()
