// Distance blocks of the CPU kernel sums (kernel_sum_cpu.cpp): the squared / coordinate distances
// of a register block of QR queries against a packed tile of points, the exact-support helpers
// and the position gradients of the metrics other than euclidean. Torch-free, internal.
//
// Layout: U holds QR query rows of d (row-major), V a tile [d][TP] (structure of arrays), S the
// result [QR][TP]; np is a multiple of STRIP.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "../common/hd_math.h"
#include "../common/simd.h"
#include "kernel_sum.h"

namespace kernelfuse::kde::cpu {

constexpr int64_t QR = 4;      // queries per register block
constexpr int64_t QB = 32;     // queries per task (multiple of QR)
constexpr int64_t TP = 256;    // points per tile (multiple of STRIP)
constexpr int64_t STRIP = 16;  // points per register block

// Per-coordinate steps of the register-blocked loop (acc: the running value, df = u - v).
template <typename VT>
struct SqStep {  // sum (u - v)^2
  static VT step(VT acc, VT df) { return acc + df * df; }
};
template <typename VT>
struct AbsStep {  // sum |u - v|
  static VT step(VT acc, VT df) { return acc + (df < VT{} ? -df : df); }
};
template <typename VT>
struct MaxStep {  // max |u - v| (NaN propagates)
  static VT step(VT acc, VT df) {
    const VT a = df < VT{} ? -df : df;
    return (a > acc || a != a) ? a : acc;
  }
};

// The finishing transform of a register-blocked result (the exact support test of kernel_sum.h,
// in registers before the store). 0: none; 1: S = D2 * rs with rs chosen so that D2 * rs < 1 iff
// D2 < thr (exact_scale); 2: S = D2 < thr ? min(D2 * rs, 1 - ulp) : max(D2 * rs, 1) (NaN stays NaN).
template <typename T, int EXACT, typename VT>
inline VT finish_exact(VT acc, T thr, T rs) {
  if constexpr (EXACT == 1) {
    return acc * rs;
  } else if constexpr (EXACT == 2) {
    constexpr T below1 = T(1) - std::numeric_limits<T>::epsilon() / 2;
    const VT v = acc * rs;
    const VT vin = v < below1 ? v : VT{} + below1;
    const VT vout = v < T(1) ? VT{} + T(1) : v;
    return acc < thr ? vin : vout;
  } else {
    (void)thr, (void)rs;
    return acc;
  }
}

// S[r][i] = fold_k Step(U[r][k] - V[k][i]) for r < QR, i < np: 4 queries x 16 points in registers.
template <typename T, template <typename> class Step, int EXACT = 0>
void reg_block(const T* __restrict U, int64_t d, const T* __restrict V, int64_t np, T* __restrict S, T thr = T(1),
               T rs = T(1)) {
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
        for (int j = 0; j < NV; ++j) acc[r][j] = Step<VT>::step(acc[r][j], u - v[j]);
      }
    }
    for (int r = 0; r < QR; ++r)
      for (int j = 0; j < NV; ++j) simd::store(S + r * TP + i + j * W, finish_exact<T, EXACT>(acc[r][j], thr, rs));
  }
}

// |t|^p: repeated multiplication for integer p <= 8 (vectorised passes over a row), else pow.
template <typename T>
inline int small_int_power(T pp) {
  return (pp == std::floor(pp) && pp >= T(1) && pp <= T(8)) ? static_cast<int>(pp) : 0;
}

template <typename T>
void powdist_block(const T* __restrict U, int64_t d, const T* __restrict V, int64_t np, T pp, T* __restrict S,
                   T* __restrict A1, T* __restrict A2) {
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

// The haversine term a of one pair (the position gradients; libm sin / cos).
template <typename T>
inline T haversine_a(T lat1, T lon1, T lat2, T lon2) {
  const T sl = std::sin(T(0.5) * (lat1 - lat2)), so = std::sin(T(0.5) * (lon1 - lon2));
  T a = sl * sl + std::cos(lat1) * std::cos(lat2) * so * so;
  a = a < T(0) ? T(0) : a;
  return a > T(1) ? T(1) : a;
}
// Great-circle distance of (lat, lon) rows in radians (U: QR rows of 2, V: [2][TP]), vectorised:
// sin / cos by simd::sincos_v (abs. error ~1e-7 float / ~1e-15 double, relative near 0 where the
// half differences are small), then 2 asin(sqrt a) by our inline asin_poly (hd_math.h) over the
// row; no libm call per pair (cos lat1 once per query). Without jump threading (KF_NO_THREAD_JUMPS,
// hd_math.h: it would evaluate asin's polynomial twice in the vectorised loop).
template <typename T>
KF_NO_THREAD_JUMPS void havdist_block(const T* __restrict U, const T* __restrict V, int64_t np, T* __restrict S,
                                      T* __restrict C2) {
  using VT = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;     // np is a multiple of STRIP, itself of W
  for (int64_t i = 0; i < np; i += W) {  // cos lat2, once per point
    VT sn, cs;
    simd::sincos_v<T>(simd::load<VT>(V + i), sn, cs);
    simd::store(C2 + i, cs);
  }
  for (int r = 0; r < QR; ++r) {
    const T lat1 = U[2 * r], lon1 = U[2 * r + 1], c1 = std::cos(lat1);
    T* __restrict Sr = S + r * TP;
    for (int64_t i = 0; i < np; i += W) {
      VT sl, so, unused;
      simd::sincos_v<T>((lat1 - simd::load<VT>(V + i)) * T(0.5), sl, unused);
      simd::sincos_v<T>((lon1 - simd::load<VT>(V + TP + i)) * T(0.5), so, unused);
      VT a = sl * sl + (c1 * simd::load<VT>(C2 + i)) * (so * so);
      a = a < T(0) ? VT{} : a;  // NaN stays NaN
      a = a > T(1) ? VT{} + T(1) : a;
      simd::store(Sr + i, a);
    }
#pragma omp simd
    for (int64_t i = 0; i < np; ++i) Sr[i] = T(2) * hd::asin_poly(std::sqrt(Sr[i]));
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
void haversine_grads(const T* __restrict U, const T* __restrict V, int64_t nt, const T* __restrict C,
                     const T* __restrict DP, int64_t nr, T* __restrict GY, double* acc, int64_t accw) {
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
}

template <typename T>
void metric_grads(Metric met, const T* __restrict U, int64_t d, const T* __restrict V, int64_t nt,
                  const T* __restrict C, const T* __restrict R, const T* __restrict DP, T* __restrict F, T pp,
                  int64_t nr, T* __restrict GY, double* acc, int64_t accw) {
  if (met == Metric::Haversine) return haversine_grads(U, V, nt, C, DP, nr, GY, acc, accw);  // d == 2, unscaled
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

}  // namespace kernelfuse::kde::cpu
