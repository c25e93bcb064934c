// Masked mean pooling over the sequence (native/pool.c): a sequence with no real token gives 0.

inline long topa_real_tokens(__global const int *mask, long b, long S) {
    if (!mask) return S;
    long n = 0;
    for (long t = 0; t < S; t++) n += mask[b * S + t] != 0;
    return n;
}

__kernel void mean_pool_forward(TENSOR(float, out), TENSOR(const float, x), TENSOR(const int, mask), long B, long S, long C) {
    long e = get_global_id(0);
    if (e >= B * C) return;
    long b = e / C, c = e % C;
    __global const int *m = AT(mask);
    long n = topa_real_tokens(m, b, S);
    float s = 0.0f;
    for (long t = 0; n > 0 && t < S; t++)
        if (!m || m[b * S + t]) s += AT(x)[(b * S + t) * C + c];
    AT(out)[e] = n > 0 ? s * (1.0f / (float)n) : 0.0f;
}

__kernel void mean_pool_backward(TENSOR(float, dx), TENSOR(const float, dout), TENSOR(const int, mask), long B, long S, long C) {
    long e = get_global_id(0);
    if (e >= B * S * C) return;
    long c = e % C, bt = e / C, b = bt / S;
    __global const int *m = AT(mask);
    long n = topa_real_tokens(m, b, S);
    float w = (m && !m[bt]) || n == 0 ? 0.0f : 1.0f / (float)n;
    AT(dx)[e] = w * AT(dout)[b * C + c];
}
