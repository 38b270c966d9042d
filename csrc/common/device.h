// The device side of the torch glue, in one place: real CUDA (KERNELFUSE_WITH_CUDA) or the CUDA
// simulator (KERNELFUSE_CUDA_SIM, csrc/sim/). KF_DEVICE is defined in both; the glue's device
// branches are written once against these names:
//   on_device(t)          the tensor lives on the device (sim: every tensor: the kernelfuse_sim
//                         library's CPU tensors stand in for device memory)
//   KF_DEVICE_GUARD(t)    makes t's device current for the scope
//   device_stream()       the current stream (cudaStream_t)
//   KF_DEVICE_LIBRARY_IMPL(m)   TORCH_LIBRARY_IMPL(kernelfuse, CUDA, m) (sim: kernelfuse_sim, CPU)
// Without either, on_device(t) is t.is_cuda() and no device branch is compiled.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#if defined(KERNELFUSE_CUDA_SIM)
#define KF_DEVICE 1
#include <cuda_runtime.h>  // the simulator's (csrc/sim/include)
namespace kernelfuse {
inline bool on_device(const at::Tensor&) { return true; }
inline cudaStream_t device_stream() { return nullptr; }
}  // namespace kernelfuse
#define KF_DEVICE_GUARD(t) ((void)(t))
#define KF_DEVICE_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(kernelfuse_sim, CPU, m)
#elif defined(KERNELFUSE_WITH_CUDA)
#define KF_DEVICE 1
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
namespace kernelfuse {
inline bool on_device(const at::Tensor& t) { return t.is_cuda(); }
inline cudaStream_t device_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
}  // namespace kernelfuse
#define KF_DEVICE_GUARD(t) const c10::cuda::CUDAGuard kf_device_guard_((t).device())
#define KF_DEVICE_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(kernelfuse, CUDA, m)
#else
namespace kernelfuse {
inline bool on_device(const at::Tensor& t) { return t.is_cuda(); }
}  // namespace kernelfuse
#endif

// The CPU kernels are registered by the normal build only (the simulator library's CPU key
// carries the device path).
#if defined(KERNELFUSE_CUDA_SIM)
#define KF_CPU_LIBRARY_IMPL(m) static void kf_unused_cpu_impl_##m(torch::Library& m)
#else
#define KF_CPU_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(kernelfuse, CPU, m)
#endif
