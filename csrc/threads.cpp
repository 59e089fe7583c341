// The thread count shared by every parallel region of fastmlp, the rule for when a piece
// of work is too small to be worth a fork/join, and what happens to both after fork().
#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

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

// Below this many multiply-adds a parallel region runs on one thread. On an idle machine a
// fork/join costs about 1.5 us (~200k multiply-adds on one Zen 5 core with AVX-512), so a
// region this small gains almost nothing from a second thread; on a busy one every fork/join
// or barrier whose partner thread is off its core costs the waiter its whole spin
// (GOMP_SPINCOUNT=10000: ~0.5 ms measured on the 2-core development VM), so fewer and
// larger regions are what keeps a 2-thread step close to a 1-thread one. 1e6 keeps the big
// GEMMs, the optimizer update and the finiteness check of 784-256-10 parallel and makes the
// output layer's products (128x256x10) and the batch gather serial.
constexpr double kParallelWorkThreshold = 1.0e6;

// Below this many multiply-adds a whole call (a prediction, a run of training steps) runs on
// one thread: starting a second thread whose core is busy costs up to a spin (above), which
// would dominate a call shorter than about half a millisecond. Predicting 100 rows of
// 784-256-10 (20M) or an epoch of a scikit-learn-sized problem stays on one thread.
constexpr double kCallParallelWorkThreshold = 5.0e7;

// ThreadLearner: calls before a first probe of the other side, and the longest gap.
constexpr int64_t kFirstProbeInterval = 4;
constexpr int64_t kLongestProbeInterval = 64;

// Whether the user chose the OpenMP default through the environment (read once, at load).
const bool g_omp_num_threads_given = [] {
    const char* value = std::getenv("OMP_NUM_THREADS");
    return value != nullptr && value[0] != '\0';
}();

// ModelStateWrite's bookkeeping: the writes in progress, and whether a fork waits for them.
std::atomic<int> g_state_writes{0};
std::atomic<bool> g_fork_pending{false};
// The models' mutexes, which a child needs unlocked. Held across fork() so that no model is
// being added or removed at that moment.
std::mutex g_reset_mutexes_lock;
std::vector<std::recursive_mutex*> g_reset_mutexes;

// Runs in the forking thread before fork(): waits for the writes of model state in progress
// (one training step at most) and holds new ones back.
void before_fork() {
    g_reset_mutexes_lock.lock();
    g_fork_pending.store(true);
    while (g_state_writes.load() != 0) std::this_thread::yield();
}

void after_fork_in_parent() {
    g_fork_pending.store(false);
    g_reset_mutexes_lock.unlock();
}

// Runs in the child right after fork(), where only the forking thread exists. Workers of a
// forked process pool default to one thread each (unless OMP_NUM_THREADS says otherwise)
// instead of every one of them starting as many threads as there are cores. Each model's
// mutex is constructed again in place: a thread of the parent may have held it, and that
// thread is not here to unlock it (the old object's storage is simply reused).
void after_fork_in_child() {
    if (!g_omp_num_threads_given) g_default_cap.store(1, std::memory_order_relaxed);
    if (g_went_parallel.load(std::memory_order_relaxed))
        g_single_thread_only.store(true, std::memory_order_relaxed);
    for (std::recursive_mutex* mutex : g_reset_mutexes) new (mutex) std::recursive_mutex;
    g_state_writes.store(0);  // a writer that had announced itself but was held back
    g_fork_pending.store(false);
    g_reset_mutexes_lock.unlock();
}

struct ForkHandlerRegistration {
    ForkHandlerRegistration() { pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child); }
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

bool num_threads_is_default() {
    if (g_single_thread_only.load(std::memory_order_relaxed) || t_call_threads > 0) return false;
    if (num_threads_is_set() || g_omp_num_threads_given) return false;
    if (g_default_cap.load(std::memory_order_relaxed) > 0) return false;
    return omp_get_max_threads() >= omp_get_num_procs();  // not lowered by threadpool_limits
}

void set_default_thread_cap(int n) { g_default_cap.store(n < 1 ? 0 : n, std::memory_order_relaxed); }

ScopedCallThreads::ScopedCallThreads(int n) : saved_(t_call_threads) { t_call_threads = n < 1 ? 0 : n; }

ScopedCallThreads::~ScopedCallThreads() { t_call_threads = saved_; }

namespace {
void begin_state_write() {
    for (;;) {
        g_state_writes.fetch_add(1);  // announce, then look: a fork either sees us or we see it
        if (!g_fork_pending.load()) return;
        g_state_writes.fetch_sub(1);
        while (g_fork_pending.load()) std::this_thread::yield();
    }
}

void end_state_write() { g_state_writes.fetch_sub(1); }
}  // namespace

ModelStateWrite::ModelStateWrite() { begin_state_write(); }

ModelStateWrite::~ModelStateWrite() { end_state_write(); }

ModelStateWritePause::ModelStateWritePause() { end_state_write(); }

ModelStateWritePause::~ModelStateWritePause() { begin_state_write(); }

void register_for_reset_after_fork(std::recursive_mutex* mutex) {
    const std::lock_guard<std::mutex> lock(g_reset_mutexes_lock);
    g_reset_mutexes.push_back(mutex);
}

void unregister_for_reset_after_fork(std::recursive_mutex* mutex) {
    const std::lock_guard<std::mutex> lock(g_reset_mutexes_lock);
    g_reset_mutexes.erase(std::find(g_reset_mutexes.begin(), g_reset_mutexes.end(), mutex));
}

int threads_for(double work) {
    if (work < kParallelWorkThreshold) return 1;
    const int n = num_threads();
    if (n > 1 && !g_went_parallel.load(std::memory_order_relaxed))
        g_went_parallel.store(true, std::memory_order_relaxed);
    return n;
}

bool call_is_parallel(double work) { return work >= kCallParallelWorkThreshold; }

double parallel_work_threshold() { return kParallelWorkThreshold; }

double call_parallel_work_threshold() { return kCallParallelWorkThreshold; }

// ---- ThreadLearner -----------------------------------------------------------------------------

ThreadChoice ThreadLearner::choose(int threads) {
    if (threads <= 1) return {1, false};
    if (!known_[1]) return {threads, true};
    if (!known_[0]) return {1, true};
    const bool many_wins = rate_[1] >= rate_[0];
    if (--until_probe_ > 0) return {many_wins ? threads : 1, false};
    probing_ = true;
    return {many_wins ? 1 : threads, true};
}

void ThreadLearner::record(int threads, double seconds, double work) {
    if (!(seconds > 0) || !(work > 0)) return;
    if (!warmed_up_) {  // the first call sizes the workspace and faults its pages in: not a fair race
        warmed_up_ = true;
        return;
    }
    const int side = threads > 1 ? 1 : 0;
    const double rate = work / seconds;
    const bool many_won_before = rate_[1] >= rate_[0];
    // The side in use: an even average of the old and the new, so one noisy call moves it but
    // not all the way. A probe replaces its side's figure, which is old by then.
    rate_[side] = known_[side] && !probing_ ? 0.5 * (rate_[side] + rate) : rate;
    known_[side] = true;
    if (!known_[0] || !known_[1]) return;
    if (!probing_) {
        if (until_probe_ <= 0) until_probe_ = probe_interval_;
        return;
    }
    // After a probe: the incumbent held, so probe less often; or it lost, so look again soon.
    probing_ = false;
    const bool many_wins = rate_[1] >= rate_[0];
    probe_interval_ = many_wins == many_won_before ? std::min(2 * probe_interval_, kLongestProbeInterval)
                                                   : kFirstProbeInterval;
    until_probe_ = probe_interval_;
}

ThreadLearner::ThreadLearner() : probe_interval_(kFirstProbeInterval), until_probe_(kFirstProbeInterval) {}

}  // namespace fastmlp
