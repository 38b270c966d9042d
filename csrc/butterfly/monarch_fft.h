// Fused two-factor Monarch DFT for one row per thread block (CUDA), torch-free.
//
// N = N1 N2 with N1, N2 <= 64 and the intermediate in shared memory: for n = N2 n1 + n2 and
// k = k1 + N1 k2,  A[k1, n2] = w_N^(k1 n2) sum_n1 w_N1^(k1 n1) x[n1, n2]  (first factor + twiddle),
// X[k1 + N1 k2] = sum_n2 A[k1, n2] w_N2^(n2 k2)  (second factor, the transpose folded into the
// store). w_M = exp(-+2 pi i / M). Longer lengths use the multi-level GEMM path of the glue.
#pragma once
#include <cstdint>

namespace kernelfuse::butterfly {

template <typename T>
struct MonarchFFTParams {
  int64_t rows = 0;
  int64_t N = 0, N1 = 0, N2 = 0;
  bool inverse = false;
  T scale = T(1);
  const T* x = nullptr;  // (rows, N) complex, interleaved (re, im)
  T* y = nullptr;        // (rows, N) complex, interleaved
};

// Whether the fused kernel takes N (per dtype: N1 = the largest divisor <= sqrt N, N2 = N / N1, both
// <= 64, the intermediate in 40 KiB of shared memory); if so, sets *N1 and *N2.
template <typename T>
bool monarch_fft_cuda_supported(int64_t N, int64_t* N1, int64_t* N2);
// stream: a cudaStream_t.
template <typename T>
void launch_monarch_fft(const MonarchFFTParams<T>& p, void* stream);

}  // namespace kernelfuse::butterfly
