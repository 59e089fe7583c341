"""Optimizer states near zero: behind the subnormal guard (on by default on Intel CPUs) the
float32 kernels compute the elements whose states have left float's normal range (subnormals,
tiny or huge values) over double (optim_loops.h's FloatViaDouble) so that Intel's microcode
assists do not slow them down; without it (elsewhere) the plain float loops take them. Neither
may change a bit: each kernel is compared, bit for bit, with a float32 mirror of its own formula
written here in NumPy (IEEE float32 arithmetic with subnormals), on states that mix every range,
and a model's steps with the kernels' results -- every test with the guard on and off."""
import numpy as np
import pytest

import fastmlp
from fastmlp import _core

K = _core.kernels
F32 = np.float32
TINY = float(np.finfo(np.float32).tiny)  # 2^-126, the smallest normal float


@pytest.fixture(autouse=True, params=["on", "off"])
def subnormal_guard(request):
    """Each test with the guard forced on (the twins over double) and off (the plain loops)."""
    K.set_subnormal_guard(request.param)
    yield request.param
    K.set_subnormal_guard("auto")


def test_the_guard_follows_the_cpu_vendor_and_can_be_forced():
    with open("/proc/cpuinfo") as cpuinfo:
        intel = "GenuineIntel" in cpuinfo.read()
    K.set_subnormal_guard("auto")
    assert K.subnormal_guard() == ("on" if intel else "off")
    assert fastmlp.build_info()["subnormal_guard"] == K.subnormal_guard()
    for guard in ("on", "off"):
        K.set_subnormal_guard(guard)
        assert K.subnormal_guard() == guard
    with pytest.raises(ValueError, match="guard must be 'on', 'off' or 'auto', got 'sometimes'"):
        K.set_subnormal_guard("sometimes")
    assert K.subnormal_guard() == "off"


def mixed_magnitudes(rng, n):
    """n float32 values of every kind the guard sorts: zeros, normal values, small normal
    values on both sides of its 2^-100, subnormals, values of 2^50 and more, each sign, in
    runs and alone."""
    kinds = [
        lambda k: np.zeros(k),
        lambda k: rng.uniform(1e-6, 1.0, k),
        lambda k: 2.0 ** rng.uniform(-125, -61, k),
        lambda k: rng.uniform(1, 2 ** 23, k) * 2.0 ** -149,  # subnormals, exactly representable
        lambda k: 2.0 ** rng.uniform(50, 60, k),
    ]
    choice = rng.integers(0, len(kinds), n)
    runs = rng.random(n) < 0.5  # half the lanes repeat their neighbour's kind: runs of a kind
    for i in range(1, n):
        if runs[i]:
            choice[i] = choice[i - 1]
    values = np.empty(n)
    for kind, make in enumerate(kinds):
        where = choice == kind
        values[where] = make(int(where.sum()))
    return (values * rng.choice([-1.0, 1.0], n)).astype(F32)


def subnormal_count(x):
    magnitude = np.abs(x)
    return int(np.count_nonzero((magnitude > 0) & (magnitude < TINY)))


def assert_same_bits(actual, expected):
    np.testing.assert_array_equal(np.asarray(actual).view(np.uint32), np.asarray(expected).view(np.uint32))


# ---- float32 mirrors of optim_loops.h, operation for operation ------------------------------


def adam_mirror(p, m, v, vmax, g, lr, beta1, beta2, eps, wd, amsgrad, decoupled, step, eps_hat):
    lr, beta1, beta2, eps, wd = F32(lr), F32(beta1), F32(beta2), F32(eps), F32(wd)
    bc1 = 1.0 - float(beta1) ** step
    bc2 = 1.0 - float(beta2) ** step
    step_size = F32(float(lr) * np.sqrt(bc2) / bc1) if eps_hat else F32(float(lr) / bc1)
    sqrt_bc2 = F32(np.sqrt(bc2))
    decay_factor = F32(1) - lr * wd
    if decoupled:
        p = p * decay_factor
    else:
        g = g + wd * p
    m = beta1 * m + (F32(1) - beta1) * g
    v = beta2 * v + ((F32(1) - beta2) * (g * g) if eps_hat else (F32(1) - beta2) * g * g)
    second = v
    if amsgrad:
        second = np.where(vmax > v, vmax, v)
        vmax = second
    denom = np.sqrt(second) + eps if eps_hat else np.sqrt(second) / sqrt_bc2 + eps
    return p - step_size * m / denom, m, v, vmax


def sgd_mirror(p, buf, g, lr, momentum, dampening, nesterov, wd, step):
    lr, momentum, dampening, wd = F32(lr), F32(momentum), F32(dampening), F32(wd)
    g = g + wd * p
    if momentum != 0:
        buf = g.copy() if step <= 1 else momentum * buf + (F32(1) - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def rmsprop_mirror(p, square, mean, buf, g, lr, alpha, eps, wd, momentum, centered):
    lr, alpha, eps, wd, momentum = F32(lr), F32(alpha), F32(eps), F32(wd), F32(momentum)
    g = g + wd * p
    square = alpha * square + (F32(1) - alpha) * g * g
    if centered:
        mean = alpha * mean + (F32(1) - alpha) * g
        avg = np.sqrt(square - mean * mean) + eps
    else:
        avg = np.sqrt(square) + eps
    if momentum > 0:
        buf = momentum * buf + g / avg
        return p - lr * buf, square, mean, buf
    return p - lr * g / avg, square, mean, buf


def adagrad_mirror(p, total, g, lr, lr_decay, wd, eps, step):
    clr = F32(lr) / (F32(1) + F32(step - 1) * F32(lr_decay))
    g = g + F32(wd) * p
    total = total + g * g
    return p - clr * g / (np.sqrt(total) + F32(eps)), total


def adadelta_mirror(p, square, acc, g, lr, rho, eps, wd):
    lr, rho, eps, wd = F32(lr), F32(rho), F32(eps), F32(wd)
    g = g + wd * p
    square = rho * square + (F32(1) - rho) * g * g
    delta = np.sqrt(acc + eps) / np.sqrt(square + eps) * g
    acc = rho * acc + (F32(1) - rho) * delta * delta
    return p - lr * delta, square, acc


# ---- the kernels against the mirrors ----------------------------------------------------------


def tiny_state_inputs(rng, n):
    """Parameters and gradients of ordinary size, gradients 0 on a third of the lanes (a weight
    whose gradient stays 0 is how a state decays to subnormals), states of every magnitude."""
    p = rng.uniform(-0.1, 0.1, n).astype(F32)
    g = (rng.standard_normal(n) * 1e-3).astype(F32)
    g[rng.random(n) < 1 / 3] = 0
    return p, g


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("eps_hat", [False, True])
@pytest.mark.parametrize("n", [1, 63, 64, 1000, 5000])
def test_adam_on_states_of_every_magnitude_gives_float32s_own_bits(amsgrad, decoupled, eps_hat, n):
    rng = np.random.default_rng(n)
    p, g = tiny_state_inputs(rng, n)
    m, v = mixed_magnitudes(rng, n), np.abs(mixed_magnitudes(rng, n))
    vmax = np.abs(mixed_magnitudes(rng, n))
    # Coupled weight decay would make every gradient non-zero: none there, so states decay.
    args = (1e-3, 0.9, 0.999, 1e-8, 0.01 if decoupled else 0.0, amsgrad, decoupled, 7, eps_hat)
    got = K.adam_update(p, m, v, vmax, g, *args)
    expected = adam_mirror(p, m, v, vmax, g, *args)
    for actual, wanted in zip(got, expected):
        assert_same_bits(actual, wanted)
    if n >= 1000:  # the case this is about was there: subnormal states in and out
        assert subnormal_count(m) > 0 and subnormal_count(expected[1]) > 0


def test_adam_steps_decaying_a_state_through_the_subnormals_give_float32s_own_bits():
    # A weight whose gradient is 0 from some step on: its first moment decays by beta1 a
    # step, through the subnormals to zero (about 900 steps), the second by beta2.
    rng = np.random.default_rng(3)
    n = 4096
    p, g = tiny_state_inputs(rng, n)
    m = (rng.standard_normal(n) * 1e-30).astype(F32)
    v = np.abs(rng.standard_normal(n) * 1e-36).astype(F32)
    vmax = np.zeros(n, F32)
    kernel = (p, m, v, vmax)
    mirror = (p, m, v, vmax)
    seen_subnormal = 0
    for step in range(1, 121):
        grads = np.where(np.arange(n) % 3 == 0, g, F32(0)).astype(F32)
        kernel = K.adam_update(*kernel[:4], grads, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False, step, False)
        mirror = adam_mirror(*mirror[:4], grads, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False, step, False)
        seen_subnormal += subnormal_count(mirror[1])
    for actual, wanted in zip(kernel, mirror):
        assert_same_bits(actual, wanted)
    assert seen_subnormal > 0


def assert_same_values(actual, expected):
    """Bit for bit, but any NaN for a NaN (its sign and payload are the hardware's choice)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    keep = ~np.isnan(expected)
    assert_same_bits(actual[keep], expected[keep])


ISAS = [isa for isa in ("portable", "avx2", "avx512") if K.cpu_supports_isa(isa)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("lr", [1e-3, 1e-30, 30.0, 3e38])
@pytest.mark.parametrize("eps", [1e-8, 0.0])
@pytest.mark.parametrize("amsgrad,decoupled,eps_hat", [(False, False, False), (True, True, False), (False, True, True)])
def test_adam_keeps_a_parameter_only_where_a_tiny_first_moment_cannot_move_it(isa, lr, eps, amsgrad, decoupled,
                                                                              eps_hat):
    """Where a first moment is below 2^-100, the kernel keeps the parameter without dividing when
    a bound says the quotient is below half its rounding gap. Parameters near 0 (zeros of both
    signs, subnormals, values below 2^-100), huge and infinite ones, denominators of 0 (eps 0
    and v 0), step sizes whose bound underflows (lr 1e-30) or is large (lr 30) must still get
    float32's own result; so must a step size past float's range (lr 3e38 over 1 - 0.9^5)."""
    rng = np.random.default_rng(19)
    n = 3000
    p = mixed_magnitudes(rng, n)  # zeros, normal, small, subnormal and huge values
    p[::97] = -0.0
    p[5::101] = np.inf
    p[7::103] = -np.inf
    g = np.where(rng.random(n) < 0.8, 0.0, rng.standard_normal(n) * 1e-3).astype(F32)
    m = (2.0 ** rng.uniform(-149, -95, n) * rng.choice([-1.0, 1.0], n)).astype(F32)
    m[::7] = 0
    m[3::11] = mixed_magnitudes(rng, len(m[3::11]))
    # Second moments in the normal range (or 0), so the guard sends these elements to its
    # first-moment twin, not to the one computing everything in double.
    v = rng.uniform(1e-8, 1e-2, n).astype(F32)
    v[::13] = 0
    vmax = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(1e-8, 1e-2, n)).astype(F32)
    args = (lr, 0.9, 0.999, eps, 0.01 if decoupled else 0.0, amsgrad, decoupled, 5, eps_hat)
    K.set_isa(isa)
    try:
        got = K.adam_update(p, m, v, vmax, g, *args)
    finally:
        K.set_isa("auto")
    with np.errstate(all="ignore"):
        expected = adam_mirror(p, m, v, vmax, g, *args)
        decayed = p * (F32(1) - F32(lr) * F32(0.01)) if decoupled else p
    for actual, wanted in zip(got, expected):
        assert_same_values(actual, wanted)
    moment = np.abs(expected[1])
    small = (moment > 0) & (moment < 2.0 ** -100)
    kept = small & (expected[0] == decayed)
    if lr > 30:  # every update infinite or NaN: nothing is kept
        return
    assert kept.sum() > n // 10  # the case this is about was there,
    if lr >= 1e-3:  # and its exceptions (at lr 1e-30 no quotient of a tiny moment moves even 0)
        assert (small & (expected[0] != decayed) & np.isfinite(expected[0])).sum() > 0


@pytest.mark.parametrize("momentum,nesterov,step", [(0.9, False, 3), (0.9, True, 3), (0.5, False, 1), (0.0, False, 2)])
def test_sgd_on_states_of_every_magnitude_gives_float32s_own_bits(momentum, nesterov, step):
    rng = np.random.default_rng(5)
    n = 3000
    p, g = tiny_state_inputs(rng, n)
    buf = mixed_magnitudes(rng, n)
    args = (0.01, momentum, 0.1, nesterov, 0.0, step)  # no weight decay: zero gradients stay 0
    got = K.sgd_update(p, buf, g, *args)
    expected = sgd_mirror(p, buf, g, *args)
    assert_same_bits(got[0], expected[0])
    if momentum != 0:
        assert_same_bits(got[1], expected[1])


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop_on_states_of_every_magnitude_gives_float32s_own_bits(centered, momentum):
    rng = np.random.default_rng(7)
    n = 3000
    p, g = tiny_state_inputs(rng, n)
    square = np.abs(mixed_magnitudes(rng, n))
    mean = mixed_magnitudes(rng, n) * F32(1e-3)
    mean = np.where(mean * mean > square, F32(0), mean).astype(F32)  # keep square - mean^2 >= 0
    buf = mixed_magnitudes(rng, n)
    args = (0.01, 0.99, 1e-8, 0.0, momentum, centered)
    got = K.rmsprop_update(p, square, mean, buf, g, *args)
    expected = rmsprop_mirror(p, square, mean, buf, g, *args)
    used = [0, 1] + ([2] if centered else []) + ([3] if momentum > 0 else [])
    for k in used:
        assert_same_bits(got[k], expected[k])


def test_adagrad_and_adadelta_on_states_of_every_magnitude_give_float32s_own_bits():
    rng = np.random.default_rng(11)
    n = 3000
    p, g = tiny_state_inputs(rng, n)
    total = np.abs(mixed_magnitudes(rng, n))
    got = K.adagrad_update(p, total, g, 0.01, 0.001, 1e-4, 1e-10, 4)
    for actual, wanted in zip(got, adagrad_mirror(p, total, g, 0.01, 0.001, 1e-4, 1e-10, 4)):
        assert_same_bits(actual, wanted)
    square, acc = np.abs(mixed_magnitudes(rng, n)), np.abs(mixed_magnitudes(rng, n))
    got = K.adadelta_update(p, square, acc, g, 1.0, 0.9, 1e-6, 1e-4)
    for actual, wanted in zip(got, adadelta_mirror(p, square, acc, g, 1.0, 0.9, 1e-6, 1e-4)):
        assert_same_bits(actual, wanted)


@pytest.mark.parametrize("isa", ISAS)
def test_every_instruction_set_gives_the_same_bits_on_subnormal_states(isa):
    rng = np.random.default_rng(13)
    n = 2000
    p, g = tiny_state_inputs(rng, n)
    m, v, vmax = mixed_magnitudes(rng, n), np.abs(mixed_magnitudes(rng, n)), np.zeros(n, F32)
    args = (1e-3, 0.9, 0.999, 1e-8, 0.0, False, False, 9, False)
    K.set_isa(isa)
    try:
        got = K.adam_update(p, m, v, vmax, g, *args)
    finally:
        K.set_isa("auto")
    for actual, wanted in zip(got, adam_mirror(p, m, v, vmax, g, *args)):
        assert_same_bits(actual, wanted)


# ---- a model's steps ------------------------------------------------------------------------


def test_a_models_steps_on_subnormal_states_are_the_kernels_steps():
    """train_step with the model's states set near zero equals gradients() followed by the
    kernel, step after step: the model looks at its states only every 16th step while it finds
    none there, and the steps in between (plain loops) must give the same bits."""
    rng = np.random.default_rng(17)
    X = rng.standard_normal((64, 20)).astype(F32)
    X[:, :8] = 0  # the first layer's first 8 rows of weights get zero gradients: their states decay
    y = rng.integers(0, 3, 64)
    model = fastmlp.MLP([20, 32, 3], optimizer=fastmlp.optim.Adam(lr=1e-3), seed=0, n_threads=1)
    model.train_step(X, y)
    state = model._network.optimizer_state
    n = state["exp_avg"].size
    state["exp_avg"][:] = mixed_magnitudes(rng, n)
    state["exp_avg_sq"][:] = np.abs(mixed_magnitudes(rng, n))
    params = model._training_state()["params"].copy()
    m, v = state["exp_avg"].copy(), state["exp_avg_sq"].copy()
    vmax = np.zeros_like(m)
    for step in range(2, 40):
        _, grads = model.gradients(X, y)
        grads = np.asarray(grads, F32).ravel()
        params, m, v, vmax = K.adam_update(params, m, v, vmax, grads, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False,
                                           step, False)
        model.train_step(X, y)
        assert_same_bits(model._training_state()["params"], params)
    assert_same_bits(state["exp_avg"], m)
    assert_same_bits(state["exp_avg_sq"], v)
    assert subnormal_count(m) > 0
