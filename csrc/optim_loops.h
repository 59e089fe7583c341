// The optimizer loops that dominate a training step after the GEMMs (Adam over every
// parameter), written once and compiled twice: by optim.cpp for the baseline ISA and by
// optim_avx2.cpp with -mavx2 -mfma and by optim_avx512.cpp with AVX-512, which let the
// compiler vectorise them 8 and 16 floats wide. All three TUs compile with
// -ffp-contract=off (and sqrt and division are correctly rounded), so they give the same bits.
#pragma once

#include <cmath>
#include <cstdint>

namespace fastmlp {
namespace optim_detail {

// Scalars of one Adam step, computed once per step by adam_update.
template <typename T>
struct AdamStep {
    T beta1, beta2, eps, weight_decay;
    T step_size;              // lr / (1 - beta1^step)
    T sqrt_bias_correction2;  // sqrt(1 - beta2^step)
    T decay_factor;           // 1 - lr * weight_decay (AdamW)
};

template <typename T>
using AdamLoop = void (*)(T*, T*, T*, T*, const T*, int64_t, const AdamStep<T>&);

// The four variants of the loop, indexed by [amsgrad][decoupled_weight_decay].
template <typename T>
struct AdamLoops {
    AdamLoop<T> variant[2][2];
};

// Defined in optim_avx2.cpp and optim_avx512.cpp: call only when the CPU has AVX2 and FMA,
// or AVX-512.
const AdamLoops<float>& avx2_adam_loops_float();
const AdamLoops<double>& avx2_adam_loops_double();
const AdamLoops<float>& avx512_adam_loops_float();
const AdamLoops<double>& avx512_adam_loops_double();

// TU-local: each including TU compiles its own copy for its own ISA (a shared inline
// definition would let the linker keep only one of them).
namespace {

// Adam over elements [0, n). The options are template parameters so the loop body has no
// branches and vectorises.
//   params, exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad only), grads are (n)
template <typename T, bool amsgrad, bool decoupled_weight_decay>
inline void adam_loop(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const T* grads,
                      int64_t n, const AdamStep<T>& s) {
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

template <typename T>
AdamLoops<T> adam_loops_of_this_isa() {
    return {{{&adam_loop<T, false, false>, &adam_loop<T, false, true>},
             {&adam_loop<T, true, false>, &adam_loop<T, true, true>}}};
}

}  // namespace

}  // namespace optim_detail
}  // namespace fastmlp
