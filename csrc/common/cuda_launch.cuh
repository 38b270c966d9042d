// The one way a kernelfuse .cu file launches a kernel, declares shared memory and checks a CUDA
// call. Torch-free. Under nvcc these are thin wrappers over <<<...>>>, __shared__ and
// cudaGetLastError; under the CUDA-semantics simulator (KERNELFUSE_CUDA_SIM, csrc/sim/) the same
// source lines run the kernel on the CPU with CUDA's semantics (docs/cuda.md).
//
//   launch_kernel("op: kernel", kern<T, 4>, grid, block, smem_bytes, stream, args...);
//   KF_SHARED(float, tile, [32][33]);          // __shared__ float tile[32][33];
//   KF_DYNAMIC_SHARED(unsigned char, smem);    // extern __shared__ unsigned char smem[];
//   check_cuda(cudaMemsetAsync(p, 0, n, st), "op: zero the gradient");  // what: "<op>: <step>"
//
// Streams: every launcher declared in a kernel header takes `void* stream` (a cudaStream_t), so
// those headers need no CUDA header and CPU files can include them; launch_kernel takes the same.
//
// Every launch is checked: a failed launch throws std::runtime_error naming the op, the kernel
// and the launch configuration (grid, block, dynamic shared memory).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

#if defined(KERNELFUSE_CUDA_SIM)
#include "sim/kf_sim.h"
#define KF_SHARED(T, name, dims) KF_SIM_SHARED(T, name, dims)
#define KF_SHARED_ALIGNED(align, T, name, dims) KF_SIM_SHARED(T, name, dims)  // the simulator aligns to 256
#define KF_DYNAMIC_SHARED(T, name) KF_SIM_DYNAMIC_SHARED(T, name)
#define KF_DYNAMIC_SHARED_ALIGNED(align, T, name) KF_SIM_DYNAMIC_SHARED(T, name)
#else
#define KF_SHARED(T, name, dims) __shared__ T name dims
#define KF_SHARED_ALIGNED(align, T, name, dims) \
  __shared__ __align__(align)                   \
  T name dims
#define KF_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#define KF_DYNAMIC_SHARED_ALIGNED(align, T, name) \
  extern __shared__ __align__(align)              \
  T name[]
#endif

namespace kernelfuse {

inline std::string launch_config_string(dim3 grid, dim3 block, size_t smem) {
  return "grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " + std::to_string(grid.z) +
         "), block (" + std::to_string(block.x) + ", " + std::to_string(block.y) + ", " + std::to_string(block.z) +
         "), " + std::to_string(smem) + " bytes of dynamic shared memory";
}

// Throws if a CUDA runtime call failed; `what` names the op and the step.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error so the next op starts clean
    throw std::runtime_error(std::string("kernelfuse.") + what + ": " + cudaGetErrorName(e) + ": " +
                             cudaGetErrorString(e));
  }
}

// Enqueues kernel<<<grid, block, smem, stream>>>(args...) and checks the launch.
template <typename... P, typename... A>
void launch_kernel(const char* what, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, void* stream_,
                   A&&... args) {
  const auto stream = static_cast<cudaStream_t>(stream_);
  static_assert(sizeof...(P) == sizeof...(A), "launch_kernel: wrong number of kernel arguments");
#if defined(KERNELFUSE_CUDA_SIM)
  kf_sim::launch(what, kernel, grid, block, smem, stream, std::forward<A>(args)...);
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
#endif
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("kernelfuse.") + what + ": launch with " +
                             launch_config_string(grid, block, smem) + " failed: " + cudaGetErrorName(e) + ": " +
                             cudaGetErrorString(e));
}

}  // namespace kernelfuse
