// layers: see kernels.h
#include "kernels.h"
