// The kron runner's interfaces (kron_runner.h) filled in with ATen, for kron_torch.cpp only (a
// torch glue header: included by that one translation unit).
#pragma once
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/linalg_eigh.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <limits>
#include <vector>

#include "../common/checks.h"
#include "../common/device.h"
#include "../common/parallel.h"
#include "kron_runner.h"

namespace kernelfuse::kron {
namespace {

using at::Tensor;

// CPU scratch kept between calls: one block per thread, handed to one exec at a time and used as
// a stack (the runner's mark / release), grown to the largest scratch a call of that thread has
// needed, up to kArenaMaxBytes (beyond that, or while another exec holds it, at::empty as on a
// device). Why: fresh scratch pages per call were the measured run-to-run variance of the CPU ops.
// Whether glibc keeps a freed buffer for the next call or returns it to the system (the next call
// then faults and zeroes every page again) depends on the process's heap state: kron_matmul
// 3 x 64^3 with B = 4 took 14-18 ms (0-1000 page faults per call) or 23-27 ms (4064 faults per
// call: out and both 8 MB ping-pong buffers) in different processes of the same build (docs/kron.md).
constexpr int64_t kArenaMaxBytes = int64_t(128) << 20;

struct CpuArena {
  void* p = nullptr;
  int64_t bytes = 0, used = 0, want = 0;
  bool busy = false;
  ~CpuArena() { std::free(p); }
  void reserve() {  // between calls: grow to the largest need seen
    if (want <= bytes || want > kArenaMaxBytes) return;
    std::free(p);
    p = std::aligned_alloc(64, size_t(want));
    bytes = p ? want : 0;
  }
};

inline CpuArena& cpu_arena() {
  thread_local CpuArena a;
  return a;
}

// ATen on the data's device: GEMMs on strided views (mm_out / bmm_out: MKL on CPU, cuBLAS on
// CUDA), linalg_eigh (LAPACK / cuSOLVER), memory (a stack: release(m) frees what came after
// mark() m; CPU scratch from the thread's arena, else tensors, on a device to the stream's order
// by the caching allocator); CPU tasks through at::parallel_for.
template <typename T>
struct TorchKronExec final : KronStages<T> {
  at::TensorOptions opt;
  std::vector<Tensor> keep;
  struct Entry {
    int64_t arena_used;  // the arena's fill before this allocation
    size_t kept;         // keep.size() before it
    int64_t live;        // scratch bytes live before it
  };
  std::vector<Entry> stack;
  CpuArena* arena = nullptr;  // CPU: the thread's arena, when this exec holds it
  int64_t live = 0, peak = 0;
  explicit TorchKronExec(const Tensor& like) : opt(like.options()) {
    this->device = on_device(like);
#ifdef KF_DEVICE
    if (this->device) this->stream = device_stream();
#endif
    if (!this->device && !cpu_arena().busy) {
      arena = &cpu_arena();
      arena->busy = true;
      arena->reserve();
    }
  }
  ~TorchKronExec() override {
    if (!arena) return;
    arena->want = std::max(arena->want, peak);
    arena->used = 0;
    arena->busy = false;
  }
  TorchKronExec(const TorchKronExec&) = delete;
  TorchKronExec& operator=(const TorchKronExec&) = delete;
  Tensor view(MatView<T> v, int64_t batch, int64_t rows, int64_t cols) const {
    return at::from_blob(const_cast<T*>(v.p), {batch, rows, cols}, {v.bs, v.rs, v.cs}, opt);
  }
  Tensor flat(T* x, int64_t count) const { return at::from_blob(x, {count}, opt); }
  void gemm(int64_t batch, int64_t m, int64_t n, int64_t k, MatView<T> A, MatView<T> B, T* C) override {
    Tensor c = at::from_blob(C, {batch, m, n}, opt);
    if (batch == 1) {
      Tensor c2 = c[0];
      at::mm_out(c2, view(A, 1, m, k)[0], view(B, 1, k, n)[0]);
    } else if (A.bs == 0) {  // one matrix for the whole batch (a mode product's M): broadcast by matmul
      at::matmul_out(c, view(A, 1, m, k)[0], view(B, batch, k, n));
    } else {
      at::bmm_out(c, view(A, batch, m, k), view(B, batch, k, n));
    }
  }
  T* alloc(int64_t count) override {
    const int64_t bytes = (count * int64_t(sizeof(T)) + 63) / 64 * 64;
    stack.push_back({arena ? arena->used : 0, keep.size(), live});
    live += bytes;
    peak = std::max(peak, live);
    T* p = nullptr;
    if (arena && arena->used + bytes <= arena->bytes) {
      p = reinterpret_cast<T*>(static_cast<char*>(arena->p) + arena->used);
      arena->used += bytes;
    } else {
      keep.push_back(at::empty({count}, opt));
      p = keep.back().template mutable_data_ptr<T>();
    }
    if (poison_outputs()) flat(p, count).fill_(std::numeric_limits<double>::quiet_NaN());
    return p;
  }
  double* alloc_acc(int64_t count) override {
    stack.push_back({arena ? arena->used : 0, keep.size(), live});
    keep.push_back(at::zeros({count}, opt.dtype(at::kDouble)));
    return keep.back().template mutable_data_ptr<double>();
  }
  size_t mark() const override { return stack.size(); }
  void release(size_t m) override {
    if (m >= stack.size()) return;
    if (arena) arena->used = stack[m].arena_used;
    keep.resize(stack[m].kept);
    live = stack[m].live;
    stack.resize(m);
  }
  void copy(int64_t batch, int64_t rows, int64_t cols, MatView<T> src, T* dst) override {
    at::from_blob(dst, {batch, rows, cols}, opt).copy_(view(src, batch, rows, cols));
  }
  void zero(T* x, int64_t count) override { flat(x, count).zero_(); }
  void square(T* x, int64_t count) override { flat(x, count).square_(); }
  void sub(const T* a, const T* b, T* out, int64_t count) override {
    Tensor o = flat(out, count);
    at::sub_out(o, flat(const_cast<T*>(a), count), flat(const_cast<T*>(b), count));
  }
  void eigh(int64_t n, MatView<T> A, T* lam, T* Q) override {
    const Tensor f = view(A, 1, n, n)[0];
    auto [l, q] = at::linalg_eigh((f + f.t()) * 0.5, "L");
    flat(lam, n).copy_(l);
    at::from_blob(Q, {n, n}, opt).copy_(q);
  }
  void run_tasks(int64_t ntasks, const std::function<void(int64_t)>& task) override {
    kernelfuse::run_tasks(ntasks, this->device, task);
  }
};

template <typename T>
KronMat<T> kmat(const Tensor& m, bool transpose) {  // the applied matrix: m or m^T
  if (!m.defined()) return {};
  KronMat<T> k{m.template const_data_ptr<T>(), m.size(0), m.size(1), m.stride(0), m.stride(1)};
  return transpose ? k.t() : k;
}

}  // namespace
}  // namespace kernelfuse::kron
