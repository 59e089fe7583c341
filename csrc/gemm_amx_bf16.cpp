// The packed GEMM path over bfloat16 operands with AMX (TDPBF16PS on 16 x 16 float32 tiles),
// compiled with -mamx-tile -mamx-bf16 and the AVX-512 flags in this translation unit only and
// chosen by gemm.cpp on CPUs (and kernels) that allow AMX. Packing (avx512_bf16_pairs.h)
// rounds A into 16-row x 16-pair tiles and B into pair-row tiles; the loops around are
// gemm_driver.h's. TDPBF16PS does not add in the canonical order (gemm_internal.h): see
// amx_bf16_packed_gemm there.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "avx512_bf16_pairs.h"
#include "gemm_driver.h"
#include "gemm_internal.h"

namespace fastmlp {
namespace gemm_detail {

namespace {

// The tile configuration (LDTILECFG's 64-byte operand), palette 1.
struct alignas(64) TileConfig {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
};

// Tiles 0-3: c; 4, 5: A's rows x 16 pairs; 6, 7: B's 16 pairs x 16 columns. Each 16 rows of
// 64 bytes for the 32 x 32 tile (tiles 0-3 its four 16 x 16 quarters, 4 and 5 the two 16-row
// halves of A); for few_rows_gemm, c's tiles and A's tile 4 have the M <= 16 rows of c.
const TileConfig& tile_config(int64_t rows_of_c) {
    static const auto configs = [] {
        std::array<TileConfig, 17> all;
        for (int rows = 1; rows <= 16; ++rows)
            for (int t = 0; t < 8; ++t) {
                all[rows].rows[t] = static_cast<uint8_t>(t <= 4 ? rows : 16);
                all[rows].bytes_per_row[t] = 64;
            }
        return all;
    }();
    return configs[rows_of_c];
}

// Checked at every product: another library in the thread (oneDNN) may have loaded its
// own configuration, or released the tiles, since the last one. Left configured after
// (never released): LDTILECFG costs ~270 ns, reading the configuration back and comparing
// it ~30 ns (tools/amx_bf16_probe.c).
void use_tile_config(const TileConfig& wanted) {
    TileConfig current;
    _tile_storeconfig(&current);
    if (std::memcmp(&current, &wanted, sizeof current) != 0) _tile_loadconfig(&wanted);
}

// 32 x 32 tile of c, TDPBF16PS: four accumulator tiles, two A and two B tiles per 16 pairs.
// A sliver (32 rows) and a B sliver (32 columns) are each two 16-line halves of `pairs`
// (a multiple of 16) pairs, the second half `pairs * 16` words after the first: A's halves
// in line rows, B's in pair rows (avx512_bf16_pairs.h).
struct AmxKernels {
    static constexpr int64_t MR = 32, NR = 32, MC = 192, NC = 2048;
    static constexpr int64_t kPairsPerTile = 16;
    static constexpr bool kPacksRowsOfA = false;
    static constexpr bool kPacksColumnsOfB = false;
    static constexpr bool kPacksBfloat16Pairs = true;

    // A panel's depth, in pairs (32-bit words) per line: the ceil(kc / 2) pairs of a K block,
    // padded with zero pairs to whole tiles. The padding depends on K alone, like the blocks,
    // so it cannot make a row's sum depend on M.
    static int64_t panel_depth(int64_t kc) { return ceil_div(kc, 2 * kPairsPerTile) * kPairsPerTile; }

    static void enter_thread() { use_tile_config(tile_config(16)); }

    // The two 16-line halves of a sliver of `lines` (<= 32) lines, one after the other.
    // element(x, k) = src[x * ld + k] when k_contiguous, else src[k * ld + x].
    static void pack_halves(float* dst, const float* src, int64_t ld, bool k_contiguous, int64_t lines,
                            int64_t kc, PairLayout layout) {
        const int64_t pairs = panel_depth(kc);
        for (int64_t half = 0; half < 2; ++half) {
            const int64_t first = 16 * half, count = std::clamp<int64_t>(lines - first, 0, 16);
            float* out = dst + half * pairs * 16;
            if (k_contiguous)
                pack_pairs_k_contiguous(out, src + first * ld, ld, count, kc, pairs, layout);
            else
                pack_pairs_lines_contiguous(out, src + first, ld, count, kc, pairs, layout);
        }
    }

    static void pack_a_pairs(float* dst, const Operands<float>& p, int64_t i0, int64_t k0, int64_t kc) {
        const int64_t rows = std::min(MR, p.M - i0);
        if (p.transpose_a) return pack_halves(dst, p.a + k0 * p.M + i0, p.M, false, rows, kc, PairLayout::line_rows);
        pack_halves(dst, p.a + i0 * p.K + k0, p.K, true, rows, kc, PairLayout::line_rows);
    }

    static void pack_b_pairs(float* dst, const Operands<float>& p, int64_t j0, int64_t k0, int64_t kc) {
        const int64_t cols = std::min(NR, p.N - j0);
        if (p.transpose_b) return pack_halves(dst, p.b + j0 * p.K + k0, p.K, true, cols, kc, PairLayout::pair_rows);
        const int64_t pairs = panel_depth(kc);
        pack_pair_rows_in_two_halves(dst, pairs * 16, p.b + k0 * p.N + j0, p.N, cols, kc, pairs);
    }

    // c[32, 32] = (load_c ? c : 0) + the panels' products over `pairs` pairs (the block's sum
    // from zero in the tiles, then added to c in float32, as the canonical order's blocks).
    static void micro_tile(int64_t pairs, const float* a_panel, const float* b_panel, float* c, int64_t ldc,
                           bool load_c) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        const int64_t half = pairs * 16;
        for (int64_t q = 0; q < pairs; q += kPairsPerTile) {
            _tile_loadd(4, a_panel + q * 16, 64);
            _tile_loadd(5, a_panel + half + q * 16, 64);
            _tile_loadd(6, b_panel + q * 16, 64);
            _tile_loadd(7, b_panel + half + q * 16, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        const int64_t stride = load_c ? NR : ldc;
        alignas(64) float block[MR * NR];
        float* out = load_c ? block : c;
        _tile_stored(0, out, stride * 4);
        _tile_stored(1, out + 16, stride * 4);
        _tile_stored(2, out + 16 * stride, stride * 4);
        _tile_stored(3, out + 16 * stride + 16, stride * 4);
        if (!load_c) return;
        for (int64_t i = 0; i < MR; ++i)
            for (int64_t j = 0; j < NR; j += 16) {
                float* row = c + i * ldc + j;
                _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), _mm512_load_ps(block + i * NR + j)));
            }
    }
};

// ---------------------------------------------------------------------------------------
// A few rows of c (M <= 16: one-sample prediction) against b packed whole: one A tile of M
// rows, c's tiles of M rows, so no tile product is spent on rows of zeros (TDPBF16PS with
// one row runs in ~80% of a 16-row one's time: its cost is loading B). The same blocks,
// padding and tile steps as AmxKernels::micro_tile, so each row gets the bits it gets there.
// ---------------------------------------------------------------------------------------

constexpr int64_t kFewRows = 16;

// A's M rows for block `block` as one 16-line half of AmxKernels' A panel (line rows).
void pack_few_rows(float* dst, const Operands<float>& p, int64_t k0, int64_t kc) {
    const int64_t pairs = AmxKernels::panel_depth(kc);
    if (p.transpose_a)
        return pack_pairs_lines_contiguous(dst, p.a + k0 * p.M, p.M, p.M, kc, pairs, PairLayout::line_rows);
    pack_pairs_k_contiguous(dst, p.a + k0, p.K, p.M, kc, pairs, PairLayout::line_rows);
}

// c[:, j : j + 16 kColumnTiles] (j a multiple of 32; kColumnTiles 4, or 2 for the last 32
// columns of the packed b) over every K block, then the epilogue. a_packed holds each
// block's A tile rows, a_block_stride floats apart.
template <int kColumnTiles>
void few_rows_columns(const Operands<float>& p, const float* a_packed, int64_t a_block_stride, int64_t j) {
    const KBlocking kb = p.blocking();
    const int64_t cols = std::min<int64_t>(16 * kColumnTiles, p.N - j);
    alignas(64) float block[16 * 64];
    for (int64_t b = 0; b < kb.count; ++b) {
        const int64_t kc = std::min(kb.size, p.K - b * kb.size), pairs = AmxKernels::panel_depth(kc);
        const float* a = a_packed + b * a_block_stride;
        // Column tile t of the 32-column slivers: sliver j / 32 + t / 2, half t % 2.
        const float* tiles = packed_b_block<float, AmxKernels>(p, b) + j * pairs;
        const int64_t tile_stride = 16 * pairs;
        _tile_zero(0);
        _tile_zero(1);
        if constexpr (kColumnTiles == 4) {
            _tile_zero(2);
            _tile_zero(3);
        }
        // Each tile of b is read once per call: TILELOADDT1 hints that it need not stay in the
        // nearest cache, which then keeps more of the rest of a one-row call (~0.3 us of ~6).
        for (int64_t q = 0; q < pairs; q += AmxKernels::kPairsPerTile) {
            _tile_loadd(4, a + q * 16, 64);
            _tile_stream_loadd(6, tiles + q * 16, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_stream_loadd(7, tiles + tile_stride + q * 16, 64);
            _tile_dpbf16ps(1, 4, 7);
            if constexpr (kColumnTiles == 4) {
                _tile_stream_loadd(6, tiles + 2 * tile_stride + q * 16, 64);
                _tile_dpbf16ps(2, 4, 6);
                _tile_stream_loadd(7, tiles + 3 * tile_stride + q * 16, 64);
                _tile_dpbf16ps(3, 4, 7);
            }
        }
        _tile_stored(0, block, 64 * 4);
        _tile_stored(1, block + 16, 64 * 4);
        if constexpr (kColumnTiles == 4) {
            _tile_stored(2, block + 32, 64 * 4);
            _tile_stored(3, block + 48, 64 * 4);
        }
        const bool load_c = p.accumulate || b > 0;
        for (int64_t i = 0; i < p.M; ++i)
            for (int64_t t = 0; t < cols; t += 16) {
                const __mmask16 mask = first_lanes(cols - t);
                float* row = p.c + i * p.N + j + t;
                const __m512 sum = _mm512_load_ps(block + i * 64 + t);
                _mm512_mask_storeu_ps(row, mask, load_c ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask, row), sum) : sum);
            }
    }
    finish_block(p, 0, j, p.M, cols);
}

// p.M <= kFewRows, p.packed_b set: A packed once, column groups of 64 shared among threads.
void few_rows_gemm(const Operands<float>& p, int threads) {
    const KBlocking kb = p.blocking();
    const int64_t a_block_stride = AmxKernels::panel_depth(kb.size) * 16;
    float* a_packed = packed_a_scratch<float>(kb.count * a_block_stride);
    if (!a_packed) throw std::bad_alloc();
    for (int64_t b = 0; b < kb.count; ++b)
        pack_few_rows(a_packed + b * a_block_stride, p, b * kb.size, std::min(kb.size, p.K - b * kb.size));
    const int64_t columns = packed_b_columns<float, AmxKernels>(p), groups = ceil_div(columns, 64);
    auto run = [&](int thread, int team) {
        use_tile_config(tile_config(p.M));
        const Range mine = split(groups, thread, team);
        for (int64_t g = mine.begin; g < mine.end; ++g) {
            if (64 * g + 64 <= columns)
                few_rows_columns<4>(p, a_packed, a_block_stride, 64 * g);
            else
                few_rows_columns<2>(p, a_packed, a_block_stride, 64 * g);
        }
    };
    threads = static_cast<int>(std::min<int64_t>(threads, groups));
    if (threads <= 1) return run(0, 1);
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace

// Single-thread TDPBF16PS throughput in GFLOP/s over about `seconds`: four independent
// accumulator tiles, operands loaded once (nothing but the tile unit is timed), each
// instruction 16 x 16 x 32 multiply-adds (16,384 flops).
double amx_bf16_peak_gflops(double seconds) {
    use_tile_config(tile_config(16));
    // Products of about 1e-4 * 1e-4 (bfloat16 0x38d1): normal floats, sums far from overflow.
    alignas(64) static const std::array<uint16_t, 512> operand = [] {
        std::array<uint16_t, 512> values;
        values.fill(0x38d1);
        return values;
    }();
    _tile_loadd(4, operand.data(), 64);
    _tile_loadd(5, operand.data(), 64);
    _tile_loadd(6, operand.data(), 64);
    _tile_loadd(7, operand.data(), 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    constexpr int64_t iterations = 1 << 14;
    const double blocks = blocks_per_second(seconds, [&] {
        for (int64_t it = 0; it < iterations; ++it) {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    });
    alignas(64) float result[256];
    _tile_stored(0, result, 64);  // the tiles' work is kept
    volatile float sink = result[0];
    (void)sink;
    return blocks * iterations * 4 * 16384 * 1e-9;
}

int64_t amx_bf16_packed_b_size(const Operands<float>& p) { return packed_b_size<float, AmxKernels>(p); }

void amx_bf16_pack_b(float* out, const Operands<float>& p) { pack_whole_b<float, AmxKernels>(out, p); }

void amx_bf16_packed_gemm(const Operands<float>& p, int threads) {
    packed_or_few_rows_gemm<float, AmxKernels>(p, threads, kFewRows, few_rows_gemm);
}

}  // namespace gemm_detail
}  // namespace fastmlp
