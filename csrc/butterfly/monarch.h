// The Monarch permutation between the two block-diagonal factors, as a torch-free copy kernel.
//
// The first factor's output is stored block-major, Y1 (k, M, q) (block a, row m, entry j); the
// second factor reads Z (l, M, r) (block c, row m, entry b). Both index the same k q = l r values
// of row m: f = a q + j = b l + c. Forward: Z[c, m, b] = Y1[a, m, j]; adjoint (backward):
// dY1[a, m, j] = dZ[c, m, b]. One pass over the data, rows in parallel, so the permutation costs
// one copy instead of the two generic strided copies a reshape + permute would make.
#pragma once
#include <cstdint>

namespace kernelfuse::butterfly {

struct MonarchShuffleParams {
  int64_t M = 0, k = 0, q = 0, l = 0, r = 0;
  int64_t elem_bytes = 4;  // 4, 8 or 16 (float, double / complex64, complex128)
  bool adjoint = false;    // false: src = Y1, dst = Z; true: src = dZ, dst = dY1
  const void* src = nullptr;
  void* dst = nullptr;
};

void monarch_shuffle_cpu(const MonarchShuffleParams& p);

}  // namespace kernelfuse::butterfly
