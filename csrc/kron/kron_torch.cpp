// Torch glue for the Kronecker GP algebra: argument checks, dtype dispatch, allocation, the
// runner's interfaces (GEMMs by at::mm_out / bmm_out: MKL / cuBLAS; eigendecompositions by
// at::linalg_eigh: LAPACK / cuSOLVER), the MLL's tensor algebra and the TORCH_LIBRARY_IMPL
// registrations. The mode-product chain, the eigendecompositions' schedule and the posterior
// variance are the torch-free runner of kron_runner.h; the stages between the GEMMs are kron.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/diag.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linalg_eigh.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../common/checks.h"
#include "../common/config.h"
#include "../common/device.h"
#include "../common/dispatch.h"
#include "kron.h"
#include "kron_checks.h"
#include "kron_exec_torch.h"
#include "kron_runner.h"

namespace kernelfuse::kron {
namespace {

using at::Tensor;

int64_t prod(const std::vector<int64_t>& v, size_t b = 0, size_t e = SIZE_MAX) {
  int64_t p = 1;
  for (size_t i = b; i < std::min(e, v.size()); ++i) p *= v[i];
  return p;
}

std::string fname(const char* fn, int64_t i) { return std::string(fn) + "[" + std::to_string(i) + "]"; }

// Factors: >= 1 matrices, 2-D, float32/float64, one dtype and device (that of factors[0]).
std::vector<Tensor> check_factors(at::TensorList factors, const char* name, bool square, int64_t max_dims,
                                  const Tensor* ref = nullptr) {
  KF_CHECK_ARG(!factors.empty(), name, "expected at least one matrix, got an empty list");
  KF_CHECK_ARG(int64_t(factors.size()) <= max_dims, name, "at most ", max_dims, " axes are supported, got ",
               factors.size());
  std::vector<Tensor> out;
  for (size_t i = 0; i < factors.size(); ++i) {
    const Tensor& f = factors[i];
    const std::string nm = fname(name, int64_t(i));
    KF_CHECK_ARG(f.dim() == 2, nm, "expected a 2-D matrix, got shape ", shape_str(f));
    check_float_dtype(f, nm.c_str(), false);
    if (square)
      KF_CHECK_ARG(f.size(0) == f.size(1), nm, "expected a square (symmetric PSD) matrix, got shape ", shape_str(f));
    const Tensor& r = ref ? *ref : factors[0];
    const std::string rn = ref ? "factors[0]" : fname(name, 0);
    check_same_dtype(f, r, nm.c_str(), rn.c_str());
    check_same_device(f, r, nm.c_str(), rn.c_str());
    out.push_back(f);
  }
  // The grid sizes must be representable (checked before any product of them is used).
  std::vector<int64_t> rows, cols;
  for (const auto& f : out) {
    rows.push_back(f.size(0));
    cols.push_back(f.size(1));
  }
  KF_CHECK_ARG(sat_prod(rows) != kSizeOverflow && sat_prod(cols) != kSizeOverflow, name,
               "the product of the factors' sizes overflows int64 (", out.size(), " factors; first of shape ",
               shape_str(out[0]), ")");
  return out;
}

void check_like(const Tensor& t, const Tensor& ref, const char* name) {
  check_defined(t, name);
  check_same_dtype(t, ref, name, "factors[0]");
  check_same_device(t, ref, name, "factors[0]");
}

void check_noise(const Tensor& noise, const Tensor& ref) {
  check_defined(noise, "noise");
  KF_CHECK_ARG(noise.numel() == 1 && noise.dim() <= 1, "noise",
               "expected a scalar (0-d tensor: the noise variance), "
               "got shape ",
               shape_str(noise));
  check_like(noise, ref, "noise");
}

// KERNELFUSE_KRON_GEMM=aten (common/config.h): CPU mode products by ATen's GEMM (MKL) in the
// cyclic layout instead of the torch-free kernel (for comparison; tests cover both).
bool use_aten_gemm() { return config().kron_gemm_aten; }

// One mode-product chain over a batch (kron_runner.h): X (B, prod in_dims) -> (B, prod out_dims).
// mats[d] undefined: identity on axis d. transpose: apply mats[d]^T instead of mats[d].
Tensor chain(const std::vector<Tensor>& mats, bool transpose, const Tensor& X, const std::vector<int64_t>& in_dims) {
  const size_t D = in_dims.size();
  std::vector<int64_t> out_dims(D);
  for (size_t d = 0; d < D; ++d) out_dims[d] = mats[d].defined() ? mats[d].size(transpose ? 1 : 0) : in_dims[d];
  const int64_t B = X.size(0), Nin = prod(in_dims), Nout = prod(out_dims);
  if (B == 0 || Nout == 0) return at::empty({B, Nout}, X.options());
  if (Nin == 0) return at::zeros({B, Nout}, X.options());
  const Tensor Xc = X.contiguous();
  Tensor out = at::empty({B, Nout}, X.options());
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  dispatch_float(X, [&]<typename T>() {
    std::vector<KronMat<T>> km;
    for (const auto& m : mats) km.push_back(kmat<T>(m, transpose));
    TorchKronExec<T> ex(X);
    kron_chain<T>(ex, B, in_dims, km, Xc.const_data_ptr<T>(), out.mutable_data_ptr<T>(), use_aten_gemm());
  });
  return out;
}

// sum over the batch and every axis but d of U[..., k, ...] V[..., l, ...] -> (a_d, b_d), for
// U of the grid dims_u and V of dims_v, equal except on axis d.
Tensor unfold_gram(const Tensor& U, const Tensor& V, const std::vector<int64_t>& dims_u,
                   const std::vector<int64_t>& dims_v, size_t d) {
  const int64_t B = U.size(0);
  const int64_t pre = B * prod(dims_u, 0, d), post = prod(dims_u, d + 1);
  const int64_t a = dims_u[d], b = dims_v[d];
  if (post == 1) return at::mm(U.reshape({pre, a}).t(), V.reshape({pre, b}));
  if (pre == 1) return at::mm(U.reshape({a, post}), V.reshape({b, post}).t());
  Tensor Up = U.reshape({pre, a, post}).permute({1, 0, 2}).reshape({a, pre * post});
  Tensor Vp = V.reshape({pre, b, post}).permute({1, 0, 2}).reshape({b, pre * post});
  return at::mm(Up, Vp.t());
}

// ------------------------------------------------------------------ eigendecompositions
struct Eig {
  std::vector<Tensor> lam, Q;  // (n_d,), (n_d, n_d): views into `packed` when unpacked
  Tensor packed;               // [lam_0, Q_0.flatten(), lam_1, Q_1.flatten(), ...]
  std::vector<int64_t> dims;
};

// eigh of every symmetrised factor (kron_eig of kron_runner.h: on CPU the distinct factors
// concurrently, single-threaded LAPACK each); a factor passed twice (the same tensor) is
// decomposed once. The checks (NaN / inf factors named) are here.
Eig eig_factors(const std::vector<Tensor>& fs) {
  Eig E;
  const size_t D = fs.size();
  std::vector<int64_t> src(D, -1);
  std::vector<size_t> uniq;
  for (size_t d = 0; d < D; ++d) {
    E.dims.push_back(fs[d].size(0));
    for (size_t e = 0; e < d; ++e)
      if (fs[e].is_same(fs[d]) ||
          (fs[e].data_ptr() == fs[d].data_ptr() && fs[e].sizes() == fs[d].sizes() &&
           fs[e].strides() == fs[d].strides() && fs[e].storage_offset() == fs[d].storage_offset())) {
        src[d] = int64_t(e);
        break;
      }
    if (src[d] < 0) uniq.push_back(d);
  }
  {
    // A NaN / inf factor would reach LAPACK's "failed to converge" (or cuSOLVER's NaNs): one
    // reduction over every factor first (a single host sync), the offending one named on failure.
    std::vector<Tensor> ok;
    for (size_t d : uniq) ok.push_back(at::isfinite(fs[d]).all());
    if (!ok.empty() && !at::stack(ok).all().item<bool>())
      for (size_t d : uniq)
        check_finite(fs[d], fname("factors", int64_t(d)).c_str(),
                     " (a covariance factor with NaN or inf has no "
                     "eigendecomposition)");
  }
  int64_t P = 0;
  for (const auto& f : fs) P += f.size(0) + f.size(0) * f.size(0);
  E.packed = at::empty({P}, fs[0].options());
  dispatch_float(fs[0], [&]<typename T>() {
    std::vector<KronMat<T>> km;
    for (const auto& f : fs) km.push_back(kmat<T>(f, false));
    TorchKronExec<T> ex(fs[0]);
    kron_eig<T>(ex, km, src, E.packed.mutable_data_ptr<T>());
  });
  int64_t off = 0;
  for (size_t d = 0; d < D; ++d) {
    const int64_t n = E.dims[d];
    E.lam.push_back(E.packed.narrow(0, off, n));
    E.Q.push_back(E.packed.narrow(0, off + n, n * n).view({n, n}));
    off += n + n * n;
  }
  return E;
}

// The packed eigendecompositions of kron_gp_mll (argument `eig` of the backward / posterior ops):
// dtype and device of factors[0], shape (sum_d n_d + n_d^2,). Checked before any slicing.
void check_eig(const Tensor& eig, const std::vector<Tensor>& fs) {
  check_like(eig, fs[0], "eig");
  int64_t P = 0;
  for (const auto& f : fs) P += f.size(0) + f.size(0) * f.size(0);
  KF_CHECK_ARG(
      eig.dim() == 1 && eig.size(0) == P, "eig", "expected shape (", P,
      ",) (the packed eigendecompositions kron_gp_mll returns for factors of these shapes: sum_d n_d + n_d^2), "
      "got shape ",
      shape_str(eig));
}

Eig unpack_eig(const Tensor& packed, const std::vector<Tensor>& fs) {
  check_eig(packed, fs);
  Eig E;
  E.packed = packed.contiguous();
  int64_t off = 0;
  for (const auto& f : fs) {
    const int64_t n = f.size(0);
    E.dims.push_back(n);
    E.lam.push_back(E.packed.narrow(0, off, n));
    E.Q.push_back(E.packed.narrow(0, off + n, n * n).view({n, n}));
    off += n + n * n;
  }
  KF_CHECK_ARG(off == E.packed.numel(), "eig", "expected ", off, " packed values for factors of these shapes, got ",
               E.packed.numel());
  return E;
}

// ------------------------------------------------------------------ kernel launches
Grid make_grid(const std::vector<int64_t>& dims) {
  Grid g;
  g.D = int32_t(dims.size());
  g.N = 1;
  for (size_t d = 0; d < dims.size(); ++d) {
    g.dims[d] = dims[d];
    g.N *= dims[d];
  }
  return g;
}

template <typename T>
void run_scale(ScaleParams<T>& p, bool cuda) {
#ifdef KF_DEVICE
  if (cuda) {
    launch_kron_scale<T>(p, device_stream());
    return;
  }
#endif
  (void)cuda;
  kron_scale_cpu<T>(p);
}
template <typename T>
void run_trace(TraceParams<T>& p, bool cuda) {
#ifdef KF_DEVICE
  if (cuda) {
    launch_kron_trace<T>(p, device_stream());
    return;
  }
#endif
  (void)cuda;
  kron_trace_cpu<T>(p);
}

template <typename F>
void dispatch(const Tensor& t, F&& f) {
  dispatch_float(t, f);
}

// out = in * w(lam) over the grid (in undefined: w(lam) as a (1, N) tensor); optional reductions.
template <typename T>
Tensor scale(const Eig& E, T noise, Weight w, int32_t axis, const Tensor& in, const Tensor& opts_like,
             Tensor* quad = nullptr, Tensor* logdet = nullptr) {
  ScaleParams<T> p;
  p.g = make_grid(E.dims);
  for (size_t d = 0; d < E.dims.size(); ++d) p.lam[d] = E.lam[d].template const_data_ptr<T>();
  p.noise = noise;
  p.weight = w;
  p.axis = axis;
  p.B = in.defined() ? in.size(0) : 1;
  Tensor inc = in.defined() ? in.contiguous() : Tensor();
  Tensor out = at::empty({p.B, p.g.N}, opts_like.options());
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  p.in = inc.defined() ? inc.template const_data_ptr<T>() : nullptr;
  p.out = out.template mutable_data_ptr<T>();
  const auto dopt = opts_like.options().dtype(at::kDouble);
  if (quad) {
    *quad = at::zeros({p.B}, dopt);
    p.quad = quad->template mutable_data_ptr<double>();
  }
  if (logdet) {
    *logdet = at::zeros({}, dopt);
    p.logdet = logdet->template mutable_data_ptr<double>();
  }
  if (p.B > 0 && p.g.N > 0) run_scale<T>(p, on_device(out));
  return out;
}

// ------------------------------------------------------------------ size checks
// Elements of the largest of the input, the intermediates (axes 0..d transformed) and the output
// of one mode-product chain over B rows, saturating at kSizeOverflow.
int64_t chain_peak(int64_t B, const std::vector<int64_t>& in_dims, const std::vector<int64_t>& out_dims) {
  std::vector<int64_t> cur = in_dims;
  int64_t peak = sat_prod(cur);
  for (size_t d = 0; d < cur.size(); ++d) {
    cur[d] = out_dims[d];
    peak = std::max(peak, sat_prod(cur));
  }
  return sat_mul(B, peak);
}

std::string dims_str(const std::vector<int64_t>& v) { return c10::str(c10::IntArrayRef(v)); }

// ------------------------------------------------------------------ kron_matmul
Tensor kron_matmul(at::TensorList factors, const Tensor& x, bool transpose) {
  KF_OP_SCOPE("kron_matmul");
  auto fs = check_factors(factors, "factors", false, kMaxDims);
  std::vector<int64_t> in_dims;
  for (const auto& f : fs) in_dims.push_back(f.size(transpose ? 0 : 1));
  const int64_t M = prod(in_dims);
  check_like(x, fs[0], "x");
  KF_CHECK_ARG(x.dim() == 2 && x.size(1) == M, "x", "expected shape (B, ", M, ") with ", M, " = prod of the factors' ",
               (transpose ? "rows" : "columns"), ", got ", shape_str(x));
  std::vector<int64_t> out_dims;
  for (const auto& f : fs) out_dims.push_back(f.size(transpose ? 1 : 0));
  check_alloc(chain_peak(x.size(0), in_dims, out_dims), x, "factors",
              "for x of shape " + shape_str(x) + ", the result (grid " + dims_str(out_dims) +
                  ") or an intermediate of the mode products");
  Tensor out;
  dispatch(x, [&]<typename T>() { out = chain(fs, transpose, x, in_dims); });
  return out;
}

std::tuple<Tensor, std::vector<Tensor>> kron_matmul_bwd(const Tensor& grad, at::TensorList factors, const Tensor& x,
                                                        bool transpose, bool need_x, bool need_factors) {
  KF_OP_SCOPE("kron_matmul_bwd");
  auto fs = check_factors(factors, "factors", false, kMaxDims);
  std::vector<int64_t> in_dims, out_dims;
  for (const auto& f : fs) {
    in_dims.push_back(f.size(transpose ? 0 : 1));
    out_dims.push_back(f.size(transpose ? 1 : 0));
  }
  check_like(x, fs[0], "x");
  check_like(grad, fs[0], "grad");
  KF_CHECK_ARG(x.dim() == 2 && x.size(1) == prod(in_dims), "x", "expected shape (B, ", prod(in_dims), "), got ",
               shape_str(x));
  KF_CHECK_ARG(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) == prod(out_dims), "grad",
               "expected shape (", x.size(0), ", ", prod(out_dims), "), got ", shape_str(grad));
  {
    // dx: the chain out_dims -> in_dims; factor gradients: per axis d the chain in_dims -> out_dims
    // with axis d left as it is.
    int64_t peak = need_x ? chain_peak(x.size(0), out_dims, in_dims) : 0;
    if (need_factors)
      for (size_t d = 0; d < fs.size(); ++d) {
        std::vector<int64_t> pd = out_dims;
        pd[d] = in_dims[d];
        peak = std::max(peak, chain_peak(x.size(0), in_dims, pd));
      }
    check_alloc(peak, x, "factors", "for x of shape " + shape_str(x) + ", an intermediate of the backward");
  }
  Tensor dx = at::empty({0}, x.options());
  std::vector<Tensor> dfs;
  const Tensor g = grad.contiguous();
  dispatch(x, [&]<typename T>() {
    if (need_x) dx = chain(fs, !transpose, g, out_dims);
    if (!need_factors) return;
    for (size_t d = 0; d < fs.size(); ++d) {
      std::vector<Tensor> mats = fs;
      mats[d] = Tensor();
      const Tensor P = chain(mats, transpose, x, in_dims);  // every axis but d transformed
      std::vector<int64_t> pd = out_dims;
      pd[d] = in_dims[d];
      Tensor G = unfold_gram(g, P, out_dims, pd, d);  // (out_d, in_d): gradient of the applied matrix
      dfs.push_back(transpose ? G.t().contiguous() : G);
    }
  });
  return {dx, dfs};
}

// ------------------------------------------------------------------ kron_gp_mll
struct MllInputs {
  std::vector<Tensor> fs;
  std::vector<int64_t> dims;
  int64_t N = 0;
};

MllInputs check_mll(at::TensorList factors, const Tensor& y, const Tensor& noise, const char* yname) {
  MllInputs in;
  in.fs = check_factors(factors, "factors", true, kMaxDims);
  for (const auto& f : in.fs) in.dims.push_back(f.size(0));
  in.N = prod(in.dims);
  check_like(y, in.fs[0], yname);
  KF_CHECK_ARG(y.dim() == 2 && y.size(1) == in.N, yname, "expected shape (B, ", in.N, ") with ", in.N,
               " = prod n_d of the factors, got ", shape_str(y));
  // y may be a stride-0 view far larger than its storage; the results are y's size
  check_alloc(y.numel(), y, yname, "the results for " + std::string(yname) + " of shape " + shape_str(y));
  check_noise(noise, in.fs[0]);
  return in;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> kron_gp_mll(at::TensorList factors, const Tensor& y, const Tensor& noise) {
  KF_OP_SCOPE("kron_gp_mll");
  MllInputs in = check_mll(factors, y, noise, "y");
  Tensor nll, alpha, packed, at_rot;
  dispatch(y, [&]<typename T>() {
    Eig E = eig_factors(in.fs);
    const T s2 = noise.item<T>();
    const Tensor yt = chain(E.Q, true, y, in.dims);
    Tensor quad, logdet;
    at_rot = scale<T>(E, s2, Weight::Inv, 0, yt, y, &quad, &logdet);
    alpha = chain(E.Q, false, at_rot, in.dims);
    const double c = 0.5 * double(in.N) * std::log(2.0 * M_PI);
    nll = (quad * 0.5 + logdet * 0.5 + c).to(y.scalar_type());
    packed = E.packed;
  });
  return {nll, alpha, packed, at_rot};
}

std::tuple<Tensor, Tensor, std::vector<Tensor>> kron_gp_mll_bwd(const std::optional<Tensor>& grad_nll,
                                                                const std::optional<Tensor>& grad_alpha,
                                                                at::TensorList factors, const Tensor& noise,
                                                                const Tensor& eig, const Tensor& alpha_rot, bool need_y,
                                                                bool need_noise, bool need_factors) {
  KF_OP_SCOPE("kron_gp_mll_bwd");
  MllInputs in = check_mll(factors, alpha_rot, noise, "alpha_rot");
  const Tensor& ref = in.fs[0];
  const int64_t B = alpha_rot.size(0);
  check_eig(eig, in.fs);
  if (grad_nll.has_value()) {
    check_like(*grad_nll, ref, "grad_nll");
    KF_CHECK_ARG(grad_nll->numel() == B, "grad_nll", "expected ", B, " values, got shape ", shape_str(*grad_nll));
  }
  if (grad_alpha.has_value()) {
    check_like(*grad_alpha, ref, "grad_alpha");
    KF_CHECK_ARG(grad_alpha->sizes() == alpha_rot.sizes(), "grad_alpha", "expected shape ", shape_str(alpha_rot),
                 ", got ", shape_str(*grad_alpha));
  }
  Tensor dy = at::empty({0}, ref.options()), dnoise = at::empty({0}, ref.options());
  std::vector<Tensor> dfs;
  dispatch(ref, [&]<typename T>() {
    Eig E = unpack_eig(eig, in.fs);
    const T s2 = noise.item<T>();
    const Tensor at_ = alpha_rot.contiguous();
    const bool has_g = grad_nll.has_value();
    const Tensor g = has_g ? grad_nll->reshape({B, 1}) : at::zeros({B, 1}, ref.options());
    Tensor wt;  // Q^T (A^{-1} grad_alpha): the rotated solve of the alpha gradient
    if (grad_alpha.has_value()) {
      const Tensor ga = chain(E.Q, true, *grad_alpha, in.dims);
      wt = scale<T>(E, s2, Weight::Inv, 0, ga, ref);
    }
    if (need_y) {
      Tensor dyt = g * at_;
      if (wt.defined()) dyt = dyt + wt;
      dy = chain(E.Q, false, dyt, in.dims);
    }
    const bool need_trace = has_g && (need_noise || need_factors);
    Tensor c, trace;
    if (need_trace) {
      const auto dopt = ref.options().dtype(at::kDouble);
      int64_t nc = 0;
      for (auto n : in.dims) nc += n;
      c = at::zeros({nc}, dopt);
      trace = at::zeros({}, dopt);
      TraceParams<T> p;
      p.g = make_grid(in.dims);
      for (size_t d = 0; d < in.dims.size(); ++d) p.lam[d] = E.lam[d].template const_data_ptr<T>();
      p.noise = s2;
      p.c = c.mutable_data_ptr<double>();
      p.trace = trace.mutable_data_ptr<double>();
      if (p.g.N > 0) run_trace<T>(p, on_device(ref));
    }
    const Tensor gsum = g.sum();
    if (need_noise) {
      Tensor dn = -0.5 * (g * at_ * at_).sum();
      if (need_trace) dn = dn + 0.5 * gsum * trace.to(ref.scalar_type());
      if (wt.defined()) dn = dn - (wt * at_).sum();
      dnoise = dn;
    }
    if (need_factors) {
      Tensor U = g * at_ * (-0.5);
      if (wt.defined()) U = U - wt;
      int64_t off = 0;
      for (size_t d = 0; d < in.fs.size(); ++d) {
        const Tensor V = scale<T>(E, s2, Weight::Others, int32_t(d), at_, ref);
        Tensor Md = unfold_gram(U, V, in.dims, in.dims, d);
        if (need_trace) Md = Md + at::diag(c.narrow(0, off, in.dims[d]).to(ref.scalar_type()) * (gsum * 0.5));
        off += in.dims[d];
        const Tensor G = at::mm(at::mm(E.Q[d], Md), E.Q[d].t());
        dfs.push_back((G + G.t()) * 0.5);
      }
    }
  });
  return {dy, dnoise, dfs};
}

// ------------------------------------------------------------------ kron_posterior_var
Tensor kron_posterior_var(at::TensorList factors, const Tensor& noise, at::TensorList cross_factors,
                          c10::string_view targets, const std::optional<Tensor>& prior_var,
                          const std::optional<Tensor>& eig) {
  KF_OP_SCOPE("kron_posterior_var");
  auto fs = check_factors(factors, "factors", true, kMaxDims);
  const Tensor& ref = fs[0];
  check_noise(noise, ref);
  std::vector<int64_t> dims;
  for (const auto& f : fs) dims.push_back(f.size(0));
  const int64_t N = prod(dims);
  const bool train = targets == "train", grid = targets == "grid", scattered = targets == "scattered";
  KF_CHECK_ARG(train || grid || scattered, "targets", "expected 'train', 'grid' or 'scattered', got '",
               std::string(targets), "'");
  std::vector<Tensor> cs;
  int64_t M = N;
  if (!train) {
    KF_CHECK_ARG(cross_factors.size() == fs.size(), "cross_factors", "expected ", fs.size(),
                 " matrices (one per axis), got ", cross_factors.size());
    for (size_t d = 0; d < fs.size(); ++d) {
      const Tensor& c = cross_factors[d];
      const std::string nm = fname("cross_factors", int64_t(d));
      check_like(c, ref, nm.c_str());
      KF_CHECK_ARG(c.dim() == 2 && c.size(1) == dims[d], nm, "expected shape (m, ", dims[d], "), got ", shape_str(c));
      if (scattered)
        KF_CHECK_ARG(c.size(0) == cross_factors[0].size(0), nm,
                     "scattered targets need the same number of rows M = ", cross_factors[0].size(0),
                     " in every cross factor, got ", shape_str(c));
      cs.push_back(c);
    }
    std::vector<int64_t> mdims;
    for (const auto& c : cs) mdims.push_back(c.size(0));
    M = grid ? sat_prod(mdims) : cs[0].size(0);
    if (grid) {
      check_alloc(chain_peak(1, dims, mdims), ref, "cross_factors",
                  "the grid of targets " + dims_str(mdims) + " (or an intermediate of its mode products)");
    } else {
      int64_t nsum = 0;
      for (auto n : dims) nsum += n;
      check_alloc(sat_mul(M, nsum), ref, "cross_factors",
                  "for " + std::to_string(M) + " scattered targets, the rotated cross factors (M, n_d) of every axis");
    }
    KF_CHECK_ARG(prior_var.has_value(), "prior_var", "required with cross_factors");
  }
  if (eig.has_value()) check_eig(*eig, fs);
  if (prior_var.has_value()) {
    check_like(*prior_var, ref, "prior_var");
    KF_CHECK_ARG(prior_var->dim() == 1 && prior_var->size(0) == M, "prior_var", "expected shape (", M, ",), got ",
                 shape_str(*prior_var));
  }
  Tensor var;
  if (N == 0) {
    // No training points (an axis of size 0): the posterior is the prior. Returned here, before the
    // scattered path's R = N / n_last (a division by zero when the last axis is the empty one) and
    // the CPU contraction's per-axis divisions.
    return prior_var.has_value() ? prior_var->clone() : at::zeros({M}, ref.options());
  }
  dispatch(ref, [&]<typename T>() {
    Eig E = eig.has_value() ? unpack_eig(*eig, fs) : eig_factors(fs);
    PosteriorVarProblem<T> q;
    q.dims = dims;
    for (size_t d = 0; d < dims.size(); ++d) {
      q.lam.push_back(E.lam[d].template const_data_ptr<T>());
      q.Q.push_back(E.Q[d].template const_data_ptr<T>());
    }
    q.noise = noise.item<T>();
    q.targets = train ? Targets::Train : grid ? Targets::Grid : Targets::Scattered;
    for (const auto& c : cs) q.cross.push_back(kmat<T>(c, false));
    q.M = M;
    const Tensor prior = prior_var.has_value() ? prior_var->contiguous() : Tensor();
    q.prior = prior.defined() ? prior.template const_data_ptr<T>() : nullptr;
    var = at::empty({M}, ref.options());
    q.var = var.template mutable_data_ptr<T>();
    TorchKronExec<T> ex(ref);
    kron_posterior_var_run<T>(ex, q);
  });
  return var;
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("kron_matmul", &kron_matmul);
  m.impl("kron_matmul_bwd", &kron_matmul_bwd);
  m.impl("kron_gp_mll", &kron_gp_mll);
  m.impl("kron_gp_mll_bwd", &kron_gp_mll_bwd);
  m.impl("kron_posterior_var", &kron_posterior_var);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("kron_matmul", &kron_matmul);
  m.impl("kron_matmul_bwd", &kron_matmul_bwd);
  m.impl("kron_gp_mll", &kron_gp_mll);
  m.impl("kron_gp_mll_bwd", &kron_gp_mll_bwd);
  m.impl("kron_posterior_var", &kron_posterior_var);
}
#endif

}  // namespace kernelfuse::kron
