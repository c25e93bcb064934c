// 2:4 semi-structured sparse linear layer on the sparse tensor cores (mma.sp, Ampere/Hopper):
// y [M, N] = x [M, K] W'^T + bias, W' [N, K] with at most two non-zeros in every 4 consecutive
// inputs. W' is the sparse operand A of mma.sp.m16n8k32 (its rows are the outputs), x^T the dense B,
// so the tile is computed as y^T and stored back transposed through shared memory.
//
// Storage (packed on the host, Sparse24Weight): values [N][K/2] bf16 -- each group of four keeps its
// two entries in order -- and meta [N][K/32] uint32: nibble j (bits 4j..4j+3) of a row's word says
// where group j's two entries sit (low 2 bits the first index, high 2 bits the second).
// Fragments: A (the compressed 16 x 16) as dense m16n8k16's; B as dense m16n8k32's (reg j holds
// k = 2t + 8j, +1 at column g); C as usual. Which lanes hand the metadata to the tensor core, and in
// what order, is the part the PTX manual gives only as a figure: two readings are built in (layout
// 0: lane t = 0 gives row g's word, t = 1 row g + 8's; layout 1: t = 0 gives the low halves (k 0-15)
// of rows g and g + 8, t = 1 the high halves), and the kit's check (Sparse24Check) reports which one
// the hardware agrees with. Not yet part of the pruning pipeline (no 2:4 pruning schedule); the kit
// measures whether it is worth one (public evidence: little gain on Hopper).
#include "common.cuh"

#define S24_TILE 64 // outputs and tokens per CTA: 2 x 2 warps of 32 x 32
#define S24_PAD 8

__device__ __forceinline__ void mmaSp(float c[4], const uint32_t a[4], const uint32_t b[4], uint32_t e) {
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, "
                 "{%0,%1,%2,%3}, %12, 0x0;\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
}

// Grid (N/64, ceil(M/64)), 128 threads; N a multiple of 64, K of 32; x already bf16 (converted once by
// the caller), loaded as 16-byte vectors.
template <int LAYOUT>
__device__ void sparse24Linear(float *Y, const __nv_bfloat16 *X, const __nv_bfloat16 *values, const uint32_t *meta, const float *bias,
                               int64_t M, int N, int K) {
    __shared__ __align__(16) __nv_bfloat16 ws[S24_TILE][16 + S24_PAD]; // compressed W' rows: 16 kept of 32
    __shared__ uint32_t ms[S24_TILE];                                  // their metadata words
    __shared__ __align__(16) __nv_bfloat16 xs[S24_TILE][32 + S24_PAD]; // x rows (tokens), 32 inputs
    __shared__ float cs[S24_TILE][S24_TILE + 1];                      // [token][output]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int n0 = blockIdx.x * S24_TILE, wn = (warp & 1) * 32, wt = (warp >> 1) * 32;
    const int64_t m0 = (int64_t)blockIdx.y * S24_TILE;
    float acc[2][4][4] = {};
    for (int k0 = 0; k0 < K; k0 += 32) {
        __syncthreads();
        { // 64 rows x 16 bf16 of W': one 16-byte piece per thread
            int r = tid >> 1, c = (tid & 1) * 8;
            *reinterpret_cast<uint4 *>(&ws[r][c]) = *reinterpret_cast<const uint4 *>(values + (int64_t)(n0 + r) * (K / 2) + k0 / 2 + c);
        }
        if (tid < S24_TILE) ms[tid] = meta[(int64_t)(n0 + tid) * (K / 32) + k0 / 32];
#pragma unroll
        for (int i = 0; i < 2; i++) { // 64 tokens x 32 bf16 of x: two pieces per thread
            int piece = tid + 128 * i, r = piece >> 2, c = (piece & 3) * 8;
            int64_t m = m0 + r;
            *reinterpret_cast<uint4 *>(&xs[r][c]) = m < M ? *reinterpret_cast<const uint4 *>(X + m * K + k0 + c) : make_uint4(0, 0, 0, 0);
        }
        __syncthreads();
        uint32_t a[2][4], e[2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            int row = wn + mt * 16 + g;
#pragma unroll
            for (int i = 0; i < 4; i++)
                a[mt][i] = *reinterpret_cast<const uint32_t *>(&ws[row + (i & 1) * 8][2 * t + (i >> 1) * 8]);
            uint32_t lo = ms[row], hi = ms[row + 8];
            if (LAYOUT == 0) e[mt] = t == 0 ? lo : hi;
            else e[mt] = __byte_perm(lo, hi, t == 0 ? 0x5410 : 0x7632); // t 0: the low halves of both rows, t 1: the high halves
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            uint32_t b[4];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = *reinterpret_cast<const uint32_t *>(&xs[wt + nt * 8 + g][2 * t + 8 * j]);
#pragma unroll
            for (int mt = 0; mt < 2; mt++) mmaSp(acc[mt][nt], a[mt], b, e[mt]);
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++) { // C rows are outputs, columns tokens
            int n = wn + mt * 16 + g, tok = wt + nt * 8 + 2 * t;
            cs[tok][n] = acc[mt][nt][0];
            cs[tok + 1][n] = acc[mt][nt][1];
            cs[tok][n + 8] = acc[mt][nt][2];
            cs[tok + 1][n + 8] = acc[mt][nt][3];
        }
    __syncthreads();
    for (int i = tid; i < S24_TILE * S24_TILE; i += blockDim.x) {
        int r = i / S24_TILE, c = i % S24_TILE;
        int64_t m = m0 + r;
        if (m < M) Y[m * N + n0 + c] = cs[r][c] + (bias ? bias[n0 + c] : 0.0f);
    }
}

extern "C" __global__ void __launch_bounds__(128) sparse24_linear_tc_l0(float *Y, const __nv_bfloat16 *X, const __nv_bfloat16 *values,
                                                                          const uint32_t *meta, const float *bias, int64_t M, int N, int K) {
    sparse24Linear<0>(Y, X, values, meta, bias, M, N, K);
}

extern "C" __global__ void __launch_bounds__(128) sparse24_linear_tc_l1(float *Y, const __nv_bfloat16 *X, const __nv_bfloat16 *values,
                                                                          const uint32_t *meta, const float *bias, int64_t M, int N, int K) {
    sparse24Linear<1>(Y, X, values, meta, bias, M, N, K);
}
