// CUDA kernels of the fused NNGP / NTK products (nngp_matmul.h). Torch-free: raw pointers, a
// params struct and a stream. One launch per call, no host synchronisation.
//
// A block of kBlock = 128 threads owns 128 queries (one per thread) and walks the points in tiles
// of kTile = 32, staged cooperatively in shared memory in chunks of kDC = 32 dimensions; each
// thread keeps the tile's 32 inner products with its query in registers, and the staging threads
// accumulate the tile's squared norms on the way. Then the layer recursion (nngp_math.h, the same
// header as the CPU kernel) runs per pair.
//   nngp_fwd_kernel:   grid (query blocks, column chunks of kCC = 8): the tile's weight rows are
//                      staged and each thread adds K * w into its kCC column totals.
//   nngp_gradx_kernel: grid (query blocks, output-dimension chunks of kDG = 16): coef = g_q . w_i
//                      over every column (w staged in chunks of kCC), then the chunk's kDG
//                      coordinates of the tile are staged and coef dK/ds y_i accumulated; the
//                      2 dK/dnx x_q term is added at the end (so the inner products are formed
//                      once per output chunk: d / kDG times, the price of O(kDG) registers).
//                      With out2 (GW) also K w: block y adds the tile's K into its kCC columns
//                      y kCC.. of out2, and grid.y spans max(d / kDG, c / kCC) chunks (blocks
//                      past d only do that, blocks past c only the gradient).
// Numerics: per-tile partial sums in T, added to double totals (float32 stays near a float64
// computation, as the CPU kernel). Storage types float / double.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/cuda_launch.cuh"
#include "nngp_math.h"
#include "nngp_matmul.h"

namespace kernelfuse::nngp {
namespace {

constexpr int kBlock = 128;
constexpr int kTile = 32;
constexpr int kDC = 32;
constexpr int kCC = 8;
constexpr int kDG = 16;
constexpr int64_t kMaxGridY = 65535;

template <typename T>
__device__ __forceinline__ Cfg<T> make_cfg(const NngpParams<T>& p) {
  return Cfg<T>{p.depth, p.ntk, static_cast<T>(p.sigma_w2), static_cast<T>(p.sigma_b2),
                static_cast<T>(1.0 / static_cast<double>(p.d))};
}

// s[j] = x_q . y_{i0 + j} for the tile (threads past m compute nothing but stage), and the tile's
// squared norms into yn (written after a barrier; visible after the caller's next barrier).
template <typename T>
__device__ __forceinline__ void tile_products(const NngpParams<T>& p, const T* __restrict__ xq, bool active, int64_t i0,
                                              int nt, T (&ys)[kTile][kDC + 1], T* yn, T (&s)[kTile]) {
  const int tid = threadIdx.x;
  for (int j = 0; j < kTile; ++j) s[j] = T(0);
  T ynl = T(0);
  for (int64_t k0 = 0; k0 < p.d; k0 += kDC) {
    const int kc = static_cast<int>(p.d - k0 < kDC ? p.d - k0 : kDC);
    __syncthreads();  // the previous chunk's readers are done
    for (int e = tid; e < kTile * kDC; e += kBlock) {
      const int j = e / kDC, k = e % kDC;
      ys[j][k] = (j < nt && k < kc) ? p.y[(i0 + j) * p.d + k0 + k] : T(0);
    }
    __syncthreads();
    if (tid < kTile)
      for (int k = 0; k < kc; ++k) ynl += ys[tid][k] * ys[tid][k];
    if (active) {
      for (int k = 0; k < kc; ++k) {
        const T xk = xq[k0 + k];
        for (int j = 0; j < kTile; ++j) s[j] += xk * ys[j][k];
      }
    }
  }
  __syncthreads();  // yn's readers of the previous tile are done
  if (tid < kTile) yn[tid] = ynl;
}

template <typename T, Activation ACT>
__global__ void __launch_bounds__(kBlock) nngp_fwd_kernel(NngpParams<T> p) {
  KF_SHARED(T, ys, [kTile][kDC + 1]);
  KF_SHARED(T, yn, [kTile]);
  KF_SHARED(T, ws, [kTile][kCC]);
  const Cfg<T> cf = make_cfg(p);
  const int tid = threadIdx.x;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * kBlock + tid;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kCC;
  const bool active = q < p.m;
  const T* xq = p.x + (active ? q : 0) * p.d;
  T nx = T(0);
  if (active)
    for (int64_t k = 0; k < p.d; ++k) nx += xq[k] * xq[k];
  double tot[kCC];
  for (int cc = 0; cc < kCC; ++cc) tot[cc] = 0.0;
  T s[kTile];
  for (int64_t i0 = 0; i0 < p.n; i0 += kTile) {
    const int nt = static_cast<int>(p.n - i0 < kTile ? p.n - i0 : kTile);
    tile_products(p, xq, active, i0, nt, ys, yn, s);
    for (int e = tid; e < kTile * kCC; e += kBlock) {
      const int j = e / kCC, cc = e % kCC;
      ws[j][cc] = (j < nt && c0 + cc < p.c) ? p.w[(i0 + j) * p.c + c0 + cc] : T(0);
    }
    __syncthreads();
    if (active && p.mode == Mode::Matrix) {
      if (blockIdx.y == 0)
        for (int j = 0; j < nt; ++j) {
          T a, b, e;
          p.out[q * p.n + i0 + j] = pair<ACT, false>(cf, s[j], nx, yn[j], a, b, e);
        }
    } else if (active) {
      T part[kCC];
      for (int cc = 0; cc < kCC; ++cc) part[cc] = T(0);
      for (int j = 0; j < nt; ++j) {
        T a, b, e;
        const T kv = pair<ACT, false>(cf, s[j], nx, yn[j], a, b, e);
        for (int cc = 0; cc < kCC; ++cc) part[cc] += kv * ws[j][cc];
      }
      for (int cc = 0; cc < kCC; ++cc) tot[cc] += static_cast<double>(part[cc]);
    }
  }
  if (active && p.mode != Mode::Matrix)
    for (int cc = 0; cc < kCC; ++cc)
      if (c0 + cc < p.c) p.out[q * p.c + c0 + cc] = static_cast<T>(tot[cc]);
}

template <typename T, Activation ACT, bool GW>
__global__ void __launch_bounds__(kBlock) nngp_gradx_kernel(NngpParams<T> p) {
  KF_SHARED(T, ys, [kTile][kDC + 1]);
  KF_SHARED(T, yn, [kTile]);
  KF_SHARED(T, ws, [kTile][kCC]);
  KF_SHARED(T, yg, [kTile][kDG]);
  KF_SHARED(T, w2s, [kTile][kCC]);  // GW: the tile's weight rows, this block's kCC columns
  const Cfg<T> cf = make_cfg(p);
  const int tid = threadIdx.x;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * kBlock + tid;
  const int64_t g0 = static_cast<int64_t>(blockIdx.y) * kDG;
  const int64_t c2 = static_cast<int64_t>(blockIdx.y) * kCC;  // GW: this block's out2 columns
  const bool want_dx = g0 < p.d;  // GW launches blocks past d when there are more column chunks
  const bool active = q < p.m;
  const T* xq = p.x + (active ? q : 0) * p.d;
  const T* gq = p.g ? p.g + (active ? q : 0) * p.c : nullptr;
  T nx = T(0);
  if (active)
    for (int64_t k = 0; k < p.d; ++k) nx += xq[k] * xq[k];
  double tot[kDG];
  for (int kk = 0; kk < kDG; ++kk) tot[kk] = 0.0;
  double totn = 0.0, tot2[kCC];
  for (int cc = 0; cc < kCC; ++cc) tot2[cc] = 0.0;
  T s[kTile], co[kTile];
  for (int64_t i0 = 0; i0 < p.n; i0 += kTile) {
    const int nt = static_cast<int>(p.n - i0 < kTile ? p.n - i0 : kTile);
    tile_products(p, xq, active, i0, nt, ys, yn, s);
    for (int j = 0; j < kTile; ++j) co[j] = (p.coef && active && j < nt) ? p.coef[q * p.n + i0 + j] : T(0);
    for (int64_t c0 = 0; c0 < (p.coef || !want_dx ? 0 : p.c); c0 += kCC) {
      __syncthreads();  // ws readers of the previous chunk are done
      for (int e = tid; e < kTile * kCC; e += kBlock) {
        const int j = e / kCC, cc = e % kCC;
        ws[j][cc] = (j < nt && c0 + cc < p.c) ? p.w[(i0 + j) * p.c + c0 + cc] : T(0);
      }
      __syncthreads();
      if (active) {
        T gl[kCC];
        for (int cc = 0; cc < kCC; ++cc) gl[cc] = c0 + cc < p.c ? gq[c0 + cc] : T(0);
        for (int j = 0; j < kTile; ++j) {
          T a = T(0);
          for (int cc = 0; cc < kCC; ++cc) a += gl[cc] * ws[j][cc];
          co[j] += a;
        }
      }
    }
    for (int e = tid; e < kTile * kDG; e += kBlock) {
      const int j = e / kDG, kk = e % kDG;
      yg[j][kk] = (j < nt && g0 + kk < p.d) ? p.y[(i0 + j) * p.d + g0 + kk] : T(0);
    }
    if constexpr (GW)
      for (int e = tid; e < kTile * kCC; e += kBlock) {
        const int j = e / kCC, cc = e % kCC;
        w2s[j][cc] = (j < nt && c2 + cc < p.c) ? p.w[(i0 + j) * p.c + c2 + cc] : T(0);
      }
    __syncthreads();  // yn (tile_products), yg and w2s visible
    if (active) {
      T sn = T(0), part[kDG], part2[kCC];
      for (int kk = 0; kk < kDG; ++kk) part[kk] = T(0);
      for (int cc = 0; cc < kCC; ++cc) part2[cc] = T(0);
      for (int j = 0; j < nt; ++j) {
        T ks, kx, ky;
        const T kv = pair<ACT, true>(cf, s[j], nx, yn[j], ks, kx, ky);
        const T a = co[j] * ks;
        sn += co[j] * kx;
        for (int kk = 0; kk < kDG; ++kk) part[kk] += a * yg[j][kk];
        if constexpr (GW)
          for (int cc = 0; cc < kCC; ++cc) part2[cc] += kv * w2s[j][cc];
      }
      totn += static_cast<double>(sn);
      for (int kk = 0; kk < kDG; ++kk) tot[kk] += static_cast<double>(part[kk]);
      if constexpr (GW)
        for (int cc = 0; cc < kCC; ++cc) tot2[cc] += static_cast<double>(part2[cc]);
    }
    __syncthreads();  // yg readers done before the next tile stages it
  }
  if (active)
    for (int kk = 0; kk < kDG; ++kk)
      if (g0 + kk < p.d)
        p.out[q * p.d + g0 + kk] = static_cast<T>(tot[kk] + 2.0 * totn * static_cast<double>(xq[g0 + kk]));
  if (GW && active)
    for (int cc = 0; cc < kCC; ++cc)
      if (c2 + cc < p.c) p.out2[q * p.c + c2 + cc] = static_cast<T>(tot2[cc]);
}

template <typename T, Activation ACT>
void launch_act(const NngpParams<T>& p, cudaStream_t st) {
  const int64_t gx = (p.m + kBlock - 1) / kBlock;
  if (gx >= (int64_t(1) << 31)) throw std::runtime_error("kernelfuse: nngp_matmul: too many query rows for one launch");
  if (p.mode != Mode::GradX) {
    const int64_t gy = p.mode == Mode::Matrix ? 1 : (p.c + kCC - 1) / kCC;
    if (gy > kMaxGridY)
      throw std::runtime_error("kernelfuse: nngp_matmul: too many weight columns (" + std::to_string(p.c) +
                               ") for one launch; at most " + std::to_string(kMaxGridY * kCC));
    launch_kernel("nngp_matmul: nngp_fwd_kernel", nngp_fwd_kernel<T, ACT>,
                  dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(kBlock), 0, st, p);
  } else {
    // with out2, grid.y spans the column chunks of out2 too (block y writes chunk y of each)
    const int64_t gd = (p.d + kDG - 1) / kDG, gc = p.out2 ? (p.c + kCC - 1) / kCC : 0;
    const int64_t gy = gd > gc ? gd : gc;
    if (gd > kMaxGridY)
      throw std::runtime_error("kernelfuse: nngp_matmul_bwd: too many dimensions (" + std::to_string(p.d) +
                               ") for one launch; at most " + std::to_string(kMaxGridY * kDG));
    if (gc > kMaxGridY)
      throw std::runtime_error("kernelfuse: nngp_matmul_bwd: too many weight columns (" + std::to_string(p.c) +
                               ") for one launch; at most " + std::to_string(kMaxGridY * kCC));
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
    if (p.out2)
      launch_kernel("nngp_matmul: nngp_gradx_kernel", nngp_gradx_kernel<T, ACT, true>, grid, dim3(kBlock), 0, st, p);
    else
      launch_kernel("nngp_matmul: nngp_gradx_kernel", nngp_gradx_kernel<T, ACT, false>, grid, dim3(kBlock), 0, st, p);
  }
}

}  // namespace

template <typename T>
void launch_nngp_matmul(const NngpParams<T>& p, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t w = p.mode == Mode::GradX ? p.d : (p.mode == Mode::Matrix ? p.n : p.c);
  if (p.m == 0 || w == 0) return;
  if (p.n == 0) {
    check_cuda(cudaMemsetAsync(p.out, 0, static_cast<size_t>(p.m * w) * sizeof(T), st), "nngp_matmul: zero the output");
    if (p.mode == Mode::GradX && p.out2 && p.c > 0)
      check_cuda(cudaMemsetAsync(p.out2, 0, static_cast<size_t>(p.m * p.c) * sizeof(T), st),
                 "nngp_matmul: zero the second output");
    return;
  }
  switch (p.act) {
    case Activation::Relu:
      launch_act<T, Activation::Relu>(p, st);
      break;
    case Activation::Erf:
      launch_act<T, Activation::Erf>(p, st);
      break;
    case Activation::Step:
      launch_act<T, Activation::Step>(p, st);
      break;
  }
}

template void launch_nngp_matmul<float>(const NngpParams<float>&, void*);
template void launch_nngp_matmul<double>(const NngpParams<double>&, void*);

}  // namespace kernelfuse::nngp
