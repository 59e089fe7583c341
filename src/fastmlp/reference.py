"""Plain NumPy mirror of every C++ kernel (csrc/kernels.h) and of the model (csrc/network.h).

Written for reading, not speed: the tests hold the compiled core against these functions.
Each kernel has the C++ name and argument order minus the outputs, which are returned; the
shape of every argument is given in csrc/kernels.h, so docstrings here stay one-liners.
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[Any]

# Activation names, in the order of the C++ enum class Activation.
ACTIVATIONS = {
    "identity": 0,
    "sigmoid": 1,
    "tanh": 2,
    "relu": 3,
    "leaky_relu": 4,
    "gelu": 5,
    "step": 6,
}

LOSSES = ("cross_entropy", "mse", "bce", "gaussian_nll", "poisson")

MASK64 = (1 << 64) - 1


def _activation_name(act: Union[str, int]) -> str:
    """Accept a name or the enum's integer value; return the name."""
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        return act
    for name, value in ACTIVATIONS.items():
        if value == act:
            return name
    raise ValueError(f"unknown activation {act!r}")


def _cast(value: float, like: Array) -> Any:
    """A scalar in the dtype of `like`, so float32 arithmetic stays float32 as in C++."""
    return like.dtype.type(value)


# ---- activations ---------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _normal_cdf(x64: Array) -> Array:
    # erfc(-x / sqrt2) / 2, not (1 + erf(x / sqrt2)) / 2: on the left 1 + erf cancels (it is
    # 0 in float64 from x = -8.3 while Phi is still 1e-16), erfc keeps the relative accuracy.
    return np.asarray(0.5 * _erfc(-x64 / math.sqrt(2)))


def erf_forward(x: ArrayLike) -> Array:
    """y = erf(x), in float64 and rounded to x's dtype."""
    x = np.asarray(x)
    return np.asarray(_erf(x.astype(np.float64)).astype(x.dtype)).reshape(x.shape)


def _sigmoid(x: Array) -> Array:
    # Two branches so exp never overflows: exp(-x) for x >= 0, exp(x) otherwise.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def _gelu(x: Array) -> Array:
    cdf = _normal_cdf(x.astype(np.float64))
    return np.asarray((x * cdf).astype(x.dtype))


def _gelu_derivative(x: Array) -> Array:
    x64 = x.astype(np.float64)
    cdf = _normal_cdf(x64)
    pdf = np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)
    return np.asarray((cdf + x64 * pdf).astype(x.dtype))


def all_finite(x: ArrayLike) -> bool:
    """True when no element of x is NaN or infinite."""
    return bool(np.isfinite(np.asarray(x)).all())


def activation_forward(x: ArrayLike, act: Union[str, int], slope: float = 0.01) -> Array:
    """y = act(x)."""
    x = np.asarray(x)
    name = _activation_name(act)
    slope = _cast(slope, x)
    if name == "identity":
        return x.copy()
    if name == "sigmoid":
        return _sigmoid(x)
    if name == "tanh":
        return np.asarray(np.tanh(x))
    if name == "relu":
        return np.where(x > 0, x, 0).astype(x.dtype)
    if name == "leaky_relu":
        return np.where(x > 0, x, slope * x).astype(x.dtype)
    if name == "gelu":
        return _gelu(x)
    return np.where(x >= 0, 1, 0).astype(x.dtype)  # step


def activation_backward(dy: ArrayLike, x: Array, y: Array, act: Union[str, int],
                        slope: float = 0.01) -> Array:
    """dx = dy * act'(x); x is the pre-activation, y = act(x) (each derivative reads one)."""
    dy = np.asarray(dy)
    name = _activation_name(act)
    slope = _cast(slope, dy)
    if name == "identity":
        return dy.copy()
    if name == "sigmoid":
        return np.asarray(dy * y * (1 - y))
    if name == "tanh":
        return np.asarray(dy * (1 - y * y))
    if name == "relu":
        # Derivative 0 at 0, as torch.
        return np.where(y > 0, dy, 0).astype(dy.dtype)
    if name == "leaky_relu":
        return np.where(y > 0, dy, slope * dy).astype(dy.dtype)
    if name == "gelu":
        return dy * _gelu_derivative(x)
    return np.zeros_like(dy)  # step: treated as having no gradient


# ---- losses -------------------------------------------------------------------------------------
# Every loss is a mean; sums are taken in float64 (as the kernels do) and the loss is
# returned in the input's dtype.


def _log_softmax64(logits: Array) -> Array:
    z = logits.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))


def softmax_forward(logits: ArrayLike) -> Array:
    """Row-wise softmax, stable: exp(x - max(x)) / sum."""
    logits = np.asarray(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return np.asarray((e / e.sum(axis=1, keepdims=True)).astype(logits.dtype))


def _class_weights64(class_weights: Optional[ArrayLike], C: int) -> Array:
    if class_weights is None:
        return np.ones(C)
    return np.asarray(class_weights, dtype=np.float64)


def _sample_weights64(sample_weights: Optional[ArrayLike], B: int) -> Array:
    """Per-row sample weights s (B,) in float64; all ones when None."""
    if sample_weights is None:
        return np.ones(B)
    return np.asarray(sample_weights, dtype=np.float64).reshape(B)


def softmax_xent_forward(logits: ArrayLike, labels: ArrayLike, class_weights: Optional[ArrayLike] = None,
                         label_smoothing: float = 0.0,
                         sample_weights: Optional[ArrayLike] = None) -> Tuple[Any, Array]:
    """torch.nn.CrossEntropyLoss(weight, label_smoothing, reduction="mean"), each row also
    weighted by its sample weight s_i: every sum over rows weighs row i by s_i, the normaliser
    too (W = sum_i s_i w[y_i]). -> (loss, probs)"""
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    B, C = logits.shape
    eps = float(label_smoothing)
    w = _class_weights64(class_weights, C)
    s = _sample_weights64(sample_weights, B)
    logp = _log_softmax64(logits)
    rows = np.arange(B)
    label_weight_total = (s * w[labels]).sum()
    hard = (s * w[labels] * -logp[rows, labels]).sum()
    smooth = (s[:, None] * w[None, :] * -logp).sum()
    loss = ((1 - eps) * hard + eps / C * smooth) / label_weight_total
    return logits.dtype.type(loss), softmax_forward(logits)


def softmax_xent_backward(probs: ArrayLike, labels: ArrayLike, class_weights: Optional[ArrayLike] = None,
                          label_smoothing: float = 0.0,
                          sample_weights: Optional[ArrayLike] = None) -> Array:
    """Gradient of softmax_xent_forward's loss with respect to the logits."""
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    B, C = probs.shape
    eps = float(label_smoothing)
    w = _class_weights64(class_weights, C)
    s = _sample_weights64(sample_weights, B)
    p = probs.astype(np.float64)
    one_hot = np.zeros((B, C))
    one_hot[np.arange(B), labels] = 1
    hard = (1 - eps) * w[labels][:, None] * (p - one_hot)
    smooth = eps / C * (p * w.sum() - w[None, :])
    return np.asarray((s[:, None] * (hard + smooth) / (s * w[labels]).sum()).astype(probs.dtype))


def softmax_xent_soft_forward(logits: ArrayLike, targets: ArrayLike,
                              sample_weights: Optional[ArrayLike] = None) -> Tuple[Any, Array]:
    """Cross-entropy against soft targets (rows sum to 1), weighted mean over rows. -> (loss, probs)"""
    logits = np.asarray(logits)
    s = _sample_weights64(sample_weights, logits.shape[0])
    t = np.asarray(targets, dtype=np.float64)
    loss = (s[:, None] * -t * _log_softmax64(logits)).sum() / s.sum()
    return logits.dtype.type(loss), softmax_forward(logits)


def softmax_xent_soft_backward(probs: ArrayLike, targets: ArrayLike,
                               sample_weights: Optional[ArrayLike] = None) -> Array:
    """Gradient of softmax_xent_soft_forward's loss with respect to the logits."""
    probs = np.asarray(probs)
    s = _sample_weights64(sample_weights, probs.shape[0])
    diff = probs.astype(np.float64) - np.asarray(targets, dtype=np.float64)
    return np.asarray((s[:, None] * diff / s.sum()).astype(probs.dtype))


def mixup_batch(X: ArrayLike, targets: ArrayLike, rows: ArrayLike, partner_rows: ArrayLike, lam: Any,
                n_classes: Optional[int] = None, label_smoothing: float = 0.0) -> Tuple[Array, Array]:
    """Network::gather_mixed_batch: the mixup batch blending rows with partner_rows.

    x = lam * X[rows] + (1 - lam) * X[partner_rows]; value targets are blended the same way;
    integer labels (give n_classes) become soft targets
    eps / C + (1 - eps) * (lam * onehot(a) + (1 - lam) * onehot(b)). -> (x, targets)
    """
    X = np.asarray(X)
    rows, partner_rows = np.asarray(rows, dtype=np.int64), np.asarray(partner_rows, dtype=np.int64)
    lam = X.dtype.type(lam)
    x = lam * X[rows] + (1 - lam) * X[partner_rows]
    targets = np.asarray(targets)
    if n_classes is None:
        return x, lam * targets[rows] + (1 - lam) * targets[partner_rows]
    eye = np.eye(n_classes, dtype=X.dtype)
    blend = lam * eye[targets[rows]] + (1 - lam) * eye[targets[partner_rows]]
    eps = X.dtype.type(label_smoothing)
    return x, eps / n_classes + (1 - eps) * blend


def _row_weights(values: Array, sample_weights: Optional[ArrayLike]) -> Tuple[Array, float]:
    """Per-element weights of an element-wise loss (row i's elements weigh s_i) and their sum:
    the normaliser S * D of the weighted mean (the element count without weights)."""
    B = values.shape[0] if values.ndim else 1
    s = _sample_weights64(sample_weights, B)
    per_element = np.broadcast_to(s.reshape((B,) + (1,) * max(values.ndim - 1, 0)), values.shape)
    return per_element, float(s.sum() * (values.size // B))


def mse_forward(pred: ArrayLike, target: ArrayLike, sample_weights: Optional[ArrayLike] = None) -> Any:
    """mean((pred - target)^2) over all elements; with sample weights s (one per row) the
    weighted mean sum_i s_i sum_j diff^2 / (sum_i s_i * D)."""
    pred = np.asarray(pred)
    diff = pred.astype(np.float64) - np.asarray(target, dtype=np.float64)
    weights, total = _row_weights(diff, sample_weights)
    return pred.dtype.type((weights * diff * diff).sum() / total)


def mse_backward(pred: ArrayLike, target: ArrayLike, sample_weights: Optional[ArrayLike] = None) -> Array:
    """Gradient of mse_forward's loss with respect to pred."""
    pred = np.asarray(pred)
    diff = pred.astype(np.float64) - np.asarray(target, dtype=np.float64)
    weights, total = _row_weights(diff, sample_weights)
    return np.asarray((2 * weights * diff / total).astype(pred.dtype))


def bce_logits_forward(logits: ArrayLike, target: ArrayLike, sample_weights: Optional[ArrayLike] = None) -> Any:
    """Binary cross-entropy with logits: mean(max(z, 0) - z t + log1p(exp(-|z|))), weighted
    per row as mse_forward."""
    logits = np.asarray(logits)
    z = logits.astype(np.float64)
    t = np.asarray(target, dtype=np.float64)
    weights, total = _row_weights(z, sample_weights)
    return logits.dtype.type((weights * (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))).sum() / total)


def bce_logits_backward(logits: ArrayLike, target: ArrayLike, sample_weights: Optional[ArrayLike] = None) -> Array:
    """Gradient of bce_logits_forward's loss with respect to the logits."""
    logits = np.asarray(logits)
    z = logits.astype(np.float64)
    t = np.asarray(target, dtype=np.float64)
    weights, total = _row_weights(z, sample_weights)
    return np.asarray((weights * (_sigmoid(z) - t) / total).astype(logits.dtype))


def _split_gaussian(out: Array, target: ArrayLike) -> Tuple[Array, Array]:
    out = np.asarray(out)
    D = out.shape[1] // 2
    mean = out[:, :D].astype(np.float64)
    log_var = out[:, D:].astype(np.float64)
    diff = np.asarray(target, dtype=np.float64) - mean
    return diff, log_var


def gaussian_nll_forward(out: ArrayLike, target: ArrayLike, sample_weights: Optional[ArrayLike] = None) -> Any:
    """out rows are [D means, D log-variances]; mean of 0.5 (log_var + (t - mean)^2 / var),
    weighted per row as mse_forward."""
    out = np.asarray(out)
    diff, log_var = _split_gaussian(out, target)
    weights, total = _row_weights(diff, sample_weights)
    return out.dtype.type((weights * 0.5 * (log_var + diff * diff * np.exp(-log_var))).sum() / total)


def gaussian_nll_backward(out: ArrayLike, target: ArrayLike, sample_weights: Optional[ArrayLike] = None) -> Array:
    """Gradient of gaussian_nll_forward's loss with respect to out (means, log-variances)."""
    out = np.asarray(out)
    diff, log_var = _split_gaussian(out, target)
    weights, total = _row_weights(diff, sample_weights)
    precision = np.exp(-log_var)
    d_mean = -weights * diff * precision / total
    d_log_var = weights * 0.5 * (1 - diff * diff * precision) / total
    return np.concatenate([d_mean, d_log_var], axis=1).astype(out.dtype)


def poisson_nll_forward(log_mean: ArrayLike, target: ArrayLike, sample_weights: Optional[ArrayLike] = None) -> Any:
    """Poisson NLL with a log link, log(y!) dropped: mean(exp(z) - y z), weighted per row as
    mse_forward."""
    log_mean = np.asarray(log_mean)
    z = log_mean.astype(np.float64)
    y = np.asarray(target, dtype=np.float64)
    weights, total = _row_weights(z, sample_weights)
    return log_mean.dtype.type((weights * (np.exp(z) - y * z)).sum() / total)


def poisson_nll_backward(log_mean: ArrayLike, target: ArrayLike, sample_weights: Optional[ArrayLike] = None) -> Array:
    """Gradient of poisson_nll_forward's loss with respect to the log-means z: (exp(z) - y) / count."""
    log_mean = np.asarray(log_mean)
    z = log_mean.astype(np.float64)
    y = np.asarray(target, dtype=np.float64)
    weights, total = _row_weights(z, sample_weights)
    return np.asarray((weights * (np.exp(z) - y) / total).astype(log_mean.dtype))


# ---- sparse input --------------------------------------------------------------------------


def csr_rows_to_dense(data: ArrayLike, indices: ArrayLike, indptr: ArrayLike,
                      rows: Optional[ArrayLike], cols: int) -> Tuple[Array, int]:
    """The rows `rows` (None: all) of the CSR matrix (data, indices, indptr), dense, duplicate
    columns summed in storage order. -> (out, bad): bad is -1, or the first position whose
    row is malformed (its extent outside the stored entries, or a column outside [0, cols));
    out's rows from there on are left zero here."""
    data, indices, indptr = np.asarray(data), np.asarray(indices), np.asarray(indptr, dtype=np.int64)
    rows = np.arange(indptr.size - 1) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.zeros((rows.size, cols), dtype=data.dtype)
    for i, r in enumerate(rows):
        begin, end = indptr[r], indptr[r + 1]
        if begin < 0 or begin > end or end > data.size:
            return out, i
        columns = indices[begin:end]
        if columns.size and (columns.min() < 0 or columns.max() >= cols):
            return out, i
        for column, value in zip(columns, data[begin:end]):
            out[i, column] += value
    return out, -1


# ---- bfloat16 GEMM --------------------------------------------------------------------------


def round_to_bfloat16(x: ArrayLike) -> Array:
    """float32 x rounded to the nearest bfloat16, ties to even, returned as float32 (VCVTNE2PS2BF16:
    a float32 denormal becomes a zero of its sign, a NaN stays a quiet NaN)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    exponent_zero = (bits & 0x7F800000) == 0
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    rounded = np.where(exponent_zero, bits & 0x80000000, rounded)
    rounded = np.where(nan, (bits | 0x00400000) & 0xFFFF0000, rounded)
    return rounded.astype(np.uint32).view(np.float32)


def bfloat16_k_blocks(K: int) -> List[Tuple[int, int]]:
    """The canonical blocks [k0, k1) of the bfloat16 GEMM: k in pairs, ceil(pairs / 128) blocks of
    equal, even size (csrc/gemm_internal.h)."""
    pairs = (K + 1) // 2
    count = -(-pairs // 128)
    size = 2 * -(-pairs // count)
    return [(k0, min(k0 + size, K)) for k0 in range(0, K, size)]


def gemm_bfloat16(a: ArrayLike, b: ArrayLike, transpose_a: bool = False, transpose_b: bool = False,
                  c: Optional[ArrayLike] = None) -> Array:
    """op(a) @ op(b) with bfloat16 operands, in the kernel's order: each operand rounded to bfloat16,
    then per block of k pairs a float32 sum from zero over each pair's odd k, then its even k (a
    product of two bfloat16 is exact in float32, so multiply-then-add is VDPBF16PS's fused step),
    the blocks added in order, to c when given (accumulate). -> float32 (M, N)"""
    A = round_to_bfloat16(np.asarray(a, dtype=np.float32).T if transpose_a else a)
    B = round_to_bfloat16(np.asarray(b, dtype=np.float32).T if transpose_b else b)
    M, K = A.shape
    total = np.zeros((M, B.shape[1]), np.float32) if c is None else np.asarray(c, dtype=np.float32)
    for block, (k0, k1) in enumerate(bfloat16_k_blocks(K)):
        acc = np.zeros_like(total)
        for k_even in range(k0, k1, 2):
            # A K that is odd has a zero k = K, added first as VDPBF16PS adds its pair's zero.
            for k in (k_even + 1, k_even):
                product = A[:, k, None] * B[None, k, :] if k < K else np.zeros_like(total)
                acc = acc + product
        # The first block is c itself unless accumulating (not 0 + block: -0 stays -0).
        total = acc if block == 0 and c is None else total + acc
    return total


# ---- dense layer ---------------------------------------------------------------------------


def dense_forward(x: Array, w: Array, b: Array, act: Union[str, int],
                  slope: float = 0.01, bfloat16: bool = False) -> Tuple[Array, Array]:
    """z = x @ w + b; y = act(z), x @ w as gemm_bfloat16 when bfloat16. -> (z, y)"""
    z = (gemm_bfloat16(x, w) if bfloat16 else x @ w) + b
    return z, activation_forward(z, act, slope)


def dense_backward(dy: Array, x: Array, w: Array, z: Array, y: Array, act: Union[str, int],
                   slope: float = 0.01, need_dx: bool = True,
                   bfloat16: bool = False) -> Tuple[Optional[Array], Array, Array]:
    """-> (dx or None, dw, db), with dz = dy * act'(z); the products as gemm_bfloat16 when
    bfloat16 (db sums the float32 dz)."""
    dz = activation_backward(dy, z, y, act, slope)
    dw = gemm_bfloat16(x, dz, transpose_a=True) if bfloat16 else x.T @ dz
    db = dz.sum(axis=0)
    dx = (gemm_bfloat16(dz, w, transpose_b=True) if bfloat16 else dz @ w.T) if need_dx else None
    return dx, dw, db


# ---- counter-based random numbers and dropout ----------------------------------------------


def _mix(z: Any) -> Any:
    """splitmix64's finaliser, mod 2^64. z is a Python int or a uint64 array."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def random_bits(seed: int, counter: int, index: Union[int, ArrayLike]) -> Any:
    """mix(mix(mix(seed) ^ counter) ^ index); index may be an int or an integer array."""
    stream = _mix(_mix(int(seed) & MASK64) ^ (int(counter) & MASK64))
    if np.ndim(index) == 0:
        return _mix(stream ^ (int(np.asarray(index)) & MASK64))
    return _mix(np.uint64(stream) ^ np.asarray(index).astype(np.uint64))


def random_uniform(seed: int, counter: int, index: Union[int, ArrayLike]) -> Any:
    """The top 53 bits of random_bits as a double in [0, 1)."""
    bits = random_bits(seed, counter, index)
    if np.ndim(bits) == 0:
        return (bits >> 11) * 2.0**-53
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def dropout_forward(x: ArrayLike, p: float, seed: int, counter: int) -> Tuple[Array, Array]:
    """Inverted dropout: element i kept when random_uniform(seed, counter, i) >= p. -> (y, mask)"""
    x = np.asarray(x)
    p = _cast(p, x)  # the kernel compares against p in the array's precision
    u = random_uniform(seed, counter, np.arange(x.size)).reshape(x.shape)
    keep_scale = _cast(1, x) / (_cast(1, x) - p)
    mask = np.where(u >= float(p), keep_scale, 0).astype(x.dtype)
    return x * mask, mask


def dropout_backward(dy: Array, mask: Array) -> Array:
    """dx = dy * mask (the mask holds 0 or 1 / (1 - p))."""
    return dy * mask


# ---- batch normalisation ---------------------------------------------------------------------


def batchnorm_forward_train(x: Array, gamma: Array, beta: Array, running_mean: Array,
                            running_var: Array, momentum: float, eps: float
                            ) -> Tuple[Array, Array, Array, Array, Array, Array]:
    """torch.nn.BatchNorm1d in training (B > 1).
    -> (y, xhat, mean, invstd, new running_mean, new running_var)"""
    B = x.shape[0]
    momentum, eps = _cast(momentum, x), _cast(eps, x)
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)  # biased, for normalising
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    y = gamma * xhat + beta
    unbiased_var = var * _cast(B / (B - 1), x)  # running statistics use the unbiased one
    new_running_mean = (1 - momentum) * running_mean + momentum * mean
    new_running_var = (1 - momentum) * running_var + momentum * unbiased_var
    return y, xhat, mean, invstd, new_running_mean, new_running_var


def batchnorm_forward_eval(x: Array, gamma: Array, beta: Array, running_mean: Array,
                           running_var: Array, eps: float) -> Array:
    """torch.nn.BatchNorm1d in evaluation: normalise by the running statistics."""
    return np.asarray(gamma * (x - running_mean) / np.sqrt(running_var + _cast(eps, x)) + beta)


def batchnorm_backward(dy: Array, xhat: Array, gamma: Array, invstd: Array) -> Tuple[Array, Array, Array]:
    """-> (dx, dgamma, dbeta)"""
    B = dy.shape[0]
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    dx = gamma * invstd / B * (B * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


# ---- optimizers: torch.optim's update rules over a flat buffer; new arrays returned -------
# (weight_decay may also be an array of params' shape: optimizer_step with decay_biases=False)


def sgd_update(params: Array, momentum_buffer: Array, grads: Array, lr: float, momentum: float,
               dampening: float, nesterov: bool, weight_decay: float, step: int) -> Tuple[Array, Array]:
    """-> (params, momentum_buffer)"""
    g = grads + weight_decay * params
    buf = momentum_buffer.copy()
    if momentum != 0:
        buf = g.copy() if step <= 1 else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return params - lr * g, buf


def adagrad_update(params: Array, state_sum: Array, grads: Array, lr: float, lr_decay: float,
                   weight_decay: float, eps: float, step: int) -> Tuple[Array, Array]:
    """-> (params, state_sum)"""
    clr = lr / (1 + (step - 1) * lr_decay)
    g = grads + weight_decay * params
    state_sum = state_sum + g * g
    return params - clr * g / (np.sqrt(state_sum) + eps), state_sum


def adadelta_update(params: Array, square_avg: Array, acc_delta: Array, grads: Array, lr: float,
                    rho: float, eps: float, weight_decay: float) -> Tuple[Array, Array, Array]:
    """-> (params, square_avg, acc_delta)"""
    g = grads + weight_decay * params
    square_avg = rho * square_avg + (1 - rho) * g * g
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta = rho * acc_delta + (1 - rho) * delta * delta
    return params - lr * delta, square_avg, acc_delta


def rmsprop_update(params: Array, square_avg: Array, grad_avg: Array, momentum_buffer: Array,
                   grads: Array, lr: float, alpha: float, eps: float, weight_decay: float,
                   momentum: float, centered: bool) -> Tuple[Array, Array, Array, Array]:
    """-> (params, square_avg, grad_avg, momentum_buffer)"""
    g = grads + weight_decay * params
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    grad_avg = grad_avg.copy()
    if centered:
        grad_avg = alpha * grad_avg + (1 - alpha) * g
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    momentum_buffer = momentum_buffer.copy()
    if momentum > 0:
        momentum_buffer = momentum * momentum_buffer + g / avg
        params = params - lr * momentum_buffer
    else:
        params = params - lr * g / avg
    return params, square_avg, grad_avg, momentum_buffer


def adam_update(params: Array, exp_avg: Array, exp_avg_sq: Array, max_exp_avg_sq: Array,
                grads: Array, lr: float, beta1: float, beta2: float, eps: float,
                weight_decay: float, amsgrad: bool, decoupled_weight_decay: bool,
                step: int, eps_hat: bool = False) -> Tuple[Array, Array, Array, Array]:
    """Adam, or AdamW when decoupled_weight_decay; eps_hat: epsilon added to the uncorrected
    sqrt(v), in scikit-learn's operation order (AdamOptimizer._get_updates).
    -> (params, exp_avg, exp_avg_sq, max_exp_avg_sq)"""
    g = grads
    if decoupled_weight_decay:
        params = params * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * params
    exp_avg = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq = beta2 * exp_avg_sq + ((1 - beta2) * (g * g) if eps_hat else (1 - beta2) * g * g)
    max_exp_avg_sq = max_exp_avg_sq.copy()
    second_moment = exp_avg_sq
    if amsgrad:
        max_exp_avg_sq = np.maximum(max_exp_avg_sq, exp_avg_sq)
        second_moment = max_exp_avg_sq
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    if eps_hat:
        step_size = lr * math.sqrt(bias_correction2) / bias_correction1
        return (params - step_size * exp_avg / (np.sqrt(second_moment) + eps), exp_avg, exp_avg_sq,
                max_exp_avg_sq)
    denom = np.sqrt(second_moment) / math.sqrt(bias_correction2) + eps
    params = params - (lr / bias_correction1) * exp_avg / denom
    return params, exp_avg, exp_avg_sq, max_exp_avg_sq


# torch.optim's defaults, per optimizer.
OPTIMIZER_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "sgd": dict(lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0),
    "adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                    eps=1e-10),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0),
    "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                    centered=False),
    "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False),
    "adamw": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False),
}

# fastmlp's own options, shared by every optimizer (torch has no such option: it takes
# parameter groups instead).
FASTMLP_OPTIMIZER_DEFAULTS: Dict[str, Any] = {"decay_biases": True}
# and Adam's: eps_hat (epsilon added to the uncorrected sqrt(v), scikit-learn's form).
FASTMLP_ADAM_DEFAULTS: Dict[str, Any] = {"eps_hat": False}

# The state buffers each optimizer keeps, all with the flat parameter layout.
OPTIMIZER_STATE = {
    "sgd": ("momentum_buffer",),
    "adagrad": ("state_sum",),
    "adadelta": ("square_avg", "acc_delta"),
    "rmsprop": ("square_avg", "grad_avg", "momentum_buffer"),
    "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}


def optimizer_options_with_defaults(optimizer: str,
                                    options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """torch's defaults for `optimizer`, overridden by `options` (unknown names rejected)."""
    if optimizer not in OPTIMIZER_DEFAULTS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_DEFAULTS)}, got {optimizer!r}")
    merged: Dict[str, Any] = dict(OPTIMIZER_DEFAULTS[optimizer], **FASTMLP_OPTIMIZER_DEFAULTS)
    if optimizer in ("adam", "adamw"):
        merged.update(FASTMLP_ADAM_DEFAULTS)
    for name, value in (options or {}).items():
        if name not in merged:
            raise ValueError(f"{optimizer} has no option {name!r}; its options: {sorted(merged)}")
        merged[name] = value
    return merged


def optimizer_step(optimizer: str, options: Dict[str, Any], params: Array, state: Dict[str, Array],
                   grads: Array, step: int, weight_mask: Optional[Array] = None
                   ) -> Tuple[Array, Dict[str, Array]]:
    """One update of the flat buffer by `optimizer`; returns (params, state) as new arrays.

    With options["decay_biases"] False, weight decay becomes an array: the option's value
    where weight_mask (bool, params' shape) is True, 0 elsewhere; the update formulas are
    elementwise, so each element sees its own decay.
    """
    o = dict(options)
    if not o.get("decay_biases", True):
        if weight_mask is None:
            raise ValueError("decay_biases=False needs weight_mask, True at the weight matrices")
        o["weight_decay"] = np.where(weight_mask, o["weight_decay"], 0.0).astype(params.dtype)
    if optimizer == "sgd":
        params, buf = sgd_update(params, state["momentum_buffer"], grads, o["lr"], o["momentum"],
                                 o["dampening"], o["nesterov"], o["weight_decay"], step)
        return params, {"momentum_buffer": buf}
    if optimizer == "adagrad":
        params, state_sum = adagrad_update(params, state["state_sum"], grads, o["lr"],
                                           o["lr_decay"], o["weight_decay"], o["eps"], step)
        return params, {"state_sum": state_sum}
    if optimizer == "adadelta":
        params, square_avg, acc_delta = adadelta_update(
            params, state["square_avg"], state["acc_delta"], grads, o["lr"], o["rho"], o["eps"],
            o["weight_decay"])
        return params, {"square_avg": square_avg, "acc_delta": acc_delta}
    if optimizer == "rmsprop":
        new = rmsprop_update(params, state["square_avg"], state["grad_avg"],
                             state["momentum_buffer"], grads, o["lr"], o["alpha"], o["eps"],
                             o["weight_decay"], o["momentum"], o["centered"])
        return new[0], dict(zip(OPTIMIZER_STATE["rmsprop"], new[1:]))
    beta1, beta2 = o["betas"]
    new = adam_update(params, state["exp_avg"], state["exp_avg_sq"], state["max_exp_avg_sq"],
                      grads, o["lr"], beta1, beta2, o["eps"], o["weight_decay"], o["amsgrad"],
                      optimizer == "adamw", step, o.get("eps_hat", False))
    return new[0], dict(zip(OPTIMIZER_STATE["adam"], new[1:]))


# ---- the model -----------------------------------------------------------------------------


class ReferenceMLP:
    """The model of csrc/network.h in NumPy: the same flat layout, layer order, dropout
    counters, output links, accuracy rule and optimizer semantics, step for step."""

    def __init__(self, sizes: Sequence[int], activations: Union[str, Sequence[str]],
                 loss: str = "cross_entropy", optimizer: str = "adam",
                 optimizer_options: Optional[Dict[str, Any]] = None, dropout: float = 0.0,
                 batch_norm: bool = False, seed: int = 0, class_weights: Optional[ArrayLike] = None,
                 label_smoothing: float = 0.0, slope: float = 0.01, dtype: Any = np.float64,
                 batch_norm_momentum: float = 0.1, batch_norm_eps: float = 1e-5,
                 compute_dtype: Optional[str] = None) -> None:
        self.sizes = [int(s) for s in sizes]
        if len(self.sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output width, got {sizes}")
        hidden = len(self.sizes) - 2
        if isinstance(activations, str):
            activations = [activations] * hidden
        if len(activations) != hidden:
            raise ValueError(f"need {hidden} activations (one per hidden layer), got {activations}")
        self.activations = [_activation_name(a) for a in activations]
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        self.optimizer = optimizer
        self.optimizer_options = optimizer_options_with_defaults(optimizer, optimizer_options)
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.seed = int(seed)
        self.dtype = np.dtype(dtype)
        if compute_dtype == "bfloat16" and self.dtype != np.float32:
            raise ValueError(f"compute_dtype='bfloat16' needs dtype float32, got {self.dtype}")
        self.bfloat16 = compute_dtype == "bfloat16"  # every product as gemm_bfloat16
        self.class_weights = None if class_weights is None else np.asarray(class_weights, self.dtype)
        self.label_smoothing = float(label_smoothing)
        self.slope = float(slope)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.batch_norm_eps = float(batch_norm_eps)
        self.step = 0
        self._build_layout()
        self._initialise(np.random.default_rng(seed))
        self.optimizer_state = {name: np.zeros_like(self.params)
                                for name in OPTIMIZER_STATE[optimizer]}
        if optimizer == "adagrad":
            self.optimizer_state["state_sum"][:] = self.optimizer_options["initial_accumulator_value"]

    # -- layout ---------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        """The number of dense layers."""
        return len(self.sizes) - 1

    def _is_hidden(self, layer: int) -> bool:
        return layer < self.n_layers - 1

    def _build_layout(self) -> None:
        """Offsets of W_l, b_l, [gamma_l, beta_l] in the flat buffer, layer by layer."""
        self._slices: List[Dict[str, Tuple[int, Tuple[int, ...]]]] = []
        offset = 0
        for layer in range(self.n_layers):
            fan_in, fan_out = self.sizes[layer], self.sizes[layer + 1]
            entry: Dict[str, Tuple[int, Tuple[int, ...]]] = {"weight": (offset, (fan_in, fan_out))}
            offset += fan_in * fan_out
            entry["bias"] = (offset, (fan_out,))
            offset += fan_out
            if self.batch_norm and self._is_hidden(layer):
                entry["gamma"] = (offset, (fan_out,))
                offset += fan_out
                entry["beta"] = (offset, (fan_out,))
                offset += fan_out
            self._slices.append(entry)
        self.params = np.zeros(offset, self.dtype)
        hidden_widths = self.sizes[1:-1]
        self.running_mean = [np.zeros(w, self.dtype) for w in hidden_widths]
        self.running_var = [np.ones(w, self.dtype) for w in hidden_widths]

    def _view(self, flat: Array, layer: int, name: str) -> Array:
        start, shape = self._slices[layer][name]
        return flat[start:start + int(np.prod(shape))].reshape(shape)

    def _initialise(self, rng: np.random.Generator) -> None:
        # Glorot-uniform weights, zero biases, gamma 1 and beta 0 (tests overwrite these).
        for layer in range(self.n_layers):
            fan_in, fan_out = self.sizes[layer], self.sizes[layer + 1]
            limit = math.sqrt(6 / (fan_in + fan_out))
            self._view(self.params, layer, "weight")[:] = rng.uniform(-limit, limit, (fan_in, fan_out))
            if "gamma" in self._slices[layer]:
                self._view(self.params, layer, "gamma")[:] = 1

    @property
    def weights(self) -> List[Array]:
        """Views of the weight matrices (fan_in, fan_out) in the flat buffer."""
        return [self._view(self.params, l, "weight") for l in range(self.n_layers)]

    @property
    def biases(self) -> List[Array]:
        """Views of the bias vectors (fan_out,) in the flat buffer."""
        return [self._view(self.params, l, "bias") for l in range(self.n_layers)]

    def weight_mask(self) -> Array:
        """True at the weight matrices of the flat buffer, False at biases, gamma and beta:
        where weight decay reaches when decay_biases is False."""
        mask = np.zeros(self.params.shape, dtype=bool)
        for layer in range(self.n_layers):
            start, (fan_in, fan_out) = self._slices[layer]["weight"]
            mask[start:start + fan_in * fan_out] = True
        return mask

    def set_flat_params(self, flat: ArrayLike) -> None:
        """Overwrite every parameter from a flat buffer of the same layout."""
        flat = np.asarray(flat, self.dtype)
        if flat.shape != self.params.shape:
            raise ValueError(f"flat params must have shape {self.params.shape}, got {flat.shape}")
        self.params[:] = flat

    # -- forward and backward -------------------------------------------------------------

    def _forward(self, x: ArrayLike, training: bool, update_running_stats: bool,
                 params: Optional[Array] = None) -> Tuple[Array, List[Dict[str, Array]]]:
        """Logits, plus what the backward needs per layer."""
        params = self.params if params is None else params
        saved = []
        a = np.asarray(x, self.dtype)
        for layer in range(self.n_layers):
            w = self._view(params, layer, "weight")
            b = self._view(params, layer, "bias")
            record = {"input": a}
            if not self._is_hidden(layer):
                z, logits = dense_forward(a, w, b, "identity", self.slope, self.bfloat16)
                saved.append(record)
                return logits, saved
            act = self.activations[layer]
            if self.batch_norm:
                dense_out, _ = dense_forward(a, w, b, "identity", self.slope, self.bfloat16)
                record["dense_out"] = dense_out
                z = self._batch_norm_forward(dense_out, layer, params, training,
                                             update_running_stats, record)
            else:
                z, _ = dense_forward(a, w, b, "identity", self.slope, self.bfloat16)
            a = activation_forward(z, act, self.slope)
            record["z"], record["y"] = z, a
            if training and self.dropout > 0:
                counter = (self.step + 1) * 1024 + layer
                a, record["mask"] = dropout_forward(a, self.dropout, self.seed, counter)
            saved.append(record)
        raise AssertionError("unreachable")

    def _batch_norm_forward(self, z: Array, layer: int, params: Array, training: bool,
                            update_running_stats: bool, record: Dict[str, Array]) -> Array:
        gamma = self._view(params, layer, "gamma")
        beta = self._view(params, layer, "beta")
        if not training:
            return batchnorm_forward_eval(z, gamma, beta, self.running_mean[layer],
                                          self.running_var[layer], self.batch_norm_eps)
        y, xhat, _, invstd, new_mean, new_var = batchnorm_forward_train(
            z, gamma, beta, self.running_mean[layer], self.running_var[layer],
            self.batch_norm_momentum, self.batch_norm_eps)
        if update_running_stats:
            self.running_mean[layer], self.running_var[layer] = new_mean, new_var
        record["xhat"], record["invstd"] = xhat, invstd
        return y

    def _loss(self, logits: Array, targets: ArrayLike,
              sample_weights: Optional[ArrayLike] = None) -> Tuple[Any, Array]:
        """(mean loss, d loss / d logits), the mean weighted by sample_weights (B,) when given;
        (0, zeros) when every row weighs 0 (Network: such a batch takes no step). cross_entropy
        takes labels (B,) or soft targets (B, C), the latter being what a mixup batch trains on."""
        s = None if sample_weights is None else np.asarray(sample_weights, self.dtype)
        if self._weighs_nothing(targets, s):
            return self.dtype.type(0), np.zeros_like(logits)
        if self.loss == "cross_entropy" and np.asarray(targets).ndim == 2:  # soft (mixup)
            loss, probs = softmax_xent_soft_forward(logits, targets, s)
            return loss, softmax_xent_soft_backward(probs, targets, s)
        if self.loss == "cross_entropy":
            loss, probs = softmax_xent_forward(logits, targets, self.class_weights,
                                               self.label_smoothing, s)
            return loss, softmax_xent_backward(probs, targets, self.class_weights,
                                               self.label_smoothing, s)
        targets = np.asarray(targets, self.dtype)
        if self.loss == "mse":
            return mse_forward(logits, targets, s), mse_backward(logits, targets, s)
        if self.loss == "bce":
            return bce_logits_forward(logits, targets, s), bce_logits_backward(logits, targets, s)
        if self.loss == "poisson":
            return poisson_nll_forward(logits, targets, s), poisson_nll_backward(logits, targets, s)
        return gaussian_nll_forward(logits, targets, s), gaussian_nll_backward(logits, targets, s)

    def _weighs_nothing(self, targets: ArrayLike, sample_weights: Optional[ArrayLike]) -> bool:
        """Whether every row of the batch weighs 0: its sample weight, times its class's weight
        for the cross-entropy with class weights and labels (torch's normaliser)."""
        s = np.ones(np.shape(targets)[0]) if sample_weights is None else np.asarray(sample_weights, np.float64)
        if self.loss == "cross_entropy" and self.class_weights is not None and np.asarray(targets).ndim == 1:
            s = s * np.asarray(self.class_weights, np.float64)[np.asarray(targets, np.int64)]
        return not s.any()

    def _backward(self, dlogits: Array, saved: List[Dict[str, Array]], params: Array,
                  training: bool) -> Array:
        """Flat gradients of the loss, from d loss / d logits and the forward's records."""
        grads = np.zeros_like(params)
        d = dlogits
        for layer in reversed(range(self.n_layers)):
            record = saved[layer]
            w = self._view(params, layer, "weight")
            if self._is_hidden(layer):
                if "mask" in record:
                    d = dropout_backward(d, record["mask"])
                d = activation_backward(d, record["z"], record["y"], self.activations[layer],
                                        self.slope)
                if self.batch_norm:
                    d = self._batch_norm_backward(d, layer, record, params, grads, training)
            dz = d  # gradient with respect to this layer's dense output
            dx, dw, db = dense_backward(dz, record["input"], w, dz, dz, "identity", self.slope,
                                        need_dx=layer > 0, bfloat16=self.bfloat16)
            self._view(grads, layer, "weight")[:] = dw
            self._view(grads, layer, "bias")[:] = db
            if dx is None:  # the first layer: no gradient for the network's input
                break
            d = dx
        return grads

    def _batch_norm_backward(self, d: Array, layer: int, record: Dict[str, Array], params: Array,
                             grads: Array, training: bool) -> Array:
        gamma = self._view(params, layer, "gamma")
        if training:
            dx, dgamma, dbeta = batchnorm_backward(d, record["xhat"], gamma, record["invstd"])
        else:
            # Evaluation mode is affine in the input: y = gamma * (x - mean) * s + beta.
            scale = 1 / np.sqrt(self.running_var[layer] + self.dtype.type(self.batch_norm_eps))
            xhat = (record["dense_out"] - self.running_mean[layer]) * scale
            dgamma, dbeta = (d * xhat).sum(axis=0), d.sum(axis=0)
            dx = d * gamma * scale
        self._view(grads, layer, "gamma")[:] = dgamma
        self._view(grads, layer, "beta")[:] = dbeta
        return dx

    # -- the public surface --------------------------------------------------------------

    def compute_gradients(self, x: ArrayLike, targets: ArrayLike, training: bool = False,
                          sample_weights: Optional[ArrayLike] = None) -> Tuple[Any, Array]:
        """(mean loss, flat gradients); running statistics are left unchanged."""
        logits, saved = self._forward(x, training, update_running_stats=False)
        loss, dlogits = self._loss(logits, targets, sample_weights)
        return loss, self._backward(dlogits, saved, self.params, training)

    def loss_and_gradient(self, flat_params: ArrayLike, x: ArrayLike, targets: ArrayLike,
                          sample_weights: Optional[ArrayLike] = None) -> Tuple[Any, Array]:
        """MLP.loss_and_gradient's mirror: flat_params become the parameters, then the
        full-batch (mean loss, flat gradient) without a step (what L-BFGS-B calls)."""
        self.set_flat_params(flat_params)
        return self.compute_gradients(x, targets, sample_weights=sample_weights)

    def loss_at(self, flat_params: ArrayLike, x: ArrayLike, targets: ArrayLike,
                training: bool = False, sample_weights: Optional[ArrayLike] = None) -> Any:
        """The mean loss with `flat_params` in place of the parameters (finite differences)."""
        logits, _ = self._forward(x, training, update_running_stats=False,
                                  params=np.asarray(flat_params, self.dtype))
        return self._loss(logits, targets, sample_weights)[0]

    def train_step(self, x: ArrayLike, targets: ArrayLike,
                   sample_weights: Optional[ArrayLike] = None) -> Any:
        """One optimizer step on one batch; returns the batch's mean loss before the step
        (no step when every row weighs 0: sample weights, times class weights)."""
        running = (list(self.running_mean), list(self.running_var))
        logits, saved = self._forward(x, training=True, update_running_stats=True)
        loss, dlogits = self._loss(logits, targets, sample_weights)
        if self._weighs_nothing(targets, sample_weights):
            self.running_mean, self.running_var = running  # a step not taken changes nothing
            return loss
        grads = self._backward(dlogits, saved, self.params, training=True)
        self.step += 1
        new_params, self.optimizer_state = optimizer_step(
            self.optimizer, self.optimizer_options, self.params, self.optimizer_state, grads,
            self.step, weight_mask=self.weight_mask())
        self.params[:] = new_params  # keep the buffer (and the views into it)
        return loss

    def predict(self, X: ArrayLike) -> Array:
        """Evaluation-mode outputs after the loss's link."""
        logits, _ = self._forward(X, training=False, update_running_stats=False)
        if self.loss == "cross_entropy":
            return softmax_forward(logits)
        if self.loss == "bce":
            return _sigmoid(logits)
        if self.loss == "poisson":
            return np.exp(logits)
        return logits

    def evaluate(self, X: ArrayLike, targets: ArrayLike,
                 sample_weights: Optional[ArrayLike] = None) -> Tuple[float, Optional[float]]:
        """(mean loss, accuracy) in evaluation mode, both weighted by sample_weights when
        given; accuracy is None for mse, gaussian_nll and poisson."""
        logits, _ = self._forward(X, training=False, update_running_stats=False)
        loss, _ = self._loss(logits, targets, sample_weights)
        return float(loss), self._accuracy(logits, targets, sample_weights)

    def _accuracy(self, logits: Array, targets: ArrayLike,
                  sample_weights: Optional[ArrayLike] = None) -> Optional[float]:
        if self.loss == "cross_entropy":
            row_correct = np.argmax(logits, axis=1) == np.asarray(targets)
        elif self.loss == "bce":
            row_correct = ((logits > 0) == (np.asarray(targets) >= 0.5)).all(axis=1)
        else:
            return None
        weights = None if sample_weights is None else np.asarray(sample_weights, np.float64)
        return float(np.average(row_correct, weights=weights))


# ---- classic learning rules: one epoch over the samples in `order` (fastmlp._classic_rules) ----
# The NumPy loops fastmlp.classic ran before the rules were compiled. The bias weight w0 comes
# first in `weights`; the new weights are returned (the compiled loops update in place). Python
# float steps keep a float32 array in float32, as the compiled loops do.


def perceptron_epoch(X: Array, y: Array, order: Array, weights: Array, lr: float) -> Tuple[Array, int]:
    """Perceptron rule: (new weights, number of mistakes)."""
    weights = np.array(weights, copy=True)
    mistakes = 0
    for i in order:
        net = weights[0] + X[i] @ weights[1:]
        error = int(y[i]) - (1 if net >= 0 else 0)
        if error != 0:
            step = float(lr * error)
            weights[0] += step
            weights[1:] += step * X[i]
            mistakes += 1
    return weights, mistakes


def perceptron_mistakes(X: Array, y: Array, weights: Array) -> int:
    """How many rows of X the weights ``[w0, w]`` misclassify."""
    predictions = (weights[0] + X @ weights[1:] >= 0).astype(np.int64)
    return int(np.sum(predictions != np.asarray(y)))


def adaline_online_epoch(X: Array, targets: Array, order: Array, weights: Array, lr: float) -> Array:
    """LMS rule ``w += 2 lr (t_i - z_i) [1, x_i]``: the new weights."""
    weights = np.array(weights, copy=True)
    for i in order:
        error = targets[i] - (weights[0] + X[i] @ weights[1:])
        step = _cast(lr * 2.0, weights) * error
        weights[0] += step
        weights[1:] += step * X[i]
    return weights


def hebb_epoch(X: Array, order: Array, weights: Array, lr: float) -> Array:
    """Plain Hebb ``W += lr * outer(x, x @ W)``: the new weights."""
    weights = np.array(weights, copy=True)
    for i in order:
        weights += lr * np.outer(X[i], X[i] @ weights)
    return weights


def oja_epoch(X: Array, order: Array, weights: Array, lr: float) -> Array:
    """Oja's subspace rule ``W += lr * outer(x - W @ y, y)`` with ``y = x @ W``: the new weights."""
    weights = np.array(weights, copy=True)
    for i in order:
        outputs = X[i] @ weights
        weights += lr * np.outer(X[i] - weights @ outputs, outputs)
    return weights


def sanger_epoch(X: Array, order: Array, weights: Array, lr: float) -> Array:
    """Sanger's rule ``W += lr * (x - cumsum(W * y, axis=1)) * y``: the new weights."""
    weights = np.array(weights, copy=True)
    for i in order:
        outputs = X[i] @ weights
        reconstruction = np.cumsum(weights * outputs, axis=1)
        weights += lr * (X[i][:, None] - reconstruction) * outputs
    return weights


def linear_regression_online_epoch(x: Array, y: Array, order: Array, line: Array, lr: float) -> Array:
    """Per-sample gradient descent on ``(y_i - w x_i - b)^2``: the new ``[w, b]``."""
    line = np.array(line, copy=True)
    for i in order:
        residual = y[i] - line[0] * x[i] - line[1]
        line[0] -= lr * (-2.0 * residual * x[i])
        line[1] -= lr * (-2.0 * residual)
    return line
