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
        // the recursion per pair
        for (int64_t r = 0; r < nq; ++r) {
          const T nx = nxq[r];
          const T* __restrict sr = S.data() + r * TP;
          T* __restrict kv = KV.data() + r * TP;
          T* __restrict ks = KS.data() + r * TP;
          T* __restrict kx = KX.data() + r * TP;
#pragma omp simd
          for (int64_t ii = 0; ii < nt; ++ii) {
            T a = 0, bx = 0, by = 0;
            kv[ii] = pair<ACT, GRADX>(cf, sr[ii], nx, NY[ii], a, bx, by);
            ks[ii] = a;
            kx[ii] = bx;
          }
        }
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
    case Activation::Relu: run<Activation::Relu, GRADX>(p); break;
    case Activation::Erf: run<Activation::Erf, GRADX>(p); break;
    case Activation::Step: run<Activation::Step, GRADX>(p); break;
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
  if (p.mode == Mode::GradX) dispatch_act<true>(p);
  else dispatch_act<false>(p);
}

template void nngp_matmul_cpu<float>(const NngpParams<float>&);
template void nngp_matmul_cpu<double>(const NngpParams<double>&);

}  // namespace kernelfuse::nngp
