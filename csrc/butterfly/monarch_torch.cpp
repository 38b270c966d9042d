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
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "../common/alloc_checks.h"
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
// On the CPU all of it runs per chunk of rows (Chunking below): M above is then the chunk's row
// count, Yt's leading dimension the chunk buffer's, and dw1 / dw2 accumulate over the chunks.
struct MonarchShape {
  int64_t M = 0, n = 0, k = 0, q = 0, p = 0, l = 0, s = 0, r = 0;
  std::vector<int64_t> out_shape;
};

MonarchShape check_monarch(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  check_defined(x, "x");
  check_defined(w1, "w1");
  check_defined(w2, "w2");
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
  m.k = w1.size(0);
  m.q = w1.size(1);
  m.p = w1.size(2);
  m.l = w2.size(0);
  m.s = w2.size(1);
  m.r = w2.size(2);
  KF_CHECK_ARG(m.k >= 1 && m.k * m.p == m.n, "w1", "expected shape (k, q, p) with k * p = n = ", m.n, " (x is ",
               shape_str(x), "), got ", shape_str(w1));
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

// One batched GEMM: C_i = op_a(A_i) op_b(B_i) (acc: C_i += ...), (m x n), inner size kk, for
// i < batch; op 'N', 'T' or 'C'.
struct Gemm {
  char op_a, op_b;
  int64_t m, n, kk, batch;
  Operand A, B, C;
  bool acc = false;
};

// MKL's batched GEMM for j; false where MKL cannot take it (device tensor, no MKL, sizes).
bool mkl_gemm(const Gemm& j) {
  const at::Tensor& ct = *j.C.t;
  if (on_device(ct) || force_aten_gemm() || j.m < 1 || j.n < 1 || j.kk < 1) return false;
  const int64_t e = ct.element_size();
  mkl::GemmBatch g;
  g.op_a = j.op_a;
  g.op_b = j.op_b;
  g.m = j.m;
  g.n = j.n;
  g.k = j.kk;
  g.batch = j.batch;
  g.accumulate = j.acc;
  g.a = static_cast<const char*>(j.A.t->const_data_ptr()) + j.A.off * e;
  g.lda = j.A.ld;
  g.sa = j.A.batch_stride;
  g.b = static_cast<const char*>(j.B.t->const_data_ptr()) + j.B.off * e;
  g.ldb = j.B.ld;
  g.sb = j.B.batch_stride;
  g.c = static_cast<char*>(const_cast<at::Tensor&>(ct).mutable_data_ptr()) + j.C.off * e;
  g.ldc = j.C.ld;
  g.sc = j.C.batch_stride;
  const auto st = ct.scalar_type();
  const char elem = st == at::kFloat ? 's' : st == at::kDouble ? 'd' : st == at::kComplexFloat ? 'c' : 'z';
  return mkl::mkl_gemm_batch(elem, g);
}

// ATen: the same matrices as strided views (batch, rows, cols) with strides (batch_stride, 1, ld).
void aten_gemm(const Gemm& j) {
  auto view = [&](const Operand& o, int64_t rows, int64_t cols) {
    return o.t->as_strided({j.batch, rows, cols}, {o.batch_stride, 1, std::max<int64_t>(o.ld, 1)},
                           o.t->storage_offset() + o.off);
  };
  auto opv = [&](const Operand& o, char op, int64_t rows, int64_t cols) {
    if (op == 'N') return view(o, rows, cols);
    at::Tensor v = view(o, cols, rows).transpose(1, 2);
    return op == 'C' ? v.conj() : v;
  };
  at::Tensor cv = view(j.C, j.m, j.n);
  const at::NoGradGuard no_grad;  // inputs may require grad where no autograd kernel wraps the op (simulator)
  if (j.acc) {
    cv.baddbmm_(opv(j.A, j.op_a, j.m, j.kk), opv(j.B, j.op_b, j.kk, j.n));
  } else {
    at::bmm_out(cv, opv(j.A, j.op_a, j.m, j.kk), opv(j.B, j.op_b, j.kk, j.n));
  }
}

void gemm(const Gemm& j) {
  if (!mkl_gemm(j)) aten_gemm(j);
}

// x, w1, w2 as contiguous, resolved tensors (the copy of an expanded view size-checked, naming
// the argument).
at::Tensor plain(const at::Tensor& t, const char* name) {
  return checked_contiguous(t, name).resolve_conj().resolve_neg().contiguous();
}

// The argument that sets the size of a (rows_from_w, M) buffer: x when its rows are the longer side.
const char* bigger(const MonarchShape& m, int64_t cols, const char* wname) { return cols > m.n ? wname : "x"; }

// Rows per chunk. On the CPU the M rows go in chunks whose intermediate (k q rows of the chunk) is
// about 2 MiB: it stays in cache between the two GEMMs that write and read it, and one small buffer
// serves every chunk (a fresh (k q, M) buffer costs a page fault per 4 KiB, ~35% of the time at
// 4096^2, B = 1024). Devices: one chunk. The buffer's leading dimension is padded off multiples of
// 1 KiB (power-of-two strides alias in the caches).
struct Chunking {
  int64_t rows = 0, ld = 0;
};

Chunking chunking(const MonarchShape& m, const at::Tensor& x) {
  const int64_t target = config().monarch_chunk_bytes;
  const int64_t e = x.element_size(), row_bytes = std::max<int64_t>(1, m.k * m.q * e);
  Chunking c;
  c.rows = on_device(x) ? m.M : std::min(m.M, std::max<int64_t>(32, (target / row_bytes + 15) / 16 * 16));
  c.ld = (c.rows * e) % 1024 == 0 ? c.rows + std::max<int64_t>(1, 64 / e) : c.rows;
  return c;
}

// Factor 1 for rows [r0, r0 + mc): Yt[:, 0:mc] = the transposed intermediate of those rows.
void factor1(const at::Tensor& X, const at::Tensor& W1, const MonarchShape& m, int64_t r0, int64_t mc,
             const at::Tensor& Yt, int64_t ld) {
  gemm({'T', 'N', mc, m.q, m.p, m.k, {&X, r0 * m.n, m.n, m.p}, {&W1, 0, m.p, m.q * m.p}, {&Yt, 0, ld, m.q * ld}});
}

at::Tensor monarch_multiply(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  KF_OP_SCOPE("monarch_multiply");
  const MonarchShape m = check_monarch(x, w1, w2);
  if (m.M == 0) return at::empty(m.out_shape, x.options());
  const at::Tensor X = plain(x, "x").view({m.M, m.n}), W1 = plain(w1, "w1"), W2 = plain(w2, "w2");
  at::Tensor out = checked_empty({m.M, m.l * m.s}, X.options(), bigger(m, m.l * m.s, "w2"), "the output");
  if (m.k * m.q == 0) return out.zero_().view(m.out_shape);
  const Chunking c = chunking(m, X);
  const at::Tensor Yt = at::empty({m.k * m.q, c.ld}, X.options());
  for (int64_t r0 = 0; r0 < m.M; r0 += c.rows) {
    const int64_t mc = std::min(c.rows, m.M - r0);
    factor1(X, W1, m, r0, mc, Yt, c.ld);
    gemm({'T',
          'T',
          m.s,
          mc,
          m.r,
          m.l,
          {&W2, 0, m.r, m.s * m.r},
          {&Yt, 0, m.l * c.ld, c.ld},
          {&out, r0 * m.l * m.s, m.l * m.s, m.s}});
  }
  return out.view(m.out_shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> monarch_multiply_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                    const at::Tensor& w1, const at::Tensor& w2,
                                                                    bool need_x, bool need_w1, bool need_w2) {
  KF_OP_SCOPE("monarch_multiply_bwd");
  check_defined(grad, "grad");
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
  const at::Tensor X = plain(x, "x").view({m.M, m.n}), W1 = plain(w1, "w1"), W2 = plain(w2, "w2");
  const at::Tensor G = plain(grad, "grad").view({m.M, m.l * m.s});
  const at::Tensor W1c = cplx && need_x ? plain(w1.conj(), "w1") : W1;
  at::Tensor dw2 = none;
  at::Tensor dx = need_x ? checked_empty({m.M, m.n}, X.options(), "x", "the gradient of x") : none;
  // dw1: real, dw1[a]^T = X_a^T dY1_a straight into dw1 ((p x q) column-major = (q, p) row-major);
  // complex, dw1[a] = dY1_a^T conj(X_a) into t[a] = dw1[a]^T, then one transpose of the small result.
  at::Tensor dw1 =
      !need_w1 ? none : at::empty(cplx ? at::IntArrayRef{m.k, m.p, m.q} : at::IntArrayRef{m.k, m.q, m.p}, X.options());
  // Per chunk of rows: Yt (recomputed: the forward saves nothing), dw2 += Yt^H G, then dYt = G W2
  // in Yt's buffer (dead by then), dx = dYt W1, dw1 += ... : one small buffer in the backward.
  const Chunking c = chunking(m, X);
  const int64_t ld = c.ld, ls = m.l * m.s;
  if (need_w2) dw2 = at::empty({m.l, m.s, m.r}, X.options());
  const at::Tensor B = at::empty({m.k * m.q, ld}, X.options());
  for (int64_t r0 = 0; r0 < m.M; r0 += c.rows) {
    const int64_t mc = std::min(c.rows, m.M - r0);
    const bool acc = r0 > 0;
    const Operand Gc{&G, r0 * ls, ls, m.s}, Xc{&X, r0 * m.n, m.n, m.p};
    if (need_w2) {
      factor1(X, W1, m, r0, mc, B, ld);
      gemm({H, 'T', m.r, m.s, mc, m.l, {&B, 0, m.l * ld, ld}, Gc, {&dw2, 0, m.r, m.s * m.r}, acc});
    }
    if (!need_x && !need_w1) continue;
    gemm({'T', H, mc, m.r, m.s, m.l, Gc, {&W2, 0, m.r, m.s * m.r}, {&B, 0, m.l * ld, ld}});
    const Operand dY{&B, 0, ld, m.q * ld};
    if (need_x) gemm({'N', 'T', m.p, mc, m.q, m.k, {&W1c, 0, m.p, m.q * m.p}, dY, {&dx, r0 * m.n, m.n, m.p}});
    if (need_w1 && !cplx) gemm({'N', 'N', m.p, m.q, mc, m.k, Xc, dY, {&dw1, 0, m.p, m.q * m.p}, acc});
    if (need_w1 && cplx) gemm({'T', 'C', m.q, m.p, mc, m.k, dY, Xc, {&dw1, 0, m.q, m.p * m.q}, acc});
  }
  if (need_x) dx = dx.view(x.sizes());
  if (need_w1 && cplx) dw1 = dw1.transpose(1, 2).contiguous();
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
    while (r % d == 0) {
      primes.push_back(d);
      r /= d;
    }
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

// The DFT matrices and twiddles, computed once per (rows, cols, N, direction, dtype, device) and
// kept in an LRU cache bounded by bytes (issue 13: an unbounded cache grew by gigabytes over
// thousands of distinct lengths). Default cap kDefaultCacheLimit; a table larger than the cap is
// used for its call only (recomputed per call). monarch_fft_cache (the op) reads the byte count,
// sets the cap and clears the cache; kernelfuse.butterfly.{monarch_fft_cache_info,
// set_monarch_fft_cache_limit, clear_monarch_fft_cache} call it. Thread-safe: one mutex around the
// map and the list; tables are computed outside the lock (two threads may compute the same table,
// the first stored one stays).
constexpr int64_t kDefaultCacheLimit = int64_t(256) << 20;  // 256 MiB

class RootsCache {
 public:
  std::optional<at::Tensor> get(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) {
      ++misses_;
      return std::nullopt;
    }
    lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
    ++hits_;
    return it->second->second;
  }
  // Stores t unless it alone exceeds the cap; evicts the least recently used entries beyond it.
  // Returns the stored tensor (an earlier one under the same key wins).
  at::Tensor put(const std::string& key, const at::Tensor& t) {
    const int64_t nb = int64_t(t.nbytes());
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) return it->second->second;
    if (nb > limit_) return t;
    lru_.emplace_front(key, t);
    index_.emplace(key, lru_.begin());
    bytes_ += nb;
    evict_locked();
    return t;
  }
  // [bytes, entries, limit, hits, misses, evictions]; limit >= 0 sets the cap first, clear empties.
  std::vector<int64_t> control(int64_t limit, bool clear) {
    std::lock_guard<std::mutex> lock(mu_);
    if (limit >= 0) limit_ = limit;
    if (clear) {
      lru_.clear();
      index_.clear();
      bytes_ = 0;
    }
    evict_locked();
    return {bytes_, int64_t(lru_.size()), limit_, hits_, misses_, evictions_};
  }

 private:
  void evict_locked() {
    while (bytes_ > limit_ && !lru_.empty()) {
      bytes_ -= int64_t(lru_.back().second.nbytes());
      index_.erase(lru_.back().first);
      lru_.pop_back();
      ++evictions_;
    }
  }
  std::mutex mu_;
  std::list<std::pair<std::string, at::Tensor>> lru_;
  std::unordered_map<std::string, std::list<std::pair<std::string, at::Tensor>>::iterator> index_;
  int64_t bytes_ = 0, limit_ = kDefaultCacheLimit, hits_ = 0, misses_ = 0, evictions_ = 0;
};

RootsCache& roots_cache() {
  static RootsCache* c = new RootsCache();  // never destroyed: no device frees after CUDA shutdown
  return *c;
}

// exp(sign 2 pi i (a b mod N) / N) for a < rows, b < cols: (rows, cols), in x's dtype and device.
at::Tensor roots(int64_t rows, int64_t cols, int64_t N, bool inverse, const at::Tensor& like) {
  const std::string key = c10::str(rows, ",", cols, ",", N, ",", inverse, ",", like.scalar_type(), ",", like.device());
  if (auto hit = roots_cache().get(key)) return *hit;
  at::Tensor t = at::empty({rows, cols, 2}, at::TensorOptions().dtype(at::kDouble));
  double* d = t.data_ptr<double>();
  const double sign = inverse ? 1.0 : -1.0;
  auto root = [&](int64_t e, double* out) {
    const double ang = sign * 2.0 * M_PI * double(e) / double(N);
    out[0] = std::cos(ang);
    out[1] = std::sin(ang);
  };
  if (rows * cols > 2 * N) {  // DFT matrices (N x N for a dense prime factor): N roots, then gathered
    std::vector<double> w(2 * N);
    for (int64_t e = 0; e < N; ++e) root(e, &w[2 * e]);
    for (int64_t a = 0; a < rows; ++a)
      for (int64_t b = 0, e = 0; b < cols; ++b, e = (e + a) % N) {
        d[(a * cols + b) * 2] = w[2 * e];
        d[(a * cols + b) * 2 + 1] = w[2 * e + 1];
      }
  } else {  // twiddles (rows cols = N entries)
    for (int64_t a = 0; a < rows; ++a)
      for (int64_t b = 0; b < cols; ++b) root((a * b) % N, &d[(a * cols + b) * 2]);
  }
  return roots_cache().put(key, at::view_as_complex(t).to(like.options().dtype(like.scalar_type())));
}

std::vector<int64_t> monarch_fft_cache(int64_t limit_bytes, bool clear) {
  KF_CHECK_ARG(limit_bytes >= -1, "limit_bytes", "expected a byte count >= 0 (or -1: keep the cap), got ", limit_bytes);
  return roots_cache().control(limit_bytes, clear);
}

at::Tensor fft_rec(const at::Tensor& x, const std::vector<int64_t>& f, size_t idx, bool inverse) {
  const int64_t M = x.size(0), N = x.size(1);
  if (idx + 1 == f.size()) return at::matmul(x, roots(N, N, N, inverse, x));
  const int64_t N1 = f[idx], N2 = N / N1;
  at::Tensor A = at::matmul(roots(N1, N1, N1, inverse, x), x.view({M, N1, N2}));  // (M, N1, N2)
  A.mul_(roots(N1, N2, N, inverse, x));
  at::Tensor B = fft_rec(A.view({M * N1, N2}), f, idx + 1, inverse);  // (M N1, N2)
  return B.view({M, N1, N2}).transpose(1, 2).reshape({M, N});
}

at::Tensor monarch_fft(const at::Tensor& x, bool inverse, c10::string_view norm) {
  KF_OP_SCOPE("monarch_fft");
  check_defined(x, "x");
  KF_CHECK_ARG(x.dim() >= 1, "x", "expected shape (..., n), got a 0-d tensor");
  KF_CHECK_ARG(x.scalar_type() == at::kComplexFloat || x.scalar_type() == at::kComplexDouble, "x",
               "expected dtype complex64 or complex128, got ", x.scalar_type());
  KF_CHECK_ARG(norm == "backward" || norm == "ortho" || norm == "forward", "norm",
               "expected 'backward', 'ortho' or "
               "'forward', got '",
               std::string(norm), "'");
  const int64_t N = x.size(-1);
  KF_CHECK_ARG(N >= 1, "x", "expected a last dimension n >= 1, got shape ", shape_str(x));
  const std::vector<int64_t> f = fft_factors(N);
  KF_CHECK_ARG(f.back() <= kMaxDenseFactor, "x", "n = ", N, " has a prime factor ", f.back(), " > ", kMaxDenseFactor,
               "; monarch_fft supports lengths whose prime factors are at most ", kMaxDenseFactor);
  double scale = 1.0;
  if (norm == "ortho")
    scale = 1.0 / std::sqrt(double(N));
  else if ((norm == "backward") == inverse)
    scale = 1.0 / double(N);
  if (x.numel() == 0) return at::empty(x.sizes(), x.options());
  const int64_t M = x.numel() / N;
#ifdef KF_DEVICE
  if (on_device(x)) {  // lengths with two factors <= 64: one fused kernel (monarch_fft_cuda.cu)
    KF_DEVICE_GUARD(x);
    at::Tensor xc = checked_contiguous(x, "x").resolve_conj().resolve_neg().view({M, N});
    at::Tensor out = checked_empty({M, N}, xc.options(), "x", "the output");
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
  const at::Tensor xc = checked_contiguous(x, "x").view({M, N});  // an expanded view's copy size-checked
  at::Tensor y = N == 1 ? xc.clone() : fft_rec(xc, f, 0, inverse);
  if (scale != 1.0) y.mul_(scale);
  return y.view(x.sizes());
}

}  // namespace

KF_CPU_LIBRARY_IMPL(m) {
  m.impl("monarch_multiply", &monarch_multiply);
  m.impl("monarch_multiply_bwd", &monarch_multiply_bwd);
  m.impl("monarch_fft", &monarch_fft);
  m.impl("monarch_fft_cache", &monarch_fft_cache);
}

// The cache control takes no tensor (no backend key to dispatch on): one kernel for every backend
// (CompositeImplicitAutograd serves the call; the CPU and device registrations make every op
// visibly registered for both backends, scripts/check_cuda_registrations.py).
#if defined(KERNELFUSE_CUDA_SIM)
TORCH_LIBRARY_IMPL(kernelfuse_sim, CompositeImplicitAutograd, m) { m.impl("monarch_fft_cache", &monarch_fft_cache); }
#else
TORCH_LIBRARY_IMPL(kernelfuse, CompositeImplicitAutograd, m) { m.impl("monarch_fft_cache", &monarch_fft_cache); }
#endif

#ifdef KF_DEVICE
KF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("monarch_multiply", &monarch_multiply);
  m.impl("monarch_multiply_bwd", &monarch_multiply_bwd);
  m.impl("monarch_fft", &monarch_fft);
  m.impl("monarch_fft_cache", &monarch_fft_cache);
}
#endif

}  // namespace kernelfuse::butterfly
