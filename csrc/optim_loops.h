// The optimizer loops over the flat parameter buffer (torch.optim's formulas, kernels.h),
// written once and compiled three times: by optim.cpp for the baseline ISA, by
// optim_avx2.cpp with -mavx2 -mfma and by optim_avx512.cpp with AVX-512, which let the
// compiler vectorise them 8 and 16 floats wide. All three TUs compile with
// -ffp-contract=off (and sqrt and division are correctly rounded), so they give the same bits.
#pragma once

#include <cmath>
#include <cstdint>

namespace fastmlp {
namespace optim_detail {

// The scalars of one update, computed once per step by the *_update kernels (optim.cpp).
template <typename T>
struct UpdateScalars {
    T lr;            // Adagrad: the decayed lr of this step
    T weight_decay, eps;
    T momentum, dampening;  // SGD; RMSprop's momentum
    T decay;                // Adadelta's rho, RMSprop's alpha
    T beta1, beta2;         // Adam
    T step_size;              // Adam: lr / (1 - beta1^step); eps_hat: lr sqrt(1 - beta2^step) / (1 - beta1^step)
    T sqrt_bias_correction2;  // Adam: sqrt(1 - beta2^step)
    T decay_factor;           // AdamW: 1 - lr * weight_decay
};

// One loop over elements [0, n): params and up to three state buffers (unused ones null).
template <typename T>
using UpdateLoop = void (*)(T* params, T* state0, T* state1, T* state2, const T* grads,
                            int64_t n, const UpdateScalars<T>& s);

// Every variant, with the options that change the loop body as indices, so that each body
// is branch-free and vectorises.
template <typename T>
struct UpdateLoops {
    UpdateLoop<T> sgd[2][2][2];   // [momentum != 0][nesterov][first step]
    UpdateLoop<T> adagrad;
    UpdateLoop<T> adadelta;
    UpdateLoop<T> rmsprop[2][2];  // [centered][momentum > 0]
    UpdateLoop<T> adam[2][2];     // [amsgrad][decoupled weight decay]
    UpdateLoop<T> adam_eps_hat[2][2];  // the same, epsilon added to the uncorrected sqrt(v)
};

// Defined in optim_avx2.cpp and optim_avx512.cpp: call only when the CPU has AVX2 and FMA,
// or AVX-512.
const UpdateLoops<float>& avx2_update_loops_float();
const UpdateLoops<double>& avx2_update_loops_double();
const UpdateLoops<float>& avx512_update_loops_float();
const UpdateLoops<double>& avx512_update_loops_double();

// TU-local: each including TU compiles its own copy for its own ISA (a shared inline
// definition would let the linker keep only one of them).
namespace {

//   params, momentum_buffer (state0, used when momentum != 0), grads are (n)
template <typename T, bool has_momentum, bool nesterov, bool first_step>
void sgd_loop(T* params, T* momentum_buffer, T*, T*, const T* grads, int64_t n,
              const UpdateScalars<T>& s) {
    for (int64_t i = 0; i < n; ++i) {
        T g = grads[i] + s.weight_decay * params[i];
        if (has_momentum) {
            T& buf = momentum_buffer[i];
            buf = first_step ? g : s.momentum * buf + (T(1) - s.dampening) * g;
            g = nesterov ? g + s.momentum * buf : buf;
        }
        params[i] -= s.lr * g;
    }
}

//   params, state_sum (state0), grads are (n)
template <typename T>
void adagrad_loop(T* params, T* state_sum, T*, T*, const T* grads, int64_t n,
                  const UpdateScalars<T>& s) {
    for (int64_t i = 0; i < n; ++i) {
        const T g = grads[i] + s.weight_decay * params[i];
        state_sum[i] += g * g;
        params[i] -= s.lr * g / (std::sqrt(state_sum[i]) + s.eps);
    }
}

//   params, square_avg (state0), acc_delta (state1), grads are (n)
template <typename T>
void adadelta_loop(T* params, T* square_avg, T* acc_delta, T*, const T* grads, int64_t n,
                   const UpdateScalars<T>& s) {
    const T rho = s.decay;
    for (int64_t i = 0; i < n; ++i) {
        const T g = grads[i] + s.weight_decay * params[i];
        square_avg[i] = rho * square_avg[i] + (T(1) - rho) * g * g;
        const T delta = std::sqrt(acc_delta[i] + s.eps) / std::sqrt(square_avg[i] + s.eps) * g;
        acc_delta[i] = rho * acc_delta[i] + (T(1) - rho) * delta * delta;
        params[i] -= s.lr * delta;
    }
}

//   params, square_avg (state0), grad_avg (state1, centered), momentum_buffer (state2,
//   momentum > 0), grads are (n)
template <typename T, bool centered, bool has_momentum>
void rmsprop_loop(T* params, T* square_avg, T* grad_avg, T* momentum_buffer, const T* grads,
                  int64_t n, const UpdateScalars<T>& s) {
    const T alpha = s.decay;
    for (int64_t i = 0; i < n; ++i) {
        const T g = grads[i] + s.weight_decay * params[i];
        square_avg[i] = alpha * square_avg[i] + (T(1) - alpha) * g * g;
        T avg;
        if (centered) {
            grad_avg[i] = alpha * grad_avg[i] + (T(1) - alpha) * g;
            avg = std::sqrt(square_avg[i] - grad_avg[i] * grad_avg[i]) + s.eps;
        } else {
            avg = std::sqrt(square_avg[i]) + s.eps;
        }
        if (has_momentum) {
            momentum_buffer[i] = s.momentum * momentum_buffer[i] + g / avg;
            params[i] -= s.lr * momentum_buffer[i];
        } else {
            params[i] -= s.lr * g / avg;
        }
    }
}

//   params, exp_avg (state0), exp_avg_sq (state1), max_exp_avg_sq (state2, amsgrad only),
//   grads are (n)
template <typename T, bool amsgrad, bool decoupled_weight_decay>
void adam_loop(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const T* grads,
               int64_t n, const UpdateScalars<T>& s) {
    for (int64_t i = 0; i < n; ++i) {
        T g = grads[i];
        T p = params[i];
        if (decoupled_weight_decay)
            p *= s.decay_factor;
        else
            g += s.weight_decay * p;
        const T m = s.beta1 * exp_avg[i] + (T(1) - s.beta1) * g;
        const T v = s.beta2 * exp_avg_sq[i] + (T(1) - s.beta2) * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        T second_moment = v;
        if (amsgrad) {
            second_moment = max_exp_avg_sq[i] > v ? max_exp_avg_sq[i] : v;
            max_exp_avg_sq[i] = second_moment;
        }
        const T denom = std::sqrt(second_moment) / s.sqrt_bias_correction2 + s.eps;
        params[i] = p - s.step_size * m / denom;
    }
}

// Adam with Kingma & Ba's "epsilon hat", in scikit-learn's operation order
// (AdamOptimizer._get_updates): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) (g g);
// p -= (step_size m) / (sqrt(v) + eps), step_size = lr sqrt(bc2) / bc1 a scalar.
//   params, exp_avg (state0), exp_avg_sq (state1), max_exp_avg_sq (state2, amsgrad only),
//   grads are (n)
template <typename T, bool amsgrad, bool decoupled_weight_decay>
void adam_eps_hat_loop(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const T* grads,
                       int64_t n, const UpdateScalars<T>& s) {
    for (int64_t i = 0; i < n; ++i) {
        T g = grads[i];
        T p = params[i];
        if (decoupled_weight_decay)
            p *= s.decay_factor;
        else
            g += s.weight_decay * p;
        const T m = s.beta1 * exp_avg[i] + (T(1) - s.beta1) * g;
        const T v = s.beta2 * exp_avg_sq[i] + (T(1) - s.beta2) * (g * g);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        T second_moment = v;
        if (amsgrad) {
            second_moment = max_exp_avg_sq[i] > v ? max_exp_avg_sq[i] : v;
            max_exp_avg_sq[i] = second_moment;
        }
        params[i] = p - s.step_size * m / (std::sqrt(second_moment) + s.eps);
    }
}

template <typename T>
UpdateLoops<T> update_loops_of_this_isa() {
    UpdateLoops<T> loops{};
    loops.sgd[0][0][0] = &sgd_loop<T, false, false, false>;
    loops.sgd[0][0][1] = &sgd_loop<T, false, false, true>;
    loops.sgd[0][1][0] = &sgd_loop<T, false, true, false>;
    loops.sgd[0][1][1] = &sgd_loop<T, false, true, true>;
    loops.sgd[1][0][0] = &sgd_loop<T, true, false, false>;
    loops.sgd[1][0][1] = &sgd_loop<T, true, false, true>;
    loops.sgd[1][1][0] = &sgd_loop<T, true, true, false>;
    loops.sgd[1][1][1] = &sgd_loop<T, true, true, true>;
    loops.adagrad = &adagrad_loop<T>;
    loops.adadelta = &adadelta_loop<T>;
    loops.rmsprop[0][0] = &rmsprop_loop<T, false, false>;
    loops.rmsprop[0][1] = &rmsprop_loop<T, false, true>;
    loops.rmsprop[1][0] = &rmsprop_loop<T, true, false>;
    loops.rmsprop[1][1] = &rmsprop_loop<T, true, true>;
    loops.adam[0][0] = &adam_loop<T, false, false>;
    loops.adam[0][1] = &adam_loop<T, false, true>;
    loops.adam[1][0] = &adam_loop<T, true, false>;
    loops.adam[1][1] = &adam_loop<T, true, true>;
    loops.adam_eps_hat[0][0] = &adam_eps_hat_loop<T, false, false>;
    loops.adam_eps_hat[0][1] = &adam_eps_hat_loop<T, false, true>;
    loops.adam_eps_hat[1][0] = &adam_eps_hat_loop<T, true, false>;
    loops.adam_eps_hat[1][1] = &adam_eps_hat_loop<T, true, true>;
    return loops;
}

}  // namespace

}  // namespace optim_detail
}  // namespace fastmlp
