// Torch glue of the fused NNGP / NTK products: argument checks, dtype dispatch, allocation and
// the TORCH_LIBRARY_IMPL registrations for CPU (and CUDA when built with it). Kernels:
// nngp_matmul.h (CPU: nngp_matmul_cpu.cpp, CUDA: nngp_matmul_cuda.cu).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/device.h"
#include "nngp_matmul.h"

namespace kernelfuse::nngp {
namespace {

constexpr const char* kActNames[kNumActivations] = {"relu", "erf", "step"};
constexpr int64_t kMaxDepth = 10000;

Activation parse_act(c10::string_view name) {
  for (int i = 0; i < kNumActivations; ++i)
    if (name == kActNames[i]) return static_cast<Activation>(i);
  KF_CHECK_ARG(false, "activation", "unknown activation '", std::string(name), "'; expected one of: relu, erf, step");
  return Activation::Relu;
}

struct Operands {
  at::Tensor x, y, w;  // (m, d), (n, d), (n, c)
  bool w_has_cols = false;
  int64_t m = 0, n = 0, d = 0, c = 1;
};

void check_config(int64_t depth, double sigma_w2, double sigma_b2) {
  KF_CHECK_ARG(depth >= 0 && depth <= kMaxDepth, "depth", "expected 0 <= depth <= ", kMaxDepth, " hidden layers, got ",
               depth);
  KF_CHECK_ARG(std::isfinite(sigma_w2) && sigma_w2 > 0, "sigma_w2", "expected a positive finite weight variance, got ",
               sigma_w2);
  KF_CHECK_ARG(std::isfinite(sigma_b2) && sigma_b2 >= 0, "sigma_b2", "expected a finite bias variance >= 0, got ",
               sigma_b2);
}

Operands check_operands(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weights, const char* wname) {
  Operands o;
  check_defined(x, "x");
  check_defined(y, "y");
  check_defined(weights, wname);
  KF_CHECK_ARG(x.dim() == 2, "x", "expected shape (m, d), got ", shape_str(x));
  KF_CHECK_ARG(y.dim() == 2, "y", "expected shape (n, d), got ", shape_str(y));
  check_same_device(y, x, "y", "x");
  check_same_device(weights, x, wname, "x");
  check_float_dtype(x, "x", false);
  check_same_dtype(y, x, "y", "x");
  check_same_dtype(weights, x, wname, "x");
  o.d = x.size(1);
  KF_CHECK_ARG(o.d >= 1, "x", "expected at least one column (d >= 1), got ", shape_str(x));
  KF_CHECK_ARG(y.size(1) == o.d, "y", "expected ", o.d, " columns (the d of x ", shape_str(x), "), got ", shape_str(y));
  o.m = x.size(0);
  o.n = y.size(0);
  KF_CHECK_ARG(weights.dim() == 1 || weights.dim() == 2, wname, "expected shape (n,) or (n, c) with n = ", o.n,
               ", got ", shape_str(weights));
  KF_CHECK_ARG(weights.size(0) == o.n, wname, "expected ", o.n, " rows (one per row of y ", shape_str(y), "), got ",
               shape_str(weights));
  o.w_has_cols = weights.dim() == 2;
  o.x = x.contiguous();
  o.y = y.contiguous();
  o.w = (o.w_has_cols ? weights : weights.unsqueeze(1)).contiguous();
  o.c = o.w.size(1);
  return o;
}

at::Tensor alloc(const at::Tensor& like, std::vector<int64_t> shape) {
  at::Tensor t = at::empty(shape, like.options());
  if (poison_outputs()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// One kernel call: queries q (rows, d), points pts (n, d), point weights w (n, c), query weights g;
// out2 (rows, c): GradX's optional second output, K(q, pts) w (nngp_matmul.h).
void run(const at::Tensor& q, const at::Tensor& pts, const at::Tensor& w, const at::Tensor& g, at::Tensor& out,
         Mode mode, int64_t depth, Activation act, double sw2, double sb2, bool ntk,
         const at::Tensor& coef = at::Tensor(), at::Tensor* out2 = nullptr) {
  dispatch_float(q, [&]<typename T>() {
    NngpParams<T> p;
    p.m = q.size(0);
    p.n = pts.size(0);
    p.d = q.size(1);
    p.c = w.defined() ? w.size(1) : 0;
    p.x = q.const_data_ptr<T>();
    p.y = pts.const_data_ptr<T>();
    p.w = w.defined() ? w.const_data_ptr<T>() : nullptr;
    p.coef = coef.defined() ? coef.const_data_ptr<T>() : nullptr;
    p.g = g.defined() ? g.const_data_ptr<T>() : nullptr;
    p.out = out.mutable_data_ptr<T>();
    p.out2 = out2 ? out2->mutable_data_ptr<T>() : nullptr;
    p.act = act;
    p.depth = static_cast<int32_t>(depth);
    p.ntk = ntk;
    p.mode = mode;
    p.sigma_w2 = sw2;
    p.sigma_b2 = sb2;
#ifdef KF_DEVICE
    if (on_device(q)) {
      KF_DEVICE_GUARD(q);
      launch_nngp_matmul<T>(p, device_stream());
      return;
    }
#endif
    nngp_matmul_cpu<T>(p);
  });
}

at::Tensor nngp_matmul(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weights, int64_t depth,
                       c10::string_view activation, double sigma_w2, double sigma_b2, bool ntk) {
  KF_OP_SCOPE("nngp_matmul");
  check_config(depth, sigma_w2, sigma_b2);
  const Activation act = parse_act(activation);
  Operands o = check_operands(x, y, weights, "weights");
  at::Tensor out = o.w_has_cols ? alloc(o.x, {o.m, o.c}) : alloc(o.x, {o.m});
  run(o.x, o.y, o.w, at::Tensor(), out, Mode::Forward, depth, act, sigma_w2, sigma_b2, ntk);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nngp_matmul_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                               const at::Tensor& y, const at::Tensor& weights,
                                                               int64_t depth, c10::string_view activation,
                                                               double sigma_w2, double sigma_b2, bool ntk, bool need_x,
                                                               bool need_y, bool need_weights) {
  KF_OP_SCOPE("nngp_matmul_bwd");
  check_config(depth, sigma_w2, sigma_b2);
  const Activation act = parse_act(activation);
  Operands o = check_operands(x, y, weights, "weights");
  check_defined(grad, "grad");
  std::vector<int64_t> want{o.m};
  if (o.w_has_cols) want.push_back(o.c);
  KF_CHECK_ARG(grad.sizes().vec() == want, "grad", "expected shape ", c10::IntArrayRef(want), " (the output's), got ",
               shape_str(grad));
  check_same_dtype(grad, o.x, "grad", "x");
  check_same_device(grad, o.x, "grad", "x");
  const at::Tensor g = (o.w_has_cols ? grad : grad.unsqueeze(1)).contiguous();
  at::Tensor gx = at::empty({0}, o.x.options()), gy = at::empty({0}, o.x.options()), gw = at::empty({0}, o.x.options());
  // d/dx sum(g * (K(x, y) w)); K is symmetric, so the y side is the same pass with the sides
  // (and g, w) swapped, and the weights' gradient K(y, x) g is the forward with the sides swapped:
  // with both wanted, one GradX pass gives both (its second output). At most two passes.
  if (need_x) {
    gx = alloc(o.x, {o.m, o.d});
    run(o.x, o.y, o.w, g, gx, Mode::GradX, depth, act, sigma_w2, sigma_b2, ntk);
  }
  if (need_weights) gw = alloc(o.x, {o.n, o.c});
  if (need_y) {
    gy = alloc(o.x, {o.n, o.d});
    run(o.y, o.x, g, o.w, gy, Mode::GradX, depth, act, sigma_w2, sigma_b2, ntk, at::Tensor(),
        need_weights ? &gw : nullptr);
  } else if (need_weights) {
    run(o.y, o.x, g, at::Tensor(), gw, Mode::Forward, depth, act, sigma_w2, sigma_b2, ntk);
  }
  if (need_weights && !o.w_has_cols) gw = gw.view({o.n});
  return {gx, gy, gw};
}

// The kernel matrix (m, n) itself, by the same kernels (Matrix mode), and its backward (GradX
// with the matrix gradient as the pair coefficients).
Operands check_pair(const at::Tensor& x1, const at::Tensor& x2) {
  check_defined(x1, "x1");
  check_defined(x2, "x2");
  KF_CHECK_ARG(x1.dim() == 2, "x1", "expected shape (m, d), got ", shape_str(x1));
  KF_CHECK_ARG(x2.dim() == 2, "x2", "expected shape (n, d), got ", shape_str(x2));
  check_same_device(x2, x1, "x2", "x1");
  check_float_dtype(x1, "x1", false);
  check_same_dtype(x2, x1, "x2", "x1");
  Operands o;
  o.d = x1.size(1);
  KF_CHECK_ARG(o.d >= 1, "x1", "expected at least one column (d >= 1), got ", shape_str(x1));
  KF_CHECK_ARG(x2.size(1) == o.d, "x2", "expected ", o.d, " columns (the d of x1 ", shape_str(x1), "), got ",
               shape_str(x2));
  o.x = x1.contiguous();
  o.y = x2.contiguous();
  o.m = o.x.size(0);
  o.n = o.y.size(0);
  return o;
}

at::Tensor nngp_kernel(const at::Tensor& x1, const at::Tensor& x2, int64_t depth, c10::string_view activation,
                       double sigma_w2, double sigma_b2, bool ntk) {
  KF_OP_SCOPE("nngp_kernel");
  check_config(depth, sigma_w2, sigma_b2);
  const Activation act = parse_act(activation);
  Operands o = check_pair(x1, x2);
  at::Tensor out = alloc(o.x, {o.m, o.n});
  run(o.x, o.y, at::Tensor(), at::Tensor(), out, Mode::Matrix, depth, act, sigma_w2, sigma_b2, ntk);
  return out;
}

std::tuple<at::Tensor, at::Tensor> nngp_kernel_bwd(const at::Tensor& grad, const at::Tensor& x1, const at::Tensor& x2,
                                                   int64_t depth, c10::string_view activation, double sigma_w2,
                                                   double sigma_b2, bool ntk, bool need_x1, bool need_x2) {
  KF_OP_SCOPE("nngp_kernel_bwd");
  check_config(depth, sigma_w2, sigma_b2);
  const Activation act = parse_act(activation);
  Operands o = check_pair(x1, x2);
  check_defined(grad, "grad");
  KF_CHECK_ARG(grad.dim() == 2 && grad.size(0) == o.m && grad.size(1) == o.n, "grad", "expected shape [", o.m, ", ",
               o.n, "] (the output's), got ", shape_str(grad));
  check_same_dtype(grad, o.x, "grad", "x1");
  check_same_device(grad, o.x, "grad", "x1");
  at::Tensor g1 = at::empty({0}, o.x.options()), g2 = at::empty({0}, o.x.options());
  if (need_x1) {
    g1 = alloc(o.x, {o.m, o.d});
    run(o.x, o.y, at::Tensor(), at::Tensor(), g1, Mode::GradX, depth, act, sigma_w2, sigma_b2, ntk, grad.contiguous());
  }
  if (need_x2) {
    g2 = alloc(o.x, {o.n, o.d});
    run(o.y, o.x, at::Tensor(), at::Tensor(), g2, Mode::GradX, depth, act, sigma_w2, sigma_b2, ntk,
        grad.t().contiguous());
  }
  return {g1, g2};
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("nngp_matmul", &nngp_matmul);
  m.impl("nngp_matmul_bwd", &nngp_matmul_bwd);
  m.impl("nngp_kernel", &nngp_kernel);
  m.impl("nngp_kernel_bwd", &nngp_kernel_bwd);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("nngp_matmul", &nngp_matmul);
  m.impl("nngp_matmul_bwd", &nngp_matmul_bwd);
  m.impl("nngp_kernel", &nngp_kernel);
  m.impl("nngp_kernel_bwd", &nngp_kernel_bwd);
}
#endif

}  // namespace kernelfuse::nngp
