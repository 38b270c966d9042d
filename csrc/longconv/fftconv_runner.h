// The launch sequence of fftconv / fftconv_bwd over raw pointers, torch-free: block partitioning,
// then per block pack (gates fused) -> r2c -> multiply by the kernel spectrum -> c2r -> unpack
// (skip term, gate fused), and the backward's correlations. Every temporary is O(nb * n) besides
// the outputs; the spectrum of a shared kernel is computed once per task (its heads only when the
// tasks own disjoint heads).
//
// What the runner needs from its surroundings is two small interfaces the glue fills in:
//   RealFFT<A>      (third_party/fft_interface.h) the batched real FFTs: MKL or ATen on CPU,
//                   cuFFT through ATen on CUDA, ATen's CPU FFT under the CUDA simulator;
//   FFTConvExec<A>  the stages of fftconv.h on the data's device (FFTConvStages below implements
//                   them for CPU and device), device memory (alloc / zero / copy / add) and the
//                   task loop (CPU: one task per thread; device: in order).
// The runner itself is compiled once per compute type A (fftconv_runner.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <type_traits>

#include "fft_interface.h"  // third_party/
#include "fftconv.h"

namespace kernelfuse::longconv {

// The problem as the runner sees it: rows r = b * H + h of FFT length n.
struct FFTConvShape {
  int64_t B = 0, H = 0, n = 0;
  bool per_batch = false;  // k is (B, H, taps): a spectrum per row, none shared
  bool device = false;     // CUDA (or the simulator): one stream, tasks in order
  int64_t threads = 1;     // CPU threads for the task partition
};

// Work partition. by_heads (shared kernel, H >= nb): task t owns the heads [t nb, t nb + nh) and
// walks its blocks (b H + h0, nh) for b < B, with the spectra of its heads only; tasks own
// disjoint kernel rows, so the kernel gradient needs no reduction. Otherwise task t walks a
// contiguous range of blocks of nb rows (shared kernel: all H spectra per task, H < nb).
struct FFTConvPlan {
  int64_t rows = 0, nf = 0, nb = 0, ntasks = 0, nblocks = 0, per_task = 0;
  bool by_heads = false;
  int64_t max_kernel_rows = 0;  // kernel spectra one task holds (0 with per-batch kernels)
};
FFTConvPlan fftconv_plan(const FFTConvShape& s);

// Gradients the backward computes (asked for and, for the gates, present); dD is the PackGrad
// stage's business (FFTConvParams::dD_rows).
struct FFTConvNeed {
  bool u = false, k = false, pregate = false, postgate = false;
};

template <typename A>
struct FFTConvExec {
  virtual ~FFTConvExec() = default;
  virtual void stage(Stage s, int64_t row0, int64_t m, A* R, A scale = A(1)) = 0;
  virtual void spectral(SpecOp op, int64_t row0, int64_t m, int64_t kbase, A* X, const A* Y, A* K) = 0;
  // `count` values of the data's device, valid until the exec is destroyed; not from inside tasks.
  virtual A* alloc(int64_t count) = 0;
  virtual void zero(A* x, int64_t count) = 0;
  virtual void copy(A* dst, const A* src, int64_t count) = 0;
  virtual void add(A* dst, const A* src, int64_t count) = 0;  // dst += src
  // task(t, scratch) for every t < ntasks, each with `scratch` values of its own.
  virtual void run_tasks(int64_t ntasks, int64_t scratch, const std::function<void(int64_t, A*)>& task) = 0;
};

// The stages of fftconv.h for the params p: the CPU kernels, or the device launchers on `stream`.
template <typename T, typename A, typename TK>
struct FFTConvStages : FFTConvExec<A> {
  const FFTConvParams<T, A, TK>& p;
  bool device;
  void* stream;
  FFTConvStages(const FFTConvParams<T, A, TK>& params, bool on_device, void* st)
      : p(params), device(on_device), stream(st) {}
  void stage(Stage s, int64_t row0, int64_t m, A* R, A scale = A(1)) override {
#if defined(KERNELFUSE_WITH_CUDA) || defined(KERNELFUSE_CUDA_SIM)
    if (device) return launch_fftconv_stage<T, A, TK>(p, s, row0, m, R, scale, stream);
#endif
    if constexpr (std::is_same_v<T, A> && std::is_same_v<T, TK>)
      fftconv_stage_cpu<T>(p, s, row0, m, R, scale);
    else
      throw std::logic_error("kernelfuse.fftconv: internal error: half storage on CPU");
  }
  void spectral(SpecOp op, int64_t row0, int64_t m, int64_t kbase, A* X, const A* Y, A* K) override {
#if defined(KERNELFUSE_WITH_CUDA) || defined(KERNELFUSE_CUDA_SIM)
    if (device) return launch_fftconv_spectral<A>(op, row0, m, p.nf, p.H, kbase, p.k_per_batch, X, Y, K, stream);
#endif
    fftconv_spectral_cpu<A>(op, row0, m, p.nf, p.H, kbase, p.k_per_batch, X, Y, K);
  }
};

// y (FFTConvParams::y, set by the caller) for every row. A in {float, double}.
template <typename A>
void fftconv_forward(const FFTConvShape& s, FFTConvExec<A>& ex, RealFFT<A>& fft);
// The gradients of `need` (outputs set in the params by the caller). Shared kernels: dk is
// gathered by the runner; dD_rows (if set) holds per-row partial sums, reduced by the caller.
template <typename A>
void fftconv_backward(const FFTConvShape& s, const FFTConvNeed& need, FFTConvExec<A>& ex, RealFFT<A>& fft);

}  // namespace kernelfuse::longconv
