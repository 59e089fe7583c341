// Every kernel of the C++ core: prototypes, shapes and exact semantics.
// fastmlp/reference.py mirrors each one in NumPy under the same name and argument order.
//
// Conventions (DESIGN.md): row-major; arguments run outputs, inputs, weights, then int64_t
// sizes; a backward kernel takes (d_inputs..., d_params..., d_out, saved..., sizes).
// Kernels never check, allocate, throw or print; the bindings validate.
// Each is templated on T in {float, double} and explicitly instantiated for both.
#pragma once

#include <atomic>
#include <cstdint>
#include <new>
#include <mutex>
#include <string>
#include <type_traits>

#include "optim_scalars.h"

namespace fastmlp {

// ---------------------------------------------------------------------------------------
// Threads (threads.cpp)
// ---------------------------------------------------------------------------------------

// The number of OpenMP threads every parallel region of fastmlp uses, for the calling
// thread: a ScopedCallThreads in force on it, else set_num_threads(n), else
// omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl), capped by set_default_thread_cap.
// Always 1 in a child forked after fastmlp ran multithreaded (libgomp would deadlock).
int num_threads();
// n >= 1 fixes the count process-wide; n <= 0 goes back to following OpenMP.
void set_num_threads(int n);
bool num_threads_is_set();
// True when nobody chose the count: no ScopedCallThreads, set_num_threads, OMP_NUM_THREADS,
// default cap or threadpool_limits below the core count; only then may ThreadLearner lower it.
bool num_threads_is_default();
// An upper bound on the OpenMP-derived default (n <= 0: none); set to 1 in forked children.
void set_default_thread_cap(int n);
// A model's own thread count (n >= 1), in force on the calling thread while this lives.
class ScopedCallThreads {
public:
    explicit ScopedCallThreads(int n);
    ~ScopedCallThreads();
    ScopedCallThreads(const ScopedCallThreads&) = delete;
    ScopedCallThreads& operator=(const ScopedCallThreads&) = delete;
private:
    int saved_;
};
// fork() and a model's state. When one thread of the parent forks while another is inside a
// training step, the child would get that model's parameters half-updated and its mutex
// locked by a thread the child does not have (every later call on the model would wait for
// ever). So fork() waits until no ModelStateWrite is alive and lets none begin until it is
// done: a child sees every model as of its last completed step (or buffer copy). And in the
// child every mutex registered here is made anew, unlocked.
// One ModelStateWrite around each write of a model's parameters, optimizer state, step or
// running statistics made with the GIL released; never nested on one thread (a nested one
// would wait for a fork that waits for the outer one). Nothing inside one may wait for the
// GIL or for anything else a forking thread can hold: os.fork() holds the GIL while it waits
// for the writes in progress.
class ModelStateWrite {
public:
    ModelStateWrite();
    ~ModelStateWrite();
    ModelStateWrite(const ModelStateWrite&) = delete;
    ModelStateWrite& operator=(const ModelStateWrite&) = delete;
};
// Inside a ModelStateWrite, on its thread, with the model's state whole again (as a fork may
// see it): ends the write while it lives and begins it again after, so that what runs
// meanwhile (a data-parallel step's reduction, which takes the GIL) may let a fork happen.
// (The one exception: a sharded step's all-gather of the updated parameters, which a fork
// sees half done; docs/guide/distributed.md says so.)
class ModelStateWritePause {
public:
    ModelStateWritePause();
    ~ModelStateWritePause();
    ModelStateWritePause(const ModelStateWritePause&) = delete;
    ModelStateWritePause& operator=(const ModelStateWritePause&) = delete;
};
void register_for_reset_after_fork(std::recursive_mutex* mutex);
void unregister_for_reset_after_fork(std::recursive_mutex* mutex);
// Threads worth using for a parallel region of `work` multiply-adds: 1 below
// parallel_work_threshold() (what a fork/join and its barrier cost, on an idle and on a busy
// machine: threads.cpp), num_threads() above it.
int threads_for(double work);
double parallel_work_threshold();
// Whether a whole call of `work` multiply-adds (a prediction, a run of training steps) may
// use more than one thread: below call_parallel_work_threshold() it runs on one, every region.
bool call_is_parallel(double work);
double call_parallel_work_threshold();

// Which of "the thread count the settings give" and "one thread" a model's large calls run
// fastest with, learnt from their own timings: on a machine whose other processes hold the
// cores a 2-thread call can be several times slower than a 1-thread one (every barrier waits
// for a thread that is off its core). Results do not depend on the thread count, so the
// choice may change from call to call. It mostly keeps the faster side and now and then
// probes the other one (the probes grow rarer while the faster side stays the same).
struct ThreadChoice {
    int threads;
    bool probe;  // a probe: the caller may make the call short (a short run of batches)
};
class ThreadLearner {
public:
    ThreadLearner();
    // The count for the next call, given the settings' count `threads`.
    ThreadChoice choose(int threads);
    // What the call chose by choose() did: `work` multiply-adds in `seconds`.
    void record(int threads, double seconds, double work);
private:
    double rate_[2] = {0, 0};  // multiply-adds per second: [0] one thread, [1] several
    bool known_[2] = {false, false};
    bool probing_ = false;
    bool warmed_up_ = false;  // the first call is not timed
    int64_t probe_interval_, until_probe_;
};

// ---------------------------------------------------------------------------------------
// GEMM (gemm.cpp; the loops in gemm_driver.h; AVX2 and AVX-512 kernels in gemm_avx2.cpp,
// gemm_avx512.cpp)
// ---------------------------------------------------------------------------------------

// c = op(a) @ op(b), or c += op(a) @ op(b) when accumulate.
//   c is (M, N)
//   a is (M, K), or (K, M) stored row-major when transpose_a
//   b is (K, N), or (N, K) stored row-major when transpose_b
// Every element of c is summed over k in one canonical order that depends on K alone, so the
// result is bitwise the same at any thread count, for any M (a row of c does not depend on
// the other rows) and with the AVX2 or AVX-512 kernels. K == 0 gives c = 0 (or c unchanged).
template <typename T>
void gemm(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool transpose_a,
          bool transpose_b, bool accumulate);

// The instruction set gemm and the optimizer loops use: "portable", "avx2", "avx512" or
// "avx512_bf16" (the AVX-512 kernels, plus VDPBF16PS for gemm_bfloat16).
// Chosen at load as the widest the CPU has; set_isa(name) forces one ("" or "auto": the
// widest again) and returns false, changing nothing, for an unknown name or one the CPU
// lacks. The AVX2 and AVX-512 kernels give the same bits (the canonical order of
// gemm_internal.h); the portable ones round a multiply and an add where they use an FMA.
// force_portable_gemm(true) is set_isa("portable"), (false) is set_isa("").
const char* gemm_kernel_name();
const char* widest_cpu_isa_name();
bool cpu_supports_isa(const std::string& name);
bool is_isa_name(const std::string& name);
bool set_isa(const std::string& name);
void force_portable_gemm(bool force);
// The float tile of the AVX-512 kernels: "8x32" on Intel CPUs (two 512-bit FMA pipes), "16x16"
// elsewhere (Zen 4); set_avx512_tile(name) forces one ("" or "auto": the CPU's again) and
// returns false, changing nothing, for another name. Both give the same bits.
const char* avx512_tile_name();
bool set_avx512_tile(const std::string& name);
// The subnormal guard of the float optimizer loops (optim_loops.h): "on" on Intel CPUs, whose
// cores multiply and divide subnormals in microcode, "off" elsewhere -- Zen 4 takes them in
// its float unit (a division or square root at 1.5-2.6x its usual time, a product at full
// speed), for less than the guard's look and its twins over double cost. set_subnormal_guard(name)
// forces one ("" or "auto": the CPU's again) and returns false, changing nothing, for
// another name. Both give the same bits.
const char* subnormal_guard_name();
bool set_subnormal_guard(const std::string& name);

// ---------------------------------------------------------------------------------------
// Activations (activations.cpp)
// ---------------------------------------------------------------------------------------

enum class Activation : int {
    identity = 0,
    sigmoid = 1,     // 1 / (1 + exp(-x)), evaluated without overflow for any sign
    tanh = 2,
    relu = 3,        // max(x, 0); derivative 0 at x == 0 (as torch)
    leaky_relu = 4,  // x if x > 0 else slope * x; derivative 1 if x > 0 else slope
    gelu = 5,        // exact: 0.5 * x * (1 + erf(x / sqrt(2))); derivative Phi(x) + x * phi(x)
    step = 6,        // 1 if x >= 0 else 0; forward only (perceptron); derivative taken as 0
};

// y = act(x). y may alias x.
//   y, x are (n)
template <typename T>
void activation_forward(T* y, const T* x, int64_t n, Activation act, T slope);

// dx = dy * act'(x). dx may alias dy.
//   dx, dy are (n)
//   x is (n): the pre-activation; read only by gelu (may be null for the others)
//   y is (n): act(x); read by sigmoid (y(1-y)), tanh (1-y^2), relu and leaky_relu (y > 0)
template <typename T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, int64_t n, Activation act,
                         T slope);

// y = erf(x), the vectorised erf of gelu's formula (vector_math.h), exposed so that tests can
// measure it alone. y may alias x.
//   y, x are (n)
template <typename T>
void erf_forward(T* y, const T* x, int64_t n);

// True when no element of data is NaN or infinite. Tested on the bits (an exponent field of
// all ones), an integer OR-reduction that vectorises; large arrays are split among threads
// (an AND of the parts: the same answer at any thread count).
//   data is (n)
template <typename T>
bool all_finite(const T* data, int64_t n);

// ---------------------------------------------------------------------------------------
// Fused GEMM (gemm.cpp): what a plain BLAS cannot do, done while a tile of c is still in
// registers/L1 and while op(b) is read for packing anyway.
// ---------------------------------------------------------------------------------------

enum class GemmEpilogueKind : int {
    none = 0,
    bias_activation = 1,        // c = act(c + bias); pre_activation, if set, gets c + bias
    activation_derivative = 2,  // c = c * act'(x, y), activation_backward's rule
    update = 3,                 // c is the gradient of an (M, N) parameter block: update->run
                                // on each finished block of it (c itself unchanged)
};

template <typename T>
struct PreparedUpdate;

template <typename T>
struct GemmEpilogue {
    GemmEpilogueKind kind = GemmEpilogueKind::none;
    Activation activation = Activation::identity;
    T slope = 0;                   // leaky_relu
    const T* bias = nullptr;       // (N), bias_activation
    T* pre_activation = nullptr;   // (M, N) or null, bias_activation
    const T* x = nullptr;          // (M, N) pre-activation (gelu), activation_derivative
    const T* y = nullptr;          // (M, N) act(x), activation_derivative
    T* b_column_sums = nullptr;    // (N) or null: sum over k of op(b)[k, j], in k order
    // update: the optimizer step of the parameters whose gradient c is, element (i, j) at
    // i N + j of its buffers; *found_state_outside_plain_range set when a run says so.
    const PreparedUpdate<T>* update = nullptr;
    std::atomic<bool>* found_state_outside_plain_range = nullptr;
};

// gemm (same arguments, same bits for c before the epilogue), then the epilogue applied to
// every element of c, and b_column_sums filled (a dense layer's bias gradient when b is dz).
template <typename T>
void gemm_fused(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool transpose_a,
                bool transpose_b, bool accumulate, const GemmEpilogue<T>& epilogue);

// gemm_fused with bfloat16 operands (float32 only): every element of op(a) and op(b) is
// rounded to the nearest bfloat16 (ties to even; a float32 denormal to zero, as
// VCVTNE2PS2BF16), their products are summed in float32 in the canonical pair order
// (gemm_internal.h: k in pairs, the odd one first, ceil(K / 256) blocks of whole pairs) --
// VDPBF16PS's arithmetic -- then the epilogue as gemm_fused's. b_column_sums sums the float32
// op(b), not its rounding. Bits independent of M, the thread count and the path; the same
// on every ISA except where a sum or product is a float32 denormal (VDPBF16PS, on CPUs with
// AVX512_BF16, flushes those to zero; the emulation elsewhere keeps them).
void gemm_bfloat16(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K,
                   bool transpose_a, bool transpose_b, bool accumulate,
                   const GemmEpilogue<float>& epilogue);
// The b operand of gemm_bfloat16 packed once for many products (a model's weights for its
// predictions), in the layout of the kernels that multiply it:
enum class Bfloat16Packing : int {
    float_pairs = 0,  // the emulation's: op(b) rounded to bfloat16, as float32, its k in pair
                      // order (k ^ 1: the odd k of each pair first) and a zero row k = K when K
                      // is odd -- (K + K % 2, N) floats
    vdpbf16ps = 1,    // VDPBF16PS panels: per K block, per 16 columns, (pairs, 16) 32-bit words
                      // of two bfloat16 (the even k in the low half) -- about K N / 2 floats
    amx = 2,          // AMX B tiles: per K block, per 32 columns, two (pairs rounded up to 16,
                      // 16) halves of such words
};
// An allocator of 64-byte aligned memory, for the packed b (its kernels' aligned loads).
template <typename T>
struct CacheLineAllocator {
    using value_type = T;
    CacheLineAllocator() = default;
    template <typename U>
    CacheLineAllocator(const CacheLineAllocator<U>&) {}  // NOLINT: rebinding is implicit
    T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
    void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
    bool operator==(const CacheLineAllocator&) const { return true; }
    bool operator!=(const CacheLineAllocator&) const { return false; }
};

struct PackedBfloat16B {
    const float* data = nullptr;  // 64-byte aligned
    Bfloat16Packing packing = Bfloat16Packing::float_pairs;
};
// The packing gemm_bfloat16's own kernels would use for an N-column b under the active
// instruction set: amx under amx_bf16 and vdpbf16ps under avx512_bf16 when N > 16 (the
// products those instructions take), float_pairs otherwise.
Bfloat16Packing bfloat16_packing(int64_t N);
// The floats a packed (K, N) b takes.
int64_t bfloat16_packed_b_size(Bfloat16Packing packing, int64_t K, int64_t N);
// out = op(b) packed. The CPU must run `packing` (bfloat16_packing gave it, under some
// instruction set).
//   out is (bfloat16_packed_b_size) floats, 64-byte aligned; b is (K, N), or (N, K) when
//   transpose_b
void pack_bfloat16_b(float* out, Bfloat16Packing packing, const float* b, int64_t K, int64_t N,
                     bool transpose_b);
// gemm_bfloat16(c, a, b, M, N, K, transpose_a, false, accumulate, epilogue) with b packed by
// pack_bfloat16_b: at any M, the bits gemm_bfloat16 gives under the instruction set the
// packing belongs to (amx: AMX's order; vdpbf16ps: canonical, denormals flushed;
// float_pairs: the emulation's). The epilogue must not ask for b_column_sums.
//   c is (M, N); a is (M, K), or (K, M) when transpose_a
void gemm_bfloat16_packed_b(float* c, const float* a, PackedBfloat16B b, int64_t M, int64_t N, int64_t K,
                            bool transpose_a, bool accumulate, const GemmEpilogue<float>& epilogue);

// A float32 b packed once for many gemm_fused products of a few rows or more (a float32
// model's weights, for its predictions), in the packed path's layout of the kernels that
// packed it.
struct PackedFloat32B {
    const float* data = nullptr;   // 64-byte aligned
    const void* kernels = nullptr;  // float32_packing() when it was packed
};
// The float32 kernels in use, as an identity: set_isa (or the AVX-512 tile) changes it, and
// with it the layout pack_float32_b makes.
const void* float32_packing();
// The floats a packed (K, N) b takes under the kernels in use.
int64_t float32_packed_b_size(int64_t K, int64_t N);
// out = b packed for the kernels in use.
//   out is (float32_packed_b_size) floats, 64-byte aligned; b is (K, N)
void pack_float32_b(float* out, const float* b, int64_t K, int64_t N);
// gemm_fused(c, a, b, M, N, K, false, false, false, epilogue), reading b as `packed` holds it
// when the packed path takes the product and `packed` is the kernels' in use, b itself
// otherwise (one row, 16 columns or fewer, set_isa since): the same bits either way, as
// packing moves b's elements and changes no sum. The epilogue must not ask for b_column_sums.
//   c is (M, N); a is (M, K); b is (K, N)
void gemm_fused_packed_b(float* c, const float* a, const float* b, PackedFloat32B packed, int64_t M, int64_t N,
                         int64_t K, const GemmEpilogue<float>& epilogue);

// gemm_bfloat16 when bfloat16_operands, else gemm_fused: a float model's compute dtype
// (network.h). Float only with bfloat16_operands (a double model never has it).
template <typename T>
void gemm_fused_in(bool bfloat16_operands, T* c, const T* a, const T* b, int64_t M, int64_t N,
                   int64_t K, bool transpose_a, bool transpose_b, bool accumulate,
                   const GemmEpilogue<T>& epilogue) {
    if constexpr (std::is_same_v<T, float>) {
        if (bfloat16_operands)
            return gemm_bfloat16(c, a, b, M, N, K, transpose_a, transpose_b, accumulate, epilogue);
    }
    gemm_fused(c, a, b, M, N, K, transpose_a, transpose_b, accumulate, epilogue);
}

// Whether gemm_bfloat16 runs a bfloat16 instruction (the ISA in use is avx512_bf16:
// VDPBF16PS, or amx_bf16: AMX's TDPBF16PS) rather than the emulation.
bool native_bfloat16();
// What gemm_bfloat16's products wider than 16 columns run on: "amx_bf16" (TDPBF16PS, its own
// summation order, gemm_internal.h), "avx512_bf16" (VDPBF16PS) or "emulated".
const char* bfloat16_path();

// ---------------------------------------------------------------------------------------
// Losses (losses.cpp). Every loss is a mean, as torch's default reduction; sums over the
// batch are accumulated in double, in index order (deterministic at any thread count).
// Sample weights: every loss takes sample_weights, (B) non-negative per-row weights s_i or
// null (all ones, the same bits as passing ones). The loss is then the weighted mean over
// rows, sum_i s_i * loss_i / sum_i s_i (each element of row i weighing s_i for the
// element-wise losses), as scikit-learn's MLP and torch's reduction="none" followed by a
// weighted average compute it. sum_i s_i must be > 0 (the caller skips a batch whose weights
// sum to 0).
// ---------------------------------------------------------------------------------------

// Row-wise softmax, stable: exp(x - max(x)) / sum.
//   probs, logits are (B, C)
template <typename T>
void softmax_forward(T* probs, const T* logits, int64_t B, int64_t C);

// Fused softmax + cross-entropy on integer labels, as torch.nn.CrossEntropyLoss(weight,
// label_smoothing=eps, reduction="mean"), with sample weights s (all ones when null):
//   logp = log_softmax(logits);  w = class_weights (all ones when null);  W = sum_i s_i w[y_i]
//   loss = (1 - eps) * sum_i s_i w[y_i] * -logp[i, y_i] / W
//        + (eps / C) * sum_i s_i sum_c w[c] * -logp[i, c] / W
//   loss is (1); probs is (B, C) = softmax(logits), saved for the backward
//   logits is (B, C); labels is (B), each in [0, C); class_weights is (C) or null
//   sample_weights is (B) or null
template <typename T>
void softmax_xent_forward(T* loss, T* probs, const T* logits, const int64_t* labels,
                          const T* class_weights, const T* sample_weights, T label_smoothing,
                          int64_t B, int64_t C);

// Gradient of that loss with respect to the logits:
//   dlogits[i, k] = s_i * ((1 - eps) * w[y_i] * (p[i, k] - [k == y_i])
//                          + (eps / C) * (p[i, k] * sum_c w[c] - w[k])) / W
//   dlogits, probs are (B, C); labels is (B); class_weights is (C) or null
//   sample_weights is (B) or null
template <typename T>
void softmax_xent_backward(T* dlogits, const T* probs, const int64_t* labels,
                           const T* class_weights, const T* sample_weights, T label_smoothing,
                           int64_t B, int64_t C);

// Cross-entropy against soft targets (rows of `targets` sum to 1; mixup), S = sum_i s_i:
//   loss = sum_i s_i sum_c -targets[i, c] * logp[i, c] / S;  dlogits = s_i (p - targets) / S
//   loss is (1); probs, logits, targets are (B, C); sample_weights is (B) or null
template <typename T>
void softmax_xent_soft_forward(T* loss, T* probs, const T* logits, const T* targets,
                               const T* sample_weights, int64_t B, int64_t C);
//   dlogits, probs, targets are (B, C); sample_weights is (B) or null
template <typename T>
void softmax_xent_soft_backward(T* dlogits, const T* probs, const T* targets,
                                const T* sample_weights, int64_t B, int64_t C);

// Mean squared error over all B * D elements, S = sum_i s_i:
//   loss = sum_i s_i sum_j (pred - target)^2 / (S * D)   (mean((pred - target)^2) unweighted)
//   loss is (1); pred, target are (B, D); sample_weights is (B) or null
template <typename T>
void mse_forward(T* loss, const T* pred, const T* target, const T* sample_weights, int64_t B,
                 int64_t D);
//   dpred = 2 * s_i * (pred - target) / (S * D);  dpred, pred, target are (B, D)
template <typename T>
void mse_backward(T* dpred, const T* pred, const T* target, const T* sample_weights, int64_t B,
                  int64_t D);

// Binary cross-entropy with logits, mean over all B * C elements (binary and multi-label):
//   loss = sum_i s_i sum_c (max(z, 0) - z * t + log1p(exp(-|z|))) / (S * C)
//   loss is (1); logits, target are (B, C), target in [0, 1]; sample_weights is (B) or null
template <typename T>
void bce_logits_forward(T* loss, const T* logits, const T* target, const T* sample_weights,
                        int64_t B, int64_t C);
//   dlogits = s_i * (sigmoid(z) - t) / (S * C);  dlogits, logits, target are (B, C)
template <typename T>
void bce_logits_backward(T* dlogits, const T* logits, const T* target, const T* sample_weights,
                         int64_t B, int64_t C);

// Gaussian negative log-likelihood (constant dropped). The network's output row holds D
// means then D log-variances: out[i, :D] = mean, out[i, D:] = log_var.
//   loss = sum_i s_i sum_j 0.5 * (log_var + (t - mean)^2 * exp(-log_var)) / (S * D)
// With log_var == 0 it is half the squared error ("MLE = MSE").
//   loss is (1); out is (B, 2 * D); target is (B, D); sample_weights is (B) or null
template <typename T>
void gaussian_nll_forward(T* loss, const T* out, const T* target, const T* sample_weights,
                          int64_t B, int64_t D);
//   dout[i, j]     = -s_i * (t - mean) * exp(-log_var) / (S * D)
//   dout[i, D + j] = 0.5 * s_i * (1 - (t - mean)^2 * exp(-log_var)) / (S * D)
//   dout, out are (B, 2 * D); target is (B, D); sample_weights is (B) or null
template <typename T>
void gaussian_nll_backward(T* dout, const T* out, const T* target, const T* sample_weights,
                           int64_t B, int64_t D);

// Poisson negative log-likelihood with a log link (torch's PoissonNLLLoss(log_input=True,
// full=False): the constant log(y!) dropped), mean over all B * D elements. The network's
// output is z = log(mean); the predicted mean is exp(z).
//   loss = sum_i s_i sum_j (exp(z) - y * z) / (S * D)
//   loss is (1); log_mean, target are (B, D), target >= 0; sample_weights is (B) or null
template <typename T>
void poisson_nll_forward(T* loss, const T* log_mean, const T* target, const T* sample_weights,
                         int64_t B, int64_t D);
//   dlog_mean = s_i * (exp(z) - y) / (S * D);  dlog_mean, log_mean, target are (B, D)
//   sample_weights is (B) or null
template <typename T>
void poisson_nll_backward(T* dlog_mean, const T* log_mean, const T* target, const T* sample_weights,
                          int64_t B, int64_t D);

// ---------------------------------------------------------------------------------------
// Sparse input (sparse.cpp)
// ---------------------------------------------------------------------------------------

// Rows of a CSR matrix (N, cols) written densely: out[i, :] = row r_i, where r_i =
// rows[i] (rows non-null) or first_row + i, and row r holds data[k] at column indices[k] for
// k in [indptr[r], indptr[r + 1]). Duplicate columns are summed in storage order (what
// scipy's toarray does), so out equals the dense matrix's rows bit for bit.
// The one kernel that checks its input, because the indices are the user's and are read
// only here: a row with indptr[r] > indptr[r + 1], either outside [0, nnz], or a column
// outside [0, cols) is not read past; the kernel returns the first such i (its row and
// the later ones are left unspecified), else -1.
//   out is (B, cols); data, indices are (nnz), indices int32 or int64; indptr is (N + 1)
//   rows is (B), each in [0, N), or null
template <typename T, typename Index>
int64_t csr_rows_to_dense(T* out, const T* data, const Index* indices, const int64_t* indptr,
                          const int64_t* rows, int64_t first_row, int64_t B, int64_t nnz,
                          int64_t cols);

// ---------------------------------------------------------------------------------------
// Layers (layers.cpp)
// ---------------------------------------------------------------------------------------

// Dense layer: z = x @ w + b, y = act(z), in one pass over the output.
//   z is (B, OUT), the pre-activation; may be null unless act is gelu (see activation_backward)
//   y is (B, OUT); may equal z when act is identity
//   x is (B, IN); w is (IN, OUT); b is (OUT)
// bfloat16_operands: x @ w as gemm_bfloat16 (float only); with bfloat16_weights.data, w as
// pack_bfloat16_b packed it, read in place of w (gemm_bfloat16_packed_b). Without
// bfloat16_operands, float32_weights.data: w as pack_float32_b packed it, where the packed
// path takes x @ w (gemm_fused_packed_b; float only).
template <typename T>
void dense_forward(T* z, T* y, const T* x, const T* w, const T* b, int64_t B, int64_t IN,
                   int64_t OUT, Activation act, T slope, bool bfloat16_operands = false,
                   PackedBfloat16B bfloat16_weights = {}, PackedFloat32B float32_weights = {});

// Dense layer backward:
//   dz = dy * act'(z)         written into dz (B, OUT); dz may alias dy
//   dw = x^T @ dz             (IN, OUT), overwritten
//   db = sum over rows of dz  (OUT), overwritten; summed in row order
//   dx = dz @ w^T             (B, IN), overwritten; skipped when dx is null (first layer)
//   dy is (B, OUT); x is (B, IN); w is (IN, OUT); z, y are (B, OUT) as saved by forward
template <typename T>
void dense_backward(T* dx, T* dw, T* db, T* dz, const T* dy, const T* x, const T* w, const T* z,
                    const T* y, int64_t B, int64_t IN, int64_t OUT, Activation act, T slope);

// Counter-based random bits, the same at any thread count (splitmix64's finaliser):
//   mix(z): z += 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
//           z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31)   (mod 2^64)
//   random_bits(seed, counter, index) = mix(mix(mix(seed) ^ counter) ^ index)
//   random_uniform(seed, counter, index) = (random_bits(...) >> 11) * 2^-53, in [0, 1)
uint64_t random_bits(uint64_t seed, uint64_t counter, uint64_t index);
double random_uniform(uint64_t seed, uint64_t counter, uint64_t index);

// Inverted dropout: element i is kept when random_uniform(seed, counter, i) >= p.
//   mask[i] = keep ? 1 / (1 - p) : 0;  y = x * mask.  y may alias x.
//   y, mask, x are (n); 0 <= p < 1
template <typename T>
void dropout_forward(T* y, T* mask, const T* x, int64_t n, T p, uint64_t seed, uint64_t counter);
//   dx = dy * mask; dx may alias dy;  dx, dy, mask are (n)
template <typename T>
void dropout_backward(T* dx, const T* dy, const T* mask, int64_t n);

// Batch normalisation in training, as torch.nn.BatchNorm1d (B > 1):
//   mean = mean over rows; var = biased variance over rows; invstd = 1 / sqrt(var + eps)
//   xhat = (x - mean) * invstd;  y = gamma * xhat + beta
//   running_mean = (1 - momentum) * running_mean + momentum * mean
//   running_var  = (1 - momentum) * running_var  + momentum * var * B / (B - 1)
//   y, xhat, x are (B, F); mean, invstd are (F), saved; running_mean, running_var are (F),
//   updated in place; gamma, beta are (F)
template <typename T>
void batchnorm_forward_train(T* y, T* xhat, T* mean, T* invstd, T* running_mean, T* running_var,
                             const T* x, const T* gamma, const T* beta, int64_t B, int64_t F,
                             T momentum, T eps);
// Evaluation: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta
//   y, x are (B, F); gamma, beta, running_mean, running_var are (F)
template <typename T>
void batchnorm_forward_eval(T* y, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, int64_t B, int64_t F,
                            T eps);
//   dbeta = sum_i dy;  dgamma = sum_i dy * xhat
//   dx = gamma * invstd / B * (B * dy - dbeta - xhat * dgamma)
//   dx, dy, xhat are (B, F); dgamma, dbeta, gamma, invstd are (F); dx may alias dy
template <typename T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* xhat, const T* gamma,
                        const T* invstd, int64_t B, int64_t F);

// ---------------------------------------------------------------------------------------
// Optimizers (optim.cpp): one update of the flat parameter buffer, torch.optim's formulas.
// Every state buffer has the layout of params. `step` counts from 1 (the step being made).
// Weight decay (L2, g += weight_decay * p) applies to every element, as torch does (the
// network calls a kernel per range with weight_decay 0 on biases when decay_biases is false).
// ---------------------------------------------------------------------------------------

// The float kernels below look at their optimizer states, 64 elements at a time, for values
// whose products could leave float's normal range (subnormals: a state decaying towards
// zero), and compute those elements in double (optim_loops.h): the same bits, without the
// microcode assists that subnormal operands cost on Intel's cores (~25x a normal vector
// multiply). The look costs about 30% of Adam's loop, so a caller that steps again and
// again may skip it while it finds nothing: while an OptimizerStateScan lives, the update
// kernels called from its thread look only when `check` is true, and set `found` when they
// find such a state. Without one, they always look.
struct OptimizerStateScan {
    explicit OptimizerStateScan(bool check);
    ~OptimizerStateScan();
    OptimizerStateScan(const OptimizerStateScan&) = delete;
    OptimizerStateScan& operator=(const OptimizerStateScan&) = delete;
    const bool check;
    bool found = false;

   private:
    OptimizerStateScan* outer_;
};

// One step of an element-wise optimizer over the flat buffers, prepared once -- the loop and
// the scalars that its *_update kernel below would use -- and run on any pieces of them: the
// network runs it on each block of a weight gradient as the GEMM finishes the block, while it
// is still in cache. Every element is independent, so any split among calls and threads gives
// the bits of one *_update call over the whole. Prepared on a thread, it looks at its states
// as that thread's OptimizerStateScan says (below).
template <typename T>
struct PreparedUpdate {
    optim_detail::UpdateLoop<T> loop = nullptr;
    optim_detail::UpdateScalars<T> scalars{};
    T* params = nullptr;
    T* states[3] = {nullptr, nullptr, nullptr};  // null where the optimizer keeps fewer
    // When set, run also looks at the parameters it wrote (in cache) and sets it when one is
    // NaN or infinite.
    std::atomic<bool>* params_nonfinite = nullptr;
    // Updates elements [at, at + n) of params and of the states from their gradient. True when
    // a guarded loop met a state outside float's plain range there.
    //   gradient is (n)
    bool run(int64_t at, const T* gradient, int64_t n) const;
};
// Runs `update` over elements [0, n), split among threads when n is large, and tells this
// thread's OptimizerStateScan when it met a state outside the plain range.
//   grads is (n)
template <typename T>
void run_update(const PreparedUpdate<T>& update, const T* grads, int64_t n);
// Tells this thread's OptimizerStateScan (if any) that an update met a state outside the
// plain range (for runs of a PreparedUpdate on other threads).
void note_state_outside_plain_range();

// The updates of the kernels below, prepared: the same arguments but the gradient and n.
template <typename T>
PreparedUpdate<T> prepare_sgd_update(T* params, T* momentum_buffer, T lr, T momentum, T dampening, bool nesterov,
                                     T weight_decay, int64_t step);
template <typename T>
PreparedUpdate<T> prepare_adagrad_update(T* params, T* state_sum, T lr, T lr_decay, T weight_decay, T eps,
                                         int64_t step);
template <typename T>
PreparedUpdate<T> prepare_adadelta_update(T* params, T* square_avg, T* acc_delta, T lr, T rho, T eps,
                                          T weight_decay);
template <typename T>
PreparedUpdate<T> prepare_rmsprop_update(T* params, T* square_avg, T* grad_avg, T* momentum_buffer, T lr, T alpha,
                                         T eps, T weight_decay, T momentum, bool centered);
template <typename T>
PreparedUpdate<T> prepare_adam_update(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, T lr, T beta1,
                                      T beta2, T eps, T weight_decay, bool amsgrad, bool decoupled_weight_decay,
                                      int64_t step, bool eps_hat);

// torch.optim.SGD: g += wd * p; if momentum != 0: buf = g at step 1, else
// buf = momentum * buf + (1 - dampening) * g; g = nesterov ? g + momentum * buf : buf.
// p -= lr * g.
//   params, momentum_buffer, grads are (n); momentum_buffer unused when momentum == 0
template <typename T>
void sgd_update(T* params, T* momentum_buffer, const T* grads, int64_t n, T lr, T momentum,
                T dampening, bool nesterov, T weight_decay, int64_t step);

// torch.optim.Adagrad: clr = lr / (1 + (step - 1) * lr_decay); g += wd * p;
// state_sum += g^2; p -= clr * g / (sqrt(state_sum) + eps).
//   params, state_sum (starts at initial_accumulator_value), grads are (n)
template <typename T>
void adagrad_update(T* params, T* state_sum, const T* grads, int64_t n, T lr, T lr_decay,
                    T weight_decay, T eps, int64_t step);

// torch.optim.Adadelta: g += wd * p; square_avg = rho * square_avg + (1 - rho) * g^2;
// delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g;
// acc_delta = rho * acc_delta + (1 - rho) * delta^2; p -= lr * delta.
//   params, square_avg, acc_delta, grads are (n)
template <typename T>
void adadelta_update(T* params, T* square_avg, T* acc_delta, const T* grads, int64_t n, T lr,
                     T rho, T eps, T weight_decay);

// torch.optim.RMSprop: g += wd * p; square_avg = alpha * square_avg + (1 - alpha) * g^2;
// centered: grad_avg = alpha * grad_avg + (1 - alpha) * g, avg = sqrt(square_avg - grad_avg^2) + eps;
// else avg = sqrt(square_avg) + eps. momentum > 0: buf = momentum * buf + g / avg, p -= lr * buf;
// else p -= lr * g / avg.
//   params, square_avg, grad_avg (used when centered), momentum_buffer (used when
//   momentum > 0), grads are (n)
template <typename T>
void rmsprop_update(T* params, T* square_avg, T* grad_avg, T* momentum_buffer, const T* grads,
                    int64_t n, T lr, T alpha, T eps, T weight_decay, T momentum, bool centered);

// torch.optim.Adam / AdamW. decoupled_weight_decay (AdamW): p *= 1 - lr * wd first, and g is
// left alone; else (Adam) g += wd * p. Then m = b1 * m + (1 - b1) * g;
// v = b2 * v + (1 - b2) * g^2; bc1 = 1 - b1^step; bc2 = 1 - b2^step;
// amsgrad: v_max = max(v_max, v) and v_max replaces v below;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
// eps_hat (scikit-learn's and Keras's form, Kingma & Ba's "epsilon hat"): epsilon is added to
// the uncorrected sqrt(v): p -= (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps), in scikit-learn's
// operation order (v takes (1 - b2) * (g * g); the step size is computed in double).
//   params, exp_avg, exp_avg_sq, max_exp_avg_sq (used when amsgrad), grads are (n)
template <typename T>
void adam_update(T* params, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, const T* grads,
                 int64_t n, T lr, T beta1, T beta2, T eps, T weight_decay, bool amsgrad,
                 bool decoupled_weight_decay, int64_t step, bool eps_hat);

}  // namespace fastmlp
