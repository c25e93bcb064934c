// Losses on the device, so a training step reads nothing back (the mean goes to a device scalar
// the trainer reads once per logging interval). Cross-entropy forward: loss[row] =
// logsumexp(logits[row]) - logits[row, label[row]], fp32; a negative label is an ignored row (loss
// 0, as on the CPU); a label >= classes gives NaN (the host validates labels before they are
// uploaded; this is the last line, and a NaN loss stops training). One warp per row: GLUE heads
// have 2-3 classes. expf/logf, not the fast intrinsics: a confident right answer's loss is log(s)
// with s near 1, where __logf's absolute error (~2^-21) is a large relative one.
#include "common.cuh"

extern "C" __global__ void cross_entropy_forward_f32(float *loss, const float *logits, const int32_t *labels, int rows, int classes) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *z = logits + (int64_t)row * classes;
    float m = -INFINITY;
    for (int c = lane; c < classes; c += 32) m = fmaxf(m, z[c]);
    m = warpMax(m);
    float s = 0.0f;
    for (int c = lane; c < classes; c += 32) s += expf(z[c] - m);
    s = warpSum(s);
    if (lane == 0) {
        int y = labels[row];
        loss[row] = y < 0 ? 0.0f : y < classes ? m + logf(s) - z[y] : NAN;
    }
}

// The mean of the per-row losses over the rows with a label >= 0 (0 when none), written to *mean.
// One block: rows is a batch.
extern "C" __global__ void loss_mean_f32(float *mean, const float *loss, const int32_t *labels, int rows) {
    __shared__ float scratch[32];
    float s = 0.0f, c = 0.0f;
    for (int i = threadIdx.x; i < rows; i += blockDim.x)
        if (labels[i] >= 0) s += loss[i], c += 1.0f;
    s = blockSum(s, scratch);
    c = blockSum(c, scratch);
    if (threadIdx.x == 0) *mean = c > 0.0f ? s / c : 0.0f;
}

// Backward (fp32): dlogits = dloss / counted (softmax(logits) - onehot(label)) for rows with a label
// >= 0 (counted: their number, each block counts the batch's labels itself), zeros for ignored rows
// (label < 0). One warp per row.
extern "C" __global__ void cross_entropy_backward_f32(float *dlogits, const float *logits, const int32_t *labels, int rows, int classes,
                                                     float dloss) {
    __shared__ float scratch[32];
    float counted = 0.0f;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) counted += labels[i] >= 0 ? 1.0f : 0.0f;
    counted = blockSum(counted, scratch);
    const float scale = counted > 0.0f ? dloss / counted : 0.0f;
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
    for (int c = lane; c < classes; c += 32) s += expf(z[c] - m);
    float lse = m + logf(warpSum(s));
    for (int c = lane; c < classes; c += 32) d[c] = scale * (expf(z[c] - lse) - (c == y ? 1.0f : 0.0f));
}

// Mean squared error of a regression head: *mean = sum (pred - target)^2 / n (one block; n a batch),
// and its gradient dpred = scale (pred - target) with scale = 2 dloss / n.
extern "C" __global__ void mse_forward_f32(float *mean, const float *pred, const float *target, int64_t n) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float d = pred[i] - target[i];
        s += d * d;
    }
    s = blockSum(s, scratch);
    if (threadIdx.x == 0) *mean = n > 0 ? s / (float)n : 0.0f;
}

extern "C" __global__ void mse_backward_f32(float *dpred, const float *pred, const float *target, int64_t n, float scale) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) dpred[i] = scale * (pred[i] - target[i]);
}

// Knowledge distillation's gradient, added to what dstudent holds (the task loss's): per row of
// [rows, cols], weight T (softmax(s / T) - softmax(t / T)) / rows, or for cols = 1 (regression)
// weight 2 (s - t) / rows. A thread per row: a head has a handful of classes. No read-back.
extern "C" __global__ void distillation_backward_f32(float *dstudent, const float *student, const float *teacher, int rows, int cols,
                                                     float temperature, float weight) {
    int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < rows; i += stride) {
        const float *s = student + (int64_t)i * cols, *t = teacher + (int64_t)i * cols;
        float *d = dstudent + (int64_t)i * cols;
        if (cols == 1) {
            d[0] += weight * 2.0f * (s[0] - t[0]) / rows;
            continue;
        }
        float ms = -INFINITY, mt = -INFINITY, zs = 0.0f, zt = 0.0f;
        for (int c = 0; c < cols; c++) {
            ms = fmaxf(ms, s[c] / temperature);
            mt = fmaxf(mt, t[c] / temperature);
        }
        for (int c = 0; c < cols; c++) {
            zs += expf(s[c] / temperature - ms);
            zt += expf(t[c] / temperature - mt);
        }
        float scale = weight * temperature / rows;
        for (int c = 0; c < cols; c++) d[c] += scale * (expf(s[c] / temperature - ms) / zs - expf(t[c] / temperature - mt) / zt);
    }
}

// Hidden-state matching's gradient (layer-wise distillation), added to what dstudent holds: weight
// 2 (s - t) / (real x cols) on the rows (tokens) whose mask is not 0 (real: their number, each block
// counts the batch's mask itself; mask null: every row), nothing on padding rows. A warp per row in
// a grid-stride loop. No read-back.
extern "C" __global__ void hidden_match_backward_f32(float *dstudent, const float *student, const float *teacher, const int32_t *mask,
                                                     int rows, int cols, float weight) {
    __shared__ float scratch[32];
    float real = (float)rows;
    if (mask) {
        real = 0.0f;
        for (int i = threadIdx.x; i < rows; i += blockDim.x) real += mask[i] != 0 ? 1.0f : 0.0f;
        real = blockSum(real, scratch);
    }
    if (real == 0.0f) return;
    const float scale = 2.0f * weight / (real * (float)cols);
    const int lane = threadIdx.x & 31, warps = gridDim.x * (blockDim.x >> 5);
    for (int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
        if (mask && mask[row] == 0) continue;
        const int64_t o = (int64_t)row * cols;
        for (int c = lane; c < cols; c += 32) dstudent[o + c] += scale * (student[o + c] - teacher[o + c]);
    }
}
