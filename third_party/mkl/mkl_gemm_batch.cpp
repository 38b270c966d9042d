// MKL strided batched GEMM found at run time (see mkl_gemm_batch.h). Torch-free.
#include <dlfcn.h>

#include <complex>
#include <cstring>
#include <limits>
#include <vector>

#include "mkl/mkl_symbols.h"
#include "mkl/mkl_gemm_batch.h"

namespace kernelfuse::mkl {
namespace {

// CBLAS constants (mkl_cblas.h); MKL_INT is int in the LP64 interface these names export.
constexpr int kColMajor = 102, kNoTrans = 111, kTrans = 112, kConjTrans = 113;

// cblas_?gemm_batch (group API): per group g, group_size[g] products of the same shape; alpha and
// beta arrays hold one scalar per group (by pointer for every type).
using BatchFn = void (*)(int layout, const int* transa, const int* transb, const int* m, const int* n, const int* k,
                         const void* alpha, const void** a, const int* lda, const void** b, const int* ldb,
                         const void* beta, void** c, const int* ldc, int group_count, const int* group_size);

struct Api {
  BatchFn s = nullptr, d = nullptr, c = nullptr, z = nullptr;
  bool ok = false;
  Api() {
    void* h = mkl_handle_with("cblas_sgemm_batch");
    if (!h) return;
    s = reinterpret_cast<BatchFn>(dlsym(h, "cblas_sgemm_batch"));
    d = reinterpret_cast<BatchFn>(dlsym(h, "cblas_dgemm_batch"));
    c = reinterpret_cast<BatchFn>(dlsym(h, "cblas_cgemm_batch"));
    z = reinterpret_cast<BatchFn>(dlsym(h, "cblas_zgemm_batch"));
    ok = s && d && c && z;
  }
};

const Api& api() {
  static const Api a;
  return a;
}

int trans(char op) { return op == 'T' ? kTrans : op == 'C' ? kConjTrans : kNoTrans; }

bool fits(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }

}  // namespace

bool mkl_gemm_available() { return api().ok; }

bool mkl_gemm_batch(char elem, const GemmBatch& g) {
  const Api& A = api();
  if (!A.ok) return false;
  if (g.batch == 0 || g.m == 0 || g.n == 0) return true;
  for (int64_t v : {g.m, g.n, g.k, g.batch, g.lda, g.ldb, g.ldc})
    if (!fits(v)) return false;
  BatchFn fn = nullptr;
  int64_t bytes = 0;
  switch (elem) {
    case 's':
      fn = A.s;
      bytes = 4;
      break;
    case 'd':
      fn = A.d;
      bytes = 8;
      break;
    case 'c':
      fn = A.c;
      bytes = 8;
      break;
    case 'z':
      fn = A.z;
      bytes = 16;
      break;
    default:
      return false;
  }
  // alpha = 1, beta = 0 (1 when accumulating) in the element type (complex: (1, 0), (0, 0)).
  const double one[2] = {1.0, 0.0}, zero[2] = {0.0, 0.0};
  const float onef[2] = {1.0f, 0.0f}, zerof[2] = {0.0f, 0.0f};
  const bool single = elem == 's' || elem == 'c';
  const void* alpha = single ? static_cast<const void*>(onef) : static_cast<const void*>(one);
  const void* beta = g.accumulate ? alpha : single ? static_cast<const void*>(zerof) : static_cast<const void*>(zero);
  const int64_t nb = g.batch;
  std::vector<const void*> pa(nb), pb(nb);
  std::vector<void*> pc(nb);
  const char* a0 = static_cast<const char*>(g.a);
  const char* b0 = static_cast<const char*>(g.b);
  char* c0 = static_cast<char*>(g.c);
  for (int64_t i = 0; i < nb; ++i) {
    pa[i] = a0 + i * g.sa * bytes;
    pb[i] = b0 + i * g.sb * bytes;
    pc[i] = c0 + i * g.sc * bytes;
  }
  const int ta = trans(g.op_a), tb = trans(g.op_b);
  const int m = int(g.m), n = int(g.n), k = int(g.k), lda = int(g.lda), ldb = int(g.ldb), ldc = int(g.ldc);
  const int size = int(nb);
  fn(kColMajor, &ta, &tb, &m, &n, &k, alpha, pa.data(), &lda, pb.data(), &ldb, beta, pc.data(), &ldc, 1, &size);
  return true;
}

}  // namespace kernelfuse::mkl
