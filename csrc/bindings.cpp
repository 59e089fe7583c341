// The Python module fastmlp._core: thread control, build information and the network.
#include <pybind11/pybind11.h>

#include "kernels.h"

namespace py = pybind11;

void bind_kernels(py::module_& m);
void bind_gemm(py::module_& m);

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastmlp's compiled core";
    m.def("set_num_threads", &fastmlp::set_num_threads);
    m.def("get_num_threads", &fastmlp::num_threads);
    py::module_ kernels = m.def_submodule("kernels", "individual kernels, for testing");
    bind_kernels(kernels);
    bind_gemm(kernels);
}
