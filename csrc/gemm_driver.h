// The loops around the GEMM kernels -- packing, cache blocking, the split among threads --
// written once and compiled by each instruction set's translation unit around its own
// kernels, so that packing is vectorised with that ISA too. Every path sums in the
// canonical order of gemm_internal.h.
//
// A kernel set `Kernels` provides, for one T:
//   MR, NR, MC, NC      register tile and cache blocks of the packed path (MC % MR == 0)
//   kPacksBfloat16Pairs whether its packed path takes bfloat16 operands (Operands::
//                       bfloat16_pairs) packed by pack_a_pairs / pack_b_pairs, the pack_*
//                       slivers' contracts with each k pair of a sliver as one 32-bit word
//                       per row (column) holding two bfloat16, the even k in the low half,
//                       and micro_tile reading such panels, panel_depth(kc) (the floats
//                       per line a panel of kc k takes, passed to micro_tile as its kc) and
//                       enter_thread before each thread's share of a packed product (AMX's
//                       tile configuration); the other kernels take float
//                       operands already rounded (gemm.cpp)
//   (kPacksRowsOfA: pack_a_rows, and pack_a_rows_in_pair_order for a bfloat16 product's
//                       float panels, full MR-row slivers of a non-transposed A)
//   (kPacksColumnsOfB: pack_b_columns, full NR-column slivers of a transposed float B)
//   SKINNY_ROWS         rows of c per skinny tile
//   micro_tile(kc, a_panel, b_panel, c, ldc, load_c)
//       c[MR, NR] = (load_c ? c : 0) + sum over k < kc of a_panel[k, :]^T b_panel[k, :]
//       a_panel is (kc, MR) packed; b_panel is (kc, NR) packed, 64-byte aligned;
//       c is (MR, NR) with row stride ldc
//   skinny_tile(kc, a, a_row_stride, a_k_stride, b_packed, c, ldc, rows, cols, load_c)
//       c[i, j] = (load_c ? c : 0) + sum over k < kc of a[i * a_row_stride + k * a_k_stride]
//                 * b_packed[k * kSkinnyColumns + j], for i < rows <= SKINNY_ROWS, j < cols
//       b_packed is (kc, kSkinnyColumns), zero past cols; c is (rows, cols), row stride ldc
//   row_block(kc, a, b, ldb, c, cols, load_c)
//       c[j] = (load_c ? c[j] : 0) + sum over k < kc of a[k] * b[k * ldb + j], j < cols
//       a is (kc); b is (kc, cols) with row stride ldb; c is (cols)
// Out of scratch memory, a path throws std::bad_alloc once its threads have joined (the
// binding turns it into MemoryError).
// Include this header from one TU per ISA, inside an anonymous namespace's reach (its
// templates are TU-local through the kernel types they are instantiated with).
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <type_traits>

#include "activation_math.h"
#include "gemm_internal.h"

namespace fastmlp {
namespace gemm_detail {
namespace {

// ---------------------------------------------------------------------------------------
// The epilogue, applied to a finished block of c (a tile just stored, still in L1), and the
// column sums of b. Element-wise IEEE operations (activation_math.h) and one sum per column
// in k order: every instruction set's copy gives the same bits.
// ---------------------------------------------------------------------------------------

// Rows [i, i + rows) x columns [j, j + cols) of c get the epilogue.
template <typename T>
void finish_block(const Operands<T>& p, int64_t i, int64_t j, int64_t rows, int64_t cols) {
    const GemmEpilogue<T>& e = p.epilogue;
    if (e.kind == GemmEpilogueKind::update) {
        bool found = false;
        if (cols == p.N) {  // whole rows: one run
            found = e.update->run(i * p.N, p.c + i * p.N, rows * p.N);
        } else {
            for (int64_t r = i; r < i + rows; ++r) found |= e.update->run(r * p.N + j, p.c + r * p.N + j, cols);
        }
        if (found) e.found_state_outside_plain_range->store(true, std::memory_order_relaxed);
        return;
    }
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

// epilogue.b_column_sums (if asked): sums over k of op(b)[k, j], in k order. For the paths
// that never read b in k order (the packed path sums while packing, in the same order).
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
// k-major (kc, MR); a B panel columns [j0, j0 + nc) x k [k0, k0 + kc) becomes NR-column
// slivers (kc, NR). Rows/columns past the matrix are zero, so the micro-kernel never sees
// an edge. The transposes are absorbed here: only the read pattern changes.
// ---------------------------------------------------------------------------------------

// The floats per line a panel of a K block of kc k takes: kc (a bfloat16 product's float
// panels: rounded up to a whole pair); kernels that pack pairs say theirs.
template <typename T, typename Kernels>
int64_t panel_depth(const Operands<T>& p, int64_t kc) {
    if constexpr (Kernels::kPacksBfloat16Pairs) return Kernels::panel_depth(kc);
    return p.bfloat16_pairs ? kc + (kc & 1) : kc;
}

// Float panels of a bfloat16 product, from an operand not in pairs: element (x, k) of the
// sliver is element(x, k0 + (k ^ 1)) rounded to bfloat16 (the odd k of each pair first),
// zero for x >= lines or k0 + (k ^ 1) past the block's kc.  dst is (kc + kc % 2, width).
// k_contiguous: the operand's k are adjacent in memory, so each line is read in k order.
template <typename T, typename Element>
void pack_rounded_in_pair_order(T* dst, int64_t width, int64_t lines, int64_t k0, int64_t kc,
                                bool k_contiguous, Element element) {
    if constexpr (std::is_same_v<T, float>) {
        const int64_t depth = kc + (kc & 1);
        if (k_contiguous) {
            for (int64_t x = 0; x < width; ++x)
                for (int64_t k = 0; k < depth; ++k) {
                    const int64_t source = k ^ 1;
                    dst[k * width + x] = x < lines && source < kc ? round_to_bfloat16(element(x, k0 + source)) : T(0);
                }
            return;
        }
        for (int64_t k = 0; k < depth; ++k) {  // plain loops over x, which vectorise
            const int64_t source = k ^ 1;
            T* out = dst + k * width;
            const int64_t valid = source < kc ? lines : 0;
            for (int64_t x = 0; x < valid; ++x) out[x] = round_to_bfloat16(element(x, k0 + source));
            for (int64_t x = valid; x < width; ++x) out[x] = T(0);
        }
    }
}

template <typename T, typename Kernels>
void pack_a_sliver(T* dst, const Operands<T>& p, int64_t i0, int64_t k0, int64_t kc) {
    constexpr int64_t MR = Kernels::MR;
    const int64_t rows = std::min(MR, p.M - i0);
    if constexpr (Kernels::kPacksBfloat16Pairs) return Kernels::pack_a_pairs(dst, p, i0, k0, kc);
    if (p.bfloat16_pairs && !p.a_in_pairs) {
        if constexpr (std::is_same_v<T, float> && Kernels::kPacksRowsOfA) {
            if (!p.transpose_a && rows == MR)
                return Kernels::pack_a_rows_in_pair_order(dst, p.a + i0 * p.K + k0, p.K, kc);
        }
        if (p.transpose_a)
            return pack_rounded_in_pair_order(dst, MR, rows, k0, kc, false,
                                              [&](int64_t i, int64_t k) { return p.a[k * p.M + i0 + i]; });
        return pack_rounded_in_pair_order(dst, MR, rows, k0, kc, true,
                                          [&](int64_t i, int64_t k) { return p.a[(i0 + i) * p.K + k]; });
    }
    if constexpr (Kernels::kPacksRowsOfA) {
        if (!p.transpose_a && rows == MR) return Kernels::pack_a_rows(dst, p.a + i0 * p.K + k0, p.K, kc);
    }
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
// first K block starts them at zero): the same order as sum_b_columns.
template <typename T, typename Kernels>
void pack_b_sliver(T* dst, const Operands<T>& p, int64_t j0, int64_t k0, int64_t kc, T* sums) {
    constexpr int64_t NR = Kernels::NR;
    if constexpr (Kernels::kPacksBfloat16Pairs) return Kernels::pack_b_pairs(dst, p, j0, k0, kc);
    const int64_t cols = std::min(NR, p.N - j0);
    if (p.bfloat16_pairs && !p.b_in_pairs) {
        if (p.transpose_b)
            return pack_rounded_in_pair_order(dst, NR, cols, k0, kc, true,
                                              [&](int64_t j, int64_t k) { return p.b[(j0 + j) * p.K + k]; });
        return pack_rounded_in_pair_order(dst, NR, cols, k0, kc, false,
                                          [&](int64_t j, int64_t k) { return p.b[k * p.N + j0 + j]; });
    }
    kc = panel_depth<T, Kernels>(p, kc);  // b in pairs: its rows hold the pair order already
    if (sums && k0 == 0) std::fill(sums, sums + cols, T(0));
    if constexpr (Kernels::kPacksColumnsOfB) {
        if (p.transpose_b && cols == NR && !sums && !p.bfloat16_pairs)
            return Kernels::pack_b_columns(dst, p.b + j0 * p.K + k0, p.K, kc);
    }
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

// Slivers [slivers.begin, slivers.end) of the B panel of columns from j0 and k [k0, k0 + kc),
// sliver s at panel + s * sliver_stride, as pack_b_sliver makes them (sums too). A plain float
// b (K, N) is read row by row, each row's part once and in order: sliver by sliver, a 16-column
// sliver reads one cache line per k, N floats apart -- with N = 1024 the same L1 set and a new
// page each time, which the prefetchers do not follow (packing the forward's weights and dz,
// b of the weight gradients, was ~10% of a float32 784-1024-1024-10 epoch on Zen 4, nearly all
// of it waiting for those lines). Each column's sum still runs in k order.
template <typename T, typename Kernels>
void pack_b_slivers(T* panel, int64_t sliver_stride, const Operands<T>& p, int64_t j0, Range slivers, int64_t k0,
                    int64_t kc, T* sums) {
    constexpr int64_t NR = Kernels::NR;
    if (Kernels::kPacksBfloat16Pairs || p.bfloat16_pairs || p.transpose_b) {
        for (int64_t s = slivers.begin; s < slivers.end; ++s) {
            const int64_t j = j0 + s * NR;
            pack_b_sliver<T, Kernels>(panel + s * sliver_stride, p, j, k0, kc, sums ? sums + j : nullptr);
        }
        return;
    }
    const int64_t j_begin = j0 + slivers.begin * NR, j_end = std::min(p.N, j0 + slivers.end * NR);
    if (sums && k0 == 0 && j_begin < j_end) std::fill(sums + j_begin, sums + j_end, T(0));
    for (int64_t k = 0; k < kc; ++k) {
        const T* row = p.b + (k0 + k) * p.N;
        for (int64_t s = slivers.begin; s < slivers.end; ++s) {
            const int64_t j = j0 + s * NR, cols = std::min(NR, p.N - j);
            T* out = panel + s * sliver_stride + k * NR;
            if (cols == NR) {  // a constant size: moved inline, where std::copy called memmove
                std::memcpy(out, row + j, sizeof(T) * NR);
                continue;
            }
            std::copy(row + j, row + j + cols, out);
            std::fill(out + cols, out + NR, T(0));
        }
        if (sums)
            for (int64_t j = j_begin; j < j_end; ++j) sums[j] += row[j];
    }
}

// ---------------------------------------------------------------------------------------
// b packed whole, once for many products (a model's weights for its predictions; kernels
// that pack bfloat16 pairs): K block after K block, each the panel_depth(kc) x NR slivers of
// every NR columns (zero past N), as pack_b_sliver makes them.
// ---------------------------------------------------------------------------------------

template <typename T, typename Kernels>
int64_t packed_b_columns(const Operands<T>& p) {
    return ceil_div(p.N, Kernels::NR) * Kernels::NR;
}

// Floats the whole packed b takes (every block but the last is kb.size deep).
template <typename T, typename Kernels>
int64_t packed_b_size(const Operands<T>& p) {
    const KBlocking kb = p.blocking();
    const int64_t last = p.K - (kb.count - 1) * kb.size;
    return ((kb.count - 1) * panel_depth<T, Kernels>(p, kb.size) + panel_depth<T, Kernels>(p, last)) *
           packed_b_columns<T, Kernels>(p);
}

// Block `block`'s slivers in a whole packed b: sliver s starts s * NR * panel_depth(kc) later.
template <typename T, typename Kernels>
const T* packed_b_block(const Operands<T>& p, int64_t block) {
    return p.packed_b + block * panel_depth<T, Kernels>(p, p.blocking().size) * packed_b_columns<T, Kernels>(p);
}

// out (packed_b_size floats, 64-byte aligned) = p's b packed whole.
template <typename T, typename Kernels>
void pack_whole_b(T* out, const Operands<T>& p) {
    constexpr int64_t NR = Kernels::NR;
    const KBlocking kb = p.blocking();
    const int64_t block_size = panel_depth<T, Kernels>(p, kb.size) * packed_b_columns<T, Kernels>(p);
    for (int64_t block = 0; block < kb.count; ++block) {
        const int64_t k0 = block * kb.size, kc = std::min(kb.size, p.K - k0);
        const int64_t depth = panel_depth<T, Kernels>(p, kc);
        for (int64_t j = 0; j < p.N; j += NR)
            pack_b_sliver<T, Kernels>(out + block * block_size + j * depth, p, j, k0, kc, nullptr);
    }
}

// ---------------------------------------------------------------------------------------
// The packed path ("five loops around the micro-kernel").
// ---------------------------------------------------------------------------------------

// How a team divides the c tiles of one B panel: a grid of row_parts x col_parts threads.
// Split by columns, each thread packs the B slivers it multiplies and nobody else reads them,
// so the team never waits at a barrier; but every thread packs all of A. Split by rows, each
// thread packs only its rows of A, while B is packed by all and shared, which costs a barrier
// per K block and reading the other cores' part of the panel. Rows, then, when the product
// is taller than wide (A is the larger operand) and has enough MR-row tiles for every thread.
// Rows too for an optimizer update whenever there are enough: each thread's blocks are then
// whole rows of c (N <= NC), which the update reads as one contiguous run of parameters and
// states; column shares made it restart every row (half-rows of 784-1024-1024-10's W at
// 2 threads: its bfloat16 step 4.9 -> 6.0-6.4 ms).
struct TeamGrid {
    int row_parts, col_parts;
};
inline TeamGrid team_grid(int64_t M, int64_t N, int64_t row_tiles, int threads, bool update) {
    if ((M > N || update) && row_tiles >= 2 * threads) return {threads, 1};
    return {1, threads};
}

// Writes an MR x NR tile computed into `tile` (row stride NR) to the valid part of c.
template <typename T, int64_t NR>
void store_edge_tile(T* c, int64_t ldc, const T* tile, int64_t rows, int64_t cols, bool load_c) {
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
            c[i * ldc + j] = load_c ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
}

// One MR x NR tile of c: rows [i, i + MR) x columns [j, j + NR), clipped to c.
template <typename T, typename Kernels>
void compute_tile(const Operands<T>& p, const T* a_sliver, const T* b_sliver, int64_t i, int64_t j, int64_t kc,
                  bool load_c) {
    constexpr int64_t MR = Kernels::MR, NR = Kernels::NR;
    const int64_t rows = std::min(MR, p.M - i), cols = std::min(NR, p.N - j);
    T* c_tile = p.c + i * p.N + j;
    if (rows == MR && cols == NR) return Kernels::micro_tile(kc, a_sliver, b_sliver, c_tile, p.N, load_c);
    alignas(64) T edge_tile[MR * NR];
    Kernels::micro_tile(kc, a_sliver, b_sliver, edge_tile, NR, false);
    store_edge_tile<T, NR>(c_tile, p.N, edge_tile, rows, cols, load_c);
}

// The two innermost loops: NR-column slivers [s0, s1) of the packed B panel against every
// MR-row sliver of the packed A block. The epilogue runs on each tile while it is in L1; an
// optimizer update instead on each MR-row strip across the slivers once it is finished (rows
// outer, so the strip is still in L1-L2), as one run of its loop -- over whole rows of
// parameters and states when the slivers span c.
template <typename T, typename Kernels>
void macro_kernel(const Operands<T>& p, const T* a_block, const T* b_panel, int64_t sliver_stride,
                  int64_t i0, int64_t mc, int64_t j0, int64_t s0, int64_t s1, int64_t kc, bool load_c,
                  bool last_k_block) {
    constexpr int64_t MR = Kernels::MR, NR = Kernels::NR;
    const bool finish = last_k_block && p.epilogue.kind != GemmEpilogueKind::none;
    if (finish && p.epilogue.kind == GemmEpilogueKind::update) {
        const int64_t j_begin = j0 + s0 * NR, cols = std::min((s1 - s0) * NR, p.N - j_begin);
        for (int64_t r = 0; r * MR < mc && cols > 0; ++r) {
            const int64_t i = i0 + r * MR;
            for (int64_t s = s0; s < s1; ++s)
                compute_tile<T, Kernels>(p, a_block + r * MR * kc, b_panel + s * sliver_stride, i, j0 + s * NR, kc,
                                         load_c);
            finish_block(p, i, j_begin, std::min(MR, p.M - i), cols);
        }
        return;
    }
    for (int64_t s = s0; s < s1; ++s) {
        const int64_t j = j0 + s * NR;
        for (int64_t r = 0; r * MR < mc; ++r) {
            const int64_t i = i0 + r * MR;
            compute_tile<T, Kernels>(p, a_block + r * MR * kc, b_panel + s * sliver_stride, i, j, kc, load_c);
            if (finish) finish_block(p, i, j, std::min(MR, p.M - i), std::min(NR, p.N - j));
        }
    }
}

// One thread's share of the five loops. Every thread of the team runs this; the B panel is
// packed by all of them together. Split by rows, every thread reads all of it: two panel
// buffers alternate, so one barrier per K block suffices (a thread can only be packing panel
// n + 2, into the buffer of panel n, once every thread has reached the barrier after packing
// panel n + 1, that is, has finished computing with panel n). Split by columns, each thread
// reads only the slivers it packed itself: no barrier.
template <typename T, typename Kernels>
void packed_gemm_member(const Operands<T>& p, T* const b_panels[2], int thread, int threads,
                        std::atomic<bool>& out_of_memory) {
    constexpr int64_t MR = Kernels::MR, NR = Kernels::NR, MC = Kernels::MC, NC = Kernels::NC;
    const KBlocking kb = p.blocking();
    const int64_t row_tiles = ceil_div(p.M, MR);
    const TeamGrid grid = team_grid(p.M, p.N, row_tiles, threads, p.epilogue.kind == GemmEpilogueKind::update);
    const int row_part = thread % grid.row_parts, col_part = thread / grid.row_parts;
    const Range my_row_tiles = split(row_tiles, row_part, grid.row_parts);
    const int64_t my_i0 = my_row_tiles.begin * MR, my_i1 = std::min(p.M, my_row_tiles.end * MR);
    const int64_t max_depth = panel_depth<T, Kernels>(p, kb.size);
    T* a_block = packed_a_scratch<T>(std::min(MC, row_tiles * MR) * max_depth);
    // Without its A block a thread still packs its share of B and meets every barrier (the
    // team would wait for it forever otherwise); it only skips its multiplications.
    if (!a_block) out_of_memory.store(true, std::memory_order_relaxed);
    T* sums = p.epilogue.b_column_sums;
    int64_t panels_packed = 0;

    // A sliver keeps its place in the panel buffers for every K block (the last block may be
    // shorter), so under a column split a thread only ever writes where it alone reads.
    const int64_t sliver_stride = NR * max_depth;
    if constexpr (Kernels::kPacksBfloat16Pairs) Kernels::enter_thread();
    for (int64_t j0 = 0; j0 < p.N; j0 += NC) {
        const int64_t nc = std::min(NC, p.N - j0), slivers = ceil_div(nc, NR);
        // A new panel (N > NC) shares the slivers out afresh: under a column split, wait until
        // every thread is done with the buffers' old contents before packing over them.
        if (j0 > 0 && threads > 1 && grid.row_parts == 1 && !p.packed_b) {
#pragma omp barrier
        }
        // A column split packs exactly the slivers it multiplies (col_part == thread).
        const Range my_pack = split(slivers, thread, threads);
        const Range my_slivers = split(slivers, col_part, grid.col_parts);
        const bool shares_panel = grid.row_parts > 1;
        for (int64_t block = 0; block < kb.count; ++block) {
            const int64_t k0 = block * kb.size, kc = std::min(kb.size, p.K - k0);
            const int64_t depth = panel_depth<T, Kernels>(p, kc);
            const bool load_c = p.accumulate || block > 0;
            const T* b_panel;
            int64_t stride = sliver_stride;
            if (p.packed_b) {  // packed already: nothing to write, nothing to wait for
                stride = NR * depth;
                b_panel = packed_b_block<T, Kernels>(p, block) + j0 * depth;
            } else {
                T* panel = b_panels[panels_packed++ % 2];
                pack_b_slivers<T, Kernels>(panel, sliver_stride, p, j0, my_pack, k0, kc, sums);
                if (shares_panel) {
#pragma omp barrier
                }
                b_panel = panel;
            }
            for (int64_t i0 = my_i0; a_block && i0 < my_i1; i0 += MC) {
                const int64_t mc = std::min(MC, my_i1 - i0);
                for (int64_t r = 0; r * MR < mc; ++r)
                    pack_a_sliver<T, Kernels>(a_block + r * MR * depth, p, i0 + r * MR, k0, kc);
                macro_kernel<T, Kernels>(p, a_block, b_panel, stride, i0, mc, j0, my_slivers.begin,
                                         my_slivers.end, depth, load_c, block == kb.count - 1);
            }
        }
    }
}

template <typename T, typename Kernels>
void packed_gemm(const Operands<T>& p, int threads) {
    constexpr int64_t NR = Kernels::NR, NC = Kernels::NC;
    const KBlocking kb = p.blocking();
    const int64_t panel_size = panel_depth<T, Kernels>(p, kb.size) * ceil_div(std::min(NC, p.N), NR) * NR;
    // Panels start on 64-byte boundaries (the micro-kernel's aligned loads of B).
    const int64_t stride = (panel_size * static_cast<int64_t>(sizeof(T)) + 63) / 64 * 64 /
                           static_cast<int64_t>(sizeof(T));
    T* buffer = p.packed_b ? nullptr : shared_b_scratch<T>(2 * stride);
    if (!buffer && !p.packed_b) throw std::bad_alloc();
    T* const b_panels[2] = {buffer, buffer ? buffer + stride : nullptr};
    std::atomic<bool> out_of_memory{false};
    if (threads <= 1) {
        packed_gemm_member<T, Kernels>(p, b_panels, 0, 1, out_of_memory);
    } else {
#pragma omp parallel num_threads(threads)
        packed_gemm_member<T, Kernels>(p, b_panels, omp_get_thread_num(), omp_get_num_threads(),
                                       out_of_memory);
    }
    if (out_of_memory.load()) throw std::bad_alloc();
}

// ---------------------------------------------------------------------------------------
// The skinny path (N <= kSkinnyColumns: the output layer, a one-output regressor): op(b) is
// small and packed once; A, which packing would copy for little arithmetic, is read in place.
// ---------------------------------------------------------------------------------------

template <typename T, typename Kernels>
void skinny_gemm(const Operands<T>& p, int threads) {
    constexpr int64_t SC = kSkinnyColumns, SR = Kernels::SKINNY_ROWS;
    sum_b_columns(p);
    T* b_packed = shared_b_scratch<T>(p.K * SC);
    if (!b_packed) throw std::bad_alloc();
    for (int64_t k = 0; k < p.K; ++k) {
        T* out = b_packed + k * SC;
        for (int64_t j = 0; j < p.N; ++j) out[j] = p.transpose_b ? p.b[j * p.K + k] : p.b[k * p.N + j];
        for (int64_t j = p.N; j < SC; ++j) out[j] = 0;
    }
    const int64_t a_row_stride = p.transpose_a ? 1 : p.K, a_k_stride = p.transpose_a ? p.M : 1;
    const KBlocking kb = p.blocking();
    const int64_t tiles = ceil_div(p.M, SR);
    auto run = [&](int thread, int team) {
        const Range mine = split(tiles, thread, team);
        for (int64_t t = mine.begin; t < mine.end; ++t) {
            const int64_t i0 = t * SR, rows = std::min(SR, p.M - i0);
            T* c_tile = p.c + i0 * p.N;
            for (int64_t block = 0; block < kb.count; ++block) {
                const int64_t k0 = block * kb.size, kc = std::min(kb.size, p.K - k0);
                Kernels::skinny_tile(kc, p.a + i0 * a_row_stride + k0 * a_k_stride, a_row_stride,
                                     a_k_stride, b_packed + k0 * SC, c_tile, p.N, rows, p.N,
                                     p.accumulate || block > 0);
            }
            finish_block(p, i0, 0, rows, p.N);
        }
    };
    threads = static_cast<int>(std::min<int64_t>(threads, tiles));
    if (threads <= 1) return run(0, 1);
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
}

// ---------------------------------------------------------------------------------------
// The row path (M == 1, b not transposed: one-sample inference): streams b once, in place.
// ---------------------------------------------------------------------------------------

template <typename T, typename Kernels>
void row_gemm(const Operands<T>& p, int threads) {
    sum_b_columns(p);
    // Column shares in multiples of 64 so every thread's register chunks stay whole.
    constexpr int64_t QUANTUM = 64;
    const int64_t quanta = ceil_div(p.N, QUANTUM);
    const KBlocking kb = p.blocking();
    auto run = [&](int thread, int team) {
        const Range share = split(quanta, thread, team);
        const int64_t j0 = share.begin * QUANTUM, j1 = std::min(p.N, share.end * QUANTUM);
        if (j1 <= j0) return;
        for (int64_t block = 0; block < kb.count; ++block) {
            const int64_t k0 = block * kb.size, kc = std::min(kb.size, p.K - k0);
            Kernels::row_block(kc, p.a + k0, p.b + k0 * p.N + j0, p.N, p.c + j0, j1 - j0,
                               p.accumulate || block > 0);
        }
        finish_block(p, 0, j0, 1, j1 - j0);
    };
    threads = static_cast<int>(std::min<int64_t>(threads, quanta));
    if (threads <= 1) return run(0, 1);
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
}

// The kernels that pack bfloat16 pairs at any M: up to few_rows rows of c go to their
// few_rows_gemm(p, threads) -- which multiplies b packed whole, packed first unless p has it --,
// more to the packed path.
template <typename T, typename Kernels, typename FewRows>
void packed_or_few_rows_gemm(const Operands<T>& p, int threads, int64_t few_rows, FewRows few_rows_gemm) {
    if (p.M > few_rows) return packed_gemm<T, Kernels>(p, threads);
    if (p.packed_b) return few_rows_gemm(p, threads);
    T* packed = shared_b_scratch<T>(packed_b_size<T, Kernels>(p));
    if (!packed) throw std::bad_alloc();
    pack_whole_b<T, Kernels>(packed, p);
    Operands<T> with_b = p;
    with_b.packed_b = packed;
    few_rows_gemm(with_b, threads);
}

template <typename T, typename Kernels>
const GemmPaths<T>& paths_around() {
    static const GemmPaths<T> paths{&packed_gemm<T, Kernels>, &skinny_gemm<T, Kernels>, &row_gemm<T, Kernels>,
                                    &packed_b_size<T, Kernels>, &pack_whole_b<T, Kernels>};
    return paths;
}

}  // namespace
}  // namespace gemm_detail
}  // namespace fastmlp
