// Facts about AMX's TDPBF16PS on this CPU, for the bfloat16 guide: whether Linux lets the
// process use the tiles, the instruction's arithmetic against models of a float32 sum (over
// random tiles of adversarial bfloat16 values), its error bound, denormals and throughput.
//   gcc -O2 -mamx-tile -mamx-bf16 tools/amx_bf16_probe.c -o /tmp/amx_probe -lm && /tmp/amx_probe
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } TileConfig;

static uint16_t A[16][32], B[16][32];  // A: 16 rows x 16 pairs; B: 16 pairs x 16 columns (pairs)
static float C0[16][16], C[16][16];
static uint64_t state = 88172645463325252ull;
static uint64_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }
static float f_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bf(uint16_t h) { return f_of((uint32_t)h << 16); }
// Random bfloat16 with exponents within +-spread of 1 (cancellations, ties), some zeros.
static uint16_t random_bf16(int spread) {
    uint64_t r = next();
    if ((r >> 40 & 15) == 0) return (uint16_t)((r & 1) << 15);
    return (uint16_t)((r & 1) << 15 | (127 + (int)(r >> 1 & 1023) % (2 * spread + 1) - spread) << 7 | (r >> 24 & 0x7f));
}
static void tdpbf16ps(void) {
    memcpy(C, C0, sizeof C);
    _tile_loadd(0, C, 64);
    _tile_loadd(1, A, 64);
    _tile_loadd(2, B, 64);
    _tile_dpbf16ps(0, 1, 2);
    _tile_stored(0, C, 64);
}
// Exact in double (two 8-bit significands); the sums below in double are exact for these
// exponent ranges but for rare far-apart terms.
static double product(int i, int j, int q, int e) { return (double)bf(A[i][2 * q + e]) * bf(B[q][2 * j + e]); }

int main(void) {
    long refused = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */);
    printf("arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA): %s\n", refused ? "refused" : "granted");
    if (refused) return 1;
    TileConfig config = {.palette = 1};
    for (int t = 0; t < 8; ++t) { config.rows[t] = 16; config.colsb[t] = 64; }
    _tile_loadconfig(&config);

    const char* names[] = {"odd product first, each add rounded", "even product first, each add rounded",
                           "each pair's sum rounded, added in order", "one rounding of c + the exact sum"};
    for (int pairs = 1; pairs <= 16; pairs *= 4) {
        long differ[4] = {0}, elements = 0;
        double worst = 0;
        for (int trial = 0; trial < 4000; ++trial) {
            for (int i = 0; i < 16; ++i)
                for (int k = 0; k < 32; ++k) {
                    A[i][k] = k < 2 * pairs ? random_bf16(12) : 0;
                    B[i][k] = i < pairs ? random_bf16(12) : 0;
                }
            for (int i = 0; i < 16; ++i)
                for (int j = 0; j < 16; ++j) C0[i][j] = trial % 2 ? 0.0f : bf(random_bf16(12));
            tdpbf16ps();
            for (int i = 0; i < 16; ++i)
                for (int j = 0; j < 16; ++j, ++elements) {
                    float odd_first = C0[i][j], even_first = C0[i][j], pair_sums = C0[i][j];
                    double exact = C0[i][j], magnitude = fabs(C0[i][j]);
                    for (int q = 0; q < pairs; ++q) {
                        const float a0 = bf(A[i][2 * q]), a1 = bf(A[i][2 * q + 1]);
                        const float b0 = bf(B[q][2 * j]), b1 = bf(B[q][2 * j + 1]);
                        odd_first = fmaf(a0, b0, fmaf(a1, b1, odd_first));  // exact products: one rounding each
                        even_first = fmaf(a1, b1, fmaf(a0, b0, even_first));
                        pair_sums = pair_sums + (float)(product(i, j, q, 0) + product(i, j, q, 1));
                        exact += product(i, j, q, 0) + product(i, j, q, 1);
                        magnitude += fabs(product(i, j, q, 0)) + fabs(product(i, j, q, 1));
                    }
                    const float models[4] = {odd_first, even_first, pair_sums, (float)exact};
                    for (int m = 0; m < 4; ++m) differ[m] += bits(models[m]) != bits(C[i][j]);
                    if (magnitude > 0 && fabs(C[i][j] - exact) / magnitude > worst) worst = fabs(C[i][j] - exact) / magnitude;
                }
        }
        printf("%d pair(s) per row, %ld elements; differing from:\n", pairs, elements);
        for (int m = 0; m < 4; ++m) printf("  %-42s %5.1f%%\n", names[m], 100.0 * differ[m] / elements);
        printf("  |TDPBF16PS - exact| <= %.2f * 2^-24 * (|c| + sum |a b|)\n", worst * 16777216.0);
    }

    memset(A, 0, sizeof A); memset(B, 0, sizeof B); memset(C0, 0, sizeof C0);
    A[0][0] = 0x0040; B[0][0] = 0x7180;  // a denormal bfloat16 times 2^100
    tdpbf16ps();
    printf("denormal operand * 2^100: %a (unflushed: %a)\n", C[0][0], bf(0x0040) * bf(0x7180));
    A[0][0] = B[0][0] = 0x1c80;  // 2^-70 * 2^-70: a denormal product
    tdpbf16ps();
    printf("2^-70 * 2^-70: %a\n", C[0][0]);

    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, A, 64); _tile_loadd(5, A, 64); _tile_loadd(6, B, 64); _tile_loadd(7, B, 64);
    const long iterations = 10000000;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long n = 0; n < iterations; ++n) {
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    const double seconds = (double)(end.tv_sec - start.tv_sec) + 1e-9 * (double)(end.tv_nsec - start.tv_nsec);
    printf("TDPBF16PS, 4 independent tiles, registers only: %.0f GFLOP/s on one core (%.1f ns each)\n",
           4.0 * iterations * 16 * 16 * 32 * 2 / seconds * 1e-9, seconds / (4.0 * iterations) * 1e9);

    // What a product could pay per thread to be sure of its configuration: load it each time,
    // or read it back and load it only when another one is in place (gemm_amx_bf16.cpp).
    for (int check = 0; check < 2; ++check) {
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (long n = 0; n < 1000000; ++n) {
            TileConfig current;
            if (check) _tile_storeconfig(&current);
            if (!check || memcmp(&current, &config, sizeof current) != 0) _tile_loadconfig(&config);
            _tile_zero(0);
        }
        clock_gettime(CLOCK_MONOTONIC, &end);
        printf("%s + TILEZERO: %.0f ns\n", check ? "STTILECFG, compare" : "LDTILECFG",
               ((double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec)) / 1e6);
    }
    _tile_release();
    return 0;
}
