// Build information of the CPU kernels (build_info.h). Named *_cpu.cpp so that it is compiled
// with the CPU kernels' flags (-march=...): the ISA it reports is theirs.
#include "build_info.h"

#include "simd.h"

namespace kernelfuse {

const char* cpu_isa() { return simd::isa_name(); }

}  // namespace kernelfuse
