// Attention forward on the tensor cores, flash-style (FlashAttention-2's loop): per (batch, head,
// 64 queries), 4 warps of 16 query rows each; K and V pass through shared memory in 64-key tiles,
// converted to bf16 (V stored transposed, so each B fragment is one 32-bit load); S = Q K^T and
// O += P V run as mma.sync m16n8k16 (bf16 operands, fp32 accumulators); the online softmax works on
// the S accumulators in registers and P goes back into the tensor cores as A fragments without
// touching shared memory. Same contract as attention.cu (layout, padding mask, a row whose keys are
// all padding gets zeros); storage fp32 or bf16, head dimension D a template parameter (32, 64, 128).
// Operand rounding to bf16 makes it a ~1e-3 relative approximation of the fp32 kernel. Dropout on
// the probabilities as in attention.cu: the row sums take every P, the P V fragments only the kept.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16): lane = 4 g + t. A (16 x 16, row-major):
// a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]. B (16 x 8, k x n):
// b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]. C (16 x 8): c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..].
#include "common.cuh"

#define TC_WARPS 4
#define TC_QROWS (16 * TC_WARPS)
#define TC_KT 64
#define TC_PAD 8 // bf16 elements of padding per shared row: fragment loads hit 32 distinct banks

__device__ __forceinline__ uint32_t packBf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ void mmaBf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float2 ld2(const float *p, int64_t i) { return *reinterpret_cast<const float2 *>(p + i); }
__device__ __forceinline__ float2 ld2(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p + i));
}
__device__ __forceinline__ void st2(float *p, int64_t i, float x, float y) { *reinterpret_cast<float2 *>(p + i) = make_float2(x, y); }
__device__ __forceinline__ void st2(__nv_bfloat16 *p, int64_t i, float x, float y) {
    *reinterpret_cast<__nv_bfloat162 *>(p + i) = __floats2bfloat162_rn(x, y);
}

template <typename T, int D>
__device__ void attentionForwardTc(T *ctx, const T *qkv, const int32_t *mask, int S, int H, float scale, AttnDrop drop) {
    __shared__ __align__(16) __nv_bfloat16 kTile[TC_KT][D + TC_PAD];  // K rows: [key][d]
    __shared__ __align__(16) __nv_bfloat16 vTile[D][TC_KT + TC_PAD];  // V transposed: [d][key]
    __shared__ float keyBias[TC_KT];                                    // 0 for a real key, -inf for padding or past S
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * TC_QROWS + warp * 16;
    const int64_t A = (int64_t)H * D, row3 = 3 * A;
    const T *base = qkv + (int64_t)b * S * row3;

    // Q fragments (scale folded in), rows past S read as zeros
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int r = q0 + g + (i & 1) * 8, c = kc * 16 + 2 * t + (i >> 1) * 8;
            float2 v = r < S ? ld2(base, r * row3 + h * D + c) : make_float2(0.0f, 0.0f);
            qf[kc][i] = packBf16(v.x * scale, v.y * scale);
        }
    }
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}; // rows g and g + 8

    for (int k0 = 0; k0 < S; k0 += TC_KT) {
        __syncthreads(); // every warp is done with the previous tile
        for (int e = threadIdx.x; e < TC_KT * D / 2; e += blockDim.x) {
            int j = e / (D / 2), d = 2 * (e % (D / 2)), key = k0 + j;
            float2 kv = make_float2(0.0f, 0.0f), vv = kv;
            if (key < S) {
                kv = ld2(base, key * row3 + A + h * D + d);
                vv = ld2(base, key * row3 + 2 * A + h * D + d);
            }
            *reinterpret_cast<__nv_bfloat162 *>(&kTile[j][d]) = __floats2bfloat162_rn(kv.x, kv.y);
            vTile[d][j] = __float2bfloat16_rn(vv.x);
            vTile[d + 1][j] = __float2bfloat16_rn(vv.y);
        }
        for (int j = threadIdx.x; j < TC_KT; j += blockDim.x) {
            int key = k0 + j;
            keyBias[j] = key < S && (!mask || mask[(int64_t)b * S + key] != 0) ? 0.0f : -INFINITY;
        }
        __syncthreads();

        // S = Q K^T for 16 rows x 64 keys: 8 tiles of 8 keys
        float s[TC_KT / 8][4];
#pragma unroll
        for (int n = 0; n < TC_KT / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < D / 16; kc++) {
                const __nv_bfloat16 *kr = &kTile[n * 8 + g][kc * 16 + 2 * t];
                mmaBf16(s[n], qf[kc], *reinterpret_cast<const uint32_t *>(kr), *reinterpret_cast<const uint32_t *>(kr + 8));
            }
        }
        // online softmax over the tile, per row (the 4 lanes of a quad share a row)
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int n = 0; n < TC_KT / 8; n++) {
            float b0 = keyBias[n * 8 + 2 * t], b1 = keyBias[n * 8 + 2 * t + 1];
            s[n][0] += b0, s[n][1] += b1, s[n][2] += b0, s[n][3] += b1;
            mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
        }
        float corr[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            float ref = mx[r] == -INFINITY ? 0.0f : mx[r]; // no real key yet: keep everything at zero
            corr[r] = __expf(m[r] - ref);
            m[r] = mx[r];
            mx[r] = ref;
        }
        uint32_t p[TC_KT / 16][4]; // P as A fragments, 16 keys each
#pragma unroll
        for (int n = 0; n < TC_KT / 8; n++) {
            float p0 = __expf(s[n][0] - mx[0]), p1 = __expf(s[n][1] - mx[0]);
            float p2 = __expf(s[n][2] - mx[1]), p3 = __expf(s[n][3] - mx[1]);
            sum[0] += p0 + p1;
            sum[1] += p2 + p3;
            if (drop.on()) { // rows past S are never stored; keys past S have p = 0 already
                int64_t row = ((int64_t)b * H + h) * S + q0 + g;
                int key = k0 + n * 8 + 2 * t;
                p0 = drop.apply(p0, row, S, key), p1 = drop.apply(p1, row, S, key + 1);
                p2 = drop.apply(p2, row + 8, S, key), p3 = drop.apply(p3, row + 8, S, key + 1);
            }
            p[n / 2][(n & 1) * 2] = packBf16(p0, p1);
            p[n / 2][(n & 1) * 2 + 1] = packBf16(p2, p3);
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
            l[r] = l[r] * corr[r] + sum[r];
        }
        // O = O corr + P V: V^T rows give the B fragments
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= corr[0], o[n][1] *= corr[0], o[n][2] *= corr[1], o[n][3] *= corr[1];
#pragma unroll
            for (int kc = 0; kc < TC_KT / 16; kc++) {
                const __nv_bfloat16 *vr = &vTile[n * 8 + g][kc * 16 + 2 * t];
                mmaBf16(o[n], p[kc], *reinterpret_cast<const uint32_t *>(vr), *reinterpret_cast<const uint32_t *>(vr + 8));
            }
        }
    }
    float inv[2] = {l[0] > 0.0f ? 1.0f / l[0] : 0.0f, l[1] > 0.0f ? 1.0f / l[1] : 0.0f};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int q = q0 + g + 8 * r;
        if (q >= S) continue;
        T *out = ctx + ((int64_t)b * S + q) * A + h * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) st2(out, n * 8 + 2 * t, o[n][2 * r] * inv[r], o[n][2 * r + 1] * inv[r]);
    }
}

#define ATTENTION_TC(SUFFIX, T, DIM)                                                                                         \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32)                                                              \
        attention_forward_tc_d##DIM##_##SUFFIX(T *ctx, const T *qkv, const int32_t *mask, int S, int H, float scale,  \
                                               uint32_t dropKey, uint32_t dropThreshold, float dropScale) {          \
        attentionForwardTc<T, DIM>(ctx, qkv, mask, S, H, scale, AttnDrop{dropKey, dropThreshold, dropScale});               \
    }
#define ATTENTION_TC_ALL(SUFFIX, T) ATTENTION_TC(SUFFIX, T, 32) ATTENTION_TC(SUFFIX, T, 64) ATTENTION_TC(SUFFIX, T, 128)
TOPA_BOTH_TYPES(ATTENTION_TC_ALL)
