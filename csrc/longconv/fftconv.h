// Fused FFT long convolution: y = postgate * (conv(u * pregate, k) + D * s), and its backward, with
// the skip source s = u (skip_gated false: skip "input") or s = u * pregate (skip "gated", H3 /
// Hyena's convention: D multiplies the gated input).
// Torch-free: a params struct and the pointwise / spectral stages that run around the FFTs.
//
// The FFTs themselves are done by the caller (the torch glue uses ATen's r2c / c2r, i.e. MKL or
// pocketfft on CPU and cuFFT on CUDA) on blocks of rows, so that every temporary is
// O(rows_per_block * n) rather than O(B * H * n). A "row" is one (b, h) pair, r = b * H + h.
// Real block buffers hold rows of n values (A, row stride n); spectral buffers hold rows of
// nf = n / 2 + 1 complex values (interleaved re, im; row stride 2 * nf A values).
//
// Convolution modes, on the padded kernel kk of length n (zero except where stated):
//   Causal:        kk[m] = k[m], m < Lk                          (n >= L + Lk - 1)
//   Circular:      kk[m] = k[m], m < Lk                          (n == L, Lk <= L)
//   Bidirectional: k holds 2 * Lk taps: kk[m] = k[m], m < Lk (lags 0..Lk-1, causal) and
//                  kk[n - 1 - j] = k[Lk + j], j < Lk (acting on u[t + 1 + j], anti-causal)
//                                                              (n >= L + Lk)
// and y[t] = sum_m kk[m] v[(t - m) mod n] for t < L, v = u * pregate zero padded to n.
#pragma once
#include <cstdint>

namespace kernelfuse::longconv {

enum class ConvMode : int32_t { Causal = 0, Bidirectional = 1, Circular = 2 };

// Pointwise stages over the rows [row0, row0 + nb) of one block.
enum class Stage : int32_t {
  PackInput = 0,         // R[i, t] = u * pregate (t < L), 0 (L <= t < n)
  PackGrad = 1,          // R[i, t] = grad * postgate (t < L), 0 after; dD_rows[r] = sum_t dz * s
  PackKernel = 2,        // R[i, :] = kk * scale, for kernel rows [row0, row0 + nb)
  UnpackOutput = 3,      // y = postgate * (R[i, t] + D * s)
  UnpackPostGrad = 4,    // dpostgate = grad * (R[i, t] + D * s)
  UnpackInputGrad = 5,   // with dz = grad * postgate: skip "input": du = R * pregate + D * dz,
                         // dpregate = R * u; skip "gated": dv = R + D * dz, du = dv * pregate,
                         // dpregate = dv * u
  GatherKernelGrad = 6,  // dk[row, j] = scale * R[i, m(j)], for kernel rows [row0, row0 + nb)
};

// Spectral stages over the nb rows of a block (X, Y: (nb, nf) complex; K: kernel spectra).
enum class SpecOp : int32_t {
  MulKernel = 0,       // X[i] *= K[krow(i)]
  MulConjKernel = 1,   // X[i] *= conj(K[krow(i)])
  CorrAccumulate = 2,  // K[krow(i)] += conj(X[i]) * Y[i]   (shared kernels: sum over the batch)
  Corr = 3,            // X[i] = conj(X[i]) * Y[i]             (per-batch kernels)
};

// Accumulation / compute type of a storage type (half types specialise it in the CUDA file).
template <typename T>
struct AccType {
  using type = T;
};

// T: storage type of u, the gates, grad and their gradients; A: compute type; TK: storage type of
// k, D and dk (T, or float with half T: fp16 / bf16 activations with an fp32 kernel).
template <typename T, typename A = typename AccType<T>::type, typename TK = T>
struct FFTConvParams {
  int64_t B = 0, H = 0, L = 0;
  int64_t Lk = 0;  // taps per direction (bidirectional: k rows hold 2 * Lk values)
  int64_t n = 0, nf = 0;
  ConvMode mode = ConvMode::Causal;
  bool k_per_batch = false;  // k is (B, H, ktaps) (else (H, ktaps), shared by the batch)
  bool skip_gated = false;   // skip source s = u * pregate (else u); same thing without a pregate
  // Inputs, all contiguous; optional ones may be null (pregate/postgate: 1, D: 0).
  const T* u = nullptr;         // (B, H, L)
  const TK* k = nullptr;        // (H | B*H, ktaps)
  const TK* D = nullptr;        // (H,)
  const T* pregate = nullptr;   // (B, H, L)
  const T* postgate = nullptr;  // (B, H, L)
  const T* grad = nullptr;      // (B, H, L), backward only
  // Outputs (null: not wanted).
  T* y = nullptr;          // (B, H, L)
  T* du = nullptr;         // (B, H, L)
  T* dpregate = nullptr;   // (B, H, L)
  T* dpostgate = nullptr;  // (B, H, L)
  TK* dk = nullptr;        // (H | B*H, ktaps)
  A* dD_rows = nullptr;    // (B * H,) per-row partial sums of grad * postgate * s

  int64_t ktaps() const { return mode == ConvMode::Bidirectional ? 2 * Lk : Lk; }
};

// CPU (OpenMP over the rows of the block); T in {float, double}.
template <typename T>
void fftconv_stage_cpu(const FFTConvParams<T, T>& p, Stage s, int64_t row0, int64_t nb, T* R, T scale);
// A in {float, double}. H: heads; K rows are indexed by krow(i) = (row0 + i) % H - kbase when
// shared (K holds the spectra of heads kbase...), by i when per_batch (block-local spectra).
template <typename A>
void fftconv_spectral_cpu(SpecOp op, int64_t row0, int64_t nb, int64_t nf, int64_t H, int64_t kbase, bool per_batch,
                          A* X, const A* Y, A* K);

// CUDA launchers (fftconv_cuda.cu): T in {float, double, __half, __nv_bfloat16}, A = float for
// the half types, TK = T or (half T) float; stream is a cudaStream_t. One launch per call, no host sync.
template <typename T, typename A, typename TK>
void launch_fftconv_stage(const FFTConvParams<T, A, TK>& p, Stage s, int64_t row0, int64_t nb, A* R, A scale,
                          void* stream);
template <typename A>
void launch_fftconv_spectral(SpecOp op, int64_t row0, int64_t nb, int64_t nf, int64_t H, int64_t kbase, bool per_batch,
                             A* X, const A* Y, A* K, void* stream);

}  // namespace kernelfuse::longconv
