// The fftconv launch sequence (see fftconv_runner.h). Torch-free.
//
// One block walker (walk) over the plan's tasks and blocks, parameterised by a pipeline policy:
// Forward, or Backward. A policy has the hooks
//   layout(Carve&)              its buffers in a task's scratch (the walker carves R, the real block)
//   init()                      call-wide buffers, before the tasks
//   begin_task(Task&)           per task: the kernel spectra it keeps, accumulators zeroed
//   accumulate(Task&, row0, m)  one block: pack, FFT forward, spectral multiply, inverse FFT, unpack
//   end_task(Task&)             per task: write what the task accumulated
//   write()                     call-wide: reduce and write the tasks' partial results
// and is itself built from small parts, each one concern, each templated where the choice is
// fixed for the call:
//   the kernel source   SharedKernel (k shared by the batch: spectra of the task's heads, once per
//                       task) or BatchKernel (k per batch row: spectra of the block's rows);
//   the backward terms  one per requested gradient set, each on or off by FFTConvNeed:
//                       PostGateGrad (dpostgate), InputGrad (du, dpregate), and the kernel
//                       gradient of the kernel source, SharedKernelGrad or BatchKernelGrad
//                       (dk). dD is the PackGrad stage's side product (FFTConvParams::dD_rows).
#include "fftconv_runner.h"

#include <algorithm>

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

// One task: its index, the kernel rows [kr0, kr0 + nk) it owns (shared kernels), its scratch w
// and the real block buffer R (max(nb, max_kernel_rows) rows of n) at the start of it.
template <typename A>
struct Task {
  int64_t t = 0, kr0 = 0, nk = 0;
  A* w = nullptr;
  A* R = nullptr;
};

// What every part of a pipeline sees: the problem, the plan, the exec and the FFT, and the two
// steps every block is made of (a stage then a forward FFT; an inverse FFT then a stage).
template <typename A>
struct Ctx {
  const FFTConvShape& s;
  FFTConvExec<A>& ex;
  RealFFT<A>& fft;
  FFTConvPlan q;
  int64_t spec;  // values of one spectral row: 2 * nf
  A inv_n;
  Ctx(const FFTConvShape& shape, FFTConvExec<A>& e, RealFFT<A>& f)
      : s(shape), ex(e), fft(f), q(fftconv_plan(shape)), spec(2 * q.nf), inv_n(A(1) / A(shape.n)) {}

  // C (m spectral rows) = FFT of the stage `st` written into R.
  void to_spectrum(Stage st, int64_t row0, int64_t m, A* R, A* C, A scale = A(1)) const {
    ex.stage(st, row0, m, R, scale);
    fft.r2c(R, C, m, s.n);
  }
  // R = inverse FFT of C (m rows), then the stage `st` reads it.
  void from_spectrum(A* C, Stage st, int64_t row0, int64_t m, A* R, A scale = A(1)) const {
    fft.c2r(C, R, m, s.n);
    ex.stage(st, row0, m, R, scale);
  }
};

// ---- The walker: the plan's tasks (in parallel on CPU, in order on the device), each walking its
// blocks of rows (row0, m). by_heads: task t owns the heads [t nb, t nb + nh) and walks the blocks
// (b H + h0, nh), b < B; otherwise a contiguous range of blocks of nb rows.
template <typename A>
Task<A> make_task(const Ctx<A>& cx, int64_t t, A* w) {
  Task<A> tk;
  tk.t = t;
  tk.kr0 = cx.q.by_heads ? t * cx.q.nb : 0;
  tk.nk = cx.s.per_batch ? 0 : cx.q.by_heads ? std::min(cx.q.nb, cx.s.H - tk.kr0) : cx.s.H;
  tk.w = w;
  tk.R = w;
  return tk;
}

template <typename A, class F>
void for_blocks(const Ctx<A>& cx, int64_t t, F&& f) {
  const FFTConvShape& s = cx.s;
  const FFTConvPlan& q = cx.q;
  if (q.by_heads) {
    const int64_t h0 = t * q.nb, nh = std::min(q.nb, s.H - h0);
    for (int64_t b = 0; b < s.B; ++b) f(b * s.H + h0, nh);
  } else {
    const int64_t b1 = std::min(q.nblocks, (t + 1) * q.per_task);
    for (int64_t blk = t * q.per_task; blk < b1; ++blk) f(blk * q.nb, std::min(q.nb, q.rows - blk * q.nb));
  }
}

template <typename A, class Policy>
void walk(const Ctx<A>& cx, Policy& pol) {
  Carve c;
  // R, at offset 0: a block's rows, or the kernel rows a task packs (more than nb when the rows
  // were split over more tasks than there are batch rows: B < threads, H < 2^19 / n).
  c.take(std::max(cx.q.nb, cx.q.max_kernel_rows) * cx.s.n);
  pol.layout(c);
  pol.init();
  cx.ex.run_tasks(cx.q.ntasks, c.used, [&](int64_t t, A* w) {
    Task<A> tk = make_task(cx, t, w);
    pol.begin_task(tk);
    for_blocks(cx, t, [&](int64_t row0, int64_t m) { pol.accumulate(tk, row0, m); });
    pol.end_task(tk);
  });
  pol.write();
}

// ---- Kernel sources: where the spectra K a block multiplies by come from (1/n folded in), K(tk)
// in the task's scratch, base(tk) the kernel row of K's first row (fftconv.h's kbase). PER_BLOCK
// false: k shared by the batch, the spectra of the task's kernel rows computed once per task;
// true: k per batch row, the spectra of the block's rows computed per block (before anything
// else uses R). `on` false: no spectra (a backward that needs only dk).
template <typename A, bool PER_BLOCK>
struct KernelSpectra {
  const Ctx<A>& cx;
  bool on;
  int64_t oK = 0;
  void layout(Carve& c) { oK = on ? c.take((PER_BLOCK ? cx.q.nb : cx.q.max_kernel_rows) * cx.spec) : 0; }
  A* K(const Task<A>& tk) const { return tk.w + oK; }
  int64_t base(const Task<A>& tk) const { return PER_BLOCK ? 0 : tk.kr0; }
  void begin_task(const Task<A>& tk) const {
    if (on && !PER_BLOCK) cx.to_spectrum(Stage::PackKernel, tk.kr0, tk.nk, tk.R, K(tk), cx.inv_n);
  }
  void begin_block(const Task<A>& tk, int64_t row0, int64_t m) const {
    if (on && PER_BLOCK) cx.to_spectrum(Stage::PackKernel, row0, m, tk.R, K(tk), cx.inv_n);
  }
};
template <typename A>
using SharedKernel = KernelSpectra<A, false>;
template <typename A>
using BatchKernel = KernelSpectra<A, true>;

// ---- Forward: y = UnpackOutput(c2r(FFT(u * pregate) K)).
template <typename A, class KS>
struct Forward {
  const Ctx<A>& cx;
  KS ks;
  int64_t oC = 0;
  explicit Forward(const Ctx<A>& c) : cx(c), ks{c, true} {}
  void layout(Carve& c) {
    oC = c.take(cx.q.nb * cx.spec);
    ks.layout(c);
  }
  void init() {}
  void begin_task(const Task<A>& tk) const { ks.begin_task(tk); }
  void accumulate(const Task<A>& tk, int64_t row0, int64_t m) const {
    A* C = tk.w + oC;
    ks.begin_block(tk, row0, m);
    cx.to_spectrum(Stage::PackInput, row0, m, tk.R, C);
    cx.ex.spectral(SpecOp::MulKernel, row0, m, ks.base(tk), C, nullptr, ks.K(tk));
    cx.from_spectrum(C, Stage::UnpackOutput, row0, m, tk.R);
  }
  void end_task(const Task<A>&) const {}
  void write() {}
};

// ---- Backward terms. Per block each gets V = FFT(u * pregate) (when some term reads it), Z a
// spectral block buffer, and DZ = FFT(grad * postgate) in Z after the PackGrad stage; the order
// they run in is Backward::accumulate's.

// dpostgate = grad * z, z = conv(v, k) + D s recomputed: Z = V K, inverse FFT, UnpackPostGrad.
// Runs before DZ exists (Z is its scratch).
template <typename A, class KS>
struct PostGateGrad {
  const Ctx<A>& cx;
  const KS& ks;
  bool on;
  void accumulate(const Task<A>& tk, int64_t row0, int64_t m, const A* V, A* Z) const {
    if (!on) return;
    cx.ex.copy(Z, V, m * cx.spec);
    cx.ex.spectral(SpecOp::MulKernel, row0, m, ks.base(tk), Z, nullptr, ks.K(tk));
    cx.from_spectrum(Z, Stage::UnpackPostGrad, row0, m, tk.R);
  }
};

// du and dpregate from dv = corr(dz, k) = c2r(DZ conj(K)) (UnpackInputGrad adds the skip term).
// Runs last: it overwrites DZ.
template <typename A, class KS>
struct InputGrad {
  const Ctx<A>& cx;
  const KS& ks;
  bool on;
  void accumulate(const Task<A>& tk, int64_t row0, int64_t m, A* Z) const {
    if (!on) return;
    cx.ex.spectral(SpecOp::MulConjKernel, row0, m, ks.base(tk), Z, nullptr, ks.K(tk));
    cx.from_spectrum(Z, Stage::UnpackInputGrad, row0, m, tk.R);
  }
};

// dk for a shared kernel: dkk = corr(dz, v) = c2r(sum over the batch of conj(V) DZ) / n, summed
// in the spectral domain. by_heads: each task owns its heads' accumulator rows (in its scratch)
// and writes them at the end of the task; otherwise every task accumulates all H rows into its
// slice of a call-wide buffer, summed over the tasks and written at the end.
template <typename A>
struct SharedKernelGrad {
  const Ctx<A>& cx;
  bool on;
  int64_t oAcc = 0, kspec = 0;
  A* part = nullptr;
  bool partials() const { return on && !cx.q.by_heads; }
  A* acc(const Task<A>& tk) const { return partials() ? part + tk.t * kspec : tk.w + oAcc; }

  void layout(Carve& c) {
    kspec = cx.q.max_kernel_rows * cx.spec;
    oAcc = (on && !partials()) ? c.take(kspec) : 0;
  }
  void init() { part = partials() ? cx.ex.alloc(cx.q.ntasks * kspec) : nullptr; }
  void begin_task(const Task<A>& tk) const {
    if (on) cx.ex.zero(acc(tk), tk.nk * cx.spec);
  }
  void accumulate(const Task<A>& tk, int64_t row0, int64_t m, A* V, const A* Z) const {
    if (on) cx.ex.spectral(SpecOp::CorrAccumulate, row0, m, tk.kr0, V, Z, acc(tk));
  }
  void end_task(const Task<A>& tk) const {
    if (on && !partials()) cx.from_spectrum(acc(tk), Stage::GatherKernelGrad, tk.kr0, tk.nk, tk.R, cx.inv_n);
  }
  void write() {
    if (!partials()) return;
    const int64_t H = cx.s.H;
    for (int64_t t = 1; t < cx.q.ntasks; ++t) cx.ex.add(part, part + t * kspec, H * cx.spec);
    cx.from_spectrum(part, Stage::GatherKernelGrad, 0, H, cx.ex.alloc(H * cx.s.n), cx.inv_n);
  }
};

// dk for per-batch kernels: per block, dkk = c2r(conj(V) DZ) / n into the block's own kernel rows
// (V is overwritten).
template <typename A>
struct BatchKernelGrad {
  const Ctx<A>& cx;
  bool on;
  void layout(Carve&) {}
  void init() {}
  void begin_task(const Task<A>&) const {}
  void accumulate(const Task<A>& tk, int64_t row0, int64_t m, A* V, const A* Z) const {
    if (!on) return;
    cx.ex.spectral(SpecOp::Corr, row0, m, 0, V, Z, nullptr);
    cx.from_spectrum(V, Stage::GatherKernelGrad, row0, m, tk.R, cx.inv_n);
  }
  void end_task(const Task<A>&) const {}
  void write() {}
};

// ---- Backward: the terms of `need` over one walk. KS the kernel source, KG its kernel gradient.
template <typename A, class KS, class KG>
struct Backward {
  const Ctx<A>& cx;
  KS ks;
  KG kgrad;
  PostGateGrad<A, KS> post;
  InputGrad<A, KS> input;
  bool need_v, need_dz_spec;  // V: for dk and dpostgate; the spectrum of dz: for dk and dv
  int64_t oV = 0, oZ = 0;

  Backward(const Ctx<A>& c, const FFTConvNeed& need)
      : cx(c),
        ks{c, need.postgate || need.u || need.pregate},
        kgrad{c, need.k},
        post{c, ks, need.postgate},
        input{c, ks, need.u || need.pregate},
        need_v(need.k || need.postgate),
        need_dz_spec(need.k || need.u || need.pregate) {}

  void layout(Carve& c) {
    oZ = c.take(cx.q.nb * cx.spec);
    oV = need_v ? c.take(cx.q.nb * cx.spec) : 0;
    ks.layout(c);
    kgrad.layout(c);
  }
  void init() { kgrad.init(); }
  void begin_task(const Task<A>& tk) const {
    ks.begin_task(tk);
    kgrad.begin_task(tk);
  }
  void accumulate(const Task<A>& tk, int64_t row0, int64_t m) const {
    A *V = tk.w + oV, *Z = tk.w + oZ;
    ks.begin_block(tk, row0, m);
    if (need_v) cx.to_spectrum(Stage::PackInput, row0, m, tk.R, V);
    post.accumulate(tk, row0, m, V, Z);
    cx.ex.stage(Stage::PackGrad, row0, m, tk.R);  // dz = grad * postgate (and the dD row sums)
    if (!need_dz_spec) return;
    cx.fft.r2c(tk.R, Z, m, cx.s.n);
    kgrad.accumulate(tk, row0, m, V, Z);
    input.accumulate(tk, row0, m, Z);
  }
  void end_task(const Task<A>& tk) const { kgrad.end_task(tk); }
  void write() { kgrad.write(); }
};

}  // namespace

template <typename A>
void fftconv_forward(const FFTConvShape& s, FFTConvExec<A>& ex, RealFFT<A>& fft) {
  if (s.B * s.H == 0) return;
  const Ctx<A> cx(s, ex, fft);
  if (s.per_batch) {
    Forward<A, BatchKernel<A>> pol(cx);
    walk(cx, pol);
  } else {
    Forward<A, SharedKernel<A>> pol(cx);
    walk(cx, pol);
  }
}

template <typename A>
void fftconv_backward(const FFTConvShape& s, const FFTConvNeed& need, FFTConvExec<A>& ex, RealFFT<A>& fft) {
  if (s.B * s.H == 0) return;
  const Ctx<A> cx(s, ex, fft);
  if (s.per_batch) {
    Backward<A, BatchKernel<A>, BatchKernelGrad<A>> pol(cx, need);
    walk(cx, pol);
  } else {
    Backward<A, SharedKernel<A>, SharedKernelGrad<A>> pol(cx, need);
    walk(cx, pol);
  }
}

template void fftconv_forward<float>(const FFTConvShape&, FFTConvExec<float>&, RealFFT<float>&);
template void fftconv_forward<double>(const FFTConvShape&, FFTConvExec<double>&, RealFFT<double>&);
template void fftconv_backward<float>(const FFTConvShape&, const FFTConvNeed&, FFTConvExec<float>&, RealFFT<float>&);
template void fftconv_backward<double>(const FFTConvShape&, const FFTConvNeed&, FFTConvExec<double>&, RealFFT<double>&);

}  // namespace kernelfuse::longconv
