// kernelfuse CUDA-semantics simulator (test-only): runs our .cu kernels on the CPU, compiled by
// g++/clang as ordinary C++ with KERNELFUSE_CUDA_SIM defined and csrc/sim/include ahead of the
// CUDA toolkit's include directory (for cuda_fp16.h / cuda_bf16.h / cuda_runtime_api.h, whose
// host code is used as is). See docs/cuda.md for what it models and what it does not.
//
// Model: a launch runs its grid block by block; the threads of a block are cooperatively
// scheduled fibers (ucontext) on one OS thread, so __syncthreads() is a real barrier and a warp
// collective (__shfl_*_sync, __ballot_sync, __syncwarp, wmma) waits for every lane its mask names
// and is computed once all have arrived. Shared memory (static and dynamic) is allocated per block
// on the heap, filled with 0xFF bytes (NaN in every floating type), so AddressSanitizer sees any
// access past it. The order in which runnable threads resume is forward, reverse or a seeded
// random permutation (KF_SIM_SCHEDULE), which turns many shared-memory races into differing
// results. Misuse that the driver or the hardware would reject (launch limits, too much shared
// memory, a warp collective with a lane missing, a deadlock at a barrier) makes the launch fail
// with a CUDA error code, as cudaGetLastError() reports it.
#pragma once
#include <cuda_runtime_api.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace kf_sim {

// ---- the running thread and block (set by the scheduler) ----
struct Fiber;
struct Block;
struct ThreadView {
  uint3 tid;
  unsigned linear;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
};
struct BlockView {
  uint3 bid;
  dim3 bdim, gdim;
};
extern thread_local const ThreadView* g_thread;
extern thread_local const BlockView* g_blockv;

// ---- collectives, implemented in sim_runtime.cpp ----
void syncthreads();
void syncwarp(unsigned mask);
// Warp exchange: each lane of `mask` publishes `value`; returns the value of the source lane of
// `kind` (0: idx, 1: up, 2: down, 3: xor) with `arg` and `width`; 4: ballot of value != 0.
uint64_t warp_exchange(unsigned mask, uint64_t value, int kind, int arg, int width);
// Warp-collective callback: every lane of the full warp publishes `arg`; once all 32 have arrived,
// fn(args) runs once with the 32 lanes' args (lane order), then every lane resumes.
void warp_collective(void (*fn)(void* const* lane_args), void* arg);
void* shared_alloc(const void* tag, size_t bytes);
void* dynamic_shared();
[[noreturn]] void fail(const char* what);  // aborts the running launch with a launch failure

template <class A>
A& shared_static(const void* tag) {
  return *static_cast<A*>(shared_alloc(tag, sizeof(A)));
}

// ---- launches ----
using Body = void (*)(void* ctx);
struct LaunchInfo {
  const char* what;
  const void* kernel;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
};
// Runs body(ctx) for every thread of every block of the grid; returns the launch's error code and
// records it as the last error.
cudaError_t run_grid(const LaunchInfo& info, Body body, void* ctx);

template <class Tuple, class... P>
struct Launch {
  void (*kernel)(P...);
  Tuple args;
  static void body(void* self) {
    auto* l = static_cast<Launch*>(self);
    std::apply(l->kernel, l->args);  // each thread gets its own copies of the parameters
  }
};

template <typename... P, typename... A>
void launch(const char* what, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            A&&... args) {
  using Tuple = std::tuple<std::decay_t<P>...>;
  Launch<Tuple, P...> l{kernel, Tuple(std::forward<A>(args)...)};
  run_grid(LaunchInfo{what, reinterpret_cast<const void*>(kernel), grid, block, smem, stream},
           &Launch<Tuple, P...>::body, &l);
}

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace kf_sim

// ---- the built-in variables ----
#define threadIdx (::kf_sim::g_thread->tid)
#define blockIdx (::kf_sim::g_blockv->bid)
#define blockDim (::kf_sim::g_blockv->bdim)
#define gridDim (::kf_sim::g_blockv->gdim)
constexpr int warpSize = 32;
#undef __launch_bounds__
#define __launch_bounds__(...)  // not modelled: the simulator has no register file

#define KF_SIM_SHARED(T, name, dims)         \
  static constexpr char kf_sim_tag_##name{}; \
  T(&name) dims = ::kf_sim::shared_static<T dims>(&kf_sim_tag_##name)
#define KF_SIM_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::kf_sim::dynamic_shared())

// ---- synchronisation and warp intrinsics ----
inline void __syncthreads() { ::kf_sim::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::kf_sim::syncwarp(mask); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::kf_sim::from_bits<T>(::kf_sim::warp_exchange(mask, ::kf_sim::to_bits(v), 0, src, width));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::kf_sim::from_bits<T>(::kf_sim::warp_exchange(mask, ::kf_sim::to_bits(v), 1, static_cast<int>(delta), width));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::kf_sim::from_bits<T>(::kf_sim::warp_exchange(mask, ::kf_sim::to_bits(v), 2, static_cast<int>(delta), width));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::kf_sim::from_bits<T>(::kf_sim::warp_exchange(mask, ::kf_sim::to_bits(v), 3, lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(::kf_sim::warp_exchange(mask, pred != 0, 4, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }
inline unsigned __activemask() { return 0xffffffffu; }

// ---- atomics (blocks may run on several OS threads: real atomics) ----
template <class T>
T kf_sim_atomic_add(T* p, T v) {
  std::atomic_ref<T> r(*p);
  if constexpr (std::is_floating_point_v<T>) {
    T old = r.load(std::memory_order_relaxed);
    while (!r.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {}
    return old;
  } else {
    return r.fetch_add(v, std::memory_order_relaxed);
  }
}
inline float atomicAdd(float* p, float v) { return kf_sim_atomic_add(p, v); }
inline double atomicAdd(double* p, double v) { return kf_sim_atomic_add(p, v); }
inline int atomicAdd(int* p, int v) { return kf_sim_atomic_add(p, v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return kf_sim_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return kf_sim_atomic_add(p, v); }
template <class T>
T kf_sim_atomic_minmax(T* p, T v, bool is_max) {
  std::atomic_ref<T> r(*p);
  T old = r.load(std::memory_order_relaxed);
  while ((is_max ? old < v : v < old) && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {}
  return old;
}
inline int atomicMax(int* p, int v) { return kf_sim_atomic_minmax(p, v, true); }
inline int atomicMin(int* p, int v) { return kf_sim_atomic_minmax(p, v, false); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return kf_sim_atomic_minmax(p, v, true); }
inline unsigned atomicMin(unsigned* p, unsigned v) { return kf_sim_atomic_minmax(p, v, false); }
template <class T>
T kf_sim_atomic_cas(T* p, T cmp, T v) {
  std::atomic_ref<T> r(*p);
  r.compare_exchange_strong(cmp, v);
  return cmp;
}
inline int atomicCAS(int* p, int c, int v) { return kf_sim_atomic_cas(p, c, v); }
inline unsigned atomicCAS(unsigned* p, unsigned c, unsigned v) { return kf_sim_atomic_cas(p, c, v); }
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long c, unsigned long long v) {
  return kf_sim_atomic_cas(p, c, v);
}
template <class T>
T atomicExch(T* p, T v) {
  return std::atomic_ref<T>(*p).exchange(v);
}

// ---- math intrinsics and device-only functions (host equivalents; the fast-math intrinsics are
// computed exactly, so the simulator does not model their reduced accuracy) ----
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float sinpif(float x) { return static_cast<float>(std::sin(M_PI * static_cast<double>(x))); }
inline float cospif(float x) { return static_cast<float>(std::cos(M_PI * static_cast<double>(x))); }
inline void sincospif(float x, float* s, float* c) {
  *s = sinpif(x);
  *c = cospif(x);
}
// sin(pi x) / cos(pi x) in double with the argument reduced exactly first (as CUDA's are accurate)
inline double kf_sim_sinpi(double x) {
  const double r = std::remainder(x, 2.0);  // exact, in [-1, 1]
  if (r == 0.0 || std::fabs(r) == 1.0) return 0.0;
  if (std::fabs(r) == 0.5) return r > 0 ? 1.0 : -1.0;
  return std::sin(M_PI * r);
}
inline double kf_sim_cospi(double x) {
  const double r = std::remainder(x, 2.0);
  if (std::fabs(r) == 0.5) return 0.0;
  if (r == 0.0) return 1.0;
  if (std::fabs(r) == 1.0) return -1.0;
  return std::cos(M_PI * r);
}
inline double sinpi(double x) { return kf_sim_sinpi(x); }
inline double cospi(double x) { return kf_sim_cospi(x); }
inline void sincospi(double x, double* s, double* c) {
  *s = kf_sim_sinpi(x);
  *c = kf_sim_cospi(x);
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
// CUDA's global min / max overloads for device code
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// The templated cudaFuncSetAttribute overload that cuda_runtime.h gives C++ code.
template <class T>
cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}

// ---- test hooks (C ABI, used from Python through ctypes) ----
extern "C" {
// schedule: 0 forward, 1 reverse, 2 random permutation per pass (seed); workers: OS threads
// over the blocks of a grid (1: deterministic); arch: 80 or 90 (shared-memory limit, SM count).
void kf_sim_configure(int schedule, unsigned long long seed, int workers, int arch);
// race check: two threads changing one shared byte between barriers fails the launch (slow)
void kf_sim_configure_race_check(int on);
int kf_sim_kernel_count();
const char* kf_sim_kernel_what(int i);
long long kf_sim_kernel_launches(int i);
int kf_sim_kernel_variants(int i);
void kf_sim_reset_counts();
}
