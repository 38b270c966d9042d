// kernelfuse CUDA-semantics simulator: the scheduler, shared memory, warp collectives and the CUDA
// runtime API calls our kernels and glue make (kf_sim.h, docs/cuda.md). Test-only.
// Over 600 lines on purpose: the scheduler's state (fibres, barriers, the block loop) is private
// to this one translation unit.
#include <cuda_runtime_api.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sim/kf_sim.h"

#if defined(__SANITIZE_ADDRESS__)
#define KF_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KF_SIM_ASAN 1
#endif
#endif
#ifdef KF_SIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace kf_sim {

thread_local const ThreadView* g_thread = nullptr;
thread_local const BlockView* g_blockv = nullptr;

namespace {

// ---------------------------------------------------------------------------------------------
// Configuration (environment read once, overridable by kf_sim_configure).
struct Config {
  int schedule = 0;  // 0 forward, 1 reverse, 2 random
  unsigned long long seed = 1;
  int workers = 1;
  int arch = 90;
  bool race_check = false;
  Config() {
    if (const char* s = std::getenv("KF_SIM_RACECHECK")) race_check = std::atoi(s) != 0;
    if (const char* s = std::getenv("KF_SIM_SCHEDULE")) {
      std::string v(s);
      if (v == "reverse")
        schedule = 1;
      else if (v.rfind("random", 0) == 0) {
        schedule = 2;
        if (v.size() > 7) seed = std::strtoull(v.c_str() + 7, nullptr, 10);
      }
    }
    if (const char* s = std::getenv("KF_SIM_WORKERS")) workers = std::max(1, std::atoi(s));
    if (const char* s = std::getenv("KF_SIM_ARCH")) arch = std::atoi(s) == 80 ? 80 : 90;
  }
};
Config& config() {
  static Config c;
  return c;
}
int smem_optin() { return config().arch == 80 ? 166912 : 232448; }  // 163 KB (sm_80), 227 KB (sm_90)
int sm_count() { return config().arch == 80 ? 108 : 132; }
constexpr size_t kDefaultDynamicSmem = 48 * 1024;
constexpr size_t kStaticSmemLimit = 48 * 1024;
constexpr size_t kStackBytes = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Errors: the last error (cleared by cudaGetLastError) with its detailed message.
thread_local cudaError_t t_last = cudaSuccess;
thread_local std::string t_detail;
std::mutex g_err_mu;

void set_error(cudaError_t e, const std::string& detail) {
  t_last = e;
  t_detail = detail;
  std::lock_guard<std::mutex> lk(g_err_mu);
  std::fprintf(stderr, "[kf_sim] %s\n", detail.c_str());
}

// Kernel registry for the coverage report.
struct KernelRecord {
  std::string what;
  long long launches = 0;
  std::vector<const void*> variants;
};
std::mutex g_reg_mu;
std::vector<KernelRecord> g_registry;

void record(const LaunchInfo& info) {
  std::lock_guard<std::mutex> lk(g_reg_mu);
  for (auto& r : g_registry)
    if (r.what == info.what) {
      ++r.launches;
      if (std::find(r.variants.begin(), r.variants.end(), info.kernel) == r.variants.end())
        r.variants.push_back(info.kernel);
      return;
    }
  g_registry.push_back(KernelRecord{info.what, 1, {info.kernel}});
}

// Per-kernel dynamic shared memory limit set by cudaFuncSetAttribute.
std::mutex g_attr_mu;
std::map<const void*, int> g_max_dyn;

// ---------------------------------------------------------------------------------------------
// Fibers and blocks.
enum class State { Runnable, AtBarrier, AtWarp, Done };

struct WarpReq {
  int kind = 0;  // 0..4 exchange kinds (kf_sim.h), 5 syncwarp, 6 collective callback
  unsigned mask = 0;
  uint64_t value = 0;
  int arg = 0, width = 32;
  void (*fn)(void* const*) = nullptr;
  void* cb_arg = nullptr;
  uint64_t result = 0;
};

struct Stack {
  void* base = nullptr;
  size_t size = 0;
};

}  // namespace

struct Fiber {
  ThreadView view;
  ucontext_t ctx;
  Stack stack;
  State st = State::Runnable;
  WarpReq req;
  void* fake_stack = nullptr;
};

struct Block {
  BlockView view;
  std::vector<Fiber> fibers;
  ucontext_t sched;
  Body body = nullptr;
  void* ctx = nullptr;
  size_t dyn_bytes = 0;
  void* dyn = nullptr;
  std::vector<std::pair<const void*, void*>> statics;
  size_t static_bytes = 0;
  std::string error;  // non-empty: the launch failed
  Fiber* cur = nullptr;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  void* sched_fake = nullptr;
  // race check: per shared byte, the last writer in this barrier interval and that writer's warp
  // generation (completed warp collectives of its warp), and the bytes as the running slice began
  struct Region {
    unsigned char* p;
    size_t n;
    std::vector<unsigned char> before;
    std::vector<int> writer;
    std::vector<unsigned> wgen;
  };
  std::vector<Region> regions;
  std::vector<unsigned> warp_gen;
};

namespace {
thread_local Block* t_block = nullptr;

void* poisoned_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) throw std::bad_alloc();
  std::memset(p, 0xff, bytes);  // NaN in every floating type, -1 in every integer type
  return p;
}

Stack new_stack() {
  Stack s;
  s.size = kStackBytes;
  s.base = mmap(nullptr, s.size + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (s.base == MAP_FAILED) throw std::bad_alloc();
  mprotect(s.base, 4096, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting
  s.base = static_cast<char*>(s.base) + 4096;
  return s;
}
void free_stack(Stack& s) {
  if (s.base) munmap(static_cast<char*>(s.base) - 4096, s.size + 4096);
  s.base = nullptr;
}

// Switch from the scheduler into fiber f and back.
void switch_to(Block& b, Fiber& f) {
  b.cur = &f;
  g_thread = &f.view;
#ifdef KF_SIM_ASAN
  __sanitizer_start_switch_fiber(&b.sched_fake, f.stack.base, f.stack.size);
#endif
  swapcontext(&b.sched, &f.ctx);
#ifdef KF_SIM_ASAN
  __sanitizer_finish_switch_fiber(b.sched_fake, nullptr, nullptr);
#endif
  b.cur = nullptr;
}

// From the running fiber back to the scheduler (the fiber resumes here when scheduled again).
void yield_to_scheduler(bool exiting) {
  Block& b = *t_block;
  Fiber& f = *b.cur;
#ifdef KF_SIM_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.fake_stack, b.sched_stack_bottom, b.sched_stack_size);
#endif
  swapcontext(&f.ctx, &b.sched);
#ifdef KF_SIM_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
  (void)exiting;
}

void fiber_entry() {
#ifdef KF_SIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &t_block->sched_stack_bottom, &t_block->sched_stack_size);
#endif
  Block& b = *t_block;
  b.body(b.ctx);
  b.cur->st = State::Done;
  yield_to_scheduler(true);
  std::abort();  // never resumed
}

std::string where(const Block& b) {
  char buf[160];
  const Fiber* f = b.cur;
  std::snprintf(buf, sizeof buf, "block (%u, %u, %u) thread (%u, %u, %u)", b.view.bid.x, b.view.bid.y, b.view.bid.z,
                f ? f->view.tid.x : 0u, f ? f->view.tid.y : 0u, f ? f->view.tid.z : 0u);
  return buf;
}

// Try to complete the warp collectives whose lanes have all arrived. Returns true if any did.
bool release_warps(Block& b) {
  bool any = false;
  const int n = static_cast<int>(b.fibers.size());
  for (int w0 = 0; w0 < n; w0 += 32) {
    const int lanes = std::min(32, n - w0);
    unsigned waiting = 0;
    for (int l = 0; l < lanes; ++l)
      if (b.fibers[w0 + l].st == State::AtWarp) waiting |= 1u << l;
    if (!waiting) continue;
    // lanes named by any waiting lane's mask
    unsigned named = 0;
    for (int l = 0; l < lanes; ++l)
      if (waiting >> l & 1u) named |= b.fibers[w0 + l].req.mask;
    const unsigned exist = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
    if (named & ~exist) {
      b.error = "warp collective in warp " + std::to_string(w0 / 32) + " names lanes that do not exist (mask " +
                std::to_string(named) + ", block of " + std::to_string(n) + " threads)";
      return false;
    }
    for (int l = 0; l < lanes; ++l)
      if ((named >> l & 1u) && b.fibers[w0 + l].st == State::Done) {
        b.error = "warp collective in warp " + std::to_string(w0 / 32) + ": lane " + std::to_string(l) +
                  " named in the mask has exited";
        return false;
      }
    if ((named & waiting) != named) continue;  // some named lanes are still elsewhere
    // all named lanes have arrived: they must agree on the operation
    const WarpReq& r0 = b.fibers[w0 + __builtin_ctz(named)].req;
    for (int l = 0; l < lanes; ++l) {
      if (!(named >> l & 1u)) continue;
      const WarpReq& r = b.fibers[w0 + l].req;
      if (r.kind != r0.kind || r.mask != r0.mask || r.fn != r0.fn || r.width != r0.width) {
        b.error = "divergent warp collectives in warp " + std::to_string(w0 / 32) +
                  " (lanes disagree on the operation or mask)";
        return false;
      }
    }
    if (r0.kind == 6) {
      if (named != 0xffffffffu) {
        b.error = "a full-warp collective (wmma) with fewer than 32 lanes";
        return false;
      }
      void* args[32];
      for (int l = 0; l < 32; ++l) args[l] = b.fibers[w0 + l].req.cb_arg;
      r0.fn(args);
    } else if (r0.kind <= 4) {
      uint64_t ballot = 0;
      for (int l = 0; l < lanes; ++l)
        if ((named >> l & 1u) && b.fibers[w0 + l].req.value) ballot |= 1ull << l;
      for (int l = 0; l < lanes; ++l) {
        if (!(named >> l & 1u)) continue;
        WarpReq& r = b.fibers[w0 + l].req;
        if (r.kind == 4) {
          r.result = ballot & r.mask;
          continue;
        }
        const int w = r.width;
        if (w <= 0 || w > 32 || (w & (w - 1))) {
          b.error = "warp shuffle width " + std::to_string(w) + " is not a power of two <= 32";
          return false;
        }
        const int seg = l & ~(w - 1);
        int src = l;
        switch (r.kind) {
          case 0:
            src = seg + (r.arg & (w - 1));
            break;
          case 1:
            src = (l - seg) >= r.arg ? l - r.arg : l;
            break;
          case 2:
            src = (l - seg) + r.arg < w ? l + r.arg : l;
            break;
          case 3:
            src = l ^ r.arg;
            if (src >= seg + w || src < seg) src = l;
            break;
        }
        if (src < 0 || src >= 32 || !(named >> src & 1u)) {
          // reading from a lane outside the mask is undefined in CUDA
          b.error = "warp shuffle in warp " + std::to_string(w0 / 32) + ": lane " + std::to_string(l) + " reads lane " +
                    std::to_string(src) + ", which is not in the mask";
          return false;
        }
        r.result = b.fibers[w0 + src].req.value;
      }
    }
    for (int l = 0; l < lanes; ++l)
      if (named >> l & 1u) b.fibers[w0 + l].st = State::Runnable;
    ++b.warp_gen[w0 / 32];
    any = true;
  }
  return any;
}

// Race check (KF_SIM_RACECHECK=1 / kf_sim_configure_race_check): each thread runs alone between two
// of its synchronisation points, so the bytes of shared memory it changed are found by comparing
// the shared memory before and after its slice. Two threads changing the same byte with no
// __syncthreads between them (nor a warp collective, for two lanes of one warp) is a race. Writes
// that leave a byte unchanged and read-write races are not seen here: run_schedules (different
// thread orders) catches the harmful ones of those (docs/cuda.md).
void race_add_region(Block& b, void* p, size_t n) {
  Block::Region r;
  r.p = static_cast<unsigned char*>(p);
  r.n = n;
  r.before.assign(r.p, r.p + n);
  r.writer.assign(n, -1);
  r.wgen.assign(n, 0);
  b.regions.push_back(std::move(r));
}
void race_begin_slice(Block& b) {
  for (auto& r : b.regions) std::memcpy(r.before.data(), r.p, r.n);
}
void race_end_slice(Block& b, const Fiber& f) {
  const int t = static_cast<int>(f.view.linear), w = t / 32;
  for (auto& r : b.regions) {
    if (std::memcmp(r.before.data(), r.p, r.n) == 0) continue;
    for (size_t i = 0; i < r.n; ++i) {
      if (r.before[i] == r.p[i]) continue;
      const int a = r.writer[i];
      if (a >= 0 && a != t && (a / 32 != w || r.wgen[i] == b.warp_gen[w])) {
        char buf[200];
        std::snprintf(buf, sizeof buf,
                      "shared-memory race: threads %d and %d both wrote byte %zu of a %zu-byte shared array with no "
                      "barrier between",
                      a, t, i, r.n);
        b.error = buf;
        return;
      }
      r.writer[i] = t;
      r.wgen[i] = b.warp_gen[w];
    }
  }
}
void race_barrier(Block& b) {
  for (auto& r : b.regions) std::fill(r.writer.begin(), r.writer.end(), -1);
}

void run_block(Block& b, std::vector<Stack>& stacks, std::mt19937_64& rng) {
  const int n = static_cast<int>(b.fibers.size());
  t_block = &b;
  g_blockv = &b.view;
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.st = State::Runnable;
    f.stack = stacks[i];
    f.fake_stack = nullptr;
#ifdef KF_SIM_ASAN
    __asan_unpoison_memory_region(f.stack.base, f.stack.size);  // a reused stack may hold stale redzones
#endif
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.base;
    f.ctx.uc_stack.ss_size = f.stack.size;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  b.dyn = poisoned_alloc(b.dyn_bytes);
  const bool race = config().race_check;
  b.regions.clear();
  b.warp_gen.assign((n + 31) / 32, 0);
  if (race && b.dyn_bytes) race_add_region(b, b.dyn, b.dyn_bytes);
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = config().schedule == 1 ? n - 1 - i : i;
  int done = 0;
  while (b.error.empty()) {
    if (config().schedule == 2) std::shuffle(order.begin(), order.end(), rng);
    bool ran = false;
    for (int i : order) {
      Fiber& f = b.fibers[i];
      if (f.st != State::Runnable) continue;
      if (race) race_begin_slice(b);
      switch_to(b, f);
      if (race && b.error.empty()) race_end_slice(b, f);
      ran = true;
      if (!b.error.empty()) break;
    }
    if (!b.error.empty()) break;
    done = 0;
    for (auto& f : b.fibers) done += f.st == State::Done;
    if (done == n) break;
    if (ran) continue;
    if (release_warps(b)) continue;
    if (!b.error.empty()) break;
    // block barrier: every thread that has not exited waits at __syncthreads
    int at_barrier = 0;
    for (auto& f : b.fibers) at_barrier += f.st == State::AtBarrier;
    if (at_barrier > 0 && at_barrier + done == n) {
      for (auto& f : b.fibers)
        if (f.st == State::AtBarrier) f.st = State::Runnable;
      if (race) race_barrier(b);
      continue;
    }
    int at_warp = 0;
    for (auto& f : b.fibers) at_warp += f.st == State::AtWarp;
    b.error = "deadlock: " + std::to_string(at_barrier) + " threads wait at __syncthreads, " + std::to_string(at_warp) +
              " at a warp collective, " + std::to_string(done) + " have exited (block of " + std::to_string(n) + ")";
  }
  b.regions.clear();
  std::free(b.dyn);
  b.dyn = nullptr;
  for (auto& s : b.statics) std::free(s.second);
  b.statics.clear();
  b.static_bytes = 0;
  t_block = nullptr;
  g_thread = nullptr;
  g_blockv = nullptr;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Called from kernel code (inside a fiber).
void syncthreads() {
  Block& b = *t_block;
  b.cur->st = State::AtBarrier;
  yield_to_scheduler(false);
}

static uint64_t warp_op(WarpReq r) {
  Block& b = *t_block;
  Fiber& f = *b.cur;
  const unsigned lane = f.view.linear & 31u;
  if (r.kind != 6 && !(r.mask >> lane & 1u)) fail("a warp collective called by a lane that is not in its own mask");
  f.req = r;
  f.st = State::AtWarp;
  yield_to_scheduler(false);
  return f.req.result;
}

void syncwarp(unsigned mask) {
  WarpReq r;
  r.kind = 5;
  r.mask = mask;
  warp_op(r);
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int kind, int arg, int width) {
  WarpReq r;
  r.kind = kind;
  r.mask = mask;
  r.value = value;
  r.arg = arg;
  r.width = width;
  return warp_op(r);
}

void warp_collective(void (*fn)(void* const*), void* arg) {
  WarpReq r;
  r.kind = 6;
  r.mask = 0xffffffffu;
  r.fn = fn;
  r.cb_arg = arg;
  warp_op(r);
}

void fail(const char* what) {
  Block& b = *t_block;
  b.error = std::string(what) + " at " + where(b);
  b.cur->st = State::Done;
  yield_to_scheduler(true);
  std::abort();
}

void* shared_alloc(const void* tag, size_t bytes) {
  Block& b = *t_block;
  for (auto& s : b.statics)
    if (s.first == tag) return s.second;
  b.static_bytes += bytes;
  if (b.static_bytes > kStaticSmemLimit) fail("static shared memory over 48 KB per block");
  if (b.static_bytes + b.dyn_bytes > static_cast<size_t>(smem_optin()))
    fail("static + dynamic shared memory over the device's per-block limit");
  void* p = poisoned_alloc(bytes);
  b.statics.emplace_back(tag, p);
  if (config().race_check) race_add_region(b, p, bytes);  // 'before' is the poison: the running slice's writes count
  return p;
}

void* dynamic_shared() { return t_block->dyn; }

cudaError_t run_grid(const LaunchInfo& info, Body body, void* ctx) {
  const dim3 g = info.grid, bl = info.block;
  const unsigned long long nthreads = 1ull * bl.x * bl.y * bl.z;
  auto bad = [&](cudaError_t e, const std::string& why) {
    set_error(e, std::string(info.what) + ": " + why);
    return e;
  };
  if (g.x == 0 || g.y == 0 || g.z == 0 || bl.x == 0 || bl.y == 0 || bl.z == 0)
    return bad(cudaErrorInvalidConfiguration, "a grid or block dimension is 0");
  if (bl.x > 1024 || bl.y > 1024 || bl.z > 64 || nthreads > 1024)
    return bad(cudaErrorInvalidConfiguration, "block (" + std::to_string(bl.x) + ", " + std::to_string(bl.y) + ", " +
                                                  std::to_string(bl.z) +
                                                  ") over 1024 threads or the per-dimension limits");
  if (g.x > 0x7fffffffu || g.y > 65535u || g.z > 65535u)
    return bad(cudaErrorInvalidConfiguration, "grid over the limits (2^31 - 1, 65535, 65535)");
  size_t max_dyn = kDefaultDynamicSmem;
  {
    std::lock_guard<std::mutex> lk(g_attr_mu);
    auto it = g_max_dyn.find(info.kernel);
    if (it != g_max_dyn.end()) max_dyn = static_cast<size_t>(it->second);
  }
  if (info.smem > max_dyn)
    return bad(cudaErrorInvalidValue, std::to_string(info.smem) +
                                          " bytes of dynamic shared memory over the kernel's limit of " +
                                          std::to_string(max_dyn) + " (raise it with cudaFuncSetAttribute)");
  record(info);
  const unsigned long long nblocks = 1ull * g.x * g.y * g.z;
  const int workers = static_cast<int>(std::min<unsigned long long>(std::max(1, config().workers), nblocks));
  std::mutex mu;
  std::string first_error;
  std::atomic<unsigned long long> next{0};
  auto work = [&](int wid) {
    std::vector<Stack> stacks;
    stacks.reserve(nthreads);
    for (unsigned long long i = 0; i < nthreads; ++i) stacks.push_back(new_stack());
    std::mt19937_64 rng(config().seed * 1000003ull + static_cast<unsigned long long>(wid));
    Block b;
    b.body = body;
    b.ctx = ctx;
    b.dyn_bytes = info.smem;
    b.view.bdim = bl;
    b.view.gdim = g;
    b.fibers.resize(nthreads);
    for (unsigned z = 0, i = 0; z < bl.z; ++z)
      for (unsigned y = 0; y < bl.y; ++y)
        for (unsigned x = 0; x < bl.x; ++x, ++i) b.fibers[i].view = ThreadView{uint3{x, y, z}, i};
    for (;;) {
      const unsigned long long k = next.fetch_add(1);
      if (k >= nblocks) break;
      {
        std::lock_guard<std::mutex> lk(mu);
        if (!first_error.empty()) break;
      }
      b.view.bid = uint3{static_cast<unsigned>(k % g.x), static_cast<unsigned>((k / g.x) % g.y),
                         static_cast<unsigned>(k / (1ull * g.x * g.y))};
      b.error.clear();
      run_block(b, stacks, rng);
      if (!b.error.empty()) {
        std::lock_guard<std::mutex> lk(mu);
        if (first_error.empty())
          first_error = b.error + " (block (" + std::to_string(b.view.bid.x) + ", " + std::to_string(b.view.bid.y) +
                        ", " + std::to_string(b.view.bid.z) + "))";
        break;
      }
    }
    for (auto& s : stacks) free_stack(s);
  };
  if (workers <= 1) {
    work(0);
  } else {
    std::vector<std::thread> ts;
    for (int w = 0; w < workers; ++w) ts.emplace_back(work, w);
    for (auto& t : ts) t.join();
  }
  if (!first_error.empty()) return bad(cudaErrorLaunchFailure, first_error);
  return cudaSuccess;
}

}  // namespace kf_sim

// ---------------------------------------------------------------------------------------------
// The CUDA runtime API, as far as our code uses it. Streams are in-order and the simulator runs
// each launch to completion when it is enqueued, so every call is synchronous.
using kf_sim::t_detail;
using kf_sim::t_last;

extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorInvalidDeviceFunction:
      return "cudaErrorInvalidDeviceFunction";
    default:
      return "cudaError (simulator)";
  }
}
// The simulator's messages say what failed and where; the code's generic text follows.
const char* cudaGetErrorString(cudaError_t e) {
  static thread_local std::string s;
  s = e == cudaSuccess   ? std::string("no error")
      : t_detail.empty() ? std::string(cudaGetErrorName(e))
                         : "simulator: " + t_detail;
  return s.c_str();
}

cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
  if (device != 0) return t_last = cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *v = kf_sim::smem_optin();
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *v = 48 * 1024;
      break;
    case cudaDevAttrMultiProcessorCount:
      *v = kf_sim::sm_count();
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *v = kf_sim::config().arch / 10;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *v = 0;
      break;
    case cudaDevAttrMaxThreadsPerBlock:
      *v = 1024;
      break;
    case cudaDevAttrWarpSize:
      *v = 32;
      break;
    case cudaDevAttrMaxGridDimX:
      *v = 0x7fffffff;
      break;
    case cudaDevAttrMaxGridDimY:
    case cudaDevAttrMaxGridDimZ:
      *v = 65535;
      break;
    default:
      kf_sim::set_error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not modelled by the simulator");
      return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || value > kf_sim::smem_optin()) {
    kf_sim::set_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: " + std::to_string(value) +
                                                 " bytes over the device's opt-in shared-memory limit of " +
                                                 std::to_string(kf_sim::smem_optin()));
    return cudaErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lk(kf_sim::g_attr_mu);
  kf_sim::g_max_dyn[func] = value;
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  if (n) std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  if (n) std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  if (n) std::memset(p, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  if (n) std::memset(p, v, n);
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t n) {
  *p = kf_sim::poisoned_alloc(n);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

void kf_sim_configure_race_check(int on) { kf_sim::config().race_check = on != 0; }
void kf_sim_configure(int schedule, unsigned long long seed, int workers, int arch) {
  auto& c = kf_sim::config();
  c.schedule = schedule;
  c.seed = seed;
  c.workers = std::max(1, workers);
  c.arch = arch == 80 ? 80 : 90;
}
int kf_sim_kernel_count() {
  std::lock_guard<std::mutex> lk(kf_sim::g_reg_mu);
  return static_cast<int>(kf_sim::g_registry.size());
}
const char* kf_sim_kernel_what(int i) {
  std::lock_guard<std::mutex> lk(kf_sim::g_reg_mu);
  return kf_sim::g_registry.at(i).what.c_str();
}
long long kf_sim_kernel_launches(int i) {
  std::lock_guard<std::mutex> lk(kf_sim::g_reg_mu);
  return kf_sim::g_registry.at(i).launches;
}
int kf_sim_kernel_variants(int i) {
  std::lock_guard<std::mutex> lk(kf_sim::g_reg_mu);
  return static_cast<int>(kf_sim::g_registry.at(i).variants.size());
}
void kf_sim_reset_counts() {
  std::lock_guard<std::mutex> lk(kf_sim::g_reg_mu);
  kf_sim::g_registry.clear();
}

}  // extern "C"
