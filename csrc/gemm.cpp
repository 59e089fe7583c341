// GEMM behind one interface (kernels.h: gemm): a BLIS-style packed path (pack B panel, pack A
// block, register-tiled micro-kernel), two unpacked paths for skinny shapes, and the portable
// kernels that stand in for the AVX2/FMA ones (gemm_avx2.cpp) on CPUs without them.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "activation_math.h"
#include "gemm_internal.h"
#include "kernels.h"

namespace fastmlp {

using gemm_detail::Blocking;
using gemm_detail::KernelSet;

namespace {

// ---------------------------------------------------------------------------------------
// Portable kernels: the same contracts as the AVX2 ones, in plain C++.
// ---------------------------------------------------------------------------------------

template <typename T>
void portable_micro_tile(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t ldc,
                         bool load_c) {
    constexpr int64_t MR = Blocking<T>::MR, NR = Blocking<T>::NR;
    T acc[MR][NR] = {};
    for (int64_t k = 0; k < kc; ++k) {
        for (int64_t i = 0; i < MR; ++i) {
            const T a = a_panel[k * MR + i];
            for (int64_t j = 0; j < NR; ++j) acc[i][j] += a * b_panel[k * NR + j];
        }
    }
    for (int64_t i = 0; i < MR; ++i)
        for (int64_t j = 0; j < NR; ++j)
            c[i * ldc + j] = load_c ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

template <typename T>
void portable_dot_block(T* c, int64_t ldc, const T* a, int64_t lda, const T* bt, int64_t ldbt,
                        int64_t rows, int64_t cols, int64_t K, bool load_c) {
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
            T dot = 0;
            for (int64_t k = 0; k < K; ++k) dot += a[i * lda + k] * bt[j * ldbt + k];
            T* p = c + i * ldc + j;
            *p = load_c ? *p + dot : dot;
        }
}

template <typename T>
void portable_row_times_matrix(T* c, const T* a, const T* b, int64_t ldb, int64_t cols,
                               int64_t K, bool load_c) {
    // Column chunks small enough that the partial sums stay in L1 while b streams by.
    constexpr int64_t CHUNK = 256;
    T acc[CHUNK];
    for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {
        const int64_t n = std::min(CHUNK, cols - j0);
        std::fill(acc, acc + n, T(0));
        for (int64_t k = 0; k < K; ++k) {
            const T a_k = a[k];
            const T* b_row = b + k * ldb + j0;
            for (int64_t j = 0; j < n; ++j) acc[j] += a_k * b_row[j];
        }
        for (int64_t j = 0; j < n; ++j) c[j0 + j] = load_c ? c[j0 + j] + acc[j] : acc[j];
    }
}

template <typename T>
const KernelSet<T>& portable_kernels() {
    static const KernelSet<T> set{&portable_micro_tile<T>, &portable_dot_block<T>,
                                  &portable_row_times_matrix<T>};
    return set;
}

// ---------------------------------------------------------------------------------------
// Kernel selection: once from the CPU's features, overridable for tests.
// ---------------------------------------------------------------------------------------

bool cpu_has_avx2_fma() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool forced_portable_by_environment() {
    const char* value = std::getenv("FASTMLP_FORCE_PORTABLE");
    return value != nullptr && value[0] == '1';
}

const bool g_cpu_has_avx2_fma = cpu_has_avx2_fma();
std::atomic<bool> g_force_portable{forced_portable_by_environment()};

bool use_avx2() { return g_cpu_has_avx2_fma && !g_force_portable.load(); }

template <typename T>
const KernelSet<T>& active_kernels();
template <>
const KernelSet<float>& active_kernels<float>() {
    return use_avx2() ? gemm_detail::avx2_kernels_float() : portable_kernels<float>();
}
template <>
const KernelSet<double>& active_kernels<double>() {
    return use_avx2() ? gemm_detail::avx2_kernels_double() : portable_kernels<double>();
}

// ---------------------------------------------------------------------------------------
// Scratch memory: per thread, 64-byte aligned, grown on demand and kept for the next call
// (fresh pages would cost a page fault per 4 KiB on every call). Each OpenMP thread runs one
// region at a time, so a thread's buffer is never used by two calls at once.
// get() returns nullptr when the memory cannot be had: inside a parallel region an exception
// would terminate the process, so callers note the failure and throw std::bad_alloc (Python's
// MemoryError) once the team has joined.
// ---------------------------------------------------------------------------------------

class ScratchBuffer {
public:
    ~ScratchBuffer() { std::free(data_); }
    template <typename T>
    T* get(int64_t count) {
        const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
        if (bytes > capacity_) {
            std::free(data_);
            data_ = std::aligned_alloc(64, bytes);
            capacity_ = data_ ? bytes : 0;
        }
        return static_cast<T*>(data_);
    }

private:
    void* data_ = nullptr;
    size_t capacity_ = 0;
};

thread_local ScratchBuffer t_packed_a;   // this thread's MC x KC block of A
thread_local ScratchBuffer t_shared_b;   // the calling thread's B panel, read by its team

int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// The half-open range [begin, end) of `count` items given to part `index` of `parts`.
struct Range {
    int64_t begin, end;
};
Range split(int64_t count, int index, int parts) {
    return {count * index / parts, count * (index + 1) / parts};
}

// op(a)[i, k] and op(b)[k, j] of the row-major operands.
template <typename T>
struct Operands {
    T* c;
    const T* a;
    const T* b;
    int64_t M, N, K;
    bool transpose_a, transpose_b, accumulate;
    const GemmEpilogue<T>& epilogue;
};

// ---------------------------------------------------------------------------------------
// The epilogue, applied to a finished block of c (a tile just stored, still in L1).
// ---------------------------------------------------------------------------------------

// Rows [i, i + rows) x columns [j, j + cols) of c get the epilogue.
template <typename T>
void finish_block(const Operands<T>& p, int64_t i, int64_t j, int64_t rows, int64_t cols) {
    const GemmEpilogue<T>& e = p.epilogue;
    for (int64_t r = i; r < i + rows; ++r) {
        T* c_row = p.c + r * p.N + j;
        const int64_t at = r * p.N + j;
        if (e.kind == GemmEpilogueKind::bias_activation)
            activation_math::bias_activation_row(c_row, e.pre_activation ? e.pre_activation + at : nullptr,
                                                 c_row, e.bias + j, cols, e.activation, e.slope);
        else if (e.kind == GemmEpilogueKind::activation_derivative)
            activation_math::activation_derivative_row(c_row, c_row, e.x ? e.x + at : nullptr,
                                                       e.y ? e.y + at : nullptr, cols, e.activation,
                                                       e.slope);
    }
}

// b_column_sums for the unpacked paths, which never read b in k order: one pass in k order
// (the packed path sums while packing, in the same order).
template <typename T>
void sum_b_columns(const Operands<T>& p) {
    T* sums = p.epilogue.b_column_sums;
    if (!sums) return;
    std::fill(sums, sums + p.N, T(0));
    for (int64_t k = 0; k < p.K; ++k)
        for (int64_t j = 0; j < p.N; ++j) sums[j] += p.transpose_b ? p.b[j * p.K + k] : p.b[k * p.N + j];
}

// ---------------------------------------------------------------------------------------
// Packing. A block rows [i0, i0 + mc) x k [k0, k0 + kc) becomes MR-row slivers, each stored
// k-major (kc, MR); B panel columns [j0, j0 + nc) x k [k0, k0 + kc) becomes NR-column slivers
// (kc, NR). Rows/columns past the matrix are zero, so the micro-kernel never sees an edge.
// The transposes are absorbed here: only the read pattern changes.
// ---------------------------------------------------------------------------------------

template <typename T>
void pack_a_sliver(T* dst, const Operands<T>& p, int64_t i0, int64_t k0, int64_t kc) {
    constexpr int64_t MR = Blocking<T>::MR;
    const int64_t rows = std::min(MR, p.M - i0);
    if (p.transpose_a) {  // a is (K, M): row k holds op(a)[:, k] contiguously
        for (int64_t k = 0; k < kc; ++k) {
            const T* src = p.a + (k0 + k) * p.M + i0;
            T* out = dst + k * MR;
            for (int64_t i = 0; i < rows; ++i) out[i] = src[i];
            for (int64_t i = rows; i < MR; ++i) out[i] = 0;
        }
    } else {  // a is (M, K): gather one element from each of MR rows per k
        for (int64_t i = 0; i < rows; ++i) {
            const T* src = p.a + (i0 + i) * p.K + k0;
            for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = src[k];
        }
        for (int64_t i = rows; i < MR; ++i)
            for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = 0;
    }
}

// Also adds the sliver's columns to sums[0, cols) in k order when sums is not null (the
// first K block starts them at zero).
template <typename T>
void pack_b_sliver(T* dst, const Operands<T>& p, int64_t j0, int64_t k0, int64_t kc, T* sums) {
    constexpr int64_t NR = Blocking<T>::NR;
    const int64_t cols = std::min(NR, p.N - j0);
    if (sums && k0 == 0) std::fill(sums, sums + cols, T(0));
    if (p.transpose_b) {  // b is (N, K): gather one element from each of NR rows per k
        for (int64_t j = 0; j < cols; ++j) {
            const T* src = p.b + (j0 + j) * p.K + k0;
            for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = src[k];
            if (sums)
                for (int64_t k = 0; k < kc; ++k) sums[j] += src[k];
        }
        for (int64_t j = cols; j < NR; ++j)
            for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = 0;
    } else {  // b is (K, N): row k holds op(b)[k, :] contiguously
        for (int64_t k = 0; k < kc; ++k) {
            const T* src = p.b + (k0 + k) * p.N + j0;
            T* out = dst + k * NR;
            for (int64_t j = 0; j < cols; ++j) out[j] = src[j];
            for (int64_t j = cols; j < NR; ++j) out[j] = 0;
            if (sums)
                for (int64_t j = 0; j < cols; ++j) sums[j] += src[j];
        }
    }
}

// ---------------------------------------------------------------------------------------
// The packed path.
// ---------------------------------------------------------------------------------------

// The K blocking: ceil(K / KC) equal blocks. Depends on K only, so the order in which each
// c element is summed is the same at every thread count.
template <typename T>
struct KBlocking {
    int64_t count, size;
    explicit KBlocking(int64_t K)
        : count(ceil_div(K, Blocking<T>::KC)), size(ceil_div(K, ceil_div(K, Blocking<T>::KC))) {}
};

// How a team divides the c tiles of one B panel: a grid of row_parts x col_parts threads.
// Rows are split when there are enough MR-row tiles for every thread (each thread then packs
// only its own rows of A); otherwise columns are split.
struct TeamGrid {
    int row_parts, col_parts;
};
template <typename T>
TeamGrid team_grid(int64_t M, int threads) {
    if (ceil_div(M, Blocking<T>::MR) >= 2 * threads) return {threads, 1};
    return {1, threads};
}

// Writes an MR x NR tile computed into `tile` (row stride NR) to the valid part of c.
template <typename T>
void store_edge_tile(T* c, int64_t ldc, const T* tile, int64_t rows, int64_t cols, bool load_c) {
    constexpr int64_t NR = Blocking<T>::NR;
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
            c[i * ldc + j] = load_c ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
}

// The two innermost loops: NR-column slivers [s0, s1) of the packed B panel against every
// MR-row sliver of the packed A block.
template <typename T>
void macro_kernel(const KernelSet<T>& kernels, const Operands<T>& p, const T* a_block,
                  const T* b_panel, int64_t i0, int64_t mc, int64_t j0, int64_t s0, int64_t s1,
                  int64_t kc, bool load_c, bool last_k_block) {
    const bool finish = last_k_block && p.epilogue.kind != GemmEpilogueKind::none;
    constexpr int64_t MR = Blocking<T>::MR, NR = Blocking<T>::NR;
    alignas(64) T edge_tile[MR * NR];
    for (int64_t s = s0; s < s1; ++s) {
        const int64_t j = j0 + s * NR, cols = std::min(NR, p.N - j);
        const T* b_sliver = b_panel + s * NR * kc;
        for (int64_t r = 0; r * MR < mc; ++r) {
            const int64_t i = i0 + r * MR, rows = std::min(MR, p.M - i);
            const T* a_sliver = a_block + r * MR * kc;
            T* c_tile = p.c + i * p.N + j;
            if (rows == MR && cols == NR) {
                kernels.micro_tile(kc, a_sliver, b_sliver, c_tile, p.N, load_c);
            } else {
                kernels.micro_tile(kc, a_sliver, b_sliver, edge_tile, NR, false);
                store_edge_tile(c_tile, p.N, edge_tile, rows, cols, load_c);
            }
            if (finish) finish_block(p, i, j, rows, cols);
        }
    }
}

// One thread's share of the five loops. Every thread of the team runs this; the B panel is
// packed by all of them together and is read by all of them. Two panel buffers alternate,
// so one barrier per K block suffices: a thread can only be packing panel n + 2 (into the
// buffer of panel n) once every thread has reached the barrier after packing panel n + 1,
// that is, has finished computing with panel n.
template <typename T>
void packed_gemm_member(const KernelSet<T>& kernels, const Operands<T>& p, T* const b_panels[2],
                        int thread, int threads, std::atomic<bool>& out_of_memory) {
    constexpr int64_t MR = Blocking<T>::MR, NR = Blocking<T>::NR, MC = Blocking<T>::MC,
                      NC = Blocking<T>::NC;
    const KBlocking<T> kb(p.K);
    const TeamGrid grid = team_grid<T>(p.M, threads);
    const int row_part = thread % grid.row_parts, col_part = thread / grid.row_parts;
    const Range my_row_tiles = split(ceil_div(p.M, MR), row_part, grid.row_parts);
    const int64_t my_i0 = my_row_tiles.begin * MR, my_i1 = std::min(p.M, my_row_tiles.end * MR);
    T* a_block = t_packed_a.get<T>(std::min(MC, ceil_div(p.M, MR) * MR) * kb.size);
    // Without its A block a thread still packs its share of B and meets every barrier (the
    // team would wait for it forever otherwise); it only skips its multiplications.
    if (!a_block) out_of_memory.store(true, std::memory_order_relaxed);
    T* sums = p.epilogue.b_column_sums;
    int64_t panels_packed = 0;

    for (int64_t j0 = 0; j0 < p.N; j0 += NC) {
        const int64_t nc = std::min(NC, p.N - j0), slivers = ceil_div(nc, NR);
        const Range my_pack = split(slivers, thread, threads);
        const Range my_slivers = split(slivers, col_part, grid.col_parts);
        for (int64_t block = 0; block < kb.count; ++block) {
            const int64_t k0 = block * kb.size, kc = std::min(kb.size, p.K - k0);
            const bool load_c = p.accumulate || block > 0;
            T* b_panel = b_panels[panels_packed++ % 2];
            for (int64_t s = my_pack.begin; s < my_pack.end; ++s) {
                const int64_t j = j0 + s * NR;
                pack_b_sliver(b_panel + s * NR * kc, p, j, k0, kc, sums ? sums + j : nullptr);
            }
            if (threads > 1) {
#pragma omp barrier
            }
            for (int64_t i0 = my_i0; a_block && i0 < my_i1; i0 += MC) {
                const int64_t mc = std::min(MC, my_i1 - i0);
                for (int64_t r = 0; r * MR < mc; ++r)
                    pack_a_sliver(a_block + r * MR * kc, p, i0 + r * MR, k0, kc);
                macro_kernel(kernels, p, a_block, b_panel, i0, mc, j0, my_slivers.begin,
                             my_slivers.end, kc, load_c, block == kb.count - 1);
            }
        }
    }
}

template <typename T>
void packed_gemm(const KernelSet<T>& kernels, const Operands<T>& p, int threads) {
    constexpr int64_t NR = Blocking<T>::NR, NC = Blocking<T>::NC;
    const KBlocking<T> kb(p.K);
    const int64_t panel_size = kb.size * ceil_div(std::min(NC, p.N), NR) * NR;
    // Panels start on 64-byte boundaries (the micro-kernel's aligned loads of B).
    const int64_t stride = (panel_size * static_cast<int64_t>(sizeof(T)) + 63) / 64 * 64 /
                           static_cast<int64_t>(sizeof(T));
    T* buffer = t_shared_b.get<T>(2 * stride);
    if (!buffer) throw std::bad_alloc();
    T* const b_panels[2] = {buffer, buffer + stride};
    std::atomic<bool> out_of_memory{false};
    if (threads <= 1) {
        packed_gemm_member(kernels, p, b_panels, 0, 1, out_of_memory);
    } else {
#pragma omp parallel num_threads(threads)
        packed_gemm_member(kernels, p, b_panels, omp_get_thread_num(), omp_get_num_threads(),
                           out_of_memory);
    }
    if (out_of_memory.load()) throw std::bad_alloc();
}

// ---------------------------------------------------------------------------------------
// The unpacked paths for skinny shapes, where packing would cost as much as the arithmetic.
// ---------------------------------------------------------------------------------------

// The dot path: c[i, j] = dot(op(a)[i, :], op(b)[:, j]) with both operands read along k.
// Needs op(a) rows contiguous (a not transposed, or M == 1). op(b) columns are the rows of b
// when transpose_b; otherwise b has few columns (N <= 16) and is transposed into scratch.
template <typename T>
void dot_gemm(const KernelSet<T>& kernels, const Operands<T>& p, int threads) {
    sum_b_columns(p);
    const T* bt = p.b;
    if (!p.transpose_b) {
        T* copy = t_shared_b.get<T>(p.N * p.K);
        if (!copy) throw std::bad_alloc();
        for (int64_t k = 0; k < p.K; ++k)
            for (int64_t j = 0; j < p.N; ++j) copy[j * p.K + k] = p.b[k * p.N + j];
        bt = copy;
    }
    const bool split_rows = p.M >= 2 * threads;
    auto run = [&](int thread, int team) {
        const Range rows = split_rows ? split(p.M, thread, team) : Range{0, p.M};
        const Range cols = split_rows ? Range{0, p.N} : split(p.N, thread, team);
        if (rows.end > rows.begin && cols.end > cols.begin)
            kernels.dot_block(p.c + rows.begin * p.N + cols.begin, p.N, p.a + rows.begin * p.K,
                              p.K, bt + cols.begin * p.K, p.K, rows.end - rows.begin,
                              cols.end - cols.begin, p.K, p.accumulate);
        if (rows.end > rows.begin && cols.end > cols.begin)
            finish_block(p, rows.begin, cols.begin, rows.end - rows.begin, cols.end - cols.begin);
    };
    if (threads <= 1) return run(0, 1);
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
}

// The row path (M == 1, b not transposed): c[0, :] = a @ b, streaming b once.
template <typename T>
void row_gemm(const KernelSet<T>& kernels, const Operands<T>& p, int threads) {
    sum_b_columns(p);
    // Column shares in multiples of 64 so every thread's register chunks stay whole.
    constexpr int64_t QUANTUM = 64;
    const int64_t quanta = ceil_div(p.N, QUANTUM);
    auto run = [&](int thread, int team) {
        const Range share = split(quanta, thread, team);
        const int64_t j0 = share.begin * QUANTUM, j1 = std::min(p.N, share.end * QUANTUM);
        if (j1 > j0) {
            kernels.row_times_matrix(p.c + j0, p.a, p.b + j0, p.N, j1 - j0, p.K, p.accumulate);
            finish_block(p, 0, j0, 1, j1 - j0);
        }
    };
    if (threads <= 1) return run(0, 1);
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
}

enum class GemmPath { packed, dot, row };

// Chosen from the shape alone (never the thread count), so results do not depend on it.
GemmPath choose_path(int64_t M, int64_t N, int64_t K, bool transpose_a, bool transpose_b) {
    constexpr int64_t kSkinny = 16;
    if (K < 8) return GemmPath::packed;
    const bool a_rows_contiguous = !transpose_a || M == 1;
    if (M == 1 && !transpose_b) return GemmPath::row;
    if (a_rows_contiguous && (N <= kSkinny || (transpose_b && M == 1))) return GemmPath::dot;
    return GemmPath::packed;
}

}  // namespace

bool gemm_detail::avx2_kernels_active() { return use_avx2(); }

const char* gemm_kernel_name() { return use_avx2() ? "avx2" : "portable"; }
void force_portable_gemm(bool force) { g_force_portable.store(force); }

template <typename T>
void gemm_fused(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool transpose_a,
                bool transpose_b, bool accumulate, const GemmEpilogue<T>& epilogue) {
    if (N <= 0) return;
    const Operands<T> p{c, a, b, M, N, K, transpose_a, transpose_b, accumulate, epilogue};
    if (M <= 0 || K <= 0) {
        // Nothing to multiply, but the column sums of b are still owed: with M == 0 they are
        // the bias gradient of a layer without inputs (dW is (0, N), db is not empty).
        sum_b_columns(p);
        if (M <= 0) return;
        if (!accumulate) std::memset(c, 0, sizeof(T) * static_cast<size_t>(M * N));
        finish_block(p, 0, 0, M, N);
        return;
    }
    const KernelSet<T>& kernels = active_kernels<T>();
    const int threads = threads_for(static_cast<double>(M) * N * K);
    switch (choose_path(M, N, K, transpose_a, transpose_b)) {
        case GemmPath::row: return row_gemm(kernels, p, threads);
        case GemmPath::dot: return dot_gemm(kernels, p, threads);
        case GemmPath::packed: return packed_gemm(kernels, p, threads);
    }
}

template <typename T>
void gemm(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool transpose_a,
          bool transpose_b, bool accumulate) {
    gemm_fused(c, a, b, M, N, K, transpose_a, transpose_b, accumulate, GemmEpilogue<T>{});
}

template void gemm<float>(float*, const float*, const float*, int64_t, int64_t, int64_t, bool,
                          bool, bool);
template void gemm<double>(double*, const double*, const double*, int64_t, int64_t, int64_t,
                           bool, bool, bool);
template void gemm_fused<float>(float*, const float*, const float*, int64_t, int64_t, int64_t,
                                bool, bool, bool, const GemmEpilogue<float>&);
template void gemm_fused<double>(double*, const double*, const double*, int64_t, int64_t,
                                 int64_t, bool, bool, bool, const GemmEpilogue<double>&);

}  // namespace fastmlp
