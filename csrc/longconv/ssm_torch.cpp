// Torch glue for the S4D convolution kernel: argument checks, dtype dispatch, allocation and the
// TORCH_LIBRARY_IMPL registrations for CPU (and CUDA when built with it). Kernels: ssm_kernel.h.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "../common/alloc_checks.h"
#include "../common/checks.h"
#include "../common/device.h"
#include "ssm_kernel.h"

namespace kernelfuse::longconv {
namespace {

Discretization parse_discretization(c10::string_view name) {
  if (name == "zoh") return Discretization::ZOH;
  if (name == "bilinear") return Discretization::Bilinear;
  KF_CHECK_ARG(false, "discretization", "unknown discretization '", std::string(name),
               "'; expected one of: zoh, bilinear");
  return Discretization::ZOH;
}

struct Operands {
  at::Tensor log_dt, A_real, A_imag, B, C;  // contiguous; B may be undefined
  int64_t H = 0, N = 0;
  Discretization disc = Discretization::ZOH;
};

// B and C are complex numbers as (re, im) pairs: real tensors (H, N, 2) (torch.view_as_real).
Operands check_operands(const at::Tensor& log_dt, const at::Tensor& A_real, const at::Tensor& A_imag,
                        const std::optional<at::Tensor>& B, const at::Tensor& C, c10::string_view discretization) {
  Operands o;
  o.disc = parse_discretization(discretization);
  for (const auto& [t, name] : {std::pair<const at::Tensor*, const char*>{&log_dt, "log_dt"},
                                {&A_real, "A_real"},
                                {&A_imag, "A_imag"},
                                {&C, "C"}})
    KF_CHECK_ARG(t->defined(), name, "expected a tensor, got None");
  KF_CHECK_ARG(A_real.dim() == 2, "A_real", "expected shape (H, N), got ", shape_str(A_real));
  check_float_dtype(A_real, "A_real", false);
  o.H = A_real.size(0);
  o.N = A_real.size(1);
  auto same = [&](const at::Tensor& t, const char* name) {
    check_same_device(t, A_real, name, "A_real");
    check_same_dtype(t, A_real, name, "A_real");
  };
  same(A_imag, "A_imag");
  KF_CHECK_ARG(A_imag.sizes() == A_real.sizes(), "A_imag", "expected shape ", shape_str(A_real),
               " (the shape of A_real), got ", shape_str(A_imag));
  same(log_dt, "log_dt");
  KF_CHECK_ARG(log_dt.dim() == 1 && log_dt.size(0) == o.H, "log_dt", "expected shape (H,) = (", o.H,
               ",) (H from A_real ", shape_str(A_real), "), got ", shape_str(log_dt));
  auto pair = [&](const at::Tensor& t, const char* name) {
    same(t, name);
    KF_CHECK_ARG(t.dim() == 3 && t.size(0) == o.H && t.size(1) == o.N && t.size(2) == 2, name,
                 "expected (re, im) pairs of shape (H, N, 2) = (", o.H, ", ", o.N, ", 2) (H, N from A_real ",
                 shape_str(A_real), "), got ", shape_str(t));
  };
  pair(C, "C");
  o.C = checked_contiguous(C, "C");
  if (B.has_value() && B->defined()) {
    pair(*B, "B");
    o.B = checked_contiguous(*B, "B");
  }
  o.log_dt = checked_contiguous(log_dt, "log_dt");
  o.A_real = checked_contiguous(A_real, "A_real");
  o.A_imag = checked_contiguous(A_imag, "A_imag");
  return o;
}

template <typename T>
SsmKernelParams<T> make_params(const Operands& o, int64_t L) {
  SsmKernelParams<T> p;
  p.H = o.H;
  p.N = o.N;
  p.L = L;
  p.log_dt = o.log_dt.const_data_ptr<T>();
  p.A_real = o.A_real.const_data_ptr<T>();
  p.A_imag = o.A_imag.const_data_ptr<T>();
  p.B = o.B.defined() ? o.B.const_data_ptr<T>() : nullptr;
  p.C = o.C.const_data_ptr<T>();
  p.disc = o.disc;
  return p;
}

at::Tensor ssm_kernel(const at::Tensor& log_dt, const at::Tensor& A_real, const at::Tensor& A_imag,
                      const std::optional<at::Tensor>& B, const at::Tensor& C, int64_t L,
                      c10::string_view discretization) {
  KF_OP_SCOPE("ssm_kernel");
  KF_CHECK_ARG(L >= 0, "L", "expected a length >= 0, got ", L);
  Operands o = check_operands(log_dt, A_real, A_imag, B, C, discretization);
  at::Tensor K = checked_empty({o.H, L}, o.A_real.options(), "L", "the kernel K (H, L)");
  if (o.H == 0 || L == 0) return K;
  AT_DISPATCH_FLOATING_TYPES(o.A_real.scalar_type(), "ssm_kernel", [&] {
    SsmKernelParams<scalar_t> p = make_params<scalar_t>(o, L);
    p.K = K.mutable_data_ptr<scalar_t>();
#ifdef KF_DEVICE
    if (on_device(K)) {
      KF_DEVICE_GUARD(K);
      launch_ssm_kernel<scalar_t>(p, device_stream());
      return;
    }
#endif
    ssm_kernel_cpu<scalar_t>(p);
  });
  return K;
}

// Gradients for (log_dt, A_real, A_imag, B, C); B's is an empty tensor when B is None.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ssm_kernel_bwd(
    const at::Tensor& grad, const at::Tensor& log_dt, const at::Tensor& A_real, const at::Tensor& A_imag,
    const std::optional<at::Tensor>& B, const at::Tensor& C, c10::string_view discretization) {
  KF_OP_SCOPE("ssm_kernel_bwd");
  KF_CHECK_ARG(grad.defined(), "grad", "expected a tensor, got None");
  Operands o = check_operands(log_dt, A_real, A_imag, B, C, discretization);
  check_same_device(grad, o.A_real, "grad", "A_real");
  check_same_dtype(grad, o.A_real, "grad", "A_real");
  KF_CHECK_ARG(grad.dim() == 2 && grad.size(0) == o.H, "grad", "expected shape (H, L) with H = ", o.H,
               " (the output's), got ", shape_str(grad));
  const at::Tensor g = checked_contiguous(grad, "grad");
  const int64_t L = g.size(1);
  const auto opt = o.A_real.options();
  at::Tensor g_log_dt = at::empty({o.H}, opt), g_Ar = at::empty({o.H, o.N}, opt), g_Ai = at::empty({o.H, o.N}, opt),
             g_C = at::empty({o.H, o.N, 2}, opt);
  at::Tensor g_B = o.B.defined() ? at::empty({o.H, o.N, 2}, opt) : at::empty({0}, opt);
  if (o.H == 0) return {g_log_dt, g_Ar, g_Ai, g_B, g_C};
  AT_DISPATCH_FLOATING_TYPES(o.A_real.scalar_type(), "ssm_kernel_bwd", [&] {
    SsmKernelParams<scalar_t> p = make_params<scalar_t>(o, L);
    p.grad = g.const_data_ptr<scalar_t>();
    p.g_log_dt = g_log_dt.mutable_data_ptr<scalar_t>();
    p.g_A_real = g_Ar.mutable_data_ptr<scalar_t>();
    p.g_A_imag = g_Ai.mutable_data_ptr<scalar_t>();
    p.g_B = o.B.defined() ? g_B.mutable_data_ptr<scalar_t>() : nullptr;
    p.g_C = g_C.mutable_data_ptr<scalar_t>();
#ifdef KF_DEVICE
    if (on_device(g)) {
      KF_DEVICE_GUARD(g);
      // per-state dLoss/dlog_dt, summed over n in double by the second kernel
      at::Tensor dt_partial = at::empty({o.H, o.N}, opt.dtype(at::kDouble));
      p.dt_partial = dt_partial.mutable_data_ptr<double>();
      launch_ssm_kernel_bwd<scalar_t>(p, device_stream());
      return;
    }
#endif
    ssm_kernel_bwd_cpu<scalar_t>(p);
  });
  return {g_log_dt, g_Ar, g_Ai, g_B, g_C};
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("ssm_kernel", &ssm_kernel);
  m.impl("ssm_kernel_bwd", &ssm_kernel_bwd);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("ssm_kernel", &ssm_kernel);
  m.impl("ssm_kernel_bwd", &ssm_kernel_bwd);
}
#endif

}  // namespace kernelfuse::longconv
