// The model in C++: size table, flat parameter/gradient/optimizer buffers, workspace, and
// forward / backward / step / whole runs of batches, each one call with the GIL released.
// fastmlp.reference.ReferenceMLP mirrors these semantics exactly.
//
// Semantics
// ---------
// sizes s_0 .. s_L give L dense layers; layer l maps s_l -> s_{l+1}. For gaussian_nll the
// last width is 2 * D (D means, then D log-variances).
// Flat parameter layout, layer by layer: W_l (s_l x s_{l+1}, row-major), b_l (s_{l+1}), then
// for a hidden layer with batch norm gamma_l (s_{l+1}), beta_l (s_{l+1}).
// Hidden layer l, training: z = x W_l + b_l; if batch_norm: z = BN_train(z); a = act_l(z);
//   if dropout > 0: a = dropout(a, seed, counter = step * 1024 + l), where step is the
//   1-based number of the optimizer step being computed.
// Hidden layer l, evaluation: batch norm uses the running statistics; no dropout.
// Output layer: logits = x W_{L-1} + b_{L-1} (no activation); the loss takes the logits.
// One optimizer step: gradients of the batch's mean loss over the whole flat buffer, then
// the optimizer kernel over the whole flat buffer with step = step + 1 (the weight decay
// scaled per batch when decay_reference_weight > 0, see there). Weight decay reaches
// every parameter (torch's semantics) unless optimizer.decay_biases is false: then each
// layer's W_l is updated with the weight decay and its b_l, gamma_l, beta_l with weight
// decay 0 (the same kernel over each range; every element is independent, so the split
// changes no other bits).
// Batch norm's running statistics are updated by every training forward (not by gradient
// checks, which restore them).
// predict applies the loss's link to the logits: softmax (cross_entropy), sigmoid (bce),
// identity (mse, gaussian_nll: [mean, log_var] per row), exp (poisson: the logits are the
// log-means).
// Accuracy counts: cross_entropy, argmax(logits) == label (first maximum wins; with soft
// targets, the targets' first maximum); bce, every (logit > 0) == (target >= 0.5) in the row;
// none for mse, gaussian_nll and poisson.
// Mixup (MixupPlan): a batch's inputs and targets are blended before the training step; for
// cross_entropy the one-hot rows are blended, label smoothing applied to the blend
// ((1 - eps) * t + eps / C, as torch does for probability targets), and the loss is the
// soft-target cross-entropy. Sample weights are blended the same way as the targets.
// Sample weights (Targets::weights): every loss becomes the weighted mean over the batch's
// rows, sum_i s_i loss_i / sum_i s_i (kernels.h). A batch whose rows all weigh 0 -- sample
// weights summing to 0, or for the cross-entropy with class weights sum_i s_i w[y_i] = 0
// (s_i = 1 without sample weights) -- takes no step (its loss and gradient are 0; it counts
// rows but no weight, and weighted_correct 0). Batch norm's batch statistics and dropout
// ignore the weights.
// Sparse input (InputRows): a CSR training or prediction set is densified one batch (or one
// evaluation chunk) at a time into the workspace, never whole; a malformed row stops the
// call before its batch is used and is named (RunTotals::bad_input_row).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kernels.h"

namespace fastmlp {

enum class Loss : int { cross_entropy = 0, mse = 1, bce = 2, gaussian_nll = 3, poisson = 4 };
enum class OptimizerKind : int { sgd = 0, adagrad = 1, adadelta = 2, rmsprop = 3, adam = 4, adamw = 5 };

// torch.optim's option names; defaults are set by the Python layer per optimizer.
struct OptimizerOptions {
    OptimizerKind kind = OptimizerKind::adam;
    double lr = 1e-3;
    double weight_decay = 0;
    double momentum = 0, dampening = 0;         // sgd; rmsprop uses momentum too
    bool nesterov = false;                      // sgd
    double lr_decay = 0;                        // adagrad
    double initial_accumulator_value = 0;       // adagrad
    double rho = 0.9;                           // adadelta
    double alpha = 0.99;                        // rmsprop
    bool centered = false;                      // rmsprop
    double beta1 = 0.9, beta2 = 0.999;          // adam, adamw
    bool amsgrad = false;                       // adam, adamw
    bool eps_hat = false;                       // adam, adamw: eps added to the uncorrected sqrt(v)
    double eps = 1e-8;
    bool decay_biases = true;                   // false: weight decay on the W_l only
};

struct NetworkOptions {
    std::vector<int64_t> sizes;             // s_0 .. s_L, network units
    std::vector<Activation> activations;    // one per hidden layer (L - 1 of them)
    double slope = 0.01;                    // leaky_relu's negative slope
    Loss loss = Loss::cross_entropy;
    double dropout = 0;                     // probability of zeroing a hidden activation
    bool batch_norm = false;
    double batch_norm_momentum = 0.1, batch_norm_eps = 1e-5;
    std::vector<double> class_weights;      // cross_entropy only; empty means all ones
    double label_smoothing = 0;             // cross_entropy only
    uint64_t seed = 0;                      // dropout masks
    OptimizerOptions optimizer;
};

// Where one layer's tensors live in the flat parameter buffer.
struct LayerSlices {
    int64_t weight = 0, bias = 0, gamma = -1, beta = -1;  // offsets; -1 when absent
    int64_t fan_in = 0, fan_out = 0;
};

// Targets of a batch: integer labels (cross_entropy) or values (the other losses).
// `probabilities` replaces the labels of cross_entropy with soft targets (mixup).
template <typename T>
struct Targets {
    const int64_t* labels = nullptr;         // (N)
    const T* values = nullptr;               // (N, target width)
    const T* probabilities = nullptr;        // (N, C), rows summing to 1
    const T* weights = nullptr;              // (N) sample weights >= 0, or null (all ones)
    // Rows [start, N) of the labels, values (width columns) and weights, as a chunk of a
    // prediction-sized call reads them from its row 0 (probabilities belong to a gathered
    // batch only and are not carried).
    Targets from_row(int64_t start, int64_t width) const {
        Targets rows;
        if (labels) rows.labels = labels + start;
        if (values) rows.values = values + start * width;
        if (weights) rows.weights = weights + start;
        return rows;
    }
};

// The rows of X, (N, s_0): a row-major dense array, or a CSR matrix whose row r holds
// data[k] at column indices[k] for k in [indptr[r], indptr[r + 1]) (duplicates summed).
// Exactly one of indices32 / indices64 is set for a CSR matrix.
template <typename T>
struct InputRows {
    InputRows() = default;
    InputRows(const T* dense_rows) : dense(dense_rows) {}  // NOLINT: a dense array is the usual case
    const T* dense = nullptr;           // (N, s_0), or null when sparse
    const T* data = nullptr;            // (nnz)
    const int32_t* indices32 = nullptr; // (nnz)
    const int64_t* indices64 = nullptr; // (nnz)
    const int64_t* indptr = nullptr;    // (N + 1)
    int64_t nnz = 0;
    bool sparse() const { return dense == nullptr; }
    // Rows [start, N) of the same matrix (width columns): a chunk that a Network call reads
    // from its row 0. A sparse chunk shares data and indices; its indptr starts later.
    InputRows from_row(int64_t start, int64_t width) const {
        InputRows rows = *this;
        if (sparse())
            rows.indptr = indptr + start;
        else
            rows.dense = dense + start * width;
        return rows;
    }
};

// When a long prediction pauses so that its caller can look for Ctrl-C.
using Deadline = std::chrono::steady_clock::time_point;

// How far a prediction over rows [first, N) got: rows before `next` are done; bad_row is the
// first malformed sparse row it met (-1: none), which stops it.
// nonfinite_row: the first row whose outputs came out NaN or infinite (-1: none); such a
// row does not stop the prediction (the caller refuses its result).
struct PredictionProgress {
    int64_t next = 0;
    int64_t bad_row = -1;
    int64_t nonfinite_row = -1;
};

// Mixup (Zhang et al. 2018) for a run of batches: position k of the epoch's order is mixed
// with row partners[k] as lambda * X[order[k]] + (1 - lambda) * X[partners[k]], and so are
// its targets (labels as one-hot rows, then label smoothing), with lambda = lambdas[batch].
template <typename T>
struct MixupPlan {
    const int64_t* partners = nullptr;  // (N), rows of X; null: no mixup
    const T* lambdas = nullptr;         // (number of batches in the epoch)
};

// Loss and accuracy summed over rows: loss_sum = sum over batches of (mean loss * weight),
// a batch's weight being its rows' sample weights summed (its row count without weights);
// weight_sum sums those, weighted_correct the weights of the rows classified correctly.
// A training step whose loss or gradient is not finite is not applied (finite = false); a run
// of batches stops there and names it (nonfinite_batch, else -1). A malformed sparse row
// stops a call before the batch holding it (bad_input_row: that row of X, else -1).
// A class label that is not in [0, C) when a step or an evaluation chunk reads it (the labels
// were checked at the boundary, but another thread or process may rewrite them meanwhile)
// stops the call before anything is computed from it: bad_label_row is its row of the
// caller's y (else -1), bad_label its value.
struct RunTotals {
    double loss_sum = 0;
    int64_t correct = 0;
    int64_t rows = 0;
    bool finite = true;
    int64_t nonfinite_batch = -1;
    int64_t bad_label_row = -1;
    int64_t bad_label = 0;
    double weight_sum = 0;
    double weighted_correct = 0;
    int64_t bad_input_row = -1;
    // A refused step's logits were NaN/inf (the parameters overflow the forward pass, rather
    // than the loss or a gradient overflowing), or an evaluation met such outputs, first at
    // row nonfinite_output_row of its call (else -1) and stopped there.
    bool outputs_finite = true;
    int64_t nonfinite_output_row = -1;
    double mean_loss = 0;  // one loss evaluation's (sample-weighted) mean: loss_sum / weight_sum
    // Adds another run's loss, counts and weights (the running sums; not its flags or rows
    // of failure).
    void add_counts(const RunTotals& part) {
        loss_sum += part.loss_sum;
        correct += part.correct;
        rows += part.rows;
        weight_sum += part.weight_sum;
        weighted_correct += part.weighted_correct;
    }
};

// Why a model of these network widths (s_0 .. s_L) cannot be held, or "" when it can: the
// parameter count (each buffer in the flat layout), and a row of the workspace, must fit in
// a buffer of at most PTRDIFF_MAX bytes (what std::vector and the int64 offsets address),
// every product computed without overflow. Checked before anything is allocated.
std::string network_size_problem(const std::vector<int64_t>& sizes, bool batch_norm, int64_t element_size);

// The flat parameters: the network's own memory, or, while the ranks of a data-parallel fit
// on one node share one copy of them (an MPI shared window), memory lent from outside. The
// network reads and writes them through data() either way.
template <typename T>
class ParameterBuffer {
public:
    ParameterBuffer() = default;
    ParameterBuffer(const ParameterBuffer& other) : owned_(other.begin(), other.end()) {}
    ParameterBuffer& operator=(const ParameterBuffer& other) {
        if (this != &other) {
            owned_.assign(other.begin(), other.end());
            lent_ = nullptr;
        }
        return *this;
    }
    void assign(size_t n, T value) {
        owned_.assign(n, value);
        lent_ = nullptr;
    }
    size_t size() const { return owned_.size(); }
    bool empty() const { return owned_.empty(); }
    T* data() { return lent_ ? lent_ : owned_.data(); }
    const T* data() const { return lent_ ? lent_ : owned_.data(); }
    T* begin() { return data(); }
    T* end() { return data() + size(); }
    const T* begin() const { return data(); }
    const T* end() const { return data() + size(); }
    T& operator[](size_t i) { return data()[i]; }
    const T& operator[](size_t i) const { return data()[i]; }
    // From now on the parameters are memory[0, size()), which must hold them already.
    void lend(T* memory) { lent_ = memory; }
    // The network's own memory again, with the lent memory's values.
    void take_back() {
        if (!lent_) return;
        std::copy(lent_, lent_ + size(), owned_.begin());
        lent_ = nullptr;
    }
    bool is_lent() const { return lent_ != nullptr; }

private:
    std::vector<T> owned_;
    T* lent_ = nullptr;
};

template <typename T>
class Network {
public:
    explicit Network(const NetworkOptions& options);

    const NetworkOptions& options() const { return options_; }
    OptimizerOptions& optimizer_options() { return options_.optimizer; }
    const std::vector<LayerSlices>& layers() const { return layers_; }
    int64_t input_width() const { return options_.sizes.front(); }
    int64_t output_width() const { return options_.sizes.back(); }
    // Columns of a target row: 1 label (cross_entropy), D (gaussian_nll), else output width.
    int64_t target_width() const;
    const std::vector<std::string>& optimizer_state_names() const { return state_names_; }

    ParameterBuffer<T> params;
    std::vector<T> grads;
    std::vector<std::vector<T>> optimizer_state;  // one buffer per name, params' layout
    std::vector<T> running_mean, running_var;     // hidden widths concatenated (batch norm)
    int64_t step = 0;                             // optimizer steps taken
    // Whether the optimizer kernels look at their states for subnormals at the next step
    // (OptimizerStateScan, kernels.h): while the last look found some, and every 16th step.
    bool scan_optimizer_states = true;
    // Whether a step in one process whose gradient is finite for certain before its weight
    // gradients are made updates each W_l inside its weight-gradient GEMM (train_step); false
    // makes the whole gradient first, then updates (the same bits: for tests and benchmarks).
    bool update_in_weight_gradients = true;
    // scikit-learn's loss_ adds 0.5 alpha ||W||^2 / (a batch's weight sum) for every batch, at
    // the weights that batch saw. With track_weight_squares, each step taken adds the squared
    // norm of all weight matrices before it, times the batch's rows over its weight sum (1
    // without sample weights), to weight_squares_sum. Off by default: a pass over the weights.
    bool track_weight_squares = false;
    double weight_squares_sum = 0;
    // When > 0, a step's weight decay is the optimizer's times decay_reference_weight / (the
    // batch's weight sum: its rows without sample weights). scikit-learn's alpha decays by
    // alpha / (batch weight), so with decay_reference_weight = batch_size a full batch decays
    // by weight_decay and a shorter last batch by more. 0 (default): weight_decay as it is.
    double decay_reference_weight = 0;
    // scikit-learn's epoch loss averages the batches' (sample-weighted) mean losses by their
    // rows, not by their weights: each step taken adds its batch's mean loss times the
    // batch's rows to batch_mean_loss_sum (loss_sum's sum without sample weights). Always
    // kept: one multiply-add per step; the caller resets it.
    double batch_mean_loss_sum = 0;
    // Data-parallel training (fastmlp.training with an MPI communicator). When set, every
    // training step calls reduce_gradient between its gradient and its update, from the
    // calling thread outside any parallel region: grads then holds this rank's gradient of
    // its rows' loss summed (the mean times its normaliser: the rows' weight, with class
    // weights their sum of sample times class weight), reduction_figures its (mean loss times
    // normaliser, weight_sum, rows, correct, weighted_correct, 1 if its logits were not
    // finite else 0, normaliser) followed by running_mean and running_var. The hook replaces
    // the figures with their sums over the ranks (the running statistics with rank 0's) and
    // writes to reduction_partial the other ranks' sum of grads over updated_range(), to
    // which the step adds this rank's (in that order) as it divides by the summed normaliser
    // and checks finiteness, in one pass; then the same update on every rank. A rank whose
    // share of a batch is empty still takes part (a zero gradient).
    std::function<void()> reduce_gradient;
    std::vector<double> reduction_figures;
    std::vector<T> reduction_partial;
    // The optimizer sharded over the ranks (set together with reduce_gradient, or not at all):
    // each rank updates only params[update_begin, update_end), so reduce_gradient need only
    // sum that range of grads (a reduce-scatter); the step asks all_ranks_finite(whether
    // its range of the summed gradient is finite) whether every rank's is, updates its range,
    // and gather_params copies the other ranks' ranges of params in (an all-gather). The
    // optimizer state outside the range is left as it was: the caller gathers it when it
    // needs it whole. Each rank runs 1/P of the optimizer instead of all of it.
    std::function<bool(bool)> all_ranks_finite;
    std::function<void()> gather_params;
    int64_t update_begin = 0, update_end = 0;
    // Data-parallel steps by rows (set with the sharded optimizer, used by networks without
    // batch norm when [update_begin, update_end) begins and ends on rows of the weights:
    // parameter_chunks). Instead of each rank making the weight gradient of its rows and the
    // ranks summing it (reduce_gradient: 2 (P - 1) / P of the gradient through every rank), the
    // ranks share what the weight gradients are made from -- each layer's input and delta, a
    // few hundred rows -- and each rank makes the gradient of its own range of parameters
    // from all the global batch's rows, updating it as the GEMM finishes each strip (as one
    // process does): on 784-1024-1024-10 at batch 128, 1.2 MB of rows per step instead of
    // 7.4 MB of gradient, and no sum. The step calls sum_figures after its loss (the hook
    // replaces reduction_figures, as filled for reduce_gradient, by the ranks' sums), then,
    // after its deltas, gather_rows: every rank's rows_to_gather[i].local (local_rows rows of
    // width columns) into rows_to_gather[i].gathered (gathered_rows rows, rank 0's first).
    // The hook may instead leave the gathered rows in memory of its own (a node's shared
    // window) and set rows_to_gather[i].rows to it. It also replaces row_magnitudes (per layer:
    // the largest magnitude of this rank's input rows, then of its delta rows; infinity for
    // NaN/inf) by their largest over the ranks: the bounds that let the update run in the GEMMs.
    std::function<void()> sum_figures;
    std::function<void()> gather_rows;
    struct RowsToGather {
        const T* local;  // (local_rows, width)
        T* gathered;     // (gathered_rows, width), the step's own buffer
        const T* rows;   // (gathered_rows, width): where the step reads them (gathered, or the hook's)
        int64_t width;
    };
    std::vector<RowsToGather> rows_to_gather;
    int64_t local_rows = 0, gathered_rows = 0;
    std::vector<double> row_magnitudes;  // (2 L)
    // With parameters shared by the ranks of one node (params lent a shared window): called
    // after this rank's update instead of gather_params, with whether this rank saw every
    // parameter of its range finite as it wrote them; returns, once every rank's update is
    // done, whether every rank did.
    std::function<bool(bool)> params_written;
    // P + 1 offsets into params cutting it into P chunks as even as whole rows of the weights
    // allow (a layer's bias, gamma and beta go with its last row): the ranges for a sharded
    // optimizer that steps by rows.
    std::vector<int64_t> parameter_chunks(int64_t P) const;
    // Whether a training step now is a data-parallel step by rows.
    bool steps_by_rows() const;
    // Added to dropout's counter (times 2^40): each rank draws masks of its own. 0: a
    // single process's masks.
    uint64_t dropout_stream = 0;

    // compute_dtype="bfloat16" (float models only; the bindings refuse it for double): every
    // GEMM -- forward, the weight gradients and the input gradients -- is gemm_bfloat16,
    // its operands rounded to bfloat16 as it packs them, its sums float32; parameters,
    // gradients, optimizer state, activations, losses and every other sum stay T. May
    // change between calls (a float32-trained model switched to bfloat16 prediction).
    bool bfloat16_compute = false;
    // Says that the parameters (or bfloat16_compute) may have changed: the weights packed for
    // prediction (bfloat16, and float32) are made again before the next one. Every writer of
    // params outside an optimizer step (the bindings' assign and params view) calls it.
    // Lock-free: the bindings' params view calls it without the model's lock, possibly while
    // another thread predicts; packing then records the generation it packed, so a change
    // during packing leaves the packed weights stale for the next call, never current.
    void weights_changed() { weights_generation_.fetch_add(1, std::memory_order_acq_rel); }

    // Rows predict and evaluate compute at a time (a caller slicing a call in multiples of it
    // gets the same bits as one call).
    static constexpr int64_t eval_chunk_rows = 1024;
    // Whether every parameter is finite (an update with a huge learning rate can overflow
    // although its gradient was finite).
    bool params_finite() const;
    // Whether the parameters give finite evaluation-mode outputs on the batch of the last
    // step train_batches took (a finite update can still make them overflow the forward
    // pass): one forward of that batch, still in the workspace; true when there was none.
    bool outputs_finite_after_step();

    // One optimizer step on one batch x (B, s_0). Returns the batch's totals. When the loss or
    // a gradient is NaN or infinite the step is not taken (totals.finite is false; step,
    // parameters, optimizer state and batch norm's running statistics unchanged), so one bad
    // batch cannot turn every parameter into NaN. Labels are copied and checked first
    // (totals.bad_label_row).
    RunTotals train_step(const T* x, Targets<T> targets, int64_t B);
    // Batches [first_batch, first_batch + n_batches) of an epoch: batch k is the rows
    // order[k * batch_size ...] of X (N, s_0). With batch norm a trailing batch of a single
    // row is skipped (batch statistics need two rows). With a mixup plan each batch is
    // blended first (see MixupPlan). Stops at the first batch whose step is not finite
    // (totals.nonfinite_batch = k; the totals cover the batches before it).
    // With `bounds` (n_batches_in_epoch + 1 offsets into order) batch k is instead the rows
    // order[bounds[k] .. bounds[k + 1]) (a rank's shares of the global batches).
    RunTotals train_batches(InputRows<T> X, Targets<T> targets, const int64_t* order, int64_t N,
                            int64_t batch_size, int64_t first_batch, int64_t n_batches,
                            MixupPlan<T> mixup = {}, const int64_t* bounds = nullptr);
    // Gradients of the batch's mean loss into grads, no step; training-mode forward when
    // `training` (dropout counter of step + 1), running statistics left unchanged.
    RunTotals compute_gradients(const T* x, Targets<T> targets, int64_t B, bool training);
    // The same in evaluation mode over all N rows of X, a chunk of eval_chunk_rows at a time
    // (a sparse X densified one chunk at a time, never whole): each chunk's gradient, weighted
    // by its rows' share of the weight (rows, or sample weights), is summed in double in
    // chunk order, then grads holds the gradient of the whole set's mean loss. Not for class
    // weights, whose mean divides by per-class sums. Stops, like evaluate, at a bad label or
    // a malformed sparse row (totals say which).
    RunTotals compute_gradients_in_chunks(InputRows<T> X, Targets<T> targets, int64_t N);
    // Evaluation mode over rows [first, N) of X (N, s_0): out is (N, s_L), after the loss's
    // link. The rows go in chunks to num_threads() threads, each taking the next chunk when
    // it is done with one (so a thread whose core is busy holds nobody up), each chunk's
    // kernels on its thread alone; any split gives the same bits, since every GEMM path sums
    // each row in the canonical order (gemm_internal.h). One chunk, or one thread: the
    // calling thread, its kernels on num_threads(). Once a chunk is done, no chunk starts
    // after `deadline` (the caller looks for Ctrl-C, then goes on from progress.next).
    PredictionProgress predict(T* out, InputRows<T> X, int64_t first, int64_t N, Deadline deadline);
    // Cross-entropy only: labels[i] = argmax of predict's row i (the first maximum wins).
    //   labels is (N); X is (N, s_0). Runs as predict does.
    PredictionProgress predict_labels(int64_t* labels, InputRows<T> X, int64_t first, int64_t N,
                                      Deadline deadline);
    RunTotals evaluate(InputRows<T> X, Targets<T> targets, int64_t N);

private:
    // One prediction thread's buffers: per layer z, y, normed as the workspace's (rows, s_l+1);
    // x (rows, s_0) for densified sparse rows; probabilities (rows, s_L) for predict_labels.
    struct EvalBuffers {
        std::vector<std::vector<T>> z, y, normed;
        std::vector<T> x, probabilities;
        int64_t rows = 0;
    };
    void ensure_eval_buffers(int threads, int64_t rows);
    // With bfloat16_compute: each W_l packed for gemm_bfloat16_packed_b (pack_bfloat16_b, in
    // the layout of the instruction set in use: bfloat16 words for VDPBF16PS and AMX) once per
    // change of the weights or of the instruction set, for the evaluation forwards that
    // follow. Called with the model locked (the bindings' mutex), as everything that reads it.
    void prepare_bfloat16_weights();
    // Layer l's packed bfloat16 weights when they are current and in use, else data null.
    PackedBfloat16B bfloat16_weights(int64_t l) const;
    // Without bfloat16_compute, in a float model: each W_l packed for the packed path of the
    // float32 kernels in use (pack_float32_b) once per change of the weights or of the
    // kernels, for the evaluation forwards of more than one row that follow (one row takes
    // the row path, which reads W_l in place). Called with the model locked, as above, by
    // calls of 2 to float32_packing_rows rows: packing W_l costs ~10 rows' products, a few
    // per cent of a larger call, which is not worth a packed copy of the weights held on to.
    void prepare_float32_weights();
    static bool keeps_float32_weights_packed_for(int64_t rows) { return rows > 1 && rows <= float32_packing_rows; }
    static constexpr int64_t float32_packing_rows = 256;
    // Layer l's packed float32 weights when they are current and in use, else data null.
    PackedFloat32B float32_weights(int64_t l) const;
    // Notes in `first` the first of rows [start, start + B) whose C outputs are not all
    // finite, unless an earlier row is noted already (chunks finish in any order).
    static void note_nonfinite_rows(std::atomic<int64_t>& first, const T* outputs, int64_t start, int64_t B,
                                    int64_t C);
    // Rows [first_row, first_row + B) of X: X itself when dense, else densified into `dense`
    // (null when a row is malformed; *bad_row names it).
    const T* rows_of(InputRows<T> X, int64_t first_row, int64_t B, T* dense, int64_t* bad_row) const;
    // Runs compute(first_row, rows, buffers) -> bad row or -1 over the chunks of [first, N),
    // as predict describes.
    template <typename Compute>
    PredictionProgress run_prediction_chunks(int64_t first, int64_t N, Deadline deadline, Compute compute);
    void ensure_workspace(int64_t rows);
    // Copies the B labels into batch_labels_ (unless they are there already) and points
    // targets.labels at the copy; false, with the first label outside [0, C) and its row
    // (first_row + position) in totals, when one is.
    bool take_labels(Targets<T>& targets, int64_t B, int64_t first_row, RunTotals& totals);
    // Copy (or, with mixup, blend) the B rows at order[start...] into the batch buffers; a
    // sparse X is densified there. Each label is read once and checked as it is used: one
    // outside [0, C) is reported in totals.bad_label_row / bad_label (as a row of X), a
    // malformed sparse row in totals.bad_input_row, and the batch must then not be trained.
    Targets<T> gather_batch(InputRows<T> X, Targets<T> targets, const int64_t* order, int64_t start,
                            int64_t B, RunTotals& totals);
    Targets<T> gather_mixed_batch(InputRows<T> X, Targets<T> targets, const int64_t* order,
                                  const int64_t* partners, T lambda, int64_t start, int64_t B,
                                  RunTotals& totals);
    // Rows first_row .. first_row + B of X: X itself when dense, else densified into
    // batch_x_ (null when a row is malformed; *bad_row names it).
    const T* chunk_rows(InputRows<T> X, int64_t first_row, int64_t B, int64_t* bad_row);
    // Densifies B sparse rows (rows[i], or first_row + i) into out; -1 or the bad row of X.
    int64_t densify(T* out, InputRows<T> X, const int64_t* rows, int64_t first_row, int64_t B) const;
    const T* forward(const T* x, int64_t B, bool training, bool update_running_stats);
    // The evaluation-mode forward into the given per-layer buffers (the workspace's z_, y_,
    // normed_, or one prediction thread's): reads the parameters and running statistics
    // only, so threads with buffers of their own may run it at once.
    const T* forward_eval(const T* x, int64_t B, std::vector<std::vector<T>>& z,
                          std::vector<std::vector<T>>& y, std::vector<std::vector<T>>& normed) const;
    void batch_norm_forward_train(int64_t l, int64_t B, bool update_running_stats);
    // What layer l hands to layer l + 1 (after dropout in a training forward).
    const T* layer_output(int64_t l) const;
    // What layer l reads: x for the first layer, else layer_output(l - 1).
    const T* layer_input(int64_t l, const T* x) const { return l > 0 ? layer_output(l - 1) : x; }
    RunTotals loss_forward_backward(Targets<T> targets, int64_t B, bool backward);
    // sum_i s_i class_weights[y_i] over the batch's labelled rows (s_i = 1 without sample
    // weights): the cross-entropy's normaliser; 1 (not a factor) without class weights.
    double label_weight_total(Targets<T> targets, int64_t B) const;
    // What a batch's loss (totals from loss_forward_backward) divided by: its rows' weight,
    // with class weights their sum of sample weight times class weight.
    double loss_normaliser(const RunTotals& totals, Targets<T> targets, int64_t B) const;
    // Rows classified correctly: their count, and their sample weights summed (*weighted).
    int64_t count_correct(const T* logits, Targets<T> targets, int64_t B, double* weighted) const;
    // backward: propagate_deltas, then weight_gradients (the gradient of every parameter in grads).
    void backward(const T* x, int64_t B);
    const T* delta(int64_t l) const;  // (B, fan_out of layer l): the gradient with respect to z_l
    void propagate_deltas(int64_t B);
    void weight_gradients(const T* x, int64_t B);
    void weight_gradient(int64_t l, const T* x, int64_t B, const PreparedUpdate<T>* update,
                         std::atomic<bool>* found);
    void weight_gradient_rows(int64_t l, std::pair<int64_t, int64_t> rows, const T* input, const T* dz, int64_t K,
                              const PreparedUpdate<T>* update, std::atomic<bool>* found);
    bool gradient_finite_before_weight_gradients(const T* x, int64_t B) const;
    // Whether the gradient backward left in grads (for a step of B rows) is finite: backward
    // bounded each weight gradient or read it; the biases and batch norm's are read here.
    bool gradient_finite(int64_t B) const;
    bool weight_gradient_checked_finite_ = true;  // by the last weight_gradients
    void to_pre_activation_gradient(int64_t l, T* gradient, int64_t B);
    bool derivative_fuses_into_gemm(int64_t l) const;
    // One update of every parameter (with a sharded optimizer, of this rank's range), the
    // weight decay times decay_scale; in_weight_gradients: the weight gradients of the batch x
    // of B rows (across ranks by rows: the gathered rows) are made by it
    // (step_in_weight_gradients), else grads holds the gradient.
    void optimizer_step(double decay_scale, bool in_weight_gradients = false, const T* x = nullptr, int64_t B = 0);
    void take_step(const RunTotals& totals, bool in_weight_gradients, const T* x, int64_t B);
    void step_in_weight_gradients(const T* x, int64_t B, T weight_decay);
    // The parameters this process updates: [update_begin, update_end) with a sharded
    // optimizer, else all of them.
    std::pair<int64_t, int64_t> updated_range() const;
    // reduce_gradient's side of a step: hands grads (this rank's summed gradient), its totals,
    // whether its logits were finite and its loss's normaliser to the hook and returns the
    // ranks' totals, grads then the gradient of the global batch's weighted mean loss (in
    // updated_range()) and totals.finite whether every rank may take the step.
    RunTotals reduce_across_ranks(const RunTotals& local, bool logits_finite, double normaliser);
    // The step's figures for the hooks (the totals, then running_mean and running_var); the
    // totals from the ranks' figures (*normaliser: the global batch's); rank 0's running
    // statistics from them.
    void fill_reduction_figures(const RunTotals& local, bool logits_finite, double normaliser);
    RunTotals totals_from_reduction_figures(double* normaliser);
    void adopt_first_ranks_statistics();
    RunTotals train_step_by_rows(const T* x, Targets<T> targets, int64_t B);
    // Rows [first, last) of layer l's weights owned by this rank (first == last: none), and
    // whether the layer's bias, gamma and beta are.
    std::pair<int64_t, int64_t> owned_rows(int64_t l) const;
    bool owns_layer_rest(int64_t l) const;
    // Every rank's rows of each layer's input and delta (gathered_input(l), gathered_delta(l)).
    void gather_layer_rows(const T* x, int64_t B);
    const T* gathered_input(int64_t l) const;  // (gathered_rows, fan_in of layer l)
    const T* gathered_delta(int64_t l) const;  // (gathered_rows, fan_out of layer l)
    bool owned_params_seen_finite_ = false;   // by the last optimizer_step, in this rank's range
    double step_weight_squares_ = 0;          // weight_squares() at the start of the step (track_weight_squares)
    // The unfused order: this rank's range of the gradient made, whether it is finite.
    bool owned_weight_gradients_finite();
    // step_in_weight_gradients over this rank's range, from the gathered rows.
    void step_in_owned_weight_gradients(T weight_decay);
    // Batch norm's running statistics back to what they were before the step's forward.
    void restore_running_statistics();
    // Sum of the squares of every weight matrix's entries (not biases, gamma or beta), in double.
    double weight_squares() const;
    // The optimizer kernel over params[begin, end) and the same range of grads and of every
    // state buffer, with `weight_decay` in place of the option's.
    void update_range(int64_t begin, int64_t end, T weight_decay);
    // That kernel's update prepared for params[begin, ...) (and the states'), to run on pieces.
    PreparedUpdate<T> prepare_update(int64_t begin, T weight_decay);

    NetworkOptions options_;
    std::vector<LayerSlices> layers_;
    std::vector<std::string> state_names_;
    std::vector<int64_t> running_offsets_;  // per hidden layer into running_mean/var
    std::vector<T> class_weights_;
    // Workspace, sized for workspace_rows_ rows (network.cpp: ensure_workspace).
    std::vector<std::vector<T>> z_, y_, xhat_, normed_, mean_, invstd_, mask_, dropped_;
    std::vector<std::vector<T>> deltas_;
    // Steps by rows: per layer, the global batch's input and delta rows (gathered_rows rows);
    // weight_gradient_rows's copy of the input columns it reads, when not all of them.
    std::vector<std::vector<T>> gathered_inputs_, gathered_deltas_;
    std::vector<T> input_columns_;
    std::vector<T> loss_out_, batch_x_, batch_values_, batch_probabilities_;
    std::vector<T> batch_weights_, partner_x_;  // gathered sample weights; a mixup partner's row
    std::vector<int64_t> batch_labels_;
    // Batch norm's running statistics before the step in progress (put back when it is refused).
    std::vector<T> saved_running_mean_, saved_running_var_;
    int64_t workspace_rows_ = 0;
    // The batch of the last step taken, for outputs_finite_after_step (rows 0: none; a
    // train_step's batch belongs to its caller and is never looked at later).
    const T* last_step_x_ = nullptr;
    int64_t last_step_rows_ = 0;
    bool training_forward_ = false;
    std::vector<EvalBuffers> eval_buffers_;  // one per prediction thread
    // Per layer: the packed W_l (64-byte aligned) and its packing.
    struct PackedWeights {
        std::vector<float, CacheLineAllocator<float>> data;
        Bfloat16Packing packing = Bfloat16Packing::float_pairs;
    };
    std::vector<PackedWeights> bfloat16_weights_;
    // weights_changed() counts; the packed weights are current while the generation they
    // were packed at (kNotPacked while packing or before) is the count.
    static constexpr uint64_t kNotPacked = ~uint64_t(0);
    std::atomic<uint64_t> weights_generation_{0};
    std::atomic<uint64_t> bfloat16_weights_generation_{kNotPacked};
    // Per layer: the packed W_l (64-byte aligned) and the float32 kernels it is packed for.
    struct PackedFloat32Weights {
        std::vector<float, CacheLineAllocator<float>> data;
        const void* kernels = nullptr;
    };
    std::vector<PackedFloat32Weights> float32_weights_;
    std::atomic<uint64_t> float32_weights_generation_{kNotPacked};
    // The generation at which step_in_weight_gradients found every parameter it wrote finite
    // (kNotPacked: none), which params_finite then need not read again.
    std::atomic<uint64_t> params_finite_at_generation_{kNotPacked};
};

}  // namespace fastmlp
