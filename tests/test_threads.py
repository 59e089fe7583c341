"""Thread control: a model's own n_threads, OMP_NUM_THREADS, threadpoolctl limits, and
worker processes (fork after multithreaded work must not hang; pools must not oversubscribe)."""
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastmlp

# Generous: the CI machine is small and shared; a hang shows up as TimeoutExpired.
SUBPROCESS_TIMEOUT = 120


@pytest.fixture
def default_threads():
    """Run with fastmlp following OpenMP (no set_num_threads), then put the setting back."""
    from fastmlp import _core

    saved = _core.get_num_threads() if _core.num_threads_is_set() else None
    fastmlp.set_num_threads(None)
    yield
    fastmlp.set_num_threads(saved)


def data(n=600, features=200, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    return X, rng.integers(0, classes, size=n)


def wide_model(**kwargs):
    """Big enough that its calls (a 200-row batch: 84M multiply-adds) and GEMMs are above the
    one-thread work thresholds."""
    return fastmlp.MLP([200, 1024, 4], seed=3, **kwargs)


def run_python(code, timeout=SUBPROCESS_TIMEOUT, **env):
    """Run code in a fresh interpreter from a file (spawned workers re-import it) with
    OMP_NUM_THREADS only if given; return its output's words."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    environment.update(env)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "script.py")
        with open(path, "w") as file:
            file.write(textwrap.dedent(code))
        result = subprocess.run([sys.executable, path], capture_output=True, text=True,
                                timeout=timeout, env=environment)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


# ---- a model's own thread count ----------------------------------------------------------------


def test_n_threads_applies_to_the_models_calls_only(restore_threads):
    X, y = data()
    fastmlp.set_num_threads(2)
    own = wide_model(n_threads=1)
    own.fit(X, y, epochs=1, batch_size=200)
    assert own._network.last_call_threads == 1
    own.predict(X)
    assert own._network.last_call_threads == 1
    assert fastmlp.get_num_threads() == 2  # the process-wide setting is untouched
    shared = wide_model()
    shared.fit(X, y, epochs=1, batch_size=200)
    assert shared.n_threads is None and shared._network.last_call_threads == 2
    own.n_threads = 3
    own.predict(X)
    assert own._network.last_call_threads == 3


def test_n_threads_does_not_change_the_result():
    X, y = data()
    one, two = wide_model(n_threads=1, dropout=0.1), wide_model(n_threads=2, dropout=0.1)
    one.fit(X, y, epochs=2, batch_size=100)
    two.fit(X, y, epochs=2, batch_size=100)
    np.testing.assert_array_equal(one.flat_parameters, two.flat_parameters)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_n_threads_is_rejected(bad):
    with pytest.raises(ValueError, match=f"n_threads must be an integer >= 1, got {bad!r}"):
        fastmlp.MLP([2, 3, 2], n_threads=bad)


def test_set_num_threads_none_follows_openmp_again(default_threads):
    from fastmlp import _core

    fastmlp.set_num_threads(1)
    assert _core.num_threads_is_set() and fastmlp.get_num_threads() == 1
    fastmlp.set_num_threads(None)
    assert not _core.num_threads_is_set()


# ---- the thread count a call chooses from its work -------------------------------------------


def forward_work(model):
    """Multiply-adds of one row's forward pass."""
    sizes = model.layer_sizes
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def training_work(model):
    """Multiply-adds of one row's training step: forward, dW everywhere, dX but for layer 1."""
    sizes = model.layer_sizes
    return 3 * forward_work(model) - sizes[0] * sizes[1]


def rows_at_the_call_threshold(work_per_row):
    """(rows just below, rows at or above) the whole-call threshold."""
    threshold = fastmlp.build_info()["call_parallel_work_threshold"]
    above = int(np.ceil(threshold / work_per_row))
    return above - 1, above


def test_the_thresholds_are_reported_and_ordered():
    info = fastmlp.build_info()
    assert 0 < info["parallel_work_threshold"] < info["call_parallel_work_threshold"]


def test_a_small_prediction_runs_on_one_thread_a_large_one_on_all(restore_threads):
    fastmlp.set_num_threads(2)
    model = fastmlp.MLP([100, 500, 10], seed=0)
    X = np.random.default_rng(0).normal(size=(2000, 100)).astype(np.float32)
    model.fit(X[:200], np.arange(200) % 10, epochs=1, batch_size=200)
    below, above = rows_at_the_call_threshold(forward_work(model))
    assert 1 < below < above <= X.shape[0]
    for predict in (model.predict, model.predict_proba, lambda x: model.evaluate(x, np.zeros(len(x), int))):
        predict(X[:1])
        assert model._network.last_call_threads == 1
        predict(X[:below])
        assert model._network.last_call_threads == 1
        predict(X[:above])
        assert model._network.last_call_threads == 2


def test_a_small_training_step_runs_on_one_thread_a_large_one_on_all(restore_threads):
    fastmlp.set_num_threads(2)
    model = fastmlp.MLP([100, 500, 10], seed=0)
    below, above = rows_at_the_call_threshold(training_work(model))
    X = np.random.default_rng(1).normal(size=(above, 100)).astype(np.float32)
    y = np.arange(above) % 10
    model.train_step(X[:below], y[:below])
    assert model._network.last_call_threads == 1
    model.train_step(X, y)
    assert model._network.last_call_threads == 2
    # A run of batches decides from all its batches, not from one batch.
    order, batch_size = np.arange(above, dtype=np.int64), max(1, below // 8)
    batches = -(-above // batch_size)
    model._network.train_batches(X, y, order, batch_size, 0, 1)
    assert model._network.last_call_threads == 1
    model._network.train_batches(X, y, order, batch_size, 0, batches)
    assert model._network.last_call_threads == 2


def test_a_tiny_sklearn_fit_runs_on_one_thread(restore_threads):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from fastmlp.sklearn import MLPClassifier

    fastmlp.set_num_threads(2)
    X, y = load_iris(return_X_y=True)
    estimator = MLPClassifier(max_iter=5, random_state=0)
    with pytest.warns(Warning):  # not converged in 5 iterations
        estimator.fit(X, y)
    assert estimator._model._network.last_call_threads == 1
    estimator.predict(X)
    assert estimator._model._network.last_call_threads == 1


def learner_choices(one, many):
    """The counts (1 or 2) a fresh learner picks when each call takes one[i] / many[i] seconds."""
    from fastmlp import _core

    return np.array(_core._thread_learner_choices(2, list(one), list(many)))


@pytest.mark.parametrize("faster", ["two threads", "one thread"])
def test_the_learner_keeps_the_faster_count_and_probes_ever_more_rarely(faster):
    calls = 400
    one, many = np.full(calls, 1.0), np.full(calls, 0.6)  # an idle machine: 2 threads win
    if faster == "one thread":
        many = np.full(calls, 3.0)  # busy cores: every barrier waits
    chosen = learner_choices(one, many)
    winner = 2 if faster == "two threads" else 1
    assert chosen[0] == 2  # nothing timed yet: the settings' count
    assert np.mean(chosen[10:] == winner) > 0.95
    probes = np.flatnonzero(chosen[10:] != winner)
    gaps = np.diff(probes)
    assert len(gaps) >= 3 and np.all(np.diff(gaps) >= 0) and gaps[-1] >= 32  # spreading out


def test_the_learner_follows_the_machine_when_it_gets_busy_and_idle_again():
    quiet, busy = (np.full(300, 1.0), np.full(300, 0.6)), (np.full(300, 1.0), np.full(300, 3.0))
    one, many = (np.concatenate(parts) for parts in zip(quiet, busy, quiet))
    chosen = learner_choices(one, many)
    # Within a probe interval of each change (at most 64 calls), the faster count again.
    assert np.mean(chosen[70:300] == 2) > 0.95
    assert np.mean(chosen[370:600] == 1) > 0.95
    assert np.mean(chosen[670:] == 2) > 0.95


def test_the_first_large_call_with_the_default_count_uses_it(default_threads):
    # With nobody choosing the count a model learns from its calls' timings whether one
    # thread is faster; before it has timed anything it uses the default.
    if os.environ.get("OMP_NUM_THREADS") or fastmlp.get_num_threads() < 2:
        pytest.skip("needs the default count of a machine with 2+ cores")
    model = wide_model()
    X, _ = data()
    model.set_weights(model.weights, model.biases)
    model.predict(X)
    assert model._network.last_call_threads == fastmlp.get_num_threads()


def test_learning_the_thread_count_does_not_change_the_result(default_threads):
    # Many calls with the default count (which may switch between 1 and 2 threads from call
    # to call) against a model held to one thread: the same bits.
    X, y = data(n=800)
    learning, single = wide_model(), wide_model(n_threads=1)
    for epoch in range(3):
        for model in (learning, single):
            model.fit(X, y, epochs=1, batch_size=100)
    np.testing.assert_array_equal(learning.flat_parameters, single.flat_parameters)
    np.testing.assert_array_equal(learning.predict_proba(X), single.predict_proba(X))


# ---- OMP_NUM_THREADS and threadpoolctl ------------------------------------------------------------


def test_omp_num_threads_sets_the_default_for_training():
    code = """
        import numpy as np, fastmlp
        X = np.random.default_rng(0).normal(size=(400, 200)).astype(np.float32)
        model = fastmlp.MLP([200, 1024, 4], seed=0)
        model.fit(X, np.arange(400) % 4, epochs=1, batch_size=200)
        print(fastmlp.get_num_threads(), model._network.last_call_threads)
    """
    assert run_python(code, OMP_NUM_THREADS="3") == ["3", "3"]


def test_threadpoolctl_sees_the_openmp_runtime_fastmlp_loads():
    code = """
        import numpy, threadpoolctl
        def openmp():
            return sorted(info["filepath"] for info in threadpoolctl.threadpool_info()
                          if info["user_api"] == "openmp")
        before = openmp()
        import fastmlp
        print(len(before), len(openmp()))
    """
    assert run_python(code) == ["0", "1"]


def test_threadpool_limits_limits_fastmlp(default_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X, y = data()
    model = wide_model()
    unlimited = fastmlp.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1):
        assert fastmlp.get_num_threads() == 1
        model.fit(X, y, epochs=1, batch_size=200)
        assert model._network.last_call_threads == 1
    with threadpoolctl.threadpool_limits(limits=3, user_api="openmp"):
        model.predict(X)
        assert model._network.last_call_threads == 3
    assert fastmlp.get_num_threads() == unlimited


def test_an_explicit_setting_wins_over_threadpool_limits(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fastmlp.set_num_threads(2)
    with threadpoolctl.threadpool_limits(limits=1):
        assert fastmlp.get_num_threads() == 2


# ---- worker processes ----------------------------------------------------------------------------

WORKER_SETUP = """
    import multiprocessing
    import numpy as np
    import fastmlp
    X = np.random.default_rng(0).normal(size=(400, 200)).astype(np.float32)
    y = np.arange(400) % 4

    def train(threads=None):
        if threads is not None:
            fastmlp.set_num_threads(threads)
        model = fastmlp.MLP([200, 1024, 4], seed=0)
        model.fit(X, y, epochs=1, batch_size=200)
        return fastmlp.get_num_threads(), model._network.last_call_threads
"""


@pytest.mark.parametrize("parent_trains_first, expected", [
    # libgomp deadlocks in a forked child's first parallel region once the parent's team has
    # started: fastmlp holds such a child to one thread, even when it asks for more.
    (True, ["1", "1", "1", "1"]),
    # The parent never ran a parallel region: the child defaults to one thread, and may use
    # more safely when it asks.
    (False, ["1", "1", "2", "2"]),
])
def test_forked_pool_workers_do_not_hang_or_oversubscribe(parent_trains_first, expected):
    code = WORKER_SETUP + f"""
    if __name__ == "__main__":
        if {parent_trains_first}:
            fastmlp.set_num_threads(2)
            assert train() == (2, 2)
        with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1) as pool:
            results = pool.map(train, [None, 2])
        print(*[count for pair in results for count in pair])
    """
    assert run_python(code) == expected


def test_forked_workers_follow_omp_num_threads_when_set():
    code = WORKER_SETUP + """
    if __name__ == "__main__":
        with multiprocessing.get_context("fork").Pool(1) as pool:
            print(*pool.apply(train))
    """
    assert run_python(code, OMP_NUM_THREADS="2") == ["2", "2"]


@pytest.mark.parametrize("omp_num_threads, expected", [(None, ["1", "1"]), ("2", ["2", "2"])])
def test_spawned_workers_default_to_one_thread_unless_omp_num_threads(omp_num_threads, expected):
    code = WORKER_SETUP + """
    if __name__ == "__main__":
        from concurrent.futures import ProcessPoolExecutor
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            print(*pool.submit(train).result())
    """
    env = {"OMP_NUM_THREADS": omp_num_threads} if omp_num_threads else {}
    assert run_python(code, **env) == expected



# ---- how libgomp waits (fastmlp/_openmp_env.py) ------------------------------------------------


def libgomp_spin_count_and_environment(**env):
    """(GOMP_SPINCOUNT as libgomp reports it at load, the variable in os.environ after import)."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    environment.update(env, OMP_DISPLAY_ENV="VERBOSE")  # libgomp prints its settings at load
    result = subprocess.run([sys.executable, "-c", "import os, fastmlp; "
                             "print('after:', os.environ.get('GOMP_SPINCOUNT', 'unset'))"],
                            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=environment)
    assert result.returncode == 0, result.stderr
    reported = [line.split("=")[1].strip(" '") for line in (result.stderr + result.stdout).splitlines()
                if line.strip().startswith("GOMP_SPINCOUNT =")]
    return reported, result.stdout.split("after:")[1].strip()


def test_libgomp_loads_with_a_short_spin_and_the_environment_is_restored():
    reported, after = libgomp_spin_count_and_environment()
    assert reported == ["10000"]
    assert after == "unset"


@pytest.mark.parametrize("env", [{"GOMP_SPINCOUNT": "777"}, {"OMP_WAIT_POLICY": "active"}])
def test_the_users_own_wait_setting_is_kept(env):
    reported, after = libgomp_spin_count_and_environment(**env)
    assert reported and reported[0] != "10000"
    if "GOMP_SPINCOUNT" in env:
        assert reported == ["777"] and after == "777"


# ---- fork while another thread trains (issue 18) ------------------------------------------------

FORK_DURING_FIT = """
    import copy, multiprocessing, queue, threading
    import numpy as np
    import fastmlp
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 256)).astype(np.float32)
    y = rng.integers(0, 10, size=512)
    model = fastmlp.MLP([256, 512, 10], seed=0)
    model.fit(X, y, epochs=1, batch_size=512, shuffle=False)
    twin, first_step = copy.deepcopy(model), model._network.step
    stop = threading.Event()

    def child(results):
        step, params = int(model._network.step), model.flat_parameters
        probabilities = model.predict_proba(X[:8])
        model.train_step(X[:8], y[:8])  # the model's locks are free in the child
        results.put((step, params, probabilities))

    fitting = threading.Thread(target=model.fit, args=(X, y), kwargs=dict(
        epochs=10**6, batch_size=512, shuffle=False, callbacks=[lambda epoch, logs: not stop.is_set()]))
    fitting.start()
    while model._network.step < first_step + 3:
        pass
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    process = context.Process(target=child, args=(results,))
    process.start()  # while the other thread is inside fit
    try:
        step, params, probabilities = results.get(timeout=20)
    except queue.Empty:
        print("child-hung")
        process.kill()
        step = None
    stop.set()
    fitting.join()
    process.join()
    if step is not None:
        # The child's model is the parent's after a completed step: the same bits as a copy
        # taken before the fit that takes as many steps (full batches, no shuffle).
        for _ in range(step - first_step):
            twin.train_step(X, y)
        print("steps", step - first_step, "same-parameters", np.array_equal(params, twin.flat_parameters),
              "same-predictions", np.array_equal(probabilities, twin.predict_proba(X[:8])))
"""


def test_a_child_forked_while_another_thread_fits_can_use_the_model():
    words = run_python(FORK_DURING_FIT)
    assert words[0] != "child-hung", "the child's predict_proba did not return in 20 s"
    assert words[0] == "steps" and int(words[1]) >= 3
    assert words[2:] == ["same-parameters", "True", "same-predictions", "True"]


FORK_DURING_REDUCTION = """
    import multiprocessing, queue, threading, warnings
    import numpy as np
    import fastmlp
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() beside a thread, on purpose
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 128)).astype(np.float32)
    y = rng.integers(0, 10, size=512)

    def one_rank(gradient, figures, partial):
        partial.fill(0)  # a single rank's sums are its own: the hook only has to take the GIL

    def model_with_reduction():
        model = fastmlp.MLP([128, 512, 512, 10], batch_norm=True, seed=0)
        model._network.set_gradient_reduction(one_rank)
        return model

    def train(steps=30):  # the core's steps (MLP.train_step and fit refuse a model with a hook)
        for _ in range(steps):
            model._network.train_step(X, y)

    model, twin = model_with_reduction(), model_with_reduction()
    model.fitted = twin.fitted = True
    fitting = threading.Thread(target=train)
    fitting.start()
    while model._network.step < 1 and fitting.is_alive():
        pass

    def child(results):
        network = model._network
        results.put((int(network.step), network.params.copy(), network.running_mean.copy(),
                     network.running_var.copy(), model.predict_proba(X[:8])))

    context = multiprocessing.get_context("fork")
    seen = []
    while fitting.is_alive() and len(seen) < 12:
        results = context.Queue()
        process = context.Process(target=child, args=(results,))
        process.start()  # waits for the step in progress: the deadlock was here
        try:
            seen.append(results.get(timeout=20))
        except queue.Empty:
            print("child-hung")
            process.kill()
            break
        process.join()
    fitting.join()
    # Each child's model is the parent's after a completed step, running statistics included:
    # the same bits as a twin taking as many steps (full batches, no shuffle).
    same = []
    for step, params, mean, var, probabilities in seen:
        while twin._network.step < step:
            twin._network.train_step(X, y)
        same.append(np.array_equal(params, twin._network.params) and np.array_equal(mean, twin._network.running_mean)
                    and np.array_equal(var, twin._network.running_var)
                    and np.array_equal(probabilities, twin.predict_proba(X[:8])))
    print("children", len(seen), "same", all(same))
"""


def test_a_fork_while_a_data_parallel_step_reduces_neither_hangs_nor_splits_a_step():
    # The fitting thread's hook takes the GIL, which os.fork() holds while it waits for the
    # state writes in progress: if the step's write spanned the hook, both would wait for ever.
    try:
        words = run_python(FORK_DURING_REDUCTION, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("fork() during a training step with a gradient reduction hung for 90 s")
    assert words[0] != "child-hung", "a child's predict_proba did not return in 20 s"
    assert words[:2] == ["children", words[1]] and int(words[1]) >= 2
    assert words[2:] == ["same", "True"]
