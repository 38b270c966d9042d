// hd_math_eval (hd_math.h): asin_poly / acos_poly / log_poly / log1p_poly / exp_poly over an array, compiled with the CPU kernels'
// flags (-O3 -march=... -fno-math-errno -fno-trapping-math), so the test measures the code as the
// kernels inline it (vectorised: the loops below are the same shape as the kernels' pair loops).
#include "hd_math.h"
#include "simd.h"

namespace kernelfuse {

template <typename T>
KF_NO_THREAD_JUMPS void hd_math_eval(HdFn fn, const T* __restrict x, T* __restrict y, int64_t n) {
  switch (fn) {
    case HdFn::Asin:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = hd::asin_poly(x[i]);
      return;
    case HdFn::Acos:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = hd::acos_poly(x[i]);
      return;
    case HdFn::Log:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = hd::log_poly(x[i]);
      return;
    case HdFn::Log1p:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = hd::log1p_poly(x[i]);
      return;
    case HdFn::Exp:  // double: hd::exp_poly; float: simd::exp_approx (the kernels' float exp)
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (sizeof(T) == 8)
          y[i] = hd::exp_poly(x[i]);
        else
          y[i] = simd::exp_approx(x[i]);
      }
      return;
    case HdFn::Sin:
    case HdFn::Cos: {  // simd::sincos_v over vectors of W lanes, the tail padded with zeros
      using V = typename simd::Vec<T>::type;
      constexpr int W = simd::Vec<T>::W;
      for (int64_t i0 = 0; i0 < n; i0 += W) {
        T buf[W] = {};
        const int64_t nb = n - i0 < W ? n - i0 : W;
        for (int64_t k = 0; k < nb; ++k) buf[k] = x[i0 + k];
        V s, c;
        simd::sincos_v<T>(simd::load<V>(buf), s, c);
        simd::store(buf, fn == HdFn::Sin ? s : c);
        for (int64_t k = 0; k < nb; ++k) y[i0 + k] = buf[k];
      }
      return;
    }
  }
}

template void hd_math_eval<float>(HdFn, const float*, float*, int64_t);
template void hd_math_eval<double>(HdFn, const double*, double*, int64_t);

}  // namespace kernelfuse
