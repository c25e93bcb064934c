// out = GELU(x + bias) with the exact erf form (BERT's), in place allowed (out == x). fp32: four
// elements per thread through 16-byte loads and stores when cols % 4 == 0 (every unpruned BERT
// width), one per thread otherwise (a pruned FFN can have any width); bf16: two per thread through
// 4-byte bf16x2 loads when cols is even, else one. Grid-stride over rows * cols.
#include "common.cuh"

__device__ __forceinline__ float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

template <typename T>
__device__ void biasGeluScalar(T *out, const T *x, const float *bias, int64_t rows, int cols) {
    int64_t n = rows * cols, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) st(out, i, gelu(ld(x, i) + bias[i % cols]));
}

extern "C" __global__ void bias_gelu_forward_f32(float *out, const float *x, const float *bias, int64_t rows, int cols) {
    if (cols % 4 != 0) {
        biasGeluScalar(out, x, bias, rows, cols);
        return;
    }
    int64_t n4 = rows * cols / 4, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = reinterpret_cast<const float4 *>(x)[i];
        int c = (int)((i * 4) % cols);
        float4 b = *reinterpret_cast<const float4 *>(bias + c);
        v.x = gelu(v.x + b.x);
        v.y = gelu(v.y + b.y);
        v.z = gelu(v.z + b.z);
        v.w = gelu(v.w + b.w);
        reinterpret_cast<float4 *>(out)[i] = v;
    }
}

extern "C" __global__ void bias_gelu_forward_bf16(__nv_bfloat16 *out, const __nv_bfloat16 *x, const float *bias, int64_t rows,
                                                  int cols) {
    if (cols % 2 != 0) {
        biasGeluScalar(out, x, bias, rows, cols);
        return;
    }
    int64_t n2 = rows * cols / 2, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n2; i += stride) {
        float2 v = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(x)[i]);
        int c = (int)((i * 2) % cols);
        v.x = gelu(v.x + bias[c]);
        v.y = gelu(v.y + bias[c + 1]);
        reinterpret_cast<__nv_bfloat162 *>(out)[i] = __float22bfloat162_rn(v);
    }
}

// Backward (fp32): dx = dy GELU'(x + bias) with GELU'(u) = Phi(u) + u phi(u); bias may be null.
// The bias gradient is bias_backward over dx (bias.cu), as on the CPU.
extern "C" __global__ void bias_gelu_backward_f32(float *dx, const float *dy, const float *x, const float *bias, int64_t rows,
                                                  int cols) {
    int64_t n = rows * cols, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        float u = x[i] + (bias ? bias[i % cols] : 0.0f);
        float cdf = 0.5f * (1.0f + erff(u * 0.70710678118654752f)), pdf = 0.3989422804014327f * __expf(-0.5f * u * u);
        dx[i] = dy[i] * (cdf + u * pdf);
    }
}
