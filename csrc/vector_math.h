// exp, the logistic sigmoid, tanh, erf, gelu and the finiteness test, written as per-element
// code the compiler vectorises, and compiled once per instruction set: by activations.cpp (baseline),
// elementwise_avx2.cpp and elementwise_avx512.cpp. The FMA builds (AVX2, AVX-512) evaluate the same formula with the
// same fused operations in every lane, so they give the same bits at any vector width;
// the baseline build has no FMA and rounds the multiply and the add separately.
//
// exp(x): x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (ln2 split in two parts
// so that r is exact), e^r by its Taylor series (degree 7 for float, 13 for double: the
// truncation error is below a tenth of an ulp), then scaled by 2^n in two exact steps.
// Accurate to about 1 ulp. Results below the smallest normal number are flushed to zero
// (libm returns subnormals there); overflow gives inf, NaN stays NaN. tanh goes through
// expm1 (below), the same reduction without the series' constant term. erf and gelu: see
// ErfConstants.
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
    // y[j] = erf(x[j]).  y, x are (n); y may alias x.
    void (*erf_row)(T* y, const T* x, int64_t n);
    // y[j] = gelu(x[j] + bias[j]) (bias may be null: 0), the same shapes as sigmoid_row.
    void (*gelu_row)(T* y, const T* x, const T* bias, int64_t n);
    // dx[j] = dy[j] * gelu'(x[j]).  dx, dy, x are (n); dx may alias dy.
    void (*gelu_derivative_row)(T* dx, const T* dy, const T* x, int64_t n);
    // 1 when some element of data is NaN or infinite, else 0.  data is (n).
    int (*any_non_finite)(const T* data, int64_t n);
    // The largest |data[i]| (0 for n == 0): NaN or infinite when some element is.  data is (n).
    T (*largest_magnitude)(const T* data, int64_t n);
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

// e^x for x in [kMinimum, kMaximum] (not NaN): exp_of's core, called directly where the
// argument is in range by construction (the fewer selects keep erf's loops vectorisable:
// GCC's if-conversion gives up on a merge of more than 4 paths).
template <bool kFma, typename T>
inline T exp_in_range(T clamped) {
    using K = ExpConstants<T>;
    using Bits = typename K::Bits;
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
    return p * power_of_two<T>(half) * power_of_two<T>(n_integer - half);
}

template <bool kFma, typename T>
inline T exp_of(T x) {
    using K = ExpConstants<T>;
    // NaN is reduced as 0 (its lane's result is replaced by NaN below), so n stays in range.
    const T clamped = x < K::kMinimum ? K::kMinimum : (x > K::kMaximum ? K::kMaximum : (x == x ? x : T(0)));
    const T result = exp_in_range<kFma>(clamped);
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

// erf(x), branch-free (selects only), from two fits (tools/fit_erf.py derives every
// coefficient below: least squares at 100 digits refined towards minimax, relative error):
//   |x| <  kSmall:  erf(x) = x P(x^2), odd, exactly 0 at 0;
//   |x| >= kSmall:  erf(x) = sign(x) (1 - e^-a^2 R(t) / a), a = |x|, t = (a - K) / (a + K),
//                   where R(t) fits the smooth a e^(a^2) erfc(a), which tends to 1 / sqrt(pi):
//                   the map to t makes it polynomial-friendly out to large a, and its terms
//                   stay small beside its value (fitting e^(a^2) erfc(a) instead, ~1 / a,
//                   made Horner's rule cancel: 10 ulps in gelu's far left tail in double).
// P and R are within a tenth of an ulp (fit: float 8.5e-9 and 2.3e-9, double 2.2e-17 and
// 5.9e-18); the rest is exp's ulp and the rounding of the few operations. Past kOne erf
// rounds to 1 (erfc(4) < 2^-25, erfc(6) < 2^-54); R is fitted up to kTailEnd so that gelu's
// left tail, Phi(x) = erfc(-x / sqrt2) / 2, keeps its relative accuracy until it underflows.
template <typename T>
struct ErfConstants;

template <>
struct ErfConstants<float> {
    static constexpr float kSmall = 0.875f, kK = 2.0f, kOne = 4.0f, kTailEnd = 10.0f;
    static constexpr float kP[] = {1.12837916f,   -0.376125505f, 0.112824553f,
                                   -0.0267914627f, 0.00503218088f, -0.00062032528f};
    static constexpr float kR[] = {
        0.510791351f, 0.167211013f, -0.203844093f,
        0.121514707f, -0.0289819992f, -0.00750839494f,
        0.00483381847f, 0.00104148189f, -0.000874943584f};
    static constexpr float kSplitter = 4097.0f;   // 2^12 + 1: Dekker's split of a float
    static constexpr float kGaussianEnd = 13.216f;  // 13.216^2 / 2 < -ExpConstants::kMinimum
};

template <>
struct ErfConstants<double> {
    static constexpr double kSmall = 0.875, kK = 3.0, kOne = 6.0, kTailEnd = 28.0;
    static constexpr double kP[] = {
        1.1283791670955125,     -0.37612638903182987,   0.11283791670915581,
        -0.026866170637142632,  0.0052239775424370897,  -0.00085483219772438899,
        0.00012055141075911848, -1.4920941968530138e-5, 1.6387374168378114e-6,
        -1.5619255067404274e-7, 1.0456781850356794e-8};
    static constexpr double kR[] = {
        0.53700345354416985, 0.095306226959227945, -0.14658304803289209,
        0.13988054760178221, -0.095469750306542416, 0.046350263330667348,
        -0.014019825628705138, 0.00091082270406363401, 0.001242876195062042,
        -0.00041254399004832722, -8.4608468685304152e-5, 6.8981552527664021e-5,
        6.4647142852652999e-6, -1.1118208163166165e-5, -9.9146877623915065e-7,
        1.9060669883391419e-6, 2.832425412096843e-7, -3.5784682147410561e-7,
        -5.9659789623196836e-8, 7.0042162263435802e-8, -8.7877372321454058e-9};
    static constexpr double kSplitter = 134217729.0;  // 2^27 + 1
    static constexpr double kGaussianEnd = 37.64;     // 37.64^2 / 2 < -ExpConstants::kMinimum
};

// c[0] + c[1] v + ... by Horner's rule.
template <bool kFma, typename T, int N>
inline T polynomial(const T (&c)[N], T v) {
    T p = c[N - 1];
#pragma GCC unroll 32
    for (int k = N - 2; k >= 0; --k) p = multiply_add<kFma>(p, v, c[k]);
    return p;
}

// v for a in [lo, hi], the nearer end outside it, lo for NaN: keeps unused lanes finite.
template <typename T>
inline T clamp_to(T a, T lo, T hi) {
    return a >= lo ? (a < hi ? a : hi) : lo;
}

// a e^(a^2) erfc(a) for a in [kSmall, kTailEnd].
template <bool kFma, typename T>
inline T scaled_erfc_of(T a) {
    using K = ErfConstants<T>;
    return polynomial<kFma>(K::kR, (a - K::kK) / (a + K::kK));
}

template <bool kFma, typename T>
inline T erf_of(T x) {
    using K = ErfConstants<T>;
    const T a = x < 0 ? -x : x;
    const T s = a < K::kSmall ? x : T(0);
    const T small = s * polynomial<kFma>(K::kP, s * s);
    // The rounding of a^2 moves e^-a^2 by a relative a^2 2^-p, at most 0.16 ulp of erf here.
    const T b = clamp_to(a, K::kSmall, K::kOne);
    const T tail = T(1) - exp_in_range<kFma>(-(b * b)) * scaled_erfc_of<kFma>(b) / b;
    const T result = a < K::kSmall ? small : (x < 0 ? -tail : tail);
    return x != x ? x : result;
}

template <bool kFma, typename T>
void erf_row(T* y, const T* x, int64_t n) {
    for (int64_t j = 0; j < n; ++j) y[j] = erf_of<kFma>(x[j]);
}

// e^(-v^2 / 2) for v >= 0 with v^2 = h + l split exactly (FMA, or Dekker's product without),
// so that its relative error stays about an ulp even where v^2 / 2 is large (with v^2
// rounded the error would grow as v^2 2^-p: 40 ulps of float at v = 12). Past kGaussianEnd
// (and for NaN) 0: e^(-v^2/2) is below the smallest normal number there, flushed as exp_of does.
template <bool kFma, typename T>
inline T gaussian_of(T v) {
    constexpr T kEnd = ErfConstants<T>::kGaussianEnd;
    const T w = clamp_to(v, T(0), kEnd);
    const T h = w * w;
    T l;
    if constexpr (kFma) {
        l = std::fma(w, w, -h);
    } else {
        const T scaled = w * ErfConstants<T>::kSplitter;
        const T high = scaled - (scaled - w), low = w - high;
        l = ((high * high - h) + T(2) * high * low) + low * low;
    }
    const T e = exp_in_range<kFma>(T(-0.5) * h);
    // e^(-l/2) = 1 - l/2 to far below an ulp. The flush multiplies by 0 or 1 rather than
    // selecting: one more select after exp's would stop GCC's if-conversion (see exp_in_range).
    return multiply_add<kFma>(e, T(-0.5) * l, e) * T(v <= kEnd);
}

// Phi(x) = (1 + erf(x / sqrt2)) / 2 and phi(x) = e^(-x^2 / 2) / sqrt(2 pi), the normal cdf
// and density, for gelu(x) = x Phi(x) and gelu'(x) = Phi(x) + x phi(x). On the left
// Phi = erfc(|z|) / 2 = e^(-x^2/2) R(t) / (2 |z|) directly (z = x / sqrt2): no cancellation in
// 1 + erf, so Phi keeps its relative accuracy down to its underflow (libm's erf in 1 + erf
// loses it all by x = -6 in float).
template <typename T>
struct NormalCdf {
    T cdf, density_factor;  // Phi(x), and e^(-x^2/2) (phi = it / sqrt(2 pi))
};

template <bool kFma, typename T>
inline NormalCdf<T> normal_cdf_of(T x) {
    using K = ErfConstants<T>;
    const T z = x * T(0.70710678118654752440);
    const T a = z < 0 ? -z : z;
    const T s = a < K::kSmall ? z : T(0);
    const T small = multiply_add<kFma>(T(0.5) * s, polynomial<kFma>(K::kP, s * s), T(0.5));
    // kGaussianEnd / sqrt2 < kTailEnd: R covers every lane whose e^(-x^2/2) is not flushed.
    const T gaussian = gaussian_of<kFma>(std::fabs(x));
    const T b = clamp_to(a, K::kSmall, K::kTailEnd);
    const T half_erfc = T(0.5) * gaussian * scaled_erfc_of<kFma>(b) / b;
    const T cdf = a < K::kSmall ? small : (z < 0 ? half_erfc : T(1) - half_erfc);
    return {cdf, gaussian};
}

template <bool kFma, typename T>
inline T gelu_of(T x) {
    return x * normal_cdf_of<kFma>(x).cdf;  // NaN stays NaN; -inf gives NaN (-inf * 0)
}

template <bool kFma, typename T>
inline T gelu_derivative_of(T x) {
    const NormalCdf<T> n = normal_cdf_of<kFma>(x);
    const T density = n.density_factor * T(0.39894228040143267794);  // 1 / sqrt(2 pi)
    return multiply_add<kFma>(x, density, n.cdf);
}

template <bool kFma, typename T>
void gelu_row(T* y, const T* x, const T* bias, int64_t n) {
    if (bias)
        for (int64_t j = 0; j < n; ++j) y[j] = gelu_of<kFma>(x[j] + bias[j]);
    else
        for (int64_t j = 0; j < n; ++j) y[j] = gelu_of<kFma>(x[j]);
}

template <bool kFma, typename T>
void gelu_derivative_row(T* dx, const T* dy, const T* x, int64_t n) {
    for (int64_t j = 0; j < n; ++j) dx[j] = dy[j] * gelu_derivative_of<kFma>(x[j]);
}

// T's bit pattern as an unsigned integer of its width, and the masks of its fields.
template <typename T>
struct FloatBits {
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    static constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
    static constexpr Bits magnitude = sizeof(T) == 4 ? Bits(0x7fffffffu) : Bits(0x7fffffffffffffffull);
    static Bits of(const T* x) {
        Bits bits;
        std::memcpy(&bits, x, sizeof(T));  // compiles to a plain load
        return bits;
    }
};

// Tested on the bits (an all-ones exponent field), an integer OR-reduction that vectorises;
// a scalar isfinite loop does not.
template <typename T>
int any_non_finite(const T* data, int64_t n) {
    using F = FloatBits<T>;
    typename F::Bits found = 0;
    for (int64_t i = 0; i < n; ++i) found |= typename F::Bits((F::of(data + i) & F::exponent) == F::exponent);
    return found != 0;
}

// A magnitude's bits order as its value (NaN and infinities above every finite one): an
// integer max-reduction, which vectorises.
template <typename T>
T largest_magnitude(const T* data, int64_t n) {
    using F = FloatBits<T>;
    typename F::Bits largest = 0;
    for (int64_t i = 0; i < n; ++i) {
        const typename F::Bits bits = F::of(data + i) & F::magnitude;
        largest = bits > largest ? bits : largest;
    }
    T magnitude;
    std::memcpy(&magnitude, &largest, sizeof(T));
    return magnitude;
}

template <bool kFma, typename T>
ElementwiseLoops<T> elementwise_loops_of_this_isa() {
    return {&exp_row<kFma, T>,  &sigmoid_row<kFma, T>, &tanh_row<kFma, T>,
            &erf_row<kFma, T>,  &gelu_row<kFma, T>,    &gelu_derivative_row<kFma, T>,
            &any_non_finite<T>, &largest_magnitude<T>};
}

}  // namespace

}  // namespace vector_math
}  // namespace fastmlp
