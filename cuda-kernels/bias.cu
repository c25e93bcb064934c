// dbias[c] += sum over rows of dy[r, c] (fp32): a 32-column x 8-row thread tile walks a slice of the
// rows (coalesced along columns), the 8 partial sums meet in shared memory, one atomic per column
// per block. Grid (ceil(cols / 32), row slices).
#include "common.cuh"

extern "C" __global__ void bias_backward_f32(float *dbias, const float *dy, int64_t rows, int cols) {
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int64_t perSlice = (rows + gridDim.y - 1) / gridDim.y, r0 = blockIdx.y * perSlice, r1 = min(rows, r0 + perSlice);
    float s = 0.0f;
    if (c < cols)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) s += dy[r * cols + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float t = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) t += part[k][threadIdx.x];
        atomicAdd(dbias + c, t);
    }
}
