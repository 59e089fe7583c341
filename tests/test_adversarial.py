"""Regression tests of what an adversarial review (issue 11) found: labels rewritten during a
call, refused steps that changed state, updates that overflow the parameters, concurrent
set_weights and copies, failed scratch allocations, integer limits, forged model files, file
modes and stale temporaries, and Ctrl-C during long predictions."""
import copy
import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, optim
from fastmlp import _files
from fastmlp import reference as R
from test_hardening import SANITIZED, inf_target_data, members, small_model, write_npz
from test_mlp import blobs


# ---- labels rewritten while a call runs --------------------------------------------------------------


def rewritten_mid_call(call, labels, row, value):
    """call() with labels[row] = value written by a signal handler while the call runs: the core
    looks for signals (and so runs Python handlers) after every step or evaluation chunk here,
    which makes a rewrite after the call's own boundary check certain. Returns the ValueError
    the call raised, None if it raised none."""
    def handler(signum, frame):
        labels[row] = value

    previous = signal.signal(signal.SIGALRM, handler)
    _core._set_signal_check_interval(0)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.03)
        call()
    except ValueError as error:
        return error
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _core._set_signal_check_interval(0.1)
    return None


@pytest.mark.parametrize("mixup", [False, True])
@pytest.mark.parametrize("value", [10 ** 9, -3])
def test_a_label_rewritten_during_training_raises_naming_it_before_its_step(mixup, value):
    rng = np.random.default_rng(0)
    n = 100_000  # one step per row: far longer than the 30 ms before the rewrite
    X = rng.normal(size=(n, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=n)
    model = small_model()
    network = model._network
    order = np.arange(n, dtype=np.int64)
    mixing = (np.roll(order, 1), np.full(n, 0.7, np.float32)) if mixup else ()
    error = rewritten_mid_call(lambda: network.train_batches(X, labels, order, 1, 0, n, *mixing),
                               labels, n - 1, value)
    # The last row's label: with mixup it is also the partner of row 0, trained first, so it
    # is met as the partner of the last batch or as its own row.
    assert error is not None, "the rewritten label was used"
    assert re.search(rf"y\[{n - 1}\] = {value} is not a class in \[0, 3\): the labels changed "
                     "while the call ran", str(error)), str(error)
    # Every batch before the one holding the label was trained, that one not.
    assert network.last_run_totals[2] == network.step == n - 1
    assert np.all(np.isfinite(model.flat_parameters))


def test_a_label_rewritten_during_evaluate_raises_naming_it():
    rng = np.random.default_rng(0)
    n = 400_000
    X = rng.normal(size=(n, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=n)
    model = fastmlp.MLP([5, 512, 3], seed=0)
    model.fitted = True
    error = rewritten_mid_call(lambda: model._network.evaluate(X, labels), labels, n - 1, 99)
    assert error is not None and re.search(rf"y\[{n - 1}\] = 99 is not a class in \[0, 3\): the "
                                           "labels changed while the call ran", str(error)), error


def test_labels_rewritten_by_a_thread_during_fit_never_reach_the_loss():
    # Another thread keeps writing an out-of-range label into y while fit trains from it:
    # either fit sees a consistent y throughout, or it stops with the ValueError; never an
    # out-of-bounds read (which ASan, in the sanitizer stage, reports).
    X, y = blobs(n=4000)
    labels = y.astype(np.int64)
    model = small_model()
    stop = threading.Event()

    def rewrite():
        while not stop.is_set():
            labels[1234] = 5
            labels[1234] = 0

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(5):
            try:
                model.fit(X, labels, epochs=1, batch_size=8, mixup=0.2)
            except ValueError as error:
                assert "y[1234] = 5 is not a class" in str(error)
    finally:
        stop.set()
        writer.join()
    assert np.all(np.isfinite(model.flat_parameters))


# ---- refused steps change nothing ---------------------------------------------------------------------------


def batch_norm_mse_model():
    return fastmlp.MLP([5, 8, 3], activation="tanh", loss="mse", optimizer=optim.SGD(lr=0.01),
                       batch_norm=True, seed=4)


def test_a_refused_step_leaves_batch_norms_running_statistics():
    X, Y = inf_target_data(bad_row=10)
    model = batch_norm_mse_model()
    model.train_step(X[:4], Y[:4])
    before = {name: getattr(model._network, name).copy() for name in ("running_mean", "running_var")}
    params = model.flat_parameters
    with pytest.raises(FloatingPointError, match="the step was not applied"):
        model.train_step(X[8:12], Y[8:12])
    for name, values in before.items():
        np.testing.assert_array_equal(getattr(model._network, name), values)
    np.testing.assert_array_equal(model.flat_parameters, params)


def test_fit_stopped_by_a_refused_step_equals_the_clean_steps_before_it():
    X, Y = inf_target_data(bad_row=10)  # batch 3 of 5
    model = batch_norm_mse_model()
    with pytest.raises(FloatingPointError, match="step 3"):
        model.fit(X, Y, epochs=1, batch_size=4, shuffle=False)
    clean = batch_norm_mse_model()
    for start in (0, 4):
        clean.train_step(X[start:start + 4], Y[start:start + 4])
    for name in ("params", "running_mean", "running_var"):
        np.testing.assert_array_equal(getattr(model._network, name), getattr(clean._network, name))


# ---- updates that overflow the parameters; infinite options -------------------------------------------


def overflowing_model():
    # In float32 this learning rate turns a finite gradient into infinite weights at once.
    return fastmlp.MLP([5, 8, 3], activation="relu", optimizer=optim.SGD(lr=3e38, momentum=0.9), seed=7)


def test_fit_stops_when_an_update_makes_parameters_non_finite_and_keeps_the_model_finite():
    X, y = blobs()
    model = overflowing_model()
    start = model.flat_parameters
    with pytest.raises(FloatingPointError, match=r"parameters became NaN or infinite in epoch 1.*"
                                                 r"the weights after step 0 \(the last finite ones\) were put back"):
        model.fit(X, y, epochs=3, batch_size=50, shuffle=False)
    np.testing.assert_array_equal(model.flat_parameters, start)  # not the NaN/inf ones
    assert model._network.step == 0
    assert all(np.isfinite(buffer).all() for buffer in model._network.optimizer_state.values())


def test_on_nan_restore_puts_back_finite_weights_after_an_overflowing_update():
    X, y = blobs()
    model = overflowing_model()
    start = model.flat_parameters
    with pytest.warns(RuntimeWarning, match="parameters became NaN or infinite"):
        history = model.fit(X, y, epochs=3, batch_size=50, shuffle=False, on_nan="restore")
    assert history.stopped_on_nan
    np.testing.assert_array_equal(model.flat_parameters, start)  # the state before the run
    assert model._network.step == 0


def test_train_step_says_when_its_update_made_parameters_non_finite():
    X, y = blobs()
    model = overflowing_model()
    with pytest.raises(FloatingPointError, match="step 1 made parameters NaN or infinite"):
        model.train_step(X[:50], y[:50])


@pytest.mark.parametrize("make, name", [
    (lambda: optim.SGD(lr=float("inf")), "lr"),
    (lambda: optim.SGD(weight_decay=float("inf")), "weight_decay"),
    (lambda: optim.SGD(momentum=float("inf")), "momentum"),
    (lambda: optim.Adam(weight_decay=float("inf")), "weight_decay"),
    (lambda: optim.Adam(eps=float("inf")), "eps"),
    (lambda: optim.AdamW(lr=float("inf")), "lr"),
    (lambda: optim.RMSprop(lr=float("inf")), "lr"),
    (lambda: optim.RMSprop(alpha=float("inf")), "alpha"),
    (lambda: optim.Adagrad(initial_accumulator_value=float("inf")), "initial_accumulator_value"),
    (lambda: optim.Adagrad(lr_decay=float("inf")), "lr_decay"),
    (lambda: optim.Adadelta(lr=float("inf")), "lr"),
    (lambda: optim.Adadelta(eps=10 ** 400), "eps"),
])
def test_infinite_optimizer_options_are_refused_naming_them(make, name):
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number, got (inf|{10 ** 400})"):
        make()


def test_options_infinite_in_float32_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"leaky_relu_slope=1e\+39 is infinite in float32"):
        fastmlp.MLP([3, 4, 2], activation="leaky_relu", leaky_relu_slope=1e39)
    with pytest.raises(ValueError, match=r"SGD lr=1e\+39 is infinite in float32"):
        fastmlp.MLP([3, 4, 2], optimizer=optim.SGD(lr=1e39))
    model = fastmlp.MLP([3, 4, 2], activation="leaky_relu", leaky_relu_slope=1e39, dtype="float64")
    assert model.leaky_relu_slope == 1e39
    with pytest.raises(ValueError, match=r"learning_rate=1e\+39 is infinite in float32"):
        fastmlp.MLP([3, 4, 2]).learning_rate = 1e39


# ---- set_weights against predict; copies ---------------------------------------------------------------------


def test_predictions_concurrent_with_set_weights_match_one_weight_set():
    model = fastmlp.MLP([6, 16, 4], activation="tanh", seed=0)
    rng = np.random.default_rng(0)
    sets = []
    for _ in range(2):
        sets.append(([rng.normal(size=w.shape) for w in model.weights],
                     [rng.normal(size=b.shape) for b in model.biases]))
    X = rng.normal(size=(6000, 6)).astype(np.float32)  # six evaluation chunks
    expected = []
    for weights, biases in sets:
        model.set_weights(weights, biases)
        expected.append(model.predict_proba(X))
    stop = threading.Event()

    def swap():
        k = 0
        while not stop.is_set():
            model.set_weights(*sets[k % 2])
            k += 1

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        mixed = 0
        for _ in range(150):
            got = model.predict_proba(X)
            mixed += not any(np.array_equal(got, want) for want in expected)
    finally:
        stop.set()
        swapper.join()
    assert mixed == 0, f"{mixed} of 150 predictions matched neither weight set"


@pytest.mark.parametrize("make_copy", [copy.copy, copy.deepcopy])
def test_a_copy_of_a_model_is_independent(make_copy):
    X, y = blobs()
    model = small_model(optimizer=optim.Adam(lr=1e-2), batch_norm=True)
    model.fit(X, y, epochs=2)
    twin = make_copy(model)
    assert twin._network is not model._network
    np.testing.assert_array_equal(twin.predict_proba(X), model.predict_proba(X))
    before = model.flat_parameters
    history = twin.fit(X, y, epochs=1)
    np.testing.assert_array_equal(model.flat_parameters, before)  # training the copy left it
    # The copy continued exactly where the original stood: the same as the original's next epoch.
    assert history.epoch == [3]
    model.fit(X, y, epochs=1)
    np.testing.assert_array_equal(twin.flat_parameters, model.flat_parameters)
    assert twin._network.step == model._network.step


# ---- allocation failures and integer limits -----------------------------------------------------------------


SCRATCH_UNDER_LIMIT = textwrap.dedent("""
    import resource
    import numpy as np
    from fastmlp import _core

    K = 2_000_000
    a = np.ones((2, K), np.float32)
    b = np.ones((K, 16), np.float32)  # the dot path copies b transposed into scratch: 128 MB
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + (48 << 20), resource.RLIM_INFINITY))
    try:
        _core.kernels.gemm(a, b)
    except MemoryError:
        print("MemoryError", flush=True)
""")


@pytest.mark.skipif(SANITIZED, reason="ASan reserves terabytes of address space: no RLIMIT_AS under it")
def test_a_failed_gemm_scratch_allocation_raises_memory_error():
    child = subprocess.run([sys.executable, "-c", SCRATCH_UNDER_LIMIT], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == 0 and child.stdout.strip() == "MemoryError", (child.returncode, child.stderr)


@pytest.mark.parametrize("n", [100_000, 2 ** 31])
def test_thread_counts_are_capped_naming_the_parameter(n):
    with pytest.raises(ValueError, match=rf"n_threads must be an integer <= 4096, got {n}"):
        fastmlp.MLP([3, 2], n_threads=n)
    with pytest.raises(ValueError, match=rf"n must be an integer in \[1, 4096\] or None, got {n}"):
        fastmlp.set_num_threads(n)
    with pytest.raises(ValueError, match=r"num_threads must be in \[0, 4096\]"):
        fastmlp.MLP([3, 2])._network.num_threads = 100_000


def test_integers_beyond_the_cores_types_name_their_parameter():
    with pytest.raises(ValueError, match=r"seed must be an integer <= 18446744073709551615, got 18446744073709551616"):
        fastmlp.MLP([3, 2], seed=2 ** 64)
    assert fastmlp.MLP([3, 2], seed=2 ** 64 - 1).seed == 2 ** 64 - 1
    X, y = blobs(n=20, features=3, classes=2)
    with pytest.raises(ValueError, match=r"batch_size must be an integer <= \d+, got 9223372036854775808"):
        fastmlp.MLP([3, 2]).fit(X, y, batch_size=2 ** 63)


# ---- forged model files -----------------------------------------------------------------------------------------


def forged(tmp_path, change):
    X, y = blobs()
    model = small_model(optimizer=optim.Adam(lr=1e-2), batch_norm=True)
    model.fit(X, y, epochs=1)
    model.save(tmp_path / "model.npz")
    arrays = members(tmp_path / "model.npz")
    change(arrays)
    return write_npz(tmp_path / "forged.npz", arrays)


def assert_refused(path, message):
    with pytest.raises(ValueError, match="not a valid fastmlp model file: " + message):
        fastmlp.load(path)


def set_header_field(arrays, key, value):
    header = json.loads(arrays["header"].tobytes())
    header[key] = value
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)


def test_load_refuses_a_zero_size_dtype_before_allocating(tmp_path):
    def change(arrays):
        set_header_field(arrays, "layer_sizes", [3000, 3000, 3])  # 9 M parameters claimed
        set_header_field(arrays, "batch_norm", False)
        arrays["params"] = np.zeros(3000 * 3000 + 3000 + 3000 * 3 + 3, dtype="V0")
    assert_refused(forged(tmp_path, change), "the array 'params' has the zero-size dtype '|V0'")


@pytest.mark.parametrize("member, position, value, message", [
    ("params", -1, np.nan, "the array 'params' holds NaN or infinity"),
    ("running_mean", 0, np.inf, "the array 'running_mean' holds NaN or infinity"),
    ("running_var", 0, -1.0, r"the array 'running_var' holds a negative value"),
    ("optimizer_exp_avg_sq", 3, -1e-3, r"the array 'optimizer_exp_avg_sq' holds a negative value"),
    ("optimizer_exp_avg", 0, np.nan, "the array 'optimizer_exp_avg' holds NaN or infinity"),
])
def test_load_refuses_contents_set_weights_would_refuse(tmp_path, member, position, value, message):
    def change(arrays):
        arrays[member] = arrays[member].copy()
        arrays[member][position] = value
    assert_refused(forged(tmp_path, change), message)


def test_load_refuses_a_step_count_that_would_overflow(tmp_path):
    path = forged(tmp_path, lambda arrays: set_header_field(arrays, "step", 2 ** 63 - 1))
    assert_refused(path, r"step=9223372036854775807 in the header is not an optimizer step count")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_load_on_a_fifo_refuses_at_once_instead_of_blocking(tmp_path):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            fastmlp.load(fifo)
        except ValueError as error:
            outcome.append(str(error))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(10)
    if loader.is_alive():  # blocked in open(): give it a writer so the thread can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load blocked on a FIFO")
    assert outcome and "is not a regular file" in outcome[0]


# ---- file modes and stale temporaries -----------------------------------------------------------------------


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_save_honours_the_umask_and_an_existing_files_mode(tmp_path, umask_027):
    model = small_model()
    model.save(tmp_path / "new.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o640
    existing = tmp_path / "existing.npz"
    existing.write_bytes(b"old")
    os.chmod(existing, 0o604)
    model.save(existing)
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o604
    fastmlp.load(existing)


def test_to_onnx_honours_the_umask(tmp_path, umask_027):
    pytest.importorskip("onnx")
    X, y = blobs()
    model = small_model()
    model.fit(X, y, epochs=1)
    model.to_onnx(tmp_path / "model.onnx")
    assert stat.S_IMODE(os.stat(tmp_path / "model.onnx").st_mode) == 0o640


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_save_removes_only_stale_temporaries_of_killed_writers(tmp_path):
    now = time.time()
    STALE_SECONDS, STALE_SECONDS_WITHOUT_PID = _files.STALE_SECONDS, _files.STALE_SECONDS_WITHOUT_PID
    gone, alive = dead_pid(), os.getpid()
    files = {
        f".fastmlp-{gone}-abcd_123.tmp": (now - STALE_SECONDS - 60, False),    # writer gone, old
        ".fastmlp-x1y2z3w4.tmp": (now - STALE_SECONDS_WITHOUT_PID - 60, False),  # older version's
        f".fastmlp-{gone}-recent00.tmp": (now - 5, True),                       # may be in use
        f".fastmlp-{alive}-oldalive.tmp": (now - STALE_SECONDS - 60, True),      # writer alive
        ".fastmlp-y1y2y3y4.tmp": (now - STALE_SECONDS - 60, True),              # not old enough
        f".fastmlp-{gone}-abcd_123.tmp.keep": (now - 10 ** 6, True),             # not our pattern
        "notes.tmp": (now - 10 ** 6, True),
    }
    for name, (mtime, _) in files.items():
        (tmp_path / name).write_bytes(b"x" * 10)
        os.utime(tmp_path / name, (mtime, mtime))
    os.mkdir(tmp_path / f".fastmlp-{gone}-dirdirdi.tmp")  # a directory is never ours
    os.symlink(tmp_path / "notes.tmp", tmp_path / f".fastmlp-{gone}-linklink.tmp")
    os.utime(tmp_path / f".fastmlp-{gone}-linklink.tmp", (now - 10 ** 6, now - 10 ** 6), follow_symlinks=False)
    small_model().save(tmp_path / "model.npz")
    left = set(os.listdir(tmp_path))
    for name, (_, kept) in files.items():
        assert (name in left) == kept, name
    assert {f".fastmlp-{gone}-dirdirdi.tmp", f".fastmlp-{gone}-linklink.tmp", "model.npz"} <= left


# A writer that stops for good in the middle of writing its temporary file (issue 18).
STUCK_WRITER = textwrap.dedent("""
    import sys, time
    from fastmlp import _files

    def write(file):
        file.write(b"x" * 1000)
        file.flush()
        print("writing", flush=True)
        time.sleep(600)

    _files.write_atomically(sys.argv[1], write)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start times come from /proc")
def test_the_next_save_removes_a_killed_writers_temporary_file_whatever_its_age(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", STUCK_WRITER, str(tmp_path / "model.npz")],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    [temporary] = os.listdir(tmp_path)
    small_model().save(tmp_path / "other.npz")
    assert temporary in os.listdir(tmp_path)  # its writer is alive: kept
    writer.kill()
    writer.wait()
    writer.stdout.close()
    small_model().save(tmp_path / "other.npz")  # a second later, not an hour
    assert sorted(os.listdir(tmp_path)) == ["other.npz"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start times come from /proc")
def test_a_reused_pid_does_not_keep_a_dead_writers_temporary_file(tmp_path):
    pid, tag = os.getpid(), _files._system_tag()
    start = _files._start_time(pid)
    files = {
        f".fastmlp-{pid}-{start}-{tag}-abcd_123.tmp": True,        # a live writer: this process
        f".fastmlp-{pid}-{start + 1}-{tag}-abcd_123.tmp": False,   # its pid, another process's start
        f".fastmlp-{dead_pid()}-{start}-{tag}-abcd_123.tmp": False,  # gone
        f".fastmlp-{pid}-{start + 1}-0123456789ab-abcd_123.tmp": True,  # another host's: too young
        f".fastmlp-{pid}-{start + 1}-{tag}-abcd_123.tmp.keep": True,  # not our pattern
    }
    for name in files:
        (tmp_path / name).write_bytes(b"x" * 10)
    small_model().save(tmp_path / "model.npz")
    left = set(os.listdir(tmp_path))
    for name, kept in files.items():
        assert (name in left) == kept, name


# ---- Ctrl-C during predict and evaluate ---------------------------------------------------------------------


INTERRUPTED_PREDICTION = textwrap.dedent("""
    import signal, sys, time
    import numpy as np
    import fastmlp

    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200_000, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=200_000)
    # About 17 M multiply-adds a row: the whole of X takes tens of seconds on two cores.
    model = fastmlp.MLP([64, 4096, 4096, 10], optimizer="sgd", seed=0)
    model.fitted = True
    for call in (lambda: model.predict_proba(X), lambda: model.evaluate(X, y)):
        print("ready", flush=True)
        try:
            call()
            print("finished", flush=True)
        except KeyboardInterrupt:
            print("interrupted", time.time(), flush=True)
    print(bool(np.all(np.isfinite(model.predict_proba(X[:5])))), flush=True)
""")


@pytest.mark.skipif(SANITIZED, reason="tens of seconds of GEMM under ASan when it fails")
def test_ctrl_c_interrupts_a_long_predict_and_evaluate():
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_PREDICTION], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(2):
            assert child.stdout.readline().strip() == "ready"
            time.sleep(1.0)
            sent = time.time()
            child.send_signal(signal.SIGINT)
            outcome = child.stdout.readline().split()
            assert outcome[0] == "interrupted"
            print(f"SIGINT honoured after {float(outcome[1]) - sent:.3f} s")
        assert child.stdout.readline().strip() == "True"  # the model still predicts
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.stdout.close()


# ---- issue 18: finite parameters that overflow the forward pass ----------------------------------------------


OVERFLOWING_LR = {"float32": 1e30, "float64": 1e300}


def one_batch(dtype):
    X, y = blobs(n=32)
    return X.astype(dtype), y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_rolls_back_an_update_whose_finite_parameters_overflow_the_forward_pass(dtype):
    X, y = one_batch(dtype)
    model = fastmlp.MLP([5, 8, 3], optimizer=optim.SGD(lr=OVERFLOWING_LR[dtype]), dtype=dtype, seed=0)
    start = model.flat_parameters
    with pytest.raises(FloatingPointError, match=r"parameters became so large that the network's outputs "
                                                 r"on a batch are NaN or infinite in epoch 1, by step 1"):
        model.fit(X, y, epochs=1, batch_size=32)
    np.testing.assert_array_equal(model.flat_parameters, start)
    assert model._network.step == 0 and not model.fitted


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_on_nan_restore_puts_back_a_state_whose_outputs_are_finite(dtype):
    X, y = one_batch(dtype)
    model = fastmlp.MLP([5, 8, 3], optimizer=optim.SGD(lr=0.1), dtype=dtype, seed=0)
    model.fit(X, y, epochs=1, batch_size=32)
    good, good_outputs = model.flat_parameters, model.predict_proba(X)
    model.learning_rate = OVERFLOWING_LR[dtype]
    with pytest.warns(RuntimeWarning, match="network's outputs on a batch are NaN or infinite"):
        history = model.fit(X, y, epochs=3, batch_size=32, on_nan="restore")
    assert history.stopped_on_nan and len(history) == 0
    np.testing.assert_array_equal(model.flat_parameters, good)
    np.testing.assert_array_equal(model.predict_proba(X), good_outputs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_train_step_after_an_update_that_overflows_the_forward_pass_says_so(dtype):
    X, y = one_batch(dtype)
    model = fastmlp.MLP([5, 8, 3], optimizer=optim.SGD(lr=OVERFLOWING_LR[dtype]), dtype=dtype, seed=0)
    assert np.isfinite(model.train_step(X, y))  # its loss, before the update
    assert np.isfinite(model.flat_parameters).all()  # finite, yet the forward pass overflows
    with pytest.raises(FloatingPointError, match="outputs are NaN or infinite for row 0 of X"):
        model.predict(X)
    with pytest.raises(FloatingPointError, match=r"at step 2; the step was not applied: the model's outputs "
                                                 r"on this batch are NaN or infinite"):
        model.train_step(X, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "mse", "poisson"])
def test_predictions_whose_outputs_are_not_finite_raise(dtype, loss):
    X, _ = one_batch(dtype)
    model = fastmlp.MLP([5, 8, 3], activation="tanh", loss=loss, dtype=dtype, seed=0)
    huge = float(np.finfo(dtype).max) / 2  # finite weights: the hidden units saturate, the logits overflow
    model.set_weights([np.full_like(w, huge) for w in model.weights], model.biases)
    calls = [model.predict, lambda rows: model._outputs(rows)]
    y = np.zeros(len(X), np.int64) if loss == "cross_entropy" else np.zeros((len(X), 3), dtype)
    calls.append(lambda rows: model.evaluate(rows, y))
    if loss in ("cross_entropy", "bce"):
        calls.append(model.predict_proba)
    for call in calls:
        with pytest.raises(FloatingPointError, match=r"outputs are NaN or infinite for row 0 of X"):
            call(X)
    # One row overflowing is named, in a prediction of many chunks; the others are fine.
    model = fastmlp.MLP([5, 8, 3], activation="identity", loss=loss, dtype=dtype, seed=0)
    model.set_weights([np.ones_like(w) for w in model.weights], model.biases)
    many = np.zeros((5000, 5), dtype)
    many[3333, 0] = huge
    model.predict(many[:3333])
    with pytest.raises(FloatingPointError, match=r"for row 3333 of X"):
        model.predict(many)


# ---- issue 18: batches whose rows all weigh 0 -----------------------------------------------------------------


def zero_weight_first_batch():
    """64 rows: the first 32 hold classes 1 and 2 only, the rest every class."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4))
    y = np.r_[rng.integers(1, 3, 32), np.arange(32) % 3]
    return X, y


@pytest.mark.parametrize("how", ["class_weights", "sample_weight"])
def test_a_batch_whose_rows_all_weigh_zero_takes_no_step(how):
    X, y = zero_weight_first_batch()
    options = dict(dtype="float64", seed=0)
    if how == "class_weights":
        options["class_weights"] = [1.0, 0.0, 0.0]
        weights = {}
        weights_alone = {}
    else:
        sample_weight = np.r_[np.zeros(32), np.where(y[32:] == 0, 1.0, 0.0)]
        options["class_weights"] = None
        weights = {"sample_weight": sample_weight}
        weights_alone = {"sample_weight": sample_weight[32:]}
    model = fastmlp.MLP([4, 3], **options)
    history = model.fit(X, y, epochs=3, batch_size=32, shuffle=False, **weights)
    # The same as training on the second batch alone: the first counts for nothing.
    alone = fastmlp.MLP([4, 3], **options)
    expected = alone.fit(X[32:], y[32:], epochs=3, batch_size=32, shuffle=False, **weights_alone)
    assert model._network.step == 3
    np.testing.assert_array_equal(model.flat_parameters, alone.flat_parameters)
    assert history["loss"] == expected["loss"] and history["accuracy"] == expected["accuracy"]
    assert np.isfinite(history["loss"]).all()


def test_class_weights_that_weigh_every_row_zero_are_refused_where_sample_weights_are():
    X, y = zero_weight_first_batch()
    model = fastmlp.MLP([4, 3], class_weights=[1, 0, 0], seed=0)
    model.fit(X, y, epochs=1)
    for call in (lambda: model.fit(X[:32], y[:32]), lambda: model.evaluate(X[:32], y[:32]),
                 lambda: model.train_step(X[:32], y[:32]), lambda: model.gradients(X[:32], y[:32]),
                 lambda: model.fit(X, y, validation_data=(X[:32], y[:32]))):
        with pytest.raises(ValueError, match=r"class_weights=\[1.0, 0.0, 0.0\] give every row of .* weight 0"):
            call()
    with pytest.raises(ValueError, match=r"class_weights are all zero \(\[0, 0, 0\]\)"):
        fastmlp.MLP([4, 3], class_weights=[0, 0, 0])


def test_evaluate_skips_a_chunk_whose_rows_all_weigh_zero():
    X, y = zero_weight_first_batch()
    model = fastmlp.MLP([4, 3], class_weights=[1, 0, 0], dtype="float64", seed=0)
    model.fit(X, y, epochs=1)
    zero_chunk = np.tile(X[:32], (32, 1))  # 1024 rows of classes 1 and 2: one evaluation chunk
    labels = np.tile(y[:32], 32)
    result = model.evaluate(np.r_[zero_chunk, X[32:]], np.r_[labels, y[32:]])
    assert result == model.evaluate(X[32:], y[32:])
    assert np.isfinite(result["loss"])


def test_the_reference_takes_no_step_on_a_batch_whose_class_weights_sum_to_zero():
    X, y = zero_weight_first_batch()
    reference = R.ReferenceMLP([4, 3], [], class_weights=[1, 0, 0], optimizer="sgd",
                               optimizer_options={"lr": 0.1, "momentum": 0.9})
    start = reference.params.copy()
    assert reference.train_step(X[:32], y[:32]) == 0 and reference.step == 0
    np.testing.assert_array_equal(reference.params, start)
    assert reference.train_step(X[32:], y[32:]) > 0 and reference.step == 1


# ---- issue 18: layer sizes the core cannot hold --------------------------------------------------------------


@pytest.mark.parametrize("sizes, options", [
    ([4, 2 ** 62], {"loss": "gaussian_nll"}),   # 2 x 2**62 output units: beyond int64
    ([4, 2 ** 62], {"loss": "mse"}),
    ([2 ** 31, 2 ** 31, 2], {}),                 # 2**62 weights of 4 bytes
    ([2 ** 62, 2 ** 62], {"loss": "mse"}),       # fan_in * fan_out overflows int64
    ([4, 2 ** 60, 2], {"batch_norm": True, "dtype": "float64"}),
])
def test_layer_sizes_the_core_cannot_hold_are_refused_naming_them(sizes, options):
    with pytest.raises(ValueError, match=re.escape(f"layer_sizes={sizes!r}")):
        fastmlp.MLP(sizes, **options)


def test_the_core_refuses_widths_it_cannot_hold_before_allocating():
    with pytest.raises(ValueError, match=r"layer sizes \[2147483648, 2147483648, 2\] need 4611686024869838850 "
                                         r"parameters of 4 bytes"):
        _core.NetworkFloat32([2 ** 31, 2 ** 31, 2], ["relu"], "cross_entropy", {"name": "sgd"})


def test_an_overflow_found_by_the_next_runs_first_step_goes_back_two_runs():
    # 20 one-row batches, run two per call: batch 1 (the last of the first call) is huge, so
    # its finite update leaves weights whose forward pass overflows on batch 2, the first
    # step of the second call. The state that call started from is the broken one; the
    # model goes back to the one before it.
    X, y = blobs(n=20)
    X[1] = np.abs(X[1]) * 1e25
    model = fastmlp.MLP([5, 8, 3], optimizer=optim.SGD(lr=0.1), seed=0)
    start = model.flat_parameters
    with pytest.raises(FloatingPointError, match=r"network's outputs on a batch are NaN or infinite in "
                                                 r"epoch 1.*the weights after step 0"):
        model.fit(X, y, epochs=1, batch_size=1, shuffle=False)
    np.testing.assert_array_equal(model.flat_parameters, start)
    assert np.isfinite(model._network.predict(X[2:])).all()
