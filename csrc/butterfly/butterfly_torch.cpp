// Torch glue for butterfly_multiply / butterfly_multiply_bwd: argument checks, dtype dispatch
// (float32/64, complex64/128 as interleaved real pairs), allocation and the per-backend
// registrations. The kernels are the torch-free ones of butterfly.h.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/view_as_real.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "../common/alloc_checks.h"
#include "../common/checks.h"
#include "../common/device.h"
#include "butterfly.h"

namespace kernelfuse::butterfly {
namespace {

struct Problem {
  at::Tensor x, tw;  // x as (rows, n), contiguous; tw contiguous
  int64_t rows = 0, n = 0, log_n = 0, nblocks = 0;
};

Problem check(const at::Tensor& x, const at::Tensor& twiddle) {
  check_defined(x, "x");
  check_defined(twiddle, "twiddle");
  KF_CHECK_ARG(x.dim() >= 1, "x", "expected shape (..., n), got a 0-d tensor");
  const auto st = x.scalar_type();
  KF_CHECK_ARG(st == at::kFloat || st == at::kDouble || st == at::kComplexFloat || st == at::kComplexDouble, "x",
               "expected dtype float32, float64, complex64 or complex128, got ", st);
  check_same_device(twiddle, x, "twiddle", "x");
  check_same_dtype(twiddle, x, "twiddle", "x");
  Problem p;
  p.n = x.size(-1);
  KF_CHECK_ARG(p.n >= 1 && (p.n & (p.n - 1)) == 0, "x", "the last dimension n must be a power of two, got shape ",
               shape_str(x));
  while ((int64_t(1) << p.log_n) < p.n) ++p.log_n;
  const bool ok = twiddle.dim() == 5 && twiddle.size(0) >= 1 && twiddle.size(1) == p.log_n &&
                  twiddle.size(2) == p.n / 2 && twiddle.size(3) == 2 && twiddle.size(4) == 2;
  KF_CHECK_ARG(ok, "twiddle", "expected shape (nblocks, log2 n, n / 2, 2, 2) = (nblocks, ", p.log_n, ", ", p.n / 2,
               ", 2, 2) for n = ", p.n, " (x is ", shape_str(x), "), got ", shape_str(twiddle));
  p.nblocks = twiddle.size(0);
  p.rows = p.n ? x.numel() / p.n : 0;
  // Lazy conjugate / negative views are materialised: the kernels read raw memory. Copies of
  // expanded views are allocated with a size check naming the argument (issue 13).
  p.x = checked_contiguous(x, "x").resolve_conj().resolve_neg().view({p.rows, p.n});
  p.tw = checked_contiguous(twiddle, "twiddle").resolve_conj().resolve_neg();
  return p;
}

at::Tensor fresh(const at::Tensor& like, const char* name, const char* what) {
  at::Tensor t = checked_empty(like.sizes(), like.options(), name, what);
  if (poison_outputs()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// Real view (interleaved re, im) of a complex tensor; the tensor itself when real.
at::Tensor as_real(const at::Tensor& t) { return t.is_complex() ? at::view_as_real(t) : t; }

template <typename F>
void dispatch_real(const at::Tensor& x, F&& f) {
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(x.scalar_type()), "butterfly_multiply",
                             [&] { f.template operator()<scalar_t>(); });
}

template <typename T>
ButterflyParams<T> params(const Problem& pb) {
  ButterflyParams<T> p;
  p.rows = pb.rows;
  p.n = pb.n;
  p.log_n = pb.log_n;
  p.nblocks = pb.nblocks;
  p.complex = pb.x.is_complex();
  p.x = as_real(pb.x).const_data_ptr<T>();
  p.twiddle = as_real(pb.tw).const_data_ptr<T>();
  return p;
}

at::Tensor butterfly_multiply(const at::Tensor& x, const at::Tensor& twiddle, bool increasing_stride) {
  KF_OP_SCOPE("butterfly_multiply");
  Problem pb = check(x, twiddle);
  if (pb.n == 1) return x.clone(at::MemoryFormat::Contiguous);  // contiguous, as the fake kernel
  at::Tensor out = fresh(pb.x, "x", "the output");
  dispatch_real(pb.x, [&]<typename T>() {
    ButterflyParams<T> p = params<T>(pb);
    p.increasing_stride = increasing_stride;
    p.out = as_real(out).mutable_data_ptr<T>();
#ifdef KF_DEVICE
    if (on_device(x)) {
      KF_DEVICE_GUARD(x);
      launch_butterfly_multiply<T>(p, device_stream());
      return;
    }
#endif
    butterfly_multiply_cpu<T>(p);
  });
  return out.view(x.sizes());
}

std::tuple<at::Tensor, at::Tensor> butterfly_multiply_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& twiddle, bool increasing_stride,
                                                          bool need_x, bool need_twiddle) {
  KF_OP_SCOPE("butterfly_multiply_bwd");
  check_defined(grad, "grad");
  Problem pb = check(x, twiddle);
  KF_CHECK_ARG(grad.sizes() == x.sizes(), "grad", "expected the shape of x ", shape_str(x), ", got ", shape_str(grad));
  check_same_dtype(grad, x, "grad", "x");
  check_same_device(grad, x, "grad", "x");
  const auto none = at::empty({0}, x.options());
  if (pb.n == 1) {
    return {need_x ? grad.clone(at::MemoryFormat::Contiguous) : none,
            need_twiddle ? at::zeros(twiddle.sizes(), twiddle.options()) : none};
  }
  at::Tensor g = checked_contiguous(grad, "grad").resolve_conj().resolve_neg().view({pb.rows, pb.n});
  at::Tensor dx = need_x ? fresh(pb.x, "x", "the gradient of x") : none;
  at::Tensor dtw = need_twiddle ? fresh(pb.tw, "twiddle", "the gradient of twiddle") : none;
  dispatch_real(pb.x, [&]<typename T>() {
    ButterflyParams<T> p = params<T>(pb);
    p.increasing_stride = increasing_stride;
    p.grad = as_real(g).const_data_ptr<T>();
    p.dx = need_x ? as_real(dx).mutable_data_ptr<T>() : nullptr;
    p.dtwiddle = need_twiddle ? as_real(dtw).mutable_data_ptr<T>() : nullptr;
#ifdef KF_DEVICE
    if (on_device(x)) {
      KF_DEVICE_GUARD(x);
      const int64_t ws = butterfly_bwd_cuda_workspace<T>(p);
      at::Tensor work = at::empty({std::max<int64_t>(ws, 1)}, x.options().dtype(c10::CppTypeToScalarType<T>::value));
      launch_butterfly_multiply_bwd<T>(p, work.mutable_data_ptr<T>(), device_stream());
      return;
    }
#endif
    butterfly_multiply_bwd_cpu<T>(p);
  });
  return {need_x ? dx.view(x.sizes()) : dx, dtw};
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("butterfly_multiply", &butterfly_multiply);
  m.impl("butterfly_multiply_bwd", &butterfly_multiply_bwd);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("butterfly_multiply", &butterfly_multiply);
  m.impl("butterfly_multiply_bwd", &butterfly_multiply_bwd);
}
#endif

}  // namespace kernelfuse::butterfly
