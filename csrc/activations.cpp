// Element-wise activations, forward and backward side by side (kernels.h: Activation).
#include <cmath>

#include "activation_math.h"
#include "kernels.h"

namespace fastmlp {

namespace {

using activation_math::gelu;
using activation_math::gelu_derivative;
using activation_math::sigmoid;

// Element-wise loops are memory bound; threads pay off only on large arrays.
inline int elementwise_threads(int64_t n) { return threads_for(static_cast<double>(n) * 8.0); }

template <typename T, typename F>
void map_unary(T* y, const T* x, int64_t n, F f) {
#pragma omp parallel for schedule(static) num_threads(elementwise_threads(n)) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

}  // namespace

template <typename T>
void activation_forward(T* y, const T* x, int64_t n, Activation act, T slope) {
    switch (act) {
        case Activation::identity:
            if (y != x) map_unary(y, x, n, [](T v) { return v; });
            break;
        case Activation::sigmoid: map_unary(y, x, n, [](T v) { return sigmoid(v); }); break;
        case Activation::tanh: map_unary(y, x, n, [](T v) { return std::tanh(v); }); break;
        case Activation::relu: map_unary(y, x, n, [](T v) { return v > 0 ? v : T(0); }); break;
        case Activation::leaky_relu:
            map_unary(y, x, n, [slope](T v) { return v > 0 ? v : slope * v; });
            break;
        case Activation::gelu: map_unary(y, x, n, [](T v) { return gelu(v); }); break;
        case Activation::step: map_unary(y, x, n, [](T v) { return v >= 0 ? T(1) : T(0); }); break;
    }
}

template <typename T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, int64_t n, Activation act,
                         T slope) {
    const int threads = elementwise_threads(n);
    switch (act) {
        case Activation::identity:
            if (dx != dy) map_unary(dx, dy, n, [](T v) { return v; });
            break;
        case Activation::sigmoid:
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 65536)
            for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (T(1) - y[i]);
            break;
        case Activation::tanh:
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 65536)
            for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (T(1) - y[i] * y[i]);
            break;
        case Activation::relu:
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 65536)
            for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0 ? dy[i] : T(0);
            break;
        case Activation::leaky_relu:
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 65536)
            for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0 ? dy[i] : slope * dy[i];
            break;
        case Activation::gelu:
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 65536)
            for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_derivative(x[i]);
            break;
        case Activation::step:
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 65536)
            for (int64_t i = 0; i < n; ++i) dx[i] = T(0);
            break;
    }
}

#define FASTMLP_INSTANTIATE(T)                                                            \
    template void activation_forward<T>(T*, const T*, int64_t, Activation, T);            \
    template void activation_backward<T>(T*, const T*, const T*, const T*, int64_t,        \
                                         Activation, T);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
