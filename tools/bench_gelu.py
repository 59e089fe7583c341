"""Times gelu on a 128x256 batch at 1 thread: the activation kernel forward and backward,
and the GEMM epilogue (dense_forward 128x256x256 with gelu vs identity), best of 7 runs.
Run: python tools/bench_gelu.py [float32|float64]  (PYTHONPATH selects the build to time)."""
import sys
import timeit

import numpy as np

from fastmlp import _core

K = _core.kernels


def best_microseconds(f, number=200):
    return min(timeit.repeat(f, number=number, repeat=7)) / number * 1e6


def main(dtype):
    _core.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 256)).astype(dtype) * 2
    dy = rng.standard_normal((128, 256)).astype(dtype)
    w = rng.standard_normal((256, 256)).astype(dtype) / 16
    b = rng.standard_normal(256).astype(dtype)
    y = K.activation_forward(x, "gelu")
    print(f"isa {_core.build_info().get('isa', '?')}, {np.dtype(dtype).name}, 128x256, 1 thread")
    print(f"gelu forward  {best_microseconds(lambda: K.activation_forward(x, 'gelu')):8.1f} us")
    print(f"gelu backward {best_microseconds(lambda: K.activation_backward(dy, x, y, 'gelu')):8.1f} us")
    print(f"tanh forward  {best_microseconds(lambda: K.activation_forward(x, 'tanh')):8.1f} us (for scale)")
    gelu = best_microseconds(lambda: K.dense_forward(x, w, b, "gelu"), 50)
    identity = best_microseconds(lambda: K.dense_forward(x, w, b, "identity"), 50)
    print(f"dense_forward 128x256x256: gelu {gelu:.1f} us, identity {identity:.1f} us")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "float32")
