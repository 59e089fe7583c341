// The element-wise loops of vector_math.h (exp, sigmoid, tanh, erf, gelu, the finiteness
// test) compiled with -mavx2 -mfma (see CMakeLists.txt), with FMA, and chosen at run time by activations.cpp.
#include "vector_math.h"

namespace fastmlp {
namespace vector_math {

const ElementwiseLoops<float>& avx2_elementwise_loops_float() {
    static const ElementwiseLoops<float> loops = elementwise_loops_of_this_isa<true, float>();
    return loops;
}

const ElementwiseLoops<double>& avx2_elementwise_loops_double() {
    static const ElementwiseLoops<double> loops = elementwise_loops_of_this_isa<true, double>();
    return loops;
}

}  // namespace vector_math
}  // namespace fastmlp
