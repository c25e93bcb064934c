// Exact (erf) GELU with the bias add fused (native/gelu.c); the bias gradient is bias_backward's.

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

// Phi(u) from erfc of a non-negative argument, so both tails keep relative accuracy
inline float topa_normal_cdf(float u) {
    float e = 0.5f * erfc(fabs(u) * INV_SQRT2);
    return u < 0.0f ? e : 1.0f - e;
}

__kernel void bias_gelu_forward(TENSOR(float, out), TENSOR(const float, x), TENSOR(const float, bias), long rows, long cols) {
    long e = get_global_id(0);
    if (e >= rows * cols) return;
    float u = AT(x)[e] + (bias_buf ? AT(bias)[e % cols] : 0.0f);
    AT(out)[e] = u * topa_normal_cdf(u);
}

// dx = dy GELU'(x + bias); dx may alias dy
__kernel void bias_gelu_backward(TENSOR(float, dx), TENSOR(const float, dy), TENSOR(const float, x), TENSOR(const float, bias), long rows,
                                 long cols) {
    long e = get_global_id(0);
    if (e >= rows * cols) return;
    float u = AT(x)[e] + (bias_buf ? AT(bias)[e % cols] : 0.0f);
    float pdf = INV_SQRT_2PI * exp(-0.5f * u * u);
    AT(dx)[e] = AT(dy)[e] * (topa_normal_cdf(u) + u * pdf);
}
