/* Multi-head scaled-dot-product attention. Each (batch, head) pair is one task for one thread:
 * scores = scale Q K^T and the probabilities live in one S x S buffer (the saved probs, or the
 * thread's scratch), the masked softmax runs in place on it, and out = P V. The two products run
 * on the packed single-thread GEMM, so the work is GEMM-bound, not loop-bound. */
#include "topa_cpu.h"

#include <omp.h>

/* In-place softmax over one row of scores; padding keys (mask 0) get probability 0, and a row
 * with no real key at all becomes all zeros rather than NaN. */
static void masked_softmax_row(float *p, const int32_t *mask, int64_t S) {
    float mx = -3.0e38f;
    int any = 0;
    for (int64_t j = 0; j < S; j++)
        if (!mask || mask[j]) {
            mx = p[j] > mx ? p[j] : mx;
            any = 1;
        }
    if (!any) {
        for (int64_t j = 0; j < S; j++) p[j] = 0.0f;
        return;
    }
    float s = 0.0f;
    for (int64_t j = 0; j < S; j++) {
        float e = (!mask || mask[j]) ? topa_expf(p[j] - mx) : 0.0f;
        p[j] = e;
        s += e;
    }
    float inv = 1.0f / s;
    for (int64_t j = 0; j < S; j++) p[j] *= inv;
}

int TOPA_FN(attention_forward)(float *out, int64_t ldo, float *probs, const float *q,
                                const float *k, const float *v, int64_t ld, const int32_t *mask,
                                int64_t B, int64_t S, int64_t H, int64_t D, float scale) {
    int failed = 0;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(dynamic, 1) if (B * H > 1)
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H;
        float *p = probs ? probs + bh * S * S : topa_thread_scratch(TOPA_SCRATCH_ATTENTION, S * S);
        if (!p) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        const float *qb = q + b * S * ld + h * D, *kb = k + b * S * ld + h * D,
                    *vb = v + b * S * ld + h * D;
        const int32_t *mb = mask ? mask + b * S : NULL;
        int st = TOPA_FN(sgemm_serial)(0, 1, S, S, D, scale, qb, ld, kb, ld, 0.0f, p, S);
        for (int64_t i = 0; i < S; i++) masked_softmax_row(p + i * S, mb, S);
        st |= TOPA_FN(sgemm_serial)(0, 0, S, D, S, 1.0f, p, S, vb, ld, 0.0f,
                                    out + b * S * ldo + h * D, ldo);
        if (st) {
#pragma omp atomic write
            failed = 1;
        }
    }
    return failed ? TOPA_ERR_ALLOC : 0;
}

int TOPA_FN(attention_backward)(float *dq, float *dk, float *dv, int64_t ldd, const float *dout,
                                int64_t ldo, const float *probs, const float *q, const float *k,
                                const float *v, int64_t ld, int64_t B, int64_t S, int64_t H,
                                int64_t D, float scale) {
    int failed = 0;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(dynamic, 1) if (B * H > 1)
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H;
        float *ds = topa_thread_scratch(TOPA_SCRATCH_ATTENTION, S * S);
        if (!ds) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        const float *p = probs + bh * S * S;
        int64_t off = b * S * ld + h * D, offd = b * S * ldd + h * D;
        const float *dob = dout + b * S * ldo + h * D;
        /* dP = dO V^T, then dS = P * (dP - rowsum(dP * P)) in place */
        int st = TOPA_FN(sgemm_serial)(0, 1, S, S, D, 1.0f, dob, ldo, v + off, ld, 0.0f, ds, S);
        for (int64_t i = 0; i < S; i++) {
            float *dr = ds + i * S;
            const float *pr = p + i * S;
            float dot = 0.0f;
            for (int64_t j = 0; j < S; j++) dot += dr[j] * pr[j];
            for (int64_t j = 0; j < S; j++) dr[j] = pr[j] * (dr[j] - dot);
        }
        st |= TOPA_FN(sgemm_serial)(0, 0, S, D, S, scale, ds, S, k + off, ld, 0.0f, dq + offd, ldd);
        st |= TOPA_FN(sgemm_serial)(1, 0, S, D, S, scale, ds, S, q + off, ld, 0.0f, dk + offd, ldd);
        st |= TOPA_FN(sgemm_serial)(1, 0, S, D, S, 1.0f, p, S, dob, ldo, 0.0f, dv + offd, ldd);
        if (st) {
#pragma omp atomic write
            failed = 1;
        }
    }
    return failed ? TOPA_ERR_ALLOC : 0;
}
