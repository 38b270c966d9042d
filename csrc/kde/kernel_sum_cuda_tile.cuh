// The tile walker's pieces of the CUDA kernel sums (kernel_sum_cuda.cu): the compile-time shape
// of an instantiation, a block's role and rows, the thread's row, tile staging (register and
// generic paths) and the distance of one (row, item) pair. Torch-free, internal.
#pragma once
#include "kernel_sum_cuda_common.cuh"

namespace kernelfuse::kde::cuda {

// ---------------------------------------------------------------------------------------------
// The tile walker. DB > 0: register path for d <= DB (DB = reg_max exits its loops every kStep
// dimensions); DB == 0: generic path (any d >= 1). CW: weight columns per block (1 when c == 1,
// else kCols; columns past c are computed on padding and never written). The reduction is a
// policy (SumPolicy, LsePolicy, BwdPolicy below: init / accumulate / flush (merge a tile into the
// totals) / write); the kernel profile a runtime switch per pair (prof, uniform across the grid).

// Compile-time shape of one instantiation.
template <typename A, Mode M, int DB, int CW>
struct Shape {
  static constexpr bool kGen = DB == 0;
  static constexpr bool kBwd = M == Mode::Backward;
  static constexpr int TN = kGen ? gen_tile<A>() : kRegTile;  // items per tile
  static constexpr int DC = kGen ? gen_chunk<A>() : DB;       // dimensions per staged item row
  static constexpr int STEP = DC < kStep ? DC : kStep;        // dimension loops exit early per STEP
  static constexpr int GD = kBwd ? DC : 1;                    // gradient dimensions per thread
  static constexpr int QD = kGen ? (kBwd ? DC : 0) : DB;      // row dimensions held in registers
  static constexpr bool kIhReg = !kGen && DB <= kStep;        // 1/h in registers (else shared)
  static constexpr int kCW = CW;
};

// Shared memory of a block (declared in the kernel, see there).
template <typename A>
struct Smem {
  A *sy, *sih, *sw, *slw, *sx, *ss, *syg, *sihg;
};

// What a block is: its role, rows, split and distance scale (uniform across the block).
template <typename A>
struct Block {
  int role;
  Side own, oth;
  int64_t split, nrows, nitems, c0, g0, r0, r, rr, rskip;
  void* gout;
  bool do_grad, do_cols, rok;
  int dl;
  A thr, rscale;  // unscaled distances: inside iff D < thr (h^2 for euclidean, else h); r (s) = D * rscale
};

template <class S, typename A>
__device__ __forceinline__ Block<A> make_block(const Args<A>& a, int tid) {
  Block<A> k;
  int64_t bx = blockIdx.x;
  k.role = 0;
  if constexpr (S::kBwd) {
    if (bx >= a.nblk0) k.role = 1, bx -= a.nblk0;
  }
  const int64_t nrb = k.role ? a.nrb1 : a.nrb0;
  const int64_t rb = bx % nrb, split = bx / nrb;
  k.split = split;
  k.own = k.role ? a.side[1] : a.side[0];
  k.oth = k.role ? a.side[0] : a.side[1];
  k.nrows = k.own.nrows, k.nitems = k.oth.nrows;
  k.gout = k.role ? a.out_y : a.out;
  k.do_grad = S::kBwd && k.gout != nullptr && split < a.nsg;
  k.do_cols = !S::kBwd || (k.role == 1 && a.out_w != nullptr && split < a.nsc);
  k.c0 = k.do_cols ? split * S::kCW : 0;              // first column of this block
  k.g0 = (S::kGen && k.do_grad) ? split * S::DC : 0;  // first gradient dimension
  // Register path: dimensions to walk (d <= DB there); a single-step bucket always walks all DB
  // (zero padded), the largest bucket stops after the first STEP-multiple >= d.
  k.dl = static_cast<int>(!S::kGen && S::DC == S::STEP ? S::DC : (a.d < S::DC ? a.d : S::DC));
  k.r0 = rb * kBlock;
  k.r = k.r0 + tid;  // this thread's row
  k.rok = k.r < k.nrows;
  k.rr = k.rok ? k.r : k.nrows - 1;  // clamped row for loads (nrows >= 1)
  k.rskip = a.exclude_self ? k.r : -1;
  k.thr = A(1), k.rscale = A(1);
  if (a.unscaled) {
    const A h0 = a.h[0];
    k.thr = a.met == Metric::Euclidean ? h0 * h0 : h0;
    k.rscale = A(1) / k.thr;
  }
  return k;
}

// This thread's row in registers and its own factors for the block's columns (weight 0 for the
// padding columns).
template <class S, typename A>
struct Row {
  A xq[S::QD > 0 ? S::QD : 1];   // register path: the row; generic Backward: its output dims
  A ihr[S::kIhReg ? S::DC : 1];  // 1 / h in registers (small register buckets)
  A w[S::kCW], lw[S::kCW];
};
template <class S, typename A>
__device__ __forceinline__ void load_row(const Args<A>& a, const Block<A>& k, int64_t b, Row<S, A>& row) {
  if constexpr (S::QD > 0) ld_row(row.xq, k.own.rows, b * k.own.rows_bs + k.rr * a.d + k.g0, a.d - k.g0, a.dt);
#pragma unroll
  for (int cw = 0; cw < S::kCW; ++cw) {
    const bool ok = k.c0 + cw < a.c;
    const int64_t off = k.rr * a.c + k.c0 + cw;
    row.lw[cw] = (k.own.lw && ok) ? ld<A>(k.own.lw, b * k.own.lw_bs + off, a.dt) : A(0);
    row.w[cw] = ok ? (k.own.w ? ld<A>(k.own.w, b * k.own.w_bs + off, a.dt) : A(1)) : A(0);
  }
}

// Stage the tile's item factors [col][item] (1 / 0 when absent).
template <class S, typename A>
__device__ __forceinline__ void stage_factors(const Args<A>& a, const Block<A>& k, const Smem<A>& m, int64_t b,
                                              int64_t i0, int nt, int tid) {
  constexpr int TN = S::TN;
  for (int e = tid; e < S::kCW * TN; e += kBlock) {
    const int cw = e / TN, j = e % TN;
    const bool ok = j < nt && k.c0 + cw < a.c;
    const int64_t off = (i0 + j) * a.c + k.c0 + cw;
    m.sw[e] = (k.oth.w && ok) ? ld<A>(k.oth.w, b * k.oth.w_bs + off, a.dt) : A(1);
    m.slw[e] = (k.oth.lw && ok) ? ld<A>(k.oth.lw, b * k.oth.lw_bs + off, a.dt) : A(0);
  }
}

// Register path: stage whole item rows (the dims ever read) and the factors.
template <class S, typename A>
__device__ __forceinline__ void stage_reg_tile(const Args<A>& a, const Block<A>& k, const Smem<A>& m, int64_t b,
                                               int64_t i0, int nt, int tid) {
  constexpr int DB = S::DC;
  __syncthreads();  // every thread is done with the previous tile
  const int dpad = (k.dl + S::STEP - 1) / S::STEP * S::STEP;
  const int64_t oth_off = b * k.oth.rows_bs;
  for (int e = tid; e < S::TN * DB; e += kBlock) {
    const int j = e / DB, kk = e % DB;
    if (kk < dpad) m.sy[e] = (j < nt && kk < a.d) ? ld<A>(k.oth.rows, oth_off + (i0 + j) * a.d + kk, a.dt) : A(0);
  }
  stage_factors<S>(a, k, m, b, i0, nt, tid);
  __syncthreads();
}

// Generic path, one chunk of DC dimensions: fold this thread's row chunk against the staged
// items into ss (euclidean sum t^2; chebyshev the running max, its sign bit set while the first
// maximising coordinate lies in the block's gradient chunk g0; manhattan / minkowski sum |t|(^p)).
template <class S, typename A>
__device__ __forceinline__ void gen_chunk_distances(const Args<A>& a, const Block<A>& k, const Smem<A>& m, int64_t k0,
                                                    int nt, int tid) {
  constexpr int DC = S::DC;
  A xr[DC];
#pragma unroll
  for (int kk = 0; kk < DC; ++kk) xr[kk] = m.sx[kk * (kBlock + 1) + tid];
  const Metric met = a.met;
  for (int j = 0; j < nt; ++j) {
    const A prev = k0 == 0 ? A(0) : m.ss[j * kBlock + tid];
    const A* yj = m.sy + j * DC;
    if (met == Metric::Chebyshev) {
      const A mprev = kabs(prev);
      bool bit = k0 != 0 && ksignbit(prev);
      A cm = A(0);
#pragma unroll
      for (int kk = 0; kk < DC; ++kk) cm = kmaxn(cm, kabs((xr[kk] - yj[kk]) * m.sih[kk]));
      if (k0 == k.g0)
        bit = cm > mprev || cm != cm;
      else if (cm > mprev)
        bit = false;
      const A mx = kmaxn(mprev, cm);
      m.ss[j * kBlock + tid] = bit ? -mx : mx;
      continue;
    }
    A s = prev;
    if (met == Metric::Euclidean) {
#pragma unroll
      for (int kk = 0; kk < DC; ++kk) {
        const A t = (xr[kk] - yj[kk]) * m.sih[kk];
        s = kfma(t, t, s);
      }
    } else {
      const bool l1 = met == Metric::Manhattan;
#pragma unroll
      for (int kk = 0; kk < DC; ++kk) {
        const A t = kabs((xr[kk] - yj[kk]) * m.sih[kk]);
        s += l1 ? t : (t > A(0) ? kpow(t, a.pp) : t);
      }
    }
    m.ss[j * kBlock + tid] = s;
  }
}

// Generic path: stage the tile chunk by chunk (items, the block's row chunk transposed, 1 / h)
// and accumulate the distances of every (item, row) into ss.
template <class S, typename A>
__device__ __forceinline__ void stage_gen_tile(const Args<A>& a, const Block<A>& k, const Smem<A>& m, int64_t b,
                                               int64_t i0, int nt, int tid) {
  constexpr int DC = S::DC;
  const int64_t d = a.d, own_off = b * k.own.rows_bs, oth_off = b * k.oth.rows_bs;
  for (int64_t k0 = 0; k0 < d; k0 += DC) {
    __syncthreads();  // every thread is done with the previous chunk / tile
    for (int e = tid; e < S::TN * DC; e += kBlock) {
      const int j = e / DC, kk = e % DC;
      const A v = (j < nt && k0 + kk < d) ? ld<A>(k.oth.rows, oth_off + (i0 + j) * d + k0 + kk, a.dt) : A(0);
      m.sy[e] = v;
      if constexpr (S::kBwd) {
        if (k0 == k.g0) m.syg[e] = v;
      }
    }
    for (int e = tid; e < DC * kBlock; e += kBlock) {
      const int t = e / DC, kk = e % DC;
      const int64_t row = k.r0 + t < k.nrows ? k.r0 + t : k.nrows - 1;
      m.sx[kk * (kBlock + 1) + t] = k0 + kk < d ? ld<A>(k.own.rows, own_off + row * d + k0 + kk, a.dt) : A(0);
    }
    if (tid < DC) m.sih[tid] = k0 + tid < d ? (a.unscaled ? A(1) : A(1) / a.h[(k0 + tid) * a.h_stride]) : A(0);
    if (k0 == 0) stage_factors<S>(a, k, m, b, i0, nt, tid);
    __syncthreads();
    gen_chunk_distances<S>(a, k, m, k0, nt, tid);
  }
}

// One (row, item j) pair: s = (dist / h)^2. Other metrics than euclidean also keep rv = r, dpv =
// the distance in the staged units and (chebyshev) kst = the first maximising coordinate
// (register path) or whether it lies in this block's gradient chunk (generic path, kst 0 / 1).
template <typename A>
struct Pair {
  A s, rv, dpv;
  int kst;
};
template <class S, typename A>
__device__ __forceinline__ Pair<A> pair_distance(const Args<A>& a, const Block<A>& k, const Smem<A>& m,
                                                 const Row<S, A>& row, int j, int tid) {
  constexpr int DB = S::DC, STEP = S::STEP;
  const Metric met = a.met;
  Pair<A> pr{A(0), A(0), A(0), -1};
  A s = A(0);
  if constexpr (S::kGen) {
    s = m.ss[j * kBlock + tid];
    if (met == Metric::Chebyshev) {
      pr.kst = ksignbit(s) ? 1 : 0;
      s = kabs(s);
    } else if (met == Metric::Minkowski) {
      s = kpow(s, a.inv_p);
    }
  } else {
    const A* yj = m.sy + j * DB;
    if (met == Metric::Euclidean) {
#pragma unroll
      for (int k0 = 0; k0 < DB; k0 += STEP) {
        if (k0 > 0 && k0 >= k.dl) break;
#pragma unroll
        for (int kk = k0; kk < k0 + STEP; ++kk) {
          const A t = (row.xq[kk] - yj[kk]) * (S::kIhReg ? row.ihr[kk] : m.sih[kk]);
          s = kfma(t, t, s);
        }
      }
    } else if (met == Metric::Haversine) {  // d == 2 (the host checks it)
      s = A(2) * kasin(ksqrt(hav_a(row.xq[0], row.xq[1 < DB ? 1 : 0], yj[0], yj[1 < DB ? 1 : 0])));
    } else {
#pragma unroll
      for (int k0 = 0; k0 < DB; k0 += STEP) {
        if (k0 > 0 && k0 >= k.dl) break;
#pragma unroll
        for (int kk = k0; kk < k0 + STEP; ++kk) {
          const A t = kabs((row.xq[kk] - yj[kk]) * (S::kIhReg ? row.ihr[kk] : m.sih[kk]));
          if (met == Metric::Manhattan) {
            s += t;
          } else if (met == Metric::Chebyshev) {
            if (t > s || t != t) pr.kst = kk;
            s = kmaxn(s, t);
          } else {
            s += t > A(0) ? kpow(t, a.pp) : t;
          }
        }
      }
      if (met == Metric::Minkowski) s = kpow(s, a.inv_p);
    }
  }
  if (met == Metric::Euclidean) {
    if (a.exact) s = to_r(s, true, k.thr, k.rscale);
  } else {
    pr.dpv = s;
    pr.rv = to_r(s, a.exact, k.thr, k.rscale);
    s = pr.rv * pr.rv;
  }
  pr.s = s;
  return pr;
}

}  // namespace kernelfuse::kde::cuda
