// CPU kernels for 1-D grid kernel matrices and their parameter gradients (see grid_kernel.h).
// Torch-free.
//
// Direct path: one (i, j) entry = sum over the Q components of the profile derivative at
// tau = x1[i] - x2[j]; rows split over OpenMP threads. Toeplitz path (x1 == x2 evenly spaced with
// step s): tau = (i - j) s, so the n lags are evaluated once (O(n Q) kernel work, in parallel over
// lags) and the matrix is filled from the table: K[i, j] = sign * T[|i - j|] (O(n^2) copies).
// Backward: the parameter gradient sum_ij G[i, j] dK[i, j]/dtheta. Direct path: per-thread
// partial sums over rows, with dual numbers per (i, j, q). Toeplitz path: the incoming gradient is
// first reduced to signed lag sums D[d] = sum_{i - j = +-d} sign(i - j) G[i, j] (per-thread lag
// arrays, O(n^2) adds), then O(n Q) dual evaluations.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "grid_kernel.h"

namespace kernelfuse::kron {
namespace {

template <typename T>
double tau_of(const GridKernelParams<T>& p, int64_t i, int64_t j) {
  if (p.toeplitz) return static_cast<double>(i - j) * p.step;
  return static_cast<double>(p.x1[i * p.x1_stride]) - static_cast<double>(p.x2[j * p.x2_stride]);
}

// Lag table T[d] = sum_q h^(n)(|d step|) (without the sign), d = 0..L-1.
template <typename T>
std::vector<double> lag_table(const GridKernelParams<T>& p, int64_t L) {
  std::vector<double> tab(L);
  const int P = grid_kind_nparams(p.kind);
  const int n = p.a + p.b;
  const double st = std::fabs(p.step);
#pragma omp parallel for schedule(static) if (L * p.Q > 65536)
  for (int64_t d = 0; d < L; ++d) {
    double acc = 0.0;
    for (int64_t q = 0; q < p.Q; ++q) {
      double pr[3];
      for (int k = 0; k < P; ++k) pr[k] = static_cast<double>(p.params[q * P + k]);
      acc += profile_deriv<double>(p.kind, pr, static_cast<double>(d) * st, n);
    }
    tab[d] = acc;
  }
  return tab;
}

}  // namespace

template <typename T>
void grid_kernel_cpu(const GridKernelParams<T>& p) {
  const int64_t n1 = p.n1, n2 = p.n2;
  if (n1 == 0 || n2 == 0) return;
  if (p.toeplitz) {
    const int64_t L = std::max(n1, n2);
    const std::vector<double> tab = lag_table(p, L);
    // sign for tau = (i - j) step: (-1)^b sign(tau)^n
    const int n = p.a + p.b;
    const double sb = (p.b & 1) ? -1.0 : 1.0;
    const double s_step = p.step > 0 ? 1.0 : p.step < 0 ? -1.0 : 0.0;
    const double s_pos = (n & 1) ? sb * s_step : sb;   // i > j
    const double s_neg = (n & 1) ? -sb * s_step : sb;  // i < j
    const double s_zero = (n & 1) ? 0.0 : sb;
#pragma omp parallel for schedule(static) if (n1 * n2 > (int64_t(1) << 20))
    for (int64_t i = 0; i < n1; ++i) {
      T* row = p.K + i * n2;
      const int64_t jd = std::min(i, n2);
      for (int64_t j = 0; j < jd; ++j) row[j] = static_cast<T>(s_pos * tab[i - j]);
      if (i < n2) row[i] = static_cast<T>(s_zero * tab[0]);
      for (int64_t j = i + 1; j < n2; ++j) row[j] = static_cast<T>(s_neg * tab[j - i]);
    }
    return;
  }
  // direct path: the per-component constants (exponentials of the log-parameters) once per call
  const int P = grid_kind_nparams(p.kind);
  std::vector<Component<double>> comps(p.Q);
  for (int64_t q = 0; q < p.Q; ++q) {
    double pr[3];
    for (int k = 0; k < P; ++k) pr[k] = static_cast<double>(p.params[q * P + k]);
    comps[q] = prepare_component<double>(p.kind, pr);
  }
  const int n = p.a + p.b;
#pragma omp parallel for schedule(static) if (n1 * n2 * p.Q > 4096)
  for (int64_t i = 0; i < n1; ++i) {
    T* row = p.K + i * n2;
    for (int64_t j = 0; j < n2; ++j) {
      const double tau = tau_of(p, i, j);
      const double sg = order_sign(tau, p.a, p.b);
      double acc = 0.0;
      if (sg != 0.0) {
        const double t = std::fabs(tau);
        for (int64_t q = 0; q < p.Q; ++q) acc += component_deriv<double>(p.kind, comps[q], t, n);
      }
      row[j] = static_cast<T>(sg * acc);
    }
  }
}

template <typename T>
void grid_kernel_bwd_cpu(const GridKernelParams<T>& p) {
  const int P = grid_kind_nparams(p.kind);
  const int64_t QP = p.Q * P;
  if (QP == 0) return;
  const int64_t n1 = p.n1, n2 = p.n2;
  std::vector<double> total(QP, 0.0);
  if (n1 > 0 && n2 > 0 && p.toeplitz) {
    // Signed lag sums: D[d] = sum over i - j = d of G plus (-1)^n x sum over i - j = -d (d > 0),
    // so that sum_ij G[i,j] K[i,j] = sum_d D[d] * s_pos * T[d] with s_pos the sign of positive tau.
    const int n = p.a + p.b;
    const int64_t L = std::max(n1, n2);
    // small problems stay on one thread: a parallel region costs more than the work there
    const int nt = n1 * n2 > (int64_t(1) << 20) ? omp_get_max_threads() : 1;
    const int nt2 = L * p.Q > 16384 ? omp_get_max_threads() : 1;
    std::vector<double> part(static_cast<size_t>(nt) * 2 * L, 0.0);
#pragma omp parallel num_threads(nt)
    {
      double* pos = part.data() + static_cast<size_t>(omp_get_thread_num()) * 2 * L;  // i - j = d >= 0
      double* neg = pos + L;                                                          // j - i = d
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n1; ++i) {
        const T* g = p.grad + i * n2;
        const int64_t jd = std::min(i + 1, n2);
        for (int64_t j = 0; j < jd; ++j) pos[i - j] += static_cast<double>(g[j]);
        for (int64_t j = i + 1; j < n2; ++j) neg[j - i] += static_cast<double>(g[j]);
      }
    }
    std::vector<double> D(L, 0.0);
    const double flip = (n & 1) ? -1.0 : 1.0;
    for (int t = 0; t < nt; ++t) {
      const double* pos = part.data() + static_cast<size_t>(t) * 2 * L;
      for (int64_t d = 0; d < L; ++d) D[d] += pos[d] + flip * pos[L + d];
    }
    // tau for lag d > 0 (i > j) is d * step; grid_kernel_param_grad applies the sign of that tau.
    // d = 0 carries sign 0 for odd n (handled by order_sign at tau = 0).
#pragma omp parallel num_threads(nt2)
    {
      std::vector<double> acc(QP, 0.0);
#pragma omp for schedule(static)
      for (int64_t d = 0; d < L; ++d)
        for (int64_t q = 0; q < p.Q; ++q)
          grid_kernel_param_grad(p, q, static_cast<double>(d) * p.step, D[d], acc.data() + q * P);
#pragma omp critical
      for (int64_t k = 0; k < QP; ++k) total[k] += acc[k];
    }
  } else if (n1 > 0 && n2 > 0) {
#pragma omp parallel if (n1 * n2 * p.Q > 4096)
    {
      std::vector<double> acc(QP, 0.0);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n1; ++i) {
        const T* g = p.grad + i * n2;
        for (int64_t j = 0; j < n2; ++j) {
          const double tau = tau_of(p, i, j);
          const double gij = static_cast<double>(g[j]);
          for (int64_t q = 0; q < p.Q; ++q) grid_kernel_param_grad(p, q, tau, gij, acc.data() + q * P);
        }
      }
#pragma omp critical
      for (int64_t k = 0; k < QP; ++k) total[k] += acc[k];
    }
  }
  for (int64_t k = 0; k < QP; ++k) p.g_params[k] = static_cast<T>(total[k]);
}

template void grid_kernel_cpu<float>(const GridKernelParams<float>&);
template void grid_kernel_cpu<double>(const GridKernelParams<double>&);
template void grid_kernel_bwd_cpu<float>(const GridKernelParams<float>&);
template void grid_kernel_bwd_cpu<double>(const GridKernelParams<double>&);

}  // namespace kernelfuse::kron
