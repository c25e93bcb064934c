// Task losses (native/loss.c): softmax cross-entropy (label < 0: ignored) and mean squared error.
// Means are summed in row order by one work-item, in double where the device has it, so nothing is
// read back during a step. A label outside the classes gives its row a NaN loss (labels are checked
// on the host before the upload).

inline float topa_row_logsumexp(__global const float *x, long C) {
    float mx = x[0], s = 0.0f;
    for (long c = 1; c < C; c++) mx = fmax(mx, x[c]);
    for (long c = 0; c < C; c++) s += exp(x[c] - mx);
    return mx + log(s);
}

__kernel void cross_entropy_forward(TENSOR(float, losses), TENSOR(const float, logits), TENSOR(const int, labels), long N, long C) {
    long i = get_global_id(0);
    if (i >= N) return;
    int y = AT(labels)[i];
    __global const float *x = AT(logits) + i * C;
    AT(losses)[i] = y < 0 ? 0.0f : y >= C ? NAN : topa_row_logsumexp(x, C) - x[y];
}

// mean = the mean of losses over the rows whose label is not ignored
__kernel void loss_mean(TENSOR(float, mean), TENSOR(const float, losses), TENSOR(const int, labels), long N) {
    if (get_global_id(0) != 0) return;
    acc_t total = 0;
    long counted = 0;
    for (long i = 0; i < N; i++) {
        total += AT(losses)[i];
        counted += AT(labels)[i] >= 0;
    }
    AT(mean)[0] = counted ? (float)(total / (acc_t)counted) : 0.0f;
}

__kernel void cross_entropy_backward(TENSOR(float, dlogits), TENSOR(const float, logits), TENSOR(const int, labels), long N, long C,
                                     float dloss) {
    long i = get_global_id(0);
    if (i >= N) return;
    long counted = 0;
    for (long r = 0; r < N; r++) counted += AT(labels)[r] >= 0;
    float scale = counted ? dloss / (float)counted : 0.0f;
    int y = AT(labels)[i];
    __global const float *x = AT(logits) + i * C;
    __global float *d = AT(dlogits) + i * C;
    float lse = y < 0 ? 0.0f : topa_row_logsumexp(x, C);
    for (long c = 0; c < C; c++) d[c] = y < 0 ? 0.0f : scale * (exp(x[c] - lse) - (c == y ? 1.0f : 0.0f));
}

__kernel void mse_forward(TENSOR(float, mean), TENSOR(const float, pred), TENSOR(const float, target), long N) {
    if (get_global_id(0) != 0) return;
    acc_t s = 0;
    for (long i = 0; i < N; i++) {
        acc_t d = (acc_t)AT(pred)[i] - (acc_t)AT(target)[i];
        s += d * d;
    }
    AT(mean)[0] = N ? (float)(s / (acc_t)N) : 0.0f;
}

__kernel void mse_backward(TENSOR(float, dpred), TENSOR(const float, pred), TENSOR(const float, target), long N, float scale) {
    long i = get_global_id(0);
    if (i >= N) return;
    AT(dpred)[i] = scale * (AT(pred)[i] - AT(target)[i]);
}

/* Knowledge distillation's gradient, added to dstudent: per row, weight T (softmax(s / T) - softmax(t / T)) / rows,
 * or for cols = 1 (regression) weight 2 (s - t) / rows. A work-item per row. */
__kernel void distillation_backward(TENSOR(float, dstudent), TENSOR(const float, student), TENSOR(const float, teacher), long rows, long cols,
                                    float temperature, float weight) {
    long i = get_global_id(0);
    if (i >= rows) return;
    __global const float *s = AT(student) + i * cols, *t = AT(teacher) + i * cols;
    __global float *d = AT(dstudent) + i * cols;
    if (cols == 1) {
        d[0] += weight * 2.0f * (s[0] - t[0]) / (float)rows;
        return;
    }
    float ms = -INFINITY, mt = -INFINITY, zs = 0.0f, zt = 0.0f;
    for (long c = 0; c < cols; c++) {
        ms = fmax(ms, s[c] / temperature);
        mt = fmax(mt, t[c] / temperature);
    }
    for (long c = 0; c < cols; c++) {
        zs += exp(s[c] / temperature - ms);
        zt += exp(t[c] / temperature - mt);
    }
    float scale = weight * temperature / (float)rows;
    for (long c = 0; c < cols; c++) d[c] += scale * (exp(s[c] / temperature - ms) / zs - exp(t[c] / temperature - mt) / zt);
}

/* Hidden-state matching's gradient (layer-wise distillation), added to dstudent: weight 2 (s - t) / (real x cols) on the rows
 * (tokens) whose mask is not 0 (real: their number, counted by each work-item; no mask: every row), nothing on padding rows.
 * A work-item per row. */
__kernel void hidden_match_backward(TENSOR(float, dstudent), TENSOR(const float, student), TENSOR(const float, teacher), TENSOR(const int, mask),
                                    long rows, long cols, float weight) {
    long i = get_global_id(0);
    if (i >= rows) return;
    long real = rows;
    if (mask_buf) {
        real = 0;
        for (long r = 0; r < rows; r++) real += AT(mask)[r] != 0;
        if (AT(mask)[i] == 0) return;
    }
    float scale = 2.0f * weight / ((float)real * (float)cols);
    __global const float *s = AT(student) + i * cols, *t = AT(teacher) + i * cols;
    __global float *d = AT(dstudent) + i * cols;
    for (long c = 0; c < cols; c++) d[c] += scale * (s[c] - t[c]);
}
