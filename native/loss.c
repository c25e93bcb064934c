/* Task losses: softmax cross-entropy for classification heads, mean squared error for regression
 * (STS-B). Means are summed in double, in row order, so they do not depend on the thread count. */
#include "topa_cpu.h"

#include <math.h>
#include <omp.h>

static float row_logsumexp(const float *x, int64_t C) {
    float mx = x[0];
    for (int64_t c = 1; c < C; c++) mx = x[c] > mx ? x[c] : mx;
    float s = 0.0f;
    for (int64_t c = 0; c < C; c++) s += topa_expf(x[c] - mx);
    return mx + logf(s);
}

int TOPA_FN(cross_entropy_forward)(float *losses, float *mean, const float *logits,
                                   const int32_t *labels, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++)
        if (labels[i] >= C) return (int)(1 + i);
    double total = 0.0;
    int64_t counted = 0;
    for (int64_t i = 0; i < N; i++) {
        const float *x = logits + i * C;
        float l = labels[i] < 0 ? 0.0f : row_logsumexp(x, C) - x[labels[i]];
        losses[i] = l;
        total += l;
        counted += labels[i] >= 0;
    }
    *mean = counted ? (float)(total / (double)counted) : 0.0f;
    return 0;
}

void TOPA_FN(cross_entropy_backward)(float *dlogits, const float *logits, const int32_t *labels,
                                     int64_t N, int64_t C, float dloss) {
    int64_t counted = 0;
    for (int64_t i = 0; i < N; i++) counted += labels[i] >= 0;
    float scale = counted ? dloss / (float)counted : 0.0f;
    for (int64_t i = 0; i < N; i++) {
        const float *x = logits + i * C;
        float *d = dlogits + i * C;
        if (labels[i] < 0) {
            for (int64_t c = 0; c < C; c++) d[c] = 0.0f;
            continue;
        }
        float lse = row_logsumexp(x, C);
        for (int64_t c = 0; c < C; c++)
            d[c] = scale * (topa_expf(x[c] - lse) - (c == labels[i] ? 1.0f : 0.0f));
    }
}

float TOPA_FN(mse_forward)(const float *pred, const float *target, int64_t N) {
    double s = 0.0;
    for (int64_t i = 0; i < N; i++) {
        double d = (double)pred[i] - (double)target[i];
        s += d * d;
    }
    return N ? (float)(s / (double)N) : 0.0f;
}

void TOPA_FN(mse_backward)(float *dpred, const float *pred, const float *target, int64_t N,
                           float dloss) {
    float scale = N ? 2.0f * dloss / (float)N : 0.0f;
    for (int64_t i = 0; i < N; i++) dpred[i] = scale * (pred[i] - target[i]);
}
