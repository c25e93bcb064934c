// Dropout with the CPU backend's counter-based mask (dropKeep, common.cuh), so the GPU draws exactly
// the CPU's: out = kept ? in * scale : 0 (accumulate: out +=).
#include "common.cuh"

extern "C" __global__ void dropout_f32(float *out, const float *in, int64_t n, uint32_t key, uint32_t threshold, float scale,
                                       int accumulate) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = dropKeep((uint32_t)i, key, threshold) ? in[i] * scale : 0.0f;
        out[i] = accumulate ? out[i] + v : v;
    }
}
