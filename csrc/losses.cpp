// Losses, forward and backward side by side: fused softmax + cross-entropy (integer labels
// with optional class weights and label smoothing, or soft targets), MSE, BCE with logits,
// Gaussian NLL, Poisson NLL with a log link. Batch sums are accumulated in double, in index order (deterministic).
// Every loss takes optional per-row sample weights s (null: all ones) and is then the
// weighted mean sum_i s_i * loss_i / sum_i s_i; a null pointer and all-ones weights run the
// same arithmetic (a multiplication by 1 is exact), so they give the same bits.
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

// s_i, the sample weight of row i (1 when there are none).
template <typename T>
inline double sample_weight(const T* sample_weights, int64_t i) {
    return sample_weights ? static_cast<double>(sample_weights[i]) : 1.0;
}

// sum_i s_i, in row order: B exactly when there are no weights or all are 1.
template <typename T>
double sample_weight_sum(const T* sample_weights, int64_t B) {
    if (!sample_weights) return static_cast<double>(B);
    double sum = 0;
    for (int64_t i = 0; i < B; ++i) sum += sample_weights[i];
    return sum;
}

template <typename T>
inline T class_weight(const T* class_weights, int64_t c) {
    return class_weights ? class_weights[c] : T(1);
}

// W = sum_i s_i * w[y_i], the normaliser of torch's weighted mean (each row weighs its sample
// weight times its class's weight).
template <typename T>
double label_weight_sum(const int64_t* labels, const T* class_weights, const T* sample_weights,
                        int64_t B) {
    if (!class_weights) return sample_weight_sum(sample_weights, B);
    double sum = 0;
    for (int64_t i = 0; i < B; ++i) sum += sample_weight(sample_weights, i) * class_weights[labels[i]];
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
    const int threads = B > 64 ? threads_for(double(B) * C * 20) : 1;
    if (threads <= 1) {  // no OpenMP region: entering one wakes the idle team (a futex call)
        for (int64_t i = 0; i < B; ++i) softmax_row(probs + i * C, logits + i * C, C);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < B; ++i) softmax_row(probs + i * C, logits + i * C, C);
}

template <typename T>
void softmax_xent_forward(T* loss, T* probs, const T* logits, const int64_t* labels,
                          const T* class_weights, const T* sample_weights, T label_smoothing,
                          int64_t B, int64_t C) {
    const double eps = label_smoothing;
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const T* row = logits + i * C;
        const double log_partition = softmax_row(probs + i * C, row, C);
        const int64_t y = labels[i];
        const double s = sample_weight(sample_weights, i);
        total += s * ((1.0 - eps) * class_weight(class_weights, y) * (log_partition - row[y]));
        if (eps != 0) {
            double smooth = 0;
            for (int64_t c = 0; c < C; ++c)
                smooth += class_weight(class_weights, c) * (log_partition - row[c]);
            total += s * (eps / static_cast<double>(C) * smooth);
        }
    }
    *loss = static_cast<T>(total / label_weight_sum(labels, class_weights, sample_weights, B));
}

template <typename T>
void softmax_xent_backward(T* dlogits, const T* probs, const int64_t* labels,
                           const T* class_weights, const T* sample_weights, T label_smoothing,
                           int64_t B, int64_t C) {
    const double eps = label_smoothing;
    const double inverse_w = 1.0 / label_weight_sum(labels, class_weights, sample_weights, B);
    const double smooth_scale = eps / static_cast<double>(C);
    const double weights_total = all_class_weight_sum(class_weights, C);
    for (int64_t i = 0; i < B; ++i) {
        const T* p = probs + i * C;
        T* d = dlogits + i * C;
        const int64_t y = labels[i];
        const double s = sample_weight(sample_weights, i);
        const double hard = (1.0 - eps) * class_weight(class_weights, y);
        for (int64_t c = 0; c < C; ++c) {
            double g = hard * (p[c] - (c == y ? 1.0 : 0.0));
            if (eps != 0) g += smooth_scale * (p[c] * weights_total - class_weight(class_weights, c));
            d[c] = static_cast<T>(s * g * inverse_w);
        }
    }
}

template <typename T>
void softmax_xent_soft_forward(T* loss, T* probs, const T* logits, const T* targets,
                               const T* sample_weights, int64_t B, int64_t C) {
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const T* row = logits + i * C;
        const double log_partition = softmax_row(probs + i * C, row, C);
        const double s = sample_weight(sample_weights, i);
        for (int64_t c = 0; c < C; ++c) total += s * (targets[i * C + c] * (log_partition - row[c]));
    }
    *loss = static_cast<T>(total / sample_weight_sum(sample_weights, B));
}

template <typename T>
void softmax_xent_soft_backward(T* dlogits, const T* probs, const T* targets,
                                const T* sample_weights, int64_t B, int64_t C) {
    const double inverse_w = 1.0 / sample_weight_sum(sample_weights, B);
    for (int64_t i = 0; i < B; ++i) {
        const T scale = static_cast<T>(sample_weight(sample_weights, i) * inverse_w);
        for (int64_t c = 0; c < C; ++c) dlogits[i * C + c] = (probs[i * C + c] - targets[i * C + c]) * scale;
    }
}

template <typename T>
void mse_forward(T* loss, const T* pred, const T* target, const T* sample_weights, int64_t B,
                 int64_t D) {
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const double s = sample_weight(sample_weights, i);
        for (int64_t j = i * D; j < (i + 1) * D; ++j) {
            const double diff = static_cast<double>(pred[j]) - target[j];
            total += s * (diff * diff);
        }
    }
    *loss = static_cast<T>(total / (sample_weight_sum(sample_weights, B) * static_cast<double>(D)));
}

template <typename T>
void mse_backward(T* dpred, const T* pred, const T* target, const T* sample_weights, int64_t B,
                  int64_t D) {
    const double denominator = sample_weight_sum(sample_weights, B) * static_cast<double>(D);
    for (int64_t i = 0; i < B; ++i) {
        const T scale = static_cast<T>(2.0 * sample_weight(sample_weights, i) / denominator);
        for (int64_t j = i * D; j < (i + 1) * D; ++j) dpred[j] = scale * (pred[j] - target[j]);
    }
}

template <typename T>
void bce_logits_forward(T* loss, const T* logits, const T* target, const T* sample_weights,
                        int64_t B, int64_t C) {
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const double s = sample_weight(sample_weights, i);
        for (int64_t j = i * C; j < (i + 1) * C; ++j) {
            const double z = logits[j];
            total += s * (std::max(z, 0.0) - z * target[j] + std::log1p(std::exp(-std::fabs(z))));
        }
    }
    *loss = static_cast<T>(total / (sample_weight_sum(sample_weights, B) * static_cast<double>(C)));
}

template <typename T>
void bce_logits_backward(T* dlogits, const T* logits, const T* target, const T* sample_weights,
                         int64_t B, int64_t C) {
    const double denominator = sample_weight_sum(sample_weights, B) * static_cast<double>(C);
    for (int64_t i = 0; i < B; ++i) {
        const T scale = static_cast<T>(sample_weight(sample_weights, i) / denominator);
        for (int64_t j = i * C; j < (i + 1) * C; ++j)
            dlogits[j] = (stable_sigmoid(logits[j]) - target[j]) * scale;
    }
}

template <typename T>
void gaussian_nll_forward(T* loss, const T* out, const T* target, const T* sample_weights,
                          int64_t B, int64_t D) {
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const T* mean = out + i * 2 * D;
        const T* log_var = mean + D;
        const double s = sample_weight(sample_weights, i);
        for (int64_t j = 0; j < D; ++j) {
            const double diff = static_cast<double>(target[i * D + j]) - mean[j];
            total += s * (0.5 * (log_var[j] + diff * diff * std::exp(-static_cast<double>(log_var[j]))));
        }
    }
    *loss = static_cast<T>(total / (sample_weight_sum(sample_weights, B) * static_cast<double>(D)));
}

template <typename T>
void gaussian_nll_backward(T* dout, const T* out, const T* target, const T* sample_weights,
                           int64_t B, int64_t D) {
    const double denominator = sample_weight_sum(sample_weights, B) * static_cast<double>(D);
    for (int64_t i = 0; i < B; ++i) {
        const T* mean = out + i * 2 * D;
        const T* log_var = mean + D;
        T* d_mean = dout + i * 2 * D;
        T* d_log_var = d_mean + D;
        const double scale = sample_weight(sample_weights, i) / denominator;
        for (int64_t j = 0; j < D; ++j) {
            const double diff = static_cast<double>(target[i * D + j]) - mean[j];
            const double precision = std::exp(-static_cast<double>(log_var[j]));
            d_mean[j] = static_cast<T>(-diff * precision * scale);
            d_log_var[j] = static_cast<T>(0.5 * (1.0 - diff * diff * precision) * scale);
        }
    }
}

template <typename T>
void poisson_nll_forward(T* loss, const T* log_mean, const T* target, const T* sample_weights,
                         int64_t B, int64_t D) {
    double total = 0;
    for (int64_t i = 0; i < B; ++i) {
        const double s = sample_weight(sample_weights, i);
        for (int64_t j = i * D; j < (i + 1) * D; ++j) {
            // In double: exp overflows only past z ~ 709, and then to +inf, which the caller
            // sees as a non-finite loss (on_nan), never as a trap.
            const double z = log_mean[j];
            total += s * (std::exp(z) - static_cast<double>(target[j]) * z);
        }
    }
    *loss = static_cast<T>(total / (sample_weight_sum(sample_weights, B) * static_cast<double>(D)));
}

template <typename T>
void poisson_nll_backward(T* dlog_mean, const T* log_mean, const T* target, const T* sample_weights,
                          int64_t B, int64_t D) {
    const double denominator = sample_weight_sum(sample_weights, B) * static_cast<double>(D);
    for (int64_t i = 0; i < B; ++i) {
        const double scale = sample_weight(sample_weights, i) / denominator;
        for (int64_t j = i * D; j < (i + 1) * D; ++j) {
            const double mean = std::exp(static_cast<double>(log_mean[j]));
            dlog_mean[j] = static_cast<T>((mean - static_cast<double>(target[j])) * scale);
        }
    }
}

#define FASTMLP_INSTANTIATE(T)                                                                 \
    template void softmax_forward<T>(T*, const T*, int64_t, int64_t);                          \
    template void softmax_xent_forward<T>(T*, T*, const T*, const int64_t*, const T*, const T*, \
                                          T, int64_t, int64_t);                                 \
    template void softmax_xent_backward<T>(T*, const T*, const int64_t*, const T*, const T*, T, \
                                           int64_t, int64_t);                                   \
    template void softmax_xent_soft_forward<T>(T*, T*, const T*, const T*, const T*, int64_t,   \
                                               int64_t);                                        \
    template void softmax_xent_soft_backward<T>(T*, const T*, const T*, const T*, int64_t,      \
                                                int64_t);                                       \
    template void mse_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t);           \
    template void mse_backward<T>(T*, const T*, const T*, const T*, int64_t, int64_t);          \
    template void bce_logits_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t);    \
    template void bce_logits_backward<T>(T*, const T*, const T*, const T*, int64_t, int64_t);   \
    template void gaussian_nll_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t);  \
    template void gaussian_nll_backward<T>(T*, const T*, const T*, const T*, int64_t, int64_t); \
    template void poisson_nll_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t);   \
    template void poisson_nll_backward<T>(T*, const T*, const T*, const T*, int64_t, int64_t);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
