/*
 * topa CPU kernels: the one header.
 *
 * Every kernel source file is compiled three times (scalar, AVX2, AVX-512) with TOPA_SUFFIX set to
 * _scalar, _avx2 or _avx512, so each op exists as topa_<op>_<isa>. The Java backend asks
 * topa_cpu_best_isa() once and binds the symbols of the ISA it runs; tests bind every ISA the CPU
 * supports and check each against the same float64 reference.
 *
 * Conventions: row-major float32, sizes as int64_t, strides in elements. Gradient outputs marked
 * "+=" accumulate (parameters may receive gradients from several places). Kernels that can meet bad
 * data return an int status: 0 on success, 1 + i for bad data at item i, TOPA_ERR_ALLOC when scratch
 * memory is not to be had (the Java side turns it into an exception that names the op and item).
 */
#ifndef TOPA_CPU_H
#define TOPA_CPU_H

#include <stdint.h>
#include <string.h>

#define TOPA_ISA_SCALAR 0
#define TOPA_ISA_AVX2 1
#define TOPA_ISA_AVX512 2

#define TOPA_ERR_ALLOC (-1)      /* a kernel could not allocate its scratch memory */

/* ---- ISA-independent (cpu.c) ---- */
int topa_cpu_best_isa(void);           /* best ISA this CPU and OS support */
void topa_set_num_threads(int n);      /* threads used by every kernel; n <= 0 means all cores */
int topa_get_num_threads(void);
int64_t topa_workspace_bytes(void);    /* bytes held by kernel scratch buffers (per-thread packs) */
int topa_cpu_has_avx512bf16(void);     /* VDPBF16PS usable (CPU flag and OS ZMM state) */
/* A per-thread scratch buffer of at least `floats` floats, 64-byte aligned, kept and reused for
 * the thread's lifetime (slots: TOPA_SCRATCH_*). NULL when memory is not to be had. */
float *topa_thread_scratch(int slot, int64_t floats);
#define TOPA_SCRATCH_GEMM_A 0
#define TOPA_SCRATCH_GEMM_B 1
#define TOPA_SCRATCH_ATTENTION 2
#define TOPA_SCRATCH_ATTENTION_P 3
#define TOPA_SCRATCH_LOWRANK 4
#define TOPA_SCRATCH_SLOTS 5

#ifdef TOPA_SUFFIX
#define TOPA_CAT_(a, b) a##b
#define TOPA_CAT(a, b) TOPA_CAT_(a, b)
#define TOPA_FN(name) TOPA_CAT(topa_##name, TOPA_SUFFIX)

/* ---- gemm.c ----
 * C[M,N] = alpha * op(A) op(B) + beta * C + bias[N]  (bias may be NULL; beta == 0 never reads C).
 * op(A) is [M,K]: A stored [M,K] (transA=0) or [K,M] (transA=1); op(B) is [K,N]: B stored [K,N]
 * (transB=0) or [N,K] (transB=1) -- a Linear layer X W^T with W [out,in] is transB=1.
 * Returns 0 or TOPA_ERR_ALLOC (packing buffers not to be had; C untouched). */
int TOPA_FN(sgemm)(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                    int64_t ldc, const float *bias);
/* GEMM with a second operand pair appended along K (one pass over C):
 * C = alpha (op(A) op(B) + scale2 * A2 op(B2)) + beta C + bias, A2 [M, K2] row-major (lda2),
 * op(B2) [K2, N] (B2 [K2, N] or, transB2, [N, K2]). The LoRA projection y = x W^T + s (x A^T) B^T
 * is (A = x, B = W, transB) + (A2 = x A^T, B2 = B, transB2, scale2 = s); its dX is
 * (A = dy, B = W) + (A2 = dy B, B2 = A_lora, scale2 = s). */
int TOPA_FN(sgemm_aug)(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, int64_t K2,
                       const float *A2, int64_t lda2, float scale2, int transB2, const float *B2,
                       int64_t ldb2, float beta, float *C, int64_t ldc, const float *bias);

/* Pre-packed B for products that reuse one operand (inference weights): op(B) [K,N] is packed
 * once into sgemm_packed_size(K, N) floats in this ISA's panel layout, then sgemm_packed skips
 * per-call packing and its thread barriers. The layout is ISA-specific. */
int64_t TOPA_FN(sgemm_packed_size)(int64_t K, int64_t N);
void TOPA_FN(sgemm_pack_b)(int transB, int64_t K, int64_t N, const float *B, int64_t ldb,
                           float *packed);
int TOPA_FN(sgemm_packed)(int transA, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                          int64_t lda, const float *packed, float beta, float *C, int64_t ldc,
                          const float *bias);
/* dbias[cols] (+=) column sums of dy[rows, cols]: the bias gradient of a linear layer. */
void TOPA_FN(bias_backward)(float *dbias, const float *dy, int64_t rows, int64_t cols);

/* ---- gemm_bf16.c ----
 * C[M,N] = alpha A op(B) + beta C + bias with A [M,K] fp32 row-major (rounded to bf16 as it is
 * packed) and op(B) [K,N] packed once by bf16_pack_b (bf16_packed_size(K, N) uint16 elements;
 * B stored [K,N], or [N,K] with transB). Sums in fp32. use_dpbf16 selects the AVX512_BF16
 * micro-kernel (only where topa_cpu_has_avx512bf16()); otherwise a portable one. The layout is
 * the same for every ISA. Optional low-rank term (K2 > 0): C += alpha scale2 A2 op(B2), A2 [M, K2]
 * fp32, op(B2) [K2, N] (B2 [N, K2] with transB2, else [K2, N]): LoRA fused into the same pass.
 * Returns 0 or TOPA_ERR_ALLOC. */
int64_t TOPA_FN(bf16_packed_size)(int64_t K, int64_t N);
/* f32 <-> bf16 storage conversions (round to nearest even; NaN stays NaN). */
void TOPA_FN(convert_f32_to_bf16)(const float *in, uint16_t *out, int64_t n);
void TOPA_FN(convert_bf16_to_f32)(const uint16_t *in, float *out, int64_t n);
void TOPA_FN(bf16_pack_b)(int transB, int64_t K, int64_t N, const float *B, int64_t ldb, uint16_t *packed);
int TOPA_FN(bf16_gemm_packed)(int use_dpbf16, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                              int64_t lda, const uint16_t *packed, float beta, float *C, int64_t ldc,
                              const float *bias, int64_t K2, const float *A2, float scale2, int transB2,
                              const float *B2);

/* ---- blocksparse.c ---- 32 x 32 block-sparse linear layers (dimensions multiples of 32).
 * bsr_pack: W [out, in] with block mask [out/32][in/32] into values [kept][32][32], rowptr, colidx
 * (transposed: W^T's blocks, for the input gradient). bsr_linear: Y[M, N] = X[M, K] P^T + beta Y
 * + bias + scale U[M, r] Lt[r, N] for the packed P [N, K] (ublocks: U [M, (K/32) r] summed over each
 * block-row's kept blocks, the low-rank term masked like P); returns 1 when N or K is not a multiple
 * of 32. bsr_block_lowrank: U per 32-wide input block (returns -1 when its transposed copy of A cannot
 * be allocated). bsr_lowrank_grad: the masked term's factor
 * gradient, D[N, r] += scale sum_m DY[m, n] (U summed over block-row n/32's kept blocks)[m, :]
 * (r <= 64). */
int64_t TOPA_FN(bsr_kept_blocks)(const uint8_t *mask, int64_t out, int64_t in);
void TOPA_FN(bsr_pack)(const float *W, int64_t out, int64_t in, const uint8_t *mask, int transposed, float *values,
                       int32_t *rowptr, int32_t *colidx);
int TOPA_FN(bsr_linear)(int64_t M, int64_t N, int64_t K, const float *X, int64_t ldx, const float *values,
                        const int32_t *rowptr, const int32_t *colidx, const float *bias, float beta, float *Y,
                        int64_t ldy, int64_t r, const float *U, const float *Lt, float scale, int ublocks);
int TOPA_FN(bsr_block_lowrank)(int64_t M, int64_t K, int64_t r, const float *X, int64_t ldx, const float *A, float *U);
void TOPA_FN(bsr_lowrank_grad)(int64_t M, int64_t N, int64_t K, int64_t r, const float *DY, int64_t lddy, const int32_t *rowptr,
                               const int32_t *colidx, const float *U, float scale, float *D);

/* ---- layernorm.c ----
 * out = LN(x + residual) * gamma + beta over the last dim; residual may be NULL. When residual is
 * given and sum is not NULL, sum receives x + residual (what backward needs). mean/rstd [rows]
 * are saved for backward. */
void TOPA_FN(layernorm_forward)(float *out, float *mean, float *rstd, float *sum, const float *x,
                                const float *residual, const float *gamma, const float *beta,
                                int64_t rows, int64_t cols, float eps);
/* dx = dLN/dx (accumulate != 0: dx +=, which fuses the residual branch's gradient add);
 * dgamma, dbeta (+=, either may be NULL when frozen). x is the LN input (the sum when fused). */
void TOPA_FN(layernorm_backward)(float *dx, float *dgamma, float *dbeta, const float *dy,
                                 const float *x, const float *mean, const float *rstd,
                                 const float *gamma, int64_t rows, int64_t cols, int accumulate);

/* ---- gelu.c ----  exact GELU: y = u * Phi(u), u = x + bias (bias [cols] may be NULL). */
void TOPA_FN(bias_gelu_forward)(float *out, const float *x, const float *bias, int64_t rows,
                                int64_t cols);
/* dx = dy * GELU'(x + bias); dbias (+=, may be NULL) = column sums of dx. dx may alias dy. */
void TOPA_FN(bias_gelu_backward)(float *dx, float *dbias, const float *dy, const float *x,
                                 const float *bias, int64_t rows, int64_t cols);

/* ---- softmax.c ---- row softmax over the last dim; backward dx = y * (dy - sum(dy * y)). */
void TOPA_FN(softmax_forward)(float *y, const float *x, int64_t rows, int64_t cols);
void TOPA_FN(softmax_backward)(float *dx, const float *dy, const float *y, int64_t rows,
                               int64_t cols);

/* ---- attention.c ----
 * Multi-head scaled-dot-product attention. q, k, v: [B, S, H*D] rows with row stride ld (so they
 * may sit inside one fused QKV buffer, ld = 3*H*D). mask [B, S]: 1 = real token, 0 = padding
 * (keys that are padding get no weight); NULL = no padding. out [B, S, H*D], row stride ldo.
 * probs [B, H, S, S] receives the attention probabilities (before dropout) when not NULL.
 * Dropout on the probabilities (drop_threshold 0: none) keeps element ((b*H + h)*S + i)*S + j of
 * [B, H, S, S] as topa_dropout_keep decides. Both directions return 0 or TOPA_ERR_ALLOC. */
int TOPA_FN(attention_forward)(float *out, int64_t ldo, float *probs, const float *q,
                                const float *k, const float *v, int64_t ld, const int32_t *mask,
                                int64_t B, int64_t S, int64_t H, int64_t D, float scale,
                                uint32_t drop_key, uint32_t drop_threshold, float drop_scale);
/* Forward over sequences packed without padding: sequence b is rows starts[b] .. starts[b + 1]
 * (B + 1 offsets); no mask, no dropout, no saved probabilities. 0 or TOPA_ERR_ALLOC. */
int TOPA_FN(attention_forward_packed)(float *out, int64_t ldo, const float *q, const float *k, const float *v, int64_t ld,
                                       const int32_t *starts, int64_t B, int64_t H, int64_t D, float scale);
/* dq, dk, dv (overwritten, row stride ldd) from dout (row stride ldo). probs: those forward saved,
 * or NULL to recompute them per (batch, head) in thread scratch from q, k and mask -- a
 * flash-style backward that keeps no [B, H, S, S] tensor between the passes. */
int TOPA_FN(attention_backward)(float *dq, float *dk, float *dv, int64_t ldd, const float *dout,
                                int64_t ldo, const float *probs, const float *q, const float *k,
                                const float *v, int64_t ld, const int32_t *mask, int64_t B,
                                int64_t S, int64_t H, int64_t D, float scale, uint32_t drop_key,
                                uint32_t drop_threshold, float drop_scale);

/* ---- dropout.c ----
 * out = (accumulate ? out : 0) + keep(i) * in * scale over n elements (out may alias in); the
 * same call with the same key serves forward (in = x) and backward (in = dy). */
void TOPA_FN(dropout)(float *out, const float *in, int64_t n, uint32_t key, uint32_t threshold,
                      float scale, int accumulate);

/* ---- importance.c ----
 * out[b, g] = sum over t < S, d < D of x[b, t, g*D + d] * dx[b, t, g*D + d]: per example, the
 * gradient of a multiplicative mask on feature group g (a head: D = head size; an FFN neuron:
 * D = 1), from the masked tensor x and its gradient dx, both [B, S, G*D]. out overwritten. */
void TOPA_FN(group_dot)(float *out, const float *x, const float *dx, int64_t B, int64_t S,
                        int64_t G, int64_t D);
/* out[rb, cb] = sum of w * g over 32 x 32 block (rb, cb); w, g [rows, cols], both multiples of 32. */
void TOPA_FN(block_dot)(float *out, const float *w, const float *g, int64_t rows, int64_t cols);
/* out [cols, rows] = in^T + beta out. */
void TOPA_FN(transpose)(float *out, const float *in, int64_t rows, int64_t cols, float beta);

/* ---- embedding.c ----
 * out[b,s,:] = wte[ids] + wpe[pos] + wtt[type]; pos = s when pos_ids is NULL, type = 0 when
 * type_ids is NULL (wtt NULL: no type table). Returns 0, or 1 + i when token i (flat index over
 * B*S) holds an id, position or type outside its table; out is then unspecified. */
int TOPA_FN(embedding_forward)(float *out, const int32_t *ids, const int32_t *pos_ids,
                               const int32_t *type_ids, const float *wte, const float *wpe,
                               const float *wtt, int64_t BS, int64_t S, int64_t C, int64_t vocab,
                               int64_t max_pos, int64_t n_types);
/* dwte, dwpe, dwtt (+=, each may be NULL when frozen). Indices are those forward validated. */
void TOPA_FN(embedding_backward)(float *dwte, float *dwpe, float *dwtt, const float *dout,
                                 const int32_t *ids, const int32_t *pos_ids,
                                 const int32_t *type_ids, int64_t BS, int64_t S, int64_t C);

/* ---- pool.c ---- out[b,:] = mean of x[b,t,:] over tokens with mask 1 (all when mask NULL; a
 * sequence with none gives 0). Backward spreads dout[b,:] evenly over those tokens (dx
 * overwritten, padding gets 0). */
void TOPA_FN(mean_pool_forward)(float *out, const float *x, const int32_t *mask, int64_t B, int64_t S,
                                int64_t C);
void TOPA_FN(mean_pool_backward)(float *dx, const float *dout, const int32_t *mask, int64_t B,
                                 int64_t S, int64_t C);

/* ---- loss.c ----
 * Cross-entropy over logits [N, C] with labels [N] (label < 0: ignored). losses [N] receives each
 * row's loss (0 when ignored); *mean the mean over counted rows. Returns 0, or 1 + i when the
 * label of row i is >= C. Backward: dlogits = dloss * (softmax - onehot) / counted. */
int TOPA_FN(cross_entropy_forward)(float *losses, float *mean, const float *logits,
                                   const int32_t *labels, int64_t N, int64_t C);
void TOPA_FN(cross_entropy_backward)(float *dlogits, const float *logits, const int32_t *labels,
                                     int64_t N, int64_t C, float dloss);
/* Mean squared error over N values; backward dpred = dloss * 2 (pred - target) / N. */
float TOPA_FN(mse_forward)(const float *pred, const float *target, int64_t N);
void TOPA_FN(mse_backward)(float *dpred, const float *pred, const float *target, int64_t N,
                           float dloss);

/* ---- adamw.c ---- one decoupled-weight-decay Adam step (PyTorch AdamW semantics), t >= 1, on
 * the gradient times grad_scale (global-norm clipping folded in: no pass rescales the gradients).
 * sum_squares: sum of x^2 in double, for the global gradient norm. */
void TOPA_FN(adamw_step)(float *param, const float *grad, float *m, float *v, int64_t n, double lr,
                         double beta1, double beta2, double eps, double weight_decay, int64_t t,
                         float grad_scale);
double TOPA_FN(sum_squares)(const float *x, int64_t n);

/* ---- internal helpers shared by the kernel files ---- */
/* Single-threaded GEMM for use inside parallel loops (attention). */
int TOPA_FN(sgemm_serial)(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                           float *C, int64_t ldc);
#endif /* TOPA_SUFFIX */

/* Thread tid's share [lo, hi) of n columns, in multiples of 16 floats (one cache line), so that
 * threads reducing over rows never write the same line. */
static inline void topa_column_share(int tid, int nth, int64_t n, int64_t *lo, int64_t *hi) {
    int64_t per = ((n + nth - 1) / nth + 15) & ~(int64_t)15;
    *lo = tid * per < n ? tid * per : n;
    *hi = (tid + 1) * per < n ? (tid + 1) * per : n;
}

/* A 32-bit integer hash (bijective, low bias: xor-shift-multiply rounds) behind every dropout
 * mask. Multipliers are applied to 32-bit values only, so a 64-bit signed implementation (numpy,
 * torch) reproduces it exactly by masking to 32 bits after each product. */
static inline uint32_t topa_hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* Dropout's keep decision for element i under key: a 24-bit uniform against threshold =
 * floor(p * 2^24), so p = 0 (threshold 0) keeps everything. */
static inline int topa_dropout_keep(uint32_t i, uint32_t key, uint32_t threshold) {
    return (topa_hash32(i ^ key) >> 8) >= threshold;
}

/* Vectorisable exp: Cody-Waite range reduction and a degree-6 polynomial, ~1.5 ulp on
 * [-87, 88]; written in plain C so the compiler vectorises loops that call it (libm's expf is a
 * scalar call that blocks vectorisation). */
static inline float topa_expf(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* erfc(z) for z >= 0 with fractional error < 1.2e-7 everywhere (Chebyshev fit of
 * Numerical Recipes, erfcc): relative accuracy also in the far tail, where GELU of a negative
 * input needs it. */
static inline float topa_erfc_pos(float z) {
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * topa_expf(-z * z + p);
}

#endif
