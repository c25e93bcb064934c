/*
 * Dense GEMM, BLIS-style: C is cut into NC-wide column blocks and KC-deep slices; each slice of B
 * is packed once into NR-wide panels shared by all threads, each thread packs its own MC-row block
 * of A into MR-tall panels, and a register-blocked micro-kernel computes MR x NR tiles.
 *
 * The micro-kernel is written once with GCC vector extensions; the vector width follows the ISA
 * this file is compiled for (16 floats on AVX-512, 8 on AVX2, 4 on the SSE2 baseline), so the
 * three builds share one source. Tile sizes per ISA keep all accumulators in registers:
 *   AVX-512: 32 zmm -> 14 x 2 accumulators + 2 B vectors + broadcasts from memory
 *   AVX2/SSE2: 16 registers -> 6 x 2 accumulators + 2 B vectors + 1 broadcast.
 */
#include "topa_cpu.h"

#include <omp.h>
#include <stdlib.h>

#if defined(__AVX512F__)
#define VL 16
#define MR 14
#elif defined(__AVX2__)
#define VL 8
#define MR 6
#else
#define VL 4
#define MR 6
#endif
#define NR (2 * VL)

/* Measured on Zen 4 (1 MiB L2 per core) at the six BERT training shapes: KC = 512 with MC = 112
 * (and 768/84) beat 192..384 with larger MC, mostly on the deep-K shapes where fewer KC slices mean
 * fewer passes over C. The MC x KC block of A (~230 KiB) stays in L2, a KC x NR panel of B streams
 * from L2, a KC x NC slice of packed B (~6 MiB) sits in the shared L3. */
#ifndef KC
#define KC 512
#endif
#ifndef MC
#define MC (MR * 8)
#endif
#ifndef NC
#define NC 3072
#endif

typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4))); /* unaligned access to C */

enum store_mode { STORE_SET, STORE_AXPBY, STORE_ADD };

/* One MR x NR tile over kc steps. a: MR floats per k, b: NR floats per k (both 64-byte aligned).
 * STORE_SET: c = alpha*acc + bias; STORE_AXPBY: c = alpha*acc + beta*c + bias; STORE_ADD: c +=
 * alpha*acc. */
static inline void micro_kernel(int64_t kc, const float *restrict a, const float *restrict b,
                                float *restrict c, int64_t ldc, float alpha, float beta,
                                const float *bias, enum store_mode mode) {
    vf acc0[MR], acc1[MR];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
        acc0[r] = (vf){0};
        acc1[r] = (vf){0};
        /* C is read or written only after the k loop; fetch its lines now so the misses overlap
         * with the FMAs instead of stalling the stores (C rarely stays cached between slices). */
        __builtin_prefetch(c + r * ldc, 1);
        __builtin_prefetch(c + r * ldc + NR - 1, 1);
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        vf b0 = *(const vf *)b;
        vf b1 = *(const vf *)(b + VL);
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            acc0[r] += a[r] * b0;
            acc1[r] += a[r] * b1;
        }
        a += MR;
        b += NR;
    }
    vf bias0 = {0}, bias1 = {0};
    if (bias && mode != STORE_ADD) {
        bias0 = *(const vfu *)bias;
        bias1 = *(const vfu *)(bias + VL);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
        vfu *c0 = (vfu *)(c + r * ldc), *c1 = (vfu *)(c + r * ldc + VL);
        vf x0 = alpha * acc0[r], x1 = alpha * acc1[r];
        if (mode == STORE_SET) {
            *c0 = x0 + bias0;
            *c1 = x1 + bias1;
        } else if (mode == STORE_AXPBY) {
            *c0 = x0 + beta * *c0 + bias0;
            *c1 = x1 + beta * *c1 + bias1;
        } else {
            *c0 += x0;
            *c1 += x1;
        }
    }
}

/* A partial tile (m < MR or n < NR): run the full kernel into a local tile, then store m x n. */
static void edge_tile(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int64_t m,
                      int64_t n, float alpha, float beta, const float *bias, enum store_mode mode) {
    float tile[MR * NR] __attribute__((aligned(64)));
    micro_kernel(kc, a, b, tile, NR, alpha, 0.0f, NULL, STORE_SET);
    for (int64_t r = 0; r < m; r++) {
        for (int64_t j = 0; j < n; j++) {
            float x = tile[r * NR + j];
            float *cp = &c[r * ldc + j];
            float bj = bias ? bias[j] : 0.0f;
            if (mode == STORE_SET) *cp = x + bj;
            else if (mode == STORE_AXPBY) *cp = x + beta * *cp + bj;
            else *cp += x;
        }
    }
}

/* Packs scale * op(A)[i0:i0+mc, ks:ks+kn] into k positions [kd, kd+kn) of MR-tall panels whose
 * k-extent is kc (k-major inside a panel), zero-padding missing rows. Two calls fill one slice
 * when the product's K is augmented (the LoRA columns follow the weight's). */
static void pack_a(int transA, const float *A, int64_t lda, float scale, int64_t i0, int64_t mc,
                   int64_t ks, int64_t kn, int64_t kd, int64_t kc, float *restrict dst) {
    for (int64_t p = 0; p < mc; p += MR) {
        int64_t rows = mc - p < MR ? mc - p : MR;
        float *d = dst + p * kc + kd * MR;
        if (!transA && rows == MR) {
            /* k outer: contiguous writes, MR row streams read in step (faster than strided writes) */
            const float *src = A + (i0 + p) * lda + ks;
            for (int64_t k = 0; k < kn; k++)
#pragma GCC unroll 16
                for (int64_t r = 0; r < MR; r++) d[k * MR + r] = scale * src[r * lda + k];
            continue;
        } else if (!transA) {
            for (int64_t r = 0; r < rows; r++) {
                const float *src = A + (i0 + p + r) * lda + ks;
                for (int64_t k = 0; k < kn; k++) d[k * MR + r] = scale * src[k];
            }
        } else {
            for (int64_t k = 0; k < kn; k++) {
                const float *src = A + (ks + k) * lda + i0 + p;
                for (int64_t r = 0; r < rows; r++) d[k * MR + r] = scale * src[r];
            }
        }
        for (int64_t r = rows; r < MR; r++)
            for (int64_t k = 0; k < kn; k++) d[k * MR + r] = 0.0f;
    }
}

/* Packs op(B)[ks:ks+kn, j0:j0+n] (n <= NR) into k positions [kd, kd+kn) of one NR-wide panel,
 * zero-padded to NR columns. */
static void pack_b_panel(int transB, const float *B, int64_t ldb, int64_t ks, int64_t kn,
                         int64_t kd, int64_t j0, int64_t n, float *restrict d) {
    d += kd * NR;
    if (!transB) {
        for (int64_t k = 0; k < kn; k++) {
            const float *src = B + (ks + k) * ldb + j0;
            for (int64_t j = 0; j < n; j++) d[k * NR + j] = src[j];
            for (int64_t j = n; j < NR; j++) d[k * NR + j] = 0.0f;
        }
    } else if (n == NR) {
        /* k outer: contiguous writes, NR row streams of B read in step (as pack_a) */
        const float *src = B + j0 * ldb + ks;
        for (int64_t k = 0; k < kn; k++)
#pragma GCC unroll 32
            for (int64_t j = 0; j < NR; j++) d[k * NR + j] = src[j * ldb + k];
    } else {
        for (int64_t j = 0; j < n; j++) {
            const float *src = B + (j0 + j) * ldb + ks;
            for (int64_t k = 0; k < kn; k++) d[k * NR + j] = src[k];
        }
        for (int64_t j = n; j < NR; j++)
            for (int64_t k = 0; k < kn; k++) d[k * NR + j] = 0.0f;
    }
}

/* A second operand pair appended along K: C = alpha (op(A) op(B) + scale * A2 op(B2)) + ...,
 * A2 [M, K2] row-major, op(B2) [K2, N]. This is how the rank-r LoRA update rides in the same GEMM
 * as the frozen weight: no second pass over C. */
typedef struct {
    int64_t K2;
    const float *A2;
    int64_t lda2;
    float scale;
    int transB2;
    const float *B2;
    int64_t ldb2;
} aug_t;

/* C = beta * C + bias: the whole product vanishes (K == 0 or alpha == 0). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc, const float *bias) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++)
            C[i * ldc + j] = (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]) + (bias ? bias[j] : 0.0f);
}

/* The thread's share of the tile grid of one packed slice: rows when there are enough of them,
 * otherwise NR-panels (small-M products such as a single sequence). */
static void partition(int tid, int nth, int64_t M, int64_t panels, int64_t *m0, int64_t *m1,
                      int64_t *q0, int64_t *q1) {
    int64_t mpanels = (M + MR - 1) / MR;
    if (mpanels >= 4 * nth || panels < nth) {
        int64_t per = (mpanels + nth - 1) / nth;
        *m0 = tid * per * MR < M ? tid * per * MR : M;
        *m1 = (tid + 1) * per * MR < M ? (tid + 1) * per * MR : M;
        *q0 = 0;
        *q1 = panels;
    } else {
        int64_t per = (panels + nth - 1) / nth;
        *m0 = 0;
        *m1 = M;
        *q0 = tid * per < panels ? tid * per : panels;
        *q1 = (tid + 1) * per < panels ? (tid + 1) * per : panels;
    }
}

/* prepacked: op(B) already in the layout of sgemm_pack_b (B and ldb then unused), so no packing
 * and no barriers: each thread owns its C region across all K slices. */
static int gemm_driver(int nthreads, int transA, int transB, int64_t M, int64_t N, int64_t K,
                       float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                       const float *prepacked, const aug_t *aug, float beta, float *C, int64_t ldc,
                       const float *bias) {
    int64_t K1 = K;
    if (aug) K += aug->K2;
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc, bias);
        return 0;
    }
    int64_t ncmax = N < NC ? N : NC;
    int64_t kcmax = K < KC ? K : KC;
    int64_t npad = (N + NR - 1) / NR * NR;
    float *bpack = prepacked ? NULL
                             : topa_thread_scratch(TOPA_SCRATCH_GEMM_B, kcmax * ((ncmax + NR - 1) / NR) * NR);
    if (!prepacked && !bpack) return TOPA_ERR_ALLOC;
    if ((double)M * N * K < 32.0 * 32 * 32 * 4) nthreads = 1;
    int failed = 0;

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t mcmax = M < MC ? ((M + MR - 1) / MR) * MR : MC;
        float *apack = topa_thread_scratch(TOPA_SCRATCH_GEMM_A, mcmax * kcmax);
        if (!apack) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        int give_up;
#pragma omp atomic read
        give_up = failed;
        for (int64_t jc = 0; jc < N && !give_up; jc += NC) {
            int64_t nc = N - jc < NC ? N - jc : NC;
            int64_t panels = (nc + NR - 1) / NR;
            for (int64_t pc = 0; pc < K; pc += KC) {
                int64_t kc = K - pc < KC ? K - pc : KC;
                enum store_mode mode = pc > 0 ? STORE_ADD : (beta == 0.0f ? STORE_SET : STORE_AXPBY);
                /* columns [pc, pc + n1) of this slice come from A/B, the rest from the augmented pair */
                int64_t n1 = K1 - pc < 0 ? 0 : (K1 - pc < kc ? K1 - pc : kc), n2 = kc - n1;
                int64_t ks2 = pc + n1 - K1;
                const float *bslice = prepacked ? prepacked + pc * npad + jc * kc : bpack;
                if (!prepacked) {
                    for (int64_t q = tid; q < panels; q += nth) {
                        int64_t n = nc - q * NR < NR ? nc - q * NR : NR;
                        float *d = bpack + q * NR * kc;
                        if (n1) pack_b_panel(transB, B, ldb, pc, n1, 0, jc + q * NR, n, d);
                        if (n2) pack_b_panel(aug->transB2, aug->B2, aug->ldb2, ks2, n2, n1, jc + q * NR, n, d);
                    }
#pragma omp barrier
                }
                int64_t m0, m1, q0, q1;
                partition(tid, nth, M, panels, &m0, &m1, &q0, &q1);
                for (int64_t ic = m0; ic < m1; ic += MC) {
                    int64_t mc = m1 - ic < MC ? m1 - ic : MC;
                    if (n1) pack_a(transA, A, lda, 1.0f, ic, mc, pc, n1, 0, kc, apack);
                    if (n2) pack_a(0, aug->A2, aug->lda2, aug->scale, ic, mc, ks2, n2, n1, kc, apack);
                    for (int64_t q = q0; q < q1; q++) {
                        int64_t j = jc + q * NR;
                        int64_t n = nc - q * NR < NR ? nc - q * NR : NR;
                        const float *bp = bslice + q * NR * kc;
                        const float *bj = bias ? bias + j : NULL;
                        for (int64_t p = 0; p < mc; p += MR) {
                            int64_t m = mc - p < MR ? mc - p : MR;
                            float *c = C + (ic + p) * ldc + j;
                            if (m == MR && n == NR)
                                micro_kernel(kc, apack + p * kc, bp, c, ldc, alpha, beta, bj, mode);
                            else
                                edge_tile(kc, apack + p * kc, bp, c, ldc, m, n, alpha, beta, bj, mode);
                        }
                    }
                }
                if (!prepacked) {
#pragma omp barrier
                }
            }
        }
    }
    return failed ? TOPA_ERR_ALLOC : 0;
}

int TOPA_FN(sgemm)(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                    int64_t ldc, const float *bias) {
    return gemm_driver(topa_get_num_threads(), transA, transB, M, N, K, alpha, A, lda, B, ldb, NULL,
                       NULL, beta, C, ldc, bias);
}

int TOPA_FN(sgemm_serial)(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                           float *C, int64_t ldc) {
    return gemm_driver(1, transA, transB, M, N, K, alpha, A, lda, B, ldb, NULL, NULL, beta, C, ldc,
                       NULL);
}

int TOPA_FN(sgemm_aug)(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, int64_t K2,
                       const float *A2, int64_t lda2, float scale2, int transB2, const float *B2,
                       int64_t ldb2, float beta, float *C, int64_t ldc, const float *bias) {
    aug_t aug = {K2, A2, lda2, scale2, transB2, B2, ldb2};
    return gemm_driver(topa_get_num_threads(), transA, transB, M, N, K, alpha, A, lda, B, ldb, NULL,
                       K2 > 0 ? &aug : NULL, beta, C, ldc, bias);
}

int64_t TOPA_FN(sgemm_packed_size)(int64_t K, int64_t N) { return K * ((N + NR - 1) / NR * NR); }

void TOPA_FN(sgemm_pack_b)(int transB, int64_t K, int64_t N, const float *B, int64_t ldb,
                           float *packed) {
    int64_t npad = (N + NR - 1) / NR * NR, panels = npad / NR;
    int64_t slices = (K + KC - 1) / KC;
#pragma omp parallel for collapse(2) num_threads(topa_get_num_threads()) schedule(static)
    for (int64_t s = 0; s < slices; s++)
        for (int64_t q = 0; q < panels; q++) {
            int64_t pc = s * KC, kc = K - pc < KC ? K - pc : KC;
            int64_t n = N - q * NR < NR ? N - q * NR : NR;
            pack_b_panel(transB, B, ldb, pc, kc, 0, q * NR, n, packed + pc * npad + q * NR * kc);
        }
}

int TOPA_FN(sgemm_packed)(int transA, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                          int64_t lda, const float *packed, float beta, float *C, int64_t ldc,
                          const float *bias) {
    return gemm_driver(topa_get_num_threads(), transA, 0, M, N, K, alpha, A, lda, NULL, 0, packed,
                       NULL, beta, C, ldc, bias);
}

void TOPA_FN(bias_backward)(float *dbias, const float *dy, int64_t rows, int64_t cols) {
    /* Columns are split between threads so that no two threads add into the same dbias. */
#pragma omp parallel num_threads(topa_get_num_threads()) if (rows * cols > 1 << 16)
    {
        int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t c0, c1;
        topa_column_share(tid, nth, cols, &c0, &c1);
        for (int64_t r = 0; r < rows; r++) {
            const float *row = dy + r * cols;
            for (int64_t c = c0; c < c1; c++) dbias[c] += row[c];
        }
    }
}
