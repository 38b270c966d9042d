// Allocation with a size check that names the argument (issue 13): used by the glue of the
// random-feature ops and ssm_kernel. Kept out of checks.h so that adding it recompiles only the
// files that use it.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "checks.h"

namespace kernelfuse {

// A fresh tensor whose size an argument sets (an output, a scratch buffer, a contiguous copy of an
// expanded input): a ValueError naming `name` and saying what was being allocated, instead of the
// allocator's "can't allocate memory" or an overflowed size, when the byte count does not fit in
// int64 or the allocator refuses it.
inline at::Tensor checked_empty(c10::IntArrayRef sizes, const at::TensorOptions& opts, const char* name,
                                const char* what) {
  int64_t n = 1;
  bool overflow = false;
  for (const int64_t s : sizes) {
    KF_CHECK_ARG(s >= 0, name, what, " would have a negative size ", sizes);
    overflow = overflow || __builtin_mul_overflow(n, s, &n);
  }
  int64_t bytes = 0;
  overflow = overflow || __builtin_mul_overflow(n, static_cast<int64_t>(opts.dtype().itemsize()), &bytes);
  KF_CHECK_ARG(!overflow, name, "too large: ", what, " of shape ", sizes, " would need more than 2^63 bytes");
  try {
    return at::empty(sizes, opts);
  } catch (const c10::Error& e) {
    KF_CHECK_ARG(false, name, "too large: ", what, " of shape ", sizes, " (", bytes, " bytes of ", opts.dtype().name(),
                 ") could not be allocated on ", opts.device(), ": ", e.what_without_backtrace());
  }
  return at::Tensor();
}

// t itself when contiguous, else a contiguous copy allocated with checked_empty (an expanded
// input's copy can be far larger than its storage).
inline at::Tensor checked_contiguous(const at::Tensor& t, const char* name) {
  if (t.is_contiguous()) return t;
  at::Tensor c = checked_empty(t.sizes(), t.options(), name, "a contiguous copy of the argument");
  c.copy_(t);
  return c;
}

// rows_contiguous (checks.h) with the copy, when one is needed, allocated by checked_empty.
inline at::Tensor checked_rows_contiguous(const at::Tensor& t, const char* name) {
  return has_contiguous_rows(t) ? t : checked_contiguous(t, name);
}

}  // namespace kernelfuse
