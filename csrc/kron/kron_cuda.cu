// CUDA stages of the Kronecker GP algebra (see kron.h). Torch-free: raw pointers, params structs
// passed by value, a cudaStream_t; no host synchronisation. The GEMMs and eigendecompositions
// around these stages (kron_runner.h) are cuBLAS / cuSOLVER calls behind the runner's interfaces.
//
// Scale: one thread per grid element (grid-stride), blockIdx.y over the batch; lam_j is formed
// from the per-axis eigenvalues by decoding the multi-index. Reductions (quad per batch row,
// log-det) are block reductions in double followed by one atomicAdd per block.
// Trace: one thread per element; c_d[j_d] and the trace accumulate with double atomics.
// Rowwise: one block per target, threads stride over the rest grid, block reduction.
// MLL rows: as Scale (the dot product a block reduction + one atomicAdd per block); MLL scalars:
// one block; symmetrize: one thread per element.
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

template <typename T>
__global__ void __launch_bounds__(kThreads) mll_rows_kernel(MllRowsParams<T> p) {
  KF_SHARED(double, red, [kThreads]);
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    const T gb = p.g ? p.g[b] : T(0);
    const int64_t o = b * p.N;
    double acc = 0;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < p.N;
         j += static_cast<int64_t>(gridDim.x) * kThreads) {
      const T a = p.at[o + j], w = p.wt ? p.wt[o + j] : T(0);
      const T u = gb * a * T(-0.5) - w;
      if (p.dyt) p.dyt[o + j] = gb * a + w;
      if (p.U) p.U[o + j] = u;
      acc += double(u) * double(a);
    }
    if (p.dot) {
      const double s = block_sum(acc, red);
      if (threadIdx.x == 0) atomicAdd(p.dot, s);
    }
  }
}

// One block: the batch sum of g by a block reduction, then the scalars and the diagonals.
template <typename T>
__global__ void __launch_bounds__(kThreads) mll_scalars_kernel(MllScalarsParams<T> p) {
  KF_SHARED(double, red, [kThreads]);
  double gs = 0;
  for (int64_t b = threadIdx.x; b < p.B; b += kThreads) {
    if (p.nll) p.nll[b] = T(p.quad[b] * 0.5 + *p.logdet * 0.5 + p.c0);
    if (p.g) gs += double(p.g[b]);
  }
  const double gsum = block_sum(gs, red);
  if (p.dnoise && threadIdx.x == 0) *p.dnoise = T(*p.dot + (p.trace ? gsum * *p.trace * 0.5 : 0.0));
  int64_t off = 0;
  for (int d = 0; d < p.grid.D; ++d) {
    const int64_t n = p.grid.dims[d];
    if (p.c && p.M[d])
      for (int64_t k = threadIdx.x; k < n; k += kThreads) p.M[d][k * n + k] += T(gsum * p.c[off + k] * 0.5);
    off += n;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) symmetrize_kernel(SymmetrizeParams<T> p) {
  const int64_t nn = p.n * p.n;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < nn;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t i = e / p.n, j = e % p.n;
    p.out[e] = (p.G[e] + p.G[j * p.n + i]) * T(0.5);
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

template <typename T>
void launch_kron_mll_rows(const MllRowsParams<T>& p, void* stream) {
  if (p.B == 0 || p.N == 0) return;
  const dim3 grid(blocks_for(p.N), static_cast<unsigned>(p.B < kMaxGridY ? p.B : kMaxGridY));
  launch_kernel("kron: mll_rows_kernel", mll_rows_kernel<T>, grid, kThreads, 0, static_cast<cudaStream_t>(stream), p);
}

template <typename T>
void launch_kron_mll_scalars(const MllScalarsParams<T>& p, void* stream) {
  launch_kernel("kron: mll_scalars_kernel", mll_scalars_kernel<T>, 1, kThreads, 0, static_cast<cudaStream_t>(stream),
                p);
}

template <typename T>
void launch_kron_symmetrize(const SymmetrizeParams<T>& p, void* stream) {
  if (p.n == 0) return;
  launch_kernel("kron: symmetrize_kernel", symmetrize_kernel<T>, blocks_for(p.n * p.n), kThreads, 0,
                static_cast<cudaStream_t>(stream), p);
}

template void launch_kron_scale<float>(const ScaleParams<float>&, void*);
template void launch_kron_scale<double>(const ScaleParams<double>&, void*);
template void launch_kron_trace<float>(const TraceParams<float>&, void*);
template void launch_kron_trace<double>(const TraceParams<double>&, void*);
template void launch_kron_rowwise<float>(const RowwiseParams<float>&, void*);
template void launch_kron_rowwise<double>(const RowwiseParams<double>&, void*);
template void launch_kron_mll_rows<float>(const MllRowsParams<float>&, void*);
template void launch_kron_mll_rows<double>(const MllRowsParams<double>&, void*);
template void launch_kron_mll_scalars<float>(const MllScalarsParams<float>&, void*);
template void launch_kron_mll_scalars<double>(const MllScalarsParams<double>&, void*);
template void launch_kron_symmetrize<float>(const SymmetrizeParams<float>&, void*);
template void launch_kron_symmetrize<double>(const SymmetrizeParams<double>&, void*);

}  // namespace kernelfuse::kron
