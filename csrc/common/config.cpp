// The environment switches (see config.h). Torch-free.
#include "config.h"

#include <cstdlib>
#include <cstring>

namespace kernelfuse {
namespace {

bool is_set(const char* name) { return std::getenv(name) != nullptr; }
bool equals(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

Config read_config() {
  Config c;
  c.poison = equals("KERNELFUSE_POISON", "1");
  c.no_mkl_fft = is_set("KERNELFUSE_NO_MKL_FFT");
  c.no_tc_fftconv = is_set("KERNELFUSE_NO_TC_FFTCONV");
  c.kron_gemm_aten = equals("KERNELFUSE_KRON_GEMM", "aten");
  c.monarch_gemm_aten = equals("KERNELFUSE_MONARCH_GEMM", "aten");
  c.hugepages = !equals("KERNELFUSE_HUGEPAGES", "0");
  if (const char* v = std::getenv("KERNELFUSE_MONARCH_CHUNK_BYTES")) {
    const long long b = std::atoll(v);
    c.monarch_chunk_bytes = b >= 1 ? b : 1;
  }
  return c;
}

Config& stored() {
  static Config c = read_config();
  return c;
}

}  // namespace

const Config& config() { return stored(); }
void reload_config() { stored() = read_config(); }

}  // namespace kernelfuse

extern "C" void kernelfuse_reload_config() { kernelfuse::reload_config(); }
