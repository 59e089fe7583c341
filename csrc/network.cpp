// The model (network.h): forward, loss, backward and optimizer step over the flat buffers,
// and whole runs of batches gathered from the training set, all without allocation per step.
#include "network.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <exception>

#include "activation_math.h"

namespace fastmlp {

namespace {

std::vector<std::string> state_names_for(OptimizerKind kind) {
    switch (kind) {
        case OptimizerKind::sgd: return {"momentum_buffer"};
        case OptimizerKind::adagrad: return {"sum"};
        case OptimizerKind::adadelta: return {"square_avg", "acc_delta"};
        case OptimizerKind::rmsprop: return {"square_avg", "grad_avg", "momentum_buffer"};
        case OptimizerKind::adam:
        case OptimizerKind::adamw: return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    }
    return {};
}

template <typename T>
void resize_rows(std::vector<T>& buffer, int64_t rows, int64_t width) {
    buffer.assign(static_cast<size_t>(rows * width), T(0));
}

// x[i] *= factor for i < n (element-wise: any thread split gives the same bits).
template <typename T>
void scale_in_place(T* x, int64_t n, T factor) {
    const int threads = threads_for(static_cast<double>(n));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

// x[i] = (partial[i] + x[i]) * factor for i < n -- the other ranks' sum plus this rank's,
// then the mean's scale: two roundings, as an add and a scale pass would give -- and whether
// every result is finite. One pass over memory: each block is checked while still in L1.
template <typename T>
bool add_scale_all_finite(T* x, const T* partial, int64_t n, T factor) {
    const auto any_non_finite = activation_math::active_elementwise_loops<T>().any_non_finite;
    constexpr int64_t BLOCK = 4096;
    const int threads = threads_for(static_cast<double>(n));
    int found = 0;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1) reduction(| : found)
    for (int64_t begin = 0; begin < n; begin += BLOCK) {
        const int64_t end = std::min(n, begin + BLOCK);
        for (int64_t i = begin; i < end; ++i) x[i] = (partial[i] + x[i]) * factor;
        found |= any_non_finite(x + begin, end - begin) ? 1 : 0;
    }
    return !found;
}

// The largest |x[i]| for i < n, as a double: infinity when an element is NaN or infinite.
template <typename T>
double largest_magnitude(const T* x, int64_t n) {
    const T magnitude = activation_math::active_elementwise_loops<T>().largest_magnitude(x, n);
    return std::isfinite(magnitude) ? static_cast<double>(magnitude) : std::numeric_limits<double>::infinity();
}

// Whether dw = input^T dz and db = the column sums of dz (K = rows terms per element) are
// finite for certain, from their operands' largest magnitudes: every partial sum stays below
// K max|input| max|dz| (dw) or K max|dz| (db) times a rounding factor under 1.1 (K < 2^20;
// bfloat16's operand rounding adds under 1%), so bounds an eighth of T's largest value leave
// no room to overflow. A NaN or infinite operand makes a bound infinite.
//   input is (rows, fan_in), dz (rows, fan_out)
template <typename T>
bool gradient_cannot_overflow(double largest_input, double largest_dz, int64_t rows) {
    const double K = static_cast<double>(rows), limit = static_cast<double>(std::numeric_limits<T>::max()) / 8;
    return rows < (int64_t(1) << 20) && largest_dz * K < limit && largest_input * largest_dz * K < limit;
}

template <typename T>
bool layer_gradient_cannot_overflow(const T* input, const T* dz, int64_t rows, int64_t fan_in, int64_t fan_out) {
    return gradient_cannot_overflow<T>(largest_magnitude(input, rows * fan_in), largest_magnitude(dz, rows * fan_out),
                                       rows);
}

}  // namespace

std::string network_size_problem(const std::vector<int64_t>& sizes, bool batch_norm, int64_t element_size) {
    constexpr int64_t kMaxBytes = PTRDIFF_MAX;
    // a * b + c within kMaxBytes, or false.
    auto multiply_add = [](int64_t a, int64_t b, int64_t c, int64_t* out) {
        return !__builtin_mul_overflow(a, b, out) && !__builtin_add_overflow(*out, c, out) && *out <= kMaxBytes;
    };
    const size_t L = sizes.size() - 1;
    int64_t parameters = 0, row = sizes.front() + 2;
    for (size_t l = 0; l < L; ++l) {
        const int64_t fan_in = sizes[l], fan_out = sizes[l + 1];
        const int64_t per_unit = (batch_norm && l + 1 < L) ? 3 : 1;  // bias, [gamma, beta]
        int64_t weights = 0;
        if (!multiply_add(fan_in, fan_out, 0, &weights) || !multiply_add(per_unit, fan_out, weights, &weights) ||
            !multiply_add(1, weights, parameters, &parameters))
            return "need more parameters than the core can hold (layer " + std::to_string(l) + ", " +
                   std::to_string(fan_in) + " x " + std::to_string(fan_out) + ", and those before it)";
        // Up to seven (rows, fan_out) buffers per layer: z, y, xhat, normed, mask, dropped, delta.
        if (!multiply_add(7, fan_out, row, &row)) return "need a workspace row larger than the core can hold";
    }
    // The loss gradient, targets and probabilities.
    int64_t bytes = 0;
    if (!multiply_add(3, sizes.back(), row, &row) ||
        !multiply_add(row, element_size, 0, &bytes))
        return "need a workspace row larger than the core can hold";
    if (!multiply_add(parameters, element_size, 0, &bytes))
        return "need " + std::to_string(parameters) + " parameters of " + std::to_string(element_size) +
               " bytes: more than a buffer of the core can hold (" + std::to_string(kMaxBytes) + " bytes)";
    return "";
}

template <typename T>
Network<T>::Network(const NetworkOptions& options) : options_(options) {
    const auto& sizes = options_.sizes;
    const int64_t L = static_cast<int64_t>(sizes.size()) - 1;
    int64_t offset = 0, running_offset = 0;
    for (int64_t l = 0; l < L; ++l) {
        LayerSlices slices;
        slices.fan_in = sizes[l];
        slices.fan_out = sizes[l + 1];
        slices.weight = offset;
        offset += slices.fan_in * slices.fan_out;
        slices.bias = offset;
        offset += slices.fan_out;
        const bool hidden = l < L - 1;
        if (hidden && options_.batch_norm) {
            slices.gamma = offset;
            offset += slices.fan_out;
            slices.beta = offset;
            offset += slices.fan_out;
            running_offsets_.push_back(running_offset);
            running_offset += slices.fan_out;
        }
        layers_.push_back(slices);
    }
    class_weights_.assign(options_.class_weights.begin(), options_.class_weights.end());
    params.assign(static_cast<size_t>(offset), T(0));
    for (const auto& slices : layers_)
        if (slices.gamma >= 0)
            std::fill(params.begin() + slices.gamma, params.begin() + slices.gamma + slices.fan_out, T(1));
    grads.assign(params.size(), T(0));
    running_mean.assign(static_cast<size_t>(running_offset), T(0));
    running_var.assign(static_cast<size_t>(running_offset), T(1));
    saved_running_mean_.resize(running_mean.size());
    saved_running_var_.resize(running_var.size());

    state_names_ = state_names_for(options_.optimizer.kind);
    const T initial = options_.optimizer.kind == OptimizerKind::adagrad
                          ? static_cast<T>(options_.optimizer.initial_accumulator_value)
                          : T(0);
    optimizer_state.assign(state_names_.size(), std::vector<T>(params.size(), T(0)));
    if (!optimizer_state.empty()) std::fill(optimizer_state[0].begin(), optimizer_state[0].end(), initial);
}

template <typename T>
int64_t Network<T>::target_width() const {
    switch (options_.loss) {
        case Loss::cross_entropy: return 1;
        case Loss::gaussian_nll: return output_width() / 2;
        default: return output_width();
    }
}

// ---- workspace ---------------------------------------------------------------------------------

// Per layer l (width OUT = s_{l+1}), each (rows, OUT): z_ the dense output x W + b; normed_
// batch norm's output and xhat_ its normalised input (mean_/invstd_ per feature); y_ the
// activation's output (the logits for the output layer); mask_ and dropped_ dropout's mask
// and output; deltas_ the gradient with respect to z (hidden layers; the output layer's is
// loss_out_). Plus the loss gradient and a gathered batch.
template <typename T>
void Network<T>::ensure_workspace(int64_t rows) {
    if (rows <= workspace_rows_) return;
    const int64_t L = static_cast<int64_t>(layers_.size());
    for (auto* buffers : {&z_, &y_, &xhat_, &normed_, &mean_, &invstd_, &mask_, &dropped_})
        buffers->resize(L);
    for (int64_t l = 0; l < L; ++l) {
        const int64_t width = layers_[l].fan_out;
        resize_rows(z_[l], rows, width);
        resize_rows(y_[l], rows, width);
        if (layers_[l].gamma >= 0) {
            resize_rows(xhat_[l], rows, width);
            resize_rows(normed_[l], rows, width);
            resize_rows(mean_[l], 1, width);
            resize_rows(invstd_[l], 1, width);
        }
        if (options_.dropout > 0 && l < L - 1) {
            resize_rows(mask_[l], rows, width);
            resize_rows(dropped_[l], rows, width);
        }
    }
    deltas_.resize(L);
    for (int64_t l = 0; l + 1 < L; ++l) resize_rows(deltas_[l], rows, layers_[l].fan_out);
    resize_rows(loss_out_, rows, output_width());
    resize_rows(batch_x_, rows, input_width());
    resize_rows(batch_values_, rows, target_width());
    resize_rows(batch_weights_, rows, 1);
    resize_rows(partner_x_, 1, input_width());
    if (options_.loss == Loss::cross_entropy) resize_rows(batch_probabilities_, rows, output_width());
    batch_labels_.assign(static_cast<size_t>(rows), 0);
    workspace_rows_ = rows;
    last_step_rows_ = 0;  // a gathered batch it pointed to is gone
}

// ---- forward -------------------------------------------------------------------------------------

template <typename T>
const T* Network<T>::layer_output(int64_t l) const {
    const bool hidden = l + 1 < static_cast<int64_t>(layers_.size());
    if (hidden && options_.dropout > 0 && training_forward_) return dropped_[l].data();
    return y_[l].data();
}

template <typename T>
const T* Network<T>::forward(const T* x, int64_t B, bool training, bool update_running_stats) {
    training_forward_ = training;
    if (!training) return forward_eval(x, B, z_, y_, normed_);
    const int64_t L = static_cast<int64_t>(layers_.size());
    const T slope = static_cast<T>(options_.slope);
    const T* input = x;
    for (int64_t l = 0; l < L; ++l) {
        const LayerSlices& s = layers_[l];
        const T* w = params.data() + s.weight;
        const T* b = params.data() + s.bias;
        const bool hidden = l < L - 1;
        const Activation act = hidden ? options_.activations[l] : Activation::identity;
        if (s.gamma < 0) {
            // Only gelu's derivative reads the pre-activation; the others skip storing it.
            T* z = act == Activation::gelu ? z_[l].data() : nullptr;
            dense_forward(z, y_[l].data(), input, w, b, B, s.fan_in, s.fan_out, act, slope, bfloat16_compute);
        } else {
            dense_forward<T>(nullptr, z_[l].data(), input, w, b, B, s.fan_in, s.fan_out,
                             Activation::identity, slope, bfloat16_compute);
            batch_norm_forward_train(l, B, update_running_stats);
            activation_forward(y_[l].data(), normed_[l].data(), B * s.fan_out, act, slope);
        }
        if (hidden && options_.dropout > 0) {
            const uint64_t counter = static_cast<uint64_t>(step + 1) * 1024u + static_cast<uint64_t>(l) +
                                     (dropout_stream << 40);
            dropout_forward(dropped_[l].data(), mask_[l].data(), y_[l].data(), B * s.fan_out,
                            static_cast<T>(options_.dropout), options_.seed, counter);
        }
        input = layer_output(l);
    }
    return y_[L - 1].data();
}

template <typename T>
const T* Network<T>::forward_eval(const T* x, int64_t B, std::vector<std::vector<T>>& z,
                                  std::vector<std::vector<T>>& y,
                                  std::vector<std::vector<T>>& normed) const {
    const int64_t L = static_cast<int64_t>(layers_.size());
    const T slope = static_cast<T>(options_.slope);
    const T eps = static_cast<T>(options_.batch_norm_eps);
    const T* input = x;
    for (int64_t l = 0; l < L; ++l) {
        const LayerSlices& s = layers_[l];
        const T* w = params.data() + s.weight;
        const T* b = params.data() + s.bias;
        const Activation act = l < L - 1 ? options_.activations[l] : Activation::identity;
        if (s.gamma < 0) {
            // Only gelu's derivative reads the pre-activation (compute_gradients in evaluation
            // mode runs backward after this); the others skip storing it.
            T* pre_activation = act == Activation::gelu ? z[l].data() : nullptr;
            dense_forward(pre_activation, y[l].data(), input, w, b, B, s.fan_in, s.fan_out, act, slope,
                          bfloat16_compute, bfloat16_weights(l), float32_weights(l));
        } else {
            dense_forward<T>(nullptr, z[l].data(), input, w, b, B, s.fan_in, s.fan_out,
                             Activation::identity, slope, bfloat16_compute, bfloat16_weights(l), float32_weights(l));
            batchnorm_forward_eval(normed[l].data(), z[l].data(), params.data() + s.gamma,
                                   params.data() + s.beta, running_mean.data() + running_offsets_[l],
                                   running_var.data() + running_offsets_[l], B, s.fan_out, eps);
            activation_forward(y[l].data(), normed[l].data(), B * s.fan_out, act, slope);
        }
        input = y[l].data();
    }
    return y[L - 1].data();
}

template <typename T>
void Network<T>::batch_norm_forward_train(int64_t l, int64_t B, bool update_running_stats) {
    const LayerSlices& s = layers_[l];
    const T* gamma = params.data() + s.gamma;
    const T* beta = params.data() + s.beta;
    T* run_mean = running_mean.data() + running_offsets_[l];
    T* run_var = running_var.data() + running_offsets_[l];
    const T eps = static_cast<T>(options_.batch_norm_eps);
    // Gradient checks must not move the running statistics: update a copy then.
    std::vector<T> scratch_mean, scratch_var;
    if (!update_running_stats) {
        scratch_mean.assign(run_mean, run_mean + s.fan_out);
        scratch_var.assign(run_var, run_var + s.fan_out);
        run_mean = scratch_mean.data();
        run_var = scratch_var.data();
    }
    batchnorm_forward_train(normed_[l].data(), xhat_[l].data(), mean_[l].data(), invstd_[l].data(),
                            run_mean, run_var, z_[l].data(), gamma, beta, B, s.fan_out,
                            static_cast<T>(options_.batch_norm_momentum), eps);
}

// ---- loss --------------------------------------------------------------------------------------------

template <typename T>
RunTotals Network<T>::loss_forward_backward(Targets<T> targets, int64_t B, bool backward) {
    const T* logits = y_.back().data();
    const int64_t C = output_width();
    T* d_logits = loss_out_.data();
    const T* sample = targets.weights;
    RunTotals totals;
    totals.rows = B;
    totals.correct = count_correct(logits, targets, B, &totals.weighted_correct);
    totals.weight_sum = static_cast<double>(B);
    if (sample) {
        totals.weight_sum = 0;
        for (int64_t i = 0; i < B; ++i) totals.weight_sum += sample[i];
    }
    // Nothing to learn from when every row weighs 0 (sample weights, or for the cross-entropy
    // sample weight times class weight, torch's normaliser): loss and gradient 0, and the
    // batch counts rows but no weight, so it takes no step and no average sees it.
    if (totals.weight_sum == 0 || label_weight_total(targets, B) == 0) {
        totals.weight_sum = totals.weighted_correct = 0;
        if (backward) std::fill(d_logits, d_logits + B * C, T(0));
        return totals;
    }
    T loss = 0;
    switch (options_.loss) {
        case Loss::cross_entropy: {
            const T* weights = class_weights_.empty() ? nullptr : class_weights_.data();
            const T smoothing = static_cast<T>(options_.label_smoothing);
            // The probabilities are written into d_logits and turned into the gradient there.
            if (targets.probabilities) {
                softmax_xent_soft_forward(&loss, d_logits, logits, targets.probabilities, sample, B, C);
                if (backward)
                    softmax_xent_soft_backward(d_logits, d_logits, targets.probabilities, sample, B, C);
                break;
            }
            softmax_xent_forward(&loss, d_logits, logits, targets.labels, weights, sample, smoothing, B, C);
            if (backward)
                softmax_xent_backward(d_logits, d_logits, targets.labels, weights, sample, smoothing, B, C);
            break;
        }
        case Loss::mse:
            mse_forward(&loss, logits, targets.values, sample, B, C);
            if (backward) mse_backward(d_logits, logits, targets.values, sample, B, C);
            break;
        case Loss::bce:
            bce_logits_forward(&loss, logits, targets.values, sample, B, C);
            if (backward) bce_logits_backward(d_logits, logits, targets.values, sample, B, C);
            break;
        case Loss::gaussian_nll:
            gaussian_nll_forward(&loss, logits, targets.values, sample, B, C / 2);
            if (backward) gaussian_nll_backward(d_logits, logits, targets.values, sample, B, C / 2);
            break;
        case Loss::poisson:
            poisson_nll_forward(&loss, logits, targets.values, sample, B, C);
            if (backward) poisson_nll_backward(d_logits, logits, targets.values, sample, B, C);
            break;
    }
    totals.mean_loss = static_cast<double>(loss);
    totals.loss_sum = totals.mean_loss * totals.weight_sum;
    return totals;
}

template <typename T>
double Network<T>::label_weight_total(Targets<T> targets, int64_t B) const {
    if (class_weights_.empty() || !targets.labels) return 1;  // no class weights: not a factor
    double total = 0;
    for (int64_t i = 0; i < B; ++i)
        total += static_cast<double>(class_weights_[targets.labels[i]]) *
                 (targets.weights ? static_cast<double>(targets.weights[i]) : 1.0);
    return total;
}

template <typename T>
double Network<T>::loss_normaliser(const RunTotals& totals, Targets<T> targets, int64_t B) const {
    return class_weights_.empty() || totals.weight_sum == 0 ? totals.weight_sum : label_weight_total(targets, B);
}

template <typename T>
int64_t Network<T>::count_correct(const T* logits, Targets<T> targets, int64_t B,
                                  double* weighted) const {
    const int64_t C = output_width();
    const T* sample = targets.weights;
    int64_t correct = 0;
    double weighted_correct = 0;
    auto record = [&](int64_t i, bool right) {
        correct += right;
        if (right) weighted_correct += sample ? static_cast<double>(sample[i]) : 1.0;
    };
    if (options_.loss == Loss::cross_entropy) {
        for (int64_t i = 0; i < B; ++i) {
            const T* row = logits + i * C;
            const int64_t predicted = std::max_element(row, row + C) - row;
            int64_t expected;
            if (targets.probabilities) {
                const T* target_row = targets.probabilities + i * C;
                expected = std::max_element(target_row, target_row + C) - target_row;
            } else {
                expected = targets.labels[i];
            }
            record(i, predicted == expected);
        }
    } else if (options_.loss == Loss::bce) {
        for (int64_t i = 0; i < B; ++i) {
            bool all = true;
            for (int64_t c = 0; c < C; ++c)
                all = all && ((logits[i * C + c] > 0) == (targets.values[i * C + c] >= T(0.5)));
            record(i, all);
        }
    }
    *weighted = weighted_correct;
    return correct;
}

// ---- backward and step ---------------------------------------------------------------------------------

// Turns the gradient with respect to hidden layer l's output (what layer l + 1 read) into
// the gradient with respect to its dense pre-activation, in place: dropout, activation and
// batch norm backward.
template <typename T>
void Network<T>::to_pre_activation_gradient(int64_t l, T* gradient, int64_t B) {
    const LayerSlices& s = layers_[l];
    const int64_t n = B * s.fan_out;
    const Activation act = options_.activations[l];
    const T slope = static_cast<T>(options_.slope);
    if (options_.dropout > 0) dropout_backward(gradient, gradient, mask_[l].data(), n);
    if (s.gamma < 0) {
        activation_backward(gradient, gradient, z_[l].data(), y_[l].data(), n, act, slope);
    } else {
        activation_backward(gradient, gradient, normed_[l].data(), y_[l].data(), n, act, slope);
        batchnorm_backward(gradient, grads.data() + s.gamma, grads.data() + s.beta, gradient,
                           xhat_[l].data(), params.data() + s.gamma, invstd_[l].data(), B,
                           s.fan_out);
    }
}

// True when hidden layer l's activation derivative can be applied by the GEMM that computes
// the gradient of its output (no dropout or batch norm in between).
template <typename T>
bool Network<T>::derivative_fuses_into_gemm(int64_t l) const {
    return options_.dropout == 0 && layers_[l].gamma < 0;
}

// The gradient with respect to layer l's dense pre-activation.
template <typename T>
const T* Network<T>::delta(int64_t l) const {
    return l + 1 == static_cast<int64_t>(layers_.size()) ? loss_out_.data() : deltas_[l].data();
}

// Every layer's delta, from the output layer's (the loss gave it) down, with the weights as
// they are: all of them before any weight gradient, so that a step can update each W_l while
// its gradient is made (train_step).
template <typename T>
void Network<T>::propagate_deltas(int64_t B) {
    for (int64_t l = static_cast<int64_t>(layers_.size()) - 1; l >= 1; --l) {
        const LayerSlices& s = layers_[l];
        // dx = dz w^T; when layer l - 1 is plain, its activation derivative is applied to each
        // tile as it is finished.
        T* dx = deltas_[l - 1].data();
        GemmEpilogue<T> derivative;
        const bool fused = derivative_fuses_into_gemm(l - 1);
        if (fused) {
            derivative.kind = GemmEpilogueKind::activation_derivative;
            derivative.activation = options_.activations[l - 1];
            derivative.slope = static_cast<T>(options_.slope);
            derivative.x = z_[l - 1].data();
            derivative.y = y_[l - 1].data();
        }
        gemm_fused_in(bfloat16_compute, dx, delta(l), params.data() + s.weight, B, s.fan_in, s.fan_out, false,
                      /*transpose_b=*/true, false, derivative);
        if (!fused) to_pre_activation_gradient(l - 1, dx, B);
    }
}

// dw = input^T dz into grads, with db summed while dz is packed; with `update`, the optimizer's
// step of W_l run on each block of dw the GEMM finishes (found: as GemmEpilogue's).
template <typename T>
void Network<T>::weight_gradient(int64_t l, const T* x, int64_t B, const PreparedUpdate<T>* update,
                                 std::atomic<bool>* found) {
    weight_gradient_rows(l, {0, layers_[l].fan_in}, layer_input(l, x), delta(l), B, update, found);
}

// Rows [first, last) of weight_gradient's dw (db whole), from K rows of the layer's input and delta.
//   input (K, fan_in), dz (K, fan_out)
template <typename T>
void Network<T>::weight_gradient_rows(int64_t l, std::pair<int64_t, int64_t> rows, const T* input, const T* dz,
                                      int64_t K, const PreparedUpdate<T>* update, std::atomic<bool>* found) {
    const LayerSlices& s = layers_[l];
    const auto [first, last] = rows;
    const int64_t M = last - first;
    // dw's rows [first, last) read columns [first, last) of the input rows: copied out when they
    // are not all of them (the GEMM reads its operands whole).
    if (M < s.fan_in) {
        if (static_cast<int64_t>(input_columns_.size()) < K * M) input_columns_.resize(static_cast<size_t>(K * M));
        for (int64_t k = 0; k < K; ++k)
            std::copy(input + k * s.fan_in + first, input + k * s.fan_in + last, input_columns_.data() + k * M);
        input = input_columns_.data();
    }
    GemmEpilogue<T> epilogue;
    epilogue.b_column_sums = grads.data() + s.bias;
    if (update) {
        epilogue.kind = GemmEpilogueKind::update;
        epilogue.update = update;
        epilogue.found_state_outside_plain_range = found;
    }
    gemm_fused_in(bfloat16_compute, grads.data() + s.weight + first * s.fan_out, input, dz, M, s.fan_out, K,
                  /*transpose_a=*/true, false, false, epilogue);
}

template <typename T>
void Network<T>::backward(const T* x, int64_t B) {
    propagate_deltas(B);
    weight_gradients(x, B);
}

template <typename T>
void Network<T>::weight_gradients(const T* x, int64_t B) {
    weight_gradient_checked_finite_ = true;
    for (int64_t l = 0; l < static_cast<int64_t>(layers_.size()); ++l) {
        const LayerSlices& s = layers_[l];
        // Finiteness (for the step) from a bound on the operands, B (fan_in + fan_out) values in
        // cache against fan_in fan_out in memory (3.5 times fewer for 784-1024-1024-10's first
        // layer at 128 rows): dw itself is read only when the bound cannot rule an overflow
        // out. Across ranks the reduction checks the summed gradient instead.
        const bool bounded = reduce_gradient ||
                             layer_gradient_cannot_overflow(layer_input(l, x), delta(l), B, s.fan_in, s.fan_out);
        weight_gradient(l, x, B, nullptr, nullptr);
        if (!bounded && !all_finite(grads.data() + s.weight, s.fan_in * s.fan_out))
            weight_gradient_checked_finite_ = false;
    }
}

// Whether the gradient of the step whose deltas propagate_deltas left is finite for certain
// before its weight gradients and biases' are made: bounds on each layer's operands, and batch
// norm's gamma and beta gradients (made with the deltas) read.
template <typename T>
bool Network<T>::gradient_finite_before_weight_gradients(const T* x, int64_t B) const {
    for (int64_t l = 0; l < static_cast<int64_t>(layers_.size()); ++l) {
        const LayerSlices& s = layers_[l];
        if (!layer_gradient_cannot_overflow(layer_input(l, x), delta(l), B, s.fan_in, s.fan_out))
            return false;
        if (s.gamma >= 0 &&
            !(all_finite(grads.data() + s.gamma, s.fan_out) && all_finite(grads.data() + s.beta, s.fan_out)))
            return false;
    }
    return true;
}

template <typename T>
PreparedUpdate<T> Network<T>::prepare_update(int64_t begin, T weight_decay) {
    const OptimizerOptions& o = options_.optimizer;
    T* p = params.data() + begin;
    auto state = [this, begin](size_t k) { return optimizer_state[k].data() + begin; };
    const T lr = static_cast<T>(o.lr), wd = weight_decay, eps = static_cast<T>(o.eps);
    switch (o.kind) {
        case OptimizerKind::sgd:
            return prepare_sgd_update(p, state(0), lr, T(o.momentum), T(o.dampening), o.nesterov, wd, step);
        case OptimizerKind::adagrad:
            return prepare_adagrad_update(p, state(0), lr, T(o.lr_decay), wd, eps, step);
        case OptimizerKind::adadelta:
            return prepare_adadelta_update(p, state(0), state(1), lr, T(o.rho), eps, wd);
        case OptimizerKind::rmsprop:
            return prepare_rmsprop_update(p, state(0), state(1), state(2), lr, T(o.alpha), eps, wd, T(o.momentum),
                                          o.centered);
        case OptimizerKind::adam:
        case OptimizerKind::adamw:
            break;
    }
    return prepare_adam_update(p, state(0), state(1), state(2), lr, T(o.beta1), T(o.beta2), eps, wd, o.amsgrad,
                               o.kind == OptimizerKind::adamw, step, o.eps_hat);
}

template <typename T>
void Network<T>::update_range(int64_t begin, int64_t end, T weight_decay) {
    run_update(prepare_update(begin, weight_decay), grads.data() + begin, end - begin);
}

template <typename T>
std::pair<int64_t, int64_t> Network<T>::updated_range() const {
    if (gather_params) return {update_begin, update_end};
    return {0, static_cast<int64_t>(params.size())};
}

template <typename T>
void Network<T>::optimizer_step(double decay_scale, bool in_weight_gradients, const T* x, int64_t B) {
    ++step;
    weights_changed();
    const OptimizerOptions& o = options_.optimizer;
    const T wd = static_cast<T>(o.weight_decay * decay_scale);
    const int64_t n = static_cast<int64_t>(params.size());
    const auto [first, last] = updated_range();
    // A state decays by a factor of beta1 or momentum a step, so from 2^-100, where the
    // kernels begin to treat it apart, 16 steps at 0.9 leave it far from the subnormals (and
    // a state that gets there between two looks, or is written from outside, only slows).
    OptimizerStateScan scan(scan_optimizer_states || step % 16 == 1);
    struct ScanResult {  // kept however the step returns
        Network& network;
        const OptimizerStateScan& scan;
        ~ScanResult() {
            if (scan.check) network.scan_optimizer_states = scan.found;
        }
    } keep_result{*this, scan};
    owned_params_seen_finite_ = false;
    if (in_weight_gradients)
        return steps_by_rows() ? step_in_owned_weight_gradients(wd) : step_in_weight_gradients(x, B, wd);
    // The part of [begin, end) this process updates (the optimizers are element-wise).
    auto update_owned = [this, first = first, last = last](int64_t begin, int64_t end, T decay) {
        begin = std::max(begin, first);
        end = std::min(end, last);
        if (begin < end) update_range(begin, end, decay);
    };
    if (o.decay_biases || wd == T(0)) {  // one flat loop, torch's semantics
        update_owned(0, n, wd);
        return;
    }
    // A layer's weight matrix decays; what follows it up to the next layer's weights (its
    // bias, batch norm's gamma and beta) does not. 2 L kernel calls instead of one.
    const size_t L = layers_.size();
    for (size_t l = 0; l < L; ++l) {
        const int64_t weights_end = layers_[l].bias;
        const int64_t layer_end = l + 1 < L ? layers_[l + 1].weight : n;
        update_owned(layers_[l].weight, weights_end, wd);
        update_owned(weights_end, layer_end, T(0));
    }
}

// The step of a batch whose deltas propagate_deltas left and whose gradient is finite for
// certain: each layer's weight-gradient GEMM runs the optimizer on every block of W_l as it
// finishes the block's gradient, which the optimizer then reads from cache, not memory (on
// 784-1024-1024-10, 7.4 MB of gradient a step); then the layer's bias (its gradient summed
// by that GEMM) and batch norm's gamma and beta. Element-wise, so the same bits as
// weight_gradients and then optimizer_step.
//
// Each block's parameters are also looked at as they are written, so that params_finite
// (MLP.train_step's check after every step) need not read them all again: 0.17 ms a step on
// 784-1024-1024-10 at 2 threads.
template <typename T>
void Network<T>::step_in_weight_gradients(const T* x, int64_t B, T weight_decay) {
    const uint64_t generation = weights_generation_.load(std::memory_order_acquire);  // after this step's change
    const T bias_decay = options_.optimizer.decay_biases ? weight_decay : T(0);
    std::atomic<bool> found{false}, nonfinite{false};
    const int64_t L = static_cast<int64_t>(layers_.size()), n = static_cast<int64_t>(params.size());
    for (int64_t l = 0; l < L; ++l) {
        PreparedUpdate<T> update = prepare_update(layers_[l].weight, weight_decay);
        update.params_nonfinite = &nonfinite;
        weight_gradient(l, x, B, &update, &found);
        // The layer's bias (its gradient summed by that GEMM), batch norm's gamma and beta.
        const int64_t begin = layers_[l].bias, end = l + 1 < L ? layers_[l + 1].weight : n;
        PreparedUpdate<T> rest = prepare_update(begin, bias_decay);
        rest.params_nonfinite = &nonfinite;
        run_update(rest, grads.data() + begin, end - begin);
    }
    if (found.load()) note_state_outside_plain_range();
    if (!nonfinite.load()) params_finite_at_generation_.store(generation, std::memory_order_release);
}

template <typename T>
double Network<T>::weight_squares() const {
    // Eight running sums in a fixed order: the adds overlap (and vectorise) instead of
    // waiting on one another, and the result is the same bits every time.
    constexpr int64_t LANES = 8;
    double partial[LANES] = {};
    for (const LayerSlices& s : layers_) {
        const T* w = params.data() + s.weight;
        const int64_t n = s.fan_in * s.fan_out;
        int64_t i = 0;
        for (; i + LANES <= n; i += LANES)
            for (int64_t k = 0; k < LANES; ++k)
                partial[k] += static_cast<double>(w[i + k]) * static_cast<double>(w[i + k]);
        for (; i < n; ++i) partial[0] += static_cast<double>(w[i]) * static_cast<double>(w[i]);
    }
    return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
           ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

// ---- public entry points -------------------------------------------------------------------------------------

template <typename T>
bool Network<T>::params_finite() const {
    // A step inside the weight gradients looked at every parameter it wrote; any write since
    // (another step, a view of params, load) has changed the generation.
    if (params_finite_at_generation_.load(std::memory_order_acquire) ==
        weights_generation_.load(std::memory_order_acquire))
        return true;
    return all_finite(params.data(), static_cast<int64_t>(params.size()));
}

template <typename T>
bool Network<T>::outputs_finite_after_step() {
    const int64_t B = last_step_rows_;
    last_step_rows_ = 0;
    if (B == 0) return true;
    const T* logits = forward(last_step_x_, B, /*training=*/false, false);
    return all_finite(logits, B * output_width());
}

template <typename T>
bool Network<T>::take_labels(Targets<T>& targets, int64_t B, int64_t first_row, RunTotals& totals) {
    if (!targets.labels) return true;
    if (targets.labels != batch_labels_.data())
        std::memcpy(batch_labels_.data(), targets.labels, sizeof(int64_t) * static_cast<size_t>(B));
    targets.labels = batch_labels_.data();
    const int64_t C = output_width();
    for (int64_t i = 0; i < B; ++i) {
        if (batch_labels_[i] < 0 || batch_labels_[i] >= C) {
            totals.bad_label_row = first_row + i;
            totals.bad_label = batch_labels_[i];
            return false;
        }
    }
    return true;
}

template <typename T>
bool Network<T>::gradient_finite(int64_t B) const {
    // A step without rows filled grads with zeros, and backward did not run.
    if (!(B > 1 || (B == 1 && !options_.batch_norm))) return true;
    if (!weight_gradient_checked_finite_) return false;
    // The rest -- each layer's bias and batch norm's gamma and beta, after its weights -- is
    // read: a few thousand values.
    const int64_t n = static_cast<int64_t>(grads.size());
    for (size_t l = 0; l < layers_.size(); ++l) {
        const int64_t begin = layers_[l].bias;
        const int64_t end = l + 1 < layers_.size() ? layers_[l + 1].weight : n;
        if (!all_finite(grads.data() + begin, end - begin)) return false;
    }
    return true;
}

template <typename T>
RunTotals Network<T>::train_step(const T* x, Targets<T> targets, int64_t B) {
    ensure_workspace(B);
    RunTotals totals;
    if (!take_labels(targets, B, 0, totals)) return totals;
    // From the running statistics' update to the optimizer's: a fork waits for the end
    // (across ranks, it may happen during the reduction, which sees the state before the step).
    const ModelStateWrite write;
    // The forward moves the running statistics before the step is known to be finite.
    std::copy(running_mean.begin(), running_mean.end(), saved_running_mean_.begin());
    std::copy(running_var.begin(), running_var.end(), saved_running_var_.begin());
    // The weights as the step reads them, before any exchange: ranks sharing one copy of the
    // parameters begin to update their chunks as soon as they have met the others.
    step_weight_squares_ = track_weight_squares ? weight_squares() : 0.0;
    if (steps_by_rows()) return train_step_by_rows(x, targets, B);
    // In data-parallel training a rank's share of a global batch may be empty, or a single
    // row, which batch norm cannot train on: the rank then adds a zero gradient to the step.
    bool logits_finite = true;  // this rank's, for the ranks' agreement on why a step is refused
    double normaliser = 0;      // what the loss divided by: the rows' weight (class weights included)
    bool fused_step = false;
    if (B > 1 || (B == 1 && !options_.batch_norm)) {
        forward(x, B, /*training=*/true, /*update_running_stats=*/true);
        totals = loss_forward_backward(targets, B, /*backward=*/true);
        if (reduce_gradient) {
            logits_finite = all_finite(y_.back().data(), B * output_width());
            normaliser = loss_normaliser(totals, targets, B);
            // The mean's gradient times its normaliser: the gradient of the rows' weighted loss
            // summed, which the ranks add up (B x C values, where scaling grads would touch all).
            scale_in_place(loss_out_.data(), B * output_width(), static_cast<T>(normaliser));
        }
        propagate_deltas(B);
        // In one process, a step whose gradient is finite for certain before its weight
        // gradients exist updates each W_l as its gradient is made (step_in_weight_gradients).
        fused_step = update_in_weight_gradients && !reduce_gradient && totals.weight_sum > 0 && std::isfinite(totals.loss_sum) &&
                     gradient_finite_before_weight_gradients(x, B);
        if (!fused_step) weight_gradients(x, B);
    } else {
        std::fill(grads.begin(), grads.end(), T(0));
    }
    if (reduce_gradient)
        totals = reduce_across_ranks(totals, logits_finite, normaliser);
    else
        totals.finite = fused_step || (std::isfinite(totals.loss_sum) && gradient_finite(B));
    // Only on the rare refusal: whether the parameters themselves overflowed the forward pass
    // (across ranks: on any rank's rows, which the reduction said).
    if (!totals.finite && !reduce_gradient) totals.outputs_finite = all_finite(y_.back().data(), B * output_width());
    // A batch whose sample weights are all 0 has nothing to learn from: no step (a step of
    // zero gradient would still move momentum and weight decay). A step not taken changes
    // nothing: batch norm's running statistics go back to what they were.
    if (totals.finite && totals.weight_sum > 0)
        take_step(totals, fused_step, x, B);
    else
        restore_running_statistics();
    return totals;
}

// The update of a step whose gradient is finite (in grads, or made by the update: in_weight_
// gradients), its figures counted, and across ranks the ranks' ranges of params exchanged.
template <typename T>
void Network<T>::take_step(const RunTotals& totals, bool in_weight_gradients, const T* x, int64_t B) {
    const double rows = static_cast<double>(totals.rows);
    if (track_weight_squares)
        weight_squares_sum += step_weight_squares_ * rows / totals.weight_sum;
    batch_mean_loss_sum += totals.mean_loss * rows;
    optimizer_step(decay_reference_weight > 0 ? decay_reference_weight / totals.weight_sum : 1.0,
                   in_weight_gradients, x, B);
    if (params_written) {
        // Shared parameters: the ranks wait for each other's ranges, and learn whether all
        // were seen finite as they were written (then params_finite need not read them).
        const uint64_t generation = weights_generation_.load(std::memory_order_acquire);
        bool all_seen_finite = false;
        {
            const ModelStateWritePause pause;
            all_seen_finite = params_written(owned_params_seen_finite_);
        }
        if (all_seen_finite) params_finite_at_generation_.store(generation, std::memory_order_release);
    } else if (gather_params) {
        // The GIL again: a fork meanwhile sees this rank's range of params updated, the
        // rest not yet (the hook must take the GIL, which a forking thread holds).
        const ModelStateWritePause pause;
        gather_params();
    }
    last_step_x_ = x;
    last_step_rows_ = x == batch_x_.data() ? B : 0;
}

template <typename T>
void Network<T>::restore_running_statistics() {
    std::copy(saved_running_mean_.begin(), saved_running_mean_.end(), running_mean.begin());
    std::copy(saved_running_var_.begin(), saved_running_var_.end(), running_var.begin());
}

template <typename T>
void Network<T>::fill_reduction_figures(const RunTotals& local, bool logits_finite, double normaliser) {
    constexpr size_t scalars = 7;
    const size_t hidden = running_mean.size();
    reduction_figures.resize(scalars + 2 * hidden);
    double* figures = reduction_figures.data();
    figures[0] = local.mean_loss * normaliser;
    figures[1] = local.weight_sum;
    figures[2] = static_cast<double>(local.rows);
    figures[3] = static_cast<double>(local.correct);
    figures[4] = local.weighted_correct;
    figures[5] = logits_finite ? 0.0 : 1.0;
    figures[6] = normaliser;
    std::copy(running_mean.begin(), running_mean.end(), figures + scalars);
    std::copy(running_var.begin(), running_var.end(), figures + scalars + hidden);
    // The hooks take the GIL, which a thread in os.fork() holds while it waits for the state
    // writes in progress: the write pauses around a hook, the model as before the step (the
    // statistics this rank's forward moved are in figures), so a fork then sees a whole step.
    restore_running_statistics();
}

template <typename T>
RunTotals Network<T>::totals_from_reduction_figures(double* normaliser) {
    const double* figures = reduction_figures.data();
    RunTotals totals;
    totals.weight_sum = figures[1];
    totals.rows = static_cast<int64_t>(figures[2]);
    totals.correct = static_cast<int64_t>(figures[3]);
    totals.weighted_correct = figures[4];
    totals.outputs_finite = figures[5] == 0;
    *normaliser = figures[6];
    if (*normaliser > 0) {
        // The global batch's mean, as one process computes it; loss_sum weighs it as there.
        totals.mean_loss = figures[0] / *normaliser;
        totals.loss_sum = totals.mean_loss * totals.weight_sum;
    }
    return totals;
}

template <typename T>
void Network<T>::adopt_first_ranks_statistics() {
    constexpr size_t scalars = 7;
    const size_t hidden = running_mean.size();
    const double* figures = reduction_figures.data();
    std::copy(figures + scalars, figures + scalars + hidden, running_mean.begin());
    std::copy(figures + scalars + hidden, figures + scalars + 2 * hidden, running_var.begin());
}

template <typename T>
RunTotals Network<T>::reduce_across_ranks(const RunTotals& local, bool logits_finite, double normaliser) {
    fill_reduction_figures(local, logits_finite, normaliser);
    // The range of grads this rank sums, scales and updates: the hook leaves the other ranks'
    // sum of it in reduction_partial.
    const auto [begin, end] = updated_range();
    reduction_partial.resize(static_cast<size_t>(end - begin));  // allocates on the first step only
    {
        const ModelStateWritePause pause;
        reduce_gradient();
    }
    double global_normaliser = 0;
    RunTotals totals = totals_from_reduction_figures(&global_normaliser);
    const T factor = global_normaliser > 0 ? static_cast<T>(1.0 / global_normaliser) : T(1);
    const bool finite = add_scale_all_finite(grads.data() + begin, reduction_partial.data(), end - begin, factor);
    totals.finite = std::isfinite(totals.loss_sum) && finite;
    if (all_ranks_finite) {  // each rank saw its range: the step is taken on all or none
        const ModelStateWritePause pause;
        totals.finite = all_ranks_finite(totals.finite);
    }
    // Rank 0's running statistics, after the pauses (a fork in them sees the state before the step).
    adopt_first_ranks_statistics();
    return totals;
}

// ---- data-parallel steps by rows ------------------------------------------------------------------------

template <typename T>
std::vector<int64_t> Network<T>::parameter_chunks(int64_t P) const {
    const int64_t n = static_cast<int64_t>(params.size());
    // Where a chunk may begin: the start of a row of some layer's weights, or the end.
    auto nearest_row_start = [this, n](int64_t target) {
        int64_t best = n;
        for (const LayerSlices& s : layers_) {
            const int64_t row = std::clamp<int64_t>((target - s.weight + s.fan_out / 2) / s.fan_out, 0, s.fan_in - 1);
            const int64_t start = target < s.weight ? s.weight : s.weight + row * s.fan_out;
            if (std::llabs(start - target) < std::llabs(best - target)) best = start;
        }
        return best;
    };
    std::vector<int64_t> edges(static_cast<size_t>(P) + 1, n);
    edges[0] = 0;
    for (int64_t c = 1; c < P; ++c)
        edges[c] = std::max(edges[c - 1], nearest_row_start(static_cast<int64_t>((static_cast<double>(c) * n) / P)));
    return edges;
}

template <typename T>
std::pair<int64_t, int64_t> Network<T>::owned_rows(int64_t l) const {
    const LayerSlices& s = layers_[l];
    const int64_t begin = std::clamp(update_begin, s.weight, s.bias), end = std::clamp(update_end, s.weight, s.bias);
    return {(begin - s.weight) / s.fan_out, (end - s.weight) / s.fan_out};
}

template <typename T>
bool Network<T>::owns_layer_rest(int64_t l) const {
    const int64_t end = l + 1 < static_cast<int64_t>(layers_.size()) ? layers_[l + 1].weight
                                                                     : static_cast<int64_t>(params.size());
    return update_begin <= layers_[l].bias && end <= update_end;
}

// Steps by rows need the hooks, no batch norm (its statistics are each rank's: the ranks sum
// gamma's and beta's gradients with the rest), and a range that begins and ends on rows of
// the weights (a layer's rest owned with its last row).
template <typename T>
bool Network<T>::steps_by_rows() const {
    if (!(sum_figures && gather_rows && (gather_params || params_written)) || options_.batch_norm) return false;
    const int64_t n = static_cast<int64_t>(params.size());
    auto on_a_row = [this, n](int64_t offset) {
        if (offset == n) return true;
        for (const LayerSlices& s : layers_)
            if (offset >= s.weight && offset < s.bias) return (offset - s.weight) % s.fan_out == 0;
        return false;
    };
    return on_a_row(update_begin) && on_a_row(update_end);
}

// A data-parallel step by rows: this rank's loss, the ranks' figures summed, this rank's deltas
// for the global batch's mean loss, the ranks' rows shared, and then the gradient of this rank's
// range of the parameters from every row of the global batch, updated as it is made (as in one
// process) when bounds on those rows rule out an overflow; the ranks' ranges then exchanged.
// Every rank decides from the same figures and the same gathered rows, so all take the same path.
template <typename T>
RunTotals Network<T>::train_step_by_rows(const T* x, Targets<T> targets, int64_t B) {
    RunTotals local;
    bool logits_finite = true;
    double normaliser = 0;  // what this rank's loss divided by
    if (B > 0) {
        forward(x, B, /*training=*/true, /*update_running_stats=*/true);
        local = loss_forward_backward(targets, B, /*backward=*/true);
        logits_finite = all_finite(y_.back().data(), B * output_width());
        normaliser = loss_normaliser(local, targets, B);
    }
    fill_reduction_figures(local, logits_finite, normaliser);
    {
        const ModelStateWritePause pause;
        sum_figures();
    }
    double global_normaliser = 0;
    RunTotals totals = totals_from_reduction_figures(&global_normaliser);
    totals.finite = std::isfinite(totals.loss_sum);
    if (!totals.finite || totals.weight_sum == 0) return totals;  // no step, on every rank
    if (B > 0) {
        // The gradient of the global batch's weighted mean loss: this rank's mean's times its
        // share of the normaliser, then the deltas.
        scale_in_place(loss_out_.data(), B * output_width(), static_cast<T>(normaliser / global_normaliser));
        propagate_deltas(B);
    }
    gather_layer_rows(x, B);
    // The bounds of one process's step, from the largest magnitudes over every rank's rows.
    bool bounded = true;
    for (size_t l = 0; l < layers_.size() && bounded; ++l)
        bounded = gradient_cannot_overflow<T>(row_magnitudes[2 * l], row_magnitudes[2 * l + 1], gathered_rows);
    const bool fused = update_in_weight_gradients && bounded;
    if (!fused) {
        const bool finite = owned_weight_gradients_finite();
        const ModelStateWritePause pause;
        totals.finite = all_ranks_finite(finite);
    }
    if (totals.finite) take_step(totals, fused, x, B);
    return totals;
}

template <typename T>
void Network<T>::gather_layer_rows(const T* x, int64_t B) {
    const int64_t L = static_cast<int64_t>(layers_.size());
    const int64_t rows = static_cast<int64_t>(reduction_figures[2]);  // summed over the ranks
    gathered_inputs_.resize(static_cast<size_t>(L));
    gathered_deltas_.resize(static_cast<size_t>(L));
    rows_to_gather.clear();
    row_magnitudes.assign(2 * static_cast<size_t>(L), 0.0);
    for (int64_t l = 0; l < L; ++l) {
        const LayerSlices& s = layers_[l];
        if (static_cast<int64_t>(gathered_inputs_[l].size()) < rows * s.fan_in) resize_rows(gathered_inputs_[l], rows, s.fan_in);
        if (static_cast<int64_t>(gathered_deltas_[l].size()) < rows * s.fan_out) resize_rows(gathered_deltas_[l], rows, s.fan_out);
        const T* input = B > 0 ? layer_input(l, x) : gathered_inputs_[l].data();
        const T* dz = B > 0 ? delta(l) : gathered_deltas_[l].data();
        rows_to_gather.push_back({input, gathered_inputs_[l].data(), gathered_inputs_[l].data(), s.fan_in});
        rows_to_gather.push_back({dz, gathered_deltas_[l].data(), gathered_deltas_[l].data(), s.fan_out});
        // (read while this rank's rows are in cache; the hook takes the largest over the ranks)
        row_magnitudes[2 * l] = largest_magnitude(input, B * s.fan_in);
        row_magnitudes[2 * l + 1] = largest_magnitude(dz, B * s.fan_out);
    }
    local_rows = B;
    gathered_rows = rows;
    const ModelStateWritePause pause;
    gather_rows();
}

template <typename T>
const T* Network<T>::gathered_input(int64_t l) const {
    return rows_to_gather[2 * static_cast<size_t>(l)].rows;
}

template <typename T>
const T* Network<T>::gathered_delta(int64_t l) const {
    return rows_to_gather[2 * static_cast<size_t>(l) + 1].rows;
}

template <typename T>
bool Network<T>::owned_weight_gradients_finite() {
    for (int64_t l = 0; l < static_cast<int64_t>(layers_.size()); ++l) {
        const auto rows = owned_rows(l);
        if (rows.first < rows.second)
            weight_gradient_rows(l, rows, gathered_input(l), gathered_delta(l), gathered_rows, nullptr, nullptr);
    }
    return all_finite(grads.data() + update_begin, update_end - update_begin);
}

// step_in_weight_gradients for this rank's range: each layer's owned rows of dw made from the
// gathered rows with the update run on every finished strip, then the layer's bias when owned.
// The parameters are looked at as they are written (owned_params_seen_finite_), which ranks
// sharing one copy of them agree on instead of reading them all again after the step.
template <typename T>
void Network<T>::step_in_owned_weight_gradients(T weight_decay) {
    const T bias_decay = options_.optimizer.decay_biases ? weight_decay : T(0);
    std::atomic<bool> found{false}, nonfinite{false};
    const int64_t L = static_cast<int64_t>(layers_.size()), n = static_cast<int64_t>(params.size());
    for (int64_t l = 0; l < L; ++l) {
        const auto rows = owned_rows(l);
        if (rows.first == rows.second) continue;
        const LayerSlices& s = layers_[l];
        PreparedUpdate<T> update = prepare_update(s.weight + rows.first * s.fan_out, weight_decay);
        update.params_nonfinite = &nonfinite;
        weight_gradient_rows(l, rows, gathered_input(l), gathered_delta(l), gathered_rows, &update, &found);
        if (owns_layer_rest(l)) {
            const int64_t begin = s.bias, end = l + 1 < L ? layers_[l + 1].weight : n;
            PreparedUpdate<T> rest = prepare_update(begin, bias_decay);
            rest.params_nonfinite = &nonfinite;
            run_update(rest, grads.data() + begin, end - begin);
        }
    }
    if (found.load()) note_state_outside_plain_range();
    owned_params_seen_finite_ = !nonfinite.load();
}

template <typename T>
int64_t Network<T>::densify(T* out, InputRows<T> X, const int64_t* rows, int64_t first_row, int64_t B) const {
    const int64_t in = input_width();
    const int64_t bad = X.indices32
        ? csr_rows_to_dense(out, X.data, X.indices32, X.indptr, rows, first_row, B, X.nnz, in)
        : csr_rows_to_dense(out, X.data, X.indices64, X.indptr, rows, first_row, B, X.nnz, in);
    if (bad < 0) return -1;
    return rows ? rows[bad] : first_row + bad;
}

template <typename T>
const T* Network<T>::chunk_rows(InputRows<T> X, int64_t first_row, int64_t B, int64_t* bad_row) {
    return rows_of(X, first_row, B, batch_x_.data(), bad_row);
}

template <typename T>
const T* Network<T>::rows_of(InputRows<T> X, int64_t first_row, int64_t B, T* dense,
                             int64_t* bad_row) const {
    *bad_row = -1;
    if (!X.sparse()) return X.dense + first_row * input_width();
    *bad_row = densify(dense, X, nullptr, first_row, B);
    return *bad_row < 0 ? dense : nullptr;
}

template <typename T>
Targets<T> Network<T>::gather_batch(InputRows<T> X, Targets<T> targets, const int64_t* order,
                                    int64_t start, int64_t B, RunTotals& totals) {
    const int64_t in = input_width(), tw = target_width();
    if (X.sparse()) {
        totals.bad_input_row = densify(batch_x_.data(), X, order + start, 0, B);
        if (totals.bad_input_row >= 0) return Targets<T>{};
    }
    // Scattered rows of a large X come from memory, so both cores fetch (a copy: any split
    // gives the same bits). An element fetched from memory weighs as some 16 multiply-adds:
    // counted as one, a 128-row batch of 784 columns stayed on one thread.
    constexpr double kWorkPerFetchedElement = 16;
    const int threads = threads_for(kWorkPerFetchedElement * static_cast<double>(B) * static_cast<double>(in));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t i = 0; i < B; ++i) {
        const int64_t row = order[start + i];
        if (!X.sparse())
            std::memcpy(batch_x_.data() + i * in, X.dense + row * in, sizeof(T) * static_cast<size_t>(in));
        if (targets.labels) batch_labels_[i] = targets.labels[row];
        if (targets.values)
            std::memcpy(batch_values_.data() + i * tw, targets.values + row * tw,
                        sizeof(T) * static_cast<size_t>(tw));
        if (targets.weights) batch_weights_[i] = targets.weights[row];
    }
    Targets<T> batch;
    if (targets.values) batch.values = batch_values_.data();
    if (targets.labels) {
        // The copies are what the loss reads, so checking them leaves no window for a change.
        const int64_t C = output_width();
        for (int64_t i = 0; i < B; ++i) {
            if (batch_labels_[i] < 0 || batch_labels_[i] >= C) {
                totals.bad_label_row = order[start + i];
                totals.bad_label = batch_labels_[i];
                return batch;
            }
        }
        batch.labels = batch_labels_.data();
    }
    if (targets.weights) batch.weights = batch_weights_.data();
    return batch;
}

template <typename T>
Targets<T> Network<T>::gather_mixed_batch(InputRows<T> X, Targets<T> targets, const int64_t* order,
                                          const int64_t* partners, T lambda, int64_t start,
                                          int64_t B, RunTotals& totals) {
    const int64_t in = input_width(), tw = target_width(), C = output_width();
    const T other = T(1) - lambda;
    Targets<T> batch;
    for (int64_t i = 0; i < B; ++i) {
        const int64_t a = order[start + i], b = partners[start + i];
        T* x = batch_x_.data() + i * in;
        const T* xa = x;
        const T* xb = partner_x_.data();
        if (!X.sparse()) {
            xa = X.dense + a * in;
            xb = X.dense + b * in;
        } else {  // both rows densified first, then blended by the dense formula
            totals.bad_input_row = densify(x, X, order + start + i, 0, 1);
            if (totals.bad_input_row < 0)
                totals.bad_input_row = densify(partner_x_.data(), X, partners + start + i, 0, 1);
            if (totals.bad_input_row >= 0) return batch;
        }
        for (int64_t j = 0; j < in; ++j) x[j] = lambda * xa[j] + other * xb[j];
        if (targets.values) {
            T* t = batch_values_.data() + i * tw;
            for (int64_t j = 0; j < tw; ++j)
                t[j] = lambda * targets.values[a * tw + j] + other * targets.values[b * tw + j];
        }
        if (targets.labels) {
            // One-hot blend, then label smoothing: (1 - eps) * t + eps / C.
            const T eps = static_cast<T>(options_.label_smoothing);
            // Each label read once, into a local that is checked before it indexes.
            const int64_t label_a = targets.labels[a], label_b = targets.labels[b];
            if (label_a < 0 || label_a >= C || label_b < 0 || label_b >= C) {
                const bool a_bad = label_a < 0 || label_a >= C;
                totals.bad_label_row = a_bad ? a : b;
                totals.bad_label = a_bad ? label_a : label_b;
                return batch;
            }
            T* t = batch_probabilities_.data() + i * C;
            std::fill(t, t + C, eps / static_cast<T>(C));
            t[label_a] += (T(1) - eps) * lambda;
            t[label_b] += (T(1) - eps) * other;
        }
        if (targets.weights) {  // equal weights stay exact (all ones train as no weights)
            const T wa = targets.weights[a], wb = targets.weights[b];
            batch_weights_[i] = wa == wb ? wa : lambda * wa + other * wb;
        }
    }
    if (targets.values) batch.values = batch_values_.data();
    if (targets.labels) batch.probabilities = batch_probabilities_.data();
    if (targets.weights) batch.weights = batch_weights_.data();
    return batch;
}

template <typename T>
RunTotals Network<T>::train_batches(InputRows<T> X, Targets<T> targets, const int64_t* order, int64_t N,
                                    int64_t batch_size, int64_t first_batch, int64_t n_batches,
                                    MixupPlan<T> mixup, const int64_t* bounds) {
    int64_t widest = std::min(batch_size, N);
    if (bounds) {
        widest = 1;
        for (int64_t k = first_batch; k < first_batch + n_batches; ++k)
            widest = std::max(widest, bounds[k + 1] - bounds[k]);
    }
    ensure_workspace(widest);
    RunTotals totals;
    for (int64_t k = first_batch; k < first_batch + n_batches; ++k) {
        const int64_t start = bounds ? bounds[k] : k * batch_size;
        const int64_t B = bounds ? bounds[k + 1] - start : std::min(batch_size, N - start);
        // A rank's share of a global batch takes part in the ranks' step even when it is too
        // small to train on (train_step).
        if (!bounds && B <= 0) break;
        if (!bounds && B == 1 && options_.batch_norm) continue;  // batch statistics need two rows
        const Targets<T> batch_targets =
            B == 0 ? targets
            : mixup.partners
                ? gather_mixed_batch(X, targets, order, mixup.partners, mixup.lambdas[k], start, B, totals)
                : gather_batch(X, targets, order, start, B, totals);
        // Nothing of this batch was computed.
        if (totals.bad_label_row >= 0 || totals.bad_input_row >= 0) break;
        const RunTotals batch = train_step(batch_x_.data(), batch_targets, B);
        if (!batch.finite) {
            totals.nonfinite_batch = k;
            totals.outputs_finite = batch.outputs_finite;
            break;
        }
        totals.add_counts(batch);
    }
    return totals;
}

template <typename T>
RunTotals Network<T>::compute_gradients(const T* x, Targets<T> targets, int64_t B, bool training) {
    ensure_workspace(B);
    RunTotals totals;
    if (!take_labels(targets, B, 0, totals)) return totals;
    forward(x, B, training, /*update_running_stats=*/false);
    totals = loss_forward_backward(targets, B, /*backward=*/true);
    backward(x, B);
    return totals;
}

template <typename T>
RunTotals Network<T>::compute_gradients_in_chunks(InputRows<T> X, Targets<T> targets, int64_t N) {
    ensure_workspace(std::min(N, eval_chunk_rows));
    const int64_t tw = target_width();
    std::vector<double> weighted_sum(grads.size(), 0.0);
    RunTotals totals;
    for (int64_t start = 0; start < N; start += eval_chunk_rows) {
        const int64_t B = std::min(eval_chunk_rows, N - start);
        Targets<T> chunk = targets.from_row(start, tw);
        if (!take_labels(chunk, B, start, totals)) return totals;
        const T* x = chunk_rows(X, start, B, &totals.bad_input_row);
        if (!x) return totals;
        forward(x, B, /*training=*/false, false);
        const RunTotals part = loss_forward_backward(chunk, B, /*backward=*/true);
        backward(x, B);
        for (size_t k = 0; k < grads.size(); ++k) weighted_sum[k] += part.weight_sum * static_cast<double>(grads[k]);
        totals.add_counts(part);
    }
    const double inverse = totals.weight_sum > 0 ? 1.0 / totals.weight_sum : 0.0;
    for (size_t k = 0; k < grads.size(); ++k) grads[k] = static_cast<T>(weighted_sum[k] * inverse);
    return totals;
}

// ---- prediction ----------------------------------------------------------------------------------

namespace {

// Rows per chunk of a parallel prediction: about four chunks per thread, so that a thread
// slowed down by a busy core hands its share to the other, but at least 128 rows (each chunk
// packs the weights again: 784-256-10's first layer costs 1-2% of a 128-row chunk) and at
// most 512 (the chunk's activations stay in L2).
int64_t prediction_chunk_rows(int64_t rows, int threads) {
    const int64_t quarter = (rows + 4 * threads - 1) / (4 * threads);
    return std::clamp<int64_t>((quarter + 15) / 16 * 16, 128, 512);
}

}  // namespace

template <typename T>
void Network<T>::ensure_eval_buffers(int threads, int64_t rows) {
    if (static_cast<int64_t>(eval_buffers_.size()) < threads) eval_buffers_.resize(threads);
    const int64_t L = static_cast<int64_t>(layers_.size());
    for (int thread = 0; thread < threads; ++thread) {
        EvalBuffers& buffers = eval_buffers_[thread];
        if (buffers.rows >= rows) continue;
        for (auto* per_layer : {&buffers.z, &buffers.y, &buffers.normed}) per_layer->resize(L);
        for (int64_t l = 0; l < L; ++l) {
            const int64_t width = layers_[l].fan_out;
            resize_rows(buffers.y[l], rows, width);
            if (layers_[l].gamma >= 0 || (l < L - 1 && options_.activations[l] == Activation::gelu))
                resize_rows(buffers.z[l], rows, width);
            if (layers_[l].gamma >= 0) resize_rows(buffers.normed[l], rows, width);
        }
        resize_rows(buffers.x, rows, input_width());
        if (options_.loss == Loss::cross_entropy) resize_rows(buffers.probabilities, rows, output_width());
        buffers.rows = rows;
    }
}

template <typename T>
template <typename Compute>
PredictionProgress Network<T>::run_prediction_chunks(int64_t first, int64_t N, Deadline deadline,
                                                     Compute compute) {
    PredictionProgress progress{first, -1};
    if (first >= N) return progress;
    prepare_bfloat16_weights();
    if (keeps_float32_weights_packed_for(N - first)) prepare_float32_weights();
    const int64_t rows = N - first;
    int threads = num_threads();
    const int64_t chunk = prediction_chunk_rows(rows, threads);
    const int64_t chunks = (rows + chunk - 1) / chunk;
    if (threads <= 1 || chunks <= 1) {
        // The calling thread, one chunk after another; its kernels use the call's threads.
        const int64_t serial_chunk = std::min(rows, eval_chunk_rows);
        ensure_eval_buffers(1, serial_chunk);
        do {
            const int64_t B = std::min(serial_chunk, N - progress.next);
            progress.bad_row = compute(progress.next, B, eval_buffers_[0]);
            progress.next += B;
        } while (progress.bad_row < 0 && progress.next < N && std::chrono::steady_clock::now() < deadline);
        return progress;
    }
    threads = static_cast<int>(std::min<int64_t>(threads, chunks));
    ensure_eval_buffers(threads, chunk);
    // A chunk is claimed only by a thread that will compute it, so the chunks before
    // min(next_chunk, chunks) are all done when the team joins.
    std::atomic<int64_t> next_chunk{0}, first_bad_row{-1};
    std::atomic<bool> any_done{false}, stop{false};
    std::exception_ptr failure;
#pragma omp parallel num_threads(threads)
    {
        const ScopedCallThreads one_thread(1);
        EvalBuffers& buffers = eval_buffers_[omp_get_thread_num()];
        while (!stop.load(std::memory_order_relaxed)) {
            if (any_done.load(std::memory_order_relaxed) && std::chrono::steady_clock::now() >= deadline) break;
            const int64_t c = next_chunk.fetch_add(1);
            if (c >= chunks) break;
            const int64_t start = first + c * chunk, B = std::min(chunk, N - start);
            try {
                const int64_t bad = compute(start, B, buffers);
                if (bad >= 0) {  // the smallest wins: chunks before it are all computed
                    int64_t seen = first_bad_row.load();
                    while ((seen < 0 || bad < seen) && !first_bad_row.compare_exchange_weak(seen, bad)) {
                    }
                    stop.store(true);
                }
            } catch (...) {  // out of scratch memory: rethrown once the team has joined
#pragma omp critical(fastmlp_prediction_failure)
                if (!failure) failure = std::current_exception();
                stop.store(true);
            }
            any_done.store(true, std::memory_order_relaxed);
        }
    }
    if (failure) std::rethrow_exception(failure);
    progress.next = std::min(N, first + std::min(next_chunk.load(), chunks) * chunk);
    progress.bad_row = first_bad_row.load();
    return progress;
}

template <typename T>
void Network<T>::prepare_bfloat16_weights() {
    if constexpr (std::is_same_v<T, float>) {
        if (!bfloat16_compute) return;
        bfloat16_weights_.resize(layers_.size());
        const uint64_t generation = weights_generation_.load(std::memory_order_acquire);
        bool current = bfloat16_weights_generation_.load(std::memory_order_acquire) == generation;
        for (size_t l = 0; l < layers_.size(); ++l)  // set_isa may have changed the packing
            current = current && bfloat16_weights_[l].packing == bfloat16_packing(layers_[l].fan_out);
        if (current) return;
        // Not current until every layer is packed: a fork meanwhile leaves a child that packs again.
        bfloat16_weights_generation_.store(kNotPacked, std::memory_order_release);
        for (size_t l = 0; l < layers_.size(); ++l) {
            const LayerSlices& s = layers_[l];
            PackedWeights& packed = bfloat16_weights_[l];
            packed.packing = bfloat16_packing(s.fan_out);
            packed.data.resize(static_cast<size_t>(bfloat16_packed_b_size(packed.packing, s.fan_in, s.fan_out)));
            pack_bfloat16_b(packed.data.data(), packed.packing, params.data() + s.weight, s.fan_in, s.fan_out, false);
        }
        bfloat16_weights_generation_.store(generation, std::memory_order_release);
    }
}

template <typename T>
PackedBfloat16B Network<T>::bfloat16_weights(int64_t l) const {
    if (!bfloat16_compute || bfloat16_weights_generation_.load(std::memory_order_acquire) !=
                                 weights_generation_.load(std::memory_order_acquire))
        return {};
    return {bfloat16_weights_[l].data.data(), bfloat16_weights_[l].packing};
}

template <typename T>
void Network<T>::prepare_float32_weights() {
    if constexpr (std::is_same_v<T, float>) {
        if (bfloat16_compute) return;
        float32_weights_.resize(layers_.size());
        const void* kernels = float32_packing();
        const uint64_t generation = weights_generation_.load(std::memory_order_acquire);
        bool current = float32_weights_generation_.load(std::memory_order_acquire) == generation;
        for (const PackedFloat32Weights& packed : float32_weights_)  // set_isa may have changed the kernels
            current = current && packed.kernels == kernels;
        if (current) return;
        // Not current until every layer is packed: a fork meanwhile leaves a child that packs again.
        float32_weights_generation_.store(kNotPacked, std::memory_order_release);
        for (size_t l = 0; l < layers_.size(); ++l) {
            const LayerSlices& s = layers_[l];
            PackedFloat32Weights& packed = float32_weights_[l];
            packed.kernels = kernels;
            packed.data.resize(static_cast<size_t>(float32_packed_b_size(s.fan_in, s.fan_out)));
            pack_float32_b(packed.data.data(), params.data() + s.weight, s.fan_in, s.fan_out);
        }
        float32_weights_generation_.store(generation, std::memory_order_release);
    }
}

template <typename T>
PackedFloat32B Network<T>::float32_weights(int64_t l) const {
    if (bfloat16_compute || float32_weights_generation_.load(std::memory_order_acquire) !=
                                weights_generation_.load(std::memory_order_acquire))
        return {};
    return {float32_weights_[l].data.data(), float32_weights_[l].kernels};
}

template <typename T>
void Network<T>::note_nonfinite_rows(std::atomic<int64_t>& first, const T* outputs, int64_t start, int64_t B,
                                     int64_t C) {
    if (all_finite(outputs, B * C)) return;
    int64_t row = 0;
    while (all_finite(outputs + row * C, C)) ++row;
    int64_t seen = first.load();
    while ((seen < 0 || start + row < seen) && !first.compare_exchange_weak(seen, start + row)) {
    }
}

template <typename T>
PredictionProgress Network<T>::predict(T* out, InputRows<T> X, int64_t first, int64_t N, Deadline deadline) {
    const int64_t C = output_width();
    std::atomic<int64_t> nonfinite{-1};
    PredictionProgress progress =
        run_prediction_chunks(first, N, deadline, [&](int64_t start, int64_t B, EvalBuffers& buffers) {
        int64_t bad_row;
        const T* x = rows_of(X, start, B, buffers.x.data(), &bad_row);
        if (!x) return bad_row;
        const T* logits = forward_eval(x, B, buffers.z, buffers.y, buffers.normed);
        note_nonfinite_rows(nonfinite, logits, start, B, C);  // the forward pass overflowed
        T* rows_out = out + start * C;
        switch (options_.loss) {
            case Loss::cross_entropy: softmax_forward(rows_out, logits, B, C); break;
            case Loss::bce: activation_forward(rows_out, logits, B * C, Activation::sigmoid, T(0)); break;
            case Loss::poisson:
                for (int64_t k = 0; k < B * C; ++k) rows_out[k] = std::exp(logits[k]);
                break;
            default: std::memcpy(rows_out, logits, sizeof(T) * static_cast<size_t>(B * C)); break;
        }
        if (options_.loss == Loss::poisson) note_nonfinite_rows(nonfinite, rows_out, start, B, C);  // exp did
        return int64_t(-1);
    });
    progress.nonfinite_row = nonfinite.load();
    return progress;
}

template <typename T>
PredictionProgress Network<T>::predict_labels(int64_t* labels, InputRows<T> X, int64_t first, int64_t N,
                                              Deadline deadline) {
    const int64_t C = output_width();
    std::atomic<int64_t> nonfinite{-1};
    PredictionProgress progress =
        run_prediction_chunks(first, N, deadline, [&](int64_t start, int64_t B, EvalBuffers& buffers) {
        int64_t bad_row;
        const T* x = rows_of(X, start, B, buffers.x.data(), &bad_row);
        if (!x) return bad_row;
        const T* logits = forward_eval(x, B, buffers.z, buffers.y, buffers.normed);
        // The argmax of the probabilities, not of the logits: predict's rows then give the
        // same labels even where rounding makes two probabilities equal.
        T* probs = buffers.probabilities.data();
        note_nonfinite_rows(nonfinite, logits, start, B, C);
        softmax_forward(probs, logits, B, C);
        for (int64_t i = 0; i < B; ++i) {
            const T* row = probs + i * C;
            labels[start + i] = std::max_element(row, row + C) - row;
        }
        return int64_t(-1);
    });
    progress.nonfinite_row = nonfinite.load();
    return progress;
}

template <typename T>
RunTotals Network<T>::evaluate(InputRows<T> X, Targets<T> targets, int64_t N) {
    ensure_workspace(std::min(N, eval_chunk_rows));
    prepare_bfloat16_weights();
    if (keeps_float32_weights_packed_for(N)) prepare_float32_weights();
    const int64_t tw = target_width();
    RunTotals totals;
    for (int64_t start = 0; start < N; start += eval_chunk_rows) {
        const int64_t B = std::min(eval_chunk_rows, N - start);
        Targets<T> chunk = targets.from_row(start, tw);
        if (!take_labels(chunk, B, start, totals)) return totals;
        const T* x = chunk_rows(X, start, B, &totals.bad_input_row);
        if (!x) break;
        const T* logits = forward(x, B, /*training=*/false, false);
        std::atomic<int64_t> nonfinite{-1};
        note_nonfinite_rows(nonfinite, logits, start, B, output_width());
        if (nonfinite.load() >= 0) {
            totals.nonfinite_output_row = nonfinite.load();
            return totals;
        }
        const RunTotals part = loss_forward_backward(chunk, B, /*backward=*/false);
        totals.add_counts(part);
    }
    return totals;
}

template class Network<float>;
template class Network<double>;

}  // namespace fastmlp
