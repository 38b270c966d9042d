// Butterfly matrix products: y = B_{S-1} ... B_1 B_0 x for every row x of a (rows, n) matrix, where
// each stage B_s is a product of n/2 independent 2x2 blocks ("butterflies"). Torch-free.
//
// Twiddle layout (the op's argument): (nblocks, log2 n, n/2, 2, 2), real, or complex stored as
// interleaved (re, im) pairs (..., 2, 2, 2). Stage s = b * log2 n + t (block b, step t) uses the
// stride 2^t when block b runs with increasing strides, 2^(log2 n - 1 - t) otherwise; block 0 runs
// with `increasing_stride`, and the direction alternates from block to block (B, then B^T-shaped,
// ...). For stride h, pair p = g * h + k (g < n / (2h), k < h) joins the elements i = 2 g h + k and
// j = i + h with the 2x2 matrix [[a, b], [c, d]] = twiddle[b, t, p]:
//     y_i = a x_i + b x_j,   y_j = c x_i + d x_j.
#pragma once
#include <cstdint>

namespace kernelfuse::butterfly {

template <typename T>
struct ButterflyParams {
  int64_t rows = 0;  // number of vectors
  int64_t n = 0;     // vector length, a power of two >= 2
  int64_t log_n = 0;
  int64_t nblocks = 1;
  bool increasing_stride = true;
  bool complex = false;        // values are complex, interleaved (re, im) in T
  const T* x = nullptr;        // (rows, n) [complex: (rows, n, 2)], rows contiguous
  const T* twiddle = nullptr;  // (nblocks, log_n, n/2, 2, 2) [complex: (..., 2)], contiguous
  const T* grad = nullptr;     // (rows, n) [complex: (rows, n, 2)], backward only
  T* out = nullptr;            // forward output, like x
  T* dx = nullptr;             // backward: gradient for x (null: not wanted)
  T* dtwiddle = nullptr;       // backward: gradient for twiddle (null: not wanted), like twiddle

  int64_t stages() const { return nblocks * log_n; }
  // log2 of the stride of stage s.
  int64_t log_stride(int64_t s) const {
    const int64_t b = s / log_n, t = s % log_n;
    const bool inc = ((b & 1) == 0) == increasing_stride;
    return inc ? t : log_n - 1 - t;
  }
};

// CPU: rows in blocks of a few vectors transposed into a (n, rows-in-block) buffer that stays in
// cache through all the stages (every stage vectorises across the rows of the block); OpenMP over
// blocks. T in {float, double}. Complex gradients follow PyTorch's convention (conjugate
// Wirtinger): dx = B^H grad, dtwiddle = sum over rows of grad_out * conj(stage input).
template <typename T>
void butterfly_multiply_cpu(const ButterflyParams<T>& p);
template <typename T>
void butterfly_multiply_bwd_cpu(const ButterflyParams<T>& p);

// CUDA launchers (butterfly_cuda.cu); stream is a cudaStream_t. `work` (backward only) is a device
// buffer of butterfly_bwd_cuda_workspace(p) elements of T.
template <typename T>
void launch_butterfly_multiply(const ButterflyParams<T>& p, void* stream);
template <typename T>
int64_t butterfly_bwd_cuda_workspace(const ButterflyParams<T>& p);
template <typename T>
void launch_butterfly_multiply_bwd(const ButterflyParams<T>& p, T* work, void* stream);

}  // namespace kernelfuse::butterfly
