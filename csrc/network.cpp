// network: see kernels.h
#include "kernels.h"
