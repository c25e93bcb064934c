// Multi-head scaled-dot-product attention (native/attention.c) over a fused QKV [B, S, 3 H D]:
// q at column h D, k at H D + h D, v at 2 H D + h D; mask [B, S] (1 real, 0 padding; absent: none);
// dropout on the probabilities with the CPU's counter-based mask, element ((b H + h) S + i) S + j.
//
// Forward: a work-item per (b, h, query row), one pass over the keys with a running maximum and
// rescaled sums (no S x S buffer); probs [B, H, S, S] written too when asked. Backward: one kernel
// per query row (P, the dropped P and dS into scratch [B H S S] each, and dq), then one per key row
// (dk, dv from the scratch). D <= 128.

#define TOPA_ATT_MAX_D 128

__kernel void attention_forward(TENSOR(float, out), TENSOR(float, probs), TENSOR(const float, qkv), TENSOR(const int, mask), long B, long S,
                                long H, long D, float scale, uint drop_key, uint drop_threshold, float drop_scale) {
    long t = get_global_id(0);
    if (t >= B * H * S) return;
    long i = t % S, bh = t / S, b = bh / H, h = bh % H, C = H * D, ld = 3 * C;
    __global const float *base = AT(qkv) + b * S * ld, *q = base + i * ld + h * D;
    __global const int *mb = mask_buf ? AT(mask) + b * S : 0;
    float acc[TOPA_ATT_MAX_D];
    for (long d = 0; d < D; d++) acc[d] = 0.0f;
    float mx = -INFINITY, l = 0.0f;
    uint row = (uint)((bh * S + i) * S);
    for (long j = 0; j < S; j++) {
        if (mb && !mb[j]) continue;
        __global const float *k = base + j * ld + C + h * D, *v = base + j * ld + 2 * C + h * D;
        float s = 0.0f;
        for (long d = 0; d < D; d++) s += q[d] * k[d];
        s *= scale;
        if (s > mx) { // rescale what was summed against the old maximum
            float f = exp(mx - s);
            l *= f;
            for (long d = 0; d < D; d++) acc[d] *= f;
            mx = s;
        }
        float e = exp(s - mx);
        l += e;
        float w = drop_threshold == 0 ? e : topa_dropout_keep(row + (uint)j, drop_key, drop_threshold) ? e * drop_scale : 0.0f;
        for (long d = 0; d < D; d++) acc[d] += w * v[d];
    }
    float inv = l > 0.0f ? 1.0f / l : 0.0f; // a row with no real key is all zeros
    __global float *o = AT(out) + (b * S + i) * C + h * D;
    for (long d = 0; d < D; d++) o[d] = acc[d] * inv;
    if (!probs_buf) return;
    __global float *p = AT(probs) + (bh * S + i) * S;
    for (long j = 0; j < S; j++) {
        if (mb && !mb[j]) {
            p[j] = 0.0f;
            continue;
        }
        __global const float *k = base + j * ld + C + h * D;
        float s = 0.0f;
        for (long d = 0; d < D; d++) s += q[d] * k[d];
        p[j] = exp(s * scale - mx) * inv;
    }
}

// Per query row: P (from probs, or recomputed) into pd; dP = dropout(dout v^T) into ds; then
// dS = P (dP - rowsum(dP P)) in ds, the dropped probabilities Pd in pd, and dq = scale dS k.
__kernel void attention_backward_rows(TENSOR(float, dqkv), TENSOR(float, pd), TENSOR(float, ds), TENSOR(const float, dout),
                                      TENSOR(const float, probs), TENSOR(const float, qkv), TENSOR(const int, mask), long B, long S, long H,
                                      long D, float scale, uint drop_key, uint drop_threshold, float drop_scale) {
    long t = get_global_id(0);
    if (t >= B * H * S) return;
    long i = t % S, bh = t / S, b = bh / H, h = bh % H, C = H * D, ld = 3 * C;
    __global const float *base = AT(qkv) + b * S * ld, *q = base + i * ld + h * D, *go = AT(dout) + (b * S + i) * C + h * D;
    __global const int *mb = mask_buf ? AT(mask) + b * S : 0;
    __global float *pr = AT(pd) + (bh * S + i) * S, *dr = AT(ds) + (bh * S + i) * S;
    uint row = (uint)((bh * S + i) * S);
    if (probs_buf) {
        __global const float *p = AT(probs) + (bh * S + i) * S;
        for (long j = 0; j < S; j++) pr[j] = p[j];
    } else { // the scores, then the masked softmax in place
        float mx = -INFINITY, l = 0.0f;
        for (long j = 0; j < S; j++) {
            if (mb && !mb[j]) continue;
            __global const float *k = base + j * ld + C + h * D;
            float s = 0.0f;
            for (long d = 0; d < D; d++) s += q[d] * k[d];
            pr[j] = s * scale;
            mx = fmax(mx, pr[j]);
        }
        for (long j = 0; j < S; j++) {
            float e = (mb && !mb[j]) ? 0.0f : exp(pr[j] - mx);
            pr[j] = e;
            l += e;
        }
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (long j = 0; j < S; j++) pr[j] *= inv;
    }
    float dot = 0.0f;
    for (long j = 0; j < S; j++) {
        float f = drop_threshold == 0 ? 1.0f : topa_dropout_keep(row + (uint)j, drop_key, drop_threshold) ? drop_scale : 0.0f;
        __global const float *v = base + j * ld + 2 * C + h * D;
        float g = 0.0f;
        for (long d = 0; d < D; d++) g += go[d] * v[d];
        dr[j] = g * f;
        dot += dr[j] * pr[j];
    }
    float acc[TOPA_ATT_MAX_D];
    for (long d = 0; d < D; d++) acc[d] = 0.0f;
    for (long j = 0; j < S; j++) {
        float f = drop_threshold == 0 ? 1.0f : topa_dropout_keep(row + (uint)j, drop_key, drop_threshold) ? drop_scale : 0.0f;
        float p = pr[j], g = p * (dr[j] - dot);
        dr[j] = g;
        pr[j] = p * f;
        __global const float *k = base + j * ld + C + h * D;
        for (long d = 0; d < D; d++) acc[d] += g * k[d];
    }
    __global float *dq = AT(dqkv) + (b * S + i) * ld + h * D;
    for (long d = 0; d < D; d++) dq[d] = scale * acc[d];
}

// Per key row j: dk = scale sum_i dS[i, j] q_i, dv = sum_i Pd[i, j] dout_i.
__kernel void attention_backward_cols(TENSOR(float, dqkv), TENSOR(const float, pd), TENSOR(const float, ds), TENSOR(const float, dout),
                                      TENSOR(const float, qkv), long B, long S, long H, long D, float scale) {
    long t = get_global_id(0);
    if (t >= B * H * S) return;
    long j = t % S, bh = t / S, b = bh / H, h = bh % H, C = H * D, ld = 3 * C;
    __global const float *base = AT(qkv) + b * S * ld, *pc = AT(pd) + bh * S * S + j, *dc = AT(ds) + bh * S * S + j;
    __global const float *go = AT(dout) + b * S * C + h * D;
    float dk[TOPA_ATT_MAX_D], dv[TOPA_ATT_MAX_D];
    for (long d = 0; d < D; d++) dk[d] = dv[d] = 0.0f;
    for (long i = 0; i < S; i++) {
        float s = dc[i * S], p = pc[i * S];
        __global const float *q = base + i * ld + h * D, *g = go + i * C;
        for (long d = 0; d < D; d++) {
            dk[d] += s * q[d];
            dv[d] += p * g[d];
        }
    }
    __global float *o = AT(dqkv) + (b * S + j) * ld + h * D;
    for (long d = 0; d < D; d++) {
        o[C + d] = scale * dk[d];
        o[2 * C + d] = dv[d];
    }
}
