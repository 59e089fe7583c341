"""Thread defaults for worker processes: a pool of fastmlp workers must not start as many
OpenMP threads per worker as the machine has cores."""
import os
import sys

from . import _core


def in_worker_process() -> bool:
    """True in a process started by multiprocessing (any start method, pools included)."""
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:  # a multiprocessing child always has it imported already
        return False
    # parent_process() is still None while a spawned child re-imports the main module (and
    # with it fastmlp); the child's process name is already set by then.
    return (multiprocessing.parent_process() is not None
            or multiprocessing.current_process().name != "MainProcess")


def limit_threads_in_worker_processes() -> None:
    """Default to one thread in a multiprocessing child unless OMP_NUM_THREADS says otherwise.

    A child forked after fastmlp was imported gets the same default from the core's
    pthread_atfork handler; this covers spawn and forkserver children and forked children
    that import fastmlp only after the fork. An explicit set_num_threads(n) or a model's
    n_threads still wins.
    """
    if in_worker_process() and not os.environ.get("OMP_NUM_THREADS"):
        _core.set_default_thread_cap(1)
