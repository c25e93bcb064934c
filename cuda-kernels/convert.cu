// Storage conversions and copies the GEMM path needs: fp32 <-> bf16 (round to nearest even: the
// cuBLASLt bf16 GEMM's input when activations are fp32, and activations kept for backward in bf16)
// and a row broadcast (the output of a linear layer whose every input was pruned is its bias on
// every row).
#include "common.cuh"

// out[i] = bf16(in[i]); two per thread through 8-byte loads when n is even and both pointers allow
// it (a tensor view may start at an odd element).
extern "C" __global__ void convert_f32_to_bf16(__nv_bfloat16 *out, const float *in, int64_t n) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x, i0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n % 2 == 0 && (reinterpret_cast<uintptr_t>(in) % 8 | reinterpret_cast<uintptr_t>(out) % 4) == 0) {
        for (int64_t i = i0; i < n / 2; i += stride)
            reinterpret_cast<__nv_bfloat162 *>(out)[i] = __float22bfloat162_rn(reinterpret_cast<const float2 *>(in)[i]);
    } else {
        for (int64_t i = i0; i < n; i += stride) out[i] = __float2bfloat16_rn(in[i]);
    }
}

// out[i] = float(in[i]): activations kept in bf16, widened back for backward's ops.
extern "C" __global__ void convert_bf16_to_f32(float *out, const __nv_bfloat16 *in, int64_t n) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x, i0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n % 2 == 0 && (reinterpret_cast<uintptr_t>(in) % 4 | reinterpret_cast<uintptr_t>(out) % 8) == 0) {
        for (int64_t i = i0; i < n / 2; i += stride)
            reinterpret_cast<float2 *>(out)[i] = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(in)[i]);
    } else {
        for (int64_t i = i0; i < n; i += stride) out[i] = __bfloat162float(in[i]);
    }
}

// out[r, c] = row[c] for r < rows.
extern "C" __global__ void broadcast_rows_f32(float *out, const float *row, int64_t rows, int cols) {
    int64_t n = rows * cols, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) out[i] = row[i % cols];
}

// t[i, j] = 0 where row block i / (rows / blocks) differs from column block j / (cols / blocks): keeps a
// block-diagonal LoRA B (the fused QKV adapter) block-diagonal after a gradient step.
extern "C" __global__ void zero_off_diagonal_f32(float *t, int64_t rows, int64_t cols, int blocks) {
    int64_t n = rows * cols, stride = (int64_t)gridDim.x * blockDim.x, rb = rows / blocks, cb = cols / blocks;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride)
        if ((i / cols) / rb != (i % cols) / cb) t[i] = 0.0f;
}

// out[c, r] = in[r, c] (+ beta out[c, r]) for in [rows, cols] fp32, stored as T. 32 x 32 tiles through
// shared memory, so both the read and the write are coalesced; block (32, 8).
template <typename T>
__device__ void transposeTiles(T *out, const float *in, int rows, int cols, float beta) {
    __shared__ float tile[32][33];
    int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int k = threadIdx.y; k < 32; k += 8) {
        int r = r0 + k, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[k][threadIdx.x] = in[(int64_t)r * cols + c];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += 8) {
        int c = c0 + k, r = r0 + threadIdx.x;
        if (r < rows && c < cols) {
            int64_t o = (int64_t)c * rows + r;
            st(out, o, tile[threadIdx.x][k] + (beta != 0.0f ? beta * ld(out, o) : 0.0f));
        }
    }
}

// A frozen weight W [out, in] stored as bf16 W^T [in, out]: the forward product's right operand.
extern "C" __global__ void transpose_to_bf16(__nv_bfloat16 *out, const float *in, int rows, int cols) {
    transposeTiles(out, in, rows, cols, 0.0f);
}

// out = in^T + beta out, fp32 (small factors: LoRA's A and B).
extern "C" __global__ void transpose_f32(float *out, const float *in, int rows, int cols, float beta) {
    transposeTiles(out, in, rows, cols, beta);
}

// The left operand of a LoRA product with the rank-r update folded into the same GEMM:
// out [rows, k + r] bf16 = [x | scale u] for x [rows, k] and u = x A^T [rows, r] fp32.
extern "C" __global__ void lora_augment_to_bf16(__nv_bfloat16 *out, const float *x, const float *u, float scale, int64_t rows, int k,
                                                int r) {
    int64_t width = (int64_t)k + r, n = rows * width, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        int64_t row = i / width;
        int c = (int)(i % width);
        out[i] = __float2bfloat16_rn(c < k ? x[row * k + c] : scale * u[row * r + (c - k)]);
    }
}

// The same operand with the factor product formed in the pass that reads x: u = x op(f) [rows, r]
// (fp32, written: backward keeps it) and out [rows, k + r] bf16 = [x | scale u]. op(f) [k, r]: f is
// [r, k] (fRk: LoRA's A, forward) or [k, r] (LoRA's B, input gradient). A warp takes 4 rows at a
// time so each factor value read (from L1: the factor is small) serves 4 rows; the rank in chunks
// of 16 partial sums per row, reduced across the warp at the end of each chunk. 128 threads.
#define LORA_ROWS_PER_WARP 4
#define LORA_Q 16
template <int VEC>
__device__ void loraAugmentLowRank(__nv_bfloat16 *out, float *u, const float *x, const float *f, int fRk, float scale, int64_t rows,
                                   int k, int r) {
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const int64_t width = (int64_t)k + r;
    for (int64_t r0 = ((int64_t)blockIdx.x * warps + (threadIdx.x >> 5)) * LORA_ROWS_PER_WARP; r0 < rows;
         r0 += (int64_t)gridDim.x * warps * LORA_ROWS_PER_WARP) {
        for (int q0 = 0; q0 < r; q0 += LORA_Q) { // r >= 1: the first chunk also writes x's part
            float acc[LORA_ROWS_PER_WARP][LORA_Q];
#pragma unroll
            for (int i = 0; i < LORA_ROWS_PER_WARP; i++)
#pragma unroll
                for (int q = 0; q < LORA_Q; q++) acc[i][q] = 0.0f;
            for (int c = lane * VEC; c < k; c += 32 * VEC) {
                float xv[LORA_ROWS_PER_WARP][VEC];
#pragma unroll
                for (int i = 0; i < LORA_ROWS_PER_WARP; i++) {
                    int64_t row = r0 + i;
                    if constexpr (VEC == 4) {
                        float4 v = row < rows ? *reinterpret_cast<const float4 *>(x + row * k + c) : make_float4(0.f, 0.f, 0.f, 0.f);
                        xv[i][0] = v.x, xv[i][1] = v.y, xv[i][2] = v.z, xv[i][3] = v.w;
                        if (q0 == 0 && row < rows) {
                            __nv_bfloat162 *o = reinterpret_cast<__nv_bfloat162 *>(out + row * width + c);
                            o[0] = __floats2bfloat162_rn(v.x, v.y);
                            o[1] = __floats2bfloat162_rn(v.z, v.w);
                        }
                    } else {
                        xv[i][0] = row < rows ? x[row * k + c] : 0.0f;
                        if (q0 == 0 && row < rows) out[row * width + c] = __float2bfloat16_rn(xv[i][0]);
                    }
                }
#pragma unroll
                for (int q = 0; q < LORA_Q; q++) {
                    if (q0 + q >= r) break;
                    float fv[VEC];
                    if constexpr (VEC == 4) {
                        if (fRk) {
                            float4 v = *reinterpret_cast<const float4 *>(f + (int64_t)(q0 + q) * k + c);
                            fv[0] = v.x, fv[1] = v.y, fv[2] = v.z, fv[3] = v.w;
                        } else {
#pragma unroll
                            for (int e = 0; e < 4; e++) fv[e] = f[(int64_t)(c + e) * r + q0 + q];
                        }
                    } else {
                        fv[0] = fRk ? f[(int64_t)(q0 + q) * k + c] : f[(int64_t)c * r + q0 + q];
                    }
#pragma unroll
                    for (int i = 0; i < LORA_ROWS_PER_WARP; i++)
#pragma unroll
                        for (int e = 0; e < VEC; e++) acc[i][q] += xv[i][e] * fv[e];
                }
            }
#pragma unroll
            for (int i = 0; i < LORA_ROWS_PER_WARP; i++)
#pragma unroll
                for (int q = 0; q < LORA_Q; q++)
#pragma unroll
                    for (int off = 16; off > 0; off >>= 1) acc[i][q] += __shfl_xor_sync(0xffffffffu, acc[i][q], off);
            // every lane holds the sums: lane q (< 16) writes rank column q0 + q of each row
#pragma unroll
            for (int i = 0; i < LORA_ROWS_PER_WARP; i++) {
                int64_t row = r0 + i;
                float mine = 0.0f;
#pragma unroll
                for (int q = 0; q < LORA_Q; q++) mine = lane == q ? acc[i][q] : mine;
                if (row < rows && lane < LORA_Q && q0 + lane < r) {
                    u[row * r + q0 + lane] = mine;
                    out[row * width + k + q0 + lane] = __float2bfloat16_rn(scale * mine);
                }
            }
        }
    }
}

// Vector path when k is a multiple of 4 and both x and out rows stay 16- and 8-byte aligned.
extern "C" __global__ void __launch_bounds__(128) lora_augment_lowrank_to_bf16(__nv_bfloat16 *out, float *u, const float *x,
                                                                               const float *f, int fRk, float scale, int64_t rows,
                                                                               int k, int r) {
    bool vec = k % 4 == 0 && r % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0 &&
               (!fRk || reinterpret_cast<uintptr_t>(f) % 16 == 0);
    if (vec) loraAugmentLowRank<4>(out, u, x, f, fRk, scale, rows, k, r);
    else loraAugmentLowRank<1>(out, u, x, f, fRk, scale, rows, k, r);
}

// Rows k .. k + r of the right operand [W^T ; B^T] ([k + r, n] bf16): B^T from the adapter's B, stored
// [n, r] (transposed: B itself, a LoRA B [out, r]) or [r, n].
extern "C" __global__ void lora_pack_b_bf16(__nv_bfloat16 *rowsOut, const float *b, int n, int r, int transposed) {
    int64_t total = (int64_t)n * r, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        int t = (int)(i / n), j = (int)(i % n);
        rowsOut[i] = __float2bfloat16_rn(transposed ? b[(int64_t)j * r + t] : b[(int64_t)t * n + j]);
    }
}

