// CPU mode product (see kron_mode_product_cpu in kron.h). Torch-free: a small register-blocked GEMM
// with GCC vector extensions (AVX2 / AVX-512 / NEON through -march) and OpenMP over tiles.
//
// Why not MKL: the per-axis GEMMs here are thin (k = a_d <= a few hundred, one dim = n_d) and
// MKL's double GEMM on our EPYC CI machines runs these shapes at 2-5 GFLOP/s; this kernel keeps a
// (k x NR) panel of the vector operand in L1 and streams the broadcast operand, which is what
// these shapes need (numbers in docs/kron.md).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../common/simd.h"
#include "kron.h"

namespace kernelfuse::kron {
namespace {

using simd::load;
using simd::store;

constexpr int MR = 4;  // rows of the register tile

// C (mr x NV*W) = A (mr x k, row stride lda) @ B (k x NV*W, row stride ldb); mr <= MR.
template <typename T, int NV>
inline void micro(int64_t k, int mr, const T* __restrict A, int64_t lda, const T* __restrict B, int64_t ldb,
                  T* __restrict C, int64_t ldc) {
  using V = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  V c[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) c[i][v] = V{};
  const T* a0 = A;
  const T* a1 = A + (mr > 1 ? lda : 0);
  const T* a2 = A + (mr > 2 ? 2 * lda : 0);
  const T* a3 = A + (mr > 3 ? 3 * lda : 0);
  for (int64_t p = 0; p < k; ++p) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = load<V>(B + p * ldb + v * W);
    const T x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
    for (int v = 0; v < NV; ++v) {
      c[0][v] += x0 * b[v];
      c[1][v] += x1 * b[v];
      c[2][v] += x2 * b[v];
      c[3][v] += x3 * b[v];
    }
  }
  for (int i = 0; i < mr; ++i)
    for (int v = 0; v < NV; ++v) store(C + i * ldc + v * W, c[i][v]);
}

// Scalar edge: C (mr x nr) = A @ B.
template <typename T>
inline void edge(int64_t k, int64_t mr, int64_t nr, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                 int64_t ldc) {
  for (int64_t i = 0; i < mr; ++i) {
    T acc[16];
    for (int64_t j = 0; j < nr; ++j) acc[j] = T(0);
    for (int64_t p = 0; p < k; ++p) {
      const T a = A[i * lda + p];
      for (int64_t j = 0; j < nr; ++j) acc[j] += a * B[p * ldb + j];
    }
    for (int64_t j = 0; j < nr; ++j) C[i * ldc + j] = acc[j];
  }
}

// C (m x n) = A (m x k) @ B (k x n), all row-major with the given row strides; single-threaded.
// Column panels of NR = 3 W outer: each (k x NR) panel of B is first packed contiguously (strided
// rows would alias in L1 when ldb is a multiple of 4 KiB / 8), then reused by every row tile.
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc) {
  constexpr int W = simd::Vec<T>::W;
  constexpr int NR = 3 * W;
  thread_local std::vector<T> pack;
  if (int64_t(pack.size()) < k * NR) pack.resize(k * NR);
  T* P = pack.data();
  int64_t j = 0;
  for (; j + NR <= n; j += NR) {
    for (int64_t q = 0; q < k; ++q) std::memcpy(P + q * NR, B + q * ldb + j, sizeof(T) * NR);
    for (int64_t i = 0; i < m; i += MR)
      micro<T, 3>(k, int(std::min<int64_t>(MR, m - i)), A + i * lda, lda, P, NR, C + i * ldc + j, ldc);
  }
  for (; j + W <= n; j += W) {
    for (int64_t q = 0; q < k; ++q) std::memcpy(P + q * W, B + q * ldb + j, sizeof(T) * W);
    for (int64_t i = 0; i < m; i += MR)
      micro<T, 1>(k, int(std::min<int64_t>(MR, m - i)), A + i * lda, lda, P, W, C + i * ldc + j, ldc);
  }
  if (j < n)
    for (int64_t i = 0; i < m; i += MR)
      edge<T>(k, std::min<int64_t>(MR, m - i), n - j, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc);
}

// out (pre, n, post) = M (n x a) applied to axis 1 of in (pre, a, post). Mp: M packed row-major
// (n x a), Mt: M^T packed row-major (a x n).
template <typename T>
void mode_product(int64_t pre, int64_t a, int64_t post, int64_t n, const T* Mp, const T* Mt, const T* in, T* out,
                  int nthreads) {
  if (post == 1) {
    // out (pre x n) = in (pre x a) @ M^T (a x n): tiles of rows.
    const int64_t rows_per = 64;
    const int64_t tiles = (pre + rows_per - 1) / rows_per;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && tiles > 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * rows_per, mr = std::min(rows_per, pre - r0);
      gemm<T>(mr, n, a, in + r0 * a, a, Mt, n, out + r0 * n, n);
    }
    return;
  }
  // per p: out_p (n x post) = M (n x a) @ in_p (a x post); tiles (p, column block).
  constexpr int W = simd::Vec<T>::W;
  const int64_t cw = 3 * W * 8;  // 8 panels of NR columns per tile
  const int64_t cblocks = (post + cw - 1) / cw;
  const int64_t tiles = pre * cblocks;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && tiles > 1)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t p = t / cblocks, c0 = (t % cblocks) * cw, nc = std::min(cw, post - c0);
    gemm<T>(n, nc, a, Mp, a, in + p * a * post + c0, post, out + p * n * post + c0, post);
  }
}

}  // namespace

template <typename T>
void kron_mode_product_cpu(int64_t pre, int64_t a, int64_t post, int64_t n, const T* M, int64_t rs, int64_t cs,
                           const T* in, T* out) {
  // Pack M (n x a) row-major and transposed (small: n * a).
  std::vector<T> Mp(n * a), Mt(n * a);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < a; ++k) {
      const T v = M[i * rs + k * cs];
      Mp[i * a + k] = v;
      Mt[k * n + i] = v;
    }
  const int64_t work = pre * post * a * n;
  mode_product<T>(pre, a, post, n, Mp.data(), Mt.data(), in, out, work >= 65536 ? omp_get_max_threads() : 1);
}

template void kron_mode_product_cpu<float>(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, int64_t,
                                           const float*, float*);
template void kron_mode_product_cpu<double>(int64_t, int64_t, int64_t, int64_t, const double*, int64_t, int64_t,
                                            const double*, double*);

}  // namespace kernelfuse::kron
