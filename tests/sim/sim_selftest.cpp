// Self-test of the CUDA simulator (csrc/sim): small kernels with known answers for every modelled
// feature, and kernels with deliberate bugs that the simulator must catch. Built and run by
// tests/sim/test_simulator.py: `sim_selftest NAME` runs one check and exits 0 when it behaves as
// expected (the ASan cases are expected to abort: the test checks the report instead).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/cuda_launch.cuh"

using kernelfuse::launch_kernel;

namespace {

constexpr int kN = 256;

__global__ void rotate_kernel(const int* in, int* out, bool sync) {
  KF_SHARED(int, s, [kN]);
  const int t = threadIdx.x;
  s[t] = in[blockIdx.x * kN + t];
  if (sync) __syncthreads();
  out[blockIdx.x * kN + t] = s[(t + 1) % kN];
}

__global__ void shuffle_kernel(const float* in, float* out) {
  const int t = threadIdx.x;
  float v = in[t];
  float sum = v;
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, o);
  float x = v;
  for (int o = 1; o < 32; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  const float b = __shfl_sync(0xffffffffu, v, 5);
  const float up = __shfl_up_sync(0xffffffffu, v, 3);
  const float seg = __shfl_sync(0xffffffffu, v, 0, 8);  // width 8: lane 0 of each group of 8
  const unsigned ballot = __ballot_sync(0xffffffffu, t % 3 == 0);
  const int any = __any_sync(0xffffffffu, t == 7), all = __all_sync(0xffffffffu, t < 1000);
  double dd = static_cast<double>(v);
  dd = __shfl_xor_sync(0xffffffffu, dd, 1);
  float* o = out + t * 9;
  o[0] = sum;  // lane 0: the warp's sum
  o[1] = x;    // every lane: the warp's sum
  o[2] = b;
  o[3] = up;
  o[4] = seg;
  o[5] = static_cast<float>(ballot & 0xffffu);
  o[6] = static_cast<float>(any * 2 + all);
  o[7] = static_cast<float>(dd);
  o[8] = 0.f;
}

__global__ void half_warp_shuffle_kernel(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x < 16) v = __shfl_down_sync(0xffffffffu, v, 1);  // lanes 16..31 never arrive
  out[threadIdx.x] = v;
}

__global__ void deadlock_kernel(float* out) {
  // half of the warp waits at a full-warp shuffle, the other half at __syncthreads: neither completes
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
  else __syncthreads();
}

__global__ void atomic_kernel(double* acc, int* count) {
  atomicAdd(acc, 0.5);
  atomicAdd(count, 1);
}

__global__ void dyn_smem_kernel(float* out, int n) {
  KF_DYNAMIC_SHARED(float, s);
  for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = static_cast<float>(i);
  __syncthreads();
  float acc = 0.f;
  for (int i = 0; i < n; ++i) acc += s[i];
  out[threadIdx.x] = acc;
}

__global__ void big_static_kernel(float* out) {
  KF_SHARED(float, s, [13000]);  // 52 KB: over the 48 KB static limit
  s[threadIdx.x] = 1.f;
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void poison_kernel(float* out) {
  KF_SHARED(float, s, [64]);
  out[threadIdx.x] = s[threadIdx.x];  // never written: the poison (NaN) shows
}

__global__ void oob_shared_kernel(float* out) {
  KF_SHARED(float, s, [kN]);
  s[threadIdx.x + 1] = 1.f;  // off by one: s[256] is past the array
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void oob_dynamic_kernel(float* out, int n) {
  KF_DYNAMIC_SHARED(float, s);
  s[n] = 1.f;  // one past the dynamic allocation
  out[0] = s[0];
}

__global__ void oob_global_kernel(const float* in, float* out, int n) {
  out[threadIdx.x] = in[threadIdx.x + n];  // in has n + 31 elements: thread 31 reads one past the end
}

template <class T, class LB>
__global__ void wmma_kernel(const T* a, const T* b, const float* c, float* d) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

__global__ void race_kernel(int* out, int variant) {
  KF_SHARED(int, s, [64]);
  const int t = threadIdx.x;
  if (variant == 0) {  // race: threads 0 and 40 (two warps) write s[0] in one barrier interval
    if (t == 0 || t == 40) s[0] = t + 1;
  } else if (variant == 1) {  // ordered by __syncthreads
    if (t == 0) s[0] = 1;
    __syncthreads();
    if (t == 40) s[0] = 2;
  } else {  // two lanes of one warp, ordered by __syncwarp
    if (t == 0) s[0] = 1;
    __syncwarp();
    if (t == 1) s[0] = 2;
  }
  __syncthreads();
  if (t == 0) out[0] = s[0];
}

__global__ void grid3d_kernel(int* out) {
  const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = b * 1000 + t;
}

[[noreturn]] void die(const std::string& why) {
  std::printf("FAIL: %s\n", why.c_str());
  std::exit(1);
}
void expect(bool ok, const std::string& why) {
  if (!ok) die(why);
}
// Runs f, expects a std::runtime_error whose message contains `part`.
void expect_throw(const std::function<void()>& f, const std::string& part) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    expect(std::string(e.what()).find(part) != std::string::npos, std::string("wrong message: ") + e.what());
    std::printf("  (raised as expected: %s)\n", e.what());
    return;
  }
  die("no error raised (expected one containing '" + part + "')");
}

int rotate(bool sync) {
  std::vector<int> in(2 * kN), out(2 * kN, -7);
  for (int i = 0; i < 2 * kN; ++i) in[i] = i * 3 + 1;
  launch_kernel("selftest: rotate_kernel", rotate_kernel, 2, kN, 0, nullptr, in.data(), out.data(), sync);
  int wrong = 0;
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < kN; ++t) wrong += out[b * kN + t] != in[b * kN + (t + 1) % kN];
  return wrong;
}

const std::map<std::string, std::function<void()>> kChecks = {
    {"barrier",
     [] {
       for (int s = 0; s < 3; ++s) {
         kf_sim_configure(s, 7, 1, 90);
         expect(rotate(true) == 0, "__syncthreads did not order the shared-memory write before the read");
       }
     }},
    {"missing_barrier_detected",
     [] {
       // Without the barrier the result depends on the schedule; forward and reverse both break it.
       kf_sim_configure(0, 1, 1, 90);
       const int fwd = rotate(false);
       kf_sim_configure(1, 1, 1, 90);
       const int rev = rotate(false);
       expect(fwd > 0 && rev > 0, "a missing __syncthreads went unnoticed (forward " + std::to_string(fwd) +
                                      ", reverse " + std::to_string(rev) + " wrong)");
     }},
    {"shuffles",
     [] {
       std::vector<float> in(64), out(64 * 9, -1.f);
       for (int i = 0; i < 64; ++i) in[i] = static_cast<float>(i);
       launch_kernel("selftest: shuffle_kernel", shuffle_kernel, 1, 64, 0, nullptr, in.data(), out.data());
       for (int t = 0; t < 64; ++t) {
         const int w = t / 32, l = t % 32;
         const float wsum = 32.f * (32 * w) + 31.f * 32 / 2;
         const float* o = out.data() + t * 9;
         if (l == 0) expect(o[0] == wsum, "shfl_down reduction");
         expect(o[1] == wsum, "shfl_xor all-reduce");
         expect(o[2] == in[32 * w + 5], "shfl idx");
         expect(o[3] == in[l >= 3 ? t - 3 : t], "shfl_up (lanes below delta keep their value)");
         expect(o[4] == in[32 * w + (l & ~7)], "shfl width 8");
         unsigned bal = 0;
         for (int k = 0; k < 32; ++k) bal |= ((32 * w + k) % 3 == 0 ? 1u : 0u) << k;
         expect(o[5] == static_cast<float>(bal & 0xffffu), "ballot");
         expect(o[6] == static_cast<float>((w == 0 ? 2 : 0) + 1), "any / all");
         expect(o[7] == in[t ^ 1], "double shuffle");
       }
     }},
    {"half_warp_shuffle_fails",
     [] {
       std::vector<float> out(32);
       expect_throw([&] { launch_kernel("selftest: half_warp_shuffle_kernel", half_warp_shuffle_kernel, 1, 32, 0, nullptr, out.data()); },
                    "exited");
     }},
    {"deadlock_fails",
     [] {
       std::vector<float> out(64);
       expect_throw([&] { launch_kernel("selftest: deadlock_kernel", deadlock_kernel, 1, 64, 0, nullptr, out.data()); }, "deadlock");
     }},
    {"atomics",
     [] {
       for (int workers : {1, 2}) {
         kf_sim_configure(0, 1, workers, 90);
         double acc = 0;
         int count = 0;
         launch_kernel("selftest: atomic_kernel", atomic_kernel, 37, 128, 0, nullptr, &acc, &count);
         expect(count == 37 * 128 && acc == 0.5 * 37 * 128, "atomicAdd lost updates");
       }
     }},
    {"launch_limits",
     [] {
       std::vector<float> out(1024);
       expect_throw([&] { launch_kernel("selftest: dyn_smem_kernel", dyn_smem_kernel, 1, 1025, 0, nullptr, out.data(), 0); },
                    "cudaErrorInvalidConfiguration");
       expect_throw([&] { launch_kernel("selftest: dyn_smem_kernel", dyn_smem_kernel, dim3(1, 65536), 32, 0, nullptr, out.data(), 0); },
                    "cudaErrorInvalidConfiguration");
       expect_throw([&] { launch_kernel("selftest: dyn_smem_kernel", dyn_smem_kernel, 0, 32, 0, nullptr, out.data(), 0); },
                    "cudaErrorInvalidConfiguration");
       // 64 KB of dynamic shared memory: refused until the kernel's limit is raised
       const int n = 16384;
       expect_throw([&] { launch_kernel("selftest: dyn_smem_kernel", dyn_smem_kernel, 1, 256, n * 4, nullptr, out.data(), n); },
                    "cudaErrorInvalidValue");
       kernelfuse::check_cuda(cudaFuncSetAttribute(dyn_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n * 4), "raise");
       launch_kernel("selftest: dyn_smem_kernel", dyn_smem_kernel, 1, 256, n * 4, nullptr, out.data(), n);
       float sum = 0.f;
       for (int i = 0; i < n; ++i) sum += static_cast<float>(i);
       expect(out[3] == sum, "dynamic shared memory sum");
       // over the opt-in limit of sm_90 (227 KB) and of sm_80 (163 KB)
       expect(cudaFuncSetAttribute(dyn_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 240 * 1024) ==
                  cudaErrorInvalidValue, "240 KB accepted on sm_90");
       cudaGetLastError();
       kf_sim_configure(0, 1, 1, 80);
       expect(cudaFuncSetAttribute(dyn_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024) ==
                  cudaErrorInvalidValue, "200 KB accepted on sm_80");
       cudaGetLastError();
       int v = 0;
       cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
       expect(v == 166912, "sm_80 opt-in limit");
       kf_sim_configure(0, 1, 1, 90);
       expect_throw([&] { launch_kernel("selftest: big_static_kernel", big_static_kernel, 1, 32, 0, nullptr, out.data()); },
                    "static shared memory");
     }},
    {"poison",
     [] {
       std::vector<float> out(64, 0.f);
       launch_kernel("selftest: poison_kernel", poison_kernel, 1, 64, 0, nullptr, out.data());
       for (float v : out) expect(std::isnan(v), "unwritten shared memory is not NaN");
     }},
    {"wmma",
     [] {
       for (int variant = 0; variant < 3; ++variant) {
         std::vector<float> af(256), bf(256), c(256), d(256, -1.f), ref(256);
         for (int i = 0; i < 256; ++i) {
           af[i] = static_cast<float>((i * 7) % 13) / 8.f - 0.75f;
           bf[i] = static_cast<float>((i * 5) % 11) / 4.f - 1.25f;
           c[i] = static_cast<float>(i % 9) - 4.f;
         }
         const bool colb = variant == 2;
         for (int i = 0; i < 16; ++i)
           for (int j = 0; j < 16; ++j) {
             double s = c[i * 16 + j];
             for (int k = 0; k < 16; ++k) s += double(af[i * 16 + k]) * (colb ? bf[j * 16 + k] : bf[k * 16 + j]);
             ref[i * 16 + j] = static_cast<float>(s);
           }
         if (variant == 1) {
           std::vector<__nv_bfloat16> a(256), b(256);
           for (int i = 0; i < 256; ++i) a[i] = __float2bfloat16_rn(af[i]), b[i] = __float2bfloat16_rn(bf[i]);
           launch_kernel("selftest: wmma_kernel", wmma_kernel<__nv_bfloat16, nvcuda::wmma::row_major>, 1, 32, 0, nullptr, a.data(), b.data(), c.data(), d.data());
         } else {
           std::vector<__half> a(256), b(256);
           for (int i = 0; i < 256; ++i) a[i] = __float2half_rn(af[i]), b[i] = __float2half_rn(bf[i]);
           if (colb)
             launch_kernel("selftest: wmma_kernel", wmma_kernel<__half, nvcuda::wmma::col_major>, 1, 32, 0, nullptr, a.data(), b.data(), c.data(), d.data());
           else
             launch_kernel("selftest: wmma_kernel", wmma_kernel<__half, nvcuda::wmma::row_major>, 1, 32, 0, nullptr, a.data(), b.data(), c.data(), d.data());
         }
         for (int i = 0; i < 256; ++i) expect(std::fabs(d[i] - ref[i]) <= 1e-4f * (1 + std::fabs(ref[i])), "wmma product");
       }
     }},
    {"race_check",
     [] {
       kf_sim_configure_race_check(1);
       int out = 0;
       expect_throw([&] { launch_kernel("selftest: race_kernel", race_kernel, 1, 64, 0, nullptr, &out, 0); }, "shared-memory race");
       launch_kernel("selftest: race_kernel", race_kernel, 1, 64, 0, nullptr, &out, 1);
       expect(out == 2, "barrier-ordered writes");
       launch_kernel("selftest: race_kernel", race_kernel, 1, 64, 0, nullptr, &out, 2);
       expect(out == 2, "warp-ordered writes");
       kf_sim_configure_race_check(0);
       launch_kernel("selftest: race_kernel", race_kernel, 1, 64, 0, nullptr, &out, 0);  // unchecked: runs
     }},
    {"grid3d",
     [] {
       const dim3 g(3, 2, 2), b(4, 2, 3);
       std::vector<int> out(12 * 24, -1);
       launch_kernel("selftest: grid3d_kernel", grid3d_kernel, g, b, 0, nullptr, out.data());
       for (int blk = 0; blk < 12; ++blk)
         for (int t = 0; t < 24; ++t) expect(out[blk * 24 + t] == blk * 1000 + t, "3-d grid / block indices");
     }},
    {"half_rounding",
     [] {
       // cuda_fp16.h / cuda_bf16.h host code: round to nearest even
       expect(__half2float(__float2half_rn(1.0f + 1.0f / 2048)) == 1.0f, "fp16 ties to even");
       expect(__half2float(__float2half_rn(1.0f + 3.0f / 2048)) == 1.0f + 4.0f / 2048, "fp16 ties to even (up)");
       expect(__bfloat162float(__float2bfloat16_rn(1.0f + 1.0f / 256)) == 1.0f, "bf16 ties to even");
       expect(std::isinf(__half2float(__float2half_rn(70000.f))), "fp16 overflow to inf");
     }},
    // The following must be caught by AddressSanitizer (the process aborts with its report).
    {"asan_shared_oob",
     [] {
       std::vector<float> out(kN);
       launch_kernel("selftest: oob_shared_kernel", oob_shared_kernel, 1, kN, 0, nullptr, out.data());
     }},
    {"asan_dynamic_oob",
     [] {
       std::vector<float> out(1);
       launch_kernel("selftest: oob_dynamic_kernel", oob_dynamic_kernel, 1, 32, 100 * 4, nullptr, out.data(), 100);
     }},
    {"asan_global_oob",
     [] {
       std::vector<float> in(64), out(32);
       launch_kernel("selftest: oob_global_kernel", oob_global_kernel, 1, 32, 0, nullptr, in.data(), out.data(), 64 - 31);
       std::printf("read %g\n", out[31]);
     }},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    for (const auto& c : kChecks) std::printf("%s\n", c.first.c_str());
    return 0;
  }
  auto it = kChecks.find(argv[1]);
  if (it == kChecks.end()) die(std::string("no check ") + argv[1]);
  it->second();
  std::printf("PASS %s\n", argv[1]);
  return 0;
}
