// Torch glue for the Monarch ops: monarch_multiply (+ _bwd) and monarch_fft. Both are chains of
// batched GEMMs. monarch_multiply keeps its intermediate transposed, (k q, M) with the rows m
// contiguous, so that each factor (forward and backward) is ONE strided batched GEMM that reads
// its operands and writes its result in place, the Monarch permutation and the input / output
// transposes all being leading dimensions and batch strides: no copy, no shuffle pass. CPU: MKL's
// cblas_?gemm_batch (third_party/mkl/mkl_gemm_batch.h); CUDA (and CPU torch builds without MKL): ATen's bmm_out on
// the same strided views (cuBLAS strided batched on CUDA).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "../common/checks.h"
#include "../common/config.h"
#include "../common/device.h"
#include "monarch_fft.h"
#include "mkl/mkl_gemm_batch.h"


namespace kernelfuse::butterfly {
namespace {

// ------------------------------------------------------------------ monarch_multiply
// x (..., n), w1 (k, q, p), w2 (l, s, r) with n = k p and k q = l r; output (..., l s):
//   Y1[m, a, :] = w1[a] @ x[m, a, :]           (x viewed (M, k, p): block a = x[a p : (a + 1) p])
//   Z[m, c, b]  = Y1flat[m, b l + c]            (Y1 flattened to k q = r l, viewed (r, l), transposed)
//   out[m, c, :] = w2[c] @ Z[m, c, :]           (out viewed (M, l, s))
//
// Layout. The intermediate is stored transposed: Yt (k q, M), row f = a q + j = b l + c holds
// Y1flat[:, f] over all M rows. In BLAS (column-major) terms, with M the long dimension:
//   x      as a column-major (n x M) matrix, ld n: block a = rows a p.., (p x M)  = X_a^T
//   Yt     as a column-major (M x k q) matrix, ld M: factor-1 block a = columns a q.. (M x q)
//          = Y1_a (ld M), factor-2 block c = columns c, c + l, ... (M x r) = Z_c (ld l M)
//   out    as a column-major (l s x M) matrix, ld l s: block c = rows c s.. (s x M) = out_c^T
//   w1[a]  row-major (q x p) = column-major (p x q) = w1[a]^T, ld p; w2[c] likewise (r x s), ld r
// so that (each line one batched GEMM over the blocks, constant batch strides):
//   forward   Y1_a = X_a w1[a]^T              = T(x_a)  N(w1_a)     (M x q, k = p)
//             out_c^T = w2[c] Z_c^T            = T(w2_c) T(Z_c)      (s x M, k = r)
//   backward  dZ_c = G_c conj(w2[c])           = T(G_c)  C(w2_c)     (M x r, k = s)  written into dYt
//             dw2[c]^T = Z_c^H G_c             = C(Z_c)  T(G_c)      (r x s, k = M)
//             dx_a^T = w1[a]^H dY1_a^T         = N(conj w1_a) T(dY1_a) (p x M, k = q)
//             dw1[a]^T = X_a^H dY1_a           = N(x_a) N(dY1_a)     (p x q, k = M; real)
//             dw1[a] = dY1_a^T conj(X_a)       = T(dY1_a) C(x_a)     (q x p, k = M; complex, then
//                                                                     one transpose of the small result)
// (PyTorch's complex convention: for Y = A B^T, dA = G conj(B), dB = G^T conj(A).) The backward
// recomputes Yt (one GEMM) instead of saving it, so autograd keeps only x, w1 and w2, and then
// reuses Yt's buffer for dYt. Cost: forward 2 GEMM passes, backward 5, no other pass over the data.
struct MonarchShape {
  int64_t M = 0, n = 0, k = 0, q = 0, p = 0, l = 0, s = 0, r = 0;
  std::vector<int64_t> out_shape;
};

MonarchShape check_monarch(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  KF_CHECK_ARG(x.dim() >= 1, "x", "expected shape (..., n), got a 0-d tensor");
  const auto st = x.scalar_type();
  KF_CHECK_ARG(st == at::kFloat || st == at::kDouble || st == at::kComplexFloat || st == at::kComplexDouble, "x",
               "expected dtype float32, float64, complex64 or complex128, got ", st);
  check_same_dtype(w1, x, "w1", "x");
  check_same_dtype(w2, x, "w2", "x");
  check_same_device(w1, x, "w1", "x");
  check_same_device(w2, x, "w2", "x");
  KF_CHECK_ARG(w1.dim() == 3, "w1", "expected shape (k, q, p) (k diagonal blocks of q x p), got ", shape_str(w1));
  KF_CHECK_ARG(w2.dim() == 3, "w2", "expected shape (l, s, r) (l diagonal blocks of s x r), got ", shape_str(w2));
  MonarchShape m;
  m.n = x.size(-1);
  m.k = w1.size(0); m.q = w1.size(1); m.p = w1.size(2);
  m.l = w2.size(0); m.s = w2.size(1); m.r = w2.size(2);
  KF_CHECK_ARG(m.k >= 1 && m.k * m.p == m.n, "w1", "expected shape (k, q, p) with k * p = n = ", m.n,
               " (x is ", shape_str(x), "), got ", shape_str(w1));
  KF_CHECK_ARG(m.l >= 1 && m.l * m.r == m.k * m.q, "w2", "expected shape (l, s, r) with l * r = k * q = ", m.k * m.q,
               " (w1 is ", shape_str(w1), "), got ", shape_str(w2));
  m.M = m.n ? x.numel() / m.n : 0;
  m.out_shape = x.sizes().vec();
  m.out_shape.back() = m.l * m.s;
  return m;
}

// KERNELFUSE_MONARCH_GEMM=aten (common/config.h): CPU GEMMs by ATen's bmm_out on the strided
// views (the CUDA path and the fallback for torch builds without MKL) instead of MKL's batched
// GEMM; tests cover both.
bool force_aten_gemm() { return config().monarch_gemm_aten; }

// A column-major operand: matrix i of the batch at data + off + i * batch_stride, (rows x cols)
// with element (row, col) at row + col * ld. t is contiguous, conj / neg bits resolved.
struct Operand {
  const at::Tensor* t;
  int64_t off, ld, batch_stride;
};

// C_i = op_a(A_i) op_b(B_i), (m x n), inner size kk, for i < batch; op 'N', 'T' or 'C'.
void gemm(char op_a, char op_b, int64_t m, int64_t n, int64_t kk, int64_t batch, const Operand& A, const Operand& B,
          const Operand& C) {
  const at::Tensor& ct = *C.t;
  if (!on_device(ct) && !force_aten_gemm() && m >= 1 && n >= 1 && kk >= 1) {
    mkl::GemmBatch g;
    g.op_a = op_a; g.op_b = op_b;
    g.m = m; g.n = n; g.k = kk; g.batch = batch;
    const int64_t e = ct.element_size();
    g.a = static_cast<const char*>(A.t->const_data_ptr()) + A.off * e; g.lda = A.ld; g.sa = A.batch_stride;
    g.b = static_cast<const char*>(B.t->const_data_ptr()) + B.off * e; g.ldb = B.ld; g.sb = B.batch_stride;
    g.c = static_cast<char*>(const_cast<at::Tensor&>(ct).mutable_data_ptr()) + C.off * e; g.ldc = C.ld;
    g.sc = C.batch_stride;
    const auto st = ct.scalar_type();
    const char elem = st == at::kFloat ? 's' : st == at::kDouble ? 'd' : st == at::kComplexFloat ? 'c' : 'z';
    if (mkl::mkl_gemm_batch(elem, g)) return;
  }
  // ATen: the same matrices as strided views (batch, rows, cols) with strides (batch_stride, 1, ld).
  auto view = [](const Operand& o, int64_t rows, int64_t cols, int64_t nb) {
    return o.t->as_strided({nb, rows, cols}, {o.batch_stride, 1, std::max<int64_t>(o.ld, 1)}, o.t->storage_offset() + o.off);
  };
  auto opv = [&](const Operand& o, char op, int64_t rows, int64_t cols) {
    if (op == 'N') return view(o, rows, cols, batch);
    at::Tensor v = view(o, cols, rows, batch).transpose(1, 2);
    return op == 'C' ? v.conj() : v;
  };
  at::Tensor cv = view(C, m, n, batch);
  const at::NoGradGuard no_grad;  // inputs may require grad where no autograd kernel wraps the op (simulator)
  at::bmm_out(cv, opv(A, op_a, m, kk), opv(B, op_b, kk, n));
}

// x, w1, w2 as contiguous, resolved tensors; x viewed (M, n).
at::Tensor plain(const at::Tensor& t) { return t.contiguous().resolve_conj().resolve_neg().contiguous(); }

// Yt (k q, M) = the transposed intermediate (factor 1).
at::Tensor factor1(const at::Tensor& X, const at::Tensor& W1, const MonarchShape& m) {
  at::Tensor Yt = at::empty({m.k * m.q, m.M}, X.options());
  gemm('T', 'N', m.M, m.q, m.p, m.k, {&X, 0, m.n, m.p}, {&W1, 0, m.p, m.q * m.p}, {&Yt, 0, m.M, m.q * m.M});
  return Yt;
}

at::Tensor monarch_multiply(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  KF_OP_SCOPE("monarch_multiply");
  const MonarchShape m = check_monarch(x, w1, w2);
  if (m.M == 0) return at::empty(m.out_shape, x.options());
  const at::Tensor X = plain(x.reshape({m.M, m.n})), W1 = plain(w1), W2 = plain(w2);
  at::Tensor out = at::empty({m.M, m.l * m.s}, X.options());
  if (m.k * m.q == 0) return out.zero_().view(m.out_shape);
  const at::Tensor Yt = factor1(X, W1, m);
  gemm('T', 'T', m.s, m.M, m.r, m.l, {&W2, 0, m.r, m.s * m.r}, {&Yt, 0, m.l * m.M, m.M}, {&out, 0, m.l * m.s, m.s});
  return out.view(m.out_shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> monarch_multiply_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                    const at::Tensor& w1, const at::Tensor& w2,
                                                                    bool need_x, bool need_w1, bool need_w2) {
  KF_OP_SCOPE("monarch_multiply_bwd");
  const MonarchShape m = check_monarch(x, w1, w2);
  KF_CHECK_ARG(grad.sizes() == at::IntArrayRef(m.out_shape), "grad", "expected shape ", c10::IntArrayRef(m.out_shape),
               ", got ", shape_str(grad));
  check_same_dtype(grad, x, "grad", "x");
  check_same_device(grad, x, "grad", "x");
  const auto none = at::empty({0}, x.options());
  if (m.M == 0 || m.k * m.q == 0) {
    return {need_x ? at::zeros(x.sizes(), x.options()) : none, need_w1 ? at::zeros(w1.sizes(), w1.options()) : none,
            need_w2 ? at::zeros(w2.sizes(), w2.options()) : none};
  }
  const bool cplx = x.is_complex();
  const char H = cplx ? 'C' : 'T';  // the conjugate transpose (the transpose for real dtypes)
  const at::Tensor X = plain(x.reshape({m.M, m.n})), W1 = plain(w1), W2 = plain(w2);
  const at::Tensor G = plain(grad.reshape({m.M, m.l * m.s}));
  at::Tensor dw2 = none, dx = none, dw1 = none, buf;
  if (need_w2) {
    buf = factor1(X, W1, m);  // Yt, recomputed (not saved by the forward)
    dw2 = at::empty({m.l, m.s, m.r}, X.options());
    gemm(H, 'T', m.r, m.s, m.M, m.l, {&buf, 0, m.l * m.M, m.M}, {&G, 0, m.l * m.s, m.s}, {&dw2, 0, m.r, m.s * m.r});
  }
  if (need_x || need_w1) {
    // dYt reuses Yt's buffer (Yt is dead once dw2 is done): one (k q, M) buffer in the backward.
    at::Tensor dYt = buf.defined() ? buf : at::empty({m.k * m.q, m.M}, X.options());
    gemm('T', H, m.M, m.r, m.s, m.l, {&G, 0, m.l * m.s, m.s}, {&W2, 0, m.r, m.s * m.r}, {&dYt, 0, m.l * m.M, m.M});
    if (need_x) {
      const at::Tensor W1c = cplx ? plain(w1.conj()) : W1;
      dx = at::empty({m.M, m.n}, X.options());
      gemm('N', 'T', m.p, m.M, m.q, m.k, {&W1c, 0, m.p, m.q * m.p}, {&dYt, 0, m.M, m.q * m.M}, {&dx, 0, m.n, m.p});
      dx = dx.view(x.sizes());
    }
    if (need_w1 && !cplx) {
      dw1 = at::empty({m.k, m.q, m.p}, X.options());
      gemm('N', 'N', m.p, m.q, m.M, m.k, {&X, 0, m.n, m.p}, {&dYt, 0, m.M, m.q * m.M}, {&dw1, 0, m.p, m.q * m.p});
    } else if (need_w1) {
      at::Tensor t = at::empty({m.k, m.p, m.q}, X.options());  // t[a] = dw1[a]^T
      gemm('T', 'C', m.q, m.p, m.M, m.k, {&dYt, 0, m.M, m.q * m.M}, {&X, 0, m.n, m.p}, {&t, 0, m.q, m.p * m.q});
      dw1 = t.transpose(1, 2).contiguous();
    }
  }
  return {dx, dw1, dw2};
}

// ------------------------------------------------------------------ monarch_fft
// Length N = N1 N2 ... Nf (f <= 4 up to N = 2^24, factors <= 64 when N has no larger prime
// factor). One level, n = N2 n1 + n2, k = k1 + N1 k2:
//   A[k1, n2] = sum_n1 F_N1[k1, n1] x[n1, n2] * w_N^(k1 n2);  X[k1 + N1 k2] = (A F_N2)[k1, k2],
// the N2-point DFTs done by the next level. DFT matrices and twiddles are computed in float64
// from exactly reduced exponents and cached per (size, direction, dtype, device).
constexpr int64_t kMaxFactor = 64;
constexpr int64_t kMaxDenseFactor = 2048;  // a dense DFT of a prime factor p: p x p complex entries

std::vector<int64_t> fft_factors(int64_t N) {
  std::vector<int64_t> primes;
  int64_t r = N;
  for (int64_t d = 2; d * d <= r; ++d)
    while (r % d == 0) { primes.push_back(d); r /= d; }
  if (r > 1) primes.push_back(r);
  int64_t nf = 1;
  for (double cap = kMaxFactor; cap < double(N); cap *= kMaxFactor) ++nf;
  nf = std::min<int64_t>(nf, std::max<int64_t>(1, int64_t(primes.size())));
  std::vector<int64_t> f(nf, 1);
  std::sort(primes.rbegin(), primes.rend());
  for (int64_t pr : primes) *std::min_element(f.begin(), f.end()) *= pr;
  std::sort(f.begin(), f.end());
  return f;
}

std::mutex cache_mutex;
std::map<std::string, at::Tensor> cache;

// exp(sign 2 pi i (a b mod N) / N) for a < rows, b < cols: (rows, cols), in x's dtype and device.
at::Tensor roots(int64_t rows, int64_t cols, int64_t N, bool inverse, const at::Tensor& like) {
  const std::string key = c10::str(rows, ",", cols, ",", N, ",", inverse, ",", like.scalar_type(), ",", like.device());
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  at::Tensor t = at::empty({rows, cols, 2}, at::TensorOptions().dtype(at::kDouble));
  double* d = t.data_ptr<double>();
  const double sign = inverse ? 1.0 : -1.0;
  for (int64_t a = 0; a < rows; ++a)
    for (int64_t b = 0; b < cols; ++b) {
      const int64_t e = (a * b) % N;
      const double ang = sign * 2.0 * M_PI * double(e) / double(N);
      d[(a * cols + b) * 2] = std::cos(ang);
      d[(a * cols + b) * 2 + 1] = std::sin(ang);
    }
  at::Tensor c = at::view_as_complex(t).to(like.options().dtype(like.scalar_type()));
  std::lock_guard<std::mutex> lock(cache_mutex);
  cache.emplace(key, c);
  return c;
}

at::Tensor fft_rec(const at::Tensor& x, const std::vector<int64_t>& f, size_t idx, bool inverse) {
  const int64_t M = x.size(0), N = x.size(1);
  if (idx + 1 == f.size()) return at::matmul(x, roots(N, N, N, inverse, x));
  const int64_t N1 = f[idx], N2 = N / N1;
  at::Tensor A = at::matmul(roots(N1, N1, N1, inverse, x), x.view({M, N1, N2}));  // (M, N1, N2)
  A.mul_(roots(N1, N2, N, inverse, x));
  at::Tensor B = fft_rec(A.view({M * N1, N2}), f, idx + 1, inverse);            // (M N1, N2)
  return B.view({M, N1, N2}).transpose(1, 2).reshape({M, N});
}

at::Tensor monarch_fft(const at::Tensor& x, bool inverse, c10::string_view norm) {
  KF_OP_SCOPE("monarch_fft");
  KF_CHECK_ARG(x.dim() >= 1, "x", "expected shape (..., n), got a 0-d tensor");
  KF_CHECK_ARG(x.scalar_type() == at::kComplexFloat || x.scalar_type() == at::kComplexDouble, "x",
               "expected dtype complex64 or complex128, got ", x.scalar_type());
  KF_CHECK_ARG(norm == "backward" || norm == "ortho" || norm == "forward", "norm", "expected 'backward', 'ortho' or "
               "'forward', got '", std::string(norm), "'");
  const int64_t N = x.size(-1);
  KF_CHECK_ARG(N >= 1, "x", "expected a last dimension n >= 1, got shape ", shape_str(x));
  const std::vector<int64_t> f = fft_factors(N);
  KF_CHECK_ARG(f.back() <= kMaxDenseFactor, "x", "n = ", N, " has a prime factor ", f.back(), " > ",
               kMaxDenseFactor, "; monarch_fft supports lengths whose prime factors are at most ", kMaxDenseFactor);
  double scale = 1.0;
  if (norm == "ortho") scale = 1.0 / std::sqrt(double(N));
  else if ((norm == "backward") == inverse) scale = 1.0 / double(N);
  if (x.numel() == 0) return at::empty(x.sizes(), x.options());
  const int64_t M = x.numel() / N;
#ifdef KF_DEVICE
  if (on_device(x)) {  // lengths with two factors <= 64: one fused kernel (monarch_fft_cuda.cu)
    KF_DEVICE_GUARD(x);
    at::Tensor xc = x.reshape({M, N}).contiguous().resolve_conj().resolve_neg();
    at::Tensor out = at::empty({M, N}, xc.options());
    bool done = false;
    AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(x.scalar_type()), "monarch_fft", [&] {
      MonarchFFTParams<scalar_t> p;
      if (!monarch_fft_cuda_supported<scalar_t>(N, &p.N1, &p.N2)) return;
      p.rows = M;
      p.N = N;
      p.inverse = inverse;
      p.scale = static_cast<scalar_t>(scale);
      p.x = at::view_as_real(xc).const_data_ptr<scalar_t>();
      p.y = at::view_as_real(out).mutable_data_ptr<scalar_t>();
      launch_monarch_fft<scalar_t>(p, device_stream());
      done = true;
    });
    if (done) return out.view(x.sizes());
  }
#endif
  at::Tensor y = N == 1 ? x.reshape({M, 1}).clone() : fft_rec(x.reshape({M, N}).contiguous(), f, 0, inverse);
  if (scale != 1.0) y.mul_(scale);
  return y.view(x.sizes());
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("monarch_multiply", &monarch_multiply);
  m.impl("monarch_multiply_bwd", &monarch_multiply_bwd);
  m.impl("monarch_fft", &monarch_fft);
}

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("monarch_multiply", &monarch_multiply);
  m.impl("monarch_multiply_bwd", &monarch_multiply_bwd);
  m.impl("monarch_fft", &monarch_fft);
}
#endif

}  // namespace kernelfuse::butterfly
