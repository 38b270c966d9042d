// CPU stages of the fused FFT convolution (see fftconv.h). Torch-free.
//
// Each stage is one pass over the rows of a block (OpenMP over rows): the pre-FFT stages read the
// inputs once and write the zero-padded real buffer; the post-FFT stages read the inverse
// transform and write every output of the row (skip term, gates and their gradients) in the same
// pass. One function per stage over one row (Row: the row's inputs, read once); row_stage picks
// it, fftconv_stage_cpu walks the rows of the block. The spectral stages multiply / correlate
// rows of complex spectra in place (mul_row, corr_row, corr_acc_row).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "fftconv.h"

namespace kernelfuse::longconv {
namespace {

// One (b, h) row r of the (B, H, L) tensors as the row stages read it.
template <typename T>
struct Row {
  int64_t r, L, n, off;
  const T* __restrict u;
  const T* __restrict pre;   // null: no pregate
  const T* __restrict post;  // null: no postgate
  T d;                       // D[h], 0 without D
  bool gs;                   // skip source u * pre (skip "gated" with a pregate), else u
  Row(const FFTConvParams<T, T>& p, int64_t row)
      : r(row),
        L(p.L),
        n(p.n),
        off(row * p.L),
        u(p.u + off),
        pre(p.pregate ? p.pregate + off : nullptr),
        post(p.postgate ? p.postgate + off : nullptr),
        d(p.D ? p.D[row % p.H] : T(0)),
        gs(p.skip_gated && pre) {}
};

// PackInput: R = u * pre (t < L), 0 after.
template <typename T>
void pack_input(const Row<T>& w, T* __restrict R) {
  if (w.pre) {
    for (int64_t t = 0; t < w.L; ++t) R[t] = w.u[t] * w.pre[t];
  } else {
    std::memcpy(R, w.u, sizeof(T) * w.L);
  }
  std::fill(R + w.L, R + w.n, T(0));
}

// PackGrad: R = dz = grad * post (t < L), 0 after; dD_rows[r] = sum_t dz * s (in double).
template <typename T>
void pack_grad(const FFTConvParams<T, T>& p, const Row<T>& w, T* __restrict R) {
  const T* __restrict g = p.grad + w.off;
  if (w.post) {
    for (int64_t t = 0; t < w.L; ++t) R[t] = g[t] * w.post[t];
  } else {
    std::memcpy(R, g, sizeof(T) * w.L);
  }
  std::fill(R + w.L, R + w.n, T(0));
  if (!p.dD_rows) return;
  double acc = 0;
  if (w.gs) {
    for (int64_t t = 0; t < w.L; ++t) acc += double(R[t]) * (double(w.u[t]) * double(w.pre[t]));
  } else {
    for (int64_t t = 0; t < w.L; ++t) acc += double(R[t]) * double(w.u[t]);
  }
  p.dD_rows[w.r] = T(acc);
}

// PackKernel (r a kernel row): R = kk * scale, the padded kernel of fftconv.h.
template <typename T>
void pack_kernel(const FFTConvParams<T, T>& p, int64_t r, T* __restrict R, T scale) {
  const int64_t n = p.n;
  const T* __restrict k = p.k + r * p.ktaps();
  std::fill(R, R + n, T(0));
  for (int64_t m = 0; m < p.Lk; ++m) R[m] = k[m] * scale;
  if (p.mode == ConvMode::Bidirectional)
    for (int64_t j = 0; j < p.Lk; ++j) R[n - 1 - j] = k[p.Lk + j] * scale;
}

// GatherKernelGrad (r a kernel row): dk = the taps of R (the inverse of pack_kernel's layout) * scale.
template <typename T>
void gather_kernel_grad(const FFTConvParams<T, T>& p, int64_t r, const T* __restrict R, T scale) {
  T* __restrict dk = p.dk + r * p.ktaps();
  for (int64_t m = 0; m < p.Lk; ++m) dk[m] = R[m] * scale;
  if (p.mode == ConvMode::Bidirectional)
    for (int64_t j = 0; j < p.Lk; ++j) dk[p.Lk + j] = R[p.n - 1 - j] * scale;
}

// UnpackOutput: y = post * (R + d s).
template <typename T>
void unpack_output(const FFTConvParams<T, T>& p, const Row<T>& w, const T* __restrict R) {
  T* __restrict y = p.y + w.off;
  const T* __restrict u = w.u;
  const T* __restrict pre = w.pre;
  const T* __restrict post = w.post;
  const T d = w.d;
  if (w.gs) {
    if (post) {
      for (int64_t t = 0; t < w.L; ++t) y[t] = post[t] * (R[t] + d * (u[t] * pre[t]));
    } else {
      for (int64_t t = 0; t < w.L; ++t) y[t] = R[t] + d * (u[t] * pre[t]);
    }
  } else if (post) {
    for (int64_t t = 0; t < w.L; ++t) y[t] = post[t] * (R[t] + d * u[t]);
  } else {
    for (int64_t t = 0; t < w.L; ++t) y[t] = R[t] + d * u[t];
  }
}

// UnpackPostGrad: dpostgate = grad * (R + d s).
template <typename T>
void unpack_post_grad(const FFTConvParams<T, T>& p, const Row<T>& w, const T* __restrict R) {
  const T* __restrict g = p.grad + w.off;
  T* __restrict dpost = p.dpostgate + w.off;
  const T* __restrict u = w.u;
  const T* __restrict pre = w.pre;
  const T d = w.d;
  if (w.gs) {
    for (int64_t t = 0; t < w.L; ++t) dpost[t] = g[t] * (R[t] + d * (u[t] * pre[t]));
  } else {
    for (int64_t t = 0; t < w.L; ++t) dpost[t] = g[t] * (R[t] + d * u[t]);
  }
}

// UnpackInputGrad, skip "gated": the skip's gradient joins the convolution's before the pregate:
// dv = R + d dz, du = dv * pre, dpregate = dv * u.
template <typename T>
void unpack_input_grad_gated(const FFTConvParams<T, T>& p, const Row<T>& w, const T* __restrict R) {
  const T* __restrict g = p.grad + w.off;
  T* __restrict du = p.du ? p.du + w.off : nullptr;
  T* __restrict dpre = p.dpregate ? p.dpregate + w.off : nullptr;
  const T* __restrict u = w.u;
  const T* __restrict pre = w.pre;
  const T* __restrict post = w.post;
  const T d = w.d;
  for (int64_t t = 0; t < w.L; ++t) {
    const T dz = post ? g[t] * post[t] : g[t];
    const T dv = R[t] + d * dz;
    if (du) du[t] = dv * pre[t];
    if (dpre) dpre[t] = dv * u[t];
  }
}

// UnpackInputGrad, skip "input": du = R * pre + d dz, dpregate = R * u.
template <typename T>
void unpack_input_grad(const FFTConvParams<T, T>& p, const Row<T>& w, const T* __restrict R) {
  if (w.gs) return unpack_input_grad_gated(p, w, R);
  const T* __restrict g = p.grad + w.off;
  const T* __restrict u = w.u;
  const T* __restrict pre = w.pre;
  const T* __restrict post = w.post;
  const T d = w.d;
  if (p.du) {
    T* __restrict du = p.du + w.off;
    for (int64_t t = 0; t < w.L; ++t) {
      const T dz = post ? g[t] * post[t] : g[t];
      du[t] = (pre ? R[t] * pre[t] : R[t]) + d * dz;
    }
  }
  if (p.dpregate) {
    T* __restrict dpre = p.dpregate + w.off;
    for (int64_t t = 0; t < w.L; ++t) dpre[t] = R[t] * u[t];
  }
}

template <typename T>
void row_stage(const FFTConvParams<T, T>& p, Stage s, int64_t r, T* __restrict R, T scale) {
  switch (s) {
    case Stage::PackKernel:
      return pack_kernel(p, r, R, scale);
    case Stage::GatherKernelGrad:
      return gather_kernel_grad(p, r, R, scale);
    default:
      break;
  }
  const Row<T> w(p, r);
  switch (s) {
    case Stage::PackInput:
      return pack_input(w, R);
    case Stage::PackGrad:
      return pack_grad(p, w, R);
    case Stage::UnpackOutput:
      return unpack_output(p, w, R);
    case Stage::UnpackPostGrad:
      return unpack_post_grad(p, w, R);
    case Stage::UnpackInputGrad:
      return unpack_input_grad(p, w, R);
    default:
      return;
  }
}

// One spectral row: x *= k (sg = 1) or x *= conj(k) (sg = -1).
template <typename A>
void mul_row(A* __restrict x, const A* __restrict k, A sg, int64_t nf) {
  for (int64_t f = 0; f < nf; ++f) {
    const A xr = x[2 * f], xi = x[2 * f + 1], kr = k[2 * f], ki = sg * k[2 * f + 1];
    x[2 * f] = xr * kr - xi * ki;
    x[2 * f + 1] = xr * ki + xi * kr;
  }
}

// One spectral row of conj(x) * y, added into the kernel accumulator row acc.
template <typename A>
void corr_acc_row(const A* __restrict x, const A* __restrict y, A* __restrict acc, int64_t nf) {
  for (int64_t f = 0; f < nf; ++f) {
    const A xr = x[2 * f], xi = x[2 * f + 1], yr = y[2 * f], yi = y[2 * f + 1];
    acc[2 * f] += xr * yr + xi * yi;
    acc[2 * f + 1] += xr * yi - xi * yr;
  }
}

// One spectral row: x = conj(x) * y.
template <typename A>
void corr_row(A* __restrict x, const A* __restrict y, int64_t nf) {
  for (int64_t f = 0; f < nf; ++f) {
    const A xr = x[2 * f], xi = x[2 * f + 1], yr = y[2 * f], yi = y[2 * f + 1];
    x[2 * f] = xr * yr + xi * yi;
    x[2 * f + 1] = xr * yi - xi * yr;
  }
}

}  // namespace

template <typename T>
void fftconv_stage_cpu(const FFTConvParams<T, T>& p, Stage s, int64_t row0, int64_t nb, T* R, T scale) {
  const int64_t n = p.n;
#pragma omp parallel for schedule(static) if (nb > 1 && nb * n > 16384)
  for (int64_t i = 0; i < nb; ++i) row_stage(p, s, row0 + i, R + i * n, scale);
}

template <typename A>
void fftconv_spectral_cpu(SpecOp op, int64_t row0, int64_t nb, int64_t nf, int64_t H, int64_t kbase, bool per_batch,
                          A* X, const A* Y, A* K) {
  if (op == SpecOp::CorrAccumulate) {
    // Rows i and i + H share a kernel row: thread j owns the rows i = j (mod H), so no two
    // threads add into the same accumulator row.
    const int64_t groups = std::min(nb, H);
#pragma omp parallel for schedule(static) if (groups > 1 && nb * nf > 8192)
    for (int64_t j = 0; j < groups; ++j)
      for (int64_t i = j; i < nb; i += H)
        corr_acc_row(X + i * 2 * nf, Y + i * 2 * nf, K + ((row0 + i) % H - kbase) * 2 * nf, nf);
    return;
  }
#pragma omp parallel for schedule(static) if (nb > 1 && nb * nf > 8192)
  for (int64_t i = 0; i < nb; ++i) {
    A* x = X + i * 2 * nf;
    if (op == SpecOp::Corr) {
      corr_row(x, Y + i * 2 * nf, nf);
    } else {
      const A* k = K + (per_batch ? i : (row0 + i) % H - kbase) * 2 * nf;
      mul_row(x, k, op == SpecOp::MulConjKernel ? A(-1) : A(1), nf);
    }
  }
}

template void fftconv_stage_cpu<float>(const FFTConvParams<float, float>&, Stage, int64_t, int64_t, float*, float);
template void fftconv_stage_cpu<double>(const FFTConvParams<double, double>&, Stage, int64_t, int64_t, double*, double);
template void fftconv_spectral_cpu<float>(SpecOp, int64_t, int64_t, int64_t, int64_t, int64_t, bool, float*,
                                          const float*, float*);
template void fftconv_spectral_cpu<double>(SpecOp, int64_t, int64_t, int64_t, int64_t, int64_t, bool, double*,
                                           const double*, double*);

}  // namespace kernelfuse::longconv
