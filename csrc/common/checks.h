// Argument checks for the torch glue: every message names the argument and shows what was
// expected and what was given.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

#include "config.h"

namespace kernelfuse {

inline std::string shape_str(const at::Tensor& t) { return c10::str(t.sizes()); }

// One message style for every error (C++ and Python alike):
//   kernelfuse.<op>: argument '<name>': expected ..., got ...
// <op> is the public name (the op, or the Python function / class). The C++ op entry points name
// themselves with KF_OP_SCOPE("fftconv") on their first line; KF_CHECK_ARG then prefixes that name
// (code outside an op scope gets "kernelfuse: ").
inline const char*& current_op_name() {
  thread_local const char* name = nullptr;
  return name;
}
struct OpScope {
  const char* prev;
  explicit OpScope(const char* name) : prev(current_op_name()) { current_op_name() = name; }
  ~OpScope() { current_op_name() = prev; }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;
};
#define KF_OP_SCOPE(name) const ::kernelfuse::OpScope kf_op_scope_(name)
inline std::string error_prefix() {
  const char* op = current_op_name();
  return op ? std::string("kernelfuse.") + op + ": " : std::string("kernelfuse: ");
}

#define KF_CHECK_ARG(cond, name, ...) \
  TORCH_CHECK_VALUE(cond, ::kernelfuse::error_prefix(), "argument '", name, "': ", __VA_ARGS__)

inline void check_float_dtype(const at::Tensor& t, const char* name, bool allow_half) {
  const auto st = t.scalar_type();
  const bool ok = st == at::kFloat || st == at::kDouble || (allow_half && (st == at::kHalf || st == at::kBFloat16));
  KF_CHECK_ARG(ok, name, "expected dtype float32 or float64", (allow_half ? " (or float16/bfloat16 on CUDA)" : ""),
               ", got ", t.scalar_type(), " on ", t.device());
}

inline void check_same_dtype(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  KF_CHECK_ARG(t.scalar_type() == ref.scalar_type(), name, "expected dtype ", ref.scalar_type(), " (the dtype of '",
               ref_name, "'), got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  KF_CHECK_ARG(t.device() == ref.device(), name, "expected a tensor on ", ref.device(), " (the device of '", ref_name,
               "'), got one on ", t.device());
}

// A required Tensor argument given as None (an undefined tensor) from a raw op call.
inline void check_defined(const at::Tensor& t, const char* name) {
  KF_CHECK_ARG(t.defined(), name, "expected a Tensor, got None");
}

// Whether t's rows are contiguous (last dim stride 1, rows packed); any batch stride is allowed.
inline bool has_contiguous_rows(const at::Tensor& t) {
  const int64_t nd = t.dim();
  if (nd == 0) return t.is_contiguous();
  bool ok = t.stride(nd - 1) == 1 || t.size(nd - 1) <= 1;
  if (nd >= 2) ok = ok && (t.stride(nd - 2) == t.size(nd - 1) || t.size(nd - 2) <= 1);
  return ok;
}

// Rows contiguous (last dim stride 1, rows packed); any batch stride is kept.
inline at::Tensor rows_contiguous(const at::Tensor& t) { return has_contiguous_rows(t) ? t : t.contiguous(); }

// KERNELFUSE_POISON=1 (common/config.h): fill fresh outputs with NaN before the kernels run (tests
// use it to catch elements a kernel leaves unwritten).
inline bool poison_outputs() { return config().poison; }

}  // namespace kernelfuse
