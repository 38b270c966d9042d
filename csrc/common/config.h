// Every environment switch of kernelfuse, read in one place, once (on first use). Torch-free.
// The table of switches is in README.md ("Environment switches"); a new switch is a field here,
// a line in read_config() (config.cpp) and a row there.
//
// Tests that flip a switch inside one process set the variable and call reload_config()
// (kernelfuse.reload_config() from Python; the simulator library exports kernelfuse_reload_config
// for ctypes). Reloading while ops run on other threads is not supported.
#pragma once

namespace kernelfuse {

struct Config {
  bool poison = false;                      // KERNELFUSE_POISON=1: fresh outputs NaN-filled (tests)
  bool no_mkl_fft = false;                  // KERNELFUSE_NO_MKL_FFT set: fftconv's CPU FFTs by ATen, not MKL
  bool no_tc_fftconv = false;               // KERNELFUSE_NO_TC_FFTCONV set: no tensor-core fftconv on CUDA
  bool kron_gemm_aten = false;              // KERNELFUSE_KRON_GEMM=aten: kron's CPU mode products by ATen
  bool monarch_gemm_aten = false;           // KERNELFUSE_MONARCH_GEMM=aten: Monarch's CPU GEMMs by ATen
  bool hugepages = true;                    // KERNELFUSE_HUGEPAGES=0 turns the huge-page hint off (features)
  long long monarch_chunk_bytes = 2 << 20;  // KERNELFUSE_MONARCH_CHUNK_BYTES: Monarch's CPU row-chunk size
};

// The switches, read from the environment on the first call.
const Config& config();
// Reads the environment again (for tests that change a switch in-process).
void reload_config();

}  // namespace kernelfuse

extern "C" void kernelfuse_reload_config();
