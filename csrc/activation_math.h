// Element-wise activation formulas, shared by the activation kernels (activations.cpp) and
// the GEMM epilogue (gemm_driver.h, compiled once per instruction set), so fused and unfused
// paths give the same bits: each formula is a fixed sequence of IEEE operations (no FMA
// contraction: -ffp-contract=off), which any vector width evaluates alike. exp, sigmoid,
// tanh and gelu (with its own erf) are vectorised (vector_math.h): every activation's loop
// runs at vector speed, with the same bits in the AVX2 and AVX-512 builds.
#pragma once

#include <cstdint>

#include "kernels.h"
#include "vector_math.h"

namespace fastmlp {
namespace activation_math {

// exp, sigmoid, tanh and gelu loops of the instruction set in use (activations.cpp): the AVX2 and
// AVX-512 ones give the same bits.
template <typename T>
const vector_math::ElementwiseLoops<T>& active_elementwise_loops();

// TU-local: each including TU compiles its own copy for its own instruction set (one shared
// inline definition could be an AVX-512 one running on a CPU without it).
namespace {

// y[j] = act(x[j] + bias[j]) for j < n; pre[j] = x[j] + bias[j] when pre is not null.
// y may alias x. One switch per row, so each case is a plain loop that vectorises.
//   y, x, bias, pre are (n)
template <typename T>
inline void bias_activation_row(T* y, T* pre, const T* x, const T* bias, int64_t n,
                                Activation act, T slope) {
    if (pre)
        for (int64_t j = 0; j < n; ++j) pre[j] = x[j] + bias[j];
    switch (act) {
        case Activation::identity:
            for (int64_t j = 0; j < n; ++j) y[j] = x[j] + bias[j];
            break;
        case Activation::relu:
            for (int64_t j = 0; j < n; ++j) {
                const T v = x[j] + bias[j];
                y[j] = v > 0 ? v : T(0);
            }
            break;
        case Activation::leaky_relu:
            for (int64_t j = 0; j < n; ++j) {
                const T v = x[j] + bias[j];
                y[j] = v > 0 ? v : slope * v;
            }
            break;
        case Activation::sigmoid:
            active_elementwise_loops<T>().sigmoid_row(y, x, bias, n);
            break;
        case Activation::tanh:
            active_elementwise_loops<T>().tanh_row(y, x, bias, n);
            break;
        case Activation::gelu:
            active_elementwise_loops<T>().gelu_row(y, x, bias, n);
            break;
        case Activation::step:
            for (int64_t j = 0; j < n; ++j) y[j] = x[j] + bias[j] >= 0 ? T(1) : T(0);
            break;
    }
}

// dx[j] = dy[j] * act'(x[j]) with act' from the saved pre-activation x (gelu) or output y
// (the others), exactly as activation_backward. dx may alias dy.
//   dx, dy, x, y are (n)
template <typename T>
inline void activation_derivative_row(T* dx, const T* dy, const T* x, const T* y, int64_t n,
                                      Activation act, T slope) {
    switch (act) {
        case Activation::identity:
            for (int64_t j = 0; j < n; ++j) dx[j] = dy[j];
            break;
        case Activation::relu:
            for (int64_t j = 0; j < n; ++j) dx[j] = y[j] > 0 ? dy[j] : T(0);
            break;
        case Activation::leaky_relu:
            for (int64_t j = 0; j < n; ++j) dx[j] = y[j] > 0 ? dy[j] : slope * dy[j];
            break;
        case Activation::sigmoid:
            for (int64_t j = 0; j < n; ++j) dx[j] = dy[j] * y[j] * (T(1) - y[j]);
            break;
        case Activation::tanh:
            for (int64_t j = 0; j < n; ++j) dx[j] = dy[j] * (T(1) - y[j] * y[j]);
            break;
        case Activation::gelu:
            active_elementwise_loops<T>().gelu_derivative_row(dx, dy, x, n);
            break;
        case Activation::step:
            for (int64_t j = 0; j < n; ++j) dx[j] = T(0);
            break;
    }
}

}  // namespace

}  // namespace activation_math
}  // namespace fastmlp
