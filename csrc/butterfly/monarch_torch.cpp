// Torch glue for the Monarch ops: monarch_multiply (+ _bwd) and monarch_fft. Both are chains of
// batched GEMMs, so they are written with ATen's bmm / matmul (MKL or OpenBLAS on CPU, cuBLAS on
// CUDA) on strided views: the Monarch permutation between the two block-diagonal factors is a
// reshape of the intermediate (one copy), the input and output transposes are strides.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "../common/checks.h"
#include "../common/device.h"
#include "monarch.h"
#include "monarch_fft.h"


namespace kernelfuse::butterfly {
namespace {

// ------------------------------------------------------------------ monarch_multiply
// x (..., n), w1 (k, q, p), w2 (l, s, r) with n = k p and k q = l r; output (..., l s):
//   Y1[m, a, :] = w1[a] @ x[m, a, :]           (x viewed (M, k, p): block a = x[a p : (a + 1) p])
//   Z[m, c, b]  = Y1flat[m, b l + c]            (Y1 flattened to k q = r l, viewed (r, l), transposed)
//   out[m, c, :] = w2[c] @ Z[m, c, :]           (out viewed (M, l, s))
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

// (k, M, p) view of x and the permuted intermediate Z (l, M, r).
at::Tensor x_blocks(const at::Tensor& x, const MonarchShape& m) {
  return x.reshape({m.M, m.k, m.p}).transpose(0, 1);
}
// Y1 (k, M, q) -> Z (l, M, r) (adjoint: dZ -> dY1), contiguous. CPU: the one-pass kernel of
// monarch.h; CUDA: ATen's strided copies.
at::Tensor shuffle(const at::Tensor& src, const MonarchShape& m, bool adjoint) {
  if (on_device(src)) {
    if (!adjoint) return src.permute({1, 0, 2}).reshape({m.M, m.r, m.l}).permute({2, 0, 1}).contiguous();
    return src.permute({1, 2, 0}).reshape({m.M, m.k, m.q}).transpose(0, 1).contiguous();
  }
  at::Tensor s = src.contiguous().resolve_conj().resolve_neg();
  at::Tensor d = adjoint ? at::empty({m.k, m.M, m.q}, s.options()) : at::empty({m.l, m.M, m.r}, s.options());
  MonarchShuffleParams p;
  p.M = m.M; p.k = m.k; p.q = m.q; p.l = m.l; p.r = m.r;
  p.elem_bytes = s.element_size();
  p.adjoint = adjoint;
  p.src = s.const_data_ptr();
  p.dst = d.mutable_data_ptr();
  monarch_shuffle_cpu(p);
  return d;
}

at::Tensor middle(const at::Tensor& X, const at::Tensor& w1, const MonarchShape& m) {
  return shuffle(at::bmm(X, w1.transpose(1, 2)), m, false);  // (k, M, q) -> (l, M, r)
}

at::Tensor monarch_multiply(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  const MonarchShape m = check_monarch(x, w1, w2);
  if (m.M == 0) return at::empty(m.out_shape, x.options());
  at::Tensor Z = middle(x_blocks(x, m), w1, m);
  at::Tensor Y2 = at::bmm(Z, w2.transpose(1, 2));                      // (l, M, s)
  return Y2.permute({1, 0, 2}).reshape(m.out_shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> monarch_multiply_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                    const at::Tensor& w1, const at::Tensor& w2,
                                                                    bool need_x, bool need_w1, bool need_w2) {
  const MonarchShape m = check_monarch(x, w1, w2);
  KF_CHECK_ARG(grad.sizes() == at::IntArrayRef(m.out_shape), "grad", "expected shape ", c10::IntArrayRef(m.out_shape),
               ", got ", shape_str(grad));
  check_same_dtype(grad, x, "grad", "x");
  check_same_device(grad, x, "grad", "x");
  const auto none = at::empty({0}, x.options());
  if (m.M == 0) {
    return {need_x ? at::zeros(x.sizes(), x.options()) : none, need_w1 ? at::zeros(w1.sizes(), w1.options()) : none,
            need_w2 ? at::zeros(w2.sizes(), w2.options()) : none};
  }
  // PyTorch's complex convention: for Y = A B^T, dA = G conj(B), dB = G^T conj(A).
  at::Tensor X = x_blocks(x, m);
  at::Tensor G = grad.reshape({m.M, m.l, m.s}).transpose(0, 1);       // (l, M, s)
  at::Tensor dw2 = none, dx = none, dw1 = none;
  if (need_w2) dw2 = at::bmm(G.transpose(1, 2), middle(X, w1, m).conj());  // (l, s, r)
  if (need_x || need_w1) {
    at::Tensor dZ = at::bmm(G, w2.conj());                              // (l, M, r)
    at::Tensor dY1 = shuffle(dZ, m, true);                              // (k, M, q)
    if (need_x) dx = at::bmm(dY1, w1.conj()).transpose(0, 1).reshape(x.sizes());
    if (need_w1) dw1 = at::bmm(dY1.transpose(1, 2), X.conj());          // (k, q, p)
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
