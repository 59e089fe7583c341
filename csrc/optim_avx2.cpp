// The optimizer loops of optim_loops.h compiled with -mavx2 -mfma (see CMakeLists.txt) and
// chosen at run time by optim.cpp.
#include "optim_loops.h"

namespace fastmlp {
namespace optim_detail {

const UpdateLoops<float>& avx2_update_loops_float(bool guarded) {
    static const UpdateLoops<float> plain = update_loops_of_this_isa<float>(false);
    static const UpdateLoops<float> behind_guard = update_loops_of_this_isa<float>(true);
    return guarded ? behind_guard : plain;
}

const UpdateLoops<double>& avx2_update_loops_double() {
    static const UpdateLoops<double> loops = update_loops_of_this_isa<double>();
    return loops;
}

}  // namespace optim_detail
}  // namespace fastmlp
