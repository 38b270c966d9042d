// Torch glue for the random-feature ops: fwht, random_features, structured_features and their
// backward twins. Checks, dtype dispatch, allocation, TORCH_LIBRARY_IMPL for CPU (and CUDA when
// built with it). Kernels: fwht.h, random_features.h. The backward passes use ATen GEMMs
// (gx = gz W^T, gW = x^T gz) around an elementwise step on the recomputed pre-activations.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../common/alloc_checks.h"
#include "../common/checks.h"
#include "../common/device.h"
#include "fwht.h"
#include "random_features.h"

#ifdef KF_DEVICE

#include "features_cuda.h"
#endif

namespace kernelfuse::features {
namespace {

constexpr const char* kKindNames[kNumKinds] = {"cos", "cos_sin", "positive", "relu", "step"};

Kind parse_kind(c10::string_view name) {
  for (int i = 0; i < kNumKinds; ++i)
    if (name == kKindNames[i]) return static_cast<Kind>(i);
  KF_CHECK_ARG(false, "kind", "unknown kind '", std::string(name),
               "'; expected one of: cos, cos_sin, positive, relu, step");
  return Kind::Cos;
}

Stabilize parse_stabilize(c10::string_view name) {
  if (name == "row") return Stabilize::Row;
  if (name == "global") return Stabilize::Global;
  if (name == "none") return Stabilize::None;
  KF_CHECK_ARG(false, "stabilize", "unknown stabiliser '", std::string(name), "'; expected one of: row, global, none");
  return Stabilize::Row;
}

Block parse_block(c10::string_view name) {
  if (name == "sorf") return Block::Sorf;
  if (name == "fastfood") return Block::Fastfood;
  KF_CHECK_ARG(false, "block", "unknown block '", std::string(name), "'; expected one of: sorf, fastfood");
  return Block::Sorf;
}

// Large fresh CPU outputs: ask for transparent huge pages on the 2 MB-aligned interior of the
// buffer before anything touches it. A feature map of 100,000 x 4,096 floats is 1.6 GB, i.e.
// 400,000 first-touch 4 KB page faults (measured ~1.1 CPU-s in this VM, as much as the GEMM on
// one core) versus 800 2 MB faults (~0.25 CPU-s) once huge pages are available. Only a hint:
// with THP "never" (or no free 2 MB blocks) the kernel silently falls back to 4 KB pages.
// KERNELFUSE_HUGEPAGES=0 in the environment turns the hint off (common/config.h).
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const bool enabled = config().hugepages;
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (!enabled || !t.device().is_cpu() || t.nbytes() < 16 * kHuge) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  const uintptr_t lo = (p + kHuge - 1) & ~(kHuge - 1), hi = (p + t.nbytes()) & ~(kHuge - 1);
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // failure: 4 KB pages
#else
  (void)t;
#endif
}

at::Tensor alloc(c10::IntArrayRef lead, int64_t cols, const at::Tensor& like, const char* name) {
  std::vector<int64_t> s(lead.begin(), lead.end());
  s.push_back(cols);
  at::Tensor t = checked_empty(s, like.options(), name, "the output");
  advise_huge_pages(t);
  if (poison_outputs()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// scale None: the default of kernelfuse.ops.features.default_scale, from the feature count D (computed
// here, so that torch.compile does not bake a Python float of the shape into the graph).
double resolve_scale(const std::optional<double>& scale, Kind kind, int64_t D) {
  if (!scale.has_value())
    return D <= 0 ? 1.0 : std::sqrt((kind == Kind::CosSin || kind == Kind::Positive ? 1.0 : 2.0) / double(D));
  KF_CHECK_ARG(std::isfinite(*scale) && *scale > 0, "scale", "expected a positive finite number, got ", *scale);
  return *scale;
}

void check_defined(const at::Tensor& t, const char* name) {
  KF_CHECK_ARG(t.defined(), name, "expected a tensor, got None");
}

// grad and out of a backward op: defined, x's dtype and device.
void check_grad_out(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& x) {
  check_defined(grad, "grad");
  check_defined(out, "out");
  check_same_device(grad, x, "grad", "x");
  check_same_dtype(grad, x, "grad", "x");
  check_same_device(out, x, "out", "x");
  check_same_dtype(out, x, "out", "x");
}

// Row-max scratch of the Positive kind: (N + 1,), the last entry the global max (CUDA); else undefined.
at::Tensor rowmax_scratch(Kind kind, int64_t N, const at::Tensor& x) {
  return kind == Kind::Positive ? checked_empty({N + 1}, x.options(), "x", "the row-maximum scratch") : at::Tensor();
}

// The output-side fields random_features and structured_features share.
template <typename scalar_t, typename P>
void set_output(P& p, const at::Tensor& out, const at::Tensor& rowmax, Kind kind, Stabilize stab, double scale) {
  p.out = out.mutable_data_ptr<scalar_t>();
  p.rowmax = rowmax.defined() ? rowmax.mutable_data_ptr<scalar_t>() : nullptr;
  p.kind = kind;
  p.stabilize = stab;
  p.scale = static_cast<scalar_t>(scale);
}

// ---------------------------------------------------------------- fwht
at::Tensor fwht(const at::Tensor& x, bool normalized) {
  KF_OP_SCOPE("fwht");
  check_defined(x, "x");
  KF_CHECK_ARG(x.dim() >= 1, "x", "expected at least one dimension, got a scalar");
  check_float_dtype(x, "x", false);
  const int64_t n = x.size(-1);
  KF_CHECK_ARG(n >= 1 && (n & (n - 1)) == 0, "x", "the last dimension must be a power of two, got size ", n,
               " (x of shape ", shape_str(x), "); zero-pad it to ",
               (n <= 1 ? 1 : int64_t(1) << (64 - __builtin_clzll(n - 1))));
  const at::Tensor xc = checked_contiguous(x, "x");
  at::Tensor out = checked_empty(x.sizes(), x.options(), "x", "the output");
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  const int64_t rows = n ? x.numel() / n : 0;
  if (rows == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fwht", [&] {
    FwhtParams<scalar_t> p;
    p.x = xc.const_data_ptr<scalar_t>();
    p.out = out.mutable_data_ptr<scalar_t>();
    p.rows = rows;
    p.n = n;
    p.scale = normalized ? scalar_t(1) / std::sqrt(static_cast<scalar_t>(n)) : scalar_t(1);
#ifdef KF_DEVICE
    if (on_device(x)) {
      KF_DEVICE_GUARD(x);
      launch_fwht<scalar_t>(p, device_stream());
      return;
    }
#endif
    fwht_cpu<scalar_t>(p);
  });
  return out;
}

// ---------------------------------------------------------------- random_features
// Rows of x (..., d): the product of the leading sizes (reshape({-1, d}) is ambiguous for d = 0).
int64_t lead_rows(const at::Tensor& x) {
  int64_t n = 1;
  for (int64_t i = 0; i + 1 < x.dim(); ++i) n *= x.size(i);
  return n;
}

struct RF {
  at::Tensor x2, W, b;  // x as (N, d) rows, W (d, D) contiguous, b (D,) or undefined
  int64_t N = 0, d = 0, D = 0;
};

RF check_rf(const at::Tensor& x, const at::Tensor& W, const std::optional<at::Tensor>& b) {
  RF r;
  check_defined(x, "x");
  check_defined(W, "W");
  KF_CHECK_ARG(x.dim() >= 1, "x", "expected shape (..., d), got a scalar");
  check_float_dtype(x, "x", false);
  KF_CHECK_ARG(W.dim() == 2, "W", "expected shape (d, D) = (", x.size(-1), ", D), got ", shape_str(W));
  check_same_dtype(W, x, "W", "x");
  check_same_device(W, x, "W", "x");
  r.d = x.size(-1);
  KF_CHECK_ARG(W.size(0) == r.d, "W", "expected ", r.d, " rows (the last dim of x ", shape_str(x), "), got W ",
               shape_str(W));
  r.D = W.size(1);
  if (b.has_value() && b->defined()) {
    check_same_dtype(*b, x, "b", "x");
    check_same_device(*b, x, "b", "x");
    KF_CHECK_ARG(b->dim() == 1 && b->size(0) == r.D, "b", "expected shape (", r.D, ",) (the columns of W ",
                 shape_str(W), "), got ", shape_str(*b));
    r.b = checked_contiguous(*b, "b");
  }
  r.N = lead_rows(x);
  r.x2 = checked_contiguous(x, "x").reshape({r.N, r.d});
  r.W = checked_contiguous(W, "W");
  return r;
}

at::Tensor random_features(const at::Tensor& x, const at::Tensor& W, const std::optional<at::Tensor>& b,
                           c10::string_view kind_name, std::optional<double> scale_opt, c10::string_view stabilize) {
  KF_OP_SCOPE("random_features");
  const Kind kind = parse_kind(kind_name);
  const Stabilize stab = parse_stabilize(stabilize);
  RF r = check_rf(x, W, b);
  const double scale = resolve_scale(scale_opt, kind, r.D);
  at::Tensor out =
      alloc(x.sizes().slice(0, x.dim() - 1), kind == Kind::CosSin ? 2 * r.D : r.D, x, r.D >= r.N ? "W" : "x");
  if (r.N == 0 || r.D == 0) return out;
  at::Tensor rowmax = rowmax_scratch(kind, r.N, x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "random_features", [&] {
    RandomFeaturesParams<scalar_t> p;
    p.x = r.x2.const_data_ptr<scalar_t>();
    p.W = r.W.const_data_ptr<scalar_t>();
    p.b = r.b.defined() ? r.b.const_data_ptr<scalar_t>() : nullptr;
    p.N = r.N;
    p.d = r.d;
    p.D = r.D;
    set_output<scalar_t>(p, out, rowmax, kind, stab, scale);
#ifdef KF_DEVICE
    if (on_device(x)) {
      KF_DEVICE_GUARD(x);
      launch_random_features<scalar_t>(p, device_stream());
      return;
    }
#endif
    random_features_cpu<scalar_t>(p);
  });
  return out;
}

// dL/dz from dL/dout. z: the pre-activations (N, D) (needed by cos, relu, and positive's
// stabiliser), out/grad (N, Dout). For positive also returns G.sum(1) (the |x|^2/2 term's factor).
std::pair<at::Tensor, at::Tensor> grad_z(const at::Tensor& g, const at::Tensor& out, const at::Tensor& z, Kind kind,
                                         double scale, Stabilize stab) {
  const int64_t D = z.size(1);
  switch (kind) {
    case Kind::Cos:
      return {g * z.sin() * (-scale), at::Tensor()};
    case Kind::CosSin: {
      const at::Tensor oc = out.narrow(1, 0, D), os = out.narrow(1, D, D);
      return {g.narrow(1, D, D) * oc - g.narrow(1, 0, D) * os, at::Tensor()};
    }
    case Kind::Relu:
      return {g * (z > 0).to(g.scalar_type()) * scale, at::Tensor()};
    case Kind::Step:
      return {at::zeros_like(z), at::Tensor()};
    case Kind::Positive: {
      at::Tensor G = g * out;
      at::Tensor rs = G.sum(1);
      if (stab == Stabilize::Row && D > 0) {
        const at::Tensor am = z.argmax(1, true);
        G.scatter_add_(1, am, -rs.unsqueeze(1));
      } else if (stab == Stabilize::Global && z.numel() > 0) {
        const at::Tensor am = z.reshape({-1}).argmax();
        G.reshape({-1}).index_add_(0, am.reshape({1}), -rs.sum().reshape({1}));
      }
      return {G, rs};
    }
  }
  return {};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> random_features_bwd(
    const at::Tensor& grad, const at::Tensor& out, const at::Tensor& x, const at::Tensor& W,
    const std::optional<at::Tensor>& b, c10::string_view kind_name, std::optional<double> scale_opt,
    c10::string_view stabilize, bool need_x, bool need_W, bool need_b) {
  KF_OP_SCOPE("random_features_bwd");
  const Kind kind = parse_kind(kind_name);
  const Stabilize stab = parse_stabilize(stabilize);
  RF r = check_rf(x, W, b);
  check_grad_out(grad, out, x);
  const double scale = resolve_scale(scale_opt, kind, r.D);
  const int64_t Dout = kind == Kind::CosSin ? 2 * r.D : r.D;
  KF_CHECK_ARG(grad.sizes() == out.sizes() && out.size(-1) == Dout && out.numel() == r.N * Dout, "grad",
               "expected the output's shape, got grad ", shape_str(grad), " and out ", shape_str(out));
  const at::Tensor g = grad.reshape({r.N, Dout}).contiguous(), o = out.reshape({r.N, Dout}).contiguous();
  at::Tensor z = (kind == Kind::Cos || kind == Kind::Relu || kind == Kind::Positive)
                     ? (r.b.defined() ? at::addmm(r.b, r.x2, r.W) : at::mm(r.x2, r.W))
                     : at::empty({r.N, r.D}, x.options());
  auto [gz, rs] = grad_z(g, o, z, kind, scale, stab);
  at::Tensor gx = at::empty({0}, x.options()), gW = at::empty({0}, x.options()), gb = at::empty({0}, x.options());
  if (need_x) {
    gx = at::mm(gz, r.W.t());
    if (rs.defined()) gx -= r.x2 * rs.unsqueeze(1);
    gx = gx.reshape(x.sizes());
  }
  if (need_W) gW = at::mm(r.x2.t(), gz);
  if (need_b && r.b.defined()) gb = gz.sum(0);
  return {gx, gW, gb};
}

// ---------------------------------------------------------------- structured_features
struct SF {
  at::Tensor x2, diag, perm, b;
  int64_t N = 0, d = 0, P = 1, nblocks = 0, D = 0;
  Block block = Block::Sorf;
};

SF check_sf(const at::Tensor& x, const at::Tensor& diag, const std::optional<at::Tensor>& perm,
            const std::optional<at::Tensor>& b, c10::string_view block, int64_t n_features) {
  SF s;
  s.block = parse_block(block);
  check_defined(x, "x");
  check_defined(diag, "signs");
  KF_CHECK_ARG(x.dim() >= 1, "x", "expected shape (..., d), got a scalar");
  check_float_dtype(x, "x", false);
  s.d = x.size(-1);
  KF_CHECK_ARG(diag.dim() == 3 && diag.size(1) == 3, "signs",
               "expected shape (nblocks, 3, P) with P a power of two >= d = ", s.d, ", got ", shape_str(diag));
  check_same_dtype(diag, x, "signs", "x");
  check_same_device(diag, x, "signs", "x");
  s.P = diag.size(2);
  s.nblocks = diag.size(0);
  KF_CHECK_ARG(s.P >= std::max<int64_t>(s.d, 1) && (s.P & (s.P - 1)) == 0, "signs",
               "expected a last dimension P that is a power of two >= d = ", s.d, " (the last dim of x), got ",
               shape_str(diag));
  KF_CHECK_ARG(n_features >= 0 && n_features <= s.nblocks * s.P, "n_features",
               "expected 0 <= n_features <= nblocks * P = ", s.nblocks * s.P, ", got ", n_features);
  s.D = n_features;
  if (s.block == Block::Fastfood) {
    KF_CHECK_ARG(perm.has_value() && perm->defined(), "perm",
                 "block='fastfood' needs a permutation tensor of shape (nblocks, P) = (", s.nblocks, ", ", s.P, ")");
    KF_CHECK_ARG(
        perm->scalar_type() == at::kLong && perm->dim() == 2 && perm->size(0) == s.nblocks && perm->size(1) == s.P,
        "perm", "expected an int64 tensor of shape (", s.nblocks, ", ", s.P, "), got ", perm->scalar_type(), " ",
        shape_str(*perm));
    check_same_device(*perm, x, "perm", "x");
    s.perm = checked_contiguous(*perm, "perm");
    if (!on_device(x)) {  // on the device (no synchronisation here) the kernels give NaN for an index out of range
      const bool ok = s.perm.numel() == 0 || (s.perm.min().item<int64_t>() >= 0 && s.perm.max().item<int64_t>() < s.P);
      KF_CHECK_ARG(ok, "perm", "expected values in [0, ", s.P, ")");
    }
  }
  if (b.has_value() && b->defined()) {
    check_same_dtype(*b, x, "b", "x");
    check_same_device(*b, x, "b", "x");
    KF_CHECK_ARG(b->dim() == 1 && b->size(0) == s.D, "b", "expected shape (", s.D, ",) (n_features), got ",
                 shape_str(*b));
    s.b = checked_contiguous(*b, "b");
  }
  s.N = lead_rows(x);
  s.x2 = checked_contiguous(x, "x").reshape({s.N, s.d});
  s.diag = checked_contiguous(diag, "signs");
  return s;
}

template <typename T>
StructuredFeaturesParams<T> sf_params(const SF& s) {
  StructuredFeaturesParams<T> p;
  p.x = s.x2.const_data_ptr<T>();
  p.diag = s.diag.const_data_ptr<T>();
  p.perm = s.perm.defined() ? s.perm.const_data_ptr<int64_t>() : nullptr;
  p.b = s.b.defined() ? s.b.const_data_ptr<T>() : nullptr;
  p.N = s.N;
  p.d = s.d;
  p.P = s.P;
  p.nblocks = s.nblocks;
  p.D = s.D;
  p.block = s.block;
  return p;
}

at::Tensor structured_features(const at::Tensor& x, const at::Tensor& signs, const std::optional<at::Tensor>& perm,
                               const std::optional<at::Tensor>& b, int64_t n_features, c10::string_view kind_name,
                               c10::string_view block, std::optional<double> scale_opt, c10::string_view stabilize) {
  KF_OP_SCOPE("structured_features");
  const Kind kind = parse_kind(kind_name);
  const Stabilize stab = parse_stabilize(stabilize);
  SF s = check_sf(x, signs, perm, b, block, n_features);
  const double scale = resolve_scale(scale_opt, kind, s.D);
  at::Tensor out =
      alloc(x.sizes().slice(0, x.dim() - 1), kind == Kind::CosSin ? 2 * s.D : s.D, x, s.D >= s.N ? "n_features" : "x");
  if (s.N == 0 || s.D == 0) return out;
  at::Tensor rowmax = rowmax_scratch(kind, s.N, x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "structured_features", [&] {
    auto p = sf_params<scalar_t>(s);
    set_output<scalar_t>(p, out, rowmax, kind, stab, scale);
#ifdef KF_DEVICE
    if (on_device(x)) {
      KF_DEVICE_GUARD(x);
      launch_structured_features<scalar_t>(p, device_stream());
      return;
    }
#endif
    structured_features_cpu<scalar_t>(p);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> structured_features_bwd(const at::Tensor& grad, const at::Tensor& out,
                                                           const at::Tensor& x, const at::Tensor& signs,
                                                           const std::optional<at::Tensor>& perm,
                                                           const std::optional<at::Tensor>& b, int64_t n_features,
                                                           c10::string_view kind_name, c10::string_view block,
                                                           std::optional<double> scale_opt, c10::string_view stabilize,
                                                           bool need_x, bool need_b) {
  KF_OP_SCOPE("structured_features_bwd");
  const Kind kind = parse_kind(kind_name);
  const Stabilize stab = parse_stabilize(stabilize);
  SF s = check_sf(x, signs, perm, b, block, n_features);
  check_grad_out(grad, out, x);
  const double scale = resolve_scale(scale_opt, kind, s.D);
  const int64_t Dout = kind == Kind::CosSin ? 2 * s.D : s.D;
  KF_CHECK_ARG(grad.sizes() == out.sizes() && out.size(-1) == Dout && out.numel() == s.N * Dout, "grad",
               "expected the output's shape, got grad ", shape_str(grad), " and out ", shape_str(out));
  const at::Tensor g = grad.reshape({s.N, Dout}).contiguous(), o = out.reshape({s.N, Dout}).contiguous();
  at::Tensor z = at::empty({s.N, s.D}, x.options());
  const bool need_z = s.N > 0 && s.D > 0 && (kind == Kind::Cos || kind == Kind::Relu || kind == Kind::Positive);
  at::Tensor gx = at::empty({0}, x.options()), gb = at::empty({0}, x.options());
#ifdef KF_DEVICE
  if (on_device(x)) {  // z, the elementwise step (ATen, as on the CPU), then gx = J^T gz and gb = sum_rows gz
    KF_DEVICE_GUARD(x);
    if (need_z)
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "structured_project", [&] {
        launch_structured_project<scalar_t>(sf_params<scalar_t>(s), z.mutable_data_ptr<scalar_t>(), device_stream());
      });
    auto [gz, rs] = grad_z(g, o, z, kind, scale, stab);
    const at::Tensor gzc = gz.contiguous();
    const bool want_b = need_b && s.b.defined();
    if (need_x) {
      gx = at::empty({s.N, s.d}, x.options());
      if (poison_outputs()) gx.fill_(std::numeric_limits<double>::quiet_NaN());
    }
    if (want_b) {
      gb = at::empty({s.D}, x.options());
      if (poison_outputs()) gb.fill_(std::numeric_limits<double>::quiet_NaN());
    }
    const int64_t chunks = structured_bwd_gb_chunks(s.N);
    const at::Tensor partial = want_b && chunks > 1 ? at::empty({chunks, s.D}, x.options()) : at::Tensor();
    if (need_x || want_b)
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "structured_features_bwd", [&] {
        StructuredFeaturesBwdParams<scalar_t> q;
        q.f = sf_params<scalar_t>(s);
        q.gz = gzc.const_data_ptr<scalar_t>();
        q.gx = need_x ? gx.mutable_data_ptr<scalar_t>() : nullptr;
        q.gb = want_b ? gb.mutable_data_ptr<scalar_t>() : nullptr;
        q.gb_partial = partial.defined() ? partial.mutable_data_ptr<scalar_t>() : nullptr;
        launch_structured_features_bwd<scalar_t>(q, device_stream());
      });
    if (need_x) {
      if (rs.defined()) gx -= s.x2 * rs.unsqueeze(1);
      gx = gx.reshape(x.sizes());
    }
    return {gx, gb};
  }
#endif
  if (need_z)
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "structured_project", [&] {
      structured_project_cpu<scalar_t>(sf_params<scalar_t>(s), z.mutable_data_ptr<scalar_t>());
    });
  auto [gz, rs] = grad_z(g, o, z, kind, scale, stab);
  if (need_x) {
    gx = at::empty({s.N, s.d}, x.options());
    const at::Tensor gzc = gz.contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "structured_adjoint", [&] {
      structured_adjoint_cpu<scalar_t>(sf_params<scalar_t>(s), gzc.const_data_ptr<scalar_t>(),
                                       gx.mutable_data_ptr<scalar_t>());
    });
    if (rs.defined()) gx -= s.x2 * rs.unsqueeze(1);
    gx = gx.reshape(x.sizes());
  }
  if (need_b && s.b.defined()) gb = gz.sum(0);
  return {gx, gb};
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("fwht", &fwht);
  m.impl("random_features", &random_features);
  m.impl("random_features_bwd", &random_features_bwd);
  m.impl("structured_features", &structured_features);
  m.impl("structured_features_bwd", &structured_features_bwd);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("fwht", &fwht);
  m.impl("random_features", &random_features);
  m.impl("random_features_bwd", &random_features_bwd);
  m.impl("structured_features", &structured_features);
  m.impl("structured_features_bwd", &structured_features_bwd);
}
#endif

}  // namespace kernelfuse::features
