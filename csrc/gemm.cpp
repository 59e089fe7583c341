// GEMM behind one interface (kernels.h: gemm). This is the straightforward cache-blocked
// version; every element of c is summed over k in increasing order, whatever the threads.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace fastmlp {

namespace {

std::atomic<bool> g_force_portable{std::getenv("FASTMLP_FORCE_PORTABLE") != nullptr &&
                                   std::getenv("FASTMLP_FORCE_PORTABLE")[0] == '1'};

// Rows of c handled by one task; columns blocked so a c row block stays in L1.
constexpr int64_t kRowBlock = 16;

// c rows [i0, i1) for the NN and TN cases: c[i, :] += a(i, k) * b[k, :] for k in order.
// Reading b row by row keeps the inner loop contiguous and vectorisable.
template <typename T>
void rows_axpy(T* c, const T* a, const T* b, int64_t i0, int64_t i1, int64_t M, int64_t N,
               int64_t K, bool transpose_a) {
    for (int64_t i = i0; i < i1; ++i) {
        T* c_row = c + i * N;
        for (int64_t k = 0; k < K; ++k) {
            const T a_ik = transpose_a ? a[k * M + i] : a[i * K + k];
            const T* b_row = b + k * N;
            for (int64_t j = 0; j < N; ++j) c_row[j] += a_ik * b_row[j];
        }
    }
}

// c rows [i0, i1) for the NT cases: c[i, j] += dot(a(i, :), b[j, :]), k in order.
template <typename T>
void rows_dot(T* c, const T* a, const T* b, int64_t i0, int64_t i1, int64_t M, int64_t N,
              int64_t K, bool transpose_a) {
    for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = 0; j < N; ++j) {
            const T* b_row = b + j * K;
            T sum = 0;
            for (int64_t k = 0; k < K; ++k) {
                const T a_ik = transpose_a ? a[k * M + i] : a[i * K + k];
                sum += a_ik * b_row[k];
            }
            c[i * N + j] += sum;
        }
    }
}

}  // namespace

const char* gemm_kernel_name() { return "portable"; }
void force_portable_gemm(bool force) { g_force_portable.store(force); }

template <typename T>
void gemm(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool transpose_a,
          bool transpose_b, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    if (!accumulate) std::memset(c, 0, sizeof(T) * static_cast<size_t>(M * N));
    if (K <= 0) return;
    const int64_t blocks = (M + kRowBlock - 1) / kRowBlock;
    const int threads = threads_for(static_cast<double>(M) * N * K);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t block = 0; block < blocks; ++block) {
        const int64_t i0 = block * kRowBlock, i1 = std::min(M, i0 + kRowBlock);
        if (transpose_b)
            rows_dot(c, a, b, i0, i1, M, N, K, transpose_a);
        else
            rows_axpy(c, a, b, i0, i1, M, N, K, transpose_a);
    }
}

template void gemm<float>(float*, const float*, const float*, int64_t, int64_t, int64_t, bool,
                          bool, bool);
template void gemm<double>(double*, const double*, const double*, int64_t, int64_t, int64_t,
                           bool, bool, bool);

}  // namespace fastmlp
