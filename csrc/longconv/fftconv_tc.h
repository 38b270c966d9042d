// Tensor-core fftconv for fp16 / bf16 CUDA inputs (fftconv_tc_cuda.cu): causal, gated, shared kernel.
// Torch-free. Compiled for sm_80 / sm_90a, run under the CUDA simulator; NOT run on a GPU yet.
//
// y[b, h, t] = postgate * (sum_{m < Lk} k[h, m] v[b, h, t - m] + D[h] s[b, h, t]), v = u * pregate,
// s = u (skip "input") or v (skip "gated"),
// for t < L, with an FFT of size N = 2^m, 256 <= N <= kMaxN, N >= L + Lk - 1 (fftconv_tc_fft_size).
// Two batch rows (2q, h) and (2q + 1, h) share one complex sequence (real and imaginary parts), as
// k is real. The FFT is a radix-16 Monarch / decimation-in-frequency factorisation whose 16-point
// DFTs are 16 x 16 complex matrix products on tensor cores (WMMA, fp16 / bf16 operands, fp32
// accumulation); the spectrum stays in digit-reversed order and the inverse undoes it, so the kernel
// spectrum (fp32, computed by the same factorisation on CUDA cores) is built in that order too.
#pragma once
#include <cstdint>

namespace kernelfuse::longconv {

constexpr int64_t kTCMinN = 256;
constexpr int64_t kTCMaxN = 32768;

// T: storage type of u, the gates and y; TK: of k and D (T, or float: an fp32 kernel and skip).
template <typename T, typename TK = T>
struct FFTConvTCParams {
  int64_t B = 0, H = 0, L = 0, Lk = 0, N = 0;
  const T* u = nullptr;         // (B, H, L)
  const TK* k = nullptr;        // (H, Lk)
  const TK* D = nullptr;        // (H,) or null
  const T* pregate = nullptr;   // (B, H, L) or null
  const T* postgate = nullptr;  // (B, H, L) or null
  bool skip_gated = false;      // D multiplies u * pregate (skip "gated") instead of u
  T* y = nullptr;               // (B, H, L)
  float* kspec = nullptr;       // (H, N, 2) fp32 workspace, written by the launcher
  int* kexp = nullptr;          // (H,) int32 workspace: exponent of max |K[h]| (the spectral scaling)
};

// Power-of-two FFT size for the tensor-core path, or 0 if L + Lk - 1 > kTCMaxN.
inline int64_t fftconv_tc_fft_size(int64_t L, int64_t Lk) {
  const int64_t need = L + Lk - 1;
  int64_t n = kTCMinN;
  while (n < need && n < kTCMaxN) n *= 2;
  return n >= need ? n : 0;
}

// Launches the path (two kernels: kernel spectrum, then the fused conv) on stream (a cudaStream_t)
// if one sequence of size N fits in the current device's opt-in shared memory per block; returns
// false (and launches nothing) otherwise, so the caller falls back. T in {__half, __nv_bfloat16},
// TK in {T, float}.
template <typename T, typename TK>
bool launch_fftconv_tc(const FFTConvTCParams<T, TK>& p, void* stream);

}  // namespace kernelfuse::longconv
