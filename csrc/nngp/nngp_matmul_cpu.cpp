// CPU kernel of the fused NNGP / NTK products (nngp_matmul.h). Torch-free.
//
// The points are packed once, in tiles of TP in structure-of-arrays form ([d][TP], zero-padded,
// with their squared norms), shared by all threads. Tasks of QB queries (OpenMP, dynamic
// schedule) walk the tiles:
//   1. inner products of the QB queries with the tile: a register-blocked micro-kernel
//      (micro_gemm: RB queries x NV vectors of points per block, the accumulators in registers);
//   2. the layer recursion (nngp_math.h), layer by layer over the whole QB x TP block, vectorised
//      over the points: each layer's per-point quantities (Side: sqrt k22, 1 / sqrt k22, 1 / k22,
//      and d k22 / d ny) are formed once per tile for up to LG layers at a time and shared by the
//      QB queries; the query's own are scalars; the pair loop is branch-free (our acos / asin,
//      common/hd_math.h), so the compiler vectorises it;
//   3. the block is reduced against the tile's weight rows (Forward) or turned into the gradient
//      terms (GradX: coef dK/ds against the tile's points, micro-kernel as in 1.) into per-query
//      partials in T, added to double accumulators once per tile (blocked accumulation: float32
//      results stay near a float64 computation). GradX with out2 does both (the recursion gives
//      K next to dK): the backward's y and weights gradients in one pass.
// Memory: the packed points (n d as y itself; twice that for GradX, which also keeps padded rows)
// and O(threads * QB * TP) scratch; the m x n matrix never exists.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../common/simd.h"
#include "nngp_math.h"
#include "nngp_matmul.h"

namespace kernelfuse::nngp {
namespace {

constexpr int64_t QB = 16;   // queries per task
constexpr int64_t TP = 128;  // points per tile (a multiple of NV vectors of both types)
constexpr int32_t LG = 8;    // layers whose per-point quantities are formed at a time
constexpr int64_t RB = 4;    // micro-kernel: rows per block (QB is a multiple) ...
constexpr int64_t NV = 2;    // ... and vectors of columns per block
template <typename T>
constexpr int64_t kCols = NV * simd::Vec<T>::W;  // the micro-kernel's column block

// The points in tiles: pts[(t d + k) TP + j] = y[t TP + j, k] (0 past n), nrm[t TP + j] = |y|^2;
// for GradX also rows[(t TP + j) dp + k] = y[t TP + j, k], the rows padded to dp columns (a
// multiple of the micro-kernel's column block; 0 past d and past n).
template <typename T>
struct Packed {
  std::vector<T> pts, nrm, rows;
  int64_t ntiles = 0, dp = 0;
};

template <typename T>
void pack_points(const T* y, int64_t n, int64_t d, bool with_rows, Packed<T>& pk, bool par) {
  pk.ntiles = (n + TP - 1) / TP;
  pk.dp = with_rows ? (d + kCols<T> - 1) / kCols<T> * kCols<T> : 0;
  pk.pts.assign(static_cast<size_t>(pk.ntiles * d * TP), T(0));
  pk.nrm.assign(static_cast<size_t>(pk.ntiles * TP), T(0));
  pk.rows.assign(static_cast<size_t>(pk.ntiles * TP * pk.dp), T(0));
#pragma omp parallel for schedule(static) if (par)
  for (int64_t t = 0; t < pk.ntiles; ++t) {
    T* v = pk.pts.data() + t * d * TP;
    const int64_t nt = std::min(TP, n - t * TP);
    for (int64_t j = 0; j < nt; ++j) {
      const T* yj = y + (t * TP + j) * d;
      T sq = 0;
      for (int64_t k = 0; k < d; ++k) {
        v[k * TP + j] = yj[k];
        sq += yj[k] * yj[k];
      }
      pk.nrm[t * TP + j] = sq;
      if (with_rows) std::copy(yj, yj + d, pk.rows.data() + (t * TP + j) * pk.dp);
    }
  }
}

// The micro-kernel: out[r ldo + c] = sum_k a[r lda + k] v[k ldv + c] for r < QB, c < ncols (a
// multiple of kCols), k < K; rows of a past nrows repeat its last row (computed, never read).
// Accumulators in registers: RB rows x NV vectors of columns per block. Used for the inner
// products (a = the queries, v = the tile [d][TP]) and the GradX reduction (a = coef dK/ds
// [QB][TP], v = the tile's rows [TP][dp]).
template <typename T>
void micro_gemm(const T* __restrict a, int64_t lda, int64_t nrows, const T* __restrict v, int64_t ldv, int64_t K,
                int64_t ncols, T* __restrict out, int64_t ldo) {
  using V = typename simd::Vec<T>::type;
  constexpr int64_t W = simd::Vec<T>::W;
  for (int64_t r0 = 0; r0 < QB; r0 += RB) {
    const T* ar[RB];
    for (int64_t rr = 0; rr < RB; ++rr) ar[rr] = a + std::min(r0 + rr, nrows - 1) * lda;
    for (int64_t c0 = 0; c0 < ncols; c0 += NV * W) {
      V acc[RB][NV];
      for (int64_t rr = 0; rr < RB; ++rr)
        for (int64_t u = 0; u < NV; ++u) acc[rr][u] = V{};
      const T* vk = v + c0;
      for (int64_t k = 0; k < K; ++k, vk += ldv) {
        V b[NV];
        for (int64_t u = 0; u < NV; ++u) {
          b[u] = simd::load<V>(vk + u * W);
#if defined(__x86_64__) && defined(__GNUC__)
          // keep b in a register: else GCC folds its load into each of the RB FMAs, and the
          // k loop becomes load-bound (RB NV + RB loads per RB NV FMAs instead of NV + RB)
          __asm__("" : "+x"(b[u]));
#endif
        }
        for (int64_t rr = 0; rr < RB; ++rr) {
          const T s = ar[rr][k];
          for (int64_t u = 0; u < NV; ++u) acc[rr][u] += s * b[u];
        }
      }
      for (int64_t rr = 0; rr < RB; ++rr)
        for (int64_t u = 0; u < NV; ++u) simd::store(out + (r0 + rr) * ldo + c0 + u * W, acc[rr][u]);
    }
  }
}

// Per-thread scratch of one task.
template <typename T>
struct Scratch {
  std::vector<T> S;                        // QB x TP inner products
  std::vector<T> k12, as, ax, th, ts, tx;  // QB x TP pair state (PairState, the used fields)
  std::vector<T> ps, prs, pinv, pd;        // LG x TP per-point Side and d k22 / d ny
  std::vector<T> kp, dp;                   // TP running k22, d k22 / d ny
  std::vector<T> CO;                       // QB x TP: coef dK/ds (GradX)
  Scratch() {
    for (auto* v : {&S, &k12, &as, &ax, &th, &ts, &tx, &CO}) v->assign(QB * TP, T(0));
    for (auto* v : {&ps, &prs, &pinv, &pd}) v->assign(LG * TP, T(0));
    kp.assign(TP, T(0));
    dp.assign(TP, T(0));
  }
};

// The pair state (PairState's fields that a variant uses) in structure-of-arrays form.
template <typename T>
struct StateRows {
  T *k12, *as, *ax, *th, *ts, *tx;
  StateRows at(int64_t o) const { return {k12 + o, as + o, ax + o, th + o, ts + o, tx + o}; }
};
template <bool GRAD, bool NTK, typename T>
inline PairState<T> load_state(const StateRows<T>& s, int64_t j) {
  PairState<T> u{s.k12[j], T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  if constexpr (NTK) u.th = s.th[j];
  if constexpr (GRAD) {
    u.as = s.as[j];
    u.ax = s.ax[j];
    if constexpr (NTK) {
      u.ts = s.ts[j];
      u.tx = s.tx[j];
    }
  }
  return u;
}
template <bool GRAD, bool NTK, typename T>
inline void store_state(const StateRows<T>& s, int64_t j, const PairState<T>& u) {
  s.k12[j] = u.k12;
  if constexpr (NTK) s.th[j] = u.th;
  if constexpr (GRAD) {
    s.as[j] = u.as;
    s.ax[j] = u.ax;
    if constexpr (NTK) {
      s.ts[j] = u.ts;
      s.tx[j] = u.tx;
    }
  }
}

// One layer over one query row of the block: the pair loop, vectorised over the points (check with
// -fopt-info-vec on this file). Not inlined: inlined into recursion(), GCC 12 no longer
// if-converts the NTK / GRAD variants of the loop ("control flow in loop"); a call per 128 pairs
// costs nothing. Without jump threading (KF_NO_THREAD_JUMPS, hd_math.h): it would duplicate acos /
// asin's tail for both sides of |c| > 1/2, and the vectorised loop would evaluate both.
template <Activation ACT, bool GRAD, bool NTK, typename T>
__attribute__((noinline)) KF_NO_THREAD_JUMPS void pair_layer(const Cfg<T>& cf, Side<T> p, T d1, const T* __restrict ps,
                                                             const T* __restrict prs, const T* __restrict pinv,
                                                             const T* __restrict pd, StateRows<T> st) {
#pragma GCC ivdep
  for (int64_t j = 0; j < TP; ++j) {
    const PairState<T> u = load_state<GRAD, NTK>(st, j);
    store_state<GRAD, NTK>(st, j, advance<ACT, GRAD, NTK>(cf, p, d1, Side<T>{ps[j], prs[j], pinv[j]}, pd[j], u));
  }
}

// The first layer's state from the inner products S, over the whole block (not inlined either:
// inlined, the GRAD + NTK variant's loop is not vectorised).
template <bool GRAD, bool NTK, typename T>
__attribute__((noinline)) void init_state(const Cfg<T>& cf, const T* __restrict S, StateRows<T> st) {
#pragma GCC ivdep
  for (int64_t e = 0; e < QB * TP; ++e) store_state<GRAD, NTK>(st, e, first_layer(cf, S[e]));
}

// The recursion over a QB x TP block: S (inner products), NY (the tile's norms), nxq (the
// queries'), into the state arrays; K (and dK/ds, dK/dnx) are then th / ts / tx (NTK) or
// k12 / as / ax.
template <Activation ACT, bool GRAD, bool NTK, typename T>
void recursion(const Cfg<T>& cf, const T* nxq, const T* __restrict NY, Scratch<T>& sc) {
  const T a0 = cf.sw2 * cf.inv_d;
  const StateRows<T> st{sc.k12.data(), sc.as.data(), sc.ax.data(), sc.th.data(), sc.ts.data(), sc.tx.data()};
  init_state<GRAD, NTK>(cf, sc.S.data(), st);
  T kq[QB], dq[QB];
  for (int64_t r = 0; r < QB; ++r) {
    kq[r] = a0 * nxq[r] + cf.sb2;
    dq[r] = a0;
  }
  T* __restrict kp = sc.kp.data();
  T* __restrict dp = sc.dp.data();
#pragma omp simd
  for (int64_t j = 0; j < TP; ++j) {
    kp[j] = a0 * NY[j] + cf.sb2;
    dp[j] = a0;
  }
  T* __restrict ps = sc.ps.data();
  T* __restrict prs = sc.prs.data();
  T* __restrict pinv = sc.pinv.data();
  T* __restrict pd = sc.pd.data();
  for (int32_t g0 = 0; g0 < cf.depth; g0 += LG) {
    const int32_t ng = std::min(LG, cf.depth - g0);
    for (int32_t h = 0; h < ng; ++h) {
#pragma GCC ivdep
      for (int64_t j = 0; j < TP; ++j) {
        const Side<T> q = side<ACT>(kp[j]);
        ps[h * TP + j] = q.s;
        prs[h * TP + j] = q.rs;
        pinv[h * TP + j] = q.inv;
        pd[h * TP + j] = dp[j];
        T kk = kp[j], dd = dp[j];
        next_diag<ACT>(cf, kk, dd);
        kp[j] = kk;
        dp[j] = dd;
      }
    }
    for (int64_t r = 0; r < QB; ++r) {
      T k1 = kq[r], d1 = dq[r];
      for (int32_t h = 0; h < ng; ++h) {
        const Side<T> p = side<ACT>(k1);
        const int64_t l = h * TP;
        pair_layer<ACT, GRAD, NTK>(cf, p, d1, ps + l, prs + l, pinv + l, pd + l, st.at(r * TP));
        next_diag<ACT>(cf, k1, d1);
      }
      kq[r] = k1;
      dq[r] = d1;
    }
  }
}

// Forward's reduction of one tile: acc[r c + cc] += sum_j K[r, j] w[i0 + j, cc] for the block's
// nq rows (per-row partial sums in T over the tile, then added to the double totals). Also the
// fused weights gradient of a GradX pass with out2 (the same code: the same values, bit for bit).
template <typename T>
void forward_tile(const T* KV, const T* w, int64_t c, int64_t i0, int64_t nt, int64_t nq, T* part, double* acc) {
  for (int64_t r = 0; r < nq; ++r) {
    const T* __restrict kv = KV + r * TP;
    double* ar = acc + r * c;
    if (c == 1) {
      const T* __restrict wv = w + i0;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < nt; ++j) s += kv[j] * wv[j];
      ar[0] += static_cast<double>(s);
    } else {
      T* __restrict pt = part;
      std::fill(pt, pt + c, T(0));
      for (int64_t j = 0; j < nt; ++j) {
        const T kk = kv[j];
        const T* __restrict wj = w + (i0 + j) * c;
#pragma omp simd
        for (int64_t cc = 0; cc < c; ++cc) pt[cc] += kk * wj[cc];
      }
      for (int64_t cc = 0; cc < c; ++cc) ar[cc] += static_cast<double>(pt[cc]);
    }
  }
}

// coef_qj = g_q . w_j (or the given matrix) of one block row over the tile, into co (0 past nt).
template <typename T>
void coef_row(const NngpParams<T>& p, int64_t q, int64_t i0, int64_t nt, T* __restrict co) {
  const int64_t c = p.c;
  if (p.coef) {
    const T* __restrict cq = p.coef + q * p.n + i0;
    for (int64_t j = 0; j < nt; ++j) co[j] = cq[j];
  } else if (c == 1) {
    const T gq = p.g[q];
    const T* __restrict wv = p.w + i0;
#pragma omp simd
    for (int64_t j = 0; j < nt; ++j) co[j] = gq * wv[j];
  } else {
    const T* __restrict gq = p.g + q * c;
    for (int64_t j = 0; j < nt; ++j) {
      const T* __restrict wj = p.w + (i0 + j) * c;
      T a = 0;
      for (int64_t cc = 0; cc < c; ++cc) a += gq[cc] * wj[cc];
      co[j] = a;
    }
  }
  for (int64_t j = nt; j < TP; ++j) co[j] = T(0);
}

// GradX's terms of one tile: accn[r] += sum_j coef dK/dnx, acc[r d + k] += sum_j coef dK/ds y_jk
// (the second by the micro-kernel on the tile's rows).
template <bool NTK, typename T>
void gradx_tile(const NngpParams<T>& p, const Packed<T>& pk, Scratch<T>& sc, int64_t q0, int64_t nq, int64_t i0,
                int64_t nt, T* part, double* acc, double* accn) {
  const T* KS = NTK ? sc.ts.data() : sc.as.data();
  const T* KX = NTK ? sc.tx.data() : sc.ax.data();
  T* __restrict CO = sc.CO.data();
  for (int64_t r = 0; r < QB; ++r) {
    T* __restrict co = CO + r * TP;
    const T* __restrict ks = KS + r * TP;
    const T* __restrict kx = KX + r * TP;
    if (r >= nq) {  // rows past the block: zero (the micro-kernel reads them)
      std::fill(co, co + TP, T(0));
      continue;
    }
    coef_row(p, q0 + r, i0, nt, co);  // then co dK/ds and sum coef dK/dnx
    T sn = 0;
#pragma omp simd reduction(+ : sn)
    for (int64_t j = 0; j < TP; ++j) {
      sn += co[j] * kx[j];
      co[j] *= ks[j];
    }
    accn[r] += static_cast<double>(sn);
  }
  // part[r dp + k] = sum_j co[r, j] y[i0 + j, k]
  micro_gemm(CO, TP, QB, pk.rows.data() + i0 * pk.dp, pk.dp, nt, pk.dp, part, pk.dp);
  for (int64_t r = 0; r < nq; ++r) {
    double* ar = acc + r * p.d;
    for (int64_t k = 0; k < p.d; ++k) ar[k] += static_cast<double>(part[r * pk.dp + k]);
  }
}

// The block's results from the double totals: Forward's (or the fused out2) K w, GradX's
// acc + 2 accn x_q.
template <bool GRADX, typename T>
void write_block(const NngpParams<T>& p, int64_t q0, int64_t nq, const double* acc, const double* accn,
                 const double* acc2) {
  const int64_t d = p.d, c = p.c;
  for (int64_t r = 0; r < nq; ++r) {
    if constexpr (GRADX) {
      const double* ar = acc + r * d;
      const T* xr = p.x + (q0 + r) * d;
      T* o = p.out + (q0 + r) * d;
      for (int64_t k = 0; k < d; ++k) o[k] = static_cast<T>(ar[k] + 2.0 * accn[r] * static_cast<double>(xr[k]));
      if (!p.out2) continue;
    }
    const double* a2 = GRADX ? acc2 + r * c : acc + r * c;
    T* o2 = (GRADX ? p.out2 : p.out) + (q0 + r) * c;
    for (int64_t cc = 0; cc < c; ++cc) o2[cc] = static_cast<T>(a2[cc]);
  }
}

template <Activation ACT, bool GRADX, bool NTK, typename T>
void run(const NngpParams<T>& p, const Packed<T>& pk, bool par) {
  const int64_t m = p.m, n = p.n, d = p.d, c = p.c;
  const Cfg<T> cf{p.depth, p.ntk, static_cast<T>(p.sigma_w2), static_cast<T>(p.sigma_b2),
                  static_cast<T>(1.0 / static_cast<double>(d))};
  const int64_t nblocks = (m + QB - 1) / QB;
  const bool matrix = p.mode == Mode::Matrix;
  const bool fused = GRADX && p.out2 != nullptr;  // GradX + Forward (K w into out2) in one pass
#pragma omp parallel if (par)
  {
    Scratch<T> sc;
    std::vector<T> part(static_cast<size_t>(std::max<int64_t>(QB * (GRADX ? pk.dp : 0), std::max<int64_t>(c, 1))));
    std::vector<double> acc(static_cast<size_t>(QB * (GRADX ? d : c))), accn(QB), acc2(fused ? QB * c : 0);
    T nxq[QB];
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t q0 = b * QB, nq = std::min(QB, m - q0);
      const T* xb = p.x + q0 * d;
      std::fill(acc.begin(), acc.end(), 0.0);
      std::fill(accn.begin(), accn.end(), 0.0);
      std::fill(acc2.begin(), acc2.end(), 0.0);
      for (int64_t r = 0; r < QB; ++r) {
        const T* xr = xb + std::min(r, nq - 1) * d;
        T sq = 0;
        for (int64_t k = 0; k < d; ++k) sq += xr[k] * xr[k];
        nxq[r] = sq;
      }
      for (int64_t t = 0; t < pk.ntiles; ++t) {
        const int64_t i0 = t * TP, nt = std::min(TP, n - i0);
        const T* V = pk.pts.data() + t * d * TP;
        micro_gemm(xb, d, nq, V, TP, d, TP, sc.S.data(), TP);
        recursion<ACT, GRADX, NTK>(cf, nxq, pk.nrm.data() + i0, sc);
        const T* KV = NTK ? sc.th.data() : sc.k12.data();
        if (matrix) {
          for (int64_t r = 0; r < nq; ++r) std::copy(KV + r * TP, KV + r * TP + nt, p.out + (q0 + r) * n + i0);
        } else if constexpr (GRADX) {
          if (fused) forward_tile(KV, p.w, c, i0, nt, nq, part.data(), acc2.data());
          gradx_tile<NTK>(p, pk, sc, q0, nq, i0, nt, part.data(), acc.data(), accn.data());
        } else {
          forward_tile(KV, p.w, c, i0, nt, nq, part.data(), acc.data());
        }
      }
      if (!matrix) write_block<GRADX>(p, q0, nq, acc.data(), accn.data(), acc2.data());
    }
  }
}

template <bool GRADX, bool NTK, typename T>
void dispatch_act(const NngpParams<T>& p, const Packed<T>& pk, bool par) {
  switch (p.act) {
    case Activation::Relu:
      run<Activation::Relu, GRADX, NTK>(p, pk, par);
      break;
    case Activation::Erf:
      run<Activation::Erf, GRADX, NTK>(p, pk, par);
      break;
    case Activation::Step:
      run<Activation::Step, GRADX, NTK>(p, pk, par);
      break;
  }
}

}  // namespace

template <typename T>
void nngp_matmul_cpu(const NngpParams<T>& p) {
  if (p.m == 0) return;
  const int64_t w = p.mode == Mode::GradX ? p.d : (p.mode == Mode::Matrix ? p.n : p.c);
  const int64_t w2 = p.mode == Mode::GradX && p.out2 ? p.c : 0;
  if (p.n == 0 || w == 0) {  // empty sums
    for (int64_t i = 0; i < p.m * w; ++i) p.out[i] = T(0);
    for (int64_t i = 0; i < p.m * w2; ++i) p.out2[i] = T(0);
    return;
  }
  // tiny problems run on one thread (a parallel region costs more than the work)
  const bool par = p.m > QB && static_cast<double>(p.m) * static_cast<double>(p.n) * static_cast<double>(p.d + 8) > 4e5;
  Packed<T> pk;
  pack_points(p.y, p.n, p.d, p.mode == Mode::GradX, pk, par && p.n > 4 * TP);
  const bool gradx = p.mode == Mode::GradX;
  if (gradx && p.ntk)
    dispatch_act<true, true>(p, pk, par);
  else if (gradx)
    dispatch_act<true, false>(p, pk, par);
  else if (p.ntk)
    dispatch_act<false, true>(p, pk, par);
  else
    dispatch_act<false, false>(p, pk, par);
}

template void nngp_matmul_cpu<float>(const NngpParams<float>&);
template void nngp_matmul_cpu<double>(const NngpParams<double>&);

}  // namespace kernelfuse::nngp
