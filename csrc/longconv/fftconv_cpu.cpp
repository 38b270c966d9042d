// CPU stages of the fused FFT convolution (see fftconv.h). Torch-free.
//
// Each stage is one pass over the rows of a block (OpenMP over rows): the pre-FFT stages read the
// inputs once and write the zero-padded real buffer; the post-FFT stages read the inverse
// transform and write every output of the row (skip term, gates and their gradients) in the same
// pass. The spectral stages multiply / correlate rows of complex spectra in place.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "fftconv.h"

namespace kernelfuse::longconv {
namespace {

template <typename T>
void row_stage(const FFTConvParams<T, T>& p, Stage s, int64_t r, T* __restrict R, T scale) {
  const int64_t L = p.L, n = p.n;
  const int64_t off = r * L;  // (b, h) row of the (B, H, L) tensors
  const int64_t h = r % p.H;
  const T* __restrict u = p.u + off;
  const T* __restrict pre = p.pregate ? p.pregate + off : nullptr;
  const T* __restrict post = p.postgate ? p.postgate + off : nullptr;
  const T d = p.D ? p.D[h] : T(0);
  // Skip source s[t]: u[t] (skip "input") or u[t] * pre[t] (skip "gated"; gs: there is a pregate).
  const bool gs = p.skip_gated && pre;
  switch (s) {
    case Stage::PackInput: {
      if (pre) {
        for (int64_t t = 0; t < L; ++t) R[t] = u[t] * pre[t];
      } else {
        std::memcpy(R, u, sizeof(T) * L);
      }
      std::fill(R + L, R + n, T(0));
      break;
    }
    case Stage::PackGrad: {
      const T* __restrict g = p.grad + off;
      if (post) {
        for (int64_t t = 0; t < L; ++t) R[t] = g[t] * post[t];
      } else {
        std::memcpy(R, g, sizeof(T) * L);
      }
      std::fill(R + L, R + n, T(0));
      if (p.dD_rows) {
        double acc = 0;
        if (gs) {
          for (int64_t t = 0; t < L; ++t) acc += double(R[t]) * (double(u[t]) * double(pre[t]));
        } else {
          for (int64_t t = 0; t < L; ++t) acc += double(R[t]) * double(u[t]);
        }
        p.dD_rows[r] = T(acc);
      }
      break;
    }
    case Stage::PackKernel: {  // r is a kernel row here
      const int64_t kt = p.ktaps();
      const T* __restrict k = p.k + r * kt;
      std::fill(R, R + n, T(0));
      for (int64_t m = 0; m < p.Lk; ++m) R[m] = k[m] * scale;
      if (p.mode == ConvMode::Bidirectional)
        for (int64_t j = 0; j < p.Lk; ++j) R[n - 1 - j] = k[p.Lk + j] * scale;
      break;
    }
    case Stage::UnpackOutput: {
      T* __restrict y = p.y + off;
      if (gs) {
        if (post) {
          for (int64_t t = 0; t < L; ++t) y[t] = post[t] * (R[t] + d * (u[t] * pre[t]));
        } else {
          for (int64_t t = 0; t < L; ++t) y[t] = R[t] + d * (u[t] * pre[t]);
        }
      } else if (post) {
        for (int64_t t = 0; t < L; ++t) y[t] = post[t] * (R[t] + d * u[t]);
      } else {
        for (int64_t t = 0; t < L; ++t) y[t] = R[t] + d * u[t];
      }
      break;
    }
    case Stage::UnpackPostGrad: {
      const T* __restrict g = p.grad + off;
      T* __restrict dpost = p.dpostgate + off;
      if (gs) {
        for (int64_t t = 0; t < L; ++t) dpost[t] = g[t] * (R[t] + d * (u[t] * pre[t]));
      } else {
        for (int64_t t = 0; t < L; ++t) dpost[t] = g[t] * (R[t] + d * u[t]);
      }
      break;
    }
    case Stage::UnpackInputGrad: {
      const T* __restrict g = p.grad + off;
      if (gs) {  // skip "gated": the skip's gradient joins the convolution's before the pregate
        T* __restrict du = p.du ? p.du + off : nullptr;
        T* __restrict dpre = p.dpregate ? p.dpregate + off : nullptr;
        for (int64_t t = 0; t < L; ++t) {
          const T dz = post ? g[t] * post[t] : g[t];
          const T dv = R[t] + d * dz;
          if (du) du[t] = dv * pre[t];
          if (dpre) dpre[t] = dv * u[t];
        }
        break;
      }
      if (p.du) {
        T* __restrict du = p.du + off;
        for (int64_t t = 0; t < L; ++t) {
          const T dz = post ? g[t] * post[t] : g[t];
          du[t] = (pre ? R[t] * pre[t] : R[t]) + d * dz;
        }
      }
      if (p.dpregate) {
        T* __restrict dpre = p.dpregate + off;
        for (int64_t t = 0; t < L; ++t) dpre[t] = R[t] * u[t];
      }
      break;
    }
    case Stage::GatherKernelGrad: {  // r is a kernel row here
      const int64_t kt = p.ktaps();
      T* __restrict dk = p.dk + r * kt;
      for (int64_t m = 0; m < p.Lk; ++m) dk[m] = R[m] * scale;
      if (p.mode == ConvMode::Bidirectional)
        for (int64_t j = 0; j < p.Lk; ++j) dk[p.Lk + j] = R[n - 1 - j] * scale;
      break;
    }
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
    for (int64_t j = 0; j < groups; ++j) {
      for (int64_t i = j; i < nb; i += H) {
        A* __restrict acc = K + ((row0 + i) % H - kbase) * 2 * nf;
        const A* __restrict x = X + i * 2 * nf;
        const A* __restrict y = Y + i * 2 * nf;
        for (int64_t f = 0; f < nf; ++f) {
          const A xr = x[2 * f], xi = x[2 * f + 1], yr = y[2 * f], yi = y[2 * f + 1];
          acc[2 * f] += xr * yr + xi * yi;
          acc[2 * f + 1] += xr * yi - xi * yr;
        }
      }
    }
    return;
  }
#pragma omp parallel for schedule(static) if (nb > 1 && nb * nf > 8192)
  for (int64_t i = 0; i < nb; ++i) {
    A* __restrict x = X + i * 2 * nf;
    switch (op) {
      case SpecOp::MulKernel:
      case SpecOp::MulConjKernel: {
        const A* __restrict k = K + (per_batch ? i : (row0 + i) % H - kbase) * 2 * nf;
        const A sg = op == SpecOp::MulConjKernel ? A(-1) : A(1);
        for (int64_t f = 0; f < nf; ++f) {
          const A xr = x[2 * f], xi = x[2 * f + 1], kr = k[2 * f], ki = sg * k[2 * f + 1];
          x[2 * f] = xr * kr - xi * ki;
          x[2 * f + 1] = xr * ki + xi * kr;
        }
        break;
      }
      case SpecOp::Corr: {
        const A* __restrict y = Y + i * 2 * nf;
        for (int64_t f = 0; f < nf; ++f) {
          const A xr = x[2 * f], xi = x[2 * f + 1], yr = y[2 * f], yi = y[2 * f + 1];
          x[2 * f] = xr * yr + xi * yi;
          x[2 * f + 1] = xr * yi - xi * yr;
        }
        break;
      }
      default:
        break;
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
