// The strided batched GEMM the torch-free runners call (kron/kron_runner.h). Implementation: the
// torch glue, with ATen's mm_out / bmm_out on strided views (MKL / OpenBLAS on CPU, cuBLAS on
// CUDA, ATen's CPU GEMM under the CUDA simulator). Torch-free.
#pragma once
#include <cstdint>

namespace kernelfuse {

// Matrix i of a batch: element (r, c) at p[i * bs + r * rs + c * cs] (a transpose swaps rs, cs;
// bs = 0 shares one matrix across the batch).
template <typename T>
struct MatView {
  const T* p = nullptr;
  int64_t rs = 0, cs = 1, bs = 0;
};

template <typename T>
struct StridedGemm {
  virtual ~StridedGemm() = default;
  // For i < batch: C_i (m x n, row-major, contiguous, C_i at C + i m n) = A_i (m x k) B_i (k x n).
  virtual void gemm(int64_t batch, int64_t m, int64_t n, int64_t k, MatView<T> A, MatView<T> B, T* C) = 0;
};

}  // namespace kernelfuse
