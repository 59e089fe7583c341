// The optimizer loops over the flat parameter buffer (torch.optim's formulas, kernels.h),
// written once and compiled three times: by optim.cpp for the baseline ISA, by
// optim_avx2.cpp with -mavx2 -mfma and by optim_avx512.cpp with AVX-512, which let the
// compiler vectorise them 8 and 16 floats wide. All three TUs compile with
// -ffp-contract=off (and sqrt and division are correctly rounded), so they give the same bits.
//
// Each loop is also compiled over FloatViaDouble (below) for float: the same bits, without
// subnormal numbers in the float unit. The subnormal guard (below) runs that copy on the
// groups of 64 elements whose states have left float's normal range (an optimizer state
// that decays towards zero, Adam's first moment of a weight whose gradient stays 0, gets
// there after some hundreds of steps). The guard is for Intel's cores; optim.cpp runs the plain
// loops elsewhere (kernels.h, set_subnormal_guard): Zen 4 takes subnormals in its float unit,
// for less than the guard's look and twins cost.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "optim_scalars.h"

namespace fastmlp {
namespace optim_detail {

// Every variant, with the options that change the loop body as indices, so that each body
// is branch-free and vectorises.
template <typename T>
struct UpdateLoops {  // one ISA's loops; for float, plain or behind the subnormal guard
    UpdateLoop<T> sgd[2][2][2];   // [momentum != 0][nesterov][first step]
    UpdateLoop<T> adagrad;
    UpdateLoop<T> adadelta;
    UpdateLoop<T> rmsprop[2][2];  // [centered][momentum > 0]
    UpdateLoop<T> adam[2][2];     // [amsgrad][decoupled weight decay]
    UpdateLoop<T> adam_eps_hat[2][2];  // the same, epsilon added to the uncorrected sqrt(v)
};

// Defined in optim_avx2.cpp and optim_avx512.cpp: call only when the CPU has AVX2 and FMA,
// or AVX-512.
const UpdateLoops<float>& avx2_update_loops_float(bool guarded);
const UpdateLoops<double>& avx2_update_loops_double();
const UpdateLoops<float>& avx512_update_loops_float(bool guarded);
const UpdateLoops<double>& avx512_update_loops_double();

// Set by a guarded loop when it met a state outside the plain range; the caller clears it.
inline thread_local bool g_guard_found_state_outside_plain_range = false;

// TU-local: each including TU compiles its own copy for its own ISA (a shared inline
// definition would let the linker keep only one of them), FloatViaDouble and the guard too.
namespace {

// Hides a value from the compiler's algebra: GCC (and LLVM) turn float(double(a) * double(b))
// back into a * b, which is the same value, but computed by the float unit.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define FASTMLP_OPAQUE(x) __builtin_assoc_barrier(x)
#else
#define FASTMLP_OPAQUE(x) (x)  // the same bits; only the speed on subnormals is lost
#endif

// A float whose arithmetic runs in double, each result rounded back to float. That gives
// float's own bits: a double holds every float exactly, and rounding a sum, difference,
// product, quotient or square root to 53 bits and then to 24 gives the once-rounded result
// (53 >= 2 x 24 + 2), subnormal results included. But no subnormal ever reaches the float
// unit's multiplier or divider, which Intel's cores hand to microcode at ~100 cycles a
// vector instruction (measured here: 38 ns per 16-float multiply against 1.7), while
// conversions, additions and comparisons take them at full speed.
struct FloatViaDouble {
    float value;
    FloatViaDouble(float v) : value(v) {}  // NOLINT: implicit, so formulas read as for float
    explicit operator float() const { return value; }

    static FloatViaDouble rounded(double x) { return FloatViaDouble(static_cast<float>(FASTMLP_OPAQUE(x))); }
    friend FloatViaDouble operator+(FloatViaDouble a, FloatViaDouble b) {
        return rounded(static_cast<double>(a.value) + static_cast<double>(b.value));
    }
    friend FloatViaDouble operator-(FloatViaDouble a, FloatViaDouble b) {
        return rounded(static_cast<double>(a.value) - static_cast<double>(b.value));
    }
    friend FloatViaDouble operator*(FloatViaDouble a, FloatViaDouble b) {
        return rounded(static_cast<double>(a.value) * static_cast<double>(b.value));
    }
    friend FloatViaDouble operator/(FloatViaDouble a, FloatViaDouble b) {
        return rounded(static_cast<double>(a.value) / static_cast<double>(b.value));
    }
    friend bool operator>(FloatViaDouble a, FloatViaDouble b) {
        return static_cast<double>(a.value) > static_cast<double>(b.value);
    }
    friend FloatViaDouble square_root(FloatViaDouble a) { return rounded(std::sqrt(static_cast<double>(a.value))); }
};

inline float square_root(float x) { return std::sqrt(x); }
inline double square_root(double x) { return std::sqrt(x); }

// Each loop computes in C: T itself, or FloatViaDouble for T = float (the same bits). Every
// value read is converted to C, every value stored back to T.

//   params, momentum_buffer (state0, used when momentum != 0), grads are (n)
template <typename T, typename C, bool has_momentum, bool nesterov, bool first_step>
void sgd_loop(T* params, T* momentum_buffer, T*, T*, const T* grads, int64_t n,
              const UpdateScalars<T>& s) {
    // The scalars in locals (in every loop): stores could alias s, which would keep them in
    // memory and the loop from vectorising.
    const C weight_decay = s.weight_decay, momentum = s.momentum, one_minus_dampening = T(1) - s.dampening;
    const C lr = s.lr;
    for (int64_t i = 0; i < n; ++i) {
        const C p = params[i];
        C g = C(grads[i]) + weight_decay * p;
        if (has_momentum) {
            const C buf = first_step ? g : momentum * C(momentum_buffer[i]) + one_minus_dampening * g;
            momentum_buffer[i] = static_cast<T>(buf);
            g = nesterov ? g + momentum * buf : buf;
        }
        params[i] = static_cast<T>(p - lr * g);
    }
}

//   params, state_sum (state0), grads are (n)
template <typename T, typename C>
void adagrad_loop(T* params, T* state_sum, T*, T*, const T* grads, int64_t n,
                  const UpdateScalars<T>& s) {
    const C weight_decay = s.weight_decay, lr = s.lr, eps = s.eps;
    for (int64_t i = 0; i < n; ++i) {
        const C p = params[i];
        const C g = C(grads[i]) + weight_decay * p;
        const C sum = C(state_sum[i]) + g * g;
        state_sum[i] = static_cast<T>(sum);
        params[i] = static_cast<T>(p - lr * g / (square_root(sum) + eps));
    }
}

//   params, square_avg (state0), acc_delta (state1), grads are (n)
template <typename T, typename C>
void adadelta_loop(T* params, T* square_avg, T* acc_delta, T*, const T* grads, int64_t n,
                   const UpdateScalars<T>& s) {
    const C rho = s.decay, one_minus_rho = T(1) - s.decay, eps = s.eps;
    const C weight_decay = s.weight_decay, lr = s.lr;
    for (int64_t i = 0; i < n; ++i) {
        const C p = params[i];
        const C g = C(grads[i]) + weight_decay * p;
        const C square = rho * C(square_avg[i]) + one_minus_rho * g * g;
        const C delta = square_root(C(acc_delta[i]) + eps) / square_root(square + eps) * g;
        square_avg[i] = static_cast<T>(square);
        acc_delta[i] = static_cast<T>(rho * C(acc_delta[i]) + one_minus_rho * delta * delta);
        params[i] = static_cast<T>(p - lr * delta);
    }
}

//   params, square_avg (state0), grad_avg (state1, centered), momentum_buffer (state2,
//   momentum > 0), grads are (n)
template <typename T, typename C, bool centered, bool has_momentum>
void rmsprop_loop(T* params, T* square_avg, T* grad_avg, T* momentum_buffer, const T* grads,
                  int64_t n, const UpdateScalars<T>& s) {
    const C alpha = s.decay, one_minus_alpha = T(1) - s.decay, eps = s.eps;
    const C weight_decay = s.weight_decay, lr = s.lr, momentum = s.momentum;
    for (int64_t i = 0; i < n; ++i) {
        const C p = params[i];
        const C g = C(grads[i]) + weight_decay * p;
        const C square = alpha * C(square_avg[i]) + one_minus_alpha * g * g;
        square_avg[i] = static_cast<T>(square);
        // centered: the square's deviation from the running mean of g
        const C mean = centered ? alpha * C(grad_avg[i]) + one_minus_alpha * g : C(T(0));
        if (centered) grad_avg[i] = static_cast<T>(mean);
        const C avg = square_root(centered ? square - mean * mean : square) + eps;
        if (has_momentum) {
            const C buf = momentum * C(momentum_buffer[i]) + g / avg;
            momentum_buffer[i] = static_cast<T>(buf);
            params[i] = static_cast<T>(p - lr * buf);
        } else {
            params[i] = static_cast<T>(p - lr * g / avg);
        }
    }
}

// Adam's loops take two compute types: M for the first moment's chain (beta1 m, step_size m
// and its quotient), C for the rest. The subnormal guard runs M = FloatViaDouble alone where
// only m has left the normal range: the common case, a weight whose gradient has stayed 0
// (a dead ReLU unit's column), which then avoids the second moment's square root and the
// denominator in double. Every mixture gives the same bits. eps_hat: Kingma & Ba's "epsilon
// hat" in scikit-learn's operation order (AdamOptimizer._get_updates): v = b2 v + (1 - b2)
// (g g), denominator sqrt(v) + eps, step_size = lr sqrt(bc2) / bc1 a scalar.

// Adam's scalars as locals of a loop (see sgd_loop).
template <typename T, typename C, typename M>
struct AdamConstants {
    C one_minus_beta1, beta2, one_minus_beta2, decay_factor, weight_decay, eps, sqrt_bias_correction2;
    M beta1, step_size;
    explicit AdamConstants(const UpdateScalars<T>& s)
        : one_minus_beta1(T(1) - s.beta1), beta2(s.beta2), one_minus_beta2(T(1) - s.beta2),
          decay_factor(s.decay_factor), weight_decay(s.weight_decay), eps(s.eps),
          sqrt_bias_correction2(s.sqrt_bias_correction2), beta1(s.beta1), step_size(s.step_size) {}
};

// Element i of an Adam step but its update: the moments (and the maximum) are stored; the
// parameter after weight decay, the new first moment and the denominator are returned (plain
// T values: a FloatViaDouble member would keep the loops from vectorising).
template <typename T>
struct AdamElement {
    T decayed_param, first_moment, denom;
};

// The update's denominator from the second moment (the maximum, amsgrad).
template <bool eps_hat, typename T, typename C, typename M>
inline C adam_denominator(const AdamConstants<T, C, M>& k, C second_moment) {
    return eps_hat ? square_root(second_moment) + k.eps : square_root(second_moment) / k.sqrt_bias_correction2 + k.eps;
}

//   params, exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad only), grads are (> i)
template <typename T, typename C, bool amsgrad, bool decoupled_weight_decay, bool eps_hat, typename M>
inline AdamElement<T> adam_element(const AdamConstants<T, C, M>& k, const T* params, T* exp_avg,
                                      T* exp_avg_sq, T* max_exp_avg_sq, const T* grads, int64_t i) {
    C g = grads[i];
    C p = params[i];
    if (decoupled_weight_decay)
        p = p * k.decay_factor;
    else
        g = g + k.weight_decay * p;
    const M m = k.beta1 * M(exp_avg[i]) + M(static_cast<T>(k.one_minus_beta1 * g));
    const C v = eps_hat ? k.beta2 * C(exp_avg_sq[i]) + k.one_minus_beta2 * (g * g)
                        : k.beta2 * C(exp_avg_sq[i]) + k.one_minus_beta2 * g * g;
    exp_avg[i] = static_cast<T>(m);
    exp_avg_sq[i] = static_cast<T>(v);
    C second_moment = v;
    if (amsgrad) {
        const C previous_max = max_exp_avg_sq[i];
        second_moment = previous_max > v ? previous_max : v;
        max_exp_avg_sq[i] = static_cast<T>(second_moment);
    }
    return {static_cast<T>(p), static_cast<T>(m), static_cast<T>(adam_denominator<eps_hat>(k, second_moment))};
}

//   params, exp_avg (state0), exp_avg_sq (state1), max_exp_avg_sq (state2, amsgrad only),
//   grads are (n)
template <typename T, typename C, bool amsgrad, bool decoupled_weight_decay, bool eps_hat, typename M = C>
void adam_loop(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const T* grads, int64_t n,
               const UpdateScalars<T>& s) {
    const AdamConstants<T, C, M> k(s);
    for (int64_t i = 0; i < n; ++i) {
        const auto e = adam_element<T, C, amsgrad, decoupled_weight_decay, eps_hat>(k, params, exp_avg, exp_avg_sq,
                                                                                    max_exp_avg_sq, grads, i);
        params[i] = static_cast<T>(M(e.decayed_param) - k.step_size * M(e.first_moment) / M(e.denom));
    }
}

// The smallest |p| denom for which a first moment below 2^-100 cannot move p: p - step_size m
// / denom, each op rounded to float, is p itself when |p| >= 2^-100 and |p| denom >=
// step_size 2^-72 (rounded up to a float). For then the exact quotient is below |p| 2^-27
// (a product rounded to float loses at most a factor 1 - 2^-24), the quotient rounded twice
// stays below |p| 2^-25 (relative error 2^-23, or 2^-149 absolute where subnormal), and that
// is half the gap below p at a power of two, less elsewhere.
inline float unmoved_param_denom_product(float step_size) {
    const double product = static_cast<double>(step_size) * 0x1p-72;
    const float rounded = static_cast<float>(product);
    return static_cast<double>(rounded) < product ? std::nextafter(rounded, INFINITY) : rounded;
}

// Whether a first moment below 2^-100 leaves decayed_param as it is (see above). Float
// compares and one product of normal numbers: cheap beside the quotient it avoids. (Not
// ruled: p near 0, infinite or NaN, a denominator 0 or NaN.)
inline bool small_moment_leaves_param(float decayed_param, float denom, float smallest_product) {
    const float magnitude = std::fabs(decayed_param);
    // & rather than &&: no branches, so the loop around it vectorises
    return (magnitude >= 0x1p-100f) & (magnitude <= FLT_MAX) & (denom > 0.0f) &
           (magnitude * denom >= smallest_product);
}

// Adam with the first moment's chain over FloatViaDouble: the guard's common twin, for
// elements whose first moment has left float's normal range while the rest has not. A first
// moment below 2^-100 cannot move a parameter of ordinary size (small_moment_leaves_param),
// so the update's quotient, the dearest op of the loop in double, is computed in float: from
// the moment and its denominator where the moment is not that small, and as 0 / 1 where it is
// (its subnormal would stall the float unit; the denominator may be 0), which leaves the
// parameter as it is. The few elements where the bound does not rule (a parameter near 0)
// are computed again in double, from the stored moments and the parameter after weight decay
// that the quotient 0 / 1 left. The same bits as adam_loop<float, float, ..., FloatViaDouble>.
//
// The quotients' operands pass from one loop to the next in arrays: in one loop, GCC 12 moves
// the choice of 0 / 1 past the division (a float division of the moment itself, subnormal or
// not, then the choice of its result). And not a fixed 16-element loop: GCC 12's straight-line
// vectoriser dropped FloatViaDouble's roundings to float in one such attempt.
//   params, exp_avg (state0), exp_avg_sq (state1), max_exp_avg_sq (state2, amsgrad only),
//   grads are (n)
template <bool amsgrad, bool decoupled_weight_decay, bool eps_hat>
void adam_first_moment_twin(float* params, float* exp_avg, float* exp_avg_sq, float* max_exp_avg_sq,
                            const float* grads, int64_t n, const UpdateScalars<float>& s) {
    // An infinite step size (lr / bc1 past float's range) would make the quotient 0 / 1 a NaN:
    // such a step runs all in double.
    if (!std::isfinite(s.step_size))
        return adam_loop<float, float, amsgrad, decoupled_weight_decay, eps_hat, FloatViaDouble>(
            params, exp_avg, exp_avg_sq, max_exp_avg_sq, grads, n, s);
    const AdamConstants<float, float, FloatViaDouble> k(s);
    const float step_size = s.step_size;
    const float smallest_product = unmoved_param_denom_product(s.step_size);
    constexpr int64_t CHUNK = 256;  // 1 KiB of each array below
    float numerators[CHUNK], denominators[CHUNK];
    int unruled = 0;
    for (int64_t begin = 0; begin < n; begin += CHUNK) {
        const int64_t count = std::min(CHUNK, n - begin);
        float* p = params + begin;
        for (int64_t i = 0; i < count; ++i) {
            const auto e = adam_element<float, float, amsgrad, decoupled_weight_decay, eps_hat>(
                k, p, exp_avg + begin, exp_avg_sq + begin, max_exp_avg_sq ? max_exp_avg_sq + begin : nullptr,
                grads + begin, i);
            const bool small = std::fabs(e.first_moment) < 0x1p-100f;
            p[i] = e.decayed_param;
            numerators[i] = small ? 0.0f : e.first_moment;
            denominators[i] = small ? 1.0f : e.denom;
            unruled |= small & !small_moment_leaves_param(e.decayed_param, e.denom, smallest_product);
        }
        for (int64_t i = 0; i < count; ++i)
            p[i] = p[i] - step_size * numerators[i] / denominators[i];
    }
    if (!unruled) return;
    const AdamConstants<float, float, float> plain_k(s);
    for (int64_t i = 0; i < n; ++i) {
        if (!(std::fabs(exp_avg[i]) < 0x1p-100f)) continue;
        const float decayed = params[i];
        const float denom = adam_denominator<eps_hat>(plain_k, amsgrad ? max_exp_avg_sq[i] : exp_avg_sq[i]);
        if (!small_moment_leaves_param(decayed, denom, smallest_product))
            params[i] = static_cast<float>(FloatViaDouble(decayed) -
                                           k.step_size * FloatViaDouble(exp_avg[i]) / FloatViaDouble(denom));
    }
}

// ---- The subnormal guard (float) ---------------------------------------------------------------
//
// The elements go 64 at a time to the plain float loop, or to a twin computing over
// FloatViaDouble when one of the 64 has an optimizer state whose products could leave float's
// normal range: a magnitude below 2^-100 but not zero (a state decaying towards zero,
// subnormals included) or of 2^50 and more (infinities and NaN too). Each 64 goes in a call
// of its own right after its look, while what the look read is in L1: runs of up to 1024
// elements of one kind in one call took 15-25% longer on the states of a 3-epoch fit, and
// 20% longer than the plain loop alone on states without a small value (against 5% for a
// call per 64). Every twin
// gives the IEEE result, so the choice changes no bits, only the speed. Only the states are
// looked at, since they are what decays (checking
// the gradient and parameters as well doubled the look's cost). Why 2^-100: Adam's
// step_size m / denom stays normal for first moments above it with lr >= 2^-20 and a
// denominator below 2^6, and a momentum buffer's lr buf too; so the plain loop meets a
// subnormal only from a tiny gradient or parameter, a larger second moment, a sum of normal
// numbers that cancels that far, or RMSprop's centred mean^2 for means below 2^-63, and is
// merely slow there. (2^-60 sent the states of units that died in the first epoch to the
// twins some 260 steps earlier, which slowed a first bf16 epoch of 784-256-10 by 10-20%.)
constexpr int64_t kGuardLanes = 64;  // lanes per decision: four zmm compares per state
constexpr uint32_t kSmallestPlainMagnitude = (127u - 100u) << 23;  // 2^-100's bits
constexpr uint32_t kLargestPlainMagnitude = (127u + 50u) << 23;   // 2^50's bits

// Whether x[i] is a value the plain loop should not multiply.
inline bool outside_plain_range(const float* x, int64_t i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    const uint32_t magnitude = bits & 0x7fffffffu;
    return (magnitude != 0 && magnitude < kSmallestPlainMagnitude) || magnitude >= kLargestPlainMagnitude;
}

// Whether any of x[0, n), n <= kGuardLanes, is (x null: no): a few vector compares where the
// instruction set has them.
inline bool needs_exact_loop(const float* x, int64_t n) {
    if (!x) return false;
#if defined(__AVX512F__)
    if (n == kGuardLanes) {
        // magnitude 0 passes; otherwise magnitude - smallest must be below largest - smallest
        const __m512i sign_off = _mm512_set1_epi32(0x7fffffff), smallest = _mm512_set1_epi32(kSmallestPlainMagnitude);
        const __m512i range = _mm512_set1_epi32(kLargestPlainMagnitude - kSmallestPlainMagnitude);
        __mmask16 found = 0;
        for (int64_t i = 0; i < kGuardLanes; i += 16) {
            const __m512i magnitude = _mm512_and_si512(_mm512_loadu_si512(x + i), sign_off);
            found |= _mm512_mask_cmpge_epu32_mask(_mm512_test_epi32_mask(magnitude, magnitude),
                                                  _mm512_sub_epi32(magnitude, smallest), range);
        }
        return found != 0;
    }
#elif defined(__AVX2__)
    if (n == kGuardLanes) {
        const __m256i sign_off = _mm256_set1_epi32(0x7fffffff), zero = _mm256_setzero_si256();
        const __m256i smallest = _mm256_set1_epi32(kSmallestPlainMagnitude);
        const __m256i largest_below = _mm256_set1_epi32(kLargestPlainMagnitude - 1);
        __m256i found = zero;
        for (int64_t i = 0; i < kGuardLanes; i += 8) {  // magnitudes fit int32: signed compares
            const __m256i magnitude =
                _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), sign_off);
            const __m256i small = _mm256_and_si256(_mm256_cmpgt_epi32(magnitude, zero), _mm256_cmpgt_epi32(smallest, magnitude));
            found = _mm256_or_si256(found, _mm256_or_si256(small, _mm256_cmpgt_epi32(magnitude, largest_below)));
        }
        return !_mm256_testz_si256(found, found);
    }
#endif
    bool found = false;
    for (int64_t i = 0; i < n; ++i) found |= outside_plain_range(x, i);
    return found;
}

// plain, first_state_exact and exact: one loop over float; with the ops on state0 (and what
// comes of it) over FloatViaDouble; and wholly over FloatViaDouble. A loop without a special
// first-state variant passes exact there.
//   params, state0, state1, state2 (each null when unused), grads are (n)
template <UpdateLoop<float> plain, UpdateLoop<float> first_state_exact, UpdateLoop<float> exact>
void guarded_loop(float* params, float* state0, float* state1, float* state2, const float* grads,
                  int64_t n, const UpdateScalars<float>& s) {
    auto at = [](float* x, int64_t i) { return x ? x + i : nullptr; };
    bool found = false;
    for (int64_t begin = 0; begin < n; begin += kGuardLanes) {
        const int64_t count = std::min(kGuardLanes, n - begin);
        const UpdateLoop<float> loop =
            needs_exact_loop(at(state1, begin), count) | needs_exact_loop(at(state2, begin), count) ? exact
            : needs_exact_loop(at(state0, begin), count)                                            ? first_state_exact
                                                                                                    : plain;
        found = found || loop != plain;
        loop(params + begin, at(state0, begin), at(state1, begin), at(state2, begin), grads + begin, count, s);
    }
    if (found) g_guard_found_state_outside_plain_range = true;
}

// An entry of T's table: the loop over T; for float and guarded, that loop behind the subnormal
// guard with its FloatViaDouble twins.
template <typename T>
constexpr UpdateLoop<T> table_entry(bool guarded, UpdateLoop<T> plain, UpdateLoop<float> guarded_loop) {
    if constexpr (std::is_same_v<T, float>) {
        if (guarded) return guarded_loop;
    }
    (void)guarded_loop;
    return plain;
}
#define FASTMLP_UPDATE_LOOP(loop, ...)                                                                   \
    table_entry<T>(guarded, &loop<T, T, ##__VA_ARGS__>,                                                  \
                   &guarded_loop<&loop<float, float, ##__VA_ARGS__>, &loop<float, FloatViaDouble, ##__VA_ARGS__>, \
                                 &loop<float, FloatViaDouble, ##__VA_ARGS__>>)
// Adam's loops, with their first-moment-only twin.
#define FASTMLP_ADAM_LOOP(amsgrad, decoupled, eps_hat)                                                   \
    table_entry<T>(guarded, &adam_loop<T, T, amsgrad, decoupled, eps_hat>,                               \
                   &guarded_loop<&adam_loop<float, float, amsgrad, decoupled, eps_hat>,                  \
                                 &adam_first_moment_twin<amsgrad, decoupled, eps_hat>,                   \
                                 &adam_loop<float, FloatViaDouble, amsgrad, decoupled, eps_hat>>)

// Every loop of this instruction set (guarded: for float, behind the subnormal guard).
template <typename T>
UpdateLoops<T> update_loops_of_this_isa(bool guarded = false) {
    UpdateLoops<T> loops{};
    loops.sgd[0][0][0] = FASTMLP_UPDATE_LOOP(sgd_loop, false, false, false);
    loops.sgd[0][0][1] = FASTMLP_UPDATE_LOOP(sgd_loop, false, false, true);
    loops.sgd[0][1][0] = FASTMLP_UPDATE_LOOP(sgd_loop, false, true, false);
    loops.sgd[0][1][1] = FASTMLP_UPDATE_LOOP(sgd_loop, false, true, true);
    loops.sgd[1][0][0] = FASTMLP_UPDATE_LOOP(sgd_loop, true, false, false);
    loops.sgd[1][0][1] = FASTMLP_UPDATE_LOOP(sgd_loop, true, false, true);
    loops.sgd[1][1][0] = FASTMLP_UPDATE_LOOP(sgd_loop, true, true, false);
    loops.sgd[1][1][1] = FASTMLP_UPDATE_LOOP(sgd_loop, true, true, true);
    loops.adagrad = FASTMLP_UPDATE_LOOP(adagrad_loop);
    loops.adadelta = FASTMLP_UPDATE_LOOP(adadelta_loop);
    loops.rmsprop[0][0] = FASTMLP_UPDATE_LOOP(rmsprop_loop, false, false);
    loops.rmsprop[0][1] = FASTMLP_UPDATE_LOOP(rmsprop_loop, false, true);
    loops.rmsprop[1][0] = FASTMLP_UPDATE_LOOP(rmsprop_loop, true, false);
    loops.rmsprop[1][1] = FASTMLP_UPDATE_LOOP(rmsprop_loop, true, true);
    loops.adam[0][0] = FASTMLP_ADAM_LOOP(false, false, false);
    loops.adam[0][1] = FASTMLP_ADAM_LOOP(false, true, false);
    loops.adam[1][0] = FASTMLP_ADAM_LOOP(true, false, false);
    loops.adam[1][1] = FASTMLP_ADAM_LOOP(true, true, false);
    loops.adam_eps_hat[0][0] = FASTMLP_ADAM_LOOP(false, false, true);
    loops.adam_eps_hat[0][1] = FASTMLP_ADAM_LOOP(false, true, true);
    loops.adam_eps_hat[1][0] = FASTMLP_ADAM_LOOP(true, false, true);
    loops.adam_eps_hat[1][1] = FASTMLP_ADAM_LOOP(true, true, true);
    return loops;
}
#undef FASTMLP_UPDATE_LOOP
#undef FASTMLP_ADAM_LOOP

}  // namespace

}  // namespace optim_detail
}  // namespace fastmlp
