// The optimizer step for many tensors in one launch (fp32 master weights and state), PyTorch's
// AdamW: p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps) after m, v take g = grad
// * gradScale, gradScale read from the device when scaleAt is given (the clip factor clip_scale_f32
// wrote; 0 skips the update: a step whose loss or gradient norm was not finite). The tensors are described by a device table of {param, grad, m, v, n} (5 x int64 per
// tensor); blockIdx.y picks the tensor, blocks stride over its elements. Also the sum of squares
// (gradient norms), accumulated per block in fp32 and across blocks in double.
#include "common.cuh"

extern "C" __global__ void adamw_multi_f32(const int64_t *table, float b1, float b2, float oneMinusB1, float oneMinusB2, float invSqrtBc2,
                                           float step, float decay, float eps, float gradScale, const float *scaleAt) {
    if (scaleAt) {
        gradScale = *scaleAt;
        if (gradScale == 0.0f) return;
    }
    const int64_t *e = table + 5 * blockIdx.y;
    float *p = reinterpret_cast<float *>(e[0]), *m = reinterpret_cast<float *>(e[2]), *v = reinterpret_cast<float *>(e[3]);
    const float *g = reinterpret_cast<const float *>(e[1]);
    int64_t n = e[4], stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        float gi = g[i] * gradScale;
        float mi = b1 * m[i] + oneMinusB1 * gi, vi = b2 * v[i] + oneMinusB2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) * invSqrtBc2 + eps);
    }
}

// Squares summed in double, as on the CPU: an fp32 square overflows past |g| ~ 1.8e19, which would
// read as a non-finite step and stop training where clipping should have scaled it.
extern "C" __global__ void sum_squares_f32(double *total, const float *x, int64_t n) {
    __shared__ double scratch[32];
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    double s = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) s += (double)x[i] * x[i];
    s = blockSum(s, scratch);
    if (threadIdx.x == 0) atomicAdd(total, s);
}

// Global-norm clipping decided on the device, nothing read back. state (Backend.CLIP_*): [0] the
// first step whose loss or gradient norm was not finite (0: none yet), [1] that loss, [2] that norm,
// [3] this step's gradient scale: min(1, maxNorm / norm) (1 when maxNorm <= 0), or 0 once a step was
// not finite (adamw_multi_f32 then leaves every tensor as it was). sumSquares from sum_squares_f32;
// loss may be null. One thread.
extern "C" __global__ void clip_scale_f32(float *state, const double *sumSquares, const float *loss, float maxNorm, float step) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double norm = sqrt(*sumSquares);
    float l = loss ? *loss : 0.0f;
    if ((!isfinite(norm) || !isfinite(l)) && state[0] == 0.0f) {
        state[0] = step;
        state[1] = l;
        state[2] = (float)norm;
    }
    state[3] = state[0] != 0.0f ? 0.0f : maxNorm > 0.0f && norm > maxNorm ? (float)(maxNorm / norm) : 1.0f;
}
