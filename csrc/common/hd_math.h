// Host/device scalar maths for the torch-free kernels (no torch headers).
//
// kf_sqrt / kf_acos / kf_asin(T): in T on both sides (the unqualified host calls of a float would
// be the double ones). Device code: CUDA's sqrt / acos / asin. Host code: std::sqrt and our own
// acos_poly / asin_poly below, which are inline and branch-free (selects, no errno, no library
// call), so loops over them vectorise (the kernels are compiled with -fno-math-errno
// -fno-trapping-math: std::sqrt is then one instruction).
//
// asin_poly / acos_poly (float and double): on |x| <= 1/2, asin(x) = x + x z P(z), z = x^2; on
// 1/2 < |x| <= 1, asin(|x|) = pi/2 - 2 asin(s), s = sqrt((1 - |x|) / 2) <= 1/2 (the same P at
// z = s^2 <= 1/4); acos(x) = pi/2 - asin(x) on the middle, 2 asin(s) for x > 1/2 and
// pi - 2 asin(s) for x < -1/2. pi/2 and pi enter as hi + lo pairs. P is our own minimax fit of
// asin's relative error on [0, 1/2] (scripts/fit_acos_asin.py: Remez exchange in mpmath; degree 4
// for float, 11 for double; the fit errors are 0.1 and 0.15 ulp). Measured with
// `python scripts/fit_acos_asin.py --check` (every float in [-1, 1], 1e7 doubles): see the table
// in docs/nngp.md; the test is tests/test_hd_math.py. |x| > 1 and NaN give NaN; +-0 and
// subnormals keep their value (asin) or give pi/2 (acos).
//
// log_poly / log1p_poly (float and double): x = 2^k m with m in [sqrt(1/2), sqrt(2)) by integer
// operations on the bits (subnormals scaled by 2^23 / 2^52 first), f = m - 1 (exact), and
// log(1 + f) = 2 atanh(s), s = f / (2 + f), |s| <= 3 - 2 sqrt(2), written as
//   log(1 + f) = f - (f^2/2 - s (f^2/2 + R)),  R = 2 atanh(s) - 2 s = z Q(z),  z = s^2
// (the exact identity f - f^2/2 + s f^2/2 = 2 s keeps f, exact, as the leading term), plus k ln 2
// with ln 2 as hi + lo (hi with few enough bits that k hi is exact). Q is our own minimax fit of
// the relative error of atanh(s) / s on z in [0, (3 - 2 sqrt 2)^2] (scripts/fit_log.py, with the
// Remez exchange of scripts/fit_acos_asin.py; degree 2 for float, 6 for double: fit errors 0.014
// and 0.013 ulp). log1p(v) takes u = 1 + v rounded and its exact rounding error e (Fast2Sum, the
// larger operand first), and adds e / u to the low part: log(u + e) = log(u) + e / u to far below
// an ulp. Special values by selects: log(+-0) = -inf, log(+inf) = +inf, log(x < 0) and log(NaN) =
// NaN; log1p(-1) = -inf, log1p(v < -1) = NaN, log1p(+-0) = +-0, log1p(+inf) = +inf, subnormal v: v. Measured with
// `python scripts/fit_log.py --check` (GCC 12, AVX-512): every float: log 0.758 ulp, log1p 0.758 ulp;
// 2.7e7 / 3.6e7 doubles against extended precision: log 0.749, log1p 0.746 ulp. The test
// (tests/test_hd_math.py) bounds them at 1 ulp on a dense sweep.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "hd.h"

namespace kernelfuse {
namespace hd {

template <typename T>
struct AsinConsts;
template <>
struct AsinConsts<float> {
  static constexpr float pio2_hi = 1.57079637050628662109375f, pio2_lo = -4.3711390001862426e-08f;
  static constexpr float pi_hi = 3.1415927410125732421875f, pi_lo = -8.742278000372485e-08f;
  static constexpr float pio4_hi = pio2_hi / 2, pio4_lo = pio2_lo / 2;  // exact halves
  static inline float poly(float z) {
    float p = 4.216630757e-02f;
    p = p * z + 2.417951636e-02f;
    p = p * z + 4.547037557e-02f;
    p = p * z + 7.495297492e-02f;
    return p * z + 1.666675210e-01f;
  }
};
template <>
struct AsinConsts<double> {
  static constexpr double pio2_hi = 1.57079632679489655799898173427, pio2_lo = 6.123233995736766e-17;
  static constexpr double pi_hi = 3.14159265358979311599796346854, pi_lo = 1.2246467991473532e-16;
  static constexpr double pio4_hi = pio2_hi / 2, pio4_lo = pio2_lo / 2;
  static inline double poly(double z) {
    double p = 3.19122051365384324e-02;
    p = p * z - 1.62241596613093321e-02;
    p = p * z + 1.95282071403808030e-02;
    p = p * z + 6.52799579396740656e-03;
    p = p * z + 1.21692071046051002e-02;
    p = p * z + 1.38852361223752632e-02;
    p = p * z + 1.73597046996783605e-02;
    p = p * z + 2.23717580545651946e-02;
    p = p * z + 3.03819591367938090e-02;
    p = p * z + 4.46428568283326957e-02;
    p = p * z + 7.50000000033700792e-02;
    return p * z + 1.66666666666654084e-01;
  }
};

// Every result is r = (off_hi + sc u) + (sc q + off_lo) with asin(u) = u + q, q = u z P(z):
//   |x| <= 1/2: u = x, z = x^2;  asin: sc = 1, off = 0;   acos: sc = -1, off = pi/2
//   |x| >  1/2: u = s = sqrt((1 - |x|) / 2), z = s^2;  acos: x > 0: sc = 2, off = 0; x < 0:
//               sc = -2, off = pi;  asin: r = ((pi/4 - 2u) + (pi/4_lo - 2q)) + pi/4 with the
//               sign of x (sc = -2, off = pi/4, then pi/4 once more)
// sc u is exact, and so is pi/4 - 2u for |x| <= 0.92 (Sterbenz): u + q is never rounded on the way
// (rounding it, then doubling it, cost 1 ulp near |x| = 1/2), and the partial sums of asin stay
// below the result's binade (pi/2 - 2u rounded in [1, 2) for results just below 1: 1 more ulp).
// All selects come first, the tail is one straight line. (GCC's jump threading may still
// duplicate the tail for both values of |x| > 1/2 before if-conversion, evaluating P twice: loops
// over these functions go in functions marked KF_NO_THREAD_JUMPS, below.)
template <typename T>
struct AsinArg {
  T u, z, sc, hi, lo;
};

template <typename T, bool ACOS>
inline AsinArg<T> asin_arg(T x) {
  using C = AsinConsts<T>;
  const T a = std::fabs(x);
  const bool big = a > T(0.5);
  const T zb = (T(1) - a) * T(0.5);  // exact for a in [1/2, 1]; < 0 (NaN below) for a > 1
  const T sb = std::sqrt(zb);
  AsinArg<T> r;
  r.z = big ? zb : x * x;
  r.u = big ? sb : x;
  if constexpr (ACOS) {
    const bool neg = x < T(0);
    r.sc = big ? (neg ? T(-2) : T(2)) : T(-1);
    r.hi = big ? (neg ? C::pi_hi : T(0)) : C::pio2_hi;
    r.lo = big ? (neg ? C::pi_lo : T(0)) : C::pio2_lo;
  } else {
    r.sc = big ? T(-2) : T(1);
    r.hi = big ? C::pio4_hi : T(0);
    r.lo = big ? C::pio4_lo : T(0);
  }
  return r;
}

template <typename T>
inline T asin_poly(T x) {
  const AsinArg<T> r = asin_arg<T, false>(x);
  const T q = r.u * r.z * AsinConsts<T>::poly(r.z);
  return std::copysign(((r.hi + r.sc * r.u) + (r.sc * q + r.lo)) + r.hi, x);  // u + q: x's sign already
}

template <typename T>
inline T acos_poly(T x) {
  const AsinArg<T> r = asin_arg<T, true>(x);
  const T q = r.u * r.z * AsinConsts<T>::poly(r.z);
  return (r.hi + r.sc * r.u) + (r.sc * q + r.lo);
}

// ---- log / log1p (see the top of the file). The constants: the bits of sqrt(1/2) (rounded), of
// 1 and the mantissa mask; 2^p (p mantissa bits) whose bits or'ed with a small integer j are the
// float 2^p + j (the exponent field to a float without an int -> float conversion, which AVX2 lacks
// for 64-bit lanes); the smallest normal and the subnormal scale.
template <typename T>
struct LogConsts;
template <>
struct LogConsts<float> {
  using U = uint32_t;
  static constexpr U sqrt_half = 0x3f3504f3u, one = 0x3f800000u, mant = 0x007fffffu, two_p = 0x4b000000u;
  static constexpr int p = 23;
  static constexpr float k_bias = 8388608.0f + 127.0f;  // 2^23 + the exponent bias
  static constexpr float tiny = 1.17549435e-38f, sub_scale = 8388608.0f, sub_k = 23.0f;
  static constexpr float ln2_hi = 6.931457520e-01f, ln2_lo = 1.428606820e-06f;  // hi: 16 bits
  static inline float poly(float z) {                                           // Q(z): 2 atanh(s) - 2 s = z Q(z)
    float q = 2.987093627e-01f;
    q = q * z + 3.997757435e-01f;
    return q * z + 6.666677594e-01f;
  }
};
template <>
struct LogConsts<double> {
  using U = uint64_t;
  static constexpr U sqrt_half = 0x3fe6a09e667f3bcdull, one = 0x3ff0000000000000ull, mant = 0x000fffffffffffffull,
                     two_p = 0x4330000000000000ull;
  static constexpr int p = 52;
  static constexpr double k_bias = 4503599627370496.0 + 1023.0;  // 2^52 + the exponent bias
  static constexpr double tiny = 2.2250738585072014e-308, sub_scale = 4503599627370496.0, sub_k = 52.0;
  static constexpr double ln2_hi = 6.93147180559890330187e-01, ln2_lo = 5.49792301870837115524e-14;  // hi: 42 bits
  static inline double poly(double z) {
    double q = 1.47954744787754749e-01;
    q = q * z + 1.53140989024774882e-01;
    q = q * z + 1.81835624025958820e-01;
    q = q * z + 2.22221986108295994e-01;
    q = q * z + 2.85714287420151092e-01;
    q = q * z + 3.99999999994163746e-01;
    return q * z + 6.66666666666673402e-01;
  }
};

template <typename T, typename U>
inline U bits_of(T v) {
  U u;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T, typename U>
inline T from_bits(U u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

// log(x) + c for x > 0 normal (any other x: a finite garbage value, the callers select), with kadd
// added to the exponent (the subnormal scaling) and c a low-order term (log1p's correction).
template <typename T>
inline T log_core(T x, T kadd, T c) {
  using C = LogConsts<T>;
  using U = typename C::U;
  const U t = bits_of<T, U>(x) + (C::one - C::sqrt_half);  // exponent field + 1 where m >= sqrt(2)
  const T m = from_bits<T, U>((t & C::mant) + C::sqrt_half);
  const T k = (from_bits<T, U>((t >> C::p) | C::two_p) - C::k_bias) + kadd;
  const T f = m - T(1);
  const T hfsq = T(0.5) * f * f;
  const T s = f / (T(2) + f);
  const T z = s * s;
  const T r = z * C::poly(z);
  return k * C::ln2_hi + (f - (hfsq - (s * (hfsq + r) + (k * C::ln2_lo + c))));
}

template <typename T>
inline T log_poly(T x) {
  using C = LogConsts<T>;
  constexpr T inf = std::numeric_limits<T>::infinity();
  const bool sub = x < C::tiny;
  const T r = log_core(sub ? x * C::sub_scale : x, sub ? -C::sub_k : T(0), T(0));
  const T bad = x == T(0) ? -inf : std::numeric_limits<T>::quiet_NaN();  // x < 0, NaN: NaN
  const T out = x > T(0) ? r : bad;
  return x == inf ? inf : out;
}

template <typename T>
inline T log1p_poly(T v) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  const T u = T(1) + v;
  const T e = v > T(1) ? T(1) - (u - v) : v - (u - T(1));  // u + e = 1 + v exactly
  const T r = log_core(u, T(0), e / u);                    // u >= 2^-p: never subnormal here
  const T bad = v == T(-1) ? -inf : std::numeric_limits<T>::quiet_NaN();
  T out = v > T(-1) ? r : bad;
  out = v == inf ? inf : out;
  return v == T(0) ? v : out;  // -0 keeps its sign (r is +0 there)
}

// ---- exp (double; the float one is simd::exp_approx). n = round(x / ln 2) by the 1.5 * 2^52
// shift (t = x log2(e) + 1.5 * 2^52 holds n in its low mantissa bits), r = x - n ln 2 with ln 2 as
// the hi + lo of LogConsts<double> (n hi exact), |r| <= ln(2) / 2, exp(r) = 1 + (r + r^2 Q(r)) with
// Q of degree 10 our own minimax fit of Q's relative error on [-ln(2)/2, ln(2)/2]
// (scripts/fit_exp.py: exp's relative error 0.004 ulp after rounding the coefficients). The sum
// is formed as s + (e + low): s + e = 1 + r exactly (Fast2Sum) and the reduction's rounding error
// rl enters the low part, so the one rounding of weight is the last addition (a plain
// 1 + (r + r^2 Q) loses up to 1/2 ulp more below 1: r's and the sum's roundings are then as large
// as half the result's ulp; measured 0.98 ulp that way). 2^n is
// applied as 2^n1 2^n2 (n1 = round(n / 2), n2 = n - n1, both |.| <= 538), each built in the
// exponent field by integer operations on the bits of the shifted t (no int <-> double
// conversion, which AVX2 lacks for 64-bit lanes): p 2^n1 is exact and the one rounding is the
// last product, so the results near the overflow threshold and the subnormal results (gradual
// underflow, x in [-745.13, -708.4]) come from the same straight line as the others. x is first
// clamped to [-746, 710] (so n stays in range): x > 709.78 gives +inf (+inf too), x < -745.13
// gives +0 (-inf too), NaN stays NaN (the clamps' compares are false for it). Branch-free.
// Measured (`python scripts/fit_exp.py --check`, 3.9e7 doubles across [-746, 711] against
// extended precision): see docs/kde.md; the test (tests/test_hd_math.py) bounds it at 1 ulp.
struct ExpConsts {
  static constexpr double log2e = 1.4426950408889634, shift = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double lo = -746.0, hi = 710.0;
  static constexpr uint64_t bias = 1023;
  static inline double poly(double r) {  // Q(r) ~ (e^r - 1 - r) / r^2
    double q = 2.08893745828898753e-09;
    q = q * r + 2.51051736293802059e-08;
    q = q * r + 2.75573496172905366e-07;
    q = q * r + 2.75572555142170401e-06;
    q = q * r + 2.48015872457449909e-05;
    q = q * r + 1.98412698747208203e-04;
    q = q * r + 1.38888888889179569e-03;
    q = q * r + 8.33333333332616708e-03;
    q = q * r + 4.16666666666666158e-02;
    q = q * r + 1.66666666666666713e-01;
    return q * r + 0.5;
  }
};

inline double exp_poly(double x) {
  using C = ExpConsts;
  using L = LogConsts<double>;
  double xc = x < C::lo ? C::lo : x;
  xc = xc > C::hi ? C::hi : xc;
  const double t = xc * C::log2e + C::shift;
  const double n = t - C::shift;
  const double a = xc - n * L::ln2_hi;  // exact
  const double r = a - n * L::ln2_lo;
  const double rl = (a - r) - n * L::ln2_lo;  // r + rl = a - n lo to far below an ulp of r
  const double s = 1.0 + r;
  const double e = (1.0 - s) + r;  // s + e = 1 + r exactly (Fast2Sum)
  // exp(r + rl) = s + (e + rl (1 + r) + r^2 Q(r)) to far below an ulp (rl r^2 / 2 and smaller dropped)
  const double p = s + (e + (rl + r * (rl + r * C::poly(r))));
  const double t1 = n * 0.5 + C::shift;  // n1 = round(n / 2) in its low bits
  const double t2 = (n - (t1 - C::shift)) + C::shift;
  // (bits + bias) << 52: the low 12 bits of n + bias into the exponent field (the shift's own
  // bits there are 0), i.e. the double 2^n1 / 2^n2 for -1022 <= n1, n2 <= 1023
  const double s1 = from_bits<double, uint64_t>((bits_of<double, uint64_t>(t1) + C::bias) << 52);
  const double s2 = from_bits<double, uint64_t>((bits_of<double, uint64_t>(t2) + C::bias) << 52);
  return (p * s1) * s2;
}

}  // namespace hd

#if defined(__CUDA_ARCH__)
#define KF_HD_PICK(device, host) device
#else
#define KF_HD_PICK(device, host) host
#endif
template <typename T>
KF_HD T kf_sqrt(T v) {
  return KF_HD_PICK(sqrt, std::sqrt)(v);
}
template <typename T>
KF_HD T kf_acos(T v) {
  return KF_HD_PICK(acos, hd::acos_poly)(v);
}
template <typename T>
KF_HD T kf_asin(T v) {
  return KF_HD_PICK(asin, hd::asin_poly)(v);
}
#undef KF_HD_PICK

// For the functions holding loops over asin_poly / acos_poly: GCC's jump threading duplicates
// their tail for both sides of |x| > 1/2 before if-conversion, and the vectorised loop then
// evaluates both (P twice). A GCC attribute (elsewhere: nothing).
#if defined(__GNUC__) && !defined(__clang__)
#define KF_NO_THREAD_JUMPS __attribute__((optimize("no-thread-jumps")))
#else
#define KF_NO_THREAD_JUMPS
#endif

// The compiled asin_poly / acos_poly / log_poly / log1p_poly / exp_poly (double) over an array (hd_math_cpu.cpp, built with the kernels'
// flags): the test's and scripts/fit_acos_asin.py's / fit_log.py's entry (kernelfuse._C._hd_math).
// Exp: hd::exp_poly (double) / simd::exp_approx (float); Sin / Cos: simd::sincos_v
enum class HdFn : int32_t { Asin = 0, Acos = 1, Log = 2, Log1p = 3, Exp = 4, Sin = 5, Cos = 6 };
template <typename T>
void hd_math_eval(HdFn fn, const T* x, T* y, int64_t n);

}  // namespace kernelfuse
