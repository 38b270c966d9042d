// KF_HD: a function usable from host and device code (__host__ __device__ under nvcc, inline
// elsewhere), for the torch-free headers shared by the CPU and CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define KF_HD __host__ __device__ __forceinline__
#else
#define KF_HD inline
#endif
