// CPU kernel for the S4D convolution kernel and its backward (see ssm_kernel.h). Torch-free.
//
// K_l = 2 Re sum_n c_n z_n^l with c_n = C_n Bbar_n and z_n = Abar_n = exp(w_n). Split l = l0 + j
// with l0 a multiple of TB (a block) and 0 <= j < TB:
//     K_{l0+j} = sum_n [2 Re(c_n z_n^l0)] Re z_n^j - [2 Im(c_n z_n^l0)] Im z_n^j,
// so each h is a real matrix product: (blocks x 2N) times (2N x TB), with a per-h table of z^j
// and per-block coefficients c z^l0. All in double. Powers are exact exponentials exp(l w) (l an
// integer, w = log Abar) re-anchored every 16 steps of j and every AP blocks of l0; in between a
// few complex products in double, so the error stays at rounding level for any L (no drift).
// The backward is the same split transposed: per block M = G (blocks x TB) times the table
// (TB x [z^j, j z^j]) gives S0 = sum_l g_l z^l and S1 = sum_l g_l l z^l as
// sum_blocks z^l0 (M0, l0 M0 + M1); the chain rule to (log_dt, A, B, C) is O(N) per h.
// Work is split into (h, group of blocks) tasks (one group per h unless H < 2 x threads), each
// walked in chunks of CHUNK blocks; memory is O(threads (N TB + CHUNK (N + TB))) plus O(H N)
// partial sums in the backward: never H x N x L.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../common/simd.h"
#include "ssm_kernel.h"

namespace kernelfuse::longconv {
namespace {

constexpr int64_t TB = 64;     // l per block (table width)
constexpr int64_t AP = 32;     // blocks between exact re-anchors of z^l0
constexpr int64_t JA = 16;     // table steps between exact re-anchors of z^j
constexpr int64_t CHUNK = 64;  // blocks per task (max)
constexpr int64_t RB = 4;      // GEMM rows per register block
constexpr int64_t CT = 16;     // GEMM columns per register block

using V = simd::Vec<double>::type;
constexpr int W = simd::Vec<double>::W;
constexpr int NV = CT / W;

// Out (R x NC) = A (R x K) * Bm (K x NC); R a multiple of RB, NC a multiple of CT; row-major.
void gemm(int64_t R, int64_t K, int64_t NC, const double* __restrict A, const double* __restrict Bm,
          double* __restrict Out) {
  for (int64_t c0 = 0; c0 < NC; c0 += CT) {  // the K x CT panel of Bm stays in L1 over the rows
    for (int64_t r0 = 0; r0 < R; r0 += RB) {
      V acc[RB][NV];
      for (int r = 0; r < RB; ++r)
        for (int j = 0; j < NV; ++j) acc[r][j] = V{};
      for (int64_t k = 0; k < K; ++k) {
        V b[NV];
        for (int j = 0; j < NV; ++j) b[j] = simd::load<V>(Bm + k * NC + c0 + j * W);
        for (int r = 0; r < RB; ++r) {
          const V a = V{} + A[(r0 + r) * K + k];
          for (int j = 0; j < NV; ++j) acc[r][j] += a * b[j];
        }
      }
      for (int r = 0; r < RB; ++r)
        for (int j = 0; j < NV; ++j) simd::store(Out + (r0 + r) * NC + c0 + j * W, acc[r][j]);
    }
  }
}

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Per-h state: discretised poles w, coefficients c, the power table.
template <typename T>
struct HState {
  int64_t N;
  std::vector<cd> w, c, zT;  // zT = z^TB
  std::vector<double> tab;   // forward: (2N x TB) rows Re z^j | Im z^j; backward: (TB x NCB)
  int64_t h = -1;

  explicit HState(int64_t n) : N(n), w(n), c(n), zT(n) {}

  void load(const SsmKernelParams<T>& p, int64_t hh) {
    h = hh;
    const double dt = std::exp(static_cast<double>(p.log_dt[hh]));
    for (int64_t n = 0; n < N; ++n) {
      const int64_t i = hh * N + n;
      const cd A = {static_cast<double>(p.A_real[i]), static_cast<double>(p.A_imag[i])};
      const Disc d = discretize(p.disc, dt, A, false);
      const cd B = p.B ? cd{double(p.B[2 * i]), double(p.B[2 * i + 1])} : cd{1.0, 0.0};
      const cd C = {double(p.C[2 * i]), double(p.C[2 * i + 1])};
      w[n] = d.w;
      c[n] = C * (d.beta * B);
      zT[n] = cexp(double(TB) * d.w);
    }
  }

  // z_n^j for j < TB, exact every JA steps. fn(n, j, z).
  template <typename F>
  void powers(F&& fn) const {
    for (int64_t n = 0; n < N; ++n) {
      const cd z1 = cexp(w[n]);
      cd z = {1.0, 0.0};
      for (int64_t j = 0; j < TB; ++j) {
        if (j % JA == 0) z = cexp(double(j) * w[n]);
        fn(n, j, z);
        z = z * z1;
      }
    }
  }
};

// Tasks: (h, group of blocks); one group per h unless H is too small to keep every thread busy.
// A task walks its group in chunks of at most CHUNK blocks (bounded scratch), keeping its table.
int64_t groups_per_h(int64_t H, int64_t nb) {
  const int64_t threads = omp_get_max_threads();
  const int64_t want = (2 * threads + H - 1) / std::max<int64_t>(H, 1);
  return std::max<int64_t>(1, std::min(nb, want));
}

// Walks z^l0 over the blocks [b0, b1): exact at b0 and every AP blocks, else times z^TB.
template <typename T, typename F>
void walk_blocks(const HState<T>& st, int64_t b0, int64_t b1, std::vector<cd>& zl, F&& fn) {
  for (int64_t b = b0; b < b1; ++b) {
    const double l0 = double(b * TB);
    for (int64_t n = 0; n < st.N; ++n) zl[n] = ((b - b0) % AP == 0) ? cexp(l0 * st.w[n]) : zl[n] * st.zT[n];
    fn(b);
  }
}

}  // namespace

template <typename T>
void ssm_kernel_cpu(const SsmKernelParams<T>& p) {
  const int64_t H = p.H, N = p.N, L = p.L;
  if (H == 0 || L == 0) return;
  const int64_t nb = (L + TB - 1) / TB;
  const int64_t ng = groups_per_h(H, nb);
  const int64_t bpg = (nb + ng - 1) / ng;  // blocks per group
  const int64_t ntasks = H * ng;
#pragma omp parallel
  {
    HState<T> st(N);
    st.tab.assign(2 * N * TB, 0.0);
    const int64_t rows = round_up(std::min(CHUNK, bpg), RB);
    std::vector<double> A(rows * 2 * N, 0.0), out(rows * TB);
    std::vector<cd> zl(N);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntasks; ++t) {
      const int64_t h = t / ng, g0 = (t % ng) * bpg, g1 = std::min(nb, g0 + bpg);
      if (g0 >= g1) continue;
      if (st.h != h) {
        st.load(p, h);
        double* tab = st.tab.data();
        st.powers([&](int64_t n, int64_t j, cd z) {
          tab[n * TB + j] = z.re;
          tab[(N + n) * TB + j] = z.im;
        });
      }
      for (int64_t b0 = g0; b0 < g1; b0 += CHUNK) {
        const int64_t b1 = std::min(g1, b0 + CHUNK);
        const int64_t R = round_up(b1 - b0, RB);
        std::fill(A.begin(), A.begin() + R * 2 * N, 0.0);
        walk_blocks(st, b0, b1, zl, [&](int64_t b) {
          double* a = A.data() + (b - b0) * 2 * N;
          for (int64_t n = 0; n < N; ++n) {
            const cd d = st.c[n] * zl[n];
            a[n] = 2.0 * d.re;
            a[N + n] = -2.0 * d.im;
          }
        });
        gemm(R, 2 * N, TB, A.data(), st.tab.data(), out.data());
        T* K = p.K + h * L;
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t l0 = b * TB, nl = std::min(TB, L - l0);
          const double* o = out.data() + (b - b0) * TB;
          for (int64_t j = 0; j < nl; ++j) K[l0 + j] = static_cast<T>(o[j]);
        }
      }
    }
  }
}

template <typename T>
void ssm_kernel_bwd_cpu(const SsmKernelParams<T>& p) {
  const int64_t H = p.H, N = p.N, L = p.L;
  if (H == 0) return;
  const int64_t nb = (L + TB - 1) / TB;
  const int64_t ng = nb == 0 ? 0 : groups_per_h(H, nb);
  const int64_t bpg = ng == 0 ? 0 : (nb + ng - 1) / ng;
  const int64_t ntasks = H * ng;
  const int64_t NCB = round_up(4 * N, CT);  // table columns: Re z^j, Im z^j, j Re z^j, j Im z^j
  // partial (S0, S1) per (h, group, n): 4 doubles
  std::vector<double> part(std::max<int64_t>(ntasks, 1) * 4 * N, 0.0);
#pragma omp parallel
  {
    HState<T> st(N);
    st.tab.assign(TB * NCB, 0.0);
    const int64_t rows = round_up(std::max<int64_t>(std::min(CHUNK, bpg), 1), RB);
    std::vector<double> G(rows * TB, 0.0), M(rows * NCB);
    std::vector<cd> zl(N), S0(N), S1(N);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntasks; ++t) {
      const int64_t h = t / ng, g0 = (t % ng) * bpg, g1 = std::min(nb, g0 + bpg);
      if (g0 >= g1) continue;
      if (st.h != h) {
        st.load(p, h);
        double* tab = st.tab.data();
        st.powers([&](int64_t n, int64_t j, cd z) {
          double* r = tab + j * NCB;
          r[n] = z.re;
          r[N + n] = z.im;
          r[2 * N + n] = double(j) * z.re;
          r[3 * N + n] = double(j) * z.im;
        });
      }
      std::fill(S0.begin(), S0.end(), cd{0, 0});
      std::fill(S1.begin(), S1.end(), cd{0, 0});
      const T* g = p.grad + h * L;
      for (int64_t b0 = g0; b0 < g1; b0 += CHUNK) {
        const int64_t b1 = std::min(g1, b0 + CHUNK);
        const int64_t R = round_up(b1 - b0, RB);
        std::fill(G.begin(), G.begin() + R * TB, 0.0);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t l0 = b * TB, nl = std::min(TB, L - l0);
          double* gr = G.data() + (b - b0) * TB;
          for (int64_t j = 0; j < nl; ++j) gr[j] = static_cast<double>(g[l0 + j]);
        }
        gemm(R, TB, NCB, G.data(), st.tab.data(), M.data());
        walk_blocks(st, b0, b1, zl, [&](int64_t b) {
          const double* m = M.data() + (b - b0) * NCB;
          const double l0 = double(b * TB);
          for (int64_t n = 0; n < N; ++n) {
            const cd m0 = {m[n], m[N + n]}, m1 = {m[2 * N + n], m[3 * N + n]};
            S0[n] = S0[n] + zl[n] * m0;
            S1[n] = S1[n] + zl[n] * (l0 * m0 + m1);
          }
        });
      }
      double* ps = part.data() + t * 4 * N;
      for (int64_t n = 0; n < N; ++n) {
        ps[4 * n] = S0[n].re;
        ps[4 * n + 1] = S0[n].im;
        ps[4 * n + 2] = S1[n].re;
        ps[4 * n + 3] = S1[n].im;
      }
    }
  }
  // Reduce the groups and apply the chain rule: O(H N).
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    const double dt = std::exp(static_cast<double>(p.log_dt[h]));
    double gdt = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      cd S0 = {0, 0}, S1 = {0, 0};
      for (int64_t c = 0; c < ng; ++c) {
        const double* ps = part.data() + ((h * ng + c) * N + n) * 4;
        S0 = S0 + cd{ps[0], ps[1]};
        S1 = S1 + cd{ps[2], ps[3]};
      }
      const int64_t i = h * N + n;
      const cd A = {static_cast<double>(p.A_real[i]), static_cast<double>(p.A_imag[i])};
      const Disc d = discretize(p.disc, dt, A, true);
      gdt += store_state_grads(p, i, d, S0, S1);
    }
    p.g_log_dt[h] = static_cast<T>(gdt * dt);  // d/dlog_dt = dt d/ddt
  }
}

template void ssm_kernel_cpu<float>(const SsmKernelParams<float>&);
template void ssm_kernel_cpu<double>(const SsmKernelParams<double>&);
template void ssm_kernel_bwd_cpu<float>(const SsmKernelParams<float>&);
template void ssm_kernel_bwd_cpu<double>(const SsmKernelParams<double>&);

}  // namespace kernelfuse::longconv
