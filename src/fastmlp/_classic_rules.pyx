# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled per-sample loops of fastmlp.classic: one epoch of each learning rule, in place.

fastmlp.classic validates every argument and draws the sample order (so the random stream
is the NumPy reference's); these loops trust their arguments, allocate nothing and hold no
Python object. Each has a NumPy mirror of the same name and argument order in
fastmlp.reference, which returns the new weights instead of updating them.
"""
from cython cimport floating
from libc.stdint cimport int64_t


cdef inline floating _dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    # Eight independent partial sums: the additions pipeline (and pair up in SIMD registers)
    # instead of each waiting for the last, the one thing that makes a long dot fast without
    # -ffast-math. The order is fixed, so a run is reproducible.
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t k = 0
    while k + 8 <= n:
        s0 += a[k] * b[k]
        s1 += a[k + 1] * b[k + 1]
        s2 += a[k + 2] * b[k + 2]
        s3 += a[k + 3] * b[k + 3]
        s4 += a[k + 4] * b[k + 4]
        s5 += a[k + 5] * b[k + 5]
        s6 += a[k + 6] * b[k + 6]
        s7 += a[k + 7] * b[k + 7]
        k += 8
    while k < n:
        s0 += a[k] * b[k]
        k += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef inline void _axpy(floating alpha, const floating* x, floating* y,
                       Py_ssize_t n) noexcept nogil:
    # y += alpha * x, element by element: each element rounds as NumPy's `y += alpha * x`.
    cdef Py_ssize_t k
    for k in range(n):
        y[k] += alpha * x[k]


cdef inline void _outputs(const floating* x, const floating* weights, floating* out,
                          Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    # out = x @ weights, row by row of weights: the inner loop runs along contiguous memory
    # with one independent sum per output, so it vectorises as it is.
    cdef Py_ssize_t i, j
    for j in range(n_out):
        out[j] = 0
    for i in range(n_in):
        for j in range(n_out):
            out[j] += x[i] * weights[i * n_out + j]


def perceptron_epoch(const floating[:, ::1] X, const int64_t[::1] y, const int64_t[::1] order,
                     floating[::1] weights, double lr):
    """One epoch of the perceptron rule over the rows ``X[order]``, ``weights = [w0, w]``
    updated in place; returns the number of mistakes (updates made)."""
    cdef Py_ssize_t n_features = X.shape[1], k, i
    cdef int64_t error, mistakes = 0
    cdef floating net, step
    with nogil:
        for k in range(order.shape[0]):
            i = order[k]
            net = weights[0] + _dot(&X[i, 0], &weights[1], n_features)
            error = y[i] - (1 if net >= 0 else 0)
            # A correct prediction changes nothing: most samples cost one dot product.
            if error != 0:
                step = <floating>(lr * error)
                weights[0] += step
                _axpy(step, &X[i, 0], &weights[1], n_features)
                mistakes += 1
    return mistakes


def adaline_online_epoch(const floating[:, ::1] X, const floating[::1] targets,
                         const int64_t[::1] order, floating[::1] weights, double lr):
    """One epoch of the LMS (delta) rule ``w += 2 lr (t_i - z_i) [1, x_i]`` over the rows
    ``X[order]``, ``weights = [w0, w]`` updated in place."""
    cdef Py_ssize_t n_features = X.shape[1], k, i
    cdef floating error, step
    with nogil:
        for k in range(order.shape[0]):
            i = order[k]
            error = targets[i] - (weights[0] + _dot(&X[i, 0], &weights[1], n_features))
            step = <floating>(lr * 2.0) * error
            weights[0] += step
            _axpy(step, &X[i, 0], &weights[1], n_features)


def hebb_epoch(const floating[:, ::1] X, const int64_t[::1] order, floating[:, ::1] weights,
               double lr, floating[::1] outputs):
    """One epoch of plain Hebb ``W += lr * outer(x, x @ W)`` over the rows ``X[order]``;
    `outputs` (n_outputs,) is scratch space."""
    cdef Py_ssize_t n_in = weights.shape[0], n_out = weights.shape[1], k, i, r, j
    cdef floating rate = <floating>lr
    with nogil:
        for k in range(order.shape[0]):
            i = order[k]
            _outputs(&X[i, 0], &weights[0, 0], &outputs[0], n_in, n_out)
            for r in range(n_in):
                for j in range(n_out):
                    weights[r, j] += rate * (X[i, r] * outputs[j])


def oja_epoch(const floating[:, ::1] X, const int64_t[::1] order, floating[:, ::1] weights,
              double lr, floating[::1] outputs):
    """One epoch of Oja's subspace rule ``W += lr * outer(x - W @ y, y)``, ``y = x @ W``,
    over the rows ``X[order]``; `outputs` (n_outputs,) is scratch space."""
    cdef Py_ssize_t n_in = weights.shape[0], n_out = weights.shape[1], k, i, r, j
    cdef floating rate = <floating>lr, residual
    with nogil:
        for k in range(order.shape[0]):
            i = order[k]
            _outputs(&X[i, 0], &weights[0, 0], &outputs[0], n_in, n_out)
            for r in range(n_in):
                # Row r of W @ y needs only row r of W, read before row r is updated.
                residual = X[i, r] - _dot(&weights[r, 0], &outputs[0], n_out)
                for j in range(n_out):
                    weights[r, j] += rate * (residual * outputs[j])


def sanger_epoch(const floating[:, ::1] X, const int64_t[::1] order, floating[:, ::1] weights,
                 double lr, floating[::1] outputs):
    """One epoch of Sanger's rule ``W[r, j] += lr * (x_r - sum_{k<=j} W[r, k] y_k) * y_j``,
    ``y = x @ W``, over the rows ``X[order]``; `outputs` (n_outputs,) is scratch space."""
    cdef Py_ssize_t n_in = weights.shape[0], n_out = weights.shape[1], k, i, r, j
    cdef floating rate = <floating>lr, reconstruction
    with nogil:
        for k in range(order.shape[0]):
            i = order[k]
            _outputs(&X[i, 0], &weights[0, 0], &outputs[0], n_in, n_out)
            for r in range(n_in):
                # The running sum takes W[r, j] before it is updated, so each unit sees the
                # reconstruction by units 0..j at the weights of the start of this sample.
                reconstruction = 0
                for j in range(n_out):
                    reconstruction += weights[r, j] * outputs[j]
                    weights[r, j] += (rate * (X[i, r] - reconstruction)) * outputs[j]


def linear_regression_online_epoch(const floating[::1] x, const floating[::1] y,
                                   const int64_t[::1] order, floating[::1] line, double lr):
    """One epoch of per-sample gradient descent on ``(y_i - w x_i - b)^2`` over the points
    in `order`, ``line = [w, b]`` updated in place."""
    cdef Py_ssize_t k, i
    cdef floating residual, rate = <floating>lr
    with nogil:
        for k in range(order.shape[0]):
            i = order[k]
            residual = y[i] - line[0] * x[i] - line[1]
            line[0] -= rate * (-2 * residual * x[i])
            line[1] -= rate * (-2 * residual)
