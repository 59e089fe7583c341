// The 16 x 16 transpose of 32-bit elements through zmm registers that the AVX-512 packing
// routines share (gemm_avx512.cpp: float rows of A; gemm_avx512_bf16.cpp: bfloat16 pairs).
// Include only from translation units compiled with -mavx512f.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace fastmlp {
namespace gemm_detail {
namespace {

// GCC 12's unpack and shuffle intrinsics pass an undefined register as the masked-off source,
// which -Wmaybe-uninitialized reports (GCC bug 105593) though no lane of it is ever used.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// out[c * stride + r] = rows[r][c] for r < lanes and c < columns (columns, lanes <= 16): a
// k-major sliver of `stride` lines. stride 16 (lanes 16): out is 64-byte aligned; otherwise
// unaligned stores of the first `lanes` lanes.
inline void transpose_16x16_store(float* out, const __m512 (&rows)[16], int columns, int64_t stride = 16,
                                  int lanes = 16) {
    __m512 pairs[16], quads[16];
    for (int j = 0; j < 8; ++j) {  // 32-bit interleave of rows 2j, 2j + 1
        pairs[2 * j] = _mm512_unpacklo_ps(rows[2 * j], rows[2 * j + 1]);
        pairs[2 * j + 1] = _mm512_unpackhi_ps(rows[2 * j], rows[2 * j + 1]);
    }
    for (int j = 0; j < 4; ++j) {  // 64-bit interleave: rows 4j .. 4j + 3 together
        const __m512d low = _mm512_castps_pd(pairs[4 * j]), high = _mm512_castps_pd(pairs[4 * j + 1]);
        const __m512d low2 = _mm512_castps_pd(pairs[4 * j + 2]), high2 = _mm512_castps_pd(pairs[4 * j + 3]);
        quads[4 * j + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(low, low2));
        quads[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(low, low2));
        quads[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(high, high2));
        quads[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(high, high2));
    }
    // quads[4j + m], 128-bit lane L: columns 4L + m of rows 4j .. 4j + 3.
    const __mmask16 lane_mask = static_cast<__mmask16>((1u << lanes) - 1u);
    auto store = [&](int column, __m512 v) {
        if (column >= columns) return;
        if (stride == 16 && lanes == 16) return _mm512_store_ps(out + column * 16, v);
        _mm512_mask_storeu_ps(out + column * stride, lane_mask, v);
    };
    for (int m = 0; m < 4; ++m) {
        // 0x88 takes lanes 0, 2 of each operand; 0xdd lanes 1, 3.
        const __m512 even_low = _mm512_shuffle_f32x4(quads[m], quads[4 + m], 0x88);
        const __m512 odd_low = _mm512_shuffle_f32x4(quads[m], quads[4 + m], 0xdd);
        const __m512 even_high = _mm512_shuffle_f32x4(quads[8 + m], quads[12 + m], 0x88);
        const __m512 odd_high = _mm512_shuffle_f32x4(quads[8 + m], quads[12 + m], 0xdd);
        store(m + 0, _mm512_shuffle_f32x4(even_low, even_high, 0x88));
        store(m + 8, _mm512_shuffle_f32x4(even_low, even_high, 0xdd));
        store(m + 4, _mm512_shuffle_f32x4(odd_low, odd_high, 0x88));
        store(m + 12, _mm512_shuffle_f32x4(odd_low, odd_high, 0xdd));
    }
}

#pragma GCC diagnostic pop

}  // namespace
}  // namespace gemm_detail
}  // namespace fastmlp
