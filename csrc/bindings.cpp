// PYBIND11_MODULE(_C): build information and threading. No tensors pass here: ops are torch
// custom ops (csrc/kernelfuse.cpp), registered when this module is loaded.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common/build_info.h"
#include "kde/profiles.h"
#include "common/config.h"
#include "common/hd_math.h"

#ifndef KERNELFUSE_VERSION
#define KERNELFUSE_VERSION "0.0.0"
#endif
#ifndef KERNELFUSE_TORCH_VERSION
#define KERNELFUSE_TORCH_VERSION "unknown"
#endif
#ifndef KERNELFUSE_CUDA_ARCHS
#define KERNELFUSE_CUDA_ARCHS ""
#endif

namespace py = pybind11;

namespace {

// _hd_math: the host acos / asin / log / log1p / exp (double) of the kernels (common/hd_math.h) over a numpy array (the test's
// and scripts/fit_acos_asin.py's entry; a debug helper, not a public op).
template <typename T>
py::array hd_math_array(kernelfuse::HdFn fn, const py::array& x) {
  auto in = py::array_t<T, py::array::c_style>::ensure(x);
  py::array_t<T> out(in.request().shape);
  kernelfuse::hd_math_eval<T>(fn, in.data(), out.mutable_data(), static_cast<int64_t>(in.size()));
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "kernelfuse native module: build info; the ops live in torch.ops.kernelfuse";
  m.def(
      "build_info",
      [] {
        py::dict d;
        d["version"] = KERNELFUSE_VERSION;
        d["torch_version"] = KERNELFUSE_TORCH_VERSION;
#ifdef KERNELFUSE_WITH_CUDA
        d["cuda"] = true;
#else
        d["cuda"] = false;
#endif
        py::list archs;
        std::string a = KERNELFUSE_CUDA_ARCHS;
        size_t start = 0;
        while (start < a.size()) {
          size_t end = a.find(';', start);
          if (end == std::string::npos) end = a.size();
          if (end > start) archs.append(a.substr(start, end - start));
          start = end + 1;
        }
        d["cuda_archs"] = archs;
        d["openmp"] = _OPENMP;
        d["omp_threads"] = omp_get_max_threads();
        d["cpu_isa"] = kernelfuse::cpu_isa();
#ifdef NDEBUG
        d["debug"] = false;
#else
        d["debug"] = true;
#endif
        return d;
      },
      "Build information: versions, CUDA on/off and archs, OpenMP threads, CPU vector ISA.");
  m.def(
      "kde_kernels",
      [] {
        py::list names;
        for (const char* name : kernelfuse::kde::kKernelNames) names.append(name);
        return names;
      },
      "Names of the kernel-sum kernels (csrc/kde/profiles.h), in the order of their enum values.");
  m.def(
      "kde_log_normaliser",
      [](const std::string& kernel, int d) {
        for (int i = 0; i < kernelfuse::kde::kNumKernels; ++i)
          if (kernel == kernelfuse::kde::kKernelNames[i])
            return kernelfuse::kde::log_normaliser(static_cast<kernelfuse::kde::Kernel>(i), d);
        throw py::value_error("kernelfuse._C.kde_log_normaliser: argument 'kernel': unknown kernel '" + kernel + "'");
      },
      py::arg("kernel"), py::arg("d"),
      "log of the integral of the kernel profile over R^d (profiles.h); NaN where it diverges.");
  m.def(
      "config",
      [] {
        const kernelfuse::Config& c = kernelfuse::config();
        py::dict d;
        d["poison"] = c.poison;
        d["no_mkl_fft"] = c.no_mkl_fft;
        d["no_tc_fftconv"] = c.no_tc_fftconv;
        d["kron_gemm_aten"] = c.kron_gemm_aten;
        d["monarch_gemm_aten"] = c.monarch_gemm_aten;
        d["hugepages"] = c.hugepages;
        d["monarch_chunk_bytes"] = c.monarch_chunk_bytes;
        return d;
      },
      "The environment switches as read (common/config.h; table in README.md).");
  m.def(
      "reload_config", [] { kernelfuse::reload_config(); },
      "Read the environment switches again (after changing one in-process, e.g. in a test).");
  m.def(
      "_hd_math",
      [](const std::string& fn, const py::array& x) {
        kernelfuse::HdFn f;
        if (fn == "asin")
          f = kernelfuse::HdFn::Asin;
        else if (fn == "acos")
          f = kernelfuse::HdFn::Acos;
        else if (fn == "log")
          f = kernelfuse::HdFn::Log;
        else if (fn == "log1p")
          f = kernelfuse::HdFn::Log1p;
        else if (fn == "exp")
          f = kernelfuse::HdFn::Exp;
        else if (fn == "sin")
          f = kernelfuse::HdFn::Sin;
        else if (fn == "cos")
          f = kernelfuse::HdFn::Cos;
        else
          throw py::value_error(
              "kernelfuse._C._hd_math: argument 'fn': expected 'asin', 'acos', 'log', 'log1p', "
              "'exp', 'sin' or 'cos', got '" +
              fn + "'");
        if (x.dtype().is(py::dtype::of<float>())) return hd_math_array<float>(f, x);
        if (x.dtype().is(py::dtype::of<double>())) return hd_math_array<double>(f, x);
        throw py::type_error(
            "kernelfuse._C._hd_math: argument 'x': expected a float32 or float64 numpy array, got dtype " +
            std::string(py::str(x.dtype())));
      },
      py::arg("fn"), py::arg("x"),
      "Debug helper: the CPU kernels' own asin / acos / log / log1p / exp / sin / cos (common/hd_math.h; float exp, "
      "sin, cos: common/simd.h) of a float32 / float64 numpy array.");
  m.def("get_num_threads", [] { return omp_get_max_threads(); }, "OpenMP threads the CPU kernels use.");
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1)
          throw py::value_error("kernelfuse.set_num_threads: argument 'n' must be >= 1, got " + std::to_string(n));
        omp_set_num_threads(n);
      },
      py::arg("n"), "Set the OpenMP threads of the CPU kernels (shared with torch's OpenMP runtime).");
}
