/* LayerNorm over the last dimension, with the residual add fused into the forward pass (the sum
 * x + residual is formed once, in the same pass that reads it for the statistics). */
#include "topa_cpu.h"

#include <math.h>
#include <omp.h>

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
        float m = 0.0f;
        for (int64_t c = 0; c < cols; c++) m += h[c];
        m /= (float)cols;
        float v = 0.0f;
        for (int64_t c = 0; c < cols; c++) {
            float d = h[c] - m;
            v += d * d;
        }
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
        float dmean = 0.0f, dmean_xhat = 0.0f;
        for (int64_t c = 0; c < cols; c++) {
            float dn = dyr[c] * gamma[c];
            dmean += dn;
            dmean_xhat += dn * (xr[c] - m) * s;
        }
        dmean /= (float)cols;
        dmean_xhat /= (float)cols;
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
