// CUDA stages of the fused FFT convolution (see fftconv.h). Torch-free; the FFTs (cuFFT via
// ATen) run between these launches on the same stream. Half types are read and written as they
// are stored and computed in float. 64-bit indexing throughout.
//
// Status: compiled for sm_80 / sm_90a; run under the CUDA simulator against the float64 reference
// (tests/sim/test_sim_longconv.py); not yet run on a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "fftconv.h"
#include "common/cuda_launch.cuh"
#include "common/half_convert.cuh"

namespace kernelfuse::longconv {
namespace {

constexpr int kThreads = 256;

template <typename A>
__device__ A block_sum(A v, A* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) sh[w] = v;
  __syncthreads();
  A s = 0;
  if (threadIdx.x == 0)
    for (int i = 0; i < kThreads / 32; ++i) s += sh[i];
  __syncthreads();
  return s;
}

// One (b, h) row r of the (B, H, L) tensors as the row stages read it; P the params type.
template <typename T, typename A>
struct DevRow {
  int64_t r, off;
  const T* u;
  const T* pre;   // null: no pregate
  const T* post;  // null: no postgate
  A d;            // D[h], 0 without D
  bool gs;        // skip source u * pre (skip "gated" with a pregate), else u
  template <class P>
  __device__ DevRow(const P& p, int64_t row)
      : r(row),
        off(row * p.L),
        u(p.u + off),
        pre(p.pregate ? p.pregate + off : nullptr),
        post(p.postgate ? p.postgate + off : nullptr),
        d(p.D ? A(to_acc(p.D[row % p.H])) : A(0)),
        gs(p.skip_gated && pre) {}
  __device__ A skip_src(int64_t t) const {
    const A x = A(to_acc(u[t]));
    return gs ? x * A(to_acc(pre[t])) : x;
  }
};

// The row stages (fftconv.h), each over one row with the block's threads.
template <typename T, typename A, typename TK>
__device__ void pack_input(const FFTConvParams<T, A, TK>& p, const DevRow<T, A>& w, A* __restrict__ Ri) {
  const T* __restrict__ u = w.u;
  const T* __restrict__ pre = w.pre;
  for (int64_t t = threadIdx.x; t < p.n; t += blockDim.x) {
    A v = 0;
    if (t < p.L) v = pre ? A(to_acc(u[t])) * A(to_acc(pre[t])) : A(to_acc(u[t]));
    Ri[t] = v;
  }
}

// Every thread of the block calls it (block_sum synchronises).
template <typename T, typename A, typename TK>
__device__ void pack_grad(const FFTConvParams<T, A, TK>& p, const DevRow<T, A>& w, A* __restrict__ Ri, A* sh) {
  const T* __restrict__ g = p.grad + w.off;
  const T* __restrict__ post = w.post;
  A acc = 0;
  for (int64_t t = threadIdx.x; t < p.n; t += blockDim.x) {
    A v = 0;
    if (t < p.L) {
      v = post ? A(to_acc(g[t])) * A(to_acc(post[t])) : A(to_acc(g[t]));
      acc += v * w.skip_src(t);
    }
    Ri[t] = v;
  }
  if (p.dD_rows) {
    const A tot = block_sum(acc, sh);
    if (threadIdx.x == 0) p.dD_rows[w.r] = tot;
  }
}

template <typename T, typename A, typename TK>
__device__ void pack_kernel(const FFTConvParams<T, A, TK>& p, int64_t r, A* __restrict__ Ri, A scale) {
  const int64_t kt = p.mode == ConvMode::Bidirectional ? 2 * p.Lk : p.Lk, n = p.n;
  const TK* __restrict__ k = p.k + r * kt;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x) {
    A v = 0;
    if (t < p.Lk) v = A(to_acc(k[t])) * scale;
    if (p.mode == ConvMode::Bidirectional && t >= n - p.Lk) v = A(to_acc(k[p.Lk + (n - 1 - t)])) * scale;
    Ri[t] = v;
  }
}

template <typename T, typename A, typename TK>
__device__ void gather_kernel_grad(const FFTConvParams<T, A, TK>& p, int64_t r, const A* __restrict__ Ri, A scale) {
  const int64_t kt = p.mode == ConvMode::Bidirectional ? 2 * p.Lk : p.Lk;
  TK* __restrict__ dk = p.dk + r * kt;
  for (int64_t j = threadIdx.x; j < kt; j += blockDim.x) {
    const int64_t m = j < p.Lk ? j : p.n - 1 - (j - p.Lk);
    dk[j] = from_acc<TK>(Ri[m] * scale);
  }
}

template <typename T, typename A, typename TK>
__device__ void unpack_output(const FFTConvParams<T, A, TK>& p, const DevRow<T, A>& w, const A* __restrict__ Ri) {
  T* __restrict__ y = p.y + w.off;
  const T* __restrict__ post = w.post;
  for (int64_t t = threadIdx.x; t < p.L; t += blockDim.x) {
    A z = Ri[t] + w.d * w.skip_src(t);
    if (post) z *= A(to_acc(post[t]));
    y[t] = from_acc<T>(z);
  }
}

template <typename T, typename A, typename TK>
__device__ void unpack_post_grad(const FFTConvParams<T, A, TK>& p, const DevRow<T, A>& w, const A* __restrict__ Ri) {
  const T* __restrict__ g = p.grad + w.off;
  T* __restrict__ dpost = p.dpostgate + w.off;
  for (int64_t t = threadIdx.x; t < p.L; t += blockDim.x)
    dpost[t] = from_acc<T>(A(to_acc(g[t])) * (Ri[t] + w.d * w.skip_src(t)));
}

template <typename T, typename A, typename TK>
__device__ void unpack_input_grad(const FFTConvParams<T, A, TK>& p, const DevRow<T, A>& w, const A* __restrict__ Ri) {
  const T* __restrict__ g = p.grad + w.off;
  const T* __restrict__ post = w.post;
  const T* __restrict__ pre = w.pre;
  const int64_t off = w.off;
  for (int64_t t = threadIdx.x; t < p.L; t += blockDim.x) {
    const A dz = post ? A(to_acc(g[t])) * A(to_acc(post[t])) : A(to_acc(g[t]));
    // skip "gated": the skip's gradient D * dz joins dv before the pregate.
    const A dv = w.gs ? Ri[t] + w.d * dz : Ri[t];
    if (p.du) {
      const A dvp = pre ? dv * A(to_acc(pre[t])) : dv;
      p.du[off + t] = from_acc<T>(w.gs ? dvp : dvp + w.d * dz);
    }
    if (p.dpregate) p.dpregate[off + t] = from_acc<T>(dv * A(to_acc(w.u[t])));
  }
}

// One CUDA block per row of the FFT block (grid-stride over rows), threads over the row.
template <typename T, typename A, typename TK>
__global__ void __launch_bounds__(kThreads)
    stage_kernel(FFTConvParams<T, A, TK> p, Stage s, int64_t row0, int64_t nb, A* __restrict__ R, A scale) {
  KF_SHARED(A, sh, [kThreads / 32]);
  for (int64_t i = blockIdx.x; i < nb; i += gridDim.x) {
    const int64_t r = row0 + i;
    A* __restrict__ Ri = R + i * p.n;
    if (s == Stage::PackKernel) {
      pack_kernel(p, r, Ri, scale);
      continue;
    }
    if (s == Stage::GatherKernelGrad) {
      gather_kernel_grad(p, r, Ri, scale);
      continue;
    }
    const DevRow<T, A> w(p, r);
    switch (s) {
      case Stage::PackInput:
        pack_input(p, w, Ri);
        break;
      case Stage::PackGrad:
        pack_grad(p, w, Ri, sh);
        break;
      case Stage::UnpackOutput:
        unpack_output(p, w, Ri);
        break;
      case Stage::UnpackPostGrad:
        unpack_post_grad(p, w, Ri);
        break;
      case Stage::UnpackInputGrad:
        unpack_input_grad(p, w, Ri);
        break;
      default:
        break;
    }
  }
}

template <typename A>
__global__ void spectral_kernel(SpecOp op, int64_t row0, int64_t nb, int64_t nf, int64_t H, int64_t kbase,
                                bool per_batch, A* __restrict__ X, const A* __restrict__ Y, A* __restrict__ K) {
  const int64_t groups = op == SpecOp::CorrAccumulate ? (nb < H ? nb : H) : nb;
  const int64_t total = groups * nf;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / nf, f = e % nf;
    if (op == SpecOp::CorrAccumulate) {
      // Rows i, i + H, ... share the kernel row: one thread sums them, no atomics.
      A* acc = K + ((row0 + i) % H - kbase) * 2 * nf + 2 * f;
      A ar = acc[0], ai = acc[1];
      for (int64_t q = i; q < nb; q += H) {
        const A xr = X[q * 2 * nf + 2 * f], xi = X[q * 2 * nf + 2 * f + 1];
        const A yr = Y[q * 2 * nf + 2 * f], yi = Y[q * 2 * nf + 2 * f + 1];
        ar += xr * yr + xi * yi;
        ai += xr * yi - xi * yr;
      }
      acc[0] = ar;
      acc[1] = ai;
      continue;
    }
    A* x = X + i * 2 * nf + 2 * f;
    const A xr = x[0], xi = x[1];
    if (op == SpecOp::Corr) {
      const A* y = Y + i * 2 * nf + 2 * f;
      x[0] = xr * y[0] + xi * y[1];
      x[1] = xr * y[1] - xi * y[0];
    } else {
      const A* k = K + (per_batch ? i : (row0 + i) % H - kbase) * 2 * nf + 2 * f;
      const A kr = k[0], ki = op == SpecOp::MulConjKernel ? -k[1] : k[1];
      x[0] = xr * kr - xi * ki;
      x[1] = xr * ki + xi * kr;
    }
  }
}

}  // namespace

template <typename T, typename A, typename TK>
void launch_fftconv_stage(const FFTConvParams<T, A, TK>& p, Stage s, int64_t row0, int64_t nb, A* R, A scale,
                          void* stream) {
  if (nb <= 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(nb, int64_t(1) << 20));
  launch_kernel("fftconv: stage_kernel", stage_kernel<T, A, TK>, blocks, kThreads, 0, static_cast<cudaStream_t>(stream),
                p, s, row0, nb, R, scale);
}

template <typename A>
void launch_fftconv_spectral(SpecOp op, int64_t row0, int64_t nb, int64_t nf, int64_t H, int64_t kbase, bool per_batch,
                             A* X, const A* Y, A* K, void* stream) {
  if (nb <= 0) return;
  const int64_t groups = op == SpecOp::CorrAccumulate ? std::min(nb, H) : nb;
  const int64_t total = groups * nf;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20));
  launch_kernel("fftconv: spectral_kernel", spectral_kernel<A>, blocks, kThreads, 0, static_cast<cudaStream_t>(stream),
                op, row0, nb, nf, H, kbase, per_batch, X, Y, K);
}

template void launch_fftconv_stage<float, float>(const FFTConvParams<float, float>&, Stage, int64_t, int64_t, float*,
                                                 float, void*);
template void launch_fftconv_stage<double, double>(const FFTConvParams<double, double>&, Stage, int64_t, int64_t,
                                                   double*, double, void*);
template void launch_fftconv_stage<__half, float>(const FFTConvParams<__half, float>&, Stage, int64_t, int64_t, float*,
                                                  float, void*);
template void launch_fftconv_stage<__nv_bfloat16, float>(const FFTConvParams<__nv_bfloat16, float>&, Stage, int64_t,
                                                         int64_t, float*, float, void*);
// Mixed precision: fp16 / bf16 activations with an fp32 kernel and skip (k, D, dk in float).
template void launch_fftconv_stage<__half, float, float>(const FFTConvParams<__half, float, float>&, Stage, int64_t,
                                                         int64_t, float*, float, void*);
template void launch_fftconv_stage<__nv_bfloat16, float, float>(const FFTConvParams<__nv_bfloat16, float, float>&,
                                                                Stage, int64_t, int64_t, float*, float, void*);
template void launch_fftconv_spectral<float>(SpecOp, int64_t, int64_t, int64_t, int64_t, int64_t, bool, float*,
                                             const float*, float*, void*);
template void launch_fftconv_spectral<double>(SpecOp, int64_t, int64_t, int64_t, int64_t, int64_t, bool, double*,
                                              const double*, double*, void*);

}  // namespace kernelfuse::longconv
