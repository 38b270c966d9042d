// The kernel profiles of the fused kernel sums: the one table of kernels, shared by the CPU
// kernel (kernel_sum_cpu.cpp), the CUDA kernel (kernel_sum_cuda.cu, also under the simulator),
// the glue's name parsing (kde_torch.cpp) and the estimators' normalisers (bindings.cpp ->
// kernelfuse.kde). Torch-free; every function of s is __host__ __device__ under nvcc.
//
// A profile is a function of s = r^2 (r = dist / h, k(0) = 1) and gives
//   k(s), log k(s), dk/ds, dlog k/ds, log(-dk/ds) and dk/ds given k (where that saves work),
//   compact (support r < 1: k = 0, log k = -inf, derivatives 0 outside), and
//   log_normaliser(d) = log of the integral of k(|u|) over R^d (NaN where it diverges).
// The functions are branch-free so the CPU loops over them vectorise; at r = 0 the derivatives of
// the profiles with a kink are 0 (a subgradient; the (x - y) factor they multiply is 0 there).
//
// Adding a kernel: one line in KF_KDE_KERNELS (its enum name and its string name, appended so
// the existing values stay), one Profile<> specialisation below, its float64 reference in
// python/kernelfuse/reference/kde.py and a row in the test tables. Nothing else changes: the CPU
// and CUDA kernels instantiate every kernel of the list, the glue parses the names from it.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../common/hd.h"
#if !defined(__CUDACC__) && !defined(KERNELFUSE_CUDA_SIM)
#include "../common/hd_math.h"
#include "../common/simd.h"
#endif

namespace kernelfuse::kde {

// X(enum name, string name): the kernels, in the order of their enum values.
#define KF_KDE_KERNELS(X)                        \
  X(Gaussian, "gaussian")                        \
  X(Laplacian, "laplacian")                      \
  X(Cauchy, "cauchy")                            \
  X(Matern32, "matern32")                        \
  X(Matern52, "matern52")                        \
  X(InverseMultiquadric, "inverse_multiquadric") \
  X(Tophat, "tophat")                            \
  X(Epanechnikov, "epanechnikov")                \
  X(Linear, "linear")                            \
  X(Cosine, "cosine")                            \
  X(RationalQuadratic, "rational_quadratic")

enum class Kernel : int32_t {
#define KF_X(id, str) id,
  KF_KDE_KERNELS(KF_X)
#undef KF_X
};
constexpr int kNumKernels = 0
#define KF_X(id, str) +1
    KF_KDE_KERNELS(KF_X)
#undef KF_X
    ;
constexpr const char* kKernelNames[kNumKernels] = {
#define KF_X(id, str) str,
    KF_KDE_KERNELS(KF_X)
#undef KF_X
};

// The math below differs by backend (the CPU's float exp approximation, the device functions), so
// it lives in a backend-named inline namespace: the CPU kernels and the CUDA / simulated kernels
// linked into one library then get distinct symbols (no ODR clash), callers still write
// kde::Profile<...>.
#if defined(__CUDACC__) || defined(KERNELFUSE_CUDA_SIM)
#define KF_PROFILE_BACKEND device_math
#else
#define KF_PROFILE_BACKEND host_math
#endif
inline namespace KF_PROFILE_BACKEND {

// ---- the math the profiles use: on the host CPU exp by simd::exp_approx (float: simd.h's
// approximation; double: our branch-free exp_poly of hd_math.h, <= 1 ulp; libm's was a scalar
// call per pair in the log-domain loops), log and log1p by our own branch-free, inline log_poly / log1p_poly (hd_math.h: <= 1 ulp
// or so, float and double; libm's were scalar calls that kept the pair loops over log k from
// vectorising), the others through the libm functions; on the device (and under the CUDA
// simulator) the native float / double functions.
namespace pm {
#if defined(__CUDACC__) || defined(KERNELFUSE_CUDA_SIM)
#if defined(__CUDA_ARCH__) || defined(KF_SIM_SHARED)
#define KF_PM_DEVICE 1  // device code (or the simulator's kf_sim.h): cospi / sinpi exist
#else
#define KF_PM_DEVICE 0  // nvcc's host pass, the simulator's glue: the kernels never call these there
#endif
KF_HD float exp(float v) { return expf(v); }
KF_HD double exp(double v) { return ::exp(v); }
KF_HD float sqrt(float v) { return sqrtf(v); }
KF_HD double sqrt(double v) { return ::sqrt(v); }
KF_HD float log(float v) { return logf(v); }
KF_HD double log(double v) { return ::log(v); }
KF_HD float log1p(float v) { return log1pf(v); }
KF_HD double log1p(double v) { return ::log1p(v); }
#if KF_PM_DEVICE
KF_HD float cos_half_pi(float r) { return cospif(0.5f * r); }  // cos(pi r / 2)
KF_HD double cos_half_pi(double r) { return cospi(0.5 * r); }
KF_HD float sin_half_pi(float r) { return sinpif(0.5f * r); }
KF_HD double sin_half_pi(double r) { return sinpi(0.5 * r); }
#else
KF_HD float cos_half_pi(float r) { return cosf(1.5707963267948966f * r); }
KF_HD double cos_half_pi(double r) { return ::cos(1.5707963267948966 * r); }
KF_HD float sin_half_pi(float r) { return sinf(1.5707963267948966f * r); }
KF_HD double sin_half_pi(double r) { return ::sin(1.5707963267948966 * r); }
#endif
#undef KF_PM_DEVICE
template <typename T>
KF_HD T tan_half_pi(T r) {
  return sin_half_pi(r) / cos_half_pi(r);
}
#else
template <typename T>
inline T exp(T v) {
  return simd::exp_approx(v);
}
template <typename T>
inline T sqrt(T v) {
  return ::sqrt(v);
}
template <typename T>
inline T log(T v) {
  return hd::log_poly(v);
}
template <typename T>
inline T log1p(T v) {
  return hd::log1p_poly(v);
}
template <typename T>
inline T cos_half_pi(T r) {
  return ::cos(T(1.5707963267948966) * r);
}
template <typename T>
inline T sin_half_pi(T r) {
  return ::sin(T(1.5707963267948966) * r);
}
template <typename T>
inline T tan_half_pi(T r) {
  return ::tan(T(1.5707963267948966) * r);
}
#endif
template <typename T>
KF_HD T ninf() {
  return -static_cast<T>(INFINITY);
}
inline double log_sphere_area(int d) {  // log |S^{d-1}|
  return std::log(2.0) + 0.5 * d * std::log(M_PI) - std::lgamma(0.5 * d);
}
inline double log_ball_volume(int d) { return 0.5 * d * std::log(M_PI) - std::lgamma(0.5 * d + 1.0); }
}  // namespace pm

// Defaults: k = exp(log k), dk/ds = k dlog k/ds, dk/ds given k by the same product.
template <class P>
struct ProfileBase {
  static constexpr bool compact = false;
  template <typename T>
  static KF_HD T k(T s) {
    return pm::exp(P::logk(s));
  }
  template <typename T>
  static KF_HD T dk(T s) {
    return k(s) * P::dlogk(s);
  }
  template <typename T>
  static KF_HD T dk_given_k(T s, T kv) {
    return kv * P::dlogk(s);
  }
};
// Compact profiles: dk/ds given k is dk/ds itself (closed form, no exp).
template <class P>
struct CompactBase : ProfileBase<P> {
  static constexpr bool compact = true;
  template <typename T>
  static KF_HD T dk_given_k(T s, T) {
    return P::dk(s);
  }
};

template <Kernel K>
struct Profile;

template <>
struct Profile<Kernel::Gaussian> : ProfileBase<Profile<Kernel::Gaussian>> {  // exp(-r^2/2)
  template <typename T>
  static KF_HD T logk(T s) {
    return T(-0.5) * s;
  }
  template <typename T>
  static KF_HD T dlogk(T) {
    return T(-0.5);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    return T(-0.5) * s - T(0.6931471805599453);
  }
  static double log_normaliser(int d) { return 0.5 * d * std::log(2.0 * M_PI); }
};
template <>
struct Profile<Kernel::Laplacian> : ProfileBase<Profile<Kernel::Laplacian>> {  // exp(-r)
  template <typename T>
  static KF_HD T logk(T s) {
    return -pm::sqrt(s);
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    T r = pm::sqrt(s);
    return r > T(0) ? T(-0.5) / r : T(0);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    const T r = pm::sqrt(s);
    return r > T(0) ? -r - pm::log(T(2) * r) : pm::ninf<T>();
  }
  static double log_normaliser(int d) { return pm::log_sphere_area(d) + std::lgamma(d); }
};
template <>
struct Profile<Kernel::Cauchy> : ProfileBase<Profile<Kernel::Cauchy>> {  // 1 / (1 + r^2)
  template <typename T>
  static KF_HD T k(T s) {
    return T(1) / (T(1) + s);
  }
  template <typename T>
  static KF_HD T logk(T s) {
    return -pm::log1p(s);
  }
  template <typename T>
  static KF_HD T dk(T s) {
    T k1 = T(1) / (T(1) + s);
    return -k1 * k1;
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    return T(-1) / (T(1) + s);
  }
  template <typename T>
  static KF_HD T dk_given_k(T, T kv) {
    return -kv * kv;
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    return T(-2) * pm::log1p(s);
  }
  static double log_normaliser(int d) {  // integrable for d = 1 only
    return d < 2 ? pm::log_sphere_area(d) + std::log(0.5 * M_PI / std::sin(0.5 * M_PI * d)) : NAN;
  }
};
template <>
struct Profile<Kernel::Matern32> : ProfileBase<Profile<Kernel::Matern32>> {  // (1 + a) e^-a, a = sqrt3 r
  template <typename T>
  static KF_HD T a(T s) {
    return T(1.7320508075688772) * pm::sqrt(s);
  }
  template <typename T>
  static KF_HD T k(T s) {
    T u = a(s);
    return (T(1) + u) * pm::exp(-u);
  }
  template <typename T>
  static KF_HD T logk(T s) {
    T u = a(s);
    return pm::log1p(u) - u;
  }
  template <typename T>
  static KF_HD T dk(T s) {
    return T(-1.5) * pm::exp(-a(s));
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    return T(-1.5) / (T(1) + a(s));
  }
  template <typename T>
  static KF_HD T dk_given_k(T s, T) {
    return dk(s);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    return T(0.4054651081081644) - a(s);
  }
  static double log_normaliser(int d) {
    return pm::log_sphere_area(d) + std::lgamma(d) + std::log1p(d) - 0.5 * d * std::log(3.0);
  }
};
template <>
struct Profile<Kernel::Matern52> : ProfileBase<Profile<Kernel::Matern52>> {  // (1 + a + a^2/3) e^-a, a = sqrt5 r
  template <typename T>
  static KF_HD T a(T s) {
    return T(2.23606797749979) * pm::sqrt(s);
  }
  template <typename T>
  static KF_HD T k(T s) {
    T u = a(s);
    return (T(1) + u + u * u / T(3)) * pm::exp(-u);
  }
  template <typename T>
  static KF_HD T logk(T s) {
    T u = a(s);
    return pm::log1p(u + u * u / T(3)) - u;
  }
  template <typename T>
  static KF_HD T dk(T s) {
    T u = a(s);
    return T(-5.0 / 6.0) * (T(1) + u) * pm::exp(-u);
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    T u = a(s);
    return T(-5.0 / 6.0) * (T(1) + u) / (T(1) + u + u * u / T(3));
  }
  template <typename T>
  static KF_HD T dk_given_k(T s, T) {
    return dk(s);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    T u = a(s);
    return T(-0.1823215567939546) + pm::log1p(u) - u;
  }
  static double log_normaliser(int d) {
    return pm::log_sphere_area(d) + std::lgamma(d) + std::log(1.0 + d + d * (d + 1) / 3.0) - 0.5 * d * std::log(5.0);
  }
};
template <>
struct Profile<Kernel::InverseMultiquadric> : ProfileBase<Profile<Kernel::InverseMultiquadric>> {
  template <typename T>
  static KF_HD T k(T s) {
    return T(1) / pm::sqrt(T(1) + s);
  }  // 1 / sqrt(1 + r^2)
  template <typename T>
  static KF_HD T logk(T s) {
    return T(-0.5) * pm::log1p(s);
  }
  template <typename T>
  static KF_HD T dk(T s) {
    T k1 = k(s);
    return T(-0.5) * k1 * k1 * k1;
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    return T(-0.5) / (T(1) + s);
  }
  template <typename T>
  static KF_HD T dk_given_k(T, T kv) {
    return T(-0.5) * kv * kv * kv;
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    return T(-1.5) * pm::log1p(s) - T(0.6931471805599453);
  }
  static double log_normaliser(int) { return NAN; }  // decays like 1 / r: never integrable
};
template <>
struct Profile<Kernel::Tophat> : CompactBase<Profile<Kernel::Tophat>> {  // 1
  template <typename T>
  static KF_HD T k(T s) {
    return s < T(1) ? T(1) : T(0);
  }
  template <typename T>
  static KF_HD T logk(T s) {
    return s < T(1) ? T(0) : pm::ninf<T>();
  }
  template <typename T>
  static KF_HD T dk(T) {
    return T(0);
  }
  template <typename T>
  static KF_HD T dlogk(T) {
    return T(0);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    return s == s ? pm::ninf<T>() : s;
  }
  static double log_normaliser(int d) { return pm::log_ball_volume(d); }
};
template <>
struct Profile<Kernel::Epanechnikov> : CompactBase<Profile<Kernel::Epanechnikov>> {  // 1 - r^2
  template <typename T>
  static KF_HD T k(T s) {
    return s < T(1) ? T(1) - s : T(0);
  }
  template <typename T>
  static KF_HD T logk(T s) {
    return s < T(1) ? pm::log(T(1) - s) : pm::ninf<T>();
  }
  template <typename T>
  static KF_HD T dk(T s) {
    return s < T(1) ? T(-1) : T(0);
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    return s < T(1) ? T(-1) / (T(1) - s) : T(0);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    return s < T(1) ? T(0) : pm::ninf<T>();
  }
  static double log_normaliser(int d) { return pm::log_ball_volume(d) + std::log(2.0 / (d + 2.0)); }
};
template <>
struct Profile<Kernel::Linear> : CompactBase<Profile<Kernel::Linear>> {  // 1 - r
  template <typename T>
  static KF_HD T k(T s) {
    T r = pm::sqrt(s);
    return s < T(1) ? T(1) - r : T(0);
  }
  template <typename T>
  static KF_HD T logk(T s) {
    return s < T(1) ? pm::log1p(-pm::sqrt(s)) : pm::ninf<T>();
  }
  template <typename T>
  static KF_HD T dk(T s) {
    T r = pm::sqrt(s);
    return (s < T(1) && r > T(0)) ? T(-0.5) / r : T(0);
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    T r = pm::sqrt(s);
    return (s < T(1) && r > T(0)) ? T(-0.5) / (r * (T(1) - r)) : T(0);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    const T r = pm::sqrt(s);
    return (s < T(1) && r > T(0)) ? -pm::log(T(2) * r) : pm::ninf<T>();
  }
  static double log_normaliser(int d) { return pm::log_ball_volume(d) - std::log(d + 1.0); }
};
template <>
struct Profile<Kernel::Cosine> : CompactBase<Profile<Kernel::Cosine>> {  // cos(pi r / 2)
  template <typename T>
  static KF_HD T k(T s) {
    T r = pm::sqrt(s);
    return s < T(1) ? pm::cos_half_pi(r) : T(0);
  }
  template <typename T>
  static KF_HD T logk(T s) {
    return s < T(1) ? pm::log(pm::cos_half_pi(pm::sqrt(s))) : pm::ninf<T>();
  }
  template <typename T>
  static KF_HD T dk(T s) {
    T r = pm::sqrt(s);
    return (s < T(1) && r > T(0)) ? T(-0.7853981633974483) * pm::sin_half_pi(r) / r : T(0);
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    T r = pm::sqrt(s);
    return (s < T(1) && r > T(0)) ? T(-0.7853981633974483) * pm::tan_half_pi(r) / r : T(0);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    const T r = pm::sqrt(s);
    return (s < T(1) && r > T(0)) ? T(-0.2415644752704905) + pm::log(pm::sin_half_pi(r)) - pm::log(r) : pm::ninf<T>();
  }
  static double log_normaliser(int d) {
    // S int_0^1 r^(d-1) cos(pi r / 2) dr; with t = 1 - r and n = d - 1 the integral is
    // a / ((n+1)(n+2)) sum_k (-1)^k c_k, c_0 = 1, c_k = c_{k-1} a^2 / ((n+2k+1)(n+2k+2)), a = pi/2:
    // ratios <= a^2 / 12, so the alternating series converges fast and without cancellation.
    const double n = d - 1, a2 = 0.25 * M_PI * M_PI;
    double total = 1.0, c = 1.0;
    for (int k = 1; c > 1e-20; ++k) {
      c *= a2 / ((n + 2 * k + 1) * (n + 2 * k + 2));
      total += (k % 2) ? -c : c;
    }
    return pm::log_sphere_area(d) + std::log(0.5 * M_PI) - std::log((n + 1) * (n + 2)) + std::log(total);
  }
};
// Rational quadratic with alpha = 2: (1 + r^2 / (2 alpha))^-alpha = (1 + r^2 / 4)^-2; decays like
// 1 / r^4, so integrable for d < 4 only.
template <>
struct Profile<Kernel::RationalQuadratic> : ProfileBase<Profile<Kernel::RationalQuadratic>> {
  template <typename T>
  static KF_HD T k(T s) {
    T v = T(1) / (T(1) + T(0.25) * s);
    return v * v;
  }
  template <typename T>
  static KF_HD T logk(T s) {
    return T(-2) * pm::log1p(T(0.25) * s);
  }
  template <typename T>
  static KF_HD T dk(T s) {
    T v = T(1) / (T(1) + T(0.25) * s);
    return T(-0.5) * v * v * v;
  }
  template <typename T>
  static KF_HD T dlogk(T s) {
    return T(-0.5) / (T(1) + T(0.25) * s);
  }
  template <typename T>
  static KF_HD T log_ndk(T s) {
    return T(-0.6931471805599453) - T(3) * pm::log1p(T(0.25) * s);
  }
  static double log_normaliser(int d) {  // (4 pi)^(d/2) Gamma(2 - d/2) / Gamma(2)
    return d < 4 ? 0.5 * d * std::log(4.0 * M_PI) + std::lgamma(2.0 - 0.5 * d) : NAN;
  }
};

// f(std::integral_constant<Kernel, K>{}) for the runtime kernel k (a switch: uniform across a
// CUDA grid, so it never diverges). Unknown values (rejected by the callers) take the first.
template <typename F>
KF_HD auto visit_kernel(Kernel k, F&& f) {
  switch (k) {
#define KF_X(id, str) \
  case Kernel::id:    \
    return f(std::integral_constant<Kernel, Kernel::id>{});
    KF_KDE_KERNELS(KF_X)
#undef KF_X
  }
  return f(std::integral_constant<Kernel, Kernel::Gaussian>{});
}

constexpr bool is_compact(Kernel k) {
  switch (k) {
#define KF_X(id, str) \
  case Kernel::id:    \
    return Profile<Kernel::id>::compact;
    KF_KDE_KERNELS(KF_X)
#undef KF_X
  }
  return false;
}
#if !defined(__CUDACC__)
// log of the integral of k(|u|) over R^d (bandwidth 1); NaN where it diverges. (Host C++ only:
// the estimators' normalisers, kernelfuse._C.kde_log_normaliser.)
inline double log_normaliser(Kernel k, int d) {
  return visit_kernel(k, [d](auto kc) { return Profile<decltype(kc)::value>::log_normaliser(d); });
}
#endif

}  // namespace KF_PROFILE_BACKEND
#undef KF_PROFILE_BACKEND
}  // namespace kernelfuse::kde
