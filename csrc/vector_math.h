// exp, the logistic sigmoid, tanh and the finiteness test, written as per-element code the
// compiler vectorises, and compiled once per instruction set: by activations.cpp (baseline),
// elementwise_avx2.cpp and elementwise_avx512.cpp. The FMA builds (AVX2, AVX-512) evaluate the same formula with the
// same fused operations in every lane, so they give the same bits at any vector width;
// the baseline build has no FMA and rounds the multiply and the add separately.
//
// exp(x): x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (ln2 split in two parts
// so that r is exact), e^r by its Taylor series (degree 7 for float, 13 for double: the
// truncation error is below a tenth of an ulp), then scaled by 2^n in two exact steps.
// Accurate to about 1 ulp. Results below the smallest normal number are flushed to zero
// (libm returns subnormals there); overflow gives inf, NaN stays NaN. tanh goes through
// expm1 (below), the same reduction without the series' constant term.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastmlp {
namespace vector_math {

// The element-wise loops of one instruction set.
template <typename T>
struct ElementwiseLoops {
    // y[j] = exp(x[j]).  y, x are (n); y may alias x.
    void (*exp_row)(T* y, const T* x, int64_t n);
    // y[j] = sigmoid(x[j] + bias[j]) (bias may be null: 0).  y, x, bias are (n); y may alias x.
    void (*sigmoid_row)(T* y, const T* x, const T* bias, int64_t n);
    // y[j] = tanh(x[j] + bias[j]) (bias may be null: 0), the same shapes.
    void (*tanh_row)(T* y, const T* x, const T* bias, int64_t n);
    // 1 when some element of data is NaN or infinite, else 0.  data is (n).
    int (*any_non_finite)(const T* data, int64_t n);
};

// Defined in elementwise_avx2.cpp / elementwise_avx512.cpp: call only when the CPU has
// AVX2 and FMA, or AVX-512.
const ElementwiseLoops<float>& avx2_elementwise_loops_float();
const ElementwiseLoops<double>& avx2_elementwise_loops_double();
const ElementwiseLoops<float>& avx512_elementwise_loops_float();
const ElementwiseLoops<double>& avx512_elementwise_loops_double();

// TU-local: each including TU compiles its own copy for its own ISA.
namespace {

template <typename T>
struct ExpConstants;

template <>
struct ExpConstants<float> {
    using Bits = int32_t;
    static constexpr int kMantissaBits = 23, kBias = 127, kDegree = 7;
    static constexpr float kLog2e = 1.44269504088896341f;
    static constexpr float kLn2High = 0.693359375f;         // 8 significant bits: n * it is exact
    static constexpr float kLn2Low = -2.12194440e-4f;       // ln2 - kLn2High
    static constexpr float kRoundingShift = 12582912.0f;    // 1.5 * 2^23
    static constexpr float kMaximum = 88.72283905206835f;   // ln(FLT_MAX)
    static constexpr float kMinimum = -87.33654475055310f;  // ln(FLT_MIN)
};

template <>
struct ExpConstants<double> {
    using Bits = int64_t;
    static constexpr int kMantissaBits = 52, kBias = 1023, kDegree = 13;
    static constexpr double kLog2e = 1.4426950408889634074;
    static constexpr double kLn2High = 6.93147180369123816490e-01;  // n * it is exact
    static constexpr double kLn2Low = 1.90821492927058770002e-10;   // ln2 - kLn2High
    static constexpr double kRoundingShift = 6755399441055744.0;    // 1.5 * 2^52
    static constexpr double kMaximum = 709.782712893383973096;      // ln(DBL_MAX)
    static constexpr double kMinimum = -708.396418532264106224;     // ln(DBL_MIN)
};

// a * b + c, rounded once where the ISA has FMA (the template argument of each TU).
template <bool kFma, typename T>
inline T multiply_add(T a, T b, T c) {
    if constexpr (kFma)
        return std::fma(a, b, c);
    else
        return a * b + c;
}

// 1 / k!, rounded once from the exact value (computed in long double, then cast), a
// compile-time constant.
template <typename T>
constexpr T inverse_factorial(int k) {
    long double factorial = 1;
    for (int i = 2; i <= k; ++i) factorial *= i;
    return static_cast<T>(1.0L / factorial);
}

// 2^e for an integer e in the normal range, as bits.
template <typename T>
inline T power_of_two(typename ExpConstants<T>::Bits e) {
    using K = ExpConstants<T>;
    using Unsigned = std::make_unsigned_t<typename ExpConstants<T>::Bits>;
    // Shifted unsigned: well defined for any e (a NaN lane computes garbage it then discards).
    const Unsigned bits = static_cast<Unsigned>(e + K::kBias) << K::kMantissaBits;
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

template <bool kFma, typename T>
inline T exp_of(T x) {
    using K = ExpConstants<T>;
    using Bits = typename K::Bits;
    // NaN is reduced as 0 (its lane's result is replaced by NaN below), so n stays in range.
    const T clamped = x < K::kMinimum ? K::kMinimum : (x > K::kMaximum ? K::kMaximum : (x == x ? x : T(0)));
    // n = round(x / ln2): adding 1.5 * 2^p puts the rounded integer in the low mantissa bits.
    const T shifted = clamped * K::kLog2e + K::kRoundingShift;
    const T n = shifted - K::kRoundingShift;
    Bits n_bits;
    std::memcpy(&n_bits, &shifted, sizeof(T));
    Bits shift_bits;
    const T shift = K::kRoundingShift;
    std::memcpy(&shift_bits, &shift, sizeof(T));
    const Bits n_integer = n_bits - shift_bits;
    T r = multiply_add<kFma>(-n, K::kLn2High, clamped);
    r = multiply_add<kFma>(-n, K::kLn2Low, r);
    // Horner over 1/k!, k = kDegree .. 0.
    T p = inverse_factorial<T>(K::kDegree);
#pragma GCC unroll 16
    for (int k = K::kDegree - 1; k >= 0; --k) p = multiply_add<kFma>(p, r, inverse_factorial<T>(k));
    // 2^n in two halves, each a normal number, so n up to 128 (float) does not overflow the
    // exponent field; multiplying by a power of two is exact.
    const Bits half = n_integer >> 1;
    const T result = p * power_of_two<T>(half) * power_of_two<T>(n_integer - half);
    // Selects, not branches, so the loop vectorises; x != x is NaN.
    const T in_range = x < K::kMinimum ? T(0) : result;
    const T finite = x > K::kMaximum ? T(INFINITY) : in_range;
    return x != x ? x : finite;
}

template <bool kFma, typename T>
void exp_row(T* y, const T* x, int64_t n) {
    for (int64_t j = 0; j < n; ++j) y[j] = exp_of<kFma>(x[j]);
}

// sigmoid(v) = 1 / (1 + e^-v) for v >= 0 and e^v / (1 + e^v) otherwise: e = exp(-|v|) never
// overflows, and neither branch cancels.
// expm1(u) for u <= 0 (tanh's argument): u = n ln2 + r as in exp_of, then
// expm1(u) = 2^n (e^r - 1) + (2^n - 1) in one fused step, with e^r - 1 from its series
// without the constant term, so that small u keep their relative accuracy. Below kFloor
// the result is -1 to the last bit.
template <typename T>
struct Expm1Constants;
template <>
struct Expm1Constants<float> {
    static constexpr int kDegree = 8;
    static constexpr float kFloor = -30.0f;   // e^-30 < 2^-25
};
template <>
struct Expm1Constants<double> {
    static constexpr int kDegree = 14;
    static constexpr double kFloor = -60.0;   // e^-60 < 2^-54
};

template <bool kFma, typename T>
inline T expm1_of_non_positive(T u) {
    using K = ExpConstants<T>;
    using Bits = typename K::Bits;
    constexpr int kDegree = Expm1Constants<T>::kDegree;
    // NaN is reduced as 0 (tanh_of returns NaN for it), so n stays in range.
    const T clamped = u < Expm1Constants<T>::kFloor ? Expm1Constants<T>::kFloor : (u == u ? u : T(0));
    const T shifted = clamped * K::kLog2e + K::kRoundingShift;
    const T n = shifted - K::kRoundingShift;
    Bits n_bits, shift_bits;
    const T shift = K::kRoundingShift;
    std::memcpy(&n_bits, &shifted, sizeof(T));
    std::memcpy(&shift_bits, &shift, sizeof(T));
    T r = multiply_add<kFma>(-n, K::kLn2High, clamped);
    r = multiply_add<kFma>(-n, K::kLn2Low, r);
    T p = inverse_factorial<T>(kDegree);
#pragma GCC unroll 16
    for (int k = kDegree - 1; k >= 1; --k) p = multiply_add<kFma>(p, r, inverse_factorial<T>(k));
    const T scale = power_of_two<T>(n_bits - shift_bits);  // 2^n, n in [-87, 0]: normal
    return multiply_add<kFma>(scale, p * r, scale - T(1));
}

// tanh(v) = sign(v) * -m / (2 + m) with m = expm1(-2 |v|) in (-1, 0]: no overflow, and no
// cancellation for small |v| (m ~ -2 |v| keeps its relative accuracy).
template <bool kFma, typename T>
inline T tanh_of(T v) {
    const T magnitude = v < 0 ? -v : v;
    const T m = expm1_of_non_positive<kFma>(T(-2) * magnitude);
    const T t = -m / (T(2) + m);
    const T signed_t = v < 0 ? -t : t;
    return v != v ? v : signed_t;
}

template <bool kFma, typename T>
void tanh_row(T* y, const T* x, const T* bias, int64_t n) {
    if (bias)
        for (int64_t j = 0; j < n; ++j) y[j] = tanh_of<kFma>(x[j] + bias[j]);
    else
        for (int64_t j = 0; j < n; ++j) y[j] = tanh_of<kFma>(x[j]);
}

template <bool kFma, typename T>
inline T sigmoid_of(T v) {
    const T e = exp_of<kFma>(v >= 0 ? -v : v);
    return (v >= 0 ? T(1) : e) / (T(1) + e);
}

template <bool kFma, typename T>
void sigmoid_row(T* y, const T* x, const T* bias, int64_t n) {
    if (bias)
        for (int64_t j = 0; j < n; ++j) y[j] = sigmoid_of<kFma>(x[j] + bias[j]);
    else
        for (int64_t j = 0; j < n; ++j) y[j] = sigmoid_of<kFma>(x[j]);
}

// Tested on the bits (an all-ones exponent field), an integer OR-reduction that vectorises;
// a scalar isfinite loop does not.
template <typename T>
int any_non_finite(const T* data, int64_t n) {
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    const Bits exponent = sizeof(T) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
    Bits found = 0;
    for (int64_t i = 0; i < n; ++i) {
        Bits bits;
        std::memcpy(&bits, data + i, sizeof(T));  // compiles to a plain load
        found |= Bits((bits & exponent) == exponent);
    }
    return found != 0;
}

template <bool kFma, typename T>
ElementwiseLoops<T> elementwise_loops_of_this_isa() {
    return {&exp_row<kFma, T>, &sigmoid_row<kFma, T>, &tanh_row<kFma, T>, &any_non_finite<T>};
}

}  // namespace

}  // namespace vector_math
}  // namespace fastmlp
