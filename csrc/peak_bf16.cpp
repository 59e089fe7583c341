// The bfloat16 "peak" line of the benchmarks: VDPBF16PS throughput of a register-only loop,
// compiled with the AVX512_BF16 flags (as gemm_avx512_bf16.cpp); call it only when
// cpu_supports_isa("avx512_bf16").
#include <immintrin.h>

#include <cstdint>

#include "gemm_internal.h"

namespace fastmlp {
namespace gemm_detail {

// Single-thread VDPBF16PS throughput in GFLOP/s over about `seconds`. Each instruction does,
// per float32 lane, acc += a0 * b0 + a1 * b1 on a pair of bf16: 4 flops x 16 lanes. 16
// independent accumulators (as the float32 loop in gemm_simd.h) hide the latency with room
// to spare; the operands stay in registers, so nothing but the dot-product unit is timed.
double avx512_bf16_peak_gflops(double seconds) {
    constexpr int chains = 16;
    constexpr int64_t iterations = 1 << 16;
    // Products of 1e-4 * 1e-4: normal floats, and the sums stay far from overflow.
    const __m512 small = _mm512_set1_ps(1e-4f);
    const __m512bh a = _mm512_cvtne2ps_pbh(small, small), b = a;
    __m512 acc[chains];
    for (int i = 0; i < chains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
    const double blocks = blocks_per_second(seconds, [&] {
        for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
            for (int i = 0; i < chains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        }
    });
    // Keep the result alive so the loop is not optimised away.
    __m512 total = acc[0];
    for (int i = 1; i < chains; ++i) total = _mm512_add_ps(total, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(total);
    (void)sink;
    return blocks * iterations * chains * 16 * 4 * 1e-9;
}

}  // namespace gemm_detail
}  // namespace fastmlp
