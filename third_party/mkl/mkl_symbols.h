// Finding MKL entry points at run time in a library the process has already loaded (torch's
// libtorch_cpu carries MKL's BLAS and DFTI, or an MKL runtime), without linking MKL or loading
// anything new. Shared by the MKL FFT (mkl_fft.cpp, for longconv) and the batched GEMM
// (mkl_gemm_batch.cpp, for the Monarch path of butterfly). Torch-free.
#pragma once
#include <dlfcn.h>
#include <link.h>

#include <cstring>

namespace kernelfuse::mkl {

// A dlsym handle under which `symbol` resolves: the global scope when it is there, else a loaded
// libtorch_cpu / libmkl_rt that exports it (reopened with RTLD_NOLOAD), else null.
inline void* mkl_handle_with(const char* symbol) {
  if (dlsym(RTLD_DEFAULT, symbol)) return RTLD_DEFAULT;
  struct Found {
    const char* symbol;
    void* handle = nullptr;
  } found{symbol};
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) -> int {
        auto* f = static_cast<Found*>(data);
        const char* name = info->dlpi_name;
        if (!name || !*name || (!std::strstr(name, "libtorch_cpu") && !std::strstr(name, "libmkl_rt"))) return 0;
        void* h = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
        if (h && dlsym(h, f->symbol)) {
          f->handle = h;
          return 1;
        }
        return 0;
      },
      &found);
  return found.handle;
}

}  // namespace kernelfuse::mkl
