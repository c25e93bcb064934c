// Storage conversions and copies the GEMM path needs: fp32 -> bf16 (round to nearest even, the
// cuBLASLt bf16 GEMM's input when activations are kept in fp32) and a row broadcast (the output
// of a linear layer whose every input was pruned is its bias on every row).
#include "common.cuh"

// out[i] = bf16(in[i]); two per thread through 8-byte loads when n is even.
extern "C" __global__ void convert_f32_to_bf16(__nv_bfloat16 *out, const float *in, int64_t n) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x, i0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n % 2 == 0) {
        for (int64_t i = i0; i < n / 2; i += stride)
            reinterpret_cast<__nv_bfloat162 *>(out)[i] = __float22bfloat162_rn(reinterpret_cast<const float2 *>(in)[i]);
    } else {
        for (int64_t i = i0; i < n; i += stride) out[i] = __float2bfloat16_rn(in[i]);
    }
}

// out[r, c] = row[c] for r < rows.
extern "C" __global__ void broadcast_rows_f32(float *out, const float *row, int64_t rows, int cols) {
    int64_t n = rows * cols, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) out[i] = row[i % cols];
}
