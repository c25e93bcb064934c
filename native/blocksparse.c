/* Block-sparse linear layers: W [out, in] kept only in 32 x 32 blocks (block-sparse rows: for each
 * block-row of 32 outputs, the kept 32-wide input blocks). Y = X W^T + bias (+ a rank-r LoRA term)
 * reads X straight from memory -- each input is broadcast against 32 contiguous output weights --
 * so the work is the kept blocks' FLOPs at the dense micro-kernel's shape (MR tokens x 32 outputs).
 * The input gradient dX = dY W is the same kernel over W^T's blocks (packed with transposed = 1).
 * Dimensions must be multiples of 32. */
#include "topa_cpu.h"

#include <omp.h>
#include <stdlib.h>

/* Block edge: 32 in the engine (BlockSparseWeight.BLOCK); bench/blockshape.sh compiles this file
 * with 16 and 64 too, to compare. SBV 16-float vectors span one block-row of outputs. */
#ifndef SB
#define SB 32
#endif
#define SBV (SB / 16)
#define SMR 12

typedef float v16 __attribute__((vector_size(64), aligned(4)));

int64_t TOPA_FN(bsr_kept_blocks)(const uint8_t *mask, int64_t out, int64_t in) {
    int64_t n = 0;
    for (int64_t i = 0; i < (out / SB) * (in / SB); i++) n += mask[i] != 0;
    return n;
}

/* mask [out/32][in/32] (of W). transposed: pack W^T [in, out] (its block-rows are W's block-columns).
 * values NULL: the structure only (rowptr, colidx), for a weight whose product runs dense.
 * values [kept][32 inputs][32 outputs] (each input's 32 output weights contiguous), rowptr
 * [rows + 1], colidx [kept]: block-rows of the packed operand, in increasing column order. */
void TOPA_FN(bsr_pack)(const float *W, int64_t out, int64_t in, const uint8_t *mask, int transposed, float *values,
                       int32_t *rowptr, int32_t *colidx) {
    int64_t ob = out / SB, ib = in / SB, rows = transposed ? ib : ob, cols = transposed ? ob : ib, k = 0;
    rowptr[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            int64_t wr = transposed ? c : r, wc = transposed ? r : c; /* block of W */
            if (!mask[wr * ib + wc]) continue;
            if (!values) { /* structure only */
                colidx[k++] = (int32_t)c;
                continue;
            }
            float *v = values + k * SB * SB;
            for (int64_t i = 0; i < SB; i++)     /* input of the packed operand */
                for (int64_t o = 0; o < SB; o++) /* output of the packed operand */
                    v[i * SB + o] = transposed ? W[(wr * SB + i) * in + wc * SB + o] : W[(wr * SB + o) * in + wc * SB + i];
            colidx[k++] = (int32_t)c;
        }
        rowptr[r + 1] = (int32_t)k;
    }
}

/* Y[M, N] = alpha * X[M, K] P^T + beta Y + bias, P the packed operand [N, K] in blocks; optional
 * low-rank term scale * U[M, r] Lt[r, N] (LoRA: U = x A^T, Lt = B^T; or U = dy B, Lt = A). With
 * ublocks the term is masked like P: U is [M, (K/32) r], one rank-r product per input block, and
 * block-row br adds (the sum of U over its kept blocks) Lt[:, br] -- i.e. Y gets X (M o (B A))^T,
 * the adapter's update only inside the kept blocks. */
int TOPA_FN(bsr_linear)(int64_t M, int64_t N, int64_t K, const float *X, int64_t ldx, const float *values,
                        const int32_t *rowptr, const int32_t *colidx, const float *bias, float beta, float *Y,
                        int64_t ldy, int64_t r, const float *U, const float *Lt, float scale, int ublocks) {
    if (N % SB || K % SB) return 1;
    int64_t tiles = (M + SMR - 1) / SMR, rows = N / SB;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(dynamic, 4) if (M * N > 1 << 14)
    for (int64_t t = 0; t < tiles; t++) {
        int64_t m0 = t * SMR, mr = M - m0 < SMR ? M - m0 : SMR;
        const float *xr[SMR];
        for (int i = 0; i < SMR; i++) xr[i] = X + (m0 + (i < mr ? i : 0)) * ldx; /* rows past M repeat row 0, never stored */
        for (int64_t br = 0; br < rows; br++) {
            v16 acc[SMR][SBV];
            for (int i = 0; i < SMR; i++)
                for (int j = 0; j < SBV; j++) acc[i][j] = (v16){0};
            for (int32_t k = rowptr[br]; values && k < rowptr[br + 1]; k++) { /* no values: structure only, the term alone */
                const float *v = values + (int64_t)k * SB * SB;
                int64_t col = (int64_t)colidx[k] * SB;
                for (int64_t e = 0; e < SB; e++) {
                    v16 w[SBV];
                    for (int j = 0; j < SBV; j++) w[j] = *(const v16 *)(v + e * SB + 16 * j);
                    for (int i = 0; i < SMR; i++) {
                        float xv = xr[i][col + e];
                        for (int j = 0; j < SBV; j++) acc[i][j] += xv * w[j];
                    }
                }
            }
            int64_t n0 = br * SB;
            for (int64_t q = 0; q < r && U; q++) {
                v16 l[SBV];
                for (int j = 0; j < SBV; j++) l[j] = *(const v16 *)(Lt + q * N + n0 + 16 * j);
                for (int i = 0; i < SMR; i++) {
                    int64_t row = m0 + (i < mr ? i : 0);
                    float uv = 0.0f;
                    if (!ublocks) {
                        uv = U[row * r + q];
                    } else {
                        const float *ur = U + row * (K / SB) * r + q;
                        for (int32_t k = rowptr[br]; k < rowptr[br + 1]; k++) uv += ur[(int64_t)colidx[k] * r];
                    }
                    uv *= scale;
                    for (int j = 0; j < SBV; j++) acc[i][j] += uv * l[j];
                }
            }
            for (int64_t i = 0; i < mr; i++) {
                float *y = Y + (m0 + i) * ldy + n0;
                for (int j = 0; j < SB; j++) {
                    float a = acc[i][j / 16][j % 16];
                    y[j] = a + (beta != 0.0f ? beta * y[j] : 0.0f) + (bias ? bias[n0 + j] : 0.0f);
                }
            }
        }
    }
    return 0;
}

/* U[M, (K/32) r]: U[m, c r + q] = sum over input block c of X[m, c 32 + e] A[q, c 32 + e] -- the
 * rank-r product one 32-wide input block at a time, what the masked low-rank term of bsr_linear
 * sums over each block-row's kept blocks. A is [r, K] (r <= 64). A is first transposed into
 * At[K][rp] (rp = r rounded up to 16, zero-padded), so each (row, block) is 32 broadcast FMAs into
 * rp/16 accumulators instead of r dot products with horizontal sums. */
int TOPA_FN(bsr_block_lowrank)(int64_t M, int64_t K, int64_t r, const float *X, int64_t ldx, const float *A, float *U) {
    int64_t cb = K / SB, rp = (r + 15) / 16 * 16, nv = rp / 16;
    float *At = aligned_alloc(64, (size_t)(K * rp * sizeof(float)));
    if (!At) return -1; /* U untouched: the caller raises out-of-memory */
    for (int64_t k = 0; k < K; k++)
        for (int64_t q = 0; q < rp; q++) At[k * rp + q] = q < r ? A[q * K + k] : 0.0f;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (M * K * r > 1 << 16)
    for (int64_t m = 0; m < M; m++) {
        const float *x = X + m * ldx;
        float *u = U + m * cb * r;
        for (int64_t c = 0; c < cb; c++) {
            v16 acc[4] = {{0}, {0}, {0}, {0}};
            const float *at = At + c * SB * rp; /* block c's SB inputs */
            for (int64_t e = 0; e < SB; e++) {
                float xv = x[c * SB + e];
                for (int64_t v = 0; v < nv; v++) acc[v] += xv * *(const v16 *)(at + e * rp + v * 16);
            }
            for (int64_t q = 0; q < r; q++) u[c * r + q] = acc[q / 16][q % 16];
        }
    }
    free(At);
    return 0;
}

/* D[N, r] += scale * sum_m DY[m, n] Us_br(n)[m, :], Us_br the sum of U[m, colidx[k] r ...] over the
 * kept blocks k of block-row br = n / 32 of the packed P [N, K] (U [M, (K/32) r] from
 * bsr_block_lowrank): the masked low-rank term's weight gradient -- dB with P = W, U = x A^T per
 * block and DY = dy; dA^T with P = W^T, U = dy B per block and DY = x. Block-rows run in parallel. */
void TOPA_FN(bsr_lowrank_grad)(int64_t M, int64_t N, int64_t K, int64_t r, const float *DY, int64_t lddy, const int32_t *rowptr,
                               const int32_t *colidx, const float *U, float scale, float *D) {
    int64_t rows = N / SB, cb = K / SB;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(dynamic, 1) if (M * N * r > 1 << 16)
    for (int64_t br = 0; br < rows; br++) {
        if (rowptr[br] == rowptr[br + 1]) continue; /* nothing kept: the term is zero here */
        v16 acc[64][SBV]; /* r <= 64 */
        float us[64];
        for (int64_t q = 0; q < r; q++)
            for (int j = 0; j < SBV; j++) acc[q][j] = (v16){0};
        for (int64_t m = 0; m < M; m++) {
            const float *u = U + m * cb * r;
            for (int64_t q = 0; q < r; q++) us[q] = 0.0f;
            for (int32_t k = rowptr[br]; k < rowptr[br + 1]; k++)
                for (int64_t q = 0; q < r; q++) us[q] += u[(int64_t)colidx[k] * r + q];
            v16 d[SBV];
            for (int j = 0; j < SBV; j++) d[j] = *(const v16 *)(DY + m * lddy + br * SB + 16 * j);
            for (int64_t q = 0; q < r; q++)
                for (int j = 0; j < SBV; j++) acc[q][j] += us[q] * d[j];
        }
        for (int j = 0; j < SB; j++)
            for (int64_t q = 0; q < r; q++) D[(br * SB + j) * r + q] += scale * acc[q][j / 16][j % 16];
    }
}
