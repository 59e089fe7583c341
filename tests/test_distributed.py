"""Data-parallel fit over MPI (fit(comm=...)): scripts run under ``mpiexec -n P`` (P = 1, 2, 3;
3 ranks oversubscribe 2 cores, one thread each) against one-process fits computed here: the same
parameters after an epoch (1e-12 relative in float64, 1e-5 in float32; P = 1 the same bits),
every rank the same bits, the same error on every rank for bad input on one, and no hang when
a rank raises or dies. Skipped, saying why, without mpi4py or mpiexec."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp.distributed import FixedOrderSum, node_thread_share, shard_bounds, shares_of_batches

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
try:
    import mpi4py  # noqa: F401
    HAS_MPI4PY = True
except ImportError:
    HAS_MPI4PY = False
needs_mpi = pytest.mark.skipif(not (HAS_MPI4PY and MPIEXEC),
                               reason="needs mpi4py and mpiexec (pip install 'fastmlp[mpi]')")
TIMEOUT = 120

# The data and the fits every script and every one-process reference share.
COMMON = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastmlp

    def dataset(dtype, n=120, features=6, classes=3):
        rng = np.random.default_rng(7)
        X = rng.normal(size=(n, features)).astype(dtype)
        y = rng.integers(0, classes, size=n)
        weights = rng.uniform(0.25, 2.0, size=n)
        return X, y, weights

    def model(dtype, **options):
        return fastmlp.MLP([6, 8, 3], seed=11, dtype=dtype, **options)

    def decayed_adam():
        return fastmlp.optim.Adam(lr=0.01, weight_decay=0.1, amsgrad=True, decay_biases=False)

    def same_on_every_rank(comm, array):
        every = comm.allgather(array.tobytes())
        return all(copy == every[0] for copy in every)

    def trained_state(trained):
        # the parameters, then the optimizer state (which each rank updates a chunk of)
        state = trained._network.optimizer_state
        return np.concatenate([trained.flat_parameters, *(state[name] for name in sorted(state))])
""")

PARITY_SCRIPT = COMMON + textwrap.dedent("""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    out = sys.argv[1]
    results = {}

    def record(name, trained):
        parameters = trained_state(trained)
        every = comm.allgather(parameters.tobytes())
        assert all(copy == every[0] for copy in every), f"{name}: ranks differ"
        results[name] = parameters

    for dtype in ("float64", "float32"):
        X, y, weights = dataset(dtype)
        # way (a), shuffled, sample weights, validation: every rank passes everything
        trained = model(dtype, optimizer="adam")
        history = trained.fit(X, y, epochs=1, batch_size=16, sample_weight=weights, comm=comm,
                              validation_data=(X[:30], y[:30]))
        record(f"shuffled_weighted_{dtype}", trained)
        results[f"val_loss_{dtype}"] = np.array(history["val_loss"])
        # way (a), in order, SGD with momentum, a last batch of 8 rows
        trained = model(dtype, optimizer=fastmlp.optim.SGD(lr=0.05, momentum=0.9))
        trained.fit(X, y, epochs=1, batch_size=14, shuffle=False, comm=comm)
        record(f"unshuffled_{dtype}", trained)
        # class weights: the loss's normaliser is the rows' class weights summed
        trained = model(dtype, class_weights=[1.0, 3.0, 0.5], label_smoothing=0.1)
        trained.fit(X, y, epochs=1, batch_size=16, sample_weight=weights, comm=comm)
        record(f"class_weighted_{dtype}", trained)
        # weight decay off the biases: the per-layer ranges cut by the ranks' chunks; AMSGrad's state
        trained = model(dtype, optimizer=decayed_adam())
        trained.fit(X, y, epochs=2, batch_size=16, comm=comm)
        record(f"decayed_{dtype}", trained)
        # way (b): rank r passes rows [r n / P, (r + 1) n / P), in order
        shard = np.arange(rank * len(X) // size, (rank + 1) * len(X) // size)
        trained = model(dtype, optimizer="adam")
        trained.fit(X[shard], y[shard], epochs=1, batch_size=12, shuffle=False,
                    sample_weight=weights[shard], comm=comm, sharded=True)
        record(f"sharded_{dtype}", trained)

    # identical replicas under dropout, batch norm, mixup and early stopping, and the files
    X, y, weights = dataset("float32")
    trained = model("float32", dropout=0.2, batch_norm=True)
    trained.fit(X, y, epochs=3, batch_size=20, mixup=0.4, comm=comm, early_stopping=True,
                validation_data=(X[:40], y[:40]))
    record("replicas", trained)
    trained.save(f"{out}.rank{rank}.npz")
    loaded = fastmlp.load(f"{out}.rank{rank}.npz")
    every = comm.allgather(loaded.predict_proba(X).tobytes())
    assert all(copy == every[0] for copy in every)
    if rank == 0:
        np.savez(out, **results)
        with open(out + ".json", "w") as file:
            json.dump({"threads": fastmlp.get_num_threads()}, file)
""")


def run_ranks(script_path, ranks, *arguments, timeout=TIMEOUT):
    """mpiexec -n ranks python -m mpi4py script: the completed process (never hangs the suite).
    Without OMP_NUM_THREADS, so that each rank takes its share of the cores."""
    command = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", str(script_path), *map(str, arguments)]
    environment = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


def printed_by_rank_0(tmp_path, name, source, ranks=2):
    """Run `source` as a script on `ranks` ranks: the JSON its rank 0 printed last."""
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    done = run_ranks(script, ranks)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_process_fits(dtype):
    """The fits PARITY_SCRIPT runs on several ranks, in this process: {name: parameters}."""
    namespace = {}
    exec(COMMON, namespace)
    dataset, model, trained_state = namespace["dataset"], namespace["model"], namespace["trained_state"]
    decayed_adam = namespace["decayed_adam"]
    X, y, weights = dataset(dtype)
    results = {}
    trained = model(dtype, optimizer="adam")
    history = trained.fit(X, y, epochs=1, batch_size=16, sample_weight=weights,
                          validation_data=(X[:30], y[:30]))
    results[f"shuffled_weighted_{dtype}"] = trained_state(trained)
    results[f"val_loss_{dtype}"] = np.array(history["val_loss"])
    trained = model(dtype, optimizer=fastmlp.optim.SGD(lr=0.05, momentum=0.9))
    trained.fit(X, y, epochs=1, batch_size=14, shuffle=False)
    results[f"unshuffled_{dtype}"] = trained_state(trained)
    trained = model(dtype, class_weights=[1.0, 3.0, 0.5], label_smoothing=0.1)
    trained.fit(X, y, epochs=1, batch_size=16, sample_weight=weights)
    results[f"class_weighted_{dtype}"] = trained_state(trained)
    trained = model(dtype, optimizer=decayed_adam())
    trained.fit(X, y, epochs=2, batch_size=16)
    results[f"decayed_{dtype}"] = trained_state(trained)
    return results, (X, y, weights, model, trained_state)


def sharded_reference(ranks, dtype):
    """Way (b)'s global batches as one process sees them: batch k is the ranks' k-th runs of
    their shards (each shard cut into as many runs as there are global batches), in rank order."""
    _, (X, y, weights, model, trained_state) = one_process_fits(dtype)
    n, batch_size = len(X), 12
    n_batches = -(-n // batch_size)
    shards = [np.arange(rank * n // ranks, (rank + 1) * n // ranks) for rank in range(ranks)]
    cuts = [shard_bounds(shard.size, n_batches) for shard in shards]
    order = np.concatenate([shards[rank][cuts[rank][k]:cuts[rank][k + 1]]
                            for k in range(n_batches) for rank in range(ranks)])
    sizes = [sum(cuts[rank][k + 1] - cuts[rank][k] for rank in range(ranks)) for k in range(n_batches)]
    assert set(sizes) == {batch_size}  # the split this test chose makes every global batch 12 rows
    trained = model(dtype, optimizer="adam")
    trained.fit(X[order], y[order], epochs=1, batch_size=batch_size, shuffle=False,
                sample_weight=weights[order])
    return trained_state(trained)


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """{ranks: (results, info, directory)} of PARITY_SCRIPT under 1, 2 and 3 ranks."""
    if not (HAS_MPI4PY and MPIEXEC):
        pytest.skip("needs mpi4py and mpiexec (pip install 'fastmlp[mpi]')")
    directory = tmp_path_factory.mktemp("parity")
    script = directory / "parity.py"
    script.write_text(PARITY_SCRIPT)
    runs = {}
    for ranks in (1, 2, 3):
        out = directory / f"p{ranks}"
        done = run_ranks(script, ranks, out)
        assert done.returncode == 0, done.stdout + done.stderr
        with np.load(f"{out}.npz") as archive:
            results = dict(archive)
        with open(f"{out}.json") as file:
            runs[ranks] = (results, json.load(file), out)
    return runs


@needs_mpi
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_training_on_ranks_equals_one_process_on_the_same_global_batches(parity_runs, ranks, dtype, rtol):
    results, _, _ = parity_runs[ranks]
    expected, _ = one_process_fits(dtype)
    expected[f"sharded_{dtype}"] = sharded_reference(ranks, dtype)
    for name, parameters in expected.items():  # and the optimizer state after them
        scale = np.max(np.abs(parameters))
        if ranks == 1 and not name.startswith("sharded"):
            assert results[name].tobytes() == parameters.tobytes(), name  # the same bits
        np.testing.assert_allclose(results[name], parameters, rtol=0, atol=rtol * scale, err_msg=name)
        assert results[name].dtype == parameters.dtype


@needs_mpi
def test_every_rank_saves_the_same_file_and_takes_its_share_of_the_cores(parity_runs):
    for ranks, (_, info, out) in parity_runs.items():
        files = []
        for rank in range(ranks):
            with open(f"{out}.rank{rank}.npz", "rb") as file:
                files.append(file.read())
        assert all(contents == files[0] for contents in files)
        assert info["threads"] == node_thread_share(ranks)
        if ranks > 1 and (os.cpu_count() or 1) <= ranks:
            assert info["threads"] == 1  # this machine's 2 cores: never oversubscribed


ERRORS_SCRIPT = COMMON + textwrap.dedent("""
    import warnings
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    X, y, weights = dataset("float64")
    cases = {
        "nan": lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 9, np.nan, X), y),
        "width": lambda X, y: (X[:, :5], y),
        "label": lambda X, y: (X, np.where(np.arange(y.size) == 4, 7, y)),
        "empty": lambda X, y: (X[:0], y[:0]),
    }
    messages = {}
    for name, spoil in cases.items():
        X_rank, y_rank = spoil(X, y) if rank == 1 else (X, y)
        trained = model("float64")
        try:
            trained.fit(X_rank, y_rank, epochs=1, batch_size=8, comm=comm, sharded=name == "empty")
            messages[name] = "no error"
        except ValueError as error:
            messages[name] = str(error)
        assert trained._network.step == 0
    def raising(epoch, logs):
        if rank == 1 and epoch == 2:
            raise ZeroDivisionError("a callback failed")
    try:
        model("float64").fit(X, y, epochs=5, batch_size=8, comm=comm, callbacks=[raising])
        messages["callback"] = "no error"
    except RuntimeError as error:
        messages["callback"] = str(error)
    # a step that overflows on rank 1 only: its rows' weights (finite) sum to infinity
    huge = np.full(len(y), 1e308 if rank == 1 else 1.0)
    restored = model("float64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = restored.fit(X, y, epochs=1, batch_size=8, comm=comm, sharded=True, on_nan="restore",
                               sample_weight=huge)
    messages["non_finite"] = [history.stopped_on_nan, int(restored._network.step), str(caught[-1].message)]
    # an update that overflows the parameters: found at the same step on every rank
    overflowing = model("float64", optimizer=fastmlp.optim.SGD(lr=1e306))
    try:
        overflowing.fit(X * 1000.0, y, epochs=1, batch_size=8, comm=comm)
        messages["overflow"] = "no error"
    except FloatingPointError as error:
        messages["overflow"] = str(error)
    assert np.isfinite(overflowing.flat_parameters).all()
    every = comm.allgather(messages)
    if rank == 0:
        print(json.dumps(every))
""")


@needs_mpi
def test_bad_input_on_one_rank_raises_the_same_error_on_every_rank_before_the_first_step(tmp_path):
    rank0, rank1 = printed_by_rank_0(tmp_path, "errors", ERRORS_SCRIPT)
    assert rank0 == rank1
    assert rank0["nan"] == "X contains NaN or infinity (on rank 1 of 2)"
    assert rank0["width"].startswith("X must have 6 columns (the model's input width), got shape (120, 5)")
    assert rank0["label"].startswith("y holds label 7, outside [0, 3)")
    assert rank0["empty"] == "X is empty: shape (0, 6) (on rank 1 of 2)"
    assert rank0["callback"] == "a callback failed (on rank 1 of 2)"
    assert rank0["overflow"].startswith("parameters became NaN or infinite in epoch 1, by step 1 at the latest")
    stopped_on_nan, steps, warning = rank0["non_finite"]  # the same on both ranks (rank0 == rank1)
    assert stopped_on_nan and steps == 0 and "step 1 (batch 1 of 30 of the epoch)" in warning


REENTRY_SCRIPT = COMMON + textwrap.dedent("""
    import copy
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    X, y, weights = dataset("float64")
    results = {}

    class Reenter(fastmlp.Callback):
        # calls `call` on the ranks in `on` from the callback hook `when`
        def __init__(self, when, on, call):
            self.when, self.on, self.call = when, on, call
        def on_train_begin(self, model):
            if self.when == "begin" and rank in self.on:
                self.call(model)
        def on_epoch_end(self, epoch, logs, history):
            if self.when == "epoch" and rank in self.on:
                self.call(model_)

    cases = {
        "train_step_everywhere": ("epoch", (0, 1), lambda m: m.train_step(X[:8], y[:8])),
        "train_step_on_rank_1": ("epoch", (1,), lambda m: m.train_step(X[:8], y[:8])),
        "fit_on_rank_0_at_begin": ("begin", (0,), lambda m: m.fit(X, y, epochs=1, batch_size=8)),
        "fit_with_comm": ("epoch", (0, 1), lambda m: m.fit(X, y, epochs=1, batch_size=8, comm=comm)),
    }
    for name, (when, on, call) in cases.items():
        model_ = model("float64")
        try:
            model_.fit(X, y, epochs=3, batch_size=8, comm=comm, callbacks=[Reenter(when, on, call)])
            results[name] = "no error"
        except RuntimeError as error:
            results[name] = str(error)
        results[name + "_steps"] = int(model_._network.step)

    # gradients from a callback: this rank's rows, as a copy of the model outside any fit
    seen = []
    def gradients(epoch, logs):
        rows = slice(rank * 10, rank * 10 + 10)
        outside = copy.deepcopy(model_).gradients(X[rows], y[rows])
        inside = model_.gradients(X[rows], y[rows])
        seen.append(bool(outside[0] == inside[0] and np.array_equal(outside[1], inside[1])))
    model_ = model("float64")
    model_.fit(X, y, epochs=2, batch_size=8, comm=comm, callbacks=[gradients])
    reference = model("float64")  # the same fit without the callback: the same bits
    reference.fit(X, y, epochs=2, batch_size=8, comm=comm)
    results["gradients"] = seen + [bool(np.array_equal(reference.flat_parameters, model_.flat_parameters))]
    every = comm.allgather(results)
    if rank == 0:
        print(json.dumps(every))
""")


@needs_mpi
def test_fit_or_train_step_from_a_callback_of_a_data_parallel_fit_raises_on_every_rank(tmp_path):
    rank0, rank1 = printed_by_rank_0(tmp_path, "reentry", REENTRY_SCRIPT)
    assert rank0 == rank1
    refused = ("cannot be called during a data-parallel fit (comm=...) of this model, e.g. from one "
               "of its callbacks")
    for name, where in [("train_step_everywhere", 0), ("train_step_on_rank_1", 1),
                        ("fit_on_rank_0_at_begin", 0), ("fit_with_comm", 0)]:
        assert rank0[name].startswith(("train_step " if "train_step" in name else "fit ") + refused), rank0[name]
        assert rank0[name].endswith(f"(on rank {where} of 2)")
    # 120 rows in batches of 8: the epoch ran, its callback raised; none before the first epoch
    assert rank0["fit_on_rank_0_at_begin_steps"] == 0
    assert [rank0[f"{name}_steps"] for name in ("train_step_everywhere", "train_step_on_rank_1", "fit_with_comm")] \
        == [15, 15, 15]
    assert rank0["gradients"] == [True, True, True]


FAILURE_SCRIPT = COMMON + textwrap.dedent("""
    import os, signal
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    how = sys.argv[1]
    X, y, weights = dataset("float32", n=2000)

    class Fail(fastmlp.Callback):
        def on_epoch_end(self, epoch, logs, history):
            if comm.Get_rank() == 1 and epoch == 2:
                if how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise SystemExit(3)  # not an Exception: no agreement, the process just ends

    model("float32").fit(X, y, epochs=10000, batch_size=4, comm=comm, callbacks=[Fail()])
""")


@needs_mpi
@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_rank_that_exits_or_is_killed_ends_every_rank_within_30_seconds(tmp_path, how):
    script = tmp_path / "failure.py"
    script.write_text(FAILURE_SCRIPT)
    started = time.perf_counter()
    done = run_ranks(script, 2, how, timeout=60)
    assert time.perf_counter() - started < 30
    assert done.returncode != 0


CTRL_C_SCRIPT = COMMON + textwrap.dedent("""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    X, y, weights = dataset("float32", n=2000)

    def started(epoch, logs):
        if comm.Get_rank() == 0 and epoch == 1:
            print("training", flush=True)

    model("float32").fit(X, y, epochs=100000, batch_size=4, comm=comm, callbacks=[started])
""")


@needs_mpi
def test_ctrl_c_ends_every_rank_within_30_seconds(tmp_path):
    import signal
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    command = [MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", str(script)]
    launched = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert launched.stdout.readline().strip() == "training"
        interrupted = time.perf_counter()
        launched.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends mpiexec
        _, err = launched.communicate(timeout=60)
    finally:
        if launched.poll() is None:
            launched.kill()
            launched.communicate()
    assert time.perf_counter() - interrupted < 30
    assert launched.returncode != 0
    assert "interrupted: a data-parallel fit ends on every rank" in err


def test_import_fastmlp_never_imports_mpi4py():
    code = "import sys, fastmlp, fastmlp.training, fastmlp.distributed; print('mpi4py' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_comm_must_be_a_communicator():
    X, y = np.zeros((4, 2)), np.zeros(4, dtype=np.int64)
    with pytest.raises(TypeError, match="comm must be an mpi4py communicator"):
        fastmlp.MLP([2, 2]).fit(X, y, comm=object())
    with pytest.raises(TypeError, match="sharded must be True or False"):
        fastmlp.MLP([2, 2]).fit(X, y, sharded="yes")


@pytest.mark.parametrize("n, batch_size, ranks", [(120, 16, 2), (10, 4, 3), (7, 7, 3), (2, 5, 3)])
def test_the_ranks_shares_make_up_every_global_batch(n, batch_size, ranks):
    order = np.random.default_rng(0).permutation(n)
    shares = [shares_of_batches(n, batch_size, rank, ranks) for rank in range(ranks)]
    for k, start in enumerate(range(0, n, batch_size)):
        together = np.concatenate([order[positions[bounds[k]:bounds[k + 1]]] for positions, bounds in shares])
        np.testing.assert_array_equal(together, order[start:start + batch_size])
        sizes = [bounds[k + 1] - bounds[k] for _, bounds in shares]
        assert max(sizes) - min(sizes) <= 1


class _ThreadComm:
    """Enough of an mpi4py communicator for FixedOrderSum's ring, over threads and queues."""

    def __init__(self, rank, size, boxes, gathered):
        self.rank, self.size, self.boxes, self.gathered = rank, size, boxes, gathered

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Sendrecv(self, sendbuf, dest, recvbuf, source):
        self.boxes[(self.rank, dest)].put(np.array(sendbuf))
        recvbuf[...] = self.boxes[(source, self.rank)].get(timeout=10)


@pytest.mark.parametrize("ranks", [2, 3, 4, 5])
def test_the_ring_gives_each_chunk_one_fixed_order(monkeypatch, ranks):
    """The reduce-scatter over threads: chunk c summed as x_(c+1) + x_(c+2) + ... + x_c."""
    import queue
    import threading
    size = 1001
    values = [np.random.default_rng(rank).normal(size=size).astype(np.float32) * 10.0 ** rank
              for rank in range(ranks)]
    boxes = {(a, b): queue.Queue() for a in range(ranks) for b in range(ranks)}
    buffers = [value.copy() for value in values]

    def run(rank):
        summer = FixedOrderSum(_ThreadComm(rank, ranks, boxes, None), size, np.dtype(np.float32))
        summer.reduce_scatter(buffers[rank])

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(ranks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    edges = [(chunk * size) // ranks for chunk in range(ranks + 1)]
    for rank in range(ranks):
        part = slice(edges[rank], edges[rank + 1])
        expected = values[(rank + 1) % ranks][part].copy()
        for step in range(2, ranks + 1):
            expected += values[(rank + step) % ranks][part]
        assert buffers[rank][part].tobytes() == expected.tobytes()


SKLEARN_SCRIPT = textwrap.dedent("""
    import sys, warnings
    import numpy as np
    from mpi4py import MPI
    from fastmlp import MLPClassifier
    comm = MPI.COMM_WORLD
    warnings.simplefilter("ignore")  # ConvergenceWarning
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    results = {}
    for solver in ("sgd", "lbfgs"):
        fitted = MLPClassifier((8,), solver=solver, max_iter=15, random_state=None if solver == "sgd" else 1,
                               verbose=solver == "sgd", comm=comm).fit(X, y)
        every = comm.allgather(fitted.coefs_[0].tobytes())
        assert all(copy == every[0] for copy in every)
        results[solver] = fitted.coefs_[0]
    if comm.Get_rank() == 0:
        np.savez(sys.argv[1], **results)
""")


@needs_mpi
def test_scikit_learn_estimators_take_comm(tmp_path):
    pytest.importorskip("sklearn")
    script = tmp_path / "estimators.py"
    script.write_text(SKLEARN_SCRIPT)
    done = run_ranks(script, 2, tmp_path / "estimators.npz")
    assert done.returncode == 0, done.stdout + done.stderr
    # verbose prints on rank 0 only: one line per epoch, not one per rank
    assert [line.split(",")[0] for line in done.stdout.splitlines() if line.startswith("Iteration")] == \
        [f"Iteration {epoch}" for epoch in range(1, 16)], done.stdout
    from fastmlp import MLPClassifier
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    with np.load(tmp_path / "estimators.npz") as results:
        # lbfgs: the same objective summed over two halves of the rows
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: 15 iterations, as on the ranks
            expected = MLPClassifier((8,), solver="lbfgs", max_iter=15, random_state=1).fit(X, y).coefs_[0]
        np.testing.assert_allclose(results["lbfgs"], expected, rtol=0, atol=1e-9 * np.abs(expected).max())
        assert np.all(np.isfinite(results["sgd"]))  # random_state=None: rank 0's draw, on both ranks


@needs_mpi
def test_the_data_parallel_example_prints_one_table_and_ends_with_one_model(tmp_path):
    from fastmlp import datasets
    if datasets.find_mnist_files(datasets.FASHION_MNIST_DIR) is None:
        pytest.skip("needs the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)")
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "data_parallel.py")
    done = run_ranks(example, 2, "--quick", "--cache", tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.split()[:1] == ["epoch"] for line in lines) == 1  # the table's header, once
    assert "every rank holds the same parameters: True" in done.stdout
    accuracy = float(done.stdout.split("test accuracy ")[1].split(";")[0])
    assert accuracy > 0.6  # 4000 images, 2 epochs


VALIDATION_SCRIPT = COMMON + textwrap.dedent("""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y, weights = dataset("float64")
    shared = model("float64").fit(X, y, epochs=2, batch_size=16, comm=comm,
                                  validation_data=(X[:50], y[:50], weights[:50]))
    part = np.arange(rank * 50 // size, (rank + 1) * 50 // size)
    parts = model("float64").fit(X, y, epochs=2, batch_size=16, comm=comm,
                                 validation_data=(X[part], y[part], weights[part]))
    if rank == 0:
        print(json.dumps({"shared": shared["val_loss"], "parts": parts["val_loss"],
                          "accuracy": parts["val_accuracy"]}))
""")


@needs_mpi
def test_validation_data_may_be_the_same_on_every_rank_or_each_ranks_part(tmp_path):
    figures = printed_by_rank_0(tmp_path, "validation", VALIDATION_SCRIPT)
    _, (X, y, weights, model, _) = one_process_fits("float64")
    expected = model("float64").fit(X, y, epochs=2, batch_size=16, validation_data=(X[:50], y[:50], weights[:50]))
    np.testing.assert_allclose(figures["shared"], expected["val_loss"], rtol=1e-12)
    np.testing.assert_allclose(figures["parts"], expected["val_loss"], rtol=1e-12)
    np.testing.assert_allclose(figures["accuracy"], expected["val_accuracy"], rtol=1e-12)


# scikit-learn's estimators with comm=: each case spoils one rank's arguments (`on`); the
# keyword arguments of the estimator, then of the call (fit or partial_fit).
ESTIMATOR_CASES = textwrap.dedent("""
    import numpy as np
    from fastmlp import MLPClassifier, MLPRegressor

    def data():
        rng = np.random.default_rng(0)
        X = rng.normal(size=(60, 4))
        return X, (X[:, 0] + X[:, 1] > 0).astype(int)

    def spoiled(name, X, y):
        # (estimator, method, X, y, call's keywords) with case `name`'s bad argument
        weights = np.ones(len(y))
        nan_X = X.copy()
        nan_X[3, 2] = np.nan
        negative = weights.copy()
        negative[45] = -1.0  # in rank 1's half of lbfgs's rows
        return {
            "nan_X": (MLPClassifier((5,), max_iter=3), "fit", nan_X, y, {}),
            "continuous_labels": (MLPClassifier((5,), max_iter=3), "fit", X, X[:, 0], {}),
            "short_sample_weight": (MLPClassifier((5,), max_iter=3), "fit", X, y, {"sample_weight": weights[:-1]}),
            "no_classes": (MLPClassifier((5,)), "partial_fit", X, y, {}),
            "poisson_negative_y": (MLPRegressor((5,), loss="poisson", max_iter=3), "fit", X, -np.abs(X[:, 0]), {}),
            "lbfgs_nan_X": (MLPClassifier((5,), solver="lbfgs", max_iter=3), "fit", nan_X, y, {}),
            "lbfgs_negative_weight": (MLPClassifier((5,), solver="lbfgs", max_iter=3), "fit", X, y,
                                      {"sample_weight": negative}),
            "early_stopping_split": (MLPClassifier((5,), early_stopping=True, validation_fraction=0.01,
                                                   max_iter=3), "fit", X, y, {}),
            "bad_parameter": (MLPClassifier((5,), alpha=-1.0), "fit", X, y, {}),
        }[name]

    def good(X, y):
        return (MLPClassifier((5,), max_iter=3, random_state=0), "fit", X, y, {})

    # which rank gets the spoiled arguments (the other the good ones); None: every rank
    ON = {"nan_X": 1, "continuous_labels": 0, "short_sample_weight": 1, "no_classes": 1,
          "poisson_negative_y": 0, "lbfgs_nan_X": 1, "lbfgs_negative_weight": None,
          "early_stopping_split": None, "bad_parameter": 0}

    def attempt(estimator, method, X, y, keywords):
        try:
            getattr(estimator, method)(X, y, **keywords)
            return ["no error", ""]
        except Exception as error:
            return [type(error).__name__, str(error)]
""")

ESTIMATOR_ERRORS_SCRIPT = COMMON + ESTIMATOR_CASES + textwrap.dedent("""
    import warnings
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    warnings.simplefilter("ignore")  # ConvergenceWarning
    X, y = data()
    outcome = {}
    for name, on in ON.items():
        estimator, method, X_rank, y_rank, keywords = spoiled(name, X, y) if on in (None, rank) else good(X, y)
        estimator.set_params(comm=comm)
        outcome[name] = attempt(estimator, method, X_rank, y_rank, keywords)
    # the ranks disagree on the data, or on an option that sets the number of epochs
    width = X[:, :3] if rank == 1 else X
    outcome["width"] = attempt(MLPClassifier((5,), max_iter=3, comm=comm), "fit", width, y, {})
    outcome["max_iter"] = attempt(MLPClassifier((5,), max_iter=3 + rank, comm=comm), "fit", X, y, {})
    # and after all that the ranks are in step: a good fit, the same bits on both
    fitted = MLPClassifier((5,), max_iter=3, random_state=0, comm=comm).fit(X, y)
    outcome["in_step"] = same_on_every_rank(comm, fitted.coefs_[0])
    every = comm.allgather(outcome)
    if rank == 0:
        print(json.dumps(every))
""")


@needs_mpi
def test_scikit_learn_input_that_fails_on_one_rank_raises_the_same_error_on_every_rank(tmp_path):
    pytest.importorskip("sklearn")
    rank0, rank1 = printed_by_rank_0(tmp_path, "estimator_errors", ESTIMATOR_ERRORS_SCRIPT)
    assert rank0 == rank1
    namespace = {}
    exec(ESTIMATOR_CASES, namespace)
    X, y = namespace["data"]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, on in namespace["ON"].items():
            if name == "lbfgs_negative_weight":
                continue  # its rows are cut between the ranks: below
            # the one-process error, then the rank that raised it (the same on every rank
            # when every rank had the bad argument: raised after the ranks agreed)
            kind, message = namespace["attempt"](*namespace["spoiled"](name, X, y))
            assert kind == "ValueError", (name, kind, message)
            assert rank0[name] == [kind, message + ("" if on is None else f" (on rank {on} of 2)")], name
    assert rank0["lbfgs_negative_weight"] == [
        "ValueError", "sample_weight[15] = -1.0 is negative; weights must be >= 0 (on rank 1 of 2)"]
    kind, message = rank0["width"]
    assert kind == "ValueError" and message.startswith("the ranks disagree on the training data")
    assert "rank 0 has ((60, 4)," in message and "rank 1 has ((60, 3)," in message
    kind, message = rank0["max_iter"]
    assert kind == "ValueError" and message.startswith("the ranks disagree on fit's options (epochs, batch_size")
    assert "rank 0 has (3, " in message and "rank 1 has (4, " in message
    assert rank0["in_step"] is True


FORK_SCRIPT = COMMON + textwrap.dedent("""
    import copy, os, select, signal, threading
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    X, y, weights = dataset("float32", n=2000)
    trained = model("float32", dropout=0.1)
    first_epoch = threading.Event()
    fit = threading.Thread(target=lambda: trained.fit(X, y, epochs=4, batch_size=4, comm=comm,
                                                     callbacks=[lambda epoch, logs: first_epoch.set()]))
    fit.start()
    first_epoch.wait(timeout=60)
    report = {"parent_reduces": trained._network.reduces_gradient}
    reader, writer = os.pipe()
    child = os.fork()  # while the other thread trains: in epoch 2 of 4
    if child == 0:
        try:
            local = copy.deepcopy(trained)  # a plain model with the same state
            found = {"reduces": trained._network.reduces_gradient, "stream": int(trained._network.dropout_stream)}
            found["loss"] = float(trained.train_step(X[:8], y[:8]))
            local.train_step(X[:8], y[:8])
            found["same_step"] = trained.flat_parameters.tobytes() == local.flat_parameters.tobytes()
            found["fit_loss"] = trained.fit(X[:200], y[:200], epochs=1, batch_size=20)["loss"][0]
            found["predicted"] = trained.predict(X[:5]).tolist()
        except BaseException as error:
            found = {"error": repr(error)}
        os.write(writer, json.dumps(found).encode())
        os._exit(0)
    os.close(writer)
    if select.select([reader], [], [], 30)[0]:
        report["child"] = json.loads(os.read(reader, 65536).decode())
    else:
        report["child"] = {"error": "no answer from the child within 30 s"}
        os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    fit.join(timeout=120)
    report["fit_done"] = not fit.is_alive() and int(trained._network.step)
    report["replicas_same"] = same_on_every_rank(comm, trained.flat_parameters)
    every = comm.allgather(report)
    if rank == 0:
        print(json.dumps(every))
""")


@needs_mpi
def test_a_process_forked_during_a_data_parallel_fit_holds_a_plain_local_model(tmp_path):
    for report in printed_by_rank_0(tmp_path, "fork", FORK_SCRIPT):
        assert report["parent_reduces"] is True  # forked while the fit was summing steps
        child = report["child"]
        assert "error" not in child, child
        assert child["reduces"] is False and child["stream"] == 0
        assert child["same_step"] is True  # its step is a one-process step, not summed
        assert np.isfinite(child["loss"]) and np.isfinite(child["fit_loss"])
        assert len(child["predicted"]) == 5
        assert report["fit_done"] == 4 * 500  # the parents' fit went on: 4 epochs of 500 steps
        assert report["replicas_same"] is True


BY_ROWS_SCRIPT = COMMON + textwrap.dedent("""
    from mpi4py import MPI
    from fastmlp.distributed import Ranks
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    report = {}

    def fit_watched(name, trained, X, y, **options):
        seen = []
        def watch(epoch, logs):
            seen.append([bool(trained._network.steps_by_rows), bool(trained._network.params_shared)])
        trained.fit(X, y, callbacks=[watch], comm=comm, **options)
        report[name] = {"during": seen, "shared_after": bool(trained._network.params_shared),
                        "parameters": trained_state(trained).tolist(),
                        "same_on_every_rank": same_on_every_rank(comm, trained_state(trained))}

    for dtype in ("float64", "float32"):
        X, y, weights = dataset(dtype, n=128)
        for shared in (True, False):  # on this node: one shared copy of the parameters, or MPI copies
            Ranks.node_shared_memory = shared
            fit_watched(f"{dtype}_shared_{shared}", model(dtype), X, y, epochs=2, batch_size=32, shuffle=False)
            fit_watched(f"{dtype}_weighted_shared_{shared}", model(dtype), X, y, epochs=2, batch_size=32,
                        sample_weight=weights)
        Ranks.node_shared_memory = True
        fit_watched(f"{dtype}_batch_norm", model(dtype, batch_norm=True), X, y, epochs=2, batch_size=32)

    # /dev/shm with room for neither window, or for the parameters' only: copies through MPI instead
    import fastmlp.distributed
    real_statvfs = fastmlp.distributed.os.statvfs
    X, y, _ = dataset("float64", n=128)
    for name, room in (("no_room", 100), ("no_room_for_rows", 2000)):  # bytes; parameters: 664
        class Room:
            f_bavail, f_frsize = room, 1
        fastmlp.distributed.os.statvfs = lambda path: Room()
        fit_watched(name, model("float64"), X, y, epochs=2, batch_size=32, shuffle=False)
    fastmlp.distributed.os.statvfs = real_statvfs

    # a fit that every rank leaves by an exception: each rank's parameters its own again
    failing = model("float64")
    def fail(epoch, logs):
        raise ValueError("stop here")
    try:
        failing.fit(X, y, epochs=3, batch_size=32, comm=comm, callbacks=[fail])
    except ValueError as error:
        report["failed"] = str(error)
    report["failed_shared_after"] = bool(failing._network.params_shared)
    report["failed_same"] = same_on_every_rank(comm, failing.flat_parameters)
    failing.fit(X, y, epochs=1, batch_size=32, comm=comm)  # and the model trains on
    report["after_failure_same"] = same_on_every_rank(comm, failing.flat_parameters)
    if rank == 0:
        print(json.dumps(report))
""")


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_networks_without_batch_norm_step_by_rows_in_one_shared_copy_of_the_parameters(tmp_path, ranks):
    report = printed_by_rank_0(tmp_path, "by_rows", BY_ROWS_SCRIPT, ranks=ranks)
    namespace = {}
    exec(COMMON, namespace)
    for dtype in ("float64", "float32"):
        X, y, weights = namespace["dataset"](dtype, n=128)
        for weighted in (False, True):
            kind = "_weighted" if weighted else ""
            shared, copied = report[f"{dtype}{kind}_shared_True"], report[f"{dtype}{kind}_shared_False"]
            assert shared["during"] == [[True, True]] * 2  # steps by rows, in the window
            assert copied["during"] == [[True, False]] * 2  # steps by rows, parameters copied by MPI
            assert not shared["shared_after"] and shared["same_on_every_rank"] and copied["same_on_every_rank"]
            # the two exchanges move the same bits
            assert shared["parameters"] == copied["parameters"]
            alone = namespace["model"](dtype)
            options = {"sample_weight": weights} if weighted else {"shuffle": False}
            alone.fit(X, y, epochs=2, batch_size=32, **options)
            expected = namespace["trained_state"](alone)
            if ranks == 2 and not weighted:
                # Equal shares of 16 rows: each rank's loss gradient is its mean's times 16/32, exact,
                # and every rank's rows meet in the weight-gradient GEMMs in one process's order.
                np.testing.assert_array_equal(shared["parameters"], expected)
            rtol = 1e-12 if dtype == "float64" else 1e-5
            np.testing.assert_allclose(shared["parameters"], expected, rtol=0, atol=rtol * np.abs(expected).max())
        batch_norm = report[f"{dtype}_batch_norm"]
        assert batch_norm["during"] == [[False, True]] * 2  # the ranks sum gradients, in the window
        assert batch_norm["same_on_every_rank"]
    assert report["no_room"]["during"] == [[True, False]] * 2
    assert report["no_room_for_rows"]["during"] == [[True, True]] * 2
    for name in ("no_room", "no_room_for_rows"):
        assert report[name]["parameters"] == report["float64_shared_True"]["parameters"]
    assert report["failed"].startswith("stop here")
    assert report["failed_shared_after"] is False and report["failed_same"] and report["after_failure_same"]


SPLIT_SCRIPT = COMMON + textwrap.dedent("""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    X, y, weights = dataset("float64")
    # seeds of their own on each rank (as seed=None draws): rank 0's picks the held-out rows
    trained = fastmlp.MLP([6, 8, 3], seed=100 + rank, dtype="float64")
    history = trained.fit(X, y, epochs=2, batch_size=16, validation_split=0.25, comm=comm)
    if rank == 0:
        print(json.dumps({"parameters": trained.flat_parameters.tolist(), "val_loss": history["val_loss"]}))
""")


@needs_mpi
def test_validation_split_holds_out_rank_0s_rows_on_every_rank(tmp_path):
    figures = printed_by_rank_0(tmp_path, "split", SPLIT_SCRIPT)
    _, (X, y, _, _, _) = one_process_fits("float64")
    alone = fastmlp.MLP([6, 8, 3], seed=100, dtype="float64")
    history = alone.fit(X, y, epochs=2, batch_size=16, validation_split=0.25)
    expected = alone.flat_parameters
    np.testing.assert_allclose(figures["parameters"], expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(figures["val_loss"], history["val_loss"], rtol=1e-12)
