// out = (accumulate ? out : 0) + keep(i) in scale; the same call serves forward and backward.

__kernel void dropout(TENSOR(float, out), TENSOR(const float, in), long n, uint key, uint threshold, float scale, int accumulate) {
    long i = get_global_id(0);
    if (i >= n) return;
    float v = topa_dropout_keep((uint)i, key, threshold) ? AT(in)[i] * scale : 0.0f;
    AT(out)[i] = accumulate ? AT(out)[i] + v : v;
}
