// Build information of the CPU kernels (reported by kernelfuse._C.build_info()). Torch-free.
#pragma once

namespace kernelfuse {

// Vector ISA the CPU kernels were compiled for ("avx512", "avx2+fma", "sse2", "neon", ...):
// defined in build_info_cpu.cpp, compiled with the kernels' -march flags.
const char* cpu_isa();

}  // namespace kernelfuse
