// CUDA side of the fused kernel sums (kernel_sum.h): the half types' accumulation type.
// Torch-free; included by kernel_sum_cuda.cu and by the torch glue when built with CUDA.
//
// For __half and __nv_bfloat16 inputs the kernels convert on load and compute / accumulate in
// float, so KernelSumParams<__half> has `const float* h` (the bandwidth is a float parameter).
// launch_kernel_sum<T> (declared in kernel_sum.h) is instantiated for float, double, __half and
// __nv_bfloat16 in kernel_sum_cuda.cu; it enqueues one kernel on the given cudaStream_t, never
// synchronises, and throws std::runtime_error on invalid parameters or a failed launch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernel_sum.h"

namespace kernelfuse::kde {

template <>
struct AccType<__half> {
  using type = float;
};
template <>
struct AccType<__nv_bfloat16> {
  using type = float;
};

}  // namespace kernelfuse::kde
