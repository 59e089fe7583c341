// One update kernel per optimizer over the flat parameter buffer, torch.optim's formulas
// (kernels.h gives each one). Every element is independent, so the loops split freely.
#include <algorithm>
#include <cmath>

#include <omp.h>

#include "gemm_internal.h"
#include "kernels.h"
#include "optim_loops.h"

namespace fastmlp {

namespace {
inline int update_threads(int64_t n) { return threads_for(static_cast<double>(n) * 16.0); }
}  // namespace

template <typename T>
void sgd_update(T* params, T* momentum_buffer, const T* grads, int64_t n, T lr, T momentum,
                T dampening, bool nesterov, T weight_decay, int64_t step) {
    const bool first_step = step <= 1;
#pragma omp parallel for schedule(static) num_threads(update_threads(n)) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
        T g = grads[i] + weight_decay * params[i];
        if (momentum != 0) {
            T& buf = momentum_buffer[i];
            buf = first_step ? g : momentum * buf + (T(1) - dampening) * g;
            g = nesterov ? g + momentum * buf : buf;
        }
        params[i] -= lr * g;
    }
}

template <typename T>
void adagrad_update(T* params, T* state_sum, const T* grads, int64_t n, T lr, T lr_decay,
                    T weight_decay, T eps, int64_t step) {
    const T clr = lr / (T(1) + static_cast<T>(step - 1) * lr_decay);
#pragma omp parallel for schedule(static) num_threads(update_threads(n)) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
        const T g = grads[i] + weight_decay * params[i];
        state_sum[i] += g * g;
        params[i] -= clr * g / (std::sqrt(state_sum[i]) + eps);
    }
}

template <typename T>
void adadelta_update(T* params, T* square_avg, T* acc_delta, const T* grads, int64_t n, T lr,
                     T rho, T eps, T weight_decay) {
#pragma omp parallel for schedule(static) num_threads(update_threads(n)) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
        const T g = grads[i] + weight_decay * params[i];
        square_avg[i] = rho * square_avg[i] + (T(1) - rho) * g * g;
        const T delta = std::sqrt(acc_delta[i] + eps) / std::sqrt(square_avg[i] + eps) * g;
        acc_delta[i] = rho * acc_delta[i] + (T(1) - rho) * delta * delta;
        params[i] -= lr * delta;
    }
}

template <typename T>
void rmsprop_update(T* params, T* square_avg, T* grad_avg, T* momentum_buffer, const T* grads,
                    int64_t n, T lr, T alpha, T eps, T weight_decay, T momentum, bool centered) {
#pragma omp parallel for schedule(static) num_threads(update_threads(n)) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
        const T g = grads[i] + weight_decay * params[i];
        square_avg[i] = alpha * square_avg[i] + (T(1) - alpha) * g * g;
        T avg;
        if (centered) {
            grad_avg[i] = alpha * grad_avg[i] + (T(1) - alpha) * g;
            avg = std::sqrt(square_avg[i] - grad_avg[i] * grad_avg[i]) + eps;
        } else {
            avg = std::sqrt(square_avg[i]) + eps;
        }
        if (momentum > 0) {
            momentum_buffer[i] = momentum * momentum_buffer[i] + g / avg;
            params[i] -= lr * momentum_buffer[i];
        } else {
            params[i] -= lr * g / avg;
        }
    }
}

namespace {

// The optimizer loops follow the GEMM's instruction set (all builds give the same bits).
const optim_detail::AdamLoops<float>& active_adam_loops(float) {
    static const auto portable = optim_detail::adam_loops_of_this_isa<float>();
    switch (gemm_detail::active_isa()) {
        case gemm_detail::Isa::avx512: return optim_detail::avx512_adam_loops_float();
        case gemm_detail::Isa::avx2: return optim_detail::avx2_adam_loops_float();
        default: return portable;
    }
}
const optim_detail::AdamLoops<double>& active_adam_loops(double) {
    static const auto portable = optim_detail::adam_loops_of_this_isa<double>();
    switch (gemm_detail::active_isa()) {
        case gemm_detail::Isa::avx512: return optim_detail::avx512_adam_loops_double();
        case gemm_detail::Isa::avx2: return optim_detail::avx2_adam_loops_double();
        default: return portable;
    }
}

}  // namespace

template <typename T>
void adam_update(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const T* grads,
                 int64_t n, T lr, T beta1, T beta2, T eps, T weight_decay, bool amsgrad,
                 bool decoupled_weight_decay, int64_t step) {
    // Bias corrections in double: beta^step underflows gracefully and stays exact longer.
    const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
    const optim_detail::AdamStep<T> s{beta1, beta2, eps, weight_decay,
                                      static_cast<T>(lr / bias_correction1),
                                      static_cast<T>(std::sqrt(bias_correction2)),
                                      T(1) - lr * weight_decay};
    const optim_detail::AdamLoop<T> loop = active_adam_loops(T())
                                               .variant[amsgrad][decoupled_weight_decay];
    const int threads = n > 32768 ? update_threads(n) : 1;
    if (threads <= 1) return loop(params, exp_avg, exp_avg_sq, max_exp_avg_sq, grads, n, s);
#pragma omp parallel num_threads(threads)
    {
        // Shares in whole cache lines; every element is independent, so the split does not
        // change any bits.
        constexpr int64_t LINE = 64 / sizeof(T);
        const int64_t lines = (n + LINE - 1) / LINE, parts = omp_get_num_threads();
        const int64_t part = omp_get_thread_num();
        const int64_t begin = std::min(n, lines * part / parts * LINE);
        const int64_t end = std::min(n, lines * (part + 1) / parts * LINE);
        if (end > begin)
            loop(params + begin, exp_avg + begin, exp_avg_sq + begin,
                 max_exp_avg_sq ? max_exp_avg_sq + begin : nullptr, grads + begin, end - begin, s);
    }
}

#define FASTMLP_INSTANTIATE(T)                                                                \
    template void sgd_update<T>(T*, T*, const T*, int64_t, T, T, T, bool, T, int64_t);         \
    template void adagrad_update<T>(T*, T*, const T*, int64_t, T, T, T, T, int64_t);           \
    template void adadelta_update<T>(T*, T*, T*, const T*, int64_t, T, T, T, T);               \
    template void rmsprop_update<T>(T*, T*, T*, T*, const T*, int64_t, T, T, T, T, T, bool);   \
    template void adam_update<T>(T*, T*, T*, T*, const T*, int64_t, T, T, T, T, T, bool, bool, \
                                 int64_t);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
