// CUDA kernels for fused kernel sums (semantics: kernel_sum.h). Torch-free: raw pointers, a
// params struct and a cudaStream_t; one launch per call, no host synchronisation.
//
// Work split. A block of kBlock = 128 threads owns 128 consecutive query rows of one batch entry
// (one query per thread) and walks all points in tiles that the block stages cooperatively in
// shared memory (coordinates converted to the accumulation type A, zero padded, plus the tile's
// point weight columns). grid.x = query blocks x splits, where a split is a chunk of kCols
// weight columns (Sum / LogSumExp with c > 1) or of gradient dimensions (Grad on the generic
// path); grid.y strides over the batch (so batch > 65535 works).
//
// Dimension. For d up to a bucket DB (4, 8, 16, 32, 64; smaller for double and for Grad, to stay
// in registers) a thread keeps its query row in registers and the tile holds whole point rows
// (32 x DB). Larger d takes the generic path: per tile, the dimensions are walked in chunks of DC
// (query chunk transposed in shared memory, point chunk beside it) and the squared distances are
// accumulated per (point, query) in shared memory; Grad then gives each block DC output
// dimensions (a split), so the distance is recomputed once per chunk of DC output dimensions.
//
// Numerics. s = sum_k ((x_k - y_k) / h_k)^2 from explicit differences of the raw coordinates (no
// cancellation from pre-scaled values). Per-tile partial sums are formed in A and added to
// running totals: double for Sum and LogSumExp, A for Grad (whose terms cancel anyway). Log-domain
// factors are combined in one exponent (a NaN exponent, e.g. +inf + -inf, is a zero term);
// LogSumExp runs an online max with rescaled sums per tile, merged into (max, double sum) totals.
// Grad uses dk/ds = k dlog k/ds written in closed form (finite inside a compact support, 0
// outside, 0 at r = 0 for the profiles with a kink) or, with log factors, log|dk/ds| in the
// exponent. qw multiplies the Sum total at the end; qlw is added at the end for LogSumExp.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernel_sum_cuda.h"

namespace kernelfuse::kde {
namespace {

template <typename T> using acc_t = typename AccType<T>::type;

constexpr int kBlock = 128;       // threads per block = queries per block
constexpr int kCols = 8;          // weight columns per block for Sum / LogSumExp when c > 1
constexpr int kTile = 32;         // points per tile on the register (bucketed) path
constexpr int64_t kMaxGridY = 65535;

// Generic path (d above the buckets): points per tile and dimensions per chunk.
template <typename A> __host__ __device__ constexpr int gen_tile() { return sizeof(A) == 8 ? 16 : 32; }
template <typename A> __host__ __device__ constexpr int gen_chunk() { return sizeof(A) == 8 ? 16 : 32; }
// Largest register bucket: the query row (and for Grad two gradient vectors) live in registers.
template <typename A> __host__ __device__ constexpr int max_bucket(Mode mode) {
  return (sizeof(A) == 8 ? 32 : 64) / (mode == Mode::Grad ? 2 : 1);
}

// ---------------------------------------------------------------------------------------------
// Scalar helpers (float / double overloads of the device math library).
__device__ __forceinline__ float kexp(float v) { return expf(v); }
__device__ __forceinline__ double kexp(double v) { return exp(v); }
__device__ __forceinline__ float klog(float v) { return logf(v); }
__device__ __forceinline__ double klog(double v) { return log(v); }
__device__ __forceinline__ float klog1p(float v) { return log1pf(v); }
__device__ __forceinline__ double klog1p(double v) { return log1p(v); }
__device__ __forceinline__ float ksqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double ksqrt(double v) { return sqrt(v); }
__device__ __forceinline__ float kcospi(float v) { return cospif(v); }
__device__ __forceinline__ double kcospi(double v) { return cospi(v); }
__device__ __forceinline__ float ksinpi(float v) { return sinpif(v); }
__device__ __forceinline__ double ksinpi(double v) { return sinpi(v); }
__device__ __forceinline__ float kmax(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double kmax(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float kmin(float a, float b) { return fminf(a, b); }
__device__ __forceinline__ double kmin(double a, double b) { return fmin(a, b); }
__device__ __forceinline__ float kfma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double kfma(double a, double b, double c) { return fma(a, b, c); }
template <typename A> __device__ __forceinline__ A kinf() { return static_cast<A>(INFINITY); }

// Storage <-> accumulation conversions.
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_double(double v);
template <> __device__ __forceinline__ float from_double<float>(double v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ double from_double<double>(double v) { return v; }
template <> __device__ __forceinline__ __half from_double<__half>(double v) {
  return __float2half_rn(static_cast<float>(v));
}
template <> __device__ __forceinline__ __nv_bfloat16 from_double<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}

// ---------------------------------------------------------------------------------------------
// Kernel profiles of s = r^2: k, log k, dk/ds (= k dlog k/ds) and log(-dk/ds).
constexpr double kSqrt3 = 1.7320508075688772;
constexpr double kSqrt5 = 2.23606797749979;
constexpr double kLn2 = 0.6931471805599453;
constexpr double kLn3Over2 = 0.4054651081081644;    // log(3/2)
constexpr double kLn5Over6 = -0.1823215567939546;   // log(5/6)
constexpr double kPiOver4 = 0.7853981633974483;
constexpr double kLnPiOver4 = -0.2415645490332913;  // log(pi/4)

template <Kernel K, typename A> __device__ __forceinline__ A k_val(A s) {
  if constexpr (K == Kernel::Gaussian) {
    return kexp(A(-0.5) * s);
  } else if constexpr (K == Kernel::Laplacian) {
    return kexp(-ksqrt(s));
  } else if constexpr (K == Kernel::Cauchy) {
    return A(1) / (A(1) + s);
  } else if constexpr (K == Kernel::Matern32) {
    const A u = A(kSqrt3) * ksqrt(s);
    return (A(1) + u) * kexp(-u);
  } else if constexpr (K == Kernel::Matern52) {
    const A u = A(kSqrt5) * ksqrt(s);
    return (A(1) + u + A(5.0 / 3.0) * s) * kexp(-u);
  } else if constexpr (K == Kernel::InverseMultiquadric) {
    return A(1) / ksqrt(A(1) + s);
  } else if constexpr (K == Kernel::Tophat) {
    return s < A(1) ? A(1) : A(0);
  } else if constexpr (K == Kernel::Epanechnikov) {
    return s < A(1) ? A(1) - s : A(0);
  } else if constexpr (K == Kernel::Linear) {
    return s < A(1) ? A(1) - ksqrt(s) : A(0);
  } else {  // Cosine
    return s < A(1) ? kcospi(A(0.5) * ksqrt(s)) : A(0);
  }
}

template <Kernel K, typename A> __device__ __forceinline__ A k_log(A s) {
  if constexpr (K == Kernel::Gaussian) {
    return A(-0.5) * s;
  } else if constexpr (K == Kernel::Laplacian) {
    return -ksqrt(s);
  } else if constexpr (K == Kernel::Cauchy) {
    return -klog1p(s);
  } else if constexpr (K == Kernel::Matern32) {
    const A u = A(kSqrt3) * ksqrt(s);
    return klog1p(u) - u;
  } else if constexpr (K == Kernel::Matern52) {
    const A u = A(kSqrt5) * ksqrt(s);
    return klog1p(u + A(5.0 / 3.0) * s) - u;
  } else if constexpr (K == Kernel::InverseMultiquadric) {
    return A(-0.5) * klog1p(s);
  } else if constexpr (K == Kernel::Tophat) {
    return s < A(1) ? A(0) : -kinf<A>();
  } else if constexpr (K == Kernel::Epanechnikov) {
    return s < A(1) ? klog1p(-s) : -kinf<A>();
  } else if constexpr (K == Kernel::Linear) {
    return s < A(1) ? klog1p(-ksqrt(s)) : -kinf<A>();
  } else {  // Cosine
    return s < A(1) ? klog(kcospi(A(0.5) * ksqrt(s))) : -kinf<A>();
  }
}

// dk/ds <= 0, finite everywhere (0 outside a support and at r = 0 for laplacian/linear/cosine).
template <Kernel K, typename A> __device__ __forceinline__ A k_dk(A s) {
  if constexpr (K == Kernel::Gaussian) {
    return A(-0.5) * kexp(A(-0.5) * s);
  } else if constexpr (K == Kernel::Laplacian) {
    const A r = ksqrt(s);
    return r > A(0) ? A(-0.5) * kexp(-r) / r : A(0);
  } else if constexpr (K == Kernel::Cauchy) {
    const A v = A(1) / (A(1) + s);
    return -v * v;
  } else if constexpr (K == Kernel::Matern32) {
    return A(-1.5) * kexp(-A(kSqrt3) * ksqrt(s));
  } else if constexpr (K == Kernel::Matern52) {
    const A u = A(kSqrt5) * ksqrt(s);
    return A(-5.0 / 6.0) * (A(1) + u) * kexp(-u);
  } else if constexpr (K == Kernel::InverseMultiquadric) {
    const A v = A(1) / ksqrt(A(1) + s);
    return A(-0.5) * v * v * v;
  } else if constexpr (K == Kernel::Tophat) {
    return A(0) * s;  // 0 (NaN for a NaN distance, like the other profiles)
  } else if constexpr (K == Kernel::Epanechnikov) {
    return s < A(1) ? A(-1) : A(0);
  } else if constexpr (K == Kernel::Linear) {
    const A r = ksqrt(s);
    return (s < A(1) && r > A(0)) ? A(-0.5) / r : A(0);
  } else {  // Cosine
    const A r = ksqrt(s);
    return (s < A(1) && r > A(0)) ? A(-kPiOver4) * ksinpi(A(0.5) * r) / r : A(0);
  }
}

// log(-dk/ds); -inf where dk/ds == 0.
template <Kernel K, typename A> __device__ __forceinline__ A k_ldk(A s) {
  if constexpr (K == Kernel::Gaussian) {
    return A(-0.5) * s - A(kLn2);
  } else if constexpr (K == Kernel::Laplacian) {
    const A r = ksqrt(s);
    return r > A(0) ? -r - klog(A(2) * r) : -kinf<A>();
  } else if constexpr (K == Kernel::Cauchy) {
    return A(-2) * klog1p(s);
  } else if constexpr (K == Kernel::Matern32) {
    return A(kLn3Over2) - A(kSqrt3) * ksqrt(s);
  } else if constexpr (K == Kernel::Matern52) {
    const A u = A(kSqrt5) * ksqrt(s);
    return A(kLn5Over6) + klog1p(u) - u;
  } else if constexpr (K == Kernel::InverseMultiquadric) {
    return A(-1.5) * klog1p(s) - A(kLn2);
  } else if constexpr (K == Kernel::Tophat) {
    return s == s ? -kinf<A>() : s;
  } else if constexpr (K == Kernel::Epanechnikov) {
    return s < A(1) ? A(0) : -kinf<A>();
  } else if constexpr (K == Kernel::Linear) {
    const A r = ksqrt(s);
    return (s < A(1) && r > A(0)) ? -klog(A(2) * r) : -kinf<A>();
  } else {  // Cosine
    const A r = ksqrt(s);
    return (s < A(1) && r > A(0)) ? A(kLnPiOver4) + klog(ksinpi(A(0.5) * r)) - klog(r) : -kinf<A>();
  }
}

// ---------------------------------------------------------------------------------------------
// Log-sum-exp state: sum_t exp(t - m) (and of exp(2 (t - m)) for aux) with a running max m.
// A NaN term poisons the sum; +inf terms leave m = +inf (the result is then +inf).
template <bool kAux, typename A>
__device__ __forceinline__ void lse_push(A& m, A& s, A& s2, A t) {
  const A hi = kmax(m, t), lo = kmin(m, t);
  A e = lo == -kinf<A>() ? A(0) : kexp(lo - hi);  // exp(-|t - m|); 0 when either is -inf
  e = t == t ? e : t;
  const bool up = t > m;
  s = up ? kfma(s, e, A(1)) : s + e;
  if constexpr (kAux) s2 = up ? kfma(s2, e * e, A(1)) : kfma(e, e, s2);
  m = hi;
}

// Fold a tile's partial state (pm, ps, ps2) into the running totals (M, S, S2).
template <bool kAux, typename A>
__device__ __forceinline__ void lse_merge(A& M, double& S, double& S2, A pm, A ps, A ps2) {
  if (pm > M) {
    const double f = kexp(M - pm);  // 0 when M = -inf
    S = S * f + ps;
    if constexpr (kAux) S2 = S2 * (f * f) + ps2;
    M = pm;
  } else {
    const double f = pm == -kinf<A>() ? 0.0 : double(kexp(pm - M));
    S += double(ps) * f;  // NaN partial sums propagate (NaN * 0)
    if constexpr (kAux) S2 += double(ps2) * (f * f);
  }
}

// log of the totals; `scale` is 1 (the sum) or 2 (aux), `shift` a log factor added at the end.
template <typename A> __device__ __forceinline__ double lse_result(A M, double S, double scale,
                                                                  double shift) {
  if (M == kinf<A>()) return double(INFINITY);
  if (S != S) return S;
  if (M == -kinf<A>()) return -double(INFINITY);
  return shift + scale * double(M) + log(S);
}

// ---------------------------------------------------------------------------------------------
template <typename T> struct Args {
  using A = acc_t<T>;
  const T* x;
  const T* y;
  const A* h;
  const T* pw;
  const T* plw;
  const T* qw;
  const T* qlw;
  T* out;
  T* aux;
  int64_t batch, m, n, d, c;
  int64_t x_bs, y_bs, h_stride, pw_bs, plw_bs, qw_bs, qlw_bs;
  int64_t nqb;  // query blocks: blockIdx.x = query block + nqb * split
  bool exclude_self, has_log;
};

// Per-thread running state of a mode.
template <Mode M, typename A, int CW, int GD> struct State;
template <typename A, int CW, int GD> struct State<Mode::Sum, A, CW, GD> {
  A part[CW];    // this tile
  double tot[CW];
  __device__ __forceinline__ void init() {
#pragma unroll
    for (int cw = 0; cw < CW; ++cw) part[cw] = A(0), tot[cw] = 0.0;
  }
  template <bool kAux> __device__ __forceinline__ void flush() {
#pragma unroll
    for (int cw = 0; cw < CW; ++cw) tot[cw] += double(part[cw]), part[cw] = A(0);
  }
};
template <typename A, int CW, int GD> struct State<Mode::LogSumExp, A, CW, GD> {
  A pm[CW], ps[CW], ps2[CW];  // this tile: max, sum exp(t - pm), sum exp(2 (t - pm))
  A mx[CW];
  double S[CW], S2[CW];
  __device__ __forceinline__ void init() {
#pragma unroll
    for (int cw = 0; cw < CW; ++cw) {
      pm[cw] = mx[cw] = -kinf<A>();
      ps[cw] = ps2[cw] = A(0);
      S[cw] = S2[cw] = 0.0;
    }
  }
  template <bool kAux> __device__ __forceinline__ void flush() {
#pragma unroll
    for (int cw = 0; cw < CW; ++cw) {
      lse_merge<kAux>(mx[cw], S[cw], S2[cw], pm[cw], ps[cw], ps2[cw]);
      pm[cw] = -kinf<A>();
      ps[cw] = ps2[cw] = A(0);
    }
  }
};
template <typename A, int CW, int GD> struct State<Mode::Grad, A, CW, GD> {
  A gp[GD], gt[GD];  // sum_i coef_i (x_q - y_i) over this tile / over all tiles (raw units)
  __device__ __forceinline__ void init() {
#pragma unroll
    for (int k = 0; k < GD; ++k) gp[k] = gt[k] = A(0);
  }
  template <bool kAux> __device__ __forceinline__ void flush() {
#pragma unroll
    for (int k = 0; k < GD; ++k) gt[k] += gp[k], gp[k] = A(0);
  }
};

// Grad coefficient sum_c qw pw exp(qlw + plw) dk/ds for c > 1 (rare): weights read from global.
template <Kernel K, typename T>
__device__ acc_t<T> grad_coef_cols(const Args<T>& a, int64_t b, int64_t q, int64_t i, acc_t<T> s) {
  using A = acc_t<T>;
  const int64_t c = a.c;
  const T* qw = a.qw ? a.qw + b * a.qw_bs + q * c : nullptr;
  const T* qlw = a.qlw ? a.qlw + b * a.qlw_bs + q * c : nullptr;
  const T* pw = a.pw ? a.pw + b * a.pw_bs + i * c : nullptr;
  const T* plw = a.plw ? a.plw + b * a.plw_bs + i * c : nullptr;
  A acc = A(0);
  if (a.has_log) {
    const A l = k_ldk<K>(s);
    for (int64_t col = 0; col < c; ++col) {
      const A e = (qlw ? to_acc(qlw[col]) : A(0)) + (plw ? to_acc(plw[col]) : A(0)) + l;
      const A w = (qw ? to_acc(qw[col]) : A(1)) * (pw ? to_acc(pw[col]) : A(1));
      acc -= e == e ? w * kexp(e) : A(0);
    }
    return acc;
  }
  for (int64_t col = 0; col < c; ++col)
    acc += (qw ? to_acc(qw[col]) : A(1)) * (pw ? to_acc(pw[col]) : A(1));
  return acc * k_dk<K>(s);
}

// ---------------------------------------------------------------------------------------------
// The kernel. DB > 0: register path for d <= DB; DB == 0: generic path (any d >= 1).
// CW: weight columns per block (Sum / LogSumExp); 1 for Grad.
template <typename T, Mode M, Kernel K, int DB, int CW>
__global__ void __launch_bounds__(kBlock) kernel_sum_kernel(const Args<T> a) {
  using A = acc_t<T>;
  constexpr bool kGen = DB == 0;
  constexpr bool kGrad = M == Mode::Grad;
  constexpr int TN = kGen ? gen_tile<A>() : kTile;   // points per tile
  constexpr int DC = kGen ? gen_chunk<A>() : DB;     // dimensions per staged point row
  constexpr int GD = kGrad ? DC : 1;                 // gradient dimensions per thread
  constexpr int QD = kGen ? (kGrad ? DC : 0) : DB;   // query dimensions held in registers
  constexpr int NW = kGrad ? 1 : CW;                 // weight columns staged per tile
  static_assert(!kGrad || CW == 1, "Grad reduces the columns per pair");

  __shared__ __align__(16) A sy[TN * DC];        // point coordinates (chunk), zero padded
  __shared__ __align__(16) A sih[DC];            // 1 / h for those dimensions, zero padded
  __shared__ A sw[NW * TN];                      // point weights [col][point] (1 when absent)
  __shared__ A slw[NW * TN];                     // point log-weights (0 when absent)
  __shared__ A sx[kGen ? DC * (kBlock + 1) : 1];  // generic: query chunk [dim][query], padded
  __shared__ A ss[kGen ? TN * kBlock : 1];        // generic: partial s [point][query]
  __shared__ __align__(16) A syg[kGen && kGrad ? TN * DC : 1];  // generic Grad: output dims

  const int tid = static_cast<int>(threadIdx.x);
  const int64_t d = a.d, c = a.c, n = a.n;
  const int64_t qb = static_cast<int64_t>(blockIdx.x) % a.nqb;
  const int64_t split = static_cast<int64_t>(blockIdx.x) / a.nqb;
  const int64_t q0 = qb * kBlock;
  const int64_t q = q0 + tid;
  const bool qok = q < a.m;
  const int64_t qr = qok ? q : a.m - 1;           // clamped row for loads (m >= 1)
  const int64_t qskip = a.exclude_self ? q : -1;  // the point index this query skips
  const int64_t c0 = kGrad ? 0 : split * CW;      // first weight column of this block
  const int64_t g0 = kGrad ? split * DC : 0;      // first gradient dimension of this block
  const bool want_aux = M == Mode::LogSumExp && a.aux != nullptr;

  if constexpr (!kGen) {  // the bandwidths never change: stage them once
    for (int k = tid; k < DB; k += kBlock) sih[k] = k < d ? A(1) / a.h[k * a.h_stride] : A(0);
    __syncthreads();
  }

  for (int64_t b = blockIdx.y; b < a.batch; b += gridDim.y) {
    const T* xb = a.x + b * a.x_bs;
    const T* yb = a.y + b * a.y_bs;
    const T* pwb = a.pw ? a.pw + b * a.pw_bs : nullptr;
    const T* plwb = a.plw ? a.plw + b * a.plw_bs : nullptr;

    // This thread's query coordinates (register path: the row; generic Grad: its output dims).
    A xq[QD > 0 ? QD : 1];
    if constexpr (QD > 0) {
#pragma unroll
      for (int k = 0; k < QD; ++k) xq[k] = g0 + k < d ? to_acc(xb[qr * d + g0 + k]) : A(0);
    }
    // Query-side factors of this block's columns.
    A qlw_r[NW], qw_r[NW];
#pragma unroll
    for (int cw = 0; cw < NW; ++cw) {
      const bool ok = c0 + cw < c;
      const int64_t off = qr * c + c0 + cw;
      qlw_r[cw] = (a.qlw && ok) ? to_acc(a.qlw[b * a.qlw_bs + off]) : A(0);
      qw_r[cw] = (a.qw && ok && M != Mode::LogSumExp) ? to_acc(a.qw[b * a.qw_bs + off]) : A(1);
    }

    State<M, A, CW, GD> st;
    st.init();

    for (int64_t i0 = 0; i0 < n; i0 += TN) {
      const int nt = static_cast<int>(n - i0 < TN ? n - i0 : TN);

      // ---- stage the tile (and, on the generic path, accumulate the distances chunk by chunk)
      if constexpr (!kGen) {
        __syncthreads();  // every thread is done with the previous tile
        for (int e = tid; e < TN * DB; e += kBlock) {
          const int j = e / DB, k = e % DB;
          sy[e] = (j < nt && k < d) ? to_acc(yb[(i0 + j) * d + k]) : A(0);
        }
      }
      auto stage_weights = [&]() {
        for (int e = tid; e < NW * TN; e += kBlock) {
          const int cw = e / TN, j = e % TN;
          const bool ok = j < nt && c0 + cw < c;
          const int64_t off = (i0 + j) * c + c0 + cw;
          if constexpr (M != Mode::LogSumExp) sw[e] = (pwb && ok) ? to_acc(pwb[off]) : A(1);
          slw[e] = (plwb && ok) ? to_acc(plwb[off]) : A(0);
        }
      };
      if constexpr (!kGen) {
        stage_weights();
        __syncthreads();
      } else {
        for (int64_t k0 = 0; k0 < d; k0 += DC) {
          __syncthreads();  // every thread is done with the previous chunk / tile
          for (int e = tid; e < TN * DC; e += kBlock) {
            const int j = e / DC, kk = e % DC;
            const A v = (j < nt && k0 + kk < d) ? to_acc(yb[(i0 + j) * d + k0 + kk]) : A(0);
            sy[e] = v;
            if constexpr (kGrad) {
              if (k0 == g0) syg[e] = v;
            }
          }
          for (int e = tid; e < DC * kBlock; e += kBlock) {
            const int t = e / DC, kk = e % DC;
            const int64_t qq = q0 + t < a.m ? q0 + t : a.m - 1;
            sx[kk * (kBlock + 1) + t] = k0 + kk < d ? to_acc(xb[qq * d + k0 + kk]) : A(0);
          }
          if (tid < DC) sih[tid] = k0 + tid < d ? A(1) / a.h[(k0 + tid) * a.h_stride] : A(0);
          if (k0 == 0) stage_weights();
          __syncthreads();
          A xr[DC];
#pragma unroll
          for (int kk = 0; kk < DC; ++kk) xr[kk] = sx[kk * (kBlock + 1) + tid];
          for (int j = 0; j < nt; ++j) {
            A s = k0 == 0 ? A(0) : ss[j * kBlock + tid];
            const A* yj = sy + j * DC;
#pragma unroll
            for (int kk = 0; kk < DC; ++kk) {
              const A t = (xr[kk] - yj[kk]) * sih[kk];
              s = kfma(t, t, s);
            }
            ss[j * kBlock + tid] = s;
          }
        }
      }

      // ---- consume the tile: one (query, point) pair per iteration
#pragma unroll 2
      for (int j = 0; j < nt; ++j) {
        A s;
        if constexpr (kGen) {
          s = ss[j * kBlock + tid];
        } else {
          s = A(0);
          const A* yj = sy + j * DB;
#pragma unroll
          for (int k = 0; k < DB; ++k) {
            const A t = (xq[k] - yj[k]) * sih[k];
            s = kfma(t, t, s);
          }
        }
        const bool keep = i0 + j != qskip;

        if constexpr (M == Mode::Sum) {
          if (a.has_log) {
            const A lk = k_log<K>(s);
#pragma unroll
            for (int cw = 0; cw < CW; ++cw) {
              const A e = qlw_r[cw] + slw[cw * TN + j] + lk;
              const A term = e == e ? sw[cw * TN + j] * kexp(e) : A(0);
              st.part[cw] += keep ? term : A(0);
            }
          } else {
            const A kv = k_val<K>(s);
#pragma unroll
            for (int cw = 0; cw < CW; ++cw) st.part[cw] += keep ? sw[cw * TN + j] * kv : A(0);
          }
        } else if constexpr (M == Mode::LogSumExp) {
          const A lk = k_log<K>(s);
          if (want_aux) {
#pragma unroll
            for (int cw = 0; cw < CW; ++cw)
              lse_push<true>(st.pm[cw], st.ps[cw], st.ps2[cw],
                             keep ? slw[cw * TN + j] + lk : -kinf<A>());
          } else {
#pragma unroll
            for (int cw = 0; cw < CW; ++cw)
              lse_push<false>(st.pm[cw], st.ps[cw], st.ps2[cw],
                              keep ? slw[cw * TN + j] + lk : -kinf<A>());
          }
        } else {  // Grad
          A coef;
          if (c == 1) {
            if (a.has_log) {
              const A e = qlw_r[0] + slw[j] + k_ldk<K>(s);
              coef = e == e ? -sw[j] * kexp(e) : A(0);
            } else {
              coef = sw[j] * k_dk<K>(s);
            }
          } else {
            coef = grad_coef_cols<K>(a, b, qr, i0 + j, s);
          }
          coef = keep ? coef : A(0);
          const A* yj = (kGen ? syg : sy) + j * DC;
#pragma unroll
          for (int k = 0; k < GD; ++k) st.gp[k] = kfma(coef, xq[k] - yj[k], st.gp[k]);
        }
      }
      if (want_aux)
        st.template flush<true>();
      else
        st.template flush<false>();
    }

    // ---- write this thread's outputs
    if (qok) {
      if constexpr (M == Mode::Sum) {
        T* o = a.out + (b * a.m + q) * c + c0;
#pragma unroll
        for (int cw = 0; cw < CW; ++cw)
          if (c0 + cw < c) o[cw] = from_double<T>(double(qw_r[cw]) * st.tot[cw]);
      } else if constexpr (M == Mode::LogSumExp) {
        T* o = a.out + (b * a.m + q) * c + c0;
        T* x2 = want_aux ? a.aux + (b * a.m + q) * c + c0 : nullptr;
#pragma unroll
        for (int cw = 0; cw < CW; ++cw) {
          if (c0 + cw < c) {
            o[cw] = from_double<T>(lse_result(st.mx[cw], st.S[cw], 1.0, double(qlw_r[cw])));
            if (x2) x2[cw] = from_double<T>(lse_result(st.mx[cw], st.S2[cw], 2.0, 0.0));
          }
        }
      } else {
        const A scale = A(2) * (c == 1 ? qw_r[0] : A(1));
        T* o = a.out + (b * a.m + q) * d;
#pragma unroll
        for (int k = 0; k < GD; ++k) {
          if (g0 + k < d) {
            const A ih = kGen ? A(1) / a.h[(g0 + k) * a.h_stride] : sih[k];
            o[g0 + k] = from_double<T>(double(scale * (st.gt[k] * ih) * ih));
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: checks, launch geometry, template dispatch.
[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("kernelfuse::kde::launch_kernel_sum: " + what);
}

template <typename T, Mode M, Kernel K, int DB, int CW>
void launch(const Args<T>& a, dim3 grid, cudaStream_t stream) {
  kernel_sum_kernel<T, M, K, DB, CW><<<grid, kBlock, 0, stream>>>(a);
}

template <typename T, Mode M, Kernel K, int CW>
void launch_bucket(const Args<T>& a, dim3 grid, cudaStream_t stream, int db) {
  constexpr int kMax = max_bucket<acc_t<T>>(M);
  switch (db) {
    case 4: return launch<T, M, K, 4, CW>(a, grid, stream);
    case 8: return launch<T, M, K, 8, CW>(a, grid, stream);
    case 16: return launch<T, M, K, 16, CW>(a, grid, stream);
    case 32:
      if constexpr (kMax >= 32) return launch<T, M, K, 32, CW>(a, grid, stream);
      break;
    case 64:
      if constexpr (kMax >= 64) return launch<T, M, K, 64, CW>(a, grid, stream);
      break;
    default:
      break;
  }
  return launch<T, M, K, 0, CW>(a, grid, stream);
}

template <typename T, Mode M, Kernel K>
void launch_cols(const Args<T>& a, dim3 grid, cudaStream_t stream, int db, int cw) {
  if constexpr (M == Mode::Grad) {
    (void)cw;
    launch_bucket<T, M, K, 1>(a, grid, stream, db);
  } else if (cw == 1) {
    launch_bucket<T, M, K, 1>(a, grid, stream, db);
  } else {
    launch_bucket<T, M, K, kCols>(a, grid, stream, db);
  }
}

template <typename T, Mode M>
void launch_kernel(const Args<T>& a, Kernel kernel, dim3 grid, cudaStream_t stream, int db,
                   int cw) {
  switch (kernel) {
    case Kernel::Gaussian: return launch_cols<T, M, Kernel::Gaussian>(a, grid, stream, db, cw);
    case Kernel::Laplacian: return launch_cols<T, M, Kernel::Laplacian>(a, grid, stream, db, cw);
    case Kernel::Cauchy: return launch_cols<T, M, Kernel::Cauchy>(a, grid, stream, db, cw);
    case Kernel::Matern32: return launch_cols<T, M, Kernel::Matern32>(a, grid, stream, db, cw);
    case Kernel::Matern52: return launch_cols<T, M, Kernel::Matern52>(a, grid, stream, db, cw);
    case Kernel::InverseMultiquadric:
      return launch_cols<T, M, Kernel::InverseMultiquadric>(a, grid, stream, db, cw);
    case Kernel::Tophat: return launch_cols<T, M, Kernel::Tophat>(a, grid, stream, db, cw);
    case Kernel::Epanechnikov:
      return launch_cols<T, M, Kernel::Epanechnikov>(a, grid, stream, db, cw);
    case Kernel::Linear: return launch_cols<T, M, Kernel::Linear>(a, grid, stream, db, cw);
    case Kernel::Cosine: return launch_cols<T, M, Kernel::Cosine>(a, grid, stream, db, cw);
  }
  fail("unknown kernel " + std::to_string(static_cast<int>(kernel)));
}

}  // namespace

template <typename T>
void launch_kernel_sum(const KernelSumParams<T>& p, void* stream) {
  using A = acc_t<T>;
  const Mode mode = p.mode;
  if (mode != Mode::Sum && mode != Mode::LogSumExp && mode != Mode::Grad)
    fail("unknown mode " + std::to_string(static_cast<int>(mode)));
  if (static_cast<int>(p.kernel) < 0 || static_cast<int>(p.kernel) >= kNumKernels)
    fail("unknown kernel " + std::to_string(static_cast<int>(p.kernel)));
  if (p.batch < 0 || p.m < 0 || p.n < 0 || p.d < 0 || p.c < 0)
    fail("negative size (batch, m, n, d, c)");
  if (p.h_stride != 0 && p.h_stride != 1) fail("h_stride must be 0 or 1");
  if (p.exclude_self && p.m != p.n) fail("exclude_self requires m == n");
  const int64_t out_cols = mode == Mode::Grad ? p.d : p.c;
  if (p.batch == 0 || p.m == 0 || out_cols == 0) return;  // nothing to write
  if (p.x == nullptr && p.d > 0) fail("x is null");
  if (p.y == nullptr && p.n > 0 && p.d > 0) fail("y is null");
  if (p.h == nullptr && p.d > 0) fail("h is null");
  if (p.out == nullptr) fail("out is null");

  Args<T> a{};
  a.x = p.x;
  a.y = p.y;
  a.h = p.h;
  a.pw = mode == Mode::LogSumExp ? nullptr : p.pw;
  a.plw = p.plw;
  a.qw = mode == Mode::LogSumExp ? nullptr : p.qw;
  a.qlw = p.qlw;
  a.out = p.out;
  a.aux = mode == Mode::LogSumExp ? p.aux : nullptr;
  a.batch = p.batch;
  a.m = p.m;
  a.n = p.n;
  a.d = p.d;
  a.c = p.c;
  a.x_bs = p.x_bstride;
  a.y_bs = p.y_bstride;
  a.h_stride = p.h_stride;
  a.pw_bs = p.pw_bstride;
  a.plw_bs = p.plw_bstride;
  a.qw_bs = p.qw_bstride;
  a.qlw_bs = p.qlw_bstride;
  a.exclude_self = p.exclude_self;
  a.has_log = p.plw != nullptr || p.qlw != nullptr;

  // Dimension bucket (0: generic path) and column chunk.
  const int max_db = max_bucket<A>(mode);
  int db = 0;
  for (int cand = 4; cand <= max_db; cand *= 2) {
    if (p.d <= cand) {
      db = cand;
      break;
    }
  }
  const int cw = (mode == Mode::Grad || p.c == 1) ? 1 : kCols;
  int64_t splits = 1;
  if (mode == Mode::Grad) {
    if (db == 0) splits = (p.d + gen_chunk<A>() - 1) / gen_chunk<A>();
  } else {
    splits = (p.c + cw - 1) / cw;
  }
  a.nqb = (p.m + kBlock - 1) / kBlock;
  if (a.nqb > INT32_MAX / splits) fail("too many query rows x splits for one launch");
  const dim3 grid(static_cast<unsigned>(a.nqb * splits),
                  static_cast<unsigned>(p.batch < kMaxGridY ? p.batch : kMaxGridY), 1);
  auto st = static_cast<cudaStream_t>(stream);

  switch (mode) {
    case Mode::Sum: launch_kernel<T, Mode::Sum>(a, p.kernel, grid, st, db, cw); break;
    case Mode::LogSumExp: launch_kernel<T, Mode::LogSumExp>(a, p.kernel, grid, st, db, cw); break;
    case Mode::Grad: launch_kernel<T, Mode::Grad>(a, p.kernel, grid, st, db, cw); break;
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    fail(std::string("CUDA kernel launch failed: ") + cudaGetErrorName(err) + ": " +
         cudaGetErrorString(err));
}

template void launch_kernel_sum<float>(const KernelSumParams<float>&, void*);
template void launch_kernel_sum<double>(const KernelSumParams<double>&, void*);
template void launch_kernel_sum<__half>(const KernelSumParams<__half>&, void*);
template void launch_kernel_sum<__nv_bfloat16>(const KernelSumParams<__nv_bfloat16>&, void*);

}  // namespace kernelfuse::kde
