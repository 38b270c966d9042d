// Fused random feature maps: out = scale * f(x @ W + b) in one pass (random_features_cpu), and the
// structured (SORF / Fastfood) maps with the same epilogue f (structured_features_cpu).
// Torch-free; shared by the CPU and CUDA kernels.
#pragma once
#include <cmath>
#include <cstdint>

#include "../common/hd.h"

namespace kernelfuse::features {

// The nonlinearity f applied to z = x.w + b.
//   Cos:      f(z) = cos(z)                        -> D columns
//   CosSin:   [cos(z_1..D), sin(z_1..D)]           -> 2D columns (all cosines, then all sines)
//   Positive: exp(z - |x|^2/2 - m)                 -> D columns; m: see Stabilize
//   Relu:     max(z, 0)                            -> D columns
//   Step:     1 if z > 0 else 0                    -> D columns
enum class Kind : int { Cos = 0, CosSin = 1, Positive = 2, Relu = 3, Step = 4 };
constexpr int kNumKinds = 5;
// For Kind::Positive: m = max_j z_ij per row (Row), the maximum over every row (Global), or 0 (None).
enum class Stabilize : int { Row = 0, Global = 1, None = 2 };

template <typename T>
struct RandomFeaturesParams {
  const T* x = nullptr;  // (N, d), rows packed
  const T* W = nullptr;  // (d, D), rows packed
  const T* b = nullptr;  // (D,) or nullptr
  T* out = nullptr;      // (N, D) or (N, 2D) for CosSin
  T* rowmax = nullptr;   // (N + 1,) scratch for Positive: m_i = max_j z_ij, then (CUDA) the global max
  int64_t N = 0, d = 0, D = 0;
  Kind kind = Kind::Cos;
  Stabilize stabilize = Stabilize::Row;
  T scale = T(1);
};

// Structured maps. P = padded input size (power of two), nblocks blocks of P rows stacked, the
// first D of the nblocks * P projections kept.
//   SORF:      z_blk = sqrt(P) * Hn diag(s0) Hn diag(s1) Hn diag(s2) xpad   (Hn = H / sqrt(P))
//   Fastfood:  z_blk = diag(s2) Hn diag(s1) Perm Hn diag(s0) xpad * sqrt(P)
//              (s0: +-1 signs B, s1: Gaussian G, s2: scaling S; Perm: out[i] = in[perm[i]])
// then out = scale * f(z + b) exactly as random_features.
enum class Block : int { Sorf = 0, Fastfood = 1 };

template <typename T>
struct StructuredFeaturesParams {
  const T* x = nullptr;           // (N, d)
  const T* diag = nullptr;        // (nblocks, 3, P)
  const int64_t* perm = nullptr;  // (nblocks, P), Fastfood only
  const T* b = nullptr;           // (D,) or nullptr
  T* out = nullptr;               // (N, D) or (N, 2D)
  T* rowmax = nullptr;            // (N + 1,) scratch for Positive (as RandomFeaturesParams)
  int64_t N = 0, d = 0, P = 1, nblocks = 1, D = 0;
  Kind kind = Kind::Cos;
  Block block = Block::Sorf;
  Stabilize stabilize = Stabilize::Row;
  T scale = T(1);
};

template <typename T>
void random_features_cpu(const RandomFeaturesParams<T>& p);
template <typename T>
void structured_features_cpu(const StructuredFeaturesParams<T>& p);
// Pre-activations of the structured map, z (N, nblocks*P truncated to D) + b: for the backward.
template <typename T>
void structured_project_cpu(const StructuredFeaturesParams<T>& p, T* z);
// Adjoint of the structured projection: gx (N, d) = J^T gz, gz (N, D) the gradient w.r.t. z.
template <typename T>
void structured_adjoint_cpu(const StructuredFeaturesParams<T>& p, const T* gz, T* gx);

// Scalar epilogue (host and device): f(z) for the one-output kinds.
template <typename T>
KF_HD T feature_scalar(Kind k, T z) {
  switch (k) {
    case Kind::Cos:
      return cos(z);
    case Kind::Relu:
      return z <= T(0) ? T(0) : z;  // NaN stays NaN
    case Kind::Step:
      return z > T(0) ? T(1) : (z <= T(0) ? T(0) : z);  // NaN stays NaN
    default:
      return z;  // Positive / CosSin handled by the callers
  }
}

// max that propagates NaN (like torch.max): the stabilisers of "positive" use it, so that a NaN
// pre-activation makes its row (global: every row) NaN instead of being skipped.
template <typename T>
KF_HD T nan_max(T a, T b) {
  return (a != a) ? a : ((b > a || b != b) ? b : a);
}

}  // namespace kernelfuse::features
