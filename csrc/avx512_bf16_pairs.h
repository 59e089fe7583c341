// Packing float32 operands into bfloat16 k-pair panels (VCVTNE2PS2BF16), shared by the
// VDPBF16PS path (gemm_avx512_bf16.cpp) and the AMX path (gemm_amx_bf16.cpp). Include only
// from translation units compiled with -mavx512f -mavx512bw -mavx512bf16.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "avx512_transpose.h"

namespace fastmlp {
namespace gemm_detail {
namespace {

// The lanes [0, n) of a zmm of 16 floats (all 16 when n >= 16; none when n <= 0).
inline __mmask16 first_lanes(int64_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1u);
}

// 16 float32 lanes of `even` and 16 of `odd` rounded to bfloat16 and interleaved: 32-bit word
// x holds (even[x], odd[x]), the even one in the low half (the pair VDPBF16PS and TDPBF16PS
// multiply).
inline __m512 interleaved_pairs(__m512 even, __m512 odd) {
    // _mm512_cvtne2ps_pbh(a, b) puts b's 16 bfloat16 in words 0..15 and a's in 16..31.
    const __m512i separate = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(odd, even));
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                           23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return reinterpret_cast<__m512>(_mm512_permutexvar_epi16(order, separate));
}

// How a sliver of 16 lines x `pairs_out` k pairs is laid out, in chunks of 16 pairs, each a
// 16 x 16 block of 32-bit words (two bfloat16, the even k in the low half):
//   pair_rows  word [q * 16 + x] = pair q of line x (VDPBF16PS panels, AMX's B tiles);
//   line_rows  word [(q / 16) * 256 + x * 16 + q % 16] = pair q of line x (AMX's A tiles;
//              pairs_out a multiple of 16).
enum class PairLayout { pair_rows, line_rows };

// A sliver of 16 lines x k [k0, k0 + kc) as `pairs_out` (>= ceil(kc / 2)) pairs per line,
// zero past `lines` (but see pack_pairs_k_contiguous) and past kc.  dst is 64-byte aligned.
//
// Lines contiguous (op(a) of a transposed a, op(b) of a plain b): element(x, k) =
// src[k * ld + x], x < lines <= 16.
void pack_pairs_lines_contiguous(float* dst, const float* src, int64_t ld, int64_t lines, int64_t kc,
                                 int64_t pairs_out, PairLayout layout) {
    const __mmask16 mask = first_lanes(lines);
    auto pair_row = [&](int64_t q) {
        const int64_t k = 2 * q;
        const __m512 even = k < kc ? _mm512_maskz_loadu_ps(mask, src + k * ld) : _mm512_setzero_ps();
        const __m512 odd = k + 1 < kc ? _mm512_maskz_loadu_ps(mask, src + (k + 1) * ld) : _mm512_setzero_ps();
        return interleaved_pairs(even, odd);
    };
    if (layout == PairLayout::pair_rows) {  // each pair row stored as it is made
        for (int64_t q = 0; q < pairs_out; ++q) _mm512_store_ps(dst + q * 16, pair_row(q));
        return;
    }
    for (int64_t q0 = 0; q0 < pairs_out; q0 += 16) {  // line rows: 16 pair rows transposed
        __m512 rows[16];
        for (int64_t r = 0; r < 16; ++r) rows[r] = pair_row(q0 + r);
        transpose_16x16_store(dst + q0 * 16, rows, 16);
    }
}

// The pair rows of up to 32 lines contiguous, as two 16-line halves: half x of pair row q
// at dst + x * half_offset + q * row_stride (AMX's B: two slivers, half_offset a sliver
// apart, row_stride 16; VDPBF16PS's 32-column slivers: half_offset 16, row_stride 32). It is
// pack_pairs_lines_contiguous of each half, but k is walked once, so each k row's 32 floats
// (two adjacent cache lines) are read together instead of one line per pass over a panel
// whose rows lie ld floats apart.
void pack_pair_rows_in_two_halves(float* dst, int64_t half_offset, const float* src, int64_t ld, int64_t lines,
                                  int64_t kc, int64_t pairs_out, int64_t row_stride = 16) {
    const __mmask16 low = first_lanes(lines), high = first_lanes(lines - 16);
    for (int64_t q = 0; q < pairs_out; ++q) {
        const int64_t k = 2 * q;
        const float* even = src + k * ld;
        const float* odd = even + ld;
        const bool has_even = k < kc, has_odd = k + 1 < kc;
        const __m512 zero = _mm512_setzero_ps();
        _mm512_store_ps(dst + q * row_stride,
                        interleaved_pairs(has_even ? _mm512_maskz_loadu_ps(low, even) : zero,
                                          has_odd ? _mm512_maskz_loadu_ps(low, odd) : zero));
        _mm512_store_ps(dst + half_offset + q * row_stride,
                        interleaved_pairs(has_even ? _mm512_maskz_loadu_ps(high, even + 16) : zero,
                                          has_odd ? _mm512_maskz_loadu_ps(high, odd + 16) : zero));
    }
}

// k contiguous (op(a) of a plain a, op(b) of a transposed b): element(x, k) = src[x * ld + k],
// x < lines <= 16. 32 k of each line become 16 words (a line row), transposed for pair rows.
// Line rows past `lines` are not written: they are rows of an A tile, whose products land in
// rows of c that are never kept (the few-rows kernels do not even load them). Pair rows lie
// row_stride words apart (16 lines of a 32-column sliver: row_stride 32, dst 16 words in for
// the second half).
void pack_pairs_k_contiguous(float* dst, const float* src, int64_t ld, int64_t lines, int64_t kc,
                             int64_t pairs_out, PairLayout layout, int64_t row_stride = 16) {
    for (int64_t k = 0; k < 2 * pairs_out; k += 32) {
        const __mmask16 low = first_lanes(kc - k), high = first_lanes(kc - k - 16);
        __m512 words[16];
        for (int64_t x = 0; x < 16; ++x) {
            if (x < lines) {
                const float* line = src + x * ld + k;
                // Consecutive k are the even and odd of a pair already: round, keep the order.
                const __m512 first = _mm512_maskz_loadu_ps(low, line), second = _mm512_maskz_loadu_ps(high, line + 16);
                words[x] = reinterpret_cast<__m512>(_mm512_cvtne2ps_pbh(second, first));
            } else {
                if (layout == PairLayout::line_rows) break;  // see above: not written
                words[x] = _mm512_setzero_ps();
            }
            if (layout == PairLayout::line_rows) _mm512_store_ps(dst + k / 2 * 16 + x * 16, words[x]);
        }
        if (layout == PairLayout::pair_rows)
            transpose_16x16_store(dst + k / 2 * row_stride, words,
                                  static_cast<int>(std::min<int64_t>(16, pairs_out - k / 2)), row_stride);
    }
}

}  // namespace
}  // namespace gemm_detail
}  // namespace fastmlp
