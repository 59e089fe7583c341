// Layers, forward and backward side by side: dense (GEMM + bias + activation), inverted
// dropout with counter-based masks, and batch normalisation.
#include <cmath>

#include "kernels.h"

namespace fastmlp {

// ---- dense --------------------------------------------------------------------------------

template <typename T>
void dense_forward(T* z, T* y, const T* x, const T* w, const T* b, int64_t B, int64_t IN,
                   int64_t OUT, Activation act, T slope, bool bfloat16_operands,
                   PackedBfloat16B bfloat16_weights, PackedFloat32B float32_weights) {
    // Bias and activation are applied to each tile of x @ w as the GEMM finishes it.
    GemmEpilogue<T> epilogue;
    epilogue.kind = GemmEpilogueKind::bias_activation;
    epilogue.activation = act;
    epilogue.slope = slope;
    epilogue.bias = b;
    epilogue.pre_activation = z != y ? z : nullptr;
    if constexpr (std::is_same_v<T, float>) {
        if (bfloat16_operands && bfloat16_weights.data)
            return gemm_bfloat16_packed_b(y, x, bfloat16_weights, B, OUT, IN, false, false, epilogue);
        if (!bfloat16_operands && float32_weights.data)
            return gemm_fused_packed_b(y, x, w, float32_weights, B, OUT, IN, epilogue);
    }
    gemm_fused_in(bfloat16_operands, y, x, w, B, OUT, IN, false, false, false, epilogue);
}

template <typename T>
void dense_backward(T* dx, T* dw, T* db, T* dz, const T* dy, const T* x, const T* w, const T* z,
                    const T* y, int64_t B, int64_t IN, int64_t OUT, Activation act, T slope) {
    activation_backward(dz, dy, z, y, B * OUT, act, slope);
    // db is summed over the rows of dz in row order while dz is packed for dw = x^T dz.
    GemmEpilogue<T> with_bias_gradient;
    with_bias_gradient.b_column_sums = db;
    gemm_fused(dw, x, dz, IN, OUT, B, /*transpose_a=*/true, false, false, with_bias_gradient);
    if (dx) gemm(dx, dz, w, B, IN, OUT, false, /*transpose_b=*/true, false);
}

// ---- counter-based random numbers ------------------------------------------------------------

namespace {
inline uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
}  // namespace

uint64_t random_bits(uint64_t seed, uint64_t counter, uint64_t index) {
    return mix(mix(mix(seed) ^ counter) ^ index);
}

double random_uniform(uint64_t seed, uint64_t counter, uint64_t index) {
    return static_cast<double>(random_bits(seed, counter, index) >> 11) * 0x1.0p-53;
}

// ---- dropout ----------------------------------------------------------------------------------

template <typename T>
void dropout_forward(T* y, T* mask, const T* x, int64_t n, T p, uint64_t seed, uint64_t counter) {
    const T keep_scale = T(1) / (T(1) - p);
    const uint64_t stream = mix(mix(seed) ^ counter);  // hoisted part of random_bits
#pragma omp parallel for schedule(static) num_threads(threads_for(double(n) * 8)) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
        const double u = static_cast<double>(mix(stream ^ static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
        mask[i] = u >= static_cast<double>(p) ? keep_scale : T(0);
        y[i] = x[i] * mask[i];
    }
}

template <typename T>
void dropout_backward(T* dx, const T* dy, const T* mask, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * mask[i];
}

// ---- batch normalisation ------------------------------------------------------------------------

template <typename T>
void batchnorm_forward_train(T* y, T* xhat, T* mean, T* invstd, T* running_mean, T* running_var,
                             const T* x, const T* gamma, const T* beta, int64_t B, int64_t F,
                             T momentum, T eps) {
    // Row-major sweeps (contiguous) accumulate per-feature sums in row order; invstd holds
    // the variance sum until it is turned into 1 / sqrt(var + eps).
    for (int64_t f = 0; f < F; ++f) mean[f] = invstd[f] = 0;
    for (int64_t i = 0; i < B; ++i)
        for (int64_t f = 0; f < F; ++f) mean[f] += x[i * F + f];
    for (int64_t f = 0; f < F; ++f) mean[f] /= static_cast<T>(B);
    for (int64_t i = 0; i < B; ++i)
        for (int64_t f = 0; f < F; ++f) {
            const T d = x[i * F + f] - mean[f];
            invstd[f] += d * d;
        }
    const T unbias = static_cast<T>(B) / static_cast<T>(B - 1);
    for (int64_t f = 0; f < F; ++f) {
        const T var = invstd[f] / static_cast<T>(B);
        running_mean[f] = (T(1) - momentum) * running_mean[f] + momentum * mean[f];
        running_var[f] = (T(1) - momentum) * running_var[f] + momentum * var * unbias;
        invstd[f] = T(1) / std::sqrt(var + eps);
    }
    for (int64_t i = 0; i < B; ++i)
        for (int64_t f = 0; f < F; ++f) {
            const T normalised = (x[i * F + f] - mean[f]) * invstd[f];
            xhat[i * F + f] = normalised;
            y[i * F + f] = gamma[f] * normalised + beta[f];
        }
}

template <typename T>
void batchnorm_forward_eval(T* y, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, int64_t B, int64_t F,
                            T eps) {
    for (int64_t i = 0; i < B; ++i)
        for (int64_t f = 0; f < F; ++f)
            y[i * F + f] = gamma[f] * (x[i * F + f] - running_mean[f]) /
                               std::sqrt(running_var[f] + eps) + beta[f];
}

template <typename T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* xhat, const T* gamma,
                        const T* invstd, int64_t B, int64_t F) {
    for (int64_t f = 0; f < F; ++f) dgamma[f] = dbeta[f] = 0;
    for (int64_t i = 0; i < B; ++i)
        for (int64_t f = 0; f < F; ++f) {
            dbeta[f] += dy[i * F + f];
            dgamma[f] += dy[i * F + f] * xhat[i * F + f];
        }
    const T rows = static_cast<T>(B);
    for (int64_t i = 0; i < B; ++i)
        for (int64_t f = 0; f < F; ++f)
            dx[i * F + f] = gamma[f] * invstd[f] / rows *
                            (rows * dy[i * F + f] - dbeta[f] - xhat[i * F + f] * dgamma[f]);
}

#define FASTMLP_INSTANTIATE(T)                                                                 \
    template void dense_forward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,      \
                                   int64_t, Activation, T, bool, PackedBfloat16B, PackedFloat32B); \
    template void dense_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*,     \
                                    const T*, int64_t, int64_t, int64_t, Activation, T);        \
    template void dropout_forward<T>(T*, T*, const T*, int64_t, T, uint64_t, uint64_t);         \
    template void dropout_backward<T>(T*, const T*, const T*, int64_t);                         \
    template void batchnorm_forward_train<T>(T*, T*, T*, T*, T*, T*, const T*, const T*,        \
                                             const T*, int64_t, int64_t, T, T);                 \
    template void batchnorm_forward_eval<T>(T*, const T*, const T*, const T*, const T*,         \
                                            const T*, int64_t, int64_t, T);                     \
    template void batchnorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,     \
                                        int64_t, int64_t);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
