// CUDA butterfly products (see butterfly.h). Compiled for sm_80 / sm_90a; not yet run on a GPU.
//
// Forward: when a row fits in shared memory (n * values * sizeof(T) <= 32 KiB) one thread block
// owns a row and runs every stage in shared memory (one __syncthreads per stage); otherwise one
// launch per stage over all rows, in place in the output. Backward: the stage inputs are written
// to a workspace by a per-stage forward, then one launch per stage in reverse computes the input
// gradient in place and accumulates the twiddle gradient (warp-level sums over rows are not done:
// atomicAdd per pair and row).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "butterfly.h"
#include "common/cuda_launch.cuh"

namespace kernelfuse::butterfly {
namespace {

constexpr int64_t kSmemBytes = 32 * 1024;

template <typename T, bool C>
struct Pair {
  // In place: (x_i, x_j) <- [[a, b], [c, d]] (x_i, x_j); w = the pair's 4 (C: 8) twiddle scalars.
  __device__ static void apply(T* xi, T* xj, const T* w) {
    if constexpr (!C) {
      const T u = *xi, v = *xj;
      *xi = w[0] * u + w[1] * v;
      *xj = w[2] * u + w[3] * v;
    } else {
      const T ur = xi[0], ui = xi[1], vr = xj[0], vi = xj[1];
      xi[0] = w[0] * ur - w[1] * ui + w[2] * vr - w[3] * vi;
      xi[1] = w[0] * ui + w[1] * ur + w[2] * vi + w[3] * vr;
      xj[0] = w[4] * ur - w[5] * ui + w[6] * vr - w[7] * vi;
      xj[1] = w[4] * ui + w[5] * ur + w[6] * vi + w[7] * vr;
    }
  }
};

__device__ __forceinline__ int64_t pair_first(int64_t pidx, int64_t h) { return (pidx / h) * 2 * h + (pidx % h); }

__host__ __device__ __forceinline__ int64_t log_stride_of(int64_t s, int64_t log_n, bool increasing) {
  const int64_t b = s / log_n, t = s % log_n;
  const bool inc = ((b & 1) == 0) == increasing;
  return inc ? t : log_n - 1 - t;
}

template <typename T, bool C>
__global__ void fwd_smem_kernel(const T* __restrict__ x, const T* __restrict__ tw, T* __restrict__ out, int64_t n,
                                int64_t log_n, int64_t stages, bool increasing) {
  KF_DYNAMIC_SHARED(unsigned char, smem_raw);
  T* buf = reinterpret_cast<T*>(smem_raw);
  constexpr int V = C ? 2 : 1;
  constexpr int TW = C ? 8 : 4;
  const int64_t row = blockIdx.x;
  const T* src = x + row * n * V;
  for (int64_t e = threadIdx.x; e < n * V; e += blockDim.x) buf[e] = src[e];
  __syncthreads();
  for (int64_t s = 0; s < stages; ++s) {
    const int64_t h = int64_t(1) << log_stride_of(s, log_n, increasing);
    const T* tws = tw + s * (n / 2) * TW;
    for (int64_t pidx = threadIdx.x; pidx < n / 2; pidx += blockDim.x) {
      const int64_t i = pair_first(pidx, h);
      Pair<T, C>::apply(buf + i * V, buf + (i + h) * V, tws + pidx * TW);
    }
    __syncthreads();
  }
  T* dst = out + row * n * V;
  for (int64_t e = threadIdx.x; e < n * V; e += blockDim.x) dst[e] = buf[e];
}

// One stage over all rows, in place: thread = (row, pair).
template <typename T, bool C>
__global__ void stage_kernel(T* __restrict__ y, const T* __restrict__ tws, int64_t rows, int64_t n, int64_t h) {
  constexpr int V = C ? 2 : 1;
  constexpr int TW = C ? 8 : 4;
  const int64_t half = n / 2;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < rows * half;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = t / half, pidx = t % half;
    const int64_t i = pair_first(pidx, h);
    T* base = y + row * n * V;
    Pair<T, C>::apply(base + i * V, base + (i + h) * V, tws + pidx * TW);
  }
}

// Backward through one stage: g (rows, n) in place; xin the stage input; dtw += grad * conj(input).
template <typename T, bool C>
__global__ void stage_bwd_kernel(T* __restrict__ g, const T* __restrict__ xin, const T* __restrict__ tws,
                                 T* __restrict__ dtws, int64_t rows, int64_t n, int64_t h) {
  constexpr int V = C ? 2 : 1;
  constexpr int TW = C ? 8 : 4;
  const int64_t half = n / 2;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < rows * half;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = t / half, pidx = t % half;
    const int64_t i = pair_first(pidx, h), j = i + h;
    T* gb = g + row * n * V;
    const T* xb = xin + row * n * V;
    const T* w = tws + pidx * TW;
    if constexpr (!C) {
      const T u = xb[i], v = xb[j], p = gb[i], q = gb[j];
      gb[i] = w[0] * p + w[2] * q;
      gb[j] = w[1] * p + w[3] * q;
      if (dtws) {
        T* d = dtws + pidx * TW;
        atomicAdd(d + 0, p * u);
        atomicAdd(d + 1, p * v);
        atomicAdd(d + 2, q * u);
        atomicAdd(d + 3, q * v);
      }
    } else {
      const T ur = xb[2 * i], ui = xb[2 * i + 1], vr = xb[2 * j], vi = xb[2 * j + 1];
      const T pr = gb[2 * i], pi = gb[2 * i + 1], qr = gb[2 * j], qi = gb[2 * j + 1];
      gb[2 * i] = w[0] * pr + w[1] * pi + w[4] * qr + w[5] * qi;
      gb[2 * i + 1] = w[0] * pi - w[1] * pr + w[4] * qi - w[5] * qr;
      gb[2 * j] = w[2] * pr + w[3] * pi + w[6] * qr + w[7] * qi;
      gb[2 * j + 1] = w[2] * pi - w[3] * pr + w[6] * qi - w[7] * qr;
      if (dtws) {
        T* d = dtws + pidx * TW;
        atomicAdd(d + 0, pr * ur + pi * ui);
        atomicAdd(d + 1, pi * ur - pr * ui);
        atomicAdd(d + 2, pr * vr + pi * vi);
        atomicAdd(d + 3, pi * vr - pr * vi);
        atomicAdd(d + 4, qr * ur + qi * ui);
        atomicAdd(d + 5, qi * ur - qr * ui);
        atomicAdd(d + 6, qr * vr + qi * vi);
        atomicAdd(d + 7, qi * vr - qr * vi);
      }
    }
  }
}

unsigned grid_for(int64_t work, int threads) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, 65535 * 8)));
}

template <typename T, bool C>
void forward_impl(const ButterflyParams<T>& p, cudaStream_t st) {
  constexpr int V = C ? 2 : 1;
  constexpr int TW = C ? 8 : 4;
  const int64_t S = p.stages();
  const int64_t bytes = p.n * V * int64_t(sizeof(T));
  if (bytes <= kSmemBytes && p.rows <= int64_t(0x7fffffff)) {
    const int threads = static_cast<int>(std::min<int64_t>(std::max<int64_t>(p.n / 2, 32), 512));
    launch_kernel("butterfly: fwd_smem_kernel", fwd_smem_kernel<T, C>, static_cast<unsigned>(p.rows), threads, bytes,
                  st, p.x, p.twiddle, p.out, p.n, p.log_n, S, p.increasing_stride);
    return;
  }
  check_cuda(cudaMemcpyAsync(p.out, p.x, sizeof(T) * p.rows * p.n * V, cudaMemcpyDeviceToDevice, st),
             "butterfly: copy");
  const int threads = 256;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t h = int64_t(1) << log_stride_of(s, p.log_n, p.increasing_stride);
    launch_kernel("butterfly: stage_kernel", stage_kernel<T, C>, grid_for(p.rows * (p.n / 2), threads), threads, 0, st,
                  p.out, p.twiddle + s * (p.n / 2) * TW, p.rows, p.n, h);
  }
}

template <typename T, bool C>
void backward_impl(const ButterflyParams<T>& p, T* work, cudaStream_t st) {
  constexpr int V = C ? 2 : 1;
  constexpr int TW = C ? 8 : 4;
  const int64_t S = p.stages(), slot = p.rows * p.n * V;
  const int threads = 256;
  // work: S stage inputs, then the gradient buffer when dx is not wanted.
  check_cuda(cudaMemcpyAsync(work, p.x, sizeof(T) * slot, cudaMemcpyDeviceToDevice, st), "butterfly: copy");
  for (int64_t s = 0; s + 1 < S; ++s) {
    const int64_t h = int64_t(1) << log_stride_of(s, p.log_n, p.increasing_stride);
    check_cuda(cudaMemcpyAsync(work + (s + 1) * slot, work + s * slot, sizeof(T) * slot, cudaMemcpyDeviceToDevice, st),
               "butterfly: copy");
    launch_kernel("butterfly: stage_kernel", stage_kernel<T, C>, grid_for(p.rows * (p.n / 2), threads), threads, 0, st,
                  work + (s + 1) * slot, p.twiddle + s * (p.n / 2) * TW, p.rows, p.n, h);
  }
  T* g = p.dx ? p.dx : work + S * slot;
  check_cuda(cudaMemcpyAsync(g, p.grad, sizeof(T) * slot, cudaMemcpyDeviceToDevice, st), "butterfly: copy");
  if (p.dtwiddle)
    check_cuda(cudaMemsetAsync(p.dtwiddle, 0, sizeof(T) * S * (p.n / 2) * TW, st), "butterfly: zero fill");
  for (int64_t s = S - 1; s >= 0; --s) {
    const int64_t h = int64_t(1) << log_stride_of(s, p.log_n, p.increasing_stride);
    launch_kernel("butterfly: stage_bwd_kernel", stage_bwd_kernel<T, C>, grid_for(p.rows * (p.n / 2), threads), threads,
                  0, st, g, work + s * slot, p.twiddle + s * (p.n / 2) * TW,
                  p.dtwiddle ? p.dtwiddle + s * (p.n / 2) * TW : nullptr, p.rows, p.n, h);
  }
}

}  // namespace

template <typename T>
void launch_butterfly_multiply(const ButterflyParams<T>& p, void* stream) {
  if (p.rows == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  if (p.complex)
    forward_impl<T, true>(p, st);
  else
    forward_impl<T, false>(p, st);
}

template <typename T>
int64_t butterfly_bwd_cuda_workspace(const ButterflyParams<T>& p) {
  const int64_t slot = p.rows * p.n * (p.complex ? 2 : 1);
  return p.stages() * slot + (p.dx ? 0 : slot);
}

template <typename T>
void launch_butterfly_multiply_bwd(const ButterflyParams<T>& p, T* work, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (p.rows == 0) {
    if (p.dtwiddle)
      check_cuda(cudaMemsetAsync(p.dtwiddle, 0, sizeof(T) * p.stages() * (p.n / 2) * (p.complex ? 8 : 4), st),
                 "butterfly: zero fill");
    return;
  }
  if (p.complex)
    backward_impl<T, true>(p, work, st);
  else
    backward_impl<T, false>(p, work, st);
}

template void launch_butterfly_multiply<float>(const ButterflyParams<float>&, void*);
template void launch_butterfly_multiply<double>(const ButterflyParams<double>&, void*);
template int64_t butterfly_bwd_cuda_workspace<float>(const ButterflyParams<float>&);
template int64_t butterfly_bwd_cuda_workspace<double>(const ButterflyParams<double>&);
template void launch_butterfly_multiply_bwd<float>(const ButterflyParams<float>&, float*, void*);
template void launch_butterfly_multiply_bwd<double>(const ButterflyParams<double>&, double*, void*);

}  // namespace kernelfuse::butterfly
