// Torch glue for the Kronecker GP algebra: argument checks, dtype dispatch, allocation and the
// TORCH_LIBRARY_IMPL registrations. The algebra (the mode-product chain and its backward, the
// eigendecompositions' schedule, the MLL and its backward, the posterior variance) is the
// torch-free runner of kron_runner.h, reached through the ATen-backed interfaces of
// kron_exec_torch.h; the stages between the GEMMs are kron.h.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

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

int64_t prod(const std::vector<int64_t>& v) { return kron_prod(v); }

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

// An output of `like`'s dtype and device, NaN-filled under KERNELFUSE_POISON (every element must
// be written).
Tensor new_out(c10::IntArrayRef shape, const Tensor& like) {
  Tensor out = at::empty(shape, like.options());
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

template <typename T>
T* ptr(Tensor& t) {
  return t.defined() ? t.template mutable_data_ptr<T>() : nullptr;
}
template <typename T>
const T* cptr(const Tensor& t) {
  return t.defined() ? t.template const_data_ptr<T>() : nullptr;
}

template <typename T>
std::vector<KronMat<T>> kmats(const std::vector<Tensor>& mats, bool transpose) {
  std::vector<KronMat<T>> km;
  for (const auto& m : mats) km.push_back(kmat<T>(m, transpose));
  return km;
}

// One mode-product chain over a batch (kron_runner.h): X (B, prod in_dims) -> (B, prod out_dims).
// mats[d] undefined: identity on axis d. transpose: apply mats[d]^T instead of mats[d].
Tensor chain(const std::vector<Tensor>& mats, bool transpose, const Tensor& X, const std::vector<int64_t>& in_dims) {
  std::vector<int64_t> out_dims = in_dims;
  for (size_t d = 0; d < in_dims.size(); ++d)
    if (mats[d].defined()) out_dims[d] = mats[d].size(transpose ? 1 : 0);
  const Tensor Xc = X.contiguous();
  Tensor out = new_out({X.size(0), prod(out_dims)}, X);
  dispatch_float(X, [&]<typename T>() {
    TorchKronExec<T> ex(X);
    kron_chain<T>(ex, X.size(0), in_dims, kmats<T>(mats, transpose), cptr<T>(Xc), ptr<T>(out), use_aten_gemm());
  });
  return out;
}

// ------------------------------------------------------------------ eigendecompositions
// The packed eigendecompositions [lam_0, Q_0 (row-major), lam_1, Q_1, ...] of every symmetrised
// factor (kron_eig of kron_runner.h: on CPU the distinct factors concurrently, single-threaded
// LAPACK each); a factor passed twice (the same tensor) is decomposed once. The checks (NaN / inf
// factors named) are here.
Tensor eig_factors(const std::vector<Tensor>& fs) {
  const size_t D = fs.size();
  std::vector<int64_t> src(D, -1);
  std::vector<size_t> uniq;
  for (size_t d = 0; d < D; ++d) {
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
  Tensor packed = at::empty({P}, fs[0].options());
  dispatch_float(fs[0], [&]<typename T>() {
    TorchKronExec<T> ex(fs[0]);
    kron_eig<T>(ex, kmats<T>(fs, false), src, ptr<T>(packed));
  });
  return packed;
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
  return chain(fs, transpose, x, in_dims);
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
  Tensor dx = need_x ? new_out({x.size(0), prod(in_dims)}, x) : at::empty({0}, x.options());
  std::vector<Tensor> dfs;
  if (need_factors)
    for (const auto& f : fs) dfs.push_back(new_out(f.sizes(), f));
  const Tensor g = grad.contiguous(), xc = x.contiguous();
  dispatch_float(x, [&]<typename T>() {
    std::vector<T*> dm;
    for (auto& t : dfs) dm.push_back(ptr<T>(t));
    TorchKronExec<T> ex(x);
    kron_matmul_bwd_run<T>(ex, x.size(0), in_dims, kmats<T>(fs, transpose), cptr<T>(xc), cptr<T>(g),
                           need_x ? ptr<T>(dx) : nullptr, dm, transpose, use_aten_gemm());
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
  const int64_t B = y.size(0);
  const Tensor packed = eig_factors(in.fs), yc = y.contiguous();
  Tensor nll = new_out({B}, y), alpha = new_out({B, in.N}, y), at_rot = new_out({B, in.N}, y);
  dispatch_float(y, [&]<typename T>() {
    MllProblem<T> q{{cptr<T>(packed), in.dims, noise.item<T>()}, B, cptr<T>(yc)};
    q.nll = ptr<T>(nll);
    q.alpha = ptr<T>(alpha);
    q.alpha_rot = ptr<T>(at_rot);
    q.cyclic = use_aten_gemm();
    TorchKronExec<T> ex(y);
    kron_gp_mll_run<T>(ex, q);
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
  const Tensor packed = eig.contiguous(), at_ = alpha_rot.contiguous();
  const Tensor gn = grad_nll.has_value() ? grad_nll->reshape({B}).contiguous() : Tensor();
  const Tensor ga = grad_alpha.has_value() ? grad_alpha->contiguous() : Tensor();
  Tensor dy = need_y ? new_out({B, in.N}, ref) : at::empty({0}, ref.options());
  Tensor dnoise = need_noise ? new_out({}, ref) : at::empty({0}, ref.options());
  std::vector<Tensor> dfs;
  if (need_factors)
    for (const auto& f : in.fs) dfs.push_back(new_out(f.sizes(), ref));
  dispatch_float(ref, [&]<typename T>() {
    MllBwdProblem<T> q{{cptr<T>(packed), in.dims, noise.item<T>()}, B, cptr<T>(at_), cptr<T>(gn), cptr<T>(ga)};
    q.dy = need_y ? ptr<T>(dy) : nullptr;
    q.dnoise = need_noise ? ptr<T>(dnoise) : nullptr;
    for (auto& t : dfs) q.dfactors.push_back(ptr<T>(t));
    q.cyclic = use_aten_gemm();
    TorchKronExec<T> ex(ref);
    kron_gp_mll_bwd_run<T>(ex, q);
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
  const Tensor packed = eig.has_value() ? eig->contiguous() : eig_factors(fs);
  dispatch_float(ref, [&]<typename T>() {
    PosteriorVarProblem<T> q;
    q.spec = KronSpectrum<T>(cptr<T>(packed), dims, noise.item<T>());
    q.targets = train ? Targets::Train : grid ? Targets::Grid : Targets::Scattered;
    for (const auto& c : cs) q.cross.push_back(kmat<T>(c, false));
    q.M = M;
    const Tensor prior = prior_var.has_value() ? prior_var->contiguous() : Tensor();
    q.prior = cptr<T>(prior);
    var = new_out({M}, ref);
    q.var = ptr<T>(var);
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
