// optim: see kernels.h
#include "kernels.h"
