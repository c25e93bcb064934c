/* Dropout with a counter-based mask: element i of a tensor is kept iff
 * (topa_hash32(i ^ key) >> 8) >= threshold. The mask is a pure function of (key, i), so backward
 * regenerates what forward drew instead of storing it (no activation memory), and any other
 * implementation (the PyTorch reference) can draw the identical mask. */
#include "topa_cpu.h"

#include <omp.h>

void TOPA_FN(dropout)(float *out, const float *in, int64_t n, uint32_t key, uint32_t threshold,
                      float scale, int accumulate) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (n > 1 << 16)
    for (int64_t i = 0; i < n; i++) {
        float v = topa_dropout_keep((uint32_t)i, key, threshold) ? in[i] * scale : 0.0f;
        out[i] = accumulate ? out[i] + v : v;
    }
}
