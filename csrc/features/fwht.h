// Fast Walsh-Hadamard transform of the last dimension (length n = 2^k) of `rows` rows:
// out[r] = scale * H_n x[r], H_n the Sylvester-ordered Hadamard matrix (entries +-1; scale
// 1/sqrt(n) for the orthonormal transform). Torch-free; kernels in fwht_cpu.cpp / fwht_cuda.cu.
#pragma once
#include <cstdint>

namespace kernelfuse::features {

template <typename T>
struct FwhtParams {
  const T* x = nullptr;  // (rows, n), rows packed (row stride n)
  T* out = nullptr;      // (rows, n); may equal x (in place)
  int64_t rows = 0;
  int64_t n = 1;  // a power of two
  T scale = T(1);
};

// CPU: OpenMP over rows; rows up to 2^13 are transformed in L1 with radix-8/radix-4 vector
// stages; longer rows in cache-sized blocks, then the remaining cross-block stages.
template <typename T>
void fwht_cpu(const FwhtParams<T>& p);
// In-place FWHT of one contiguous vector of length n (power of two), unscaled. Used by the
// structured feature maps.
template <typename T>
void fwht_inplace(T* v, int64_t n);

}  // namespace kernelfuse::features
