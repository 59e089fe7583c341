// Losses, forward and backward side by side: fused softmax + cross-entropy (integer labels
// with optional class weights and label smoothing, or soft targets), MSE, BCE with logits,
// Gaussian NLL. Batch sums are accumulated in double, in index order (deterministic).
#include <algorithm>
#include <cmath>

#include "activation_math.h"
#include "kernels.h"

namespace fastmlp {

namespace {

// probs[i, :] = softmax(logits[i, :]); returns log(sum(exp(logits - max))) + max, the
// row's log-partition, so that logp = logits - log_partition.
template <typename T>
double softmax_row(T* probs, const T* logits, int64_t C) {
    T row_max = logits[0];
    for (int64_t c = 1; c < C; ++c) row_max = std::max(row_max, logits[c]);
    // The shifted logits, then exp of the row in one vectorised call (probs may alias logits).
    for (int64_t c = 0; c < C; ++c) probs[c] = logits[c] - row_max;
    activation_math::active_elementwise_loops<T>().exp_row(probs, probs, C);
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += probs[c];
    const T inverse = static_cast<T>(1.0 / sum);
    for (int64_t c = 0; c < C; ++c) probs[c] *= inverse;
    return std::log(sum) + static_cast<double>(row_max);
}

template <typename T>
inline T class_weight(const T* class_weights, int64_t c) {
    return class_weights ? class_weights[c] : T(1);
}

// W = sum_i w[y_i], the normaliser of torch's weighted mean.
template <typename T>
double label_weight_sum(const int64_t* labels, const T* class_weights, int64_t B) {
    if (!class_weights) return static_cast<double>(B);
    double sum = 0;
    for (int64_t i = 0; i < B; ++i) sum += class_weights[labels[i]];
    return sum;
}

template <typename T>
double all_class_weight_sum(const T* class_weights, int64_t C) {
    if (!class_weights) return static_cast<double>(C);
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += class_weights[c];
    return sum;
}

template <typename T>
inline T stable_sigmoid(T x) {
    if (x >= 0) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
}

}  // namespace

template <typename T>
void softmax_forward(T* probs, const T* logits, int64_t B, int64_t C) {
#pragma omp parallel for schedule(static) num_threads(threads_for(double(B) * C * 20)) if (B > 64)
    for (int64_t i = 0; i < B; ++i) softmax_row(probs + i * C, logits + i * C, C);
}

template <typename T>
void softmax_xent_forward(T* loss, T* probs, const T* logits, const int64_t* labels,
                          const T* class_weights, T label_smoothing, int64_t B, int64_t C) {
    const double eps = label_smoothing;
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const T* row = logits + i * C;
        const double log_partition = softmax_row(probs + i * C, row, C);
        const int64_t y = labels[i];
        total += (1.0 - eps) * class_weight(class_weights, y) * (log_partition - row[y]);
        if (eps != 0) {
            double smooth = 0;
            for (int64_t c = 0; c < C; ++c)
                smooth += class_weight(class_weights, c) * (log_partition - row[c]);
            total += eps / static_cast<double>(C) * smooth;
        }
    }
    *loss = static_cast<T>(total / label_weight_sum(labels, class_weights, B));
}

template <typename T>
void softmax_xent_backward(T* dlogits, const T* probs, const int64_t* labels,
                           const T* class_weights, T label_smoothing, int64_t B, int64_t C) {
    const double eps = label_smoothing;
    const double inverse_w = 1.0 / label_weight_sum(labels, class_weights, B);
    const double smooth_scale = eps / static_cast<double>(C);
    const double weights_total = all_class_weight_sum(class_weights, C);
    for (int64_t i = 0; i < B; ++i) {
        const T* p = probs + i * C;
        T* d = dlogits + i * C;
        const int64_t y = labels[i];
        const double hard = (1.0 - eps) * class_weight(class_weights, y);
        for (int64_t c = 0; c < C; ++c) {
            double g = hard * (p[c] - (c == y ? 1.0 : 0.0));
            if (eps != 0) g += smooth_scale * (p[c] * weights_total - class_weight(class_weights, c));
            d[c] = static_cast<T>(g * inverse_w);
        }
    }
}

template <typename T>
void softmax_xent_soft_forward(T* loss, T* probs, const T* logits, const T* targets, int64_t B,
                               int64_t C) {
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const T* row = logits + i * C;
        const double log_partition = softmax_row(probs + i * C, row, C);
        for (int64_t c = 0; c < C; ++c) total += targets[i * C + c] * (log_partition - row[c]);
    }
    *loss = static_cast<T>(total / static_cast<double>(B));
}

template <typename T>
void softmax_xent_soft_backward(T* dlogits, const T* probs, const T* targets, int64_t B,
                                int64_t C) {
    const T inverse_b = static_cast<T>(1.0 / static_cast<double>(B));
    for (int64_t i = 0; i < B * C; ++i) dlogits[i] = (probs[i] - targets[i]) * inverse_b;
}

template <typename T>
void mse_forward(T* loss, const T* pred, const T* target, int64_t n) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double diff = static_cast<double>(pred[i]) - target[i];
        total += diff * diff;
    }
    *loss = static_cast<T>(total / static_cast<double>(n));
}

template <typename T>
void mse_backward(T* dpred, const T* pred, const T* target, int64_t n) {
    const T scale = static_cast<T>(2.0 / static_cast<double>(n));
    for (int64_t i = 0; i < n; ++i) dpred[i] = scale * (pred[i] - target[i]);
}

template <typename T>
void bce_logits_forward(T* loss, const T* logits, const T* target, int64_t n) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double z = logits[i];
        total += std::max(z, 0.0) - z * target[i] + std::log1p(std::exp(-std::fabs(z)));
    }
    *loss = static_cast<T>(total / static_cast<double>(n));
}

template <typename T>
void bce_logits_backward(T* dlogits, const T* logits, const T* target, int64_t n) {
    const T inverse_n = static_cast<T>(1.0 / static_cast<double>(n));
    for (int64_t i = 0; i < n; ++i) dlogits[i] = (stable_sigmoid(logits[i]) - target[i]) * inverse_n;
}

template <typename T>
void gaussian_nll_forward(T* loss, const T* out, const T* target, int64_t B, int64_t D) {
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const T* mean = out + i * 2 * D;
        const T* log_var = mean + D;
        for (int64_t j = 0; j < D; ++j) {
            const double diff = static_cast<double>(target[i * D + j]) - mean[j];
            total += 0.5 * (log_var[j] + diff * diff * std::exp(-static_cast<double>(log_var[j])));
        }
    }
    *loss = static_cast<T>(total / static_cast<double>(B * D));
}

template <typename T>
void gaussian_nll_backward(T* dout, const T* out, const T* target, int64_t B, int64_t D) {
    const double inverse_n = 1.0 / static_cast<double>(B * D);
    for (int64_t i = 0; i < B; ++i) {
        const T* mean = out + i * 2 * D;
        const T* log_var = mean + D;
        T* d_mean = dout + i * 2 * D;
        T* d_log_var = d_mean + D;
        for (int64_t j = 0; j < D; ++j) {
            const double diff = static_cast<double>(target[i * D + j]) - mean[j];
            const double precision = std::exp(-static_cast<double>(log_var[j]));
            d_mean[j] = static_cast<T>(-diff * precision * inverse_n);
            d_log_var[j] = static_cast<T>(0.5 * (1.0 - diff * diff * precision) * inverse_n);
        }
    }
}

#define FASTMLP_INSTANTIATE(T)                                                                \
    template void softmax_forward<T>(T*, const T*, int64_t, int64_t);                         \
    template void softmax_xent_forward<T>(T*, T*, const T*, const int64_t*, const T*, T,       \
                                          int64_t, int64_t);                                   \
    template void softmax_xent_backward<T>(T*, const T*, const int64_t*, const T*, T, int64_t, \
                                           int64_t);                                           \
    template void softmax_xent_soft_forward<T>(T*, T*, const T*, const T*, int64_t, int64_t);  \
    template void softmax_xent_soft_backward<T>(T*, const T*, const T*, int64_t, int64_t);     \
    template void mse_forward<T>(T*, const T*, const T*, int64_t);                             \
    template void mse_backward<T>(T*, const T*, const T*, int64_t);                            \
    template void bce_logits_forward<T>(T*, const T*, const T*, int64_t);                      \
    template void bce_logits_backward<T>(T*, const T*, const T*, int64_t);                     \
    template void gaussian_nll_forward<T>(T*, const T*, const T*, int64_t, int64_t);           \
    template void gaussian_nll_backward<T>(T*, const T*, const T*, int64_t, int64_t);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
