// CPU kernel of the fused NNGP / NTK products (nngp_matmul.h). Torch-free.
//
// Tasks of QB queries (OpenMP, dynamic schedule) walk the points in tiles of TP: the tile is
// packed in structure-of-arrays form ([d][TP]) with its squared norms, the inner products of QB
// queries x TP points are formed in a QB x TP block (vectorised over the points), the layer
// recursion (nngp_math.h) turns each into K (and, for GradX, dK/ds and dK/dnx), and the block is
// reduced against the tile's weight rows into per-query partials in T, added to double
// accumulators once per tile (blocked accumulation: float32 results stay near a float64
// computation). Memory: O(threads * TP * (d + c)) scratch; the m x n matrix never exists.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "nngp_math.h"
#include "nngp_matmul.h"

namespace kernelfuse::nngp {
namespace {

constexpr int64_t QB = 16;   // queries per task
constexpr int64_t TP = 128;  // points per tile

// Per-pair state of the forward-mode recursion (nngp_math.h pair()), structure of arrays over a
// tile: k12 and its partials (s, nx, ny), k22 and d k22 / d ny, Theta and its partials. k11 and
// d k11 / d nx belong to the query row: scalars.
template <typename T>
struct State {
  std::vector<T> k12, as, ax, ay, k22, d22, th, ts, tx, ty;
  explicit State(int64_t n) : k12(n), as(n), ax(n), ay(n), k22(n), d22(n), th(n), ts(n), tx(n), ty(n) {}
};

template <Activation ACT, bool GRAD, typename T>
void recursion(const Cfg<T>& cf, T nx, const T* __restrict S, const T* __restrict NY, int64_t nt, T* __restrict KV,
               T* __restrict KS, T* __restrict KX, State<T>& st) {
  T* __restrict k12 = st.k12.data();
  T* __restrict as = st.as.data();
  T* __restrict ax = st.ax.data();
  T* __restrict k22 = st.k22.data();
  T* __restrict d22 = st.d22.data();
  T* __restrict th = st.th.data();
  T* __restrict ts = st.ts.data();
  T* __restrict tx = st.tx.data();
  const T a0 = cf.sw2 * cf.inv_d, sw2 = cf.sw2, sb2 = cf.sb2;
  const bool ntk = cf.ntk;
  T k11 = a0 * nx + sb2, d11 = a0;
#pragma omp simd
  for (int64_t i = 0; i < nt; ++i) {
    k12[i] = a0 * S[i] + sb2;
    k22[i] = a0 * NY[i] + sb2;
    as[i] = a0;
    ax[i] = T(0);
    d22[i] = a0;
    th[i] = k12[i];
    ts[i] = a0;
    tx[i] = T(0);
  }
  for (int32_t h = 0; h < cf.depth; ++h) {
#pragma omp simd
    for (int64_t i = 0; i < nt; ++i) {
      const LayerOut<T> o = layer<ACT, GRAD>(k11, k12[i], k22[i]);
      const T n12 = sw2 * o.F + sb2;
      T ns = T(0), nxx = T(0);
      if constexpr (GRAD) {
        ns = sw2 * o.F12 * as[i];
        nxx = sw2 * (o.F12 * ax[i] + o.F11 * d11);
      }
      if (ntk) {
        if constexpr (GRAD) {
          const T gs = o.G12 * as[i], gx = o.G12 * ax[i] + o.G11 * d11;
          ts[i] = ns + sw2 * (gs * th[i] + o.G * ts[i]);
          tx[i] = nxx + sw2 * (gx * th[i] + o.G * tx[i]);
        }
        th[i] = n12 + sw2 * o.G * th[i];
      }
      T f2, df2;
      diag<ACT>(k22[i], f2, df2);
      k22[i] = sw2 * f2 + sb2;
      if constexpr (GRAD) {
        d22[i] = sw2 * df2 * d22[i];
        as[i] = ns;
        ax[i] = nxx;
      }
      k12[i] = n12;
    }
    T f1, df1;
    diag<ACT>(k11, f1, df1);
    k11 = sw2 * f1 + sb2;
    d11 = sw2 * df1 * d11;
  }
  const T* __restrict kv = ntk ? th : k12;
  const T* __restrict ksv = ntk ? ts : as;
  const T* __restrict kxv = ntk ? tx : ax;
#pragma omp simd
  for (int64_t i = 0; i < nt; ++i) {
    KV[i] = kv[i];
    KS[i] = ksv[i];
    KX[i] = kxv[i];
  }
}

template <Activation ACT, bool GRADX, typename T>
void run(const NngpParams<T>& p) {
  const int64_t m = p.m, n = p.n, d = p.d, c = p.c;
  const Cfg<T> cf{p.depth, p.ntk, static_cast<T>(p.sigma_w2), static_cast<T>(p.sigma_b2),
                  static_cast<T>(1.0 / static_cast<double>(d))};
  const int64_t nblocks = (m + QB - 1) / QB;
  const int64_t accw = GRADX ? d : c;
  const bool matrix = p.mode == Mode::Matrix;
  // tiny problems run on one thread (a parallel region costs more than the work)
  const bool par = nblocks > 1 && static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(d + 8) > 4e5;
#pragma omp parallel if (par)
  {
    std::vector<T> V(static_cast<size_t>(d * TP)), NY(TP), S(QB * TP), KV(QB * TP), KS(QB * TP), KX(QB * TP),
        CO(QB * TP), part(static_cast<size_t>(std::max<int64_t>(accw, 1)));
    std::vector<double> acc(static_cast<size_t>(QB * accw)), accn(QB);
    T nxq[QB];
    State<T> st(TP);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t q0 = b * QB, nq = std::min(QB, m - q0);
      std::fill(acc.begin(), acc.end(), 0.0);
      std::fill(accn.begin(), accn.end(), 0.0);
      for (int64_t r = 0; r < nq; ++r) {
        const T* xr = p.x + (q0 + r) * d;
        T sq = 0;
        for (int64_t k = 0; k < d; ++k) sq += xr[k] * xr[k];
        nxq[r] = sq;
      }
      for (int64_t i0 = 0; i0 < n; i0 += TP) {
        const int64_t nt = std::min(TP, n - i0);
        for (int64_t ii = 0; ii < nt; ++ii) {
          const T* yi = p.y + (i0 + ii) * d;
          T sq = 0;
          for (int64_t k = 0; k < d; ++k) {
            V[k * TP + ii] = yi[k];
            sq += yi[k] * yi[k];
          }
          NY[ii] = sq;
        }
        // inner products
        for (int64_t r = 0; r < nq; ++r) {
          T* __restrict sr = S.data() + r * TP;
          for (int64_t ii = 0; ii < nt; ++ii) sr[ii] = T(0);
          const T* xr = p.x + (q0 + r) * d;
          for (int64_t k = 0; k < d; ++k) {
            const T u = xr[k];
            const T* __restrict vk = V.data() + k * TP;
#pragma omp simd
            for (int64_t ii = 0; ii < nt; ++ii) sr[ii] += u * vk[ii];
          }
        }
        // the recursion, layer by layer over the tile (vectorised over the points)
        for (int64_t r = 0; r < nq; ++r)
          recursion<ACT, GRADX>(cf, nxq[r], S.data() + r * TP, NY.data(), nt, KV.data() + r * TP, KS.data() + r * TP,
                                KX.data() + r * TP, st);
        if (matrix) {
          for (int64_t r = 0; r < nq; ++r)
            std::copy(KV.data() + r * TP, KV.data() + r * TP + nt, p.out + (q0 + r) * n + i0);
          continue;
        }
        if constexpr (!GRADX) {
          for (int64_t r = 0; r < nq; ++r) {
            const T* __restrict kv = KV.data() + r * TP;
            std::fill(part.begin(), part.begin() + c, T(0));
            T* __restrict pt = part.data();
            if (c == 1) {
              const T* __restrict wv = p.w + i0;
              T s = 0;
#pragma omp simd reduction(+ : s)
              for (int64_t ii = 0; ii < nt; ++ii) s += kv[ii] * wv[ii];
              pt[0] = s;
            } else {
              for (int64_t ii = 0; ii < nt; ++ii) {
                const T kk = kv[ii];
                const T* __restrict wi = p.w + (i0 + ii) * c;
#pragma omp simd
                for (int64_t cc = 0; cc < c; ++cc) pt[cc] += kk * wi[cc];
              }
            }
            double* ar = acc.data() + r * accw;
            for (int64_t cc = 0; cc < c; ++cc) ar[cc] += static_cast<double>(pt[cc]);
          }
        } else {
          for (int64_t r = 0; r < nq; ++r) {
            const T* __restrict gq = p.g ? p.g + (q0 + r) * c : nullptr;
            T* __restrict co = CO.data() + r * TP;
            const T* __restrict ks = KS.data() + r * TP;
            const T* __restrict kx = KX.data() + r * TP;
            T sn = 0;
            const T* __restrict cq = p.coef ? p.coef + (q0 + r) * n + i0 : nullptr;
            for (int64_t ii = 0; ii < nt; ++ii) {
              T cf2 = 0;
              if (cq) {
                cf2 = cq[ii];
              } else {
                const T* __restrict wi = p.w + (i0 + ii) * c;
                for (int64_t cc = 0; cc < c; ++cc) cf2 += gq[cc] * wi[cc];
              }
              co[ii] = cf2 * ks[ii];
              sn += cf2 * kx[ii];
            }
            accn[r] += static_cast<double>(sn);
            double* ar = acc.data() + r * accw;
            for (int64_t k = 0; k < d; ++k) {
              const T* __restrict vk = V.data() + k * TP;
              T s = 0;
#pragma omp simd reduction(+ : s)
              for (int64_t ii = 0; ii < nt; ++ii) s += co[ii] * vk[ii];
              ar[k] += static_cast<double>(s);
            }
          }
        }
      }
      if (matrix) continue;
      for (int64_t r = 0; r < nq; ++r) {
        const double* ar = acc.data() + r * accw;
        T* o = p.out + (q0 + r) * accw;
        if constexpr (GRADX) {
          const T* xr = p.x + (q0 + r) * d;
          for (int64_t k = 0; k < d; ++k) o[k] = static_cast<T>(ar[k] + 2.0 * accn[r] * static_cast<double>(xr[k]));
        } else {
          for (int64_t cc = 0; cc < c; ++cc) o[cc] = static_cast<T>(ar[cc]);
        }
      }
    }
  }
}

template <bool GRADX, typename T>
void dispatch_act(const NngpParams<T>& p) {
  switch (p.act) {
    case Activation::Relu:
      run<Activation::Relu, GRADX>(p);
      break;
    case Activation::Erf:
      run<Activation::Erf, GRADX>(p);
      break;
    case Activation::Step:
      run<Activation::Step, GRADX>(p);
      break;
  }
}

}  // namespace

template <typename T>
void nngp_matmul_cpu(const NngpParams<T>& p) {
  if (p.m == 0) return;
  const int64_t w = p.mode == Mode::GradX ? p.d : (p.mode == Mode::Matrix ? p.n : p.c);
  if (p.n == 0 || w == 0) {  // empty sums
    for (int64_t i = 0; i < p.m * w; ++i) p.out[i] = T(0);
    return;
  }
  if (p.mode == Mode::GradX)
    dispatch_act<true>(p);
  else
    dispatch_act<false>(p);
}

template void nngp_matmul_cpu<float>(const NngpParams<float>&);
template void nngp_matmul_cpu<double>(const NngpParams<double>&);

}  // namespace kernelfuse::nngp
