// Importance scores (native/importance.c): out[b, g] = sum over tokens and the group's features of
// x dx; out[rb, cb] = the sum of w g over the 32 x 32 block (rb, cb).

__kernel void group_dot(TENSOR(float, out), TENSOR(const float, x), TENSOR(const float, dx), long B, long S, long G, long D) {
    long e = get_global_id(0);
    if (e >= B * G) return;
    long b = e / G, g = e % G, width = G * D;
    float s = 0.0f;
    for (long t = 0; t < S; t++) {
        __global const float *xr = AT(x) + (b * S + t) * width + g * D, *dr = AT(dx) + (b * S + t) * width + g * D;
        float a = 0.0f;
        for (long d = 0; d < D; d++) a += xr[d] * dr[d];
        s += a;
    }
    AT(out)[e] = s;
}

__kernel void block_dot(TENSOR(float, out), TENSOR(const float, w), TENSOR(const float, g), long rows, long cols) {
    long e = get_global_id(0), cb = cols / 32;
    if (e >= rows / 32 * cb) return;
    long rb = e / cb, c = e % cb;
    float s = 0.0f;
    for (long i = rb * 32; i < rb * 32 + 32; i++)
        for (long j = c * 32; j < c * 32 + 32; j++) s += AT(w)[i * cols + j] * AT(g)[i * cols + j];
    AT(out)[e] = s;
}
