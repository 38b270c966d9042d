// MKL DFTI batched real FFTs found at run time (see mkl_fft.h). Torch-free.
#include <dlfcn.h>

#include <cstring>

#include <cstdint>
#include <type_traits>
#include <map>
#include <tuple>

#include "mkl/mkl_symbols.h"
#include "mkl/mkl_fft.h"

namespace kernelfuse::mkl {
namespace {

// DFTI constants (mkl_dfti.h).
constexpr long kNumberOfTransforms = 7, kConjEvenStorage = 10, kPlacement = 11, kInputDistance = 14,
               kOutputDistance = 15, kThreadLimit = 27;
constexpr long kReal = 33, kComplexComplex = 39, kNotInplace = 44;

using Handle = void*;
using CreateFn = long (*)(Handle*, int, long);
using SetFn = long (*)(Handle, int, ...);
using CommitFn = long (*)(Handle);
using ComputeFn = long (*)(Handle, void*, ...);
using FreeFn = long (*)(Handle*);

struct Api {
  CreateFn create_s = nullptr, create_d = nullptr;
  SetFn set = nullptr;
  CommitFn commit = nullptr;
  ComputeFn fwd = nullptr, bwd = nullptr;
  FreeFn free_ = nullptr;
  bool ok = false;
  Api() {
    void* h = mkl_handle_with("DftiCreateDescriptor_s_1d");
    if (!h) return;
    create_s = reinterpret_cast<CreateFn>(dlsym(h, "DftiCreateDescriptor_s_1d"));
    create_d = reinterpret_cast<CreateFn>(dlsym(h, "DftiCreateDescriptor_d_1d"));
    set = reinterpret_cast<SetFn>(dlsym(h, "DftiSetValue"));
    commit = reinterpret_cast<CommitFn>(dlsym(h, "DftiCommitDescriptor"));
    fwd = reinterpret_cast<ComputeFn>(dlsym(h, "DftiComputeForward"));
    bwd = reinterpret_cast<ComputeFn>(dlsym(h, "DftiComputeBackward"));
    free_ = reinterpret_cast<FreeFn>(dlsym(h, "DftiFreeDescriptor"));
    ok = create_s && create_d && set && commit && fwd && bwd && free_;
  }
};

const Api& api() {
  static const Api a;
  return a;
}

// Per-thread plan cache: (n, rows, direction, precision) -> committed descriptor.
// The key is the tuple itself (not a packed 64-bit word): sizes of any magnitude never collide.
struct Cache {
  std::map<std::tuple<int64_t, int64_t, bool, bool>, Handle> plans;
  Handle get(int64_t n, int64_t rows, bool forward, bool dbl) {
    const auto key = std::make_tuple(n, rows, forward, dbl);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    const Api& a = api();
    if (plans.size() >= 64) {  // bounded: drop every plan of this thread
      for (auto& kv : plans) a.free_(&kv.second);
      plans.clear();
    }
    Handle h = nullptr;
    const long nf = long(n / 2 + 1);
    long st = (dbl ? a.create_d : a.create_s)(&h, int(kReal), long(n));
    if (st != 0 || !h) return nullptr;
    st |= a.set(h, int(kPlacement), kNotInplace);
    st |= a.set(h, int(kConjEvenStorage), kComplexComplex);
    st |= a.set(h, int(kNumberOfTransforms), long(rows));
    st |= a.set(h, int(kInputDistance), forward ? long(n) : nf);
    st |= a.set(h, int(kOutputDistance), forward ? nf : long(n));
    st |= a.set(h, int(kThreadLimit), long(1));
    if (st == 0) st = a.commit(h);
    if (st != 0) {
      a.free_(&h);
      return nullptr;
    }
    plans.emplace(key, h);
    return h;
  }
};

}  // namespace

bool mkl_fft_available() { return api().ok; }

template <typename A>
bool mkl_rfft(const A* in, A* out, int64_t rows, int64_t n, bool forward) {
  if (!api().ok || rows <= 0) return rows == 0 && api().ok;
  thread_local Cache cache;
  Handle h = cache.get(n, rows, forward, std::is_same_v<A, double>);
  if (!h) return false;
  const long st = forward ? api().fwd(h, const_cast<A*>(in), out) : api().bwd(h, const_cast<A*>(in), out);
  return st == 0;
}

template bool mkl_rfft<float>(const float*, float*, int64_t, int64_t, bool);
template bool mkl_rfft<double>(const double*, double*, int64_t, int64_t, bool);

}  // namespace kernelfuse::mkl
