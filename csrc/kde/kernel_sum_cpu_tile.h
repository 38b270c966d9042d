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
  T *U, *S, *val, *dval, *R, *DP, *F;
  const T *V, *PW, *PLW;  // the packed tile: the Tile's own buffers or a Prepacked tile (read only)
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
  const int64_t d = g.d;
  const T* __restrict x = g.p.x + t.b * g.p.x_bstride;
  const T* __restrict ip = g.ipack.data();
  T* __restrict U = t.U;
  for (int64_t r = 0; r < QB; ++r) {
    const T* __restrict xr = x + (t.q0 + std::min(r, t.qn - 1)) * d;
#pragma omp simd
    for (int64_t k = 0; k < d; ++k) U[r * d + k] = xr[k] * ip[k];
  }
}

// Pack points [i0, i0 + nt) of batch b as [d][TP] (zero padded to np) and their factors as [c][TP].
// Local restrict pointers: through the Geometry reference the compiler would reload the scale on
// every store (a store could alias it).
template <typename T>
void pack_points(const Geometry<T>& g, int64_t b, int64_t i0, int64_t nt, int64_t np, T* __restrict V, T* __restrict PW,
                 T* __restrict PLW) {
  const int64_t d = g.d, c = g.c;
  const T* __restrict y = g.p.y + b * g.p.y_bstride + i0 * d;
  const T* __restrict ip = g.ipack.data();
  for (int64_t k = 0; k < d; ++k) {
    T* __restrict Vk = V + k * TP;
    const T s = ip[k];
    for (int64_t ii = 0; ii < nt; ++ii) Vk[ii] = y[ii * d + k] * s;
    for (int64_t ii = nt; ii < np; ++ii) Vk[ii] = T(0);
  }
  const T* const srcs[2] = {g.at(g.p.pw, g.p.pw_bstride, b), g.at(g.p.plw, g.p.plw_bstride, b)};
  T* const dsts[2] = {PW, PLW};
  for (int pass = 0; pass < 2; ++pass) {
    if (!srcs[pass]) continue;
    const T* __restrict src = srcs[pass] + i0 * c;
    T* __restrict dst = dsts[pass];
    for (int64_t ii = 0; ii < nt; ++ii)
      for (int64_t col = 0; col < c; ++col) dst[col * TP + ii] = src[ii * c + col];
  }
}

// The points packed once per call, tile by tile ([batch][tile][d + 2c][TP]), when more than one
// task reads each tile (several query blocks) and the copy is at most kPrepackBytes; otherwise
// every task packs its tiles itself (Tile's buffers). Packing per task was ~30% of a d = 64 sum
// at m = 1000 (32 query blocks, each repacking all n points).
constexpr double kPrepackBytes = 64.0 * 1024 * 1024;

template <typename T>
struct Prepacked {
  int64_t ntiles = 0, stride = 0;  // tiles per batch; elements per tile
  std::vector<T> buf;
  explicit Prepacked(const Geometry<T>& g) {
    ntiles = (g.n + TP - 1) / TP;
    stride = (g.d + 2 * g.c) * TP;
    const double bytes = double(g.p.batch) * double(ntiles) * double(stride) * sizeof(T);
    if (g.nqb > 1 && ntiles > 0 && bytes <= kPrepackBytes) buf.resize(size_t(g.p.batch * ntiles * stride));
  }
  bool on() const { return !buf.empty(); }
  // Fill (inside the parallel region; the omp for ends with a barrier).
  void fill(const Geometry<T>& g) {
    if (!on()) return;
#pragma omp for schedule(static)
    for (int64_t bt = 0; bt < g.p.batch * ntiles; ++bt) {
      const int64_t b = bt / ntiles, i0 = (bt % ntiles) * TP, nt = std::min(TP, g.n - i0);
      T* V = buf.data() + bt * stride;
      pack_points(g, b, i0, nt, (nt + STRIP - 1) / STRIP * STRIP, V, V + g.d * TP, V + (g.d + g.c) * TP);
    }
  }
};

// Point the tile at its packed points (prepacked, or packed now into the Tile's own buffers).
template <typename T>
void pack_tile(const Geometry<T>& g, const Prepacked<T>& pre, Tile<T>& t) {
  if (pre.on()) {
    const T* V = pre.buf.data() + (t.b * pre.ntiles + t.i0 / TP) * pre.stride;
    t.V = V, t.PW = V + g.d * TP, t.PLW = V + (g.d + g.c) * TP;
    return;
  }
  t.V = t.Vb.data(), t.PW = t.PWb.data(), t.PLW = t.PLWb.data();
  pack_points(g, t.b, t.i0, t.nt, t.np, t.Vb.data(), t.PWb.data(), t.PLWb.data());
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
