// CUDA kernels for 1-D grid kernel matrices and their parameter gradients (see grid_kernel.h).
// Torch-free. Compiled for sm_80 / sm_90a; run on the CPU under the CUDA simulator by
// tests/sim/test_sim_kron_grid.py (no GPU on this project's machines).
//
// Forward, direct path: one thread per (i, j), summing the Q components in double. Toeplitz path:
// a first kernel evaluates the lag table T[d] (one thread per lag), a second fills K from it.
// Backward: one block per component q; its threads stride over the (i, j) entries (or lags on
// the Toeplitz path, after a lag-sum kernel), accumulate the P partials with dual numbers and
// reduce them in shared memory; every output element is written once, no atomics. The Toeplitz
// path's lag buffers are the workspace the glue allocates (p.work).
#include <cuda_runtime.h>

#include "grid_kernel.h"
#include "common/cuda_launch.cuh"

namespace kernelfuse::kron {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ double tau_at(const GridKernelParams<T>& p, int64_t i, int64_t j) {
  if (p.toeplitz) return static_cast<double>(i - j) * p.step;
  return static_cast<double>(p.x1[i * p.x1_stride]) - static_cast<double>(p.x2[j * p.x2_stride]);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) direct_kernel(GridKernelParams<T> p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= p.n1 * p.n2) return;
  const int64_t i = idx / p.n2, j = idx - i * p.n2;
  p.K[idx] = static_cast<T>(grid_kernel_value(p, tau_at(p, i, j)));
}

// tab[d] = K at tau = d * step (sign included), d = 0..L-1, and tabn[d] at tau = -d * step.
template <typename T>
__global__ void __launch_bounds__(kThreads) lag_kernel(GridKernelParams<T> p, int64_t L, double* tab, double* tabn) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (d >= L) return;
  const double v = grid_kernel_value(p, static_cast<double>(d) * p.step);
  const int n = p.a + p.b;
  tab[d] = v;
  tabn[d] = (n & 1) ? -v : v;  // k^(n)(-tau) = (-1)^n k^(n)(tau)
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fill_kernel(GridKernelParams<T> p, const double* tab, const double* tabn) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= p.n1 * p.n2) return;
  const int64_t i = idx / p.n2, j = idx - i * p.n2;
  p.K[idx] = static_cast<T>(i >= j ? tab[i - j] : tabn[j - i]);
}

// D[d] = sum_{i - j = d} G + (-1)^n sum_{j - i = d} G, one thread per lag (d > 0 adds both sides).
template <typename T>
__global__ void __launch_bounds__(kThreads) lagsum_kernel(GridKernelParams<T> p, int64_t L, double* D) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (d >= L) return;
  const double flip = ((p.a + p.b) & 1) ? -1.0 : 1.0;
  double s = 0.0;
  for (int64_t j = 0; j + d < p.n1 && j < p.n2; ++j) s += static_cast<double>(p.grad[(j + d) * p.n2 + j]);
  if (d > 0)
    for (int64_t i = 0; i + d < p.n2 && i < p.n1; ++i) s += flip * static_cast<double>(p.grad[i * p.n2 + i + d]);
  D[d] = s;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_kernel(GridKernelParams<T> p, const double* D, int64_t L) {
  KF_SHARED(double, red, [3][kThreads]);
  const int64_t q = blockIdx.x;
  const int P = grid_kind_nparams(p.kind);
  double acc[3] = {0.0, 0.0, 0.0};
  if (D != nullptr) {
    for (int64_t d = threadIdx.x; d < L; d += kThreads)
      grid_kernel_param_grad(p, q, static_cast<double>(d) * p.step, D[d], acc);
  } else {
    const int64_t total = p.n1 * p.n2;
    for (int64_t idx = threadIdx.x; idx < total; idx += kThreads) {
      const int64_t i = idx / p.n2, j = idx - i * p.n2;
      grid_kernel_param_grad(p, q, tau_at(p, i, j), static_cast<double>(p.grad[idx]), acc);
    }
  }
  for (int k = 0; k < 3; ++k) red[k][threadIdx.x] = acc[k];
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s)
      for (int k = 0; k < 3; ++k) red[k][threadIdx.x] += red[k][threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x < P) p.g_params[q * P + threadIdx.x] = static_cast<T>(red[threadIdx.x][0]);
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

template <typename T>
void launch_grid_kernel(const GridKernelParams<T>& p, void* stream) {
  const int64_t total = p.n1 * p.n2;
  if (total == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.toeplitz) {
    const int64_t L = p.n1 > p.n2 ? p.n1 : p.n2;
    double* buf = p.work;
    launch_kernel("grid_kernel: lag_kernel", lag_kernel<T>, blocks_for(L), kThreads, 0, s, p, L, buf, buf + L);
    launch_kernel("grid_kernel: fill_kernel", fill_kernel<T>, blocks_for(total), kThreads, 0, s, p, buf, buf + L);
    return;
  }
  launch_kernel("grid_kernel: direct_kernel", direct_kernel<T>, blocks_for(total), kThreads, 0, s, p);
}

template <typename T>
void launch_grid_kernel_bwd(const GridKernelParams<T>& p, void* stream) {
  if (p.Q == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.n1 == 0 || p.n2 == 0) {
    check_cuda(cudaMemsetAsync(p.g_params, 0, p.Q * grid_kind_nparams(p.kind) * sizeof(T), s),
               "grid_kernel: zero fill");
    return;
  }
  if (p.toeplitz) {
    const int64_t L = p.n1 > p.n2 ? p.n1 : p.n2;
    double* D = p.work;
    launch_kernel("grid_kernel: lagsum_kernel", lagsum_kernel<T>, blocks_for(L), kThreads, 0, s, p, L, D);
    launch_kernel("grid_kernel: bwd_kernel", bwd_kernel<T>, static_cast<unsigned>(p.Q), kThreads, 0, s, p, D, L);
    return;
  }
  launch_kernel("grid_kernel: bwd_kernel", bwd_kernel<T>, static_cast<unsigned>(p.Q), kThreads, 0, s, p, nullptr, 0);
}

template void launch_grid_kernel<float>(const GridKernelParams<float>&, void*);
template void launch_grid_kernel<double>(const GridKernelParams<double>&, void*);
template void launch_grid_kernel_bwd<float>(const GridKernelParams<float>&, void*);
template void launch_grid_kernel_bwd<double>(const GridKernelParams<double>&, void*);

}  // namespace kernelfuse::kron
