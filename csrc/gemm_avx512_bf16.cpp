// The packed GEMM path over bfloat16 operands with VDPBF16PS (kernels.h: gemm_bfloat16),
// compiled with -mavx512bf16 and the AVX-512 flags in this translation unit only and chosen
// at run time by gemm.cpp on CPUs with AVX512_BF16. Packing rounds the float32 operands
// (VCVTNE2PS2BF16) into k-pair-interleaved panels; the loops around are gemm_driver.h's.
#include <immintrin.h>

#include <algorithm>

#include "avx512_bf16_pairs.h"
#include "gemm_driver.h"
#include "gemm_internal.h"

namespace fastmlp {
namespace gemm_detail {

namespace {

// 16 x 16 tile of c, VDPBF16PS over pair panels: 16 accumulators, one load of B and 16
// broadcasts of A per 16 instructions (each 32 multiply-adds per lane pair).
struct Bfloat16Kernels {
    static constexpr int64_t MR = 16, NR = 16, MC = 192, NC = 2048;
    static constexpr bool kPacksRowsOfA = false;
    static constexpr bool kPacksColumnsOfB = false;
    static constexpr bool kPacksBfloat16Pairs = true;
    // A panel of kc k holds ceil(kc / 2) pair rows of 16 words: within kc floats per line.
    static int64_t panel_depth(int64_t kc) { return kc; }
    static void enter_thread() {}

    static void pack_a_pairs(float* dst, const Operands<float>& p, int64_t i0, int64_t k0, int64_t kc) {
        const int64_t rows = std::min(MR, p.M - i0);
        const int64_t pairs = (kc + 1) / 2;
        if (p.transpose_a)
            return pack_pairs_lines_contiguous(dst, p.a + k0 * p.M + i0, p.M, rows, kc, pairs, PairLayout::pair_rows);
        pack_pairs_k_contiguous(dst, p.a + i0 * p.K + k0, p.K, rows, kc, pairs, PairLayout::pair_rows);
    }

    static void pack_b_pairs(float* dst, const Operands<float>& p, int64_t j0, int64_t k0, int64_t kc) {
        const int64_t cols = std::min(NR, p.N - j0);
        const int64_t pairs = (kc + 1) / 2;
        if (p.transpose_b)
            return pack_pairs_k_contiguous(dst, p.b + j0 * p.K + k0, p.K, cols, kc, pairs, PairLayout::pair_rows);
        pack_pairs_lines_contiguous(dst, p.b + k0 * p.N + j0, p.N, cols, kc, pairs, PairLayout::pair_rows);
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
