// Portable SIMD helpers for the torch-free CPU kernels: GCC/Clang vector extensions (lowered to
// AVX/AVX2/AVX-512, SSE or NEON by the compiler) and branch-free math that auto-vectorises.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>
#include <climits>

#include "hd_math.h"

namespace kernelfuse::simd {

// 32-byte vectors: 8 floats or 4 doubles.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32)));
  static constexpr int W = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32)));
  static constexpr int W = 4;
};

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// exp(x) for float: n = round(x / ln 2), r = x - n ln 2 (ln 2 as hi + lo, hi of 16 bits so n hi is
// exact), exp(r) = 1 + r + r^2 Q(r) with Q our degree-5 minimax fit (scripts/fit_exp.py --float:
// 0.013 ulp fit error after rounding), times 2^n through the exponent bits. Max 0.992 ulp over every
// float of the normal range (bounded at 1 in tests/test_hd_math.py); exactly 0 below the smallest normal, +inf above the largest
// float, NaN propagates. Branch-free (ternaries become blends with -fno-trapping-math), so loops
// over it vectorise.
inline float exp_approx(float x) {
  const bool under = x < -87.33654f;
  const bool over = x > 88.72283f;
  float xc = under ? -87.33654f : x;
  xc = over ? 88.72283f : xc;
  const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  float r = xc - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  float p = 1.9857799634e-04f;
  p = p * r + 1.3933597365e-03f;
  p = p * r + 8.3333607763e-03f;
  p = p * r + 4.1666466743e-02f;
  p = p * r + 1.6666667163e-01f;
  p = p * r + 5.0000000000e-01f;
  p = p * r * r + r + 1.0f;
  // 2^n through the exponent bits; n = 128 (x in (88.03, 88.72], finite results) is 2^127 * 2
  const bool top = n > 127.0f;
  const int32_t bits = (static_cast<int32_t>(top ? 127.0f : n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  float res = p * scale * (top ? 2.0f : 1.0f);
  res = under ? 0.0f : res;
  return over ? HUGE_VALF : res;
}
// double: our branch-free exp_poly (hd_math.h; <= 0.61 ulp on the normal range, gradual underflow).
inline double exp_approx(double x) { return hd::exp_poly(x); }

// Name of the vector ISA this translation unit was compiled for.
inline const char* isa_name() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2+fma";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE4_2__)
  return "sse4.2";
#elif defined(__ARM_NEON)
  return "neon";
#elif defined(__SSE2__)
  return "sse2";
#else
  return "generic";
#endif
}

// ---- vectorised sin/cos (added for csrc/features) ----
// sincos_v(x, s, c) for Vec<float>::type / Vec<double>::type: quadrant j = round(2x/pi), Cody-Waite
// reduction r = x - j pi/2 with a three-part pi/2 (FMA), our minimax polynomials on [-pi/4, pi/4]
// (sin r = r + r z P(z), cos r = 1 - z/2 + z^2 Q(z), z = r^2; fits and splits: scripts/fit_sincos.py),
// quadrant swap / sign by bit operations. float: abs. error <= ~1.5e-7 for |x| < ~1e5 (beyond,
// the float argument itself carries more error); double: ~1e-15 for |x| < ~1e8. Branch-free.
template <typename T>
struct SinCosTraits;
template <>
struct SinCosTraits<float> {
  typedef int32_t ivec __attribute__((vector_size(32)));
  static constexpr int32_t signbit = INT32_MIN;
  static constexpr float magic = 12582912.f;  // 1.5 * 2^23: x + magic rounds to an integer
  static constexpr float p1 = 1.5703125f, p2 = 4.8382580280e-04f, p3 = 9.9209362947e-10f;
  template <typename V>
  static V sin_poly(V r, V z) {
    V q = z * -1.9515282474e-04f + 8.3321603015e-03f;
    q = q * z - 1.6666655242e-01f;
    return r + r * z * q;
  }
  template <typename V>
  static V cos_poly(V z) {
    V q = z * 2.4433156796e-05f - 1.3887316454e-03f;
    q = q * z + 4.1666645557e-02f;
    return (V{} + 1.0f) - z * 0.5f + z * z * q;
  }
};
template <>
struct SinCosTraits<double> {
  typedef int64_t ivec __attribute__((vector_size(32)));
  static constexpr int64_t signbit = INT64_MIN;
  static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double p1 = 1.57079632673412561417e+00, p2 = 6.07710050630396597660e-11,
                          p3 = 2.02226624879595063154e-21;
  template <typename V>
  static V sin_poly(V r, V z) {
    V q = z * 1.58962300147509020900e-10 - 2.50507477604929765986e-08;
    q = q * z + 2.75573136213713144229e-06;
    q = q * z - 1.98412698295894981450e-04;
    q = q * z + 8.33333333332211823041e-03;
    q = q * z - 1.66666666666666296592e-01;
    return r + r * z * q;
  }
  template <typename V>
  static V cos_poly(V z) {
    V q = z * -1.13585364415918514029e-11 + 2.08757008404843367987e-09;
    q = q * z - 2.75573141792861468607e-07;
    q = q * z + 2.48015872888516699247e-05;
    q = q * z - 1.38888888888730557304e-03;
    q = q * z + 4.16666666666665949648e-02;
    return (V{} + 1.0) - z * 0.5 + z * z * q;
  }
};

template <typename T>
inline void sincos_v(typename Vec<T>::type x, typename Vec<T>::type& s, typename Vec<T>::type& c) {
  using V = typename Vec<T>::type;
  using Tr = SinCosTraits<T>;
  using I = typename Tr::ivec;
  const V j = (x * T(0.63661977236758134308) + Tr::magic) - Tr::magic;  // round(2x/pi)
  V r = x - j * Tr::p1;
  r = r - j * Tr::p2;
  r = r - j * Tr::p3;
  const V z = r * r;
  const V sp = Tr::sin_poly(r, z), cp = Tr::cos_poly(z);
  const I q = __builtin_convertvector(j, I);
  const I swap = (q & 1) != 0;     // odd quadrant: sin and cos exchange
  const I sb = I{} + Tr::signbit;  // the sign bit in every lane
  const I ci = ((I)cp & ~swap) | ((I)sp & swap);
  const I si = ((I)sp & ~swap) | ((I)cp & swap);
  const I cneg = ((q + 1) & 2) != 0, sneg = (q & 2) != 0;
  c = (V)(ci ^ (cneg & sb));
  s = (V)(si ^ (sneg & sb));
}

// exp over a vector (lane-wise exp_approx: both loops vectorise).
template <typename T>
inline typename Vec<T>::type exp_v(typename Vec<T>::type x) {
  using V = typename Vec<T>::type;
  V r;
  for (int i = 0; i < Vec<T>::W; ++i) r[i] = exp_approx(x[i]);
  return r;
}

// cos alone (one polynomial): k = round(x/pi), r = x - k pi (three-part pi, FMA), cos(x) =
// (-1)^k cos(r) with the degree-12 (float) / degree-20 (double) Taylor polynomial on [-pi/2, pi/2].
// Same accuracy range as sincos_v, about 40% fewer operations.
template <typename T>
inline typename Vec<T>::type cos_v(typename Vec<T>::type x) {
  using V = typename Vec<T>::type;
  using Tr = SinCosTraits<T>;
  using I = typename Tr::ivec;
  const V k = (x * T(0.31830988618379067154) + Tr::magic) - Tr::magic;  // round(x/pi)
  V r = x - k * (2 * Tr::p1);
  r = r - k * (2 * Tr::p2);
  r = r - k * (2 * Tr::p3);
  const V z = r * r;
  V c;
  if constexpr (sizeof(T) == 4) {
    c = z * T(2.08767569878680989792e-9) - T(2.75573192239858906526e-7);
    c = c * z + T(2.48015873015873015873e-5);
    c = c * z - T(1.38888888888888888889e-3);
    c = c * z + T(4.16666666666666666667e-2);
    c = c * z - T(0.5);
    c = c * z + T(1);
  } else {
    c = z * T(4.11031762331216485e-19) - T(1.56192069685862264e-16);
    c = c * z + T(4.77947733238738530e-14);
    c = c * z - T(1.14707455977297247e-11);
    c = c * z + T(2.08767569878680990e-9);
    c = c * z - T(2.75573192239858907e-7);
    c = c * z + T(2.48015873015873016e-5);
    c = c * z - T(1.38888888888888889e-3);
    c = c * z + T(4.16666666666666667e-2);
    c = c * z - T(0.5);
    c = c * z + T(1);
  }
  const I ki = __builtin_convertvector(k, I);
  return (V)((I)c ^ (((ki & 1) != 0) & (I{} + Tr::signbit)));
}

}  // namespace kernelfuse::simd
