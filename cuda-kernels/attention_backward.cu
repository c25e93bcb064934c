// Attention backward, recomputing the probabilities (nothing of size [S, S] lives between forward
// and backward): for each (batch, head), with P = softmax(scale Q K^T + padding mask),
//   dP = dO V^T, dS = P (dP - rowsum(dP P)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
// Two passes over fp32 storage with CUDA cores (the tensor-core version is the next step):
// attention_backward_rows (a warp per query row) recomputes the row of scores, writes P and dS to
// a scratch [B, H, S, S] pair and produces dQ; attention_backward_cols (a warp per key row) reads
// the columns back for dK and dV. Layout as the forward's: qkv and dqkv [B, S, 3A] with Q, K, V
// side by side, head h at columns h D .. h D + D; every element of dqkv is written. D <= 128.
// With dropout on the probabilities (Pd = dropout(P), ctx = Pd V): dV = Pd^T dO, dP = dropout(dO V^T),
// dS = P (dP - rowsum(dP P)); the rows pass writes Pd (not P) for the cols pass.
#include "common.cuh"

#define AB_WARPS 8
#define AB_T 32
#define AB_DMAX 128

extern "C" __global__ void __launch_bounds__(AB_WARPS * 32)
    attention_backward_rows_f32(float *dqkv, float *pOut, float *dsOut, const float *qkv, const float *dout, const int32_t *mask, int S,
                                int H, int D, float scale, uint32_t dropKey, uint32_t dropThreshold, float dropScale) {
    __shared__ float kTile[AB_T][AB_DMAX + 1], vTile[AB_T][AB_DMAX + 1];
    const AttnDrop drop{dropKey, dropThreshold, dropScale};
    __shared__ float qRow[AB_WARPS][AB_DMAX], dRow[AB_WARPS][AB_DMAX];
    __shared__ int keep[AB_T];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y, i = blockIdx.x * AB_WARPS + warp;
    int64_t A = (int64_t)H * D, row3 = 3 * A;
    const float *base = qkv + (int64_t)b * S * row3;
    bool active = i < S;
    float *pRow = pOut + (((int64_t)b * H + h) * S + (active ? i : 0)) * S, *dsRow = dsOut + (((int64_t)b * H + h) * S + (active ? i : 0)) * S;
    if (active)
        for (int d = lane; d < D; d += 32) {
            qRow[warp][d] = base[i * row3 + h * D + d] * scale;
            dRow[warp][d] = dout[((int64_t)b * S + i) * A + h * D + d];
        }
    float m = -INFINITY, l = 0.0f;
    // pass 1: scores and dP for every key (kept in the scratch rows), running max and sum
    for (int k0 = 0; k0 < S; k0 += AB_T) {
        __syncthreads();
        for (int e = threadIdx.x; e < AB_T * D; e += blockDim.x) {
            int j = e / D, d = e % D, key = k0 + j;
            kTile[j][d] = key < S ? base[key * row3 + A + h * D + d] : 0.0f;
            vTile[j][d] = key < S ? base[key * row3 + 2 * A + h * D + d] : 0.0f;
        }
        for (int j = threadIdx.x; j < AB_T; j += blockDim.x) keep[j] = k0 + j < S && (!mask || mask[(int64_t)b * S + k0 + j] != 0);
        __syncthreads();
        if (!active) continue;
        int key = k0 + lane;
        float s = -INFINITY, dp = 0.0f;
        if (keep[lane]) {
            s = 0.0f;
            for (int d = 0; d < D; d++) {
                s += qRow[warp][d] * kTile[lane][d];
                dp += dRow[warp][d] * vTile[lane][d];
            }
        }
        if (key < S) {
            pRow[key] = s;
            dsRow[key] = dp;
        }
        float mNew = fmaxf(m, warpMax(s));
        if (mNew != -INFINITY) {
            l = l * __expf(m - mNew) + warpSum(keep[lane] ? __expf(s - mNew) : 0.0f);
            m = mNew;
        }
    }
    // pass 2: P, dP (dropped), rowsum(dP P), then dS and Pd (each lane rereads only the keys it wrote)
    float inv = l > 0.0f ? 1.0f / l : 0.0f, dot = 0.0f;
    const int64_t bhRow = ((int64_t)b * H + h) * S + i;
    if (active)
        for (int key = lane; key < S; key += 32) {
            float s = pRow[key], p = s == -INFINITY ? 0.0f : __expf(s - m) * inv;
            float dp = drop.on() ? drop.apply(dsRow[key], bhRow, S, key) : dsRow[key];
            pRow[key] = p;
            dsRow[key] = dp;
            dot += p * dp;
        }
    dot = warpSum(dot);
    if (active)
        for (int key = lane; key < S; key += 32) {
            float p = pRow[key];
            dsRow[key] = p * (dsRow[key] - dot);
            if (drop.on()) pRow[key] = drop.apply(p, bhRow, S, key);
        }
    __syncwarp();
    // pass 3: dQ = scale dS K, lanes own D / 32 columns each
    float acc[AB_DMAX / 32];
#pragma unroll
    for (int c = 0; c < AB_DMAX / 32; c++) acc[c] = 0.0f;
    for (int k0 = 0; k0 < S; k0 += AB_T) {
        __syncthreads();
        for (int e = threadIdx.x; e < AB_T * D; e += blockDim.x) {
            int j = e / D, d = e % D, key = k0 + j;
            kTile[j][d] = key < S ? base[key * row3 + A + h * D + d] : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        float ds = k0 + lane < S ? dsRow[k0 + lane] : 0.0f;
        for (int j = 0; j < AB_T; j++) {
            float dsj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
            for (int c = 0; c < AB_DMAX / 32; c++) {
                int d = lane + 32 * c;
                if (d < D) acc[c] += dsj * kTile[j][d];
            }
        }
    }
    if (!active) return;
    float *dq = dqkv + ((int64_t)b * S + i) * row3 + h * D;
#pragma unroll
    for (int c = 0; c < AB_DMAX / 32; c++) {
        int d = lane + 32 * c;
        if (d < D) dq[d] = acc[c] * scale;
    }
}

extern "C" __global__ void __launch_bounds__(AB_WARPS * 32)
    attention_backward_cols_f32(float *dqkv, const float *pIn, const float *dsIn, const float *qkv, const float *dout, int S, int H, int D,
                                float scale) {
    __shared__ float qTile[AB_T][AB_DMAX + 1], oTile[AB_T][AB_DMAX + 1];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y, j = blockIdx.x * AB_WARPS + warp;
    int64_t A = (int64_t)H * D, row3 = 3 * A;
    const float *base = qkv + (int64_t)b * S * row3;
    const float *p = pIn + ((int64_t)b * H + h) * S * S, *ds = dsIn + ((int64_t)b * H + h) * S * S;
    bool active = j < S;
    float dk[AB_DMAX / 32], dv[AB_DMAX / 32];
#pragma unroll
    for (int c = 0; c < AB_DMAX / 32; c++) dk[c] = dv[c] = 0.0f;
    for (int q0 = 0; q0 < S; q0 += AB_T) {
        __syncthreads();
        for (int e = threadIdx.x; e < AB_T * D; e += blockDim.x) {
            int r = e / D, d = e % D, q = q0 + r;
            qTile[r][d] = q < S ? base[q * row3 + h * D + d] : 0.0f;
            oTile[r][d] = q < S ? dout[((int64_t)b * S + q) * A + h * D + d] : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        int q = q0 + lane;
        float pq = q < S ? p[(int64_t)q * S + j] : 0.0f, dsq = q < S ? ds[(int64_t)q * S + j] : 0.0f;
        for (int r = 0; r < AB_T; r++) {
            float pr = __shfl_sync(0xffffffffu, pq, r), dsr = __shfl_sync(0xffffffffu, dsq, r);
#pragma unroll
            for (int c = 0; c < AB_DMAX / 32; c++) {
                int d = lane + 32 * c;
                if (d < D) {
                    dv[c] += pr * oTile[r][d];
                    dk[c] += dsr * qTile[r][d];
                }
            }
        }
    }
    if (!active) return;
    float *row = dqkv + ((int64_t)b * S + j) * row3;
#pragma unroll
    for (int c = 0; c < AB_DMAX / 32; c++) {
        int d = lane + 32 * c;
        if (d < D) {
            row[A + h * D + d] = dk[c] * scale;
            row[2 * A + h * D + d] = dv[c];
        }
    }
}
