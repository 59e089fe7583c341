// Internals shared by the GEMM front end (gemm.cpp), the loop nest around the kernels
// (gemm_driver.h) and the kernels of each instruction set (gemm.cpp for the portable ones,
// gemm_avx2.cpp, gemm_avx512.cpp): the canonical summation order, the operands, the
// instruction sets and the table of paths each one provides.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels.h"

// The AVX2 and AVX-512 kernels exist on x86 only (CMake compiles their translation units
// there); elsewhere (aarch64, arm64 macOS) every dispatch takes the portable kernels.
#if defined(__x86_64__) || defined(__i386__)
#define FASTMLP_X86_KERNELS 1
#else
#define FASTMLP_X86_KERNELS 0
#endif

namespace fastmlp {
namespace gemm_detail {

// The peak loops' timing (fma_peak_gflops, bf16_peak_gflops, amx_bf16_peak_gflops): runs
// `block`, a fixed amount of register-only work, until `seconds` have passed, and returns
// how many blocks ran per second.
template <typename Block>
double blocks_per_second(double seconds, Block&& block) {
    using clock = std::chrono::steady_clock;
    const auto started = clock::now();
    int64_t rounds = 0;
    double elapsed = 0;
    do {
        block();
        ++rounds;
        elapsed = std::chrono::duration<double>(clock::now() - started).count();
    } while (elapsed < seconds);
    return static_cast<double>(rounds) / elapsed;
}

// ---------------------------------------------------------------------------------------
// The canonical summation order. Every path of every instruction set computes element
// (i, j) of c as
//     c  = block_0 (or c + block_0 when accumulating),  then  c = c + block_b  for b >= 1,
//     block_b = fma(a[i, k], b[k, j], ...) sequentially over the k of block b, from zero,
// with the K blocks below. They depend on K alone -- not on M, N, the thread count, the
// path or the machine -- so predict(X)[i] == predict(X[i:i+1]) bit for bit, and the AVX2
// and AVX-512 kernels (both FMA) give the same bits. The portable kernels follow the same
// order with a separate multiply and add (no FMA in the x86-64 baseline).
//
// With bfloat16 operands (gemm_bfloat16 in kernels.h) the order is the one VDPBF16PS
// computes: k goes in pairs (2q, 2q + 1) -- a K that is odd gets a zero k = K --, the blocks
// are ceil(pairs / 128) equal blocks of whole pairs, and within a pair the odd k is added
// first: block_b = fma(a[i, 2q], b[2q, j], fma(a[i, 2q + 1], b[2q + 1, j], ...)). A product
// of two bfloat16 values is exact in float32, so each fma equals the instruction's rounded
// add (measured on an AVX512_BF16 Xeon); the emulated path (float32 FMA kernels over bfloat16-rounded
// operands in that order) gives its bits, except where the instruction flushes denormals.
// ---------------------------------------------------------------------------------------

constexpr int64_t kCanonicalKC = 256;

inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// ceil(K / 256) blocks of equal size (the last one shorter); with bfloat16 operands
// ceil(K / 2 / 128) blocks of equal, even size (the last one shorter, odd when K is).
struct KBlocking {
    int64_t count, size;
    explicit KBlocking(int64_t K, bool bfloat16_pairs = false) {
        const int64_t items = bfloat16_pairs ? ceil_div(K, 2) : K, per_item = bfloat16_pairs ? 2 : 1;
        count = ceil_div(items, kCanonicalKC / per_item);
        size = per_item * ceil_div(items, count);
    }
};

// The half-open range [begin, end) of `count` items given to part `index` of `parts`.
struct Range {
    int64_t begin, end;
};
inline Range split(int64_t count, int index, int parts) {
    return {count * index / parts, count * (index + 1) / parts};
}

// One product: c = op(a) @ op(b) (+ c when accumulate), then the epilogue. op(a)[i, k] and
// op(b)[k, j] index the row-major operands, transposed when asked.
template <typename T>
struct Operands {
    T* c;
    const T* a;
    const T* b;
    int64_t M, N, K;
    bool transpose_a, transpose_b, accumulate;
    const GemmEpilogue<T>& epilogue;
    // A product with bfloat16 operands (float only), summed in the pair order and blocking
    // above. Kernels that pack pairs (kPacksBfloat16Pairs) round a and b while packing. For
    // the others an operand "in pairs" is given already rounded, its k in pair order, with
    // K + K % 2 of them (a: (M, K + K % 2), or (K + K % 2, M) when transposed; b: (K + K % 2,
    // N)); one not in pairs is the float32 operand, which the packed path rounds and puts in
    // pair order while packing. The skinny and row paths read operands in place: both must
    // be in pairs.
    bool bfloat16_pairs = false;
    bool a_in_pairs = false, b_in_pairs = false;
    // b packed whole beforehand by pack_whole_b (gemm_driver.h), read in place of packing b
    // (null: b is packed as it is read): a bfloat16 product's for the kernels that pack
    // pairs, a float32 one's for the packed path (a float32 model's weights, pack_float32_b).
    const T* packed_b = nullptr;
    KBlocking blocking() const { return KBlocking(K, bfloat16_pairs); }
};

// x rounded to the nearest bfloat16, ties to even, as VCVTNE2PS2BF16 does it: a float32
// denormal becomes a zero of its sign, a NaN stays a (quiet) NaN. Returned as the float32
// of the same value (the low 16 bits zero).
inline float round_to_bfloat16(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    // Branch-free (selects), so that the loops rounding whole operands vectorise.
    const uint32_t nearest = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
    const uint32_t quiet_nan = (bits | 0x00400000u) & 0xffff0000u;
    const uint32_t signed_zero = bits & 0x80000000u;
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u, denormal_or_zero = (bits & 0x7f800000u) == 0;
    bits = nan ? quiet_nan : denormal_or_zero ? signed_zero : nearest;
    float rounded;
    std::memcpy(&rounded, &bits, sizeof rounded);
    return rounded;
}

// Per-thread scratch, 64-byte aligned, grown on demand and kept for the next call (fresh
// pages would cost a page fault per 4 KiB every call). Each OpenMP thread runs one region
// at a time, so a thread's buffers are never used by two calls at once.
template <typename T>
T* packed_a_scratch(int64_t count);   // this thread's packed block of A
template <typename T>
T* shared_b_scratch(int64_t count);   // the calling thread's packed B, read by its team

// The three paths of one instruction set (gemm_driver.h builds them around its kernels), and
// b packed whole for its packed path (p.packed_b): its size in elements, and the packing.
template <typename T>
struct GemmPaths {
    void (*packed)(const Operands<T>& p, int threads);  // BLIS-style, any shape
    void (*skinny)(const Operands<T>& p, int threads);  // N <= kSkinnyColumns, no A packing
    void (*row)(const Operands<T>& p, int threads);     // M == 1 and b not transposed
    int64_t (*packed_b_size)(const Operands<T>& p);
    void (*pack_b)(T* out, const Operands<T>& p);      // out: packed_b_size(p), 64-byte aligned
};

// Widest c the skinny path takes (the 10-wide output layer, a 1-output regressor).
constexpr int64_t kSkinnyColumns = 16;

// avx512_bf16: the AVX-512 kernels, and VDPBF16PS for gemm_bfloat16's packed path.
// amx_bf16: the same, but AMX's TDPBF16PS for gemm_bfloat16 wherever c is wider than
// kSkinnyColumns (any M, so that a row's sum never depends on the batch).
enum class Isa : int { portable = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3, amx_bf16 = 4 };

// Defined in gemm.cpp, gemm_avx2.cpp (-mavx2 -mfma) and gemm_avx512.cpp (-mavx512f ...):
// call the last two only when the CPU has those instructions.
const GemmPaths<float>& portable_paths_float();
const GemmPaths<double>& portable_paths_double();
const GemmPaths<float>& avx2_paths_float();
const GemmPaths<double>& avx2_paths_double();
// The AVX-512 tile (gemm_avx512.cpp). square: 16 x 16 floats (16 x 8 doubles), sized for Zen
// 4's one 512-bit FMA per cycle; wide: 8 x 32 floats (8 x 16 doubles), for Intel cores' two
// 512-bit FMA pipes. The same canonical
// order, so the same bits: the tile changes the speed only. gemm.cpp picks wide on Intel CPUs
// (CPUID vendor GenuineIntel), square elsewhere (AMD), unless set_avx512_tile chose.
enum class Avx512Tile : int { square = 0, wide = 1 };
const GemmPaths<float>& avx512_paths_float(Avx512Tile tile);
const GemmPaths<double>& avx512_paths_double(Avx512Tile tile);
// The packed path over bfloat16 operands (p.bfloat16_pairs) with VDPBF16PS, in
// gemm_avx512_bf16.cpp (-mavx512bf16 ...): only when the CPU has AVX512_BF16.
void avx512_bf16_packed_gemm(const Operands<float>& p, int threads);
// The same with AMX, in gemm_amx_bf16.cpp (-mamx-tile -mamx-bf16 ...): only when the CPU has
// AMX-BF16 and the kernel lets the process use tiles. TDPBF16PS does NOT add in the canonical
// order: its 32 products per 16 pairs are summed in a way of its own (one pair: the two
// products' exact sum rounded once, then added to c; more: neither sequential nor one
// rounding), measured within 7 * 2^-24 * sum |a b| per tile step against the exact sum on
// this Xeon. Each element's sum still depends on K alone (the same blocks, padded with zero
// pairs to whole tile steps, summed in the tiles from zero and then added to c in float32),
// so the rows stay independent of M and of the threads; denormals are flushed as VDPBF16PS.
void amx_bf16_packed_gemm(const Operands<float>& p, int threads);
// Both paths take any M (a few rows go through a kernel of their own, the same sums per
// row), and p.packed_b: b packed whole beforehand by *_pack_b (out: *_packed_b_size(p)
// floats, 64-byte aligned; p's a, c and M unused).
int64_t avx512_bf16_packed_b_size(const Operands<float>& p);
void avx512_bf16_pack_b(float* out, const Operands<float>& p);
int64_t amx_bf16_packed_b_size(const Operands<float>& p);
void amx_bf16_pack_b(float* out, const Operands<float>& p);

// out[k] = round_to_bfloat16(x[swap_pairs ? k ^ 1 : k]) for k < out_count, x read as zero
// from count on (gemm_avx512.cpp: only when the CPU has AVX-512F). The emulated bfloat16
// product's rounded copies of its operands, 16 lanes at a time.
void avx512_round_line_to_bfloat16(float* out, const float* x, int64_t count, int64_t out_count, bool swap_pairs);

// Single-thread fp32 FMA throughput of a register-only loop run for about `seconds`, in
// GFLOP/s (2 flops per lane per FMA): 8 lanes (AVX2) and 16 lanes (AVX-512).
double avx2_fma_peak_gflops(double seconds);
double avx512_fma_peak_gflops(double seconds);
// The same for bfloat16 pairs (peak_bf16.cpp, -mavx512bf16): VDPBF16PS on zmm, 4 flops per
// lane (two products, two adds). Call it only when cpu_supports_isa("avx512_bf16").
double avx512_bf16_peak_gflops(double seconds);
// The same for AMX (gemm_amx_bf16.cpp): TDPBF16PS from tiles loaded once, 16,384 flops per
// instruction. Call it only when cpu_supports_isa("amx_bf16").
double amx_bf16_peak_gflops(double seconds);

// Whether the CPU's vendor is Intel (CPUID leaf 0 says GenuineIntel): the tile of the AVX-512
// kernels and the optimizer loops' subnormal guard follow it (gemm.cpp, optim.cpp).
bool cpu_is_intel();

// A process-wide choice among `names` (the AVX-512 tile, the subnormal guard): the CPU's
// unless set() forced another by name ("" or "auto": the CPU's again; false, changing nothing,
// for a name not among them).
template <size_t N>
struct NamedChoice {
    const char* const (&names)[N];
    const int cpu_choice;
    std::atomic<int> current{cpu_choice};

    int get() const { return current.load(std::memory_order_relaxed); }
    const char* name() const { return names[get()]; }
    bool set(const std::string& name) {
        if (name.empty() || name == "auto") {
            current.store(cpu_choice);
            return true;
        }
        for (size_t i = 0; i < N; ++i)
            if (name == names[i]) {
                current.store(static_cast<int>(i));
                return true;
            }
        return false;
    }
};

// The instruction set in use (gemm.cpp): the widest the CPU has, unless forced.
Isa active_isa();
// The one whose float kernels (GEMM, element-wise and optimizer loops) run: avx512_bf16 and
// amx_bf16 differ from avx512 only in gemm_bfloat16.
inline Isa active_float_isa() {
    const Isa isa = active_isa();
    return isa == Isa::avx512_bf16 || isa == Isa::amx_bf16 ? Isa::avx512 : isa;
}

}  // namespace gemm_detail
}  // namespace fastmlp
