// Dtype dispatch for the torch glue, written once:
//   Storage<S>::type / ::acc   the kernels' storage type of an ATen scalar type S and its compute
//                              type (at::Half -> __half with float compute on the device)
//   in_ptr<S>(t), out_ptr<S>(t)  t's data as kernel storage pointers (null for an undefined t)
//   dispatch_float(t, f)        f.template operator()<S>() for S in {float, double}
//   dispatch_float_half(t, f)   the same plus at::Half and at::BFloat16
// Both make t's device current for the call when t is a CUDA tensor (a CPU tensor gets no guard:
// a CUDAGuard on a CPU device throws).
#pragma once
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>

#include "device.h"

#ifdef KF_DEVICE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace kernelfuse {

template <typename S>
struct Storage {
  using type = S;
  using acc = S;
};
#ifdef KF_DEVICE
template <>
struct Storage<at::Half> {
  using type = __half;
  using acc = float;
};
template <>
struct Storage<at::BFloat16> {
  using type = __nv_bfloat16;
  using acc = float;
};
#endif
template <typename S>
using storage_t = typename Storage<S>::type;

template <typename S>
const storage_t<S>* in_ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const storage_t<S>*>(t.const_data_ptr<S>()) : nullptr;
}
template <typename S>
storage_t<S>* out_ptr(at::Tensor& t) {
  return t.defined() ? reinterpret_cast<storage_t<S>*>(t.mutable_data_ptr<S>()) : nullptr;
}

template <typename F>
void dispatch_float(const at::Tensor& t, F&& f) {
  c10::OptionalDeviceGuard guard;
  if (t.is_cuda()) guard.reset_device(t.device());
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "kernelfuse", [&] { f.template operator()<scalar_t>(); });
}

template <typename F>
void dispatch_float_half(const at::Tensor& t, F&& f) {
  c10::OptionalDeviceGuard guard;
  if (t.is_cuda()) guard.reset_device(t.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "kernelfuse",
                                  [&] { f.template operator()<scalar_t>(); });
}

}  // namespace kernelfuse
