// CUDA fused two-factor Monarch DFT (see monarch_fft.h). Compiled for sm_80 / sm_90a; not yet run
// on a GPU. One thread block per row: the first factor reads x coalesced (threads along n2), the
// intermediate A (N1 x (N2 + 1), padded against bank conflicts) stays in shared memory, the second
// factor writes X coalesced (threads along k1). Roots of unity come from small shared tables
// (w_N1^e, w_N2^e) and sincospi for the twiddles, from exactly reduced exponents.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "monarch_fft.h"
#include "common/cuda_launch.cuh"

namespace kernelfuse::butterfly {
namespace {

constexpr int64_t kMaxFactor = 64;
constexpr int64_t kSmemBytes = 40 * 1024;

__device__ __forceinline__ void sincospi_t(float a, float* s, float* c) { sincospif(a, s, c); }
__device__ __forceinline__ void sincospi_t(double a, double* s, double* c) { sincospi(a, s, c); }

template <typename T>
__global__ void monarch_fft_kernel(MonarchFFTParams<T> p) {
  KF_DYNAMIC_SHARED(unsigned char, smem_raw);
  const int N1 = static_cast<int>(p.N1), N2 = static_cast<int>(p.N2), N = static_cast<int>(p.N);
  const int lda = N2 + 1;
  T* A = reinterpret_cast<T*>(smem_raw);  // (N1, N2 + 1) complex
  T* W1 = A + 2 * N1 * lda;               // (N1,) complex: w_N1^e
  T* W2 = W1 + 2 * N1;                    // (N2,) complex: w_N2^e
  const T sign = p.inverse ? T(1) : T(-1);
  for (int e = threadIdx.x; e < N1; e += blockDim.x) {
    T s, c;
    sincospi_t(T(2) * T(e) / T(N1), &s, &c);
    W1[2 * e] = c;
    W1[2 * e + 1] = sign * s;
  }
  for (int e = threadIdx.x; e < N2; e += blockDim.x) {
    T s, c;
    sincospi_t(T(2) * T(e) / T(N2), &s, &c);
    W2[2 * e] = c;
    W2[2 * e + 1] = sign * s;
  }
  __syncthreads();
  const int64_t row = blockIdx.x;
  const T* x = p.x + row * 2 * p.N;
  // First factor and twiddle: thread t -> (k1, n2), n2 fastest.
  for (int t = threadIdx.x; t < N; t += blockDim.x) {
    const int k1 = t / N2, n2 = t - k1 * N2;
    T re = 0, im = 0;
    for (int n1 = 0; n1 < N1; ++n1) {
      const int e = (k1 * n1) % N1;
      const T wr = W1[2 * e], wi = W1[2 * e + 1];
      const T xr = x[2 * (n1 * N2 + n2)], xi = x[2 * (n1 * N2 + n2) + 1];
      re += wr * xr - wi * xi;
      im += wr * xi + wi * xr;
    }
    T s, c;
    sincospi_t(T(2) * T((k1 * n2) % N) / T(N), &s, &c);
    s *= sign;
    A[2 * (k1 * lda + n2)] = (re * c - im * s) * p.scale;
    A[2 * (k1 * lda + n2) + 1] = (re * s + im * c) * p.scale;
  }
  __syncthreads();
  // Second factor: thread t -> (k2, k1), k1 fastest; X[k1 + N1 k2].
  T* y = p.y + row * 2 * p.N;
  for (int t = threadIdx.x; t < N; t += blockDim.x) {
    const int k2 = t / N1, k1 = t - k2 * N1;
    T re = 0, im = 0;
    for (int n2 = 0; n2 < N2; ++n2) {
      const int e = (n2 * k2) % N2;
      const T wr = W2[2 * e], wi = W2[2 * e + 1];
      const T ar = A[2 * (k1 * lda + n2)], ai = A[2 * (k1 * lda + n2) + 1];
      re += wr * ar - wi * ai;
      im += wr * ai + wi * ar;
    }
    y[2 * t] = re;
    y[2 * t + 1] = im;
  }
}

template <typename T>
int64_t smem_bytes(int64_t N1, int64_t N2) {
  return int64_t(sizeof(T)) * 2 * (N1 * (N2 + 1) + N1 + N2);
}

}  // namespace

template <typename T>
bool monarch_fft_cuda_supported(int64_t N, int64_t* N1, int64_t* N2) {
  if (N < 2) return false;
  int64_t a = 1;
  while ((a + 1) * (a + 1) <= N) ++a;
  while (N % a) --a;  // largest divisor <= sqrt(N)
  const int64_t b = N / a;
  if (a > kMaxFactor || b > kMaxFactor || smem_bytes<T>(a, b) > kSmemBytes) return false;
  *N1 = a;
  *N2 = b;
  return true;
}

template <typename T>
void launch_monarch_fft(const MonarchFFTParams<T>& p, void* stream) {
  const int threads = p.N >= 256 ? 256 : 128;
  // One block per row; gridDim.x is at most 2^31 - 1, so more rows go in several launches (a plain
  // unsigned cast of rows would drop every row past 2^32 and fail the launch from 2^31 on).
  constexpr int64_t kMaxGridX = 0x7fffffff;
  for (int64_t r0 = 0; r0 < p.rows; r0 += kMaxGridX) {
    MonarchFFTParams<T> q = p;
    q.rows = std::min<int64_t>(kMaxGridX, p.rows - r0);
    q.x = p.x + r0 * 2 * p.N;
    q.y = p.y + r0 * 2 * p.N;
    launch_kernel("monarch_fft: monarch_fft_kernel", monarch_fft_kernel<T>, static_cast<unsigned>(q.rows), threads,
                  smem_bytes<T>(p.N1, p.N2), static_cast<cudaStream_t>(stream), q);
  }
}

template bool monarch_fft_cuda_supported<float>(int64_t, int64_t*, int64_t*);
template bool monarch_fft_cuda_supported<double>(int64_t, int64_t*, int64_t*);
template void launch_monarch_fft<float>(const MonarchFFTParams<float>&, void*);
template void launch_monarch_fft<double>(const MonarchFFTParams<double>&, void*);

}  // namespace kernelfuse::butterfly
