// The batched real FFT the torch-free runners call (longconv/fftconv_runner.h). Implementations:
// MKL DFTI found at run time (third_party/mkl/mkl_fft.h, CPU), ATen's _fft_r2c / _fft_c2r (the
// torch glue: pocketfft or MKL on CPU, cuFFT on CUDA, ATen on CPU tensors under the CUDA
// simulator). Torch-free.
#pragma once
#include <cstdint>

namespace kernelfuse {

// Unnormalised transforms along rows of length n, rows packed: real (rows, n) <-> complex
// (rows, n / 2 + 1), interleaved (re, im). A in {float, double}. Calls may come from several
// threads at once (one per task), each on its own buffers.
template <typename A>
struct RealFFT {
  virtual ~RealFFT() = default;
  virtual void r2c(const A* in, A* out, int64_t rows, int64_t n) = 0;
  virtual void c2r(const A* in, A* out, int64_t rows, int64_t n) = 0;
};

}  // namespace kernelfuse
