// Batched real FFTs through the MKL that the installed torch carries (found at run time with
// dlsym; nothing is linked or copied), with plans cached per thread and written straight into the
// caller's buffers: no per-call allocation, no plan rebuilt per call. Torch-free.
#pragma once
#include <cstdint>

namespace kernelfuse::mkl {

// True when MKL's DFTI entry points are present in the process (x86 torch builds).
bool mkl_fft_available();

// forward: in (rows, n) real -> out (rows, n / 2 + 1) complex (interleaved), unnormalised.
// backward: in (rows, n / 2 + 1) complex -> out (rows, n) real, unnormalised.
// Single-threaded (callers run one per thread). Returns false if MKL is missing or fails; the
// caller then falls back to another FFT. A in {float, double}.
template <typename A>
bool mkl_rfft(const A* in, A* out, int64_t rows, int64_t n, bool forward);

}  // namespace kernelfuse::mkl
