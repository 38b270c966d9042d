// CPU butterfly products (see butterfly.h). A block of R vectors is transposed into a buffer of n
// slots of R lanes (complex: R real parts then R imaginary parts), so every butterfly of every
// stage is R-wide SIMD work with the twiddle entries broadcast, and the block stays in L1/L2 for
// all nblocks * log2 n stages. Backward: the stage inputs of a block are recomputed from
// checkpoints (all of them kept when they fit in a per-thread budget), the gradient runs back
// through the stages in the same transposed buffer, and the twiddle gradients are summed per
// thread, then across threads.
#include "butterfly.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace kernelfuse::butterfly {
namespace {

template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  static constexpr int R = 16;
};
template <>
struct Lanes<double> {
  static constexpr int R = 8;
};

constexpr int64_t kBackwardBudgetBytes = int64_t(48) << 20;  // per thread, stage-input buffers

template <typename T, int R, bool C>
struct Kernel {
  static constexpr int64_t E = C ? 2 * R : R;  // buffer elements per slot
  static constexpr int64_t TW = C ? 8 : 4;     // twiddle scalars per pair

  // x rows [row0, row0 + nr) -> buf (n slots); lanes >= nr are zero.
  static void load(T* buf, const T* x, int64_t row0, int64_t nr, int64_t n) {
    if (nr < R) std::memset(buf, 0, sizeof(T) * n * E);
    for (int64_t r = 0; r < nr; ++r) {
      const T* src = x + (row0 + r) * n * (C ? 2 : 1);
      if constexpr (C) {
        for (int64_t i = 0; i < n; ++i) {
          buf[i * E + r] = src[2 * i];
          buf[i * E + R + r] = src[2 * i + 1];
        }
      } else {
        for (int64_t i = 0; i < n; ++i) buf[i * E + r] = src[i];
      }
    }
  }
  static void store(T* y, const T* buf, int64_t row0, int64_t nr, int64_t n) {
    for (int64_t r = 0; r < nr; ++r) {
      T* dst = y + (row0 + r) * n * (C ? 2 : 1);
      if constexpr (C) {
        for (int64_t i = 0; i < n; ++i) {
          dst[2 * i] = buf[i * E + r];
          dst[2 * i + 1] = buf[i * E + R + r];
        }
      } else {
        for (int64_t i = 0; i < n; ++i) dst[i] = buf[i * E + r];
      }
    }
  }

  // One butterfly over the R lanes of slots xi, xj with the pair's twiddle w.
  static inline void bfly(T* __restrict xi, T* __restrict xj, const T* w) {
    if constexpr (!C) {
      const T a = w[0], b = w[1], c = w[2], d = w[3];
#pragma omp simd
      for (int r = 0; r < R; ++r) {
        const T u = xi[r], v = xj[r];
        xi[r] = a * u + b * v;
        xj[r] = c * u + d * v;
      }
    } else {
      const T ar = w[0], ai = w[1], br = w[2], bi = w[3], cr = w[4], ci = w[5], dr = w[6], di = w[7];
#pragma omp simd
      for (int r = 0; r < R; ++r) {
        const T ur = xi[r], ui = xi[R + r], vr = xj[r], vi = xj[R + r];
        xi[r] = ar * ur - ai * ui + br * vr - bi * vi;
        xi[R + r] = ar * ui + ai * ur + br * vi + bi * vr;
        xj[r] = cr * ur - ci * ui + dr * vr - di * vi;
        xj[R + r] = cr * ui + ci * ur + dr * vi + di * vr;
      }
    }
  }

  // One stage in place: stride h, twiddles tw = (n/2, 2, 2[, 2]) of this stage.
  static void stage(T* buf, const T* tw, int64_t n, int64_t h) {
    for (int64_t g = 0; g < n; g += 2 * h)
      for (int64_t k = 0; k < h; ++k) bfly(buf + (g + k) * E, buf + (g + k + h) * E, tw + (g / 2 + k) * TW);
  }

  // Two consecutive stages with strides {h, 2h} in one pass (radix 4): the four slots
  // i, i + h, i + 2h, i + 3h go through both stages while they are in L1. `first_small`: the
  // stride-h stage (twiddles twh) comes first, else the stride-2h stage (tw2h) does.
  static void stage_pair(T* buf, const T* twh, const T* tw2h, int64_t n, int64_t h, bool first_small) {
    for (int64_t g = 0; g < n; g += 4 * h) {
      for (int64_t k = 0; k < h; ++k) {
        T* e0 = buf + (g + k) * E;
        T* e1 = e0 + h * E;
        T* e2 = e0 + 2 * h * E;
        T* e3 = e0 + 3 * h * E;
        const T* wa = twh + (g / 2 + k) * TW;       // stride h: (e0, e1)
        const T* wb = twh + (g / 2 + h + k) * TW;   // stride h: (e2, e3)
        const T* wc = tw2h + (g / 2 + k) * TW;      // stride 2h: (e0, e2)
        const T* wd = tw2h + (g / 2 + h + k) * TW;  // stride 2h: (e1, e3)
        if (first_small) {
          bfly(e0, e1, wa);
          bfly(e2, e3, wb);
          bfly(e0, e2, wc);
          bfly(e1, e3, wd);
        } else {
          bfly(e0, e2, wc);
          bfly(e1, e3, wd);
          bfly(e0, e1, wa);
          bfly(e2, e3, wb);
        }
      }
    }
  }

  // Stages [s0, s1) in place, two at a time where two consecutive stages of one block allow it.
  static void run_stages(const ButterflyParams<T>& p, T* buf, int64_t s0, int64_t s1) {
    const int64_t n = p.n, tw_stage = (n / 2) * TW;
    int64_t s = s0;
    while (s < s1) {
      const int64_t ls = p.log_stride(s);
      if (s + 1 < s1 && s / p.log_n == (s + 1) / p.log_n) {
        const int64_t ls2 = p.log_stride(s + 1);
        const T* ta = p.twiddle + s * tw_stage;
        const T* tb = p.twiddle + (s + 1) * tw_stage;
        if (ls2 == ls + 1) {
          stage_pair(buf, ta, tb, n, int64_t(1) << ls, true);
          s += 2;
          continue;
        }
        if (ls2 + 1 == ls) {
          stage_pair(buf, tb, ta, n, int64_t(1) << ls2, false);
          s += 2;
          continue;
        }
      }
      stage(buf, p.twiddle + s * tw_stage, n, int64_t(1) << ls);
      ++s;
    }
  }

  // Backward through one stage: xin = the stage's input, g = gradient of its output (in place ->
  // gradient of its input); dtw (this stage's twiddle gradient, null: not wanted) accumulates.
  static void stage_bwd(T* g, const T* xin, const T* tw, T* dtw, int64_t n, int64_t h) {
    for (int64_t g0 = 0; g0 < n; g0 += 2 * h) {
      for (int64_t k = 0; k < h; ++k) {
        const int64_t pidx = g0 / 2 + k;
        const T* w = tw + pidx * TW;
        T* __restrict gi = g + (g0 + k) * E;
        T* __restrict gj = g + (g0 + k + h) * E;
        const T* __restrict xi = xin + (g0 + k) * E;
        const T* __restrict xj = xin + (g0 + k + h) * E;
        if constexpr (!C) {
          const T a = w[0], b = w[1], c = w[2], d = w[3];
          T sa = 0, sb = 0, sc = 0, sd = 0;
#pragma omp simd reduction(+ : sa, sb, sc, sd)
          for (int r = 0; r < R; ++r) {
            const T u = xi[r], v = xj[r], p = gi[r], q = gj[r];
            sa += p * u;
            sb += p * v;
            sc += q * u;
            sd += q * v;
            gi[r] = a * p + c * q;
            gj[r] = b * p + d * q;
          }
          if (dtw) {
            T* dw = dtw + pidx * TW;
            dw[0] += sa;
            dw[1] += sb;
            dw[2] += sc;
            dw[3] += sd;
          }
        } else {
          const T ar = w[0], ai = w[1], br = w[2], bi = w[3], cr = w[4], ci = w[5], dr = w[6], di = w[7];
          T s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7)
          for (int r = 0; r < R; ++r) {
            const T ur = xi[r], ui = xi[R + r], vr = xj[r], vi = xj[R + r];
            const T pr = gi[r], pi = gi[R + r], qr = gj[r], qi = gj[R + r];
            // d a += p conj(u), d b += p conj(v), d c += q conj(u), d d += q conj(v)
            s0 += pr * ur + pi * ui;
            s1 += pi * ur - pr * ui;
            s2 += pr * vr + pi * vi;
            s3 += pi * vr - pr * vi;
            s4 += qr * ur + qi * ui;
            s5 += qi * ur - qr * ui;
            s6 += qr * vr + qi * vi;
            s7 += qi * vr - qr * vi;
            // g_i = conj(a) p + conj(c) q, g_j = conj(b) p + conj(d) q
            gi[r] = ar * pr + ai * pi + cr * qr + ci * qi;
            gi[R + r] = ar * pi - ai * pr + cr * qi - ci * qr;
            gj[r] = br * pr + bi * pi + dr * qr + di * qi;
            gj[R + r] = br * pi - bi * pr + dr * qi - di * qr;
          }
          s[0] = s0;
          s[1] = s1;
          s[2] = s2;
          s[3] = s3;
          s[4] = s4;
          s[5] = s5;
          s[6] = s6;
          s[7] = s7;
          if (dtw) {
            T* dw = dtw + pidx * TW;
            for (int e = 0; e < 8; ++e) dw[e] += s[e];
          }
        }
      }
    }
  }

  static void forward(const ButterflyParams<T>& p) {
    const int64_t n = p.n, S = p.stages();
    const int64_t nblk = (p.rows + R - 1) / R;
#pragma omp parallel if (nblk > 1)
    {
      std::vector<T> buf(n * E);
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t row0 = blk * R, nr = std::min<int64_t>(R, p.rows - row0);
        load(buf.data(), p.x, row0, nr, n);
        run_stages(p, buf.data(), 0, S);
        store(p.out, buf.data(), row0, nr, n);
      }
    }
  }

  static void backward(const ButterflyParams<T>& p) {
    const int64_t n = p.n, S = p.stages(), tw_stage = (n / 2) * TW;
    const int64_t nblk = (p.rows + R - 1) / R;
    const int64_t slot = n * E;  // elements per buffer
    const int64_t bytes = slot * int64_t(sizeof(T));
    // Segment length K: checkpoints every K stages, K stage inputs recomputed per segment.
    int64_t K = S;
    if ((S + 1) * bytes > kBackwardBudgetBytes) {
      K = 0;
      for (int64_t k = 1; k <= S; ++k)
        if (((S + k - 1) / k + k) * bytes <= kBackwardBudgetBytes) {
          K = k;
          break;
        }
      if (K == 0) {
        K = 1;
        while (K * K < S) ++K;
      }
    }
    const int64_t ncp = (S + K - 1) / K;
    const int nthreads = nblk > 1 ? omp_get_max_threads() : 1;
    std::vector<std::vector<T>> acc(p.dtwiddle ? nthreads : 0);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
      const int tid = omp_get_thread_num();
      std::vector<T> cps(ncp * slot), seg(K * slot), g(slot);
      T* dtw = nullptr;
      if (p.dtwiddle) {
        acc[tid].assign(S * tw_stage, T(0));
        dtw = acc[tid].data();
      }
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t row0 = blk * R, nr = std::min<int64_t>(R, p.rows - row0);
        load(cps.data(), p.x, row0, nr, n);
        for (int64_t c = 1; c < ncp; ++c) {
          T* cur = cps.data() + c * slot;
          std::memcpy(cur, cur - slot, sizeof(T) * slot);
          run_stages(p, cur, (c - 1) * K, c * K);
        }
        load(g.data(), p.grad, row0, nr, n);
        for (int64_t c = ncp - 1; c >= 0; --c) {
          const int64_t s0 = c * K, s1 = std::min(S, s0 + K);
          std::memcpy(seg.data(), cps.data() + c * slot, sizeof(T) * slot);
          for (int64_t t = 1; t < s1 - s0; ++t) {
            T* cur = seg.data() + t * slot;
            std::memcpy(cur, cur - slot, sizeof(T) * slot);
            stage(cur, p.twiddle + (s0 + t - 1) * tw_stage, n, int64_t(1) << p.log_stride(s0 + t - 1));
          }
          for (int64_t s = s1 - 1; s >= s0; --s)
            stage_bwd(g.data(), seg.data() + (s - s0) * slot, p.twiddle + s * tw_stage,
                      dtw ? dtw + s * tw_stage : nullptr, n, int64_t(1) << p.log_stride(s));
        }
        if (p.dx) store(p.dx, g.data(), row0, nr, n);
      }
    }
    if (p.dtwiddle) {
      const int64_t total = S * tw_stage;
      std::copy(acc[0].begin(), acc[0].end(), p.dtwiddle);
      for (int t = 1; t < nthreads; ++t) {
        const T* a = acc[t].data();
        if (acc[t].empty()) continue;
        for (int64_t e = 0; e < total; ++e) p.dtwiddle[e] += a[e];
      }
    }
  }
};

}  // namespace

template <typename T>
void butterfly_multiply_cpu(const ButterflyParams<T>& p) {
  if (p.rows == 0) return;
  if (p.complex)
    Kernel<T, Lanes<T>::R, true>::forward(p);
  else
    Kernel<T, Lanes<T>::R, false>::forward(p);
}

template <typename T>
void butterfly_multiply_bwd_cpu(const ButterflyParams<T>& p) {
  if (p.rows == 0) {
    if (p.dtwiddle) std::fill(p.dtwiddle, p.dtwiddle + p.stages() * (p.n / 2) * (p.complex ? 8 : 4), T(0));
    return;
  }
  if (p.complex)
    Kernel<T, Lanes<T>::R, true>::backward(p);
  else
    Kernel<T, Lanes<T>::R, false>::backward(p);
}

template void butterfly_multiply_cpu<float>(const ButterflyParams<float>&);
template void butterfly_multiply_cpu<double>(const ButterflyParams<double>&);
template void butterfly_multiply_bwd_cpu<float>(const ButterflyParams<float>&);
template void butterfly_multiply_bwd_cpu<double>(const ButterflyParams<double>&);

}  // namespace kernelfuse::butterfly
