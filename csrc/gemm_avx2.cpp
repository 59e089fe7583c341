// AVX2/FMA GEMM kernels (gemm_simd.h over 8-float ymm registers) and the loops around them
// (gemm_driver.h), compiled with -mavx2 -mfma in this translation unit only and selected at
// run time by gemm.cpp.
#include <immintrin.h>


#include "gemm_driver.h"
#include "gemm_internal.h"
#include "gemm_simd.h"

namespace fastmlp {
namespace gemm_detail {

namespace {
// One ymm register of T, and the few operations the kernels need, so that each kernel is
// written once for float and double.
template <typename T>
struct Ymm;

template <>
struct Ymm<float> {
    using Reg = __m256;
    static constexpr int64_t W = 8, REGISTERS = 16;
    static Reg zero() { return _mm256_setzero_ps(); }
    static Reg load_aligned(const float* p) { return _mm256_load_ps(p); }
    static Reg load(const float* p) { return _mm256_loadu_ps(p); }
    static Reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
    static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
    static void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
    // Lanes [0, n) active, 0 <= n <= W.
    static __m256i mask(int64_t n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static Reg load_first(const float* p, int64_t n) { return _mm256_maskload_ps(p, mask(n)); }
    static void store_first(float* p, int64_t n, Reg v) { _mm256_maskstore_ps(p, mask(n), v); }
};

template <>
struct Ymm<double> {
    using Reg = __m256d;
    static constexpr int64_t W = 4, REGISTERS = 16;
    static Reg zero() { return _mm256_setzero_pd(); }
    static Reg load_aligned(const double* p) { return _mm256_load_pd(p); }
    static Reg load(const double* p) { return _mm256_loadu_pd(p); }
    static Reg broadcast(const double* p) { return _mm256_broadcast_sd(p); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
    static Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
    static void store(double* p, Reg v) { _mm256_storeu_pd(p, v); }
    static __m256i mask(int64_t n) {
        return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    }
    static Reg load_first(const double* p, int64_t n) { return _mm256_maskload_pd(p, mask(n)); }
    static void store_first(double* p, int64_t n, Reg v) { _mm256_maskstore_pd(p, mask(n), v); }
};

// 6 x 16 floats (12 ymm accumulators) and 6 x 8 doubles; an MC x KC block of A fits the
// L2 of the smaller cores that have AVX2 (512 KiB).
using Float32Kernels = SimdKernels<float, Ymm<float>, 6, 16, 144, 2048>;
using Float64Kernels = SimdKernels<double, Ymm<double>, 6, 8, 72, 2048>;

}  // namespace

const GemmPaths<float>& avx2_paths_float() { return paths_around<float, Float32Kernels>(); }
const GemmPaths<double>& avx2_paths_double() { return paths_around<double, Float64Kernels>(); }

// 12 independent chains: enough to cover FMA latency x throughput on current cores.
double avx2_fma_peak_gflops(double seconds) {
    return fma_peak_gflops_of<Ymm<float>, 12>(seconds);
}

}  // namespace gemm_detail
}  // namespace fastmlp
