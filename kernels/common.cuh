// Shared device helpers of the pulse-trt kernels: dtype loads, PULSE's bicubic taps, reflect
// indexing, block reductions. Header-only; every kernel is extern "C" so the Python loader and
// the TensorRT plugin find it by a plain name.
#pragma once

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

namespace pulse {

// ---- dtype glue: all arithmetic is fp32, storage may be fp16 / bf16 -------------------------
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// ---- PULSE's bicubic operator (engine/bicubic.py is the numpy reference) ----------------------
// Keys cubic kernel, a = -0.5.
__device__ __forceinline__ double keys_cubic(double x) {
    const double a = -0.5;
    double ax = fabs(x);
    if (ax <= 1.0) return (a + 2.0) * ax * ax * ax - (a + 3.0) * ax * ax + 1.0;
    if (ax < 2.0) return a * ax * ax * ax - 5.0 * a * ax * ax + 8.0 * a * ax - 4.0 * a;
    return 0.0;
}

// Writes the 4f normalised taps of the downscale by f into shared memory taps[0 .. 4f).
// Every thread calls it; ends with a barrier. Computed in fp64 like the reference, so the
// fp32 taps are the correctly rounded reference taps (no taps buffer to pass around).
__device__ inline void load_taps(float* taps, int f) {
    const int size = 4 * f;
    const double half = floor(size / 2.0);
    double sum = 0.0;  // each thread sums all taps itself: 4f <= 4096 evaluations, once per block
    for (int i = 0; i < size; ++i) sum += keys_cubic((i - half + 0.5) / f);
    for (int i = threadIdx.x; i < size; i += blockDim.x) taps[i] = (float)(keys_cubic((i - half + 0.5) / f) / sum);
    __syncthreads();
}

// Padded position p (0 .. n + 3f) -> index into the unpadded axis of length n (reflect, edge
// not repeated; the host checks pad_before < n and pad_after < n).
__device__ __forceinline__ int reflect_index(int p, int pad_before, int n) {
    int i = p - pad_before;
    if (i < 0) i = -i;
    else if (i >= n) i = 2 * (n - 1) - i;
    return i;
}

__device__ __forceinline__ int pad_before_of(int f) { return (3 * f) / 2; }

// ---- reductions --------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `scratch` holds >= 33 floats of shared memory.
__device__ inline float block_sum(float x, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    float total = 0.f;
    if (warp == 0) {
        total = lane < nwarps ? scratch[lane] : 0.f;
        total = warp_sum(total);
        if (lane == 0) scratch[32] = total;
    }
    __syncthreads();
    return scratch[32];
}

}  // namespace pulse
