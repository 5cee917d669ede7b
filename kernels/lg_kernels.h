/* Every kernel launcher of kernels/ (C-callable; compiles with gcc without CUDA headers). Link the
 * lg_kernels library (built when nvcc is present). */
#ifndef LG_KERNELS_H
#define LG_KERNELS_H

#include "kernel_types.h"
#include "elementwise.h"
#include "gemm.h"
#include "gemv.h"
#include "gemv_quant.h"
#include "attention.h"

#endif
