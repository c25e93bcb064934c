// 32 x 32 block-sparse linear layers (native/blocksparse.c): the kept blocks of the packed operand
// P [N, K] as values [kept][32 inputs][32 outputs], rowptr [N/32 + 1] and colidx [kept] (the
// structure built on the host from the mask). Only kept blocks are read or multiplied: the work is
// the kept blocks' FLOPs.

#define TOPA_SB 32

// values[k] = block k of W (or of W^T when transposed) gathered; a work-item per value
__kernel void bsr_pack(TENSOR(float, values), TENSOR(const float, w), long in, TENSOR(const int, rowptr), TENSOR(const int, colidx),
                       long rows, int transposed, long kept) {
    long e = get_global_id(0);
    if (e >= kept * TOPA_SB * TOPA_SB) return;
    long k = e / (TOPA_SB * TOPA_SB), i = e / TOPA_SB % TOPA_SB, o = e % TOPA_SB;
    long lo = 0, hi = rows; // the block-row r holding k: rowptr[r] <= k < rowptr[r + 1]
    while (hi - lo > 1) {
        long mid = (lo + hi) / 2;
        if (AT(rowptr)[mid] <= k) lo = mid;
        else hi = mid;
    }
    long r = lo, c = AT(colidx)[k], wr = transposed ? c : r, wc = transposed ? r : c;
    AT(values)[e] = transposed ? AT(w)[(wr * TOPA_SB + i) * in + wc * TOPA_SB + o] : AT(w)[(wr * TOPA_SB + o) * in + wc * TOPA_SB + i];
}

// Y[M, N] = X[M, K] P^T + beta Y + bias (+ scale U Lt: U [M, r], or with ublocks U [M, (K/32) r]
// summed over the block-row's kept blocks). values absent: the structure only, the term alone.
// A work-group of 256 per (block-row, 32 tokens): for each kept block of the row, the 32 x 32 tile
// of X and the block are staged in local memory and every work-item adds 32 products for each of
// its 4 tokens and its output -- the kept blocks' FLOPs, each operand read once per work-group.
__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void bsr_linear(long M, long N, long K, TENSOR(const float, x), TENSOR(const float, values), TENSOR(const int, rowptr),
                TENSOR(const int, colidx), TENSOR(const float, bias), float beta, TENSOR(float, y), long r, TENSOR(const float, u),
                TENSOR(const float, lt), float scale, int ublocks) {
    __local float xs[TOPA_SB][TOPA_SB + 1]; // [token][input], padded against bank conflicts
    __local float ws[TOPA_SB][TOPA_SB];     // [input][output]
    long rows = N / TOPA_SB, g = get_group_id(0), br = g % rows, m0 = g / rows * TOPA_SB;
    int lid = get_local_id(0), o = lid % TOPA_SB, tr = lid / TOPA_SB;
    __global const int *rp = AT(rowptr), *ci = AT(colidx);
    __global const float *xb = AT(x);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k = rp[br]; values_buf && k < rp[br + 1]; k++) {
        long col = (long)ci[k] * TOPA_SB;
        __global const float *v = AT(values) + (long)k * TOPA_SB * TOPA_SB;
        for (int j = 0; j < 4; j++) {
            int t = tr + 8 * j;
            xs[t][o] = m0 + t < M ? xb[(m0 + t) * K + col + o] : 0.0f;
            ws[t][o] = v[t * TOPA_SB + o];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int i = 0; i < TOPA_SB; i++) {
            float w = ws[i][o];
            for (int j = 0; j < 4; j++) acc[j] += xs[tr + 8 * j][i] * w;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    long n = br * TOPA_SB + o;
    for (int j = 0; j < 4; j++) {
        long m = m0 + tr + 8 * j;
        if (m >= M) break;
        float a = acc[j];
        for (long q = 0; q < r && u_buf; q++) {
            float uv = 0.0f;
            if (!ublocks) uv = AT(u)[m * r + q];
            else
                for (int k = rp[br]; k < rp[br + 1]; k++) uv += AT(u)[m * (K / TOPA_SB) * r + (long)ci[k] * r + q];
            a += scale * uv * AT(lt)[q * N + n];
        }
        __global float *yy = AT(y) + m * N + n;
        *yy = a + (beta != 0.0f ? beta * *yy : 0.0f) + (bias_buf ? AT(bias)[n] : 0.0f);
    }
}

// U[m, c r + q] = sum over input block c of X[m, c 32 + e] A[q, c 32 + e]; A [r, K]
__kernel void bsr_block_lowrank(TENSOR(float, u), TENSOR(const float, x), TENSOR(const float, a), long M, long K, long r) {
    long e = get_global_id(0), cb = K / TOPA_SB;
    if (e >= M * cb * r) return;
    long m = e / (cb * r), c = e / r % cb, q = e % r;
    float s = 0.0f;
    for (long i = c * TOPA_SB; i < c * TOPA_SB + TOPA_SB; i++) s += AT(x)[m * K + i] * AT(a)[q * K + i];
    AT(u)[e] = s;
}

// D[N, r] += scale sum_m DY[m, n] (U summed over block-row n/32's kept blocks)[m, q]; a work-item per (n, q)
__kernel void bsr_lowrank_grad(TENSOR(float, d), TENSOR(const float, dy), TENSOR(const int, rowptr), TENSOR(const int, colidx),
                               TENSOR(const float, u), long M, long N, long K, long r, float scale) {
    long e = get_global_id(0);
    if (e >= N * r) return;
    long n = e / r, q = e % r, br = n / TOPA_SB, cb = K / TOPA_SB;
    __global const int *rp = AT(rowptr), *ci = AT(colidx);
    if (rp[br] == rp[br + 1]) return;
    float acc = 0.0f;
    for (long m = 0; m < M; m++) {
        float us = 0.0f;
        for (int k = rp[br]; k < rp[br + 1]; k++) us += AT(u)[m * cb * r + (long)ci[k] * r + q];
        acc += us * AT(dy)[m * N + n];
    }
    AT(d)[e] += scale * acc;
}
