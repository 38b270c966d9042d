// Device helpers of the CUDA kernel sums (kernel_sum_cuda.cu): launch constants, scalar math,
// storage loads / stores, the log-sum-exp and accumulator states, the kernel arguments and the
// metric helpers. Torch-free; included by kernel_sum_cuda.cu only (also under the simulator).
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernel_sum_cuda.h"
#include "profiles.h"

namespace kernelfuse::kde::cuda {

constexpr int kBlock = 128;   // threads per block = rows per block
constexpr int kCols = 8;      // weight columns per block when c > 1
constexpr int kRegTile = 64;  // items per tile on the register paths
constexpr int kStep = 8;      // early-exit granularity of the largest register bucket
constexpr int64_t kMaxGridY = 65535;

// Generic path (d above the register buckets): items per tile and dimensions per chunk.
template <typename A>
__host__ __device__ constexpr int gen_tile() {
  return sizeof(A) == 8 ? 16 : 32;
}
template <typename A>
__host__ __device__ constexpr int gen_chunk() {
  return sizeof(A) == 8 ? 16 : 32;
}
// Largest register bucket: the row (and in Backward two gradient vectors) live in registers.
template <typename A>
__host__ __device__ constexpr int reg_max(Mode mode) {
  return (sizeof(A) == 8 ? 32 : 64) / (mode == Mode::Backward ? 2 : 1);
}

// Storage type of the pointers (runtime: one kernel serves float, half and bfloat16).
enum class Dt : int32_t { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

// ---------------------------------------------------------------------------------------------
// Scalar helpers (float / double overloads of the device math library).
__device__ __forceinline__ float kexp(float v) { return expf(v); }
__device__ __forceinline__ double kexp(double v) { return exp(v); }
__device__ __forceinline__ float ksqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double ksqrt(double v) { return sqrt(v); }
__device__ __forceinline__ float kmax(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double kmax(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float kmin(float a, float b) { return fminf(a, b); }
__device__ __forceinline__ double kmin(double a, double b) { return fmin(a, b); }
__device__ __forceinline__ float kfma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double kfma(double a, double b, double c) { return fma(a, b, c); }
template <typename A>
__device__ __forceinline__ A kinf() {
  return static_cast<A>(INFINITY);
}
__device__ __forceinline__ float kabs(float v) { return fabsf(v); }
__device__ __forceinline__ double kabs(double v) { return fabs(v); }
__device__ __forceinline__ float kpow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double kpow(double a, double b) { return pow(a, b); }
__device__ __forceinline__ float ksin(float v) { return sinf(v); }
__device__ __forceinline__ double ksin(double v) { return sin(v); }
__device__ __forceinline__ float kcos(float v) { return cosf(v); }
__device__ __forceinline__ double kcos(double v) { return cos(v); }
__device__ __forceinline__ float kasin(float v) { return asinf(v); }
__device__ __forceinline__ double kasin(double v) { return asin(v); }
__device__ __forceinline__ bool ksignbit(float v) { return copysignf(1.0f, v) < 0.0f; }
__device__ __forceinline__ bool ksignbit(double v) { return copysign(1.0, v) < 0.0; }
template <typename A>
__device__ __forceinline__ A ksign(A v) {
  return v > A(0) ? A(1) : (v < A(0) ? A(-1) : A(0));
}
// max that propagates NaN (a NaN coordinate difference makes the distance NaN)
template <typename A>
__device__ __forceinline__ A kmaxn(A m, A v) {
  return (v > m || v != v) ? v : m;
}

// Element i of a storage array, converted to A.
template <typename A>
__device__ __forceinline__ A ld(const void* p, int64_t i, Dt dt) {
  if constexpr (sizeof(A) == 8) {
    (void)dt;
    return static_cast<const double*>(p)[i];
  } else {
    if (dt == Dt::F32) return static_cast<const float*>(p)[i];
    if (dt == Dt::F16) return __half2float(static_cast<const __half*>(p)[i]);
    return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  }
}
// xq[k] = p[base + k] for k < nv, else 0 (the dtype branch outside the unrolled loop).
template <int QD, typename A>
__device__ __forceinline__ void ld_row(A (&xq)[QD], const void* p, int64_t base, int64_t nv, Dt dt) {
  if constexpr (sizeof(A) == 8) {
    const double* q = static_cast<const double*>(p) + base;
#pragma unroll
    for (int k = 0; k < QD; ++k) xq[k] = k < nv ? q[k] : 0.0;
  } else if (dt == Dt::F32) {
    const float* q = static_cast<const float*>(p) + base;
#pragma unroll
    for (int k = 0; k < QD; ++k) xq[k] = k < nv ? q[k] : 0.0f;
  } else if (dt == Dt::F16) {
    const __half* q = static_cast<const __half*>(p) + base;
#pragma unroll
    for (int k = 0; k < QD; ++k) xq[k] = k < nv ? __half2float(q[k]) : 0.0f;
  } else {
    const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p) + base;
#pragma unroll
    for (int k = 0; k < QD; ++k) xq[k] = k < nv ? __bfloat162float(q[k]) : 0.0f;
  }
}
// Store v (rounded once to float first for the half types) as element i of a storage array.
template <typename A>
__device__ __forceinline__ void st(void* p, int64_t i, double v, Dt dt) {
  if constexpr (sizeof(A) == 8) {
    (void)dt;
    static_cast<double*>(p)[i] = v;
  } else {
    const float f = static_cast<float>(v);
    if (dt == Dt::F32)
      static_cast<float*>(p)[i] = f;
    else if (dt == Dt::F16)
      static_cast<__half*>(p)[i] = __float2half_rn(f);
    else
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(f);
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel profiles (profiles.h): k, log k, dk/ds and log(-dk/ds) of the runtime kernel (the switch
// is uniform across the grid).
enum class Q { Val, Log, Dk, LogDk };
template <Q W, typename A>
__device__ __forceinline__ A prof(Kernel k, A s) {
  return visit_kernel(k, [s](auto kc) {
    using P = Profile<decltype(kc)::value>;
    if constexpr (W == Q::Val)
      return P::k(s);
    else if constexpr (W == Q::Log)
      return P::logk(s);
    else if constexpr (W == Q::Dk)
      return P::dk(s);
    else
      return P::log_ndk(s);
  });
}

// ---------------------------------------------------------------------------------------------
// Log-sum-exp state: s = sum_t exp(t - m) (s2: of exp(2 (t - m)), for aux) with running max m.
// A NaN term poisons the sum; +inf terms make m = +inf (the result is then +inf).
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
template <typename A>
__device__ __forceinline__ void lse_merge(A& M, double& S, double& S2, A pm, A ps, A ps2) {
  if (pm > M) {
    const double f = kexp(M - pm);  // 0 when M = -inf
    S = S * f + double(ps);
    S2 = S2 * (f * f) + double(ps2);
    M = pm;
  } else {
    const double f = pm == -kinf<A>() ? 0.0 : double(kexp(pm - M));
    S += double(ps) * f;  // a NaN partial sum propagates (NaN * 0)
    S2 += double(ps2) * (f * f);
  }
}

// scale * M + log S + shift, with the special cases of the totals.
template <typename A>
__device__ __forceinline__ double lse_result(A M, double S, double scale, double shift) {
  if (M == kinf<A>()) return double(INFINITY);
  if (S != S) return S;
  if (M == -kinf<A>()) return -double(INFINITY);
  return shift + scale * double(M) + log(S);
}

// Per-thread column accumulators of CW columns.
template <typename A, int CW>
struct SumCols {
  A part[CW];  // this tile
  double tot[CW];
  __device__ __forceinline__ void init() {
#pragma unroll
    for (int cw = 0; cw < CW; ++cw) part[cw] = A(0), tot[cw] = 0.0;
  }
  __device__ __forceinline__ void flush() {
#pragma unroll
    for (int cw = 0; cw < CW; ++cw) tot[cw] += double(part[cw]), part[cw] = A(0);
  }
};
template <typename A, int CW>
struct LseCols {
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
  __device__ __forceinline__ void flush() {
#pragma unroll
    for (int cw = 0; cw < CW; ++cw) {
      lse_merge(mx[cw], S[cw], S2[cw], pm[cw], ps[cw], ps2[cw]);
      pm[cw] = -kinf<A>();
      ps[cw] = ps2[cw] = A(0);
    }
  }
};
// Gradient accumulators: sum coef (x_row - y_item) in raw coordinate units. gp collects a tile;
// the flush adds it to gt with TwoSum and leaves the exact rounding error of that addition in
// gp, where the next tile continues (Kahan compensation at tile granularity, no extra registers).
template <typename A, int GD>
struct GradVec {
  A gp[GD], gt[GD];
  __device__ __forceinline__ void init() {
#pragma unroll
    for (int k = 0; k < GD; ++k) gp[k] = gt[k] = A(0);
  }
  __device__ __forceinline__ void flush() {
#pragma unroll
    for (int k = 0; k < GD; ++k) {
      const A t = gt[k] + gp[k];
      const A bp = t - gt[k];
      gp[k] = (gt[k] - (t - bp)) + (gp[k] - bp);
      gt[k] = t;
    }
  }
  // The final value of dimension k (the carried error included).
  __device__ __forceinline__ A total(int k) const { return gt[k] + gp[k]; }
};

// ---------------------------------------------------------------------------------------------
// One operand side: its rows (coordinates) and per-row factors, (batch, rows, d | c) contiguous.
struct Side {
  const void* rows;
  const void* w;   // multiplicative factors (qw / pw), may be null
  const void* lw;  // log factors (qlw / plw), may be null
  int64_t rows_bs, w_bs, lw_bs, nrows;
};

template <typename A>
struct Args {
  Side side[2];  // 0: queries (x, qw, qlw); 1: points (y, pw, plw)
  const A* h;
  int64_t h_stride;
  void* out;    // role 0 output: (batch, m, c), or (batch, m, d) in Backward
  void* aux;    // LogSumExp
  void* out_y;  // Backward role 1: (batch, n, d)
  void* out_w;  // Backward role 1: (batch, n, c)
  int64_t batch, d, c;
  int64_t nblk0;       // role-0 blocks (the role-1 blocks follow in grid.x)
  int64_t nblk1;       // role-1 blocks (host side: the grid size)
  int64_t nrb0, nrb1;  // row blocks of role 0 / role 1
  int64_t nsg;         // gradient-dimension splits (Backward)
  int64_t nsc;         // weight-column splits (Sum / LogSumExp / out_w)
  A* out_h;            // Backward role 0: (batch, m) sum_i coef s (bandwidth gradient), or null
  Kernel kernel;
  Metric met;
  A pp, inv_p;  // Minkowski order and 1 / p
  Dt dt;
  bool exclude_self, has_log;
  bool exact;     // scalar bandwidth and a compact kernel: the support on unscaled distances
  bool unscaled;  // the distances in unscaled coordinates (exact, haversine)
};

// r from a distance D (s from a squared distance for euclidean): with the exact support test,
// D < thr decides and r keeps to its side of 1; else r = D * f. NaN stays NaN.
template <typename A>
__device__ __forceinline__ A to_r(A D, bool exact, A thr, A f) {
  const A v = D * f;
  if (!exact) return v;
  constexpr A below1 = A(1) - (sizeof(A) == 8 ? A(1.1102230246251565e-16) : A(5.9604645e-08));
  if (D < thr) return v < below1 ? v : below1;
  return v < A(1) ? A(1) : v;
}

// Haversine a = sin^2(dlat/2) + cos lat1 cos lat2 sin^2(dlon/2), clamped to [0, 1].
template <typename A>
__device__ __forceinline__ A hav_a(A lat1, A lon1, A lat2, A lon2) {
  const A sl = ksin(A(0.5) * (lat1 - lat2)), so = ksin(A(0.5) * (lon1 - lon2));
  A v = sl * sl + kcos(lat1) * kcos(lat2) * so * so;
  v = v < A(0) ? A(0) : v;
  return v > A(1) ? A(1) : v;
}
// Haversine position gradient of the own row (lat1, lon1) against the item (lat2, lon2), in the
// units of the euclidean accumulation (the result is scaled by 2 / h^2): D dD/da * da/d(own).
template <typename A>
__device__ __forceinline__ void hav_grad(A lat1, A lon1, A lat2, A lon2, A& g0, A& g1) {
  const A a = hav_a(lat1, lon1, lat2, lon2);
  const A D = A(2) * kasin(ksqrt(a));
  const A q = a <= A(0) ? A(2) : (a >= A(1) ? A(0) : D / ksqrt(a * (A(1) - a)));
  const A so = ksin(A(0.5) * (lon1 - lon2));
  const A c2 = kcos(lat2);
  g0 = q * (A(0.5) * ksin(lat1 - lat2) - ksin(lat1) * c2 * so * so);
  g1 = q * (A(0.5) * kcos(lat1) * c2 * ksin(lon1 - lon2));
}

// Backward coefficient sum_c wr wi exp(lwr + lwi) dk/ds over all c > kCols columns (rare path:
// the factors are read from global memory per pair). r: own row, i: item, role: the own side.
template <typename A>
__device__ A coef_all_cols(const Args<A>& a, const Side& own, const Side& oth, int64_t b, int64_t r, int64_t i, A s) {
  const int64_t c = a.c;
  const int64_t rw = b * own.w_bs + r * c, rlw = b * own.lw_bs + r * c;
  const int64_t iw = b * oth.w_bs + i * c, ilw = b * oth.lw_bs + i * c;
  A acc = A(0);
  if (a.has_log) {
    const A l = prof<Q::LogDk>(a.kernel, s);
    for (int64_t col = 0; col < c; ++col) {
      const A e =
          (own.lw ? ld<A>(own.lw, rlw + col, a.dt) : A(0)) + (oth.lw ? ld<A>(oth.lw, ilw + col, a.dt) : A(0)) + l;
      const A w = (own.w ? ld<A>(own.w, rw + col, a.dt) : A(1)) * (oth.w ? ld<A>(oth.w, iw + col, a.dt) : A(1));
      acc -= e == e ? w * kexp(e) : A(0);
    }
    return acc;
  }
  for (int64_t col = 0; col < c; ++col)
    acc += (own.w ? ld<A>(own.w, rw + col, a.dt) : A(1)) * (oth.w ? ld<A>(oth.w, iw + col, a.dt) : A(1));
  return acc * prof<Q::Dk>(a.kernel, s);
}

}  // namespace kernelfuse::kde::cuda
