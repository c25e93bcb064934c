/* Mask-aware mean pooling over the sequence: the sentence representation a task head reads. */
#include "topa_cpu.h"

#include <omp.h>

static int64_t real_tokens(const int32_t *mask, int64_t b, int64_t S) {
    if (!mask) return S;
    int64_t n = 0;
    for (int64_t t = 0; t < S; t++) n += mask[b * S + t] != 0;
    return n;
}

void TOPA_FN(mean_pool_forward)(float *out, const float *x, const int32_t *mask, int64_t B, int64_t S,
                                int64_t C) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (B * S * C > 1 << 16)
    for (int64_t b = 0; b < B; b++) {
        float *o = out + b * C;
        for (int64_t c = 0; c < C; c++) o[c] = 0.0f;
        int64_t n = real_tokens(mask, b, S);
        if (n == 0) continue;
        for (int64_t t = 0; t < S; t++) {
            if (mask && !mask[b * S + t]) continue;
            const float *row = x + (b * S + t) * C;
            for (int64_t c = 0; c < C; c++) o[c] += row[c];
        }
        float inv = 1.0f / (float)n;
        for (int64_t c = 0; c < C; c++) o[c] *= inv;
    }
}

void TOPA_FN(mean_pool_backward)(float *dx, const float *dout, const int32_t *mask, int64_t B,
                                 int64_t S, int64_t C) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (B * S * C > 1 << 16)
    for (int64_t b = 0; b < B; b++) {
        int64_t n = real_tokens(mask, b, S);
        float inv = n ? 1.0f / (float)n : 0.0f;
        for (int64_t t = 0; t < S; t++) {
            float w = (mask && !mask[b * S + t]) ? 0.0f : inv;
            float *d = dx + (b * S + t) * C;
            const float *g = dout + b * C;
            for (int64_t c = 0; c < C; c++) d[c] = w * g[c];
        }
    }
}
