// The simulator's nvcuda::wmma (16x16x16 tiles): fragments spread a tile's elements over the 32
// lanes of a warp (lane l holds elements [l*E, (l+1)*E) of the row-major tile, E = 256 / 32; CUDA
// leaves the mapping unspecified, so any is legal); load / store / fill are per lane after a full-
// warp convergence check; mma_sync is one warp-collective operation that gathers the 32 lanes'
// fragments, multiplies in float (operands converted exactly, products accumulated in float in k
// order) and scatters the result.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "sim/kf_sim.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the simulator models the 16x16x16 WMMA shape");
  static constexpr int num_elements = 256 / 32;
  using element_type = T;
  T x[num_elements];
};

namespace detail {
inline float to_f(float v) { return v; }
inline float to_f(__half v) { return __half2float(v); }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
T from_f(float v);
template <>
inline float from_f<float>(float v) {
  return v;
}
template <>
inline __half from_f<__half>(float v) {
  return __float2half_rn(v);
}
template <>
inline __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
inline int lane() { return static_cast<int>(::kf_sim::g_thread->linear & 31u); }
inline void converged() { ::kf_sim::syncwarp(0xffffffffu); }
// Tile element i of this lane's slot e, and its place in memory for a layout.
inline int elem(int e) { return lane() * 8 + e; }
inline size_t at(int i, unsigned ldm, bool row) {
  const int r = i / 16, c = i % 16;
  return row ? size_t(r) * ldm + c : size_t(c) * ldm + r;
}
template <class L>
constexpr bool is_row() {
  return std::is_same_v<L, row_major>;
}

template <class TA, class TB, class TC, class TD>
struct MmaArgs {
  TD* d;
  const TA* a;
  const TB* b;
  const TC* c;
};
template <class TA, class TB, class TC, class TD>
void mma_all(void* const* args) {
  float A[256], B[256], C[256];
  for (int l = 0; l < 32; ++l) {
    auto* m = static_cast<const MmaArgs<TA, TB, TC, TD>*>(args[l]);
    for (int e = 0; e < 8; ++e) {
      A[l * 8 + e] = to_f(m->a[e]);
      B[l * 8 + e] = to_f(m->b[e]);
      C[l * 8 + e] = to_f(m->c[e]);
    }
  }
  float D[256];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float s = C[i * 16 + j];
      for (int k = 0; k < 16; ++k) s += A[i * 16 + k] * B[k * 16 + j];
      D[i * 16 + j] = s;
    }
  for (int l = 0; l < 32; ++l) {
    auto* m = static_cast<const MmaArgs<TA, TB, TC, TD>*>(args[l]);
    for (int e = 0; e < 8; ++e) m->d[e] = from_f<TD>(D[l * 8 + e]);
  }
}
}  // namespace detail

template <class Use, class T, class L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load takes a layout_t");
  detail::converged();
  for (int e = 0; e < 8; ++e) f.x[e] = p[detail::at(detail::elem(e), ldm, detail::is_row<L>())];
}
template <class T>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T, void>& f, const T* p, unsigned ldm, layout_t layout) {
  detail::converged();
  for (int e = 0; e < 8; ++e) f.x[e] = p[detail::at(detail::elem(e), ldm, layout == mem_row_major)];
}
template <class T>
void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T, void>& f, unsigned ldm, layout_t layout) {
  detail::converged();
  for (int e = 0; e < 8; ++e) p[detail::at(detail::elem(e), ldm, layout == mem_row_major)] = f.x[e];
}
template <class Use, class T, class L, class V>
void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, const V& v) {
  detail::converged();
  for (int e = 0; e < 8; ++e) f.x[e] = static_cast<T>(v);
}
template <class TA, class LA, class TB, class LB, class TC, class TD>
void mma_sync(fragment<accumulator, 16, 16, 16, TD, void>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, TC, void>& c) {
  detail::MmaArgs<TA, TB, TC, TD> m{d.x, a.x, b.x, c.x};
  ::kf_sim::warp_collective(&detail::mma_all<TA, TB, TC, TD>, &m);
}

}  // namespace nvcuda::wmma
