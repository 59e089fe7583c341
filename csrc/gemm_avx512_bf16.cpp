// The packed GEMM path over bfloat16 operands with VDPBF16PS (kernels.h: gemm_bfloat16),
// compiled with -mavx512bf16 and the AVX-512 flags in this translation unit only and chosen
// at run time by gemm.cpp on CPUs with AVX512_BF16. Packing rounds the float32 operands
// (VCVTNE2PS2BF16) into k-pair-interleaved panels; the loops around are gemm_driver.h's.
#include <immintrin.h>

#include <algorithm>

#include "avx512_transpose.h"
#include "gemm_driver.h"
#include "gemm_internal.h"

namespace fastmlp {
namespace gemm_detail {

namespace {

// The lanes [0, n) of a zmm of 16 floats, 0 < n (all 16 when n >= 16; none when n <= 0).
inline __mmask16 first_lanes(int64_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1u);
}

// 16 float32 lanes of `even` and 16 of `odd` rounded to bfloat16 and interleaved: 32-bit word
// x holds (even[x], odd[x]), the even one in the low half (the pair VDPBF16PS multiplies).
inline __m512i interleaved_pairs(__m512 even, __m512 odd) {
    // _mm512_cvtne2ps_pbh(a, b) puts b's 16 bfloat16 in words 0..15 and a's in 16..31.
    const __m512i separate = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(odd, even));
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                           23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(order, separate);
}

// A sliver of 16 lines x k [k0, k0 + kc) as ceil(kc / 2) pair rows of 16 words:
// dst[q * 16 + x] = (element(x, k0 + 2q), element(x, k0 + 2q + 1)), zero past `lines` and
// past kc.  dst is 64-byte aligned.
//
// Lines contiguous (op(a) of a transposed a, op(b) of a plain b): element(x, k) =
// src[k * ld + x], x < lines <= 16.
void pack_pairs_lines_contiguous(float* dst, const float* src, int64_t ld, int64_t lines, int64_t kc) {
    const __mmask16 mask = first_lanes(lines);
    for (int64_t q = 0; 2 * q < kc; ++q) {
        const __m512 even = _mm512_maskz_loadu_ps(mask, src + 2 * q * ld);
        const __m512 odd = 2 * q + 1 < kc ? _mm512_maskz_loadu_ps(mask, src + (2 * q + 1) * ld) : _mm512_setzero_ps();
        _mm512_store_si512(dst + q * 16, interleaved_pairs(even, odd));
    }
}

// k contiguous (op(a) of a plain a, op(b) of a transposed b): element(x, k) = src[x * ld + k],
// x < lines <= 16. 32 k of each line become 16 words, then a 16 x 16 transpose.
void pack_pairs_k_contiguous(float* dst, const float* src, int64_t ld, int64_t lines, int64_t kc) {
    for (int64_t k = 0; k < kc; k += 32) {
        const __mmask16 low = first_lanes(kc - k), high = first_lanes(kc - k - 16);
        __m512 words[16];
        for (int64_t x = 0; x < 16; ++x) {
            if (x < lines) {
                const float* line = src + x * ld + k;
                // Consecutive k are the even and odd of a pair already: round, keep the order.
                const __m512 first = _mm512_maskz_loadu_ps(low, line), second = _mm512_maskz_loadu_ps(high, line + 16);
                words[x] = reinterpret_cast<__m512>(_mm512_cvtne2ps_pbh(second, first));
            } else {
                words[x] = _mm512_setzero_ps();
            }
        }
        const int pairs = static_cast<int>(std::min<int64_t>(16, (kc - k + 1) / 2));
        transpose_16x16_store(dst + k / 2 * 16, words, pairs);
    }
}

// 16 x 16 tile of c, VDPBF16PS over pair panels: 16 accumulators, one load of B and 16
// broadcasts of A per 16 instructions (each 32 multiply-adds per lane pair).
struct Bfloat16Kernels {
    static constexpr int64_t MR = 16, NR = 16, MC = 192, NC = 2048;
    static constexpr bool kPacksRowsOfA = false;
    static constexpr bool kPacksBfloat16Pairs = true;

    static void pack_a_pairs(float* dst, const Operands<float>& p, int64_t i0, int64_t k0, int64_t kc) {
        const int64_t rows = std::min(MR, p.M - i0);
        if (p.transpose_a) return pack_pairs_lines_contiguous(dst, p.a + k0 * p.M + i0, p.M, rows, kc);
        pack_pairs_k_contiguous(dst, p.a + i0 * p.K + k0, p.K, rows, kc);
    }

    static void pack_b_pairs(float* dst, const Operands<float>& p, int64_t j0, int64_t k0, int64_t kc) {
        const int64_t cols = std::min(NR, p.N - j0);
        if (p.transpose_b) return pack_pairs_k_contiguous(dst, p.b + j0 * p.K + k0, p.K, cols, kc);
        pack_pairs_lines_contiguous(dst, p.b + k0 * p.N + j0, p.N, cols, kc);
    }

    // c[16, 16] = (load_c ? c : 0) + the pair panels' products over k < kc.  a_panel and
    // b_panel are (ceil(kc / 2), 16) words of two bfloat16.
    static void micro_tile(int64_t kc, const float* a_panel, const float* b_panel, float* c, int64_t ldc,
                           bool load_c) {
        __m512 acc[MR];
#pragma GCC unroll 16
        for (int64_t i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
        const int64_t pairs = (kc + 1) / 2;
        for (int64_t q = 0; q < pairs; ++q) {
            const __m512bh b = reinterpret_cast<__m512bh>(_mm512_load_ps(b_panel));
#pragma GCC unroll 16
            for (int64_t i = 0; i < MR; ++i) {
                const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_ps(a_panel[i]));
                acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
            }
            a_panel += MR;
            b_panel += NR;
        }
#pragma GCC unroll 16
        for (int64_t i = 0; i < MR; ++i) {
            float* row = c + i * ldc;
            _mm512_storeu_ps(row, load_c ? _mm512_add_ps(_mm512_loadu_ps(row), acc[i]) : acc[i]);
        }
    }
};

}  // namespace

void avx512_bf16_packed_gemm(const Operands<float>& p, int threads) {
    packed_gemm<float, Bfloat16Kernels>(p, threads);
}

}  // namespace gemm_detail
}  // namespace fastmlp
