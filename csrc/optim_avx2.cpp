// The optimizer loops of optim_loops.h compiled with -mavx2 -mfma (see CMakeLists.txt) and
// chosen at run time by optim.cpp.
#include "optim_loops.h"

namespace fastmlp {
namespace optim_detail {

const UpdateLoops<float>& avx2_update_loops_float() {
    static const UpdateLoops<float> loops = update_loops_of_this_isa<float>();
    return loops;
}

const UpdateLoops<double>& avx2_update_loops_double() {
    static const UpdateLoops<double> loops = update_loops_of_this_isa<double>();
    return loops;
}

}  // namespace optim_detail
}  // namespace fastmlp
