// y = softmax(x) over the last dimension, fp32 math; one block per row, the row held in registers
// (cols <= 8 * blockDim) so it is read once.
#include "common.cuh"

#define SM_PER_THREAD 8

template <typename T>
__device__ void softmaxForward(T *y, const T *x, int cols) {
    __shared__ float scratch[32];
    int64_t base = (int64_t)blockIdx.x * cols;
    float v[SM_PER_THREAD], m = -INFINITY;
#pragma unroll
    for (int k = 0; k < SM_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        v[k] = c < cols ? ld(x, base + c) : -INFINITY;
        m = fmaxf(m, v[k]);
    }
    m = blockMax(m, scratch);
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < SM_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        v[k] = c < cols ? __expf(v[k] - m) : 0.0f;
        s += v[k];
    }
    float inv = 1.0f / blockSum(s, scratch);
#pragma unroll
    for (int k = 0; k < SM_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        if (c < cols) st(y, base + c, v[k] * inv);
    }
}

#define SOFTMAX(SUFFIX, T) \
    extern "C" __global__ void softmax_forward_##SUFFIX(T *y, const T *x, int cols) { softmaxForward(y, x, cols); }
TOPA_BOTH_TYPES(SOFTMAX)

// Backward (fp32): dx = y (dy - sum(dy y)) per row; one block per row.
extern "C" __global__ void softmax_backward_f32(float *dx, const float *dy, const float *y, int cols) {
    __shared__ float scratch[32];
    int64_t base = (int64_t)blockIdx.x * cols;
    float yv[SM_PER_THREAD], dv[SM_PER_THREAD], s = 0.0f;
#pragma unroll
    for (int k = 0; k < SM_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        yv[k] = c < cols ? y[base + c] : 0.0f;
        dv[k] = c < cols ? dy[base + c] : 0.0f;
        s += yv[k] * dv[k];
    }
    s = blockSum(s, scratch);
#pragma unroll
    for (int k = 0; k < SM_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        if (c < cols) dx[base + c] = yv[k] * (dv[k] - s);
    }
}
