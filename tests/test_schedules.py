"""Learning-rate schedules: closed-form values, torch.optim.lr_scheduler (when installed), and
their use from MLP.fit (history["lr"], continuation across fits, the effect on training)."""
import math

import numpy as np
import pytest

import fastmlp
from fastmlp import optim
from fastmlp import schedules as S

BASE_LR = 0.1


def rates(schedule, epochs, metrics=None):
    """The rate of each of `epochs` epochs, stepping as fit does."""
    values = [schedule.start(BASE_LR)]
    for epoch in range(epochs - 1):
        values.append(schedule.step(None if metrics is None else metrics[epoch]))
    return values


def test_closed_form_values():
    np.testing.assert_allclose(rates(S.StepLR(step_size=2, gamma=0.5), 6),
                               [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    np.testing.assert_allclose(rates(S.MultiStepLR([2, 5], gamma=0.1), 6),
                               [0.1, 0.1, 0.01, 0.01, 0.01, 0.001])
    np.testing.assert_allclose(rates(S.ExponentialLR(gamma=0.9), 4), [0.1, 0.09, 0.081, 0.0729])
    np.testing.assert_allclose(rates(S.ConstantLR(factor=0.5, total_iters=2), 4),
                               [0.05, 0.05, 0.1, 0.1])
    np.testing.assert_allclose(rates(S.LambdaLR(lambda epoch: 1 / (epoch + 1)), 3),
                               [0.1, 0.05, 0.1 / 3])
    cosine = rates(S.CosineAnnealingLR(T_max=4, eta_min=0.02), 5)
    # cos(0) = 1, cos(pi/4) = sqrt(2)/2, cos(pi/2) = 0, cos(pi) = -1.
    half_range = (0.1 - 0.02) / 2
    np.testing.assert_allclose(cosine, [0.1, 0.02 + half_range * (1 + math.sqrt(0.5)), 0.06,
                                        0.02 + half_range * (1 - math.sqrt(0.5)), 0.02])


def test_reduce_on_plateau_by_hand():
    schedule = S.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1, threshold=0.0)
    # Epoch losses: improves, stalls twice (patience 1 exceeded -> halve), cooldown epoch
    # ignores the stall, then two more stalls halve again.
    metrics = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    np.testing.assert_allclose(rates(schedule, 8, metrics),
                               [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    schedule = S.ReduceLROnPlateau(mode="max", factor=0.1, patience=0, min_lr=0.002)
    np.testing.assert_allclose(rates(schedule, 4, [0.5, 0.4, 0.3]), [0.1, 0.1, 0.01, 0.002])


TORCH_CASES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 7, 9], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.8)),
    ("ConstantLR", dict(factor=0.25, total_iters=4)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("LambdaLR", dict(lr_lambda=lambda epoch: 0.95 ** epoch + 0.1 * (epoch % 3))),
]


@pytest.mark.parametrize("name, options", TORCH_CASES)
def test_matches_torch(name, options):
    torch = pytest.importorskip("torch")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=BASE_LR)
    torch_schedule = getattr(torch.optim.lr_scheduler, name)(optimizer, **options)
    expected = [optimizer.param_groups[0]["lr"]]
    for _ in range(19):
        optimizer.step()
        torch_schedule.step()
        expected.append(optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(rates(getattr(S, name)(**options), 20), expected, rtol=1e-12)


def test_reduce_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    metrics = list(np.random.default_rng(0).uniform(0.5, 1.0, 40))
    for options in (dict(factor=0.5, patience=2, cooldown=1),
                    dict(mode="max", patience=0, threshold=0.05, threshold_mode="abs", min_lr=1e-3)):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
        torch_schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
        expected = [BASE_LR]
        for metric in metrics:
            torch_schedule.step(metric)
            expected.append(optimizer.param_groups[0]["lr"])
        np.testing.assert_allclose(rates(S.ReduceLROnPlateau(**options), 41, metrics), expected,
                                   rtol=1e-12)


# ---- from fit ---------------------------------------------------------------------------------------


def blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return rng.normal(size=(n, 4)) + 2.0 * y[:, None], y


def new_model():
    return fastmlp.MLP([4, 8, 3], optimizer=optim.SGD(lr=0.1, momentum=0.9), seed=0)


def test_fit_uses_and_records_the_schedule_like_manual_rate_changes():
    X, y = blobs()
    scheduled = new_model()
    history = scheduled.fit(X, y, epochs=5, batch_size=16,
                            lr_schedule=S.StepLR(step_size=2, gamma=0.1))
    np.testing.assert_allclose(history["lr"], [0.1, 0.1, 0.01, 0.01, 0.001])
    manual = new_model()
    for rate in history["lr"]:
        manual.learning_rate = rate
        manual.fit(X, y, epochs=1, batch_size=16)
    np.testing.assert_array_equal(scheduled.flat_parameters, manual.flat_parameters)
    assert scheduled.learning_rate == pytest.approx(1e-3)  # epoch 5's: 0.1 * 0.1 ** (5 // 2)


def test_schedule_continues_across_fits_and_restarts_for_another_model():
    X, y = blobs()
    schedule = S.ExponentialLR(gamma=0.5)
    model = new_model()
    first = model.fit(X, y, epochs=2, lr_schedule=schedule)["lr"]
    second = model.fit(X, y, epochs=2, lr_schedule=schedule)["lr"]
    np.testing.assert_allclose(first + second, [0.1, 0.05, 0.025, 0.0125])
    other = fastmlp.MLP([4, 3], optimizer=optim.SGD(lr=0.2), seed=0)
    np.testing.assert_allclose(other.fit(X, y, epochs=2, lr_schedule=schedule)["lr"], [0.2, 0.1])


def test_plateau_watches_val_loss_or_the_named_log():
    X, y = blobs()
    watching_accuracy = S.ReduceLROnPlateau(mode="max", threshold=0.0, monitor="val_accuracy")
    history = new_model().fit(X, y, epochs=4, validation_split=0.25, lr_schedule=watching_accuracy)
    assert watching_accuracy.best == max(history["val_accuracy"])
    watching_default = S.ReduceLROnPlateau(threshold=0.0)
    history = new_model().fit(X, y, epochs=4, validation_split=0.25, lr_schedule=watching_default)
    assert watching_default.best == min(history["val_loss"])
    with pytest.raises(ValueError, match="monitors 'val_loss', which this fit does not log"):
        new_model().fit(X, y, epochs=1, lr_schedule=S.ReduceLROnPlateau(monitor="val_loss"))


@pytest.mark.parametrize("make, message", [
    (lambda: S.StepLR(step_size=0), "step_size must be an integer >= 1"),
    (lambda: S.StepLR(step_size=2, gamma=-1), "gamma must be in"),
    (lambda: S.ExponentialLR(gamma=float("nan")), "gamma must be a finite number"),
    (lambda: S.ConstantLR(factor=1.5), "factor must be in"),
    (lambda: S.CosineAnnealingLR(T_max=0), "T_max must be an integer >= 1"),
    (lambda: S.MultiStepLR(milestones=3), "milestones must be a sequence"),
    (lambda: S.ReduceLROnPlateau(mode="up"), "mode must be 'min' or 'max'"),
    (lambda: S.ReduceLROnPlateau(factor=1.0), "factor must be in"),
    (lambda: S.ReduceLROnPlateau(threshold_mode="pct"), "threshold_mode must be"),
])
def test_bad_schedule_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_schedule_use():
    X, y = blobs()
    with pytest.raises(TypeError, match="lr_schedule must be a fastmlp.schedules schedule"):
        new_model().fit(X, y, epochs=1, lr_schedule=0.1)
    with pytest.raises(RuntimeError, match="before start"):
        S.StepLR(step_size=1).step()
    with pytest.raises(ValueError, match="needs the monitored metric"):
        schedule = S.ReduceLROnPlateau()
        schedule.start(0.1)
        schedule.step(None)
    with pytest.raises(ValueError, match=r"lr_lambda\(0\) must return a finite number >= 0"):
        S.LambdaLR(lambda epoch: -1.0).start(0.1)
