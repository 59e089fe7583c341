// AVX-512 GEMM kernels (gemm_simd.h over 16-float zmm registers) and the loops around them
// (gemm_driver.h), compiled with -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma in this
// translation unit only and selected at run time by gemm.cpp. Same canonical order as the
// AVX2 kernels, so the same bits.
#include <immintrin.h>


#include "avx512_transpose.h"
#include "gemm_driver.h"
#include "gemm_internal.h"
#include "gemm_simd.h"

namespace fastmlp {
namespace gemm_detail {

namespace {

// One zmm register of T and the operations gemm_simd.h needs; the partial loads and stores
// use the mask registers, so they never touch memory past lane n.
template <typename T>
struct Zmm;

template <>
struct Zmm<float> {
    using Reg = __m512;
    static constexpr int64_t W = 16, REGISTERS = 32;
    static Reg zero() { return _mm512_setzero_ps(); }
    static Reg load_aligned(const float* p) { return _mm512_load_ps(p); }
    static Reg load(const float* p) { return _mm512_loadu_ps(p); }
    static Reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
    static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
    static void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
    static __mmask16 mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
    static Reg load_first(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(mask(n), p); }
    static void store_first(float* p, int64_t n, Reg v) { _mm512_mask_storeu_ps(p, mask(n), v); }
};

template <>
struct Zmm<double> {
    using Reg = __m512d;
    static constexpr int64_t W = 8, REGISTERS = 32;
    static Reg zero() { return _mm512_setzero_pd(); }
    static Reg load_aligned(const double* p) { return _mm512_load_pd(p); }
    static Reg load(const double* p) { return _mm512_loadu_pd(p); }
    static Reg broadcast(const double* p) { return _mm512_set1_pd(*p); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
    static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
    static void store(double* p, Reg v) { _mm512_storeu_pd(p, v); }
    static __mmask8 mask(int64_t n) { return static_cast<__mmask8>((1u << n) - 1u); }
    static Reg load_first(const double* p, int64_t n) { return _mm512_maskz_loadu_pd(mask(n), p); }
    static void store_first(double* p, int64_t n, Reg v) { _mm512_mask_storeu_pd(p, mask(n), v); }
};

// Two tiles per type, gemm.cpp picks one by CPU (Avx512Tile in gemm_internal.h):
//
// 16 x 16 floats and 16 x 8 doubles: one zmm per row of the tile, 16 accumulators (enough
// independent chains for the FMA latency), one load of B and 16 broadcasts of A per 16 FMAs.
// Sized for Zen 4, which runs a 512-bit FMA as two 256-bit halves: a KC x NR sliver of B is
// 16 KiB, half of its 32 KiB L1d (NR = 32 would fill it); an MC x KC block of A (192 KiB)
// stays in its 1 MiB L2. 16 rows divide a 128-row batch evenly between two threads.
//
// 8 x 32 floats and 8 x 16 doubles, for Intel cores with two 512-bit FMA pipes and two loads
// per cycle: the 16 x 16 tile's 17 loads per 16 FMAs (a broadcast is a load) keep the pipes
// short of work, these 2 loads of B and 8 broadcasts per 16 FMAs do not. A KC x NR sliver of
// B is 32 KiB of a 48 KiB L1d; MC = 96 (48) and NC = 1024 (512) keep an A block and a B panel
// (1 MiB) together in a 2 MiB L2. 8 rows divide 128- and 64-row batches evenly between two
// threads. Measured on a Granite Rapids Xeon: docs/guide/performance.md, "The AVX-512 tile".
//
// A (M, K) not transposed is packed an MR x 16 float (16 x 8 double) block at a time through
// registers: MR row loads, an in-register transpose, 16 (8) stores of k-major rows; so is a
// transposed B (N, K), 16 columns at a time. The scalar gather it replaces (one element per
// instruction, stores strided by MR) took ~18% of a one-thread 10k-row predict, whose A comes
// from memory.

// GCC 12's unpack and shuffle intrinsics pass an undefined register as the masked-off source,
// which -Wmaybe-uninitialized reports (GCC bug 105593) though no lane of it is ever used.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Each lane rounded to bfloat16 as round_to_bfloat16 does it (gemm_internal.h).
inline __m512 round_lanes_to_bfloat16(__m512 x) {
    const __m512i bits = _mm512_castps_si512(x);
    const __m512i low_bit = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i keep = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    __m512i rounded = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), low_bit), keep);
    const __m512i magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(magnitude, _mm512_set1_epi32(0x7f800000));
    const __mmask16 denormal_or_zero =
        _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7f800000)), _mm512_setzero_si512());
    rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_and_si512(_mm512_or_si512(bits, _mm512_set1_epi32(0x00400000)), keep));
    rounded = _mm512_mask_mov_epi32(rounded, denormal_or_zero,
                                    _mm512_and_si512(bits, _mm512_set1_epi32(static_cast<int>(0x80000000u))));
    return _mm512_castsi512_ps(rounded);
}

template <int64_t MR_, int64_t NR_, int64_t MC_, int64_t NC_>
struct Float32Kernels : SimdKernels<float, Zmm<float>, MR_, NR_, MC_, NC_> {
    static constexpr int64_t MR = MR_, NR = NR_;
    static_assert(MR <= 16 && NR % 16 == 0, "slivers are packed through 16 x 16 transposes");
    static constexpr bool kPacksRowsOfA = true;
    static constexpr bool kPacksColumnsOfB = true;
    // dst[k * MR + i] = bfloat16(src[i * lda + (k ^ 1)]) for i < MR, k < kc + kc % 2, zero
    // where k ^ 1 >= kc (a bfloat16 product's float panel, gemm_driver.h).  dst is
    // (kc + kc % 2, MR), 64-byte aligned; src is MR rows of A, row stride lda.
    static void pack_a_rows_in_pair_order(float* dst, const float* src, int64_t lda, int64_t kc) {
        int64_t k = 0;
        for (; k + 16 <= kc; k += 16) {
            __m512 rows[16] = {};
            for (int i = 0; i < MR; ++i)  // 0xb1 swaps the two floats of each pair
                rows[i] = _mm512_permute_ps(round_lanes_to_bfloat16(_mm512_loadu_ps(src + i * lda + k)), 0xb1);
            transpose_16x16_store(dst + k * MR, rows, 16, MR, MR);
        }
        for (; k < kc + (kc & 1); ++k)
            for (int i = 0; i < MR; ++i)
                dst[k * MR + i] = (k ^ 1) < kc ? round_to_bfloat16(src[i * lda + (k ^ 1)]) : 0.0f;
    }
    // dst[k * MR + i] = src[i * lda + k] for i < MR, k < kc.  dst is (kc, MR), 64-byte
    // aligned; src is MR rows of A, row stride lda.
    static void pack_a_rows(float* dst, const float* src, int64_t lda, int64_t kc) {
        transpose_lines(dst, MR, src, lda, MR, kc);
    }
    // dst[k * NR + j] = src[j * ldb + k] for j < NR, k < kc: NR columns of a transposed B
    // (rows of the stored (N, K) b).  dst is (kc, NR), 64-byte aligned; src row stride ldb.
    static void pack_b_columns(float* dst, const float* src, int64_t ldb, int64_t kc) {
        for (int64_t j = 0; j < NR; j += 16) transpose_lines(dst + j, NR, src + j * ldb, ldb, 16, kc);
    }

   private:
    // dst[k * stride + x] = src[x * ld + k] for x < lines (<= 16), k < kc: 16 k at a time
    // through registers (16 row loads, an in-register transpose, 16 stores of k-major lines).
    static void transpose_lines(float* dst, int64_t stride, const float* src, int64_t ld, int lines,
                                int64_t kc) {
        int64_t k = 0;
        for (; k + 16 <= kc; k += 16) {
            __m512 rows[16] = {};
            for (int x = 0; x < lines; ++x) rows[x] = _mm512_loadu_ps(src + x * ld + k);
            transpose_16x16_store(dst + k * stride, rows, 16, stride, lines);
        }
        for (; k < kc; ++k)
            for (int x = 0; x < lines; ++x) dst[k * stride + x] = src[x * ld + k];
    }
};

template <int64_t MR_, int64_t NR_, int64_t MC_, int64_t NC_>
struct Float64Kernels : SimdKernels<double, Zmm<double>, MR_, NR_, MC_, NC_> {
    static constexpr int64_t MR = MR_;
    static_assert(MR % 8 == 0, "slivers are packed through 8 x 8 transposes");
    static constexpr bool kPacksRowsOfA = true;
    // dst[k * MR + i] = src[i * lda + k] for i < MR, k < kc.  dst is (kc, MR), 64-byte
    // aligned; src is MR rows of A, row stride lda.
    static void pack_a_rows(double* dst, const double* src, int64_t lda, int64_t kc) {
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8) {
            for (int half = 0; half < MR / 8; ++half) {  // rows 0-7, then 8-15: an 8 x 8 transpose each
                const double* rows_src = src + half * 8 * lda + k;
                __m512d pairs[8];
                for (int j = 0; j < 4; ++j) {  // pairs[2j + m] lane L: columns 2L + m of rows 2j, 2j + 1
                    const __m512d a = _mm512_loadu_pd(rows_src + (2 * j) * lda);
                    const __m512d b = _mm512_loadu_pd(rows_src + (2 * j + 1) * lda);
                    pairs[2 * j] = _mm512_unpacklo_pd(a, b);
                    pairs[2 * j + 1] = _mm512_unpackhi_pd(a, b);
                }
                double* out = dst + k * MR + half * 8;
                for (int m = 0; m < 2; ++m) {
                    const __m512d even_low = _mm512_shuffle_f64x2(pairs[m], pairs[2 + m], 0x88);
                    const __m512d odd_low = _mm512_shuffle_f64x2(pairs[m], pairs[2 + m], 0xdd);
                    const __m512d even_high = _mm512_shuffle_f64x2(pairs[4 + m], pairs[6 + m], 0x88);
                    const __m512d odd_high = _mm512_shuffle_f64x2(pairs[4 + m], pairs[6 + m], 0xdd);
                    _mm512_store_pd(out + (m + 0) * MR, _mm512_shuffle_f64x2(even_low, even_high, 0x88));
                    _mm512_store_pd(out + (m + 4) * MR, _mm512_shuffle_f64x2(even_low, even_high, 0xdd));
                    _mm512_store_pd(out + (m + 2) * MR, _mm512_shuffle_f64x2(odd_low, odd_high, 0x88));
                    _mm512_store_pd(out + (m + 6) * MR, _mm512_shuffle_f64x2(odd_low, odd_high, 0xdd));
                }
            }
        }
        for (; k < kc; ++k)
            for (int i = 0; i < MR; ++i) dst[k * MR + i] = src[i * lda + k];
    }
};

#pragma GCC diagnostic pop

}  // namespace

const GemmPaths<float>& avx512_paths_float(Avx512Tile tile) {
    if (tile == Avx512Tile::wide) return paths_around<float, Float32Kernels<8, 32, 96, 1024>>();
    return paths_around<float, Float32Kernels<16, 16, 192, 2048>>();
}
const GemmPaths<double>& avx512_paths_double(Avx512Tile tile) {
    if (tile == Avx512Tile::wide) return paths_around<double, Float64Kernels<8, 16, 48, 512>>();
    return paths_around<double, Float64Kernels<16, 8, 96, 2048>>();
}

void avx512_round_line_to_bfloat16(float* out, const float* x, int64_t count, int64_t out_count, bool swap_pairs) {
    for (int64_t k = 0; k < out_count; k += 16) {
        const __mmask16 valid = Zmm<float>::mask(std::clamp<int64_t>(count - k, 0, 16));
        __m512 v = round_lanes_to_bfloat16(_mm512_maskz_loadu_ps(valid, x + k));
        if (swap_pairs) v = _mm512_permute_ps(v, 0xb1);  // lanes (1, 0, 3, 2) in each 128 bits
        _mm512_mask_storeu_ps(out + k, Zmm<float>::mask(std::min<int64_t>(out_count - k, 16)), v);
    }
}

// 16 independent chains: latency 4 x two FMA pipes, with room to spare.
double avx512_fma_peak_gflops(double seconds) {
    return fma_peak_gflops_of<Zmm<float>, 16>(seconds);
}

}  // namespace gemm_detail
}  // namespace fastmlp
