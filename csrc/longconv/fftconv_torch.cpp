// Torch glue for the fused FFT convolution (fftconv, fftconv_bwd): argument checks, dtype
// dispatch, allocation, the runner's FFT (MKL or ATen's r2c / c2r: pocketfft on CPU, cuFFT on
// CUDA) and memory / task interfaces, the tensor-core path's launch, and the TORCH_LIBRARY_IMPL
// registrations. The launch sequence (block partition, forward / backward pipelines) is the
// torch-free runner of fftconv_runner.h; the pointwise and spectral stages are in fftconv.h.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fft_c2r.h>
#include <ATen/ops/_fft_r2c.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../common/checks.h"
#include "../common/config.h"
#include "../common/device.h"
#include "../common/dispatch.h"
#include "../common/parallel.h"
#include "fftconv.h"
#include "fftconv_runner.h"
#include "mkl/mkl_fft.h"  // third_party/

#ifdef KF_DEVICE
#include "fftconv_tc.h"
#endif

namespace kernelfuse::longconv {
namespace {

ConvMode parse_mode(c10::string_view mode) {
  if (mode == "causal") return ConvMode::Causal;
  if (mode == "bidirectional") return ConvMode::Bidirectional;
  if (mode == "circular") return ConvMode::Circular;
  KF_CHECK_ARG(false, "mode", "unknown mode '", std::string(mode),
               "'; expected one of: causal, bidirectional, circular");
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
  bool per_batch = false;   // k is (B, H, taps) with B > 1 ... or B == 1 given as (B, H, taps)
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
  KF_CHECK_ARG(t.scalar_type() == u.scalar_type() || (half_u && t.scalar_type() == at::kFloat), name, "expected dtype ",
               u.scalar_type(), " (the dtype of 'u')", (half_u ? " or float32" : ""), ", got ", t.scalar_type());
}

// The FFT size n of the problem p (mode, L and Lk set): fft_size checked against what the mode
// needs, or the smallest fast size (circular: L).
int64_t fft_size_for(const Problem& p, c10::string_view mode, std::optional<int64_t> fft_size, const at::Tensor& u) {
  int64_t need = 0;
  switch (p.mode) {
    case ConvMode::Causal:
      need = p.L + p.Lk - 1;
      break;
    case ConvMode::Bidirectional:
      need = p.L + p.Lk;
      break;
    case ConvMode::Circular:
      need = p.L;
      break;
  }
  // Size limit (before anything is allocated): n <= 2^31. Every index in the stages is 64-bit, so
  // B * H * L and rows * n may pass 2^31; one FFT row of 2^31 already takes 16 GiB (complex float).
  KF_CHECK_ARG(fft_size.has_value() || need <= kMaxFFTSize, "u", "sequence length L = ", p.L, " too long: mode '",
               std::string(mode), "' needs an FFT size of ", need,
               ", more than the supported maximum 2^31 = ", kMaxFFTSize, " (u ", shape_str(u), ")");
  if (fft_size.has_value()) {
    const int64_t n = *fft_size;
    KF_CHECK_ARG(n <= kMaxFFTSize, "fft_size", "expected at most 2^31 = ", kMaxFFTSize, ", got ", n);
    if (p.mode == ConvMode::Circular) {
      KF_CHECK_ARG(n == p.L, "fft_size", "mode 'circular' has period L: expected fft_size = L = ", p.L, ", got ", n);
    } else {
      KF_CHECK_ARG(n >= need, "fft_size", "too small for mode '", std::string(mode),
                   "': expected >= ", (p.mode == ConvMode::Causal ? "L + Lk - 1 = " : "L + Lk = "), need, ", got ", n);
    }
    return n;
  }
  return p.mode == ConvMode::Circular ? p.L : next_fast_size(need);
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
  const bool k_ok =
      (k.dim() == 2 && k.size(0) == p.H) || (k.dim() == 3 && (k.size(0) == 1 || k.size(0) == p.B) && k.size(1) == p.H);
  KF_CHECK_ARG(k_ok, "k", "expected shape (H, Lk), (1, H, Lk) or (B, H, Lk) with B = ", p.B, ", H = ", p.H, " (u is ",
               shape_str(u), "), got ", shape_str(k));
  p.k_shape = k.sizes().vec();
  const int64_t taps = k.size(-1);
  if (p.mode == ConvMode::Bidirectional) {
    KF_CHECK_ARG(taps >= 2 && taps % 2 == 0, "k",
                 "mode 'bidirectional' expects 2 * Lk taps (forward then "
                 "backward kernel) along the last dim, got ",
                 shape_str(k));
    p.Lk = taps / 2;
  } else {
    KF_CHECK_ARG(taps >= 1, "k", "expected at least one tap, got ", shape_str(k));
    p.Lk = taps;
  }
  KF_CHECK_ARG(p.Lk <= p.L, "k", "mode '", std::string(mode),
               "' needs a kernel no longer than the sequence: Lk = ", p.Lk, " > L = ", p.L, " (k ", shape_str(k),
               ", u ", shape_str(u), ")");
  p.n = fft_size_for(p, mode, fft_size, u);
  p.k_dtype = k.scalar_type();
  p.per_batch = k.dim() == 3 && k.size(0) == p.B && p.B != 1;
  p.k = (k.dim() == 3 && !p.per_batch) ? k.reshape({p.H, taps}).contiguous() : k.contiguous();
  if (D.has_value()) {
    check_kernel_like_u(*D, u, "D");
    KF_CHECK_ARG(D->dim() == 1 && D->size(0) == p.H, "D", "expected shape (H,) = (", p.H, ",), got ", shape_str(*D));
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

// ------------------------------------------------------------------ the runner's interfaces
// Batched real FFTs: MKL directly on CPU when the installed torch carries it (plans cached per
// thread, results written into the runner's buffers: no allocation per call; off with
// KERNELFUSE_NO_MKL_FFT), else ATen's (MKL or pocketfft on CPU, cuFFT on CUDA).
template <typename A>
struct TorchFFT final : RealFFT<A> {
  at::TensorOptions ropt, copt;
  bool mkl;
  TorchFFT(const at::Tensor& like, bool device)
      : ropt(like.options().dtype(std::is_same_v<A, double> ? at::kDouble : at::kFloat)),
        copt(like.options().dtype(std::is_same_v<A, double> ? at::kComplexDouble : at::kComplexFloat)),
        mkl(!device && !config().no_mkl_fft && mkl::mkl_fft_available()) {}
  void r2c(const A* in, A* out, int64_t rows, int64_t n) override {
    if (mkl && mkl::mkl_rfft<A>(in, out, rows, n, true)) return;
    at::Tensor c = at::from_blob(out, {rows, n / 2 + 1}, copt);
    at::_fft_r2c_out(c, at::from_blob(const_cast<A*>(in), {rows, n}, ropt), {1}, 0, true);
  }
  void c2r(const A* in, A* out, int64_t rows, int64_t n) override {
    if (mkl && mkl::mkl_rfft<A>(in, out, rows, n, false)) return;
    at::Tensor r = at::from_blob(out, {rows, n}, ropt);
    at::_fft_c2r_out(r, at::from_blob(const_cast<A*>(in), {rows, n / 2 + 1}, copt), {1}, 0, n);
  }
};

// The stages (FFTConvStages) plus memory and the task loop (common/parallel.h): ATen tensors on
// the data's device, each task with its own scratch.
template <typename T, typename A, typename TK>
struct TorchExec final : FFTConvStages<T, A, TK> {
  at::TensorOptions ropt;
  std::vector<at::Tensor> keep;
  TorchExec(const FFTConvParams<T, A, TK>& p, const at::Tensor& like, bool device)
      : FFTConvStages<T, A, TK>(p, device, device ? stream() : nullptr),
        ropt(like.options().dtype(std::is_same_v<A, double> ? at::kDouble : at::kFloat)) {}
  static void* stream() {
#ifdef KF_DEVICE
    return device_stream();
#else
    return nullptr;
#endif
  }
  at::Tensor wrap(const A* x, int64_t count) const { return at::from_blob(const_cast<A*>(x), {count}, ropt); }
  A* alloc(int64_t count) override {
    keep.push_back(at::empty({count}, ropt));
    return keep.back().template mutable_data_ptr<A>();
  }
  void zero(A* x, int64_t count) override { wrap(x, count).zero_(); }
  void copy(A* dst, const A* src, int64_t count) override { wrap(dst, count).copy_(wrap(src, count)); }
  void add(A* dst, const A* src, int64_t count) override { wrap(dst, count).add_(wrap(src, count)); }
  void run_tasks(int64_t ntasks, int64_t scratch, const std::function<void(int64_t, A*)>& task) override {
    kernelfuse::run_tasks(ntasks, this->device, [&](int64_t t) {
      at::Tensor w = at::empty({scratch}, ropt);
      task(t, w.template mutable_data_ptr<A>());
    });
  }
};

// The fields FFTConvParams and FFTConvTCParams share: sizes, the skip convention and the inputs.
template <typename S, typename SK, class P>
void set_inputs(P& p, const Problem& pb) {
  p.B = pb.B;
  p.H = pb.H;
  p.L = pb.L;
  p.Lk = pb.Lk;
  p.skip_gated = pb.skip_gated;
  p.u = in_ptr<S>(pb.u);
  p.k = in_ptr<SK>(pb.k);
  p.D = in_ptr<SK>(pb.D);
  p.pregate = in_ptr<S>(pb.pre);
  p.postgate = in_ptr<S>(pb.post);
}

// S: storage of u (gates, grad); SK: of k and D (S, or float with half S on the device).
template <typename S, typename SK>
struct Glue {
  using T = storage_t<S>;
  using A = typename Storage<S>::acc;
  using TK = storage_t<SK>;
  const Problem& pb;
  FFTConvParams<T, A, TK> p;
  FFTConvShape shape;

  explicit Glue(const Problem& pr) : pb(pr) {
    set_inputs<S, SK>(p, pr);
    p.n = pr.n;
    p.nf = pr.n / 2 + 1;
    p.mode = pr.mode;
    p.k_per_batch = pr.per_batch;
    shape.B = pr.B;
    shape.H = pr.H;
    shape.n = pr.n;
    shape.per_batch = pr.per_batch;
    shape.device = on_device(pr.u);
    shape.threads = shape.device ? 1 : std::max<int64_t>(1, at::get_num_threads());
  }

  at::Tensor forward() {
    at::Tensor y = at::empty(pb.u.sizes(), pb.u.options());
    p.y = out_ptr<S>(y);
    TorchExec<T, A, TK> ex(p, pb.u, shape.device);
    TorchFFT<A> fft(pb.u, shape.device);
    fftconv_forward<A>(shape, ex, fft);
    return y;
  }

  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad, bool need_u,
                                                                                  bool need_k, bool need_D,
                                                                                  bool need_pre, bool need_post) {
    const auto opts = pb.u.options();
    const auto ropt = opts.dtype(std::is_same_v<A, double> ? at::kDouble : at::kFloat);
    auto none = [&] { return at::empty({0}, opts); };
    need_D = need_D && pb.D.defined();
    need_pre = need_pre && pb.pre.defined();
    need_post = need_post && pb.post.defined();
    at::Tensor du = need_u ? at::empty(pb.u.sizes(), opts) : none();
    at::Tensor dpre = need_pre ? at::empty(pb.u.sizes(), opts) : none();
    at::Tensor dpost = need_post ? at::empty(pb.u.sizes(), opts) : none();
    at::Tensor dk = need_k ? at::empty(pb.k.sizes(), pb.k.options()) : none();
    at::Tensor dD_rows = need_D ? at::empty({pb.B, pb.H}, ropt) : at::Tensor();
    at::Tensor dD = need_D ? at::empty({pb.H}, opts.dtype(pb.D_dtype)) : none();
    p.grad = in_ptr<S>(grad);
    p.du = need_u ? out_ptr<S>(du) : nullptr;
    p.dpregate = need_pre ? out_ptr<S>(dpre) : nullptr;
    p.dpostgate = need_post ? out_ptr<S>(dpost) : nullptr;
    p.dk = need_k ? out_ptr<SK>(dk) : nullptr;
    p.dD_rows = need_D ? dD_rows.template mutable_data_ptr<A>() : nullptr;
    if (pb.B * pb.H == 0) {
      if (need_k) dk.zero_();
      if (need_D) dD.zero_();
    } else {
      TorchExec<T, A, TK> ex(p, pb.u, shape.device);
      TorchFFT<A> fft(pb.u, shape.device);
      fftconv_backward<A>(shape, FFTConvNeed{need_u, need_k, need_pre, need_post}, ex, fft);
      if (need_D) dD.copy_(dD_rows.sum(0));
    }
    return {du, need_k ? dk.view(pb.k_shape).to(pb.k_dtype) : dk, dD, dpre, dpost};
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
// an fp32 kernel, device only: on CPU half inputs were upcast before).
template <typename F>
void dispatch(const at::Tensor& u, at::ScalarType k_dtype, F&& f) {
#ifdef KF_DEVICE
  if (on_device(u)) {
    dispatch_float_half(u, [&]<typename S>() {
      if constexpr (std::is_same_v<S, at::Half> || std::is_same_v<S, at::BFloat16>) {
        if (k_dtype == at::kFloat) {
          f.template operator()<S, float>();
          return;
        }
      }
      f.template operator()<S, S>();
    });
    return;
  }
#endif
  (void)k_dtype;
  dispatch_float(u, [&]<typename S>() { f.template operator()<S, S>(); });
}

#ifdef KF_DEVICE
// Tensor-core path (fftconv_tc_cuda.cu) for CUDA fp16 / bf16, causal, kernel shared by the batch:
// two launches, no cuFFT. Returns false (nothing launched) when the FFT size would pass kTCMaxN or
// one sequence does not fit the device's opt-in shared memory; the caller then takes the cuFFT path.
// KERNELFUSE_NO_TC_FFTCONV=1 disables it. Forward only: fftconv_bwd stays on the cuFFT path.
bool fftconv_tc_try(const Problem& pb, at::Tensor& y) {
  if (!on_device(pb.u) || pb.mode != ConvMode::Causal || pb.per_batch || config().no_tc_fftconv) return false;
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
  auto run = [&]<typename S, typename SK>() {
    FFTConvTCParams<storage_t<S>, storage_t<SK>> p;
    set_inputs<S, SK>(p, pb);
    p.N = N;
    p.y = out_ptr<S>(out);
    p.kspec = kspec.mutable_data_ptr<float>();
    p.kexp = kexp.mutable_data_ptr<int>();
    ok = launch_fftconv_tc<storage_t<S>, storage_t<SK>>(p, device_stream());
  };
  const bool k_fp32 = pb.k.scalar_type() == at::kFloat;  // mixed precision: fp32 k and D
  if (st == at::kHalf && k_fp32)
    run.template operator()<at::Half, float>();
  else if (st == at::kHalf)
    run.template operator()<at::Half, at::Half>();
  else if (k_fp32)
    run.template operator()<at::BFloat16, float>();
  else
    run.template operator()<at::BFloat16, at::BFloat16>();
  if (!ok) return false;
  y = out;
  return true;
}
#endif

at::Tensor fftconv(const at::Tensor& u, const at::Tensor& k, const std::optional<at::Tensor>& D,
                   const std::optional<at::Tensor>& pregate, const std::optional<at::Tensor>& postgate,
                   c10::string_view mode, std::optional<int64_t> fft_size, c10::string_view skip) {
  KF_OP_SCOPE("fftconv");
  Problem pb = check_problem(u, k, D, pregate, postgate, mode, fft_size, skip);
  if (upcast_needed(u)) {
    return fftconv(u.to(at::kFloat), k.to(at::kFloat), to_float(D), to_float(pregate), to_float(postgate), mode, pb.n,
                   skip)
        .to(u.scalar_type());
  }
  at::Tensor y;
#ifdef KF_DEVICE
  if (fftconv_tc_try(pb, y)) return y;
#endif
  dispatch(pb.u, pb.k.scalar_type(), [&]<typename S, typename SK>() { y = Glue<S, SK>(pb).forward(); });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fftconv_bwd(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& k, const std::optional<at::Tensor>& D,
    const std::optional<at::Tensor>& pregate, const std::optional<at::Tensor>& postgate, c10::string_view mode,
    std::optional<int64_t> fft_size, bool need_u, bool need_k, bool need_D, bool need_pregate, bool need_postgate,
    c10::string_view skip) {
  KF_OP_SCOPE("fftconv_bwd");
  check_defined(grad, "grad");
  Problem pb = check_problem(u, k, D, pregate, postgate, mode, fft_size, skip);
  check_same_device(grad, u, "grad", "u");
  KF_CHECK_ARG(grad.sizes() == u.sizes(), "grad", "expected the shape of u ", shape_str(u), ", got ", shape_str(grad));
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
    res = Glue<S, SK>(pb).backward(g, need_u, need_k, need_D, need_pregate, need_postgate);
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
