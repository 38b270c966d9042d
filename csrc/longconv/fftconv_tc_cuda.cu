// Tensor-core fftconv for fp16 / bf16 (see fftconv_tc.h). Compiled for sm_80 / sm_90a with nvcc;
// run under the CUDA simulator (tests/sim/test_sim_longconv_tc.py: every pass list, nsb 1 / 2 / 4,
// against the float64 reference); NOT run on a GPU yet: hardware WMMA behaviour is unverified.
//
// Two launches per call: (1) the kernel spectrum K = DFT(k) of every channel, fp32 on CUDA cores,
// in the digit-reversed order of the factorisation below; (2) the fused conv, one thread block per
// nsb complex sequences (each = two batch rows of one channel as real / imaginary parts):
//   load u (and pregate), v = u * pregate scaled by 2^-e (max |v| of the sequence in [0.5, 1)),
//     zero-pad to N                                                   (shared memory, storage type T)
//   forward FFT: [radix-r pass on CUDA cores, r in {2, 4, 8}, if log2 N % 4 != 0] then radix-16
//     decimation-in-frequency passes S = N / r, N / 16r, ..., 16; each pass is, per block of S
//     elements, Y = F16 . X (X: 16 x S/16, rows of stride S/16) as WMMA m16n16k16 products
//     (complex product = four real products on the re / im planes, fp32 accumulation), then the
//     twiddles w_S^(n2 k1) in fp32 and a round to T. The last pass (S = 16, stride 1) is X' . F16
//     on (N/16 x 16) row tiles and has no twiddle. Every pass is scaled by 1 / sqrt(radix) (folded
//     into the F16 table: 1/4), so the transform is unitary and fp16 never sees growth by N.
//   multiply by K 2^-ek (fp32; max |K| of the channel in [0.5, 1)) in the digit-reversed order,
//   inverse FFT: the passes in reverse order, each the exact inverse (conjugate twiddle first,
//     then the conjugate DFT matrix), which returns to natural order,
//   y = postgate * (2^(e + ek) Re / Im [t] + D s), s = u or u * pregate (skip "gated"), t < L,
//   written as T.
// The two power-of-two scalings keep every fp16 intermediate below sqrt(2 L) <= 256 (unitary passes
// preserve the 2-norm), so inputs and kernels of any magnitude that the output can hold work.
// The only global traffic of the fused kernel: u and pregate read twice (the scale, then the load),
// postgate once, u once more for the skip (and pregate, skip "gated"), K once per sequence, y written once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "fftconv_tc.h"
#include "common/cuda_launch.cuh"
#include "common/half_convert.cuh"

namespace kernelfuse::longconv {
namespace {

using namespace nvcuda;

constexpr int kWarps = 8;
constexpr int kThreadsTC = kWarps * 32;
constexpr int kMaxSeqPerBlock = 4;
constexpr int64_t kStaticSmemTC = (kWarps + 2 * kMaxSeqPerBlock) * 4;  // fftconv_tc_kernel's KF_SHARED arrays

// exp(-+ 2 pi i e / S) (forward: minus), exponent reduced exactly; S is a power of two <= 2^15, so
// 2 (e mod S) / S is exact in fp32.
__device__ __forceinline__ float2 root(int64_t e, int64_t S, bool inverse) {
  float s, c;
  sincospif(2.0f * static_cast<float>(e % S) / static_cast<float>(S), &s, &c);
  return make_float2(c, inverse ? s : -s);
}

__host__ __device__ inline int log2i(int64_t n) {
  int m = 0;
  while ((int64_t(1) << m) < n) ++m;
  return m;
}

// ---- fp32 CUDA-core passes for the kernel spectrum (unscaled DFTs, in place in global memory) ----
// One pass of radix R on blocks of S elements: X[k1 s + n2] = w_S^(n2 k1) sum_n1 w_R^(n1 k1) x[n1 s + n2].
__device__ void scalar_pass_f32(float2* x, int64_t N, int64_t S, int R) {
  const int64_t s = S / R;
  for (int64_t i = threadIdx.x; i < N / R; i += blockDim.x) {
    const int64_t b = i / s, n2 = i - b * s;
    float2* xb = x + b * S + n2;
    float2 in[16];
#pragma unroll
    for (int n1 = 0; n1 < 16; ++n1)
      if (n1 < R) in[n1] = xb[n1 * s];
    for (int k1 = 0; k1 < R; ++k1) {
      float re = 0.f, im = 0.f;
#pragma unroll
      for (int n1 = 0; n1 < 16; ++n1) {
        if (n1 < R) {
          const float2 w = root(int64_t(n1) * k1, R, false);
          re += w.x * in[n1].x - w.y * in[n1].y;
          im += w.x * in[n1].y + w.y * in[n1].x;
        }
      }
      const float2 t = root(n2 * k1, S, false);
      xb[k1 * s] = make_float2(re * t.x - im * t.y, re * t.y + im * t.x);
    }
  }
}

// e with m = f 2^e, f in [0.5, 1) (0 for m = 0, inf or NaN): m 2^-e is in [0.5, 1), exactly.
__device__ __forceinline__ int scale_exponent(float m) {
  int e = 0;
  if (m > 0.f && m <= FLT_MAX) frexpf(m, &e);
  return e;
}

// Max of v over the block (every thread gets it); sh: kWarps floats.
__device__ float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // sh free (a previous call's readers are done)
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  float m = sh[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, sh[w]);
  return m;
}

template <typename TK>
__global__ void __launch_bounds__(kThreadsTC)
    kernel_spectrum_kernel(const TK* __restrict__ k, int64_t Lk, int64_t N, float2* __restrict__ kspec,
                           int* __restrict__ kexp) {
  KF_SHARED(float, red, [kWarps]);
  const int64_t h = blockIdx.x;
  float2* x = kspec + h * N;
  for (int64_t t = threadIdx.x; t < N; t += blockDim.x)
    x[t] = make_float2(t < Lk ? to_acc<TK>(k[h * Lk + t]) : 0.f, 0.f);
  __syncthreads();
  const int r = 1 << (log2i(N) % 4);
  if (r > 1) {
    scalar_pass_f32(x, N, N, r);
    __syncthreads();
  }
  for (int64_t S = N / r; S >= 16; S /= 16) {
    scalar_pass_f32(x, N, S, 16);
    __syncthreads();
  }
  // The fused kernel multiplies by K 2^-kexp (|re|, |im| < 1), so its fp16 / bf16 spectrum never
  // grows past the 2-norm of its (scaled) input.
  float m = 0.f;
  for (int64_t t = threadIdx.x; t < N; t += blockDim.x) m = fmaxf(m, fmaxf(fabsf(x[t].x), fabsf(x[t].y)));
  m = block_max(m, red);
  if (threadIdx.x == 0) kexp[h] = scale_exponent(m);
}

// ---- passes of the fused kernel on shared memory (re / im planes of type T per sequence) ----

// Radix-r pass (r in {2, 4, 8}) on S = N, scaled by 1 / sqrt(r); forward, or its exact inverse.
template <typename T>
__device__ void radix_r_pass(T* data, int nsb, int64_t N, int r, bool inverse) {
  const int64_t s = N / r;
  const float scale = rsqrtf(static_cast<float>(r));
  for (int64_t i = threadIdx.x; i < nsb * s; i += blockDim.x) {
    const int j = static_cast<int>(i / s);
    const int64_t n2 = i - j * s;
    T* re = data + j * 2 * N;
    T* im = re + N;
    float xr[8], xi[8];
#pragma unroll
    for (int a = 0; a < 8; ++a) {
      if (a < r) {
        xr[a] = to_acc<T>(re[a * s + n2]);
        xi[a] = to_acc<T>(im[a * s + n2]);
        if (inverse) {  // conjugate twiddle first
          const float2 w = root(n2 * a, N, true);
          const float tr = xr[a] * w.x - xi[a] * w.y;
          xi[a] = xr[a] * w.y + xi[a] * w.x;
          xr[a] = tr;
        }
      }
    }
#pragma unroll
    for (int b = 0; b < 8; ++b) {
      if (b < r) {
        float yr = 0.f, yi = 0.f;
#pragma unroll
        for (int a = 0; a < 8; ++a) {
          if (a < r) {
            const float2 w = root(int64_t(a) * b, r, inverse);
            yr += w.x * xr[a] - w.y * xi[a];
            yi += w.x * xi[a] + w.y * xr[a];
          }
        }
        yr *= scale;
        yi *= scale;
        if (!inverse) {
          const float2 w = root(n2 * b, N, false);
          const float tr = yr * w.x - yi * w.y;
          yi = yr * w.y + yi * w.x;
          yr = tr;
        }
        re[b * s + n2] = from_acc<T>(yr);
        im[b * s + n2] = from_acc<T>(yi);
      }
    }
  }
}

// Radix-16 pass on blocks of S elements (16 <= S <= N / r) on tensor cores. F: three 16 x 16 tables
// (Re, Im, -Im of w_16^(k1 n1) / 4); sc: this warp's fp32 scratch (2 x 256).
template <typename T>
__device__ void radix16_pass(T* data, int nsb, int64_t N, int64_t S, bool inverse, const T* F, float* sc) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t tiles_per_seq = N / 256, total = nsb * tiles_per_seq, s = S / 16;
  if (s >= 16) {
    // Shape A: Y (16 x 16) = F16 . X tile, X rows n1 at stride s, 16 consecutive columns n2.
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fr, fi, fn;
    wmma::load_matrix_sync(fr, F, 16);
    wmma::load_matrix_sync(fi, F + 256, 16);
    wmma::load_matrix_sync(fn, F + 512, 16);
    const int64_t cpb = s / 16;  // column tiles per block
    for (int64_t tile = warp; tile < total; tile += kWarps) {
      const int j = static_cast<int>(tile / tiles_per_seq);
      const int64_t tl = tile - j * tiles_per_seq, b = tl / cpb, c = tl - b * cpb;
      T* re = data + j * 2 * N;
      T* im = re + N;
      const int64_t off = b * S + c * 16;
      if (inverse) {  // conjugate twiddle w_S^(-n2 k1) before the conjugate DFT
        for (int e = lane; e < 256; e += 32) {
          const int k1 = e / 16, jj = e % 16;
          const int64_t idx = off + k1 * s + jj;
          const float2 w = root((c * 16 + jj) * k1, S, true);
          const float xr = to_acc<T>(re[idx]), xi = to_acc<T>(im[idx]);
          re[idx] = from_acc<T>(xr * w.x - xi * w.y);
          im[idx] = from_acc<T>(xr * w.y + xi * w.x);
        }
        __syncwarp();
      }
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> xr, xi;
      wmma::load_matrix_sync(xr, re + off, static_cast<unsigned>(s));
      wmma::load_matrix_sync(xi, im + off, static_cast<unsigned>(s));
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> ar, ai;
      wmma::fill_fragment(ar, 0.f);
      wmma::fill_fragment(ai, 0.f);
      wmma::mma_sync(ar, fr, xr, ar);
      wmma::mma_sync(ai, fr, xi, ai);
      if (!inverse) {  // (Fr + i Fi)(xr + i xi)
        wmma::mma_sync(ar, fn, xi, ar);
        wmma::mma_sync(ai, fi, xr, ai);
      } else {  // (Fr - i Fi)(xr + i xi)
        wmma::mma_sync(ar, fi, xi, ar);
        wmma::mma_sync(ai, fn, xr, ai);
      }
      wmma::store_matrix_sync(sc, ar, 16, wmma::mem_row_major);
      wmma::store_matrix_sync(sc + 256, ai, 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int k1 = e / 16, jj = e % 16;
        const int64_t idx = off + k1 * s + jj;
        float yr = sc[e], yi = sc[256 + e];
        if (!inverse) {
          const float2 w = root((c * 16 + jj) * k1, S, false);
          const float tr = yr * w.x - yi * w.y;
          yi = yr * w.y + yi * w.x;
          yr = tr;
        }
        re[idx] = from_acc<T>(yr);
        im[idx] = from_acc<T>(yi);
      }
      __syncwarp();
    }
  } else {
    // Shape B (S = 16, stride 1, no twiddle): Y' (16 rows x 16) = X' . F16 on 16 consecutive rows of 16.
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fr, fi, fn;
    wmma::load_matrix_sync(fr, F, 16);
    wmma::load_matrix_sync(fi, F + 256, 16);
    wmma::load_matrix_sync(fn, F + 512, 16);
    for (int64_t tile = warp; tile < total; tile += kWarps) {
      const int j = static_cast<int>(tile / tiles_per_seq);
      const int64_t off = (tile - j * tiles_per_seq) * 256;
      T* re = data + j * 2 * N + off;
      T* im = data + j * 2 * N + N + off;
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> xr, xi;
      wmma::load_matrix_sync(xr, re, 16);
      wmma::load_matrix_sync(xi, im, 16);
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> ar, ai;
      wmma::fill_fragment(ar, 0.f);
      wmma::fill_fragment(ai, 0.f);
      wmma::mma_sync(ar, xr, fr, ar);
      if (!inverse) {  // (xr + i xi)(Fr + i Fi)
        wmma::mma_sync(ar, xi, fn, ar);
        wmma::mma_sync(ai, xr, fi, ai);
        wmma::mma_sync(ai, xi, fr, ai);
      } else {  // (xr + i xi)(Fr - i Fi)
        wmma::mma_sync(ar, xi, fi, ar);
        wmma::mma_sync(ai, xi, fr, ai);
        wmma::mma_sync(ai, xr, fn, ai);
      }
      wmma::store_matrix_sync(sc, ar, 16, wmma::mem_row_major);
      wmma::store_matrix_sync(sc + 256, ai, 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        re[e] = from_acc<T>(sc[e]);
        im[e] = from_acc<T>(sc[256 + e]);
      }
      __syncwarp();
    }
  }
}

template <typename T, typename TK>
__global__ void __launch_bounds__(kThreadsTC) fftconv_tc_kernel(FFTConvTCParams<T, TK> p, int nsb, int64_t nseq) {
  KF_DYNAMIC_SHARED_ALIGNED(128, unsigned char, smem_raw);
  const int64_t N = p.N, L = p.L, H = p.H;
  T* data = reinterpret_cast<T*>(smem_raw);                // nsb x (re N, im N)
  T* F = data + int64_t(nsb) * 2 * N;                      // 3 x 256
  float* scratch = reinterpret_cast<float*>(F + 3 * 256);  // kWarps x 512
  float* sc = scratch + (threadIdx.x / 32) * 512;
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    const int k1 = i / 16, n1 = i % 16;
    float sn, cs;
    sincospif(2.0f * static_cast<float>((k1 * n1) % 16) / 16.0f, &sn, &cs);
    F[i] = from_acc<T>(0.25f * cs);
    F[256 + i] = from_acc<T>(-0.25f * sn);
    F[512 + i] = from_acc<T>(0.25f * sn);
  }
  const int64_t g0 = int64_t(blockIdx.x) * nsb;
  // Scale of each sequence: v 2^-vexp has |re|, |im| < 1, so no fp16 intermediate can overflow
  // (a unitary pass keeps every element below the sequence's 2-norm, < sqrt(2 L) <= 256; the
  // spectral product is scaled by 2^-kexp likewise) and small inputs do not sink into subnormals.
  // Both are powers of two, undone exactly in fp32 at the output.
  KF_SHARED(float, red, [kWarps]);
  KF_SHARED(int, vexp, [kMaxSeqPerBlock]);
  KF_SHARED(int, kex, [kMaxSeqPerBlock]);
  for (int j = 0; j < nsb; ++j) {
    const int64_t g = g0 + j;
    float m = 0.f;
    if (g < nseq) {
      const int64_t h = g % H, b0 = 2 * (g / H);
      const int64_t o0 = (b0 * H + h) * L;
      const bool two = b0 + 1 < p.B;
      for (int64_t t = threadIdx.x; t < L; t += blockDim.x) {
        float vr = to_acc<T>(p.u[o0 + t]);
        if (p.pregate) vr *= to_acc<T>(p.pregate[o0 + t]);
        m = fmaxf(m, fabsf(vr));
        if (two) {
          float vi = to_acc<T>(p.u[o0 + H * L + t]);
          if (p.pregate) vi *= to_acc<T>(p.pregate[o0 + H * L + t]);
          m = fmaxf(m, fabsf(vi));
        }
      }
    }
    m = block_max(m, red);
    if (threadIdx.x == 0) {
      vexp[j] = scale_exponent(m);
      kex[j] = g < nseq ? p.kexp[g % H] : 0;
    }
  }
  __syncthreads();
  // Load and pregate: sequence g = (q, h) holds rows (2q, h) (real) and (2q + 1, h) (imaginary).
  for (int64_t i = threadIdx.x; i < nsb * N; i += blockDim.x) {
    const int j = static_cast<int>(i / N);
    const int64_t t = i - j * N, g = g0 + j;
    float vr = 0.f, vi = 0.f;
    if (g < nseq && t < L) {
      const int64_t h = g % H, b0 = 2 * (g / H);
      const int64_t o0 = (b0 * H + h) * L + t;
      vr = to_acc<T>(p.u[o0]);
      if (p.pregate) vr *= to_acc<T>(p.pregate[o0]);
      if (b0 + 1 < p.B) {
        const int64_t o1 = o0 + H * L;
        vi = to_acc<T>(p.u[o1]);
        if (p.pregate) vi *= to_acc<T>(p.pregate[o1]);
      }
    }
    data[j * 2 * N + t] = from_acc<T>(ldexpf(vr, -vexp[j]));
    data[j * 2 * N + N + t] = from_acc<T>(ldexpf(vi, -vexp[j]));
  }
  __syncthreads();
  const int r = 1 << (log2i(N) % 4);
  if (r > 1) {
    radix_r_pass<T>(data, nsb, N, r, false);
    __syncthreads();
  }
  for (int64_t S = N / r; S >= 16; S /= 16) {
    radix16_pass<T>(data, nsb, N, S, false, F, sc);
    __syncthreads();
  }
  // Pointwise product with the kernel spectrum (both in digit-reversed order), fp32.
  const float2* K = reinterpret_cast<const float2*>(p.kspec);
  for (int64_t i = threadIdx.x; i < nsb * N; i += blockDim.x) {
    const int j = static_cast<int>(i / N);
    const int64_t t = i - j * N, g = g0 + j;
    if (g >= nseq) continue;
    const float2 kk = K[(g % H) * N + t];
    T* re = data + j * 2 * N + t;
    T* im = re + N;
    const float xr = to_acc<T>(*re), xi = to_acc<T>(*im);
    *re = from_acc<T>(ldexpf(xr * kk.x - xi * kk.y, -kex[j]));
    *im = from_acc<T>(ldexpf(xr * kk.y + xi * kk.x, -kex[j]));
  }
  __syncthreads();
  for (int64_t S = 16; S <= N / r; S *= 16) {
    radix16_pass<T>(data, nsb, N, S, true, F, sc);
    __syncthreads();
  }
  if (r > 1) {
    radix_r_pass<T>(data, nsb, N, r, true);
    __syncthreads();
  }
  // Skip, postgate, store.
  for (int64_t i = threadIdx.x; i < nsb * L; i += blockDim.x) {
    const int j = static_cast<int>(i / L);
    const int64_t t = i - j * L, g = g0 + j;
    if (g >= nseq) continue;
    const int64_t h = g % H, b0 = 2 * (g / H);
    const float d = p.D ? to_acc<TK>(p.D[h]) : 0.f;
    const int e = vexp[j] + kex[j];
    const int64_t o0 = (b0 * H + h) * L + t;
    const bool gs = p.skip_gated && p.pregate;  // skip "gated": D multiplies u * pregate
    float s0 = to_acc<T>(p.u[o0]);
    if (gs) s0 *= to_acc<T>(p.pregate[o0]);
    float z = ldexpf(to_acc<T>(data[j * 2 * N + t]), e) + d * s0;
    if (p.postgate) z *= to_acc<T>(p.postgate[o0]);
    p.y[o0] = from_acc<T>(z);
    if (b0 + 1 < p.B) {
      const int64_t o1 = o0 + H * L;
      float s1 = to_acc<T>(p.u[o1]);
      if (gs) s1 *= to_acc<T>(p.pregate[o1]);
      float z1 = ldexpf(to_acc<T>(data[j * 2 * N + N + t]), e) + d * s1;
      if (p.postgate) z1 *= to_acc<T>(p.postgate[o1]);
      p.y[o1] = from_acc<T>(z1);
    }
  }
}

}  // namespace

template <typename T, typename TK>
bool launch_fftconv_tc(const FFTConvTCParams<T, TK>& p, void* stream) {
  if (p.N < kTCMinN || p.N > kTCMaxN || (p.N & (p.N - 1)) != 0 || p.L + p.Lk - 1 > p.N || p.Lk < 1) return false;
  int dev = 0, smem_optin = 0, sms = 1, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  if (major < 8) return false;  // bf16 WMMA and the build's archs: sm_80 and newer
  const int64_t nseq = ((p.B + 1) / 2) * p.H;
  if (nseq == 0) return true;
  // Shared memory: nsb sequences of 2 N values of T, the DFT tables, the warps' fp32 scratch.
  // (The kernel's few static bytes count against the same per-block limit.)
  const int64_t fixed = 3 * 256 * int64_t(sizeof(T)) + kWarps * 512 * int64_t(sizeof(float)) + kStaticSmemTC;
  const int64_t per_seq = 2 * p.N * int64_t(sizeof(T));
  if (fixed + per_seq > smem_optin) return false;
  // More sequences per block while they fit and the grid keeps >= 2 blocks per SM.
  int nsb = 1;
  while (nsb < kMaxSeqPerBlock && fixed + 2 * nsb * per_seq <= smem_optin &&
         (nseq + 2 * nsb - 1) / (2 * nsb) >= 2 * int64_t(sms))
    nsb *= 2;
  const int64_t bytes = fixed + nsb * per_seq;
  if (cudaFuncSetAttribute(fftconv_tc_kernel<T, TK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(bytes)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const int64_t blocks = (nseq + nsb - 1) / nsb;
  if (blocks > 0x7fffffff || p.H > 0x7fffffff) return false;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  launch_kernel("fftconv_tc: kernel_spectrum_kernel", kernel_spectrum_kernel<TK>, static_cast<unsigned>(p.H),
                kThreadsTC, 0, st, p.k, p.Lk, p.N, reinterpret_cast<float2*>(p.kspec), p.kexp);
  launch_kernel("fftconv_tc: fftconv_tc_kernel", fftconv_tc_kernel<T, TK>, static_cast<unsigned>(blocks), kThreadsTC,
                static_cast<size_t>(bytes), st, p, nsb, nseq);
  return true;
}

template bool launch_fftconv_tc<__half>(const FFTConvTCParams<__half>&, void*);
template bool launch_fftconv_tc<__nv_bfloat16>(const FFTConvTCParams<__nv_bfloat16>&, void*);
// Mixed precision: fp32 k and D (the kernel spectrum is fp32 anyway; k is no longer rounded to T first).
template bool launch_fftconv_tc<__half, float>(const FFTConvTCParams<__half, float>&, void*);
template bool launch_fftconv_tc<__nv_bfloat16, float>(const FFTConvTCParams<__nv_bfloat16, float>&, void*);

}  // namespace kernelfuse::longconv
