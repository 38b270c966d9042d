// CPU kernel for fused kernel sums (see kernel_sum.h). Torch-free.
//
// Work is split into tasks of QB queries (OpenMP, dynamic schedule). A task walks the points in
// tiles of TP: it packs the tile scaled by 1/h in structure-of-arrays form, computes squared
// distances for 4 queries x 16 points at a time in registers (explicit differences, so no
// cancellation), evaluates the kernel over the tile with branch-free vectorised code, and
// reduces the tile into per-query float partials that are added to double accumulators (blocked
// accumulation: float32 results stay within ~1e-6 of a float64 computation). Memory is
// O(threads * TP * (d + c)); the m x n matrix never exists. The Backward mode produces the
// gradients for x, y and the weights in the same single pass: the point-side sums go to a tile
// buffer flushed once per tile into per-thread double accumulators, reduced at the end
// (O(threads * n * (d + c)) memory).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common/simd.h"
#include "kernel_sum.h"
#include "profiles.h"

namespace kernelfuse::kde {
namespace {

constexpr int64_t QR = 4;       // queries per register block
constexpr int64_t QB = 32;      // queries per task (multiple of QR)
constexpr int64_t TP = 256;     // points per tile (multiple of STRIP)
constexpr int64_t STRIP = 16;   // points per register block

// S[r][i] = sum_k (U[r][k] - V[k][i])^2 for r < QR, i < np (np a multiple of STRIP).
template <typename T>
void sqdist_block(const T* __restrict U, int64_t d, const T* __restrict V, int64_t np,
                  T* __restrict S) {
  using VT = typename simd::Vec<T>::type;
  constexpr int W = simd::Vec<T>::W;
  constexpr int NV = STRIP / W;
  for (int64_t i = 0; i < np; i += STRIP) {
    VT acc[QR][NV];
    for (int r = 0; r < QR; ++r)
      for (int j = 0; j < NV; ++j) acc[r][j] = VT{};
    for (int64_t k = 0; k < d; ++k) {
      const T* vk = V + k * TP + i;
      VT v[NV];
      for (int j = 0; j < NV; ++j) v[j] = simd::load<VT>(vk + j * W);
      for (int r = 0; r < QR; ++r) {
        const VT u = VT{} + U[r * d + k];
        for (int j = 0; j < NV; ++j) {
          const VT df = u - v[j];
          acc[r][j] += df * df;
        }
      }
    }
    for (int r = 0; r < QR; ++r)
      for (int j = 0; j < NV; ++j) simd::store(S + r * TP + i + j * W, acc[r][j]);
  }
}

template <typename T>
inline T guarded_exp(T e) {  // exp with a NaN exponent (inf - inf) counted as a zero term
  return e == e ? kf_exp(e) : T(0);
}

// Per-thread scratch and the state of one task.
template <typename T>
struct Scratch {
  std::vector<T> U, V, S, val, dval, PW, PLW, GY, GW;
  std::vector<double> acc, acc2, mx;
  Scratch(int64_t d, int64_t c, int64_t accw, bool point_grads)
      : U(QB * d), V(d * TP), S(QR * TP), val(TP), dval(TP), PW(c * TP), PLW(c * TP),
        GY(point_grads ? d * TP : 0), GW(point_grads ? c * TP : 0),
        acc(QB * accw), acc2(QB * c), mx(QB * c) {}
};

template <Kernel K, Mode M, typename T>
void run(const KernelSumParams<T>& p) {
  using Lin = Linear<K, T>;
  using Log = Profile<K, T>;
  const int64_t d = p.d, c = p.c, m = p.m, n = p.n;
  const bool has_log = p.plw != nullptr || p.qlw != nullptr;
  const int64_t nqb = (m + QB - 1) / QB;
  // Few query blocks (small m): split the points of each block over P tasks too, so every
  // thread has work; the P partial accumulators of a query are combined at the end.
  const int nthreads = omp_get_max_threads();
  const int64_t ntiles = (n + TP - 1) / TP;
  int64_t P = 1;
  if (p.batch * nqb < 2 * nthreads && ntiles >= 8)
    P = std::min<int64_t>((2 * nthreads + p.batch * nqb - 1) / (p.batch * nqb), ntiles / 4);
  const int64_t tiles_per_part = (ntiles + P - 1) / P;
  const int64_t ntasks = p.batch * nqb * P;
  if (ntasks == 0) {  // no queries: the point-side gradients are zeros
    if (M == Mode::Backward && p.out_y) std::fill(p.out_y, p.out_y + p.batch * n * d, T(0));
    if (M == Mode::Backward && p.out_w) std::fill(p.out_w, p.out_w + p.batch * n * c, T(0));
    return;
  }
  std::vector<T> ih(d);
  for (int64_t k = 0; k < d; ++k) ih[k] = T(1) / p.h[p.h_stride * k];
  constexpr bool BWD = M == Mode::Backward;
  const int64_t accw = BWD ? d : c;
  const double ninf = -std::numeric_limits<double>::infinity();
  // Backward: per-thread double accumulators for the point-side gradients, reduced at the end.
  const bool need_y = BWD && p.out_y != nullptr, need_w = BWD && p.out_w != nullptr;
  // Partial accumulators when points are split (P > 1): [(b*m + q)*P + part][col].
  const int64_t nacc = P > 1 ? p.batch * m * P : 0;
  std::vector<double> pacc(nacc * accw), pacc2(M == Mode::LogSumExp ? nacc * c : 0),
      pmx(M == Mode::LogSumExp ? nacc * c : 0);
  std::vector<std::vector<double>> ybuf(need_y ? nthreads : 0), wbuf(need_w ? nthreads : 0);

  // Final value of query q of batch b from its double accumulators.
  auto write_query = [&](int64_t b, int64_t q, const double* acc, const double* acc2, const double* mx) {
    if (BWD && !p.out) return;
    T* out = p.out + (b * m + q) * (BWD ? d : c);
    const T* qw = p.qw ? p.qw + b * p.qw_bstride : nullptr;
    const T* qlw = p.qlw ? p.qlw + b * p.qlw_bstride : nullptr;
    if constexpr (M == Mode::Sum) {
      for (int64_t col = 0; col < c; ++col)
        out[col] = static_cast<T>(acc[col] * (qw ? double(qw[q * c + col]) : 1.0));
    } else if constexpr (M == Mode::LogSumExp) {
      T* aux = p.aux ? p.aux + (b * m + q) * c : nullptr;
      for (int64_t col = 0; col < c; ++col) {
        const double M0 = mx[col];
        const double ql = qlw ? double(qlw[q * c + col]) : 0.0;
        out[col] = static_cast<T>(M0 == ninf ? ninf : ql + M0 + std::log(acc[col]));
        if (aux) aux[col] = static_cast<T>(M0 == ninf ? ninf : 2 * M0 + std::log(acc2[col]));
      }
    } else {
      for (int64_t k = 0; k < d; ++k) out[k] = static_cast<T>(2.0 * double(ih[k]) * acc[k]);
    }
  };

#pragma omp parallel num_threads(nthreads)
  {
    Scratch<T> sc(d, c, accw, need_y || need_w);
    const int tid = omp_get_thread_num();
    double* ytot = nullptr;
    double* wtot = nullptr;
    if (need_y) { ybuf[tid].assign(p.batch * n * d, 0.0); ytot = ybuf[tid].data(); }
    if (need_w) { wbuf[tid].assign(p.batch * n * c, 0.0); wtot = wbuf[tid].data(); }
    T* __restrict GY = sc.GY.data();
    T* __restrict GW = sc.GW.data();
    T* __restrict U = sc.U.data();
    T* __restrict V = sc.V.data();
    T* __restrict S = sc.S.data();
    T* __restrict val = sc.val.data();
    T* __restrict dval = sc.dval.data();
    T* __restrict PW = sc.PW.data();
    T* __restrict PLW = sc.PLW.data();
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntasks; ++t) {
      const int64_t part = t % P, bq = t / P;
      const int64_t b = bq / nqb, q0 = (bq % nqb) * QB, qn = std::min(QB, m - q0);
      const int64_t ibeg = part * tiles_per_part * TP, iend = std::min(n, (part + 1) * tiles_per_part * TP);
      const T* x = p.x + b * p.x_bstride;
      const T* y = p.y + b * p.y_bstride;
      const T* pw = p.pw ? p.pw + b * p.pw_bstride : nullptr;
      const T* plw = p.plw ? p.plw + b * p.plw_bstride : nullptr;
      const T* qw = p.qw ? p.qw + b * p.qw_bstride : nullptr;
      const T* qlw = p.qlw ? p.qlw + b * p.qlw_bstride : nullptr;
      std::fill(sc.acc.begin(), sc.acc.end(), 0.0);
      std::fill(sc.acc2.begin(), sc.acc2.end(), 0.0);
      std::fill(sc.mx.begin(), sc.mx.end(), ninf);
      // Pack the queries scaled by 1/h; pad the last register block with the last query.
      for (int64_t r = 0; r < QB; ++r) {
        const T* xr = x + (q0 + std::min(r, qn - 1)) * d;
        for (int64_t k = 0; k < d; ++k) U[r * d + k] = xr[k] * ih[k];
      }
      for (int64_t i0 = ibeg; i0 < iend; i0 += TP) {
        const int64_t nt = std::min(TP, iend - i0);
        const int64_t np = (nt + STRIP - 1) / STRIP * STRIP;
        for (int64_t k = 0; k < d; ++k) {
          T* Vk = V + k * TP;
          for (int64_t ii = 0; ii < nt; ++ii) Vk[ii] = y[(i0 + ii) * d + k] * ih[k];
          for (int64_t ii = nt; ii < np; ++ii) Vk[ii] = T(0);
        }
        if (pw)
          for (int64_t ii = 0; ii < nt; ++ii)
            for (int64_t col = 0; col < c; ++col) PW[col * TP + ii] = pw[(i0 + ii) * c + col];
        if (plw)
          for (int64_t ii = 0; ii < nt; ++ii)
            for (int64_t col = 0; col < c; ++col) PLW[col * TP + ii] = plw[(i0 + ii) * c + col];
        if (need_y) std::fill(GY, GY + d * TP, T(0));
        if (need_w) std::fill(GW, GW + c * TP, T(0));

        for (int64_t g = 0; g < qn; g += QR) {
          sqdist_block<T>(U + g * d, d, V, np, S);
          for (int64_t r = 0; r < QR && g + r < qn; ++r) {
            const int64_t qi = g + r, q = q0 + qi;
            const T* __restrict s = S + r * TP;
            const int64_t self = (p.exclude_self && q >= i0 && q < i0 + nt) ? q - i0 : -1;
            // Stage A: kernel values over the tile (vectorised), self pair removed.
            const bool logdom = M == Mode::LogSumExp || has_log;
            if (logdom) {
#pragma omp simd
              for (int64_t ii = 0; ii < nt; ++ii) val[ii] = Log::logk(s[ii]);
              if (self >= 0) val[self] = -std::numeric_limits<T>::infinity();
            } else if (!BWD || need_w) {
#pragma omp simd
              for (int64_t ii = 0; ii < nt; ++ii) val[ii] = Lin::k(s[ii]);
              if (self >= 0) val[self] = T(0);
            }
            if constexpr (BWD) {
              if (logdom) {
#pragma omp simd
                for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = Log::dlogk(s[ii]);
              } else if (need_w) {  // k is in val already
#pragma omp simd
                for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = dk_given_k<K, T>(s[ii], val[ii]);
              } else {
#pragma omp simd
                for (int64_t ii = 0; ii < nt; ++ii) dval[ii] = Lin::dk(s[ii]);
              }
              if (self >= 0) dval[self] = T(0);
            }
            // Stage B: reductions (kernel-independent).
            if constexpr (M == Mode::Sum) {
              for (int64_t col = 0; col < c; ++col) {
                T part = 0;
                const T* __restrict pwc = PW + col * TP;
                const T* __restrict plwc = PLW + col * TP;
                if (!has_log) {
                  if (pw) {
#pragma omp simd reduction(+ : part)
                    for (int64_t ii = 0; ii < nt; ++ii) part += pwc[ii] * val[ii];
                  } else {
#pragma omp simd reduction(+ : part)
                    for (int64_t ii = 0; ii < nt; ++ii) part += val[ii];
                  }
                } else {
                  const T ql = qlw ? qlw[q * c + col] : T(0);
                  for (int64_t ii = 0; ii < nt; ++ii) {
                    const T e = ql + (plw ? plwc[ii] : T(0)) + val[ii];
                    part += (pw ? pwc[ii] : T(1)) * guarded_exp(e);
                  }
                }
                sc.acc[qi * c + col] += static_cast<double>(part);
              }
            } else if constexpr (M == Mode::LogSumExp) {
              for (int64_t col = 0; col < c; ++col) {
                T* __restrict v = dval;  // scratch: plw + log k
                const T* __restrict plwc = PLW + col * TP;
                T tmax = -std::numeric_limits<T>::infinity();
                if (plw) {
#pragma omp simd reduction(max : tmax)
                  for (int64_t ii = 0; ii < nt; ++ii) {
                    v[ii] = plwc[ii] + val[ii];
                    tmax = std::max(tmax, v[ii]);
                  }
                } else {
#pragma omp simd reduction(max : tmax)
                  for (int64_t ii = 0; ii < nt; ++ii) {
                    v[ii] = val[ii];
                    tmax = std::max(tmax, v[ii]);
                  }
                }
                if (!(tmax > -std::numeric_limits<T>::infinity())) continue;  // all -inf (or NaN)
                T s1 = 0, s2 = 0;
                if (p.aux) {
#pragma omp simd reduction(+ : s1, s2)
                  for (int64_t ii = 0; ii < nt; ++ii) {
                    const T e = kf_exp(v[ii] - tmax);
                    s1 += e;
                    s2 += e * e;
                  }
                } else {
#pragma omp simd reduction(+ : s1)
                  for (int64_t ii = 0; ii < nt; ++ii) s1 += kf_exp(v[ii] - tmax);
                }
                double& M0 = sc.mx[qi * c + col];
                double& A1 = sc.acc[qi * c + col];
                double& A2 = sc.acc2[qi * c + col];
                const double tm = tmax;
                if (tm > M0) {
                  const double f = M0 == ninf ? 0.0 : std::exp(M0 - tm);
                  A1 = A1 * f + s1;
                  A2 = A2 * f * f + s2;
                  M0 = tm;
                } else {
                  const double f = std::exp(tm - M0);
                  A1 += s1 * f;
                  A2 += s2 * f * f;
                }
              }
            } else {  // Backward
              // coef_i = dk/ds * sum_c qw pw [exp(qlw + plw + log k)]; point-side weight sums to GW.
              T* __restrict coef = S + r * TP;  // s is consumed: reuse its row
              if (!has_log && c == 1) {
                const T a = qw ? qw[q] : T(1);
                if (pw) {
#pragma omp simd
                  for (int64_t ii = 0; ii < nt; ++ii) coef[ii] = a * PW[ii] * dval[ii];
                } else {
#pragma omp simd
                  for (int64_t ii = 0; ii < nt; ++ii) coef[ii] = a * dval[ii];
                }
                if (need_w) {
#pragma omp simd
                  for (int64_t ii = 0; ii < nt; ++ii) GW[ii] += a * val[ii];
                }
              } else {
                for (int64_t ii = 0; ii < nt; ++ii) {
                  T a = 0;
                  for (int64_t col = 0; col < c; ++col) {
                    const T qwc = qw ? qw[q * c + col] : T(1);
                    const T pwc = pw ? PW[col * TP + ii] : T(1);
                    if (has_log) {  // e = exp(qlw + plw + log k), paired with dlog k / ds
                      const T e = guarded_exp((qlw ? qlw[q * c + col] : T(0)) +
                                              (plw ? PLW[col * TP + ii] : T(0)) + val[ii]);
                      a += qwc * pwc * e;
                      if (need_w) GW[col * TP + ii] += qwc * e;
                    } else {  // linear domain: paired with dk / ds
                      a += qwc * pwc;
                      if (need_w) GW[col * TP + ii] += qwc * val[ii];
                    }
                  }
                  coef[ii] = a * dval[ii];
                }
              }
            }
          }
          if constexpr (BWD) {
            // Position gradients of the register block, coef rows in S: the x side reduces over
            // the tile, the y side accumulates into the tile buffer (one load/store per 4 queries).
            const int64_t nr = std::min(QR, qn - g);
            for (int64_t r = nr; r < QR; ++r) std::fill(S + r * TP, S + r * TP + nt, T(0));
            const T* __restrict c0 = S;
            const T* __restrict c1 = S + TP;
            const T* __restrict c2 = S + 2 * TP;
            const T* __restrict c3 = S + 3 * TP;
            for (int64_t k = 0; k < d; ++k) {
              const T u0 = U[g * d + k], u1 = U[(g + 1) * d + k], u2 = U[(g + 2) * d + k], u3 = U[(g + 3) * d + k];
              const T* __restrict Vk = V + k * TP;
              T p0 = 0, p1 = 0, p2 = 0, p3 = 0;
              if (need_y) {
                T* __restrict GYk = GY + k * TP;
#pragma omp simd reduction(+ : p0, p1, p2, p3)
                for (int64_t ii = 0; ii < nt; ++ii) {
                  const T v = Vk[ii];
                  const T t0 = c0[ii] * (u0 - v), t1 = c1[ii] * (u1 - v), t2 = c2[ii] * (u2 - v), t3 = c3[ii] * (u3 - v);
                  p0 += t0;
                  p1 += t1;
                  p2 += t2;
                  p3 += t3;
                  GYk[ii] -= (t0 + t1) + (t2 + t3);
                }
              } else {
#pragma omp simd reduction(+ : p0, p1, p2, p3)
                for (int64_t ii = 0; ii < nt; ++ii) {
                  const T v = Vk[ii];
                  p0 += c0[ii] * (u0 - v);
                  p1 += c1[ii] * (u1 - v);
                  p2 += c2[ii] * (u2 - v);
                  p3 += c3[ii] * (u3 - v);
                }
              }
              const T parts[QR] = {p0, p1, p2, p3};
              for (int64_t r = 0; r < nr; ++r) sc.acc[(g + r) * d + k] += static_cast<double>(parts[r]);
            }
          }
        }
        // Backward: flush the tile's point-side sums into this thread's accumulators.
        if (need_y)
          for (int64_t ii = 0; ii < nt; ++ii)
            for (int64_t k = 0; k < d; ++k) ytot[(b * n + i0 + ii) * d + k] += GY[k * TP + ii];
        if (need_w)
          for (int64_t ii = 0; ii < nt; ++ii)
            for (int64_t col = 0; col < c; ++col) wtot[(b * n + i0 + ii) * c + col] += GW[col * TP + ii];
      }
      // Write the task's outputs (or its partial accumulators when the points are split).
      for (int64_t qi = 0; qi < qn; ++qi) {
        const int64_t q = q0 + qi;
        if (P > 1) {
          const int64_t slot = (b * m + q) * P + part;
          std::copy_n(sc.acc.data() + qi * accw, accw, pacc.data() + slot * accw);
          if (M == Mode::LogSumExp) {
            std::copy_n(sc.acc2.data() + qi * c, c, pacc2.data() + slot * c);
            std::copy_n(sc.mx.data() + qi * c, c, pmx.data() + slot * c);
          }
        } else {
          write_query(b, q, sc.acc.data() + qi * accw, sc.acc2.data() + qi * c, sc.mx.data() + qi * c);
        }
      }
    }
    if (P > 1) {  // combine the partial accumulators (after the implicit barrier above)
      std::vector<double> a(accw), a2(c), mx(c);
#pragma omp for schedule(static)
      for (int64_t bq = 0; bq < p.batch * m; ++bq) {
        const double* pa = pacc.data() + bq * P * accw;
        if constexpr (M == Mode::LogSumExp) {
          for (int64_t col = 0; col < c; ++col) {
            double M0 = ninf;
            for (int64_t j = 0; j < P; ++j) M0 = std::max(M0, pmx[(bq * P + j) * c + col]);
            double A1 = 0, A2 = 0;
            for (int64_t j = 0; M0 != ninf && j < P; ++j) {
              const double mj = pmx[(bq * P + j) * c + col];
              if (mj == ninf) continue;
              const double f = std::exp(mj - M0);
              A1 += pa[j * accw + col] * f;
              A2 += pacc2[(bq * P + j) * c + col] * f * f;
            }
            a[col] = A1, a2[col] = A2, mx[col] = M0;
          }
        } else {
          for (int64_t k = 0; k < accw; ++k) {
            double t = 0;
            for (int64_t j = 0; j < P; ++j) t += pa[j * accw + k];
            a[k] = t;
          }
        }
        write_query(bq / m, bq % m, a.data(), a2.data(), mx.data());
      }
    }
    // Backward: reduce the per-thread point-side accumulators (after the implicit barrier above).
    if (need_y || need_w) {
#pragma omp for schedule(static)
      for (int64_t bi = 0; bi < p.batch * n; ++bi) {
        for (int64_t k = 0; need_y && k < d; ++k) {
          double t = 0;
          for (int th = 0; th < nthreads; ++th) t += ybuf[th][bi * d + k];
          p.out_y[bi * d + k] = static_cast<T>(2.0 * double(ih[k]) * t);
        }
        for (int64_t col = 0; need_w && col < c; ++col) {
          double t = 0;
          for (int th = 0; th < nthreads; ++th) t += wbuf[th][bi * c + col];
          p.out_w[bi * c + col] = static_cast<T>(t);
        }
      }
    }
  }
}

template <Mode M, typename T>
void dispatch_kernel(const KernelSumParams<T>& p) {
  switch (p.kernel) {
    case Kernel::Gaussian: return run<Kernel::Gaussian, M, T>(p);
    case Kernel::Laplacian: return run<Kernel::Laplacian, M, T>(p);
    case Kernel::Cauchy: return run<Kernel::Cauchy, M, T>(p);
    case Kernel::Matern32: return run<Kernel::Matern32, M, T>(p);
    case Kernel::Matern52: return run<Kernel::Matern52, M, T>(p);
    case Kernel::InverseMultiquadric: return run<Kernel::InverseMultiquadric, M, T>(p);
    case Kernel::Tophat: return run<Kernel::Tophat, M, T>(p);
    case Kernel::Epanechnikov: return run<Kernel::Epanechnikov, M, T>(p);
    case Kernel::Linear: return run<Kernel::Linear, M, T>(p);
    case Kernel::Cosine: return run<Kernel::Cosine, M, T>(p);
  }
}

}  // namespace

template <typename T>
void kernel_sum_cpu(const KernelSumParams<T>& p) {
  switch (p.mode) {
    case Mode::Sum: return dispatch_kernel<Mode::Sum, T>(p);
    case Mode::LogSumExp: return dispatch_kernel<Mode::LogSumExp, T>(p);
    case Mode::Backward: return dispatch_kernel<Mode::Backward, T>(p);
  }
}

template void kernel_sum_cpu<float>(const KernelSumParams<float>&);
template void kernel_sum_cpu<double>(const KernelSumParams<double>&);

const char* cpu_isa() { return simd::isa_name(); }

}  // namespace kernelfuse::kde
