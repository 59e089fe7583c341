// AVX2/FMA GEMM kernels (micro-kernel, dot path, row path), compiled with -mavx2 -mfma in
// this translation unit only and selected at run time by gemm.cpp.
#include <immintrin.h>

#include <chrono>

#include "gemm_internal.h"

namespace fastmlp {
namespace gemm_detail {

namespace {

// One ymm register of T, and the few operations the kernels need, so that each kernel is
// written once for float and double.
template <typename T>
struct Ymm;

template <>
struct Ymm<float> {
    using V = __m256;
    static constexpr int64_t W = 8;
    static V zero() { return _mm256_setzero_ps(); }
    static V load_aligned(const float* p) { return _mm256_load_ps(p); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    // Lanes [0, n) active, 0 <= n <= W.
    static __m256i mask(int64_t n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static V load_first(const float* p, int64_t n) { return _mm256_maskload_ps(p, mask(n)); }
    static void store_first(float* p, int64_t n, V v) { _mm256_maskstore_ps(p, mask(n), v); }
    // Horizontal sum in a fixed order (the order is part of the result's bits).
    static float sum(V v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        return _mm_cvtss_f32(s);
    }
};

template <>
struct Ymm<double> {
    using V = __m256d;
    static constexpr int64_t W = 4;
    static V zero() { return _mm256_setzero_pd(); }
    static V load_aligned(const double* p) { return _mm256_load_pd(p); }
    static V load(const double* p) { return _mm256_loadu_pd(p); }
    static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
    static V add(V a, V b) { return _mm256_add_pd(a, b); }
    static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
    static __m256i mask(int64_t n) {
        return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    }
    static V load_first(const double* p, int64_t n) { return _mm256_maskload_pd(p, mask(n)); }
    static void store_first(double* p, int64_t n, V v) { _mm256_maskstore_pd(p, mask(n), v); }
    static double sum(V v) {
        __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
        s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
        return _mm_cvtsd_f64(s);
    }
};

// ---- micro-kernel: MR x NR register tile, MR broadcasts of A and NR/W loads of B per k ----

template <typename T>
void micro_tile(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t ldc,
                bool load_c) {
    using Y = Ymm<T>;
    constexpr int64_t MR = Blocking<T>::MR, NV = Blocking<T>::NR / Y::W;
    typename Y::V acc[MR][NV];
#pragma GCC unroll 8
    for (int64_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int64_t v = 0; v < NV; ++v) acc[i][v] = Y::zero();
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
        typename Y::V b[NV];
#pragma GCC unroll 4
        for (int64_t v = 0; v < NV; ++v) b[v] = Y::load_aligned(b_panel + v * Y::W);
#pragma GCC unroll 8
        for (int64_t i = 0; i < MR; ++i) {
            const typename Y::V a = Y::broadcast(a_panel + i);
#pragma GCC unroll 4
            for (int64_t v = 0; v < NV; ++v) acc[i][v] = Y::fma(a, b[v], acc[i][v]);
        }
        a_panel += MR;
        b_panel += Blocking<T>::NR;
    }
#pragma GCC unroll 8
    for (int64_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int64_t v = 0; v < NV; ++v) {
            T* p = c + i * ldc + v * Y::W;
            Y::store(p, load_c ? Y::add(Y::load(p), acc[i][v]) : acc[i][v]);
        }
}

// ---- dot path: RA rows of a against RB rows of bt, K vectorised, tail by masked loads ----

template <typename T, int RA, int RB>
void dot_tile(T* c, int64_t ldc, const T* a, int64_t lda, const T* bt, int64_t ldbt, int64_t K,
              bool load_c) {
    using Y = Ymm<T>;
    typename Y::V acc[RA][RB];
    for (int i = 0; i < RA; ++i)
        for (int j = 0; j < RB; ++j) acc[i][j] = Y::zero();
    const int64_t k_full = K - K % Y::W;
    for (int64_t k = 0; k < k_full; k += Y::W) {
        typename Y::V av[RA];
        for (int i = 0; i < RA; ++i) av[i] = Y::load(a + i * lda + k);
        for (int j = 0; j < RB; ++j) {
            const typename Y::V bv = Y::load(bt + j * ldbt + k);
            for (int i = 0; i < RA; ++i) acc[i][j] = Y::fma(av[i], bv, acc[i][j]);
        }
    }
    if (k_full < K) {
        const int64_t rest = K - k_full;
        typename Y::V av[RA];
        for (int i = 0; i < RA; ++i) av[i] = Y::load_first(a + i * lda + k_full, rest);
        for (int j = 0; j < RB; ++j) {
            const typename Y::V bv = Y::load_first(bt + j * ldbt + k_full, rest);
            for (int i = 0; i < RA; ++i) acc[i][j] = Y::fma(av[i], bv, acc[i][j]);
        }
    }
    for (int i = 0; i < RA; ++i)
        for (int j = 0; j < RB; ++j) {
            const T dot = Y::sum(acc[i][j]);
            T* p = c + i * ldc + j;
            *p = load_c ? *p + dot : dot;
        }
}

// A strip of RA rows against every column, 4 columns at a time.
template <typename T, int RA>
void dot_strip(T* c, int64_t ldc, const T* a, int64_t lda, const T* bt, int64_t ldbt,
               int64_t cols, int64_t K, bool load_c) {
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4) dot_tile<T, RA, 4>(c + j, ldc, a, lda, bt + j * ldbt, ldbt, K, load_c);
    const T* btj = bt + j * ldbt;
    switch (cols - j) {
        case 3: dot_tile<T, RA, 3>(c + j, ldc, a, lda, btj, ldbt, K, load_c); break;
        case 2: dot_tile<T, RA, 2>(c + j, ldc, a, lda, btj, ldbt, K, load_c); break;
        case 1: dot_tile<T, RA, 1>(c + j, ldc, a, lda, btj, ldbt, K, load_c); break;
        default: break;
    }
}

template <typename T>
void dot_block(T* c, int64_t ldc, const T* a, int64_t lda, const T* bt, int64_t ldbt,
               int64_t rows, int64_t cols, int64_t K, bool load_c) {
    int64_t i = 0;
    for (; i + 3 <= rows; i += 3)
        dot_strip<T, 3>(c + i * ldc, ldc, a + i * lda, lda, bt, ldbt, cols, K, load_c);
    if (rows - i == 2) dot_strip<T, 2>(c + i * ldc, ldc, a + i * lda, lda, bt, ldbt, cols, K, load_c);
    if (rows - i == 1) dot_strip<T, 1>(c + i * ldc, ldc, a + i * lda, lda, bt, ldbt, cols, K, load_c);
}

// ---- row path: NV vectors of c held in registers while a streams over the rows of b ----

template <typename T, int NV>
void row_chunk(T* c, const T* a, const T* b, int64_t ldb, int64_t K, bool load_c) {
    using Y = Ymm<T>;
    typename Y::V acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = Y::zero();
    // b's rows are ldb apart: the hardware prefetchers follow that stride late, so the lines
    // of the row kAhead ahead are asked for explicitly (measured best of 0, 4, 8, 16).
    constexpr int64_t kAhead = 4;
    constexpr int kLines = static_cast<int>(NV * Y::W * sizeof(T) / 64);
    for (int64_t k = 0; k < K; ++k) {
        const typename Y::V av = Y::broadcast(a + k);
        const T* b_row = b + k * ldb;
        if (k + kAhead < K)
            for (int line = 0; line < kLines; ++line)
                _mm_prefetch(reinterpret_cast<const char*>(b_row + kAhead * ldb) + 64 * line, _MM_HINT_T0);
        for (int v = 0; v < NV; ++v) acc[v] = Y::fma(av, Y::load(b_row + v * Y::W), acc[v]);
    }
    for (int v = 0; v < NV; ++v) {
        T* p = c + v * Y::W;
        Y::store(p, load_c ? Y::add(Y::load(p), acc[v]) : acc[v]);
    }
}

// The last n < W columns, with masked loads and stores.
template <typename T>
void row_tail(T* c, int64_t n, const T* a, const T* b, int64_t ldb, int64_t K, bool load_c) {
    using Y = Ymm<T>;
    typename Y::V acc = Y::zero();
    for (int64_t k = 0; k < K; ++k)
        acc = Y::fma(Y::broadcast(a + k), Y::load_first(b + k * ldb, n), acc);
    if (load_c) acc = Y::add(Y::load_first(c, n), acc);
    Y::store_first(c, n, acc);
}

template <typename T>
void row_times_matrix(T* c, const T* a, const T* b, int64_t ldb, int64_t cols, int64_t K,
                      bool load_c) {
    constexpr int64_t W = Ymm<T>::W, CHUNK = 8 * W;
    int64_t j = 0;
    for (; j + CHUNK <= cols; j += CHUNK) row_chunk<T, 8>(c + j, a, b + j, ldb, K, load_c);
    for (; j + W <= cols; j += W) row_chunk<T, 1>(c + j, a, b + j, ldb, K, load_c);
    if (j < cols) row_tail<T>(c + j, cols - j, a, b + j, ldb, K, load_c);
}

template <typename T>
const KernelSet<T>& avx2_kernels() {
    static const KernelSet<T> set{&micro_tile<T>, &dot_block<T>, &row_times_matrix<T>};
    return set;
}

}  // namespace

const KernelSet<float>& avx2_kernels_float() { return avx2_kernels<float>(); }
const KernelSet<double>& avx2_kernels_double() { return avx2_kernels<double>(); }

double avx2_fma_peak_gflops(double seconds) {
    // 12 independent chains: enough to cover FMA latency x throughput on current cores.
    constexpr int chains = 12;
    constexpr int64_t iterations = 1 << 16;
    __m256 acc[chains];
    for (int i = 0; i < chains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    int64_t rounds = 0;
    double elapsed = 0;
    do {
        for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
            for (int i = 0; i < chains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
        }
        ++rounds;
        elapsed = std::chrono::duration<double>(clock::now() - start).count();
    } while (elapsed < seconds);
    // Keep the result alive so the loop is not optimised away.
    __m256 total = acc[0];
    for (int i = 1; i < chains; ++i) total = _mm256_add_ps(total, acc[i]);
    volatile float sink = _mm256_cvtss_f32(total);
    (void)sink;
    return static_cast<double>(rounds) * iterations * chains * 8 * 2 / elapsed * 1e-9;
}

}  // namespace gemm_detail
}  // namespace fastmlp
