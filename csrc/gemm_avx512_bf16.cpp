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

// 16 x 32 tile of c, VDPBF16PS over pair panels, as two 8 x 32 halves: 16 accumulators per
// half, two loads of B and 8 broadcasts of A per 16 instructions (each 32 multiply-adds per
// lane pair). Zen 4 runs VDPBF16PS at ~95% of its peak this way, but at ~71% from a 16 x 16
// tile, whose broadcast per instruction it cannot keep up with (measured in L1: 224 against
// 168 GFLOP/s per core). Each element is the same chain of pairs either way.
struct Bfloat16Kernels {
    static constexpr int64_t MR = 16, NR = 32, MC = 192, NC = 2048;
    static constexpr int64_t HALF_ROWS = 8, LINES = 16;  // rows per pass; lines per pair row
    static constexpr bool kPacksRowsOfA = false;
    static constexpr bool kPacksColumnsOfB = false;
    static constexpr bool kPacksBfloat16Pairs = true;
    // A panel of kc k holds ceil(kc / 2) pair rows of MR (A) or NR (B) words.
    static int64_t panel_depth(int64_t kc) { return (kc + 1) / 2; }
    static void enter_thread() {}

    static void pack_a_pairs(float* dst, const Operands<float>& p, int64_t i0, int64_t k0, int64_t kc) {
        const int64_t rows = std::min(MR, p.M - i0);
        const int64_t pairs = (kc + 1) / 2;
        if (p.transpose_a)
            return pack_pairs_lines_contiguous(dst, p.a + k0 * p.M + i0, p.M, rows, kc, pairs, PairLayout::pair_rows);
        pack_pairs_k_contiguous(dst, p.a + i0 * p.K + k0, p.K, rows, kc, pairs, PairLayout::pair_rows);
    }

    // A 32-column sliver: pair row q is 32 words, columns j0 .. j0 + 15 then j0 + 16 .. j0 + 31.
    static void pack_b_pairs(float* dst, const Operands<float>& p, int64_t j0, int64_t k0, int64_t kc) {
        const int64_t cols = std::min(NR, p.N - j0);
        const int64_t pairs = (kc + 1) / 2;
        if (!p.transpose_b)
            return pack_pair_rows_in_two_halves(dst, LINES, p.b + k0 * p.N + j0, p.N, cols, kc, pairs, NR);
        for (int64_t half = 0; half < NR / LINES; ++half) {  // lines <= 0: a half of zeros
            const int64_t first = half * LINES, lines = std::min(LINES, cols - first);
            pack_pairs_k_contiguous(dst + first, p.b + (j0 + first) * p.K + k0, p.K, lines, kc, pairs,
                                    PairLayout::pair_rows, NR);
        }
    }

    // c rows [8 * half, 8 * half + 8) x 32 columns of the tile.
    template <int half>
    static void micro_tile_half(int64_t pairs, const float* a_panel, const float* b_panel, float* c, int64_t ldc,
                                bool load_c) {
        c += half * HALF_ROWS * ldc;
        if (load_c) prefetch_half(c, ldc);
        __m512 acc[HALF_ROWS][2];
#pragma GCC unroll 8
        for (int64_t i = 0; i < HALF_ROWS; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        a_panel += half * HALF_ROWS;
        for (int64_t q = 0; q < pairs; ++q) {
            const __m512bh left = reinterpret_cast<__m512bh>(_mm512_load_ps(b_panel + q * NR));
            const __m512bh right = reinterpret_cast<__m512bh>(_mm512_load_ps(b_panel + q * NR + LINES));
#pragma GCC unroll 8
            for (int64_t i = 0; i < HALF_ROWS; ++i) {
                const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_ps(a_panel[q * MR + i]));
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, left);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, right);
            }
        }
#pragma GCC unroll 8
        for (int64_t i = 0; i < HALF_ROWS; ++i)
            for (int64_t u = 0; u < 2; ++u) {
                float* row = c + i * ldc + u * LINES;
                _mm512_storeu_ps(row, load_c ? _mm512_add_ps(_mm512_loadu_ps(row), acc[i][u]) : acc[i][u]);
            }
    }

    // Asks for the 16 lines of a half's 8 x 32 block of c, which it adds to after its pair
    // loop: they arrive while VDPBF16PS runs (c's rows are ldc apart, in a few L1 sets when ldc
    // is a power of two; without this their misses stall the end of each half). A half at a
    // time: both halves' 32 lines would overfill those sets.
    static void prefetch_half(const float* c, int64_t ldc) {
#pragma GCC unroll 8
        for (int64_t i = 0; i < HALF_ROWS; ++i) {
            _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + LINES), _MM_HINT_T0);
        }
    }

    // c[16, 32] = (load_c ? c : 0) + the pair panels' products over `pairs` pairs.  a_panel
    // is (pairs, 16) and b_panel (pairs, 32) words of two bfloat16.
    static void micro_tile(int64_t pairs, const float* a_panel, const float* b_panel, float* c, int64_t ldc,
                           bool load_c) {
        micro_tile_half<0>(pairs, a_panel, b_panel, c, ldc, load_c);
        micro_tile_half<1>(pairs, a_panel, b_panel, c, ldc, load_c);
    }
};

// ---------------------------------------------------------------------------------------
// A few rows of c (M <= 4: one-sample prediction) against b packed whole, a row at a time:
// the 16 x 16 tile would spend 15 of its 16 broadcasts on rows of zeros. Each element is
// the same VDPBF16PS chain as in micro_tile (per K block from zero, added to c in order).
// ---------------------------------------------------------------------------------------

constexpr int64_t kFewRows = 4;

// Pair row q of 16-column unit u (columns 16u .. 16u + 15) in a block of b packed whole:
// half u % 2 of 32-column sliver u / 2.
inline const float* unit_pair_row(const float* block, int64_t pairs, int64_t u, int64_t q) {
    constexpr int64_t NR = Bfloat16Kernels::NR, LINES = Bfloat16Kernels::LINES;
    return block + ((u / 2) * pairs + q) * NR + (u % 2) * LINES;
}

// Row i of c, columns of kSlivers 16-column units from unit s0, over every K block (8
// independent chains hide VDPBF16PS's latency), then the epilogue. a_packed holds each
// block's rows as line rows (avx512_bf16_pairs.h), a_block_stride floats apart.
template <int kSlivers>
void few_rows_slivers(const Operands<float>& p, const float* a_packed, int64_t a_block_stride, int64_t i,
                      int64_t s0) {
    const KBlocking kb = p.blocking();
    const int64_t j0 = s0 * 16;
    for (int64_t b = 0; b < kb.count; ++b) {
        const int64_t kc = std::min(kb.size, p.K - b * kb.size), pairs = (kc + 1) / 2;
        const float* a = a_packed + b * a_block_stride + i * 16;
        const float* block = packed_b_block<float, Bfloat16Kernels>(p, b);
        __m512 acc[kSlivers];
        for (int u = 0; u < kSlivers; ++u) acc[u] = _mm512_setzero_ps();
        for (int64_t q = 0; q < pairs; ++q) {
            const __m512bh pair = reinterpret_cast<__m512bh>(_mm512_set1_ps(a[(q >> 4) * 256 + (q & 15)]));
#pragma GCC unroll 8
            for (int u = 0; u < kSlivers; ++u)
                acc[u] = _mm512_dpbf16_ps(
                    acc[u], pair, reinterpret_cast<__m512bh>(_mm512_load_ps(unit_pair_row(block, pairs, s0 + u, q))));
        }
        const bool load_c = p.accumulate || b > 0;
        for (int u = 0; u < kSlivers; ++u) {
            const int64_t j = j0 + 16 * u;
            const __mmask16 mask = first_lanes(p.N - j);
            float* row = p.c + i * p.N + j;
            _mm512_mask_storeu_ps(row, mask, load_c ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask, row), acc[u]) : acc[u]);
        }
    }
    finish_block(p, i, j0, 1, std::min<int64_t>(16 * kSlivers, p.N - j0));
}

// p.M <= kFewRows, p.packed_b set: A packed once (line rows of 16 pairs, as a 16-line sliver
// of AMX's A), 16-column units of b shared among threads in groups of 8.
void few_rows_gemm(const Operands<float>& p, int threads) {
    const KBlocking kb = p.blocking();
    const int64_t a_block_stride = ceil_div(kb.size, 32) * 256;
    float* a_packed = packed_a_scratch<float>(kb.count * a_block_stride);
    if (!a_packed) throw std::bad_alloc();
    for (int64_t b = 0; b < kb.count; ++b) {
        const int64_t k0 = b * kb.size, kc = std::min(kb.size, p.K - k0), pairs = ceil_div(kc, 32) * 16;
        float* out = a_packed + b * a_block_stride;
        if (p.transpose_a)
            pack_pairs_lines_contiguous(out, p.a + k0 * p.M, p.M, p.M, kc, pairs, PairLayout::line_rows);
        else
            pack_pairs_k_contiguous(out, p.a + k0, p.K, p.M, kc, pairs, PairLayout::line_rows);
    }
    const int64_t slivers = ceil_div(p.N, 16), groups = ceil_div(slivers, 8);
    auto run = [&](int thread, int team) {
        const Range mine = split(groups, thread, team);
        for (int64_t i = 0; i < p.M; ++i)
            for (int64_t g = mine.begin; g < mine.end; ++g) {
                if (8 * g + 8 <= slivers) {
                    few_rows_slivers<8>(p, a_packed, a_block_stride, i, 8 * g);
                } else {
                    for (int64_t s = 8 * g; s < slivers; ++s) few_rows_slivers<1>(p, a_packed, a_block_stride, i, s);
                }
            }
    };
    threads = static_cast<int>(std::min<int64_t>(threads, groups));
    if (threads <= 1) return run(0, 1);
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace

int64_t avx512_bf16_packed_b_size(const Operands<float>& p) { return packed_b_size<float, Bfloat16Kernels>(p); }

void avx512_bf16_pack_b(float* out, const Operands<float>& p) { pack_whole_b<float, Bfloat16Kernels>(out, p); }

void avx512_bf16_packed_gemm(const Operands<float>& p, int threads) {
    packed_or_few_rows_gemm<float, Bfloat16Kernels>(p, threads, kFewRows, few_rows_gemm);
}

}  // namespace gemm_detail
}  // namespace fastmlp
