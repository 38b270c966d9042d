// Torch glue for fused kernel sums: argument checks, dtype dispatch, allocation and the
// TORCH_LIBRARY_IMPL registrations for CPU (and CUDA when built with it). Kernels: kernel_sum.h.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "../common/alloc_checks.h"
#include "../common/checks.h"
#include "../common/dispatch.h"
#include "../common/device.h"
#include "kernel_sum.h"

#ifdef KF_DEVICE

#include "kernel_sum_cuda.h"
#endif

namespace kernelfuse::kde {
namespace {

// The kernel names come from the one table of profiles.h (kKernelNames).
Kernel parse_kernel(const std::string& name) {
  for (int i = 0; i < kNumKernels; ++i)
    if (name == kKernelNames[i]) return static_cast<Kernel>(i);
  std::string all;
  for (int i = 0; i < kNumKernels; ++i) all += std::string(i ? ", " : "") + kKernelNames[i];
  KF_CHECK_ARG(false, "kernel", "unknown kernel '", name, "'; expected one of: ", all);
  return Kernel::Gaussian;
}

constexpr const char* kMetricNames[kNumMetrics] = {"euclidean", "manhattan", "chebyshev", "minkowski", "haversine"};

// The metric of a call, checked against the operands (d, bandwidth); minkowski with p = 1 / 2 runs
// the manhattan / euclidean paths.
Metric parse_metric(const std::string& name, double p, int64_t d, const at::Tensor& h) {
  int idx = -1;
  for (int i = 0; i < kNumMetrics; ++i)
    if (name == kMetricNames[i]) idx = i;
  if (idx < 0) {
    std::string all;
    for (int i = 0; i < kNumMetrics; ++i) all += std::string(i ? ", " : "") + kMetricNames[i];
    KF_CHECK_ARG(false, "metric", "unknown metric '", name, "'; expected one of: ", all);
  }
  const Metric met = static_cast<Metric>(idx);
  if (met == Metric::Minkowski) {
    KF_CHECK_ARG(std::isfinite(p) && p >= 1.0, "p", "expected a finite p >= 1 for metric 'minkowski', got ", p);
    if (p == 1.0) return Metric::Manhattan;
    if (p == 2.0) return Metric::Euclidean;
  }
  if (met == Metric::Haversine) {
    KF_CHECK_ARG(d == 2, "metric", "'haversine' expects d == 2 columns (latitude, longitude in radians), got d = ", d);
    KF_CHECK_ARG(h.numel() == 1, "bandwidth", "metric 'haversine' takes a scalar bandwidth, got ", h.numel(),
                 " values (shape (", h.numel(), ",))");
  }
  return met;
}

// The validated operands of one call, in the 3-d (B, rows, cols) form the kernels use.
struct Operands {
  at::Tensor x, y, w, h;    // x (B,m,d), y (B,n,d), w (B,n,c) or undefined, h (d,) or (1,)
  bool batched = false;     // inputs had a batch dimension
  bool w_has_cols = false;  // weights had a column dimension
  int64_t B = 1, m = 0, n = 0, d = 0, c = 1;
};

Operands check_operands(const at::Tensor& x, const at::Tensor& y, const std::optional<at::Tensor>& weights,
                        const at::Tensor& bandwidth, bool exclude_self, const char* wname) {
  Operands o;
  check_defined(x, "x");
  check_defined(y, "y");
  check_defined(bandwidth, "bandwidth");
  KF_CHECK_ARG(x.dim() == 2 || x.dim() == 3, "x", "expected shape (m, d) or (B, m, d), got ", shape_str(x));
  KF_CHECK_ARG(y.dim() == x.dim(), "y", "expected ", x.dim(), " dims like x ", shape_str(x), ", got ", shape_str(y));
  check_same_device(y, x, "y", "x");
  const bool on_cuda = on_device(x);
  check_float_dtype(x, "x", on_cuda);
  check_same_dtype(y, x, "y", "x");
  o.batched = x.dim() == 3;
  o.d = x.size(-1);
  KF_CHECK_ARG(y.size(-1) == o.d, "y", "expected ", o.d, " columns (the d of x ", shape_str(x), "), got y ",
               shape_str(y));
  if (o.batched)
    KF_CHECK_ARG(y.size(0) == x.size(0), "y", "expected batch size ", x.size(0), " (of x ", shape_str(x), "), got y ",
                 shape_str(y));
  o.x = checked_rows_contiguous(o.batched ? x : x.unsqueeze(0), "x");  // expanded views: size-checked copies
  o.y = checked_rows_contiguous(o.batched ? y : y.unsqueeze(0), "y");
  o.B = o.x.size(0);
  o.m = o.x.size(1);
  o.n = o.y.size(1);
  if (exclude_self)
    KF_CHECK_ARG(o.m == o.n, "exclude_self", "needs x and y with the same number of rows (x is y), got x ",
                 shape_str(x), " and y ", shape_str(y));
  if (weights.has_value()) {
    const at::Tensor& w = *weights;
    check_same_device(w, x, wname, "x");
    check_same_dtype(w, x, wname, "x");
    const int64_t pd = y.dim() - 1;  // point dims of y: (n) or (B, n)
    KF_CHECK_ARG(w.dim() == pd || w.dim() == pd + 1, wname, "expected shape ",
                 (o.batched ? "(B, n) or (B, n, c)" : "(n,) or (n, c)"), " with n = ", o.n,
                 (o.batched ? c10::str(", B = ", o.B) : std::string()), ", got ", shape_str(w));
    bool ok = w.size(pd - 1) == o.n && (!o.batched || w.size(0) == o.B);
    KF_CHECK_ARG(ok, wname, "expected ", o.n, " rows (one per point of y ", shape_str(y), "), got ", shape_str(w));
    o.w_has_cols = w.dim() == pd + 1;
    at::Tensor w3 = o.w_has_cols ? w : w.unsqueeze(-1);
    if (!o.batched) w3 = w3.unsqueeze(0);
    o.w = checked_rows_contiguous(w3, wname);
    o.c = o.w.size(2);
  }
  KF_CHECK_ARG(bandwidth.dim() == 0 || (bandwidth.dim() == 1 && (bandwidth.size(0) == o.d || bandwidth.size(0) == 1)),
               "bandwidth", "expected a scalar or shape (d,) = (", o.d, ",), got ", shape_str(bandwidth));
  check_same_device(bandwidth, x, "bandwidth", "x");
  KF_CHECK_ARG(at::isFloatingType(bandwidth.scalar_type()), "bandwidth", "expected a floating dtype, got ",
               bandwidth.scalar_type());
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  o.h = bandwidth.reshape({-1}).to(acc).contiguous();
  if (!on_cuda) {  // value checks without a device sync; CUDA callers get NaN for bad values
    const bool pos = o.h.numel() == 0 || o.h.gt(0).all().item<bool>();
    KF_CHECK_ARG(pos, "bandwidth", "expected positive finite values, got ", o.h);
    const bool fin = (o.h.isfinite()).all().item<bool>();
    KF_CHECK_ARG(fin, "bandwidth", "expected positive finite values, got ", o.h);
  }
  return o;
}

// One launch of the generic pass. qside/pside: (B, rows, d) operands; factors (B, rows, c).
struct Pass {
  at::Tensor q, pts, h;
  at::Tensor pw, plw, qw, qlw;  // may be undefined
  at::Tensor out, aux;          // out (B, rows_q, c | d), aux (B, rows_q, c) or undefined
  at::Tensor out_y, out_w;      // Backward: (B, rows_p, d), (B, rows_p, c) or undefined
  int64_t c = 1;
  at::Tensor out_h;  // Backward: (B, rows_q) in the accumulation type, or undefined
  Kernel kernel = Kernel::Gaussian;
  Mode mode = Mode::Sum;
  Metric metric = Metric::Euclidean;
  double p = 2.0;
  bool exclude_self = false;
};

template <typename S>
void launch(const Pass& a) {
  using T = storage_t<S>;
  using A = typename AccType<T>::type;
  KernelSumParams<T> p;
  auto ptr = [](const at::Tensor& t) { return in_ptr<S>(t); };
  auto bstride = [](const at::Tensor& t) -> int64_t { return t.defined() ? t.stride(0) : 0; };
  p.batch = a.q.size(0);
  p.m = a.q.size(1);
  p.n = a.pts.size(1);
  p.d = a.q.size(2);
  p.c = a.c;
  p.x = ptr(a.q);
  p.x_bstride = bstride(a.q);
  p.y = ptr(a.pts);
  p.y_bstride = bstride(a.pts);
  p.h = a.h.const_data_ptr<A>();
  p.h_stride = a.h.numel() == 1 ? 0 : 1;
  p.pw = ptr(a.pw);
  p.pw_bstride = bstride(a.pw);
  p.plw = ptr(a.plw);
  p.plw_bstride = bstride(a.plw);
  p.qw = ptr(a.qw);
  p.qw_bstride = bstride(a.qw);
  p.qlw = ptr(a.qlw);
  p.qlw_bstride = bstride(a.qlw);
  auto mut = [](const at::Tensor& t) {
    at::Tensor o = t;
    return out_ptr<S>(o);
  };
  p.out = mut(a.out);
  p.aux = mut(a.aux);
  p.out_y = mut(a.out_y);
  p.out_w = mut(a.out_w);
  p.out_h = a.out_h.defined() ? a.out_h.mutable_data_ptr<A>() : nullptr;
  p.kernel = a.kernel;
  p.mode = a.mode;
  p.metric = a.metric;
  p.p = static_cast<A>(a.p);
  p.exclude_self = a.exclude_self;
  if (p.batch == 0 || (p.m == 0 && p.mode != Mode::Backward)) return;
#ifdef KF_DEVICE
  if (on_device(a.q)) {
    KF_DEVICE_GUARD(a.q);
    launch_kernel_sum<T>(p, device_stream());
    return;
  }
#endif
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    kernel_sum_cpu<T>(p);
  } else {
    TORCH_CHECK(false, "kernelfuse: float16/bfloat16 kernel sums run on CUDA only");
  }
}

void run_pass(const Pass& a) {
#ifdef KF_DEVICE
  dispatch_float_half(a.q, [&]<typename S>() { launch<S>(a); });
#else
  dispatch_float(a.q, [&]<typename S>() { launch<S>(a); });
#endif
}

// Outputs are allocated in the user's shape; the kernels see the same memory as (B, rows, cols).
// Under KERNELFUSE_POISON=1 (the tests) they start as NaN, so an element a kernel forgot to write
// shows up.
at::Tensor alloc(const Operands& o, int64_t rows, int64_t cols, bool has_cols, const char* name = "x") {
  std::vector<int64_t> s;
  if (o.batched) s.push_back(o.B);
  s.push_back(rows);
  if (has_cols) s.push_back(cols);
  at::Tensor t = checked_empty(s, o.x.options(), name, "the output");
  if (poison_outputs()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// A pass with queries x and points y of the checked operands.
Pass make_pass(const Operands& o, c10::string_view kernel, Mode mode, bool exclude_self, c10::string_view metric,
               double p) {
  Pass a{o.x, o.y, o.h};
  a.c = o.c;
  a.kernel = parse_kernel(std::string(kernel));
  a.metric = parse_metric(std::string(metric), p, o.d, o.h);
  a.p = p;
  a.mode = mode;
  a.exclude_self = exclude_self;
  return a;
}

// NaN in, NaN out: the log-domain pass skips a NaN term as it skips a -inf one (after the running
// maximum they cannot be told apart), and a compact kernel's support test rejects a NaN distance
// (a 0 term), so queries with a NaN coordinate, and every query when a point or a (log-)weight is
// NaN (per weight column), are set to NaN here: O((m + n)(d + c)) tensor ops, no host sync.
void propagate_nan(const Operands& o, at::Tensor& out, bool exclude_self) {
  if (!out.defined() || out.numel() == 0) return;
  at::Tensor bad = o.x.isnan().any(-1).unsqueeze(-1);      // (B, m, 1)
  at::Tensor pbad = o.y.isnan().any(-1).unsqueeze(-1);     // (B, n, 1)
  if (o.w.defined()) pbad = pbad.logical_or(o.w.isnan());  // (B, n, c)
  if (exclude_self) {  // query j skips point j (m == n): a NaN point reaches every other query
    const at::Tensor cnt = pbad.sum(1, /*keepdim=*/true, at::kInt);  // (B, 1, c)
    bad = bad.logical_or(cnt.sub(pbad.to(at::kInt)).gt(0));
  } else {
    bad = bad.logical_or(pbad.any(1, /*keepdim=*/true));  // (B, m, c) or (B, m, 1)
  }
  out.view({o.B, o.m, o.c}).masked_fill_(bad, std::numeric_limits<double>::quiet_NaN());
}

at::Tensor kernel_sum(const at::Tensor& x, const at::Tensor& y, const std::optional<at::Tensor>& weights,
                      const at::Tensor& bandwidth, c10::string_view kernel, bool exclude_self, c10::string_view metric,
                      double p) {
  KF_OP_SCOPE("kernel_sum");
  Operands o = check_operands(x, y, weights, bandwidth, exclude_self, "weights");
  Pass a = make_pass(o, kernel, Mode::Sum, exclude_self, metric, p);
  a.pw = o.w;
  a.out = alloc(o, o.m, o.c, o.w_has_cols);
  run_pass(a);
  propagate_nan(o, a.out, exclude_self);  // compact kernels: a NaN distance fails the support test (0, not NaN)
  return a.out;
}

std::tuple<at::Tensor, at::Tensor> lse_impl(const at::Tensor& x, const at::Tensor& y,
                                            const std::optional<at::Tensor>& log_weights, const at::Tensor& bandwidth,
                                            c10::string_view kernel, bool exclude_self, bool with_sq,
                                            c10::string_view metric, double p) {
  Operands o = check_operands(x, y, log_weights, bandwidth, exclude_self, "log_weights");
  Pass a = make_pass(o, kernel, Mode::LogSumExp, exclude_self, metric, p);
  a.plw = o.w;
  a.out = alloc(o, o.m, o.c, o.w_has_cols);
  if (with_sq) a.aux = alloc(o, o.m, o.c, o.w_has_cols);
  run_pass(a);
  propagate_nan(o, a.out, exclude_self);
  propagate_nan(o, a.aux, exclude_self);
  return {a.out, a.aux};
}

at::Tensor kernel_logsumexp(const at::Tensor& x, const at::Tensor& y, const std::optional<at::Tensor>& log_weights,
                            const at::Tensor& bandwidth, c10::string_view kernel, bool exclude_self,
                            c10::string_view metric, double p) {
  KF_OP_SCOPE("kernel_logsumexp");
  return std::get<0>(lse_impl(x, y, log_weights, bandwidth, kernel, exclude_self, false, metric, p));
}

std::tuple<at::Tensor, at::Tensor> kernel_logsumexp_sq(const at::Tensor& x, const at::Tensor& y,
                                                       const std::optional<at::Tensor>& log_weights,
                                                       const at::Tensor& bandwidth, c10::string_view kernel,
                                                       bool exclude_self, c10::string_view metric, double p) {
  KF_OP_SCOPE("kernel_logsumexp_sq");
  return lse_impl(x, y, log_weights, bandwidth, kernel, exclude_self, true, metric, p);
}

// grad/out in (B, m, c) form; checked against the forward's output shape.
at::Tensor grad3(const at::Tensor& g, const Operands& o, const char* name) {
  std::vector<int64_t> want;
  if (o.batched) want.push_back(o.B);
  want.push_back(o.m);
  if (o.w_has_cols) want.push_back(o.c);
  check_defined(g, name);
  KF_CHECK_ARG(g.sizes().vec() == want, name, "expected shape ", c10::IntArrayRef(want), " (the output's), got ",
               shape_str(g));
  check_same_dtype(g, o.x, name, "x");
  check_same_device(g, o.x, name, "x");
  at::Tensor t = o.w_has_cols ? g : g.unsqueeze(-1);
  return checked_rows_contiguous(o.batched ? t : t.unsqueeze(0), name);
}

// Shared by both backward ops. log_domain: the forward was kernel_logsumexp (out given).
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads backward(const at::Tensor& grad, const std::optional<at::Tensor>& out, const at::Tensor& x, const at::Tensor& y,
               const std::optional<at::Tensor>& weights, const at::Tensor& bandwidth, c10::string_view kernel,
               bool exclude_self, bool need_x, bool need_y, bool need_w, bool log_domain, c10::string_view metric,
               double p, bool need_h) {
  Operands o = check_operands(x, y, weights, bandwidth, exclude_self, log_domain ? "log_weights" : "weights");
  const at::Tensor g = grad3(grad, o, "grad");
  at::Tensor neg_out;
  if (log_domain) neg_out = grad3(*out, o, "out").neg();
  // Outputs not asked for are distinct empty tensors (outputs must not alias).
  at::Tensor gx = at::empty({0}, o.x.options()), gy = at::empty({0}, o.x.options()), gw = at::empty({0}, o.x.options()),
             gh = at::empty({0}, o.x.options());
  // One pass: queries x, points y; the kernel fills whichever outputs are defined.
  Pass a = make_pass(o, kernel, Mode::Backward, exclude_self, metric, p);
  if (need_h)
    KF_CHECK_ARG(o.h.numel() == 1, "need_bandwidth",
                 "needs a scalar bandwidth (the coordinate metrics' "
                 "per-dimension gradient follows from the x and y gradients), got bandwidth ",
                 shape_str(bandwidth));
  a.qw = g;
  if (log_domain) {
    a.qlw = neg_out;
    a.plw = o.w;
  } else {
    a.pw = o.w;
  }
  if (need_x || need_h) a.out = alloc(o, o.m, o.d, true);  // (CUDA: the bandwidth sums ride on the x pass)
  if (need_x) gx = a.out;
  if (need_y) a.out_y = gy = alloc(o, o.n, o.d, true, "y");
  if (need_w && o.w.defined()) a.out_w = gw = alloc(o, o.n, o.c, o.w_has_cols, "y");
  if (need_h) {
    a.out_h = at::empty({o.B, o.m}, o.h.options());
    if (poison_outputs()) a.out_h.fill_(std::numeric_limits<double>::quiet_NaN());
    if (o.d == 0) a.out_h.zero_();  // s == 0 for every pair (the CUDA kernel skips d == 0)
  }
  if (need_x || need_y || (need_w && o.w.defined()) || need_h) run_pass(a);
  if (log_domain && (need_x || need_y || need_w)) {
    // NaN in, NaN out: where the forward output is NaN (query j, column c) every gradient through it
    // is NaN (x's row j, every point's row of y, weights column c); the pass skips NaN terms.
    // (exclude_self: point i is not in query i's sum, m == n.)
    const at::Tensor bad = grad3(*out, o, "out").isnan();  // (B, m, c)
    const double nan = std::numeric_limits<double>::quiet_NaN();
    auto reached = [&](const at::Tensor& b) {  // b (B, m, k) -> (B, n, k): some other query's output is NaN
      if (!exclude_self) return b.any(1, true);
      return b.sum(1, true, at::kInt).sub(b.to(at::kInt)).gt(0);
    };
    if (need_x && gx.numel()) gx.view({o.B, o.m, o.d}).masked_fill_(bad.any(-1, true), nan);
    if (need_y && gy.numel()) gy.view({o.B, o.n, o.d}).masked_fill_(reached(bad.any(-1, true)), nan);
    if (need_w && o.w.defined() && gw.numel()) gw.view({o.B, o.n, o.c}).masked_fill_(reached(bad), nan);
  }
  if (need_h) {  // dL/dh = -(2/h) sum_{b,q,i} coef s, summed in double
    const at::Tensor tot = a.out_h.to(at::kDouble).sum();
    gh = tot.mul(-2.0).div(o.h.to(at::kDouble).reshape({})).to(bandwidth.scalar_type()).reshape(bandwidth.sizes());
  }
  return {gx, gy, gw, gh};
}

Grads kernel_sum_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                     const std::optional<at::Tensor>& weights, const at::Tensor& bandwidth, c10::string_view kernel,
                     bool exclude_self, bool need_x, bool need_y, bool need_w, c10::string_view metric, double p,
                     bool need_h) {
  KF_OP_SCOPE("kernel_sum_bwd");
  return backward(grad, std::nullopt, x, y, weights, bandwidth, kernel, exclude_self, need_x, need_y, need_w, false,
                  metric, p, need_h);
}

Grads kernel_logsumexp_bwd(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& x, const at::Tensor& y,
                           const std::optional<at::Tensor>& log_weights, const at::Tensor& bandwidth,
                           c10::string_view kernel, bool exclude_self, bool need_x, bool need_y, bool need_w,
                           c10::string_view metric, double p, bool need_h) {
  KF_OP_SCOPE("kernel_logsumexp_bwd");
  return backward(grad, out, x, y, log_weights, bandwidth, kernel, exclude_self, need_x, need_y, need_w, true, metric,
                  p, need_h);
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("kernel_sum", &kernel_sum);
  m.impl("kernel_logsumexp", &kernel_logsumexp);
  m.impl("kernel_logsumexp_sq", &kernel_logsumexp_sq);
  m.impl("kernel_sum_bwd", &kernel_sum_bwd);
  m.impl("kernel_logsumexp_bwd", &kernel_logsumexp_bwd);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("kernel_sum", &kernel_sum);
  m.impl("kernel_logsumexp", &kernel_logsumexp);
  m.impl("kernel_logsumexp_sq", &kernel_logsumexp_sq);
  m.impl("kernel_sum_bwd", &kernel_sum_bwd);
  m.impl("kernel_logsumexp_bwd", &kernel_logsumexp_bwd);
}
#endif

}  // namespace kernelfuse::kde
