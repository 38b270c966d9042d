// CUDA launchers of the random-feature ops (fwht.h, random_features.h). Torch-free. Each enqueues
// its kernels on the given stream, never synchronises, and throws std::runtime_error on a failed
// launch. Instantiated for float and double in features_cuda.cu. Compiled for sm_80 / sm_90a,
// not yet run on a GPU.
#pragma once
#include <cuda_runtime.h>

#include "fwht.h"
#include "random_features.h"

namespace kernelfuse::features {

template <typename T> void launch_fwht(const FwhtParams<T>& p, cudaStream_t stream);
template <typename T> void launch_random_features(const RandomFeaturesParams<T>& p, cudaStream_t stream);
template <typename T> void launch_structured_features(const StructuredFeaturesParams<T>& p, cudaStream_t stream);

}  // namespace kernelfuse::features
