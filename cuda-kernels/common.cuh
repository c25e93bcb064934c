// Shared helpers of topa's CUDA kernels: element loads/stores for fp32 and bf16 storage (all
// arithmetic in fp32), warp and block reductions. Kernels are extern "C" so the Java side finds
// them by name with cuModuleGetFunction; each op exists as <op>_f32 and <op>_bf16.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float ld(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__nv_bfloat16 *p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

// T: float, or double where a sum must not overflow or lose the small terms (gradient norms)
template <typename T> __device__ __forceinline__ T warpSum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
template <typename T> __device__ __forceinline__ T blockSum(T v, T *scratch /* [32] shared */) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warpSum(v);
    __syncthreads(); // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : T(0);
    return warpSum(v);
}

__device__ __forceinline__ float blockMax(float v, float *scratch /* [32] shared */) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warpMax(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    return warpMax(v);
}

// Dropout's counter-based mask (native/topa_cpu.h, Dropout.java): element i of a tensor is kept iff
// (hash32(i ^ key) >> 8) >= threshold; a pure function of (key, i), so every kernel that drops (the
// dropout pass, attention's probabilities) draws exactly the CPU's mask and backward regenerates it.
__device__ __forceinline__ uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

__device__ __forceinline__ bool dropKeep(uint32_t i, uint32_t key, uint32_t threshold) { return (hash32(i ^ key) >> 8) >= threshold; }

// An attention dropout draw (threshold 0: none); element (bh, q, k) of the [B, H, S, S] probabilities is index (bh S + q) S + k.
struct AttnDrop {
    uint32_t key, threshold;
    float scale;
    __device__ __forceinline__ bool on() const { return threshold != 0; }
    __device__ __forceinline__ float apply(float p, int64_t bhRow /* bh S + q */, int S, int k) const {
        return dropKeep((uint32_t)(bhRow * S + k), key, threshold) ? p * scale : 0.0f;
    }
};

#define TOPA_BOTH_TYPES(MACRO) MACRO(f32, float) MACRO(bf16, __nv_bfloat16)
