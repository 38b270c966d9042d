// The fftconv launch sequence (see fftconv_runner.h). Torch-free.
#include "fftconv_runner.h"

#include <algorithm>
#include <vector>

namespace kernelfuse::longconv {

FFTConvPlan fftconv_plan(const FFTConvShape& s) {
  FFTConvPlan q;
  q.rows = s.B * s.H;
  q.nf = s.n / 2 + 1;
  // Rows per block: about 2^19 real elements on CPU (MKL / pocketfft plan costs are paid per
  // call, so blocks must not be too small; the buffers stay in L2 / L3 while the block's FFTs
  // run single-threaded, one task per thread), at least as many tasks as threads; up to 2^26
  // elements per buffer on the device.
  const int64_t target = s.device ? (int64_t(1) << 26) : (int64_t(1) << 19);
  const int64_t threads = s.device ? 1 : std::max<int64_t>(1, s.threads);
  q.nb = std::max<int64_t>(1, std::min(target / s.n, std::max<int64_t>(q.rows, 1)));
  q.by_heads = !s.per_batch && s.H >= q.nb;
  if (q.by_heads) {
    q.nb = std::min(q.nb, (s.H + threads - 1) / threads);
    q.ntasks = (s.H + q.nb - 1) / q.nb;
  } else {
    q.nb = std::max<int64_t>(1, std::min(q.nb, (q.rows + threads - 1) / threads));
    q.nblocks = (q.rows + q.nb - 1) / q.nb;
    q.ntasks = std::min<int64_t>(q.nblocks, threads);
    q.per_task = q.ntasks ? (q.nblocks + q.ntasks - 1) / q.ntasks : 0;
  }
  q.max_kernel_rows = s.per_batch ? 0 : q.by_heads ? q.nb : s.H;
  return q;
}

namespace {

// Sub-buffers of a task's scratch, each rounded up to 16 values (64 / 128 bytes: FFT alignment).
struct Carve {
  int64_t used = 0;
  int64_t take(int64_t count) {
    const int64_t off = used;
    used += (count + 15) / 16 * 16;
    return off;
  }
};

template <typename A>
struct Run {
  const FFTConvShape& s;
  FFTConvExec<A>& ex;
  RealFFT<A>& fft;
  FFTConvPlan q;
  int64_t spec = 0;  // values of one spectral row: 2 * nf
  Run(const FFTConvShape& shape, FFTConvExec<A>& e, RealFFT<A>& f)
      : s(shape), ex(e), fft(f), q(fftconv_plan(shape)), spec(2 * q.nf) {}

  // Kernel rows [kr0, kr0 + nk) owned by task t.
  void kernel_rows(int64_t t, int64_t& kr0, int64_t& nk) const {
    kr0 = q.by_heads ? t * q.nb : 0;
    nk = s.per_batch ? 0 : q.by_heads ? std::min(q.nb, s.H - kr0) : s.H;
  }
  // f(row0, m) for the blocks of task t.
  template <typename F>
  void for_blocks(int64_t t, F&& f) const {
    if (q.by_heads) {
      const int64_t h0 = t * q.nb, nh = std::min(q.nb, s.H - h0);
      for (int64_t b = 0; b < s.B; ++b) f(b * s.H + h0, nh);
    } else {
      const int64_t b1 = std::min(q.nblocks, (t + 1) * q.per_task);
      for (int64_t blk = t * q.per_task; blk < b1; ++blk) f(blk * q.nb, std::min(q.nb, q.rows - blk * q.nb));
    }
  }
  // Spectra K (nk rows) of kernel rows [kr0, kr0 + nk) with 1/n folded in, packed through R.
  void kernel_spectrum(int64_t kr0, int64_t nk, A* R, A* K) {
    ex.stage(Stage::PackKernel, kr0, nk, R, A(1) / A(s.n));
    fft.r2c(R, K, nk, s.n);
  }

  void forward() {
    Carve c;
    const int64_t oR = c.take(q.nb * s.n), oC = c.take(q.nb * spec);
    const int64_t oCk = s.per_batch ? c.take(q.nb * spec) : 0;
    const int64_t oK = s.per_batch ? 0 : c.take(q.max_kernel_rows * spec);
    ex.run_tasks(q.ntasks, c.used, [&](int64_t t, A* w) {
      int64_t kr0, nk;
      kernel_rows(t, kr0, nk);
      A *R = w + oR, *C = w + oC, *Ck = w + oCk, *K = w + oK;
      if (!s.per_batch) kernel_spectrum(kr0, nk, R, K);
      for_blocks(t, [&](int64_t row0, int64_t m) {
        if (s.per_batch) {
          ex.stage(Stage::PackKernel, row0, m, R, A(1) / A(s.n));
          fft.r2c(R, Ck, m, s.n);
        }
        ex.stage(Stage::PackInput, row0, m, R);
        fft.r2c(R, C, m, s.n);
        ex.spectral(SpecOp::MulKernel, row0, m, s.per_batch ? 0 : kr0, C, nullptr, s.per_batch ? Ck : K);
        fft.c2r(C, R, m, s.n);
        ex.stage(Stage::UnpackOutput, row0, m, R);
      });
    });
  }

  void backward(const FFTConvNeed& need) {
    const bool need_v = need.k || need.postgate;  // the spectrum of v = u * pregate
    const bool need_dv = need.u || need.pregate;  // the correlation of dz with k
    const bool need_kspec = need.postgate || need_dv;
    const A inv_n = A(1) / A(s.n);
    const int64_t kspec = q.max_kernel_rows * spec;
    // Shared kernel, not by heads: every task accumulates the spectra of all H heads; summed after.
    const bool partials = need.k && !s.per_batch && !q.by_heads;
    A* part = partials ? ex.alloc(q.ntasks * kspec) : nullptr;
    Carve c;
    const int64_t oR = c.take(q.nb * s.n), oC2 = c.take(q.nb * spec);
    const int64_t oC1 = need_v ? c.take(q.nb * spec) : 0;
    const int64_t oCk = (s.per_batch && need_kspec) ? c.take(q.nb * spec) : 0;
    const int64_t oK = (!s.per_batch && need_kspec) ? c.take(kspec) : 0;
    const int64_t oKacc = (need.k && !s.per_batch && !partials) ? c.take(kspec) : 0;
    ex.run_tasks(q.ntasks, c.used, [&](int64_t t, A* w) {
      int64_t kr0, nk;
      kernel_rows(t, kr0, nk);
      A *R = w + oR, *C2 = w + oC2, *C1 = w + oC1;
      A* Kb = s.per_batch ? w + oCk : w + oK;  // the spectra the block multiplies by
      A* Kacc = partials ? part + t * kspec : w + oKacc;
      const int64_t kbase = s.per_batch ? 0 : kr0;
      if (!s.per_batch && need_kspec) kernel_spectrum(kr0, nk, R, Kb);
      if (need.k && !s.per_batch) ex.zero(Kacc, nk * spec);
      for_blocks(t, [&](int64_t row0, int64_t m) {
        if (s.per_batch && need_kspec) {
          ex.stage(Stage::PackKernel, row0, m, R, inv_n);
          fft.r2c(R, Kb, m, s.n);
        }
        if (need_v) {
          ex.stage(Stage::PackInput, row0, m, R);
          fft.r2c(R, C1, m, s.n);
        }
        if (need.postgate) {  // z = conv(v, k) + D s, recomputed: dpostgate = grad * z
          ex.copy(C2, C1, m * spec);
          ex.spectral(SpecOp::MulKernel, row0, m, kbase, C2, nullptr, Kb);
          fft.c2r(C2, R, m, s.n);
          ex.stage(Stage::UnpackPostGrad, row0, m, R);
        }
        ex.stage(Stage::PackGrad, row0, m, R);  // dz = grad * postgate (and the dD row sums)
        if (!need.k && !need_dv) return;
        fft.r2c(R, C2, m, s.n);
        if (need.k) {  // dkk = corr(dz, v) = c2r(conj(V) DZ) / n
          if (s.per_batch) {
            ex.spectral(SpecOp::Corr, row0, m, 0, C1, C2, Kb);
            fft.c2r(C1, R, m, s.n);
            ex.stage(Stage::GatherKernelGrad, row0, m, R, inv_n);
          } else {
            ex.spectral(SpecOp::CorrAccumulate, row0, m, kr0, C1, C2, Kacc);
          }
        }
        if (need_dv) {  // dv = corr(dz, k) = c2r(DZ conj(K))
          ex.spectral(SpecOp::MulConjKernel, row0, m, kbase, C2, nullptr, Kb);
          fft.c2r(C2, R, m, s.n);
          ex.stage(Stage::UnpackInputGrad, row0, m, R);
        }
      });
      if (need.k && q.by_heads) {
        fft.c2r(Kacc, R, nk, s.n);
        ex.stage(Stage::GatherKernelGrad, kr0, nk, R, inv_n);
      }
    });
    if (partials) {
      for (int64_t t = 1; t < q.ntasks; ++t) ex.add(part, part + t * kspec, s.H * spec);
      A* Rk = ex.alloc(s.H * s.n);
      fft.c2r(part, Rk, s.H, s.n);
      ex.stage(Stage::GatherKernelGrad, 0, s.H, Rk, inv_n);
    }
  }
};

}  // namespace

template <typename A>
void fftconv_forward(const FFTConvShape& s, FFTConvExec<A>& ex, RealFFT<A>& fft) {
  if (s.B * s.H == 0) return;
  Run<A>(s, ex, fft).forward();
}

template <typename A>
void fftconv_backward(const FFTConvShape& s, const FFTConvNeed& need, FFTConvExec<A>& ex, RealFFT<A>& fft) {
  if (s.B * s.H == 0) return;
  Run<A>(s, ex, fft).backward(need);
}

template void fftconv_forward<float>(const FFTConvShape&, FFTConvExec<float>&, RealFFT<float>&);
template void fftconv_forward<double>(const FFTConvShape&, FFTConvExec<double>&, RealFFT<double>&);
template void fftconv_backward<float>(const FFTConvShape&, const FFTConvNeed&, FFTConvExec<float>&, RealFFT<float>&);
template void fftconv_backward<double>(const FFTConvShape&, const FFTConvNeed&, FFTConvExec<double>&, RealFFT<double>&);

}  // namespace kernelfuse::longconv
