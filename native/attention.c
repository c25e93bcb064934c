/* Multi-head scaled-dot-product attention. Each (batch, head) pair is one task for one thread:
 * scores = scale Q K^T and the probabilities live in one S x S buffer (the saved probs, or the
 * thread's scratch), the masked softmax runs in place on it, and out = P V. Backward can
 * recompute P per head instead of reading a saved [B, H, S, S] tensor: two small GEMMs per head
 * buy back the largest activation of a training step. The two products run
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

/* P = masked softmax(scale Q K^T) of one (batch, head) into p [S, S]. */
static int head_probs(float *p, const float *qb, const float *kb, int64_t ld, const int32_t *mb,
                      int64_t S, int64_t D, float scale) {
    int st = TOPA_FN(sgemm_serial)(0, 1, S, S, D, scale, qb, ld, kb, ld, 0.0f, p, S);
    for (int64_t i = 0; i < S; i++) masked_softmax_row(p + i * S, mb, S);
    return st;
}

/* pd = dropout(p) for the [S, S] block of head bh (may alias). */
static void head_dropout(float *pd, const float *p, int64_t bh, int64_t S, uint32_t key,
                         uint32_t threshold, float scale) {
    uint32_t base = (uint32_t)(bh * S * S);
    for (int64_t e = 0; e < S * S; e++)
        pd[e] = topa_dropout_keep(base + (uint32_t)e, key, threshold) ? p[e] * scale : 0.0f;
}

int TOPA_FN(attention_forward)(float *out, int64_t ldo, float *probs, const float *q,
                                const float *k, const float *v, int64_t ld, const int32_t *mask,
                                int64_t B, int64_t S, int64_t H, int64_t D, float scale,
                                uint32_t drop_key, uint32_t drop_threshold, float drop_scale) {
    int failed = 0;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(dynamic, 1) if (B * H > 1)
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H;
        float *p = probs ? probs + bh * S * S : topa_thread_scratch(TOPA_SCRATCH_ATTENTION, S * S);
        float *pd = drop_threshold ? topa_thread_scratch(TOPA_SCRATCH_ATTENTION_P, S * S) : p;
        if (!p || !pd) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        int64_t off = b * S * ld + h * D;
        int st = head_probs(p, q + off, k + off, ld, mask ? mask + b * S : NULL, S, D, scale);
        if (drop_threshold) head_dropout(pd, p, bh, S, drop_key, drop_threshold, drop_scale);
        st |= TOPA_FN(sgemm_serial)(0, 0, S, D, S, 1.0f, pd, S, v + off, ld, 0.0f,
                                    out + b * S * ldo + h * D, ldo);
        if (st) {
#pragma omp atomic write
            failed = 1;
        }
    }
    return failed ? TOPA_ERR_ALLOC : 0;
}

/* Sequences packed end to end (no padding): sequence b is rows starts[b] .. starts[b + 1] of q, k, v
 * and out; every (sequence, head) pair is one task, as above, in one parallel region. */
int TOPA_FN(attention_forward_packed)(float *out, int64_t ldo, const float *q, const float *k, const float *v, int64_t ld,
                                       const int32_t *starts, int64_t B, int64_t H, int64_t D, float scale) {
    int failed = 0;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(dynamic, 1) if (B * H > 1)
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H, row = starts[b], S = starts[b + 1] - starts[b];
        float *p = topa_thread_scratch(TOPA_SCRATCH_ATTENTION, S * S);
        if (!p) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        int64_t off = row * ld + h * D;
        int st = head_probs(p, q + off, k + off, ld, NULL, S, D, scale);
        st |= TOPA_FN(sgemm_serial)(0, 0, S, D, S, 1.0f, p, S, v + off, ld, 0.0f, out + row * ldo + h * D, ldo);
        if (st) {
#pragma omp atomic write
            failed = 1;
        }
    }
    return failed ? TOPA_ERR_ALLOC : 0;
}

int TOPA_FN(attention_backward)(float *dq, float *dk, float *dv, int64_t ldd, const float *dout,
                                int64_t ldo, const float *probs, const float *q, const float *k,
                                const float *v, int64_t ld, const int32_t *mask, int64_t B,
                                int64_t S, int64_t H, int64_t D, float scale, uint32_t drop_key,
                                uint32_t drop_threshold, float drop_scale) {
    int failed = 0;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(dynamic, 1) if (B * H > 1)
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H;
        float *ds = topa_thread_scratch(TOPA_SCRATCH_ATTENTION, S * S);
        float *p = probs ? (float *)probs + bh * S * S : topa_thread_scratch(TOPA_SCRATCH_ATTENTION_P, S * S);
        if (!ds || !p) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        int64_t off = b * S * ld + h * D, offd = b * S * ldd + h * D;
        const float *dob = dout + b * S * ldo + h * D;
        int st = probs ? 0 : head_probs(p, q + off, k + off, ld, mask ? mask + b * S : NULL, S, D, scale);
        /* dV = Pd^T dO, with Pd (the dropped probabilities) formed in ds before ds is needed */
        const float *pd = p;
        if (drop_threshold) {
            head_dropout(ds, p, bh, S, drop_key, drop_threshold, drop_scale);
            pd = ds;
        }
        st |= TOPA_FN(sgemm_serial)(1, 0, S, D, S, 1.0f, pd, S, dob, ldo, 0.0f, dv + offd, ldd);
        /* dPd = dO V^T; dP = dropout(dPd); dS = P * (dP - rowsum(dP * P)), in place */
        st |= TOPA_FN(sgemm_serial)(0, 1, S, S, D, 1.0f, dob, ldo, v + off, ld, 0.0f, ds, S);
        if (drop_threshold) head_dropout(ds, ds, bh, S, drop_key, drop_threshold, drop_scale);
        for (int64_t i = 0; i < S; i++) {
            float *dr = ds + i * S;
            const float *pr = p + i * S;
            float dot = 0.0f;
            for (int64_t j = 0; j < S; j++) dot += dr[j] * pr[j];
            for (int64_t j = 0; j < S; j++) dr[j] = pr[j] * (dr[j] - dot);
        }
        st |= TOPA_FN(sgemm_serial)(0, 0, S, D, S, scale, ds, S, k + off, ld, 0.0f, dq + offd, ldd);
        st |= TOPA_FN(sgemm_serial)(1, 0, S, D, S, scale, ds, S, q + off, ld, 0.0f, dk + offd, ldd);
        if (st) {
#pragma omp atomic write
            failed = 1;
        }
    }
    return failed ? TOPA_ERR_ALLOC : 0;
}
