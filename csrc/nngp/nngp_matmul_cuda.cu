// CUDA kernels of the fused NNGP / NTK products (nngp_matmul.h). Torch-free: raw pointers, a
// params struct and a stream. One launch per call, no host synchronisation.
//
// A block of kBlock = 128 threads owns 128 queries (one per thread) and walks the points in tiles
// of kTile = 32, staged cooperatively in shared memory in chunks of kDC = 32 dimensions; each
// thread keeps the tile's 32 inner products with its query in registers, and the staging threads
// (one per tile point) accumulate the tile's squared norms on the way. Then the layer recursion
// (nngp_math.h, the same header as the CPU kernel) runs per pair, kLG = 4 layers at a time, with
// the per-side quantities hoisted out of the pair loop (as the CPU kernel): each side's diagonal
// recursion and its Side (sqrt k, 1 / sqrt k, 1 / k or the erf forms, and d k / d n) depend on one
// point only, so the query's are formed once per thread (in registers; layers past kLG once per
// tile and group), the tile points' once per tile by the staging threads (in shared memory); the
// pair loop forms only the pair's own terms. Between layer groups (depth > kLG) the tile's pair
// states wait in a per-thread array.
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
constexpr int kLG = 4;
constexpr int64_t kMaxGridY = 65535;

template <typename T>
__device__ __forceinline__ Cfg<T> make_cfg(const NngpParams<T>& p) {
  return Cfg<T>{p.depth, p.ntk, static_cast<T>(p.sigma_w2), static_cast<T>(p.sigma_b2),
                static_cast<T>(1.0 / static_cast<double>(p.d))};
}

// Shared memory of both kernels: a dimension chunk of the tile's points, a column chunk of its
// weight rows, and the tile points' hoisted quantities of one layer group ([layer][point]).
template <typename T>
struct TileSmem {
  T ys[kTile][kDC + 1];
  T ws[kTile][kCC];
  T ps[kLG][kTile], prs[kLG][kTile], pdk[kLG][kTile];
};
// ... and the gradient kernel's: the tile's kDG output coordinates and (GW) out2's weight columns.
template <typename T>
struct GradSmem : TileSmem<T> {
  T yg[kTile][kDG];
  T w2s[kTile][kCC];
};

// One side's quantities for the layers g0 .. g0 + kLG - 1 that exist: Side's s and rs (its inv
// is rs^2, formed where used: fewer registers and shared loads) and d k / d n.
template <typename T>
struct SideGroup {
  T s[kLG], rs[kLG], dk[kLG];
};

// The group from the side's running diagonal (k, dk) at layer g0, advanced past the group
// (unrolled: the arrays stay in registers).
template <Activation ACT, typename T>
__device__ __forceinline__ SideGroup<T> side_group(const Cfg<T>& cf, int32_t g0, T& k, T& dk) {
  SideGroup<T> g{};
#pragma unroll
  for (int h = 0; h < kLG; ++h)
    if (g0 + h < cf.depth) {
      const Side<T> sd = side<ACT>(k);
      g.s[h] = sd.s;
      g.rs[h] = sd.rs;
      g.dk[h] = dk;
      next_diag<ACT>(cf, k, dk);
    }
  return g;
}

// The thread's query: its row, |x|^2, its first layer group (once per thread) and its running
// diagonal past that group (deeper networks' later groups start there, per tile).
template <typename T>
struct Query {
  int64_t q;
  bool active;
  const T* x;
  T nx, k, dk;
  SideGroup<T> first;
};

template <Activation ACT, typename T>
__device__ __forceinline__ Query<T> load_query(const NngpParams<T>& p, const Cfg<T>& cf) {
  Query<T> u;
  u.q = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  u.active = u.q < p.m;
  u.x = p.x + (u.active ? u.q : 0) * p.d;
  u.nx = T(0);
  if (u.active)
    for (int64_t k = 0; k < p.d; ++k) u.nx += u.x[k] * u.x[k];
  const T a0 = cf.sw2 * cf.inv_d;
  u.k = a0 * u.nx + cf.sb2;
  u.dk = a0;
  u.first = side_group<ACT>(cf, 0, u.k, u.dk);
  return u;
}

// s[j] = x_q . y_{i0 + j} for the tile (threads past m compute nothing but stage); returns the
// squared norm of point tid for the staging threads (tid < kTile; 0 elsewhere).
template <typename T>
__device__ __forceinline__ T tile_products(const NngpParams<T>& p, const Query<T>& qu, int64_t i0, int nt,
                                           TileSmem<T>& sm, T (&s)[kTile]) {
  const int tid = threadIdx.x;
  for (int j = 0; j < kTile; ++j) s[j] = T(0);
  T ynl = T(0);
  for (int64_t k0 = 0; k0 < p.d; k0 += kDC) {
    const int kc = static_cast<int>(p.d - k0 < kDC ? p.d - k0 : kDC);
    __syncthreads();  // the previous chunk's readers are done
    for (int e = tid; e < kTile * kDC; e += kBlock) {
      const int j = e / kDC, k = e % kDC;
      sm.ys[j][k] = (j < nt && k < kc) ? p.y[(i0 + j) * p.d + k0 + k] : T(0);
    }
    __syncthreads();
    if (tid < kTile)
      for (int k = 0; k < kc; ++k) ynl += sm.ys[tid][k] * sm.ys[tid][k];
    if (qu.active)
      for (int k = 0; k < kc; ++k) {
        const T xk = qu.x[k0 + k];
        for (int j = 0; j < kTile; ++j) s[j] += xk * sm.ys[j][k];
      }
  }
  return ynl;
}

// rows[j][cc] = w[i0 + j, c0 + cc] (0 past the tile or the columns); visible after a barrier.
template <typename T>
__device__ __forceinline__ void stage_weights(const NngpParams<T>& p, int64_t i0, int nt, int64_t c0,
                                              T (&rows)[kTile][kCC]) {
  for (int e = threadIdx.x; e < kTile * kCC; e += kBlock) {
    const int j = e / kCC, cc = e % kCC;
    rows[j][cc] = (j < nt && c0 + cc < p.c) ? p.w[(i0 + j) * p.c + c0 + cc] : T(0);
  }
}

// The staging threads (point tid) write their point's quantities of the group at g0; (k, dk) is
// the point's running diagonal. Barriers before (the previous group's readers) and after.
template <Activation ACT, typename T>
__device__ __forceinline__ void stage_points(const Cfg<T>& cf, int32_t g0, T& k, T& dk, TileSmem<T>& sm) {
  const int j = threadIdx.x;
  __syncthreads();
  if (j < kTile) {
    const SideGroup<T> g = side_group<ACT>(cf, g0, k, dk);
    for (int h = 0; h < kLG; ++h) {
      sm.ps[h][j] = g.s[h];
      sm.prs[h][j] = g.rs[h];
      sm.pdk[h][j] = g.dk[h];
    }
  }
  __syncthreads();
}

// The layers g0 .. g0 + kLG - 1 (those that exist) of the pair (query, point j).
template <Activation ACT, bool GRAD, bool NTK, typename T>
__device__ __forceinline__ PairState<T> advance_group(const Cfg<T>& cf, int32_t g0, const SideGroup<T>& qg,
                                                      const TileSmem<T>& sm, int j, PairState<T> u) {
#pragma unroll
  for (int h = 0; h < kLG; ++h)
    if (g0 + h < cf.depth) {
      const Side<T> qs = side_of(qg.s[h], qg.rs[h]), ps = side_of(sm.ps[h][j], sm.prs[h][j]);
      u = advance<ACT, GRAD, NTK>(cf, qs, qg.dk[h], ps, sm.pdk[h][j], u);
    }
  return u;
}

// The recursion of the thread's query with the tile's nt points, one layer group at a time (the
// points' quantities staged per group); then use(j, K, dK/ds, dK/dnx) for each point. Every thread
// takes part in the staging (barriers inside); the pair states wait in st between groups.
template <Activation ACT, bool GRAD, bool NTK, typename T, typename Use>
__device__ __forceinline__ void walk_tile(const Cfg<T>& cf, const Query<T>& qu, const T (&s)[kTile], T ynl, int nt,
                                          TileSmem<T>& sm, Use& use) {
  const T a0 = cf.sw2 * cf.inv_d;
  T kp = a0 * ynl + cf.sb2, dp = a0, kq = qu.k, dq = qu.dk;  // the staging thread's point; the query
  SideGroup<T> qg = qu.first;
  PairState<T> st[kTile];
  const int32_t ng = cf.depth > kLG ? (cf.depth + kLG - 1) / kLG : 1;
  for (int32_t gi = 0; gi < ng; ++gi) {
    const int32_t g0 = gi * kLG;
    stage_points<ACT>(cf, g0, kp, dp, sm);
    if (gi > 0) qg = side_group<ACT>(cf, g0, kq, dq);
    if (!qu.active) continue;
    for (int j = 0; j < nt; ++j) {
      PairState<T> u = gi == 0 ? first_layer(cf, s[j]) : st[j];
      u = advance_group<ACT, GRAD, NTK>(cf, g0, qg, sm, j, u);
      if (gi + 1 < ng)
        st[j] = u;
      else
        use(j, NTK ? u.th : u.k12, NTK ? u.ts : u.as, NTK ? u.tx : u.ax);
    }
  }
}

template <Activation ACT, bool GRAD, typename T, typename Use>
__device__ __forceinline__ void walk(const Cfg<T>& cf, const Query<T>& qu, const T (&s)[kTile], T ynl, int nt,
                                     TileSmem<T>& sm, Use&& use) {
  if (cf.ntk)  // uniform over the launch
    walk_tile<ACT, GRAD, true>(cf, qu, s, ynl, nt, sm, use);
  else
    walk_tile<ACT, GRAD, false>(cf, qu, s, ynl, nt, sm, use);
}

template <typename T, Activation ACT>
__global__ void __launch_bounds__(kBlock) nngp_fwd_kernel(NngpParams<T> p) {
  KF_SHARED(TileSmem<T>, sm, );
  const Cfg<T> cf = make_cfg(p);
  const Query<T> qu = load_query<ACT>(p, cf);
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kCC;
  const bool matrix = p.mode == Mode::Matrix;  // one column chunk (grid.y = 1)
  double tot[kCC];
  for (int cc = 0; cc < kCC; ++cc) tot[cc] = 0.0;
  T s[kTile];
  for (int64_t i0 = 0; i0 < p.n; i0 += kTile) {
    const int nt = static_cast<int>(p.n - i0 < kTile ? p.n - i0 : kTile);
    const T ynl = tile_products(p, qu, i0, nt, sm, s);
    stage_weights(p, i0, nt, c0, sm.ws);  // visible after walk's first barrier
    T part[kCC];
    for (int cc = 0; cc < kCC; ++cc) part[cc] = T(0);
    walk<ACT, false>(cf, qu, s, ynl, nt, sm, [&](int j, T kv, T, T) {
      if (matrix)
        p.out[qu.q * p.n + i0 + j] = kv;
      else
        for (int cc = 0; cc < kCC; ++cc) part[cc] += kv * sm.ws[j][cc];
    });
    for (int cc = 0; cc < kCC; ++cc) tot[cc] += static_cast<double>(part[cc]);
  }
  if (qu.active && !matrix)
    for (int cc = 0; cc < kCC; ++cc)
      if (c0 + cc < p.c) p.out[qu.q * p.c + c0 + cc] = static_cast<T>(tot[cc]);
}

// co[j] = g_q . w_{i0 + j} over every column (w staged in column chunks; barriers inside), or the
// given coefficient matrix's entries; 0 past the tile and for blocks without gradient coordinates.
template <typename T>
__device__ __forceinline__ void pair_coefs(const NngpParams<T>& p, const Query<T>& qu, int64_t i0, int nt, bool want_dx,
                                           TileSmem<T>& sm, T (&co)[kTile]) {
  for (int j = 0; j < kTile; ++j) co[j] = (p.coef && qu.active && j < nt) ? p.coef[qu.q * p.n + i0 + j] : T(0);
  const T* gq = p.g ? p.g + (qu.active ? qu.q : 0) * p.c : nullptr;
  for (int64_t c0 = 0; c0 < (p.coef || !want_dx ? 0 : p.c); c0 += kCC) {
    __syncthreads();  // ws readers of the previous chunk are done
    stage_weights(p, i0, nt, c0, sm.ws);
    __syncthreads();
    if (qu.active) {
      T gl[kCC];
      for (int cc = 0; cc < kCC; ++cc) gl[cc] = c0 + cc < p.c ? gq[c0 + cc] : T(0);
      for (int j = 0; j < kTile; ++j) {
        T a = T(0);
        for (int cc = 0; cc < kCC; ++cc) a += gl[cc] * sm.ws[j][cc];
        co[j] += a;
      }
    }
  }
}

template <typename T, Activation ACT, bool GW>
__global__ void __launch_bounds__(kBlock) nngp_gradx_kernel(NngpParams<T> p) {
  KF_SHARED(GradSmem<T>, sm, );
  const Cfg<T> cf = make_cfg(p);
  const Query<T> qu = load_query<ACT>(p, cf);
  const int64_t g0 = static_cast<int64_t>(blockIdx.y) * kDG;
  const int64_t c2 = static_cast<int64_t>(blockIdx.y) * kCC;  // GW: this block's out2 columns
  const bool want_dx = g0 < p.d;  // GW launches blocks past d when there are more column chunks
  double tot[kDG], tot2[kCC], totn = 0.0;
  for (int kk = 0; kk < kDG; ++kk) tot[kk] = 0.0;
  for (int cc = 0; cc < kCC; ++cc) tot2[cc] = 0.0;
  T s[kTile], co[kTile];
  for (int64_t i0 = 0; i0 < p.n; i0 += kTile) {
    const int nt = static_cast<int>(p.n - i0 < kTile ? p.n - i0 : kTile);
    const T ynl = tile_products(p, qu, i0, nt, sm, s);
    pair_coefs(p, qu, i0, nt, want_dx, sm, co);
    for (int e = threadIdx.x; e < kTile * kDG; e += kBlock) {  // visible after walk's first barrier
      const int j = e / kDG, kk = e % kDG;
      sm.yg[j][kk] = (j < nt && g0 + kk < p.d) ? p.y[(i0 + j) * p.d + g0 + kk] : T(0);
    }
    if constexpr (GW) stage_weights(p, i0, nt, c2, sm.w2s);
    T sn = T(0), part[kDG], part2[kCC];
    for (int kk = 0; kk < kDG; ++kk) part[kk] = T(0);
    for (int cc = 0; cc < kCC; ++cc) part2[cc] = T(0);
    walk<ACT, true>(cf, qu, s, ynl, nt, sm, [&](int j, T kv, T ks, T kx) {
      const T a = co[j] * ks;
      sn += co[j] * kx;
      for (int kk = 0; kk < kDG; ++kk) part[kk] += a * sm.yg[j][kk];
      if constexpr (GW)
        for (int cc = 0; cc < kCC; ++cc) part2[cc] += kv * sm.w2s[j][cc];
    });
    totn += static_cast<double>(sn);
    for (int kk = 0; kk < kDG; ++kk) tot[kk] += static_cast<double>(part[kk]);
    for (int cc = 0; cc < kCC; ++cc) tot2[cc] += static_cast<double>(part2[cc]);
  }
  if (!qu.active) return;
  for (int kk = 0; kk < kDG; ++kk)
    if (g0 + kk < p.d)
      p.out[qu.q * p.d + g0 + kk] = static_cast<T>(tot[kk] + 2.0 * totn * static_cast<double>(qu.x[g0 + kk]));
  if constexpr (GW)
    for (int cc = 0; cc < kCC; ++cc)
      if (c2 + cc < p.c) p.out2[qu.q * p.c + c2 + cc] = static_cast<T>(tot2[cc]);
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
