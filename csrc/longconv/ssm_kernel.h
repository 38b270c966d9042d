// S4D convolution kernel: K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l, l = 0..L-1, with Abar,
// Bbar the ZOH or bilinear discretisation of the diagonal state matrix A[h,n] = A_real + i A_imag
// at step dt[h] = exp(log_dt[h]). Fused Vandermonde product: memory O(H (N + L)), never H x N x L.
// Torch-free: raw pointers and a params struct, shared by the CPU and CUDA kernels.
//
// Complex operands (B, C and their gradients) are interleaved (re, im) pairs: (H, N, 2), i.e. the
// memory of a complex tensor (torch.view_as_real). Every operand is contiguous.
#pragma once
#include <cmath>
#include "../common/hd.h"
#include <cstdint>

namespace kernelfuse::longconv {

enum class Discretization : int32_t { ZOH = 0, Bilinear = 1 };

template <typename T>
struct SsmKernelParams {
  int64_t H = 0, N = 0, L = 0;
  const T* log_dt = nullptr;  // (H,)
  const T* A_real = nullptr;  // (H, N)
  const T* A_imag = nullptr;  // (H, N)
  const T* B = nullptr;       // (H, N, 2) or nullptr: B = 1
  const T* C = nullptr;       // (H, N, 2)
  Discretization disc = Discretization::ZOH;
  // forward
  T* K = nullptr;  // (H, L)
  // backward: grad (H, L) in; gradients of every input out (g_B unused when B is null)
  const T* grad = nullptr;
  T* g_log_dt = nullptr;  // (H,)
  T* g_A_real = nullptr;  // (H, N)
  T* g_A_imag = nullptr;  // (H, N)
  T* g_B = nullptr;       // (H, N, 2)
  T* g_C = nullptr;       // (H, N, 2)
  // CUDA backward only: (H, N) double workspace, dt dLoss/ddt per state before the sum over n
  double* dt_partial = nullptr;
};

// CPU (OpenMP) kernels, T in {float, double}; all arithmetic in double.
template <typename T>
void ssm_kernel_cpu(const SsmKernelParams<T>& p);
template <typename T>
void ssm_kernel_bwd_cpu(const SsmKernelParams<T>& p);

// CUDA kernels (ssm_kernel_cuda.cu), T in {float, double}; stream is a cudaStream_t. No host sync.
template <typename T>
void launch_ssm_kernel(const SsmKernelParams<T>& p, void* stream);
template <typename T>
void launch_ssm_kernel_bwd(const SsmKernelParams<T>& p, void* stream);

// ------------------------------------------------------------------ shared scalar math (host + device)
struct cd {  // minimal complex double usable in device code
  double re, im;
};
KF_HD cd operator+(cd a, cd b) { return {a.re + b.re, a.im + b.im}; }
KF_HD cd operator-(cd a, cd b) { return {a.re - b.re, a.im - b.im}; }
KF_HD cd operator*(cd a, cd b) { return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re}; }
KF_HD cd operator*(double s, cd a) { return {s * a.re, s * a.im}; }
KF_HD cd cdiv(cd a, cd b) {
  // Smith's algorithm: no overflow for large |b|
  if (fabs(b.re) >= fabs(b.im)) {
    const double r = b.im / b.re, d = b.re + b.im * r;
    return {(a.re + a.im * r) / d, (a.im - a.re * r) / d};
  }
  const double r = b.re / b.im, d = b.re * r + b.im;
  return {(a.re * r + a.im) / d, (a.im * r - a.re) / d};
}
KF_HD cd cexp(cd z) {
  const double m = exp(z.re);
  return {m * cos(z.im), m * sin(z.im)};
}
KF_HD cd cexpm1(cd z) {  // exp(z) - 1 without cancellation for small |z|
  const double s = sin(0.5 * z.im);
  return {expm1(z.re) * cos(z.im) - 2.0 * s * s, exp(z.re) * sin(z.im)};
}
KF_HD cd clog(cd z) { return {log(hypot(z.re, z.im)), atan2(z.im, z.re)}; }

// Discretisation of one state (h, n): w = log Abar (so Abar^l = exp(l w) exactly for integer l),
// beta = Bbar / B, and the partial derivatives of w and beta wrt A (complex, holomorphic) and dt.
struct Disc {
  cd w, beta;
  cd dw_dA, dw_ddt, dbeta_dA, dbeta_ddt;
};

KF_HD Disc discretize(Discretization kind, double dt, cd A, bool with_derivs) {
  Disc r;
  const cd dtA = dt * A;
  if (kind == Discretization::ZOH) {
    // Abar = exp(dt A), Bbar = (exp(dt A) - 1) / A * B
    r.w = dtA;
    const cd em1 = cexpm1(dtA);
    r.beta = cdiv(em1, A);
    if (with_derivs) {
      const cd e = cexp(dtA);
      r.dw_dA = {dt, 0.0};
      r.dw_ddt = A;
      r.dbeta_ddt = e;
      r.dbeta_dA = cdiv(dt * e - r.beta, A);  // d/dA (e^{dtA} - 1)/A
    }
  } else {
    // Abar = (1 + dtA/2) / (1 - dtA/2), Bbar = dt / (1 - dtA/2) * B
    const cd p = {1.0 + 0.5 * dtA.re, 0.5 * dtA.im};
    const cd m = {1.0 - 0.5 * dtA.re, -0.5 * dtA.im};
    const cd lp = clog(p), lm = clog(m);
    r.w = lp - lm;  // log Abar (any branch: l is an integer)
    const cd inv_m = cdiv({1.0, 0.0}, m);
    r.beta = dt * inv_m;
    if (with_derivs) {
      const cd q = cdiv({1.0, 0.0}, p * m);  // dw/d(dtA) = 1 / (1 - (dtA)^2 / 4)
      r.dw_dA = dt * q;
      r.dw_ddt = A * q;
      const cd im2 = inv_m * inv_m;
      r.dbeta_dA = (0.5 * dt * dt) * im2;
      r.dbeta_ddt = inv_m + 0.5 * (dtA * im2);  // 1/m + dt A / (2 m^2)
    }
  }
  return r;
}

// Chain rule for one state, from the holomorphic adjoints of the kernel's two sums
//   S0 = sum_l g_l Abar^l,  S1 = sum_l g_l l Abar^l   (g = dLoss/dK),
// since dLoss = 2 Re(S0 dc + c S1 dw) with c = C Bbar. Gradients of real parameters are
// 2 Re(P dq/dt); of complex ones (as (re, im) pairs, torch's convention) 2 conj(P).
struct StateGrads {
  double d_dt, d_Ar, d_Ai;
  cd d_B, d_C;
};

KF_HD StateGrads chain_rule(const Disc& d, cd B, cd C, cd S0, cd S1) {
  StateGrads g;
  const cd Bbar = d.beta * B;
  const cd c = C * Bbar;
  const cd Pw = c * S1;          // adjoint of w
  const cd PBbar = S0 * C;       // adjoint of Bbar
  const cd PC = S0 * Bbar;       // adjoint of C
  const cd Pbeta = PBbar * B;    // adjoint of beta
  const cd PB = PBbar * d.beta;  // adjoint of B
  const cd PA = Pw * d.dw_dA + Pbeta * d.dbeta_dA;
  const cd Pdt = Pw * d.dw_ddt + Pbeta * d.dbeta_ddt;
  g.d_dt = 2.0 * Pdt.re;
  g.d_Ar = 2.0 * PA.re;
  g.d_Ai = -2.0 * PA.im;
  g.d_B = {2.0 * PB.re, -2.0 * PB.im};
  g.d_C = {2.0 * PC.re, -2.0 * PC.im};
  return g;
}

// Gradients of state i = h * N + n from its two sums: writes dA_real, dA_imag, dB (if wanted) and
// dC, and returns d/d dt (the caller sums it over n for log_dt).
template <typename T>
KF_HD double store_state_grads(const SsmKernelParams<T>& p, int64_t i, const Disc& d, cd S0, cd S1) {
  const cd B = p.B ? cd{double(p.B[2 * i]), double(p.B[2 * i + 1])} : cd{1.0, 0.0};
  const cd C = {double(p.C[2 * i]), double(p.C[2 * i + 1])};
  const StateGrads sg = chain_rule(d, B, C, S0, S1);
  p.g_A_real[i] = static_cast<T>(sg.d_Ar);
  p.g_A_imag[i] = static_cast<T>(sg.d_Ai);
  if (p.B && p.g_B) {
    p.g_B[2 * i] = static_cast<T>(sg.d_B.re);
    p.g_B[2 * i + 1] = static_cast<T>(sg.d_B.im);
  }
  p.g_C[2 * i] = static_cast<T>(sg.d_C.re);
  p.g_C[2 * i + 1] = static_cast<T>(sg.d_C.im);
  return sg.d_dt;
}

}  // namespace kernelfuse::longconv
