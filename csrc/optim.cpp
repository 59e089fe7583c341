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

using optim_detail::UpdateLoop;
using optim_detail::UpdateLoops;
using optim_detail::UpdateScalars;

// The update scan of this thread's innermost OptimizerStateScan (kernels.h), if any.
thread_local OptimizerStateScan* g_current_scan = nullptr;

// Whether this thread's float kernels look at their states (behind the subnormal guard).
bool scanning() { return !g_current_scan || g_current_scan->check; }

// The loops follow the GEMM's instruction set (all builds give the same bits).
const UpdateLoops<float>& active_loops(float) {
    static const auto portable = optim_detail::update_loops_of_this_isa<float>(false);
    static const auto portable_guarded = optim_detail::update_loops_of_this_isa<float>(true);
    const bool guarded = scanning();
    switch (gemm_detail::active_float_isa()) {
#if FASTMLP_X86_KERNELS
        case gemm_detail::Isa::avx512: return optim_detail::avx512_update_loops_float(guarded);
        case gemm_detail::Isa::avx2: return optim_detail::avx2_update_loops_float(guarded);
#endif
        default: return guarded ? portable_guarded : portable;
    }
}
const UpdateLoops<double>& active_loops(double) {
    static const auto portable = optim_detail::update_loops_of_this_isa<double>();
    switch (gemm_detail::active_float_isa()) {
#if FASTMLP_X86_KERNELS
        case gemm_detail::Isa::avx512: return optim_detail::avx512_update_loops_double();
        case gemm_detail::Isa::avx2: return optim_detail::avx2_update_loops_double();
#endif
        default: return portable;
    }
}

template <typename T>
T* shifted(T* buffer, int64_t begin) {
    return buffer ? buffer + begin : nullptr;
}

// Runs loop(params + begin, ...) over [begin, end) on this thread; true when a guarded loop met
// a state outside float's plain range.
template <typename T>
bool run_part(UpdateLoop<T> loop, T* params, T* state0, T* state1, T* state2, const T* grads,
              int64_t begin, int64_t end, const UpdateScalars<T>& s) {
    if (end <= begin) return false;
    optim_detail::g_guard_found_state_outside_plain_range = false;
    loop(params + begin, shifted(state0, begin), shifted(state1, begin), shifted(state2, begin), grads + begin,
         end - begin, s);
    return optim_detail::g_guard_found_state_outside_plain_range;
}

// Runs `loop` over [0, n), split among threads in whole cache lines when n is large. Every
// element is independent, so the split does not change any bits.
template <typename T>
void run_update(UpdateLoop<T> loop, T* params, T* state0, T* state1, T* state2, const T* grads,
                int64_t n, const UpdateScalars<T>& s) {
    const int threads = n > 32768 ? threads_for(static_cast<double>(n) * 16.0) : 1;
    bool found = false;
    if (threads <= 1) {
        found = run_part(loop, params, state0, state1, state2, grads, 0, n, s);
    } else {
#pragma omp parallel num_threads(threads) reduction(|| : found)
        {
            constexpr int64_t LINE = 64 / sizeof(T);
            const int64_t lines = (n + LINE - 1) / LINE, parts = omp_get_num_threads();
            const int64_t part = omp_get_thread_num();
            const int64_t begin = std::min(n, lines * part / parts * LINE);
            const int64_t end = std::min(n, lines * (part + 1) / parts * LINE);
            found = run_part(loop, params, state0, state1, state2, grads, begin, end, s);
        }
    }
    if (found && g_current_scan) g_current_scan->found = true;
}

}  // namespace

OptimizerStateScan::OptimizerStateScan(bool check) : check(check), outer_(g_current_scan) { g_current_scan = this; }
OptimizerStateScan::~OptimizerStateScan() { g_current_scan = outer_; }

template <typename T>
void sgd_update(T* params, T* momentum_buffer, const T* grads, int64_t n, T lr, T momentum,
                T dampening, bool nesterov, T weight_decay, int64_t step) {
    UpdateScalars<T> s{};
    s.lr = lr;
    s.weight_decay = weight_decay;
    s.momentum = momentum;
    s.dampening = dampening;
    const UpdateLoop<T> loop = active_loops(T()).sgd[momentum != 0][nesterov][step <= 1];
    run_update(loop, params, momentum != 0 ? momentum_buffer : nullptr, static_cast<T*>(nullptr),
               static_cast<T*>(nullptr), grads, n, s);
}

template <typename T>
void adagrad_update(T* params, T* state_sum, const T* grads, int64_t n, T lr, T lr_decay,
                    T weight_decay, T eps, int64_t step) {
    UpdateScalars<T> s{};
    s.lr = lr / (T(1) + static_cast<T>(step - 1) * lr_decay);
    s.weight_decay = weight_decay;
    s.eps = eps;
    run_update(active_loops(T()).adagrad, params, state_sum, static_cast<T*>(nullptr),
               static_cast<T*>(nullptr), grads, n, s);
}

template <typename T>
void adadelta_update(T* params, T* square_avg, T* acc_delta, const T* grads, int64_t n, T lr,
                     T rho, T eps, T weight_decay) {
    UpdateScalars<T> s{};
    s.lr = lr;
    s.decay = rho;
    s.eps = eps;
    s.weight_decay = weight_decay;
    run_update(active_loops(T()).adadelta, params, square_avg, acc_delta, static_cast<T*>(nullptr),
               grads, n, s);
}

template <typename T>
void rmsprop_update(T* params, T* square_avg, T* grad_avg, T* momentum_buffer, const T* grads,
                    int64_t n, T lr, T alpha, T eps, T weight_decay, T momentum, bool centered) {
    UpdateScalars<T> s{};
    s.lr = lr;
    s.decay = alpha;
    s.eps = eps;
    s.weight_decay = weight_decay;
    s.momentum = momentum;
    const bool has_momentum = momentum > 0;
    run_update(active_loops(T()).rmsprop[centered][has_momentum], params, square_avg,
               centered ? grad_avg : nullptr, has_momentum ? momentum_buffer : nullptr, grads, n, s);
}

template <typename T>
void adam_update(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const T* grads,
                 int64_t n, T lr, T beta1, T beta2, T eps, T weight_decay, bool amsgrad,
                 bool decoupled_weight_decay, int64_t step, bool eps_hat) {
    // Bias corrections in double: beta^step underflows gracefully and stays exact longer.
    const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
    UpdateScalars<T> s{};
    s.beta1 = beta1;
    s.beta2 = beta2;
    s.eps = eps;
    s.weight_decay = weight_decay;
    s.step_size = static_cast<T>(lr / bias_correction1);
    s.sqrt_bias_correction2 = static_cast<T>(std::sqrt(bias_correction2));
    s.decay_factor = T(1) - lr * weight_decay;
    if (eps_hat)  // scikit-learn's scalar, in double as its Python float
        s.step_size = static_cast<T>(static_cast<double>(lr) * std::sqrt(bias_correction2) / bias_correction1);
    const auto& loops = active_loops(T());
    run_update((eps_hat ? loops.adam_eps_hat : loops.adam)[amsgrad][decoupled_weight_decay], params,
               exp_avg, exp_avg_sq, amsgrad ? max_exp_avg_sq : nullptr, grads, n, s);
}

#define FASTMLP_INSTANTIATE(T)                                                                \
    template void sgd_update<T>(T*, T*, const T*, int64_t, T, T, T, bool, T, int64_t);         \
    template void adagrad_update<T>(T*, T*, const T*, int64_t, T, T, T, T, int64_t);           \
    template void adadelta_update<T>(T*, T*, T*, const T*, int64_t, T, T, T, T);               \
    template void rmsprop_update<T>(T*, T*, T*, T*, const T*, int64_t, T, T, T, T, T, bool);   \
    template void adam_update<T>(T*, T*, T*, T*, const T*, int64_t, T, T, T, T, T, bool, bool, \
                                 int64_t, bool);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
