// Sparse input: the rows of a CSR matrix densified one batch at a time into the workspace,
// so a sparse training set is never held densely (kernels.h: csr_rows_to_dense).
#include <algorithm>
#include <cstring>

#include "kernels.h"

namespace fastmlp {

namespace {

// Writes row r into out (cols wide); false, with nothing read out of bounds, when the row's
// extent or one of its columns is not valid.
template <typename T, typename Index>
bool csr_row_to_dense(T* out, const T* data, const Index* indices, const int64_t* indptr,
                      int64_t r, int64_t nnz, int64_t cols) {
    std::memset(out, 0, sizeof(T) * static_cast<size_t>(cols));
    const int64_t begin = indptr[r], end = indptr[r + 1];
    if (begin < 0 || begin > end || end > nnz) return false;
    for (int64_t k = begin; k < end; ++k) {
        const int64_t column = static_cast<int64_t>(indices[k]);
        if (column < 0 || column >= cols) return false;
        out[column] += data[k];
    }
    return true;
}

}  // namespace

template <typename T, typename Index>
int64_t csr_rows_to_dense(T* out, const T* data, const Index* indices, const int64_t* indptr,
                          const int64_t* rows, int64_t first_row, int64_t B, int64_t nnz,
                          int64_t cols) {
    // Zeroing B * cols values dominates; rows are independent, so any split gives the same bits.
    const int threads = threads_for(static_cast<double>(B) * static_cast<double>(cols));
    int64_t first_bad = B;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1) reduction(min : first_bad)
    for (int64_t i = 0; i < B; ++i) {
        const int64_t r = rows ? rows[i] : first_row + i;
        if (!csr_row_to_dense(out + i * cols, data, indices, indptr, r, nnz, cols))
            first_bad = std::min(first_bad, i);
    }
    return first_bad == B ? -1 : first_bad;
}

#define FASTMLP_INSTANTIATE(T, Index)                                                          \
    template int64_t csr_rows_to_dense<T, Index>(T*, const T*, const Index*, const int64_t*,   \
                                                 const int64_t*, int64_t, int64_t, int64_t,    \
                                                 int64_t);
FASTMLP_INSTANTIATE(float, int32_t)
FASTMLP_INSTANTIATE(float, int64_t)
FASTMLP_INSTANTIATE(double, int32_t)
FASTMLP_INSTANTIATE(double, int64_t)
#undef FASTMLP_INSTANTIATE

}  // namespace fastmlp
