// Per-group dot products for importance scores (fp32): out[b, g] = sum over s and d of x[b, s, g D + d]
// dx[b, s, g D + d] (a head's or neuron group's first-order Taylor term per sequence). One block per
// (group, sequence).
#include "common.cuh"

extern "C" __global__ void group_dot_f32(float *out, const float *x, const float *dx, int S, int G, int D) {
    __shared__ float scratch[32];
    int g = blockIdx.x, b = blockIdx.y;
    int64_t width = (int64_t)G * D;
    float acc = 0.0f;
    for (int64_t e = threadIdx.x; e < (int64_t)S * D; e += blockDim.x) {
        int64_t t = e / D, d = e % D, i = ((int64_t)b * S + t) * width + (int64_t)g * D + d;
        acc += x[i] * dx[i];
    }
    acc = blockSum(acc, scratch);
    if (threadIdx.x == 0) out[(int64_t)b * G + g] = acc;
}

// out[rb, cb] = sum over the 32 x 32 block (rb, cb) of w * g (w, g [rows, cols] row-major): a block's
// Taylor term. A CTA (256 threads, 4 elements each) per block.
extern "C" __global__ void block_dot_f32(float *out, const float *w, const float *g, int64_t cols) {
    __shared__ float scratch[32];
    int cb = blockIdx.x, rb = blockIdx.y;
    float acc = 0.0f;
    for (int e = threadIdx.x; e < 32 * 32; e += blockDim.x) {
        int64_t i = ((int64_t)rb * 32 + e / 32) * cols + (int64_t)cb * 32 + e % 32;
        acc += w[i] * g[i];
    }
    acc = blockSum(acc, scratch);
    if (threadIdx.x == 0) out[(int64_t)rb * gridDim.x + cb] = acc;
}
