// CUDA kernels for fused kernel sums (semantics: kernel_sum.h). Torch-free: raw pointers, a
// params struct and a cudaStream_t. One launch per call, no host synchronisation.
//
// Structure. One tile walker (kernel_sum_kernel, pieces in kernel_sum_cuda_tile.cuh: block
// role, row load, tile staging, pair distance) templated on a reduction policy (SumPolicy,
// LsePolicy with the squared twin in aux, BwdPolicy: init / accumulate / flush / write, below);
// the kernel profiles come from profiles.h (the table the CPU kernel uses too); scalar helpers,
// accumulator states and the arguments are in kernel_sum_cuda_common.cuh.
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
// staging loads and the stores, and the kernel profile a runtime switch per pair (prof over
// profiles.h's visit_kernel: uniform across the grid, so it never diverges; it costs a jump table
// per pair, where a template parameter would multiply the kernels by the number of profiles).
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

#include "common/cuda_launch.cuh"
#include "kernel_sum_cuda.h"
#include "kernel_sum_cuda_tile.cuh"

namespace kernelfuse::kde {
namespace cuda {

// ---- Reduction policies: init, accumulate (one pair), flush (a tile into the totals), write.

// Column sums of a pair into cs: Sum (own factor applied at the end) and out_w (no own factor).
template <class S, typename A>
__device__ __forceinline__ void col_sums(const Args<A>& a, const Smem<A>& m, const Row<S, A>& row, A s, int j,
                                         bool keep, SumCols<A, S::kCW>& cs) {
  constexpr int TN = S::TN;
  if (a.has_log) {
    const A lk = prof<Q::Log>(a.kernel, s);
#pragma unroll
    for (int cw = 0; cw < S::kCW; ++cw) {
      const A e = row.lw[cw] + m.slw[cw * TN + j] + lk;
      const A term = e == e ? m.sw[cw * TN + j] * kexp(e) : A(0);
      cs.part[cw] += keep ? term : A(0);
    }
  } else {
    const A kv = prof<Q::Val>(a.kernel, s);
#pragma unroll
    for (int cw = 0; cw < S::kCW; ++cw) cs.part[cw] += keep ? m.sw[cw * TN + j] * kv : A(0);
  }
}

template <class S, typename A>
struct SumPolicy {
  SumCols<A, S::kCW> cs;
  __device__ __forceinline__ void init() { cs.init(); }
  __device__ __forceinline__ void accumulate(const Args<A>& a, const Block<A>&, const Smem<A>& m, const Row<S, A>& row,
                                             const Pair<A>& pr, int j, bool keep, int64_t) {
    col_sums<S>(a, m, row, pr.s, j, keep, cs);
  }
  __device__ __forceinline__ void flush() { cs.flush(); }
  __device__ __forceinline__ void write(const Args<A>& a, const Block<A>& k, const Row<S, A>& row, int64_t b) {
    const int64_t o = (b * k.nrows + k.r) * a.c + k.c0;
#pragma unroll
    for (int cw = 0; cw < S::kCW; ++cw)
      if (k.c0 + cw < a.c) st<A>(a.out, o + cw, double(row.w[cw]) * cs.tot[cw], a.dt);
  }
};

// LogSumExp (+ its squared twin in aux): online max with a rescaled sum per tile.
template <class S, typename A>
struct LsePolicy {
  LseCols<A, S::kCW> cs;
  __device__ __forceinline__ void init() { cs.init(); }
  __device__ __forceinline__ void accumulate(const Args<A>& a, const Block<A>&, const Smem<A>& m, const Row<S, A>&,
                                             const Pair<A>& pr, int j, bool keep, int64_t) {
    const A lk = prof<Q::Log>(a.kernel, pr.s);
#pragma unroll
    for (int cw = 0; cw < S::kCW; ++cw) {
      const A t = keep ? m.slw[cw * S::TN + j] + lk : -kinf<A>();
      if (a.aux)
        lse_push<true>(cs.pm[cw], cs.ps[cw], cs.ps2[cw], t);
      else
        lse_push<false>(cs.pm[cw], cs.ps[cw], cs.ps2[cw], t);
    }
  }
  __device__ __forceinline__ void flush() { cs.flush(); }
  __device__ __forceinline__ void write(const Args<A>& a, const Block<A>& k, const Row<S, A>& row, int64_t b) {
    const int64_t o = (b * k.nrows + k.r) * a.c + k.c0;
#pragma unroll
    for (int cw = 0; cw < S::kCW; ++cw) {
      if (k.c0 + cw < a.c) {
        st<A>(a.out, o + cw, lse_result(cs.mx[cw], cs.S[cw], 1.0, double(row.lw[cw])), a.dt);
        if (a.aux) st<A>(a.aux, o + cw, lse_result(cs.mx[cw], cs.S2[cw], 2.0, 0.0), a.dt);
      }
    }
  }
};

// Backward coefficient of a pair: sum_c wr wi exp(lwr + lwi) dk/ds (for c == 1 without the own
// factor, applied at the end).
template <class S, typename A>
__device__ __forceinline__ A bwd_coef(const Args<A>& a, const Block<A>& k, const Smem<A>& m, const Row<S, A>& row, A s,
                                      int j, int64_t b, int64_t item) {
  constexpr int CW = S::kCW, TN = S::TN;
  const int64_t c = a.c;
  if (c > CW) return coef_all_cols(a, k.own, k.oth, b, k.rr, item, s);  // rare: factors from global memory
  A coef = A(0);  // the staged columns (c0 == 0 here) are all the columns
  if (a.has_log) {
    const A l = prof<Q::LogDk>(a.kernel, s);
    if constexpr (CW == 1) {
      const A e = row.lw[0] + m.slw[j] + l;
      coef = e == e ? -m.sw[j] * kexp(e) : A(0);
    } else {
#pragma unroll
      for (int cw = 0; cw < CW; ++cw) {
        if (cw < c) {
          const A e = row.lw[cw] + m.slw[cw * TN + j] + l;
          coef -= e == e ? row.w[cw] * m.sw[cw * TN + j] * kexp(e) : A(0);
        }
      }
    }
    return coef;
  }
  const A dk = prof<Q::Dk>(a.kernel, s);
  if constexpr (CW == 1) return m.sw[j] * dk;
  A wsum = A(0);
#pragma unroll
  for (int cw = 0; cw < CW; ++cw)
    if (cw < c) wsum += row.w[cw] * m.sw[cw * TN + j];
  return wsum * dk;
}

// Position gradient of a pair: coef * ds/d(own) in the accumulation units of GradVec.
template <class S, typename A>
__device__ __forceinline__ void grad_pair(const Args<A>& a, const Block<A>& k, const Smem<A>& m, const Row<S, A>& row,
                                          const Pair<A>& pr, A coef, int j, GradVec<A, S::GD>& gv) {
  constexpr int GD = S::GD, DC = S::DC, STEP = S::STEP;
  constexpr bool kGen = S::kGen;
  const Metric met = a.met;
  const A* yj = (kGen ? m.syg : m.sy) + j * DC;
  if (met == Metric::Euclidean) {
#pragma unroll
    for (int k0 = 0; k0 < GD; k0 += STEP) {
      if (!kGen && k0 > 0 && k0 >= k.dl) break;
#pragma unroll
      for (int kk = k0; kk < k0 + STEP; ++kk) gv.gp[kk] = kfma(coef, row.xq[kk] - yj[kk], gv.gp[kk]);
    }
  } else if (met == Metric::Haversine) {  // register path, d == 2: D dD/da da/d(own)
    if constexpr (!kGen && GD >= 2) {
      A g0v, g1v;
      hav_grad(row.xq[0], row.xq[1], yj[0], yj[1], g0v, g1v);
      gv.gp[0] = kfma(coef, g0v, gv.gp[0]);
      gv.gp[1] = kfma(coef, g1v, gv.gp[1]);
    }
  } else {
    // ds/dx_k = 2 (r / h_k) g_k with g_k = sign(t_k) times 1 (manhattan), [k is the first
    // maximiser] (chebyshev) or (|t_k| / D)^(p-1) (minkowski).
    const A cr = coef * pr.rv;
    bool found = kGen ? pr.kst != 1 : false;  // generic: the maximiser is in this chunk
    const A pm1 = a.pp - A(1);
#pragma unroll
    for (int k0 = 0; k0 < GD; k0 += STEP) {
      if (!kGen && k0 > 0 && k0 >= k.dl) break;
#pragma unroll
      for (int kk = k0; kk < k0 + STEP; ++kk) {
        A ihk;
        if constexpr (kGen)
          ihk = m.sihg[kk];
        else
          ihk = S::kIhReg ? row.ihr[kk] : m.sih[kk];
        const A t = (row.xq[kk] - yj[kk]) * ihk;
        A g = ksign(t);
        if (met == Metric::Chebyshev) {
          bool hit;
          if constexpr (kGen) {
            hit = !found && kabs(t) == pr.dpv;
            found = found || hit;
          } else {
            hit = kk == pr.kst;
          }
          g = hit ? g : A(0);
        } else if (met == Metric::Minkowski) {
          g = (pr.dpv > A(0) && t != A(0)) ? g * kpow(kabs(t) / pr.dpv, pm1) : A(0);
        }
        gv.gp[kk] = kfma(cr, g, gv.gp[kk]);
      }
    }
  }
}

// Backward: role 0 writes out (and out_h), role 1 out_y and out_w (kernel_sum.h).
template <class S, typename A>
struct BwdPolicy {
  SumCols<A, S::kCW> cs;  // out_w
  GradVec<A, S::GD> gv;
  A hpart;  // role 0 with out_h: sum coef s (tile), totals in double
  double htot;
  int64_t i0;  // first item of the current tile (for the rare all-columns path)
  __device__ __forceinline__ void init() {
    cs.init();
    gv.init();
    hpart = A(0), htot = 0.0, i0 = 0;
  }
  __device__ __forceinline__ void accumulate(const Args<A>& a, const Block<A>& k, const Smem<A>& m,
                                             const Row<S, A>& row, const Pair<A>& pr, int j, bool keep, int64_t b) {
    if (k.do_cols) col_sums<S>(a, m, row, pr.s, j, keep, cs);
    if (!k.do_grad) return;
    A coef = bwd_coef<S>(a, k, m, row, pr.s, j, b, i0 + j);
    coef = keep ? coef : A(0);
    if (a.out_h != nullptr) hpart = kfma(coef, pr.s, hpart);  // role 0 only (glue: out_h)
    grad_pair<S>(a, k, m, row, pr, coef, j, gv);
  }
  __device__ __forceinline__ void flush() {
    cs.flush();
    gv.flush();
    htot += double(hpart);
    hpart = A(0);
  }
  __device__ __forceinline__ void write(const Args<A>& a, const Block<A>& k, const Row<S, A>& row, int64_t b) {
    const int64_t c = a.c, d = a.d;
    if (k.do_cols) {  // out_w (role 1)
      const int64_t o = (b * k.nrows + k.r) * c + k.c0;
#pragma unroll
      for (int cw = 0; cw < S::kCW; ++cw)
        if (k.c0 + cw < c) st<A>(a.out_w, o + cw, cs.tot[cw], a.dt);
    }
    if (!k.do_grad) return;
    // out (role 0) or out_y (role 1): 2 / h_k^2 * sum coef (own - item); euclidean and haversine
    // accumulate in raw units (x 1 / h_k^2), the others r g_k (x 1 / h_k)
    const A scale = A(2) * (c == 1 ? row.w[0] : A(1));
    const int64_t o = (b * k.nrows + k.r) * d;
    const bool sq = a.met == Metric::Euclidean || a.met == Metric::Haversine;
#pragma unroll
    for (int kk = 0; kk < S::GD; ++kk) {
      if (k.g0 + kk < d) {
        const A ih = A(1) / a.h[(k.g0 + kk) * a.h_stride];
        st<A>(k.gout, o + k.g0 + kk, double(scale * (gv.total(kk) * ih) * (sq ? ih : A(1))), a.dt);
      }
    }
    if (k.role == 0 && a.out_h != nullptr && k.split == 0)
      a.out_h[b * k.nrows + k.r] = static_cast<A>(htot * double(c == 1 ? row.w[0] : A(1)));
  }
};

template <class S, typename A, Mode M>
using PolicyOf = std::conditional_t<M == Mode::Sum, SumPolicy<S, A>,
                                    std::conditional_t<M == Mode::LogSumExp, LsePolicy<S, A>, BwdPolicy<S, A>>>;

// The kernel: one thread per own row, the items walked in tiles staged in shared memory.
template <typename A, Mode M, int DB, int CW>
__global__ void __launch_bounds__(kBlock) kernel_sum_kernel(const Args<A> a) {
  using S = Shape<A, M, DB, CW>;
  constexpr int TN = S::TN, DC = S::DC;
  constexpr bool kGen = S::kGen, kBwd = S::kBwd;
  KF_SHARED_ALIGNED(16, A, sy, [TN * DC]);                      // item coordinates (chunk), zero padded
  KF_SHARED_ALIGNED(16, A, sih, [DC]);                          // 1 / h of those dimensions, zero padded
  KF_SHARED(A, sw, [CW * TN]);                                  // item factors [col][item] (1 when absent)
  KF_SHARED(A, slw, [CW * TN]);                                 // item log factors (0 when absent)
  KF_SHARED(A, sx, [kGen ? DC * (kBlock + 1) : 1]);             // generic: row chunk [dim][row], padded
  KF_SHARED(A, ss, [kGen ? TN * kBlock : 1]);                   // generic: partial s [item][row]
  KF_SHARED_ALIGNED(16, A, syg, [kGen && kBwd ? TN * DC : 1]);  // generic Backward: output dims
  KF_SHARED(A, sihg, [kGen && kBwd ? DC : 1]);                  // generic Backward: distance scale of the output dims
  const Smem<A> m{sy, sih, sw, slw, sx, ss, syg, sihg};

  const int tid = static_cast<int>(threadIdx.x);
  const Block<A> bk = make_block<S>(a, tid);
  // Distance scale of the coordinates: 1 / h, or 1 where distances are unscaled (a.unscaled).
  if constexpr (!kGen) {  // the bandwidths never change: stage them once
    for (int k = tid; k < DB; k += kBlock) sih[k] = k < a.d ? (a.unscaled ? A(1) : A(1) / a.h[k * a.h_stride]) : A(0);
    __syncthreads();
  } else if constexpr (kBwd) {
    for (int k = tid; k < DC; k += kBlock)
      sihg[k] = bk.g0 + k < a.d ? (a.unscaled ? A(1) : A(1) / a.h[(bk.g0 + k) * a.h_stride]) : A(0);
    // (the first barrier of the tile loop orders this before any use)
  }
  Row<S, A> row;
  if constexpr (S::kIhReg) {
#pragma unroll
    for (int k = 0; k < DB; ++k) row.ihr[k] = sih[k];
  }

  for (int64_t b = blockIdx.y; b < a.batch; b += gridDim.y) {
    load_row<S>(a, bk, b, row);
    PolicyOf<S, A, M> pol;
    pol.init();
    for (int64_t i0 = 0; i0 < bk.nitems; i0 += TN) {
      const int nt = static_cast<int>(bk.nitems - i0 < TN ? bk.nitems - i0 : TN);
      const int jskip = (bk.rskip >= i0 && bk.rskip < i0 + nt) ? static_cast<int>(bk.rskip - i0) : -1;
      if constexpr (kGen)
        stage_gen_tile<S>(a, bk, m, b, i0, nt, tid);
      else
        stage_reg_tile<S>(a, bk, m, b, i0, nt, tid);
      if constexpr (kBwd) pol.i0 = i0;
      for (int j = 0; j < nt; ++j)
        pol.accumulate(a, bk, m, row, pair_distance<S>(a, bk, m, row, j, tid), j, j != jskip, b);
      pol.flush();
    }
    if (bk.rok) pol.write(a, bk, row, b);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: checks, launch geometry, template dispatch.
[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("kernelfuse::kde::launch_kernel_sum: " + what);
}

template <typename T>
constexpr Dt dtype_of() {
  if constexpr (std::is_same_v<T, float>)
    return Dt::F32;
  else if constexpr (std::is_same_v<T, double>)
    return Dt::F64;
  else if constexpr (std::is_same_v<T, __half>)
    return Dt::F16;
  else
    return Dt::BF16;
}

template <typename A, Mode M, int CW>
void launch_cols(const Args<A>& a, dim3 grid, cudaStream_t stream, int db) {
  constexpr int kMax = reg_max<A>(M);
  switch (db) {
    case 2:
      launch_kernel("kernel_sum: kernel_sum_kernel", kernel_sum_kernel<A, M, 2, CW>, grid, kBlock, 0, stream, a);
      break;
    case 4:
      launch_kernel("kernel_sum: kernel_sum_kernel", kernel_sum_kernel<A, M, 4, CW>, grid, kBlock, 0, stream, a);
      break;
    case kMax:
      launch_kernel("kernel_sum: kernel_sum_kernel", kernel_sum_kernel<A, M, kMax, CW>, grid, kBlock, 0, stream, a);
      break;
    default:
      launch_kernel("kernel_sum: kernel_sum_kernel", kernel_sum_kernel<A, M, 0, CW>, grid, kBlock, 0, stream, a);
      break;
  }
}

template <typename A, Mode M>
void launch_mode(const Args<A>& a, dim3 grid, cudaStream_t stream, int db) {
  if (a.c == 1)
    launch_cols<A, M, 1>(a, grid, stream, db);
  else
    launch_cols<A, M, kCols>(a, grid, stream, db);
}

// The parameter checks that do not depend on what gets written.
template <typename T>
void check_params(const KernelSumParams<T>& p) {
  const Mode mode = p.mode;
  if (mode != Mode::Sum && mode != Mode::LogSumExp && mode != Mode::Backward)
    fail("unknown mode " + std::to_string(static_cast<int>(mode)));
  if (static_cast<int>(p.kernel) < 0 || static_cast<int>(p.kernel) >= kNumKernels)
    fail("unknown kernel " + std::to_string(static_cast<int>(p.kernel)));
  if (p.batch < 0 || p.m < 0 || p.n < 0 || p.d < 0 || p.c < 0) fail("negative size (batch, m, n, d, c)");
  if (p.h_stride != 0 && p.h_stride != 1) fail("h_stride must be 0 or 1");
  if (p.exclude_self && p.m != p.n) fail("exclude_self requires m == n");
  if (static_cast<int>(p.metric) < 0 || static_cast<int>(p.metric) >= kNumMetrics)
    fail("unknown metric " + std::to_string(static_cast<int>(p.metric)));
  if (p.metric == Metric::Haversine && (p.d != 2 || p.h_stride != 0))
    fail("haversine needs d == 2 and a scalar bandwidth");
  if (p.metric == Metric::Minkowski && !(p.p >= 1 && p.p < INFINITY)) fail("minkowski needs 1 <= p < inf");
}

// Dimension bucket (returned; 0: generic path), splits and block counts of a launch.
template <typename T, typename A>
int set_grid(Args<A>& a, const KernelSumParams<T>& p, bool bwd, bool role0, bool role1) {
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
  a.nblk1 = blocks1;
  return db;
}

template <typename T>
void launch_impl(const KernelSumParams<T>& p, cudaStream_t stream) {
  using A = typename AccType<T>::type;
  static_assert(std::is_same_v<A, float> || std::is_same_v<A, double>, "float or double accumulation");
  check_params(p);
  const Mode mode = p.mode;
  const bool bwd = mode == Mode::Backward;

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
  if (p.d > 0 && ((role0 && p.x == nullptr) || (role0 && p.n > 0 && p.y == nullptr) || (role1 && p.y == nullptr) ||
                  (role1 && p.m > 0 && p.x == nullptr)))
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

  const int db = set_grid(a, p, bwd, role0, role1);
  const dim3 grid(static_cast<unsigned>(a.nblk0 + a.nblk1),
                  static_cast<unsigned>(p.batch < kMaxGridY ? p.batch : kMaxGridY), 1);

  switch (mode) {
    case Mode::Sum:
      launch_mode<A, Mode::Sum>(a, grid, stream, db);
      break;
    case Mode::LogSumExp:
      launch_mode<A, Mode::LogSumExp>(a, grid, stream, db);
      break;
    default:
      launch_mode<A, Mode::Backward>(a, grid, stream, db);
      break;
  }
}

}  // namespace cuda

template <typename T>
void launch_kernel_sum(const KernelSumParams<T>& p, void* stream) {
  cuda::launch_impl<T>(p, static_cast<cudaStream_t>(stream));
}

template void launch_kernel_sum<float>(const KernelSumParams<float>&, void*);
template void launch_kernel_sum<double>(const KernelSumParams<double>&, void*);
template void launch_kernel_sum<__half>(const KernelSumParams<__half>&, void*);
template void launch_kernel_sum<__nv_bfloat16>(const KernelSumParams<__nv_bfloat16>&, void*);

}  // namespace kernelfuse::kde
