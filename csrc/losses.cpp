// losses: see kernels.h
#include "kernels.h"
