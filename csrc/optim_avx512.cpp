// The optimizer loops of optim_loops.h compiled with AVX-512 (see CMakeLists.txt) and
// chosen at run time by optim.cpp.
#include "optim_loops.h"

namespace fastmlp {
namespace optim_detail {

const AdamLoops<float>& avx512_adam_loops_float() {
    static const AdamLoops<float> loops = adam_loops_of_this_isa<float>();
    return loops;
}

const AdamLoops<double>& avx512_adam_loops_double() {
    static const AdamLoops<double> loops = adam_loops_of_this_isa<double>();
    return loops;
}

}  // namespace optim_detail
}  // namespace fastmlp
