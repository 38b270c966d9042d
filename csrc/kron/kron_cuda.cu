// CUDA stages of the Kronecker GP algebra (see kron.h). Torch-free: raw pointers, params structs
// passed by value, a cudaStream_t; no host synchronisation. The GEMMs and eigendecompositions
// around these stages are cuBLAS / cuSOLVER calls made by the torch glue.
//
// Scale: one thread per grid element (grid-stride), blockIdx.y over the batch; lam_j is formed
// from the per-axis eigenvalues by decoding the multi-index. Reductions (quad per batch row,
// log-det) are block reductions in double followed by one atomicAdd per block.
// Trace: one thread per element; c_d[j_d] and the trace accumulate with double atomics.
// Rowwise: one block per target, threads stride over the rest grid, block reduction.
#include <cuda_runtime.h>

#include <cstdint>

#include "kron.h"
#include "common/cuda_launch.cuh"

namespace kernelfuse::kron {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;

__device__ __forceinline__ double block_sum(double v, double* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const double r = red[0];
  __syncthreads();
  return r;
}

template <typename T>
__device__ __forceinline__ void decode(const Grid& g, int64_t j, int64_t* idx) {
  for (int d = g.D - 1; d >= 0; --d) {
    idx[d] = j % g.dims[d];
    j /= g.dims[d];
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) scale_kernel(ScaleParams<T> p) {
  KF_SHARED(double, red, [kThreads]);
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    double quad = 0, ld = 0;
    const T* in = p.in ? p.in + b * p.g.N : nullptr;
    T* out = p.out + b * p.g.N;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < p.g.N;
         j += static_cast<int64_t>(gridDim.x) * kThreads) {
      int64_t idx[kMaxDims];
      decode<T>(p.g, j, idx);
      T lam = T(1), others = T(1);
      for (int d = 0; d < p.g.D; ++d) {
        const T v = p.lam[d][idx[d]];
        lam *= v;
        if (d != p.axis) others *= v;
      }
      T w;
      switch (p.weight) {
        case Weight::Inv:
          w = T(1) / (lam + p.noise);
          break;
        case Weight::PostVar:
          w = lam * p.noise / (lam + p.noise);
          break;
        case Weight::SqOverDenom:
          w = lam * lam / (lam + p.noise);
          break;
        default:
          w = others;
          break;
      }
      const T x = in ? in[j] : T(1);
      const T o = x * w;
      out[j] = o;
      if (p.quad && in) quad += double(x) * double(o);
      if (p.logdet && b == 0) ld += log(double(lam) + double(p.noise));
    }
    if (p.quad && in) {
      const double s = block_sum(quad, red);
      if (threadIdx.x == 0) atomicAdd(p.quad + b, s);
    }
    if (p.logdet && b == 0) {
      const double s = block_sum(ld, red);
      if (threadIdx.x == 0) atomicAdd(p.logdet, s);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) trace_kernel(TraceParams<T> p) {
  KF_SHARED(double, red, [kThreads]);
  int64_t off[kMaxDims];
  int64_t o = 0;
  for (int d = 0; d < p.g.D; ++d) {
    off[d] = o;
    o += p.g.dims[d];
  }
  double tr = 0;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < p.g.N;
       j += static_cast<int64_t>(gridDim.x) * kThreads) {
    int64_t idx[kMaxDims];
    decode<T>(p.g, j, idx);
    double v[kMaxDims], pref[kMaxDims + 1], suf[kMaxDims + 1];
    pref[0] = 1;
    for (int d = 0; d < p.g.D; ++d) {
      v[d] = double(p.lam[d][idx[d]]);
      pref[d + 1] = pref[d] * v[d];
    }
    suf[p.g.D] = 1;
    for (int d = p.g.D - 1; d >= 0; --d) suf[d] = suf[d + 1] * v[d];
    const double inv = 1.0 / (pref[p.g.D] + double(p.noise));
    tr += inv;
    for (int d = 0; d < p.g.D; ++d) atomicAdd(p.c + off[d] + idx[d], pref[d] * suf[d + 1] * inv);
  }
  const double s = block_sum(tr, red);
  if (threadIdx.x == 0) atomicAdd(p.trace, s);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) rowwise_kernel(RowwiseParams<T> p) {
  KF_SHARED(double, red, [kThreads]);
  const int64_t R = p.g.D == 0 ? 1 : p.g.N;
  for (int64_t i = blockIdx.x; i < p.M; i += gridDim.x) {
    const T* s = p.S + i * R;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < R; j += kThreads) {
      int64_t idx[kMaxDims];
      decode<T>(p.g, j, idx);
      double w = 1;
      for (int d = 0; d < p.g.D; ++d) w *= double(p.W[d][i * p.g.dims[d] + idx[d]]);
      acc += double(s[j]) * w;
    }
    const double r = block_sum(acc, red);
    if (threadIdx.x == 0) p.out[i] = T(r);
  }
}

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

}  // namespace

template <typename T>
void launch_kron_scale(const ScaleParams<T>& p, void* stream) {
  if (p.B == 0 || p.g.N == 0) return;
  const dim3 grid(blocks_for(p.g.N), static_cast<unsigned>(p.B < kMaxGridY ? p.B : kMaxGridY));
  launch_kernel("kron: scale_kernel", scale_kernel<T>, grid, kThreads, 0, static_cast<cudaStream_t>(stream), p);
}

template <typename T>
void launch_kron_trace(const TraceParams<T>& p, void* stream) {
  if (p.g.N == 0) return;
  launch_kernel("kron: trace_kernel", trace_kernel<T>, blocks_for(p.g.N), kThreads, 0,
                static_cast<cudaStream_t>(stream), p);
}

template <typename T>
void launch_kron_rowwise(const RowwiseParams<T>& p, void* stream) {
  if (p.M == 0) return;
  const unsigned grid = static_cast<unsigned>(p.M < 65535 ? p.M : 65535);
  launch_kernel("kron: rowwise_kernel", rowwise_kernel<T>, grid, kThreads, 0, static_cast<cudaStream_t>(stream), p);
}

template void launch_kron_scale<float>(const ScaleParams<float>&, void*);
template void launch_kron_scale<double>(const ScaleParams<double>&, void*);
template void launch_kron_trace<float>(const TraceParams<float>&, void*);
template void launch_kron_trace<double>(const TraceParams<double>&, void*);
template void launch_kron_rowwise<float>(const RowwiseParams<float>&, void*);
template void launch_kron_rowwise<double>(const RowwiseParams<double>&, void*);

}  // namespace kernelfuse::kron
