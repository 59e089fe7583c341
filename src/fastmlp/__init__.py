"""fastmlp: multi-layer perceptrons with a C++17/OpenMP core verified against a NumPy reference.

    model = fastmlp.MLP([784, 256, 10], activation="relu", loss="cross_entropy",
                        optimizer=fastmlp.optim.Adam(lr=1e-3), seed=0)
    history = model.fit(X, y, epochs=10, batch_size=128, validation_data=(Xv, yv))
"""
from typing import Any, Dict

from . import _core, optim, schedules
from .ensemble import Ensemble
from .feedback import Callback
from .mlp import MLP, History, NotFittedError, load
from .model_selection import cross_validate

__version__ = "0.1.0"
__all__ = ["MLP", "History", "Callback", "NotFittedError", "load", "optim", "schedules", "Ensemble",
           "cross_validate", "set_num_threads",
           "get_num_threads", "build_info", "__version__"]


def set_num_threads(n: int) -> None:
    """Set the number of OpenMP threads fastmlp's kernels use.

    Parameters
    ----------
    n : int
        Threads, >= 1. The default is OMP_NUM_THREADS, else the number of cores.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
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
