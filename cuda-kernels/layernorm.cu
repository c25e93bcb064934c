// out = LN(x + residual) * gamma + beta over the last dimension (residual may be null), fp32
// statistics; mean and rstd [rows] saved for backward; sum (may be null) receives x + residual in
// the storage type. One block per row; the row is read once into registers (cols <= 8 * blockDim),
// so the two reductions do not re-read memory.
#include "common.cuh"

#define LN_PER_THREAD 8

template <typename T>
__device__ void layernormForward(T *out, float *mean, float *rstd, T *sum, const T *x, const T *residual,
                                 const float *gamma, const float *beta, int cols, float eps) {
    __shared__ float scratch[32];
    int64_t row = blockIdx.x, base = row * cols;
    float v[LN_PER_THREAD];
    float local = 0.0f;
#pragma unroll
    for (int k = 0; k < LN_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        v[k] = 0.0f;
        if (c < cols) {
            v[k] = ld(x, base + c) + (residual ? ld(residual, base + c) : 0.0f);
            if (sum) st(sum, base + c, v[k]);
            local += v[k];
        }
    }
    float mu = blockSum(local, scratch) / cols;
    float var = 0.0f;
#pragma unroll
    for (int k = 0; k < LN_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        if (c < cols) var += (v[k] - mu) * (v[k] - mu);
    }
    float r = rsqrtf(blockSum(var, scratch) / cols + eps);
    if (threadIdx.x == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = r;
    }
#pragma unroll
    for (int k = 0; k < LN_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        if (c < cols) st(out, base + c, (v[k] - mu) * r * gamma[c] + beta[c]);
    }
}

#define LAYERNORM(SUFFIX, T)                                                                                            \
    extern "C" __global__ void layernorm_forward_##SUFFIX(T *out, float *mean, float *rstd, T *sum, const T *x,       \
                                                          const T *residual, const float *gamma, const float *beta,   \
                                                          int cols, float eps) {                                        \
        layernormForward(out, mean, rstd, sum, x, residual, gamma, beta, cols, eps);                                    \
    }
TOPA_BOTH_TYPES(LAYERNORM)

// Backward of layernormForward (fp32): per row, with xhat = (x - mean) rstd and g = dy gamma,
// dx = rstd (g - mean(g) - xhat mean(g xhat)) (accumulate: dx +=); dgamma += dy xhat and dbeta += dy
// (either may be null) summed over the rows with atomics. x is the normalised input (x + residual
// when the residual was fused). One block per row, the row in registers as in forward.
extern "C" __global__ void layernorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                                  const float *mean, const float *rstd, const float *gamma, int cols,
                                                  int accumulate) {
    __shared__ float scratch[32];
    int64_t row = blockIdx.x, base = row * cols;
    float mu = mean[row], r = rstd[row];
    float xh[LN_PER_THREAD], g[LN_PER_THREAD], sg = 0.0f, sgx = 0.0f;
#pragma unroll
    for (int k = 0; k < LN_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        xh[k] = g[k] = 0.0f;
        if (c < cols) {
            float d = dy[base + c];
            xh[k] = (x[base + c] - mu) * r;
            g[k] = d * gamma[c];
            sg += g[k];
            sgx += g[k] * xh[k];
            if (dgamma) atomicAdd(dgamma + c, d * xh[k]);
            if (dbeta) atomicAdd(dbeta + c, d);
        }
    }
    float mg = blockSum(sg, scratch) / cols, mgx = blockSum(sgx, scratch) / cols;
#pragma unroll
    for (int k = 0; k < LN_PER_THREAD; k++) {
        int c = threadIdx.x + k * blockDim.x;
        if (c < cols) {
            float v = r * (g[k] - mg - xh[k] * mgx);
            dx[base + c] = accumulate ? dx[base + c] + v : v;
        }
    }
}
