/* bf16 x bf16 -> fp32 GEMM against a pre-packed, frozen right operand: C = alpha A op(B) + beta C
 * + bias, with A (fp32 activations) rounded to bf16 while it is packed and B (a frozen weight)
 * rounded once when it is packed. On CPUs with AVX512_BF16 the micro-kernel is VDPBF16PS (two
 * products per lane per instruction: twice the FMA rate of fp32); elsewhere a portable kernel
 * computes the same sums in fp32 (odd then even product of each pair, as VDPBF16PS does).
 *
 * An optional low-rank term scale2 A2 op(B2) (A2 [M, K2], op(B2) [K2, N], fp32; B2 stored [N, K2]
 * with transB2, else [K2, N]) is added to each tile's sums before they are written: a LoRA update
 * rides in the same pass over C (alpha applies to it as well).
 *
 * Layouts (bf16 as uint16_t): B panels of NR columns, [panel][k pair][column][2]; A panels of MR
 * rows, [k pair][row][2]. K is padded to even with zeros, N to NR, M to MR. */
#include "topa_cpu.h"

#include <omp.h>

#define BMR 12
#define BNR 32
#define BKC 384 /* k per block: 12 x 384 x 2 B of A and 384 x 32 x 2 B of B stay in L1/L2 */
#define BMC (BMR * 8)

/* fp32 -> bf16, round to nearest even, NaN kept quiet; branch-free so packing loops vectorise. */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : r);
}

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Storage conversions (activations kept for backward in bf16): elementwise, split over threads. */
void TOPA_FN(convert_f32_to_bf16)(const float *in, uint16_t *out, int64_t n) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (n > 1 << 16)
    for (int64_t i = 0; i < n; i++) out[i] = to_bf16(in[i]);
}

void TOPA_FN(convert_bf16_to_f32)(const uint16_t *in, float *out, int64_t n) {
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (n > 1 << 16)
    for (int64_t i = 0; i < n; i++) out[i] = from_bf16(in[i]);
}

int64_t TOPA_FN(bf16_packed_size)(int64_t K, int64_t N) {
    return ((N + BNR - 1) / BNR) * ((K + 1) / 2) * BNR * 2;
}

void TOPA_FN(bf16_pack_b)(int transB, int64_t K, int64_t N, const float *B, int64_t ldb, uint16_t *packed) {
    int64_t panels = (N + BNR - 1) / BNR, pairs = (K + 1) / 2;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (K * N > 1 << 16)
    for (int64_t pn = 0; pn < panels; pn++) {
        uint16_t *dst = packed + pn * pairs * BNR * 2;
        for (int64_t p = 0; p < pairs; p++)
            for (int64_t j = 0; j < BNR; j++)
                for (int64_t h = 0; h < 2; h++) {
                    int64_t k = 2 * p + h, n = pn * BNR + j;
                    float v = k < K && n < N ? (transB ? B[n * ldb + k] : B[k * ldb + n]) : 0.0f;
                    dst[(p * BNR + j) * 2 + h] = to_bf16(v);
                }
    }
}

/* Two floats as one bf16 pair (lo in the low half). */
static inline uint32_t pair_bf16(float lo, float hi) {
    return (uint32_t)to_bf16(lo) | ((uint32_t)to_bf16(hi) << 16);
}

/* A rows [m0, m0 + rows) x k [k0, k0 + kc) into MR-row panels of bf16 pairs: each row is converted
 * along k (contiguous, vectorised), then the MR x pairs block is transposed into the panel. */
static void pack_a(const float *A, int64_t lda, int64_t m0, int64_t rows, int64_t k0, int64_t kc, uint16_t *dst) {
    int64_t pairs = (kc + 1) / 2, full = kc / 2;
    uint32_t tmp[BMR * (BKC / 2)];
    for (int64_t r0 = 0; r0 < rows; r0 += BMR) {
        uint32_t *panel = (uint32_t *)dst + (r0 / BMR) * pairs * BMR;
        for (int64_t i = 0; i < BMR; i++) {
            uint32_t *t = tmp + i * pairs;
            if (r0 + i >= rows) {
                for (int64_t p = 0; p < pairs; p++) t[p] = 0;
                continue;
            }
            const float *row = A + (m0 + r0 + i) * lda + k0;
            for (int64_t p = 0; p < full; p++) t[p] = pair_bf16(row[2 * p], row[2 * p + 1]);
            if (full < pairs) t[full] = pair_bf16(row[2 * full], 0.0f);
        }
        for (int64_t p = 0; p < pairs; p++)
            for (int64_t i = 0; i < BMR; i++) panel[p * BMR + i] = tmp[i * pairs + p];
    }
}

/* acc[MR][NR] = sum over pairs of A pair x B pair (fp32), portable. */
static void kernel_portable(int64_t pairs, const uint16_t *a, const uint16_t *b, float *acc) {
    for (int64_t e = 0; e < BMR * BNR; e++) acc[e] = 0.0f;
    for (int64_t p = 0; p < pairs; p++)
        for (int64_t i = 0; i < BMR; i++) {
            float a0 = from_bf16(a[(p * BMR + i) * 2]), a1 = from_bf16(a[(p * BMR + i) * 2 + 1]);
            for (int64_t j = 0; j < BNR; j++) {
                float v = acc[i * BNR + j];
                v += a1 * from_bf16(b[(p * BNR + j) * 2 + 1]);
                v += a0 * from_bf16(b[(p * BNR + j) * 2]);
                acc[i * BNR + j] = v;
            }
        }
}

/* The low-rank term of one tile: acc[i][j] += scale2 sum_r a2[i][r] b2[r][j] for rows i < mr,
 * columns j < nr (b2 already offset to the tile's first column, row stride ldb2). */
static void lowrank_portable(float *acc, int64_t K2, const float *a2, int64_t mr, float scale2, const float *b2,
                             int64_t ldb2, int64_t nr) {
    for (int64_t i = 0; i < mr; i++)
        for (int64_t r = 0; r < K2; r++) {
            float av = scale2 * a2[i * K2 + r];
            for (int64_t j = 0; j < nr; j++) acc[i * BNR + j] += av * b2[r * ldb2 + j];
        }
}

#if defined(__x86_64__) && defined(TOPA_BF16_KERNEL)
#include <immintrin.h>
/* VDPBF16PS tile; the low-rank term (K2 > 0) is added while the sums are still in registers. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void kernel_dpbf16(int64_t pairs, const uint16_t *a,
                                                                                  const uint16_t *b, float *acc, int64_t K2,
                                                                                  const float *a2, int64_t mr, float scale2,
                                                                                  const float *b2, int64_t ldb2, int64_t nr) {
    __m512 c[BMR][2];
    for (int i = 0; i < BMR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    const int32_t *ap = (const int32_t *)a;
    for (int64_t p = 0; p < pairs; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * BNR * 2);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + p * BNR * 2 + 32);
        for (int i = 0; i < BMR; i++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32(ap[p * BMR + i]);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], av, b0);
            c[i][1] = _mm512_dpbf16_ps(c[i][1], av, b1);
        }
    }
    if (K2 > 0) {
        __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1u);
        __mmask16 m1 = nr >= 32 ? 0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : 0;
        for (int64_t r = 0; r < K2; r++) {
            __m512 lo = _mm512_maskz_loadu_ps(m0, b2 + r * ldb2), hi = _mm512_maskz_loadu_ps(m1, b2 + r * ldb2 + 16);
            for (int i = 0; i < BMR; i++) {
                if (i >= mr) break;
                __m512 av = _mm512_set1_ps(scale2 * a2[i * K2 + r]);
                c[i][0] = _mm512_fmadd_ps(av, lo, c[i][0]);
                c[i][1] = _mm512_fmadd_ps(av, hi, c[i][1]);
            }
        }
    }
    for (int i = 0; i < BMR; i++) {
        _mm512_storeu_ps(acc + i * BNR, c[i][0]);
        _mm512_storeu_ps(acc + i * BNR + 16, c[i][1]);
    }
}
#endif

int TOPA_FN(bf16_gemm_packed)(int use_dpbf16, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                              int64_t lda, const uint16_t *packed, float beta, float *C, int64_t ldc,
                              const float *bias, int64_t K2, const float *A2, float scale2, int transB2,
                              const float *B2) {
    if (M <= 0 || N <= 0) return 0;
    if (K2 > 0 && transB2) { /* [N, K2] -> [K2, N] once, so the epilogue's inner loop runs along N */
        float *t = topa_thread_scratch(TOPA_SCRATCH_LOWRANK, K2 * N);
        if (!t) return TOPA_ERR_ALLOC;
        for (int64_t n = 0; n < N; n++)
            for (int64_t r = 0; r < K2; r++) t[r * N + n] = B2[n * K2 + r];
        B2 = t;
        transB2 = 0;
    }
    int64_t pairs_total = (K + 1) / 2, blocks = (M + BMC - 1) / BMC, npanels = (N + BNR - 1) / BNR;
    int failed = 0;
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(dynamic, 1) if (M * N * K > 1 << 18)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t m0 = blk * BMC, rows = M - m0 < BMC ? M - m0 : BMC;
        uint16_t *apack = (uint16_t *)topa_thread_scratch(TOPA_SCRATCH_GEMM_A, BMC * BKC / 2 + BMR * BNR);
        if (!apack) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        float *acc = (float *)(apack + BMC * BKC); /* one MR x NR tile after the packed A */
        for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += BKC) {
            int64_t kc = K - k0 < BKC ? K - k0 : BKC, pairs = (kc + 1) / 2;
            pack_a(A, lda, m0, rows, k0, kc, apack);
            for (int64_t pn = 0; pn < npanels; pn++) {
                const uint16_t *bp = packed + (pn * pairs_total + k0 / 2) * BNR * 2;
                for (int64_t r0 = 0; r0 < rows; r0 += BMR) {
                    const uint16_t *ap = apack + (r0 / BMR) * pairs * BMR * 2;
                    int64_t mr = rows - r0 < BMR ? rows - r0 : BMR, n0 = pn * BNR, nr = N - n0 < BNR ? N - n0 : BNR;
                    int64_t k2 = k0 == 0 ? K2 : 0; /* the low-rank term once per tile */
                    const float *a2 = k2 ? A2 + (m0 + r0) * K2 : NULL, *b2 = k2 ? B2 + n0 : NULL;
#if defined(__x86_64__) && defined(TOPA_BF16_KERNEL)
                    if (use_dpbf16) {
                        kernel_dpbf16(pairs, ap, bp, acc, k2, a2, mr, scale2, b2, N, nr);
                    } else
#endif
                    {
                        kernel_portable(pairs, ap, bp, acc);
                        if (k2) lowrank_portable(acc, k2, a2, mr, scale2, b2, N, nr);
                    }
                    for (int64_t i = 0; i < mr; i++) {
                        float *c = C + (m0 + r0 + i) * ldc + n0;
                        const float *t = acc + i * BNR;
                        if (k0 == 0)
                            for (int64_t j = 0; j < nr; j++)
                                c[j] = alpha * t[j] + (beta != 0.0f ? beta * c[j] : 0.0f) + (bias ? bias[n0 + j] : 0.0f);
                        else
                            for (int64_t j = 0; j < nr; j++) c[j] += alpha * t[j];
                    }
                }
            }
            if (K == 0) break;
        }
    }
    return failed ? TOPA_ERR_ALLOC : 0;
}
