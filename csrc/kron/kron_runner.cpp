// The Kronecker GP launch sequences (see kron_runner.h). Torch-free.
#include "kron_runner.h"

#include <algorithm>

namespace kernelfuse::kron {

int64_t kron_prod(const std::vector<int64_t>& v, size_t b, size_t e) {
  int64_t p = 1;
  for (size_t i = b; i < std::min(e, v.size()); ++i) p *= v[i];
  return p;
}

namespace {

template <typename T>
std::vector<int64_t> out_dims_of(const std::vector<int64_t>& in_dims, const std::vector<KronMat<T>>& mats) {
  std::vector<int64_t> out = in_dims;
  for (size_t i = 0; i < in_dims.size(); ++i)
    if (mats[i].p) out[i] = mats[i].rows;
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
  T* bufs[2] = {D > 1 ? ex.alloc(maxi) : nullptr, D > 1 ? ex.alloc(maxi) : nullptr};
  for (int64_t b = 0; b < B; ++b) {
    const T* cur = X + b * Nin;
    int64_t size = Nin;
    for (size_t d = 0; d < D; ++d) {
      const int64_t a = in_dims[d], n = out_dims[d], R = size / a;
      T* dst = d + 1 == D ? out + b * Nout : bufs[d % 2];
      const MatView<T> xt{cur, 1, R, 0};  // (R x a): the transpose of cur viewed as (a x R)
      if (mats[d].p)
        ex.gemm(1, R, n, a, xt, mats[d].t().view(), dst);
      else
        ex.copy2d(R, a, xt, dst);
      cur = dst;
      size = R * n;
    }
  }
}

template <typename T>
void chain_natural(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims,
                   const std::vector<int64_t>& out_dims, const std::vector<KronMat<T>>& mats, const T* X, T* out) {
  const size_t D = in_dims.size();
  int last = -1;
  for (size_t d = 0; d < D; ++d)
    if (mats[d].p) last = int(d);
  if (last < 0) {
    ex.copy2d(B, kron_prod(in_dims), {X, kron_prod(in_dims), 1, 0}, out);
    return;
  }
  const int64_t maxi = max_intermediate(in_dims, out_dims, size_t(last));
  T* w[2] = {last > 0 ? ex.alloc(B * maxi) : nullptr, last > 0 ? ex.alloc(B * maxi) : nullptr};
  std::vector<int64_t> dims = in_dims;
  const T* cur = X;
  int buf = 0;
  for (int d = 0; d <= last; ++d) {
    const KronMat<T>& M = mats[d];  // applied (n x a)
    if (!M.p) continue;
    const int64_t pre = B * kron_prod(dims, 0, d), post = kron_prod(dims, d + 1), a = dims[d], n = out_dims[d];
    T* dst = d == last ? out : w[buf];
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
    dims[d] = n;
    cur = dst;
    if (d != last) buf ^= 1;
  }
}

}  // namespace

template <typename T>
void kron_chain(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims, const std::vector<KronMat<T>>& mats,
                const T* X, T* out, bool cyclic) {
  const std::vector<int64_t> out_dims = out_dims_of<T>(in_dims, mats);
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
      ex.copy2d(1, len, {packed + off[size_t(src[d])], len, 1, 0}, packed + off[d]);
    }
}

template <typename T>
void kron_posterior_var_run(KronExec<T>& ex, const PosteriorVarProblem<T>& q) {
  const size_t D = q.dims.size();
  const int64_t N = kron_prod(q.dims);
  auto weights = [&](Weight wt) {  // w(lam) over the grid, (1, N)
    ScaleParams<T> p;
    p.g.D = int32_t(D);
    p.g.N = N;
    for (size_t d = 0; d < D; ++d) {
      p.g.dims[d] = q.dims[d];
      p.lam[d] = q.lam[d];
    }
    p.noise = q.noise;
    p.weight = wt;
    p.B = 1;
    p.out = ex.alloc(N);
    ex.scale(p);
    return p.out;
  };
  std::vector<KronMat<T>> W(D);  // squared (rotated) factors, as applied matrices
  if (q.targets == Targets::Train) {
    for (size_t d = 0; d < D; ++d) {
      const int64_t n = q.dims[d];
      T* sq = ex.alloc(n * n);
      ex.copy2d(n, n, {q.Q[d], n, 1, 0}, sq);
      ex.square(sq, n * n);
      W[d] = {sq, n, n, n, 1};
    }
    const T* w = weights(q.prior ? Weight::SqOverDenom : Weight::PostVar);
    if (!q.prior) {
      kron_chain<T>(ex, 1, q.dims, W, w, q.var, false);
    } else {
      T* t = ex.alloc(N);
      kron_chain<T>(ex, 1, q.dims, W, w, t, false);
      ex.sub(q.prior, t, q.var, N);
    }
    return;
  }
  for (size_t d = 0; d < D; ++d) {  // W_d = (C_d Q_d)^2 elementwise, (m_d, n_d)
    const int64_t m = q.cross[d].rows, n = q.dims[d];
    T* cq = ex.alloc(m * n);
    if (m > 0) {
      ex.gemm(1, m, n, n, q.cross[d].view(), {q.Q[d], n, 1, 0}, cq);
      ex.square(cq, m * n);
    }
    W[d] = {cq, m, n, n, 1};
  }
  const T* w = weights(Weight::Inv);
  T* red = ex.alloc(std::max<int64_t>(q.M, 1));
  if (q.targets == Targets::Grid) {
    if (q.M > 0) kron_chain<T>(ex, 1, q.dims, W, w, red, false);
  } else {
    // Scattered: contract the last axis for a chunk of targets by one GEMM, S = W_L[chunk] w^T
    // (mc, R), then the remaining axes per target (kron_rowwise).
    const int64_t nl = q.dims.back(), R = N / nl;
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(1, R));
    T* S = ex.alloc(std::min(chunk, std::max<int64_t>(q.M, 1)) * R);
    std::vector<int64_t> rest(q.dims.begin(), q.dims.end() - 1);
    for (int64_t i0 = 0; i0 < q.M; i0 += chunk) {
      const int64_t mc = std::min(chunk, q.M - i0);
      ex.gemm(1, mc, R, nl, {W.back().p + i0 * nl, nl, 1, 0}, {w, 1, nl, 0}, S);  // wm (R, nl) transposed
      RowwiseParams<T> p;
      p.g.D = int32_t(rest.size());
      p.g.N = rest.empty() ? 1 : kron_prod(rest);
      for (size_t d = 0; d < rest.size(); ++d) {
        p.g.dims[d] = rest[d];
        p.W[d] = W[d].p + i0 * q.dims[d];
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
template void kron_posterior_var_run<float>(KronExec<float>&, const PosteriorVarProblem<float>&);
template void kron_posterior_var_run<double>(KronExec<double>&, const PosteriorVarProblem<double>&);

}  // namespace kernelfuse::kron
