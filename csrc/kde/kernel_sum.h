// Fused kernel sums: out[q] = sum_i w_i k(dist(x_q, y_i) / h) without the m x n matrix.
// Torch-free: raw pointers and a params struct, shared by the CPU and CUDA kernels.
#pragma once
#include <cstdint>

#include "profiles.h"

namespace kernelfuse::kde {

// The kernels (Kernel, kNumKernels, kKernelNames, is_compact) and their profiles: profiles.h.

// Distance of the kernel's r = dist(x, y) / h. Coordinate metrics take the per-dimension scaled
// differences u_k = (x_k - y_k) / h_k; haversine (d == 2, rows (lat, lon) in radians, one
// bandwidth) is the great-circle distance 2 asin(sqrt(sin^2(dlat/2) + cos lat1 cos lat2
// sin^2(dlon/2))) divided by h. Position gradients of s = r^2 at kinks: sign(0) = 0; chebyshev
// ties go to the first (lowest-index) coordinate attaining the maximum.
enum class Metric : int32_t {
  Euclidean = 0,  // sqrt(sum u_k^2)
  Manhattan = 1,  // sum |u_k|
  Chebyshev = 2,  // max |u_k|
  Minkowski = 3,  // (sum |u_k|^p)^(1/p), 1 <= p < inf
  Haversine = 4,  // great-circle distance / h
};
constexpr int kNumMetrics = 5;

// What the pass accumulates for each query row q (x side) over the points i (y side).
//  Sum:       out[q,c] = sum_i  qw[q,c] pw[i,c] exp(qlw[q,c] + plw[i,c]) k(s_qi)
//  LogSumExp: out[q,c] = log sum_i exp(qlw[q,c] + plw[i,c] + log k(s_qi))   (pw, qw unused)
//             with aux != nullptr also aux[q,c] = log sum_i exp(2 (plw[i,c] + log k(s_qi)))
//  Backward:  every gradient of Sum / LogSumExp in one pass over the pairs. With
//             e_qi[c] = exp(qlw[q,c] + plw[i,c]) k(s_qi)  (formed in the exponent: no overflow) and
//             coef_qi = sum_c qw[q,c] pw[i,c] e_qi[c] * dlogk/ds(s_qi):
//               out   (m, d) = 2 inv_h^2 sum_i coef_qi (x_q - y_i)      if out   != null
//               out_y (n, d) = 2 inv_h^2 sum_q coef_qi (y_i - x_q)      if out_y != null
//               out_w (n, c) = sum_q qw[q,c] e_qi[c]                    if out_w != null
//             For kernel_sum: qw = grad, pw = weights. For kernel_logsumexp: qw = grad,
//             qlw = -out, plw = log_weights (out_w is then the log_weights gradient).
//             With out_h != null also out_h (batch, m) = sum_i coef_qi s_qi (the bandwidth gradient
//             of a scalar h is -(2/h) sum out_h: s = (dist/h)^2 for every metric).
//             For other metrics than euclidean, 2 inv_h^2 (x_q - y_i) is replaced by ds/dx_q.
// Support of the compact kernels (tophat, epanechnikov, linear, cosine) with a scalar bandwidth
// (h_stride 0): decided exactly as dist(x, y) < h on unscaled distances (squared euclidean
// distance < h^2, the others < h), and s made consistent (inside s < 1, outside s >= 1). With a
// per-dimension bandwidth: s < 1 on the scaled coordinates.
// Every factor pointer may be null (then it is 1, or 0 in the log domain).
enum class Mode : int32_t { Sum = 0, LogSumExp = 1, Backward = 2 };

// Accumulation / parameter type of a storage type (half types specialise it in the CUDA header).
template <typename T>
struct AccType {
  using type = T;
};

template <typename T, typename A = typename AccType<T>::type>
struct KernelSumParams {
  int64_t batch = 1, m = 0, n = 0, d = 0, c = 1;  // c: number of weight columns
  const T* x = nullptr;
  int64_t x_bstride = 0;  // (batch, m, d) rows contiguous
  const T* y = nullptr;
  int64_t y_bstride = 0;  // (batch, n, d)
  const A* h = nullptr;
  int64_t h_stride = 0;  // bandwidth: d values (h_stride 1) or one (0)
  const T* pw = nullptr;
  int64_t pw_bstride = 0;  // (batch, n, c) point weights
  const T* plw = nullptr;
  int64_t plw_bstride = 0;  // (batch, n, c) point log-weights
  const T* qw = nullptr;
  int64_t qw_bstride = 0;  // (batch, m, c) query weights
  const T* qlw = nullptr;
  int64_t qlw_bstride = 0;  // (batch, m, c) query log-weights
  T* out = nullptr;         // (batch, m, c), or (batch, m, d) in Backward mode (may be null there)
  T* aux = nullptr;         // (batch, m, c), LogSumExp only
  T* out_y = nullptr;       // (batch, n, d), Backward only
  T* out_w = nullptr;       // (batch, n, c), Backward only
  A* out_h = nullptr;       // (batch, m), Backward only: sum_i coef_qi s_qi (scalar bandwidth)
  Kernel kernel = Kernel::Gaussian;
  Mode mode = Mode::Sum;
  Metric metric = Metric::Euclidean;
  A p = A(2);                 // Minkowski order
  bool exclude_self = false;  // skip i == q (requires m == n)
};

// CPU (OpenMP) kernels; T in {float, double}.
template <typename T>
void kernel_sum_cpu(const KernelSumParams<T>& p);

// CUDA kernels (kernel_sum_cuda.cu): one launch per call, no host sync, float accumulation for
// half types. T in {float, double, __half, __nv_bfloat16}; stream is a cudaStream_t.
template <typename T>
void launch_kernel_sum(const KernelSumParams<T>& p, void* stream);

}  // namespace kernelfuse::kde
