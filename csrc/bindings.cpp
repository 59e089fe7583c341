// The Python module fastmlp._core: thread control, build information and the network
// (NetworkFloat32 / NetworkFloat64). Every entry point checks dtypes and shapes itself, so
// no input reachable from Python can crash the interpreter, and releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels.h"
#include "network.h"

#ifndef FASTMLP_VERSION
#define FASTMLP_VERSION "dev"
#endif

namespace py = pybind11;
using namespace fastmlp;

void bind_kernels(py::module_& m);
void bind_gemm(py::module_& m);

namespace {

// ---- argument checks --------------------------------------------------------------------------

std::string shape_string(const py::array& array) {
    std::ostringstream out;
    out << "(";
    for (py::ssize_t d = 0; d < array.ndim(); ++d) out << (d ? ", " : "") << array.shape(d);
    out << (array.ndim() == 1 ? ",)" : ")");
    return out.str();
}

std::string list_string(const std::vector<int64_t>& values) {
    std::ostringstream out;
    out << "[";
    for (size_t k = 0; k < values.size(); ++k) out << (k ? ", " : "") << values[k];
    out << "]";
    return out.str();
}

// A C-contiguous array of exactly dtype T and the given rank (a copy when the input is
// not contiguous; never a silent dtype conversion).
template <typename T>
py::array_t<T, py::array::c_style> as_contiguous(const py::handle& object, const char* name, int ndim) {
    if (!py::isinstance<py::array>(object))
        throw py::type_error(std::string(name) + " must be a NumPy array");
    py::array array = py::reinterpret_borrow<py::array>(object);
    if (!array.dtype().is(py::dtype::of<T>()))
        throw py::type_error(std::string(name) + " must have dtype " +
                             std::string(py::str(py::dtype::of<T>())) + ", got " +
                             std::string(py::str(array.dtype())));
    if (array.ndim() != ndim)
        throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) +
                              "-D, got shape " + shape_string(array));
    // Already what ensure would return (its data, not a copy): skip NumPy's conversion
    // machinery, ~0.2 us of a one-row predict.
    if (array.flags() & py::array::c_style) return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(array);
    return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(array);
}

template <typename T>
py::array_t<T, py::array::c_style> input_rows(const py::handle& object, const char* name,
                                              int64_t width) {
    auto array = as_contiguous<T>(object, name, 2);
    if (array.shape(1) != width)
        throw py::value_error(std::string(name) + " must have " + std::to_string(width) +
                              " columns, got shape " + shape_string(array));
    if (array.shape(0) < 1) throw py::value_error(std::string(name) + " has no rows");
    return array;
}

// Whether X is what input_rows takes as it is, with no conversion and no error: an ndarray
// (not a subclass, as np.matrix or a masked array), of exactly dtype T, 2-D, C-contiguous,
// `width` columns, at least one row. MLP.predict's fast path asks here instead of in Python
// (~0.25 us of a one-row call), and converts and checks anything else as before.
template <typename T>
bool is_ready_rows(const py::handle& X, int64_t width) {
    if (Py_TYPE(X.ptr()) != py::detail::npy_api::get().PyArray_Type_) return false;
    const auto array = py::reinterpret_borrow<py::array>(X);
    return array.dtype().is(py::dtype::of<T>()) && array.ndim() == 2 && array.shape(0) > 0 &&
           array.shape(1) == width && (array.flags() & py::array::c_style);
}

// ---- sparse input -------------------------------------------------------------------------------

// A py::array_t holding no array (a null handle). A default-constructed py::array_t is a new
// empty NumPy array instead: CheckedRows' five of them cost ~0.6 us of a one-row predict.
template <typename Array>
Array no_array() {
    return py::reinterpret_steal<Array>(py::handle());
}

// X as the core reads it: a C-contiguous array, or a CSR matrix (any object with
// format == "csr", shape, data, indices and indptr, as scipy's csr_matrix / csr_array; scipy
// itself is never imported). Its arrays are checked for dtype and length here; the values of
// indptr and indices are checked by the kernel that reads them (csr_rows_to_dense), batch by
// batch, and a malformed row is reported by bad_row_message. Only the members of the input's
// kind hold an array: dense, or data, indices32 or indices64, and indptr.
template <typename T>
struct CheckedRows {
    using Values = py::array_t<T, py::array::c_style>;
    using Indices32 = py::array_t<int32_t, py::array::c_style>;
    using Indices64 = py::array_t<int64_t, py::array::c_style>;
    Values dense = no_array<Values>(), data = no_array<Values>();
    Indices32 indices32 = no_array<Indices32>();
    Indices64 indices64 = no_array<Indices64>(), indptr = no_array<Indices64>();
    bool sparse = false, wide_indices = false;
    int64_t rows = 0, cols = 0;
    InputRows<T> pointers() const {
        InputRows<T> input;
        if (!sparse) {
            input.dense = dense.data();
            return input;
        }
        input.data = data.data();
        if (wide_indices) input.indices64 = indices64.data();
        else input.indices32 = indices32.data();
        input.indptr = indptr.data();
        input.nnz = data.shape(0);
        return input;
    }
};

bool is_csr_matrix(const py::handle& object) {
    if (py::isinstance<py::array>(object) || !py::hasattr(object, "format")) return false;
    py::object format = object.attr("format");
    return py::isinstance<py::str>(format) && format.cast<std::string>() == "csr";
}

template <typename T>
CheckedRows<T> sparse_rows(const py::handle& object, const char* name, int64_t width) {
    CheckedRows<T> checked;
    checked.sparse = true;
    const std::string prefix = std::string(name) + " (a CSR matrix)";
    py::tuple shape = py::reinterpret_borrow<py::object>(object.attr("shape")).cast<py::tuple>();
    if (shape.size() != 2) throw py::value_error(prefix + " must be 2-D");
    checked.rows = shape[0].cast<int64_t>();
    checked.cols = shape[1].cast<int64_t>();
    if (checked.cols != width)
        throw py::value_error(prefix + " must have " + std::to_string(width) + " columns, got shape (" +
                              std::to_string(checked.rows) + ", " + std::to_string(checked.cols) + ")");
    if (checked.rows < 1) throw py::value_error(std::string(name) + " has no rows");
    const std::string data_name = std::string(name) + ".data", indices_name = std::string(name) + ".indices",
                      indptr_name = std::string(name) + ".indptr";
    checked.data = as_contiguous<T>(object.attr("data"), data_name.c_str(), 1);
    py::object indices = object.attr("indices");
    if (!py::isinstance<py::array>(indices))
        throw py::type_error(indices_name + " must be a NumPy array");
    const py::dtype index_dtype = py::reinterpret_borrow<py::array>(indices).dtype();
    checked.wide_indices = index_dtype.is(py::dtype::of<int64_t>());
    if (checked.wide_indices)
        checked.indices64 = as_contiguous<int64_t>(indices, indices_name.c_str(), 1);
    else if (index_dtype.is(py::dtype::of<int32_t>()))
        checked.indices32 = as_contiguous<int32_t>(indices, indices_name.c_str(), 1);
    else
        throw py::type_error(indices_name + " must have dtype int32 or int64, got " +
                             std::string(py::str(index_dtype)));
    const int64_t index_count = checked.wide_indices ? checked.indices64.shape(0) : checked.indices32.shape(0);
    if (index_count != checked.data.shape(0))
        throw py::value_error(indices_name + " has " + std::to_string(index_count) + " entries but " +
                              data_name + " has " + std::to_string(checked.data.shape(0)));
    // indptr is read as int64 (a copy of rows + 1 numbers when it is int32).
    py::array indptr = py::array::ensure(object.attr("indptr"));
    if (!indptr || indptr.dtype().kind() != 'i')
        throw py::type_error(indptr_name + " must be an integer NumPy array");
    checked.indptr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(indptr);
    if (checked.indptr.ndim() != 1 || checked.indptr.shape(0) != checked.rows + 1)
        throw py::value_error(indptr_name + " must have " + std::to_string(checked.rows + 1) +
                              " entries (rows + 1), got shape " + shape_string(checked.indptr));
    return checked;
}

template <typename T>
CheckedRows<T> checked_rows(const py::handle& object, const char* name, int64_t width) {
    if (is_csr_matrix(object)) return sparse_rows<T>(object, name, width);
    CheckedRows<T> checked;
    checked.dense = input_rows<T>(object, name, width);
    checked.rows = checked.dense.shape(0);
    checked.cols = width;
    return checked;
}

// Why row r of a CSR matrix was refused by csr_rows_to_dense.
template <typename T>
std::string bad_row_message(const CheckedRows<T>& checked, const char* name, int64_t r) {
    const int64_t* indptr = checked.indptr.data();
    const int64_t nnz = checked.data.shape(0), begin = indptr[r], end = indptr[r + 1];
    const std::string row = std::string(name) + " (a CSR matrix): row " + std::to_string(r);
    if (begin < 0 || begin > end || end > nnz)
        return row + " spans indptr[" + std::to_string(r) + "] = " + std::to_string(begin) + " to indptr[" +
               std::to_string(r + 1) + "] = " + std::to_string(end) + ", not a range within its " +
               std::to_string(nnz) + " stored entries";
    for (int64_t k = begin; k < end; ++k) {
        const int64_t column = checked.wide_indices ? checked.indices64.data()[k] : checked.indices32.data()[k];
        if (column < 0 || column >= checked.cols)
            return row + " has column index " + std::to_string(column) + " (indices[" + std::to_string(k) +
                   "]), outside [0, " + std::to_string(checked.cols) + ")";
    }
    return row + " is malformed";
}

// Rows of a checked input as one dense batch: the array itself, or the CSR rows densified
// (a batch given by the caller, such as train_step's: its size is the caller's choice).
template <typename T>
struct DenseBatch {
    std::vector<T> buffer;
    const T* rows = nullptr;
    int64_t bad_row = -1;
};

template <typename T>
DenseBatch<T> dense_batch(const CheckedRows<T>& checked) {
    DenseBatch<T> batch;
    if (!checked.sparse) {
        batch.rows = checked.dense.data();
        return batch;
    }
    batch.buffer.resize(static_cast<size_t>(checked.rows * checked.cols));
    const InputRows<T> input = checked.pointers();
    const int64_t bad = input.indices32
        ? csr_rows_to_dense(batch.buffer.data(), input.data, input.indices32, input.indptr, nullptr, 0,
                            checked.rows, input.nnz, checked.cols)
        : csr_rows_to_dense(batch.buffer.data(), input.data, input.indices64, input.indptr, nullptr, 0,
                            checked.rows, input.nnz, checked.cols);
    batch.bad_row = bad;
    batch.rows = batch.buffer.data();
    return batch;
}

template <typename T>
void raise_if_bad_row(const CheckedRows<T>& checked, const char* name, int64_t bad_row) {
    if (bad_row >= 0) throw py::value_error(bad_row_message(checked, name, bad_row));
}

// The Python layer's message for non-finite input, checked here on the fast paths that
// skip the Python checks.
template <typename T>
void require_finite(const py::array_t<T, py::array::c_style>& array, const char* name) {
    if (!all_finite(array.data(), static_cast<int64_t>(array.size())))
        throw py::value_error(std::string(name) + " contains NaN or infinity");
}

// Keeps the targets' arrays alive while their pointers are in use. (A default-constructed
// py::array_t is an empty array, not a null handle, hence the explicit flags.)
template <typename T>
struct CheckedTargets {
    py::array_t<int64_t, py::array::c_style> labels;
    py::array_t<T, py::array::c_style> values, weights;
    bool has_labels = false, has_values = false, has_weights = false;
    // The totals carry weight_sum and weighted_correct: with sample weights, and with class
    // weights (a batch whose class-weighted total is 0 counts rows but no weight).
    bool reports_weights = false;
    Targets<T> pointers() const {
        Targets<T> targets;
        if (has_labels) targets.labels = labels.data();
        if (has_values) targets.values = values.data();
        if (has_weights) targets.weights = weights.data();
        return targets;
    }
};

// Per-row sample weights (None: all ones): rows finite values >= 0 of the model's dtype.
template <typename T>
void check_sample_weight(CheckedTargets<T>& checked, const py::handle& object, int64_t rows) {
    if (object.is_none()) return;
    checked.weights = as_contiguous<T>(object, "sample_weight", 1);
    checked.has_weights = checked.reports_weights = true;
    if (checked.weights.shape(0) != rows)
        throw py::value_error("sample_weight must have one weight per row (" + std::to_string(rows) +
                              "), got shape " + shape_string(checked.weights));
    const T* w = checked.weights.data();
    for (int64_t i = 0; i < rows; ++i)
        if (!(std::isfinite(w[i]) && w[i] >= 0))
            throw py::value_error("sample_weight[" + std::to_string(i) + "] = " + std::to_string(w[i]) +
                                  " is not a finite number >= 0");
}

template <typename T>
CheckedTargets<T> check_targets(const Network<T>& network, const py::handle& object, int64_t rows) {
    CheckedTargets<T> checked;
    checked.reports_weights = !network.options().class_weights.empty();
    if (network.options().loss == Loss::cross_entropy) {
        checked.labels = as_contiguous<int64_t>(object, "y", 1);
        checked.has_labels = true;
        if (checked.labels.shape(0) != rows)
            throw py::value_error("y must have " + std::to_string(rows) + " labels, got " +
                                  std::to_string(checked.labels.shape(0)));
        const int64_t classes = network.output_width();
        const int64_t* labels = checked.labels.data();
        for (int64_t i = 0; i < rows; ++i)
            if (labels[i] < 0 || labels[i] >= classes)
                throw py::value_error("y[" + std::to_string(i) + "] = " + std::to_string(labels[i]) +
                                      " is not a class in [0, " + std::to_string(classes) + ")");
    } else {
        checked.values = as_contiguous<T>(object, "y", 2);
        checked.has_values = true;
        if (checked.values.shape(0) != rows || checked.values.shape(1) != network.target_width())
            throw py::value_error("y must have shape (" + std::to_string(rows) + ", " +
                                  std::to_string(network.target_width()) + "), got " +
                                  shape_string(checked.values));
    }
    return checked;
}

// A 1-D int64 array of indices, each a row of X (of `rows`); `count` of them, any number when
// count < 0 (an epoch may visit a subset of X's rows: fit's validation_split trains on the
// rows it keeps, indexed in place, without a copy).
py::array_t<int64_t, py::array::c_style> row_indices(const py::handle& object, const char* name,
                                                     int64_t rows, int64_t count = -1) {
    auto indices = as_contiguous<int64_t>(object, name, 1);
    if (count >= 0 && indices.shape(0) != count)
        throw py::value_error(std::string(name) + " must have one index per entry of order (" +
                              std::to_string(count) + "), got shape " + shape_string(indices));
    for (int64_t i = 0; i < indices.shape(0); ++i)
        if (indices.data()[i] < 0 || indices.data()[i] >= rows)
            throw py::value_error(std::string(name) + "[" + std::to_string(i) + "] is not a row of X");
    return indices;
}

// Keeps a mixup plan's arrays alive while their pointers are in use; empty when not mixing.
template <typename T>
struct CheckedMixup {
    py::array_t<int64_t, py::array::c_style> partners;
    py::array_t<T, py::array::c_style> lambdas;
    bool active = false;
    MixupPlan<T> plan() const {
        MixupPlan<T> mixup;
        if (active) {
            mixup.partners = partners.data();
            mixup.lambdas = lambdas.data();
        }
        return mixup;
    }
};

template <typename T>
CheckedMixup<T> check_mixup(const Network<T>& network, const py::handle& partners,
                            const py::handle& lambdas, int64_t rows, int64_t epoch_rows,
                            int64_t batches) {
    CheckedMixup<T> checked;
    if (partners.is_none() && lambdas.is_none()) return checked;
    if (partners.is_none() || lambdas.is_none())
        throw py::value_error("mixup needs both partners and lambdas");
    if (!network.options().class_weights.empty())
        throw py::value_error("mixup cannot be combined with class_weights");
    checked.partners = row_indices(partners, "partners", rows, epoch_rows);
    checked.active = true;
    checked.lambdas = as_contiguous<T>(lambdas, "lambdas", 1);
    if (checked.lambdas.shape(0) != batches)
        throw py::value_error("lambdas must have one value per batch of the epoch (" +
                              std::to_string(batches) + "), got " + shape_string(checked.lambdas));
    for (int64_t k = 0; k < batches; ++k) {
        const T lambda = checked.lambdas.data()[k];
        if (!(lambda >= 0 && lambda <= 1))
            throw py::value_error("lambdas[" + std::to_string(k) + "] = " + std::to_string(lambda) +
                                  " is not in [0, 1]");
    }
    return checked;
}

// train_batches' bounds: batch k of the epoch is order[bounds[k]:bounds[k + 1]]; empty when
// None (the batches are then batch_size rows each).
py::array_t<int64_t, py::array::c_style> checked_bounds(const py::handle& bounds, int64_t epoch_rows,
                                                        int64_t first_batch, int64_t n_batches) {
    if (bounds.is_none()) return py::array_t<int64_t, py::array::c_style>(0);
    auto checked = as_contiguous<int64_t>(bounds, "bounds", 1);
    const int64_t count = checked.shape(0);
    const int64_t* b = checked.data();
    if (count < 1 || b[0] != 0 || b[count - 1] != epoch_rows)
        throw py::value_error("bounds must run from 0 to len(order) (" + std::to_string(epoch_rows) + ")");
    for (int64_t k = 1; k < count; ++k)
        if (b[k] < b[k - 1]) throw py::value_error("bounds must be non-decreasing");
    if (first_batch + n_batches > count - 1)
        throw py::value_error("first_batch + n_batches is past the epoch's " + std::to_string(count - 1) +
                              " batches");
    return checked;
}

// (loss_sum, correct, rows), and with sample weights also (weight_sum, weighted_correct).
template <typename T>
py::tuple totals_tuple(const RunTotals& totals, const CheckedTargets<T>& targets) {
    if (targets.reports_weights)
        return py::make_tuple(totals.loss_sum, totals.correct, totals.rows, totals.weight_sum,
                              totals.weighted_correct);
    return py::make_tuple(totals.loss_sum, totals.correct, totals.rows);
}

// ---- the network --------------------------------------------------------------------------------

Activation activation_from_name(const std::string& name) {
    static const std::pair<const char*, Activation> table[] = {
        {"identity", Activation::identity}, {"sigmoid", Activation::sigmoid},
        {"tanh", Activation::tanh},         {"relu", Activation::relu},
        {"leaky_relu", Activation::leaky_relu}, {"gelu", Activation::gelu},
        {"step", Activation::step}};
    for (const auto& entry : table)
        if (name == entry.first) return entry.second;
    throw py::value_error("unknown activation '" + name +
                          "'; valid: identity, sigmoid, tanh, relu, leaky_relu, gelu, step");
}

template <typename E>
E enum_from_name(const std::string& what, const std::string& name,
                 std::initializer_list<std::pair<const char*, E>> table) {
    std::string valid;
    for (const auto& entry : table) {
        if (name == entry.first) return entry.second;
        valid += (valid.empty() ? "" : ", ") + std::string(entry.first);
    }
    throw py::value_error("unknown " + what + " '" + name + "'; valid: " + valid);
}

OptimizerOptions optimizer_from_dict(const py::dict& options) {
    OptimizerOptions o;
    for (auto item : options) {
        const std::string key = py::str(item.first);
        const py::handle value = item.second;
        if (key == "name")
            o.kind = enum_from_name<OptimizerKind>(
                "optimizer", value.cast<std::string>(),
                {{"sgd", OptimizerKind::sgd}, {"adagrad", OptimizerKind::adagrad},
                 {"adadelta", OptimizerKind::adadelta}, {"rmsprop", OptimizerKind::rmsprop},
                 {"adam", OptimizerKind::adam}, {"adamw", OptimizerKind::adamw}});
        else if (key == "lr") o.lr = value.cast<double>();
        else if (key == "weight_decay") o.weight_decay = value.cast<double>();
        else if (key == "momentum") o.momentum = value.cast<double>();
        else if (key == "dampening") o.dampening = value.cast<double>();
        else if (key == "nesterov") o.nesterov = value.cast<bool>();
        else if (key == "lr_decay") o.lr_decay = value.cast<double>();
        else if (key == "initial_accumulator_value") o.initial_accumulator_value = value.cast<double>();
        else if (key == "rho") o.rho = value.cast<double>();
        else if (key == "alpha") o.alpha = value.cast<double>();
        else if (key == "centered") o.centered = value.cast<bool>();
        else if (key == "beta1") o.beta1 = value.cast<double>();
        else if (key == "beta2") o.beta2 = value.cast<double>();
        else if (key == "amsgrad") o.amsgrad = value.cast<bool>();
        else if (key == "eps_hat") o.eps_hat = value.cast<bool>();
        else if (key == "eps") o.eps = value.cast<double>();
        else if (key == "decay_biases") o.decay_biases = value.cast<bool>();
        else throw py::value_error("unknown optimizer option '" + key + "'");
    }
    return o;
}

NetworkOptions network_options(const std::vector<int64_t>& sizes,
                               const std::vector<std::string>& activations,
                               const std::string& loss, const py::dict& optimizer, double dropout,
                               bool batch_norm, uint64_t seed,
                               const std::vector<double>& class_weights, double label_smoothing,
                               double slope, double batch_norm_momentum, double batch_norm_eps,
                               int64_t element_size) {
    NetworkOptions o;
    if (sizes.size() < 2) throw py::value_error("sizes needs at least an input and an output width");
    for (int64_t size : sizes)
        if (size < 1) throw py::value_error("every layer size must be >= 1, got " + std::to_string(size));
    const std::string too_large = network_size_problem(sizes, batch_norm, element_size);
    if (!too_large.empty()) throw py::value_error("layer sizes " + list_string(sizes) + " " + too_large);
    if (activations.size() != sizes.size() - 2)
        throw py::value_error("need one activation per hidden layer (" +
                              std::to_string(sizes.size() - 2) + "), got " +
                              std::to_string(activations.size()));
    o.sizes = sizes;
    for (const auto& name : activations) o.activations.push_back(activation_from_name(name));
    o.loss = enum_from_name<Loss>("loss", loss,
                                  {{"cross_entropy", Loss::cross_entropy}, {"mse", Loss::mse},
                                   {"bce", Loss::bce}, {"gaussian_nll", Loss::gaussian_nll},
                                   {"poisson", Loss::poisson}});
    if (o.loss == Loss::gaussian_nll && sizes.back() % 2 != 0)
        throw py::value_error("gaussian_nll needs an even output width (means and log-variances)");
    if (!(dropout >= 0 && dropout < 1))
        throw py::value_error("dropout must be in [0, 1), got " + std::to_string(dropout));
    if (!class_weights.empty() && static_cast<int64_t>(class_weights.size()) != sizes.back())
        throw py::value_error("class_weights needs one weight per class");
    o.optimizer = optimizer_from_dict(optimizer);
    o.dropout = dropout;
    o.batch_norm = batch_norm;
    o.seed = seed;
    o.class_weights = class_weights;
    o.label_smoothing = label_smoothing;
    o.slope = slope;
    o.batch_norm_momentum = batch_norm_momentum;
    o.batch_norm_eps = batch_norm_eps;
    return o;
}

// The most threads a model or the process may be given: far more than any machine's cores,
// far fewer than the count at which starting them fails inside libgomp (which aborts).
constexpr int kMaxThreads = 4096;
// The most optimizer steps a model may count: its step counter then never overflows.
constexpr int64_t kMaxStep = int64_t(1) << 62;

void check_thread_count(const char* name, int n, int minimum) {
    if (n < minimum || n > kMaxThreads)
        throw py::value_error(std::string(name) + " must be in [" + std::to_string(minimum) + ", " +
                              std::to_string(kMaxThreads) + "], got " + std::to_string(n));
}

// Predictions whose outputs came out NaN or infinite are refused rather than returned.
[[noreturn]] void throw_nonfinite_outputs(int64_t row) {
    const std::string message =
        "the model's outputs are NaN or infinite for row " + std::to_string(row) + " of X: its parameters "
        "overflow the forward pass (trained with too large a learning rate?); retrain with a lower one "
        "or replace the weights";
    PyErr_SetString(PyExc_FloatingPointError, message.c_str());
    throw py::error_already_set();
}

// The message for a label that changed after the boundary checked it (RunTotals::bad_label_row).
[[noreturn]] void throw_bad_label(const RunTotals& totals, int64_t classes, const char* consequence) {
    throw py::value_error("y[" + std::to_string(totals.bad_label_row) + "] = " +
                          std::to_string(totals.bad_label) + " is not a class in [0, " +
                          std::to_string(classes) + "): the labels changed while the call ran "
                          "(another thread or process wrote to them); " + consequence);
}

// The Python-facing model: the C++ network plus a mutex, so that calls from several Python
// threads on one model run one at a time instead of sharing the workspace. Recursive: a
// prediction keeps it over its whole call (one weight set) while it looks for Ctrl-C, and a
// signal handler run then on the same thread may use the model. Every holder takes it with the
// GIL released, so waiting for the GIL while holding it cannot deadlock.
template <typename T>
struct PyNetwork {
    explicit PyNetwork(const NetworkOptions& options) : network(options) {
        register_for_reset_after_fork(&mutex);
    }
    ~PyNetwork() { unregister_for_reset_after_fork(&mutex); }
    PyNetwork(const PyNetwork&) = delete;
    PyNetwork& operator=(const PyNetwork&) = delete;
    Network<T> network;
    std::recursive_mutex mutex;
    int num_threads = 0;  // this model's own thread count for its calls; 0: the process's
    int last_call_threads = 0;  // the thread count its last call ran with (for inspection)
    // Whether its large calls, training and prediction, run faster on one thread than on the
    // default count (learnt only while nobody chose the count: see CallThreads).
    ThreadLearner training_threads, prediction_threads;
    // The totals of the last train_batches call so far, kept up to date between its chunks:
    // when a signal handler's exception (Ctrl-C) ends the call, they still say which steps it
    // took and at what loss (MLP.fit records the interrupted epoch from them).
    RunTotals last_run;
    // The memory lent to network.params by share_params (an MPI shared window's array), kept
    // alive while lent.
    py::object lent_params;
};

// The rows a prediction entry point takes: X checked for dtype and width, and for NaN/inf
// when asked (MLP.predict's fast path skips the Python-side checks).
template <typename T>
CheckedRows<T> prediction_rows(PyNetwork<T>& model, const py::handle& X, bool check_finite) {
    auto xs = checked_rows<T>(X, "X", model.network.input_width());
    if (check_finite) require_finite(xs.sparse ? xs.data : xs.dense, "X");
    return xs;
}

// Multiply-adds per row of a forward pass, and of a training step (forward, dW everywhere,
// dX for every layer but the first): the work a call's thread count is chosen from.
template <typename T>
double forward_work_per_row(const Network<T>& network) {
    double work = 0;
    for (const auto& s : network.layers()) work += static_cast<double>(s.fan_in) * static_cast<double>(s.fan_out);
    return work;
}

template <typename T>
double training_work_per_row(const Network<T>& network) {
    const double first = static_cast<double>(network.layers().front().fan_in) * network.layers().front().fan_out;
    return 3 * forward_work_per_row(network) - first;
}

// One call's threads, decided once from its whole work (called with the model locked, GIL
// released): one thread for a small call; else the settings' count (the model's n_threads,
// set_num_threads, OMP_NUM_THREADS, threadpool_limits). When nobody chose it (the cores of
// the machine), the model's learner may pick one thread instead, from how fast its earlier
// large calls ran on each side.
// While it lives the choice is in force on this thread and last_call_threads says it.
template <typename T>
class CallThreads {
public:
    CallThreads(PyNetwork<T>& model, ThreadLearner& learner, double work)
        : settings_(model.num_threads), learner_(learner),
          choice_(decide(model, learner, work)), scoped_(choice_.threads),
          started_(std::chrono::steady_clock::now()) {
        model.last_call_threads = choice_.threads;
    }
    CallThreads(const CallThreads&) = delete;
    CallThreads& operator=(const CallThreads&) = delete;
    bool probe() const { return choice_.probe; }
    // Tells the learner how long the call took for `work` multiply-adds actually done.
    void finish(double work) {
        if (!learns_) return;
        const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - started_;
        learner_.record(choice_.threads, seconds.count(), work);
    }

private:
    ThreadChoice decide(PyNetwork<T>& model, ThreadLearner& learner, double work) {
        const int threads = num_threads();
        if (threads <= 1 || !call_is_parallel(work)) return {1, false};
        learns_ = num_threads_is_default();  // settings_ is in force: n_threads counts
        return learns_ ? learner.choose(threads) : ThreadChoice{threads, false};
    }

    ScopedCallThreads settings_;  // the model's n_threads, before anything reads the count
    ThreadLearner& learner_;
    bool learns_ = false;
    ThreadChoice choice_;
    ScopedCallThreads scoped_;
    std::chrono::steady_clock::time_point started_;
};

// How often a long run of batches looks for a pending signal (Ctrl-C). Python runs signal
// handlers only when it holds the GIL, so a run that released it checks by itself, between
// steps: the cost is one GIL round trip per interval, the delay at most an interval plus a
// step. Tests set 0 (check after every step) through _core._set_signal_check_interval.
std::atomic<int64_t> signal_check_interval_us{100000};

// Runs a prediction or evaluation over rows [0, N) with the GIL released, the model locked for
// the whole call and its threads (CallThreads, from the whole call's work): run(start, deadline)
// computes rows from `start` until it is done or `deadline` (one signal-check interval) has
// passed, and returns the next row (N: done or stopped); the GIL is taken between such runs to
// look for Ctrl-C, whose exception ends the call.
template <typename T, typename Run>
void run_prediction(PyNetwork<T>& model, int64_t N, Run run) {
    const auto interval = std::chrono::microseconds(signal_check_interval_us.load());
    py::gil_scoped_release release;
    std::lock_guard<std::recursive_mutex> lock(model.mutex);
    const double work = static_cast<double>(N) * forward_work_per_row(model.network);
    CallThreads<T> threads(model, model.prediction_threads, work);
    for (int64_t start = 0; start < N;) {
        start = run(start, std::chrono::steady_clock::now() + interval);
        if (start < N) {
            py::gil_scoped_acquire acquire;
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
    }
    threads.finish(work);
}

// Ends a run of run_prediction: the next row, or N once a malformed row stopped it; keeps
// the first row of non-finite outputs (runs go in row order).
inline int64_t next_row(const PredictionProgress& progress, int64_t N, int64_t& bad_row, int64_t& nonfinite_row) {
    if (nonfinite_row < 0) nonfinite_row = progress.nonfinite_row;
    if (progress.bad_row < 0) return progress.next;
    bad_row = progress.bad_row;
    return N;
}

// Network::train_batches one batch at a time, from batch `next` until batch `end` or until
// `interval` has passed (at least one batch). Adds to `totals`; returns the next batch (`end`
// after a step refused as NaN/inf, whose batch totals.nonfinite_batch names).
template <typename T>
int64_t train_batches_for(Network<T>& network, RunTotals& totals, InputRows<T> X, Targets<T> targets,
                          const int64_t* order, int64_t rows, int64_t batch_size, int64_t next,
                          int64_t end, std::chrono::microseconds interval, MixupPlan<T> mixup,
                          const int64_t* bounds) {
    const auto started = std::chrono::steady_clock::now();
    do {
        const RunTotals batch = network.train_batches(X, targets, order, rows, batch_size, next, 1, mixup, bounds);
        totals.add_counts(batch);
        if (batch.bad_label_row >= 0) {  // a label changed under the run: it ends here
            totals.bad_label_row = batch.bad_label_row;
            totals.bad_label = batch.bad_label;
            return end;
        }
        if (batch.nonfinite_batch >= 0) {  // the step was refused: the run ends here
            totals.nonfinite_batch = batch.nonfinite_batch;
            // Parameters an earlier update of this interval overflowed (or made overflow the
            // forward pass: NaN/inf logits) make the loss NaN: say so.
            if (!batch.outputs_finite || !network.params_finite()) totals.finite = false;
            return end;
        }
        if (batch.bad_input_row >= 0) {  // a malformed sparse row: the batch was not trained
            totals.bad_input_row = batch.bad_input_row;
            return end;
        }
        ++next;
        // The ranks of a data-parallel fit run intervals of their own length, so they look
        // after every step instead, all finding an overflow at the same one (a scan of the
        // parameters, well under 1% of a step).
    } while (next < end && std::chrono::steady_clock::now() - started < interval && !network.reduce_gradient);
    // A finite gradient can still overflow the update (a huge learning rate): checked once per
    // interval, not per step, so the scan costs nothing measurable. The run ends at the last
    // step taken, which the caller is told made the parameters non-finite.
    if (!network.params_finite()) {
        totals.nonfinite_batch = next - 1;
        totals.finite = false;
        return end;
    }
    return next;
}

// A NumPy view of a buffer owned by the model (kept alive by the view's base).
template <typename Buffer>
auto view_of(Buffer& buffer, py::handle owner) {
    using T = std::remove_pointer_t<decltype(buffer.data())>;
    return py::array_t<T>({static_cast<py::ssize_t>(buffer.size())}, {sizeof(T)}, buffer.data(), owner);
}

// The getter and setter of one of the network's flags, the setter under the model's lock.
template <typename T>
auto locked_flag(bool Network<T>::*flag) {
    auto get = [flag](PyNetwork<T>& model) { return model.network.*flag; };
    auto set = [flag](PyNetwork<T>& model, bool on) {
        py::gil_scoped_release release;
        std::lock_guard<std::recursive_mutex> lock(model.mutex);
        model.network.*flag = on;
    };
    return std::make_pair(get, set);
}

template <typename T>
void bind_network(py::module_& m, const char* name) {
    using Model = PyNetwork<T>;
    const auto update_in_weight_gradients = locked_flag<T>(&Network<T>::update_in_weight_gradients);
    const auto track_weight_squares = locked_flag<T>(&Network<T>::track_weight_squares);
    py::class_<Model>(m, name, "An MLP's flat buffers, workspace and training loop in C++")
        .def(py::init([](const std::vector<int64_t>& sizes, const std::vector<std::string>& activations,
                         const std::string& loss, const py::dict& optimizer, double dropout,
                         bool batch_norm, uint64_t seed, const std::vector<double>& class_weights,
                         double label_smoothing, double slope, double batch_norm_momentum,
                         double batch_norm_eps) {
                 return new Model(network_options(sizes, activations, loss, optimizer, dropout,
                                                  batch_norm, seed, class_weights, label_smoothing,
                                                  slope, batch_norm_momentum, batch_norm_eps,
                                                  static_cast<int64_t>(sizeof(T))));
             }),
             py::arg("sizes"), py::arg("activations"), py::arg("loss"), py::arg("optimizer"),
             py::arg("dropout") = 0.0, py::arg("batch_norm") = false, py::arg("seed") = 0,
             py::arg("class_weights") = std::vector<double>{}, py::arg("label_smoothing") = 0.0,
             py::arg("slope") = 0.01, py::arg("batch_norm_momentum") = 0.1,
             py::arg("batch_norm_eps") = 1e-5)
        .def_property_readonly("params", [](py::object self) {
            Model& model = self.cast<Model&>();
            // Whoever holds the view may write the weights through it.
            model.network.weights_changed();
            return view_of(model.network.params, self); },
            "the flat parameter buffer (a writable view)")
        .def_property_readonly("grads", [](py::object self) {
            return view_of(self.cast<Model&>().network.grads, self); },
            "the flat gradient buffer of the last backward (a view)")
        .def_property_readonly("running_mean", [](py::object self) {
            return view_of(self.cast<Model&>().network.running_mean, self); })
        .def_property_readonly("running_var", [](py::object self) {
            return view_of(self.cast<Model&>().network.running_var, self); })
        .def_property_readonly("optimizer_state", [](py::object self) {
            Model& model = self.cast<Model&>();
            py::dict state;
            const auto& names = model.network.optimizer_state_names();
            for (size_t k = 0; k < names.size(); ++k)
                state[py::str(names[k])] = view_of(model.network.optimizer_state[k], self);
            return state; }, "name -> flat buffer (views), the layout of params")
        .def_property("step", [](Model& model) { return model.network.step; },
                      [](Model& model, int64_t step) {
                          if (step < 0 || step > kMaxStep)
                              throw py::value_error("step must be in [0, 2**62], got " + std::to_string(step));
                          model.network.step = step; })
        .def_property("bfloat16_compute", [](Model& model) { return model.network.bfloat16_compute; },
                      [](Model& model, bool on) {
                          if (on && !std::is_same_v<T, float>)
                              throw py::value_error("compute_dtype='bfloat16' needs a float32 model, this one is float64");
                          py::gil_scoped_release release;
                          std::lock_guard<std::recursive_mutex> lock(model.mutex);
                          model.network.bfloat16_compute = on;
                          model.network.weights_changed(); },
                      "when True (float32 models), every GEMM rounds its operands to bfloat16 and sums "
                      "in float32 (kernels.gemm_bfloat16); parameters and everything else stay float32")
        .def_property("update_in_weight_gradients", update_in_weight_gradients.first,
                      update_in_weight_gradients.second, "when True (default), a step in one process updates each weight matrix inside the GEMM "
                      "that makes its gradient, block by block; False makes the whole gradient first (the same bits)")
        .def_property("track_weight_squares", track_weight_squares.first, track_weight_squares.second,
                      "when True, every optimizer step adds ||W||^2 before it (all weight matrices), "
                      "times the batch's rows over its weight sum, to weight_squares_sum")
        .def_property("weight_squares_sum", [](Model& model) { return model.network.weight_squares_sum; },
                      [](Model& model, double value) {
                          if (!(value >= 0) || !std::isfinite(value))
                              throw py::value_error("weight_squares_sum must be a finite number >= 0");
                          py::gil_scoped_release release;
                          std::lock_guard<std::recursive_mutex> lock(model.mutex);
                          model.network.weight_squares_sum = value; },
                      "what track_weight_squares accumulated (scikit-learn's per-batch L2 penalty)")
        .def_property("decay_reference_weight", [](Model& model) { return model.network.decay_reference_weight; },
                      [](Model& model, double value) {
                          if (!(value >= 0) || !std::isfinite(value))
                              throw py::value_error("decay_reference_weight must be a finite number >= 0");
                          py::gil_scoped_release release;
                          std::lock_guard<std::recursive_mutex> lock(model.mutex);
                          model.network.decay_reference_weight = value; },
                      "when > 0, a step's weight decay is the optimizer's times decay_reference_weight / "
                      "(the batch's weight sum, its rows without sample weights); 0: as it is")
        .def_property("batch_mean_loss_sum", [](Model& model) { return model.network.batch_mean_loss_sum; },
                      [](Model& model, double value) {
                          if (!std::isfinite(value))
                              throw py::value_error("batch_mean_loss_sum must be a finite number");
                          py::gil_scoped_release release;
                          std::lock_guard<std::recursive_mutex> lock(model.mutex);
                          model.network.batch_mean_loss_sum = value; },
                      "every optimizer step adds its batch's (sample-weighted) mean loss times the "
                      "batch's rows (scikit-learn's epoch loss is this sum over the epoch's rows)")
        .def_property("lr", [](Model& model) { return model.network.optimizer_options().lr; },
                      [](Model& model, double lr) {
                          if (!(lr >= 0) || !std::isfinite(static_cast<T>(lr)))
                              throw py::value_error("lr must be a finite number >= 0 in the model's dtype");
                          py::gil_scoped_release release;
                          std::lock_guard<std::recursive_mutex> lock(model.mutex);
                          model.network.optimizer_options().lr = lr; })
        .def("set_gradient_reduction", [](Model& model, const py::object& reduce, const py::object& updates,
                                           const py::object& all_ranks_finite, const py::object& gather_params,
                                           const py::object& sum_figures, const py::object& gather_rows,
                                           const py::object& params_written) {
            const bool sharded = !updates.is_none(), by_rows = !sum_figures.is_none();
            const bool shared = !params_written.is_none();  // else gather_params
            const py::object& after_update = shared ? params_written : gather_params;
            if (!reduce.is_none() && !PyCallable_Check(reduce.ptr()))
                throw py::type_error("reduce must be callable or None");
            if (sharded != !all_ranks_finite.is_none() || sharded != !after_update.is_none() ||
                (shared && !gather_params.is_none()) || (sharded && reduce.is_none()))
                throw py::value_error("updates, all_ranks_finite and one of gather_params and params_written "
                                      "go together, with reduce");
            if (sharded && (!PyCallable_Check(all_ranks_finite.ptr()) || !PyCallable_Check(after_update.ptr())))
                throw py::type_error("all_ranks_finite, gather_params and params_written must be callable");
            if (by_rows == gather_rows.is_none() || (by_rows && !sharded))
                throw py::value_error("sum_figures and gather_rows go together, with updates");
            if (by_rows && (!PyCallable_Check(sum_figures.ptr()) || !PyCallable_Check(gather_rows.ptr())))
                throw py::type_error("sum_figures and gather_rows must be callable");
            Network<T>& network = model.network;
            int64_t begin = 0, end = 0;
            if (sharded) {
                const auto range = updates.cast<std::pair<int64_t, int64_t>>();
                std::tie(begin, end) = range;
                if (!(0 <= begin && begin <= end && end <= static_cast<int64_t>(network.params.size())))
                    throw py::value_error("updates must be a range (begin, end) of the parameters");
            }
            std::function<void()> hook, gather, figures_hook, rows_hook;
            std::function<bool(bool)> agree, written;
            // Called by each training step from the thread that released the GIL, outside any
            // parallel region; their exceptions (an MPI error) end the call like Ctrl-C's.
            if (!reduce.is_none()) hook = [reduce, &network]() {
                py::gil_scoped_acquire acquire;
                const py::array_t<T> gradient({static_cast<py::ssize_t>(network.grads.size())}, {sizeof(T)},
                                              network.grads.data(), py::none());
                const py::array_t<double> figures({static_cast<py::ssize_t>(network.reduction_figures.size())},
                                                  {sizeof(double)}, network.reduction_figures.data(), py::none());
                const py::array_t<T> partial({static_cast<py::ssize_t>(network.reduction_partial.size())},
                                             {sizeof(T)}, network.reduction_partial.data(), py::none());
                reduce(gradient, figures, partial);
            };
            if (sharded) {
                agree = [all_ranks_finite](bool finite) {
                    py::gil_scoped_acquire acquire;
                    return all_ranks_finite(finite).template cast<bool>();
                };
                if (shared) {
                    written = [params_written](bool seen_finite) {
                        py::gil_scoped_acquire acquire;
                        return params_written(seen_finite).template cast<bool>();
                    };
                } else {
                    gather = [gather_params, &network]() {
                        py::gil_scoped_acquire acquire;
                        gather_params(py::array_t<T>({static_cast<py::ssize_t>(network.params.size())}, {sizeof(T)},
                                                     network.params.data(), py::none()));
                    };
                }
            }
            if (by_rows) {
                figures_hook = [sum_figures, &network]() {
                    py::gil_scoped_acquire acquire;
                    sum_figures(py::array_t<double>({static_cast<py::ssize_t>(network.reduction_figures.size())},
                                                    {sizeof(double)}, network.reduction_figures.data(), py::none()));
                };
                rows_hook = [gather_rows, &network]() {
                    py::gil_scoped_acquire acquire;
                    py::list pairs;
                    for (const auto& rows : network.rows_to_gather) {
                        const py::ssize_t width = rows.width;
                        const std::vector<py::ssize_t> strides{width * static_cast<py::ssize_t>(sizeof(T)),
                                                               static_cast<py::ssize_t>(sizeof(T))};
                        py::array_t<T> local(std::vector<py::ssize_t>{network.local_rows, width}, strides, rows.local,
                                             py::none());
                        local.attr("flags").attr("writeable") = false;  // may be the caller's X
                        py::array_t<T> gathered(std::vector<py::ssize_t>{network.gathered_rows, width}, strides,
                                                rows.gathered, py::none());
                        pairs.append(py::make_tuple(local, gathered));
                    }
                    const py::array_t<double> magnitudes({static_cast<py::ssize_t>(network.row_magnitudes.size())},
                                                         {sizeof(double)}, network.row_magnitudes.data(), py::none());
                    const py::object kept_elsewhere = gather_rows(pairs, magnitudes);
                    if (kept_elsewhere.is_none()) return;
                    // The hook's own arrays of the gathered rows, one per pair, which it keeps alive.
                    const auto arrays = kept_elsewhere.cast<py::list>();
                    if (arrays.size() != network.rows_to_gather.size())
                        throw py::value_error("gather_rows must return None or one array per pair");
                    for (size_t i = 0; i < arrays.size(); ++i) {
                        auto& rows = network.rows_to_gather[i];
                        if (!py::isinstance<py::array_t<T>>(arrays[i]))
                            throw py::type_error("gather_rows returned an array of another dtype");
                        const auto array = arrays[i].template cast<py::array>();
                        if (array.ndim() != 2 || array.shape(0) != network.gathered_rows || array.shape(1) != rows.width ||
                            !(array.flags() & py::array::c_style))
                            throw py::value_error("gather_rows returned an array of shape " + shape_string(array) +
                                                  " where (gathered rows, width) C-contiguous was due");
                        rows.rows = static_cast<const T*>(array.data());
                    }
                };
            }
            {  // not while another thread's step runs the old hooks
                py::gil_scoped_release release;
                std::lock_guard<std::recursive_mutex> lock(model.mutex);
                network.reduce_gradient.swap(hook);
                network.all_ranks_finite.swap(agree);
                network.gather_params.swap(gather);
                network.params_written.swap(written);
                network.sum_figures.swap(figures_hook);
                network.gather_rows.swap(rows_hook);
                network.update_begin = begin;
                network.update_end = end;
            }
            // the old hooks are destroyed here, with the GIL (they hold Python callables)
        }, py::arg("reduce"), py::arg("updates") = py::none(), py::arg("all_ranks_finite") = py::none(),
           py::arg("gather_params") = py::none(), py::arg("sum_figures") = py::none(),
           py::arg("gather_rows") = py::none(), py::arg("params_written") = py::none(),
           "data-parallel training: reduce(gradient, figures, partial) is called by every "
           "training step between its gradient and its update (None: no longer). gradient is "
           "this process's gradient of its rows' loss summed (the hook may use it as scratch); "
           "the hook must write to partial the other processes' sum of gradient[begin:end] and "
           "replace, in place, figures (mean loss times its normaliser, weight_sum, rows, "
           "correct, weighted_correct, 1 if its logits were not finite, the normaliser, then "
           "running_mean and running_var) by their sums over the processes (running statistics: "
           "one process's). The step then adds its own gradient[begin:end] to partial and divides "
           "by the summed normaliser. [begin, end) is all of it unless updates=(begin, end) shards "
           "the optimizer: then the step calls all_ranks_finite(bool) -> whether that range is "
           "finite on every process, updates params[begin:end] only, and gather_params(params) "
           "must copy the other processes' ranges in; the optimizer state outside the range is "
           "not updated. With sum_figures and gather_rows too (and updates from parameter_chunks), "
           "a network without batch norm steps by rows: sum_figures(figures) replaces the figures "
           "after the loss as reduce does, then gather_rows([(local, gathered), ...], magnitudes) must "
           "copy every process's rows of each local array (its layer inputs and deltas) into "
           "gathered, rank 0's first, or return a list of arrays of its own holding them (kept alive "
           "until its next call), and replace magnitudes by their largest over the processes; each "
           "process then makes and updates the gradient of its range from all the rows. With "
           "params_written instead of gather_params (params shared: share_params), the step calls "
           "params_written(whether it saw its range finite as it wrote it) -> whether every process "
           "did, returning once every process has updated its range")
        .def("share_params", [](Model& model, const py::object& memory) {
            Network<T>& network = model.network;
            if (!memory.is_none()) {
                if (!py::isinstance<py::array_t<T>>(memory))
                    throw py::type_error("memory must be a NumPy array of the parameters' dtype or None");
                auto array = memory.cast<py::array>();
                if (array.ndim() != 1 || array.shape(0) != static_cast<py::ssize_t>(network.params.size()) ||
                    !(array.flags() & py::array::c_style) || !array.writeable())
                    throw py::value_error("memory must be a writable contiguous array of " +
                                          std::to_string(network.params.size()) + " elements, got shape " +
                                          shape_string(array));
                py::gil_scoped_release release;
                std::lock_guard<std::recursive_mutex> lock(model.mutex);
                const ModelStateWrite write;
                network.params.take_back();
                network.params.lend(static_cast<T*>(array.mutable_data()));
                network.weights_changed();
            } else {
                py::gil_scoped_release release;
                std::lock_guard<std::recursive_mutex> lock(model.mutex);
                const ModelStateWrite write;
                network.params.take_back();
                network.weights_changed();
            }
            model.lent_params = memory;  // the old one released with the GIL
        }, py::arg("memory"),
           "data-parallel training on one node: the network's parameters from now on are `memory` "
           "(which must hold them already: an MPI shared window every process of the node "
           "steps in), until share_params(None) copies them back into the network's own memory")
        .def_property_readonly("params_shared", [](Model& model) { return model.network.params.is_lent(); },
            "whether the parameters are memory lent by share_params")
        .def("parameter_chunks", [](Model& model, int64_t P) {
            if (P < 1) throw py::value_error("P must be at least 1, got " + std::to_string(P));
            return model.network.parameter_chunks(P); }, py::arg("P"),
            "P + 1 offsets into params cutting it into P ranges as even as whole rows of the "
            "weights allow (a layer's bias, gamma and beta with its last row): the ranges of "
            "set_gradient_reduction's steps by rows")
        .def_property_readonly("steps_by_rows", [](Model& model) { return model.network.steps_by_rows(); },
            "whether a training step now is a data-parallel step by rows (set_gradient_reduction)")
        .def_property_readonly("reduces_gradient", [](Model& model) {
            return static_cast<bool>(model.network.reduce_gradient); },
            "whether set_gradient_reduction's hook is set (a data-parallel fit is running)")
        .def_property("dropout_stream", [](Model& model) { return model.network.dropout_stream; },
                      [](Model& model, uint64_t stream) {
                          py::gil_scoped_release release;
                          std::lock_guard<std::recursive_mutex> lock(model.mutex);
                          model.network.dropout_stream = stream; },
                      "added (times 2**40) to dropout's counter: each process of a data-parallel fit "
                      "draws masks of its own; 0 (default) a single process's")
        .def_property("num_threads", [](Model& model) { return model.num_threads; },
                      [](Model& model, int n) {
                          check_thread_count("num_threads", n, 0);
                          model.num_threads = n; },
                      "threads for this model's calls (applied per call); 0 follows the process setting")
        .def_property_readonly("last_call_threads", [](Model& model) { return model.last_call_threads; },
                               "the thread count the model's last training or prediction call used")
        .def("assign", [](Model& model, const std::string& name, const py::handle& values) {
            std::vector<T>* buffer = nullptr;
            if (name == "running_mean") buffer = &model.network.running_mean;
            else if (name == "running_var") buffer = &model.network.running_var;
            const auto& names = model.network.optimizer_state_names();
            for (size_t k = 0; k < names.size() && !buffer; ++k)
                if (name == names[k]) buffer = &model.network.optimizer_state[k];
            if (!buffer && name != "params") throw py::value_error("no buffer named '" + name + "'");
            const size_t size = buffer ? buffer->size() : model.network.params.size();
            auto array = as_contiguous<T>(values, "values", 1);
            if (array.shape(0) != static_cast<py::ssize_t>(size))
                throw py::value_error("values must have shape (" + std::to_string(size) +
                                      ",), got " + shape_string(array));
            py::gil_scoped_release release;
            std::lock_guard<std::recursive_mutex> lock(model.mutex);
            const ModelStateWrite write;  // a fork sees the old values or the new, not a mix
            std::copy(array.data(), array.data() + array.shape(0), buffer ? buffer->data() : model.network.params.data());
            model.network.weights_changed();
        }, py::arg("name"), py::arg("values"),
           "copy values into the buffer `name` (params, running_mean, running_var or an optimizer "
           "state) with the model locked, so no prediction sees part of the old and part of the new")
        .def("params_finite", [](Model& model) {
            py::gil_scoped_release release;
            std::lock_guard<std::recursive_mutex> lock(model.mutex);
            return model.network.params_finite();
        }, "whether every parameter is finite")
        .def_property_readonly("last_run_totals", [](Model& model) {
            const RunTotals& totals = model.last_run;
            return py::make_tuple(totals.loss_sum, totals.correct, totals.rows, totals.nonfinite_batch,
                                  totals.weight_sum, totals.weighted_correct);
        }, "(loss_sum, correct, rows, nonfinite_batch, weight_sum, weighted_correct) of the last "
           "train_batches call, also when a signal's exception (Ctrl-C) ended it: the steps it took "
           "before (weight_sum is the rows' sample weights summed, or the rows without weights)")
        .def_property_readonly("layers", [](Model& model) {
            py::list layers;
            for (const auto& s : model.network.layers()) {
                py::dict layer;
                layer["weight"] = s.weight; layer["bias"] = s.bias;
                layer["gamma"] = s.gamma; layer["beta"] = s.beta;
                layer["fan_in"] = s.fan_in; layer["fan_out"] = s.fan_out;
                layers.append(layer);
            }
            return layers; }, "per layer: offsets into params and fan_in/fan_out")
        .def("train_step", [](Model& model, const py::handle& x, const py::handle& y,
                              const py::handle& sample_weight) {
            auto xs = checked_rows<T>(x, "x", model.network.input_width());
            const int64_t rows = xs.rows;
            if (rows == 1 && model.network.options().batch_norm)
                throw py::value_error("batch norm needs at least 2 rows per training batch");
            auto targets = check_targets(model.network, y, rows);
            check_sample_weight(targets, sample_weight, rows);
            RunTotals totals;
            int64_t bad_row = -1;
            {
                py::gil_scoped_release release;
                std::lock_guard<std::recursive_mutex> lock(model.mutex);
                const double work = static_cast<double>(rows) * training_work_per_row(model.network);
                CallThreads<T> threads(model, model.training_threads, work);
                const DenseBatch<T> batch = dense_batch(xs);
                bad_row = batch.bad_row;
                if (bad_row < 0) totals = model.network.train_step(batch.rows, targets.pointers(), rows);
                threads.finish(work);
            }
            if (totals.bad_label_row >= 0)
                throw_bad_label(totals, model.network.output_width(), "no step was taken");
            raise_if_bad_row(xs, "x", bad_row);
            return totals_tuple(totals, targets);
        }, py::arg("x"), py::arg("y"), py::arg("sample_weight") = py::none(),
           "one optimizer step on one batch (x dense or CSR) -> (loss_sum, correct, rows), plus "
           "(weight_sum, weighted_correct) with sample_weight; not applied (step unchanged) when the "
           "loss or a gradient is NaN/inf, or when every sample weight is 0")
        .def("train_batches", [](Model& model, const py::handle& X, const py::handle& y,
                                 const py::handle& order, int64_t batch_size, int64_t first_batch,
                                 int64_t n_batches, const py::handle& partners,
                                 const py::handle& lambdas, const py::handle& sample_weight,
                                 const py::handle& bounds, bool check_outputs) {
            auto xs = checked_rows<T>(X, "X", model.network.input_width());
            const int64_t rows = xs.rows;
            auto targets = check_targets(model.network, y, rows);
            check_sample_weight(targets, sample_weight, rows);
            auto permutation = row_indices(order, "order", rows);
            const int64_t epoch_rows = permutation.shape(0);
            if (batch_size < 1) throw py::value_error("batch_size must be >= 1, got " + std::to_string(batch_size));
            if (first_batch < 0 || n_batches < 0) throw py::value_error("first_batch and n_batches must be >= 0");
            const auto batch_bounds = checked_bounds(bounds, epoch_rows, first_batch, n_batches);
            const int64_t epoch_batches = bounds.is_none() ? (epoch_rows + batch_size - 1) / batch_size
                                                           : batch_bounds.shape(0) - 1;
            CheckedMixup<T> mixup = check_mixup<T>(model.network, partners, lambdas, rows, epoch_rows,
                                                   epoch_batches);
            const int64_t* bounds_data = bounds.is_none() ? nullptr : batch_bounds.data();
            RunTotals totals;
            model.last_run = totals;
            const auto interval = std::chrono::microseconds(signal_check_interval_us.load());
            const int64_t end = first_batch + n_batches;
            for (int64_t next = first_batch; next < end;) {
                {
                    py::gil_scoped_release release;
                    std::lock_guard<std::recursive_mutex> lock(model.mutex);
                    // Decided from the rest of the run; a probe of the other thread count
                    // runs a quarter of the rest (and of the time), so a losing probe costs little.
                    const double per_row = training_work_per_row(model.network);
                    const double rest = static_cast<double>(std::min((end - next) * batch_size, epoch_rows)) * per_row;
                    CallThreads<T> threads(model, model.training_threads, rest);
                    const int64_t rows_before = totals.rows;
                    const int64_t stop = threads.probe() ? next + std::max<int64_t>(1, (end - next) / 4) : end;
                    next = train_batches_for(model.network, totals, xs.pointers(), targets.pointers(),
                                             permutation.data(), epoch_rows, batch_size, next, stop,
                                             threads.probe() ? interval / 4 : interval, mixup.plan(),
                                             bounds_data);
                    if (next == stop && stop < end && (totals.nonfinite_batch >= 0 || totals.bad_input_row >= 0))
                        next = end;
                    // The run's last update may leave finite parameters whose forward pass
                    // overflows: one evaluation-mode forward of its batch, when asked.
                    if (check_outputs && next == end && totals.nonfinite_batch < 0 && totals.bad_input_row < 0 &&
                        totals.bad_label_row < 0 && !model.network.outputs_finite_after_step()) {
                        totals.nonfinite_batch = end - 1;
                        totals.finite = false;
                    }
                    threads.finish(static_cast<double>(totals.rows - rows_before) * per_row);
                }
                model.last_run = totals;
                if (totals.bad_label_row >= 0)
                    throw_bad_label(totals, model.network.output_width(),
                                    "training stopped before that batch's step (the steps before it were taken)");
                // With the GIL and without the model's lock, so that a handler may use the
                // model; its exception (KeyboardInterrupt for Ctrl-C) leaves the steps taken.
                if (next < end && PyErr_CheckSignals() != 0) throw py::error_already_set();
            }
            raise_if_bad_row(xs, "X", totals.bad_input_row);
            // params_finite: false when the run ended because an update overflowed the
            // parameters (nonfinite_batch is then the last step taken), not a refused step.
            const bool params_overflowed = totals.nonfinite_batch >= 0 && !totals.finite;
            if (targets.reports_weights)
                return py::tuple(py::make_tuple(totals.loss_sum, totals.correct, totals.rows, totals.nonfinite_batch,
                                                !params_overflowed, totals.weight_sum, totals.weighted_correct));
            return py::tuple(py::make_tuple(totals.loss_sum, totals.correct, totals.rows, totals.nonfinite_batch,
                                            !params_overflowed));
        }, py::arg("X"), py::arg("y"), py::arg("order"), py::arg("batch_size"),
           py::arg("first_batch"), py::arg("n_batches"), py::arg("partners") = py::none(),
           py::arg("lambdas") = py::none(), py::arg("sample_weight") = py::none(),
           py::arg("bounds") = py::none(), py::arg("check_outputs") = true,
           "optimizer steps over batches [first_batch, first_batch + n_batches) of X[order] (order: "
           "the epoch's rows of X in the order visited, all of them or a subset) -> "
           "(loss_sum, correct, rows, nonfinite_batch, params_finite); with partners (one row per position of "
           "order) and lambdas (one per batch of the epoch), each batch is mixed (mixup) first. "
           "The run stops before applying the first step whose loss or gradient is NaN/inf, and "
           "names that batch (else -1); params_finite is False when instead an update made a "
           "parameter NaN/inf (found at most a signal-check interval later; nonfinite_batch is "
           "then the last batch trained), when the refused batch's logits were NaN/inf (the "
           "parameters overflow the forward pass), or, with check_outputs, when the last update "
           "left outputs on its batch NaN/inf (one evaluation-mode forward of it). A label found outside [0, C) when its batch is read "
           "(changed during the call) raises ValueError naming its row, that batch untrained. "
           "X is a C-contiguous array or a CSR matrix (densified one batch at a time; a malformed "
           "row raises ValueError after the batches before it). With sample_weight (one weight per "
           "row of X) every batch's loss is the weighted mean, loss_sum sums mean * the batch's "
           "weight, and the tuple ends with (weight_sum, weighted_correct). With bounds (int64, "
           "one more than the epoch's batches: 0, ..., len(order), non-decreasing) batch k is "
           "order[bounds[k]:bounds[k + 1]] instead, possibly empty (data-parallel training)")
        .def("compute_gradients", [](Model& model, const py::handle& x, const py::handle& y, bool training,
                                     const py::handle& sample_weight) {
            auto xs = checked_rows<T>(x, "x", model.network.input_width());
            const int64_t rows = xs.rows;
            if (training && rows == 1 && model.network.options().batch_norm)
                throw py::value_error("batch norm needs at least 2 rows in training mode");
            auto targets = check_targets(model.network, y, rows);
            check_sample_weight(targets, sample_weight, rows);
            RunTotals totals;
            int64_t bad_row = -1;
            {
                py::gil_scoped_release release;
                std::lock_guard<std::recursive_mutex> lock(model.mutex);
                const double work = static_cast<double>(rows) * training_work_per_row(model.network);
                CallThreads<T> threads(model, model.training_threads, work);
                // A large set in evaluation mode goes chunk by chunk (a sparse one is then never
                // dense whole); dense and sparse X take the same path, so the same bits.
                if (!training && rows > Network<T>::eval_chunk_rows &&
                    model.network.options().class_weights.empty()) {
                    totals = model.network.compute_gradients_in_chunks(xs.pointers(), targets.pointers(), rows);
                    bad_row = totals.bad_input_row;
                } else {
                    const DenseBatch<T> batch = dense_batch(xs);
                    bad_row = batch.bad_row;
                    if (bad_row < 0)
                        totals = model.network.compute_gradients(batch.rows, targets.pointers(), rows, training);
                }
                threads.finish(work);
            }
            if (totals.bad_label_row >= 0)
                throw_bad_label(totals, model.network.output_width(), "no gradient was computed");
            raise_if_bad_row(xs, "x", bad_row);
            return totals_tuple(totals, targets);
        }, py::arg("x"), py::arg("y"), py::arg("training") = false, py::arg("sample_weight") = py::none(),
           "gradients of the batch's (weighted) mean loss into grads, no step -> (loss_sum, correct, "
           "rows), plus (weight_sum, weighted_correct) with sample_weight; x dense or CSR (in evaluation "
           "mode over more than 1024 rows and without class weights, 1024-row chunks, each densified "
           "alone; otherwise densified whole)")
        .def("predict", [](Model& model, const py::handle& X, bool check_finite, bool ready_only) -> py::object {
            if (ready_only && !is_ready_rows<T>(X, model.network.input_width())) return py::none();
            auto xs = prediction_rows(model, X, check_finite);
            const int64_t rows = xs.rows;
            py::array_t<T> out({static_cast<py::ssize_t>(rows),
                                static_cast<py::ssize_t>(model.network.output_width())});
            T* out_data = out.mutable_data();
            const InputRows<T> all = xs.pointers();
            int64_t bad_row = -1, nonfinite_row = -1;
            run_prediction(model, rows, [&](int64_t start, Deadline deadline) {
                return next_row(model.network.predict(out_data, all, start, rows, deadline), rows, bad_row,
                                nonfinite_row);
            });
            raise_if_bad_row(xs, "X", bad_row);
            if (nonfinite_row >= 0) throw_nonfinite_outputs(nonfinite_row);
            return std::move(out);
        }, py::arg("X"), py::arg("check_finite") = false, py::arg("ready_only") = false,
           "outputs after the loss's link, evaluation mode; check_finite rejects NaN/inf in X; "
           "ready_only returns None unless X is taken as it is (an ndarray, not a subclass, of "
           "exactly the model's dtype, 2-D, C-contiguous, its width, at least one row)")
        .def("predict_labels", [](Model& model, const py::handle& X, bool check_finite, bool ready_only) -> py::object {
            if (model.network.options().loss != Loss::cross_entropy)
                throw py::value_error("predict_labels needs loss cross_entropy");
            if (ready_only && !is_ready_rows<T>(X, model.network.input_width())) return py::none();
            auto xs = prediction_rows(model, X, check_finite);
            const int64_t rows = xs.rows;
            py::array_t<int64_t> labels(static_cast<py::ssize_t>(rows));
            int64_t* labels_data = labels.mutable_data();
            const InputRows<T> all = xs.pointers();
            int64_t bad_row = -1, nonfinite_row = -1;
            run_prediction(model, rows, [&](int64_t start, Deadline deadline) {
                return next_row(model.network.predict_labels(labels_data, all, start, rows, deadline), rows,
                                bad_row, nonfinite_row);
            });
            raise_if_bad_row(xs, "X", bad_row);
            if (nonfinite_row >= 0) throw_nonfinite_outputs(nonfinite_row);
            return std::move(labels);
        }, py::arg("X"), py::arg("check_finite") = false, py::arg("ready_only") = false,
           "class labels (argmax of predict's rows), cross_entropy only; the one-call path of MLP.predict; "
           "check_finite and ready_only as in predict")
        .def("evaluate", [](Model& model, const py::handle& X, const py::handle& y,
                            const py::handle& sample_weight) {
            auto xs = checked_rows<T>(X, "X", model.network.input_width());
            const int64_t rows = xs.rows;
            auto targets = check_targets(model.network, y, rows);
            check_sample_weight(targets, sample_weight, rows);
            const Targets<T> all = targets.pointers();
            const InputRows<T> all_rows = xs.pointers();
            const int64_t in = model.network.input_width(), tw = model.network.target_width();
            RunTotals totals;
            // Chunk by chunk, summed in order: the same bits as one evaluate call. Returns the
            // next row, or rows once a bad label or input row ends the call.
            auto evaluate_chunk = [&](int64_t start, int64_t count) -> int64_t {
                const RunTotals part = model.network.evaluate(all_rows.from_row(start, in),
                                                              all.from_row(start, tw), count);
                if (part.bad_label_row >= 0) {
                    totals.bad_label_row = start + part.bad_label_row;
                    totals.bad_label = part.bad_label;
                    return rows;
                }
                if (part.bad_input_row >= 0) {
                    totals.bad_input_row = start + part.bad_input_row;
                    return rows;
                }
                if (part.nonfinite_output_row >= 0) {
                    totals.nonfinite_output_row = start + part.nonfinite_output_row;
                    return rows;
                }
                totals.add_counts(part);
                return start + count;
            };
            run_prediction(model, rows, [&](int64_t start, Deadline deadline) {
                do {
                    start = evaluate_chunk(start, std::min(Network<T>::eval_chunk_rows, rows - start));
                } while (start < rows && std::chrono::steady_clock::now() < deadline);
                return start;
            });
            if (totals.bad_label_row >= 0)
                throw_bad_label(totals, model.network.output_width(), "nothing was evaluated");
            raise_if_bad_row(xs, "X", totals.bad_input_row);
            if (totals.nonfinite_output_row >= 0) throw_nonfinite_outputs(totals.nonfinite_output_row);
            return totals_tuple(totals, targets);
        }, py::arg("X"), py::arg("y"), py::arg("sample_weight") = py::none(),
           "evaluation mode -> (loss_sum, correct, rows), plus (weight_sum, weighted_correct) with "
           "sample_weight; X dense or CSR (densified one chunk at a time)");
}

py::dict build_info() {
    py::dict info;
    info["version"] = FASTMLP_VERSION;
#if defined(__clang__)
    info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    info["compiler"] = std::string("gcc ") + __VERSION__;
#else
    info["compiler"] = "unknown";
#endif
#ifdef _OPENMP
    info["openmp"] = true;
    info["openmp_version"] = _OPENMP;
#else
    info["openmp"] = false;
    info["openmp_version"] = py::none();
#endif
    py::list compiled;
    compiled.append("portable");
#if defined(__x86_64__) || defined(__i386__)
    compiled.append("avx2");
    compiled.append("avx512");
    compiled.append("avx512_bf16");
    compiled.append("amx_bf16");
    info["cpu_avx2_fma"] = cpu_supports_isa("avx2");
    info["cpu_avx512"] = cpu_supports_isa("avx512");
    info["cpu_avx512_bf16"] = cpu_supports_isa("avx512_bf16");
    // AMX-BF16 and the OS's leave to use the tiles.
    info["cpu_amx_bf16"] = cpu_supports_isa("amx_bf16");
#else
    info["cpu_avx2_fma"] = false;
    info["cpu_avx512"] = false;
    info["cpu_avx512_bf16"] = false;
    info["cpu_amx_bf16"] = false;
#endif
    // Whether compute_dtype="bfloat16" multiplies with a bfloat16 instruction (else: emulated,
    // kernels.h), and which: "amx_bf16" (whose sums are not in the canonical order, the
    // bfloat16 guide), "avx512_bf16" or "emulated".
    info["bfloat16_native"] = native_bfloat16();
    info["bfloat16_path"] = bfloat16_path();
    info["bfloat16_canonical_order"] = std::string(bfloat16_path()) != "amx_bf16";
    info["simd_compiled"] = compiled;
    info["cpu_widest_isa"] = widest_cpu_isa_name();
    // The instruction set every kernel with one (GEMM, optimizer loops) runs in.
    info["isa"] = gemm_kernel_name();
    info["gemm_kernel"] = gemm_kernel_name();
    info["avx512_tile"] = avx512_tile_name();
    // Whether the float optimizer loops send groups with states near 0 to their twins over
    // double ("on", Intel CPUs) or not ("off"): the same bits either way.
    info["subnormal_guard"] = subnormal_guard_name();
    info["num_threads"] = num_threads();
    // Multiply-adds below which a parallel region, and a whole call, run on one thread.
    info["parallel_work_threshold"] = parallel_work_threshold();
    info["call_parallel_work_threshold"] = call_parallel_work_threshold();
    return info;
}

}  // namespace

// FASTMLP_ISA=portable|avx2|avx512|avx512_bf16|amx_bf16|auto forces the kernels' instruction set for the process
// (FASTMLP_FORCE_PORTABLE=1, the older switch, means portable). A name this CPU cannot run
// stops the import with a ValueError that says so, rather than silently running another.
void apply_isa_from_environment() {
    const char* forced = std::getenv("FASTMLP_ISA");
    if (forced && forced[0] != '\0') {
        const std::string isa = forced;
        if (set_isa(isa)) return;
        if (is_isa_name(isa))
            throw py::value_error("FASTMLP_ISA=" + isa + ": this CPU cannot run those kernels (its widest is '" +
                                  widest_cpu_isa_name() + "')");
        throw py::value_error("FASTMLP_ISA must be portable, avx2, avx512, avx512_bf16, amx_bf16 or auto, got '" + isa + "'");
    }
    const char* portable = std::getenv("FASTMLP_FORCE_PORTABLE");
    if (portable && portable[0] == '1') set_isa("portable");
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastmlp's compiled core";
    apply_isa_from_environment();
    m.def("set_num_threads", [](std::optional<int> n) {
        if (n) check_thread_count("n", *n, 1);
        set_num_threads(n ? *n : 0);
    }, py::arg("n"), "set the number of OpenMP threads fastmlp uses; None follows OpenMP again");
    m.def("get_num_threads", &num_threads, "the number of OpenMP threads fastmlp uses");
    m.def("num_threads_is_set", &num_threads_is_set, "whether set_num_threads fixed the count");
    m.def("set_default_thread_cap", [](int n) { set_default_thread_cap(n); }, py::arg("n"),
          "cap the OpenMP-derived default thread count (n <= 0: no cap)");
    m.def("_set_signal_check_interval", [](double seconds) {
        if (!(seconds >= 0 && seconds <= 10))
            throw py::value_error("seconds must be in [0, 10], got " + std::to_string(seconds));
        signal_check_interval_us = static_cast<int64_t>(seconds * 1e6);
    }, py::arg("seconds"), "how often training looks for Ctrl-C between steps (a test hook)");
    m.def("build_info", &build_info, "compiler, OpenMP and SIMD paths of this build");
    m.def("network_size_problem", &network_size_problem, py::arg("sizes"), py::arg("batch_norm"),
          py::arg("element_size"),
          "why a network of these widths cannot be held (parameters or a workspace row beyond what a "
          "buffer of the core addresses), or '' when it can");
    m.def("_thread_learner_choices", [](int threads, const std::vector<double>& seconds_one,
                                        const std::vector<double>& seconds_many) {
        if (seconds_one.size() != seconds_many.size())
            throw py::value_error("seconds_one and seconds_many need one entry per call");
        ThreadLearner learner;
        std::vector<int> chosen;
        for (size_t call = 0; call < seconds_one.size(); ++call) {
            const ThreadChoice choice = learner.choose(threads);
            chosen.push_back(choice.threads);
            learner.record(choice.threads, choice.threads > 1 ? seconds_many[call] : seconds_one[call], 1.0);
        }
        return chosen;
    }, py::arg("threads"), py::arg("seconds_one"), py::arg("seconds_many"),
       "a test hook: the counts a fresh ThreadLearner picks for calls of equal work that would take "
       "seconds_one[i] on one thread and seconds_many[i] on `threads`");
    bind_network<float>(m, "NetworkFloat32");
    bind_network<double>(m, "NetworkFloat64");
    py::module_ kernels = m.def_submodule("kernels", "individual kernels, for testing");
    bind_kernels(kernels);
    bind_gemm(kernels);
}
