// Cross-entropy forward: loss[row] = logsumexp(logits[row]) - logits[row, label[row]], fp32; a
// negative label is an ignored row (loss 0, as on the CPU); a label >= classes gives NaN (the host
// validates labels; this is the last line). One
// warp per row: GLUE heads have 2-3 classes.
#include "common.cuh"

extern "C" __global__ void cross_entropy_forward_f32(float *loss, const float *logits, const int32_t *labels, int rows, int classes) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *z = logits + (int64_t)row * classes;
    float m = -INFINITY;
    for (int c = lane; c < classes; c += 32) m = fmaxf(m, z[c]);
    m = warpMax(m);
    float s = 0.0f;
    for (int c = lane; c < classes; c += 32) s += __expf(z[c] - m);
    s = warpSum(s);
    if (lane == 0) {
        int y = labels[row];
        loss[row] = y < 0 ? 0.0f : y < classes ? m + __logf(s) - z[y] : NAN;
    }
}

// Backward (fp32): dlogits = dloss / counted (softmax(logits) - onehot(label)) for rows with a label
// >= 0 (counted: their number, given by the host), zeros for ignored rows (label < 0). One warp per row.
extern "C" __global__ void cross_entropy_backward_f32(float *dlogits, const float *logits, const int32_t *labels, int rows, int classes,
                                                     float scale) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *z = logits + (int64_t)row * classes;
    float *d = dlogits + (int64_t)row * classes;
    int y = labels[row];
    if (y < 0) {
        for (int c = lane; c < classes; c += 32) d[c] = 0.0f;
        return;
    }
    float m = -INFINITY;
    for (int c = lane; c < classes; c += 32) m = fmaxf(m, z[c]);
    m = warpMax(m);
    float s = 0.0f;
    for (int c = lane; c < classes; c += 32) s += __expf(z[c] - m);
    float lse = m + __logf(warpSum(s));
    for (int c = lane; c < classes; c += 32) d[c] = scale * (__expf(z[c] - lse) - (c == y ? 1.0f : 0.0f));
}
