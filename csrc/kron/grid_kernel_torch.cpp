// Torch glue for 1-D grid kernel matrices: argument checks, Toeplitz detection, dtype dispatch,
// allocation and the TORCH_LIBRARY_IMPL registrations for CPU (and CUDA when built with it).
// Kernels: grid_kernel.h. (The Kronecker algebra ops have their own glue, kron_torch.cpp.)
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <string>

#include "../common/checks.h"
#include "../common/device.h"
#include "grid_kernel.h"
#include "kron_checks.h"

namespace kernelfuse::kron {
namespace {

constexpr const char* kKindNames[kNumGridKinds] = {"rbf", "matern12", "matern32", "matern52", "sm", "stm"};

GridKind parse_kind(c10::string_view name) {
  for (int i = 0; i < kNumGridKinds; ++i)
    if (name == kKindNames[i]) return static_cast<GridKind>(i);
  std::string all;
  for (int i = 0; i < kNumGridKinds; ++i) all += std::string(i ? ", " : "") + kKindNames[i];
  KF_CHECK_ARG(false, "kind", "unknown kernel kind '", std::string(name), "'; expected one of: ", all);
  return GridKind::RBF;
}

struct Operands {
  at::Tensor x1, x2, params;
  GridKind kind = GridKind::RBF;
  int a = 0, b = 0;
  bool toeplitz = false;
  double step = 0.0;
};

// Evenly spaced x (n >= 2) to rounding: |x[i] - (x[0] + i step)| <= 16 eps max|x| for every i.
// A NaN or infinite point is never on a grid (the comparisons below would let it pass).
template <typename T>
bool evenly_spaced(const at::Tensor& x, double* step) {
  const int64_t n = x.size(0);
  const T* p = x.const_data_ptr<T>();
  const int64_t s = x.stride(0);
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(static_cast<double>(p[i * s]))) return false;
  if (n < 2) {
    *step = 0.0;
    return true;
  }
  const double x0 = static_cast<double>(p[0]);
  const double st = (static_cast<double>(p[(n - 1) * s]) - x0) / static_cast<double>(n - 1);
  double mx = 0.0;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, std::fabs(static_cast<double>(p[i * s])));
  const double tol = 16.0 * std::numeric_limits<T>::epsilon() * mx;
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(static_cast<double>(p[i * s]) - (x0 + static_cast<double>(i) * st)) > tol) return false;
  *step = st;
  return true;
}

template <typename T>
bool same_values(const at::Tensor& x1, const at::Tensor& x2) {
  if (x1.size(0) != x2.size(0)) return false;
  if (x1.const_data_ptr<T>() == x2.const_data_ptr<T>() && x1.stride(0) == x2.stride(0)) return true;
  const T* p1 = x1.const_data_ptr<T>();
  const T* p2 = x2.const_data_ptr<T>();
  for (int64_t i = 0; i < x1.size(0); ++i)
    if (p1[i * x1.stride(0)] != p2[i * x2.stride(0)]) return false;
  return true;
}

// toeplitz: -1 detect (CPU; on CUDA detection would need a host sync, so -1 means direct there),
// 0 direct, 1 the caller asserts x1 == x2 evenly spaced (step from the end points).
Operands check_operands(const at::Tensor& x1, const at::Tensor& x2, c10::string_view kind, const at::Tensor& params,
                        int64_t a, int64_t b, int64_t toeplitz) {
  Operands o;
  check_defined(x1, "x1");
  check_defined(x2, "x2");
  check_defined(params, "params");
  o.kind = parse_kind(kind);
  KF_CHECK_ARG(x1.dim() == 1, "x1", "expected a 1-D tensor of grid points (n1,), got shape ", shape_str(x1));
  KF_CHECK_ARG(x2.dim() == 1, "x2", "expected a 1-D tensor of grid points (n2,), got shape ", shape_str(x2));
  check_float_dtype(x1, "x1", false);
  check_same_dtype(x2, x1, "x2", "x1");
  check_same_device(x2, x1, "x2", "x1");
  check_same_dtype(params, x1, "params", "x1");
  check_same_device(params, x1, "params", "x1");
  const int P = grid_kind_nparams(o.kind);
  KF_CHECK_ARG(params.dim() == 2 && params.size(1) == P, "params", "expected shape (Q, ", P, ") for kind '",
               std::string(kind), "' (",
               (P == 2 ? "log_variance, log_lengthscale" : "log_weight, freq, log_lengthscale"),
               " per component), got ", shape_str(params));
  const int lim = grid_kind_max_order(o.kind) + 1;  // one more than the public limit: x-gradients
  KF_CHECK_ARG(a >= 0 && b >= 0 && a <= 3 && b <= 3 && a + b <= lim, "orders", "derivative orders (", a, ", ", b,
               ") are not defined for kind '", std::string(kind), "' (a + b <= ", lim - 1, ")");
  KF_CHECK_ARG(toeplitz >= -1 && toeplitz <= 1, "toeplitz", "expected -1 (detect), 0 or 1, got ", toeplitz);
  o.a = static_cast<int>(a);
  o.b = static_cast<int>(b);
  o.x1 = x1;
  o.x2 = x2;
  o.params = params.contiguous();
  check_alloc(sat_mul(x1.size(0), x2.size(0)), x1, "x2",
              "the kernel matrix (n1, n2) = (" + std::to_string(x1.size(0)) + ", " + std::to_string(x2.size(0)) + ")");
  if (toeplitz == 1) {
    KF_CHECK_ARG(x1.size(0) == x2.size(0), "toeplitz", "the Toeplitz path needs x1 and x2 of the same size, got ",
                 shape_str(x1), " and ", shape_str(x2));
    // The Toeplitz path computes every entry from the lag table: a NaN / inf point would come out
    // as if it were on the grid. (A host sync on a device, as the step below.)
    check_finite(x1, "x1", " for toeplitz=True (grid points)");
    check_finite(x2, "x2", " for toeplitz=True (grid points)");
  }
  if (toeplitz == 0 || x1.size(0) != x2.size(0) || x1.size(0) == 0) return o;
  if (toeplitz == 1) {
    o.toeplitz = true;
    if (on_device(x1)) {
      const int64_t n = x1.size(0);
      o.step = n < 2 ? 0.0 : (x1[n - 1].item<double>() - x1[0].item<double>()) / static_cast<double>(n - 1);
      return o;
    }
  }
  if (on_device(x1)) return o;  // toeplitz == -1 on CUDA: direct (no host sync)
  AT_DISPATCH_FLOATING_TYPES(x1.scalar_type(), "grid_kernel_detect", [&] {
    double st = 0.0;
    const bool even = evenly_spaced<scalar_t>(x1, &st);
    if (toeplitz == 1) {
      const int64_t n = x1.size(0);
      o.step = n < 2 ? 0.0
                     : (static_cast<double>(x1.const_data_ptr<scalar_t>()[(n - 1) * x1.stride(0)]) -
                        static_cast<double>(x1.const_data_ptr<scalar_t>()[0])) /
                           static_cast<double>(n - 1);
    } else if (even && same_values<scalar_t>(x1, x2)) {
      o.toeplitz = true;
      o.step = st;
    }
  });
  return o;
}

template <typename T>
GridKernelParams<T> make_params(const Operands& o) {
  GridKernelParams<T> p;
  p.n1 = o.x1.size(0);
  p.n2 = o.x2.size(0);
  p.Q = o.params.size(0);
  p.x1 = o.x1.const_data_ptr<T>();
  p.x2 = o.x2.const_data_ptr<T>();
  p.x1_stride = o.x1.stride(0);
  p.x2_stride = o.x2.stride(0);
  p.params = o.params.const_data_ptr<T>();
  p.kind = o.kind;
  p.a = o.a;
  p.b = o.b;
  p.toeplitz = o.toeplitz;
  p.step = o.step;
  return p;
}

at::Tensor grid_kernel(const at::Tensor& x1, const at::Tensor& x2, c10::string_view kind, const at::Tensor& params,
                       int64_t a, int64_t b, int64_t toeplitz) {
  KF_OP_SCOPE("grid_kernel");
  const Operands o = check_operands(x1, x2, kind, params, a, b, toeplitz);
  at::Tensor K = at::empty({o.x1.size(0), o.x2.size(0)}, o.x1.options());
  if (poison_outputs()) K.fill_(std::numeric_limits<double>::quiet_NaN());
  if (K.numel() == 0) return K;
  if (o.params.size(0) == 0) return K.zero_();
  AT_DISPATCH_FLOATING_TYPES(o.x1.scalar_type(), "grid_kernel", [&] {
    GridKernelParams<scalar_t> p = make_params<scalar_t>(o);
    p.K = K.mutable_data_ptr<scalar_t>();
#ifdef KF_DEVICE
    if (on_device(K)) {
      KF_DEVICE_GUARD(K);
      at::Tensor work;
      if (p.toeplitz) {
        work = at::empty({2 * std::max(p.n1, p.n2)}, o.x1.options().dtype(at::kDouble));
        p.work = work.mutable_data_ptr<double>();
      }
      launch_grid_kernel<scalar_t>(p, device_stream());
      return;
    }
#endif
    grid_kernel_cpu<scalar_t>(p);
  });
  return K;
}

// Gradient for params (Q, P): sum_ij grad[i, j] dK[i, j] / dparams.
at::Tensor grid_kernel_bwd(const at::Tensor& grad, const at::Tensor& x1, const at::Tensor& x2, c10::string_view kind,
                           const at::Tensor& params, int64_t a, int64_t b, int64_t toeplitz) {
  KF_OP_SCOPE("grid_kernel_bwd");
  const Operands o = check_operands(x1, x2, kind, params, a, b, toeplitz);
  check_defined(grad, "grad");
  check_same_device(grad, o.x1, "grad", "x1");
  check_same_dtype(grad, o.x1, "grad", "x1");
  KF_CHECK_ARG(grad.dim() == 2 && grad.size(0) == o.x1.size(0) && grad.size(1) == o.x2.size(0), "grad",
               "expected shape (n1, n2) = (", o.x1.size(0), ", ", o.x2.size(0), "), got ", shape_str(grad));
  const at::Tensor g = grad.contiguous();
  at::Tensor gp = at::empty(o.params.sizes(), o.params.options());
  if (gp.numel() == 0) return gp;
  if (g.numel() == 0) return gp.zero_();
  AT_DISPATCH_FLOATING_TYPES(o.x1.scalar_type(), "grid_kernel_bwd", [&] {
    GridKernelParams<scalar_t> p = make_params<scalar_t>(o);
    p.grad = g.const_data_ptr<scalar_t>();
    p.g_params = gp.mutable_data_ptr<scalar_t>();
#ifdef KF_DEVICE
    if (on_device(g)) {
      KF_DEVICE_GUARD(g);
      at::Tensor work;
      if (p.toeplitz) {
        work = at::empty({2 * std::max(p.n1, p.n2)}, o.x1.options().dtype(at::kDouble));
        p.work = work.mutable_data_ptr<double>();
      }
      launch_grid_kernel_bwd<scalar_t>(p, device_stream());
      return;
    }
#endif
    grid_kernel_bwd_cpu<scalar_t>(p);
  });
  return gp;
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("grid_kernel", &grid_kernel);
  m.impl("grid_kernel_bwd", &grid_kernel_bwd);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("grid_kernel", &grid_kernel);
  m.impl("grid_kernel_bwd", &grid_kernel_bwd);
}
#endif

}  // namespace kernelfuse::kron
