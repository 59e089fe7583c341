// The float optimizer loops of csrc/optim_loops.h with and without the subnormal guard, on
// states with no subnormal, one in 64 and all subnormal (docs/guide/performance.md, "Optimizer
// states near zero"), and the AVX-512 divide and square root on normal and subnormal inputs.
// One thread, 16,384 elements (in L2), best of 20 runs of 100 calls, ns per element.
//
//   g++ -O3 -std=c++17 -mavx2 -mfma -mavx512f -mavx512vl -mavx512bw -mavx512dq -ffp-contract=off \
//       -fno-math-errno -fno-trapping-math -Icsrc bench/optimizer_loops.cpp -o /tmp/optimizer_loops
//   /tmp/optimizer_loops
//
// The loops are compiled here as the AVX-512 build compiles them (optim_avx512.cpp's flags).
#include <immintrin.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "optim_loops.h"

using fastmlp::optim_detail::update_loops_of_this_isa;
using fastmlp::optim_detail::UpdateLoop;
using fastmlp::optim_detail::UpdateLoops;
using fastmlp::optim_detail::UpdateScalars;

namespace {

constexpr int64_t kElements = 16384;

// Every `every`-th element (0: none) gets a subnormal first state and a zero gradient, as a
// weight whose gradient stays 0; the others ordinary values.
struct States {
    std::vector<float> params, state0, state1, grads;
    States(int every) : params(kElements), state0(kElements), state1(kElements), grads(kElements) {
        std::mt19937 rng(0);
        std::normal_distribution<float> normal;
        for (int64_t i = 0; i < kElements; ++i) {
            params[i] = normal(rng);
            state0[i] = std::fabs(normal(rng)) * 1e-3f;
            state1[i] = std::fabs(normal(rng)) * 1e-6f;
            grads[i] = normal(rng) * 1e-3f;
        }
        if (every)
            for (int64_t i = 0; i < kElements; i += every) state0[i] = 1e-40f, grads[i] = 0;
    }
};

double ns_per_element(UpdateLoop<float> loop, int every, const UpdateScalars<float>& s) {
    States x(every);
    double best = 1e30;
    for (int run = 0; run < 20; ++run) {
        const auto start = std::chrono::steady_clock::now();
        for (int call = 0; call < 100; ++call) {
            loop(x.params.data(), x.state0.data(), x.state1.data(), nullptr, x.grads.data(), kElements, s);
            if (every)  // the decayed states back to where they were, so every call sees the same
                for (int64_t i = 0; i < kElements; i += every) x.state0[i] = 1e-40f;
        }
        const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
        best = std::min(best, took.count() / 100 / kElements);
    }
    return best;
}

template <typename Op>
double ns_per_vector(float value, Op op) {
    std::vector<float> x(4096, value);
    double best = 1e30;
    for (int run = 0; run < 10; ++run) {
        __m512 sum = _mm512_setzero_ps();
        const auto start = std::chrono::steady_clock::now();
        for (int pass = 0; pass < 200; ++pass)
            for (size_t i = 0; i < x.size(); i += 16) sum = _mm512_add_ps(sum, op(_mm512_loadu_ps(&x[i])));
        const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
        volatile float sink = _mm512_reduce_add_ps(sum);
        (void)sink;
        best = std::min(best, took.count() / 200 / (x.size() / 16));
    }
    return best;
}

}  // namespace

int main() {
    const UpdateLoops<float> plain = update_loops_of_this_isa<float>(false);
    const UpdateLoops<float> guarded = update_loops_of_this_isa<float>(true);
    UpdateScalars<float> s{};
    s.lr = 1e-2f, s.momentum = 0.9f, s.decay = 0.99f, s.eps = 1e-8f, s.decay_factor = 1;
    s.beta1 = 0.9f, s.beta2 = 0.999f, s.step_size = 1e-2f, s.sqrt_bias_correction2 = 0.3f;
    struct Row {
        const char* name;
        UpdateLoop<float> plain, guarded;
    };
    const Row rows[] = {{"Adam", plain.adam[0][0], guarded.adam[0][0]},
                        {"SGD momentum", plain.sgd[1][0][0], guarded.sgd[1][0][0]},
                        {"RMSprop", plain.rmsprop[0][0], guarded.rmsprop[0][0]},
                        {"Adagrad", plain.adagrad, guarded.adagrad}};
    std::printf("| loop | states | plain (ns/element) | guarded (ns/element) |\n|---|---|---|---|\n");
    for (const Row& row : rows)
        for (int every : {0, 64, 1})
            std::printf("| %s | %s | %.3f | %.3f |\n", row.name,
                        every == 0 ? "none subnormal" : every == 64 ? "one in 64 subnormal" : "all subnormal",
                        ns_per_element(row.plain, every, s), ns_per_element(row.guarded, every, s));
    const __m512 divisor = _mm512_set1_ps(0.9f);
    auto divide = [&](__m512 v) { return _mm512_div_ps(v, divisor); };
    auto root = [](__m512 v) { return _mm512_sqrt_ps(v); };
    auto multiply = [&](__m512 v) { return _mm512_mul_ps(v, divisor); };
    std::printf("\n| 16 floats | normal input (ns) | subnormal input (ns) |\n|---|---|---|\n");
    std::printf("| vmulps | %.2f | %.2f |\n", ns_per_vector(1.5e-30f, multiply), ns_per_vector(1.5e-40f, multiply));
    std::printf("| vdivps | %.2f | %.2f |\n", ns_per_vector(1.5e-30f, divide), ns_per_vector(1.5e-40f, divide));
    std::printf("| vsqrtps | %.2f | %.2f |\n", ns_per_vector(1.5e-30f, root), ns_per_vector(1.5e-40f, root));
}
