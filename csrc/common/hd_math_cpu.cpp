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
  }
}

template void hd_math_eval<float>(HdFn, const float*, float*, int64_t);
template void hd_math_eval<double>(HdFn, const double*, double*, int64_t);

}  // namespace kernelfuse
