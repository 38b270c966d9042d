// Fused matrix-free products with the NNGP / NTK kernels of deep fully connected networks:
// out = K(x, y) @ w without the m x n matrix. Torch-free: raw pointers and a params struct,
// shared by the CPU and CUDA kernels. The per-pair maths is in nngp_math.h (host and device).
//
// The network (NTK parameterisation): depth hidden layers of activation phi, weights N(0, sw2 /
// fan_in), biases N(0, sb2), a linear readout with the same variances. Kernels of the readout:
//   Sigma_1(x, y) = sw2 x.y / d + sb2
//   Sigma_{h+1}   = sw2 E[phi(u) phi(v)] + sb2,            (u, v) ~ N(0, Sigma_h on {x, y})
//   Theta_1 = Sigma_1, Theta_{h+1} = Sigma_{h+1} + sw2 E[phi'(u) phi'(v)] Theta_h
// NNGP = Sigma_{depth+1}, NTK = Theta_{depth+1}. K depends on (s, nx, ny) = (x.y, |x|^2, |y|^2).
#pragma once
#include <cstdint>

namespace kernelfuse::nngp {

enum class Activation : int32_t { Relu = 0, Erf = 1, Step = 2 };
constexpr int kNumActivations = 3;

// Forward: out (m, c) = sum_i K(x_q, y_i) w[i, :]
// GradX:   out (m, d) = sum_i coef_qi (dK/ds y_i + 2 dK/dnx x_q),  coef_qi = g[q, :] . w[i, :]
//          (the x gradient of sum(g * (K @ w)); the y gradient is GradX with the sides swapped,
//          g and w swapped; the w gradient is Forward with the sides swapped and w = g).
//          With out2 != nullptr the same pass also writes Forward's output into out2 (m, c) =
//          sum_i K(x_q, y_i) w[i, :] (K is formed next to dK anyway): with the sides swapped,
//          the y and w gradients in one pass.
// Matrix:  out (m, n) = K(x_q, y_i) (w unused): the kernel matrix itself.
// GradX with coef != nullptr: coef_qi = coef[q * n + i] (the matrix's gradient) instead of g . w.
enum class Mode : int32_t { Forward = 0, GradX = 1, Matrix = 2 };

template <typename T>
struct NngpParams {
  int64_t m = 0, n = 0, d = 0, c = 1;
  const T* x = nullptr;     // (m, d) rows contiguous
  const T* y = nullptr;     // (n, d)
  const T* w = nullptr;     // (n, c)
  const T* g = nullptr;     // (m, c), GradX only
  const T* coef = nullptr;  // (m, n), GradX only (optional)
  T* out = nullptr;         // (m, c) Forward, (m, d) GradX, (m, n) Matrix
  T* out2 = nullptr;        // (m, c), GradX without coef only (optional): Forward's output
  Activation act = Activation::Relu;
  int32_t depth = 1;  // hidden layers >= 0
  bool ntk = false;   // Theta instead of Sigma
  Mode mode = Mode::Forward;
  double sigma_w2 = 1.0, sigma_b2 = 0.0;
};

// CPU (OpenMP) kernel; T in {float, double}.
template <typename T>
void nngp_matmul_cpu(const NngpParams<T>& p);
// CUDA kernels (nngp_matmul_cuda.cu): one launch per call, no host sync; T in {float, double}.
template <typename T>
void launch_nngp_matmul(const NngpParams<T>& p, void* stream);

}  // namespace kernelfuse::nngp
