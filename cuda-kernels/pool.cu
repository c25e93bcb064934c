// Mean pooling over real tokens (fp32): out[b, c] = sum over s with mask[b, s] != 0 of x[b, s, c] / count
// (mask null: every token; no real token: zeros), and its backward dx[b, s, c] = mask ? dout[b, c] /
// count : 0 (overwritten). One block per sequence, threads over the hidden dimension.
#include "common.cuh"

__device__ __forceinline__ int realTokens(const int32_t *mask, int b, int S) {
    if (!mask) return S;
    int n = 0;
    for (int s = 0; s < S; s++) n += mask[(int64_t)b * S + s] != 0;
    return n;
}

extern "C" __global__ void mean_pool_forward_f32(float *out, const float *x, const int32_t *mask, int S, int C) {
    int b = blockIdx.x, n = realTokens(mask, b, S);
    float inv = n ? 1.0f / n : 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.0f;
        for (int t = 0; t < S; t++)
            if (!mask || mask[(int64_t)b * S + t]) s += x[((int64_t)b * S + t) * C + c];
        out[(int64_t)b * C + c] = s * inv;
    }
}

extern "C" __global__ void mean_pool_backward_f32(float *dx, const float *dout, const int32_t *mask, int S, int C) {
    int b = blockIdx.x, n = realTokens(mask, b, S);
    float inv = n ? 1.0f / n : 0.0f;
    for (int t = 0; t < S; t++) {
        bool real = !mask || mask[(int64_t)b * S + t];
        for (int c = threadIdx.x; c < C; c += blockDim.x) dx[((int64_t)b * S + t) * C + c] = real ? dout[(int64_t)b * C + c] * inv : 0.0f;
    }
}
