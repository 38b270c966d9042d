// The Kronecker GP launch sequences (see kron_runner.h). Torch-free.
#include "kron_runner.h"

#include <algorithm>
#include <cmath>

namespace kernelfuse::kron {

int64_t kron_prod(const std::vector<int64_t>& v, size_t b, size_t e) {
  int64_t p = 1;
  for (size_t i = b; i < std::min(e, v.size()); ++i) p *= v[i];
  return p;
}

int64_t kron_sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

namespace {

template <typename T>
std::vector<int64_t> out_dims_of(const std::vector<int64_t>& in_dims, const std::vector<KronMat<T>>& mats) {
  std::vector<int64_t> out = in_dims;
  for (size_t i = 0; i < in_dims.size(); ++i)
    if (!mats[i].identity()) out[i] = mats[i].rows;
  return out;
}

// Largest intermediate (axes before `upto` transformed) of one row.
int64_t max_intermediate(const std::vector<int64_t>& in_dims, const std::vector<int64_t>& out_dims, size_t upto) {
  int64_t maxi = 0;
  std::vector<int64_t> cd = in_dims;
  for (size_t d = 0; d < upto; ++d) {
    cd[d] = out_dims[d];
    maxi = std::max(maxi, kron_prod(cd));
  }
  return maxi;
}

template <typename T>
void chain_cyclic(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims, const std::vector<int64_t>& out_dims,
                  const std::vector<KronMat<T>>& mats, const T* X, T* out) {
  const size_t D = in_dims.size();
  const int64_t Nin = kron_prod(in_dims), Nout = kron_prod(out_dims);
  const int64_t maxi = D > 1 ? max_intermediate(in_dims, out_dims, D - 1) : 0;
  KronScratch<T> scratch(ex);
  T* bufs[2] = {D > 1 ? ex.alloc(maxi) : nullptr, D > 1 ? ex.alloc(maxi) : nullptr};
  for (int64_t b = 0; b < B; ++b) {
    const T* cur = X + b * Nin;
    int64_t size = Nin;
    for (size_t d = 0; d < D; ++d) {
      const int64_t a = in_dims[d], n = out_dims[d], R = size / a;
      T* dst = d + 1 == D ? out + b * Nout : bufs[d % 2];
      const MatView<T> xt{cur, 1, R, 0};  // (R x a): the transpose of cur viewed as (a x R)
      if (!mats[d].identity())
        ex.gemm(1, R, n, a, xt, mats[d].t().view(), dst);
      else
        ex.copy(1, R, a, xt, dst);
      cur = dst;
      size = R * n;
    }
  }
}

// Where each transformed axis of a natural-layout chain writes: the last into `out`; going
// backwards the others alternate between one scratch buffer and `out` when `out` (B * Nout
// elements) holds every intermediate that lands there (always for square factors: one scratch
// buffer instead of two, so half the fresh memory per call), else between two scratch buffers.
template <typename T>
std::vector<T*> chain_destinations(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims,
                                   const std::vector<int64_t>& out_dims, const std::vector<int>& steps, T* out) {
  const size_t S = steps.size();
  std::vector<int64_t> size(S), dims = in_dims;
  for (size_t i = 0; i < S; ++i) {
    dims[size_t(steps[i])] = out_dims[size_t(steps[i])];
    size[i] = kron_prod(dims);
  }
  const int64_t Nout = kron_prod(out_dims);
  bool fits = true;
  int64_t w_fits = 0, w_any = 0;
  for (size_t i = 0; i + 1 < S; ++i) {
    w_any = std::max(w_any, size[i]);
    if ((S - 1 - i) % 2 == 0)
      fits = fits && size[i] <= Nout;
    else
      w_fits = std::max(w_fits, size[i]);
  }
  std::vector<T*> dst(S, out);
  if (S == 1) return dst;
  T* w0 = ex.alloc(B * (fits ? w_fits : w_any));
  T* w1 = fits || S < 3 ? nullptr : ex.alloc(B * w_any);
  for (size_t i = 0; i + 1 < S; ++i) dst[i] = fits ? ((S - 1 - i) % 2 == 0 ? out : w0) : (i % 2 ? w1 : w0);
  return dst;
}

template <typename T>
void chain_natural(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims,
                   const std::vector<int64_t>& out_dims, const std::vector<KronMat<T>>& mats, const T* X, T* out) {
  std::vector<int> steps;
  for (size_t d = 0; d < in_dims.size(); ++d)
    if (!mats[d].identity()) steps.push_back(int(d));
  if (steps.empty()) return ex.copy(1, B, kron_prod(in_dims), {X, kron_prod(in_dims), 1, 0}, out);
  KronScratch<T> scratch(ex);
  const std::vector<T*> dsts = chain_destinations<T>(ex, B, in_dims, out_dims, steps, out);
  std::vector<int64_t> dims = in_dims;
  const T* cur = X;
  for (size_t i = 0; i < steps.size(); ++i) {
    const int d = steps[i];
    const KronMat<T>& M = mats[size_t(d)];  // applied (n x a)
    const int64_t pre = B * kron_prod(dims, 0, size_t(d)), post = kron_prod(dims, size_t(d) + 1);
    const int64_t a = dims[size_t(d)], n = out_dims[size_t(d)];
    T* dst = dsts[i];
    if (post == 1) {  // dst (pre x n) = cur (pre x a) M^T
      if (ex.device || (a >= 192 && n >= 192))
        ex.gemm(1, pre, n, a, {cur, a, 1, 0}, M.t().view(), dst);
      else
        kron_mode_product_cpu<T>(pre, a, post, n, M.p, M.rs, M.cs, cur, dst);
    } else if (ex.device || (pre == 1 && a >= 192 && n >= 192)) {  // dst_i (n x post) = M cur_i (a x post)
      ex.gemm(pre, n, post, a, M.view(), {cur, post, 1, a * post}, dst);
    } else {
      kron_mode_product_cpu<T>(pre, a, post, n, M.p, M.rs, M.cs, cur, dst);
    }
    dims[size_t(d)] = n;
    cur = dst;
  }
}

Grid make_grid(const std::vector<int64_t>& dims) {
  Grid g;
  g.D = int32_t(dims.size());
  g.N = kron_prod(dims);
  for (size_t d = 0; d < dims.size(); ++d) g.dims[d] = dims[d];
  return g;
}

// Q_d (transpose: Q_d^T) of every axis, as the applied matrices of a mode-product chain.
template <typename T>
std::vector<KronMat<T>> rotations(const KronSpectrum<T>& sp, bool transpose) {
  std::vector<KronMat<T>> m;
  for (size_t d = 0; d < sp.dims.size(); ++d) {
    const int64_t n = sp.dims[d];
    const KronMat<T> k{sp.Q[d], n, n, n, 1};
    m.push_back(transpose ? k.t() : k);
  }
  return m;
}

// out (B, N) = in * w(lam) over the spectrum's grid (in null: w(lam), B = 1).
template <typename T>
ScaleParams<T> scale_params(const KronSpectrum<T>& sp, Weight w, int32_t axis, int64_t B, const T* in, T* out) {
  ScaleParams<T> p;
  p.g = make_grid(sp.dims);
  for (size_t d = 0; d < sp.dims.size(); ++d) p.lam[d] = sp.lam[d];
  p.noise = sp.noise;
  p.weight = w;
  p.axis = axis;
  p.B = B;
  p.in = in;
  p.out = out;
  return p;
}

// M (a x b) = sum_{p, q} U[p, k, q] V[p, l, q] for U (pre, a, post), V (pre, b, post): one GEMM,
// on transposed views when pre or post is 1, else on (a, pre, post) / (b, pre, post) copies.
template <typename T>
void gram(KronExec<T>& ex, int64_t pre, int64_t a, int64_t b, int64_t post, const T* U, const T* V, T* M) {
  const int64_t K = pre * post;
  if (a == 0 || b == 0) return;
  if (K == 0) return ex.zero(M, a * b);
  if (post == 1) return ex.gemm(1, a, b, pre, {U, 1, a, 0}, {V, b, 1, 0}, M);
  if (pre == 1) return ex.gemm(1, a, b, post, {U, post, 1, 0}, {V, 1, post, 0}, M);
  KronScratch<T> scratch(ex);
  T* Up = ex.alloc(a * K);
  T* Vp = ex.alloc(b * K);
  ex.copy(a, pre, post, {U, a * post, 1, post}, Up);
  ex.copy(b, pre, post, {V, b * post, 1, post}, Vp);
  ex.gemm(1, a, b, K, {Up, K, 1, 0}, {Vp, 1, K, 0}, M);
}

}  // namespace

template <typename T>
void kron_chain(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims, const std::vector<KronMat<T>>& mats,
                const T* X, T* out, bool cyclic) {
  const std::vector<int64_t> out_dims = out_dims_of<T>(in_dims, mats);
  const int64_t Nout = kron_prod(out_dims);
  if (B == 0 || Nout == 0) return;
  if (kron_prod(in_dims) == 0) return ex.zero(out, B * Nout);
  if (cyclic && !ex.device)
    chain_cyclic<T>(ex, B, in_dims, out_dims, mats, X, out);
  else
    chain_natural<T>(ex, B, in_dims, out_dims, mats, X, out);
}

// The distinct factors are decomposed concurrently on CPU, one per task (LAPACK then runs
// single-threaded inside the parallel region, also for a single factor): these matrices are small,
// and MKL's own threading of syevd was measured to burn up to ~1 s of CPU spinning on a loaded
// 2-core machine for a 128 x 128 problem that takes 5 ms on one thread (~15 s instead of ~0.1 s
// for a 512 x 512 one).
template <typename T>
void kron_eig(KronExec<T>& ex, const std::vector<KronMat<T>>& factors, const std::vector<int64_t>& src, T* packed) {
  const size_t D = factors.size();
  std::vector<int64_t> off(D);
  std::vector<size_t> uniq;
  int64_t o = 0;
  for (size_t d = 0; d < D; ++d) {
    off[d] = o;
    o += factors[d].rows + factors[d].rows * factors[d].rows;
    if (src[d] < 0) uniq.push_back(d);
  }
  auto decompose = [&](size_t d) {
    const int64_t n = factors[d].rows;
    ex.eigh(n, factors[d].view(), packed + off[d], packed + off[d] + n);
  };
  // At least two tasks on CPU, so that even a single factor is decomposed inside a parallel region
  // (single-threaded LAPACK); the spare task does nothing.
  const int64_t tasks = ex.device ? int64_t(uniq.size()) : std::max<int64_t>(2, int64_t(uniq.size()));
  ex.run_tasks(tasks, [&](int64_t i) {
    if (i < int64_t(uniq.size())) decompose(uniq[size_t(i)]);
  });
  for (size_t d = 0; d < D; ++d)
    if (src[d] >= 0) {
      const int64_t len = factors[d].rows + factors[d].rows * factors[d].rows;
      ex.copy(1, 1, len, {packed + off[size_t(src[d])], len, 1, 0}, packed + off[d]);
    }
}

template <typename T>
void kron_matmul_bwd_run(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims,
                         const std::vector<KronMat<T>>& mats, const T* X, const T* grad, T* dX,
                         const std::vector<T*>& dM, bool transposed, bool cyclic) {
  const std::vector<int64_t> out_dims = out_dims_of<T>(in_dims, mats);
  if (dX) {
    std::vector<KronMat<T>> mt;
    for (const auto& m : mats) mt.push_back(m.identity() ? m : m.t());
    kron_chain<T>(ex, B, out_dims, mt, grad, dX, cyclic);
  }
  if (dM.empty()) return;
  // Per axis d: P = the chain with axis d left as it is, then the gram of grad and P on axis d.
  int64_t maxp = 0;
  for (size_t d = 0; d < in_dims.size(); ++d) {
    std::vector<int64_t> pd = out_dims;
    pd[d] = in_dims[d];
    maxp = std::max(maxp, kron_prod(pd));
  }
  KronScratch<T> scratch(ex);
  T* P = ex.alloc(B * maxp);
  for (size_t d = 0; d < in_dims.size(); ++d) {
    std::vector<KronMat<T>> md = mats;
    md[d] = {};
    kron_chain<T>(ex, B, in_dims, md, X, P, cyclic);
    const int64_t pre = B * kron_prod(out_dims, 0, d), post = kron_prod(out_dims, d + 1);
    if (transposed)
      gram<T>(ex, pre, in_dims[d], out_dims[d], post, P, grad, dM[d]);
    else
      gram<T>(ex, pre, out_dims[d], in_dims[d], post, grad, P, dM[d]);
  }
}

template <typename T>
void kron_gp_mll_run(KronExec<T>& ex, const MllProblem<T>& q) {
  const KronSpectrum<T>& sp = q.spec;
  const int64_t N = kron_prod(sp.dims), B = q.B;
  if (B == 0) return;
  KronScratch<T> scratch(ex);
  double* acc = ex.alloc_acc(B + 1);  // quad (B), logdet
  if (N > 0) {
    T* yt = ex.alloc(B * N);
    kron_chain<T>(ex, B, sp.dims, rotations(sp, true), q.y, yt, q.cyclic);
    ScaleParams<T> p = scale_params(sp, Weight::Inv, 0, B, yt, q.alpha_rot);
    p.quad = acc;
    p.logdet = acc + B;
    ex.scale(p);
    kron_chain<T>(ex, B, sp.dims, rotations(sp, false), q.alpha_rot, q.alpha, q.cyclic);
  }
  MllScalarsParams<T> s;
  s.B = B;
  s.quad = acc;
  s.logdet = acc + B;
  s.c0 = 0.5 * double(N) * std::log(2.0 * M_PI);
  s.nll = q.nll;
  ex.mll_scalars(s);
}

namespace {

// The factor gradients before the rotation back, M_d (n_d x n_d): the gram on axis d of U and
// V_d = U's partner at_rot * prod_{e != d} lam_e (Weight::Others).
template <typename T>
void mll_factor_grams(KronExec<T>& ex, const MllBwdProblem<T>& q, const T* U, T* const* M) {
  const KronSpectrum<T>& sp = q.spec;
  const int64_t BN = q.B * kron_prod(sp.dims);
  T* V = ex.alloc(BN);
  for (size_t d = 0; d < sp.dims.size(); ++d) {
    const int64_t n = sp.dims[d];
    if (BN == 0) {
      ex.zero(M[d], n * n);
      continue;
    }
    ex.scale(scale_params(sp, Weight::Others, int32_t(d), q.B, q.alpha_rot, V));
    const int64_t pre = q.B * kron_prod(sp.dims, 0, d), post = kron_prod(sp.dims, d + 1);
    gram<T>(ex, pre, n, n, post, U, V, M[d]);
  }
}

// dfactors[d] = sym(Q_d M_d Q_d^T).
template <typename T>
void mll_rotate_back(KronExec<T>& ex, const KronSpectrum<T>& sp, T* const* M, const std::vector<T*>& out) {
  for (size_t d = 0; d < sp.dims.size(); ++d) {
    const int64_t n = sp.dims[d];
    if (n == 0) continue;
    KronScratch<T> scratch(ex);
    T* QM = ex.alloc(n * n);
    T* G = ex.alloc(n * n);
    ex.gemm(1, n, n, n, {sp.Q[d], n, 1, 0}, {M[d], n, 1, 0}, QM);
    ex.gemm(1, n, n, n, {QM, n, 1, 0}, {sp.Q[d], 1, n, 0}, G);
    ex.symmetrize({n, G, out[d]});
  }
}

}  // namespace

// With g = grad_nll, wt = diag(1 / (lam + s2)) Q^T grad_alpha and at = alpha_rot:
//   dy = Q (g at + wt);  dnoise = sum(U at) + sum(g) tr(A^{-1}) / 2,  U = -g at / 2 - wt;
//   dK_d = sym(Q_d (gram_d(U, at prod_{e != d} lam_e) + diag(sum(g) c_d / 2)) Q_d^T)
// (c_d and the trace: kron.h's TraceParams). Scratch: at most five (B, N) buffers at once (wt,
// U, V_d and gram's two copies), as many as the ATen version this replaced.
template <typename T>
void kron_gp_mll_bwd_run(KronExec<T>& ex, const MllBwdProblem<T>& q) {
  const KronSpectrum<T>& sp = q.spec;
  const int64_t N = kron_prod(sp.dims), BN = q.B * N;
  const bool need_f = !q.dfactors.empty(), need_trace = q.grad_nll && (q.dnoise || need_f);
  KronScratch<T> scratch(ex);
  double* acc = ex.alloc_acc(2 + kron_sum(sp.dims));  // dot, trace, c
  T* wt = q.grad_alpha && BN > 0 ? ex.alloc(BN) : nullptr;
  if (wt) {
    KronScratch<T> step(ex);
    T* ga = ex.alloc(BN);
    kron_chain<T>(ex, q.B, sp.dims, rotations(sp, true), q.grad_alpha, ga, q.cyclic);
    ex.scale(scale_params<T>(sp, Weight::Inv, 0, q.B, ga, wt));
  }
  T* U = need_f && BN > 0 ? ex.alloc(BN) : nullptr;
  if (BN > 0 && (q.dy || U || q.dnoise)) {
    KronScratch<T> step(ex);
    MllRowsParams<T> r{q.B, N, q.alpha_rot, wt, q.grad_nll};
    r.dyt = q.dy ? ex.alloc(BN) : nullptr;
    r.U = U;
    r.dot = q.dnoise ? acc : nullptr;
    ex.mll_rows(r);
    if (r.dyt) kron_chain<T>(ex, q.B, sp.dims, rotations(sp, false), r.dyt, q.dy, q.cyclic);
  }
  MllScalarsParams<T> s;
  s.B = q.B;
  s.g = q.grad_nll;
  s.dot = acc;
  s.dnoise = q.dnoise;
  s.grid = make_grid(sp.dims);
  if (need_trace) {
    s.trace = acc + 1;
    s.c = acc + 2;
    TraceParams<T> t{s.grid, {}, sp.noise, acc + 2, acc + 1};
    for (size_t d = 0; d < sp.dims.size(); ++d) t.lam[d] = sp.lam[d];
    if (N > 0) ex.trace(t);
  }
  if (need_f) {
    for (size_t d = 0; d < sp.dims.size(); ++d) s.M[d] = ex.alloc(sp.dims[d] * sp.dims[d]);
    KronScratch<T> step(ex);
    mll_factor_grams<T>(ex, q, U, s.M);
  }
  if (q.dnoise || s.c) ex.mll_scalars(s);
  if (need_f) mll_rotate_back<T>(ex, sp, s.M, q.dfactors);
}

template <typename T>
void kron_posterior_var_run(KronExec<T>& ex, const PosteriorVarProblem<T>& q) {
  const KronSpectrum<T>& sp = q.spec;
  const size_t D = sp.dims.size();
  const int64_t N = kron_prod(sp.dims);
  KronScratch<T> scratch(ex);
  auto weights = [&](Weight wt) {  // w(lam) over the grid, (1, N)
    T* w = ex.alloc(N);
    ex.scale(scale_params<T>(sp, wt, 0, 1, nullptr, w));
    return w;
  };
  std::vector<KronMat<T>> W(D);  // squared (rotated) factors, as applied matrices
  if (q.targets == Targets::Train) {
    for (size_t d = 0; d < D; ++d) {
      const int64_t n = sp.dims[d];
      T* sq = ex.alloc(n * n);
      ex.copy(1, n, n, {sp.Q[d], n, 1, 0}, sq);
      ex.square(sq, n * n);
      W[d] = {sq, n, n, n, 1};
    }
    const T* w = weights(q.prior ? Weight::SqOverDenom : Weight::PostVar);
    if (!q.prior) {
      kron_chain<T>(ex, 1, sp.dims, W, w, q.var, false);
    } else {
      T* t = ex.alloc(N);
      kron_chain<T>(ex, 1, sp.dims, W, w, t, false);
      ex.sub(q.prior, t, q.var, N);
    }
    return;
  }
  for (size_t d = 0; d < D; ++d) {  // W_d = (C_d Q_d)^2 elementwise, (m_d, n_d)
    const int64_t m = q.cross[d].rows, n = sp.dims[d];
    T* cq = ex.alloc(m * n);
    if (m > 0) {
      ex.gemm(1, m, n, n, q.cross[d].view(), {sp.Q[d], n, 1, 0}, cq);
      ex.square(cq, m * n);
    }
    W[d] = {cq, m, n, n, 1};
  }
  const T* w = weights(Weight::Inv);
  T* red = ex.alloc(std::max<int64_t>(q.M, 1));
  if (q.targets == Targets::Grid) {
    if (q.M > 0) kron_chain<T>(ex, 1, sp.dims, W, w, red, false);
  } else {
    // Scattered: contract the last axis for a chunk of targets by one GEMM, S = W_L[chunk] w^T
    // (mc, R), then the remaining axes per target (kron_rowwise).
    const int64_t nl = sp.dims.back(), R = N / nl;
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(1, R));
    T* S = ex.alloc(std::min(chunk, std::max<int64_t>(q.M, 1)) * R);
    std::vector<int64_t> rest(sp.dims.begin(), sp.dims.end() - 1);
    for (int64_t i0 = 0; i0 < q.M; i0 += chunk) {
      const int64_t mc = std::min(chunk, q.M - i0);
      ex.gemm(1, mc, R, nl, {W.back().p + i0 * nl, nl, 1, 0}, {w, 1, nl, 0}, S);  // wm (R, nl) transposed
      RowwiseParams<T> p;
      p.g.D = int32_t(rest.size());
      p.g.N = rest.empty() ? 1 : kron_prod(rest);
      for (size_t d = 0; d < rest.size(); ++d) {
        p.g.dims[d] = rest[d];
        p.W[d] = W[d].p + i0 * sp.dims[d];
      }
      p.S = S;
      p.M = mc;
      p.out = red + i0;
      ex.rowwise(p);
    }
  }
  if (q.M > 0) ex.sub(q.prior, red, q.var, q.M);
}

template void kron_chain<float>(KronExec<float>&, int64_t, const std::vector<int64_t>&,
                                const std::vector<KronMat<float>>&, const float*, float*, bool);
template void kron_chain<double>(KronExec<double>&, int64_t, const std::vector<int64_t>&,
                                 const std::vector<KronMat<double>>&, const double*, double*, bool);
template void kron_eig<float>(KronExec<float>&, const std::vector<KronMat<float>>&, const std::vector<int64_t>&,
                              float*);
template void kron_eig<double>(KronExec<double>&, const std::vector<KronMat<double>>&, const std::vector<int64_t>&,
                               double*);
template void kron_matmul_bwd_run<float>(KronExec<float>&, int64_t, const std::vector<int64_t>&,
                                         const std::vector<KronMat<float>>&, const float*, const float*, float*,
                                         const std::vector<float*>&, bool, bool);
template void kron_matmul_bwd_run<double>(KronExec<double>&, int64_t, const std::vector<int64_t>&,
                                          const std::vector<KronMat<double>>&, const double*, const double*, double*,
                                          const std::vector<double*>&, bool, bool);
template void kron_gp_mll_run<float>(KronExec<float>&, const MllProblem<float>&);
template void kron_gp_mll_run<double>(KronExec<double>&, const MllProblem<double>&);
template void kron_gp_mll_bwd_run<float>(KronExec<float>&, const MllBwdProblem<float>&);
template void kron_gp_mll_bwd_run<double>(KronExec<double>&, const MllBwdProblem<double>&);
template void kron_posterior_var_run<float>(KronExec<float>&, const PosteriorVarProblem<float>&);
template void kron_posterior_var_run<double>(KronExec<double>&, const PosteriorVarProblem<double>&);

}  // namespace kernelfuse::kron
