// The thread count shared by every parallel region of fastmlp, and the rule for when a
// piece of work is too small to be worth a fork/join.
#include <omp.h>

#include <atomic>

#include "kernels.h"

namespace fastmlp {

namespace {
// A process-wide setting rather than omp_set_num_threads, whose value is per calling
// thread: fit may run on a different Python thread than the one that set it.
std::atomic<int> g_num_threads{omp_get_max_threads()};

// Below this many multiply-adds one thread is faster: a fork/join costs about 1.5 us,
// roughly 100k multiply-adds on one Zen 3 core.
constexpr double kParallelWorkThreshold = 1.0e5;
}  // namespace

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) { g_num_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }

int threads_for(double work) { return work < kParallelWorkThreshold ? 1 : num_threads(); }

}  // namespace fastmlp
