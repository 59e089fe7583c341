"""fastmlp: multi-layer perceptrons with a C++17/OpenMP core verified against NumPy."""
from . import _core

__version__ = "0.1.0"
