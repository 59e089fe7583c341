"""fastmlp: multi-layer perceptrons with a C++17/OpenMP core verified against a NumPy reference.

    model = fastmlp.MLP([784, 256, 10], activation="relu", loss="cross_entropy",
                        optimizer=fastmlp.optim.Adam(lr=1e-3), seed=0)
    history = model.fit(X, y, epochs=10, batch_size=128, validation_data=(Xv, yv))
"""
from typing import Any, Dict, Optional

from . import _core, optim, schedules
from ._threads import limit_threads_in_worker_processes
from .ensemble import Ensemble
from .mlp import MLP, History, NotFittedError, load
from .model_selection import cross_validate

__version__ = "0.1.0"
__all__ = ["MLP", "History", "NotFittedError", "load", "optim", "schedules", "Ensemble",
           "cross_validate", "set_num_threads", "get_num_threads", "build_info", "__version__",
           "MLPClassifier", "MLPRegressor"]

# The scikit-learn estimators import scikit-learn, which fastmlp itself never needs: they are
# loaded on first access to fastmlp.MLPClassifier / fastmlp.MLPRegressor.
_SKLEARN_ESTIMATORS = ("MLPClassifier", "MLPRegressor")


def __getattr__(name: str) -> Any:
    if name in _SKLEARN_ESTIMATORS:
        from . import sklearn as estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")


def set_num_threads(n: Optional[int]) -> None:
    """Set the number of OpenMP threads fastmlp's kernels use, process-wide.

    By default (and again after ``set_num_threads(None)``) fastmlp follows OpenMP: the
    ``OMP_NUM_THREADS`` variable or the number of cores, and ``threadpoolctl``'s
    ``threadpool_limits``; one thread in multiprocessing workers unless ``OMP_NUM_THREADS``
    is set. A model's own ``n_threads`` overrides this for that model's calls.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be an integer >= 1 or None, got {n!r}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of OpenMP threads fastmlp's kernels use."""
    return int(_core.get_num_threads())


def build_info() -> Dict[str, Any]:
    """Compiler, OpenMP on/off and version, SIMD paths compiled and selected, threads."""
    return dict(_core.build_info())


limit_threads_in_worker_processes()
