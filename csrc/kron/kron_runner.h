// The Kronecker GP algebra's launch sequences over raw pointers, torch-free: the mode-product
// chain (kron_chain) and its backward (kron_matmul_bwd_run), the per-axis eigendecompositions
// (kron_eig), the MLL and its backward (kron_gp_mll_run, kron_gp_mll_bwd_run) and the posterior
// variance (kron_posterior_var_run). The stages between the GEMMs are the kernels of kron.h.
//
// Mode products in the natural layout: axis d of the grid (pre, a_d, post) is transformed in place
// of the layout, axis by axis into two ping-pong buffers (the output one of them where it holds
// every intermediate that lands there, as for square factors). On CPU thin GEMMs (the common case: n_d,
// a_d up to a few hundred, or a middle axis) run on the torch-free kron_mode_product_cpu; a large
// square GEMM on the first or last axis (a, n >= 192) goes to the GEMM interface (MKL through
// ATen), faster there (docs/kron.md). On the device every axis is one (batched) GEMM.
// The cyclic variant (KERNELFUSE_KRON_GEMM=aten, CPU): the grid (a_d, ..., a_{D-1}, n_0, ...,
// n_{d-1}) viewed as (a_d, R); Z (R, n_d) = X^T M_d^T moves the transformed axis to the end; after
// D GEMMs every axis is transformed and back in place.
//
// What the runner needs from its surroundings (KronExec, filled in by the glue): the GEMM
// (third_party/gemm_interface.h), a symmetric eigensolver, device memory and a few elementwise
// helpers, the task loop, and the stages (KronStages below: CPU kernels or device launchers).
// Scratch memory comes from the exec and is released at the end of the step that used it.
#pragma once
#include <cstdint>
#include <functional>
#include <type_traits>
#include <vector>

#include "gemm_interface.h"  // third_party/
#include "kron.h"

namespace kernelfuse::kron {

// An applied matrix (n x a) of a mode product; the default (no data, 0 x 0): the identity on that
// axis (an empty matrix may have no data either, but keeps its shape).
template <typename T>
struct KronMat {
  const T* p = nullptr;
  int64_t rows = 0, cols = 0, rs = 0, cs = 1;
  bool identity() const { return p == nullptr && rows == 0 && cols == 0; }
  MatView<T> view() const { return {p, rs, cs, 0}; }
  KronMat t() const { return {p, cols, rows, cs, rs}; }
};

template <typename T>
struct KronExec : StridedGemm<T> {
  bool device = false;
  // `count` values of the data's device, valid until release(m) for a mark() m taken before, or
  // until the exec is destroyed; not from inside tasks. alloc_acc: `count` zeroed doubles.
  virtual T* alloc(int64_t count) = 0;
  virtual double* alloc_acc(int64_t count) = 0;
  virtual size_t mark() const = 0;
  virtual void release(size_t m) = 0;
  // dst (batch, rows, cols) packed = src viewed as (batch, rows, cols) (MatView strides bs, rs, cs).
  virtual void copy(int64_t batch, int64_t rows, int64_t cols, MatView<T> src, T* dst) = 0;
  virtual void zero(T* x, int64_t count) = 0;
  virtual void square(T* x, int64_t count) = 0;                         // x = x * x
  virtual void sub(const T* a, const T* b, T* out, int64_t count) = 0;  // out = a - b
  // Eigendecomposition of (A + A^T) / 2 (n x n): ascending lam (n,), eigenvectors as the columns
  // of Q (n x n, row-major). Called from tasks (CPU: several at once).
  virtual void eigh(int64_t n, MatView<T> A, T* lam, T* Q) = 0;
  // task(t) for every t < ntasks: CPU in parallel (single-threaded LAPACK inside), device in order.
  virtual void run_tasks(int64_t ntasks, const std::function<void(int64_t)>& task) = 0;
  // The stages of kron.h.
  virtual void scale(const ScaleParams<T>& p) = 0;
  virtual void trace(const TraceParams<T>& p) = 0;
  virtual void rowwise(const RowwiseParams<T>& p) = 0;
  virtual void mll_rows(const MllRowsParams<T>& p) = 0;
  virtual void mll_scalars(const MllScalarsParams<T>& p) = 0;
  virtual void symmetrize(const SymmetrizeParams<T>& p) = 0;
};

// Scratch of an exec for one scope: what was allocated inside is released at its end.
template <typename T>
struct KronScratch {
  KronExec<T>& ex;
  size_t m;
  explicit KronScratch(KronExec<T>& e) : ex(e), m(e.mark()) {}
  ~KronScratch() { ex.release(m); }
  KronScratch(const KronScratch&) = delete;
  KronScratch& operator=(const KronScratch&) = delete;
};

#if defined(KERNELFUSE_WITH_CUDA) || defined(KERNELFUSE_CUDA_SIM)
#define KF_KRON_LAUNCHER(f) &f<T>
#else
#define KF_KRON_LAUNCHER(f) nullptr
#endif

// The stages of kron.h: the CPU kernels, or the device launchers on `stream`.
template <typename T>
struct KronStages : KronExec<T> {
  void* stream = nullptr;
  void scale(const ScaleParams<T>& p) override { run(p, &kron_scale_cpu<T>, KF_KRON_LAUNCHER(launch_kron_scale)); }
  void trace(const TraceParams<T>& p) override { run(p, &kron_trace_cpu<T>, KF_KRON_LAUNCHER(launch_kron_trace)); }
  void rowwise(const RowwiseParams<T>& p) override {
    run(p, &kron_rowwise_cpu<T>, KF_KRON_LAUNCHER(launch_kron_rowwise));
  }
  void mll_rows(const MllRowsParams<T>& p) override {
    run(p, &kron_mll_rows_cpu<T>, KF_KRON_LAUNCHER(launch_kron_mll_rows));
  }
  void mll_scalars(const MllScalarsParams<T>& p) override {
    run(p, &kron_mll_scalars_cpu<T>, KF_KRON_LAUNCHER(launch_kron_mll_scalars));
  }
  void symmetrize(const SymmetrizeParams<T>& p) override {
    run(p, &kron_symmetrize_cpu<T>, KF_KRON_LAUNCHER(launch_kron_symmetrize));
  }

 private:
  template <typename P>
  void run(const P& p, void (*cpu)(const P&), std::type_identity_t<void (*)(const P&, void*)> launch) {
    if (this->device && launch) return launch(p, stream);
    cpu(p);
  }
};
#undef KF_KRON_LAUNCHER

// The per-axis eigendecompositions (kron_eig's packed layout) and the noise variance s2:
// A = (x)_d Q_d diag(lam_d) Q_d^T + s2 I.
template <typename T>
struct KronSpectrum {
  std::vector<int64_t> dims;     // n_d
  std::vector<const T*> lam, Q;  // per axis: (n_d,), (n_d, n_d) row-major
  T noise = T(0);
  KronSpectrum() = default;
  KronSpectrum(const T* packed, const std::vector<int64_t>& n, T s2) : dims(n), noise(s2) {
    for (int64_t nd : n) {
      lam.push_back(packed);
      Q.push_back(packed + nd);
      packed += nd + nd * nd;
    }
  }
};

int64_t kron_prod(const std::vector<int64_t>& v, size_t b = 0, size_t e = SIZE_MAX);
int64_t kron_sum(const std::vector<int64_t>& v);

// out (B, prod out_dims) = (x)_d mats[d] applied to X (B, prod in_dims), out_dims[d] = mats[d].rows
// (in_dims[d] for an identity). Sizes may be 0 (an empty input: out = 0). cyclic: the cyclic
// ATen-GEMM variant (CPU).
template <typename T>
void kron_chain(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims, const std::vector<KronMat<T>>& mats,
                const T* X, T* out, bool cyclic);

// Eigendecompositions of the symmetrised factors (n_d x n_d) into packed =
// [lam_0, Q_0 (row-major), lam_1, Q_1, ...]; src[d] >= 0: factor d is factor src[d] (decomposed
// once, copied).
template <typename T>
void kron_eig(KronExec<T>& ex, const std::vector<KronMat<T>>& factors, const std::vector<int64_t>& src, T* packed);

// The gradients of out = (x)_d mats[d] X given grad (B, prod out_dims): dX (B, prod in_dims) (null:
// not needed) and, for dM non-empty, per axis the gradient of the applied matrix mats[d] (out_d x
// in_d, row-major; transposed: its transpose, in_d x out_d).
template <typename T>
void kron_matmul_bwd_run(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims,
                         const std::vector<KronMat<T>>& mats, const T* X, const T* grad, T* dX,
                         const std::vector<T*>& dM, bool transposed, bool cyclic);

// kron_gp_mll: for y (B, N), A = the spectrum's matrix,
//   alpha_rot = diag(1 / (lam + s2)) Q^T y,  alpha = Q alpha_rot = A^{-1} y,
//   nll[b] = (y_b^T A^{-1} y_b + log det A + N log(2 pi)) / 2   (Q = (x)_d Q_d).
template <typename T>
struct MllProblem {
  KronSpectrum<T> spec;
  int64_t B = 0;
  const T* y = nullptr;  // (B, N)
  T* nll = nullptr;      // (B,)
  T* alpha = nullptr;    // (B, N)
  T* alpha_rot = nullptr;
  bool cyclic = false;  // the cyclic ATen-GEMM mode products (CPU)
};

template <typename T>
void kron_gp_mll_run(KronExec<T>& ex, const MllProblem<T>& q);

// Its backward: the gradients of sum_b grad_nll[b] nll[b] + <grad_alpha, alpha> (either null: no
// such term) w.r.t. y, the noise and the factors. Outputs null / empty: not needed.
template <typename T>
struct MllBwdProblem {
  KronSpectrum<T> spec;
  int64_t B = 0;
  const T* alpha_rot = nullptr;   // (B, N), from the forward
  const T* grad_nll = nullptr;    // (B,) or null
  const T* grad_alpha = nullptr;  // (B, N) or null
  T* dy = nullptr;                // (B, N) or null
  T* dnoise = nullptr;            // () or null
  std::vector<T*> dfactors;       // (n_d, n_d) each, or empty
  bool cyclic = false;
};

template <typename T>
void kron_gp_mll_bwd_run(KronExec<T>& ex, const MllBwdProblem<T>& q);

enum class Targets : int32_t { Train = 0, Grid = 1, Scattered = 2 };

template <typename T>
struct PosteriorVarProblem {
  KronSpectrum<T> spec;  // prod n_d > 0
  Targets targets = Targets::Train;
  std::vector<KronMat<T>> cross;  // grid / scattered: (m_d, n_d) per axis
  int64_t M = 0;                  // targets: N, prod m_d or the scattered count
  const T* prior = nullptr;       // (M,) or null (train only)
  T* var = nullptr;               // (M,) out
};

template <typename T>
void kron_posterior_var_run(KronExec<T>& ex, const PosteriorVarProblem<T>& q);

}  // namespace kernelfuse::kron
