// LayerNorm over the last dimension with the residual add fused (native/layernorm.c): a work-item
// per row; the parameter gradients a work-item per column, rows summed in order.

__kernel void layernorm_forward(TENSOR(float, out), TENSOR(float, mean), TENSOR(float, rstd), TENSOR(float, sum),
                                TENSOR(const float, x), TENSOR(const float, residual), TENSOR(const float, gamma),
                                TENSOR(const float, beta), long rows, long cols, float eps) {
    long r = get_global_id(0);
    if (r >= rows) return;
    __global const float *xr = AT(x) + r * cols;
    __global float *o = AT(out) + r * cols;
    __global const float *h = xr;
    if (residual_buf) { // h = x + residual, kept in sum (backward's input) or in out as a temporary
        __global const float *rr = AT(residual) + r * cols;
        __global float *hs = sum_buf ? AT(sum) + r * cols : o;
        for (long c = 0; c < cols; c++) hs[c] = xr[c] + rr[c];
        h = hs;
    }
    float s = 0.0f;
    for (long c = 0; c < cols; c++) s += h[c];
    float m = s / (float)cols, v = 0.0f;
    for (long c = 0; c < cols; c++) v += (h[c] - m) * (h[c] - m);
    float rs = 1.0f / sqrt(v / (float)cols + eps);
    __global const float *g = AT(gamma), *b = AT(beta);
    for (long c = 0; c < cols; c++) o[c] = (h[c] - m) * rs * g[c] + b[c];
    if (mean_buf) AT(mean)[r] = m;
    if (rstd_buf) AT(rstd)[r] = rs;
}

__kernel void layernorm_backward(TENSOR(float, dx), TENSOR(const float, dy), TENSOR(const float, x), TENSOR(const float, mean),
                                 TENSOR(const float, rstd), TENSOR(const float, gamma), long rows, long cols, int accumulate) {
    long r = get_global_id(0);
    if (r >= rows) return;
    __global const float *dyr = AT(dy) + r * cols, *xr = AT(x) + r * cols, *g = AT(gamma);
    __global float *dxr = AT(dx) + r * cols;
    float m = AT(mean)[r], s = AT(rstd)[r], dm = 0.0f, dmx = 0.0f;
    for (long c = 0; c < cols; c++) {
        dm += dyr[c] * g[c];
        dmx += dyr[c] * g[c] * (xr[c] - m);
    }
    dm /= (float)cols;
    dmx = dmx * s / (float)cols;
    for (long c = 0; c < cols; c++) {
        float d = (dyr[c] * g[c] - dm - (xr[c] - m) * s * dmx) * s;
        dxr[c] = accumulate ? dxr[c] + d : d;
    }
}

// dgamma += sum_r dy (x - mean) rstd, dbeta += sum_r dy (either may be absent)
__kernel void layernorm_backward_params(TENSOR(float, dgamma), TENSOR(float, dbeta), TENSOR(const float, dy), TENSOR(const float, x),
                                        TENSOR(const float, mean), TENSOR(const float, rstd), long rows, long cols) {
    long c = get_global_id(0);
    if (c >= cols) return;
    __global const float *d = AT(dy), *xx = AT(x), *m = AT(mean), *s = AT(rstd);
    float gs = 0.0f, bs = 0.0f;
    for (long r = 0; r < rows; r++) {
        float v = d[r * cols + c];
        gs += v * (xx[r * cols + c] - m[r]) * s[r];
        bs += v;
    }
    if (dgamma_buf) AT(dgamma)[c] += gs;
    if (dbeta_buf) AT(dbeta)[c] += bs;
}
