/* AdamW with PyTorch's semantics: decoupled weight decay p -= lr * wd * p, then the bias-corrected
 * Adam update p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps). */
#include "topa_cpu.h"

#include <math.h>
#include <omp.h>

void TOPA_FN(adamw_step)(float *param, const float *grad, float *m, float *v, int64_t n, double lr,
                         double beta1, double beta2, double eps, double weight_decay, int64_t t,
                         float grad_scale) {
    /* scalars in double, as PyTorch forms them in Python, then rounded once */
    float b1 = (float)beta1, b2 = (float)beta2, one_b1 = (float)(1.0 - beta1), one_b2 = (float)(1.0 - beta2);
    float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(beta2, (double)t)));
    float step = (float)(lr / (1.0 - pow(beta1, (double)t)));
    float decay = (float)(1.0 - lr * weight_decay);
    float epsf = (float)eps;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (n > 1 << 16)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float mi = b1 * m[i] + one_b1 * g;
        float vi = b2 * v[i] + one_b2 * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - step * mi / (sqrtf(vi) * inv_sqrt_bc2 + epsf);
    }
}

double TOPA_FN(sum_squares)(const float *x, int64_t n) {
    double total = 0.0;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) reduction(+ : total) if (n > 1 << 16)
    for (int64_t i = 0; i < n; i++) total += (double)x[i] * (double)x[i];
    return total;
}
