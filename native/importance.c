/* Mask gradients for structured importance. A head mask m_h scales head h's attention context
 * (ctx_h' = m_h ctx_h) and a neuron mask m_j the FFN activation (act_j' = m_j act_j); at m = 1,
 * dL/dm = sum over the example's tokens of x * dL/dx over the group's features. Computed from the
 * context/activation and their gradients that backward has anyway, per example, so Taylor (sum of
 * gradients) and Fisher (sum of squared per-example gradients) scores cost one pass each. */
#include "topa_cpu.h"

#include <omp.h>

void TOPA_FN(group_dot)(float *out, const float *x, const float *dx, int64_t B, int64_t S,
                        int64_t G, int64_t D) {
    int64_t width = G * D;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (B * S * width > 1 << 16)
    for (int64_t b = 0; b < B; b++) {
        float *o = out + b * G;
        for (int64_t g = 0; g < G; g++) o[g] = 0.0f;
        for (int64_t t = 0; t < S; t++) {
            const float *xr = x + (b * S + t) * width, *dr = dx + (b * S + t) * width;
            for (int64_t g = 0; g < G; g++) {
                float acc = 0.0f;
                for (int64_t d = 0; d < D; d++) acc += xr[g * D + d] * dr[g * D + d];
                o[g] += acc;
            }
        }
    }
}

/* out[rb, cb] = sum over the 32 x 32 block (rb, cb) of w * g (w, g [rows, cols] row-major, both
 * multiples of 32): a block's first-order Taylor term when g = dL/dw. A block-row per task; each
 * block's 32 rows summed in two 16-wide vectors. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));

void TOPA_FN(block_dot)(float *out, const float *w, const float *g, int64_t rows, int64_t cols) {
    int64_t cb = cols / 32;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (rows * cols > 1 << 16)
    for (int64_t rb = 0; rb < rows / 32; rb++)
        for (int64_t c = 0; c < cb; c++) {
            v16 a = {0}, b = {0};
            for (int64_t i = rb * 32; i < rb * 32 + 32; i++) {
                const float *wr = w + i * cols + c * 32, *gr = g + i * cols + c * 32;
                a += *(const v16 *)wr * *(const v16 *)gr;
                b += *(const v16 *)(wr + 16) * *(const v16 *)(gr + 16);
            }
            float s = 0.0f;
            for (int k = 0; k < 16; k++) s += a[k] + b[k];
            out[rb * cb + c] = s;
        }
}

/* out [cols, rows] = in^T + beta out for in [rows, cols]: small factors (LoRA's A and B). */
void TOPA_FN(transpose)(float *out, const float *in, int64_t rows, int64_t cols, float beta) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float v = in[i * cols + j];
            out[j * rows + i] = beta != 0.0f ? v + beta * out[j * rows + i] : v;
        }
}
