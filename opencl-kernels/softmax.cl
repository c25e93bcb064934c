// Row softmax (max-subtracted) and its backward dx = y (dy - sum(dy y)): a work-item per row.

__kernel void softmax_forward(TENSOR(float, y), TENSOR(const float, x), long rows, long cols) {
    long r = get_global_id(0);
    if (r >= rows) return;
    __global const float *xr = AT(x) + r * cols;
    __global float *yr = AT(y) + r * cols;
    float mx = xr[0], s = 0.0f;
    for (long c = 1; c < cols; c++) mx = fmax(mx, xr[c]);
    for (long c = 0; c < cols; c++) s += yr[c] = exp(xr[c] - mx);
    float inv = 1.0f / s;
    for (long c = 0; c < cols; c++) yr[c] *= inv;
}

__kernel void softmax_backward(TENSOR(float, dx), TENSOR(const float, dy), TENSOR(const float, y), long rows, long cols) {
    long r = get_global_id(0);
    if (r >= rows) return;
    __global const float *dyr = AT(dy) + r * cols, *yr = AT(y) + r * cols;
    __global float *dxr = AT(dx) + r * cols;
    float dot = 0.0f;
    for (long c = 0; c < cols; c++) dot += dyr[c] * yr[c];
    for (long c = 0; c < cols; c++) dxr[c] = yr[c] * (dyr[c] - dot);
}
