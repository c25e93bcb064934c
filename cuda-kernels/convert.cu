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

// Rows k .. k + r of the right operand [W^T ; B^T] ([k + r, n] bf16): B^T from the adapter's B, stored
// [n, r] (transposed: B itself, a LoRA B [out, r]) or [r, n].
extern "C" __global__ void lora_pack_b_bf16(__nv_bfloat16 *rowsOut, const float *b, int n, int r, int transposed) {
    int64_t total = (int64_t)n * r, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        int t = (int)(i / n), j = (int)(i % n);
        rowsOut[i] = __float2bfloat16_rn(transposed ? b[(int64_t)j * r + t] : b[(int64_t)t * n + j]);
    }
}

