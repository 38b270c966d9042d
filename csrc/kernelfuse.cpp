// THE one TORCH_LIBRARY(kernelfuse, m): every schema of the library, in one place.
// Kernels are registered per backend in csrc/<family>/<family>_torch.cpp; fake (meta) kernels
// and autograd in python/kernelfuse/ops/<family>.py.
#include <torch/library.h>

// The CUDA simulator's test library (csrc/sim/, docs/cuda.md) registers the same schemas as
// kernelfuse_sim::*, whose CPU kernels run the CUDA code paths under the simulator.
#if defined(KERNELFUSE_CUDA_SIM)
#define KF_LIBRARY_NAME kernelfuse_sim
#else
#define KF_LIBRARY_NAME kernelfuse
#endif
#define KF_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)

KF_TORCH_LIBRARY(KF_LIBRARY_NAME, m) {
  // ---- kernel density sums (csrc/kde) ----
  // x (m,d) | (B,m,d); y (n,d) | (B,n,d); weights (n,) | (n,c) | (B,n) | (B,n,c);
  // bandwidth () | (d,). Output x.shape[:-1] + weights.shape[y.dim()-1:].
  // metric: "euclidean" | "manhattan" | "chebyshev" | "minkowski" (order p >= 1) | "haversine" (d == 2,
  // (lat, lon) in radians, scalar bandwidth); the kernel sees r = dist(x, y) / h.
  m.def(
      "kernel_sum(Tensor x, Tensor y, Tensor? weights, Tensor bandwidth, str kernel, bool exclude_self, "
      "str metric=\"euclidean\", float p=2.0) -> Tensor");
  m.def(
      "kernel_logsumexp(Tensor x, Tensor y, Tensor? log_weights, Tensor bandwidth, str kernel, "
      "bool exclude_self, str metric=\"euclidean\", float p=2.0) -> Tensor");
  // (lse, lse2) with lse2 = log sum_i exp(2 (log w_i + log k)), in the same pass (effective sample size).
  m.def(
      "kernel_logsumexp_sq(Tensor x, Tensor y, Tensor? log_weights, Tensor bandwidth, str kernel, "
      "bool exclude_self, str metric=\"euclidean\", float p=2.0) -> (Tensor, Tensor)");
  // Backward twins: gradients for (x, y, weights, bandwidth); an output not asked for is an empty
  // tensor. need_bandwidth (scalar bandwidth only) computes dL/dh = -(2/h) sum grad * dk/ds * s in
  // the pass (what haversine needs; the coordinate metrics can use translation invariance instead).
  m.def(
      "kernel_sum_bwd(Tensor grad, Tensor x, Tensor y, Tensor? weights, Tensor bandwidth, str kernel, "
      "bool exclude_self, bool need_x, bool need_y, bool need_weights, str metric=\"euclidean\", float p=2.0, "
      "bool need_bandwidth=False) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "kernel_logsumexp_bwd(Tensor grad, Tensor out, Tensor x, Tensor y, Tensor? log_weights, "
      "Tensor bandwidth, str kernel, bool exclude_self, bool need_x, bool need_y, bool need_weights, "
      "str metric=\"euclidean\", float p=2.0, bool need_bandwidth=False) -> (Tensor, Tensor, Tensor, Tensor)");

  // ---- long convolutions: fused FFT convolution (csrc/longconv/fftconv_*) ----
  // y = postgate * (conv(u * pregate, k) + D * s), s = u (skip "input") | u * pregate (skip "gated",
  // H3 / Hyena). u (B,H,L); k (H,taps) | (1,H,taps) | (B,H,taps); D (H,); gates (B,H,L);
  // mode "causal" | "bidirectional" | "circular"; fft_size None = automatic.
  m.def(
      "fftconv(Tensor u, Tensor k, Tensor? D, Tensor? pregate, Tensor? postgate, str mode, SymInt? fft_size, "
      "str skip=\"input\") -> Tensor");
  // Backward twin: gradients for (u, k, D, pregate, postgate); an output not asked for is an empty tensor.
  m.def(
      "fftconv_bwd(Tensor grad, Tensor u, Tensor k, Tensor? D, Tensor? pregate, Tensor? postgate, str mode, "
      "SymInt? fft_size, bool need_u, bool need_k, bool need_D, bool need_pregate, bool need_postgate, "
      "str skip=\"input\") -> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // ---- S4D convolution kernel (csrc/longconv/ssm_*) ----
  // K (H, L) = 2 Re sum_n C Bbar Abar^l. log_dt (H,); A_real, A_imag (H, N); B (None: ones), C
  // complex as (re, im) pairs (H, N, 2); discretization "zoh" | "bilinear".
  m.def(
      "ssm_kernel(Tensor log_dt, Tensor A_real, Tensor A_imag, Tensor? B, Tensor C, int L, "
      "str discretization) -> Tensor");
  // Backward twin: gradients for (log_dt, A_real, A_imag, B, C); B's is empty when B is None.
  m.def(
      "ssm_kernel_bwd(Tensor grad, Tensor log_dt, Tensor A_real, Tensor A_imag, Tensor? B, Tensor C, "
      "str discretization) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // ---- butterfly and Monarch matrices (csrc/butterfly) ----
  // x (..., n), n a power of two; twiddle (nblocks, log2 n, n/2, 2, 2), x's dtype (float32/64,
  // complex64/128). Stage strides 1, 2, ..., n/2 (or reversed), alternating between blocks.
  m.def("butterfly_multiply(Tensor x, Tensor twiddle, bool increasing_stride) -> Tensor");
  // Backward twin: gradients for (x, twiddle); an output not asked for is an empty tensor.
  m.def(
      "butterfly_multiply_bwd(Tensor grad, Tensor x, Tensor twiddle, bool increasing_stride, bool need_x, "
      "bool need_twiddle) -> (Tensor, Tensor)");
  // x (..., k p); w1 (k, q, p); w2 (l, s, r) with l r = k q. Output (..., l s).
  m.def("monarch_multiply(Tensor x, Tensor w1, Tensor w2) -> Tensor");
  m.def(
      "monarch_multiply_bwd(Tensor grad, Tensor x, Tensor w1, Tensor w2, bool need_x, bool need_w1, "
      "bool need_w2) -> (Tensor, Tensor, Tensor)");
  // DFT of the last dim of a complex x via the Monarch (multi-level Cooley-Tukey) factorisation;
  // norm "backward" | "ortho" | "forward". The op is its own adjoint (backward: inverse flipped).
  m.def("monarch_fft(Tensor x, bool inverse, str norm) -> Tensor");
  // monarch_fft's DFT/twiddle cache (LRU, bounded by bytes): limit_bytes >= 0 sets the cap, clear
  // empties it; returns [bytes, entries, limit, hits, misses, evictions].
  m.def("monarch_fft_cache(int limit_bytes=-1, bool clear=False) -> int[]");

  // ---- kron: grid kernels (csrc/kron/grid_kernel_*) ----
  // K (n1, n2) = d^a/dx^a d^b/dx'^b sum_q k_q(x1[i] - x2[j]); kind "rbf" | "matern12" | "matern32" |
  // "matern52" | "sm" | "stm"; params (Q, 2) (log_variance, log_lengthscale) or (Q, 3) (log_weight,
  // freq, log_lengthscale) for sm / stm. toeplitz: -1 detect (CPU), 0 direct, 1 x1 == x2 evenly spaced.
  m.def("grid_kernel(Tensor x1, Tensor x2, str kind, Tensor params, int a, int b, int toeplitz) -> Tensor");
  // Backward twin: the gradient for params (Q, P).
  m.def(
      "grid_kernel_bwd(Tensor grad, Tensor x1, Tensor x2, str kind, Tensor params, int a, int b, "
      "int toeplitz) -> Tensor");

  // ---- Kronecker GP algebra (csrc/kron) ----
  // Grids flattened row-major; vectors are rows of a (B, N) matrix. factors (n_d, m_d).
  // kron_matmul: x (B, prod m_d) -> (B, prod n_d) (transpose: factors' transposes).
  m.def("kron_matmul(Tensor[] factors, Tensor x, bool transpose) -> Tensor");
  // Backward twin: (dx, dfactors); dx is empty when not asked for, dfactors an empty list.
  m.def(
      "kron_matmul_bwd(Tensor grad, Tensor[] factors, Tensor x, bool transpose, bool need_x, bool need_factors) "
      "-> (Tensor, Tensor[])");
  // Square factors (symmetrised), y (B, N), noise () = s^2. Returns (nll (B,), alpha (B, N), eig, alpha_rot):
  // eig packs [lam_0, Q_0, lam_1, Q_1, ...] (eigh of the factors), alpha_rot = Q^T alpha; both for the backward.
  m.def("kron_gp_mll(Tensor[] factors, Tensor y, Tensor noise) -> (Tensor, Tensor, Tensor, Tensor)");
  // Backward twin: (dy, dnoise, dfactors) from the gradients of nll and alpha (None: zero).
  m.def(
      "kron_gp_mll_bwd(Tensor? grad_nll, Tensor? grad_alpha, Tensor[] factors, Tensor noise, Tensor eig, "
      "Tensor alpha_rot, bool need_y, bool need_noise, bool need_factors) -> (Tensor, Tensor, Tensor[])");
  // Exact posterior variance (M,); targets "train" (cross_factors empty), "grid" (cross (m_d, n_d)) or
  // "scattered" (cross (M, n_d)); prior_var (M,) (optional for "train"); eig from kron_gp_mll or None.
  m.def(
      "kron_posterior_var(Tensor[] factors, Tensor noise, Tensor[] cross_factors, str targets, Tensor? prior_var, "
      "Tensor? eig) -> Tensor");

  // ---- NNGP / NTK of deep fully connected networks (csrc/nngp) ----
  // out = K(x, y) @ weights without the m x n matrix; K the NNGP (ntk false) or NTK of a network of
  // `depth` hidden layers, activation "relu" | "erf" | "step", weight / bias variances sigma_w2 /
  // sigma_b2 (NTK parameterisation; csrc/nngp/nngp_matmul.h). x (m,d), y (n,d), weights (n,) | (n,c).
  m.def(
      "nngp_matmul(Tensor x, Tensor y, Tensor weights, int depth, str activation, float sigma_w2, "
      "float sigma_b2, bool ntk) -> Tensor");
  // Backward twin: gradients for (x, y, weights); an output not asked for is an empty tensor.
  m.def(
      "nngp_matmul_bwd(Tensor grad, Tensor x, Tensor y, Tensor weights, int depth, str activation, "
      "float sigma_w2, float sigma_b2, bool ntk, bool need_x, bool need_y, bool need_weights) "
      "-> (Tensor, Tensor, Tensor)");
  // The kernel matrix K(x1, x2) (m, n) by the same kernels, and its backward twin (x1, x2 gradients).
  m.def(
      "nngp_kernel(Tensor x1, Tensor x2, int depth, str activation, float sigma_w2, float sigma_b2, bool ntk) "
      "-> Tensor");
  m.def(
      "nngp_kernel_bwd(Tensor grad, Tensor x1, Tensor x2, int depth, str activation, float sigma_w2, "
      "float sigma_b2, bool ntk, bool need_x1, bool need_x2) -> (Tensor, Tensor)");

  // ---- random features (csrc/features) ----
  // Fast Walsh-Hadamard transform of the last dim (a power of two); normalized: times 1/sqrt(n).
  m.def("fwht(Tensor x, bool normalized) -> Tensor");
  // out = scale * f(x @ W + b), x (..., d), W (d, D), b (D,); kind cos | cos_sin (2D columns: cos then
  // sin) | positive (exp(z - |x|^2/2 - m), m by stabilize: row | global | none) | relu | step.
  // scale None: the default scale of the kind for D features (kernelfuse.ops.features.default_scale).
  m.def("random_features(Tensor x, Tensor W, Tensor? b, str kind, float? scale, str stabilize) -> Tensor");
  m.def(
      "random_features_bwd(Tensor grad, Tensor out, Tensor x, Tensor W, Tensor? b, str kind, float? scale, "
      "str stabilize, bool need_x, bool need_W, bool need_b) -> (Tensor, Tensor, Tensor)");
  // Structured maps: signs (nblocks, 3, P) diagonals, perm (nblocks, P) for fastfood; the first
  // n_features of the stacked block projections, then the same epilogue as random_features.
  m.def(
      "structured_features(Tensor x, Tensor signs, Tensor? perm, Tensor? b, SymInt n_features, str kind, str block, "
      "float? scale, str stabilize) -> Tensor");
  m.def(
      "structured_features_bwd(Tensor grad, Tensor out, Tensor x, Tensor signs, Tensor? perm, Tensor? b, "
      "SymInt n_features, str kind, str block, float? scale, str stabilize, bool need_x, bool need_b) "
      "-> (Tensor, Tensor)");
}
