// CUDA launchers of the random-feature ops (fwht.h, random_features.h). Torch-free. Each enqueues
// its kernels on the given stream (a cudaStream_t passed as void*, the one stream type of every
// kernel header: see common/cuda_launch.cuh), never synchronises, and throws std::runtime_error on a failed
// launch. Instantiated for float and double in features_cuda.cu. Compiled for sm_80 / sm_90a;
// every kernel runs under the CUDA simulator in the tests (tests/sim/test_sim_features*.py).
#pragma once
#include <cstdint>

#include "fwht.h"
#include "random_features.h"

namespace kernelfuse::features {

template <typename T>
void launch_fwht(const FwhtParams<T>& p, void* stream);
template <typename T>
void launch_random_features(const RandomFeaturesParams<T>& p, void* stream);
template <typename T>
void launch_structured_features(const StructuredFeaturesParams<T>& p, void* stream);

// The backward of structured_features: the pre-activations z (for the elementwise step, which the
// glue does), then gx = J^T gz (J: the stacked block transforms) and gb = sum over rows of gz.
// p.out / p.kind / p.rowmax / p.scale / p.stabilize are not used.
template <typename T>
struct StructuredFeaturesBwdParams {
  StructuredFeaturesParams<T> f;  // the forward's x, diag, perm, N, d, P, nblocks, D, block
  const T* gz = nullptr;          // (N, D): dL/dz, z the pre-activations (bias included)
  T* gx = nullptr;                // (N, d), or nullptr: not wanted
  T* gb = nullptr;                // (D,), or nullptr: not wanted
  T* gb_partial = nullptr;        // (structured_bwd_gb_chunks(N), D) scratch, needed when gb and that is > 1
};

// gb is a deterministic two-pass column sum: chunks of kGbRowsPerChunk rows (at most kGbMaxChunks
// chunks, longer ones beyond), then the sum of the chunks' partial sums.
constexpr int64_t kGbRowsPerChunk = 64, kGbMaxChunks = 1024;
inline int64_t structured_bwd_gb_chunks(int64_t N) {
  const int64_t c = (N + kGbRowsPerChunk - 1) / kGbRowsPerChunk;
  return c < kGbMaxChunks ? c : kGbMaxChunks;
}

// z (N, D) = the stacked block projections of x plus b (no epilogue): structured_project_cpu.
template <typename T>
void launch_structured_project(const StructuredFeaturesParams<T>& p, T* z, void* stream);
// gx and / or gb from gz (StructuredFeaturesBwdParams): structured_adjoint_cpu and gz.sum(0).
template <typename T>
void launch_structured_features_bwd(const StructuredFeaturesBwdParams<T>& p, void* stream);

}  // namespace kernelfuse::features
