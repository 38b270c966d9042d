// CPU fast Walsh-Hadamard transform (see fwht.h). Torch-free.
//
// One row at a time per thread (OpenMP over rows). Within a row: the first stages (pairs closer
// than one vector) run inside registers with lane shuffles; the remaining stages go in radix-8
// passes (three stages per sweep over the data, 8 vectors in registers), then radix-4 / radix-2
// for the leftover stages. Rows longer than kBlock elements are first transformed block by block
// (each block stays in L1/L2), then the cross-block stages sweep the whole row.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "../common/simd.h"
#include "fwht.h"

namespace kernelfuse::features {
namespace {

using simd::load;
using simd::store;

// Stages with pair distance < W inside each vector of W consecutive elements (n % W == 0).
template <typename T>
void inreg_stages(T* v, int64_t n) {
  using V = typename simd::Vec<T>::type;
  if constexpr (simd::Vec<T>::W == 8) {
    typedef int32_t M __attribute__((vector_size(32)));
    const V s1 = {1, -1, 1, -1, 1, -1, 1, -1}, s2 = {1, 1, -1, -1, 1, 1, -1, -1}, s4 = {1, 1, 1, 1, -1, -1, -1, -1};
    const M m1 = {1, 0, 3, 2, 5, 4, 7, 6}, m2 = {2, 3, 0, 1, 6, 7, 4, 5}, m4 = {4, 5, 6, 7, 0, 1, 2, 3};
    for (int64_t i = 0; i < n; i += 8) {
      V a = load<V>(v + i);
      a = __builtin_shuffle(a, m1) + a * s1;
      a = __builtin_shuffle(a, m2) + a * s2;
      a = __builtin_shuffle(a, m4) + a * s4;
      store(v + i, a);
    }
  } else {
    typedef int64_t M __attribute__((vector_size(32)));
    const V s1 = {1, -1, 1, -1}, s2 = {1, 1, -1, -1};
    const M m1 = {1, 0, 3, 2}, m2 = {2, 3, 0, 1};
    for (int64_t i = 0; i < n; i += 4) {
      V a = load<V>(v + i);
      a = __builtin_shuffle(a, m1) + a * s1;
      a = __builtin_shuffle(a, m2) + a * s2;
      store(v + i, a);
    }
  }
}

// Stages with pair distances h, 2h, ..., up to (but excluding) hend, over v[0, n); h >= W.
template <typename T>
void vector_stages(T* v, int64_t n, int64_t h, int64_t hend) {
  using V = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  while (h < hend) {
    if (h * 8 <= hend) {  // radix 8: stages h, 2h, 4h
      for (int64_t base = 0; base < n; base += 8 * h)
        for (int64_t j = base; j < base + h; j += W) {
          V a[8];
          for (int q = 0; q < 8; ++q) a[q] = load<V>(v + j + q * h);
          for (int s = 1; s < 8; s <<= 1)
            for (int q = 0; q < 8; ++q)
              if (!(q & s)) {
                const V x = a[q], y = a[q + s];
                a[q] = x + y;
                a[q + s] = x - y;
              }
          for (int q = 0; q < 8; ++q) store(v + j + q * h, a[q]);
        }
      h *= 8;
    } else if (h * 4 <= hend) {  // radix 4: stages h, 2h
      for (int64_t base = 0; base < n; base += 4 * h)
        for (int64_t j = base; j < base + h; j += W) {
          const V a0 = load<V>(v + j), a1 = load<V>(v + j + h), a2 = load<V>(v + j + 2 * h),
                  a3 = load<V>(v + j + 3 * h);
          const V t0 = a0 + a1, t1 = a0 - a1, t2 = a2 + a3, t3 = a2 - a3;
          store(v + j, t0 + t2);
          store(v + j + h, t1 + t3);
          store(v + j + 2 * h, t0 - t2);
          store(v + j + 3 * h, t1 - t3);
        }
      h *= 4;
    } else {  // radix 2
      for (int64_t base = 0; base < n; base += 2 * h)
        for (int64_t j = base; j < base + h; j += W) {
          const V a0 = load<V>(v + j), a1 = load<V>(v + j + h);
          store(v + j, a0 + a1);
          store(v + j + h, a0 - a1);
        }
      h *= 2;
    }
  }
}

template <typename T>
void scalar_fwht(T* v, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const T a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
}

}  // namespace

template <typename T>
void fwht_inplace(T* v, int64_t n) {
  constexpr int W = simd::Vec<T>::W;
  constexpr int64_t kBlock = 4096;  // elements transformed in cache before the cross-block stages
  if (n < W) {
    scalar_fwht(v, n);
    return;
  }
  const int64_t blk = std::min(n, kBlock);
  for (int64_t o = 0; o < n; o += blk) {
    inreg_stages(v + o, blk);
    vector_stages(v + o, blk, W, blk);
  }
  if (blk < n) vector_stages(v, n, blk, n);
}

template <typename T>
void fwht_cpu(const FwhtParams<T>& p) {
  const int64_t n = p.n, rows = p.rows;
  const T scale = p.scale;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * n > 8192)
  for (int64_t r = 0; r < rows; ++r) {
    T* o = p.out + r * n;
    if (o != p.x + r * n) std::memcpy(o, p.x + r * n, sizeof(T) * n);
    fwht_inplace(o, n);
    if (scale != T(1))
      for (int64_t i = 0; i < n; ++i) o[i] *= scale;
  }
}

template void fwht_cpu<float>(const FwhtParams<float>&);
template void fwht_cpu<double>(const FwhtParams<double>&);
template void fwht_inplace<float>(float*, int64_t);
template void fwht_inplace<double>(double*, int64_t);

}  // namespace kernelfuse::features
