// The tile walker's pieces for the CPU kernel sums (kernel_sum_cpu.cpp): what is fixed for a
// call (Geometry), the per-thread packed tile (Tile), packing, the distance stage of a register
// block, the profile stages and the partial accumulators of split points. Torch-free, internal.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernel_sum.h"
#include "kernel_sum_cpu_blocks.h"
#include "profiles.h"

namespace kernelfuse::kde::cpu {

constexpr double kNinf = -std::numeric_limits<double>::infinity();

template <typename T>
inline T guarded_exp(T e) {  // exp with a NaN exponent (inf - inf) counted as a zero term
  return e == e ? pm::exp(e) : T(0);
}

// ---- What is fixed for a call: sizes, the metric, packing scales, exact support, the split.
template <typename T>
struct Geometry {
  const KernelSumParams<T>& p;
  int64_t d, c, m, n;
  Metric met;
  bool euclid, hav, has_log, exact_mul = false, clamp = false;
  std::vector<T> ih, ipack, post;  // 1 / h; the packing scale; the position-gradient factor
  T thr, rfac, pp, inv_p;          // exact: inside iff D < thr; D -> r (s for euclidean) by rfac
  int nthreads;
  int64_t nqb, P = 1, tiles_per_part, ntasks;

  Geometry(const KernelSumParams<T>& q, bool compact)
      : p(q), d(q.d), c(q.c), m(q.m), n(q.n), met(q.metric), ih(q.d), ipack(q.d), post(q.d) {
    euclid = met == Metric::Euclidean, hav = met == Metric::Haversine;
    has_log = p.plw != nullptr || p.qlw != nullptr;
    // Exact support test (kernel_sum.h): unscaled packing, distances compared with thr.
    const bool exact = compact && p.h_stride == 0 && d > 0;
    const bool unscaled = exact || hav;
    for (int64_t k = 0; k < d; ++k) {
      ih[k] = T(1) / p.h[p.h_stride * k];
      ipack[k] = unscaled ? T(1) : ih[k];
      post[k] = T(2) * ih[k] * ((unscaled && (euclid || hav)) ? ih[k] : T(1));
    }
    const T h0 = d > 0 ? T(p.h[0]) : T(1);
    thr = euclid ? h0 * h0 : h0;
    const T rscale = unscaled ? (euclid ? T(1) / (h0 * h0) : T(1) / h0) : T(1);
    pp = T(p.p), inv_p = T(1) / T(p.p);
    // exact support by one multiplication where a factor with the exact rounding exists
    T rs_exact = rscale;
    exact_mul = exact && exact_scale(thr, rs_exact);
    rfac = exact_mul ? rs_exact : rscale;
    clamp = exact && !exact_mul;
    // Few query blocks (small m): split the points of each block over P tasks too, so every
    // thread has work; the P partial accumulators of a query are combined at the end.
    nthreads = omp_get_max_threads();
    nqb = (m + QB - 1) / QB;
    const int64_t ntiles = (n + TP - 1) / TP;
    if (p.batch * nqb < 2 * nthreads && ntiles >= 8)
      P = std::min<int64_t>((2 * nthreads + p.batch * nqb - 1) / (p.batch * nqb), ntiles / 4);
    tiles_per_part = (ntiles + P - 1) / P;
    ntasks = p.batch * nqb * P;
  }
  // Batch b of an optional (batch, rows, cols) operand.
  template <typename U>
  const U* at(const U* ptr, int64_t bstride, int64_t b) const {
    return ptr ? ptr + b * bstride : nullptr;
  }
};

// ---- Per-thread scratch: the packed queries and tile, the distances, the profile values.
template <typename T>
struct Tile {
  std::vector<T> Ub, Vb, Sb, valb, dvalb, PWb, PLWb, Rb, DPb, Fb;
  T *U, *V, *S, *val, *dval, *PW, *PLW, *R, *DP, *F;
  int64_t b = 0, q0 = 0, qn = 0, i0 = 0, nt = 0, np = 0;                 // the task and the tile
  const T *pw = nullptr, *plw = nullptr, *qw = nullptr, *qlw = nullptr;  // batch b's factors

  Tile(const Geometry<T>& g, bool metric_bufs)
      : Ub(QB * g.d),
        Vb(g.d * TP),
        Sb(QR * TP),
        valb(TP),
        dvalb(TP),
        PWb(g.c * TP),
        PLWb(g.c * TP),
        Rb(metric_bufs ? QR * TP : 0),
        DPb(metric_bufs ? QR * TP : 0),
        Fb(metric_bufs ? QR * TP : 0) {
    U = Ub.data(), V = Vb.data(), S = Sb.data(), val = valb.data(), dval = dvalb.data();
    PW = PWb.data(), PLW = PLWb.data(), R = Rb.data(), DP = DPb.data(), F = Fb.data();
  }
};

// Pack the task's queries scaled by the packing scale; pad the last register block with the last query.
template <typename T>
void pack_queries(const Geometry<T>& g, Tile<T>& t) {
  const T* x = g.p.x + t.b * g.p.x_bstride;
  for (int64_t r = 0; r < QB; ++r) {
    const T* xr = x + (t.q0 + std::min(r, t.qn - 1)) * g.d;
    for (int64_t k = 0; k < g.d; ++k) t.U[r * g.d + k] = xr[k] * g.ipack[k];
  }
}

// Pack points [i0, i0 + nt) as [d][TP] (zero padded to np) and their factors as [c][TP].
template <typename T>
void pack_tile(const Geometry<T>& g, Tile<T>& t) {
  const int64_t d = g.d, c = g.c, i0 = t.i0, nt = t.nt, np = t.np;
  const T* y = g.p.y + t.b * g.p.y_bstride;
  for (int64_t k = 0; k < d; ++k) {
    T* Vk = t.V + k * TP;
    for (int64_t ii = 0; ii < nt; ++ii) Vk[ii] = y[(i0 + ii) * d + k] * g.ipack[k];
    for (int64_t ii = nt; ii < np; ++ii) Vk[ii] = T(0);
  }
  if (t.pw)
    for (int64_t ii = 0; ii < nt; ++ii)
      for (int64_t col = 0; col < c; ++col) t.PW[col * TP + ii] = t.pw[(i0 + ii) * c + col];
  if (t.plw)
    for (int64_t ii = 0; ii < nt; ++ii)
      for (int64_t col = 0; col < c; ++col) t.PLW[col * TP + ii] = t.plw[(i0 + ii) * c + col];
}

// s = (dist / h)^2 of register block g into the rows of S. With keep (Backward, metrics other
// than euclidean) also R = r and DP = the distance in packed units, for the position gradients.
template <typename T>
void distances(const Geometry<T>& g, Tile<T>& t, int64_t gq, bool keep) {
  const T* U = t.U + gq * g.d;
  T* S = t.S;
  const int64_t np = t.np;
  if (g.euclid) {
    if (g.exact_mul)
      reg_block<T, SqStep, 1>(U, g.d, t.V, np, S, g.thr, g.rfac);
    else if (g.clamp)
      reg_block<T, SqStep, 2>(U, g.d, t.V, np, S, g.thr, g.rfac);
    else
      reg_block<T, SqStep>(U, g.d, t.V, np, S);
    return;
  }
  if (g.met == Metric::Manhattan)
    reg_block<T, AbsStep>(U, g.d, t.V, np, S);
  else if (g.met == Metric::Chebyshev)
    reg_block<T, MaxStep>(U, g.d, t.V, np, S);
  else if (g.met == Metric::Minkowski)
    powdist_block<T>(U, g.d, t.V, np, g.pp, S, t.val, t.dval);
  else
    havdist_block<T>(U, t.V, np, S, t.val);
  if (g.met == Metric::Minkowski)
    for (int64_t e = 0; e < QR * TP; ++e) S[e] = std::pow(S[e], g.inv_p);
  const T f = g.hav && !(g.exact_mul || g.clamp) ? g.ih[0] : g.rfac;
  const bool clamp = g.clamp;
  const T thr = g.thr;
  if (keep) {
    T* __restrict R = t.R;
    T* __restrict DP = t.DP;
#pragma omp simd
    for (int64_t e = 0; e < QR * TP; ++e) {
      DP[e] = S[e];
      R[e] = to_r(S[e], clamp, thr, f);
      S[e] = R[e] * R[e];
    }
  } else {
#pragma omp simd
    for (int64_t e = 0; e < QR * TP; ++e) {
      const T r = to_r(S[e], clamp, thr, f);
      S[e] = r * r;
    }
  }
}

// ---- Profile stages over a tile row (vectorised); the self pair gets `self_value`.
template <class Prof, typename T>
void eval_logk(const T* __restrict s, int64_t nt, T* __restrict val, int64_t self) {
#pragma omp simd
  for (int64_t ii = 0; ii < nt; ++ii) val[ii] = Prof::logk(s[ii]);
  if (self >= 0) val[self] = -std::numeric_limits<T>::infinity();
}
template <class Prof, typename T>
void eval_k(const T* __restrict s, int64_t nt, T* __restrict val, int64_t self) {
#pragma omp simd
  for (int64_t ii = 0; ii < nt; ++ii) val[ii] = Prof::k(s[ii]);
  if (self >= 0) val[self] = T(0);
}

// ---- Partial accumulators of the split points (P > 1): [(b*m + q)*P + part][w].
struct Partials {
  int64_t P, w;
  std::vector<double> acc, acc2, mx;
  Partials(int64_t P_, int64_t nq, int64_t w_, int64_t c, bool lse)
      : P(P_),
        w(w_),
        acc(P_ > 1 ? nq * P_ * w_ : 0),
        acc2(P_ > 1 && lse ? nq * P_ * c : 0),
        mx(P_ > 1 && lse ? nq * P_ * c : 0) {}
  // Sum of the P partials of query bq into a (Sum, Backward).
  void sum(int64_t bq, double* a) const {
    const double* pa = acc.data() + bq * P * w;
    for (int64_t k = 0; k < w; ++k) {
      double t = 0;
      for (int64_t j = 0; j < P; ++j) t += pa[j * w + k];
      a[k] = t;
    }
  }
};

}  // namespace kernelfuse::kde::cpu
