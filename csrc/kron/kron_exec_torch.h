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

#include <functional>
#include <vector>

#include "../common/device.h"
#include "../common/parallel.h"
#include "kron_runner.h"

namespace kernelfuse::kron {
namespace {

using at::Tensor;

// ATen on the data's device: GEMMs on strided views (mm_out / bmm_out: MKL on CPU, cuBLAS on
// CUDA), linalg_eigh (LAPACK / cuSOLVER), memory; CPU tasks through at::parallel_for.
template <typename T>
struct TorchKronExec final : KronStages<T> {
  at::TensorOptions opt;
  std::vector<Tensor> keep;
  explicit TorchKronExec(const Tensor& like) : opt(like.options()) {
    this->device = on_device(like);
#ifdef KF_DEVICE
    if (this->device) this->stream = device_stream();
#endif
  }
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
    keep.push_back(at::empty({count}, opt));
    return keep.back().template mutable_data_ptr<T>();
  }
  void copy2d(int64_t rows, int64_t cols, MatView<T> src, T* dst) override {
    at::from_blob(dst, {rows, cols}, opt).copy_(view(src, 1, rows, cols)[0]);
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
