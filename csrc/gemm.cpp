// GEMM behind one interface (kernels.h: gemm): picks the instruction set once (the widest the
// CPU has, or FASTMLP_ISA) and the path from the shape (packed, skinny, row; gemm_driver.h),
// and holds what every instruction set shares: the epilogue, the column sums of b, the
// scratch memory, and the portable kernels that stand in on CPUs without AVX2/FMA.
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>

#include "activation_math.h"
#include "gemm_driver.h"
#include "gemm_internal.h"
#include "kernels.h"

namespace fastmlp {

using gemm_detail::Isa;
using gemm_detail::Operands;

namespace gemm_detail {

// ---------------------------------------------------------------------------------------
// Portable kernels: the contracts of gemm_driver.h in plain C++, in the canonical order with
// a separate multiply and add (this file is compiled with -ffp-contract=off).
// ---------------------------------------------------------------------------------------

namespace {

template <typename T>
struct PortableKernels {
    static constexpr int64_t MR = 6, NR = 16, MC = 144, NC = 2048, SKINNY_ROWS = 4;
    static constexpr bool kPacksRowsOfA = false;  // gemm_driver.h's element loop packs A
    static constexpr bool kPacksColumnsOfB = false;
    static void pack_a_rows(T*, const T*, int64_t, int64_t) {}
    static constexpr bool kPacksBfloat16Pairs = false;

    static void micro_tile(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t ldc,
                           bool load_c) {
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

    static void skinny_tile(int64_t kc, const T* a, int64_t a_row_stride, int64_t a_k_stride,
                            const T* b_packed, T* c, int64_t ldc, int64_t rows, int64_t cols,
                            bool load_c) {
        for (int64_t i = 0; i < rows; ++i) {
            T acc[kSkinnyColumns] = {};
            for (int64_t k = 0; k < kc; ++k) {
                const T a_ik = a[i * a_row_stride + k * a_k_stride];
                for (int64_t j = 0; j < kSkinnyColumns; ++j) acc[j] += a_ik * b_packed[k * kSkinnyColumns + j];
            }
            for (int64_t j = 0; j < cols; ++j) c[i * ldc + j] = load_c ? c[i * ldc + j] + acc[j] : acc[j];
        }
    }

    static void row_block(int64_t kc, const T* a, const T* b, int64_t ldb, T* c, int64_t cols,
                          bool load_c) {
        // Column chunks small enough that the partial sums stay in L1 while b streams by.
        constexpr int64_t CHUNK = 256;
        T acc[CHUNK];
        for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {
            const int64_t n = std::min(CHUNK, cols - j0);
            std::fill(acc, acc + n, T(0));
            for (int64_t k = 0; k < kc; ++k) {
                const T a_k = a[k];
                const T* b_row = b + k * ldb + j0;
                for (int64_t j = 0; j < n; ++j) acc[j] += a_k * b_row[j];
            }
            for (int64_t j = 0; j < n; ++j) c[j0 + j] = load_c ? c[j0 + j] + acc[j] : acc[j];
        }
    }
};

}  // namespace

const GemmPaths<float>& portable_paths_float() { return paths_around<float, PortableKernels<float>>(); }
const GemmPaths<double>& portable_paths_double() { return paths_around<double, PortableKernels<double>>(); }

namespace {

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

}  // namespace

template <typename T>
T* packed_a_scratch(int64_t count) {
    return t_packed_a.get<T>(count);
}
template <typename T>
T* shared_b_scratch(int64_t count) {
    return t_shared_b.get<T>(count);
}
template float* packed_a_scratch<float>(int64_t);
template double* packed_a_scratch<double>(int64_t);
template float* shared_b_scratch<float>(int64_t);
template double* shared_b_scratch<double>(int64_t);


}  // namespace gemm_detail

// ---------------------------------------------------------------------------------------
// Instruction set: the widest the CPU has, unless set_isa / FASTMLP_ISA chose another.
// ---------------------------------------------------------------------------------------

bool gemm_detail::cpu_is_intel() {
#if FASTMLP_X86_KERNELS
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid(0, &eax, &ebx, &ecx, &edx)) {
        char vendor[12];  // EBX, EDX, ECX spell it
        std::memcpy(vendor, &ebx, 4);
        std::memcpy(vendor + 4, &edx, 4);
        std::memcpy(vendor + 8, &ecx, 4);
        return std::memcmp(vendor, "GenuineIntel", 12) == 0;
    }
#endif
    return false;
}

namespace {

constexpr const char* kIsaNames[] = {"portable", "avx2", "avx512", "avx512_bf16", "amx_bf16"};
constexpr int kIsaCount = 5;

// AMX-TILE and AMX-BF16 (CPUID leaf 7: EDX bits 24 and 22), and the kernel's leave to use the
// tiles: Linux (>= 5.16) hands out the 8 KiB of tile state per process on request
// (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), asked once here; refused (an older
// kernel, another OS), the bfloat16 GEMM keeps VDPBF16PS or the emulation.
#if FASTMLP_X86_KERNELS
bool amx_bf16_allowed() {
    static const bool allowed = [] {
        unsigned eax, ebx, ecx, edx;
        if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
        if (!(edx & (1u << 24)) || !(edx & (1u << 22))) return false;
#if defined(__linux__) && defined(SYS_arch_prctl)
        constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
        return false;
#endif
    }();
    return allowed;
}
#endif

bool cpu_has(Isa isa) {
#if !FASTMLP_X86_KERNELS
    return isa == Isa::portable;
#else
    __builtin_cpu_init();
    switch (isa) {
        case Isa::portable: return true;
        case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case Isa::avx512:
            return cpu_has(Isa::avx2) && __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512dq");
        case Isa::avx512_bf16: return cpu_has(Isa::avx512) && __builtin_cpu_supports("avx512bf16");
        case Isa::amx_bf16: return cpu_has(Isa::avx512_bf16) && amx_bf16_allowed();
    }
    return false;
#endif
}

Isa widest_isa() {
    if (cpu_has(Isa::amx_bf16)) return Isa::amx_bf16;
    if (cpu_has(Isa::avx512_bf16)) return Isa::avx512_bf16;
    if (cpu_has(Isa::avx512)) return Isa::avx512;
    return cpu_has(Isa::avx2) ? Isa::avx2 : Isa::portable;
}

const Isa g_widest_isa = widest_isa();
std::atomic<int> g_isa{static_cast<int>(g_widest_isa)};

// The AVX-512 float tile: wide on Intel, square elsewhere (gemm_internal.h), unless forced.
using gemm_detail::Avx512Tile;
constexpr const char* kTileNames[] = {"16x16", "8x32"};

Avx512Tile cpu_avx512_tile() { return gemm_detail::cpu_is_intel() ? Avx512Tile::wide : Avx512Tile::square; }

gemm_detail::NamedChoice<2> g_tile{kTileNames, static_cast<int>(cpu_avx512_tile())};

template <typename T>
const gemm_detail::GemmPaths<T>& active_paths();
template <>
const gemm_detail::GemmPaths<float>& active_paths<float>() {
    switch (gemm_detail::active_float_isa()) {
#if FASTMLP_X86_KERNELS
        case Isa::avx512:
            return gemm_detail::avx512_paths_float(static_cast<Avx512Tile>(g_tile.get()));
        case Isa::avx2: return gemm_detail::avx2_paths_float();
#endif
        default: return gemm_detail::portable_paths_float();
    }
}
template <>
const gemm_detail::GemmPaths<double>& active_paths<double>() {
    switch (gemm_detail::active_float_isa()) {
#if FASTMLP_X86_KERNELS
        case Isa::avx512:
            return gemm_detail::avx512_paths_double(static_cast<Avx512Tile>(g_tile.get()));
        case Isa::avx2: return gemm_detail::avx2_paths_double();
#endif
        default: return gemm_detail::portable_paths_double();
    }
}

enum class GemmPath { packed, skinny, row };

// Chosen from the shape alone. Every path sums in the canonical order, so the choice changes
// the speed only, never the bits.
GemmPath choose_path(int64_t M, int64_t N, bool transpose_b) {
    if (M == 1 && !transpose_b) return GemmPath::row;
    if (N <= gemm_detail::kSkinnyColumns) return GemmPath::skinny;
    return GemmPath::packed;
}

// A product without multiplications (M or K zero) still owes the column sums of b -- with
// M == 0 they are the bias gradient of a layer without inputs (dW is (0, N), db is not
// empty) -- and, with K == 0, c = 0 (or c unchanged) and its epilogue. False otherwise.
template <typename T>
bool finished_without_products(const Operands<T>& p) {
    if (p.M > 0 && p.K > 0) return false;
    gemm_detail::sum_b_columns(p);
    if (p.M <= 0) return true;
    if (!p.accumulate) std::memset(p.c, 0, sizeof(T) * static_cast<size_t>(p.M * p.N));
    gemm_detail::finish_block(p, 0, 0, p.M, p.N);
    return true;
}

template <typename T>
void run_path(const gemm_detail::GemmPaths<T>& paths, const Operands<T>& p, int threads) {
    switch (choose_path(p.M, p.N, p.transpose_b)) {
        case GemmPath::row: return paths.row(p, threads);
        case GemmPath::skinny: return paths.skinny(p, threads);
        case GemmPath::packed: return paths.packed(p, threads);
    }
}

}  // namespace

Isa gemm_detail::active_isa() { return static_cast<Isa>(g_isa.load(std::memory_order_relaxed)); }

const char* gemm_kernel_name() { return kIsaNames[static_cast<int>(gemm_detail::active_isa())]; }

const char* widest_cpu_isa_name() { return kIsaNames[static_cast<int>(g_widest_isa)]; }

bool cpu_supports_isa(const std::string& name) {
    for (int i = 0; i < kIsaCount; ++i)
        if (name == kIsaNames[i]) return cpu_has(static_cast<Isa>(i));
    return false;
}

bool is_isa_name(const std::string& name) {
    return std::find(std::begin(kIsaNames), std::end(kIsaNames), name) != std::end(kIsaNames);
}

bool set_isa(const std::string& name) {
    if (name.empty() || name == "auto") {
        g_isa.store(static_cast<int>(g_widest_isa));
        return true;
    }
    for (int i = 0; i < kIsaCount; ++i)
        if (name == kIsaNames[i]) {
            if (!cpu_has(static_cast<Isa>(i))) return false;
            g_isa.store(i);
            return true;
        }
    return false;
}

void force_portable_gemm(bool force) { set_isa(force ? "portable" : ""); }

const char* avx512_tile_name() { return g_tile.name(); }

bool set_avx512_tile(const std::string& name) { return g_tile.set(name); }

template <typename T>
void gemm_fused(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool transpose_a,
                bool transpose_b, bool accumulate, const GemmEpilogue<T>& epilogue) {
    if (N <= 0) return;
    const Operands<T> p{c, a, b, M, N, K, transpose_a, transpose_b, accumulate, epilogue};
    if (finished_without_products(p)) return;
    run_path(active_paths<T>(), p, threads_for(static_cast<double>(M) * N * K));
}

const void* float32_packing() { return &active_paths<float>(); }

int64_t float32_packed_b_size(int64_t K, int64_t N) {
    static const GemmEpilogue<float> none;
    return active_paths<float>().packed_b_size(Operands<float>{nullptr, nullptr, nullptr, 0, N, K, false, false,
                                                               false, none});
}

void pack_float32_b(float* out, const float* b, int64_t K, int64_t N) {
    static const GemmEpilogue<float> none;
    active_paths<float>().pack_b(out, Operands<float>{nullptr, nullptr, b, 0, N, K, false, false, false, none});
}

void gemm_fused_packed_b(float* c, const float* a, const float* b, PackedFloat32B packed, int64_t M, int64_t N,
                         int64_t K, const GemmEpilogue<float>& epilogue) {
    const gemm_detail::GemmPaths<float>& paths = active_paths<float>();
    if (!packed.data || packed.kernels != &paths || N <= 0 || M <= 0 || K <= 0 ||
        choose_path(M, N, false) != GemmPath::packed)
        return gemm_fused(c, a, b, M, N, K, false, false, false, epilogue);
    Operands<float> p{c, a, b, M, N, K, false, false, false, epilogue};
    p.packed_b = packed.data;
    paths.packed(p, threads_for(static_cast<double>(M) * N * K));
}

template <typename T>
void gemm(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool transpose_a,
          bool transpose_b, bool accumulate) {
    gemm_fused(c, a, b, M, N, K, transpose_a, transpose_b, accumulate, GemmEpilogue<T>{});
}

// ---------------------------------------------------------------------------------------
// bfloat16 operands. Under avx512_bf16 (amx_bf16) every product wider than kSkinnyColumns
// converts while packing and multiplies with VDPBF16PS (AMX): gemm_avx512_bf16.cpp
// (gemm_amx_bf16.cpp), at any M. Every other case -- the skinny path, other CPUs -- is
// emulated: the float32 kernels multiply the operands rounded, with
// their k in the canonical pair order (odd k first, a zero k = K when K is odd) and the pair
// blocking; the packed path rounds while packing, the skinny and row paths get rounded
// copies. A product of two bfloat16 values is
// exact in float32, so each FMA (or the portable multiply then add) is the instruction's
// rounded add: the same bits, denormals apart (the instruction flushes them to zero).
// ---------------------------------------------------------------------------------------

namespace {

thread_local gemm_detail::ScratchBuffer t_rounded_a, t_rounded_b;

// The position in the pair order of k: the odd k of each pair comes first.
inline int64_t pair_order(int64_t k) { return k ^ 1; }

// out[k] = bfloat16 of x[swap_pairs ? pair_order(k) : k] for k < out_count, zero where that
// is count or more: AVX-512 16 lanes at a time where the float kernels are AVX-512's.
void round_line_to_bfloat16(float* out, const float* x, int64_t count, int64_t out_count, bool swap_pairs) {
#if FASTMLP_X86_KERNELS
    if (gemm_detail::active_float_isa() == Isa::avx512)
        return gemm_detail::avx512_round_line_to_bfloat16(out, x, count, out_count, swap_pairs);
#endif
    for (int64_t k = 0; k < out_count; ++k) {
        const int64_t source = swap_pairs ? pair_order(k) : k;
        out[k] = source < count ? gemm_detail::round_to_bfloat16(x[source]) : 0.0f;
    }
}

// op(a) rounded to bfloat16, its k in pair order, 0 past K: out is (M, K2) with out[i, k] =
// op(a)[i, pair_order(k)], or, for a transposed a, (K2, M) with out[k, i] = the same (the
// rows of a swapped in pairs: both copies are line by line). K2 = K rounded up to even.
void round_a_in_pair_order(float* out, const Operands<float>& p, int64_t K2, int threads) {
    auto round_line = [&](int64_t line) {
        if (!p.transpose_a) return round_line_to_bfloat16(out + line * K2, p.a + line * p.K, p.K, K2, true);
        const int64_t source = pair_order(line);
        if (source >= p.K) return std::fill(out + line * p.M, out + (line + 1) * p.M, 0.0f);
        round_line_to_bfloat16(out + line * p.M, p.a + source * p.M, p.M, p.M, false);
    };
    const int64_t lines = p.transpose_a ? K2 : p.M;
    if (threads <= 1) {  // no OpenMP region: for one row it would cost more than the rounding
        for (int64_t line = 0; line < lines; ++line) round_line(line);
        return;
    }
#pragma omp parallel for num_threads(threads)
    for (int64_t line = 0; line < lines; ++line) round_line(line);
}

// out[k, j] = bfloat16(op(b)[pair_order(k), j]), 0 past K.  out is (K2, N).
void round_b_in_pair_order(float* out, const Operands<float>& p, int64_t K2, int threads) {
#pragma omp parallel for num_threads(threads) if (threads > 1)
    for (int64_t k = 0; k < K2; ++k) {
        const int64_t source = pair_order(k);
        float* out_row = out + k * p.N;
        if (source >= p.K) {
            std::fill(out_row, out_row + p.N, 0.0f);
        } else if (p.transpose_b) {
            for (int64_t j = 0; j < p.N; ++j) out_row[j] = gemm_detail::round_to_bfloat16(p.b[j * p.K + source]);
        } else {
            round_line_to_bfloat16(out_row, p.b + source * p.N, p.N, p.N, false);
        }
    }
}

// p (b raw, or in pairs when b_in_pairs) through the float32 kernels: the packed path
// rounds while packing; the skinny and row paths, which read their operands in place, get
// rounded copies in pair order.
void emulated_gemm_bfloat16(const Operands<float>& p, bool b_in_pairs, int threads) {
    const Operands<float> packed{p.c, p.a, p.b, p.M, p.N, p.K, p.transpose_a, p.transpose_b, p.accumulate,
                                 p.epilogue, true, false, b_in_pairs};
    if (choose_path(p.M, p.N, p.transpose_b) == GemmPath::packed)
        return active_paths<float>().packed(packed, threads);
    const int64_t K2 = p.K + (p.K & 1);
    float* a = t_rounded_a.get<float>(p.M * K2);
    float* b = b_in_pairs ? nullptr : t_rounded_b.get<float>(K2 * p.N);
    if (!a || (!b_in_pairs && !b)) throw std::bad_alloc();
    round_a_in_pair_order(a, p, K2, threads_for(static_cast<double>(K2) * p.M));
    if (!b_in_pairs) round_b_in_pair_order(b, p, K2, threads_for(static_cast<double>(K2) * p.N));
    const Operands<float> rounded{p.c, a, b_in_pairs ? p.b : b, p.M, p.N, K2, p.transpose_a, false,
                                  p.accumulate, p.epilogue, true, true, true};
    run_path(active_paths<float>(), rounded, threads);
}

}  // namespace

bool native_bfloat16() {
    const Isa isa = gemm_detail::active_isa();
    return isa == Isa::avx512_bf16 || isa == Isa::amx_bf16;
}

const char* bfloat16_path() {
    switch (gemm_detail::active_isa()) {
        case Isa::amx_bf16: return "amx_bf16";
        case Isa::avx512_bf16: return "avx512_bf16";
        default: return "emulated";
    }
}

void gemm_bfloat16(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K,
                   bool transpose_a, bool transpose_b, bool accumulate,
                   const GemmEpilogue<float>& epilogue) {
    if (N <= 0) return;
    const Operands<float> p{c, a, b, M, N, K, transpose_a, transpose_b, accumulate, epilogue};
    if (finished_without_products(p)) return;
    // The column sums of b are of its float32 values, as gemm_fused's.
    gemm_detail::sum_b_columns(p);
    GemmEpilogue<float> rest = epilogue;
    rest.b_column_sums = nullptr;
    const Operands<float> q{c, a, b, M, N, K, transpose_a, transpose_b, accumulate, rest, true};
    const int threads = threads_for(static_cast<double>(M) * N * K);
#if FASTMLP_X86_KERNELS
    // AMX sums in its own order, so it takes every shape, at every M: a row of c then gets
    // the same bits in a batch of any size, one row included. Narrow ones too (an output
    // layer of 10): padded to its 32 columns it ran 128 x 256 x 10 in 5 us where the
    // emulation's skinny path, which spends a 16-lane FMA per row and k, took 21.
    if (gemm_detail::active_isa() == Isa::amx_bf16) return gemm_detail::amx_bf16_packed_gemm(q, threads);
    if (native_bfloat16() && N > gemm_detail::kSkinnyColumns)
        return gemm_detail::avx512_bf16_packed_gemm(q, threads);
#endif
    emulated_gemm_bfloat16(q, /*b_in_pairs=*/false, threads);
}

Bfloat16Packing bfloat16_packing(int64_t N) {
    if (gemm_detail::active_isa() == Isa::amx_bf16) return Bfloat16Packing::amx;  // as gemm_bfloat16
    if (N <= gemm_detail::kSkinnyColumns) return Bfloat16Packing::float_pairs;
    return gemm_detail::active_isa() == Isa::avx512_bf16 ? Bfloat16Packing::vdpbf16ps : Bfloat16Packing::float_pairs;
}

namespace {

// The operands of packing b: a, c and M play no part.
Operands<float> b_to_pack(const float* b, int64_t K, int64_t N, bool transpose_b) {
    static const GemmEpilogue<float> none;
    return Operands<float>{nullptr, nullptr, b, 0, N, K, false, transpose_b, false, none, true};
}

}  // namespace

int64_t bfloat16_packed_b_size(Bfloat16Packing packing, int64_t K, int64_t N) {
#if FASTMLP_X86_KERNELS
    const Operands<float> p = b_to_pack(nullptr, K, N, false);
    if (packing == Bfloat16Packing::amx) return gemm_detail::amx_bf16_packed_b_size(p);
    if (packing == Bfloat16Packing::vdpbf16ps) return gemm_detail::avx512_bf16_packed_b_size(p);
#endif
    return (K + K % 2) * N;
}

void pack_bfloat16_b(float* out, Bfloat16Packing packing, const float* b, int64_t K, int64_t N,
                     bool transpose_b) {
    const Operands<float> p = b_to_pack(b, K, N, transpose_b);
#if FASTMLP_X86_KERNELS
    if (packing == Bfloat16Packing::amx) return gemm_detail::amx_bf16_pack_b(out, p);
    if (packing == Bfloat16Packing::vdpbf16ps) return gemm_detail::avx512_bf16_pack_b(out, p);
#endif
    round_b_in_pair_order(out, p, K + (K & 1), threads_for(static_cast<double>(K) * N));
}

void gemm_bfloat16_packed_b(float* c, const float* a, PackedBfloat16B b, int64_t M, int64_t N, int64_t K,
                            bool transpose_a, bool accumulate, const GemmEpilogue<float>& epilogue) {
    if (N <= 0) return;
    Operands<float> p{c, a, b.data, M, N, K, transpose_a, false, accumulate, epilogue, true};
    if (finished_without_products(p)) return;
    const int threads = threads_for(static_cast<double>(M) * N * K);
    p.packed_b = b.data;
#if FASTMLP_X86_KERNELS
    if (b.packing == Bfloat16Packing::amx) return gemm_detail::amx_bf16_packed_gemm(p, threads);
    if (b.packing == Bfloat16Packing::vdpbf16ps) return gemm_detail::avx512_bf16_packed_gemm(p, threads);
#endif
    p.packed_b = nullptr;
    emulated_gemm_bfloat16(p, /*b_in_pairs=*/true, threads);
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
