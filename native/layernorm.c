/* LayerNorm over the last dimension, with the residual add fused into the forward pass (the sum
 * x + residual is formed once, in the same pass that reads it for the statistics). */
#include "topa_cpu.h"

#include <math.h>
#include <omp.h>

/* Row sums as 2 x 16 partial sums: a plain float loop is one serial chain of adds (the compiler may
 * not reorder them), four cycles per element -- it made LayerNorm 7% of a pruned model's inference. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));

static inline float hsum(v16 a) {
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += a[i];
    return s;
}

/* sum of h[c] */
static inline float row_sum(const float *h, int64_t n) {
    v16 a = {0}, b = {0};
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        a += *(const v16 *)(h + c);
        b += *(const v16 *)(h + c + 16);
    }
    float s = hsum(a + b);
    for (; c < n; c++) s += h[c];
    return s;
}

/* sum of (h[c] - m)^2 */
static inline float row_sq_dev(const float *h, float m, int64_t n) {
    v16 a = {0}, b = {0};
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        v16 d0 = *(const v16 *)(h + c) - m, d1 = *(const v16 *)(h + c + 16) - m;
        a += d0 * d0;
        b += d1 * d1;
    }
    float s = hsum(a + b);
    for (; c < n; c++) s += (h[c] - m) * (h[c] - m);
    return s;
}

/* sum of u[c] v[c] */
static inline float row_dot(const float *u, const float *v, int64_t n) {
    v16 a = {0}, b = {0};
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        a += *(const v16 *)(u + c) * *(const v16 *)(v + c);
        b += *(const v16 *)(u + c + 16) * *(const v16 *)(v + c + 16);
    }
    float s = hsum(a + b);
    for (; c < n; c++) s += u[c] * v[c];
    return s;
}

void TOPA_FN(layernorm_forward)(float *out, float *mean, float *rstd, float *sum, const float *x,
                                const float *residual, const float *gamma, const float *beta,
                                int64_t rows, int64_t cols, float eps) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (rows * cols > 1 << 14)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *o = out + r * cols;
        /* h is the LN input: x itself, or x + residual written to sum (else to out, as a temp) */
        float *h = (float *)xr;
        if (residual) {
            const float *rr = residual + r * cols;
            h = sum ? sum + r * cols : o;
            for (int64_t c = 0; c < cols; c++) h[c] = xr[c] + rr[c];
        }
        float m = row_sum(h, cols) / (float)cols;
        float v = row_sq_dev(h, m, cols);
        float s = 1.0f / sqrtf(v / (float)cols + eps);
        for (int64_t c = 0; c < cols; c++) o[c] = (h[c] - m) * s * gamma[c] + beta[c];
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = s;
    }
}

void TOPA_FN(layernorm_backward)(float *dx, float *dgamma, float *dbeta, const float *dy,
                                 const float *x, const float *mean, const float *rstd,
                                 const float *gamma, int64_t rows, int64_t cols, int accumulate) {
    int nth = topa_get_num_threads();
    int big = rows * cols > 1 << 14;
#pragma omp parallel for num_threads(nth) schedule(static) if (big)
    for (int64_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * cols, *xr = x + r * cols;
        float *dxr = dx + r * cols;
        float m = mean[r], s = rstd[r];
        float dmean = row_dot(dyr, gamma, cols) / (float)cols;
        float dmean_xhat; /* mean of dy gamma (x - m) s */
        {
            v16 a = {0};
            int64_t c = 0;
            for (; c + 16 <= cols; c += 16) a += *(const v16 *)(dyr + c) * *(const v16 *)(gamma + c) * (*(const v16 *)(xr + c) - m);
            float t = hsum(a);
            for (; c < cols; c++) t += dyr[c] * gamma[c] * (xr[c] - m);
            dmean_xhat = t * s / (float)cols;
        }
        for (int64_t c = 0; c < cols; c++) {
            float g = (dyr[c] * gamma[c] - dmean - (xr[c] - m) * s * dmean_xhat) * s;
            dxr[c] = accumulate ? dxr[c] + g : g;
        }
    }
    if (!dgamma && !dbeta) return;
    /* Parameter gradients: columns split between threads, rows summed in order (deterministic). */
#pragma omp parallel num_threads(nth) if (big)
    {
        int tid = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t c0, c1;
        topa_column_share(tid, n, cols, &c0, &c1);
        for (int64_t r = 0; r < rows; r++) {
            const float *dyr = dy + r * cols, *xr = x + r * cols;
            float m = mean[r], s = rstd[r];
            if (dgamma)
                for (int64_t c = c0; c < c1; c++) dgamma[c] += dyr[c] * (xr[c] - m) * s;
            if (dbeta)
                for (int64_t c = c0; c < c1; c++) dbeta[c] += dyr[c];
        }
    }
}
