// The GEMM kernels written once over a SIMD register type (Ymm<T> in gemm_avx2.cpp, Zmm<T>
// in gemm_avx512.cpp): the packed micro-kernel, the skinny tile and the row block of
// gemm_driver.h. Each sums every element of c with one FMA chain over k from zero, so the
// register width changes the speed, never the bits.
//
// A register type V provides: V::Reg, W (lanes), REGISTERS (in the register file), zero(), load(p), load_aligned(p),
// broadcast(p), fma(a, b, c) = a * b + c rounded once, add, store(p, v), and
// load_first(p, n) / store_first(p, n, v) for lanes [0, n), 0 < n < W.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "gemm_internal.h"

namespace fastmlp {
namespace gemm_detail {
namespace {

template <typename T, typename V, int64_t MR_, int64_t NR_, int64_t MC_, int64_t NC_>
struct SimdKernels {
    using Reg = typename V::Reg;
    static constexpr int64_t MR = MR_, NR = NR_, MC = MC_, NC = NC_;
    static_assert(NR % V::W == 0 && MC % MR == 0, "tile must be whole registers and blocks");
    // kSkinnyColumns lanes per row, and rows enough for ~12 independent FMA chains.
    static constexpr int64_t SKINNY_VECTORS = kSkinnyColumns / V::W;
    static constexpr int64_t SKINNY_ROWS = 12 / SKINNY_VECTORS;
    // Whether the kernel set packs full MR-row slivers of a non-transposed A itself
    // (pack_a_rows, through registers); otherwise gemm_driver.h's element loop does.
    static constexpr bool kPacksRowsOfA = false;
    static void pack_a_rows(T*, const T*, int64_t, int64_t) {}
    // Whether it packs full NR-column slivers of a transposed B itself (pack_b_columns).
    static constexpr bool kPacksColumnsOfB = false;
    static constexpr bool kPacksBfloat16Pairs = false;

    // ---- packed micro-kernel: MR broadcasts of A and NR / W loads of B per k ----
    static void micro_tile(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t ldc,
                           bool load_c) {
        constexpr int64_t NV = NR / V::W;
        if (load_c) prefetch_tile(c, ldc);
        Reg acc[MR][NV];
#pragma GCC unroll 16
        for (int64_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
            for (int64_t v = 0; v < NV; ++v) acc[i][v] = V::zero();
#pragma GCC unroll 4
        for (int64_t k = 0; k < kc; ++k) {
            Reg b[NV];
#pragma GCC unroll 4
            for (int64_t v = 0; v < NV; ++v) b[v] = V::load_aligned(b_panel + v * V::W);
#pragma GCC unroll 16
            for (int64_t i = 0; i < MR; ++i) {
                const Reg a = V::broadcast(a_panel + i);
#pragma GCC unroll 4
                for (int64_t v = 0; v < NV; ++v) acc[i][v] = V::fma(a, b[v], acc[i][v]);
            }
            a_panel += MR;
            b_panel += NR;
        }
#pragma GCC unroll 16
        for (int64_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
            for (int64_t v = 0; v < NV; ++v) {
                T* p = c + i * ldc + v * V::W;
                V::store(p, load_c ? V::add(V::load(p), acc[i][v]) : acc[i][v]);
            }
    }

    // Asks for the lines of c's MR x NR tile, which the tile adds to after its k loop: they
    // arrive while the FMAs run (c's rows are ldc apart; a power-of-two ldc sends them all to
    // the same few L1 sets, so without this their misses stall the end of each tile).
    static void prefetch_tile(const T* c, int64_t ldc) {
        for (int64_t i = 0; i < MR; ++i)
            for (int64_t j = 0; j < NR; j += 64 / static_cast<int64_t>(sizeof(T)))
                _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + j), _MM_HINT_T0);
    }

    // ---- skinny tile: ROWS rows of A read in place against the packed (kc, 16) op(b) ----
    // UNIT_K: a_k_stride == 1 (A not transposed), known at compile time so each row's
    // element is a plain indexed load.
    template <int64_t ROWS, bool UNIT_K>
    static void skinny_rows_strided(int64_t kc, const T* a, int64_t a_row_stride,
                                    int64_t a_k_stride, const T* b_packed, T* c, int64_t ldc,
                                    int64_t cols, bool load_c) {
        constexpr int64_t NV = SKINNY_VECTORS;
        const int64_t k_stride = UNIT_K ? 1 : a_k_stride;
        const T* a_row[ROWS];
        #pragma GCC unroll 16
        for (int64_t i = 0; i < ROWS; ++i) a_row[i] = a + i * a_row_stride;
        Reg acc[ROWS][NV];
        #pragma GCC unroll 16
        for (int64_t i = 0; i < ROWS; ++i)
            #pragma GCC unroll 16
            for (int64_t v = 0; v < NV; ++v) acc[i][v] = V::zero();
        for (int64_t k = 0; k < kc; ++k) {
            Reg b[NV];
            #pragma GCC unroll 16
            for (int64_t v = 0; v < NV; ++v) b[v] = V::load(b_packed + k * kSkinnyColumns + v * V::W);
            #pragma GCC unroll 16
            for (int64_t i = 0; i < ROWS; ++i) {
                const Reg a_ik = V::broadcast(a_row[i] + k * k_stride);
                #pragma GCC unroll 16
                for (int64_t v = 0; v < NV; ++v) acc[i][v] = V::fma(a_ik, b[v], acc[i][v]);
            }
        }
        #pragma GCC unroll 16
        for (int64_t i = 0; i < ROWS; ++i)
            #pragma GCC unroll 16
            for (int64_t v = 0; v < NV; ++v) store_lanes(c + i * ldc + v * V::W, cols - v * V::W, acc[i][v], load_c);
    }

    template <int64_t ROWS>
    static void skinny_rows(int64_t kc, const T* a, int64_t a_row_stride, int64_t a_k_stride,
                            const T* b_packed, T* c, int64_t ldc, int64_t cols, bool load_c) {
        if (a_k_stride == 1)
            return skinny_rows_strided<ROWS, true>(kc, a, a_row_stride, 1, b_packed, c, ldc, cols, load_c);
        skinny_rows_strided<ROWS, false>(kc, a, a_row_stride, a_k_stride, b_packed, c, ldc, cols, load_c);
    }

    static void skinny_tile(int64_t kc, const T* a, int64_t a_row_stride, int64_t a_k_stride,
                            const T* b_packed, T* c, int64_t ldc, int64_t rows, int64_t cols,
                            bool load_c) {
        skinny_rows_up_to<SKINNY_ROWS>(rows, kc, a, a_row_stride, a_k_stride, b_packed, c, ldc,
                                       cols, load_c);
    }

    // skinny_rows<rows> for a run-time rows in [1, R] (the last tile of a batch is shorter).
    template <int64_t R>
    static void skinny_rows_up_to(int64_t rows, int64_t kc, const T* a, int64_t a_row_stride,
                                  int64_t a_k_stride, const T* b_packed, T* c, int64_t ldc,
                                  int64_t cols, bool load_c) {
        if constexpr (R > 0) {
            if (rows == R)
                return skinny_rows<R>(kc, a, a_row_stride, a_k_stride, b_packed, c, ldc, cols, load_c);
            skinny_rows_up_to<R - 1>(rows, kc, a, a_row_stride, a_k_stride, b_packed, c, ldc, cols,
                                     load_c);
        }
    }

    // ---- row block: NV registers of c accumulate while a streams over the rows of b ----
    template <int64_t NV>
    static void row_chunk(int64_t kc, const T* a, const T* b, int64_t ldb, T* c, bool load_c) {
        Reg acc[NV];
        #pragma GCC unroll 16
        for (int64_t v = 0; v < NV; ++v) acc[v] = V::zero();
        // b's rows are ldb apart: the hardware prefetchers follow that stride late, so the
        // lines of the row kAhead ahead are asked for explicitly (measured best of 0, 4, 8, 16).
        constexpr int64_t kAhead = 4;
        constexpr int kLines = static_cast<int>(NV * V::W * sizeof(T) / 64);
        for (int64_t k = 0; k < kc; ++k) {
            const Reg a_k = V::broadcast(a + k);
            const T* b_row = b + k * ldb;
            if (k + kAhead < kc)
                for (int line = 0; line < kLines; ++line)
                    _mm_prefetch(reinterpret_cast<const char*>(b_row + kAhead * ldb) + 64 * line,
                                 _MM_HINT_T0);
            #pragma GCC unroll 16
            for (int64_t v = 0; v < NV; ++v) acc[v] = V::fma(a_k, V::load(b_row + v * V::W), acc[v]);
        }
        #pragma GCC unroll 16
        for (int64_t v = 0; v < NV; ++v) store_lanes(c + v * V::W, V::W, acc[v], load_c);
    }

    // The last n < W columns, with masked loads and stores.
    static void row_tail(int64_t kc, const T* a, const T* b, int64_t ldb, T* c, int64_t n, bool load_c) {
        Reg acc = V::zero();
        for (int64_t k = 0; k < kc; ++k) acc = V::fma(V::broadcast(a + k), V::load_first(b + k * ldb, n), acc);
        store_lanes(c, n, acc, load_c);
    }

    static void row_block(int64_t kc, const T* a, const T* b, int64_t ldb, T* c, int64_t cols,
                          bool load_c) {
        // Half the register file accumulates: 8 ymm or 16 zmm, i.e. 64 or 256 floats, so with
        // AVX-512 a 256-wide layer streams each row of b once, in order (prefetcher-friendly).
        constexpr int64_t VECTORS = V::REGISTERS / 2, CHUNK = VECTORS * V::W;
        int64_t j = 0;
        for (; j + CHUNK <= cols; j += CHUNK) row_chunk<VECTORS>(kc, a, b + j, ldb, c + j, load_c);
        for (; j + 4 * V::W <= cols; j += 4 * V::W) row_chunk<4>(kc, a, b + j, ldb, c + j, load_c);
        for (; j + V::W <= cols; j += V::W) row_chunk<1>(kc, a, b + j, ldb, c + j, load_c);
        if (j < cols) row_tail(kc, a, b + j, ldb, c + j, cols - j, load_c);
    }

    // c[0, n) = acc (+ c when load_c), for n lanes (n >= W: the whole register; n <= 0: none).
    static void store_lanes(T* c, int64_t n, Reg acc, bool load_c) {
        if (n >= V::W) {
            V::store(c, load_c ? V::add(V::load(c), acc) : acc);
        } else if (n > 0) {
            V::store_first(c, n, load_c ? V::add(V::load_first(c, n), acc) : acc);
        }
    }
};

// Single-thread float FMA throughput of a register-only loop of `chains` independent FMA
// chains run for about `seconds`, in GFLOP/s (2 flops per lane per FMA): the "peak" line.
template <typename V, int chains>
double fma_peak_gflops_of(double seconds) {
    using Reg = typename V::Reg;
    constexpr int64_t iterations = 1 << 16;
    const float x_value = 0.999999f, y_value = 1e-7f;
    Reg acc[chains];
    for (int i = 0; i < chains; ++i) {
        const float start = static_cast<float>(i);
        acc[i] = V::broadcast(&start);
    }
    const Reg x = V::broadcast(&x_value), y = V::broadcast(&y_value);
    const double blocks = blocks_per_second(seconds, [&] {
        for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
            for (int i = 0; i < chains; ++i) acc[i] = V::fma(acc[i], x, y);
        }
    });
    // Keep the result alive so the loop is not optimised away.
    Reg total = acc[0];
    for (int i = 1; i < chains; ++i) total = V::add(total, acc[i]);
    alignas(64) float lanes[V::W];
    V::store(lanes, total);
    volatile float sink = lanes[0];
    (void)sink;
    return blocks * iterations * chains * V::W * 2 * 1e-9;
}

}  // namespace
}  // namespace gemm_detail
}  // namespace fastmlp
