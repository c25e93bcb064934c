/* Row softmax (max-subtracted) and its backward. */
#include "topa_cpu.h"

#include <omp.h>

void TOPA_FN(softmax_forward)(float *y, const float *x, int64_t rows, int64_t cols) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (rows * cols > 1 << 14)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float mx = xr[0];
        for (int64_t c = 1; c < cols; c++) mx = xr[c] > mx ? xr[c] : mx;
        float s = 0.0f;
        for (int64_t c = 0; c < cols; c++) {
            yr[c] = topa_expf(xr[c] - mx);
            s += yr[c];
        }
        float inv = 1.0f / s;
        for (int64_t c = 0; c < cols; c++) yr[c] *= inv;
    }
}

void TOPA_FN(softmax_backward)(float *dx, const float *dy, const float *y, int64_t rows,
                               int64_t cols) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (rows * cols > 1 << 14)
    for (int64_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * cols, *yr = y + r * cols;
        float *dxr = dx + r * cols;
        float dot = 0.0f;
        for (int64_t c = 0; c < cols; c++) dot += dyr[c] * yr[c];
        for (int64_t c = 0; c < cols; c++) dxr[c] = yr[c] * (dyr[c] - dot);
    }
}
