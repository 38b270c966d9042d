// The glue's task loop, written once: run_tasks(ntasks, in_order, f) calls f(t) for every
// t < ntasks. CPU: in parallel over torch's intra-op threads (one task per thread at a time;
// OpenMP regions, ATen's FFTs and LAPACK called inside a task then run single-threaded). in_order
// (device work, one stream) or a single task: in order on the calling thread.
#pragma once
#include <ATen/Parallel.h>

#include <cstdint>

namespace kernelfuse {

template <typename F>
void run_tasks(int64_t ntasks, bool in_order, F&& f) {
  if (in_order || ntasks <= 1) {
    for (int64_t t = 0; t < ntasks; ++t) f(t);
    return;
  }
  at::parallel_for(0, ntasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) f(t);
  });
}

}  // namespace kernelfuse
