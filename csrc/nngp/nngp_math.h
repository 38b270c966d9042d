// Per-pair NNGP / NTK recursion (nngp_matmul.h), host and device. Forward mode: every layer's
// covariance carries its partial derivatives with respect to s = x.y, nx = |x|^2 and ny = |y|^2,
// so one pass over the layers gives K and (with Grad) dK/ds, dK/dnx, dK/dny, with no per-layer
// storage (any depth). The layer expectations and their partials are in closed form:
//   relu: F = r (sin t + (pi - t) c) / 2pi, G = (pi - t) / 2pi, r = sqrt(k11 k22), c = k12 / r,
//         t = acos c; dF/dk12 = G (Price's theorem), dF/dk11 = r sin t / (4 pi k11),
//         dG/dk12 = 1 / (2 pi r sin t), dG/dk11 = -c / (4 pi k11 sin t)
//   step: F = (pi - t) / 2pi, G = 0 (phi' = 0 almost everywhere: gradient flow does not pass a
//         step, so the NTK of a step network is its NNGP); partials as relu's G
//   erf:  F = (2/pi) asin(2 k12 / sqrt(A)), A = (1 + 2 k11)(1 + 2 k22), G = (4/pi) / sqrt(D),
//         D = A - 4 k12^2 (>= 1); dF/dk12 = G, dF/dk11 = -(4/pi) k12 / ((1 + 2 k11) sqrt D),
//         dG/dk12 = (16/pi) k12 D^-3/2, dG/dk11 = -(4/pi) (1 + 2 k22) D^-3/2
// Degenerate points: r = 0 (a zero row with sb2 = 0) takes c = 0; |c| within 16 ulp of 1 is
// taken as +-1 (pairs at an angle below ~2e-7 in float64, ~2e-3 in float32); where sin t = 0 (x parallel
// to y, e.g. x = y) the singular partials of relu's G and step's F (an infinite slope: those
// kernels are not differentiable there) are set to 0.
#pragma once
#include <cmath>

#include "../common/hd.h"
#include "nngp_matmul.h"

namespace kernelfuse::nngp {

template <typename T>
struct Cfg {
  int32_t depth;
  bool ntk;
  T sw2, sb2, inv_d;
};

constexpr double kPi = 3.14159265358979323846;

// sqrt in T (the unqualified host sqrt of a float is the double one)
template <typename T>
KF_HD T kf_sqrt(T v) {
#if defined(__CUDA_ARCH__)
  return sqrt(v);
#else
  return std::sqrt(v);
#endif
}

// acos / asin in T (on the host the unqualified calls of a float would be the double ones)
template <typename T>
KF_HD T kf_acos(T c) {
#if defined(__CUDA_ARCH__)
  return acos(c);
#else
  return std::acos(c);
#endif
}
template <typename T>
KF_HD T kf_asin(T z) {
#if defined(__CUDA_ARCH__)
  return asin(z);
#else
  return std::asin(z);
#endif
}

// Layer expectations at (k11, k12, k22): F = E[phi phi], G = E[phi' phi'] and their partials.
template <typename T>
struct LayerOut {
  T F, F12, F11, F22, G, G12, G11, G22;
};

template <Activation ACT, bool GRAD, typename T>
KF_HD LayerOut<T> layer(T k11, T k12, T k22) {
  LayerOut<T> o{};
  const T inv2pi = T(1.0 / (2.0 * kPi));
  if constexpr (ACT == Activation::Erf) {
    const T a1 = T(1) + T(2) * k11, a2 = T(1) + T(2) * k22;
    const T A = a1 * a2;
    T D = A - T(4) * k12 * k12;
    D = D < T(1e-30) ? T(1e-30) : D;
    T z = T(2) * k12 / kf_sqrt(A);
    z = z > T(1) ? T(1) : (z < T(-1) ? T(-1) : z);
    const T isd = T(1) / kf_sqrt(D);
    o.F = T(2.0 / kPi) * kf_asin(z);
    o.G = T(4.0 / kPi) * isd;
    if constexpr (GRAD) {
      o.F12 = o.G;
      o.F11 = -T(4.0 / kPi) * k12 * isd / a1;
      o.F22 = -T(4.0 / kPi) * k12 * isd / a2;
      const T isd3 = isd * isd * isd;
      o.G12 = T(16.0 / kPi) * k12 * isd3;
      o.G11 = -T(4.0 / kPi) * a2 * isd3;
      o.G22 = -T(4.0 / kPi) * a1 * isd3;
    }
  } else {
    const T r = kf_sqrt(k11 * k22);
    T c = r > T(0) ? k12 / r : T(0);
    // |c| within 16 ulp of 1 is taken as parallel: acos has an infinite slope there, so the
    // rounding of x.y against |x|^2 (different summation orders) would otherwise show as
    // kf_sqrt(ulp) errors on the diagonal (and ulp^(1/2^depth) for the step kernel's deep layers)
    const T snap = T(16) * (sizeof(T) == 8 ? T(2.220446049250313e-16) : T(1.1920929e-07));
    c = c >= T(1) - snap ? T(1) : (c <= T(-1) + snap ? T(-1) : c);
    const T st = kf_sqrt(T(1) - c * c);
    const T t = kf_acos(c);
    const T G = (T(kPi) - t) * inv2pi;  // E[step step], unit-free
    // 1 / (2 pi r sin t) and -c / (4 pi k sin t), 0 where singular
    const bool ok = r > T(0) && st > T(0);
    const T d12 = ok ? inv2pi / (r * st) : T(0);
    const T d11 = ok ? T(-0.5) * c * inv2pi / (k11 * st) : T(0);
    const T d22 = ok ? T(-0.5) * c * inv2pi / (k22 * st) : T(0);
    if constexpr (ACT == Activation::Relu) {
      o.F = r * (st + (T(kPi) - t) * c) * inv2pi;
      o.G = G;
      if constexpr (GRAD) {
        o.F12 = G;
        o.F11 = k11 > T(0) ? T(0.5) * inv2pi * r * st / k11 : T(0);
        o.F22 = k22 > T(0) ? T(0.5) * inv2pi * r * st / k22 : T(0);
        o.G12 = d12;
        o.G11 = d11;
        o.G22 = d22;
      }
    } else {  // step
      o.F = G;
      if constexpr (GRAD) {
        o.F12 = d12;
        o.F11 = d11;
        o.F22 = d22;
      }
    }
  }
  return o;
}

// The diagonal map k -> E[phi(u)^2], u ~ N(0, k), and its derivative (what F(k, k, k) gives).
template <Activation ACT, typename T>
KF_HD void diag(T k, T& f, T& df) {
  if constexpr (ACT == Activation::Relu) {
    f = T(0.5) * k;
    df = T(0.5);
  } else if constexpr (ACT == Activation::Step) {
    f = k > T(0) ? T(0.5) : T(0.25);  // c = 0 convention at k = 0
    df = T(0);
  } else {
    const T a = T(1) + T(2) * k;
    f = T(2.0 / kPi) * kf_asin(T(2) * k / a);
    df = T(4.0 / kPi) / (a * kf_sqrt(T(1) + T(4) * k));
  }
}

// K(s, nx, ny) and, with GRAD, its partials ks = dK/ds, kx = dK/dnx, ky = dK/dny.
template <Activation ACT, bool GRAD, typename T>
KF_HD T pair(const Cfg<T>& cf, T s, T nx, T ny, T& ks, T& kx, T& ky) {
  const T a0 = cf.sw2 * cf.inv_d;
  T k12 = a0 * s + cf.sb2, k11 = a0 * nx + cf.sb2, k22 = a0 * ny + cf.sb2;
  // tangents: k12 wrt (s, nx, ny); k11 wrt nx; k22 wrt ny; Theta wrt (s, nx, ny)
  T as = a0, ax = T(0), ay = T(0), d11 = a0, d22 = a0;
  T th = k12, ts = a0, tx = T(0), ty = T(0);
  for (int32_t h = 0; h < cf.depth; ++h) {
    const LayerOut<T> o = layer<ACT, GRAD>(k11, k12, k22);
    const T n12 = cf.sw2 * o.F + cf.sb2;
    T ns = T(0), nxx = T(0), nyy = T(0);
    if constexpr (GRAD) {
      ns = cf.sw2 * o.F12 * as;
      nxx = cf.sw2 * (o.F12 * ax + o.F11 * d11);
      nyy = cf.sw2 * (o.F12 * ay + o.F22 * d22);
    }
    if (cf.ntk) {
      const T nth = n12 + cf.sw2 * o.G * th;
      if constexpr (GRAD) {
        const T gs = o.G12 * as, gx = o.G12 * ax + o.G11 * d11, gy = o.G12 * ay + o.G22 * d22;
        ts = ns + cf.sw2 * (gs * th + o.G * ts);
        tx = nxx + cf.sw2 * (gx * th + o.G * tx);
        ty = nyy + cf.sw2 * (gy * th + o.G * ty);
      }
      th = nth;
    }
    T f1, df1, f2, df2;
    diag<ACT>(k11, f1, df1);
    diag<ACT>(k22, f2, df2);
    k11 = cf.sw2 * f1 + cf.sb2;
    k22 = cf.sw2 * f2 + cf.sb2;
    if constexpr (GRAD) {
      d11 = cf.sw2 * df1 * d11;
      d22 = cf.sw2 * df2 * d22;
      as = ns;
      ax = nxx;
      ay = nyy;
    }
    k12 = n12;
  }
  if (cf.ntk) {
    if constexpr (GRAD) {
      ks = ts;
      kx = tx;
      ky = ty;
    }
    return th;
  }
  if constexpr (GRAD) {
    ks = as;
    kx = ax;
    ky = ay;
  }
  return k12;
}

}  // namespace kernelfuse::nngp
