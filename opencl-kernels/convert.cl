// Layout and storage: f32 <-> bf16 (round to nearest even, NaN stays NaN), transpose, row
// broadcast, the block-diagonal mask of a fused adapter, and a bias added to a product's rows (the
// GEMMs come from CLBlast, which has no bias epilogue).

__kernel void convert_f32_to_bf16(TENSOR(ushort, out), TENSOR(const float, in), long n) {
    long i = get_global_id(0);
    if (i >= n) return;
    AT(out)[i] = (ushort)topa_bf16_bits(AT(in)[i]);
}

__kernel void convert_bf16_to_f32(TENSOR(float, out), TENSOR(const ushort, in), long n) {
    long i = get_global_id(0);
    if (i >= n) return;
    AT(out)[i] = as_float((uint)AT(in)[i] << 16);
}

// out [cols, rows] = in^T + beta out
__kernel void transpose(TENSOR(float, out), TENSOR(const float, in), long rows, long cols, float beta) {
    long e = get_global_id(0);
    if (e >= rows * cols) return;
    long i = e / cols, j = e % cols;
    __global float *o = AT(out) + j * rows + i;
    float v = AT(in)[e];
    *o = beta != 0.0f ? v + beta * *o : v;
}

__kernel void broadcast_rows(TENSOR(float, y), TENSOR(const float, row), long rows, long cols) {
    long e = get_global_id(0);
    if (e >= rows * cols) return;
    AT(y)[e] = AT(row)[e % cols];
}

__kernel void zero_off_diagonal(TENSOR(float, t), long rows, long cols, int blocks) {
    long e = get_global_id(0);
    if (e >= rows * cols) return;
    long i = e / cols, j = e % cols;
    if (i / (rows / blocks) != j / (cols / blocks)) AT(t)[e] = 0.0f;
}

// c [rows, cols] (row stride ldc) += bias
__kernel void bias_add(TENSOR(float, c), TENSOR(const float, bias), long rows, long cols, long ldc) {
    long e = get_global_id(0);
    if (e >= rows * cols) return;
    long i = e / cols, j = e % cols;
    AT(c)[i * ldc + j] += AT(bias)[j];
}

// c [rows, cols] (row stride ldc) = beta c: a product with K = 0
__kernel void scale_matrix(TENSOR(float, c), long rows, long cols, long ldc, float beta) {
    long e = get_global_id(0);
    if (e >= rows * cols) return;
    __global float *p = AT(c) + e / cols * ldc + e % cols;
    *p = beta == 0.0f ? 0.0f : beta * *p;
}
