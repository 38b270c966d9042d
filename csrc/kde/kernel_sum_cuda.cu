// CUDA kernels for fused kernel sums (semantics: kernel_sum.h). Torch-free: raw pointers, a
// params struct and a cudaStream_t. One launch per call, no host synchronisation.
//
// Roles. A block of kBlock = 128 threads owns 128 consecutive rows of one side (one row per
// thread) and walks every row of the other side ("items") in tiles staged cooperatively in
// shared memory (coordinates converted to the accumulation type A and zero padded, plus the
// items' weight columns). Sum and LogSumExp: the rows are the queries x, the items the points y.
// Backward is one launch with two kinds of blocks: role 0 (rows = queries) writes `out`, role 1
// (rows = points, items = queries) writes `out_y` and `out_w`. The pair factors are symmetric
// (coef_qi = sum_c qw pw exp(qlw + plw) dk/ds), so role 1 is role 0 with the sides swapped.
//
// Grid. grid.x = [role-0 blocks][role-1 blocks], each role = row blocks x splits; a split is a
// chunk of kCols weight columns (Sum / LogSumExp / out_w when c > 1) or of DC gradient dimensions
// (Backward on the generic path). grid.y strides over the batch, so batch > 65535 works.
//
// Dimension. d <= 2, d <= 4 and d <= reg_max (float: 64, Backward 32; double: 32, Backward 16)
// keep the row in registers, zero padded (the largest bucket exits its dimension loops early,
// every kStep = 8 dimensions); the tile holds whole item rows. Larger d takes the generic path:
// per tile the dimensions are walked in chunks of DC (row chunk transposed in shared memory), the
// squared distances are accumulated per (item, row) in shared memory, and Backward blocks each
// own DC output dimensions (so the distances are computed once per chunk of DC output dims).
//
// Compile time. Template parameters are only the accumulation type (float / double), the mode,
// the dimension bucket (4 per mode) and the column chunk (1 when c == 1, else kCols): 48 kernels.
// The storage type (float / half / bfloat16 for float accumulation) is a runtime switch in the
// staging loads and the stores, and the kernel profile a runtime switch per pair (uniform across
// the grid, so it never diverges; it costs a jump table per pair).
//
// Numerics. s = sum_k ((x_k - y_k) / h_k)^2 from explicit differences of the raw coordinates.
// Per-tile partial sums are formed in A and added to running totals in double (Sum, LogSumExp,
// out_w) or in A with the rounding error of each addition carried into the next tile (gradients:
// Kahan compensation at tile granularity). Log-domain factors are combined in one exponent, a NaN
// exponent (e.g. +inf + -inf) being a zero term. LogSumExp runs an online max with a rescaled sum
// per tile, merged into (max, double sum) totals; qlw is added at the end. Gradients use
// dk/ds = k dlog k/ds in closed form (finite inside a compact support, 0 outside and at r = 0 for
// the profiles with a kink) or log|dk/ds| inside the exponent when there are log factors.
//
// Metrics. A runtime switch per pair (uniform across the grid; no new instantiations): the
// register path forms dist from the row in registers (manhattan / chebyshev / minkowski on the
// scaled coordinates, haversine from (lat, lon) at d == 2) and keeps r, the distance in staged
// units and chebyshev's first maximising coordinate for the gradient; the generic path accumulates
// sum |t|, sum |t|^p or the running max per DC chunk in ss (chebyshev: the sign bit of ss says
// whether the first maximiser lies in the block's own gradient chunk g0). Position gradients:
// euclidean / haversine accumulate in raw units (x 2 / h_k^2 at the end), the others r g_k
// (x 2 / h_k). Exact support (compact kernel, scalar bandwidth): coordinates staged unscaled,
// dist < h (squared euclidean < h^2) decided on them and s kept on the same side of 1.
// out_h (Backward role 0): per-row sum coef s, the haversine bandwidth gradient's ingredient.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernel_sum_cuda.h"
#include "profiles.h"
#include "common/cuda_launch.cuh"

namespace kernelfuse::kde {
namespace {

constexpr int kBlock = 128;         // threads per block = rows per block
constexpr int kCols = 8;            // weight columns per block when c > 1
constexpr int kRegTile = 64;        // items per tile on the register paths
constexpr int kStep = 8;            // early-exit granularity of the largest register bucket
constexpr int64_t kMaxGridY = 65535;

// Generic path (d above the register buckets): items per tile and dimensions per chunk.
template <typename A> __host__ __device__ constexpr int gen_tile() { return sizeof(A) == 8 ? 16 : 32; }
template <typename A> __host__ __device__ constexpr int gen_chunk() { return sizeof(A) == 8 ? 16 : 32; }
// Largest register bucket: the row (and in Backward two gradient vectors) live in registers.
template <typename A> __host__ __device__ constexpr int reg_max(Mode mode) {
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
template <typename A> __device__ __forceinline__ A kinf() { return static_cast<A>(INFINITY); }
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
template <typename A> __device__ __forceinline__ A ksign(A v) { return v > A(0) ? A(1) : (v < A(0) ? A(-1) : A(0)); }
// max that propagates NaN (a NaN coordinate difference makes the distance NaN)
template <typename A> __device__ __forceinline__ A kmaxn(A m, A v) { return (v > m || v != v) ? v : m; }

// Element i of a storage array, converted to A.
template <typename A> __device__ __forceinline__ A ld(const void* p, int64_t i, Dt dt) {
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
template <typename A> __device__ __forceinline__ void st(void* p, int64_t i, double v, Dt dt) {
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
template <Q W, typename A> __device__ __forceinline__ A prof(Kernel k, A s) {
  return visit_kernel(k, [s](auto kc) {
    using P = Profile<decltype(kc)::value>;
    if constexpr (W == Q::Val) return P::k(s);
    else if constexpr (W == Q::Log) return P::logk(s);
    else if constexpr (W == Q::Dk) return P::dk(s);
    else return P::log_ndk(s);
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
template <typename A, int CW> struct SumCols {
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
template <typename A, int CW> struct LseCols {
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
template <typename A, int GD> struct GradVec {
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

template <typename A> struct Args {
  Side side[2];  // 0: queries (x, qw, qlw); 1: points (y, pw, plw)
  const A* h;
  int64_t h_stride;
  void* out;    // role 0 output: (batch, m, c), or (batch, m, d) in Backward
  void* aux;    // LogSumExp
  void* out_y;  // Backward role 1: (batch, n, d)
  void* out_w;  // Backward role 1: (batch, n, c)
  int64_t batch, d, c;
  int64_t nblk0;       // role-0 blocks (the role-1 blocks follow in grid.x)
  int64_t nrb0, nrb1;  // row blocks of role 0 / role 1
  int64_t nsg;         // gradient-dimension splits (Backward)
  int64_t nsc;         // weight-column splits (Sum / LogSumExp / out_w)
  A* out_h;            // Backward role 0: (batch, m) sum_i coef s (bandwidth gradient), or null
  Kernel kernel;
  Metric met;
  A pp, inv_p;         // Minkowski order and 1 / p
  Dt dt;
  bool exclude_self, has_log;
  bool exact;          // scalar bandwidth and a compact kernel: the support on unscaled distances
  bool unscaled;       // the distances in unscaled coordinates (exact, haversine)
};

// r from a distance D (s from a squared distance for euclidean): with the exact support test,
// D < thr decides and r keeps to its side of 1; else r = D * f. NaN stays NaN.
template <typename A> __device__ __forceinline__ A to_r(A D, bool exact, A thr, A f) {
  const A v = D * f;
  if (!exact) return v;
  constexpr A below1 = A(1) - (sizeof(A) == 8 ? A(1.1102230246251565e-16) : A(5.9604645e-08));
  if (D < thr) return v < below1 ? v : below1;
  return v < A(1) ? A(1) : v;
}

// Haversine a = sin^2(dlat/2) + cos lat1 cos lat2 sin^2(dlon/2), clamped to [0, 1].
template <typename A> __device__ __forceinline__ A hav_a(A lat1, A lon1, A lat2, A lon2) {
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
__device__ A coef_all_cols(const Args<A>& a, const Side& own, const Side& oth, int64_t b,
                           int64_t r, int64_t i, A s) {
  const int64_t c = a.c;
  const int64_t rw = b * own.w_bs + r * c, rlw = b * own.lw_bs + r * c;
  const int64_t iw = b * oth.w_bs + i * c, ilw = b * oth.lw_bs + i * c;
  A acc = A(0);
  if (a.has_log) {
    const A l = prof<Q::LogDk>(a.kernel, s);
    for (int64_t col = 0; col < c; ++col) {
      const A e = (own.lw ? ld<A>(own.lw, rlw + col, a.dt) : A(0)) +
                  (oth.lw ? ld<A>(oth.lw, ilw + col, a.dt) : A(0)) + l;
      const A w = (own.w ? ld<A>(own.w, rw + col, a.dt) : A(1)) *
                  (oth.w ? ld<A>(oth.w, iw + col, a.dt) : A(1));
      acc -= e == e ? w * kexp(e) : A(0);
    }
    return acc;
  }
  for (int64_t col = 0; col < c; ++col)
    acc += (own.w ? ld<A>(own.w, rw + col, a.dt) : A(1)) *
           (oth.w ? ld<A>(oth.w, iw + col, a.dt) : A(1));
  return acc * prof<Q::Dk>(a.kernel, s);
}

// ---------------------------------------------------------------------------------------------
// The kernel. DB > 0: register path for d <= DB (DB = reg_max exits its loops every kStep
// dimensions); DB == 0: generic path (any d >= 1). CW: weight columns per block (1 when c == 1,
// else kCols; columns past c are computed on padding and never written).
template <typename A, Mode M, int DB, int CW>
__global__ void __launch_bounds__(kBlock) kernel_sum_kernel(const Args<A> a) {
  constexpr bool kGen = DB == 0;
  constexpr bool kBwd = M == Mode::Backward;
  constexpr int TN = kGen ? gen_tile<A>() : kRegTile;  // items per tile
  constexpr int DC = kGen ? gen_chunk<A>() : DB;       // dimensions per staged item row
  constexpr int STEP = DC < kStep ? DC : kStep;        // dimension loops exit early per STEP
  constexpr int GD = kBwd ? DC : 1;                    // gradient dimensions per thread
  constexpr int QD = kGen ? (kBwd ? DC : 0) : DB;      // row dimensions held in registers
  constexpr bool kIhReg = !kGen && DB <= kStep;        // 1/h in registers (else shared)
  using ColState = std::conditional_t<M == Mode::LogSumExp, LseCols<A, CW>, SumCols<A, CW>>;

  KF_SHARED_ALIGNED(16, A, sy, [TN * DC]);   // item coordinates (chunk), zero padded
  KF_SHARED_ALIGNED(16, A, sih, [DC]);       // 1 / h of those dimensions, zero padded
  KF_SHARED(A, sw, [CW * TN]);                 // item factors [col][item] (1 when absent)
  KF_SHARED(A, slw, [CW * TN]);                // item log factors (0 when absent)
  KF_SHARED(A, sx, [kGen ? DC * (kBlock + 1) : 1]);  // generic: row chunk [dim][row], padded
  KF_SHARED(A, ss, [kGen ? TN * kBlock : 1]);        // generic: partial s [item][row]
  KF_SHARED_ALIGNED(16, A, syg, [kGen && kBwd ? TN * DC : 1]);  // generic Backward: output dims
  KF_SHARED(A, sihg, [kGen && kBwd ? DC : 1]);  // generic Backward: distance scale of the output dims

  const int tid = static_cast<int>(threadIdx.x);
  const int64_t d = a.d, c = a.c;
  const Dt dt = a.dt;

  // Role, row block and split of this block.
  int64_t bx = blockIdx.x;
  int role = 0;
  if constexpr (kBwd) {
    if (bx >= a.nblk0) role = 1, bx -= a.nblk0;
  }
  const int64_t nrb = role ? a.nrb1 : a.nrb0;
  const int64_t rb = bx % nrb, split = bx / nrb;
  const Side own = role ? a.side[1] : a.side[0];
  const Side oth = role ? a.side[0] : a.side[1];
  const int64_t nrows = own.nrows, nitems = oth.nrows;
  void* const gout = role ? a.out_y : a.out;
  const bool do_grad = kBwd && gout != nullptr && split < a.nsg;
  const bool do_cols = !kBwd || (role == 1 && a.out_w != nullptr && split < a.nsc);
  const int64_t c0 = do_cols ? split * CW : 0;            // first column of this block
  const int64_t g0 = (kGen && do_grad) ? split * DC : 0;  // first gradient dimension

  // Register path: dimensions to walk (d <= DB there); a single-step bucket always walks all DB
  // (zero padded), the largest bucket stops after the first STEP-multiple >= d.
  const int dl = static_cast<int>(!kGen && DB == STEP ? DB : (d < DC ? d : DC));
  const int64_t r0 = rb * kBlock;
  const int64_t r = r0 + tid;  // this thread's row
  const bool rok = r < nrows;
  const int64_t rr = rok ? r : nrows - 1;  // clamped row for loads (nrows >= 1)
  const int64_t rskip = a.exclude_self ? r : -1;

  // Distance scale of the coordinates: 1 / h, or 1 where distances are unscaled (a.unscaled).
  if constexpr (!kGen) {  // the bandwidths never change: stage them once
    for (int k = tid; k < DB; k += kBlock)
      sih[k] = k < d ? (a.unscaled ? A(1) : A(1) / a.h[k * a.h_stride]) : A(0);
    __syncthreads();
  } else if constexpr (kBwd) {
    for (int k = tid; k < DC; k += kBlock)
      sihg[k] = g0 + k < d ? (a.unscaled ? A(1) : A(1) / a.h[(g0 + k) * a.h_stride]) : A(0);
    // (the first barrier of the tile loop orders this before any use)
  }
  const Metric met = a.met;
  // Unscaled distances: inside iff D < thr (h^2 for euclidean, else h); r (s) = D * rscale.
  A thr = A(1), rscale = A(1);
  if (a.unscaled) {
    const A h0 = a.h[0];
    thr = met == Metric::Euclidean ? h0 * h0 : h0;
    rscale = A(1) / thr;
  }
  A ihr[kIhReg ? DB : 1];
  if constexpr (kIhReg) {
#pragma unroll
    for (int k = 0; k < DB; ++k) ihr[k] = sih[k];
  }

  for (int64_t b = blockIdx.y; b < a.batch; b += gridDim.y) {
    const int64_t own_off = b * own.rows_bs, oth_off = b * oth.rows_bs;
    // This thread's coordinates (register path: its row; generic Backward: its output dims).
    A xq[QD > 0 ? QD : 1];
    if constexpr (QD > 0) ld_row(xq, own.rows, own_off + rr * d + g0, d - g0, dt);
    // Own factors of this block's columns (weight 0 for the padding columns).
    A own_w[CW], own_lw[CW];
#pragma unroll
    for (int cw = 0; cw < CW; ++cw) {
      const bool ok = c0 + cw < c;
      const int64_t off = rr * c + c0 + cw;
      own_lw[cw] = (own.lw && ok) ? ld<A>(own.lw, b * own.lw_bs + off, dt) : A(0);
      own_w[cw] = ok ? (own.w ? ld<A>(own.w, b * own.w_bs + off, dt) : A(1)) : A(0);
    }

    ColState cs;
    cs.init();
    GradVec<A, GD> gv;
    gv.init();
    A hpart = A(0);  // Backward role 0 with out_h: sum coef s (tile), totals in double
    double htot = 0.0;

    for (int64_t i0 = 0; i0 < nitems; i0 += TN) {
      const int nt = static_cast<int>(nitems - i0 < TN ? nitems - i0 : TN);
      const int jskip = (rskip >= i0 && rskip < i0 + nt) ? static_cast<int>(rskip - i0) : -1;

      // ---- stage the tile (generic path: and accumulate the distances chunk by chunk)
      auto stage_factors = [&]() {
        for (int e = tid; e < CW * TN; e += kBlock) {
          const int cw = e / TN, j = e % TN;
          const bool ok = j < nt && c0 + cw < c;
          const int64_t off = (i0 + j) * c + c0 + cw;
          sw[e] = (oth.w && ok) ? ld<A>(oth.w, b * oth.w_bs + off, dt) : A(1);
          slw[e] = (oth.lw && ok) ? ld<A>(oth.lw, b * oth.lw_bs + off, dt) : A(0);
        }
      };
      if constexpr (!kGen) {
        __syncthreads();  // every thread is done with the previous tile
        const int dpad = (dl + STEP - 1) / STEP * STEP;  // dims ever read (the rest: never)
        for (int e = tid; e < TN * DB; e += kBlock) {
          const int j = e / DB, k = e % DB;
          if (k < dpad)
            sy[e] = (j < nt && k < d) ? ld<A>(oth.rows, oth_off + (i0 + j) * d + k, dt) : A(0);
        }
        stage_factors();
        __syncthreads();
      } else {
        for (int64_t k0 = 0; k0 < d; k0 += DC) {
          __syncthreads();  // every thread is done with the previous chunk / tile
          for (int e = tid; e < TN * DC; e += kBlock) {
            const int j = e / DC, kk = e % DC;
            const A v = (j < nt && k0 + kk < d)
                            ? ld<A>(oth.rows, oth_off + (i0 + j) * d + k0 + kk, dt)
                            : A(0);
            sy[e] = v;
            if constexpr (kBwd) {
              if (k0 == g0) syg[e] = v;
            }
          }
          for (int e = tid; e < DC * kBlock; e += kBlock) {
            const int t = e / DC, kk = e % DC;
            const int64_t row = r0 + t < nrows ? r0 + t : nrows - 1;
            sx[kk * (kBlock + 1) + t] =
                k0 + kk < d ? ld<A>(own.rows, own_off + row * d + k0 + kk, dt) : A(0);
          }
          if (tid < DC)
            sih[tid] = k0 + tid < d ? (a.unscaled ? A(1) : A(1) / a.h[(k0 + tid) * a.h_stride]) : A(0);
          if (k0 == 0) stage_factors();
          __syncthreads();
          A xr[DC];
#pragma unroll
          for (int kk = 0; kk < DC; ++kk) xr[kk] = sx[kk * (kBlock + 1) + tid];
          if (met == Metric::Euclidean) {
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
          } else if (met == Metric::Chebyshev) {
            // ss = running max, its sign bit set while the first maximising coordinate lies in
            // this block's gradient chunk g0 (Backward: ties go to the first coordinate).
            for (int j = 0; j < nt; ++j) {
              const A prev = k0 == 0 ? A(0) : ss[j * kBlock + tid];
              const A mprev = kabs(prev);
              bool bit = k0 != 0 && ksignbit(prev);
              const A* yj = sy + j * DC;
              A cm = A(0);
#pragma unroll
              for (int kk = 0; kk < DC; ++kk) cm = kmaxn(cm, kabs((xr[kk] - yj[kk]) * sih[kk]));
              if (k0 == g0) bit = cm > mprev || cm != cm;
              else if (cm > mprev) bit = false;
              const A mx = kmaxn(mprev, cm);
              ss[j * kBlock + tid] = bit ? -mx : mx;
            }
          } else {  // Manhattan, Minkowski: sum |t| or sum |t|^p
            const bool l1 = met == Metric::Manhattan;
            for (int j = 0; j < nt; ++j) {
              A s = k0 == 0 ? A(0) : ss[j * kBlock + tid];
              const A* yj = sy + j * DC;
#pragma unroll
              for (int kk = 0; kk < DC; ++kk) {
                const A t = kabs((xr[kk] - yj[kk]) * sih[kk]);
                s += l1 ? t : (t > A(0) ? kpow(t, a.pp) : t);
              }
              ss[j * kBlock + tid] = s;
            }
          }
        }
      }

      // ---- consume the tile: one (row, item) pair per iteration
      for (int j = 0; j < nt; ++j) {
        // s = (dist / h)^2. Other metrics than euclidean also keep rv = r, dpv = the distance in
        // the staged units and (chebyshev) kst = the first maximising coordinate (register
        // path) or whether it lies in this block's gradient chunk (generic path, kst 0 / 1).
        A s, rv = A(0), dpv = A(0);
        int kst = -1;
        if constexpr (kGen) {
          s = ss[j * kBlock + tid];
          if (met == Metric::Chebyshev) {
            kst = ksignbit(s) ? 1 : 0;
            s = kabs(s);
          } else if (met == Metric::Minkowski) {
            s = kpow(s, a.inv_p);
          }
        } else {
          s = A(0);
          const A* yj = sy + j * DB;
          if (met == Metric::Euclidean) {
#pragma unroll
            for (int k0 = 0; k0 < DB; k0 += STEP) {
              if (k0 > 0 && k0 >= dl) break;
#pragma unroll
              for (int k = k0; k < k0 + STEP; ++k) {
                const A t = (xq[k] - yj[k]) * (kIhReg ? ihr[k] : sih[k]);
                s = kfma(t, t, s);
              }
            }
          } else if (met == Metric::Haversine) {  // d == 2 (the host checks it)
            s = A(2) * kasin(ksqrt(hav_a(xq[0], xq[1 < DB ? 1 : 0], yj[0], yj[1 < DB ? 1 : 0])));
          } else {
#pragma unroll
            for (int k0 = 0; k0 < DB; k0 += STEP) {
              if (k0 > 0 && k0 >= dl) break;
#pragma unroll
              for (int k = k0; k < k0 + STEP; ++k) {
                const A t = kabs((xq[k] - yj[k]) * (kIhReg ? ihr[k] : sih[k]));
                if (met == Metric::Manhattan) {
                  s += t;
                } else if (met == Metric::Chebyshev) {
                  if (t > s || t != t) kst = k;
                  s = kmaxn(s, t);
                } else {
                  s += t > A(0) ? kpow(t, a.pp) : t;
                }
              }
            }
            if (met == Metric::Minkowski) s = kpow(s, a.inv_p);
          }
        }
        if (met == Metric::Euclidean) {
          if (a.exact) s = to_r(s, true, thr, rscale);
        } else {
          dpv = s;
          rv = to_r(s, a.exact, thr, rscale);
          s = rv * rv;
        }
        const bool keep = j != jskip;

        if constexpr (M == Mode::LogSumExp) {
          const A lk = prof<Q::Log>(a.kernel, s);
#pragma unroll
          for (int cw = 0; cw < CW; ++cw) {
            const A t = keep ? slw[cw * TN + j] + lk : -kinf<A>();
            if (a.aux)
              lse_push<true>(cs.pm[cw], cs.ps[cw], cs.ps2[cw], t);
            else
              lse_push<false>(cs.pm[cw], cs.ps[cw], cs.ps2[cw], t);
          }
        } else {
          // Column sums: Sum (own factor applied at the end) and out_w (no own factor).
          if (do_cols) {
            if (a.has_log) {
              const A lk = prof<Q::Log>(a.kernel, s);
#pragma unroll
              for (int cw = 0; cw < CW; ++cw) {
                const A e = own_lw[cw] + slw[cw * TN + j] + lk;
                const A term = e == e ? sw[cw * TN + j] * kexp(e) : A(0);
                cs.part[cw] += keep ? term : A(0);
              }
            } else {
              const A kv = prof<Q::Val>(a.kernel, s);
#pragma unroll
              for (int cw = 0; cw < CW; ++cw) cs.part[cw] += keep ? sw[cw * TN + j] * kv : A(0);
            }
          }
          // Gradient: coef * (x_row - y_item); for c == 1 the own factor is applied at the end.
          if constexpr (kBwd) {
            if (do_grad) {
              A coef = A(0);
              if (c <= CW) {  // the staged columns (c0 == 0 here) are all the columns
                if (a.has_log) {
                  const A l = prof<Q::LogDk>(a.kernel, s);
                  if constexpr (CW == 1) {
                    const A e = own_lw[0] + slw[j] + l;
                    coef = e == e ? -sw[j] * kexp(e) : A(0);
                  } else {
#pragma unroll
                    for (int cw = 0; cw < CW; ++cw) {
                      if (cw < c) {
                        const A e = own_lw[cw] + slw[cw * TN + j] + l;
                        coef -= e == e ? own_w[cw] * sw[cw * TN + j] * kexp(e) : A(0);
                      }
                    }
                  }
                } else {
                  const A dk = prof<Q::Dk>(a.kernel, s);
                  if constexpr (CW == 1) {
                    coef = sw[j] * dk;
                  } else {
                    A wsum = A(0);
#pragma unroll
                    for (int cw = 0; cw < CW; ++cw)
                      if (cw < c) wsum += own_w[cw] * sw[cw * TN + j];
                    coef = wsum * dk;
                  }
                }
              } else {
                coef = coef_all_cols(a, own, oth, b, rr, i0 + j, s);
              }
              coef = keep ? coef : A(0);
              if (a.out_h != nullptr) hpart = kfma(coef, s, hpart);  // role 0 only (glue: out_h)
              const A* yj = (kGen ? syg : sy) + j * DC;
              if (met == Metric::Euclidean) {
#pragma unroll
                for (int k0 = 0; k0 < GD; k0 += STEP) {
                  if (!kGen && k0 > 0 && k0 >= dl) break;
#pragma unroll
                  for (int k = k0; k < k0 + STEP; ++k) gv.gp[k] = kfma(coef, xq[k] - yj[k], gv.gp[k]);
                }
              } else if (met == Metric::Haversine) {  // register path, d == 2: D dD/da da/d(own)
                if constexpr (!kGen && GD >= 2) {
                  A g0v, g1v;
                  hav_grad(xq[0], xq[1], yj[0], yj[1], g0v, g1v);
                  gv.gp[0] = kfma(coef, g0v, gv.gp[0]);
                  gv.gp[1] = kfma(coef, g1v, gv.gp[1]);
                }
              } else {
                // ds/dx_k = 2 (r / h_k) g_k with g_k = sign(t_k) times 1 (manhattan), [k is the
                // first maximiser] (chebyshev) or (|t_k| / D)^(p-1) (minkowski).
                const A cr = coef * rv;
                bool found = kGen ? kst != 1 : false;  // generic: the maximiser is in this chunk
                const A pm1 = a.pp - A(1);
#pragma unroll
                for (int k0 = 0; k0 < GD; k0 += STEP) {
                  if (!kGen && k0 > 0 && k0 >= dl) break;
#pragma unroll
                  for (int k = k0; k < k0 + STEP; ++k) {
                    A ihk;
                    if constexpr (kGen) ihk = sihg[k];
                    else ihk = kIhReg ? ihr[k] : sih[k];
                    const A t = (xq[k] - yj[k]) * ihk;
                    A g = ksign(t);
                    if (met == Metric::Chebyshev) {
                      bool hit;
                      if constexpr (kGen) {
                        hit = !found && kabs(t) == dpv;
                        found = found || hit;
                      } else {
                        hit = k == kst;
                      }
                      g = hit ? g : A(0);
                    } else if (met == Metric::Minkowski) {
                      g = (dpv > A(0) && t != A(0)) ? g * kpow(kabs(t) / dpv, pm1) : A(0);
                    }
                    gv.gp[k] = kfma(cr, g, gv.gp[k]);
                  }
                }
              }
            }
          }
        }
      }
      cs.flush();
      gv.flush();
      htot += double(hpart);
      hpart = A(0);
    }

    // ---- write this thread's outputs
    if (rok) {
      if constexpr (M == Mode::Sum) {
        const int64_t o = (b * nrows + r) * c + c0;
#pragma unroll
        for (int cw = 0; cw < CW; ++cw)
          if (c0 + cw < c) st<A>(a.out, o + cw, double(own_w[cw]) * cs.tot[cw], dt);
      } else if constexpr (M == Mode::LogSumExp) {
        const int64_t o = (b * nrows + r) * c + c0;
#pragma unroll
        for (int cw = 0; cw < CW; ++cw) {
          if (c0 + cw < c) {
            st<A>(a.out, o + cw, lse_result(cs.mx[cw], cs.S[cw], 1.0, double(own_lw[cw])), dt);
            if (a.aux) st<A>(a.aux, o + cw, lse_result(cs.mx[cw], cs.S2[cw], 2.0, 0.0), dt);
          }
        }
      } else {
        if (do_cols) {  // out_w (role 1)
          const int64_t o = (b * nrows + r) * c + c0;
#pragma unroll
          for (int cw = 0; cw < CW; ++cw)
            if (c0 + cw < c) st<A>(a.out_w, o + cw, cs.tot[cw], dt);
        }
        if (do_grad) {  // out (role 0) or out_y (role 1): 2 / h_k^2 * sum coef (own - item)
          const A scale = A(2) * (c == 1 ? own_w[0] : A(1));
          const int64_t o = (b * nrows + r) * d;
          // euclidean and haversine accumulate in raw units (x 1 / h_k^2), the others r g_k (x 1 / h_k)
          const bool sq = met == Metric::Euclidean || met == Metric::Haversine;
#pragma unroll
          for (int k = 0; k < GD; ++k) {
            if (g0 + k < d) {
              const A ih = A(1) / a.h[(g0 + k) * a.h_stride];
              st<A>(gout, o + g0 + k, double(scale * (gv.total(k) * ih) * (sq ? ih : A(1))), dt);
            }
          }
          if (role == 0 && a.out_h != nullptr && split == 0)
            a.out_h[b * nrows + r] = static_cast<A>(htot * double(c == 1 ? own_w[0] : A(1)));
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

template <typename T> constexpr Dt dtype_of() {
  if constexpr (std::is_same_v<T, float>) return Dt::F32;
  else if constexpr (std::is_same_v<T, double>) return Dt::F64;
  else if constexpr (std::is_same_v<T, __half>) return Dt::F16;
  else return Dt::BF16;
}

template <typename A, Mode M, int CW>
void launch_cols(const Args<A>& a, dim3 grid, cudaStream_t stream, int db) {
  constexpr int kMax = reg_max<A>(M);
  switch (db) {
    case 2: launch_kernel("kernel_sum: kernel_sum_kernel", kernel_sum_kernel<A, M, 2, CW>, grid, kBlock, 0, stream, a); break;
    case 4: launch_kernel("kernel_sum: kernel_sum_kernel", kernel_sum_kernel<A, M, 4, CW>, grid, kBlock, 0, stream, a); break;
    case kMax: launch_kernel("kernel_sum: kernel_sum_kernel", kernel_sum_kernel<A, M, kMax, CW>, grid, kBlock, 0, stream, a); break;
    default: launch_kernel("kernel_sum: kernel_sum_kernel", kernel_sum_kernel<A, M, 0, CW>, grid, kBlock, 0, stream, a); break;
  }
}

template <typename A, Mode M>
void launch_mode(const Args<A>& a, dim3 grid, cudaStream_t stream, int db) {
  if (a.c == 1)
    launch_cols<A, M, 1>(a, grid, stream, db);
  else
    launch_cols<A, M, kCols>(a, grid, stream, db);
}

template <typename T> void launch_impl(const KernelSumParams<T>& p, cudaStream_t stream) {
  using A = typename AccType<T>::type;
  static_assert(std::is_same_v<A, float> || std::is_same_v<A, double>, "float or double accumulation");
  const Mode mode = p.mode;
  const bool bwd = mode == Mode::Backward;
  if (mode != Mode::Sum && mode != Mode::LogSumExp && !bwd)
    fail("unknown mode " + std::to_string(static_cast<int>(mode)));
  if (static_cast<int>(p.kernel) < 0 || static_cast<int>(p.kernel) >= kNumKernels)
    fail("unknown kernel " + std::to_string(static_cast<int>(p.kernel)));
  if (p.batch < 0 || p.m < 0 || p.n < 0 || p.d < 0 || p.c < 0)
    fail("negative size (batch, m, n, d, c)");
  if (p.h_stride != 0 && p.h_stride != 1) fail("h_stride must be 0 or 1");
  if (p.exclude_self && p.m != p.n) fail("exclude_self requires m == n");
  if (static_cast<int>(p.metric) < 0 || static_cast<int>(p.metric) >= kNumMetrics)
    fail("unknown metric " + std::to_string(static_cast<int>(p.metric)));
  if (p.metric == Metric::Haversine && (p.d != 2 || p.h_stride != 0))
    fail("haversine needs d == 2 and a scalar bandwidth");
  if (p.metric == Metric::Minkowski && !(p.p >= 1 && p.p < INFINITY)) fail("minkowski needs 1 <= p < inf");

  // What gets written: role 0 rows (queries) and role 1 rows (points, Backward only).
  void* out = p.out;
  void* out_y = bwd ? static_cast<void*>(p.out_y) : nullptr;
  void* out_w = bwd ? static_cast<void*>(p.out_w) : nullptr;
  if (bwd && p.d == 0) out = out_y = nullptr;  // empty gradients
  if (p.c == 0) {
    if (!bwd) return;  // (batch, m, 0) outputs
    out_w = nullptr;   // no columns: coef = 0, the gradients are written as zeros below
  }
  const bool role0 = out != nullptr && p.m > 0;
  const bool role1 = (out_y != nullptr || out_w != nullptr) && p.n > 0;
  if (!bwd && out == nullptr && p.m > 0) fail("out is null");
  if (p.batch == 0 || (!role0 && !role1)) return;
  if (p.d > 0 && p.h == nullptr) fail("h is null");
  if (p.d > 0 && ((role0 && p.x == nullptr) || (role0 && p.n > 0 && p.y == nullptr) ||
                  (role1 && p.y == nullptr) || (role1 && p.m > 0 && p.x == nullptr)))
    fail("x or y is null");

  Args<A> a{};
  const bool lse = mode == Mode::LogSumExp;
  a.side[0] = Side{p.x, lse ? nullptr : p.qw, p.qlw, p.x_bstride, p.qw_bstride, p.qlw_bstride, p.m};
  a.side[1] = Side{p.y, lse ? nullptr : p.pw, p.plw, p.y_bstride, p.pw_bstride, p.plw_bstride, p.n};
  a.h = p.h;
  a.h_stride = p.h_stride;
  a.out = role0 ? out : nullptr;
  a.aux = lse ? p.aux : nullptr;
  a.out_y = role1 ? out_y : nullptr;
  a.out_w = role1 ? out_w : nullptr;
  a.batch = p.batch;
  a.d = p.d;
  a.c = p.c;
  a.kernel = p.kernel;
  a.met = p.metric;
  a.pp = p.p;
  a.inv_p = A(1) / p.p;
  a.exact = is_compact(p.kernel) && p.h_stride == 0 && p.d > 0;
  a.unscaled = a.exact || p.metric == Metric::Haversine;
  a.out_h = (bwd && role0) ? p.out_h : nullptr;
  a.dt = dtype_of<T>();
  a.exclude_self = p.exclude_self;
  a.has_log = p.plw != nullptr || p.qlw != nullptr;

  // Dimension bucket (0: generic path) and splits.
  const int kmax = bwd ? reg_max<A>(Mode::Backward) : reg_max<A>(Mode::Sum);
  const int db = p.d <= 2 ? 2 : p.d <= 4 ? 4 : p.d <= kmax ? kmax : 0;
  const int64_t ncw = p.c == 1 ? 1 : kCols;
  a.nsc = (p.c + ncw - 1) / ncw;
  a.nsg = db == 0 ? (p.d + gen_chunk<A>() - 1) / gen_chunk<A>() : 1;
  a.nrb0 = (p.m + kBlock - 1) / kBlock;
  a.nrb1 = (p.n + kBlock - 1) / kBlock;
  int64_t splits0 = 0, splits1 = 0;
  if (!bwd) {
    splits0 = a.nsc;
  } else {
    splits0 = role0 ? a.nsg : 0;
    if (role1) {
      const int64_t sg = a.out_y ? a.nsg : 0, sc = a.out_w ? a.nsc : 0;
      splits1 = sg > sc ? sg : sc;
    }
  }
  const int64_t blocks0 = a.nrb0 * splits0, blocks1 = a.nrb1 * splits1;
  if (blocks0 > INT32_MAX - blocks1) fail("too many rows x splits for one launch");
  a.nblk0 = blocks0;
  if (a.nrb0 == 0) a.nrb0 = 1;  // never used as a divisor by a block of its role, but keep it safe
  if (a.nrb1 == 0) a.nrb1 = 1;
  const dim3 grid(static_cast<unsigned>(blocks0 + blocks1),
                  static_cast<unsigned>(p.batch < kMaxGridY ? p.batch : kMaxGridY), 1);

  switch (mode) {
    case Mode::Sum: launch_mode<A, Mode::Sum>(a, grid, stream, db); break;
    case Mode::LogSumExp: launch_mode<A, Mode::LogSumExp>(a, grid, stream, db); break;
    default: launch_mode<A, Mode::Backward>(a, grid, stream, db); break;
  }
}

}  // namespace

template <typename T>
void launch_kernel_sum(const KernelSumParams<T>& p, void* stream) {
  launch_impl<T>(p, static_cast<cudaStream_t>(stream));
}

template void launch_kernel_sum<float>(const KernelSumParams<float>&, void*);
template void launch_kernel_sum<double>(const KernelSumParams<double>&, void*);
template void launch_kernel_sum<__half>(const KernelSumParams<__half>&, void*);
template void launch_kernel_sum<__nv_bfloat16>(const KernelSumParams<__nv_bfloat16>&, void*);

}  // namespace kernelfuse::kde
