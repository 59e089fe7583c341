// activations: see kernels.h
#include "kernels.h"
