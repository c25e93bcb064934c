// Dropout with the CPU backend's counter-based mask (dropout.c, Dropout.java): element i is kept iff
// (hash32(i ^ key) >> 8) >= threshold, then scaled; the mask is a pure function of (key, i), so the
// GPU draws exactly the CPU's. out = kept ? in * scale : 0 (accumulate: out +=).
#include "common.cuh"

__device__ __forceinline__ uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

extern "C" __global__ void dropout_f32(float *out, const float *in, int64_t n, uint32_t key, uint32_t threshold, float scale,
                                       int accumulate) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = (hash32((uint32_t)i ^ key) >> 8) >= threshold ? in[i] * scale : 0.0f;
        out[i] = accumulate ? out[i] + v : v;
    }
}
