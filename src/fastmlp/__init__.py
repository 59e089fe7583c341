"""fastmlp: multi-layer perceptrons with a C++17/OpenMP core verified against a NumPy reference.

    model = fastmlp.MLP([784, 256, 10], activation="relu", loss="cross_entropy",
                        optimizer=fastmlp.optim.Adam(lr=1e-3), seed=0)
    history = model.fit(X, y, epochs=10, batch_size=128, validation_data=(Xv, yv))
"""
from importlib.metadata import version as _installed_version
from typing import Any, Dict, Optional

from ._openmp_env import short_spin_waits

with short_spin_waits():  # the first import of the extension loads libgomp
    from . import _core
from . import optim, schedules
from ._threads import limit_threads_in_worker_processes
from .ensemble import Ensemble
from .feedback import Callback
from .mlp import MLP, History, NotFittedError, load
from .model_selection import cross_validate

# One place for the version: pyproject.toml, read back from the installed package's metadata
# (build_info()["version"] is the same string, compiled in from it).
__version__ = _installed_version("fastmlp")
__all__ = ["MLP", "History", "Callback", "NotFittedError", "load", "optim", "schedules", "Ensemble",
           "cross_validate", "set_num_threads", "get_num_threads", "build_info", "__version__",
           "MLPClassifier", "MLPRegressor"]

# The scikit-learn estimators import scikit-learn, which fastmlp itself never needs: they are
# loaded on first access to fastmlp.MLPClassifier / fastmlp.MLPRegressor.
_SKLEARN_ESTIMATORS = ("MLPClassifier", "MLPRegressor")


def __getattr__(name: str) -> Any:
    """fastmlp.MLPClassifier and fastmlp.MLPRegressor, imported from fastmlp.sklearn on first use."""
    if name in _SKLEARN_ESTIMATORS:
        from . import sklearn as estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")


def set_num_threads(n: Optional[int]) -> None:
    """Set the number of OpenMP threads fastmlp's kernels use, process-wide.

    Parameters
    ----------
    n : int or None
        Threads, 1 to 4096 (more would fail to start). None (the default state) follows OpenMP again: OMP_NUM_THREADS, else
        the number of cores, and threadpoolctl's threadpool_limits; one thread in
        multiprocessing workers unless OMP_NUM_THREADS is set. A model's own ``n_threads``
        overrides this for that model's calls.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096):
        raise ValueError(f"n must be an integer in [1, 4096] or None, got {n!r}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of OpenMP threads fastmlp's kernels use.

    Returns
    -------
    int
    """
    return int(_core.get_num_threads())


def build_info() -> Dict[str, Any]:
    """How this copy of fastmlp was built.

    Returns
    -------
    dict
        version, compiler, openmp and openmp_version, simd_compiled, cpu_avx2_fma,
        gemm_kernel (the GEMM path in use) and num_threads.
    """
    return dict(_core.build_info())


limit_threads_in_worker_processes()
