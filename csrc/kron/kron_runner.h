// The Kronecker GP algebra's launch sequences over raw pointers, torch-free: the mode-product
// chain (kron_chain), the per-axis eigendecompositions (kron_eig) and the posterior variance
// (kron_posterior_var_run). The stages between the GEMMs are the kernels of kron.h.
//
// Mode products in the natural layout: axis d of the grid (pre, a_d, post) is transformed in place
// of the layout, axis by axis into two ping-pong buffers. On CPU thin GEMMs (the common case: n_d,
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
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "gemm_interface.h"  // third_party/
#include "kron.h"

namespace kernelfuse::kron {

// An applied matrix (n x a) of a mode product; p == nullptr: the identity on that axis.
template <typename T>
struct KronMat {
  const T* p = nullptr;
  int64_t rows = 0, cols = 0, rs = 0, cs = 1;
  MatView<T> view() const { return {p, rs, cs, 0}; }
  KronMat t() const { return {p, cols, rows, cs, rs}; }
};

template <typename T>
struct KronExec : StridedGemm<T> {
  bool device = false;
  // `count` values of the data's device, valid until the exec is destroyed; not from inside tasks.
  virtual T* alloc(int64_t count) = 0;
  virtual void copy2d(int64_t rows, int64_t cols, MatView<T> src, T* dst) = 0;  // dst (rows, cols) packed
  virtual void zero(T* x, int64_t count) = 0;
  virtual void square(T* x, int64_t count) = 0;                         // x = x * x
  virtual void sub(const T* a, const T* b, T* out, int64_t count) = 0;  // out = a - b
  // Eigendecomposition of (A + A^T) / 2 (n x n): ascending lam (n,), eigenvectors as the columns
  // of Q (n x n, row-major). Called from tasks (CPU: several at once).
  virtual void eigh(int64_t n, MatView<T> A, T* lam, T* Q) = 0;
  // task(t) for every t < ntasks: CPU in parallel (single-threaded LAPACK inside), device in order.
  virtual void run_tasks(int64_t ntasks, const std::function<void(int64_t)>& task) = 0;
  virtual void scale(const ScaleParams<T>& p) = 0;
  virtual void rowwise(const RowwiseParams<T>& p) = 0;
};

// The stages of kron.h: the CPU kernels, or the device launchers on `stream`.
template <typename T>
struct KronStages : KronExec<T> {
  void* stream = nullptr;
  void scale(const ScaleParams<T>& p) override {
#if defined(KERNELFUSE_WITH_CUDA) || defined(KERNELFUSE_CUDA_SIM)
    if (this->device) return launch_kron_scale<T>(p, stream);
#endif
    kron_scale_cpu<T>(p);
  }
  void rowwise(const RowwiseParams<T>& p) override {
#if defined(KERNELFUSE_WITH_CUDA) || defined(KERNELFUSE_CUDA_SIM)
    if (this->device) return launch_kron_rowwise<T>(p, stream);
#endif
    kron_rowwise_cpu<T>(p);
  }
};

int64_t kron_prod(const std::vector<int64_t>& v, size_t b = 0, size_t e = SIZE_MAX);

// out (B, prod out_dims) = (x)_d mats[d] applied to X (B, prod in_dims), out_dims[d] = mats[d].rows
// (in_dims[d] for an identity). Every size > 0. cyclic: the cyclic ATen-GEMM variant (CPU).
template <typename T>
void kron_chain(KronExec<T>& ex, int64_t B, const std::vector<int64_t>& in_dims, const std::vector<KronMat<T>>& mats,
                const T* X, T* out, bool cyclic);

// Eigendecompositions of the symmetrised factors (n_d x n_d) into packed =
// [lam_0, Q_0 (row-major), lam_1, Q_1, ...]; src[d] >= 0: factor d is factor src[d] (decomposed
// once, copied).
template <typename T>
void kron_eig(KronExec<T>& ex, const std::vector<KronMat<T>>& factors, const std::vector<int64_t>& src, T* packed);

enum class Targets : int32_t { Train = 0, Grid = 1, Scattered = 2 };

template <typename T>
struct PosteriorVarProblem {
  std::vector<int64_t> dims;     // n_d, prod > 0
  std::vector<const T*> lam, Q;  // per axis: (n_d,), (n_d, n_d) row-major
  T noise = T(0);
  Targets targets = Targets::Train;
  std::vector<KronMat<T>> cross;  // grid / scattered: (m_d, n_d) per axis
  int64_t M = 0;                  // targets: N, prod m_d or the scattered count
  const T* prior = nullptr;       // (M,) or null (train only)
  T* var = nullptr;               // (M,) out
};

template <typename T>
void kron_posterior_var_run(KronExec<T>& ex, const PosteriorVarProblem<T>& q);

}  // namespace kernelfuse::kron
