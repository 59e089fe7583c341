"""Searches across processes, as docs/guide/search.md gives them: scikit-learn's searches over
fastmlp.MLPClassifier on a Dask cluster give the sequential search's results bit for bit, with
one fastmlp thread per single-threaded worker; and examples/hyperparameter_search.py's optuna
study run by two processes at once through one journal file holds both processes' trials."""
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV  # noqa: E402

import fastmlp  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hyperparameter_search.py"


@pytest.fixture(scope="module")
def dask_client():
    """Two worker processes of one thread each (the cluster takes 5-10 s to start)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def search_results(search, X, y, backend=None):
    """The search's cv_results_ without its timings (which differ from run to run)."""
    import joblib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=15, on purpose
        if backend is None:
            search.fit(X, y)
        else:
            with joblib.parallel_backend(backend):
                search.fit(X, y)
    return {key: value for key, value in search.cv_results_.items() if not key.endswith("_time")}


def assert_same_results(sequential, on_dask):
    assert sequential.keys() == on_dask.keys()
    for key, expected in sequential.items():
        if key.startswith("param"):
            assert list(on_dask[key]) == list(expected), key
        else:
            np.testing.assert_array_equal(on_dask[key], expected, err_msg=key)


def make_grid_search():
    grid = {"hidden_layer_sizes": [(16,), (32,)], "learning_rate_init": [1e-3, 1e-2]}
    return GridSearchCV(fastmlp.MLPClassifier(max_iter=15, random_state=0), grid, cv=3)


def make_randomized_search():
    distributions = {"hidden_layer_sizes": [(8,), (16,), (32,)], "alpha": [1e-5, 1e-4, 1e-3],
                     "dropout": [0.0, 0.1, 0.2]}
    return RandomizedSearchCV(fastmlp.MLPClassifier(max_iter=15, random_state=0), distributions,
                              n_iter=4, cv=3, random_state=1)


@pytest.mark.parametrize("make_search", [make_grid_search, make_randomized_search])
def test_search_on_dask_gives_the_sequential_results(dask_client, digits, make_search):
    sequential, on_dask = make_search(), make_search()
    from distributed import get_task_stream

    expected = search_results(sequential, *digits)
    with get_task_stream(dask_client) as task_stream:
        assert_same_results(expected, search_results(on_dask, *digits, backend="dask"))
    # The fits ran on the cluster, on both workers.
    assert len({task["worker"] for task in task_stream.data}) == 2
    assert on_dask.best_params_ == sequential.best_params_
    assert on_dask.best_score_ == sequential.best_score_
    assert expected["mean_test_score"].max() > 0.7  # it learned digits (chance 0.1)


def test_a_single_threaded_dask_worker_runs_fastmlp_on_one_thread(dask_client):
    """Dask starts its worker processes with OMP_NUM_THREADS=1; fastmlp follows it (and would
    default to one thread in a worker process anyway). set_num_threads gives a worker more."""
    def threads():
        import os

        import fastmlp
        return fastmlp.get_num_threads(), os.environ.get("OMP_NUM_THREADS")

    assert set(dask_client.run(threads).values()) == {(1, "1")}
    try:
        dask_client.run(fastmlp.set_num_threads, 2)
        assert {count for count, _ in dask_client.run(threads).values()} == {2}
    finally:
        dask_client.run(fastmlp.set_num_threads, None)
    assert {count for count, _ in dask_client.run(threads).values()} == {1}


def test_optuna_study_shared_by_two_processes(tmp_path):
    optuna = pytest.importorskip("optuna")
    journal = tmp_path / "search.log"
    command = [sys.executable, str(EXAMPLE), "--quick", "--trials", "2", "--data", str(tmp_path),
               "--storage", str(journal), "--study-name", "shared"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
        assert "best: hidden=" in output
    storage = optuna.storages.JournalStorage(shared_journal(optuna, journal))
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) == 4
    assert sorted(trial.number for trial in trials) == [0, 1, 2, 3]
    by_process = {}
    for trial in trials:
        by_process.setdefault(trial.user_attrs["process"], []).append(trial)
    assert sorted(by_process) == sorted(process.pid for process in processes)
    assert all(len(own) == 2 for own in by_process.values())
    finished = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    # Learned: chance is 0.1. The shared study's sampler is not seeded; only a learning rate
    # near the range's floor (1e-4) stays below 0.2 after 3 epochs, and not all four trials draw one.
    assert max(trial.value for trial in finished) > 0.2


def shared_journal(optuna, path):
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna 3.x
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return JournalFileBackend(str(path))
