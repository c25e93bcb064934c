/* Exact (erf) GELU with the bias add fused in: the linear layer's GEMM writes x without bias, and
 * this pass adds the bias and applies GELU in one read and one write. Backward recomputes x + bias
 * instead of keeping a second activation. */
#include "topa_cpu.h"

#include <omp.h>

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

/* Phi(u) = 0.5 erfc(-u / sqrt 2), from the positive-argument erfc so both tails keep relative
 * accuracy. */
static inline float normal_cdf(float u) {
    float e = 0.5f * topa_erfc_pos((u < 0.0f ? -u : u) * INV_SQRT2);
    return u < 0.0f ? e : 1.0f - e;
}

void TOPA_FN(bias_gelu_forward)(float *out, const float *x, const float *bias, int64_t rows,
                                int64_t cols) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (rows * cols > 1 << 14)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *o = out + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            float u = xr[c] + (bias ? bias[c] : 0.0f);
            o[c] = u * normal_cdf(u);
        }
    }
}

void TOPA_FN(bias_gelu_backward)(float *dx, float *dbias, const float *dy, const float *x,
                                 const float *bias, int64_t rows, int64_t cols) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (rows * cols > 1 << 14)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols, *dyr = dy + r * cols;
        float *d = dx + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            float u = xr[c] + (bias ? bias[c] : 0.0f);
            float pdf = INV_SQRT_2PI * topa_expf(-0.5f * u * u);
            d[c] = dyr[c] * (normal_cdf(u) + u * pdf);
        }
    }
    if (dbias) TOPA_FN(bias_backward)(dbias, dx, rows, cols);
}
