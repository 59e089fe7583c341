// Python bindings of the GEMM (fastmlp._core.kernels.gemm and micro-kernel selection), for
// tests and benchmarks. Checks shapes and dtypes before calling the kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>
#include <type_traits>

#include "gemm_internal.h"
#include "kernels.h"

namespace py = pybind11;

namespace {

std::string shape_string(const py::array& x) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < x.ndim(); ++d) s += (d ? ", " : "") + std::to_string(x.shape(d));
    return s + (x.ndim() == 1 ? ",)" : ")");
}

void require_matrix(const py::array& x, const char* name) {
    if (x.ndim() != 2)
        throw py::value_error(std::string("gemm: ") + name + " must be 2-D, got shape " +
                              shape_string(x));
}

template <typename T>
py::array typed_gemm(const py::array& a_in, const py::array& b_in, bool transpose_a,
                     bool transpose_b, const py::object& c_obj, bool accumulate,
                     bool bfloat16 = false) {
    using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;
    // Non-contiguous inputs become contiguous copies (the dtype already matches: no cast).
    const Array a = Array::ensure(a_in), b = Array::ensure(b_in);
    const int64_t M = transpose_a ? a.shape(1) : a.shape(0);
    const int64_t K = transpose_a ? a.shape(0) : a.shape(1);
    const int64_t N = transpose_b ? b.shape(0) : b.shape(1);
    const int64_t K_b = transpose_b ? b.shape(1) : b.shape(0);
    if (K != K_b)
        throw py::value_error("gemm: inner dimensions differ: a" + std::string(transpose_a ? ".T" : "") +
                              " has shape (" + std::to_string(M) + ", " + std::to_string(K) +
                              "), b" + (transpose_b ? ".T" : "") + " has shape (" +
                              std::to_string(K_b) + ", " + std::to_string(N) + ")");
    Array c;
    if (!c_obj.is_none()) {
        if (!py::isinstance<py::array>(c_obj))
            throw py::type_error("gemm: c must be a numpy array or None");
        const auto c_in = py::reinterpret_borrow<py::array>(c_obj);
        if (!py::isinstance<py::array_t<T>>(c_in) || c_in.dtype().num() != a.dtype().num())
            throw py::type_error("gemm: c must have the dtype of a and b (" +
                                 std::string(py::str(a.dtype())) + "), got " +
                                 std::string(py::str(c_in.dtype())));
        require_matrix(c_in, "c");
        if (c_in.shape(0) != M || c_in.shape(1) != N)
            throw py::value_error("gemm: c must have shape (" + std::to_string(M) + ", " +
                                  std::to_string(N) + "), got " + shape_string(c_in));
        if (!(c_in.flags() & py::array::c_style) || !c_in.writeable())
            throw py::value_error("gemm: c must be a writeable C-contiguous array");
        c = py::reinterpret_borrow<Array>(c_in);
    } else {
        if (accumulate) throw py::value_error("gemm: accumulate=True needs an output array c");
        c = Array({M, N});
    }
    const T* a_ptr = a.data();
    const T* b_ptr = b.data();
    T* c_ptr = c.mutable_data();
    {
        py::gil_scoped_release release;
        if constexpr (std::is_same_v<T, float>) {
            if (bfloat16)
                fastmlp::gemm_bfloat16(c_ptr, a_ptr, b_ptr, M, N, K, transpose_a, transpose_b, accumulate,
                                       fastmlp::GemmEpilogue<float>{});
            else
                fastmlp::gemm<T>(c_ptr, a_ptr, b_ptr, M, N, K, transpose_a, transpose_b, accumulate);
        } else {
            fastmlp::gemm<T>(c_ptr, a_ptr, b_ptr, M, N, K, transpose_a, transpose_b, accumulate);
        }
    }
    return std::move(c);
}

py::array gemm_binding(const py::array& a, const py::array& b, bool transpose_a,
                       bool transpose_b, const py::object& c, bool accumulate) {
    require_matrix(a, "a");
    require_matrix(b, "b");
    const auto float32 = py::dtype::of<float>(), float64 = py::dtype::of<double>();
    if (!a.dtype().is(b.dtype()) && a.dtype().num() != b.dtype().num())
        throw py::type_error("gemm: a and b must have the same dtype, got " +
                             std::string(py::str(a.dtype())) + " and " +
                             std::string(py::str(b.dtype())));
    if (a.dtype().num() == float32.num())
        return typed_gemm<float>(a, b, transpose_a, transpose_b, c, accumulate);
    if (a.dtype().num() == float64.num())
        return typed_gemm<double>(a, b, transpose_a, transpose_b, c, accumulate);
    throw py::type_error("gemm: a and b must be float32 or float64, got " +
                         std::string(py::str(a.dtype())));
}

py::array gemm_bfloat16_binding(const py::array& a, const py::array& b, bool transpose_a,
                                bool transpose_b, const py::object& c, bool accumulate) {
    require_matrix(a, "a");
    require_matrix(b, "b");
    const auto float32 = py::dtype::of<float>();
    if (a.dtype().num() != float32.num() || b.dtype().num() != float32.num())
        throw py::type_error("gemm_bfloat16: a and b must be float32 (rounded to bfloat16 inside), got " +
                             std::string(py::str(a.dtype())) + " and " + std::string(py::str(b.dtype())));
    return typed_gemm<float>(a, b, transpose_a, transpose_b, c, accumulate, /*bfloat16=*/true);
}

// A b operand of gemm_bfloat16 packed once (kernels.pack_bfloat16_b), for
// gemm_bfloat16_packed: the prediction path's product, with the weights packed beforehand.
struct PackedBfloat16Matrix {
    std::vector<float, fastmlp::CacheLineAllocator<float>> data;
    fastmlp::Bfloat16Packing packing;
    int64_t K, N;
};

const char* packing_name(fastmlp::Bfloat16Packing packing) {
    switch (packing) {
        case fastmlp::Bfloat16Packing::amx: return "amx";
        case fastmlp::Bfloat16Packing::vdpbf16ps: return "vdpbf16ps";
        default: return "float_pairs";
    }
}

PackedBfloat16Matrix pack_bfloat16_b_binding(const py::array& b_in, bool transpose_b) {
    require_matrix(b_in, "b");
    if (b_in.dtype().num() != py::dtype::of<float>().num())
        throw py::type_error("pack_bfloat16_b: b must be float32, got " + std::string(py::str(b_in.dtype())));
    using Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
    const Array b = Array::ensure(b_in);
    const int64_t K = transpose_b ? b.shape(1) : b.shape(0), N = transpose_b ? b.shape(0) : b.shape(1);
    PackedBfloat16Matrix packed{{}, fastmlp::bfloat16_packing(N), K, N};
    packed.data.resize(static_cast<size_t>(fastmlp::bfloat16_packed_b_size(packed.packing, K, N)));
    py::gil_scoped_release release;
    fastmlp::pack_bfloat16_b(packed.data.data(), packed.packing, b.data(), K, N, transpose_b);
    return packed;
}

py::array gemm_bfloat16_packed_binding(const py::array& a_in, const PackedBfloat16Matrix& b, bool transpose_a) {
    require_matrix(a_in, "a");
    if (a_in.dtype().num() != py::dtype::of<float>().num())
        throw py::type_error("gemm_bfloat16_packed: a must be float32, got " + std::string(py::str(a_in.dtype())));
    using Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
    const Array a = Array::ensure(a_in);
    const int64_t M = transpose_a ? a.shape(1) : a.shape(0), K = transpose_a ? a.shape(0) : a.shape(1);
    if (K != b.K)
        throw py::value_error("gemm_bfloat16_packed: a" + std::string(transpose_a ? ".T" : "") + " has shape (" +
                              std::to_string(M) + ", " + std::to_string(K) + "), the packed b (" +
                              std::to_string(b.K) + ", " + std::to_string(b.N) + ")");
    Array c({M, b.N});
    float* c_ptr = c.mutable_data();
    py::gil_scoped_release release;
    fastmlp::gemm_bfloat16_packed_b(c_ptr, a.data(), {b.data.data(), b.packing}, M, b.N, K, transpose_a, false,
                                    fastmlp::GemmEpilogue<float>{});
    return std::move(c);
}

void set_isa_or_raise(const std::string& isa) {
    if (fastmlp::set_isa(isa)) return;
    if (fastmlp::is_isa_name(isa))
        throw py::value_error("isa '" + isa + "' is not supported by this CPU (its widest is '" +
                              fastmlp::widest_cpu_isa_name() + "')");
    throw py::value_error("isa must be 'portable', 'avx2', 'avx512', 'avx512_bf16', 'amx_bf16' or 'auto', got '" + isa + "'");
}

// The peak loops run until `seconds` have passed: a NaN, infinite or huge figure would hang.
void require_peak_seconds(const char* function, double seconds) {
    if (!(seconds > 0 && seconds <= 60))
        throw py::value_error(std::string(function) + ": seconds must be in (0, 60], got " +
                              std::string(py::str(py::float_(seconds))));
}

}  // namespace

void bind_gemm(py::module_& m) {
    m.def("gemm", &gemm_binding, py::arg("a"), py::arg("b"), py::arg("transpose_a") = false,
          py::arg("transpose_b") = false, py::arg("c") = py::none(),
          py::arg("accumulate") = false,
          R"doc(c = op(a) @ op(b) (or c += ... when accumulate), op = transpose when asked.

a, b (and c if given) must share a dtype, float32 or float64. c, if given, must be a
writeable C-contiguous (M, N) array and is returned. The GIL is released during the call.)doc");
    m.def("gemm_bfloat16", &gemm_bfloat16_binding, py::arg("a"), py::arg("b"),
          py::arg("transpose_a") = false, py::arg("transpose_b") = false, py::arg("c") = py::none(),
          py::arg("accumulate") = false,
          R"doc(c = op(a) @ op(b) with bfloat16 operands: float32 a and b rounded to bfloat16 (nearest
even), products summed in float32 in the canonical pair order (VDPBF16PS's arithmetic; on CPUs
without AVX512_BF16 emulated with the same bits, denormals apart), except under the amx_bf16
instruction set: AMX's own order for c wider than 16 columns (bfloat16_path). c is float32,
as in gemm.)doc");
    py::class_<PackedBfloat16Matrix>(m, "PackedBfloat16Matrix",
                                     "a gemm_bfloat16 b operand packed once (pack_bfloat16_b)")
        .def_property_readonly("shape", [](const PackedBfloat16Matrix& b) { return py::make_tuple(b.K, b.N); },
                               "(K, N): the shape of op(b)")
        .def_property_readonly("packing", [](const PackedBfloat16Matrix& b) { return packing_name(b.packing); },
                               "'amx' (AMX tiles), 'vdpbf16ps' (VDPBF16PS panels), both bfloat16, or "
                               "'float_pairs' (the emulation's rounded float32)")
        .def_property_readonly("nbytes", [](const PackedBfloat16Matrix& b) { return b.data.size() * sizeof(float); });
    m.def("pack_bfloat16_b", &pack_bfloat16_b_binding, py::arg("b"), py::arg("transpose_b") = false,
          R"doc(op(b) (float32, rounded to bfloat16) packed once for many gemm_bfloat16_packed calls, in
the layout of the kernels gemm_bfloat16 runs for it under the instruction set in use (as a
bfloat16 model's prediction packs its weights).)doc");
    m.def("gemm_bfloat16_packed", &gemm_bfloat16_packed_binding, py::arg("a"), py::arg("b"),
          py::arg("transpose_a") = false,
          R"doc(c = op(a) @ b for b from pack_bfloat16_b: the bits of gemm_bfloat16(a, b) under the
instruction set b was packed under (a float32, rounded to bfloat16; c float32).)doc");
    m.def("native_bfloat16", &fastmlp::native_bfloat16,
          "Whether gemm_bfloat16 runs VDPBF16PS or AMX (True) or the emulation (False).");
    m.def("bfloat16_path", &fastmlp::bfloat16_path,
          "What gemm_bfloat16 runs for c wider than 16 columns: 'amx_bf16', 'avx512_bf16' or 'emulated'.");
    m.def("force_portable_gemm", &fastmlp::force_portable_gemm, py::arg("flag"),
          "Use the portable kernels (True) or the CPU's widest ones (False).");
    m.def("set_isa", &set_isa_or_raise, py::arg("isa"),
          R"doc(Use the kernels of one instruction set: 'portable', 'avx2', 'avx512', 'avx512_bf16'
(AVX-512 plus VDPBF16PS for bfloat16 GEMMs), 'amx_bf16' (AVX-512 plus AMX for bfloat16 GEMMs), or
'auto' (the widest the CPU has). ValueError for another name or one this CPU lacks. Process-wide.)doc");
    m.def(
        "set_avx512_tile",
        [](const std::string& tile) {
            if (!fastmlp::set_avx512_tile(tile))
                throw py::value_error("tile must be '16x16', '8x32' or 'auto', got '" + tile + "'");
        },
        py::arg("tile"),
        R"doc(The float tile of the AVX-512 kernels: '16x16' (sized for Zen 4), '8x32' (for Intel
cores' two 512-bit FMA pipes) or 'auto' (8x32 on Intel CPUs, 16x16 elsewhere). The same bits
either way. Process-wide.)doc");
    m.def("avx512_tile", &fastmlp::avx512_tile_name,
          "The float tile the AVX-512 kernels use: '16x16' or '8x32'.");
    m.def("cpu_supports_isa", [](const std::string& isa) { return fastmlp::cpu_supports_isa(isa); },
          py::arg("isa"), "Whether this CPU can run the kernels of `isa`.");
    m.def("gemm_kernel_name", &fastmlp::gemm_kernel_name,
          "The instruction set in use: 'amx_bf16', 'avx512_bf16', 'avx512', 'avx2' or 'portable'.");
    m.def(
        "fma_peak_gflops",
        [](double seconds) -> double {
            require_peak_seconds("fma_peak_gflops", seconds);
            const std::string isa = fastmlp::gemm_kernel_name();
            if (isa == "portable")
                throw std::runtime_error("fma_peak_gflops needs the avx2 or avx512 kernels in use");
#if FASTMLP_X86_KERNELS
            py::gil_scoped_release release;
            return isa == "avx512" || isa == "avx512_bf16" || isa == "amx_bf16" ? fastmlp::gemm_detail::avx512_fma_peak_gflops(seconds)
                                   : fastmlp::gemm_detail::avx2_fma_peak_gflops(seconds);
#else
            static_cast<void>(seconds);  // only the portable kernels are compiled here
            throw std::logic_error("fma_peak_gflops: no avx2 or avx512 kernels in this build");
#endif
        },
        py::arg("seconds") = 0.2,
        "Single-thread fp32 FMA throughput (GFLOP/s) of a register-only loop, in the registers "
        "of the instruction set in use (ymm for avx2, zmm for avx512).");
    m.def(
        "bf16_peak_gflops",
        [](double seconds) -> double {
            require_peak_seconds("bf16_peak_gflops", seconds);
            if (!fastmlp::cpu_supports_isa("avx512_bf16"))
                throw std::runtime_error(
                    "bf16_peak_gflops needs a CPU with AVX512_BF16 (VDPBF16PS); this one has not");
#if FASTMLP_X86_KERNELS
            py::gil_scoped_release release;
            return fastmlp::gemm_detail::avx512_bf16_peak_gflops(seconds);
#else
            throw std::logic_error("bf16_peak_gflops: no avx512_bf16 kernels in this build");
#endif
        },
        py::arg("seconds") = 0.2,
        "Single-thread bfloat16 dot-product throughput (GFLOP/s) of a register-only VDPBF16PS "
        "loop on zmm registers, 4 flops per float32 lane (two products, two adds). RuntimeError "
        "on a CPU without AVX512_BF16; ValueError unless 0 < seconds <= 60.");
    m.def(
        "amx_bf16_peak_gflops",
        [](double seconds) -> double {
            require_peak_seconds("amx_bf16_peak_gflops", seconds);
            if (!fastmlp::cpu_supports_isa("amx_bf16"))
                throw std::runtime_error("amx_bf16_peak_gflops needs a CPU with AMX-BF16 and an OS that lets "
                                         "the process use its tiles; this one has not");
#if FASTMLP_X86_KERNELS
            py::gil_scoped_release release;
            return fastmlp::gemm_detail::amx_bf16_peak_gflops(seconds);
#else
            throw std::logic_error("amx_bf16_peak_gflops: no amx_bf16 kernels in this build");
#endif
        },
        py::arg("seconds") = 0.2,
        "Single-thread AMX bfloat16 throughput (GFLOP/s): TDPBF16PS on four accumulator tiles "
        "from operand tiles loaded once, 16 x 16 x 32 multiply-adds per instruction. RuntimeError "
        "where amx_bf16 is not available; ValueError unless 0 < seconds <= 60.");
}
