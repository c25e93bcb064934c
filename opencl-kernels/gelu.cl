// Exact (erf) GELU with the bias add fused (native/gelu.c); the bias gradient is bias_backward's.

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

// erfc(z) for z >= 0, fractional error < 1.2e-7 (the CPU kernels' fit, native/topa_cpu.h): a
// polynomial and one exp, where a library erfc may be a slow scalar call
inline float topa_erfc_pos(float z) {
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * exp(-z * z + p);
}

// Phi(u) from erfc of a non-negative argument, so both tails keep relative accuracy
inline float topa_normal_cdf(float u) {
    float e = 0.5f * topa_erfc_pos(fabs(u) * INV_SQRT2);
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
