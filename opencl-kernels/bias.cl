// The bias gradient of a linear layer: dbias += column sums of dy, a work-item per column summing
// the rows in order (deterministic, no atomics).

__kernel void bias_backward(TENSOR(float, dbias), TENSOR(const float, dy), long rows, long cols) {
    long c = get_global_id(0);
    if (c >= cols) return;
    __global const float *d = AT(dy);
    float s = 0.0f;
    for (long r = 0; r < rows; r++) s += d[r * cols + c];
    AT(dbias)[c] += s;
}
