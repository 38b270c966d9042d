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
// Pieces: Side (one side's diagonal entry and its square roots / inverses), layer (the
// expectations; branch-free), next_diag (a side's next layer), PairState / first_layer / advance
// (a pair's state and one layer of it). Both kernels hoist the Sides and next_diag out of the
// pair loop (they depend on one point) and run advance per pair: the CPU kernel over tiles,
// vectorised over the points (nngp_matmul_cpu.cpp), the CUDA kernels per thread, layer group by
// layer group (nngp_matmul_cuda.cu).
#pragma once
#include <cmath>

#include "../common/hd_math.h"
#include "nngp_matmul.h"

namespace kernelfuse::nngp {

template <typename T>
struct Cfg {
  int32_t depth;
  bool ntk;
  T sw2, sb2, inv_d;
};

constexpr double kPi = 3.14159265358979323846;

// One side's diagonal entry k (k11 of x or k22 of y) of a layer's input, with what the pair maths
// needs of it: computed once per side and layer by both kernels (hoisted out of the pair loop;
// one division, inv = rs^2: inv only enters the partials):
//   relu / step: s = sqrt k, rs = 1 / sqrt k, inv = 1 / k  (rs = inv = 0 at k = 0)
//   erf:         s = 1 + 2k, rs = 1 / sqrt(1 + 2k), inv = 1 / (1 + 2k)
template <typename T>
struct Side {
  T s, rs, inv;
};

// inv is rs^2 by definition: from (s, rs) alone (what the CUDA kernels keep per layer)
template <typename T>
KF_HD Side<T> side_of(T s, T rs) {
  return {s, rs, rs * rs};
}

template <Activation ACT, typename T>
KF_HD Side<T> side(T k) {
  if constexpr (ACT == Activation::Erf) {
    const T a = T(1) + T(2) * k;
    return side_of(a, T(1) / kf_sqrt(a));
  } else {
    const T sq = kf_sqrt(k);
    return side_of(sq, k > T(0) ? T(1) / (k > T(0) ? sq : T(1)) : T(0));  // no division by 0
  }
}

// Layer expectations at (k11, k12, k22): F = E[phi phi], G = E[phi' phi'] and their partials.
// Branch-free (selects), so the CPU kernel's loops over the pairs vectorise.
template <typename T>
struct LayerOut {
  T F, F12, F11, F22, G, G12, G11, G22;
};

template <Activation ACT, bool GRAD, typename T>
KF_HD LayerOut<T> layer(Side<T> p, T k12, Side<T> q) {
  LayerOut<T> o{};
  const T inv2pi = T(1.0 / (2.0 * kPi));
  if constexpr (ACT == Activation::Erf) {
    T D = p.s * q.s - T(4) * k12 * k12;
    D = D < T(1e-30) ? T(1e-30) : D;
    T z = T(2) * k12 * (p.rs * q.rs);
    z = z > T(1) ? T(1) : (z < T(-1) ? T(-1) : z);
    const T isd = T(1) / kf_sqrt(D);
    o.F = T(2.0 / kPi) * kf_asin(z);
    o.G = T(4.0 / kPi) * isd;
    if constexpr (GRAD) {
      o.F12 = o.G;
      o.F11 = -T(4.0 / kPi) * k12 * isd * p.inv;
      o.F22 = -T(4.0 / kPi) * k12 * isd * q.inv;
      const T isd3 = isd * isd * isd;
      o.G12 = T(16.0 / kPi) * k12 * isd3;
      o.G11 = -T(4.0 / kPi) * q.s * isd3;
      o.G22 = -T(4.0 / kPi) * p.s * isd3;
    }
  } else {
    const T rr = p.rs * q.rs;  // 1 / r, r = sqrt(k11 k22); 0 where r = 0 (then c = 0)
    T c = k12 * rr;
    // |c| within 16 ulp of 1 is taken as parallel: acos has an infinite slope there, so the
    // rounding of x.y against |x|^2 (different summation orders) would otherwise show as
    // sqrt(ulp) errors on the diagonal (and ulp^(1/2^depth) for the step kernel's deep layers)
    const T snap = T(16) * (sizeof(T) == 8 ? T(2.220446049250313e-16) : T(1.1920929e-07));
    c = c >= T(1) - snap ? T(1) : (c <= T(-1) + snap ? T(-1) : c);
    const T st = kf_sqrt(T(1) - c * c);
    const T t = kf_acos(c);
    const T G = (T(kPi) - t) * inv2pi;  // E[step step], unit-free
    if constexpr (ACT == Activation::Relu) {
      o.F = (p.s * q.s) * (st + (T(kPi) - t) * c) * inv2pi;
      o.G = G;
    } else {
      o.F = G;
    }
    if constexpr (GRAD) {
      // 1 / (2 pi r sin t) and -c / (4 pi k sin t), 0 where singular (r = 0 or sin t = 0)
      const bool ok = st > T(0);
      const T ist = ok ? T(1) / (ok ? st : T(1)) : T(0);
      const T d12 = inv2pi * rr * ist;
      const T dc = T(-0.5) * inv2pi * c * ist;
      if constexpr (ACT == Activation::Relu) {
        const T f = T(0.5) * inv2pi * (p.s * q.s) * st;  // r sin t / 4 pi
        o.F12 = G;
        o.F11 = f * p.inv;
        o.F22 = f * q.inv;
        o.G12 = d12;
        o.G11 = dc * p.inv;
        o.G22 = dc * q.inv;
      } else {
        o.F12 = d12;
        o.F11 = dc * p.inv;
        o.F22 = dc * q.inv;
      }
    }
  }
  return o;
}

// The diagonal map k -> E[phi(u)^2], u ~ N(0, k), and its derivative (what F(k, k, k) gives),
// as the next layer's k = sw2 f + sb2 and its tangent dk (with respect to |x|^2).
template <Activation ACT, typename T>
KF_HD void next_diag(const Cfg<T>& cf, T& k, T& dk) {
  T f, df;
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
  k = cf.sw2 * f + cf.sb2;
  dk = cf.sw2 * df * dk;
}

// The per-pair state of the forward-mode recursion: k12 and its partials with respect to (s, nx,
// ny), Theta and its partials. (The diagonal entries k11, k22 and their tangents d11 = dk11/dnx,
// d22 = dk22/dny belong to one side each: Side and next_diag.)
template <typename T>
struct PairState {
  T k12, as, ax, ay, th, ts, tx, ty;
};

template <typename T>
KF_HD PairState<T> first_layer(const Cfg<T>& cf, T s) {
  const T a0 = cf.sw2 * cf.inv_d, k12 = a0 * s + cf.sb2;
  return {k12, a0, T(0), T(0), k12, a0, T(0), T(0)};
}

// One hidden layer: the state at layer h's input (sides p, q and tangents d11, d22 of layer h)
// to the state at its output (by value throughout: no addressable locals in the CPU's simd loops). NTK: Theta is carried; GRAD: the partials are.
template <Activation ACT, bool GRAD, bool NTK, typename T>
KF_HD PairState<T> advance(const Cfg<T>& cf, Side<T> p, T d11, Side<T> q, T d22, PairState<T> u) {
  const LayerOut<T> o = layer<ACT, GRAD>(p, u.k12, q);
  const T sw2 = cf.sw2;
  const T n12 = sw2 * o.F + cf.sb2;
  T ns = T(0), nxx = T(0), nyy = T(0);
  if constexpr (GRAD) {
    ns = sw2 * o.F12 * u.as;
    nxx = sw2 * (o.F12 * u.ax + o.F11 * d11);
    nyy = sw2 * (o.F12 * u.ay + o.F22 * d22);
  }
  if constexpr (NTK) {
    if constexpr (GRAD) {
      const T gs = o.G12 * u.as, gx = o.G12 * u.ax + o.G11 * d11, gy = o.G12 * u.ay + o.G22 * d22;
      u.ts = ns + sw2 * (gs * u.th + o.G * u.ts);
      u.tx = nxx + sw2 * (gx * u.th + o.G * u.tx);
      u.ty = nyy + sw2 * (gy * u.th + o.G * u.ty);
    }
    u.th = n12 + sw2 * o.G * u.th;
  }
  u.k12 = n12;
  if constexpr (GRAD) {
    u.as = ns;
    u.ax = nxx;
    u.ay = nyy;
  }
  return u;
}

}  // namespace kernelfuse::nngp
