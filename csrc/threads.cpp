// The thread count shared by every parallel region of fastmlp, the rule for when a piece
// of work is too small to be worth a fork/join, and what happens to both after fork().
#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "kernels.h"

namespace fastmlp {

namespace {
// Who decides the count, most specific first:
//   1. a model's own n_threads, for the duration of one call on the calling thread;
//   2. set_num_threads(n), process-wide: fit may run on a different Python thread than the
//      one that set it, so not omp_set_num_threads, whose value is per calling thread;
//   3. otherwise omp_get_max_threads() of the calling thread, read at every call: it holds
//      OMP_NUM_THREADS and follows omp_set_num_threads, which threadpoolctl's
//      threadpool_limits calls; capped to g_default_cap in child processes (see below).
// 0 means "not set" for all three.
thread_local int t_call_threads = 0;
std::atomic<int> g_user_threads{0};
std::atomic<int> g_default_cap{0};

// GNU libgomp keeps its worker threads in a pool that fork() does not copy: a child forked
// after the parent ran a parallel region with 2+ threads deadlocks in its next one. So
// once fastmlp has gone parallel, a forked child is held to one thread, whatever it asks.
std::atomic<bool> g_went_parallel{false};
std::atomic<bool> g_single_thread_only{false};

// Below this many multiply-adds one thread is faster: a fork/join costs about 1.5 us,
// roughly 100k multiply-adds on one Zen 3 core.
constexpr double kParallelWorkThreshold = 1.0e5;

// Whether the user chose the OpenMP default through the environment (read once, at load).
const bool g_omp_num_threads_given = [] {
    const char* value = std::getenv("OMP_NUM_THREADS");
    return value != nullptr && value[0] != '\0';
}();

// Runs in the child right after fork(): only atomic stores, nothing that could take a lock.
// Workers of a forked process pool then default to one thread each (unless OMP_NUM_THREADS
// says otherwise) instead of every one of them starting as many threads as there are cores.
void after_fork_in_child() {
    if (!g_omp_num_threads_given) g_default_cap.store(1, std::memory_order_relaxed);
    if (g_went_parallel.load(std::memory_order_relaxed))
        g_single_thread_only.store(true, std::memory_order_relaxed);
}

struct ForkHandlerRegistration {
    ForkHandlerRegistration() { pthread_atfork(nullptr, nullptr, &after_fork_in_child); }
};
const ForkHandlerRegistration register_fork_handler;
}  // namespace

int num_threads() {
    if (g_single_thread_only.load(std::memory_order_relaxed)) return 1;
    if (t_call_threads > 0) return t_call_threads;
    const int user = g_user_threads.load(std::memory_order_relaxed);
    if (user > 0) return user;
    const int openmp = std::max(1, omp_get_max_threads());
    const int cap = g_default_cap.load(std::memory_order_relaxed);
    return cap > 0 ? std::min(openmp, cap) : openmp;
}

void set_num_threads(int n) { g_user_threads.store(n < 1 ? 0 : n, std::memory_order_relaxed); }

bool num_threads_is_set() { return g_user_threads.load(std::memory_order_relaxed) > 0; }

void set_default_thread_cap(int n) { g_default_cap.store(n < 1 ? 0 : n, std::memory_order_relaxed); }

ScopedCallThreads::ScopedCallThreads(int n) : saved_(t_call_threads) { t_call_threads = n < 1 ? 0 : n; }

ScopedCallThreads::~ScopedCallThreads() { t_call_threads = saved_; }

int threads_for(double work) {
    if (work < kParallelWorkThreshold) return 1;
    const int n = num_threads();
    if (n > 1 && !g_went_parallel.load(std::memory_order_relaxed))
        g_went_parallel.store(true, std::memory_order_relaxed);
    return n;
}

}  // namespace fastmlp
