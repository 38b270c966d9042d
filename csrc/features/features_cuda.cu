// CUDA kernels of the random-feature ops (features_cuda.h). Torch-free, 64-bit indexing.
//
// * fwht: rows up to 32 KB are transformed in shared memory by one block each (log2 n
//   butterfly stages between barriers); longer rows by one global-memory kernel per stage.
// * random_features: a 64 x 64 output tile per block, 16-deep k slices staged in shared memory,
//   a 4 x 4 register tile per thread, the epilogue (bias, cos / sin / relu / step, scale) applied
//   to the registers before the single write. "positive" writes z, then one block per row
//   finds the row maximum and applies the exponential (and, for the global stabiliser, a
//   reduction over the row maxima and a rescale).
// * structured_features: one block per (row, block of P): the SORF / Fastfood chain on
//   shared memory (diagonals, permutation, three or two in-smem FWHTs), then the same epilogue.
// * structured_features_bwd: z recomputed by the forward kernel (raw, no epilogue); then one block
//   per row runs the transposed chains of its blocks on shared memory and accumulates gx in a
//   fixed order; gb is a two-pass column sum (per chunk of rows, then over the chunks).
//
// Status: compiled for sm_80 / sm_90a, not yet run on a GPU; every kernel runs under the CUDA
// simulator against the float64 reference (tests/sim/test_sim_features*.py).
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "features_cuda.h"
#include "common/cuda_launch.cuh"

namespace kernelfuse::features {
namespace {

__device__ __forceinline__ void sincos_t(float z, float* s, float* c) { sincosf(z, s, c); }
__device__ __forceinline__ void sincos_t(double z, double* s, double* c) { sincos(z, s, c); }
__device__ __forceinline__ float exp_t(float z) { return expf(z); }
__device__ __forceinline__ double exp_t(double z) { return exp(z); }

// The epilogue for one element (column j < D of row `row`), z including the bias.
template <typename T>
__device__ __forceinline__ void epilogue(Kind kind, T z, T scale, T* row, int64_t j, int64_t D) {
  switch (kind) {
    case Kind::Cos: {
      T s, c;
      sincos_t(z, &s, &c);
      row[j] = scale * c;
      break;
    }
    case Kind::CosSin: {
      T s, c;
      sincos_t(z, &s, &c);
      row[j] = scale * c;
      row[D + j] = scale * s;
      break;
    }
    case Kind::Positive:
      row[j] = z;
      break;  // raw z: the row pass applies the exponential
    case Kind::Relu:
      row[j] = z <= T(0) ? T(0) : scale * z;
      break;  // NaN stays NaN
    case Kind::Step:
      row[j] = z > T(0) ? scale : (z <= T(0) ? T(0) : z);
      break;
  }
}

// ---------------------------------------------------------------- fwht
// In-place unnormalised Walsh-Hadamard transform of s[0, P) by the whole block (P a power of two).
template <typename T>
__device__ void smem_fwht(T* s, int64_t P) {
  for (int64_t h = 1; h < P; h *= 2) {
    for (int64_t q = threadIdx.x; q < P / 2; q += blockDim.x) {
      const int64_t i = (q / h) * 2 * h + (q % h);
      const T a = s[i], b = s[i + h];
      s[i] = a + b;
      s[i + h] = a - b;
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void fwht_smem_kernel(FwhtParams<T> p) {
  KF_DYNAMIC_SHARED(unsigned char, smem_raw);
  T* s = reinterpret_cast<T*>(smem_raw);
  const int64_t n = p.n;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const T* x = p.x + r * n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s[i] = x[i];
    __syncthreads();
    smem_fwht(s, n);
    T* o = p.out + r * n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = s[i] * p.scale;
    __syncthreads();
  }
}

template <typename T>
__global__ void fwht_stage_kernel(T* __restrict__ v, int64_t rows, int64_t n, int64_t h, T scale) {
  const int64_t half = n / 2, total = rows * half;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / half, q = t % half;
    const int64_t i = r * n + (q / h) * 2 * h + (q % h);
    const T a = v[i], b = v[i + h];
    v[i] = (a + b) * scale;
    v[i + h] = (a - b) * scale;
  }
}

int grid_for(int64_t work, int threads) {
  const int64_t g = (work + threads - 1) / threads;
  return static_cast<int>(g < 65535 * 16 ? (g > 0 ? g : 1) : 65535 * 16);
}

// ---------------------------------------------------------------- random_features: tiled GEMM + epilogue
constexpr int TM = 64, TN = 64, TK = 16, RM = 4, RN = 4;  // 16 x 16 threads, 4 x 4 outputs each

template <typename T>
__global__ void __launch_bounds__(256) rf_gemm_kernel(RandomFeaturesParams<T> p) {
  KF_SHARED(T, As, [TK][TM + 1]);
  KF_SHARED(T, Bs, [TK][TN]);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t r0 = int64_t(blockIdx.y) * TM, c0 = int64_t(blockIdx.x) * TN;
  const int64_t N = p.N, d = p.d, D = p.D;
  const int64_t Dout = p.kind == Kind::CosSin ? 2 * D : D;
  T acc[RM][RN];
#pragma unroll
  for (int i = 0; i < RM; ++i)
#pragma unroll
    for (int j = 0; j < RN; ++j) acc[i][j] = T(0);
  for (int64_t k0 = 0; k0 < d; k0 += TK) {
    for (int e = threadIdx.x; e < TM * TK; e += 256) {  // x tile: rows r0.., k0.. (transposed into As)
      const int rr = e / TK, kk = e % TK;
      const int64_t r = r0 + rr, k = k0 + kk;
      As[kk][rr] = (r < N && k < d) ? p.x[r * d + k] : T(0);
    }
    for (int e = threadIdx.x; e < TK * TN; e += 256) {  // W tile: k0.., c0..
      const int kk = e / TN, cc = e % TN;
      const int64_t k = k0 + kk, c = c0 + cc;
      Bs[kk][cc] = (k < d && c < D) ? p.W[k * D + c] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TK; ++kk) {
      T a[RM], b[RN];
#pragma unroll
      for (int i = 0; i < RM; ++i) a[i] = As[kk][ty * RM + i];
#pragma unroll
      for (int j = 0; j < RN; ++j) b[j] = Bs[kk][tx + 16 * j];  // strided columns: conflict-free reads
#pragma unroll
      for (int i = 0; i < RM; ++i)
#pragma unroll
        for (int j = 0; j < RN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const int64_t r = r0 + ty * RM + i;
    if (r >= N) continue;
    T* row = p.out + r * Dout;
#pragma unroll
    for (int j = 0; j < RN; ++j) {
      const int64_t c = c0 + tx + 16 * j;
      if (c >= D) continue;
      const T z = acc[i][j] + (p.b != nullptr ? p.b[c] : T(0));
      epilogue(p.kind, z, p.scale, row, c, D);
    }
  }
}

// One block per row: m = max z (or 0), out = scale * exp(z - |x|^2/2 - m), rowmax[r] = m.
template <typename T>
__global__ void positive_rows_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t N, int64_t d, int64_t D,
                                     T scale, bool subtract_max, T* __restrict__ rowmax) {
  KF_SHARED(T, red, [32]);
  KF_SHARED(T, bcast, [2]);
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    T* row = out + r * D;
    T m = -INFINITY, sq = T(0);
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) m = nan_max(m, row[j]);
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) sq += x[r * d + k] * x[r * d + k];
    for (int o = 16; o > 0; o >>= 1) {
      m = nan_max(m, __shfl_down_sync(0xffffffffu, m, o));
      sq += __shfl_down_sync(0xffffffffu, sq, o);
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) / 32;
    if (lane == 0) red[w] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
      T mm = -INFINITY;
      for (int i = 0; i < nw; ++i) mm = nan_max(mm, red[i]);
      bcast[0] = subtract_max ? mm : T(0);  // NaN or -inf (inf inputs): the row is NaN, as the reference's
    }
    __syncthreads();
    if (lane == 0) red[w] = sq;
    __syncthreads();
    if (threadIdx.x == 0) {
      T ss = 0;
      for (int i = 0; i < nw; ++i) ss += red[i];
      bcast[1] = ss / 2;
      if (rowmax != nullptr) rowmax[r] = bcast[0];
    }
    __syncthreads();
    const T shift = bcast[0] + bcast[1];
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) row[j] = scale * exp_t(row[j] - shift);
    __syncthreads();
  }
}

// Global stabiliser: M = max_r rowmax[r] (one block), then rows *= exp(rowmax[r] - M).
template <typename T>
__global__ void global_max_kernel(T* __restrict__ rowmax, int64_t N) {
  KF_SHARED(T, red, [32]);
  T m = -INFINITY;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) m = nan_max(m, rowmax[r]);
  for (int o = 16; o > 0; o >>= 1) m = nan_max(m, __shfl_down_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    T mm = -INFINITY;
    for (int i = 0; i < (blockDim.x + 31) / 32; ++i) mm = nan_max(mm, red[i]);
    rowmax[N] = mm;  // the slot after the N row maxima
  }
}

template <typename T>
__global__ void global_rescale_kernel(T* __restrict__ out, const T* __restrict__ rowmax, int64_t N, int64_t D) {
  const T M = rowmax[N];
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N * D; t += int64_t(gridDim.x) * blockDim.x)
    out[t] *= exp_t(rowmax[t / D] - M);
}

template <typename T>
void positive_passes(T* out, const T* x, int64_t N, int64_t d, int64_t D, T scale, Stabilize stab, T* rowmax,
                     cudaStream_t stream) {
  const int grid = static_cast<int>(N < 65535 * 8 ? N : 65535 * 8);
  launch_kernel("features: positive_rows_kernel", positive_rows_kernel<T>, grid, 256, 0, stream, out, x, N, d, D, scale,
                stab != Stabilize::None, rowmax);
  if (stab == Stabilize::Global) {
    if (rowmax == nullptr)
      throw std::runtime_error("kernelfuse.features: the global stabiliser needs a rowmax buffer of N + 1");
    launch_kernel("features: global_max_kernel", global_max_kernel<T>, 1, 1024, 0, stream, rowmax, N);
    launch_kernel("features: global_rescale_kernel", global_rescale_kernel<T>, grid_for(N * D, 256), 256, 0, stream,
                  out, rowmax, N, D);
  }
}

// ---------------------------------------------------------------- structured_features
// v <- H diag(s) v, by the whole block in shared memory (the SORF step).
template <typename T>
__device__ void smem_scale_fwht(T* v, const T* s, int64_t P) {
  for (int64_t i = threadIdx.x; i < P; i += blockDim.x) v[i] *= s[i];
  __syncthreads();
  smem_fwht(v, P);
}

template <typename T>
__global__ void structured_kernel(StructuredFeaturesParams<T> p) {
  KF_DYNAMIC_SHARED(unsigned char, smem_raw);
  T* v = reinterpret_cast<T*>(smem_raw);
  T* t = v + p.P;
  const int64_t P = p.P, d = p.d, D = p.D;
  const int64_t Dout = p.kind == Kind::CosSin ? 2 * D : D;
  const int64_t nb = (D + P - 1) / P;
  for (int64_t task = blockIdx.x; task < p.N * nb; task += gridDim.x) {
    const int64_t r = task / nb, blk = task % nb;
    const T* xr = p.x + r * d;
    const T* s0 = p.diag + (blk * 3) * P;
    const T* s1 = s0 + P;
    const T* s2 = s1 + P;
    T c;
    if (p.block == Block::Sorf) {
      for (int64_t i = threadIdx.x; i < P; i += blockDim.x) v[i] = i < d ? s2[i] * xr[i] : T(0);
      __syncthreads();
      smem_fwht(v, P);
      smem_scale_fwht(v, s1, P);
      smem_scale_fwht(v, s0, P);
      c = T(1) / T(P);
    } else {
      for (int64_t i = threadIdx.x; i < P; i += blockDim.x) t[i] = i < d ? s0[i] * xr[i] : T(0);
      __syncthreads();
      smem_fwht(t, P);
      const int64_t* perm = p.perm + blk * P;
      for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
        const int64_t q = perm[i];  // not validated on the device: an index out of [0, P) gives NaN
        v[i] = s1[i] * (q >= 0 && q < P ? t[q] : T(NAN));
      }
      __syncthreads();
      smem_fwht(v, P);
      for (int64_t i = threadIdx.x; i < P; i += blockDim.x) v[i] *= s2[i];
      __syncthreads();
      c = T(1) / sqrt(T(P));
    }
    T* row = p.out + r * Dout;
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
      const int64_t j = blk * P + i;
      if (j < D) epilogue(p.kind, v[i] * c + (p.b != nullptr ? p.b[j] : T(0)), p.scale, row, j, D);
    }
    __syncthreads();
  }
}

// One block per row: gx[r] = sum over the row's blocks of J_blk^T gz[r, blk], the chain of the
// forward transposed (H is symmetric; the permutation becomes a scatter). Thread i owns gx[r, i]
// for every block, so the sum runs in block order: deterministic.
template <typename T>
__global__ void structured_adjoint_kernel(StructuredFeaturesParams<T> p, const T* __restrict__ gz, T* __restrict__ gx) {
  KF_DYNAMIC_SHARED(unsigned char, smem_raw);
  T* v = reinterpret_cast<T*>(smem_raw);
  T* t = v + p.P;
  const int64_t P = p.P, d = p.d, D = p.D;
  const int64_t nb = (D + P - 1) / P;
  for (int64_t r = blockIdx.x; r < p.N; r += gridDim.x) {
    const T* g = gz + r * D;
    T* gr = gx + r * d;
    for (int64_t blk = 0; blk < nb; ++blk) {
      const int64_t c0 = blk * P, nc = D - c0 < P ? D - c0 : P;
      const T* s0 = p.diag + (blk * 3) * P;
      const T* s1 = s0 + P;
      const T* s2 = s1 + P;
      const T* w;  // this block adds c * w[i] * u[i] to gx[r, i]
      const T* u;
      T c;
      if (p.block == Block::Sorf) {  // (1/P) s2 H s1 H s0 H g
        for (int64_t i = threadIdx.x; i < P; i += blockDim.x) v[i] = i < nc ? g[c0 + i] : T(0);
        __syncthreads();
        smem_fwht(v, P);
        smem_scale_fwht(v, s0, P);
        smem_scale_fwht(v, s1, P);
        c = T(1) / T(P);
        w = s2;
        u = v;
      } else {  // (1/sqrt(P)) s0 H Perm^T s1 H s2 g
        for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
          v[i] = i < nc ? s2[i] * g[c0 + i] : T(0);
          t[i] = T(0);
        }
        __syncthreads();
        smem_fwht(v, P);
        const int64_t* perm = p.perm + blk * P;
        for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
          // (Perm^T y)[perm[i]] += y[i]: atomic, since perm need not be a permutation (any index in
          // [0, P) is accepted, as on the CPU); an index out of range poisons the row with NaN
          const int64_t q = perm[i];
          if (q >= 0 && q < P)
            atomicAdd(&t[q], s1[i] * v[i]);
          else
            atomicAdd(&t[0], T(NAN));
        }
        __syncthreads();
        smem_fwht(t, P);
        c = T(1) / sqrt(T(P));
        w = s0;
        u = t;
      }
      for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        const T val = c * w[i] * u[i];
        gr[i] = blk == 0 ? val : gr[i] + val;
      }
      __syncthreads();  // v / t are overwritten by the next block
    }
  }
}

// Pass 1 of gb: partial[c, j] = sum of gz[r, j] over the rows r of chunk c (blockIdx.y), one thread
// per column (consecutive threads read consecutive columns of a row).
template <typename T>
__global__ void colsum_partial_kernel(const T* __restrict__ gz, int64_t N, int64_t D, int64_t rows_per_chunk,
                                      T* __restrict__ partial) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= D) return;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < N ? r0 + rows_per_chunk : N;
  T s = T(0);
  for (int64_t r = r0; r < r1; ++r) s += gz[r * D + j];
  partial[int64_t(blockIdx.y) * D + j] = s;
}

// Pass 2: gb[j] = sum over the chunks of partial[c, j], in chunk order.
template <typename T>
__global__ void colsum_final_kernel(const T* __restrict__ partial, int64_t chunks, int64_t D, T* __restrict__ gb) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < D; j += int64_t(gridDim.x) * blockDim.x) {
    T s = T(0);
    for (int64_t c = 0; c < chunks; ++c) s += partial[c * D + j];
    gb[j] = s;
  }
}

// The shared-memory bound of the structured kernels (2 P values per block) and their launch shape.
template <typename T>
size_t structured_smem_bytes(const StructuredFeaturesParams<T>& p, const char* op) {
  const size_t bytes = 2 * sizeof(T) * static_cast<size_t>(p.P);
  if (bytes > 48 * 1024)
    throw std::runtime_error(std::string("kernelfuse.") + op +
                             ": on CUDA, supports P * sizeof(dtype) <= 24 KB (P = " + std::to_string(p.P) + ")");
  return bytes;
}

int structured_threads(int64_t P) { return static_cast<int>(P / 2 < 256 ? (P / 2 > 32 ? P / 2 : 32) : 256); }

}  // namespace

template <typename T>
void launch_fwht(const FwhtParams<T>& p, void* stream_) {
  const auto stream = static_cast<cudaStream_t>(stream_);
  if (p.rows == 0) return;
  const size_t bytes = sizeof(T) * static_cast<size_t>(p.n);
  if (bytes <= 32 * 1024) {
    const int threads = static_cast<int>(p.n / 2 < 256 ? (p.n / 2 > 32 ? p.n / 2 : 32) : 256);
    const int grid = static_cast<int>(p.rows < 65535 * 8 ? p.rows : 65535 * 8);
    launch_kernel("features: fwht_smem_kernel", fwht_smem_kernel<T>, grid, threads, bytes, stream, p);
    return;
  }
  if (p.out != p.x) {
    check_cuda(cudaMemcpyAsync(p.out, p.x, bytes * p.rows, cudaMemcpyDeviceToDevice, stream), "fwht: copy");
  }
  for (int64_t h = 1; h < p.n; h *= 2) {
    const T scale = (2 * h == p.n) ? p.scale : T(1);
    launch_kernel("features: fwht_stage_kernel", fwht_stage_kernel<T>, grid_for(p.rows * p.n / 2, 256), 256, 0, stream,
                  p.out, p.rows, p.n, h, scale);
  }
}

template <typename T>
void launch_random_features(const RandomFeaturesParams<T>& p, void* stream_) {
  const auto stream = static_cast<cudaStream_t>(stream_);
  if (p.N == 0 || p.D == 0) return;
  const int64_t gy = (p.N + TM - 1) / TM, gx = (p.D + TN - 1) / TN;
  if (gy > 65535) {  // grid.y limit: split the rows
    for (int64_t r0 = 0; r0 < p.N; r0 += 65535 * int64_t(TM)) {
      RandomFeaturesParams<T> q = p;
      q.N = (p.N - r0) < 65535 * int64_t(TM) ? (p.N - r0) : 65535 * int64_t(TM);
      q.x = p.x + r0 * p.d;
      q.out = p.out + r0 * (p.kind == Kind::CosSin ? 2 * p.D : p.D);
      q.kind = p.kind;
      const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>((q.N + TM - 1) / TM));
      launch_kernel("features: rf_gemm_kernel", rf_gemm_kernel<T>, grid, 256, 0, stream, q);
    }
  } else {
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
    launch_kernel("features: rf_gemm_kernel", rf_gemm_kernel<T>, grid, 256, 0, stream, p);
  }
  if (p.kind == Kind::Positive) positive_passes<T>(p.out, p.x, p.N, p.d, p.D, p.scale, p.stabilize, p.rowmax, stream);
}

template <typename T>
void launch_structured_features(const StructuredFeaturesParams<T>& p, void* stream_) {
  const auto stream = static_cast<cudaStream_t>(stream_);
  if (p.N == 0 || p.D == 0) return;
  const size_t bytes = structured_smem_bytes(p, "structured_features");
  const int64_t tasks = p.N * ((p.D + p.P - 1) / p.P);
  const int grid = static_cast<int>(tasks < 65535 * 16 ? tasks : 65535 * 16);
  launch_kernel("features: structured_kernel", structured_kernel<T>, grid, structured_threads(p.P), bytes, stream, p);
  if (p.kind == Kind::Positive) positive_passes<T>(p.out, p.x, p.N, p.d, p.D, p.scale, p.stabilize, p.rowmax, stream);
}

template <typename T>
void launch_structured_project(const StructuredFeaturesParams<T>& p, T* z, void* stream_) {
  const auto stream = static_cast<cudaStream_t>(stream_);
  if (p.N == 0 || p.D == 0) return;
  const size_t bytes = structured_smem_bytes(p, "structured_features_bwd");
  StructuredFeaturesParams<T> q = p;
  q.out = z;
  q.kind = Kind::Positive;  // Positive's epilogue writes the raw z + b (the exponential is a later pass)
  const int64_t tasks = p.N * ((p.D + p.P - 1) / p.P);
  const int grid = static_cast<int>(tasks < 65535 * 16 ? tasks : 65535 * 16);
  launch_kernel("features: structured_kernel", structured_kernel<T>, grid, structured_threads(p.P), bytes, stream, q);
}

template <typename T>
void launch_structured_features_bwd(const StructuredFeaturesBwdParams<T>& q, void* stream_) {
  const auto stream = static_cast<cudaStream_t>(stream_);
  const StructuredFeaturesParams<T>& p = q.f;
  if (q.gx != nullptr && p.N > 0 && p.d > 0) {
    if (p.D == 0) {  // no features: J is empty
      check_cuda(cudaMemsetAsync(q.gx, 0, sizeof(T) * static_cast<size_t>(p.N * p.d), stream),
                 "structured_features_bwd: zero gx");
    } else {
      const size_t bytes = structured_smem_bytes(p, "structured_features_bwd");
      const int grid = static_cast<int>(p.N < 65535 * 16 ? p.N : 65535 * 16);
      launch_kernel("features: structured_adjoint_kernel", structured_adjoint_kernel<T>, grid, structured_threads(p.P),
                    bytes, stream, p, q.gz, q.gx);
    }
  }
  if (q.gb != nullptr && p.D > 0) {
    if (p.N == 0) {
      check_cuda(cudaMemsetAsync(q.gb, 0, sizeof(T) * static_cast<size_t>(p.D), stream),
                 "structured_features_bwd: zero gb");
      return;
    }
    const int64_t chunks = structured_bwd_gb_chunks(p.N);
    const int64_t rows_per_chunk = (p.N + chunks - 1) / chunks;
    if (chunks > 1 && q.gb_partial == nullptr)
      throw std::runtime_error("kernelfuse.structured_features_bwd: gb needs a scratch of (" + std::to_string(chunks) +
                               ", D) partial sums");
    T* dst = chunks > 1 ? q.gb_partial : q.gb;
    const dim3 grid(static_cast<unsigned>((p.D + 255) / 256), static_cast<unsigned>(chunks));
    launch_kernel("features: colsum_partial_kernel", colsum_partial_kernel<T>, grid, 256, 0, stream, q.gz, p.N, p.D,
                  rows_per_chunk, dst);
    if (chunks > 1)
      launch_kernel("features: colsum_final_kernel", colsum_final_kernel<T>, grid_for(p.D, 256), 256, 0, stream,
                    static_cast<const T*>(q.gb_partial), chunks, p.D, q.gb);
  }
}

template void launch_fwht<float>(const FwhtParams<float>&, void*);
template void launch_fwht<double>(const FwhtParams<double>&, void*);
template void launch_random_features<float>(const RandomFeaturesParams<float>&, void*);
template void launch_random_features<double>(const RandomFeaturesParams<double>&, void*);
template void launch_structured_features<float>(const StructuredFeaturesParams<float>&, void*);
template void launch_structured_features<double>(const StructuredFeaturesParams<double>&, void*);
template void launch_structured_project<float>(const StructuredFeaturesParams<float>&, float*, void*);
template void launch_structured_project<double>(const StructuredFeaturesParams<double>&, double*, void*);
template void launch_structured_features_bwd<float>(const StructuredFeaturesBwdParams<float>&, void*);
template void launch_structured_features_bwd<double>(const StructuredFeaturesBwdParams<double>&, void*);

}  // namespace kernelfuse::features
