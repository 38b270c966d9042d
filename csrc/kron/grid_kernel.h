// 1-D stationary kernel matrices and their derivatives on grids:
//     K[i, j] = d^a/dx^a d^b/dx'^b k(x, x') at x = x1[i], x' = x2[j],  k(x, x') = sum_q k_q(x - x'),
// for the kinds below, with a, b >= 0 (the public API allows a, b <= 2; the torch glue allows one
// more order internally for the gradient with respect to x1 / x2). With tau = x - x',
// d/dx = d/dtau and d/dx' = -d/dtau, so K[i, j] = (-1)^b k^(n)(tau), n = a + b.
//
// Every kind is even in tau: k(tau) = h(|tau|) with h analytic on t >= 0, so
//     k^(n)(tau) = sign(tau)^n h^(n)(|tau|)          (sign(0) = 0 for odd n).
// For the orders a kind defines (see max_order) this is exact, including tau = 0 (odd derivatives of
// an n-times differentiable even function vanish at 0); for one order beyond (used only by the
// x-gradient) it is the symmetric sub-gradient at tau = 0, like torch's abs.
//
// Parameters: one row per mixture component q, params (Q, P) row-major, K = sum over rows:
//   RBF        P = 2: (log_variance, log_lengthscale)   k = v exp(-tau^2 / (2 l^2))
//   Matern12   P = 2: (log_variance, log_lengthscale)   k = v exp(-z), z = |tau| / l
//   Matern32   P = 2: (log_variance, log_lengthscale)   k = v (1 + z) exp(-z), z = sqrt(3) |tau| / l
//   Matern52   P = 2: (log_variance, log_lengthscale)   k = v (1 + z + z^2/3) exp(-z), z = sqrt(5) |tau| / l
//   SM         P = 3: (log_weight, freq, log_lengthscale)  k = w exp(-tau^2 / (2 l^2)) cos(freq tau)
//              (spectral mixture: Gaussian spectral density at +-freq with std 1/l; freq in rad/unit)
//   StM        P = 3: (log_weight, freq, log_lengthscale)  k = w matern52(tau; l) cos(freq tau)
//              (Student-t mixture of GP-HM-StM: Student-t spectral density, 5 degrees of freedom)
// Gradients with respect to the parameters come from forward-mode dual numbers (Dual3 below):
// the same code evaluates values (double) and values + 3 partials (Dual3).
// Torch-free: raw pointers and a params struct, shared by the CPU and CUDA kernels.
#pragma once
#include <cmath>
#include <cstdint>

#include "../common/hd.h"

namespace kernelfuse::kron {

enum class GridKind : int32_t { RBF = 0, Matern12 = 1, Matern32 = 2, Matern52 = 3, SM = 4, StM = 5 };
constexpr int kNumGridKinds = 6;
constexpr int kMaxOrder = 5;  // highest total order a + b the kernels evaluate

// Parameters per component row.
KF_HD int grid_kind_nparams(GridKind k) { return (k == GridKind::SM || k == GridKind::StM) ? 3 : 2; }
// Highest total order a + b at which k^(a+b) exists everywhere (the public limit).
KF_HD int grid_kind_max_order(GridKind k) {
  switch (k) {
    case GridKind::Matern12:
      return 0;
    case GridKind::Matern32:
      return 2;
    default:
      return 4;  // RBF, SM, Matern52, StM (the API also caps a, b <= 2 each)
  }
}

template <typename T>
struct GridKernelParams {
  int64_t n1 = 0, n2 = 0, Q = 0;
  const T* x1 = nullptr;  // (n1,) any stride: x1[i * x1_stride]
  const T* x2 = nullptr;  // (n2,)
  int64_t x1_stride = 1, x2_stride = 1;
  const T* params = nullptr;  // (Q, P) contiguous
  GridKind kind = GridKind::RBF;
  int a = 0, b = 0;
  // Toeplitz path (x1 == x2 evenly spaced): tau(i, j) = (i - j) * step. Otherwise tau = x1[i] - x2[j].
  bool toeplitz = false;
  double step = 0.0;
  // forward
  T* K = nullptr;  // (n1, n2) contiguous
  // backward: grad (n1, n2) contiguous in, g_params (Q, P) out
  const T* grad = nullptr;
  T* g_params = nullptr;
  // CUDA Toeplitz path only: device workspace of 2 * max(n1, n2) doubles (allocated by the glue)
  double* work = nullptr;
};

// CPU (OpenMP) kernels, T in {float, double}; all arithmetic in double.
template <typename T>
void grid_kernel_cpu(const GridKernelParams<T>& p);
template <typename T>
void grid_kernel_bwd_cpu(const GridKernelParams<T>& p);
// CUDA kernels (grid_kernel_cuda.cu), stream a cudaStream_t, no host sync.
template <typename T>
void launch_grid_kernel(const GridKernelParams<T>& p, void* stream);
template <typename T>
void launch_grid_kernel_bwd(const GridKernelParams<T>& p, void* stream);

// ------------------------------------------------------------------ dual numbers (3 partials)
struct Dual3 {
  double v, d[3];
};
KF_HD Dual3 dconst(double c) { return {c, {0.0, 0.0, 0.0}}; }
KF_HD Dual3 dvar(double c, int k) {
  Dual3 r = {c, {0.0, 0.0, 0.0}};
  r.d[k] = 1.0;
  return r;
}
KF_HD Dual3 operator+(Dual3 a, Dual3 b) { return {a.v + b.v, {a.d[0] + b.d[0], a.d[1] + b.d[1], a.d[2] + b.d[2]}}; }
KF_HD Dual3 operator-(Dual3 a, Dual3 b) { return {a.v - b.v, {a.d[0] - b.d[0], a.d[1] - b.d[1], a.d[2] - b.d[2]}}; }
KF_HD Dual3 operator-(Dual3 a) { return {-a.v, {-a.d[0], -a.d[1], -a.d[2]}}; }
KF_HD Dual3 operator*(Dual3 a, Dual3 b) {
  return {a.v * b.v, {a.d[0] * b.v + a.v * b.d[0], a.d[1] * b.v + a.v * b.d[1], a.d[2] * b.v + a.v * b.d[2]}};
}
KF_HD Dual3 operator*(double s, Dual3 a) { return {s * a.v, {s * a.d[0], s * a.d[1], s * a.d[2]}}; }
KF_HD Dual3 operator+(double s, Dual3 a) { return {s + a.v, {a.d[0], a.d[1], a.d[2]}}; }
KF_HD Dual3 dexp(Dual3 a) {
  const double e = exp(a.v);
  return {e, {e * a.d[0], e * a.d[1], e * a.d[2]}};
}
KF_HD Dual3 dcos(Dual3 a) {
  const double c = cos(a.v), s = -sin(a.v);
  return {c, {s * a.d[0], s * a.d[1], s * a.d[2]}};
}
KF_HD Dual3 dsin(Dual3 a) {
  const double s = sin(a.v), c = cos(a.v);
  return {s, {c * a.d[0], c * a.d[1], c * a.d[2]}};
}
KF_HD double dexp(double a) { return exp(a); }
KF_HD double dcos(double a) { return cos(a); }
KF_HD double dsin(double a) { return sin(a); }
KF_HD double dconst_like(double, double c) { return c; }
KF_HD Dual3 dconst_like(Dual3, double c) { return dconst(c); }

// ------------------------------------------------------------------ the profiles h^(m)(t), t >= 0
// Gaussian factor g(t) = exp(-t^2 / (2 l^2)): g^(m)(t) = (-1/l)^m He_m(t/l) g(t), m = 0..n, written
// into out[0..n] (He: probabilists' Hermite polynomials).
template <typename S>
KF_HD void gauss_derivs(double t, S inv_l, int n, S* out) {
  const S s = t * inv_l;
  const S g = dexp(-0.5 * (s * s));
  S he_prev = dconst_like(s, 1.0), he = s;  // He_0, He_1
  S pw = dconst_like(s, 1.0);               // (-1/l)^m
  out[0] = g;
  for (int m = 1; m <= n; ++m) {
    pw = pw * (-1.0 * inv_l);
    out[m] = pw * (he * g);
    const S next = s * he - static_cast<double>(m) * he_prev;  // He_{m+1} = s He_m - m He_{m-1}
    he_prev = he;
    he = next;
  }
}

// Matern factor m(t) = P(z) exp(-z), z = c t, c = sqrt(2 nu) / l: m^(j)(t) = c^j P_j(z) exp(-z) with
// P_{j+1} = P_j' - P_j (polynomials of degree <= 2 for nu <= 5/2).
template <typename S>
KF_HD void matern_derivs(double t, S c, GridKind kind, int n, S* out) {
  double P[3];
  if (kind == GridKind::Matern12) {
    P[0] = 1.0;
    P[1] = 0.0;
    P[2] = 0.0;
  } else if (kind == GridKind::Matern32) {
    P[0] = 1.0;
    P[1] = 1.0;
    P[2] = 0.0;
  } else {
    P[0] = 1.0;
    P[1] = 1.0;
    P[2] = 1.0 / 3.0;
  }
  const S z = t * c;
  const S e = dexp(-1.0 * z);
  S cp = dconst_like(z, 1.0);  // c^j
  for (int j = 0; j <= n; ++j) {
    out[j] = cp * ((P[0] + z * (P[1] + z * dconst_like(z, P[2]))) * e);
    const double q0 = P[1] - P[0], q1 = 2.0 * P[2] - P[1], q2 = -P[2];  // P' - P
    P[0] = q0;
    P[1] = q1;
    P[2] = q2;
    cp = cp * c;
  }
}

// Per-component constants of the profile (weight w, inverse lengthscale or Matern rate c, frequency
// f), computed once per component; S = double or Dual3.
template <typename S>
struct Component {
  S w, scale, f;
};

template <typename S>
KF_HD Component<S> prepare_component(GridKind kind, const S* pr) {
  Component<S> cp;
  cp.w = dexp(pr[0]);
  if (kind == GridKind::RBF || kind == GridKind::SM) {
    cp.scale = dexp(-1.0 * pr[kind == GridKind::RBF ? 1 : 2]);  // 1 / l
  } else {
    const double nu2 = kind == GridKind::Matern12 ? 1.0 : kind == GridKind::Matern32 ? 3.0 : 5.0;
    cp.scale = sqrt(nu2) * dexp(-1.0 * pr[kind == GridKind::StM ? 2 : 1]);  // sqrt(2 nu) / l
  }
  cp.f = (kind == GridKind::SM || kind == GridKind::StM) ? pr[1] : dconst_like(pr[0], 0.0);
  return cp;
}

// h^(n)(t) of one prepared component.
template <typename S>
KF_HD S component_deriv(GridKind kind, const Component<S>& cp, double t, int n) {
  const double binom[kMaxOrder + 1][kMaxOrder + 1] = {{1, 0, 0, 0, 0, 0}, {1, 1, 0, 0, 0, 0}, {1, 2, 1, 0, 0, 0},
                                                      {1, 3, 3, 1, 0, 0}, {1, 4, 6, 4, 1, 0}, {1, 5, 10, 10, 5, 1}};
  S A[kMaxOrder + 1];
  if (kind == GridKind::RBF || kind == GridKind::SM) {
    gauss_derivs(t, cp.scale, n, A);
  } else {
    const GridKind mk = kind == GridKind::StM ? GridKind::Matern52 : kind;
    matern_derivs(t, cp.scale, mk, n, A);
  }
  if (kind != GridKind::SM && kind != GridKind::StM) return cp.w * A[n];
  // Leibniz with the cosine factor: d^j cos(f t) = f^j cos(f t + j pi / 2).
  const S ft = t * cp.f;
  const S cs = dcos(ft), sn = dsin(ft);
  S acc = dconst_like(cp.w, 0.0);
  S fp = dconst_like(cp.w, 1.0);  // f^j
  for (int j = 0; j <= n; ++j) {
    const S cj = (j & 3) == 0 ? cs : (j & 3) == 1 ? -1.0 * sn : (j & 3) == 2 ? -1.0 * cs : sn;
    acc = acc + binom[n][j] * (A[n - j] * (fp * cj));
    fp = fp * cp.f;
  }
  return cp.w * acc;
}

// h^(n)(t) of one component of the given kind with parameters pr[0..P-1] (S = double or Dual3, the
// parameters already lifted into S by the caller).
template <typename S>
KF_HD S profile_deriv(GridKind kind, const S* pr, double t, int n) {
  return component_deriv(kind, prepare_component(kind, pr), t, n);
}

// Sign factor of K[i, j] for tau: (-1)^b sign(tau)^n (0 for odd n at tau = 0; NaN for a NaN tau,
// i.e. a NaN point or inf - inf, so that such entries come out NaN at every order).
KF_HD double order_sign(double tau, int a, int b) {
  const int n = a + b;
  double s = (b & 1) ? -1.0 : 1.0;
  if (n & 1) s = tau > 0.0 ? s : tau < 0.0 ? -s : tau == 0.0 ? 0.0 : tau;
  return s;
}

// K value at lag tau summed over the Q components (double).
template <typename T>
KF_HD double grid_kernel_value(const GridKernelParams<T>& p, double tau) {
  const double sg = order_sign(tau, p.a, p.b);
  if (sg == 0.0) return 0.0;
  const int P = grid_kind_nparams(p.kind);
  const double t = fabs(tau);
  double acc = 0.0;
  for (int64_t q = 0; q < p.Q; ++q) {
    double pr[3];
    for (int k = 0; k < P; ++k) pr[k] = static_cast<double>(p.params[q * P + k]);
    acc += profile_deriv<double>(p.kind, pr, t, p.a + p.b);
  }
  return sg * acc;
}

// d K(tau) / d params[q, :] for one component, scaled by g (the incoming gradient); adds into acc[0..P-1].
template <typename T>
KF_HD void grid_kernel_param_grad(const GridKernelParams<T>& p, int64_t q, double tau, double g, double* acc) {
  const double sg = order_sign(tau, p.a, p.b);
  if (sg == 0.0 || g == 0.0) return;
  const int P = grid_kind_nparams(p.kind);
  Dual3 pr[3];
  for (int k = 0; k < P; ++k) pr[k] = dvar(static_cast<double>(p.params[q * P + k]), k);
  const Dual3 r = profile_deriv<Dual3>(p.kind, pr, fabs(tau), p.a + p.b);
  for (int k = 0; k < P; ++k) acc[k] += g * sg * r.d[k];
}

}  // namespace kernelfuse::kron
