// Kernel profiles as functions of s = r^2, shared by the CPU kernels (host) and usable from CUDA
// (__host__ __device__ when compiled by nvcc). Each profile gives k, log k, dk/ds and dlog k/ds,
// branch-free so loops over them vectorise; outside a compact support k = 0, log k = -inf and
// both derivatives are 0; at r = 0 derivatives of profiles with a kink use 0 (a subgradient).
#pragma once
#include <cmath>
#include "../common/hd.h"
#include "kernel_sum.h"
#include "../common/simd.h"


namespace kernelfuse::kde {

template <Kernel K, typename T> struct Profile;

// exp used by the profiles: the vectorisable float approximation on the host CPU.
KF_HD float kf_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return simd::exp_approx(x);
#endif
}
KF_HD double kf_exp(double x) { return exp(x); }

#define KF_NINF (-static_cast<T>(INFINITY))

template <typename T> struct Profile<Kernel::Gaussian, T> {
  static KF_HD T logk(T s) { return T(-0.5) * s; }
  static KF_HD T dlogk(T) { return T(-0.5); }
};
template <typename T> struct Profile<Kernel::Laplacian, T> {
  static KF_HD T logk(T s) { return -sqrt(s); }
  static KF_HD T dlogk(T s) { T r = sqrt(s); return r > T(0) ? T(-0.5) / r : T(0); }
};
template <typename T> struct Profile<Kernel::Cauchy, T> {
  static KF_HD T logk(T s) { return -log1p(s); }
  static KF_HD T dlogk(T s) { return T(-1) / (T(1) + s); }
};
template <typename T> struct Profile<Kernel::Matern32, T> {
  static KF_HD T logk(T s) { T a = T(1.7320508075688772) * sqrt(s); return log1p(a) - a; }
  static KF_HD T dlogk(T s) { T a = T(1.7320508075688772) * sqrt(s); return T(-1.5) / (T(1) + a); }
};
template <typename T> struct Profile<Kernel::Matern52, T> {
  static KF_HD T logk(T s) { T a = T(2.23606797749979) * sqrt(s); return log1p(a + a * a / T(3)) - a; }
  static KF_HD T dlogk(T s) {
    T a = T(2.23606797749979) * sqrt(s);
    return T(-5.0 / 6.0) * (T(1) + a) / (T(1) + a + a * a / T(3));
  }
};
template <typename T> struct Profile<Kernel::InverseMultiquadric, T> {
  static KF_HD T logk(T s) { return T(-0.5) * log1p(s); }
  static KF_HD T dlogk(T s) { return T(-0.5) / (T(1) + s); }
};
template <typename T> struct Profile<Kernel::Tophat, T> {
  static KF_HD T logk(T s) { return s < T(1) ? T(0) : KF_NINF; }
  static KF_HD T dlogk(T) { return T(0); }
};
template <typename T> struct Profile<Kernel::Epanechnikov, T> {
  static KF_HD T logk(T s) { return s < T(1) ? log(T(1) - s) : KF_NINF; }
  static KF_HD T dlogk(T s) { return s < T(1) ? T(-1) / (T(1) - s) : T(0); }
};
template <typename T> struct Profile<Kernel::Linear, T> {
  static KF_HD T logk(T s) { return s < T(1) ? log1p(-sqrt(s)) : KF_NINF; }
  static KF_HD T dlogk(T s) {
    T r = sqrt(s);
    return (s < T(1) && r > T(0)) ? T(-0.5) / (r * (T(1) - r)) : T(0);
  }
};
template <typename T> struct Profile<Kernel::Cosine, T> {
  static KF_HD T logk(T s) { return s < T(1) ? log(cos(T(1.5707963267948966) * sqrt(s))) : KF_NINF; }
  static KF_HD T dlogk(T s) {
    T r = sqrt(s);
    return (s < T(1) && r > T(0)) ? T(-0.7853981633974483) * tan(T(1.5707963267948966) * r) / r : T(0);
  }
};

// Linear-domain value k(s) and dk/ds, written directly where that is cheaper than exp(log k).
template <Kernel K, typename T> struct Linear {  // exp(-inf) = 0 outside a support
  static KF_HD T k(T s) { T l = Profile<K, T>::logk(s); return kf_exp(l); }
  static KF_HD T dk(T s) { return k(s) * Profile<K, T>::dlogk(s); }
};
template <typename T> struct Linear<Kernel::Cauchy, T> {
  static KF_HD T k(T s) { return T(1) / (T(1) + s); }
  static KF_HD T dk(T s) { T k1 = T(1) / (T(1) + s); return -k1 * k1; }
};
template <typename T> struct Linear<Kernel::InverseMultiquadric, T> {
  static KF_HD T k(T s) { return T(1) / sqrt(T(1) + s); }
  static KF_HD T dk(T s) { T k1 = T(1) / sqrt(T(1) + s); return T(-0.5) * k1 * k1 * k1; }
};
template <typename T> struct Linear<Kernel::Tophat, T> {
  static KF_HD T k(T s) { return s < T(1) ? T(1) : T(0); }
  static KF_HD T dk(T) { return T(0); }
};
template <typename T> struct Linear<Kernel::Epanechnikov, T> {
  static KF_HD T k(T s) { return s < T(1) ? T(1) - s : T(0); }
  static KF_HD T dk(T s) { return s < T(1) ? T(-1) : T(0); }
};
template <typename T> struct Linear<Kernel::Linear, T> {
  static KF_HD T k(T s) { T r = sqrt(s); return s < T(1) ? T(1) - r : T(0); }
  static KF_HD T dk(T s) { T r = sqrt(s); return (s < T(1) && r > T(0)) ? T(-0.5) / r : T(0); }
};

template <typename T> struct Linear<Kernel::Matern32, T> {
  static KF_HD T k(T s) { T a = T(1.7320508075688772) * sqrt(s); return (T(1) + a) * kf_exp(-a); }
  static KF_HD T dk(T s) { T a = T(1.7320508075688772) * sqrt(s); return T(-1.5) * kf_exp(-a); }
};
template <typename T> struct Linear<Kernel::Matern52, T> {
  static KF_HD T k(T s) {
    T a = T(2.23606797749979) * sqrt(s);
    return (T(1) + a + a * a / T(3)) * kf_exp(-a);
  }
  static KF_HD T dk(T s) {
    T a = T(2.23606797749979) * sqrt(s);
    return T(-5.0 / 6.0) * (T(1) + a) * kf_exp(-a);
  }
};
template <typename T> struct Linear<Kernel::Cosine, T> {
  static KF_HD T k(T s) { T r = sqrt(s); return s < T(1) ? cos(T(1.5707963267948966) * r) : T(0); }
  static KF_HD T dk(T s) {
    T r = sqrt(s);
    return (s < T(1) && r > T(0)) ? T(-0.7853981633974483) * sin(T(1.5707963267948966) * r) / r : T(0);
  }
};

// dk/ds when k(s) is already known: saves a transcendental where the profile allows it.
template <Kernel K, typename T> KF_HD T dk_given_k(T s, T kv) {
  if constexpr (K == Kernel::Gaussian || K == Kernel::Laplacian) {
    return kv * Profile<K, T>::dlogk(s);
  } else if constexpr (K == Kernel::Cauchy) {
    return -kv * kv;
  } else if constexpr (K == Kernel::InverseMultiquadric) {
    return T(-0.5) * kv * kv * kv;
  } else {
    (void)kv;
    return Linear<K, T>::dk(s);
  }
}

#undef KF_NINF
}  // namespace kernelfuse::kde
