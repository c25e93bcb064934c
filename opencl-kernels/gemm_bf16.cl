// Products with a bf16 weight (native/gemm_bf16.c): op(B) [k, n] packed row-major in bf16 (half the
// memory of fp32; from W^T or W), A fp32 rounded to bf16 as it is read, sums in fp32, an optional
// rank-r fp32 term (LoRA) in the same pass. CLBlast has no bf16 GEMM, so this is topa's own: a
// work-group of 256 per 16 x 16 tile of C, A and B tiles staged in local memory.

#define TOPA_BT 16

// packed [k, n] = bf16(W^T) for W [n, k] (transposed), or bf16(W) for W [k, n]
__kernel void bf16_pack_b(TENSOR(ushort, packed), TENSOR(const float, w), long k, long n, int transposed) {
    long e = get_global_id(0);
    if (e >= k * n) return;
    long kk = e / n, nn = e % n;
    AT(packed)[e] = (ushort)topa_bf16_bits(transposed ? AT(w)[nn * k + kk] : AT(w)[e]);
}

// C [m, n] = alpha (A op(B) + scale2 A2 op(B2)) + beta C + bias; A2 [m, r], B2 [n, r] (trans_b2) or [r, n]
__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void bf16_gemm(long M, long N, long K, float alpha, TENSOR(const float, a), TENSOR(const ushort, b), float beta, TENSOR(float, c),
               TENSOR(const float, bias), long r, TENSOR(const float, a2), float scale2, int trans_b2, TENSOR(const float, b2)) {
    __local float as[TOPA_BT][TOPA_BT + 1], bs[TOPA_BT][TOPA_BT + 1];
    long tiles = (N + TOPA_BT - 1) / TOPA_BT, g = get_group_id(0);
    int lid = get_local_id(0), ti = lid / TOPA_BT, tj = lid % TOPA_BT;
    long i = g / tiles * TOPA_BT + ti, j = g % tiles * TOPA_BT + tj;
    __global const float *A = AT(a);
    __global const ushort *B = AT(b);
    float acc = 0.0f;
    for (long k0 = 0; k0 < K; k0 += TOPA_BT) {
        as[ti][tj] = i < M && k0 + tj < K ? topa_bf16_round(A[i * K + k0 + tj]) : 0.0f;
        bs[ti][tj] = k0 + ti < K && j < N ? as_float((uint)B[(k0 + ti) * N + j] << 16) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int q = 0; q < TOPA_BT; q++) acc += as[ti][q] * bs[q][tj];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (i >= M || j >= N) return;
    float low = 0.0f;
    for (long q = 0; q < r; q++) low += AT(a2)[i * r + q] * (trans_b2 ? AT(b2)[j * r + q] : AT(b2)[q * N + j]);
    __global float *cc = AT(c) + i * N + j;
    *cc = alpha * (acc + scale2 * low) + (beta != 0.0f ? beta * *cc : 0.0f) + (bias_buf ? AT(bias)[j] : 0.0f);
}
