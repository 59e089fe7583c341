"""Optimizer configurations with torch.optim's option names, defaults and checks.

Each object only describes the optimizer; the update itself is one C++ kernel over the
model's flat parameter buffer (csrc/optim.cpp). Two options are fastmlp's own: decay_biases
(default True, torch's semantics); False keeps weight decay off biases and batch norm's
gamma and beta, as scikit-learn's alpha and most training recipes do. And Adam's eps_hat
(default False, torch's formula); True adds epsilon to the uncorrected sqrt(v), as
scikit-learn, Keras and Kingma & Ba's "epsilon hat" do.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple, Union

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW",
           "OPTIMIZERS", "make_optimizer"]


def _check_number(name: str, value: Any, low: float = 0.0, high: float = math.inf,
                  high_inclusive: bool = True) -> float:
    """Return value as a float if low <= value <= high (or < high) and finite, else raise
    ValueError (an infinite option would turn every parameter into NaN or inf at the first step)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond a double's range
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if math.isinf(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    above_high = value > high if high_inclusive else value >= high
    if math.isnan(value) or value < low or above_high:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


class Optimizer:
    """Base class: a name and a dict of options in torch.optim's vocabulary.

    Parameters
    ----------
    **options
        The optimizer's options under torch.optim's names (lr, weight_decay, ...), already
        checked by the subclass.
    """

    name = ""

    def __init__(self, **options: Any) -> None:
        self.options: Dict[str, Any] = options

    @property
    def lr(self) -> float:
        """The initial learning rate."""
        return float(self.options["lr"])

    def core_options(self) -> Dict[str, Any]:
        """The options as the C++ core takes them.

        Returns
        -------
        dict
            ``name`` and every option, with ``betas`` split into ``beta1`` and ``beta2``.
        """
        options = {"name": self.name}
        for key, value in self.options.items():
            if key == "betas":
                options["beta1"], options["beta2"] = value
            else:
                options[key] = value
        return options

    def to_config(self) -> Dict[str, Any]:
        """A JSON-friendly description, as saved in model files.

        Returns
        -------
        dict
            ``{"name": ..., "options": {...}}``, which ``make_optimizer`` turns back into
            an equal optimizer.
        """
        config = dict(self.options)
        if "betas" in config:
            config["betas"] = list(config["betas"])
        return {"name": self.name, "options": config}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Optimizer) and type(self) is type(other) and self.options == other.options


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD.

    Parameters
    ----------
    lr : float
        Learning rate.
    momentum : float
        Momentum factor; 0 is plain SGD.
    dampening : float
        Dampening of the momentum's new gradient term.
    weight_decay : float
        L2 penalty added to the gradient (torch's coupled weight decay).
    nesterov : bool
        Nesterov momentum (needs momentum > 0 and dampening 0).
    decay_biases : bool
        True (torch's semantics): weight decay reaches every parameter. False: only the
        dense layers' weight matrices decay; biases and batch norm's gamma and beta do not
        (the usual "no decay on biases and norm parameters", and scikit-learn's alpha).
    """

    name = "sgd"

    def __init__(self, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False,
                 decay_biases: bool = True) -> None:
        momentum = _check_number("momentum", momentum)
        dampening = _check_number("dampening", dampening)
        nesterov = _check_flag("nesterov", nesterov)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening == 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        super().__init__(lr=_check_number("lr", lr), momentum=momentum, dampening=dampening,
                         weight_decay=_check_number("weight_decay", weight_decay),
                         nesterov=nesterov, decay_biases=_check_flag("decay_biases", decay_biases))


class Adagrad(Optimizer):
    """Adagrad, as torch.optim.Adagrad.

    Parameters
    ----------
    lr : float
        Learning rate.
    lr_decay : float
        The learning rate at step t is ``lr / (1 + (t - 1) * lr_decay)``.
    weight_decay : float
        L2 penalty added to the gradient (torch's coupled weight decay).
    initial_accumulator_value : float
        Starting value of the sum of squared gradients.
    eps : float
        Added to the denominator for numerical stability.
    decay_biases : bool
        True (torch's semantics): weight decay reaches every parameter. False: only the
        dense layers' weight matrices decay; biases and batch norm's gamma and beta do not
        (the usual "no decay on biases and norm parameters", and scikit-learn's alpha).
    """

    name = "adagrad"

    def __init__(self, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 decay_biases: bool = True) -> None:
        super().__init__(lr=_check_number("lr", lr), lr_decay=_check_number("lr_decay", lr_decay),
                         weight_decay=_check_number("weight_decay", weight_decay),
                         initial_accumulator_value=_check_number(
                             "initial_accumulator_value", initial_accumulator_value),
                         eps=_check_number("eps", eps),
                         decay_biases=_check_flag("decay_biases", decay_biases))


class Adadelta(Optimizer):
    """Adadelta, as torch.optim.Adadelta.

    Parameters
    ----------
    lr : float
        Scale of the update.
    rho : float
        Decay of the running averages of squared gradients and updates, in [0, 1].
    eps : float
        Added inside the square roots for numerical stability.
    weight_decay : float
        L2 penalty added to the gradient (torch's coupled weight decay).
    decay_biases : bool
        True (torch's semantics): weight decay reaches every parameter. False: only the
        dense layers' weight matrices decay; biases and batch norm's gamma and beta do not
        (the usual "no decay on biases and norm parameters", and scikit-learn's alpha).
    """

    name = "adadelta"

    def __init__(self, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, decay_biases: bool = True) -> None:
        super().__init__(lr=_check_number("lr", lr), rho=_check_number("rho", rho, 0.0, 1.0),
                         eps=_check_number("eps", eps),
                         weight_decay=_check_number("weight_decay", weight_decay),
                         decay_biases=_check_flag("decay_biases", decay_biases))


class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering, as torch.optim.RMSprop.

    Parameters
    ----------
    lr : float
        Learning rate.
    alpha : float
        Smoothing constant of the running average of squared gradients.
    eps : float
        Added to the denominator for numerical stability.
    weight_decay : float
        L2 penalty added to the gradient (torch's coupled weight decay).
    momentum : float
        Momentum factor.
    centered : bool
        Normalise by the gradient's estimated variance instead of its second moment.
    decay_biases : bool
        True (torch's semantics): weight decay reaches every parameter. False: only the
        dense layers' weight matrices decay; biases and batch norm's gamma and beta do not
        (the usual "no decay on biases and norm parameters", and scikit-learn's alpha).
    """

    name = "rmsprop"

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 decay_biases: bool = True) -> None:
        super().__init__(lr=_check_number("lr", lr), alpha=_check_number("alpha", alpha),
                         eps=_check_number("eps", eps),
                         weight_decay=_check_number("weight_decay", weight_decay),
                         momentum=_check_number("momentum", momentum),
                         centered=_check_flag("centered", centered),
                         decay_biases=_check_flag("decay_biases", decay_biases))


def _check_betas(betas: Any) -> Tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return (_check_number("betas[0]", betas[0], 0.0, 1.0, high_inclusive=False),
            _check_number("betas[1]", betas[1], 0.0, 1.0, high_inclusive=False))


class Adam(Optimizer):
    """Adam (optionally AMSGrad), as torch.optim.Adam; weight_decay is an L2 term.

    Parameters
    ----------
    lr : float
        Learning rate.
    betas : (float, float)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float
        Added to the denominator for numerical stability.
    weight_decay : float
        L2 penalty added to the gradient.
    amsgrad : bool
        Use the maximum of past second moments (AMSGrad).
    decay_biases : bool
        True (torch's semantics): weight decay reaches every parameter. False: only the
        dense layers' weight matrices decay; biases and batch norm's gamma and beta do not
        (the usual "no decay on biases and norm parameters", and scikit-learn's alpha).
    eps_hat : bool
        False (torch's formula): ``p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``. True
        (scikit-learn's, Keras's, Kingma & Ba's "epsilon hat"): epsilon is added to the
        uncorrected ``sqrt(v)``, ``p -= (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps)``, in
        scikit-learn's operation order; bc1 = 1 - beta1^t, bc2 = 1 - beta2^t. The two differ
        only while sqrt(v) is not much larger than eps. Works with amsgrad (v_max for v).
    """

    name = "adam"

    def __init__(self, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 decay_biases: bool = True, eps_hat: bool = False) -> None:
        super().__init__(lr=_check_number("lr", lr), betas=_check_betas(betas),
                         eps=_check_number("eps", eps),
                         weight_decay=_check_number("weight_decay", weight_decay),
                         amsgrad=_check_flag("amsgrad", amsgrad),
                         decay_biases=_check_flag("decay_biases", decay_biases),
                         eps_hat=_check_flag("eps_hat", eps_hat))


class AdamW(Adam):
    """AdamW, as torch.optim.AdamW: weight decay decoupled from the gradient.

    Parameters
    ----------
    lr : float
        Learning rate.
    betas : (float, float)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float
        Added to the denominator for numerical stability.
    weight_decay : float
        Decoupled decay: parameters shrink by ``lr * weight_decay`` every step.
    amsgrad : bool
        Use the maximum of past second moments (AMSGrad).
    decay_biases : bool
        True (torch's semantics): every parameter shrinks. False: only the dense layers'
        weight matrices shrink; biases and batch norm's gamma and beta do not.
    eps_hat : bool
        Where epsilon sits, as for Adam: False is torch's formula, True adds it to the
        uncorrected ``sqrt(v)`` (scikit-learn's and Keras's form).
    """

    name = "adamw"

    def __init__(self, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 decay_biases: bool = True, eps_hat: bool = False) -> None:
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         decay_biases=decay_biases, eps_hat=eps_hat)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adagrad, Adadelta, RMSprop, Adam, AdamW)}


def make_optimizer(spec: Union[str, Optimizer, Dict[str, Any]]) -> Optimizer:
    """An Optimizer from a name, an Optimizer, or a saved config dict.

    Parameters
    ----------
    spec : str, Optimizer or dict
        A name (sgd, adagrad, adadelta, rmsprop, adam, adamw: torch's defaults), an
        Optimizer (returned as is), or the dict ``Optimizer.to_config`` writes.

    Returns
    -------
    Optimizer

    Raises
    ------
    TypeError
        When spec is none of these.
    ValueError
        For an unknown name or option.
    """
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str):
        name, options = spec.lower(), {}
    elif isinstance(spec, dict) and "name" in spec:
        name, options = str(spec["name"]), dict(spec.get("options", {}))
        if "betas" in options:
            options["betas"] = tuple(options["betas"])
    else:
        raise TypeError(f"optimizer must be a name or a fastmlp.optim object, got {spec!r}")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](**options)
