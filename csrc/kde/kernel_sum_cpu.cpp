// CPU kernel for fused kernel sums (see kernel_sum.h). Torch-free.
//
// Work is split into tasks of QB queries (OpenMP, dynamic schedule). A task walks the points in
// tiles of TP: it packs the tile scaled by 1/h in structure-of-arrays form, computes squared
// distances for 4 queries x 16 points at a time in registers (explicit differences, so no
// cancellation), evaluates the kernel over the tile with branch-free vectorised code, and
// reduces the tile into per-query float partials that are added to double accumulators (blocked
// accumulation: float32 results stay within ~1e-6 of a float64 computation). Memory is
// O(threads * TP * (d + c)); the m x n matrix never exists. The Backward mode produces the
// gradients for x, y and the weights in the same single pass: the point-side sums go to a tile
// buffer flushed once per tile into per-thread double accumulators, reduced at the end
// (O(threads * n * (d + c)) memory).
// Metrics: the distance block of a register block is picked per block (euclidean: the original
// sqdist_block; L1 / Linf in the same register-blocked style; minkowski with pow; haversine
// scalar); the kernel-evaluation and reduction stages are metric-independent. With a compact
// kernel and a scalar bandwidth the tile is packed unscaled and dist < h decided exactly.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common/simd.h"
#include "kernel_sum.h"
#include "profiles.h"

namespace kernelfuse::kde {
namespace {

constexpr int64_t QR = 4;       // queries per register block
constexpr int64_t QB = 32;      // queries per task (multiple of QR)
constexpr int64_t TP = 256;     // points per tile (multiple of STRIP)
constexpr int64_t STRIP = 16;   // points per register block

// S[r][i] = sum_k (U[r][k] - V[k][i])^2 for r < QR, i < np (np a multiple of STRIP).
// EXACT (the exact support test of kernel_sum.h, in registers before the store): 1: S = D2 * rs
// with rs chosen so that D2 * rs < 1 iff D2 < thr (exact_scale); 2: S = D2 < thr ?
// min(D2 * rs, 1 - ulp) : max(D2 * rs, 1) (NaN stays NaN).
template <typename T, int EXACT = 0>
void sqdist_block(const T* __restrict U, int64_t d, const T* __restrict V, int64_t np,
                  T* __restrict S, T thr = T(1), T rs = T(1)) {
  using VT = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  constexpr int NV = STRIP / W;
  for (int64_t i = 0; i < np; i += STRIP) {
    VT acc[QR][NV];
    for (int r = 0; r < QR; ++r)
      for (int j = 0; j < NV; ++j) acc[r][j] = VT{};
    for (int64_t k = 0; k < d; ++k) {
      const T* vk = V + k * TP + i;
      VT v[NV];
      for (int j = 0; j < NV; ++j) v[j] = simd::load<VT>(vk + j * W);
      for (int r = 0; r < QR; ++r) {
        const VT u = VT{} + U[r * d + k];
        for (int j = 0; j < NV; ++j) {
          const VT df = u - v[j];
          acc[r][j] += df * df;
        }
      }
    }
    if constexpr (EXACT == 1) {
      for (int r = 0; r < QR; ++r)
        for (int j = 0; j < NV; ++j) acc[r][j] *= rs;
    } else if constexpr (EXACT == 2) {
      constexpr T below1 = T(1) - std::numeric_limits<T>::epsilon() / 2;
      for (int r = 0; r < QR; ++r)
        for (int j = 0; j < NV; ++j) {
          const VT D2 = acc[r][j];
          const VT v = D2 * rs;
          const VT vin = v < below1 ? v : VT{} + below1;
          const VT vout = v < T(1) ? VT{} + T(1) : v;
          acc[r][j] = D2 < thr ? vin : vout;
        }
    }
    for (int r = 0; r < QR; ++r)
      for (int j = 0; j < NV; ++j) simd::store(S + r * TP + i + j * W, acc[r][j]);
  }
}

// Coordinate metrics other than euclidean, same register blocking (4 queries x 16 points):
// L1: S = sum_k |U - V|; Linf: S = max_k |U - V| (NaN propagates); Lp: S = sum_k |U - V|^p.
template <typename T, int KIND>  // KIND 1: L1, 2: Linf
void absdist_block(const T* __restrict U, int64_t d, const T* __restrict V, int64_t np,
                   T* __restrict S) {
  using VT = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  constexpr int NV = STRIP / W;
  for (int64_t i = 0; i < np; i += STRIP) {
    VT acc[QR][NV];
    for (int r = 0; r < QR; ++r)
      for (int j = 0; j < NV; ++j) acc[r][j] = VT{};
    for (int64_t k = 0; k < d; ++k) {
      const T* vk = V + k * TP + i;
      VT v[NV];
      for (int j = 0; j < NV; ++j) v[j] = simd::load<VT>(vk + j * W);
      for (int r = 0; r < QR; ++r) {
        const VT u = VT{} + U[r * d + k];
        for (int j = 0; j < NV; ++j) {
          const VT df = u - v[j];
          const VT a = df < T(0) ? -df : df;
          if constexpr (KIND == 1) {
            acc[r][j] += a;
          } else {
            acc[r][j] = (a > acc[r][j] || a != a) ? a : acc[r][j];
          }
        }
      }
    }
    for (int r = 0; r < QR; ++r)
      for (int j = 0; j < NV; ++j) simd::store(S + r * TP + i + j * W, acc[r][j]);
  }
}

// |t|^p: repeated multiplication for integer p <= 8 (vectorised passes over a row), else pow.
template <typename T>
inline int small_int_power(T pp) {
  return (pp == std::floor(pp) && pp >= T(1) && pp <= T(8)) ? static_cast<int>(pp) : 0;
}

template <typename T>
void powdist_block(const T* __restrict U, int64_t d, const T* __restrict V, int64_t np, T pp,
                   T* __restrict S, T* __restrict A1, T* __restrict A2) {
  const int ip = small_int_power(pp);
  for (int r = 0; r < QR; ++r) {
    T* __restrict s = S + r * TP;
    for (int64_t i = 0; i < np; ++i) s[i] = T(0);
    for (int64_t k = 0; k < d; ++k) {
      const T u = U[r * d + k];
      const T* __restrict vk = V + k * TP;
      if (ip > 0) {
#pragma omp simd
        for (int64_t i = 0; i < np; ++i) {
          const T df = u - vk[i];
          A1[i] = df < T(0) ? -df : df;
          A2[i] = A1[i];
        }
        for (int e = 1; e < ip; ++e) {
#pragma omp simd
          for (int64_t i = 0; i < np; ++i) A2[i] *= A1[i];
        }
#pragma omp simd
        for (int64_t i = 0; i < np; ++i) s[i] += A2[i];
      } else {
        for (int64_t i = 0; i < np; ++i) s[i] += std::pow(std::fabs(u - vk[i]), pp);
      }
    }
  }
}

// Great-circle distance of (lat, lon) rows in radians (U: QR rows of 2, V: [2][TP]).
template <typename T>
inline T haversine_a(T lat1, T lon1, T lat2, T lon2) {
  const T sl = std::sin(T(0.5) * (lat1 - lat2)), so = std::sin(T(0.5) * (lon1 - lon2));
  T a = sl * sl + std::cos(lat1) * std::cos(lat2) * so * so;
  a = a < T(0) ? T(0) : a;
  return a > T(1) ? T(1) : a;
}
template <typename T>
void havdist_block(const T* __restrict U, const T* __restrict V, int64_t np, T* __restrict S,
                   T* __restrict C2) {
  for (int64_t i = 0; i < np; ++i) C2[i] = std::cos(V[i]);  // cos lat2, once per point
  for (int r = 0; r < QR; ++r) {
    const T lat1 = U[2 * r], lon1 = U[2 * r + 1], c1 = std::cos(lat1);
    for (int64_t i = 0; i < np; ++i) {
      const T sl = std::sin(T(0.5) * (lat1 - V[i])), so = std::sin(T(0.5) * (lon1 - V[TP + i]));
      T a = sl * sl + c1 * C2[i] * so * so;
      a = a < T(0) ? T(0) : (a > T(1) ? T(1) : a);
      S[r * TP + i] = T(2) * std::asin(std::sqrt(a));
    }
  }
}

// r from a distance D in packed units: exact support (scalar bandwidth, compact kernel) decides
// D < thr on the unscaled distance and keeps r = D / h on the same side of 1; else r = D * f.
// A factor rs near 1 / thr with fl(D * rs) < 1 exactly when D < thr, for every D (rounding is
// monotone: it suffices that fl(thr * rs) >= 1 > fl(prev(thr) * rs)); false if none is found
// among the nearest candidates (then the kernels clamp, to_r).
template <typename T>
bool exact_scale(T thr, T& rs) {
  if (!(thr > T(0)) || !std::isfinite(thr)) return false;
  const T below = std::nextafter(thr, T(0));
  T c = T(1) / thr;
  for (int i = 0; i < 4; ++i) c = std::nextafter(c, T(0));
  for (int i = 0; i < 9; ++i, c = std::nextafter(c, T(INFINITY))) {
    volatile T a = thr * c, b = below * c;  // the products as the kernel rounds them
    if (a >= T(1) && b < T(1)) {
      rs = c;
      return true;
    }
  }
  return false;
}

template <typename T>
inline T to_r(T D, bool exact, T thr, T f) {  // branch-free (vectorises)
  constexpr T below1 = T(1) - std::numeric_limits<T>::epsilon() / 2;
  const T v = D * f;
  const T vin = v < below1 ? v : below1;
  const T vout = v < T(1) ? T(1) : v;  // NaN stays NaN
  return exact ? (D < thr ? vin : vout) : v;
}

// Position gradients of a register block for the metrics other than euclidean. C: QR coef rows
// (rows >= nr are zero); R: r = dist / h; DP: distance in packed units (U, V). Accumulates
// sum_i coef g_k into acc[r * accw + k] (x side) and -sum_q coef g_k (or the haversine y term)
// into GY[k * TP + i], where ds/dx_k = post_k g_k:
//   manhattan g = r sign(u_k); chebyshev g = r sign(u_k) at the first k with |u_k| = max;
//   minkowski g = r (|u_k| / D)^(p-1) sign(u_k); haversine g = (D / sqrt(a (1 - a))) da/dx_k.
template <typename T>
void metric_grads(Metric met, const T* __restrict U, int64_t d, const T* __restrict V, int64_t nt,
                  const T* __restrict C, const T* __restrict R, const T* __restrict DP,
                  T* __restrict F, T pp, int64_t nr, T* __restrict GY, double* acc, int64_t accw) {
  if (met == Metric::Haversine) {  // d == 2, packed unscaled
    for (int64_t r = 0; r < nr; ++r) {
      const T lat1 = U[2 * r], lon1 = U[2 * r + 1];
      const T s1 = std::sin(lat1), c1 = std::cos(lat1);
      T gx0 = 0, gx1 = 0;
      for (int64_t ii = 0; ii < nt; ++ii) {
        const T cf = C[r * TP + ii];
        if (cf == T(0)) continue;
        const T lat2 = V[ii], lon2 = V[TP + ii];
        const T s2 = std::sin(lat2), c2 = std::cos(lat2);
        const T dlat = lat1 - lat2, dlon = lon1 - lon2;
        const T so = std::sin(T(0.5) * dlon);
        const T a = haversine_a(lat1, lon1, lat2, lon2);
        const T Dv = DP[r * TP + ii];
        // D dD/da = D / sqrt(a (1 - a)): 2 at a = 0 (limit), 0 at the antipode (a maximum)
        const T q = a <= T(0) ? T(2) : (a >= T(1) ? T(0) : Dv / std::sqrt(a * (T(1) - a)));
        const T w = cf * q;
        const T sdl = T(0.5) * std::sin(dlat), sdo = T(0.5) * c1 * c2 * std::sin(dlon), so2 = so * so;
        gx0 += w * (sdl - s1 * c2 * so2);
        gx1 += w * sdo;
        if (GY) {
          GY[ii] += w * (-sdl - c1 * s2 * so2);
          GY[TP + ii] -= w * sdo;
        }
      }
      acc[r * accw] += static_cast<double>(gx0);
      acc[r * accw + 1] += static_cast<double>(gx1);
    }
    return;
  }
  if (met == Metric::Chebyshev) std::fill(F, F + QR * TP, T(0));
  const T pm1 = pp - T(1);
  const int ipm1 = small_int_power(pp) - 1;  // -1: not a small integer
  for (int64_t k = 0; k < d; ++k) {
    const T* __restrict Vk = V + k * TP;
    T* __restrict GYk = GY ? GY + k * TP : nullptr;
    for (int64_t r = 0; r < nr; ++r) {
      const T u = U[r * d + k];
      const T* __restrict c = C + r * TP;
      const T* __restrict rr = R + r * TP;
      const T* __restrict dp = DP + r * TP;
      T* __restrict f = F + r * TP;
      T part = 0;
      if (met == Metric::Manhattan) {
#pragma omp simd reduction(+ : part)
        for (int64_t ii = 0; ii < nt; ++ii) {
          const T df = u - Vk[ii];
          const T sg = df > T(0) ? T(1) : (df < T(0) ? T(-1) : T(0));
          const T t = c[ii] * rr[ii] * sg;
          part += t;
          if (GYk) GYk[ii] -= t;
        }
      } else if (met == Metric::Chebyshev) {
#pragma omp simd reduction(+ : part)
        for (int64_t ii = 0; ii < nt; ++ii) {
          const T df = u - Vk[ii];
          const T a = df < T(0) ? -df : df;
          const bool hit = a == dp[ii] && f[ii] == T(0);
          f[ii] = hit ? T(1) : f[ii];
          const T sg = df > T(0) ? T(1) : (df < T(0) ? T(-1) : T(0));
          const T t = hit ? c[ii] * rr[ii] * sg : T(0);
          part += t;
          if (GYk) GYk[ii] -= t;
        }
      } else {  // Minkowski
        for (int64_t ii = 0; ii < nt; ++ii) {
          const T df = u - Vk[ii];
          const T a = std::fabs(df);
          const T sg = df > T(0) ? T(1) : (df < T(0) ? T(-1) : T(0));
          T ratio = T(0);
          if (dp[ii] > T(0)) {
            const T q = a / dp[ii];
            if (ipm1 >= 0) {
              ratio = T(1);
              for (int e = 0; e < ipm1; ++e) ratio *= q;
            } else {
              ratio = std::pow(q, pm1);
            }
          }
          const T t = c[ii] * rr[ii] * ratio * sg;
          part += t;
          if (GYk) GYk[ii] -= t;
        }
      }
      acc[r * accw + k] += static_cast<double>(part);
    }
  }
}

template <typename T>
inline T guarded_exp(T e) {  // exp with a NaN exponent (inf - inf) counted as a zero term
  return e == e ? kf_exp(e) : T(0);
}

// Per-thread scratch and the state of one task.
template <typename T>
struct Scratch {
  std::vector<T> U, V, S, val, dval, PW, PLW, GY, GW, R, DP, F, SV;
  std::vector<double> acc, acc2, mx;
  Scratch(int64_t d, int64_t c, int64_t accw, bool point_grads, bool metric_bufs, bool keep_s)
      : U(QB * d), V(d * TP), S(QR * TP), val(TP), dval(TP), PW(c * TP), PLW(c * TP),
        GY(point_grads ? d * TP : 0), GW(point_grads ? c * TP : 0),
        R(metric_bufs ? QR * TP : 0), DP(metric_bufs ? QR * TP : 0), F(metric_bufs ? QR * TP : 0),
        SV(keep_s ? QR * TP : 0), acc(QB * accw), acc2(QB * c), mx(QB * c) {}
};

template <Kernel K, Mode M, typename T>
void run(const KernelSumParams<T>& p) {
  using A = T;
  using Lin = Linear<K, T>;
  using Log = Profile<K, T>;
  const int64_t d = p.d, c = p.c, m = p.m, n = p.n;
  const bool has_log = p.plw != nullptr || p.qlw != nullptr;
  const int64_t nqb = (m + QB - 1) / QB;
  // Few query blocks (small m): split the points of each block over P tasks too, so every
  // thread has work; the P partial accumulators of a query are combined at the end.
  const int nthreads = omp_get_max_threads();
  const int64_t ntiles = (n + TP - 1) / TP;
  int64_t P = 1;
  if (p.batch * nqb < 2 * nthreads && ntiles >= 8)
    P = std::min<int64_t>((2 * nthreads + p.batch * nqb - 1) / (p.batch * nqb), ntiles / 4);
  const int64_t tiles_per_part = (ntiles + P - 1) / P;
  const int64_t ntasks = p.batch * nqb * P;
  if (ntasks == 0) {  // no queries: the point-side gradients are zeros
    if (M == Mode::Backward && p.out_y) std::fill(p.out_y, p.out_y + p.batch * n * d, T(0));
    if (M == Mode::Backward && p.out_w) std::fill(p.out_w, p.out_w + p.batch * n * c, T(0));
    return;
  }
  constexpr bool BWD = M == Mode::Backward;
  const Metric met = p.metric;
  const bool euclid = met == Metric::Euclidean, hav = met == Metric::Haversine;
  // Exact support test (kernel_sum.h): unscaled packing, distances compared with thr.
  const bool exact = is_compact(K) && p.h_stride == 0 && d > 0;
  const bool unscaled = exact || hav;
  // ih: 1 / h; ipack: the packing scale; post: the factor of the accumulated position gradients.
  std::vector<T> ih(d), ipack(d), post(d);
  for (int64_t k = 0; k < d; ++k) {
    ih[k] = T(1) / p.h[p.h_stride * k];
    ipack[k] = unscaled ? T(1) : ih[k];
    post[k] = T(2) * ih[k] * ((unscaled && (euclid || hav)) ? ih[k] : T(1));
  }
  const T h0 = d > 0 ? T(p.h[0]) : T(1);
  const T thr = euclid ? h0 * h0 : h0;                 // exact: inside iff D < thr
  const T rscale = unscaled ? (euclid ? T(1) / (h0 * h0) : T(1) / h0) : T(1);  // D -> r (s for euclid)
  const T pp = T(p.p), inv_p = T(1) / T(p.p);
  // exact support by one multiplication where a factor with the exact rounding exists
  T rs_exact = rscale;
  const bool exact_mul = exact && exact_scale(thr, rs_exact);
  const T rfac = exact_mul ? rs_exact : rscale;  // D -> r (s for euclidean)
  const bool clamp = exact && !exact_mul;
  const bool need_h = BWD && p.out_h != nullptr;
  const int64_t accw = BWD ? d + (need_h ? 1 : 0) : c;
  const double ninf = -std::numeric_limits<double>::infinity();
  // Backward: per-thread double accumulators for the point-side gradients, reduced at the end.
  const bool need_y = BWD && p.out_y != nullptr, need_w = BWD && p.out_w != nullptr;
  // Partial accumulators when points are split (P > 1): [(b*m + q)*P + part][col].
  const int64_t nacc = P > 1 ? p.batch * m * P : 0;
  std::vector<double> pacc(nacc * accw), pacc2(M == Mode::LogSumExp ? nacc * c : 0),
      pmx(M == Mode::LogSumExp ? nacc * c : 0);
  std::vector<std::vector<double>> ybuf(need_y ? nthreads : 0), wbuf(need_w ? nthreads : 0);

  // Final value of query q of batch b from its double accumulators.
  auto write_query = [&](int64_t b, int64_t q, const double* acc, const double* acc2, const double* mx) {
    if (BWD && need_h) p.out_h[b * m + q] = static_cast<A>(acc[d]);
    if (BWD && !p.out) return;
    T* out = p.out + (b * m + q) * (BWD ? d : c);
    const T* qw = p.qw ? p.qw + b * p.qw_bstride : nullptr;
    const T* qlw = p.qlw ? p.qlw + b * p.qlw_bstride : nullptr;
    if constexpr (M == Mode::Sum) {
      for (int64_t col = 0; col < c; ++col)
        out[col] = static_cast<T>(acc[col] * (qw ? double(qw[q * c + col]) : 1.0));
    } else if constexpr (M == Mode::LogSumExp) {
      T* aux = p.aux ? p.aux + (b * m + q) * c : nullptr;
      for (int64_t col = 0; col < c; ++col) {
        const double M0 = mx[col];
        const double ql = qlw ? double(qlw[q * c + col]) : 0.0;
        out[col] = static_cast<T>(M0 == ninf ? ninf : ql + M0 + std::log(acc[col]));
        if (aux) aux[col] = static_cast<T>(M0 == ninf ? ninf : 2 * M0 + std::log(acc2[col]));
      }
    } else {
      for (int64_t k = 0; k < d; ++k) out[k] = static_cast<T>(double(post[k]) * acc[k]);
    }
  };

#pragma omp parallel num_threads(nthreads)
  {
    Scratch<T> sc(d, c, accw, need_y || need_w, BWD && !euclid, need_h);
    T* __restrict R = sc.R.data();
    T* __restrict DP = sc.DP.data();
    T* __restrict F = sc.F.data();
    T* __restrict SV = sc.SV.data();
    const int tid = omp_get_thread_num();
    double* ytot = nullptr;
    double* wtot = nullptr;
    if (need_y) { ybuf[tid].assign(p.batch * n * d, 0.0); ytot = ybuf[tid].data(); }
    if (need_w) { wbuf[tid].assign(p.batch * n * c, 0.0); wtot = wbuf[tid].data(); }
    T* __restrict GY = sc.GY.data();
    T* __restrict GW = sc.GW.data();
    T* __restrict U = sc.U.data();
    T* __restrict V = sc.V.data();
    T* __restrict S = sc.S.data();
    T* __restrict val = sc.val.data();
    T* __restrict dval = sc.dval.data();
    T* __restrict PW = sc.PW.data();
    T* __restrict PLW = sc.PLW.data();
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntasks; ++t) {
      const int64_t part = t % P, bq = t / P;
      const int64_t b = bq / nqb, q0 = (bq % nqb) * QB, qn = std::min(QB, m - q0);
      const int64_t ibeg = part * tiles_per_part * TP, iend = std::min(n, (part + 1) * tiles_per_part * TP);
      const T* x = p.x + b * p.x_bstride;
      const T* y = p.y + b * p.y_bstride;
      const T* pw = p.pw ? p.pw + b * p.pw_bstride : nullptr;
      const T* plw = p.plw ? p.plw + b * p.plw_bstride : nullptr;
      const T* qw = p.qw ? p.qw + b * p.qw_bstride : nullptr;
      const T* qlw = p.qlw ? p.qlw + b * p.qlw_bstride : nullptr;
      std::fill(sc.acc.begin(), sc.acc.end(), 0.0);
      std::fill(sc.acc2.begin(), sc.acc2.end(), 0.0);
      std::fill(sc.mx.begin(), sc.mx.end(), ninf);
      // Pack the queries scaled by 1/h; pad the last register block with the last query.
      for (int64_t r = 0; r < QB; ++r) {
        const T* xr = x + (q0 + std::min(r, qn - 1)) * d;
        for (int64_t k = 0; k < d; ++k) U[r * d + k] = xr[k] * ipack[k];
      }
      for (int64_t i0 = ibeg; i0 < iend; i0 += TP) {
        const int64_t nt = std::min(TP, iend - i0);
        const int64_t np = (nt + STRIP - 1) / STRIP * STRIP;
        for (int64_t k = 0; k < d; ++k) {
          T* Vk = V + k * TP;
          for (int64_t ii = 0; ii < nt; ++ii) Vk[ii] = y[(i0 + ii) * d + k] * ipack[k];
          for (int64_t ii = nt; ii < np; ++ii) Vk[ii] = T(0);
        }
        if (pw)
          for (int64_t ii = 0; ii < nt; ++ii)
            for (int64_t col = 0; col < c; ++col) PW[col * TP + ii] = pw[(i0 + ii) * c + col];
        if (plw)
          for (int64_t ii = 0; ii < nt; ++ii)
            for (int64_t col = 0; col < c; ++col) PLW[col * TP + ii] = plw[(i0 + ii) * c + col];
        if (need_y) std::fill(GY, GY + d * TP, T(0));
        if (need_w) std::fill(GW, GW + c * TP, T(0));

        for (int64_t g = 0; g < qn; g += QR) {
          // s = (dist / h)^2 of the register block (rows of S); R, DP: r and the packed-unit
          // distance, kept for the position gradients of the other metrics.
          if (euclid) {
            if (exact_mul)
              sqdist_block<T, 1>(U + g * d, d, V, np, S, thr, rfac);
            else if (clamp)
              sqdist_block<T, 2>(U + g * d, d, V, np, S, thr, rfac);
            else
              sqdist_block<T>(U + g * d, d, V, np, S);
          } else {
            if (met == Metric::Manhattan) absdist_block<T, 1>(U + g * d, d, V, np, S);
            else if (met == Metric::Chebyshev) absdist_block<T, 2>(U + g * d, d, V, np, S);
            else if (met == Metric::Minkowski) powdist_block<T>(U + g * d, d, V, np, pp, S, val, dval);
            else havdist_block<T>(U + g * d, V, np, S, val);
            if (met == Metric::Minkowski)
              for (int64_t e = 0; e < QR * TP; ++e) S[e] = std::pow(S[e], inv_p);
            const T f = hav && !exact ? ih[0] : rfac;
            if (BWD) {
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
          for (int64_t r = 0; r < QR && g + r < qn; ++r) {
            const int64_t qi = g + r, q = q0 + qi;
            const T* __restrict s = S + r * TP;
            const int64_t self = (p.exclude_self && q >= i0 && q < i0 + nt) ? q - i0 : -1;
            // Stage A: kernel values over the tile (vectorised), self pair removed.
            const bool logdom = M == Mode::LogSumExp || has_log;
            if (logdom) {
#pragma omp simd
              for (int64_t ii = 0; ii < nt; ++ii) val[ii] = Log::logk(s[ii]);
              if (self >= 0) val[self] = -std::numeric_limits<T>::infinity();
            } else if (!BWD || need_w) {
#pragma omp simd
              for (int64_t ii = 0; ii < nt; ++ii) val[ii] = Lin::k(s[ii]);
              if (self >= 0) val[self] = T(0);
            }
            if constexpr (BWD) {
              if (logdom) {
#pragma omp simd
                for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = Log::dlogk(s[ii]);
              } else if (need_w) {  // k is in val already
#pragma omp simd
                for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = dk_given_k<K, T>(s[ii], val[ii]);
              } else {
#pragma omp simd
                for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = Lin::dk(s[ii]);
              }
              if (self >= 0) dval[self] = T(0);
            }
            // Stage B: reductions (kernel-independent).
            if constexpr (M == Mode::Sum) {
              for (int64_t col = 0; col < c; ++col) {
                T part = 0;
                const T* __restrict pwc = PW + col * TP;
                const T* __restrict plwc = PLW + col * TP;
                if (!has_log) {
                  if (pw) {
#pragma omp simd reduction(+ : part)
                    for (int64_t ii = 0; ii < nt; ++ii) part += pwc[ii] * val[ii];
                  } else {
#pragma omp simd reduction(+ : part)
                    for (int64_t ii = 0; ii < nt; ++ii) part += val[ii];
                  }
                } else {
                  const T ql = qlw ? qlw[q * c + col] : T(0);
                  for (int64_t ii = 0; ii < nt; ++ii) {
                    const T e = ql + (plw ? plwc[ii] : T(0)) + val[ii];
                    part += (pw ? pwc[ii] : T(1)) * guarded_exp(e);
                  }
                }
                sc.acc[qi * c + col] += static_cast<double>(part);
              }
            } else if constexpr (M == Mode::LogSumExp) {
              for (int64_t col = 0; col < c; ++col) {
                T* __restrict v = dval;  // scratch: plw + log k
                const T* __restrict plwc = PLW + col * TP;
                T tmax = -std::numeric_limits<T>::infinity();
                if (plw) {
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
                if (p.aux) {
#pragma omp simd reduction(+ : s1, s2)
                  for (int64_t ii = 0; ii < nt; ++ii) {
                    const T e = kf_exp(v[ii] - tmax);
                    s1 += e;
                    s2 += e * e;
                  }
                } else {
#pragma omp simd reduction(+ : s1)
                  for (int64_t ii = 0; ii < nt; ++ii) s1 += kf_exp(v[ii] - tmax);
                }
                double& M0 = sc.mx[qi * c + col];
                double& A1 = sc.acc[qi * c + col];
                double& A2 = sc.acc2[qi * c + col];
                const double tm = tmax;
                if (tm > M0) {
                  const double f = M0 == ninf ? 0.0 : std::exp(M0 - tm);
                  A1 = A1 * f + s1;
                  A2 = A2 * f * f + s2;
                  M0 = tm;
                } else {
                  const double f = std::exp(tm - M0);
                  A1 += s1 * f;
                  A2 += s2 * f * f;
                }
              }
            } else {  // Backward
              // coef_i = dk/ds * sum_c qw pw [exp(qlw + plw + log k)]; point-side weight sums to GW.
              T* __restrict coef = S + r * TP;  // s is consumed: reuse its row
              if (need_h) std::copy_n(coef, nt, SV + r * TP);
              if (!has_log && c == 1) {
                const T a = qw ? qw[q] : T(1);
                if (pw) {
#pragma omp simd
                  for (int64_t ii = 0; ii < nt; ++ii) coef[ii] = a * PW[ii] * dval[ii];
                } else {
#pragma omp simd
                  for (int64_t ii = 0; ii < nt; ++ii) coef[ii] = a * dval[ii];
                }
                if (need_w) {
#pragma omp simd
                  for (int64_t ii = 0; ii < nt; ++ii) GW[ii] += a * val[ii];
                }
              } else {
                for (int64_t ii = 0; ii < nt; ++ii) {
                  T a = 0;
                  for (int64_t col = 0; col < c; ++col) {
                    const T qwc = qw ? qw[q * c + col] : T(1);
                    const T pwc = pw ? PW[col * TP + ii] : T(1);
                    if (has_log) {  // e = exp(qlw + plw + log k), paired with dlog k / ds
                      const T e = guarded_exp((qlw ? qlw[q * c + col] : T(0)) +
                                              (plw ? PLW[col * TP + ii] : T(0)) + val[ii]);
                      a += qwc * pwc * e;
                      if (need_w) GW[col * TP + ii] += qwc * e;
                    } else {  // linear domain: paired with dk / ds
                      a += qwc * pwc;
                      if (need_w) GW[col * TP + ii] += qwc * val[ii];
                    }
                  }
                  coef[ii] = a * dval[ii];
                }
              }
              if (need_h) {  // sum_i coef_qi s_qi (bandwidth gradient of a scalar h)
                const T* __restrict sv = SV + r * TP;
                T hs = 0;
#pragma omp simd reduction(+ : hs)
                for (int64_t ii = 0; ii < nt; ++ii) hs += coef[ii] * sv[ii];
                sc.acc[qi * accw + d] += static_cast<double>(hs);
              }
            }
          }
          if constexpr (BWD) {
            // Position gradients of the register block, coef rows in S: the x side reduces over
            // the tile, the y side accumulates into the tile buffer (one load/store per 4 queries).
            const int64_t nr = std::min(QR, qn - g);
            for (int64_t r = nr; r < QR; ++r) std::fill(S + r * TP, S + r * TP + nt, T(0));
            const T* __restrict c0 = S;
            const T* __restrict c1 = S + TP;
            const T* __restrict c2 = S + 2 * TP;
            const T* __restrict c3 = S + 3 * TP;
            if (!euclid) {
              metric_grads<T>(met, U + g * d, d, V, nt, S, R, DP, F, pp, nr, need_y ? GY : nullptr,
                              sc.acc.data() + g * accw, accw);
            } else
            for (int64_t k = 0; k < d; ++k) {
              const T u0 = U[g * d + k], u1 = U[(g + 1) * d + k], u2 = U[(g + 2) * d + k], u3 = U[(g + 3) * d + k];
              const T* __restrict Vk = V + k * TP;
              T p0 = 0, p1 = 0, p2 = 0, p3 = 0;
              if (need_y) {
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
              for (int64_t r = 0; r < nr; ++r) sc.acc[(g + r) * accw + k] += static_cast<double>(parts[r]);
            }
          }
        }
        // Backward: flush the tile's point-side sums into this thread's accumulators.
        if (need_y)
          for (int64_t ii = 0; ii < nt; ++ii)
            for (int64_t k = 0; k < d; ++k) ytot[(b * n + i0 + ii) * d + k] += GY[k * TP + ii];
        if (need_w)
          for (int64_t ii = 0; ii < nt; ++ii)
            for (int64_t col = 0; col < c; ++col) wtot[(b * n + i0 + ii) * c + col] += GW[col * TP + ii];
      }
      // Write the task's outputs (or its partial accumulators when the points are split).
      for (int64_t qi = 0; qi < qn; ++qi) {
        const int64_t q = q0 + qi;
        if (P > 1) {
          const int64_t slot = (b * m + q) * P + part;
          std::copy_n(sc.acc.data() + qi * accw, accw, pacc.data() + slot * accw);
          if (M == Mode::LogSumExp) {
            std::copy_n(sc.acc2.data() + qi * c, c, pacc2.data() + slot * c);
            std::copy_n(sc.mx.data() + qi * c, c, pmx.data() + slot * c);
          }
        } else {
          write_query(b, q, sc.acc.data() + qi * accw, sc.acc2.data() + qi * c, sc.mx.data() + qi * c);
        }
      }
    }
    if (P > 1) {  // combine the partial accumulators (after the implicit barrier above)
      std::vector<double> a(accw), a2(c), mx(c);
#pragma omp for schedule(static)
      for (int64_t bq = 0; bq < p.batch * m; ++bq) {
        const double* pa = pacc.data() + bq * P * accw;
        if constexpr (M == Mode::LogSumExp) {
          for (int64_t col = 0; col < c; ++col) {
            double M0 = ninf;
            for (int64_t j = 0; j < P; ++j) M0 = std::max(M0, pmx[(bq * P + j) * c + col]);
            double A1 = 0, A2 = 0;
            for (int64_t j = 0; M0 != ninf && j < P; ++j) {
              const double mj = pmx[(bq * P + j) * c + col];
              if (mj == ninf) continue;
              const double f = std::exp(mj - M0);
              A1 += pa[j * accw + col] * f;
              A2 += pacc2[(bq * P + j) * c + col] * f * f;
            }
            a[col] = A1, a2[col] = A2, mx[col] = M0;
          }
        } else {
          for (int64_t k = 0; k < accw; ++k) {
            double t = 0;
            for (int64_t j = 0; j < P; ++j) t += pa[j * accw + k];
            a[k] = t;
          }
        }
        write_query(bq / m, bq % m, a.data(), a2.data(), mx.data());
      }
    }
    // Backward: reduce the per-thread point-side accumulators (after the implicit barrier above).
    if (need_y || need_w) {
#pragma omp for schedule(static)
      for (int64_t bi = 0; bi < p.batch * n; ++bi) {
        for (int64_t k = 0; need_y && k < d; ++k) {
          double t = 0;
          for (int th = 0; th < nthreads; ++th) t += ybuf[th][bi * d + k];
          p.out_y[bi * d + k] = static_cast<T>(double(post[k]) * t);
        }
        for (int64_t col = 0; need_w && col < c; ++col) {
          double t = 0;
          for (int th = 0; th < nthreads; ++th) t += wbuf[th][bi * c + col];
          p.out_w[bi * c + col] = static_cast<T>(t);
        }
      }
    }
  }
}

template <Mode M, typename T>
void dispatch_kernel(const KernelSumParams<T>& p) {
  switch (p.kernel) {
    case Kernel::Gaussian: return run<Kernel::Gaussian, M, T>(p);
    case Kernel::Laplacian: return run<Kernel::Laplacian, M, T>(p);
    case Kernel::Cauchy: return run<Kernel::Cauchy, M, T>(p);
    case Kernel::Matern32: return run<Kernel::Matern32, M, T>(p);
    case Kernel::Matern52: return run<Kernel::Matern52, M, T>(p);
    case Kernel::InverseMultiquadric: return run<Kernel::InverseMultiquadric, M, T>(p);
    case Kernel::Tophat: return run<Kernel::Tophat, M, T>(p);
    case Kernel::Epanechnikov: return run<Kernel::Epanechnikov, M, T>(p);
    case Kernel::Linear: return run<Kernel::Linear, M, T>(p);
    case Kernel::Cosine: return run<Kernel::Cosine, M, T>(p);
  }
}

}  // namespace

template <typename T>
void kernel_sum_cpu(const KernelSumParams<T>& p) {
  switch (p.mode) {
    case Mode::Sum: return dispatch_kernel<Mode::Sum, T>(p);
    case Mode::LogSumExp: return dispatch_kernel<Mode::LogSumExp, T>(p);
    case Mode::Backward: return dispatch_kernel<Mode::Backward, T>(p);
  }
}

template void kernel_sum_cpu<float>(const KernelSumParams<float>&);
template void kernel_sum_cpu<double>(const KernelSumParams<double>&);

const char* cpu_isa() { return simd::isa_name(); }

}  // namespace kernelfuse::kde
