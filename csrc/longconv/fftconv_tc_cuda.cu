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

// Radix of the first pass (on CUDA cores) of the factorisation of N: 2^(log2 N mod 4); 1: none.
__host__ __device__ inline int first_radix(int64_t N) { return 1 << (log2i(N) % 4); }

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
  const int r = first_radix(N);
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

// ---- radix-16 passes on tensor cores ----
template <typename Use, typename T>
using Frag16 = wmma::fragment<Use, 16, 16, 16, T, wmma::row_major>;
using AccFrag16 = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// The three 16 x 16 tables of F (Re, Im, -Im of w_16^(k1 n1) / 4) as WMMA operands of role Use:
// matrix_a for Y = F16 . X (shape A), matrix_b for Y' = X' . F16 (shape B).
template <typename Use, typename T>
struct DftFrags {
  Frag16<Use, T> re, im, neg_im;
  __device__ explicit DftFrags(const T* F) {
    wmma::load_matrix_sync(re, F, 16);
    wmma::load_matrix_sync(im, F + 256, 16);
    wmma::load_matrix_sync(neg_im, F + 512, 16);
  }
};

// (a_re, a_im) = F16 . (x_re + i x_im) (forward) or conj(F16) . (x_re + i x_im) (inverse), four
// real products with fp32 accumulation.
template <typename T>
__device__ __forceinline__ void dft_times_tile(AccFrag16& ar, AccFrag16& ai, const DftFrags<wmma::matrix_a, T>& f,
                                               const Frag16<wmma::matrix_b, T>& xr, const Frag16<wmma::matrix_b, T>& xi,
                                               bool inverse) {
  wmma::fill_fragment(ar, 0.f);
  wmma::fill_fragment(ai, 0.f);
  wmma::mma_sync(ar, f.re, xr, ar);
  wmma::mma_sync(ai, f.re, xi, ai);
  if (!inverse) {  // (Fr + i Fi)(xr + i xi)
    wmma::mma_sync(ar, f.neg_im, xi, ar);
    wmma::mma_sync(ai, f.im, xr, ai);
  } else {  // (Fr - i Fi)(xr + i xi)
    wmma::mma_sync(ar, f.im, xi, ar);
    wmma::mma_sync(ai, f.neg_im, xr, ai);
  }
}

// (a_re, a_im) = (x_re + i x_im) . F16 (forward) or (x_re + i x_im) . conj(F16) (inverse).
template <typename T>
__device__ __forceinline__ void tile_times_dft(AccFrag16& ar, AccFrag16& ai, const Frag16<wmma::matrix_a, T>& xr,
                                               const Frag16<wmma::matrix_a, T>& xi,
                                               const DftFrags<wmma::matrix_b, T>& f, bool inverse) {
  wmma::fill_fragment(ar, 0.f);
  wmma::fill_fragment(ai, 0.f);
  wmma::mma_sync(ar, xr, f.re, ar);
  if (!inverse) {  // (xr + i xi)(Fr + i Fi)
    wmma::mma_sync(ar, xi, f.neg_im, ar);
    wmma::mma_sync(ai, xr, f.im, ai);
    wmma::mma_sync(ai, xi, f.re, ai);
  } else {  // (xr + i xi)(Fr - i Fi)
    wmma::mma_sync(ar, xi, f.im, ar);
    wmma::mma_sync(ai, xi, f.re, ai);
    wmma::mma_sync(ai, xr, f.neg_im, ai);
  }
}

// The product tile into the warp's fp32 scratch (sc: Re, sc + 256: Im; row-major 16 x 16), visible
// to the whole warp on return.
__device__ __forceinline__ void spill_tile(float* sc, const AccFrag16& ar, const AccFrag16& ai) {
  wmma::store_matrix_sync(sc, ar, 16, wmma::mem_row_major);
  wmma::store_matrix_sync(sc + 256, ai, 16, wmma::mem_row_major);
  __syncwarp();
}

// A shape-A tile: rows k1 = 0..15 at stride s from off, 16 consecutive columns; column jj is
// n2 = 16 c + jj of its block of S elements.
struct StridedTile {
  int64_t off, s, c, S;
  __device__ int64_t index(int k1, int jj) const { return off + k1 * s + jj; }
  __device__ float2 twiddle(int k1, int jj, bool inverse) const { return root((c * 16 + jj) * k1, S, inverse); }
};

// The inverse pass's conjugate twiddle w_S^(-n2 k1) on the tile, in place (before its conjugate DFT).
template <typename T>
__device__ void conj_twiddle_tile(T* re, T* im, const StridedTile& tl, int lane) {
  for (int e = lane; e < 256; e += 32) {
    const int k1 = e / 16, jj = e % 16;
    const int64_t idx = tl.index(k1, jj);
    const float2 w = tl.twiddle(k1, jj, true);
    const float xr = to_acc<T>(re[idx]), xi = to_acc<T>(im[idx]);
    re[idx] = from_acc<T>(xr * w.x - xi * w.y);
    im[idx] = from_acc<T>(xr * w.y + xi * w.x);
  }
  __syncwarp();
}

// The spilled product (sc) back into the tile as T, times the twiddle w_S^(n2 k1) on the forward pass.
template <typename T>
__device__ void store_strided_tile(T* re, T* im, const float* sc, const StridedTile& tl, bool inverse, int lane) {
  for (int e = lane; e < 256; e += 32) {
    const int k1 = e / 16, jj = e % 16;
    const int64_t idx = tl.index(k1, jj);
    float yr = sc[e], yi = sc[256 + e];
    if (!inverse) {
      const float2 w = tl.twiddle(k1, jj, false);
      const float tr = yr * w.x - yi * w.y;
      yi = yr * w.y + yi * w.x;
      yr = tr;
    }
    re[idx] = from_acc<T>(yr);
    im[idx] = from_acc<T>(yi);
  }
  __syncwarp();
}

// Shape A (S >= 256): Y (16 x 16) = F16 . X tile, X rows n1 at stride s = S / 16, 16 consecutive
// columns n2; one warp per tile.
template <typename T>
__device__ void radix16_strided_pass(T* data, int nsb, int64_t N, int64_t S, bool inverse, const T* F, float* sc) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t tiles_per_seq = N / 256, total = nsb * tiles_per_seq, s = S / 16;
  const DftFrags<wmma::matrix_a, T> f(F);
  const int64_t cpb = s / 16;  // column tiles per block
  for (int64_t tile = warp; tile < total; tile += kWarps) {
    const int j = static_cast<int>(tile / tiles_per_seq);
    const int64_t t = tile - j * tiles_per_seq, b = t / cpb, c = t - b * cpb;
    T* re = data + j * 2 * N;
    T* im = re + N;
    const StridedTile tl{b * S + c * 16, s, c, S};
    if (inverse) conj_twiddle_tile(re, im, tl, lane);
    Frag16<wmma::matrix_b, T> xr, xi;
    wmma::load_matrix_sync(xr, re + tl.off, static_cast<unsigned>(s));
    wmma::load_matrix_sync(xi, im + tl.off, static_cast<unsigned>(s));
    AccFrag16 ar, ai;
    dft_times_tile<T>(ar, ai, f, xr, xi, inverse);
    spill_tile(sc, ar, ai);
    store_strided_tile(re, im, sc, tl, inverse, lane);
  }
}

// Shape B (S = 16, stride 1, no twiddle): Y' (16 rows x 16) = X' . F16 on 16 consecutive rows of 16.
template <typename T>
__device__ void radix16_last_pass(T* data, int nsb, int64_t N, bool inverse, const T* F, float* sc) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t tiles_per_seq = N / 256, total = nsb * tiles_per_seq;
  const DftFrags<wmma::matrix_b, T> f(F);
  for (int64_t tile = warp; tile < total; tile += kWarps) {
    const int j = static_cast<int>(tile / tiles_per_seq);
    const int64_t off = (tile - j * tiles_per_seq) * 256;
    T* re = data + j * 2 * N + off;
    T* im = data + j * 2 * N + N + off;
    Frag16<wmma::matrix_a, T> xr, xi;
    wmma::load_matrix_sync(xr, re, 16);
    wmma::load_matrix_sync(xi, im, 16);
    AccFrag16 ar, ai;
    tile_times_dft<T>(ar, ai, xr, xi, f, inverse);
    spill_tile(sc, ar, ai);
    for (int e = lane; e < 256; e += 32) {
      re[e] = from_acc<T>(sc[e]);
      im[e] = from_acc<T>(sc[256 + e]);
    }
    __syncwarp();
  }
}

// Radix-16 pass on blocks of S elements (16 <= S <= N / r) on tensor cores. F: three 16 x 16 tables
// (Re, Im, -Im of w_16^(k1 n1) / 4); sc: this warp's fp32 scratch (2 x 256).
template <typename T>
__device__ void radix16_pass(T* data, int nsb, int64_t N, int64_t S, bool inverse, const T* F, float* sc) {
  if (S / 16 >= 16)
    radix16_strided_pass<T>(data, nsb, N, S, inverse, F, sc);
  else
    radix16_last_pass<T>(data, nsb, N, inverse, F, sc);
}

// The forward FFT of the block's sequences in place: [radix-r pass] then radix-16 passes S = N / r, ..., 16.
template <typename T>
__device__ void forward_fft(T* data, int nsb, int64_t N, const T* F, float* sc) {
  const int r = first_radix(N);
  if (r > 1) {
    radix_r_pass<T>(data, nsb, N, r, false);
    __syncthreads();
  }
  for (int64_t S = N / r; S >= 16; S /= 16) {
    radix16_pass<T>(data, nsb, N, S, false, F, sc);
    __syncthreads();
  }
}

// Its exact inverse: the passes in reverse order, back to natural order.
template <typename T>
__device__ void inverse_fft(T* data, int nsb, int64_t N, const T* F, float* sc) {
  const int r = first_radix(N);
  for (int64_t S = 16; S <= N / r; S *= 16) {
    radix16_pass<T>(data, nsb, N, S, true, F, sc);
    __syncthreads();
  }
  if (r > 1) {
    radix_r_pass<T>(data, nsb, N, r, true);
    __syncthreads();
  }
}

// ---- the fused kernel's stages (the block's sequences g0 + j, j < nsb; those >= nseq do not exist) ----

// F = Re, Im, -Im of w_16^(k1 n1) / 4 (three row-major 16 x 16 tables of T).
template <typename T>
__device__ void fill_dft_tables(T* F) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    const int k1 = i / 16, n1 = i % 16;
    float sn, cs;
    sincospif(2.0f * static_cast<float>((k1 * n1) % 16) / 16.0f, &sn, &cs);
    F[i] = from_acc<T>(0.25f * cs);
    F[256 + i] = from_acc<T>(-0.25f * sn);
    F[512 + i] = from_acc<T>(0.25f * sn);
  }
}

// Sequence g = (q, h) holds rows (2q, h) (real part) and (2q + 1, h) (imaginary part, if 2q + 1 < B).
struct SeqRows {
  int64_t h;       // channel
  int64_t o0, o1;  // offsets of the two rows in the (B, H, L) tensors
  bool two;        // row 2q + 1 exists
};

template <typename T, typename TK>
__device__ SeqRows seq_rows(const FFTConvTCParams<T, TK>& p, int64_t g) {
  const int64_t h = g % p.H, b0 = 2 * (g / p.H);
  const int64_t o0 = (b0 * p.H + h) * p.L;
  return SeqRows{h, o0, o0 + p.H * p.L, b0 + 1 < p.B};
}

// u[o], times pregate[o] if gate, in fp32.
template <typename T, typename TK>
__device__ float gated_u(const FFTConvTCParams<T, TK>& p, int64_t o, bool gate) {
  float v = to_acc<T>(p.u[o]);
  if (gate) v *= to_acc<T>(p.pregate[o]);
  return v;
}

// vexp[j]: the scale exponent of max |v| (v = u * pregate) of sequence j (0 if absent); kex[j]: its
// channel's spectrum exponent. Block-wide (block_max synchronises; red: kWarps floats).
template <typename T, typename TK>
__device__ void sequence_scales(const FFTConvTCParams<T, TK>& p, int nsb, int64_t g0, int64_t nseq, float* red,
                                int* vexp, int* kex) {
  const bool pre = p.pregate != nullptr;
  for (int j = 0; j < nsb; ++j) {
    const int64_t g = g0 + j;
    float m = 0.f;
    if (g < nseq) {
      const SeqRows q = seq_rows(p, g);
      for (int64_t t = threadIdx.x; t < p.L; t += blockDim.x) {
        m = fmaxf(m, fabsf(gated_u(p, q.o0 + t, pre)));
        if (q.two) m = fmaxf(m, fabsf(gated_u(p, q.o1 + t, pre)));
      }
    }
    m = block_max(m, red);
    if (threadIdx.x == 0) {
      vexp[j] = scale_exponent(m);
      kex[j] = g < nseq ? p.kexp[g % p.H] : 0;
    }
  }
}

// data[j] = (re, im) = v 2^-vexp[j] of the two rows of sequence j, zero-padded to N, as T.
template <typename T, typename TK>
__device__ void load_sequences(const FFTConvTCParams<T, TK>& p, T* data, int nsb, int64_t g0, int64_t nseq,
                               const int* vexp) {
  const int64_t N = p.N;
  const bool pre = p.pregate != nullptr;
  for (int64_t i = threadIdx.x; i < nsb * N; i += blockDim.x) {
    const int j = static_cast<int>(i / N);
    const int64_t t = i - j * N, g = g0 + j;
    float vr = 0.f, vi = 0.f;
    if (g < nseq && t < p.L) {
      const SeqRows q = seq_rows(p, g);
      vr = gated_u(p, q.o0 + t, pre);
      if (q.two) vi = gated_u(p, q.o1 + t, pre);
    }
    data[j * 2 * N + t] = from_acc<T>(ldexpf(vr, -vexp[j]));
    data[j * 2 * N + N + t] = from_acc<T>(ldexpf(vi, -vexp[j]));
  }
}

// Pointwise product with the kernel spectrum times 2^-kex[j] (both in digit-reversed order), fp32.
template <typename T, typename TK>
__device__ void spectral_product(const FFTConvTCParams<T, TK>& p, T* data, int nsb, int64_t g0, int64_t nseq,
                                 const int* kex) {
  const int64_t N = p.N;
  const float2* K = reinterpret_cast<const float2*>(p.kspec);
  for (int64_t i = threadIdx.x; i < nsb * N; i += blockDim.x) {
    const int j = static_cast<int>(i / N);
    const int64_t t = i - j * N, g = g0 + j;
    if (g >= nseq) continue;
    const float2 kk = K[(g % p.H) * N + t];
    T* re = data + j * 2 * N + t;
    T* im = re + N;
    const float xr = to_acc<T>(*re), xi = to_acc<T>(*im);
    *re = from_acc<T>(ldexpf(xr * kk.x - xi * kk.y, -kex[j]));
    *im = from_acc<T>(ldexpf(xr * kk.y + xi * kk.x, -kex[j]));
  }
}

// y[o] = postgate[o] * (2^e x + d s[o]), s = u, or u * pregate with gs.
template <typename T, typename TK>
__device__ void store_output(const FFTConvTCParams<T, TK>& p, int64_t o, T x, int e, float d, bool gs) {
  float z = ldexpf(to_acc<T>(x), e) + d * gated_u(p, o, gs);
  if (p.postgate) z *= to_acc<T>(p.postgate[o]);
  p.y[o] = from_acc<T>(z);
}

// Skip, postgate, store: t < L of both rows of every sequence, the scalings undone (2^(vexp + kex)).
template <typename T, typename TK>
__device__ void store_outputs(const FFTConvTCParams<T, TK>& p, const T* data, int nsb, int64_t g0, int64_t nseq,
                              const int* vexp, const int* kex) {
  const int64_t N = p.N, L = p.L;
  const bool gs = p.skip_gated && p.pregate;  // skip "gated": D multiplies u * pregate
  for (int64_t i = threadIdx.x; i < nsb * L; i += blockDim.x) {
    const int j = static_cast<int>(i / L);
    const int64_t t = i - j * L, g = g0 + j;
    if (g >= nseq) continue;
    const SeqRows q = seq_rows(p, g);
    const float d = p.D ? to_acc<TK>(p.D[q.h]) : 0.f;
    const int e = vexp[j] + kex[j];
    store_output(p, q.o0 + t, data[j * 2 * N + t], e, d, gs);
    if (q.two) store_output(p, q.o1 + t, data[j * 2 * N + N + t], e, d, gs);
  }
}

template <typename T, typename TK>
__global__ void __launch_bounds__(kThreadsTC) fftconv_tc_kernel(FFTConvTCParams<T, TK> p, int nsb, int64_t nseq) {
  KF_DYNAMIC_SHARED_ALIGNED(128, unsigned char, smem_raw);
  const int64_t N = p.N;
  T* data = reinterpret_cast<T*>(smem_raw);                // nsb x (re N, im N)
  T* F = data + int64_t(nsb) * 2 * N;                      // 3 x 256
  float* scratch = reinterpret_cast<float*>(F + 3 * 256);  // kWarps x 512
  float* sc = scratch + (threadIdx.x / 32) * 512;
  fill_dft_tables(F);  // read after the barriers of sequence_scales
  const int64_t g0 = int64_t(blockIdx.x) * nsb;
  // Scale of each sequence: v 2^-vexp has |re|, |im| < 1, so no fp16 intermediate can overflow
  // (a unitary pass keeps every element below the sequence's 2-norm, < sqrt(2 L) <= 256; the
  // spectral product is scaled by 2^-kexp likewise) and small inputs do not sink into subnormals.
  // Both are powers of two, undone exactly in fp32 at the output.
  KF_SHARED(float, red, [kWarps]);
  KF_SHARED(int, vexp, [kMaxSeqPerBlock]);
  KF_SHARED(int, kex, [kMaxSeqPerBlock]);
  sequence_scales(p, nsb, g0, nseq, red, vexp, kex);
  __syncthreads();
  load_sequences(p, data, nsb, g0, nseq, vexp);
  __syncthreads();
  forward_fft<T>(data, nsb, N, F, sc);
  spectral_product(p, data, nsb, g0, nseq, kex);
  __syncthreads();
  inverse_fft<T>(data, nsb, N, F, sc);
  store_outputs(p, data, nsb, g0, nseq, vexp, kex);
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
