// Kronecker GP algebra: the torch-free elementwise / contraction stages that run between the
// mode-product GEMMs (the launch sequences are kron_runner.h; the GEMMs and the small per-axis
// eigendecompositions come through its interfaces: MKL / LAPACK on CPU, cuBLAS / cuSOLVER on CUDA).
//
// A grid has D <= kMaxDims axes of n_d points, N = prod n_d, flattened row-major (axis 0 slowest,
// the order of torch.kron). The spectrum of K = (x) K_d is lam_j = prod_d lam_d[j_d] with
// j = (j_0, ..., j_{D-1}); every kernel recomputes lam_j on the fly from the per-axis eigenvalues
// (walking the multi-index incrementally), so no length-N eigenvalue vector is ever stored.
#pragma once
#include <cstdint>

namespace kernelfuse::kron {

constexpr int kMaxDims = 8;

struct Grid {
  int32_t D = 0;
  int64_t dims[kMaxDims] = {};
  int64_t N = 0;
};

// The per-element factor of the stage "Scale", as a function of lam_j (s2 = noise variance).
enum class Weight : int32_t {
  Inv = 0,          // 1 / (lam + s2)                     solve
  PostVar = 1,      // lam s2 / (lam + s2)                posterior variance on the training grid
  SqOverDenom = 2,  // lam^2 / (lam + s2)                 prior - this, when prior_var is given
  Others = 3,       // prod_{e != axis} lam_e[j_e]       (no s2): MLL gradient, factor `axis`
};

// out[b, j] = in[b, j] * w(lam_j)  (in == nullptr: out[j] = w(lam_j), B = 1).
// Optional reductions (accumulated in double): quad[b] = sum_j in[b, j] * out[b, j] and
// logdet = sum_j log(lam_j + s2), computed once. No clamping: lam_j + s2 <= 0 gives NaN / -inf.
template <typename T>
struct ScaleParams {
  Grid g;
  const T* lam[kMaxDims] = {};  // per-axis eigenvalues (n_d,)
  T noise = T(0);
  Weight weight = Weight::Inv;
  int32_t axis = 0;  // Weight::Others
  int64_t B = 1;
  const T* in = nullptr;     // (B, N) or null
  T* out = nullptr;          // (B, N)
  double* quad = nullptr;    // (B,) or null
  double* logdet = nullptr;  // () or null
};

// The trace part of the MLL gradient: for every axis d and k < n_d
//   c_d[k] = sum_{j: j_d = k} prod_{e != d} lam_e[j_e] / (lam_j + s2),
// written to c (concatenated: c_0 then c_1 ...; sum n_d doubles), and trace = sum_j 1/(lam_j + s2).
template <typename T>
struct TraceParams {
  Grid g;
  const T* lam[kMaxDims] = {};
  T noise = T(0);
  double* c = nullptr;
  double* trace = nullptr;
};

// Scattered targets: out[i] = sum_{j < R} S[i, j] prod_{d < D} W_d[i, j_d] over a grid of the D
// "rest" axes (R = prod rest dims), one row S[i, :] per target (S: (M, R), contiguous rows);
// W_d (M, n_d) row-major. The last grid axis has already been contracted by a GEMM (kron_runner).
// D may be 0 (out = S[:, 0]).
template <typename T>
struct RowwiseParams {
  Grid g;                     // the rest axes
  const T* S = nullptr;       // (M, R)
  const T* W[kMaxDims] = {};  // (M, n_d) each
  int64_t M = 0;
  T* out = nullptr;  // (M,)
};

// The MLL gradient's elementwise pass over (B, N) (g_b = g[b], 0 for g null; wt null: 0):
//   dyt[b, j] = g_b at[b, j] + wt[b, j]          the rotated dy, before its mode products
//   U[b, j]   = -g_b at[b, j] / 2 - wt[b, j]     the left operand of the factor gradients
//   dot       = sum_{b, j} U[b, j] at[b, j]      the data part of the noise gradient (double)
// Every output optional (null). On the device dot is accumulated: zeroed by the caller.
template <typename T>
struct MllRowsParams {
  int64_t B = 0, N = 0;
  const T* at = nullptr;  // (B, N)
  const T* wt = nullptr;  // (B, N) or null
  const T* g = nullptr;   // (B,) or null
  T* dyt = nullptr;       // (B, N) or null
  T* U = nullptr;         // (B, N) or null
  double* dot = nullptr;  // () or null
};

// The MLL's scalar outputs from the double accumulators (one small pass; one block on the device):
//   nll[b] = T(quad[b] / 2 + logdet / 2 + c0), b < B                     (nll non-null)
//   with gsum = sum_b g[b] (g null: 0):
//   dnoise = T(dot + gsum trace / 2)   (trace null: T(dot))           (dnoise non-null)
//   M[d][k * n_d + k] += T(gsum c_d[k] / 2) for k < n_d = grid.dims[d]  (c and M[d] non-null;
//                                                                       c as TraceParams::c)
template <typename T>
struct MllScalarsParams {
  int64_t B = 0;
  const double* quad = nullptr;    // (B,)
  const double* logdet = nullptr;  // ()
  double c0 = 0;
  T* nll = nullptr;  // (B,) or null
  const T* g = nullptr;
  const double* dot = nullptr;    // ()
  const double* trace = nullptr;  // () or null
  T* dnoise = nullptr;            // () or null
  Grid grid;
  const double* c = nullptr;  // (sum_d n_d,) or null
  T* M[kMaxDims] = {};        // (n_d, n_d) each, or null
};

// out (n x n) = (G + G^T) / 2, both row-major, out != G.
template <typename T>
struct SymmetrizeParams {
  int64_t n = 0;
  const T* G = nullptr;
  T* out = nullptr;
};

// One mode product (CPU): out (pre, n, post) = M (n x a) applied to axis 1 of in (pre, a, post),
// element (i, k) of M at M[i * rs + k * cs] (a transpose is a swap of strides). Per `pre` it is
// the GEMM M @ X_p (a x post), or for post == 1 the single GEMM X (pre x a) @ M^T; both run on
// one register-blocked, vectorised GEMM micro-kernel with packed panels; OpenMP over
// (pre, column-block) tiles or row tiles.
template <typename T>
void kron_mode_product_cpu(int64_t pre, int64_t a, int64_t post, int64_t n, const T* M, int64_t rs, int64_t cs,
                           const T* in, T* out);

// CPU (OpenMP); T in {float, double}.
template <typename T>
void kron_scale_cpu(const ScaleParams<T>& p);
template <typename T>
void kron_trace_cpu(const TraceParams<T>& p);
template <typename T>
void kron_rowwise_cpu(const RowwiseParams<T>& p);
template <typename T>
void kron_mll_rows_cpu(const MllRowsParams<T>& p);
template <typename T>
void kron_mll_scalars_cpu(const MllScalarsParams<T>& p);
template <typename T>
void kron_symmetrize_cpu(const SymmetrizeParams<T>& p);

// CUDA launchers (kron_cuda.cu); T in {float, double}; stream is a cudaStream_t. One or two
// launches per call, no host synchronisation. Reduction outputs (quad, logdet, c, trace) must be
// zeroed by the caller (they are accumulated with atomics).
template <typename T>
void launch_kron_scale(const ScaleParams<T>& p, void* stream);
template <typename T>
void launch_kron_trace(const TraceParams<T>& p, void* stream);
template <typename T>
void launch_kron_rowwise(const RowwiseParams<T>& p, void* stream);
template <typename T>
void launch_kron_mll_rows(const MllRowsParams<T>& p, void* stream);
template <typename T>
void launch_kron_mll_scalars(const MllScalarsParams<T>& p, void* stream);
template <typename T>
void launch_kron_symmetrize(const SymmetrizeParams<T>& p, void* stream);

}  // namespace kernelfuse::kron
