// The simulator's stand-in for the CUDA toolkit's cuda_runtime.h (csrc/sim/kf_sim.h): the real
// runtime-API declarations and vector types, with the simulator's device built-ins. The runtime
// functions themselves are defined in csrc/sim/sim_runtime.cpp; no libcudart is linked.
#pragma once
#include <cuda_runtime_api.h>

#include "sim/kf_sim.h"
