// The packed GEMM path over bfloat16 operands with AMX (TDPBF16PS on 16 x 16 float32 tiles),
// compiled with -mamx-tile -mamx-bf16 and the AVX-512 flags in this translation unit only and
// chosen by gemm.cpp on CPUs (and kernels) that allow AMX. Packing (avx512_bf16_pairs.h)
// rounds A into 16-row x 16-pair tiles and B into pair-row tiles; the loops around are
// gemm_driver.h's. TDPBF16PS does not add in the canonical order (gemm_internal.h): see
// amx_bf16_packed_gemm there.
#include <immintrin.h>

#include <algorithm>
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

// Tiles 0-3: the 32 x 32 float32 block of c; 4, 5: the two 16-row halves of A's 32 rows x
// 16 pairs; 6, 7: B's 16 pairs x the two 16-column halves. Each 16 rows of 64 bytes.
const TileConfig& tile_config() {
    static const TileConfig config = [] {
        TileConfig c;
        for (int t = 0; t < 8; ++t) {
            c.rows[t] = 16;
            c.bytes_per_row[t] = 64;
        }
        return c;
    }();
    return config;
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

    // Checked at every product: another library in the thread (oneDNN) may have loaded its
    // own configuration, or released the tiles, since the last one. Left configured after
    // (never released): LDTILECFG costs ~270 ns, reading the configuration back and comparing
    // it ~30 ns (tools/amx_bf16_probe.c).
    static void enter_thread() {
        TileConfig current;
        _tile_storeconfig(&current);
        if (std::memcmp(&current, &tile_config(), sizeof current) != 0) _tile_loadconfig(&tile_config());
    }

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
        pack_halves(dst, p.b + k0 * p.N + j0, p.N, false, cols, kc, PairLayout::pair_rows);
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

}  // namespace

void amx_bf16_packed_gemm(const Operands<float>& p, int threads) {
    packed_gemm<float, AmxKernels>(p, threads);
}

}  // namespace gemm_detail
}  // namespace fastmlp
