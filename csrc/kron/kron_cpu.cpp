// CPU stages of the Kronecker GP algebra (see kron.h). Torch-free, OpenMP.
//
// The grid is walked as rows of the last axis: a row is a multi-index (j_0, ..., j_{D-2}) whose
// eigenvalue prefix product p = prod_{d < D-1} lam_d[j_d] is formed once, then the inner loop over
// the last axis (lam_j = p * lam_{D-1}[k]) is a plain vectorisable loop. Rows are split across
// threads; reductions are accumulated per thread in double and combined at the end.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kron.h"

namespace kernelfuse::kron {
namespace {

// Multi-index of row r over the first D-1 axes (row-major).
inline void decode_row(const Grid& g, int64_t r, int64_t* idx) {
  for (int d = g.D - 2; d >= 0; --d) {
    idx[d] = r % g.dims[d];
    r /= g.dims[d];
  }
}

// sum_k log(pre * lamL[k] + s2) without a log per element: every value is split as m 2^e
// (m in [1, 2), exact), the mantissas are multiplied in groups of 32 (< 2^32, exact to a few
// ulps) and one log is taken per group; exponents are summed exactly. A value <= 0 or NaN
// (or subnormal / huge) falls back to std::log per element (NaN / -inf: no clamping).
template <typename T>
double row_logdet(T pre, const T* __restrict lamL, int64_t nl, T s2) {
  double ld = 0;
  bool bad = false;
  int64_t k = 0;
  while (k < nl) {
    const int64_t k1 = std::min(nl, k + 32);
    double prod = 1;
    int64_t esum = 0;
    for (int64_t q = k; q < k1; ++q) {
      const double x = double(pre) * double(lamL[q]) + double(s2);
      bad |= !(x >= 2.2250738585072014e-308) || !(x < 1e300);
      uint64_t bits;
      std::memcpy(&bits, &x, sizeof(bits));
      esum += int64_t((bits >> 52) & 0x7ff) - 1023;
      bits = (bits & 0x800fffffffffffffULL) | 0x3ff0000000000000ULL;
      double m;
      std::memcpy(&m, &bits, sizeof(m));
      prod *= m;
    }
    ld += std::log(prod) + double(esum) * 0.69314718055994530942;
    k = k1;
  }
  if (bad) {  // non-positive, subnormal, huge or NaN: the plain sum
    ld = 0;
    for (int64_t q = 0; q < nl; ++q) ld += std::log(double(pre) * double(lamL[q]) + double(s2));
  }
  return ld;
}

// Work per parallel chunk large enough that small grids stay on one thread.
inline bool worth_parallel(int64_t rows, int64_t N) { return rows > 1 && N >= 16384; }

// A grid walked as rows of its last axis L: `rows` multi-indices over the first L axes, nl points
// of the last axis per row.
struct LastAxisRows {
  int L;
  int64_t nl, rows;
  explicit LastAxisRows(const Grid& g) : L(g.D - 1), nl(g.dims[g.D - 1]), rows(g.N / g.dims[g.D - 1]) {}
};

}  // namespace

template <typename T>
void kron_scale_cpu(const ScaleParams<T>& p) {
  const Grid& g = p.g;
  const LastAxisRows w(g);
  const T* __restrict lamL = p.lam[w.L];
  const T s2 = p.noise;
  const bool others_last = p.weight == Weight::Others && p.axis == w.L;
  const bool want_logdet = p.logdet != nullptr;
  double logdet = 0;
  for (int64_t b = 0; b < p.B; ++b) {
    const T* __restrict in = p.in ? p.in + b * g.N : nullptr;
    T* __restrict out = p.out + b * g.N;
    const bool do_logdet = want_logdet && b == 0;
    double quad = 0, ld = 0;
#pragma omp parallel for schedule(static) reduction(+ : quad, ld) if (worth_parallel(w.rows, g.N))
    for (int64_t r = 0; r < w.rows; ++r) {
      int64_t idx[kMaxDims];
      decode_row(g, r, idx);
      T pre = T(1), pre_ex = T(1);  // prefix product, and the prefix without `axis`
      for (int d = 0; d < w.L; ++d) {
        const T v = p.lam[d][idx[d]];
        pre *= v;
        if (!(p.weight == Weight::Others && d == p.axis)) pre_ex *= v;
      }
      const T* __restrict xin = in ? in + r * w.nl : nullptr;
      T* __restrict o = out + r * w.nl;
      switch (p.weight) {
        case Weight::Inv:
          for (int64_t k = 0; k < w.nl; ++k) o[k] = (xin ? xin[k] : T(1)) / (pre * lamL[k] + s2);
          break;
        case Weight::PostVar:
          for (int64_t k = 0; k < w.nl; ++k) {
            const T lam = pre * lamL[k];
            o[k] = (xin ? xin[k] : T(1)) * (lam * s2 / (lam + s2));
          }
          break;
        case Weight::SqOverDenom:
          for (int64_t k = 0; k < w.nl; ++k) {
            const T lam = pre * lamL[k];
            o[k] = (xin ? xin[k] : T(1)) * (lam * lam / (lam + s2));
          }
          break;
        case Weight::Others:
          if (others_last) {
            for (int64_t k = 0; k < w.nl; ++k) o[k] = (xin ? xin[k] : T(1)) * pre_ex;
          } else {
            for (int64_t k = 0; k < w.nl; ++k) o[k] = (xin ? xin[k] : T(1)) * (pre_ex * lamL[k]);
          }
          break;
      }
      if (p.quad && xin) {
        double q = 0;
        for (int64_t k = 0; k < w.nl; ++k) q += double(xin[k]) * double(o[k]);
        quad += q;
      }
      if (do_logdet) ld += row_logdet<T>(pre, lamL, w.nl, s2);
    }
    if (p.quad) p.quad[b] = quad;
    if (do_logdet) logdet = ld;
  }
  if (want_logdet) *p.logdet = logdet;
}

template <typename T>
void kron_trace_cpu(const TraceParams<T>& p) {
  const LastAxisRows w(p.g);
  const Grid& g = p.g;
  int64_t off[kMaxDims + 1];
  off[0] = 0;
  for (int d = 0; d < g.D; ++d) off[d + 1] = off[d] + g.dims[d];
  const int64_t nc = off[g.D];
  const T* __restrict lamL = p.lam[w.L];
  const double s2 = double(p.noise);
  std::fill(p.c, p.c + nc, 0.0);
  double trace = 0;
  const int nthreads = worth_parallel(w.rows, g.N) ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(nthreads) reduction(+ : trace)
  {
    std::vector<double> acc(nc, 0.0);
    std::vector<double> inv(w.nl);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < w.rows; ++r) {
      int64_t idx[kMaxDims];
      decode_row(g, r, idx);
      double v[kMaxDims], pref[kMaxDims + 1], suf[kMaxDims + 1];
      pref[0] = 1;
      for (int d = 0; d < w.L; ++d) {
        v[d] = double(p.lam[d][idx[d]]);
        pref[d + 1] = pref[d] * v[d];
      }
      suf[w.L] = 1;
      for (int d = w.L - 1; d >= 0; --d) suf[d] = suf[d + 1] * v[d];
      const double pre = pref[w.L];
      double s_inv = 0, s_lam = 0;
      double* __restrict cl = acc.data() + off[w.L];
      for (int64_t k = 0; k < w.nl; ++k) {
        const double lk = double(lamL[k]);
        const double iv = 1.0 / (pre * lk + s2);
        s_inv += iv;
        s_lam += lk * iv;
        cl[k] += pre * iv;
      }
      trace += s_inv;
      for (int d = 0; d < w.L; ++d) acc[off[d] + idx[d]] += pref[d] * suf[d + 1] * s_lam;
    }
#pragma omp critical
    for (int64_t i = 0; i < nc; ++i) p.c[i] += acc[i];
  }
  *p.trace = trace;
}

template <typename T>
void kron_rowwise_cpu(const RowwiseParams<T>& p) {
  const Grid& g = p.g;
  const int64_t R = g.D == 0 ? 1 : g.N;
  const int64_t scratch = g.D == 0 ? 1 : std::max<int64_t>(1, R / g.dims[g.D - 1]);
  const int nthreads = (p.M > 1 && p.M * R >= 16384) ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<double> b0(scratch), b1(scratch);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < p.M; ++i) {
      const T* __restrict s = p.S + i * R;
      if (g.D == 0) {
        p.out[i] = s[0];
        continue;
      }
      // Contract the last rest axis straight from S, then the others from the scratch buffers.
      int64_t len = R;
      int d = g.D - 1;
      {
        const int64_t n = g.dims[d];
        const T* __restrict w = p.W[d] + i * n;
        const int64_t q = len / n;
        for (int64_t a = 0; a < q; ++a) {
          double acc = 0;
          const T* __restrict sa = s + a * n;
          for (int64_t k = 0; k < n; ++k) acc += double(sa[k]) * double(w[k]);
          b0[a] = acc;
        }
        len = q;
      }
      double* cur = b0.data();
      double* nxt = b1.data();
      for (d = g.D - 2; d >= 0; --d) {
        const int64_t n = g.dims[d];
        const T* __restrict w = p.W[d] + i * n;
        const int64_t q = len / n;
        for (int64_t a = 0; a < q; ++a) {
          double acc = 0;
          for (int64_t k = 0; k < n; ++k) acc += cur[a * n + k] * double(w[k]);
          nxt[a] = acc;
        }
        std::swap(cur, nxt);
        len = q;
      }
      p.out[i] = T(cur[0]);
    }
  }
}

template <typename T>
void kron_mll_rows_cpu(const MllRowsParams<T>& p) {
  // Rows of the batch split into chunks of the grid, so that a single long row runs in parallel.
  constexpr int64_t kChunk = 8192;
  const int64_t chunks = (p.N + kChunk - 1) / kChunk, tasks = p.B * chunks;
  double dot = 0;
#pragma omp parallel for schedule(static) reduction(+ : dot) if (tasks > 1 && p.B * p.N >= 32768)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t b = t / chunks, j0 = (t % chunks) * kChunk, j1 = std::min(p.N, j0 + kChunk);
    const T gb = p.g ? p.g[b] : T(0);
    const T* __restrict at = p.at + b * p.N;
    const T* __restrict wt = p.wt ? p.wt + b * p.N : nullptr;
    T* __restrict dyt = p.dyt ? p.dyt + b * p.N : nullptr;
    T* __restrict U = p.U ? p.U + b * p.N : nullptr;
    double acc = 0;
    for (int64_t j = j0; j < j1; ++j) {
      const T w = wt ? wt[j] : T(0);
      const T u = gb * at[j] * T(-0.5) - w;
      if (dyt) dyt[j] = gb * at[j] + w;
      if (U) U[j] = u;
      acc += double(u) * double(at[j]);
    }
    dot += acc;
  }
  if (p.dot) *p.dot = dot;
}

template <typename T>
void kron_mll_scalars_cpu(const MllScalarsParams<T>& p) {
  if (p.nll)
    for (int64_t b = 0; b < p.B; ++b) p.nll[b] = T(p.quad[b] * 0.5 + *p.logdet * 0.5 + p.c0);
  double gsum = 0;
  if (p.g)
    for (int64_t b = 0; b < p.B; ++b) gsum += double(p.g[b]);
  if (p.dnoise) *p.dnoise = T(*p.dot + (p.trace ? gsum * *p.trace * 0.5 : 0.0));
  int64_t off = 0;
  for (int d = 0; d < p.grid.D; ++d) {
    const int64_t n = p.grid.dims[d];
    if (p.c && p.M[d])
      for (int64_t k = 0; k < n; ++k) p.M[d][k * n + k] += T(gsum * p.c[off + k] * 0.5);
    off += n;
  }
}

template <typename T>
void kron_symmetrize_cpu(const SymmetrizeParams<T>& p) {
  const int64_t n = p.n;
#pragma omp parallel for schedule(static) if (n >= 256)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) p.out[i * n + j] = (p.G[i * n + j] + p.G[j * n + i]) * T(0.5);
}

template void kron_scale_cpu<float>(const ScaleParams<float>&);
template void kron_scale_cpu<double>(const ScaleParams<double>&);
template void kron_trace_cpu<float>(const TraceParams<float>&);
template void kron_trace_cpu<double>(const TraceParams<double>&);
template void kron_rowwise_cpu<float>(const RowwiseParams<float>&);
template void kron_rowwise_cpu<double>(const RowwiseParams<double>&);
template void kron_mll_rows_cpu<float>(const MllRowsParams<float>&);
template void kron_mll_rows_cpu<double>(const MllRowsParams<double>&);
template void kron_mll_scalars_cpu<float>(const MllScalarsParams<float>&);
template void kron_mll_scalars_cpu<double>(const MllScalarsParams<double>&);
template void kron_symmetrize_cpu<float>(const SymmetrizeParams<float>&);
template void kron_symmetrize_cpu<double>(const SymmetrizeParams<double>&);

}  // namespace kernelfuse::kron
