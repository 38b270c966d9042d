// Storage <-> compute conversions of the device kernels, written once: to_acc(x) reads a stored
// value in its compute type (float for __half, __nv_bfloat16 and float; double for double);
// from_acc<T>(a) stores a compute value as T (round to nearest even for the half types).
// One DeviceStorage specialisation per storage type holds both directions. Device code (nvcc, or
// the CUDA simulator, where cuda_fp16.h / cuda_bf16.h's host code does the real rounding).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace kernelfuse {

template <typename T>
struct DeviceStorage;

template <>
struct DeviceStorage<__half> {
  using acc = float;
  static __device__ __forceinline__ float load(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half store(float x) { return __float2half_rn(x); }
};

template <>
struct DeviceStorage<__nv_bfloat16> {
  using acc = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 store(float x) { return __float2bfloat16_rn(x); }
};

template <>
struct DeviceStorage<float> {
  using acc = float;
  static __device__ __forceinline__ float load(float x) { return x; }
  static __device__ __forceinline__ float store(float x) { return x; }
};

template <>
struct DeviceStorage<double> {
  using acc = double;
  static __device__ __forceinline__ double load(double x) { return x; }
  static __device__ __forceinline__ double store(double x) { return x; }
};

template <typename T>
__device__ __forceinline__ typename DeviceStorage<T>::acc to_acc(T x) {
  return DeviceStorage<T>::load(x);
}

template <typename T>
__device__ __forceinline__ T from_acc(typename DeviceStorage<T>::acc x) {
  return DeviceStorage<T>::store(x);
}

}  // namespace kernelfuse
