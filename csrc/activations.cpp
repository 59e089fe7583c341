// Element-wise activations, forward and backward side by side (kernels.h: Activation), and
// the element-wise finiteness check of inputs and gradients.
#include <cmath>

#include <omp.h>

#include "activation_math.h"
#include "gemm_internal.h"
#include "kernels.h"
#include "vector_math.h"

namespace fastmlp {

namespace {

// Element-wise loops are memory bound; threads pay off only on large arrays.
inline int elementwise_threads(int64_t n) { return threads_for(static_cast<double>(n) * 8.0); }

template <typename T, typename F>
void map_unary(T* y, const T* x, int64_t n, F f) {
#pragma omp parallel for schedule(static) num_threads(elementwise_threads(n)) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

// A row function (y, x, bias, n) run over [0, n) in one piece per thread.
template <typename T, typename Row>
void map_row_function(T* y, const T* x, int64_t n, Row row) {
    const int threads = n > 65536 ? elementwise_threads(n) : 1;
    if (threads <= 1) return row(y, x, nullptr, n);
#pragma omp parallel num_threads(threads)
    {
        const int64_t part = omp_get_thread_num(), parts = omp_get_num_threads();
        const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
        row(y + begin, x + begin, nullptr, end - begin);
    }
}

// A derivative row function (dx, dy, x, n), split as map_row_function.
template <typename T, typename Row>
void map_derivative_row_function(T* dx, const T* dy, const T* x, int64_t n, Row row) {
    const int threads = n > 65536 ? elementwise_threads(n) : 1;
    if (threads <= 1) return row(dx, dy, x, n);
#pragma omp parallel num_threads(threads)
    {
        const int64_t part = omp_get_thread_num(), parts = omp_get_num_threads();
        const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
        row(dx + begin, dy + begin, x + begin, end - begin);
    }
}

}  // namespace

namespace activation_math {

template <>
const vector_math::ElementwiseLoops<float>& active_elementwise_loops<float>() {
    static const auto portable = vector_math::elementwise_loops_of_this_isa<false, float>();
    switch (gemm_detail::active_float_isa()) {
#if FASTMLP_X86_KERNELS
        case gemm_detail::Isa::avx512: return vector_math::avx512_elementwise_loops_float();
        case gemm_detail::Isa::avx2: return vector_math::avx2_elementwise_loops_float();
#endif
        default: return portable;
    }
}

template <>
const vector_math::ElementwiseLoops<double>& active_elementwise_loops<double>() {
    static const auto portable = vector_math::elementwise_loops_of_this_isa<false, double>();
    switch (gemm_detail::active_float_isa()) {
#if FASTMLP_X86_KERNELS
        case gemm_detail::Isa::avx512: return vector_math::avx512_elementwise_loops_double();
        case gemm_detail::Isa::avx2: return vector_math::avx2_elementwise_loops_double();
#endif
        default: return portable;
    }
}

}  // namespace activation_math

template <typename T>
void activation_forward(T* y, const T* x, int64_t n, Activation act, T slope) {
    switch (act) {
        case Activation::identity:
            if (y != x) map_unary(y, x, n, [](T v) { return v; });
            break;
        case Activation::sigmoid:
            map_row_function(y, x, n, activation_math::active_elementwise_loops<T>().sigmoid_row);
            break;
        case Activation::tanh:
            map_row_function(y, x, n, activation_math::active_elementwise_loops<T>().tanh_row);
            break;
        case Activation::relu: map_unary(y, x, n, [](T v) { return v > 0 ? v : T(0); }); break;
        case Activation::leaky_relu:
            map_unary(y, x, n, [slope](T v) { return v > 0 ? v : slope * v; });
            break;
        case Activation::gelu:
            map_row_function(y, x, n, activation_math::active_elementwise_loops<T>().gelu_row);
            break;
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
            map_derivative_row_function(dx, dy, x, n,
                                        activation_math::active_elementwise_loops<T>().gelu_derivative_row);
            break;
        case Activation::step:
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 65536)
            for (int64_t i = 0; i < n; ++i) dx[i] = T(0);
            break;
    }
}

template <typename T>
void erf_forward(T* y, const T* x, int64_t n) {
    activation_math::active_elementwise_loops<T>().erf_row(y, x, n);  // a test hook: one thread
}

template <typename T>
bool all_finite(const T* data, int64_t n) {
    // A scalar isfinite loop does not vectorise and cost a training step about as much as
    // its Adam update; this one reads at memory speed.
    const auto any_non_finite = activation_math::active_elementwise_loops<T>().any_non_finite;
    const int threads = elementwise_threads(n);
    if (threads <= 1 || n <= 65536) return !any_non_finite(data, n);
    int found = 0;
#pragma omp parallel num_threads(threads) reduction(| : found)
    {
        const int64_t part = omp_get_thread_num(), parts = omp_get_num_threads();
        const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
        found |= any_non_finite(data + begin, end - begin);
    }
    return !found;
}

#define FASTMLP_INSTANTIATE(T)                                                            \
    template bool all_finite<T>(const T*, int64_t);                                       \
    template void erf_forward<T>(T*, const T*, int64_t);                                  \
    template void activation_forward<T>(T*, const T*, int64_t, Activation, T);            \
    template void activation_backward<T>(T*, const T*, const T*, const T*, int64_t,        \
                                         Activation, T);
FASTMLP_INSTANTIATE(float)
FASTMLP_INSTANTIATE(double)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
