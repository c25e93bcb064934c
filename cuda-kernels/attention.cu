// Attention forward, flash-style: ctx = softmax(scale Q K^T + padding mask) V per head without the
// [S, S] matrix, one pass over K and V with an online softmax (running max and sum, rescaled
// accumulators). Layout as the CPU backend's: qkv [B, S, 3A] (Q, K, V side by side, head h at
// columns h D .. h D + D of each), ctx [B, S, A], mask [B, S] (1 real, 0 padding; null: none),
// D <= 128. Grid (ceil(S / 8), heads, B); 8 warps per block, one query row per warp; each 32-key
// tile of K and V is staged in shared memory (fp32, K rows padded against bank conflicts), lane j
// scores key j of the tile, then every lane updates its D / 32 output columns. A row whose keys
// are all padding gets zeros. Dropout on the probabilities (drop): the row sum l adds the kept and the
// dropped alike, the accumulator only the kept ones, scaled -- ctx = dropout(P) V as the CPU computes it.
#include "common.cuh"

#define ATT_WARPS 8
#define ATT_KT 32
#define ATT_DMAX 128

template <typename T>
__device__ void attentionForward(T *ctx, const T *qkv, const int32_t *mask, int S, int H, int D, float scale, AttnDrop drop) {
    __shared__ float kTile[ATT_KT][ATT_DMAX + 1];
    __shared__ float vTile[ATT_KT][ATT_DMAX];
    __shared__ float qRow[ATT_WARPS][ATT_DMAX];
    __shared__ int keep[ATT_KT];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y, q = blockIdx.x * ATT_WARPS + warp;
    int64_t A = (int64_t)H * D, row3 = 3 * A;
    const T *base = qkv + (int64_t)b * S * row3;
    bool active = q < S;
    if (active)
        for (int d = lane; d < D; d += 32) qRow[warp][d] = ld(base, q * row3 + h * D + d) * scale;
    float acc[ATT_DMAX / 32];
#pragma unroll
    for (int i = 0; i < ATT_DMAX / 32; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < S; k0 += ATT_KT) {
        __syncthreads(); // the previous tile is no longer read
        for (int e = threadIdx.x; e < ATT_KT * D; e += blockDim.x) {
            int j = e / D, d = e % D, key = k0 + j;
            bool in = key < S;
            kTile[j][d] = in ? ld(base, key * row3 + A + h * D + d) : 0.0f;
            vTile[j][d] = in ? ld(base, key * row3 + 2 * A + h * D + d) : 0.0f;
        }
        for (int j = threadIdx.x; j < ATT_KT; j += blockDim.x) {
            int key = k0 + j;
            keep[j] = key < S && (!mask || mask[(int64_t)b * S + key] != 0);
        }
        __syncthreads();
        if (!active) continue;
        float s = -INFINITY;
        if (keep[lane]) {
            s = 0.0f;
            for (int d = 0; d < D; d++) s += qRow[warp][d] * kTile[lane][d];
        }
        float mNew = fmaxf(m, warpMax(s));
        if (mNew == -INFINITY) continue; // nothing real yet
        float p = keep[lane] ? __expf(s - mNew) : 0.0f, corr = __expf(m - mNew);
        l = l * corr + warpSum(p);
        if (drop.on() && keep[lane]) p = drop.apply(p, ((int64_t)b * H + h) * S + q, S, k0 + lane);
#pragma unroll
        for (int i = 0; i < ATT_DMAX / 32; i++) acc[i] *= corr;
        for (int j = 0; j < ATT_KT; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
            for (int i = 0; i < ATT_DMAX / 32; i++) {
                int d = lane + 32 * i;
                if (d < D) acc[i] += pj * vTile[j][d];
            }
        }
        m = mNew;
    }
    if (!active) return;
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T *out = ctx + ((int64_t)b * S + q) * A + h * D;
#pragma unroll
    for (int i = 0; i < ATT_DMAX / 32; i++) {
        int d = lane + 32 * i;
        if (d < D) st(out, d, acc[i] * inv);
    }
}

#define ATTENTION(SUFFIX, T)                                                                                       \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32)                                                   \
        attention_forward_##SUFFIX(T *ctx, const T *qkv, const int32_t *mask, int S, int H, int D, float scale, \
                                  uint32_t dropKey, uint32_t dropThreshold, float dropScale) {                    \
        attentionForward(ctx, qkv, mask, S, H, D, scale, AttnDrop{dropKey, dropThreshold, dropScale});             \
    }
TOPA_BOTH_TYPES(ATTENTION)
