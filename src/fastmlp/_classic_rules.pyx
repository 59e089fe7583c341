# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled per-sample loops of fastmlp.classic: one epoch of each learning rule, in place.

fastmlp.classic validates every argument and draws the sample order (so the random stream
is the NumPy reference's); these loops trust their arguments, allocate nothing and hold no
Python object. Each has a NumPy mirror of the same name and argument order in
fastmlp.reference, which returns the new weights instead of updating them.
"""
from cython cimport floating
from libc.stdint cimport int64_t

cdef extern from *:
    void __builtin_prefetch(const void* address) noexcept nogil

# The samples X may be stored as float32 while the weights are float64: widening a float32 to
# float64 is exact, so such a run is bit for bit the run on X.astype(np.float64), at half the
# memory traffic.
ctypedef fused sample_t:
    float
    double


# How many samples ahead the next rows are requested: one sample's work is shorter than a
# trip to memory once most predictions are right.
cdef enum:
    PREFETCH_AHEAD = 4


cdef inline void _prefetch_row(const sample_t* row, Py_ssize_t n) noexcept nogil:
    # The rows come in shuffled order, out of reach of the hardware prefetcher: ask for a
    # coming row's cache lines while the current one is computed.
    cdef Py_ssize_t k = 0, per_line = 64 // sizeof(sample_t)
    while k < n:
        __builtin_prefetch(&row[k])
        k += per_line


cdef inline floating _dot(const sample_t* a, const floating* b, Py_ssize_t n) noexcept nogil:
    # Eight independent partial sums, lane j taking elements j, j+8, j+16, ...: the additions
    # pipeline (and fill SIMD registers) instead of each waiting for the last, the one thing
    # that makes a long dot fast without -ffast-math. The order is fixed, so a run is
    # reproducible.
    cdef floating lanes[8]
    cdef floating total
    cdef Py_ssize_t k = 0, j
    for j in range(8):
        lanes[j] = 0
    while k + 8 <= n:
        for j in range(8):
            lanes[j] += a[k + j] * b[k + j]
        k += 8
    while k < n:
        lanes[0] += a[k] * b[k]
        k += 1
    total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    return total


cdef inline void _axpy(floating alpha, const sample_t* x, floating* y,
                       Py_ssize_t n) noexcept nogil:
    # y += alpha * x, element by element: each element rounds as NumPy's `y += alpha * x`.
    cdef Py_ssize_t k
    for k in range(n):
        y[k] += alpha * x[k]


cdef inline void _outputs(const sample_t* x, const floating* weights, floating* out,
                          Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    # out = x @ weights, row by row of weights: the inner loop runs along contiguous memory
    # with one independent sum per output, so it vectorises as it is.
    cdef Py_ssize_t i, j
    for j in range(n_out):
        out[j] = 0
    for i in range(n_in):
        for j in range(n_out):
            out[j] += x[i] * weights[i * n_out + j]


def perceptron_epoch(const sample_t[:, ::1] X, const int64_t[::1] y, const int64_t[::1] order,
                     floating[::1] weights, double lr):
    """One epoch of the perceptron rule over the rows ``X[order]``, ``weights = [w0, w]``
    updated in place; returns the number of mistakes (updates made)."""
    cdef Py_ssize_t n_features = X.shape[1], n = order.shape[0], k, i
    cdef int64_t error, mistakes = 0
    cdef floating net, step
    with nogil:
        for k in range(n):
            i = order[k]
            # Rows in sequence are the hardware prefetcher's already: asking again only costs.
            if k + PREFETCH_AHEAD < n and (order[k + PREFETCH_AHEAD]
                                           != order[k + PREFETCH_AHEAD - 1] + 1):
                _prefetch_row(&X[order[k + PREFETCH_AHEAD], 0], n_features)
            net = weights[0] + _dot(&X[i, 0], &weights[1], n_features)
            error = y[i] - (1 if net >= 0 else 0)
            # A correct prediction changes nothing: most samples cost one dot product.
            if error != 0:
                step = <floating>(lr * error)
                weights[0] += step
                _axpy(step, &X[i, 0], &weights[1], n_features)
                mistakes += 1
    return mistakes


def perceptron_mistakes(const sample_t[:, ::1] X, const int64_t[::1] y,
                        const floating[::1] weights):
    """How many rows of X the weights ``[w0, w]`` misclassify (net input >= 0 means 1)."""
    cdef Py_ssize_t n_features = X.shape[1], i
    cdef int64_t mistakes = 0
    cdef floating net
    with nogil:
        for i in range(X.shape[0]):
            net = weights[0] + _dot(&X[i, 0], &weights[1], n_features)
            mistakes += y[i] != (1 if net >= 0 else 0)
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


def hebb_epoch(const sample_t[:, ::1] X, const int64_t[::1] order, floating[:, ::1] weights,
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


def oja_epoch(const sample_t[:, ::1] X, const int64_t[::1] order, floating[:, ::1] weights,
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


cdef inline void _sanger_rows(const sample_t* x, floating* weights, const floating* outputs,
                              floating rate, Py_ssize_t first, Py_ssize_t count,
                              Py_ssize_t n_out) noexcept nogil:
    # Rows first..first+count-1 (count <= 8) of Sanger's update. Along a row the running sum
    # is a chain of dependent additions; eight rows side by side make eight chains that
    # overlap, which is what makes the update fast, each row summed in its own order still.
    cdef floating reconstruction[8]
    cdef floating* row
    cdef Py_ssize_t b, j
    for b in range(count):
        reconstruction[b] = 0
    for j in range(n_out):
        for b in range(count):
            row = &weights[(first + b) * n_out]
            # The running sum takes W[r, j] before it is updated, so unit j sees the
            # reconstruction by units 0..j at the weights of the start of this sample.
            reconstruction[b] += row[j] * outputs[j]
            row[j] += (rate * (x[first + b] - reconstruction[b])) * outputs[j]


def sanger_epoch(const sample_t[:, ::1] X, const int64_t[::1] order, floating[:, ::1] weights,
                 double lr, floating[::1] outputs):
    """One epoch of Sanger's rule ``W[r, j] += lr * (x_r - sum_{k<=j} W[r, k] y_k) * y_j``,
    ``y = x @ W``, over the rows ``X[order]``; `outputs` (n_outputs,) is scratch space."""
    cdef Py_ssize_t n_in = weights.shape[0], n_out = weights.shape[1], k, i, r
    cdef floating rate = <floating>lr
    with nogil:
        for k in range(order.shape[0]):
            i = order[k]
            _outputs(&X[i, 0], &weights[0, 0], &outputs[0], n_in, n_out)
            r = 0
            while r < n_in:
                _sanger_rows(&X[i, 0], &weights[0, 0], &outputs[0], rate, r,
                             min(8, n_in - r), n_out)
                r += 8


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
