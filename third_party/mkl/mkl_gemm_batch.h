// Strided batched GEMM through the MKL that the installed torch carries (cblas_?gemm_batch, found
// at run time with dlsym like mkl_fft.h: nothing is linked or copied). Torch-free.
//
// BLAS convention (column-major): for i < batch, C_i = op(A_i) op(B_i) with C_i (m x n) at
// C + i sc, element (row, col) at row + col ldc; A_i at A + i sa, B_i at B + i sb likewise; op is
// 'N' (as stored), 'T' (transposed) or 'C' (conjugate transposed). One MKL call per product (one
// group of `batch` equal-sized GEMMs): MKL threads it (torch.set_num_threads sets MKL's count).
#pragma once
#include <cstdint>

namespace kernelfuse::mkl {

// True when MKL's cblas_?gemm_batch entry points are present in the process (x86 torch builds).
bool mkl_gemm_available();

struct GemmBatch {
  char op_a = 'N', op_b = 'N';
  bool accumulate = false;  // C_i += op(A_i) op(B_i) (beta = 1) instead of C_i = ...
  int64_t m = 0, n = 0, k = 0, batch = 0;
  const void* a = nullptr;
  int64_t lda = 1, sa = 0;
  const void* b = nullptr;
  int64_t ldb = 1, sb = 0;
  void* c = nullptr;
  int64_t ldc = 1, sc = 0;
};

// elem: 's' float, 'd' double, 'c' complex<float>, 'z' complex<double>. Returns false (and
// computes nothing) when MKL is missing or a size or leading dimension does not fit MKL's 32-bit
// integers; the caller then uses another GEMM.
bool mkl_gemm_batch(char elem, const GemmBatch& g);

}  // namespace kernelfuse::mkl
