// Portable SIMD helpers for the torch-free CPU kernels: GCC/Clang vector extensions (lowered to
// AVX/AVX2/AVX-512, SSE or NEON by the compiler) and branch-free math that auto-vectorises.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

namespace kernelfuse::simd {

// 32-byte vectors: 8 floats or 4 doubles.
template <typename T> struct Vec;
template <> struct Vec<float> { typedef float type __attribute__((vector_size(32))); static constexpr int W = 8; };
template <> struct Vec<double> { typedef double type __attribute__((vector_size(32))); static constexpr int W = 4; };

template <typename V, typename T>
inline V load(const T* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
template <typename V, typename T>
inline void store(T* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }

// exp(x) for float: Cody-Waite range reduction and a degree-6 polynomial, ~1 ulp on the normal
// range; exactly 0 below the smallest normal, +inf above the largest float, NaN propagates.
// Branch-free (ternaries become blends with -fno-trapping-math), so loops over it vectorise.
inline float exp_approx(float x) {
  const bool under = x < -87.33654f;
  const bool over = x > 88.72283f;
  float xc = under ? -87.33654f : x;
  xc = over ? 88.72283f : xc;
  const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  float res = p * scale;
  res = under ? 0.0f : res;
  return over ? HUGE_VALF : res;
}
inline double exp_approx(double x) { return std::exp(x); }

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

}  // namespace kernelfuse::simd
