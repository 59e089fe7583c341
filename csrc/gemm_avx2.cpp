// AVX2/FMA GEMM micro-kernels, compiled with -mavx2 -mfma in this translation unit only and
// selected at run time. (Filled in by the fast-GEMM work; empty until then.)
#include "kernels.h"
