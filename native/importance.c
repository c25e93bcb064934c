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
