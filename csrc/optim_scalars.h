// What one optimizer update is made of, shared by the loops (optim_loops.h) and by the
// prepared updates that callers run piece by piece (kernels.h: PreparedUpdate).
#pragma once

#include <cstdint>

namespace fastmlp {
namespace optim_detail {

// The scalars of one update, computed once per step (optim.cpp: the prepare_* functions).
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

}  // namespace optim_detail
}  // namespace fastmlp
