// CUDA kernels for the S4D convolution kernel and its backward (see ssm_kernel.h). Torch-free.
//
// Forward: one thread per (h, l); the block stages the discretised (c_n, w_n) of its h in shared
// memory, tile by tile over n, and each thread sums 2 Re(c_n exp(l w_n)) with exact powers
// (exp and sincos of l w in double: no drift for any L). Backward: one block per (h, n) reduces
// S0 = sum_l g_l z^l and S1 = sum_l g_l l z^l over l in double, then applies the chain rule (same
// code as the CPU kernel, ssm_kernel.h) and writes dt dLoss/ddt of the state to a double workspace;
// a second kernel sums it over n per head (in double, in a fixed order: g_log_dt is rounded once
// and deterministic). Heads are strided over grid.y (at most 65535).
// Memory O(H (N + L)); all arithmetic in double.
#include <cuda_runtime.h>

#include <algorithm>

#include "ssm_kernel.h"
#include "common/cuda_launch.cuh"

namespace kernelfuse::longconv {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ void load_state(const SsmKernelParams<T>& p, int64_t i, double dt, cd* c, cd* w) {
  const cd A = {static_cast<double>(p.A_real[i]), static_cast<double>(p.A_imag[i])};
  const Disc d = discretize(p.disc, dt, A, false);
  const cd B = p.B ? cd{double(p.B[2 * i]), double(p.B[2 * i + 1])} : cd{1.0, 0.0};
  const cd C = {double(p.C[2 * i]), double(p.C[2 * i + 1])};
  *c = C * (d.beta * B);
  *w = d.w;
}

// Heads h = blockIdx.y + j gridDim.y (grid.y is at most 65535); l = blockIdx.x blockDim.x + tid.
// blockDim.x <= kThreads: states are staged blockDim.x at a time.
template <typename T>
__global__ void __launch_bounds__(kThreads) ssm_fwd_kernel(SsmKernelParams<T> p) {
  KF_SHARED(cd, sc, [kThreads]);
  KF_SHARED(cd, sw, [kThreads]);
  const int64_t nthr = blockDim.x;
  const int64_t l = static_cast<int64_t>(blockIdx.x) * nthr + threadIdx.x;
  const double dl = static_cast<double>(l);
  for (int64_t h = blockIdx.y; h < p.H; h += gridDim.y) {
    const double dt = exp(static_cast<double>(p.log_dt[h]));
    double acc = 0.0;
    for (int64_t n0 = 0; n0 < p.N; n0 += nthr) {
      const int64_t nt = p.N - n0 < nthr ? p.N - n0 : nthr;
      if (threadIdx.x < nt) load_state(p, h * p.N + n0 + threadIdx.x, dt, &sc[threadIdx.x], &sw[threadIdx.x]);
      __syncthreads();
      for (int64_t k = 0; k < nt; ++k) {
        const cd z = cexp(dl * sw[k]);
        acc += sc[k].re * z.re - sc[k].im * z.im;
      }
      __syncthreads();  // before the next tile (or head) overwrites sc, sw
    }
    if (l < p.L) p.K[h * p.L + l] = static_cast<T>(2.0 * acc);
  }
}

// State n = blockIdx.x of heads h = blockIdx.y + j gridDim.y; blockDim.x is a power of two <= kThreads.
template <typename T>
__global__ void __launch_bounds__(kThreads) ssm_bwd_kernel(SsmKernelParams<T> p) {
  KF_SHARED(double, red, [4][kThreads]);
  const int64_t n = blockIdx.x;
  const int nthr = static_cast<int>(blockDim.x);
  for (int64_t h = blockIdx.y; h < p.H; h += gridDim.y) {
    const int64_t i = h * p.N + n;
    const double dt = exp(static_cast<double>(p.log_dt[h]));
    const cd A = {static_cast<double>(p.A_real[i]), static_cast<double>(p.A_imag[i])};
    const Disc d = discretize(p.disc, dt, A, true);
    cd s0 = {0.0, 0.0}, s1 = {0.0, 0.0};
    const T* g = p.grad + h * p.L;
    for (int64_t l = threadIdx.x; l < p.L; l += nthr) {
      const double gl = static_cast<double>(g[l]);
      const cd z = cexp(static_cast<double>(l) * d.w);
      s0 = s0 + gl * z;
      s1 = s1 + (gl * static_cast<double>(l)) * z;
    }
    red[0][threadIdx.x] = s0.re;
    red[1][threadIdx.x] = s0.im;
    red[2][threadIdx.x] = s1.re;
    red[3][threadIdx.x] = s1.im;
    __syncthreads();
    for (int s = nthr / 2; s > 0; s >>= 1) {
      if (static_cast<int>(threadIdx.x) < s)
        for (int k = 0; k < 4; ++k) red[k][threadIdx.x] += red[k][threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      const double d_dt = store_state_grads(p, i, d, cd{red[0][0], red[1][0]}, cd{red[2][0], red[3][0]});
      p.dt_partial[i] = d_dt * dt;
    }
    // (no barrier needed before the next head: only thread 0 reads and writes red[.][0])
  }
}

// g_log_dt[h] = sum_n dt_partial[h, n]: one warp per head, lane-strided sums then a shuffle tree.
template <typename T>
__global__ void __launch_bounds__(kThreads) ssm_dt_reduce_kernel(SsmKernelParams<T> p) {
  const int lane = threadIdx.x % 32;
  const int64_t h = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (h >= p.H) return;  // whole warps
  const double* part = p.dt_partial + h * p.N;
  double s = 0.0;
  for (int64_t n = lane; n < p.N; n += 32) s += part[n];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if (lane == 0) p.g_log_dt[h] = static_cast<T>(s);
}

// Threads per block: the l extent rounded up to a warp (forward) / a power of two >= 32
// (backward's tree reduction), at most kThreads: short kernels do not idle 7 / 8 of a block.
inline int fwd_threads(int64_t L) { return L >= kThreads ? kThreads : static_cast<int>((L + 31) / 32 * 32); }
inline int bwd_threads(int64_t L) {
  int t = 32;
  while (t < kThreads && t < L) t *= 2;
  return t;
}
constexpr int64_t kMaxGridY = 65535;

}  // namespace

template <typename T>
void launch_ssm_kernel(const SsmKernelParams<T>& p, void* stream) {
  if (p.H == 0 || p.L == 0) return;
  const int threads = fwd_threads(p.L);
  const dim3 grid(static_cast<unsigned>((p.L + threads - 1) / threads),
                  static_cast<unsigned>(std::min(p.H, kMaxGridY)));
  launch_kernel("ssm_kernel: ssm_fwd_kernel", ssm_fwd_kernel<T>, grid, threads, 0, static_cast<cudaStream_t>(stream),
                p);
}

template <typename T>
void launch_ssm_kernel_bwd(const SsmKernelParams<T>& p, void* stream) {
  if (p.H == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (p.N == 0) {
    check_cuda(cudaMemsetAsync(p.g_log_dt, 0, sizeof(T) * p.H, s), "ssm_kernel: zero fill");
    return;
  }
  const dim3 grid(static_cast<unsigned>(p.N), static_cast<unsigned>(std::min(p.H, kMaxGridY)));
  launch_kernel("ssm_kernel: ssm_bwd_kernel", ssm_bwd_kernel<T>, grid, bwd_threads(p.L), 0, s, p);
  const int64_t warps = kThreads / 32;
  launch_kernel("ssm_kernel: ssm_dt_reduce_kernel", ssm_dt_reduce_kernel<T>,
                static_cast<unsigned>((p.H + warps - 1) / warps), kThreads, 0, s, p);
}

template void launch_ssm_kernel<float>(const SsmKernelParams<float>&, void*);
template void launch_ssm_kernel<double>(const SsmKernelParams<double>&, void*);
template void launch_ssm_kernel_bwd<float>(const SsmKernelParams<float>&, void*);
template void launch_ssm_kernel_bwd<double>(const SsmKernelParams<double>&, void*);

}  // namespace kernelfuse::longconv
