// One update kernel per optimizer over the flat parameter buffer, torch.optim's formulas
// (kernels.h gives each one). Every element is independent, so the loops split freely.
#include <algorithm>
#include <cmath>
#include <string>

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

// The subnormal guard: the CPU's choice (kernels.h), unless set_subnormal_guard forced one.
constexpr const char* kGuardNames[] = {"off", "on"};
gemm_detail::NamedChoice<2> g_guard{kGuardNames, gemm_detail::cpu_is_intel() ? 1 : 0};

// Whether this thread's float kernels look at their states (behind the subnormal guard).
bool scanning() { return g_guard.get() && (!g_current_scan || g_current_scan->check); }

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
T* shifted(T* buffer, int64_t at) {
    return buffer ? buffer + at : nullptr;
}

template <typename T>
PreparedUpdate<T> prepared(UpdateLoop<T> loop, const UpdateScalars<T>& s, T* params, T* state0, T* state1,
                           T* state2) {
    PreparedUpdate<T> update;
    update.loop = loop;
    update.scalars = s;
    update.params = params;
    update.states[0] = state0;
    update.states[1] = state1;
    update.states[2] = state2;
    return update;
}

}  // namespace

const char* subnormal_guard_name() { return g_guard.name(); }

bool set_subnormal_guard(const std::string& name) { return g_guard.set(name); }

OptimizerStateScan::OptimizerStateScan(bool check) : check(check), outer_(g_current_scan) { g_current_scan = this; }
OptimizerStateScan::~OptimizerStateScan() { g_current_scan = outer_; }

template <typename T>
bool PreparedUpdate<T>::run(int64_t at, const T* gradient, int64_t n) const {
    if (n <= 0) return false;
    optim_detail::g_guard_found_state_outside_plain_range = false;
    loop(params + at, shifted(states[0], at), shifted(states[1], at), shifted(states[2], at), gradient, n, scalars);
    if (params_nonfinite && !all_finite(params + at, n)) params_nonfinite->store(true, std::memory_order_relaxed);
    return optim_detail::g_guard_found_state_outside_plain_range;
}

// Split among threads in whole cache lines when n is large. Every element is independent,
// so the split does not change any bits.
template <typename T>
void run_update(const PreparedUpdate<T>& update, const T* grads, int64_t n) {
    const int threads = n > 32768 ? threads_for(static_cast<double>(n) * 16.0) : 1;
    bool found = false;
    if (threads <= 1) {
        found = update.run(0, grads, n);
    } else {
#pragma omp parallel num_threads(threads) reduction(|| : found)
        {
            constexpr int64_t LINE = 64 / sizeof(T);
            const int64_t lines = (n + LINE - 1) / LINE, parts = omp_get_num_threads();
            const int64_t part = omp_get_thread_num();
            const int64_t begin = std::min(n, lines * part / parts * LINE);
            const int64_t end = std::min(n, lines * (part + 1) / parts * LINE);
            found = update.run(begin, grads + begin, end - begin);
        }
    }
    if (found) note_state_outside_plain_range();
}

void note_state_outside_plain_range() {
    if (g_current_scan) g_current_scan->found = true;
}

template <typename T>
PreparedUpdate<T> prepare_sgd_update(T* params, T* momentum_buffer, T lr, T momentum, T dampening, bool nesterov,
                                     T weight_decay, int64_t step) {
    UpdateScalars<T> s{};
    s.lr = lr;
    s.weight_decay = weight_decay;
    s.momentum = momentum;
    s.dampening = dampening;
    const UpdateLoop<T> loop = active_loops(T()).sgd[momentum != 0][nesterov][step <= 1];
    return prepared<T>(loop, s, params, momentum != 0 ? momentum_buffer : nullptr, nullptr, nullptr);
}

template <typename T>
PreparedUpdate<T> prepare_adagrad_update(T* params, T* state_sum, T lr, T lr_decay, T weight_decay, T eps,
                                         int64_t step) {
    UpdateScalars<T> s{};
    s.lr = lr / (T(1) + static_cast<T>(step - 1) * lr_decay);
    s.weight_decay = weight_decay;
    s.eps = eps;
    return prepared<T>(active_loops(T()).adagrad, s, params, state_sum, nullptr, nullptr);
}

template <typename T>
PreparedUpdate<T> prepare_adadelta_update(T* params, T* square_avg, T* acc_delta, T lr, T rho, T eps,
                                          T weight_decay) {
    UpdateScalars<T> s{};
    s.lr = lr;
    s.decay = rho;
    s.eps = eps;
    s.weight_decay = weight_decay;
    return prepared<T>(active_loops(T()).adadelta, s, params, square_avg, acc_delta, nullptr);
}

template <typename T>
PreparedUpdate<T> prepare_rmsprop_update(T* params, T* square_avg, T* grad_avg, T* momentum_buffer, T lr, T alpha,
                                         T eps, T weight_decay, T momentum, bool centered) {
    UpdateScalars<T> s{};
    s.lr = lr;
    s.decay = alpha;
    s.eps = eps;
    s.weight_decay = weight_decay;
    s.momentum = momentum;
    const bool has_momentum = momentum > 0;
    return prepared<T>(active_loops(T()).rmsprop[centered][has_momentum], s, params, square_avg,
                       centered ? grad_avg : nullptr, has_momentum ? momentum_buffer : nullptr);
}

template <typename T>
PreparedUpdate<T> prepare_adam_update(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, T lr, T beta1,
                                      T beta2, T eps, T weight_decay, bool amsgrad, bool decoupled_weight_decay,
                                      int64_t step, bool eps_hat) {
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
    return prepared<T>((eps_hat ? loops.adam_eps_hat : loops.adam)[amsgrad][decoupled_weight_decay], s, params,
                       exp_avg, exp_avg_sq, amsgrad ? max_exp_avg_sq : nullptr);
}

template <typename T>
void sgd_update(T* params, T* momentum_buffer, const T* grads, int64_t n, T lr, T momentum,
                T dampening, bool nesterov, T weight_decay, int64_t step) {
    run_update(prepare_sgd_update(params, momentum_buffer, lr, momentum, dampening, nesterov, weight_decay, step),
               grads, n);
}

template <typename T>
void adagrad_update(T* params, T* state_sum, const T* grads, int64_t n, T lr, T lr_decay,
                    T weight_decay, T eps, int64_t step) {
    run_update(prepare_adagrad_update(params, state_sum, lr, lr_decay, weight_decay, eps, step), grads, n);
}

template <typename T>
void adadelta_update(T* params, T* square_avg, T* acc_delta, const T* grads, int64_t n, T lr,
                     T rho, T eps, T weight_decay) {
    run_update(prepare_adadelta_update(params, square_avg, acc_delta, lr, rho, eps, weight_decay), grads, n);
}

template <typename T>
void rmsprop_update(T* params, T* square_avg, T* grad_avg, T* momentum_buffer, const T* grads,
                    int64_t n, T lr, T alpha, T eps, T weight_decay, T momentum, bool centered) {
    run_update(prepare_rmsprop_update(params, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay,
                                      momentum, centered),
               grads, n);
}

template <typename T>
void adam_update(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const T* grads,
                 int64_t n, T lr, T beta1, T beta2, T eps, T weight_decay, bool amsgrad,
                 bool decoupled_weight_decay, int64_t step, bool eps_hat) {
    run_update(prepare_adam_update(params, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                                   amsgrad, decoupled_weight_decay, step, eps_hat),
               grads, n);
}

#define FASTMLP_INSTANTIATE(T)                                                                \
    template struct PreparedUpdate<T>;                                                         \
    template void run_update<T>(const PreparedUpdate<T>&, const T*, int64_t);                  \
    template PreparedUpdate<T> prepare_sgd_update<T>(T*, T*, T, T, T, bool, T, int64_t);       \
    template PreparedUpdate<T> prepare_adagrad_update<T>(T*, T*, T, T, T, T, int64_t);         \
    template PreparedUpdate<T> prepare_adadelta_update<T>(T*, T*, T*, T, T, T, T);             \
    template PreparedUpdate<T> prepare_rmsprop_update<T>(T*, T*, T*, T*, T, T, T, T, T, bool); \
    template PreparedUpdate<T> prepare_adam_update<T>(T*, T*, T*, T*, T, T, T, T, T, bool, bool, \
                                                      int64_t, bool);                          \
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
