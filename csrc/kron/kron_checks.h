// Argument checks of the kron family's glue (kron_torch.cpp, grid_kernel_torch.cpp) beyond
// common/checks.h: element counts that would overflow or exceed the machine's memory (checked
// before any allocation, naming the argument that sets the size), and finite values. Kept in the
// family's folder so that a change here rebuilds only the two kron glue files.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/logical_not.h>
#include <ATen/ops/nonzero.h>
#include <c10/util/Exception.h>
#include <sys/sysinfo.h>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "../common/checks.h"
#include "../common/device.h"

namespace kernelfuse::kron {

constexpr int64_t kSizeOverflow = std::numeric_limits<int64_t>::max();

// a * b, saturating at kSizeOverflow (inputs >= 0).
inline int64_t sat_mul(int64_t a, int64_t b) {
  if (a == 0 || b == 0) return 0;
  if (a > kSizeOverflow / b) return kSizeOverflow;
  return a * b;
}

inline int64_t sat_prod(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t x : v) p = sat_mul(p, x);
  return p;
}

// Bytes a tensor on `t`'s device may plausibly take: host RAM + swap for CPU tensors; for device
// tensors (whose memory the glue does not query) 1 PiB, which only rules out the absurd.
inline double memory_limit_bytes(const at::Tensor& t) {
  if (on_device(t)) return 1125899906842624.0;
  struct sysinfo si{};
  if (sysinfo(&si) != 0) return 1e18;
  return (double(si.totalram) + double(si.totalswap)) * double(si.mem_unit);
}

inline std::string gib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / 1073741824.0);
  return buf;
}

// A non-optional tensor argument passed as None arrives as an undefined tensor.
inline void check_defined(const at::Tensor& t, const char* name) {
  KF_CHECK_ARG(t.defined(), name, "expected a tensor, got None");
}

// `numel` elements of t's dtype (kSizeOverflow: the count overflowed int64) must fit: a clear
// error naming `name` with `what` (which tensor would be that large) before the allocator sees it.
inline void check_alloc(int64_t numel, const at::Tensor& like, const char* name, const std::string& what) {
  KF_CHECK_ARG(numel != kSizeOverflow, name, what, " would have more than 2^63 elements (the sizes overflow int64)");
  const double bytes = double(numel) * double(like.element_size());
  const double lim = memory_limit_bytes(like);
  KF_CHECK_ARG(bytes <= lim, name, what, " would have ", numel, " elements (", gib(bytes), " of ", like.scalar_type(),
               "), more than the ", gib(lim), " of memory ",
               (on_device(like) ? "a device can have" : "of this machine"));
}

// Every value of t finite, or an error naming `name` with the first offending index and value.
// (One host sync on a device; callers use it where the op syncs anyway.)
inline void check_finite(const at::Tensor& t, const char* name, const char* why) {
  if (t.numel() == 0) return;
  const at::Tensor bad = at::logical_not(at::isfinite(t));
  if (!bad.any().item<bool>()) return;
  const at::Tensor idx = at::nonzero(bad)[0].cpu();
  std::string where = "[";
  for (int64_t i = 0; i < idx.numel(); ++i) where += (i ? ", " : "") + std::to_string(idx[i].item<int64_t>());
  where += "]";
  at::Tensor v = t;
  for (int64_t i = 0; i < idx.numel(); ++i) v = v.select(0, idx[i].item<int64_t>());
  KF_CHECK_ARG(false, name, "expected finite values", why, ", got ", v.item<double>(), " at ", where);
}

}  // namespace kernelfuse::kron
