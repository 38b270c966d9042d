// CPU random feature maps (see random_features.h). Torch-free.
//
// random_features_cpu: out = scale * f(x @ W + b) in one pass. W is packed once into panels of
// NR = 2 vectors of columns (k-major, zero-padded); each task takes MC rows of x, packs them into
// MR-row micro-panels (k-major) and sweeps every W panel; the 6 x NR register tile accumulates the
// whole k range (12 vector FMA accumulators, AVX2: 6 x 16 floats), then the epilogue (bias,
// cos / sin / relu / step / exp, scale) runs on the registers and the tile is written once. The
// pre-activation matrix z never exists in memory, except for "positive" with a row or global
// stabiliser, whose row maximum is only known after the whole row: there z goes to `out` and a
// second sweep over the (cache-resident) MC rows applies the exponential.
//
// structured_features_cpu: per row (OpenMP over rows) and per block, the SORF / Fastfood transform
// on a P-element buffer in L1 (diagonals, permutation, in-place FWHTs), then the same epilogue.
#include <omp.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "../common/simd.h"
#include "fwht.h"
#include "random_features.h"

namespace kernelfuse::features {
namespace {

using simd::load;
using simd::store;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
std::unique_ptr<T[], FreeDeleter> aligned_buffer(int64_t n) {
  const size_t bytes = ((static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T) + 63) / 64) * 64;
  return std::unique_ptr<T[], FreeDeleter>(static_cast<T*>(std::aligned_alloc(64, bytes)));
}

constexpr int MR = 6;

// Store one vector: non-temporal (bypassing the caches, no read-for-ownership) when asked; the
// output of a large call is written once and read much later.
template <typename T, typename V>
inline void put(T* dst, const V& v, bool nt) {
#if defined(__AVX__)
  if (nt) {
    if constexpr (sizeof(T) == 4)
      _mm256_stream_ps(reinterpret_cast<float*>(dst), reinterpret_cast<const __m256&>(v));
    else
      _mm256_stream_pd(reinterpret_cast<double*>(dst), reinterpret_cast<const __m256d&>(v));
    return;
  }
#endif
  (void)nt;
  store(dst, v);
}

// Epilogue on one vector of pre-activations z (bias included) for columns [c, c + W) of a row.
// ncols < W: only the first ncols are written. dst_cos / dst_sin point at the row's column c
// (dst_sin only for CosSin). shift: subtracted inside the exponential (positive kinds).
template <typename T>
inline void epilogue_vec(Kind kind, typename simd::Vec<T>::type z, T scale, T shift, T* dst, T* dst_sin, int ncols,
                         bool nt = false) {
  using V = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  V r = V{}, r2 = V{};
  switch (kind) {
    case Kind::Cos:
      r = simd::cos_v<T>(z) * scale;
      break;
    case Kind::CosSin:
      simd::sincos_v<T>(z, r2, r);
      r *= scale;
      r2 *= scale;
      break;
    case Kind::Positive:
      r = simd::exp_v<T>(z - shift) * scale;
      break;
    case Kind::Relu: {
      const V zero = V{};
      r = (z <= zero ? zero : z) * scale;  // NaN stays NaN
      break;
    }
    case Kind::Step: {
      const V zero = V{};
      r = (z > zero ? zero + 1 : (z <= zero ? zero : z)) * scale;  // NaN stays NaN
      break;
    }
  }
  if (ncols == W) {
    put(dst, r, nt);
    if (kind == Kind::CosSin) put(dst_sin, r2, nt);
  } else {
    for (int i = 0; i < ncols; ++i) dst[i] = r[i];
    if (kind == Kind::CosSin)
      for (int i = 0; i < ncols; ++i) dst_sin[i] = r2[i];
  }
}

// 6 x (2W) register tile: acc[r][h] += sum_k xp[k][r] * wp[k][h*W .. h*W+W).
template <typename T>
inline void microkernel(const T* __restrict xp, const T* __restrict wp, int64_t K,
                        typename simd::Vec<T>::type (&acc)[MR][2]) {
  using V = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  V a00 = acc[0][0], a01 = acc[0][1], a10 = acc[1][0], a11 = acc[1][1], a20 = acc[2][0], a21 = acc[2][1],
    a30 = acc[3][0], a31 = acc[3][1], a40 = acc[4][0], a41 = acc[4][1], a50 = acc[5][0], a51 = acc[5][1];
  for (int64_t k = 0; k < K; ++k) {
    const V b0 = load<V>(wp), b1 = load<V>(wp + W);
    a00 += b0 * xp[0];
    a01 += b1 * xp[0];  // vector * scalar: a broadcast load and an FMA
    a10 += b0 * xp[1];
    a11 += b1 * xp[1];
    a20 += b0 * xp[2];
    a21 += b1 * xp[2];
    a30 += b0 * xp[3];
    a31 += b1 * xp[3];
    a40 += b0 * xp[4];
    a41 += b1 * xp[4];
    a50 += b0 * xp[5];
    a51 += b1 * xp[5];
    xp += MR;
    wp += 2 * W;
  }
  acc[0][0] = a00;
  acc[0][1] = a01;
  acc[1][0] = a10;
  acc[1][1] = a11;
  acc[2][0] = a20;
  acc[2][1] = a21;
  acc[3][0] = a30;
  acc[3][1] = a31;
  acc[4][0] = a40;
  acc[4][1] = a41;
  acc[5][0] = a50;
  acc[5][1] = a51;
}

// Row-wise exponential pass for "positive" with a stabiliser: row holds z (bias included);
// row <- scale * exp(z - h - m) with m = max(z). Returns m.
template <typename T>
T positive_row(T* row, int64_t D, T h, T scale) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < D; ++j) m = nan_max(m, row[j]);
  // all -inf (only from inf inputs) or NaN: subtracted as is, the row becomes NaN like the reference's
  using V = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  const T shift = h + m;
  int64_t j = 0;
  for (; j + W <= D; j += W) epilogue_vec<T>(Kind::Positive, load<V>(row + j), scale, shift, row + j, nullptr, W);
  if (j < D) {
    V z = V{};
    for (int64_t i = j; i < D; ++i) z[i - j] = row[i];
    epilogue_vec<T>(Kind::Positive, z, scale, shift, row + j, nullptr, static_cast<int>(D - j));
  }
  return m;
}

// Global stabiliser: rows were stabilised by their own maxima m_i; rescale by exp(m_i - max m).
template <typename T>
void global_rescale(T* out, const T* m, int64_t N, int64_t D) {
  T M = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < N; ++i) M = nan_max(M, m[i]);
#pragma omp parallel for schedule(static) if (N * D > 65536)
  for (int64_t i = 0; i < N; ++i) {
    const T f = std::exp(m[i] - M);
    T* row = out + i * D;
    for (int64_t j = 0; j < D; ++j) row[j] *= f;
  }
}

}  // namespace

template <typename T>
void random_features_cpu(const RandomFeaturesParams<T>& p) {
  using V = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  constexpr int NR = 2 * W;
  const int64_t N = p.N, d = p.d, D = p.D;
  const int64_t Dout = p.kind == Kind::CosSin ? 2 * D : D;
  if (N == 0 || D == 0) return;
  const bool two_pass = p.kind == Kind::Positive && p.stabilize != Stabilize::None;
  const int64_t npan = (D + NR - 1) / NR;
  // Pack W (d, D) into npan panels of (d, NR), zero-padded; bias padded.
  auto Wp = aligned_buffer<T>(npan * d * NR);
  auto bp = aligned_buffer<T>(npan * NR);
  for (int64_t j = 0; j < npan * NR; ++j) bp[j] = (p.b != nullptr && j < D) ? p.b[j] : T(0);
#pragma omp parallel for schedule(static) if (npan * d > 4096)
  for (int64_t q = 0; q < npan; ++q) {
    T* dst = Wp.get() + q * d * NR;
    const int64_t c0 = q * NR, nc = std::min<int64_t>(NR, D - c0);
    for (int64_t k = 0; k < d; ++k) {
      const T* src = p.W + k * D + c0;
      for (int64_t c = 0; c < nc; ++c) dst[k * NR + c] = src[c];
      for (int64_t c = nc; c < NR; ++c) dst[k * NR + c] = T(0);
    }
  }
  // Rows per task: the packed x block (MC x d) stays within ~192 KB (L2).
  int64_t MC = (192 * 1024 / static_cast<int64_t>(sizeof(T) * std::clamp<int64_t>(d, 1, 256))) / MR * MR;
  MC = std::clamp<int64_t>(MC, MR, 16 * MR);
  const int64_t ntasks = (N + MC - 1) / MC;
  // Column blocks: kPanelsPerBlock W panels (~128 KB for d = 128) stay in L2 while a micro-panel
  // of x (L1) sweeps them, so each output row is written in long sequential runs.
  // K is split in slices of KC so that one W panel slice (KC x NR) stays in L1; partial sums of
  // the MC x (block) tile wait in a per-thread buffer (L2) between slices.
  constexpr int64_t KC = 256;
  const int64_t kPanelsPerBlock =
      std::max<int64_t>(1, (128 * 1024) / static_cast<int64_t>(sizeof(T) * NR * std::clamp<int64_t>(d, 1, KC)));
  // Non-temporal stores (put(..., nt)) are kept available but off: measured on a fresh 800 MB
  // output (the common case: the op allocates it), plain stores were 12-20% faster, since the
  // kernel's zeroing of each newly faulted page leaves its lines in cache.
  const bool nt = false;
#pragma omp parallel if (ntasks > 1 && N * D * d > 262144)
  {
    auto Xp = aligned_buffer<T>(MC * std::max<int64_t>(d, 1));
    auto Cbuf = aligned_buffer<T>(d > KC ? MC * kPanelsPerBlock * NR : 1);
    std::vector<T> half_sq(MC);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntasks; ++t) {
      const int64_t r0 = t * MC, mc = std::min(MC, N - r0);
      const int64_t nmp = (mc + MR - 1) / MR;
      // Pack rows [r0, r0+mc) into micro-panels Xp[ip][k][MR]; |x|^2/2 per row.
      for (int64_t ip = 0; ip < nmp; ++ip) {
        T* dst = Xp.get() + ip * d * MR;
        for (int r = 0; r < MR; ++r) {
          const int64_t row = ip * MR + r;
          if (row < mc) {
            const T* src = p.x + (r0 + row) * d;
            T s = 0;
            for (int64_t k = 0; k < d; ++k) {
              dst[k * MR + r] = src[k];
              s += src[k] * src[k];
            }
            half_sq[row] = s / 2;
          } else {
            for (int64_t k = 0; k < d; ++k) dst[k * MR + r] = T(0);
          }
        }
      }
      for (int64_t q0 = 0; q0 < npan; q0 += kPanelsPerBlock) {
        const int64_t q1 = std::min(npan, q0 + kPanelsPerBlock);
        for (int64_t k0 = 0; k0 < std::max<int64_t>(d, 1); k0 += KC) {
          const int64_t kc = std::min(KC, d - k0);
          const bool first = k0 == 0, last = k0 + KC >= d;
          for (int64_t ip = 0; ip < nmp; ++ip) {
            const int nr = static_cast<int>(std::min<int64_t>(MR, mc - ip * MR));
            for (int64_t q = q0; q < q1; ++q) {
              const T* wp = Wp.get() + q * d * NR + k0 * NR;
              T* cb = Cbuf.get() + ((ip * kPanelsPerBlock) + (q - q0)) * MR * NR;  // partial sums (K > KC)
              V acc[MR][2];
              for (int r = 0; r < MR; ++r)
                for (int h = 0; h < 2; ++h) acc[r][h] = first ? V{} : load<V>(cb + r * NR + h * W);
              microkernel<T>(Xp.get() + ip * d * MR + k0 * MR, wp, kc, acc);
              if (!last) {
                for (int r = 0; r < MR; ++r)
                  for (int h = 0; h < 2; ++h) store(cb + r * NR + h * W, acc[r][h]);
                continue;
              }
              const int64_t c0 = q * NR;
              const int64_t nc = std::min<int64_t>(NR, D - c0);
              const int nc0 = static_cast<int>(std::min<int64_t>(W, nc)),
                        nc1 = static_cast<int>(std::max<int64_t>(nc - W, 0));
              const V bias0 = load<V>(bp.get() + c0), bias1 = load<V>(bp.get() + c0 + W);
              for (int r = 0; r < nr; ++r) {
                const int64_t row = ip * MR + r;
                T* o = p.out + (r0 + row) * Dout + c0;
                const V z0 = acc[r][0] + bias0, z1 = acc[r][1] + bias1;
                if (two_pass) {  // raw z; the exponential follows once the row maximum is known
                  if (nc == NR) {
                    store(o, z0);
                    store(o + W, z1);
                  } else {
                    for (int i = 0; i < nc0; ++i) o[i] = z0[i];
                    for (int i = 0; i < nc1; ++i) o[W + i] = z1[i];
                  }
                  continue;
                }
                const T shift = half_sq[row];
                T* os = p.kind == Kind::CosSin ? o + D : nullptr;
                epilogue_vec<T>(p.kind, z0, p.scale, shift, o, os, nc0, nt);
                if (nc1 > 0) epilogue_vec<T>(p.kind, z1, p.scale, shift, o + W, os ? os + W : nullptr, nc1, nt);
              }
            }
          }
        }
      }
#if defined(__AVX__)
      if (nt) _mm_sfence();
#endif
      if (two_pass)
        for (int64_t row = 0; row < mc; ++row) {
          const T m = positive_row<T>(p.out + (r0 + row) * Dout, D, half_sq[row], p.scale);
          if (p.rowmax != nullptr) p.rowmax[r0 + row] = m;
        }
    }
  }
  if (p.kind == Kind::Positive && p.stabilize == Stabilize::Global) global_rescale<T>(p.out, p.rowmax, N, D);
}

// ---------------------------------------------------------------- structured maps
namespace {

// z (P values) of block `blk` for one input row: buffer v (P) is overwritten with z / c, where the
// returned factor c is the normalisation still to apply.
template <typename T>
T structured_block(const StructuredFeaturesParams<T>& p, const T* xrow, int64_t blk, T* v, T* tmp) {
  const int64_t P = p.P, d = p.d;
  const T* s0 = p.diag + (blk * 3 + 0) * P;
  const T* s1 = s0 + P;
  const T* s2 = s1 + P;
  if (p.block == Block::Sorf) {
    // sqrt(P) Hn s0 Hn s1 Hn s2 x  =  (1/P) H s0 H s1 H s2 x
    for (int64_t i = 0; i < d; ++i) v[i] = s2[i] * xrow[i];
    for (int64_t i = d; i < P; ++i) v[i] = T(0);
    fwht_inplace(v, P);
    for (int64_t i = 0; i < P; ++i) v[i] *= s1[i];
    fwht_inplace(v, P);
    for (int64_t i = 0; i < P; ++i) v[i] *= s0[i];
    fwht_inplace(v, P);
    return T(1) / static_cast<T>(P);
  }
  // Fastfood: s2 * sqrt(P) Hn s1 Perm Hn s0 x  =  s2 * (1/sqrt(P)) H s1 Perm H s0 x
  for (int64_t i = 0; i < d; ++i) tmp[i] = s0[i] * xrow[i];
  for (int64_t i = d; i < P; ++i) tmp[i] = T(0);
  fwht_inplace(tmp, P);
  const int64_t* perm = p.perm + blk * P;
  for (int64_t i = 0; i < P; ++i) v[i] = s1[i] * tmp[perm[i]];
  fwht_inplace(v, P);
  for (int64_t i = 0; i < P; ++i) v[i] *= s2[i];
  return T(1) / std::sqrt(static_cast<T>(P));
}

template <typename T>
void structured_rows(const StructuredFeaturesParams<T>& p, T* z_out, bool apply) {
  using V = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  const int64_t N = p.N, d = p.d, P = p.P, D = p.D;
  const int64_t Dout = (apply && p.kind == Kind::CosSin) ? 2 * D : D;
  const bool two_pass = apply && p.kind == Kind::Positive && p.stabilize != Stabilize::None;
#pragma omp parallel if (N > 1 && N * P * p.nblocks > 32768)
  {
    auto v = aligned_buffer<T>(P + W), tmp = aligned_buffer<T>(P);
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < N; ++r) {
      const T* xrow = p.x + r * d;
      T* orow = (apply ? p.out : z_out) + r * Dout;
      T hsq = 0;
      for (int64_t k = 0; k < d; ++k) hsq += xrow[k] * xrow[k];
      hsq /= 2;
      for (int64_t blk = 0; blk < p.nblocks; ++blk) {
        const int64_t c0 = blk * P;
        if (c0 >= D) break;
        const int64_t nc = std::min(P, D - c0);
        const T c = structured_block(p, xrow, blk, v.get(), tmp.get());
        for (int64_t i = 0; i < nc; ++i) v[i] = v[i] * c + (p.b ? p.b[c0 + i] : T(0));
        if (!apply || two_pass) {
          std::memcpy(orow + c0, v.get(), sizeof(T) * nc);
          continue;
        }
        T* os = p.kind == Kind::CosSin ? orow + D + c0 : nullptr;
        for (int64_t i = 0; i < nc; i += W) {
          const int n = static_cast<int>(std::min<int64_t>(W, nc - i));
          V z = V{};
          if (n == W)
            z = load<V>(v.get() + i);
          else
            for (int q = 0; q < n; ++q) z[q] = v[i + q];
          epilogue_vec<T>(p.kind, z, p.scale, hsq, orow + c0 + i, os ? os + i : nullptr, n);
        }
      }
      if (two_pass) {
        const T m = positive_row<T>(orow, D, hsq, p.scale);
        if (p.rowmax != nullptr) p.rowmax[r] = m;
      }
    }
  }
  if (apply && p.kind == Kind::Positive && p.stabilize == Stabilize::Global) global_rescale<T>(p.out, p.rowmax, N, D);
}

}  // namespace

template <typename T>
void structured_features_cpu(const StructuredFeaturesParams<T>& p) {
  if (p.N == 0 || p.D == 0) return;
  structured_rows<T>(p, nullptr, true);
}

template <typename T>
void structured_project_cpu(const StructuredFeaturesParams<T>& p, T* z) {
  if (p.N == 0 || p.D == 0) return;
  structured_rows<T>(p, z, false);
}

template <typename T>
void structured_adjoint_cpu(const StructuredFeaturesParams<T>& p, const T* gz, T* gx) {
  const int64_t N = p.N, d = p.d, P = p.P, D = p.D;
  if (N == 0) return;
#pragma omp parallel if (N > 1 && N * P * p.nblocks > 32768)
  {
    auto v = aligned_buffer<T>(P), tmp = aligned_buffer<T>(P), acc = aligned_buffer<T>(P);
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < N; ++r) {
      for (int64_t i = 0; i < P; ++i) acc[i] = T(0);
      const T* g = gz + r * D;
      for (int64_t blk = 0; blk < p.nblocks; ++blk) {
        const int64_t c0 = blk * P;
        if (c0 >= D) break;
        const int64_t nc = std::min(P, D - c0);
        const T* s0 = p.diag + (blk * 3 + 0) * P;
        const T* s1 = s0 + P;
        const T* s2 = s1 + P;
        if (p.block == Block::Sorf) {  // (1/P) s2 H s1 H s0 H g
          for (int64_t i = 0; i < nc; ++i) v[i] = g[c0 + i];
          for (int64_t i = nc; i < P; ++i) v[i] = T(0);
          fwht_inplace(v.get(), P);
          for (int64_t i = 0; i < P; ++i) v[i] *= s0[i];
          fwht_inplace(v.get(), P);
          for (int64_t i = 0; i < P; ++i) v[i] *= s1[i];
          fwht_inplace(v.get(), P);
          const T c = T(1) / static_cast<T>(P);
          for (int64_t i = 0; i < d; ++i) acc[i] += c * s2[i] * v[i];
        } else {  // (1/sqrt(P)) s0 H Perm^T s1 H s2 g
          for (int64_t i = 0; i < nc; ++i) v[i] = s2[i] * g[c0 + i];
          for (int64_t i = nc; i < P; ++i) v[i] = T(0);
          fwht_inplace(v.get(), P);
          const int64_t* perm = p.perm + blk * P;
          for (int64_t i = 0; i < P; ++i) tmp[i] = T(0);
          for (int64_t i = 0; i < P; ++i) tmp[perm[i]] += s1[i] * v[i];
          fwht_inplace(tmp.get(), P);
          const T c = T(1) / std::sqrt(static_cast<T>(P));
          for (int64_t i = 0; i < d; ++i) acc[i] += c * s0[i] * tmp[i];
        }
      }
      std::memcpy(gx + r * d, acc.get(), sizeof(T) * d);
    }
  }
}

template void random_features_cpu<float>(const RandomFeaturesParams<float>&);
template void random_features_cpu<double>(const RandomFeaturesParams<double>&);
template void structured_features_cpu<float>(const StructuredFeaturesParams<float>&);
template void structured_features_cpu<double>(const StructuredFeaturesParams<double>&);
template void structured_project_cpu<float>(const StructuredFeaturesParams<float>&, float*);
template void structured_project_cpu<double>(const StructuredFeaturesParams<double>&, double*);
template void structured_adjoint_cpu<float>(const StructuredFeaturesParams<float>&, const float*, float*);
template void structured_adjoint_cpu<double>(const StructuredFeaturesParams<double>&, const double*, double*);

}  // namespace kernelfuse::features
