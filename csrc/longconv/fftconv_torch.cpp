// Torch glue for the fused FFT convolution (fftconv, fftconv_bwd): argument checks, dtype
// dispatch, block buffers, the FFTs (ATen's r2c / c2r: MKL or pocketfft on CPU, cuFFT on CUDA)
// and the TORCH_LIBRARY_IMPL registrations. The pointwise and spectral work around the FFTs is in
// the torch-free stages of fftconv.h.
//
// Rows (b, h) are processed in blocks of nb rows: pack (gates fused) -> r2c -> multiply by the
// kernel spectrum -> c2r -> unpack (skip term, gate fused), so every temporary is O(nb * n)
// besides the outputs; the kernel spectrum of a shared kernel is computed once (H rows).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fft_c2r.h>
#include <ATen/ops/_fft_r2c.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../common/checks.h"
#include "../common/device.h"
#include "fft_mkl.h"
#include "fftconv.h"

#ifdef KF_DEVICE
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "fftconv_tc.h"
#endif

namespace kernelfuse::longconv {
namespace {

ConvMode parse_mode(c10::string_view mode) {
  if (mode == "causal") return ConvMode::Causal;
  if (mode == "bidirectional") return ConvMode::Bidirectional;
  if (mode == "circular") return ConvMode::Circular;
  KF_CHECK_ARG(false, "mode", "unknown mode '", std::string(mode), "'; expected one of: causal, bidirectional, circular");
  return ConvMode::Causal;
}

// Skip convention: "input" (D * u) or "gated" (D * u * pregate, H3 / Hyena). Returns skip_gated.
bool parse_skip(c10::string_view skip) {
  if (skip == "input") return false;
  if (skip == "gated") return true;
  KF_CHECK_ARG(false, "skip", "unknown skip convention '", std::string(skip), "'; expected one of: input, gated");
  return false;
}

// Smallest m >= x whose only prime factors are 2, 3, 5 and 7 (fast for every FFT library).
int64_t next_fast_size(int64_t x) {
  if (x <= 1) return 1;
  for (int64_t m = x;; ++m) {
    int64_t r = m;
    for (int64_t p : {2, 3, 5, 7})
      while (r % p == 0) r /= p;
    if (r == 1) return m;
  }
}

constexpr int64_t kMaxFFTSize = int64_t(1) << 31;

struct Problem {
  at::Tensor u, k, D, pre, post;  // contiguous; optional ones undefined (D: in k's dtype)
  // Mixed precision (half u): k and D are read in one type, float32 if either was given in float32;
  // the dtypes they were given in are those of dk and dD.
  at::ScalarType k_dtype = at::kFloat, D_dtype = at::kFloat;
  int64_t B = 0, H = 0, L = 0, Lk = 0, n = 0;
  ConvMode mode = ConvMode::Causal;
  bool skip_gated = false;  // skip "gated": D multiplies u * pregate
  bool per_batch = false;  // k is (B, H, taps) with B > 1 ... or B == 1 given as (B, H, taps)
  std::vector<int64_t> k_shape;
};

void check_like_u(const at::Tensor& t, const at::Tensor& u, const char* name) {
  check_same_device(t, u, name, "u");
  check_same_dtype(t, u, name, "u");
}

bool is_half(at::ScalarType st) { return st == at::kHalf || st == at::kBFloat16; }

// k and D: u's dtype, or float32 with a float16 / bfloat16 u (mixed precision, FlashFFTConv's
// convention: half activations, fp32 kernel; float32 computation either way).
void check_kernel_like_u(const at::Tensor& t, const at::Tensor& u, const char* name) {
  check_same_device(t, u, name, "u");
  const bool half_u = is_half(u.scalar_type());
  KF_CHECK_ARG(t.scalar_type() == u.scalar_type() || (half_u && t.scalar_type() == at::kFloat), name,
               "expected dtype ", u.scalar_type(), " (the dtype of 'u')", (half_u ? " or float32" : ""), ", got ",
               t.scalar_type());
}

Problem check_problem(const at::Tensor& u, const at::Tensor& k, const std::optional<at::Tensor>& D,
                      const std::optional<at::Tensor>& pregate, const std::optional<at::Tensor>& postgate,
                      c10::string_view mode, std::optional<int64_t> fft_size, c10::string_view skip) {
  Problem p;
  check_defined(u, "u");
  check_defined(k, "k");
  p.mode = parse_mode(mode);
  p.skip_gated = parse_skip(skip);
  KF_CHECK_ARG(u.dim() == 3, "u", "expected shape (B, H, L), got ", shape_str(u));
  check_float_dtype(u, "u", true);
  p.B = u.size(0);
  p.H = u.size(1);
  p.L = u.size(2);
  KF_CHECK_ARG(p.L >= 1, "u", "expected a sequence length L >= 1, got ", shape_str(u));
  check_kernel_like_u(k, u, "k");
  const bool k_ok = (k.dim() == 2 && k.size(0) == p.H) ||
                    (k.dim() == 3 && (k.size(0) == 1 || k.size(0) == p.B) && k.size(1) == p.H);
  KF_CHECK_ARG(k_ok, "k", "expected shape (H, Lk), (1, H, Lk) or (B, H, Lk) with B = ", p.B, ", H = ", p.H,
               " (u is ", shape_str(u), "), got ", shape_str(k));
  p.k_shape = k.sizes().vec();
  const int64_t taps = k.size(-1);
  if (p.mode == ConvMode::Bidirectional) {
    KF_CHECK_ARG(taps >= 2 && taps % 2 == 0, "k", "mode 'bidirectional' expects 2 * Lk taps (forward then "
                 "backward kernel) along the last dim, got ", shape_str(k));
    p.Lk = taps / 2;
  } else {
    KF_CHECK_ARG(taps >= 1, "k", "expected at least one tap, got ", shape_str(k));
    p.Lk = taps;
  }
  KF_CHECK_ARG(p.Lk <= p.L, "k", "mode '", std::string(mode), "' needs a kernel no longer than the sequence: Lk = ",
               p.Lk, " > L = ", p.L, " (k ", shape_str(k), ", u ", shape_str(u), ")");
  int64_t need = 0;
  switch (p.mode) {
    case ConvMode::Causal: need = p.L + p.Lk - 1; break;
    case ConvMode::Bidirectional: need = p.L + p.Lk; break;
    case ConvMode::Circular: need = p.L; break;
  }
  // Size limit (before anything is allocated): n <= 2^31. Every index in the stages is 64-bit, so
  // B * H * L and rows * n may pass 2^31; one FFT row of 2^31 already takes 16 GiB (complex float).
  KF_CHECK_ARG(fft_size.has_value() || need <= kMaxFFTSize, "u", "sequence length L = ", p.L, " too long: mode '",
               std::string(mode), "' needs an FFT size of ", need, ", more than the supported maximum 2^31 = ",
               kMaxFFTSize, " (u ", shape_str(u), ")");
  if (fft_size.has_value()) {
    const int64_t n = *fft_size;
    KF_CHECK_ARG(n <= kMaxFFTSize, "fft_size", "expected at most 2^31 = ", kMaxFFTSize, ", got ", n);
    if (p.mode == ConvMode::Circular) {
      KF_CHECK_ARG(n == p.L, "fft_size", "mode 'circular' has period L: expected fft_size = L = ", p.L, ", got ", n);
    } else {
      KF_CHECK_ARG(n >= need, "fft_size", "too small for mode '", std::string(mode), "': expected >= ",
                   (p.mode == ConvMode::Causal ? "L + Lk - 1 = " : "L + Lk = "), need, ", got ", n);
    }
    p.n = n;
  } else {
    p.n = p.mode == ConvMode::Circular ? p.L : next_fast_size(need);
  }
  p.k_dtype = k.scalar_type();
  p.per_batch = k.dim() == 3 && k.size(0) == p.B && p.B != 1;
  p.k = (k.dim() == 3 && !p.per_batch) ? k.reshape({p.H, taps}).contiguous() : k.contiguous();
  if (D.has_value()) {
    check_kernel_like_u(*D, u, "D");
    KF_CHECK_ARG(D->dim() == 1 && D->size(0) == p.H, "D", "expected shape (H,) = (", p.H, ",), got ",
                 shape_str(*D));
    p.D_dtype = D->scalar_type();
    p.D = D->contiguous();
  }
  auto gate = [&](const std::optional<at::Tensor>& g, const char* name) -> at::Tensor {
    if (!g.has_value()) return at::Tensor();
    check_like_u(*g, u, name);
    KF_CHECK_ARG(g->sizes() == u.sizes(), name, "expected the shape of u ", shape_str(u), ", got ", shape_str(*g));
    return g->contiguous();
  };
  if (p.D.defined() && p.D_dtype != p.k_dtype) {  // one of them float32, the other u's half type
    p.k = p.k.to(at::kFloat);
    p.D = p.D.to(at::kFloat);
  }
  p.pre = gate(pregate, "pregate");
  p.post = gate(postgate, "postgate");
  p.u = u.contiguous();
  return p;
}

// Storage type of an ATen scalar type for the kernels, and its compute type.
template <typename S> struct Storage { using type = S; using acc = S; };
#ifdef KF_DEVICE
template <> struct Storage<at::Half> { using type = __half; using acc = float; };
template <> struct Storage<at::BFloat16> { using type = __nv_bfloat16; using acc = float; };
#endif

// S: storage of u (gates, grad); SK: of k and D (S, or float with half S on CUDA).
template <typename S, typename SK = S>
struct Runner {
  using T = typename Storage<S>::type;
  using A = typename Storage<S>::acc;
  using TK = typename Storage<SK>::type;
  const Problem& pb;
  FFTConvParams<T, A, TK> p;
  bool cuda = false;
  at::TensorOptions ropt, copt;
  int64_t rows = 0, nf = 0;
  // Work partition. by_heads (shared kernel, H >= nb): task t owns the heads [t nb, t nb + nh) and
  // walks its blocks (b H + h0, nh) for b < B, with the spectra of its heads only; tasks own
  // disjoint kernel rows, so the kernel gradient needs no reduction. Otherwise task t walks a
  // contiguous range of blocks of nb rows (shared kernel: all H spectra per task, H < nb).
  bool by_heads = false;
  // KERNELFUSE_NO_MKL_FFT=1 forces ATen's FFT (tests cover both paths).
  bool use_mkl = mkl_fft_available() && !std::getenv("KERNELFUSE_NO_MKL_FFT");
  int64_t nb = 0, ntasks = 0, nblocks = 0, per_task = 0;

  explicit Runner(const Problem& pr) : pb(pr) {
    p.B = pr.B; p.H = pr.H; p.L = pr.L; p.Lk = pr.Lk; p.n = pr.n; p.nf = pr.n / 2 + 1;
    p.mode = pr.mode;
    p.k_per_batch = pr.per_batch;
    p.skip_gated = pr.skip_gated;
    p.u = in(pr.u);
    p.k = in_k(pr.k);
    p.D = in_k(pr.D);
    p.pregate = in(pr.pre);
    p.postgate = in(pr.post);
    cuda = on_device(pr.u);
    ropt = pr.u.options().dtype(std::is_same_v<A, double> ? at::kDouble : at::kFloat);
    copt = pr.u.options().dtype(std::is_same_v<A, double> ? at::kComplexDouble : at::kComplexFloat);
    rows = pr.B * pr.H;
    nf = p.nf;
    // Rows per block: about 2^19 real elements on CPU (MKL / pocketfft plan costs are paid per
    // call, so blocks must not be too small; the buffers stay in L2 / L3 while the block's FFTs
    // run single-threaded, one task per thread), at least as many tasks as threads; up to 2^26
    // elements per buffer on CUDA.
    const int64_t target = cuda ? (int64_t(1) << 26) : (int64_t(1) << 19);
    const int64_t threads = cuda ? 1 : std::max<int64_t>(1, at::get_num_threads());
    nb = std::max<int64_t>(1, std::min(target / pr.n, std::max<int64_t>(rows, 1)));
    by_heads = !pr.per_batch && pr.H >= nb;
    if (by_heads) {
      nb = std::min(nb, (pr.H + threads - 1) / threads);
      ntasks = (pr.H + nb - 1) / nb;
    } else {
      nb = std::max<int64_t>(1, std::min(nb, (rows + threads - 1) / threads));
      nblocks = (rows + nb - 1) / nb;
      ntasks = std::min<int64_t>(nblocks, threads);
      per_task = ntasks ? (nblocks + ntasks - 1) / ntasks : 0;
    }
  }
  static const T* in(const at::Tensor& t) {
    return t.defined() ? reinterpret_cast<const T*>(t.const_data_ptr<S>()) : nullptr;
  }
  static T* out(at::Tensor& t) { return t.defined() ? reinterpret_cast<T*>(t.mutable_data_ptr<S>()) : nullptr; }
  static const TK* in_k(const at::Tensor& t) {
    return t.defined() ? reinterpret_cast<const TK*>(t.const_data_ptr<SK>()) : nullptr;
  }
  static TK* out_k(at::Tensor& t) { return t.defined() ? reinterpret_cast<TK*>(t.mutable_data_ptr<SK>()) : nullptr; }
  static A* buf(const at::Tensor& t) { return t.defined() ? reinterpret_cast<A*>(t.data_ptr()) : nullptr; }

  void stage(Stage s, int64_t row0, int64_t m, const at::Tensor& R, A scale = A(1)) {
#ifdef KF_DEVICE
    if (cuda) {
      launch_fftconv_stage<T, A, TK>(p, s, row0, m, buf(R), scale, device_stream());
      return;
    }
#endif
    if constexpr (std::is_same_v<T, A> && std::is_same_v<T, TK>) {
      fftconv_stage_cpu<T>(p, s, row0, m, buf(R), scale);
    } else {
      TORCH_CHECK(false, "kernelfuse: internal error: half storage on CPU");
    }
  }
  void spectral(SpecOp op, int64_t row0, int64_t m, int64_t kbase, const at::Tensor& X, const at::Tensor* Y,
                const at::Tensor& K) {
    const A* y = Y ? buf(*Y) : nullptr;
#ifdef KF_DEVICE
    if (cuda) {
      launch_fftconv_spectral<A>(op, row0, m, nf, p.H, kbase, pb.per_batch, buf(X), y, buf(K),
                                 device_stream());
      return;
    }
#endif
    fftconv_spectral_cpu<A>(op, row0, m, nf, p.H, kbase, pb.per_batch, buf(X), y, buf(K));
  }
  // Batched real FFTs along rows. CPU: MKL directly when the installed torch carries it (plans
  // cached per thread, results written into the block buffers: no allocation per call), else
  // ATen's FFT (MKL or pocketfft through the dispatcher). CUDA: ATen's cuFFT path.
  void r2c(const at::Tensor& C, const at::Tensor& R) {
    if (!cuda && use_mkl && mkl_rfft<A>(buf(R), buf(C), R.size(0), p.n, true)) return;
    at::Tensor c = C;
    at::_fft_r2c_out(c, R, {1}, 0, true);
  }
  void c2r(const at::Tensor& R, const at::Tensor& C) {
    if (!cuda && use_mkl && mkl_rfft<A>(buf(C), buf(R), C.size(0), p.n, false)) return;
    at::Tensor r = R;
    at::_fft_c2r_out(r, C, {1}, 0, p.n);
  }

  // Kernel rows [kr0, kr0 + nk) owned by task t, and its blocks (row0, m).
  void task_kernel_rows(int64_t t, int64_t& kr0, int64_t& nk) const {
    if (pb.per_batch) {
      kr0 = 0;
      nk = 0;
    } else if (by_heads) {
      kr0 = t * nb;
      nk = std::min(nb, p.H - kr0);
    } else {
      kr0 = 0;
      nk = p.H;
    }
  }
  template <typename F>
  void for_blocks(int64_t t, F&& f) const {
    if (by_heads) {
      const int64_t h0 = t * nb, nh = std::min(nb, p.H - h0);
      for (int64_t b = 0; b < p.B; ++b) f(b * p.H + h0, nh);
    } else {
      const int64_t b1 = std::min(nblocks, (t + 1) * per_task);
      for (int64_t blk = t * per_task; blk < b1; ++blk) f(blk * nb, std::min(nb, rows - blk * nb));
    }
  }
  // Runs task(t) for every task: in parallel on CPU (one task per thread at a time, nested
  // OpenMP regions and ATen's FFTs then run single-threaded), in order on CUDA.
  template <typename F>
  void run_tasks(F&& task) {
    if (cuda || ntasks <= 1) {
      for (int64_t t = 0; t < ntasks; ++t) task(t);
      return;
    }
    at::parallel_for(0, ntasks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) task(t);
    });
  }
  // Spectra (nk, nf) of kernel rows [kr0, kr0 + nk) with 1/n folded in, packed through R.
  at::Tensor kernel_spectrum(int64_t kr0, int64_t nk, const at::Tensor& R) {
    at::Tensor Rk = nk <= R.size(0) ? R.narrow(0, 0, nk) : at::empty({nk, p.n}, ropt);
    stage(Stage::PackKernel, kr0, nk, Rk, A(1) / A(p.n));
    at::Tensor K = at::empty({nk, nf}, copt);
    r2c(K, Rk);
    return K;
  }

  at::Tensor forward() {
    at::Tensor y = at::empty(pb.u.sizes(), pb.u.options());
    p.y = out(y);
    if (rows == 0) return y;
    run_tasks([&](int64_t t) {
      int64_t kr0, nk;
      task_kernel_rows(t, kr0, nk);
      at::Tensor R = at::empty({nb, p.n}, ropt), C = at::empty({nb, nf}, copt);
      at::Tensor Ck = pb.per_batch ? at::empty({nb, nf}, copt) : at::Tensor();
      at::Tensor K = pb.per_batch ? at::Tensor() : kernel_spectrum(kr0, nk, R);
      for_blocks(t, [&](int64_t row0, int64_t m) {
        at::Tensor Rv = R.narrow(0, 0, m), Cv = C.narrow(0, 0, m);
        if (pb.per_batch) {
          at::Tensor Ckv = Ck.narrow(0, 0, m);
          stage(Stage::PackKernel, row0, m, Rv, A(1) / A(p.n));
          r2c(Ckv, Rv);
          stage(Stage::PackInput, row0, m, Rv);
          r2c(Cv, Rv);
          spectral(SpecOp::MulKernel, row0, m, 0, Cv, nullptr, Ckv);
        } else {
          stage(Stage::PackInput, row0, m, Rv);
          r2c(Cv, Rv);
          spectral(SpecOp::MulKernel, row0, m, kr0, Cv, nullptr, K);
        }
        c2r(Rv, Cv);
        stage(Stage::UnpackOutput, row0, m, Rv);
      });
    });
    return y;
  }

  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
      const at::Tensor& grad, bool need_u, bool need_k, bool need_D, bool need_pre, bool need_post) {
    const auto opts = pb.u.options();
    auto none = [&] { return at::empty({0}, opts); };
    need_D = need_D && pb.D.defined();
    need_pre = need_pre && pb.pre.defined();
    need_post = need_post && pb.post.defined();
    at::Tensor du = need_u ? at::empty(pb.u.sizes(), opts) : none();
    at::Tensor dpre = need_pre ? at::empty(pb.u.sizes(), opts) : none();
    at::Tensor dpost = need_post ? at::empty(pb.u.sizes(), opts) : none();
    at::Tensor dk = need_k ? at::empty(pb.k.sizes(), pb.k.options()) : none();
    at::Tensor dD_rows = need_D ? at::empty({pb.B, pb.H}, ropt) : at::Tensor();
    p.grad = in(grad);
    p.du = need_u ? out(du) : nullptr;
    p.dpregate = need_pre ? out(dpre) : nullptr;
    p.dpostgate = need_post ? out(dpost) : nullptr;
    p.dk = need_k ? out_k(dk) : nullptr;
    p.dD_rows = need_D ? buf(dD_rows) : nullptr;
    at::Tensor dD = need_D ? at::empty({pb.H}, opts.dtype(pb.D_dtype)) : none();
    auto result = [&]() -> std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> {
      return {du, need_k ? dk.view(pb.k_shape).to(pb.k_dtype) : dk, dD, dpre, dpost};
    };
    if (rows == 0) {
      if (need_k) dk.zero_();
      if (need_D) dD.zero_();
      return result();
    }
    const bool need_v = need_k || need_post;  // the spectrum of v = u * pregate
    const bool need_dv = need_u || need_pre;  // the correlation of dz with k
    const bool need_kspec = need_post || need_dv;
    const A inv_n = A(1) / A(p.n);
    // Shared kernel, not by heads: every task accumulates the spectra of all H heads; summed after.
    std::vector<at::Tensor> partial(by_heads || pb.per_batch || !need_k ? 0 : ntasks);
    run_tasks([&](int64_t t) {
      int64_t kr0, nk;
      task_kernel_rows(t, kr0, nk);
      at::Tensor R = at::empty({nb, p.n}, ropt), C2 = at::empty({nb, nf}, copt);
      at::Tensor C1 = need_v ? at::empty({nb, nf}, copt) : at::Tensor();
      at::Tensor Ck = (pb.per_batch && need_kspec) ? at::empty({nb, nf}, copt) : at::Tensor();
      at::Tensor K = (!pb.per_batch && need_kspec) ? kernel_spectrum(kr0, nk, R) : at::Tensor();
      at::Tensor Kacc = (!pb.per_batch && need_k) ? at::zeros({nk, nf}, copt) : at::Tensor();
      for_blocks(t, [&](int64_t row0, int64_t m) {
        at::Tensor Rv = R.narrow(0, 0, m), C2v = C2.narrow(0, 0, m);
        at::Tensor C1v = need_v ? C1.narrow(0, 0, m) : at::Tensor();
        at::Tensor Ckv = Ck.defined() ? Ck.narrow(0, 0, m) : at::Tensor();
        const at::Tensor& Kb = pb.per_batch ? Ckv : K;
        const int64_t kbase = pb.per_batch ? 0 : kr0;
        if (Ck.defined()) {
          stage(Stage::PackKernel, row0, m, Rv, inv_n);
          r2c(Ckv, Rv);
        }
        if (need_v) {
          stage(Stage::PackInput, row0, m, Rv);
          r2c(C1v, Rv);
        }
        if (need_post) {  // z = conv(v, k) + D s, recomputed: dpostgate = grad * z
          C2v.copy_(C1v);
          spectral(SpecOp::MulKernel, row0, m, kbase, C2v, nullptr, Kb);
          c2r(Rv, C2v);
          stage(Stage::UnpackPostGrad, row0, m, Rv);
        }
        stage(Stage::PackGrad, row0, m, Rv);  // dz = grad * postgate (and the dD row sums)
        if (!need_k && !need_dv) return;
        r2c(C2v, Rv);
        if (need_k) {  // dkk = corr(dz, v) = c2r(conj(V) DZ) / n
          if (pb.per_batch) {
            spectral(SpecOp::Corr, row0, m, 0, C1v, &C2v, Kb);
            c2r(Rv, C1v);
            stage(Stage::GatherKernelGrad, row0, m, Rv, inv_n);
          } else {
            spectral(SpecOp::CorrAccumulate, row0, m, kr0, C1v, &C2v, Kacc);
          }
        }
        if (need_dv) {  // dv = corr(dz, k) = c2r(DZ conj(K))
          spectral(SpecOp::MulConjKernel, row0, m, kbase, C2v, nullptr, Kb);
          c2r(Rv, C2v);
          stage(Stage::UnpackInputGrad, row0, m, Rv);
        }
      });
      if (need_k && !pb.per_batch) {
        if (by_heads) {
          at::Tensor Rk = R.narrow(0, 0, nk);
          c2r(Rk, Kacc);
          stage(Stage::GatherKernelGrad, kr0, nk, Rk, inv_n);
        } else {
          partial[t] = Kacc;
        }
      }
    });
    if (!partial.empty()) {
      at::Tensor acc = partial[0];
      for (size_t i = 1; i < partial.size(); ++i) acc.add_(partial[i]);
      at::Tensor Rk = at::empty({p.H, p.n}, ropt);
      c2r(Rk, acc);
      stage(Stage::GatherKernelGrad, 0, p.H, Rk, inv_n);
    }
    if (need_D) dD.copy_(dD_rows.sum(0));
    return result();
  }
};


// CPU float16 / bfloat16: computed in float32 (inputs upcast, outputs cast back: each gradient to
// its input's dtype, so an fp32 k gets an fp32 dk).
bool upcast_needed(const at::Tensor& u) {
  return !on_device(u) && (u.scalar_type() == at::kHalf || u.scalar_type() == at::kBFloat16);
}
std::optional<at::Tensor> to_float(const std::optional<at::Tensor>& t) {
  if (!t.has_value()) return std::nullopt;
  return t->to(at::kFloat);
}

// f.template operator()<S, SK>(): S the storage of u, SK that of k and D (float for a half u with
// an fp32 kernel, CUDA only: on CPU half inputs were upcast before).
template <typename F>
void dispatch(const at::Tensor& u, at::ScalarType k_dtype, F&& f) {
#ifdef KF_DEVICE
  if (on_device(u)) {
    KF_DEVICE_GUARD(u);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "fftconv", [&] {
      if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
        if (k_dtype == at::kFloat) {
          f.template operator()<scalar_t, float>();
          return;
        }
      }
      f.template operator()<scalar_t, scalar_t>();
    });
    return;
  }
#endif
  (void)k_dtype;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "fftconv", [&] { f.template operator()<scalar_t, scalar_t>(); });
}

#ifdef KF_DEVICE
// Tensor-core path (fftconv_tc_cuda.cu) for CUDA fp16 / bf16, causal, kernel shared by the batch:
// two launches, no cuFFT. Returns false (nothing launched) when the FFT size would pass kTCMaxN or
// one sequence does not fit the device's opt-in shared memory; the caller then takes the cuFFT path.
// KERNELFUSE_NO_TC_FFTCONV=1 disables it. Forward only: fftconv_bwd stays on the cuFFT path.
bool fftconv_tc_try(const Problem& pb, at::Tensor& y) {
  if (!on_device(pb.u) || pb.mode != ConvMode::Causal || pb.per_batch || std::getenv("KERNELFUSE_NO_TC_FFTCONV"))
    return false;
  const auto st = pb.u.scalar_type();
  if (st != at::kHalf && st != at::kBFloat16) return false;
  const int64_t N = fftconv_tc_fft_size(pb.L, pb.Lk);
  if (N == 0) return false;
  KF_DEVICE_GUARD(pb.u);
  at::Tensor out = at::empty(pb.u.sizes(), pb.u.options());
  if (pb.B * pb.H == 0) {
    y = out;
    return true;
  }
  at::Tensor kspec = at::empty({pb.H, N, 2}, pb.u.options().dtype(at::kFloat));
  at::Tensor kexp = at::empty({pb.H}, pb.u.options().dtype(at::kInt));
  bool ok = false;
  auto run = [&]<typename S, typename T, typename SK, typename TK>() {
    FFTConvTCParams<T, TK> p;
    p.B = pb.B; p.H = pb.H; p.L = pb.L; p.Lk = pb.Lk; p.N = N;
    auto in = [](const at::Tensor& t) -> const T* {
      return t.defined() ? reinterpret_cast<const T*>(t.const_data_ptr<S>()) : nullptr;
    };
    auto in_k = [](const at::Tensor& t) -> const TK* {
      return t.defined() ? reinterpret_cast<const TK*>(t.const_data_ptr<SK>()) : nullptr;
    };
    p.u = in(pb.u);
    p.k = in_k(pb.k);
    p.D = in_k(pb.D);
    p.pregate = in(pb.pre);
    p.postgate = in(pb.post);
    p.skip_gated = pb.skip_gated;
    p.y = reinterpret_cast<T*>(out.mutable_data_ptr<S>());
    p.kspec = kspec.mutable_data_ptr<float>();
    p.kexp = kexp.mutable_data_ptr<int>();
    ok = launch_fftconv_tc<T, TK>(p, device_stream());
  };
  const bool k_fp32 = pb.k.scalar_type() == at::kFloat;  // mixed precision: fp32 k and D
  if (st == at::kHalf && k_fp32) run.template operator()<at::Half, __half, float, float>();
  else if (st == at::kHalf) run.template operator()<at::Half, __half, at::Half, __half>();
  else if (k_fp32) run.template operator()<at::BFloat16, __nv_bfloat16, float, float>();
  else run.template operator()<at::BFloat16, __nv_bfloat16, at::BFloat16, __nv_bfloat16>();
  if (!ok) return false;
  y = out;
  return true;
}
#endif

at::Tensor fftconv(const at::Tensor& u, const at::Tensor& k, const std::optional<at::Tensor>& D,
                   const std::optional<at::Tensor>& pregate, const std::optional<at::Tensor>& postgate,
                   c10::string_view mode, std::optional<int64_t> fft_size, c10::string_view skip) {
  Problem pb = check_problem(u, k, D, pregate, postgate, mode, fft_size, skip);
  if (upcast_needed(u)) {
    return fftconv(u.to(at::kFloat), k.to(at::kFloat), to_float(D), to_float(pregate), to_float(postgate), mode,
                   pb.n, skip)
        .to(u.scalar_type());
  }
  at::Tensor y;
#ifdef KF_DEVICE
  if (fftconv_tc_try(pb, y)) return y;
#endif
  dispatch(pb.u, pb.k.scalar_type(), [&]<typename S, typename SK>() { y = Runner<S, SK>(pb).forward(); });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fftconv_bwd(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& k, const std::optional<at::Tensor>& D,
    const std::optional<at::Tensor>& pregate, const std::optional<at::Tensor>& postgate, c10::string_view mode,
    std::optional<int64_t> fft_size, bool need_u, bool need_k, bool need_D, bool need_pregate, bool need_postgate,
    c10::string_view skip) {
  check_defined(grad, "grad");
  Problem pb = check_problem(u, k, D, pregate, postgate, mode, fft_size, skip);
  check_same_device(grad, u, "grad", "u");
  KF_CHECK_ARG(grad.sizes() == u.sizes(), "grad", "expected the shape of u ", shape_str(u), ", got ",
               shape_str(grad));
  check_like_u(grad, u, "grad");
  if (upcast_needed(u)) {
    auto r = fftconv_bwd(grad.to(at::kFloat), u.to(at::kFloat), k.to(at::kFloat), to_float(D), to_float(pregate),
                         to_float(postgate), mode, pb.n, need_u, need_k, need_D, need_pregate, need_postgate, skip);
    const auto st = u.scalar_type();
    const auto D_st = D.has_value() ? D->scalar_type() : st;
    // An output not asked for: empty in u's dtype (as on CUDA and in the fake kernel).
    auto cast = [&](const at::Tensor& t, bool need, at::ScalarType dt) { return t.to(need ? dt : st); };
    const bool has_D = D.has_value(), has_pre = pregate.has_value(), has_post = postgate.has_value();
    return {cast(std::get<0>(r), need_u, st), cast(std::get<1>(r), need_k, k.scalar_type()),
            cast(std::get<2>(r), need_D && has_D, D_st), cast(std::get<3>(r), need_pregate && has_pre, st),
            cast(std::get<4>(r), need_postgate && has_post, st)};
  }
  const at::Tensor g = grad.contiguous();
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> res;
  dispatch(pb.u, pb.k.scalar_type(), [&]<typename S, typename SK>() {
    res = Runner<S, SK>(pb).backward(g, need_u, need_k, need_D, need_pregate, need_postgate);
  });
  return res;
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("fftconv", &fftconv);
  m.impl("fftconv_bwd", &fftconv_bwd);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("fftconv", &fftconv);
  m.impl("fftconv_bwd", &fftconv_bwd);
}
#endif

}  // namespace kernelfuse::longconv
