// Python bindings of the individual kernels (fastmlp._core.kernels), for tests against the
// NumPy reference: the signatures of fastmlp/reference.py, outputs allocated and returned.
// Kernels never check, so every binding validates dtypes, shapes and values first.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "kernels.h"

namespace py = pybind11;
using fastmlp::Activation;

namespace {

// forcecast is safe here: every array is dtype-checked first, so it can only fix byte order
// or contiguity (a non-contiguous array is copied, never misread), not change precision.
template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

std::string shape_string(const py::array& a) {
    std::ostringstream out;
    out << "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) out << (d ? ", " : "") << a.shape(d);
    out << (a.ndim() == 1 ? ",)" : ")");
    return out.str();
}

std::string dtype_string(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

bool is_int_of_size(const py::array& a, size_t size) {
    return a.dtype().kind() == 'i' && static_cast<size_t>(a.dtype().itemsize()) == size;
}

bool is_float_of_size(const py::array& a, size_t size) {
    return a.dtype().kind() == 'f' && static_cast<size_t>(a.dtype().itemsize()) == size;
}

// Runs body(T{}) with T the float type of `first` (float32 or float64); everything else
// of the call must then have that same dtype (see as_float).
template <typename Body>
py::object dispatch_float(const py::array& first, const char* name, Body&& body) {
    if (is_float_of_size(first, sizeof(float))) return body(float{});
    if (is_float_of_size(first, sizeof(double))) return body(double{});
    throw py::type_error(std::string(name) + " must be float32 or float64, got " +
                         dtype_string(first));
}

// `a` as a C-contiguous T array; TypeError unless its dtype is T's (mixed dtypes rejected).
template <typename T>
CArray<T> as_float(const py::array& a, const char* name) {
    if (!is_float_of_size(a, sizeof(T)))
        throw py::type_error(std::string(name) + " must be " +
                             (sizeof(T) == 4 ? "float32" : "float64") +
                             " like the other arrays of this call, got " + dtype_string(a));
    return CArray<T>::ensure(a);
}

void require_shape(const py::array& a, const char* name, const std::vector<py::ssize_t>& shape) {
    bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (size_t d = 0; same && d < shape.size(); ++d) same = a.shape(d) == shape[d];
    if (same) return;
    std::ostringstream expected;
    expected << "(";
    for (size_t d = 0; d < shape.size(); ++d) expected << (d ? ", " : "") << shape[d];
    expected << (shape.size() == 1 ? ",)" : ")");
    throw py::value_error(std::string(name) + " must have shape " + expected.str() + ", got " +
                          shape_string(a));
}

void require_same_shape(const py::array& a, const char* name, const py::array& like,
                        const char* like_name) {
    if (a.ndim() == like.ndim()) {
        bool same = true;
        for (py::ssize_t d = 0; d < a.ndim(); ++d) same = same && a.shape(d) == like.shape(d);
        if (same) return;
    }
    throw py::value_error(std::string(name) + " must have the shape of " + like_name + " " +
                          shape_string(like) + ", got " + shape_string(a));
}

void require_ndim(const py::array& a, const char* name, py::ssize_t ndim) {
    if (a.ndim() != ndim)
        throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) +
                              "-dimensional, got shape " + shape_string(a));
}

// Softmax reads the first element of each row and the losses divide by the batch size.
void require_nonempty(const py::array& a, const char* name) {
    if (a.size() == 0)
        throw py::value_error(std::string(name) + " must not be empty, got shape " +
                              shape_string(a));
}

// Integer labels as int64, each in [0, C).
CArray<int64_t> as_labels(const py::array& labels, int64_t B, int64_t C) {
    const char kind = labels.dtype().kind();
    if (kind != 'i' && kind != 'u')
        throw py::type_error("labels must be an integer array, got " + dtype_string(labels));
    require_shape(labels, "labels", {B});
    // Range-check in the original dtype, before the cast, so a huge uint64 cannot wrap into range.
    py::module_ np = py::module_::import("numpy");
    py::array bad = np.attr("flatnonzero")(np.attr("logical_or")(np.attr("less")(labels, 0),
                                                                  np.attr("greater_equal")(labels, C)));
    if (bad.size() > 0) {
        py::object index = bad[py::int_(0)];
        throw py::value_error("labels must be in [0, " + std::to_string(C) + "), got " +
                              py::str(labels[index]).cast<std::string>() + " at index " +
                              py::str(index).cast<std::string>());
    }
    return CArray<int64_t>::ensure(labels);
}

Activation parse_activation(const std::string& name) {
    static const std::vector<std::pair<std::string, Activation>> names = {
        {"identity", Activation::identity}, {"sigmoid", Activation::sigmoid},
        {"tanh", Activation::tanh},         {"relu", Activation::relu},
        {"leaky_relu", Activation::leaky_relu}, {"gelu", Activation::gelu},
        {"step", Activation::step}};
    std::string valid;
    for (const auto& [known, act] : names) {
        if (known == name) return act;
        valid += (valid.empty() ? "" : ", ") + known;
    }
    throw py::value_error("activation must be one of " + valid + ", got '" + name + "'");
}

template <typename T>
py::array_t<T> empty_like_shape(const py::array& a) {
    return py::array_t<T>(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

template <typename T>
py::array_t<T> copy_of(const CArray<T>& a) {
    py::array_t<T> out = empty_like_shape<T>(a);
    std::copy(a.data(), a.data() + a.size(), out.mutable_data());
    return out;
}

template <typename F>
void without_gil(F&& f) {
    py::gil_scoped_release release;
    f();
}

void require_step(int64_t step) {
    if (step < 1) throw py::value_error("step must be >= 1 (it counts from 1), got " + std::to_string(step));
}

void require_probability(double p, const char* name, bool one_allowed) {
    const bool ok = p >= 0 && (one_allowed ? p <= 1 : p < 1);
    if (!ok)
        throw py::value_error(std::string(name) + " must be in [0, 1" + (one_allowed ? "]" : ")") +
                              ", got " + std::to_string(p));
}

// ---- activations -------------------------------------------------------------------------

void bind_activations(py::module_& m) {
    m.def("all_finite", [](const py::array& x_in) {
        return dispatch_float(x_in, "x", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto x = as_float<T>(x_in, "x");
            bool finite = true;
            without_gil([&] { finite = fastmlp::all_finite(x.data(), static_cast<int64_t>(x.size())); });
            return py::bool_(finite);
        });
    }, py::arg("x"), "True when no element of x is NaN or infinite (the check the core runs on inputs "
                     "and gradients, vectorised for the instruction set in use)");
    m.def("activation_forward", [](const py::array& x_in, const std::string& act_name, double slope) {
        const Activation act = parse_activation(act_name);
        return dispatch_float(x_in, "x", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto x = as_float<T>(x_in, "x");
            auto y = empty_like_shape<T>(x);
            without_gil([&] { fastmlp::activation_forward(y.mutable_data(), x.data(), x.size(), act, T(slope)); });
            return y;
        });
    }, py::arg("x"), py::arg("act"), py::arg("slope") = 0.01, "y = act(x)");

    m.def("activation_backward", [](const py::array& dy_in, const py::array& x_in,
                                    const py::array& y_in, const std::string& act_name, double slope) {
        const Activation act = parse_activation(act_name);
        require_same_shape(x_in, "x", dy_in, "dy");
        require_same_shape(y_in, "y", dy_in, "dy");
        return dispatch_float(dy_in, "dy", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto dy = as_float<T>(dy_in, "dy");
            auto x = as_float<T>(x_in, "x");
            auto y = as_float<T>(y_in, "y");
            auto dx = empty_like_shape<T>(dy);
            without_gil([&] {
                fastmlp::activation_backward(dx.mutable_data(), dy.data(), x.data(), y.data(), dy.size(), act, T(slope));
            });
            return dx;
        });
    }, py::arg("dy"), py::arg("x"), py::arg("y"), py::arg("act"), py::arg("slope") = 0.01,
       "dx = dy * act'(x); x is the pre-activation, y = act(x)");

    m.def("erf_forward", [](const py::array& x_in) {
        return dispatch_float(x_in, "x", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto x = as_float<T>(x_in, "x");
            auto y = empty_like_shape<T>(x);
            without_gil([&] { fastmlp::erf_forward(y.mutable_data(), x.data(), x.size()); });
            return y;
        });
    }, py::arg("x"), "y = erf(x), the erf gelu uses (vectorised, the same bits with AVX2 and AVX-512)");
}

// ---- losses --------------------------------------------------------------------------------

// class_weights: None, or a (C) array of the call's dtype.
template <typename T>
std::optional<CArray<T>> optional_class_weights(const py::object& weights, int64_t C) {
    if (weights.is_none()) return std::nullopt;
    py::array array = py::array::ensure(weights);
    if (!array) throw py::type_error("class_weights must be an array or None");
    require_shape(array, "class_weights", {C});
    return as_float<T>(array, "class_weights");
}

// sample_weights: None, or a (B) array of the call's dtype, finite and >= 0.
template <typename T>
std::optional<CArray<T>> optional_sample_weights(const py::object& weights, int64_t B) {
    if (weights.is_none()) return std::nullopt;
    py::array array = py::array::ensure(weights);
    if (!array) throw py::type_error("sample_weights must be an array or None");
    require_shape(array, "sample_weights", {B});
    CArray<T> checked = as_float<T>(array, "sample_weights");
    for (int64_t i = 0; i < B; ++i)
        if (!(std::isfinite(checked.data()[i]) && checked.data()[i] >= 0))
            throw py::value_error("sample_weights must be finite and >= 0, got " +
                                  std::to_string(checked.data()[i]) + " at index " + std::to_string(i));
    return checked;
}

// Rows of a loss's input: B = shape[0] (1 for a 0-d array), the rest of each row its width.
std::pair<int64_t, int64_t> loss_rows(const py::array& a) {
    const int64_t B = a.ndim() == 0 ? 1 : a.shape(0);
    return {B, static_cast<int64_t>(a.size()) / B};
}

template <typename T>
const T* data_or_null(const std::optional<CArray<T>>& a) {
    return a ? a->data() : nullptr;
}

void bind_softmax_losses(py::module_& m) {
    m.def("softmax_forward", [](const py::array& logits_in) {
        require_ndim(logits_in, "logits", 2);
        require_nonempty(logits_in, "logits");
        return dispatch_float(logits_in, "logits", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto logits = as_float<T>(logits_in, "logits");
            auto probs = empty_like_shape<T>(logits);
            without_gil([&] { fastmlp::softmax_forward(probs.mutable_data(), logits.data(), logits.shape(0), logits.shape(1)); });
            return probs;
        });
    }, py::arg("logits"), "Row-wise softmax");

    m.def("softmax_xent_forward", [](const py::array& logits_in, const py::array& labels_in,
                                     const py::object& weights_in, double label_smoothing,
                                     const py::object& sample_in) {
        require_ndim(logits_in, "logits", 2);
        require_nonempty(logits_in, "logits");
        require_probability(label_smoothing, "label_smoothing", true);
        const int64_t B = logits_in.shape(0), C = logits_in.shape(1);
        auto labels = as_labels(labels_in, B, C);
        return dispatch_float(logits_in, "logits", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto logits = as_float<T>(logits_in, "logits");
            auto weights = optional_class_weights<T>(weights_in, C);
            auto sample = optional_sample_weights<T>(sample_in, B);
            auto probs = empty_like_shape<T>(logits);
            T loss = 0;
            without_gil([&] {
                fastmlp::softmax_xent_forward(&loss, probs.mutable_data(), logits.data(), labels.data(),
                                              data_or_null(weights), data_or_null(sample),
                                              T(label_smoothing), B, C);
            });
            return py::make_tuple(static_cast<double>(loss), probs);
        });
    }, py::arg("logits"), py::arg("labels"), py::arg("class_weights") = py::none(),
       py::arg("label_smoothing") = 0.0, py::arg("sample_weights") = py::none(),
       "(loss, probs): torch's CrossEntropyLoss, weighted by sample_weights per row");

    m.def("softmax_xent_backward", [](const py::array& probs_in, const py::array& labels_in,
                                      const py::object& weights_in, double label_smoothing,
                                      const py::object& sample_in) {
        require_ndim(probs_in, "probs", 2);
        require_nonempty(probs_in, "probs");
        require_probability(label_smoothing, "label_smoothing", true);
        const int64_t B = probs_in.shape(0), C = probs_in.shape(1);
        auto labels = as_labels(labels_in, B, C);
        return dispatch_float(probs_in, "probs", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto probs = as_float<T>(probs_in, "probs");
            auto weights = optional_class_weights<T>(weights_in, C);
            auto sample = optional_sample_weights<T>(sample_in, B);
            auto dlogits = empty_like_shape<T>(probs);
            without_gil([&] {
                fastmlp::softmax_xent_backward(dlogits.mutable_data(), probs.data(), labels.data(),
                                               data_or_null(weights), data_or_null(sample),
                                               T(label_smoothing), B, C);
            });
            return dlogits;
        });
    }, py::arg("probs"), py::arg("labels"), py::arg("class_weights") = py::none(),
       py::arg("label_smoothing") = 0.0, py::arg("sample_weights") = py::none(),
       "d loss / d logits of softmax_xent_forward");

    m.def("softmax_xent_soft_forward", [](const py::array& logits_in, const py::array& targets_in,
                                          const py::object& sample_in) {
        require_ndim(logits_in, "logits", 2);
        require_nonempty(logits_in, "logits");
        require_same_shape(targets_in, "targets", logits_in, "logits");
        return dispatch_float(logits_in, "logits", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto logits = as_float<T>(logits_in, "logits");
            auto targets = as_float<T>(targets_in, "targets");
            auto sample = optional_sample_weights<T>(sample_in, logits.shape(0));
            auto probs = empty_like_shape<T>(logits);
            T loss = 0;
            without_gil([&] {
                fastmlp::softmax_xent_soft_forward(&loss, probs.mutable_data(), logits.data(), targets.data(),
                                                   data_or_null(sample), logits.shape(0), logits.shape(1));
            });
            return py::make_tuple(static_cast<double>(loss), probs);
        });
    }, py::arg("logits"), py::arg("targets"), py::arg("sample_weights") = py::none(),
       "(loss, probs): cross-entropy against soft targets");

    m.def("softmax_xent_soft_backward", [](const py::array& probs_in, const py::array& targets_in,
                                           const py::object& sample_in) {
        require_ndim(probs_in, "probs", 2);
        require_nonempty(probs_in, "probs");
        require_same_shape(targets_in, "targets", probs_in, "probs");
        return dispatch_float(probs_in, "probs", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto probs = as_float<T>(probs_in, "probs");
            auto targets = as_float<T>(targets_in, "targets");
            auto sample = optional_sample_weights<T>(sample_in, probs.shape(0));
            auto dlogits = empty_like_shape<T>(probs);
            without_gil([&] {
                fastmlp::softmax_xent_soft_backward(dlogits.mutable_data(), probs.data(), targets.data(),
                                                    data_or_null(sample), probs.shape(0), probs.shape(1));
            });
            return dlogits;
        });
    }, py::arg("probs"), py::arg("targets"), py::arg("sample_weights") = py::none());
}

// Element-wise losses share one shape: (loss) forward and (gradient) backward.

template <template <typename> class Kernel>
void bind_elementwise_loss(py::module_& m, const char* forward_name, const char* backward_name,
                           const char* pred_name, const char* doc) {
    m.def(forward_name, [pred_name](const py::array& pred_in, const py::array& target_in,
                                    const py::object& sample_in) {
        require_nonempty(pred_in, pred_name);
        require_same_shape(target_in, "target", pred_in, pred_name);
        const auto [B, D] = loss_rows(pred_in);
        return dispatch_float(pred_in, pred_name, [&, B = B, D = D](auto zero) -> py::object {
            using T = decltype(zero);
            auto pred = as_float<T>(pred_in, pred_name);
            auto target = as_float<T>(target_in, "target");
            auto sample = optional_sample_weights<T>(sample_in, B);
            T loss = 0;
            without_gil([&] { Kernel<T>::forward(&loss, pred.data(), target.data(), data_or_null(sample), B, D); });
            return py::float_(static_cast<double>(loss));
        });
    }, py::arg(pred_name), py::arg("target"), py::arg("sample_weights") = py::none(), doc);
    m.def(backward_name, [pred_name](const py::array& pred_in, const py::array& target_in,
                                     const py::object& sample_in) {
        require_nonempty(pred_in, pred_name);
        require_same_shape(target_in, "target", pred_in, pred_name);
        const auto [B, D] = loss_rows(pred_in);
        return dispatch_float(pred_in, pred_name, [&, B = B, D = D](auto zero) -> py::object {
            using T = decltype(zero);
            auto pred = as_float<T>(pred_in, pred_name);
            auto target = as_float<T>(target_in, "target");
            auto sample = optional_sample_weights<T>(sample_in, B);
            auto grad = empty_like_shape<T>(pred);
            without_gil([&] {
                Kernel<T>::backward(grad.mutable_data(), pred.data(), target.data(), data_or_null(sample), B, D);
            });
            return grad;
        });
    }, py::arg(pred_name), py::arg("target"), py::arg("sample_weights") = py::none());
}

template <typename T>
struct MseKernels {
    static void forward(T* l, const T* p, const T* t, const T* s, int64_t B, int64_t D) { fastmlp::mse_forward(l, p, t, s, B, D); }
    static void backward(T* d, const T* p, const T* t, const T* s, int64_t B, int64_t D) { fastmlp::mse_backward(d, p, t, s, B, D); }
};

template <typename T>
struct BceKernels {
    static void forward(T* l, const T* z, const T* t, const T* s, int64_t B, int64_t C) { fastmlp::bce_logits_forward(l, z, t, s, B, C); }
    static void backward(T* d, const T* z, const T* t, const T* s, int64_t B, int64_t C) { fastmlp::bce_logits_backward(d, z, t, s, B, C); }
};

template <typename T>
struct PoissonKernels {
    static void forward(T* l, const T* z, const T* t, const T* s, int64_t B, int64_t D) { fastmlp::poisson_nll_forward(l, z, t, s, B, D); }
    static void backward(T* d, const T* z, const T* t, const T* s, int64_t B, int64_t D) { fastmlp::poisson_nll_backward(d, z, t, s, B, D); }
};

void check_gaussian_shapes(const py::array& out, const py::array& target) {
    require_ndim(out, "out", 2);
    require_nonempty(out, "out");
    if (out.shape(1) % 2 != 0)
        throw py::value_error("out must have an even width (D means, D log-variances), got shape " +
                              shape_string(out));
    require_shape(target, "target", {out.shape(0), out.shape(1) / 2});
}

void bind_regression_losses(py::module_& m) {
    bind_elementwise_loss<MseKernels>(m, "mse_forward", "mse_backward", "pred",
                                      "mean((pred - target)^2) over all elements");
    bind_elementwise_loss<BceKernels>(m, "bce_logits_forward", "bce_logits_backward", "logits",
                                      "binary cross-entropy with logits, mean over all elements");
    bind_elementwise_loss<PoissonKernels>(m, "poisson_nll_forward", "poisson_nll_backward", "log_mean",
                                          "Poisson NLL with a log link, mean(exp(z) - target * z) over all elements");

    m.def("gaussian_nll_forward", [](const py::array& out_in, const py::array& target_in,
                                     const py::object& sample_in) {
        check_gaussian_shapes(out_in, target_in);
        return dispatch_float(out_in, "out", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto out = as_float<T>(out_in, "out");
            auto target = as_float<T>(target_in, "target");
            auto sample = optional_sample_weights<T>(sample_in, out.shape(0));
            T loss = 0;
            without_gil([&] {
                fastmlp::gaussian_nll_forward(&loss, out.data(), target.data(), data_or_null(sample),
                                              out.shape(0), out.shape(1) / 2);
            });
            return py::float_(static_cast<double>(loss));
        });
    }, py::arg("out"), py::arg("target"), py::arg("sample_weights") = py::none(),
       "Gaussian NLL; out rows are [D means, D log-variances]");

    m.def("gaussian_nll_backward", [](const py::array& out_in, const py::array& target_in,
                                      const py::object& sample_in) {
        check_gaussian_shapes(out_in, target_in);
        return dispatch_float(out_in, "out", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto out = as_float<T>(out_in, "out");
            auto target = as_float<T>(target_in, "target");
            auto sample = optional_sample_weights<T>(sample_in, out.shape(0));
            auto dout = empty_like_shape<T>(out);
            without_gil([&] {
                fastmlp::gaussian_nll_backward(dout.mutable_data(), out.data(), target.data(), data_or_null(sample),
                                               out.shape(0), out.shape(1) / 2);
            });
            return dout;
        });
    }, py::arg("out"), py::arg("target"), py::arg("sample_weights") = py::none());
}

// ---- sparse input ----------------------------------------------------------------------------

void bind_sparse(py::module_& m) {
    m.def("csr_rows_to_dense", [](const py::array& data_in, const py::array& indices_in,
                                  const py::array& indptr_in, const py::object& rows_in, int64_t cols) {
        require_ndim(data_in, "data", 1);
        require_ndim(indices_in, "indices", 1);
        require_ndim(indptr_in, "indptr", 1);
        if (cols < 0) throw py::value_error("cols must be >= 0, got " + std::to_string(cols));
        if (indices_in.shape(0) != data_in.shape(0))
            throw py::value_error("indices must have one entry per entry of data");
        if (indptr_in.dtype().kind() != 'i' || indptr_in.shape(0) < 1)
            throw py::value_error("indptr must be a non-empty integer array");
        auto indptr = CArray<int64_t>::ensure(indptr_in);
        const int64_t N = indptr.shape(0) - 1, nnz = data_in.shape(0);
        std::optional<CArray<int64_t>> rows;
        int64_t B = N;
        if (!rows_in.is_none()) {
            py::array rows_array = py::array::ensure(rows_in);
            if (!rows_array || rows_array.dtype().kind() != 'i' || rows_array.ndim() != 1)
                throw py::type_error("rows must be a 1-D integer array or None");
            rows = CArray<int64_t>::ensure(rows_array);
            B = rows->shape(0);
            for (int64_t i = 0; i < B; ++i)
                if (rows->data()[i] < 0 || rows->data()[i] >= N)
                    throw py::value_error("rows[" + std::to_string(i) + "] is not a row in [0, " + std::to_string(N) + ")");
        }
        return dispatch_float(data_in, "data", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto data = as_float<T>(data_in, "data");
            py::array_t<T> out({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(cols)});
            const int64_t* row_data = rows ? rows->data() : nullptr;
            int64_t bad = -1;
            auto run = [&](const auto* indices) {
                without_gil([&] {
                    bad = fastmlp::csr_rows_to_dense(out.mutable_data(), data.data(), indices, indptr.data(),
                                                     row_data, 0, B, nnz, cols);
                });
            };
            if (is_int_of_size(indices_in, 4)) run(CArray<int32_t>::ensure(indices_in).data());
            else if (is_int_of_size(indices_in, 8)) run(CArray<int64_t>::ensure(indices_in).data());
            else throw py::type_error("indices must be int32 or int64, got " + dtype_string(indices_in));
            return py::make_tuple(out, bad);
        });
    }, py::arg("data"), py::arg("indices"), py::arg("indptr"), py::arg("rows"), py::arg("cols"),
       "(out, bad): the CSR rows `rows` (None: all) densified, duplicates summed; bad is -1 or the "
       "first position whose row is malformed");
}

// ---- layers ----------------------------------------------------------------------------------

void check_dense_shapes(const py::array& x, const py::array& w, const py::array& b) {
    require_ndim(x, "x", 2);
    require_ndim(w, "w", 2);
    if (w.shape(0) != x.shape(1))
        throw py::value_error("w must have shape (IN, OUT) with IN = x.shape[1] = " +
                              std::to_string(x.shape(1)) + ", got " + shape_string(w));
    require_shape(b, "b", {w.shape(1)});
}

void bind_dense(py::module_& m) {
    m.def("dense_forward", [](const py::array& x_in, const py::array& w_in, const py::array& b_in,
                              const std::string& act_name, double slope) {
        const Activation act = parse_activation(act_name);
        check_dense_shapes(x_in, w_in, b_in);
        return dispatch_float(x_in, "x", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto x = as_float<T>(x_in, "x");
            auto w = as_float<T>(w_in, "w");
            auto b = as_float<T>(b_in, "b");
            const int64_t B = x.shape(0), IN = x.shape(1), OUT = w.shape(1);
            py::array_t<T> z({B, OUT}), y({B, OUT});
            without_gil([&] {
                fastmlp::dense_forward(z.mutable_data(), y.mutable_data(), x.data(), w.data(), b.data(), B, IN, OUT, act, T(slope));
            });
            return py::make_tuple(z, y);
        });
    }, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("act"), py::arg("slope") = 0.01,
       "(z, y): z = x @ w + b, y = act(z)");

    m.def("dense_backward", [](const py::array& dy_in, const py::array& x_in, const py::array& w_in,
                               const py::array& z_in, const py::array& y_in, const std::string& act_name,
                               double slope, bool need_dx) {
        const Activation act = parse_activation(act_name);
        require_ndim(x_in, "x", 2);
        require_ndim(w_in, "w", 2);
        if (w_in.shape(0) != x_in.shape(1))
            throw py::value_error("w must have shape (IN, OUT) with IN = x.shape[1] = " +
                                  std::to_string(x_in.shape(1)) + ", got " + shape_string(w_in));
        const int64_t B = x_in.shape(0), IN = x_in.shape(1), OUT = w_in.shape(1);
        require_shape(dy_in, "dy", {B, OUT});
        require_shape(z_in, "z", {B, OUT});
        require_shape(y_in, "y", {B, OUT});
        return dispatch_float(dy_in, "dy", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto dy = as_float<T>(dy_in, "dy");
            auto x = as_float<T>(x_in, "x");
            auto w = as_float<T>(w_in, "w");
            auto z = as_float<T>(z_in, "z");
            auto y = as_float<T>(y_in, "y");
            py::array_t<T> dw({IN, OUT}), db(OUT), dz({B, OUT});
            py::object dx_result = py::none();
            T* dx_data = nullptr;
            if (need_dx) {
                py::array_t<T> dx({B, IN});
                dx_data = dx.mutable_data();
                dx_result = dx;
            }
            without_gil([&] {
                fastmlp::dense_backward(dx_data, dw.mutable_data(), db.mutable_data(), dz.mutable_data(), dy.data(),
                                        x.data(), w.data(), z.data(), y.data(), B, IN, OUT, act, T(slope));
            });
            return py::make_tuple(dx_result, dw, db);
        });
    }, py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("z"), py::arg("y"), py::arg("act"),
       py::arg("slope") = 0.01, py::arg("need_dx") = true, "(dx or None, dw, db)");
}

void bind_dropout(py::module_& m) {
    m.def("random_bits", &fastmlp::random_bits, py::arg("seed"), py::arg("counter"), py::arg("index"),
          "Counter-based 64 random bits (splitmix64's finaliser, three rounds)");
    m.def("random_uniform", &fastmlp::random_uniform, py::arg("seed"), py::arg("counter"), py::arg("index"),
          "random_bits' top 53 bits as a double in [0, 1)");

    m.def("dropout_forward", [](const py::array& x_in, double p, uint64_t seed, uint64_t counter) {
        require_probability(p, "p", false);
        return dispatch_float(x_in, "x", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto x = as_float<T>(x_in, "x");
            auto y = empty_like_shape<T>(x);
            auto mask = empty_like_shape<T>(x);
            without_gil([&] {
                fastmlp::dropout_forward(y.mutable_data(), mask.mutable_data(), x.data(), x.size(), T(p), seed, counter);
            });
            return py::make_tuple(y, mask);
        });
    }, py::arg("x"), py::arg("p"), py::arg("seed"), py::arg("counter"), "(y, mask): inverted dropout");

    m.def("dropout_backward", [](const py::array& dy_in, const py::array& mask_in) {
        require_same_shape(mask_in, "mask", dy_in, "dy");
        return dispatch_float(dy_in, "dy", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto dy = as_float<T>(dy_in, "dy");
            auto mask = as_float<T>(mask_in, "mask");
            auto dx = empty_like_shape<T>(dy);
            without_gil([&] { fastmlp::dropout_backward(dx.mutable_data(), dy.data(), mask.data(), dy.size()); });
            return dx;
        });
    }, py::arg("dy"), py::arg("mask"));
}

// Per-feature vectors of batch norm all have shape (F).
void require_features(const py::array& a, const char* name, int64_t F) { require_shape(a, name, {F}); }

void bind_batchnorm(py::module_& m) {
    m.def("batchnorm_forward_train", [](const py::array& x_in, const py::array& gamma_in, const py::array& beta_in,
                                        const py::array& rmean_in, const py::array& rvar_in, double momentum,
                                        double eps) {
        require_ndim(x_in, "x", 2);
        const int64_t B = x_in.shape(0), F = x_in.shape(1);
        if (B < 2)
            throw py::value_error("batch norm in training needs at least 2 rows (x.shape[0] > 1), got shape " +
                                  shape_string(x_in));
        require_features(gamma_in, "gamma", F);
        require_features(beta_in, "beta", F);
        require_features(rmean_in, "running_mean", F);
        require_features(rvar_in, "running_var", F);
        return dispatch_float(x_in, "x", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto x = as_float<T>(x_in, "x");
            auto gamma = as_float<T>(gamma_in, "gamma");
            auto beta = as_float<T>(beta_in, "beta");
            auto running_mean = copy_of<T>(as_float<T>(rmean_in, "running_mean"));
            auto running_var = copy_of<T>(as_float<T>(rvar_in, "running_var"));
            py::array_t<T> y({B, F}), xhat({B, F}), mean(F), invstd(F);
            without_gil([&] {
                fastmlp::batchnorm_forward_train(y.mutable_data(), xhat.mutable_data(), mean.mutable_data(),
                                                 invstd.mutable_data(), running_mean.mutable_data(),
                                                 running_var.mutable_data(), x.data(), gamma.data(), beta.data(),
                                                 B, F, T(momentum), T(eps));
            });
            return py::make_tuple(y, xhat, mean, invstd, running_mean, running_var);
        });
    }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"), py::arg("running_var"),
       py::arg("momentum") = 0.1, py::arg("eps") = 1e-5,
       "(y, xhat, mean, invstd, new running_mean, new running_var)");

    m.def("batchnorm_forward_eval", [](const py::array& x_in, const py::array& gamma_in, const py::array& beta_in,
                                       const py::array& rmean_in, const py::array& rvar_in, double eps) {
        require_ndim(x_in, "x", 2);
        const int64_t B = x_in.shape(0), F = x_in.shape(1);
        require_features(gamma_in, "gamma", F);
        require_features(beta_in, "beta", F);
        require_features(rmean_in, "running_mean", F);
        require_features(rvar_in, "running_var", F);
        return dispatch_float(x_in, "x", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto x = as_float<T>(x_in, "x");
            auto gamma = as_float<T>(gamma_in, "gamma");
            auto beta = as_float<T>(beta_in, "beta");
            auto running_mean = as_float<T>(rmean_in, "running_mean");
            auto running_var = as_float<T>(rvar_in, "running_var");
            py::array_t<T> y({B, F});
            without_gil([&] {
                fastmlp::batchnorm_forward_eval(y.mutable_data(), x.data(), gamma.data(), beta.data(),
                                                running_mean.data(), running_var.data(), B, F, T(eps));
            });
            return y;
        });
    }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"), py::arg("running_var"),
       py::arg("eps") = 1e-5);

    m.def("batchnorm_backward", [](const py::array& dy_in, const py::array& xhat_in, const py::array& gamma_in,
                                   const py::array& invstd_in) {
        require_ndim(dy_in, "dy", 2);
        const int64_t B = dy_in.shape(0), F = dy_in.shape(1);
        require_same_shape(xhat_in, "xhat", dy_in, "dy");
        require_features(gamma_in, "gamma", F);
        require_features(invstd_in, "invstd", F);
        return dispatch_float(dy_in, "dy", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto dy = as_float<T>(dy_in, "dy");
            auto xhat = as_float<T>(xhat_in, "xhat");
            auto gamma = as_float<T>(gamma_in, "gamma");
            auto invstd = as_float<T>(invstd_in, "invstd");
            py::array_t<T> dx({B, F}), dgamma(F), dbeta(F);
            without_gil([&] {
                fastmlp::batchnorm_backward(dx.mutable_data(), dgamma.mutable_data(), dbeta.mutable_data(), dy.data(),
                                            xhat.data(), gamma.data(), invstd.data(), B, F);
            });
            return py::make_tuple(dx, dgamma, dbeta);
        });
    }, py::arg("dy"), py::arg("xhat"), py::arg("gamma"), py::arg("invstd"), "(dx, dgamma, dbeta)");
}

// ---- optimizers ------------------------------------------------------------------------------
// Each binding copies params and the state buffers, updates the copies and returns them.

// params and every state buffer: the same shape as grads.
void check_flat_buffers(const py::array& grads, const std::vector<std::pair<const py::array*, const char*>>& buffers) {
    for (const auto& [array, name] : buffers) require_same_shape(*array, name, grads, "grads");
}

void bind_optimizers(py::module_& m) {
    m.def(
        "set_subnormal_guard",
        [](const std::string& guard) {
            if (!fastmlp::set_subnormal_guard(guard))
                throw py::value_error("guard must be 'on', 'off' or 'auto', got '" + guard + "'");
        },
        py::arg("guard"),
        R"doc(The subnormal guard of the float32 optimizer kernels: 'on' (groups of 64 elements with a
state near 0 are computed over double, for Intel cores that multiply subnormals in microcode),
'off' (the plain float loops everywhere: Zen 4 takes subnormals in its float unit, more cheaply
than the guard costs) or 'auto' (on for Intel CPUs, off elsewhere). The same bits either way.
Process-wide.)doc");
    m.def("subnormal_guard", &fastmlp::subnormal_guard_name,
          "Whether the float32 optimizer kernels run behind the subnormal guard: 'on' or 'off'.");
    m.def("sgd_update", [](const py::array& params_in, const py::array& buf_in, const py::array& grads_in,
                           double lr, double momentum, double dampening, bool nesterov, double weight_decay,
                           int64_t step) {
        check_flat_buffers(grads_in, {{&params_in, "params"}, {&buf_in, "momentum_buffer"}});
        require_step(step);
        return dispatch_float(params_in, "params", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto params = copy_of<T>(as_float<T>(params_in, "params"));
            auto buf = copy_of<T>(as_float<T>(buf_in, "momentum_buffer"));
            auto grads = as_float<T>(grads_in, "grads");
            without_gil([&] {
                fastmlp::sgd_update(params.mutable_data(), buf.mutable_data(), grads.data(), grads.size(), T(lr),
                                    T(momentum), T(dampening), nesterov, T(weight_decay), step);
            });
            return py::make_tuple(params, buf);
        });
    }, py::arg("params"), py::arg("momentum_buffer"), py::arg("grads"), py::arg("lr"), py::arg("momentum"),
       py::arg("dampening"), py::arg("nesterov"), py::arg("weight_decay"), py::arg("step"),
       "(params, momentum_buffer) after one torch.optim.SGD step");

    m.def("adagrad_update", [](const py::array& params_in, const py::array& sum_in, const py::array& grads_in,
                               double lr, double lr_decay, double weight_decay, double eps, int64_t step) {
        check_flat_buffers(grads_in, {{&params_in, "params"}, {&sum_in, "state_sum"}});
        require_step(step);
        return dispatch_float(params_in, "params", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto params = copy_of<T>(as_float<T>(params_in, "params"));
            auto state_sum = copy_of<T>(as_float<T>(sum_in, "state_sum"));
            auto grads = as_float<T>(grads_in, "grads");
            without_gil([&] {
                fastmlp::adagrad_update(params.mutable_data(), state_sum.mutable_data(), grads.data(), grads.size(),
                                        T(lr), T(lr_decay), T(weight_decay), T(eps), step);
            });
            return py::make_tuple(params, state_sum);
        });
    }, py::arg("params"), py::arg("state_sum"), py::arg("grads"), py::arg("lr"), py::arg("lr_decay"),
       py::arg("weight_decay"), py::arg("eps"), py::arg("step"), "(params, state_sum) after one Adagrad step");

    m.def("adadelta_update", [](const py::array& params_in, const py::array& square_in, const py::array& acc_in,
                                const py::array& grads_in, double lr, double rho, double eps, double weight_decay) {
        check_flat_buffers(grads_in, {{&params_in, "params"}, {&square_in, "square_avg"}, {&acc_in, "acc_delta"}});
        return dispatch_float(params_in, "params", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto params = copy_of<T>(as_float<T>(params_in, "params"));
            auto square_avg = copy_of<T>(as_float<T>(square_in, "square_avg"));
            auto acc_delta = copy_of<T>(as_float<T>(acc_in, "acc_delta"));
            auto grads = as_float<T>(grads_in, "grads");
            without_gil([&] {
                fastmlp::adadelta_update(params.mutable_data(), square_avg.mutable_data(), acc_delta.mutable_data(),
                                         grads.data(), grads.size(), T(lr), T(rho), T(eps), T(weight_decay));
            });
            return py::make_tuple(params, square_avg, acc_delta);
        });
    }, py::arg("params"), py::arg("square_avg"), py::arg("acc_delta"), py::arg("grads"), py::arg("lr"),
       py::arg("rho"), py::arg("eps"), py::arg("weight_decay"), "(params, square_avg, acc_delta) after one Adadelta step");

    m.def("rmsprop_update", [](const py::array& params_in, const py::array& square_in, const py::array& gavg_in,
                               const py::array& buf_in, const py::array& grads_in, double lr, double alpha,
                               double eps, double weight_decay, double momentum, bool centered) {
        check_flat_buffers(grads_in, {{&params_in, "params"}, {&square_in, "square_avg"}, {&gavg_in, "grad_avg"},
                                      {&buf_in, "momentum_buffer"}});
        return dispatch_float(params_in, "params", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto params = copy_of<T>(as_float<T>(params_in, "params"));
            auto square_avg = copy_of<T>(as_float<T>(square_in, "square_avg"));
            auto grad_avg = copy_of<T>(as_float<T>(gavg_in, "grad_avg"));
            auto buf = copy_of<T>(as_float<T>(buf_in, "momentum_buffer"));
            auto grads = as_float<T>(grads_in, "grads");
            without_gil([&] {
                fastmlp::rmsprop_update(params.mutable_data(), square_avg.mutable_data(), grad_avg.mutable_data(),
                                        buf.mutable_data(), grads.data(), grads.size(), T(lr), T(alpha), T(eps),
                                        T(weight_decay), T(momentum), centered);
            });
            return py::make_tuple(params, square_avg, grad_avg, buf);
        });
    }, py::arg("params"), py::arg("square_avg"), py::arg("grad_avg"), py::arg("momentum_buffer"), py::arg("grads"),
       py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
       py::arg("centered"), "(params, square_avg, grad_avg, momentum_buffer) after one RMSprop step");

    m.def("adam_update", [](const py::array& params_in, const py::array& m_in, const py::array& v_in,
                            const py::array& vmax_in, const py::array& grads_in, double lr, double beta1,
                            double beta2, double eps, double weight_decay, bool amsgrad,
                            bool decoupled_weight_decay, int64_t step, bool eps_hat) {
        check_flat_buffers(grads_in, {{&params_in, "params"}, {&m_in, "exp_avg"}, {&v_in, "exp_avg_sq"},
                                      {&vmax_in, "max_exp_avg_sq"}});
        require_step(step);
        return dispatch_float(params_in, "params", [&](auto zero) -> py::object {
            using T = decltype(zero);
            auto params = copy_of<T>(as_float<T>(params_in, "params"));
            auto exp_avg = copy_of<T>(as_float<T>(m_in, "exp_avg"));
            auto exp_avg_sq = copy_of<T>(as_float<T>(v_in, "exp_avg_sq"));
            auto max_exp_avg_sq = copy_of<T>(as_float<T>(vmax_in, "max_exp_avg_sq"));
            auto grads = as_float<T>(grads_in, "grads");
            without_gil([&] {
                fastmlp::adam_update(params.mutable_data(), exp_avg.mutable_data(), exp_avg_sq.mutable_data(),
                                     max_exp_avg_sq.mutable_data(), grads.data(), grads.size(), T(lr), T(beta1),
                                     T(beta2), T(eps), T(weight_decay), amsgrad, decoupled_weight_decay, step,
                                     eps_hat);
            });
            return py::make_tuple(params, exp_avg, exp_avg_sq, max_exp_avg_sq);
        });
    }, py::arg("params"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("max_exp_avg_sq"), py::arg("grads"),
       py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
       py::arg("amsgrad"), py::arg("decoupled_weight_decay"), py::arg("step"), py::arg("eps_hat") = false,
       "(params, exp_avg, exp_avg_sq, max_exp_avg_sq) after one Adam (or AdamW) step");
}

}  // namespace

void bind_kernels(py::module_& m) {
    bind_activations(m);
    bind_softmax_losses(m);
    bind_sparse(m);
    bind_regression_losses(m);
    bind_dense(m);
    bind_dropout(m);
    bind_batchnorm(m);
    bind_optimizers(m);
}
