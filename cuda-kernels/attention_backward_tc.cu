// Attention backward on the tensor cores (mixed precision: bf16 operands, fp32 accumulators), the
// same two passes and contract as attention_backward.cu, the probabilities recomputed:
//   P = softmax(scale Q K^T + padding mask), dP = dO V^T, dS = P (dP - rowsum(P dP)),
//   dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
// attention_backward_rows_tc: per (batch, head, 64 queries), 4 warps of 16 query rows, K and V
// through shared memory in tiles of KT keys; three sweeps over the keys: the row max and sum (as the
// forward's online softmax), rowsum(P dP), then dS -- written with P to the bf16 scratch pair
// [B, H, S, S] ([query][key]) -- and dQ, dS going back into the tensor cores from registers as A
// fragments (the forward's trick with P). attention_backward_cols_tc: per (batch, head, 64 keys), 4
// warps of 16 key rows, the scratch rows of 32 queries at a time through shared memory: dV = P^T dO
// and dK = dS^T Q, P^T and dS^T fragments gathered from the staged [query][key] tiles, dO and Q staged
// transposed so each B fragment is one 32-bit load. D (32, 64, 128) a template parameter; KT = 64
// keys (32 for D = 128: shared memory stays under 48 KB). Fragment layouts: see attention_tc.cu.
// Dropout as in attention_backward.cu: dP dropped where the forward dropped P, Pd written for dV.
#include "common.cuh"

#define TCB_WARPS 4
#define TCB_ROWS (16 * TCB_WARPS)
#define TCB_QT 32 // queries per staged tile in the cols pass

template <int D>
struct TcbRowsShared {
    static constexpr int KT = D == 128 ? 32 : 64;
    __nv_bfloat16 k[KT][D + TC_PAD];  // K rows [key][d]: B of S = Q K^T
    __nv_bfloat16 v[KT][D + TC_PAD];  // V rows [key][d]: B of dP = dO V^T
    __nv_bfloat16 kt[D][KT + TC_PAD]; // K^T [d][key]: B of dQ = dS K
    float keyBias[KT];
};

// A fragments of rows q0 .. q0 + 15 of a [B, S, ld] fp32 matrix at column offset col0 (times mul); rows past S are zeros.
template <int D>
__device__ __forceinline__ void rowFragments(uint32_t f[D / 16][4], const float *m, int64_t ld, int64_t col0, int q0, int S, int g, int t,
                                             float mul) {
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int r = q0 + g + (i & 1) * 8, c = kc * 16 + 2 * t + (i >> 1) * 8;
            float2 v = r < S ? ld2(m, r * ld + col0 + c) : make_float2(0.0f, 0.0f);
            f[kc][i] = packBf16(v.x * mul, v.y * mul);
        }
}

template <int D>
__device__ void attentionBackwardRowsTc(float *dqkv, __nv_bfloat16 *pOut, __nv_bfloat16 *dsOut, const float *qkv, const float *dout,
                                        const int32_t *mask, int S, int H, float scale, AttnDrop drop) {
    constexpr int KT = TcbRowsShared<D>::KT;
    __shared__ __align__(16) TcbRowsShared<D> sh;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * TCB_ROWS + warp * 16;
    const int64_t A = (int64_t)H * D, row3 = 3 * A;
    const float *base = qkv + (int64_t)b * S * row3, *dob = dout + (int64_t)b * S * A;
    const int64_t bhS = ((int64_t)b * H + h) * S, square = bhS * S; // bhS + q: query q's row of the [B, H, S, S] probabilities
    uint32_t qf[D / 16][4], of[D / 16][4]; // Q (scale folded in) and dO as A fragments
    rowFragments<D>(qf, base, row3, h * D, q0, S, g, t, scale);
    rowFragments<D>(of, dob, A, h * D, q0, S, g, t, 1.0f);
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, rowDot[2] = {0.0f, 0.0f}; // rows g and g + 8
    float dq[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

    for (int sweep = 0; sweep < 3; sweep++) { // 0: max and sum; 1: rowsum(P dP); 2: dS, P and dS out, dQ
        for (int k0 = 0; k0 < S; k0 += KT) {
            __syncthreads(); // every warp is done with the previous tile
            for (int e = threadIdx.x; e < KT * D / 2; e += blockDim.x) {
                int j = e / (D / 2), d = 2 * (e % (D / 2)), key = k0 + j;
                float2 kv = make_float2(0.0f, 0.0f), vv = kv;
                if (key < S) {
                    kv = ld2(base, key * row3 + A + h * D + d);
                    if (sweep > 0) vv = ld2(base, key * row3 + 2 * A + h * D + d);
                }
                *reinterpret_cast<__nv_bfloat162 *>(&sh.k[j][d]) = __floats2bfloat162_rn(kv.x, kv.y);
                if (sweep > 0) *reinterpret_cast<__nv_bfloat162 *>(&sh.v[j][d]) = __floats2bfloat162_rn(vv.x, vv.y);
                if (sweep == 2) {
                    sh.kt[d][j] = __float2bfloat16_rn(kv.x);
                    sh.kt[d + 1][j] = __float2bfloat16_rn(kv.y);
                }
            }
            for (int j = threadIdx.x; j < KT; j += blockDim.x) {
                int key = k0 + j;
                sh.keyBias[j] = key < S && (!mask || mask[(int64_t)b * S + key] != 0) ? 0.0f : -INFINITY;
            }
            __syncthreads();

            float s[KT / 8][4]; // S = scale Q K^T + bias, 16 rows x KT keys
#pragma unroll
            for (int n = 0; n < KT / 8; n++) {
                s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
                for (int kc = 0; kc < D / 16; kc++) {
                    const __nv_bfloat16 *kr = &sh.k[n * 8 + g][kc * 16 + 2 * t];
                    mmaBf16(s[n], qf[kc], *reinterpret_cast<const uint32_t *>(kr), *reinterpret_cast<const uint32_t *>(kr + 8));
                }
                float b0 = sh.keyBias[n * 8 + 2 * t], b1 = sh.keyBias[n * 8 + 2 * t + 1];
                s[n][0] += b0, s[n][1] += b1, s[n][2] += b0, s[n][3] += b1;
            }
            if (sweep == 0) { // online max and sum, per row (the 4 lanes of a quad share a row)
                float mx[2] = {m[0], m[1]};
#pragma unroll
                for (int n = 0; n < KT / 8; n++) {
                    mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
                    mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
                }
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                    float ref = mx[r] == -INFINITY ? 0.0f : mx[r], sum = 0.0f;
#pragma unroll
                    for (int n = 0; n < KT / 8; n++) sum += __expf(s[n][2 * r] - ref) + __expf(s[n][2 * r + 1] - ref);
                    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
                    l[r] = l[r] * __expf((m[r] == -INFINITY ? ref : m[r]) - ref) + sum;
                    m[r] = mx[r];
                }
                continue;
            }
            // P (fp32, normalised) and dP = dO V^T
            float p[KT / 8][4], dp[KT / 8][4];
#pragma unroll
            for (int n = 0; n < KT / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int r = e >> 1;
                    p[n][e] = m[r] == -INFINITY ? 0.0f : __expf(s[n][e] - m[r]) / l[r];
                    dp[n][e] = 0.0f;
                }
#pragma unroll
                for (int kc = 0; kc < D / 16; kc++) {
                    const __nv_bfloat16 *vr = &sh.v[n * 8 + g][kc * 16 + 2 * t];
                    mmaBf16(dp[n], of[kc], *reinterpret_cast<const uint32_t *>(vr), *reinterpret_cast<const uint32_t *>(vr + 8));
                }
                if (drop.on()) // dP = dropout(dO V^T); keys past S hold p = 0; rows past S have dO = 0, so dP = 0 there and they are never stored
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        dp[n][e] = drop.apply(dp[n][e], bhS + q0 + g + 8 * (e >> 1), S, k0 + n * 8 + 2 * t + (e & 1));
            }
            if (sweep == 1) {
#pragma unroll
                for (int n = 0; n < KT / 8; n++) {
                    rowDot[0] += p[n][0] * dp[n][0] + p[n][1] * dp[n][1];
                    rowDot[1] += p[n][2] * dp[n][2] + p[n][3] * dp[n][3];
                }
                continue;
            }
            // dS = P (dP - rowDot); P and dS to the scratch rows; dS as A fragments (16 keys each) for dQ += dS K
            uint32_t dsf[KT / 16][4];
#pragma unroll
            for (int n = 0; n < KT / 8; n++) {
                float ds[4];
#pragma unroll
                for (int e = 0; e < 4; e++) ds[e] = p[n][e] * (dp[n][e] - rowDot[e >> 1]);
                dsf[n / 2][(n & 1) * 2] = packBf16(ds[0], ds[1]);
                dsf[n / 2][(n & 1) * 2 + 1] = packBf16(ds[2], ds[3]);
                int key = k0 + n * 8 + 2 * t; // S is even (checked by the caller): a pair is both in or both out
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    int q = q0 + g + 8 * r;
                    if (q >= S || key >= S) continue;
                    int64_t at = square + (int64_t)q * S + key;
                    float p0 = p[n][2 * r], p1 = p[n][2 * r + 1]; // Pd for dV = Pd^T dO
                    if (drop.on()) p0 = drop.apply(p0, bhS + q, S, key), p1 = drop.apply(p1, bhS + q, S, key + 1);
                    *reinterpret_cast<__nv_bfloat162 *>(pOut + at) = __floats2bfloat162_rn(p0, p1);
                    *reinterpret_cast<__nv_bfloat162 *>(dsOut + at) = __floats2bfloat162_rn(ds[2 * r], ds[2 * r + 1]);
                }
            }
#pragma unroll
            for (int n = 0; n < D / 8; n++)
#pragma unroll
                for (int kc = 0; kc < KT / 16; kc++) {
                    const __nv_bfloat16 *kr = &sh.kt[n * 8 + g][kc * 16 + 2 * t];
                    mmaBf16(dq[n], dsf[kc], *reinterpret_cast<const uint32_t *>(kr), *reinterpret_cast<const uint32_t *>(kr + 8));
                }
        }
        if (sweep == 1)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                rowDot[r] += __shfl_xor_sync(0xffffffffu, rowDot[r], 1);
                rowDot[r] += __shfl_xor_sync(0xffffffffu, rowDot[r], 2);
            }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int q = q0 + g + 8 * r;
        if (q >= S) continue;
        float *out = dqkv + ((int64_t)b * S + q) * row3 + h * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) st2(out, n * 8 + 2 * t, dq[n][2 * r] * scale, dq[n][2 * r + 1] * scale);
    }
}

template <int D>
struct TcbColsShared {
    __nv_bfloat16 p[TCB_QT][TCB_ROWS + TC_PAD];  // P rows [query][key] of this CTA's 64 keys
    __nv_bfloat16 ds[TCB_QT][TCB_ROWS + TC_PAD]; // dS likewise
    __nv_bfloat16 dot[D][TCB_QT + TC_PAD];       // dO^T [d][query]: B of dV = P^T dO
    __nv_bfloat16 qt[D][TCB_QT + TC_PAD];        // Q^T [d][query]: B of dK = dS^T Q
};

// The A fragment of rows key0 .. key0 + 15 of M^T, columns (queries) kc * 16 .., from a staged [query][key] tile.
__device__ __forceinline__ void transposedFragment(uint32_t f[4], const __nv_bfloat16 (*m)[TCB_ROWS + TC_PAD], int key0, int kc, int g,
                                                   int t) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int r = key0 + g + (i & 1) * 8, c = kc * 16 + 2 * t + (i >> 1) * 8;
        __nv_bfloat162 v;
        v.x = m[c][r];
        v.y = m[c + 1][r];
        f[i] = *reinterpret_cast<uint32_t *>(&v);
    }
}

template <int D>
__device__ void attentionBackwardColsTc(float *dqkv, const __nv_bfloat16 *pIn, const __nv_bfloat16 *dsIn, const float *qkv,
                                        const float *dout, int S, int H, float scale) {
    __shared__ __align__(16) TcbColsShared<D> sh;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * TCB_ROWS, key0 = warp * 16; // key0: the warp's rows in the tile
    const int64_t A = (int64_t)H * D, row3 = 3 * A;
    const float *base = qkv + (int64_t)b * S * row3, *dob = dout + (int64_t)b * S * A;
    const int64_t square = ((int64_t)b * H + h) * S * (int64_t)S;
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.0f;
    for (int qs = 0; qs < S; qs += TCB_QT) {
        __syncthreads();
        for (int e = threadIdx.x; e < TCB_QT * TCB_ROWS / 2; e += blockDim.x) { // P and dS: pairs of keys of a query row
            int r = e / (TCB_ROWS / 2), j = 2 * (e % (TCB_ROWS / 2)), q = qs + r, key = k0 + j;
            uint32_t pv = 0, dv2 = 0;
            if (q < S && key < S) {
                pv = *reinterpret_cast<const uint32_t *>(pIn + square + (int64_t)q * S + key);
                dv2 = *reinterpret_cast<const uint32_t *>(dsIn + square + (int64_t)q * S + key);
            }
            *reinterpret_cast<uint32_t *>(&sh.p[r][j]) = pv;
            *reinterpret_cast<uint32_t *>(&sh.ds[r][j]) = dv2;
        }
        for (int e = threadIdx.x; e < TCB_QT * D / 2; e += blockDim.x) { // dO and Q rows, transposed
            int r = e / (D / 2), d = 2 * (e % (D / 2)), q = qs + r;
            float2 o = make_float2(0.0f, 0.0f), qv = o;
            if (q < S) {
                o = ld2(dob, q * A + h * D + d);
                qv = ld2(base, q * row3 + h * D + d);
            }
            sh.dot[d][r] = __float2bfloat16_rn(o.x);
            sh.dot[d + 1][r] = __float2bfloat16_rn(o.y);
            sh.qt[d][r] = __float2bfloat16_rn(qv.x);
            sh.qt[d + 1][r] = __float2bfloat16_rn(qv.y);
        }
        __syncthreads();
#pragma unroll
        for (int kc = 0; kc < TCB_QT / 16; kc++) {
            uint32_t pf[4], dsf[4];
            transposedFragment(pf, sh.p, key0, kc, g, t);
            transposedFragment(dsf, sh.ds, key0, kc, g, t);
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const __nv_bfloat16 *orow = &sh.dot[n * 8 + g][kc * 16 + 2 * t], *qrow = &sh.qt[n * 8 + g][kc * 16 + 2 * t];
                mmaBf16(dv[n], pf, *reinterpret_cast<const uint32_t *>(orow), *reinterpret_cast<const uint32_t *>(orow + 8));
                mmaBf16(dk[n], dsf, *reinterpret_cast<const uint32_t *>(qrow), *reinterpret_cast<const uint32_t *>(qrow + 8));
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int key = k0 + key0 + g + 8 * r;
        if (key >= S) continue;
        float *row = dqkv + ((int64_t)b * S + key) * row3;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            st2(row, A + h * D + n * 8 + 2 * t, dk[n][2 * r] * scale, dk[n][2 * r + 1] * scale);
            st2(row, 2 * A + h * D + n * 8 + 2 * t, dv[n][2 * r], dv[n][2 * r + 1]);
        }
    }
}

#define ATTENTION_BACKWARD_TC(DIM)                                                                                                    \
    extern "C" __global__ void __launch_bounds__(TCB_WARPS * 32)                                                                     \
        attention_backward_rows_tc_d##DIM(float *dqkv, __nv_bfloat16 *pOut, __nv_bfloat16 *dsOut, const float *qkv, const float *dout, \
                                          const int32_t *mask, int S, int H, float scale, uint32_t dropKey, uint32_t dropThreshold,   \
                                          float dropScale) {                                                                          \
        attentionBackwardRowsTc<DIM>(dqkv, pOut, dsOut, qkv, dout, mask, S, H, scale, AttnDrop{dropKey, dropThreshold, dropScale});  \
    }                                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(TCB_WARPS * 32)                                                                     \
        attention_backward_cols_tc_d##DIM(float *dqkv, const __nv_bfloat16 *pIn, const __nv_bfloat16 *dsIn, const float *qkv,          \
                                          const float *dout, int S, int H, float scale) {                                             \
        attentionBackwardColsTc<DIM>(dqkv, pIn, dsIn, qkv, dout, S, H, scale);                                                        \
    }
ATTENTION_BACKWARD_TC(32)
ATTENTION_BACKWARD_TC(64)
ATTENTION_BACKWARD_TC(128)
