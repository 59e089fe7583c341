// Internals shared by the GEMM driver (gemm.cpp) and its AVX2/FMA kernels (gemm_avx2.cpp):
// the register/cache block sizes and the table of inner kernels chosen at run time.
#pragma once

#include <cstdint>

namespace fastmlp {
namespace gemm_detail {

// Block sizes of the BLIS-style packed path (the "five loops"). MR x NR is the register tile
// of the micro-kernel; a KC x NR sliver of packed B (16 KiB) stays in L1, an MC x KC block of
// packed A stays in L2 (512 KiB per core on the target), a KC x NC panel of B in L3.
// The K blocking depends only on K (never on the thread count): it fixes the summation order.
template <typename T>
struct Blocking;
template <>
struct Blocking<float> {
    static constexpr int64_t MR = 6, NR = 16;   // 12 ymm accumulators
    static constexpr int64_t KC = 256, MC = 144, NC = 2048;
};
template <>
struct Blocking<double> {
    static constexpr int64_t MR = 6, NR = 8;    // 12 ymm accumulators
    static constexpr int64_t KC = 256, MC = 72, NC = 2048;
};

// The inner kernels of one instruction set. Every one sums each element of c over k in a
// fixed order that does not depend on where the element sits in a block, so any partition
// of c among threads gives the same bits.
template <typename T>
struct KernelSet {
    // The micro-kernel: tile = sum over k < kc of a_panel[k, :]^T b_panel[k, :], then
    // c_tile = tile (load_c false) or c_tile + tile (load_c true).
    //   a_panel is (kc, MR) packed, b_panel is (kc, NR) packed and 32-byte aligned
    //   c is (MR, NR) with row stride ldc
    void (*micro_tile)(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t ldc,
                       bool load_c);
    // The dot path (skinny shapes, no packing): c[i, j] (+)= dot(a[i, :], bt[j, :]).
    //   c is (rows, cols) with row stride ldc
    //   a is (rows, K) with row stride lda
    //   bt is (cols, K) with row stride ldbt
    void (*dot_block)(T* c, int64_t ldc, const T* a, int64_t lda, const T* bt, int64_t ldbt,
                      int64_t rows, int64_t cols, int64_t K, bool load_c);
    // The row path (batch-1 inference, no packing): c[j] (+)= sum_k a[k] * b[k, j].
    //   c is (cols)
    //   a is (K)
    //   b is (K, cols) with row stride ldb
    void (*row_times_matrix)(T* c, const T* a, const T* b, int64_t ldb, int64_t cols,
                             int64_t K, bool load_c);
};

// Defined in gemm_avx2.cpp (compiled with -mavx2 -mfma): call only when the CPU has both.
const KernelSet<float>& avx2_kernels_float();
const KernelSet<double>& avx2_kernels_double();

// True when the AVX2/FMA kernels are in use: the CPU has both and the portable kernels are
// not forced (force_portable_gemm, FASTMLP_FORCE_PORTABLE=1). The optimizer loops follow it.
bool avx2_kernels_active();

// Single-thread fp32 FMA throughput of an AVX2 register-only loop run for about `seconds`,
// in GFLOP/s (2 flops per lane per FMA). For the benchmark's "peak" line.
double avx2_fma_peak_gflops(double seconds);

}  // namespace gemm_detail
}  // namespace fastmlp
