// CPU Monarch permutation (see monarch.h): rows m in parallel; for each row the k q values are
// gathered from the k (or l) source blocks and scattered to the l (or k) destination blocks.
#include "monarch.h"

#include <vector>


namespace kernelfuse::butterfly {
namespace {

template <typename E>
void shuffle(const MonarchShuffleParams& p) {
  const E* src = static_cast<const E*>(p.src);
  E* dst = static_cast<E*>(p.dst);
  const int64_t M = p.M, k = p.k, q = p.q, l = p.l, r = p.r;
  // off[c r + b] = offset of Y1[a, 0, j] for f = b l + c (the row m adds m q).
  std::vector<int64_t> off(l * r);
  for (int64_t c = 0; c < l; ++c)
    for (int64_t b = 0; b < r; ++b) {
      const int64_t f = b * l + c, a = f / q, j = f - a * q;
      off[c * r + b] = a * M * q + j;
    }
  const int64_t* o = off.data();
  (void)k;
#pragma omp parallel for schedule(static) if (M * l * r > 32768)
  for (int64_t m = 0; m < M; ++m) {
    const int64_t mq = m * q;
    for (int64_t c = 0; c < l; ++c) {
      const int64_t zrow = (c * M + m) * r;
      const int64_t* oc = o + c * r;
      if (p.adjoint) {
        for (int64_t b = 0; b < r; ++b) dst[oc[b] + mq] = src[zrow + b];
      } else {
        for (int64_t b = 0; b < r; ++b) dst[zrow + b] = src[oc[b] + mq];
      }
    }
  }
}

struct B16 { double v[2]; };

}  // namespace

void monarch_shuffle_cpu(const MonarchShuffleParams& p) {
  if (p.M == 0) return;
  switch (p.elem_bytes) {
    case 4: shuffle<float>(p); break;
    case 8: shuffle<double>(p); break;
    default: shuffle<B16>(p); break;
  }
}

}  // namespace kernelfuse::butterfly
