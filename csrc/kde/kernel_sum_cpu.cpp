// CPU kernel for fused kernel sums (see kernel_sum.h). Torch-free.
//
// One tile walker (walk / run_task) templated on a reduction policy, itself templated on the
// kernel profile (profiles.h): Sum, LogSumExp and Backward are the policies, each a small struct
// with begin_task / accumulate (one query row against a tile) / end_block / end_tile / end_task
// (write, or store partials) / merge_query (combine partials) / finish.
//
// Work is split into tasks of QB queries (OpenMP, dynamic schedule). A task walks the points in
// tiles of TP: it packs the tile scaled by 1/h in structure-of-arrays form, computes distances
// for 4 queries x 16 points at a time in registers (explicit differences, so no cancellation;
// kernel_sum_cpu_blocks.h), and hands each query row of the block to the policy, which evaluates
// the profile over the tile with branch-free vectorised code and reduces it into per-query float
// partials added to double accumulators (blocked accumulation: float32 results stay within ~1e-6
// of a float64 computation). Memory is O(threads * TP * (d + c)), plus the points packed once per
// call when that copy is at most 64 MiB (Prepacked); the m x n matrix never exists.
// Backward produces the gradients for x, y and the weights in the same single pass: the
// point-side sums go to a tile buffer flushed once per tile into per-thread double accumulators,
// reduced at the end (O(threads * n * (d + c)) memory). With few query blocks the points of a
// block are split over P tasks too (partial accumulators, merged at the end).
// With a compact kernel and a scalar bandwidth the tile is packed unscaled and dist < h decided
// exactly (kernel_sum.h).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernel_sum.h"
#include "kernel_sum_cpu_tile.h"
#include "profiles.h"

namespace kernelfuse::kde {
namespace cpu {
namespace {

// ---- Reduction policies. Each has Shared (the call's buffers), a per-thread instance with the
// task's accumulators, and the hooks the walker calls.

// Sum: out[q,c] = qw[q,c] sum_i pw[i,c] exp(qlw[q,c] + plw[i,c]) k(s_qi).
template <class Prof, typename T>
struct SumReduction {
  static constexpr bool kBackward = false;
  struct Shared {
    Partials part;
    explicit Shared(const Geometry<T>& g) : part(g.P, g.p.batch * g.m, g.c, g.c, false) {}
  };
  const Geometry<T>& g;
  Shared& sh;
  std::vector<double> acc;  // [QB][c]
  SumReduction(const Geometry<T>& g_, Shared& s, int) : g(g_), sh(s), acc(QB * g_.c) {}

  void begin_task() { std::fill(acc.begin(), acc.end(), 0.0); }
  void begin_tile(Tile<T>&) {}
  void accumulate(Tile<T>& t, int64_t qi, int64_t r, int64_t self) {
    const int64_t c = g.c, nt = t.nt, q = t.q0 + qi;
    const T* __restrict s = t.S + r * TP;
    const T* __restrict val = t.val;
    if (g.has_log)
      eval_logk<Prof>(s, nt, t.val, self);
    else
      eval_k<Prof>(s, nt, t.val, self);
    for (int64_t col = 0; col < c; ++col) {
      T part = 0;
      const T* __restrict pwc = t.PW + col * TP;
      const T* __restrict plwc = t.PLW + col * TP;
      if (!g.has_log) {
        if (t.pw) {
#pragma omp simd reduction(+ : part)
          for (int64_t ii = 0; ii < nt; ++ii) part += pwc[ii] * val[ii];
        } else {
#pragma omp simd reduction(+ : part)
          for (int64_t ii = 0; ii < nt; ++ii) part += val[ii];
        }
      } else {
        const T ql = t.qlw ? t.qlw[q * c + col] : T(0);
        for (int64_t ii = 0; ii < nt; ++ii) {
          const T e = ql + (t.plw ? plwc[ii] : T(0)) + val[ii];
          part += (t.pw ? pwc[ii] : T(1)) * guarded_exp(e);
        }
      }
      acc[qi * c + col] += static_cast<double>(part);
    }
  }
  void end_block(Tile<T>&, int64_t, int64_t) {}
  void end_tile(Tile<T>&) {}
  void end_task(Tile<T>& t, int64_t part) {
    for (int64_t qi = 0; qi < t.qn; ++qi) {
      const int64_t bq = t.b * g.m + t.q0 + qi;
      if (g.P > 1)
        std::copy_n(acc.data() + qi * g.c, g.c, sh.part.acc.data() + (bq * g.P + part) * g.c);
      else
        write(bq, acc.data() + qi * g.c);
    }
  }
  void merge_query(int64_t bq) {
    std::vector<double>& a = acc;  // scratch (the tasks are done)
    sh.part.sum(bq, a.data());
    write(bq, a.data());
  }
  void write(int64_t bq, const double* a) const {
    const int64_t b = bq / g.m, q = bq % g.m, c = g.c;
    const T* qw = g.at(g.p.qw, g.p.qw_bstride, b);
    T* out = g.p.out + bq * c;
    for (int64_t col = 0; col < c; ++col) out[col] = static_cast<T>(a[col] * (qw ? double(qw[q * c + col]) : 1.0));
  }
  void finish() {}
};

// LogSumExp: out[q,c] = qlw[q,c] + log sum_i exp(plw[i,c] + log k(s_qi)); aux: the squared twin
// log sum_i exp(2 (plw[i,c] + log k(s_qi))). Per tile a max-shifted sum, merged into
// (max, double sum) per query.
template <class Prof, typename T>
struct LseReduction {
  static constexpr bool kBackward = false;
  struct Shared {
    Partials part;
    explicit Shared(const Geometry<T>& g) : part(g.P, g.p.batch * g.m, g.c, g.c, true) {}
  };
  const Geometry<T>& g;
  Shared& sh;
  std::vector<double> acc, acc2, mx;  // [QB][c]: sum exp(t - mx), sum exp(2 (t - mx)), running max
  LseReduction(const Geometry<T>& g_, Shared& s, int) : g(g_), sh(s), acc(QB * g_.c), acc2(QB * g_.c), mx(QB * g_.c) {}

  void begin_task() {
    std::fill(acc.begin(), acc.end(), 0.0);
    std::fill(acc2.begin(), acc2.end(), 0.0);
    std::fill(mx.begin(), mx.end(), kNinf);
  }
  void begin_tile(Tile<T>&) {}
  void accumulate(Tile<T>& t, int64_t qi, int64_t r, int64_t self) {
    const int64_t nt = t.nt;
    eval_logk<Prof>(t.S + r * TP, nt, t.val, self);
    const T* __restrict val = t.val;
    for (int64_t col = 0; col < g.c; ++col) {
      T* __restrict v = t.dval;  // scratch: plw + log k
      const T* __restrict plwc = t.PLW + col * TP;
      T tmax = -std::numeric_limits<T>::infinity();
      if (t.plw) {
#pragma omp simd reduction(max : tmax)
        for (int64_t ii = 0; ii < nt; ++ii) {
          v[ii] = plwc[ii] + val[ii];
          tmax = std::max(tmax, v[ii]);
        }
      } else {
#pragma omp simd reduction(max : tmax)
        for (int64_t ii = 0; ii < nt; ++ii) {
          v[ii] = val[ii];
          tmax = std::max(tmax, v[ii]);
        }
      }
      if (!(tmax > -std::numeric_limits<T>::infinity())) continue;  // all -inf (or NaN)
      T s1 = 0, s2 = 0;
      if (g.p.aux) {
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t ii = 0; ii < nt; ++ii) {
          const T e = pm::exp(v[ii] - tmax);
          s1 += e;
          s2 += e * e;
        }
      } else {
#pragma omp simd reduction(+ : s1)
        for (int64_t ii = 0; ii < nt; ++ii) s1 += pm::exp(v[ii] - tmax);
      }
      push(qi * g.c + col, tmax, s1, s2);
    }
  }
  // Fold a tile's (max tm, sums s1, s2) into the running state of slot i.
  void push(int64_t i, double tm, double s1, double s2) {
    double &M0 = mx[i], &A1 = acc[i], &A2 = acc2[i];
    if (tm > M0) {
      const double f = M0 == kNinf ? 0.0 : std::exp(M0 - tm);
      A1 = A1 * f + s1;
      A2 = A2 * f * f + s2;
      M0 = tm;
    } else {
      const double f = std::exp(tm - M0);
      A1 += s1 * f;
      A2 += s2 * f * f;
    }
  }
  void end_block(Tile<T>&, int64_t, int64_t) {}
  void end_tile(Tile<T>&) {}
  void end_task(Tile<T>& t, int64_t part) {
    const int64_t c = g.c;
    for (int64_t qi = 0; qi < t.qn; ++qi) {
      const int64_t bq = t.b * g.m + t.q0 + qi;
      if (g.P > 1) {
        const int64_t slot = (bq * g.P + part) * c;
        std::copy_n(acc.data() + qi * c, c, sh.part.acc.data() + slot);
        std::copy_n(acc2.data() + qi * c, c, sh.part.acc2.data() + slot);
        std::copy_n(mx.data() + qi * c, c, sh.part.mx.data() + slot);
      } else {
        write(bq, acc.data() + qi * c, acc2.data() + qi * c, mx.data() + qi * c);
      }
    }
  }
  void merge_query(int64_t bq) {
    const Partials& pt = sh.part;
    const int64_t c = g.c, P = g.P;
    for (int64_t col = 0; col < c; ++col) {  // scratch row 0 of the (finished) task state
      double M0 = kNinf;
      for (int64_t j = 0; j < P; ++j) M0 = std::max(M0, pt.mx[(bq * P + j) * c + col]);
      double A1 = 0, A2 = 0;
      for (int64_t j = 0; M0 != kNinf && j < P; ++j) {
        const double mj = pt.mx[(bq * P + j) * c + col];
        if (mj == kNinf) continue;
        const double f = std::exp(mj - M0);
        A1 += pt.acc[(bq * P + j) * c + col] * f;
        A2 += pt.acc2[(bq * P + j) * c + col] * f * f;
      }
      acc[col] = A1, acc2[col] = A2, mx[col] = M0;
    }
    write(bq, acc.data(), acc2.data(), mx.data());
  }
  void write(int64_t bq, const double* a, const double* a2, const double* m0) const {
    const int64_t b = bq / g.m, q = bq % g.m, c = g.c;
    const T* qlw = g.at(g.p.qlw, g.p.qlw_bstride, b);
    T* out = g.p.out + bq * c;
    T* aux = g.p.aux ? g.p.aux + bq * c : nullptr;
    for (int64_t col = 0; col < c; ++col) {
      const double M0 = m0[col];
      const double ql = qlw ? double(qlw[q * c + col]) : 0.0;
      out[col] = static_cast<T>(M0 == kNinf ? kNinf : ql + M0 + std::log(a[col]));
      if (aux) aux[col] = static_cast<T>(M0 == kNinf ? kNinf : 2 * M0 + std::log(a2[col]));
    }
  }
  void finish() {}
};

// Backward: every gradient of Sum / LogSumExp in one pass (kernel_sum.h). Per query the x-side
// sums 2 inv_h^2 sum_i coef_qi (x_q - y_i) (or ds/dx_q), per point the y-side and weight sums in
// a tile buffer flushed into per-thread double accumulators, reduced over threads in finish().
template <class Prof, typename T>
struct BackwardReduction {
  static constexpr bool kBackward = true;
  struct Shared {
    bool need_y, need_w, need_h;
    int64_t accw;  // per query: d position sums (+ 1: sum coef s for the bandwidth)
    Partials part;
    std::vector<std::vector<double>> ybuf, wbuf;  // per thread (batch, n, d) / (batch, n, c)
    explicit Shared(const Geometry<T>& g)
        : need_y(g.p.out_y != nullptr),
          need_w(g.p.out_w != nullptr),
          need_h(g.p.out_h != nullptr),
          accw(g.d + (need_h ? 1 : 0)),
          part(g.P, g.p.batch * g.m, accw, g.c, false),
          ybuf(need_y ? g.nthreads : 0),
          wbuf(need_w ? g.nthreads : 0) {}
  };
  const Geometry<T>& g;
  Shared& sh;
  std::vector<double> acc;       // [QB][accw]
  std::vector<T> GYb, GWb, SVb;  // tile buffers: y-side [d][TP], weight [c][TP], s rows [QR][TP]
  double *ytot = nullptr, *wtot = nullptr;

  BackwardReduction(const Geometry<T>& g_, Shared& s, int tid)
      : g(g_),
        sh(s),
        acc(QB * s.accw),
        GYb(s.need_y ? g_.d * TP : 0),
        GWb(s.need_w ? g_.c * TP : 0),
        SVb(s.need_h ? QR * TP : 0) {
    if (sh.need_y) sh.ybuf[tid].assign(g.p.batch * g.n * g.d, 0.0), ytot = sh.ybuf[tid].data();
    if (sh.need_w) sh.wbuf[tid].assign(g.p.batch * g.n * g.c, 0.0), wtot = sh.wbuf[tid].data();
  }
  static void no_queries(const Geometry<T>& g) {  // the point-side gradients are zeros
    const auto& p = g.p;
    if (p.out_y) std::fill(p.out_y, p.out_y + p.batch * g.n * g.d, T(0));
    if (p.out_w) std::fill(p.out_w, p.out_w + p.batch * g.n * g.c, T(0));
  }

  void begin_task() { std::fill(acc.begin(), acc.end(), 0.0); }
  void begin_tile(Tile<T>&) {
    std::fill(GYb.begin(), GYb.end(), T(0));
    std::fill(GWb.begin(), GWb.end(), T(0));
  }
  // Profile values of a row: val (log k, or k where the weight gradient needs it), dval (dlog k/ds
  // in the log domain, else dk/ds).
  void profile_row(const T* __restrict s, int64_t nt, T* __restrict val, T* __restrict dval, int64_t self) const {
    if (g.has_log) {
      eval_logk<Prof>(s, nt, val, self);
#pragma omp simd
      for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = Prof::dlogk(s[ii]);
    } else if (sh.need_w) {
      eval_k<Prof>(s, nt, val, self);  // k is in val already
#pragma omp simd
      for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = Prof::dk_given_k(s[ii], val[ii]);
    } else {
#pragma omp simd
      for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = Prof::dk(s[ii]);
    }
    if (self >= 0) dval[self] = T(0);
  }
  // coef_i = dk/ds * sum_c qw pw [exp(qlw + plw + log k)] into the row's S (s is consumed);
  // the point-side weight sums to GW.
  void accumulate(Tile<T>& t, int64_t qi, int64_t r, int64_t self) {
    const int64_t nt = t.nt, c = g.c, q = t.q0 + qi;
    T* __restrict coef = t.S + r * TP;
    const T* __restrict val = t.val;
    const T* __restrict dval = t.dval;
    T* __restrict GW = GWb.data();
    profile_row(coef, nt, t.val, t.dval, self);
    if (sh.need_h) std::copy_n(coef, nt, SVb.data() + r * TP);
    if (!g.has_log && c == 1) {
      const T a = t.qw ? t.qw[q] : T(1);
      if (t.pw) {
#pragma omp simd
        for (int64_t ii = 0; ii < nt; ++ii) coef[ii] = a * t.PW[ii] * dval[ii];
      } else {
#pragma omp simd
        for (int64_t ii = 0; ii < nt; ++ii) coef[ii] = a * dval[ii];
      }
      if (sh.need_w) {
#pragma omp simd
        for (int64_t ii = 0; ii < nt; ++ii) GW[ii] += a * val[ii];
      }
    } else {
      for (int64_t ii = 0; ii < nt; ++ii) {
        T a = 0;
        for (int64_t col = 0; col < c; ++col) {
          const T qwc = t.qw ? t.qw[q * c + col] : T(1);
          const T pwc = t.pw ? t.PW[col * TP + ii] : T(1);
          if (g.has_log) {  // e = exp(qlw + plw + log k), paired with dlog k / ds
            const T e =
                guarded_exp((t.qlw ? t.qlw[q * c + col] : T(0)) + (t.plw ? t.PLW[col * TP + ii] : T(0)) + val[ii]);
            a += qwc * pwc * e;
            if (sh.need_w) GW[col * TP + ii] += qwc * e;
          } else {  // linear domain: paired with dk / ds
            a += qwc * pwc;
            if (sh.need_w) GW[col * TP + ii] += qwc * val[ii];
          }
        }
        coef[ii] = a * dval[ii];
      }
    }
    if (sh.need_h) {  // sum_i coef_qi s_qi (bandwidth gradient of a scalar h)
      const T* __restrict sv = SVb.data() + r * TP;
      T hs = 0;
#pragma omp simd reduction(+ : hs)
      for (int64_t ii = 0; ii < nt; ++ii) hs += coef[ii] * sv[ii];
      acc[qi * sh.accw + g.d] += static_cast<double>(hs);
    }
  }
  // Position gradients of the register block, coef rows in S: the x side reduces over the tile,
  // the y side accumulates into the tile buffer (one load/store per 4 queries).
  void end_block(Tile<T>& t, int64_t gq, int64_t nr) {
    const int64_t nt = t.nt, d = g.d, accw = sh.accw;
    T* S = t.S;
    for (int64_t r = nr; r < QR; ++r) std::fill(S + r * TP, S + r * TP + nt, T(0));
    T* GY = sh.need_y ? GYb.data() : nullptr;
    if (!g.euclid) {
      metric_grads<T>(g.met, t.U + gq * d, d, t.V, nt, S, t.R, t.DP, t.F, g.pp, nr, GY, acc.data() + gq * accw, accw);
      return;
    }
    const T* __restrict c0 = S;
    const T* __restrict c1 = S + TP;
    const T* __restrict c2 = S + 2 * TP;
    const T* __restrict c3 = S + 3 * TP;
    const T* U = t.U + gq * d;
    for (int64_t k = 0; k < d; ++k) {
      const T u0 = U[k], u1 = U[d + k], u2 = U[2 * d + k], u3 = U[3 * d + k];
      const T* __restrict Vk = t.V + k * TP;
      T p0 = 0, p1 = 0, p2 = 0, p3 = 0;
      if (GY) {
        T* __restrict GYk = GY + k * TP;
#pragma omp simd reduction(+ : p0, p1, p2, p3)
        for (int64_t ii = 0; ii < nt; ++ii) {
          const T v = Vk[ii];
          const T t0 = c0[ii] * (u0 - v), t1 = c1[ii] * (u1 - v), t2 = c2[ii] * (u2 - v), t3 = c3[ii] * (u3 - v);
          p0 += t0;
          p1 += t1;
          p2 += t2;
          p3 += t3;
          GYk[ii] -= (t0 + t1) + (t2 + t3);
        }
      } else {
#pragma omp simd reduction(+ : p0, p1, p2, p3)
        for (int64_t ii = 0; ii < nt; ++ii) {
          const T v = Vk[ii];
          p0 += c0[ii] * (u0 - v);
          p1 += c1[ii] * (u1 - v);
          p2 += c2[ii] * (u2 - v);
          p3 += c3[ii] * (u3 - v);
        }
      }
      const T parts[QR] = {p0, p1, p2, p3};
      for (int64_t r = 0; r < nr; ++r) acc[(gq + r) * accw + k] += static_cast<double>(parts[r]);
    }
  }
  // Flush the tile's point-side sums into this thread's accumulators.
  void end_tile(Tile<T>& t) {
    const int64_t d = g.d, c = g.c, base = t.b * g.n + t.i0;
    if (sh.need_y)
      for (int64_t ii = 0; ii < t.nt; ++ii)
        for (int64_t k = 0; k < d; ++k) ytot[(base + ii) * d + k] += GYb[k * TP + ii];
    if (sh.need_w)
      for (int64_t ii = 0; ii < t.nt; ++ii)
        for (int64_t col = 0; col < c; ++col) wtot[(base + ii) * c + col] += GWb[col * TP + ii];
  }
  void end_task(Tile<T>& t, int64_t part) {
    const int64_t accw = sh.accw;
    for (int64_t qi = 0; qi < t.qn; ++qi) {
      const int64_t bq = t.b * g.m + t.q0 + qi;
      if (g.P > 1)
        std::copy_n(acc.data() + qi * accw, accw, sh.part.acc.data() + (bq * g.P + part) * accw);
      else
        write(bq, acc.data() + qi * accw);
    }
  }
  void merge_query(int64_t bq) {
    sh.part.sum(bq, acc.data());
    write(bq, acc.data());
  }
  void write(int64_t bq, const double* a) const {
    if (sh.need_h) g.p.out_h[bq] = static_cast<T>(a[g.d]);
    if (!g.p.out) return;
    T* out = g.p.out + bq * g.d;
    for (int64_t k = 0; k < g.d; ++k) out[k] = static_cast<T>(double(g.post[k]) * a[k]);
  }
  // Reduce the per-thread point-side accumulators (all threads' tasks are done: implicit barrier).
  void finish() {
    if (!sh.need_y && !sh.need_w) return;
    const int64_t d = g.d, c = g.c;
#pragma omp for schedule(static)
    for (int64_t bi = 0; bi < g.p.batch * g.n; ++bi) {
      for (int64_t k = 0; sh.need_y && k < d; ++k) {
        double t = 0;
        for (int th = 0; th < g.nthreads; ++th) t += sh.ybuf[th][bi * d + k];
        g.p.out_y[bi * d + k] = static_cast<T>(double(g.post[k]) * t);
      }
      for (int64_t col = 0; sh.need_w && col < c; ++col) {
        double t = 0;
        for (int th = 0; th < g.nthreads; ++th) t += sh.wbuf[th][bi * c + col];
        g.p.out_w[bi * c + col] = static_cast<T>(t);
      }
    }
  }
};

// ---- The walker: one task = QB queries of one batch against one part of the points.
template <class Red, typename T>
void run_task(const Geometry<T>& g, const Prepacked<T>& pre, Tile<T>& t, Red& red, int64_t task) {
  const auto& p = g.p;
  const int64_t part = task % g.P, bq = task / g.P;
  t.b = bq / g.nqb, t.q0 = (bq % g.nqb) * QB, t.qn = std::min(QB, g.m - t.q0);
  const int64_t ibeg = part * g.tiles_per_part * TP, iend = std::min(g.n, (part + 1) * g.tiles_per_part * TP);
  t.pw = g.at(p.pw, p.pw_bstride, t.b), t.plw = g.at(p.plw, p.plw_bstride, t.b);
  t.qw = g.at(p.qw, p.qw_bstride, t.b), t.qlw = g.at(p.qlw, p.qlw_bstride, t.b);
  red.begin_task();
  pack_queries(g, t);
  for (t.i0 = ibeg; t.i0 < iend; t.i0 += TP) {
    t.nt = std::min(TP, iend - t.i0);
    t.np = (t.nt + STRIP - 1) / STRIP * STRIP;
    pack_tile(g, pre, t);
    red.begin_tile(t);
    for (int64_t gq = 0; gq < t.qn; gq += QR) {
      distances(g, t, gq, Red::kBackward && !g.euclid);
      for (int64_t r = 0; r < QR && gq + r < t.qn; ++r) {
        const int64_t q = t.q0 + gq + r;
        const int64_t self = (p.exclude_self && q >= t.i0 && q < t.i0 + t.nt) ? q - t.i0 : -1;
        red.accumulate(t, gq + r, r, self);
      }
      red.end_block(t, gq, std::min(QR, t.qn - gq));
    }
    red.end_tile(t);
  }
  red.end_task(t, part);
}

template <class Red, typename T>
void walk(const Geometry<T>& g) {
  typename Red::Shared sh(g);
  Prepacked<T> pre(g);
#pragma omp parallel num_threads(g.nthreads)
  {
    pre.fill(g);
    Tile<T> t(g, Red::kBackward && !g.euclid);
    Red red(g, sh, omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < g.ntasks; ++task) run_task(g, pre, t, red, task);
    if (g.P > 1) {  // combine the partial accumulators (after the implicit barrier above)
#pragma omp for schedule(static)
      for (int64_t bq = 0; bq < g.p.batch * g.m; ++bq) red.merge_query(bq);
    }
    red.finish();  // (after the implicit barrier above)
  }
}

template <Kernel K, typename T>
void run(const KernelSumParams<T>& p) {
  using Prof = Profile<K>;
  const Geometry<T> g(p, Prof::compact);
  switch (p.mode) {
    case Mode::Sum:
      return walk<SumReduction<Prof, T>>(g);
    case Mode::LogSumExp:
      return walk<LseReduction<Prof, T>>(g);
    case Mode::Backward:
      if (g.ntasks == 0) return BackwardReduction<Prof, T>::no_queries(g);
      return walk<BackwardReduction<Prof, T>>(g);
  }
}

}  // namespace
}  // namespace cpu

template <typename T>
void kernel_sum_cpu(const KernelSumParams<T>& p) {
  visit_kernel(p.kernel, [&](auto kc) { cpu::run<decltype(kc)::value, T>(p); });
}

template void kernel_sum_cpu<float>(const KernelSumParams<float>&);
template void kernel_sum_cpu<double>(const KernelSumParams<double>&);

}  // namespace kernelfuse::kde
