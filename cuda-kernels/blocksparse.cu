// Block-sparse linear layers on the GPU: the operand P [N, K] kept only in 32 x 32 blocks (rowptr
// [N/32 + 1], colidx [kept] -- the CPU's block-sparse rows), Y [M, N] = X [M, K] P^T (+ beta Y + bias)
// (+ a rank-r term, plain or masked like P). P = W for a linear layer's forward, P = W^T for its
// input gradient (backward-data): the same kernel.
//
// Layout here (not the CPU's): values [kept][32 n][32 k], row-major, bf16 in mixed precision -- a
// block is exactly the "col" B operand of mma.m16n8k16, so a B fragment is one 32-bit shared load.
// One CTA per (block-row of P, 128 tokens): 4 warps x 32 tokens x 32 outputs, 8 mma per 16-wide k
// step; X (bf16) goes global -> registers (16-byte loads) -> shared, double-buffered so the next kept
// block's loads are in flight while the tensor cores work on this one. The FLOPs are the kept blocks' only.
// The fp32 kernel (reference mode) keeps the same tiling on CUDA cores.
//
// Epilogue (both): the 128 x 32 tile through shared memory; the rank-r term in fp32 (a thread per
// token, r in chunks of 16); stores coalesced. Fragment layouts: see attention_tc.cu.
#include "common.cuh"

#define BSR 32         // block edge (BlockSparseWeight.BLOCK)
#define BSR_ROWS 128   // tokens per CTA
#define BSR_PAD 8      // bf16 padding per shared row: fragment loads conflict-free
#define BSR_Q 16       // rank chunk of the low-rank term

// The block-row of kept block k: the largest r with rowptr[r] <= k (empty rows share their start).
__device__ __forceinline__ int bsrBlockRow(const int32_t *rowptr, int rows, int k) {
    int lo = 0, hi = rows - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (rowptr[mid] <= k) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// values[k] = block (r, colidx[k]) of P as [32 n][32 k]: P = W [out, in], or W^T when transposed.
// One CTA (32, 8) per kept block; W read row-wise in both cases, the transpose goes through shared.
template <typename T>
__device__ void bsrPack(T *values, const float *W, int64_t in, const int32_t *rowptr, const int32_t *colidx, int rows, int transposed) {
    __shared__ float tile[BSR][BSR + 1];
    int k = blockIdx.x, r = bsrBlockRow(rowptr, rows, k), c = colidx[k];
    int wr = transposed ? c : r, wc = transposed ? r : c; // the block of W
    for (int i = threadIdx.y; i < BSR; i += 8) tile[i][threadIdx.x] = W[((int64_t)wr * BSR + i) * in + (int64_t)wc * BSR + threadIdx.x];
    __syncthreads();
    T *v = values + (int64_t)k * BSR * BSR;
    for (int i = threadIdx.y; i < BSR; i += 8) st(v, i * BSR + threadIdx.x, transposed ? tile[threadIdx.x][i] : tile[i][threadIdx.x]);
}

extern "C" __global__ void bsr_pack_bf16(__nv_bfloat16 *values, const float *W, int64_t in, const int32_t *rowptr, const int32_t *colidx,
                                         int rows, int transposed) {
    bsrPack(values, W, in, rowptr, colidx, rows, transposed);
}

extern "C" __global__ void bsr_pack_f32(float *values, const float *W, int64_t in, const int32_t *rowptr, const int32_t *colidx, int rows,
                                        int transposed) {
    bsrPack(values, W, in, rowptr, colidx, rows, transposed);
}

// The shared epilogue. cs [128][33] holds the tile's products (visible to all threads on entry);
// lt is [BSR_Q][32] shared scratch. Adds the rank-r term: scale * (U[m, :] or, masked, the sum of
// U[m, colidx[kb] r ..] over the block-row's kept blocks) . Lt[:, n]; then y = cs + beta y + bias.
__device__ void bsrEpilogue(float (*cs)[BSR + 1], float (*lt)[BSR], float *Y, const float *bias, float beta, int64_t M, int N, int K,
                            int br, int64_t m0, int kb0, int kb1, const int32_t *colidx, const float *U, const float *Lt, int r, float scale,
                            int perBlock) {
    const int tid = threadIdx.x;
    const int64_t m = m0 + tid; // a thread per token for the rank-r term
    for (int q0 = 0; U != nullptr && q0 < r; q0 += BSR_Q) {
        int qn = min(BSR_Q, r - q0);
        __syncthreads(); // the previous chunk's lt is read
        for (int i = tid; i < BSR_Q * BSR; i += blockDim.x) {
            int q = i / BSR, j = i % BSR;
            lt[q][j] = q < qn ? Lt[(int64_t)(q0 + q) * N + br * BSR + j] : 0.0f;
        }
        __syncthreads();
        if (m < M) {
            float u[BSR_Q];
#pragma unroll
            for (int q = 0; q < BSR_Q; q++) u[q] = 0.0f;
            if (!perBlock) {
                for (int q = 0; q < qn; q++) u[q] = U[m * r + q0 + q];
            } else {
                const float *ur = U + m * (int64_t)(K / BSR) * r + q0;
                for (int kb = kb0; kb < kb1; kb++)
                    for (int q = 0; q < qn; q++) u[q] += ur[(int64_t)colidx[kb] * r + q];
            }
#pragma unroll 4
            for (int j = 0; j < BSR; j++) {
                float s = 0.0f;
#pragma unroll
                for (int q = 0; q < BSR_Q; q++) s += u[q] * lt[q][j];
                cs[tid][j] += scale * s;
            }
        }
    }
    __syncthreads();
    for (int i = tid; i < BSR_ROWS * BSR; i += blockDim.x) { // coalesced: 32 consecutive outputs per token
        int row = i / BSR, j = i % BSR;
        int64_t mm = m0 + row;
        if (mm >= M) continue;
        int64_t o = mm * N + br * BSR + j;
        Y[o] = cs[row][j] + (beta != 0.0f ? beta * Y[o] : 0.0f) + (bias ? bias[br * BSR + j] : 0.0f);
    }
}

__device__ __forceinline__ void mmaBf16Bsr(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Shared memory of the tensor-core kernel: the operand stages, reused by the epilogue.
struct BsrTcShared {
    union {
        struct {
            __nv_bfloat16 x[2][BSR_ROWS][BSR + BSR_PAD];
            __nv_bfloat16 w[2][BSR][BSR + BSR_PAD];
        } stage;
        float lt[BSR_Q][BSR];
    } u;
    float cs[BSR_ROWS][BSR + 1];
};

// Mixed precision: values and X bf16 (X converted once by the caller: every block-row that keeps an
// input block re-reads it, so its bytes are what the kernel moves most), fp32 sums.
// values == null: no product (a structure-only pack: just the rank-r term onto beta Y + bias).
// Grid (N/32, ceil(M/128)), 128 threads. K and N multiples of 32; X 16-byte aligned.
extern "C" __global__ void __launch_bounds__(128) bsr_linear_tc(float *Y, const __nv_bfloat16 *X, const __nv_bfloat16 *values,
                                                                  const int32_t *rowptr, const int32_t *colidx, const float *bias,
                                                                  float beta, int64_t M, int N, int K, const float *U, const float *Lt,
                                                                  int r, float scale, int perBlock) {
    __shared__ __align__(16) BsrTcShared sh;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int br = blockIdx.x;
    const int64_t m0 = (int64_t)blockIdx.y * BSR_ROWS;
    const int kb0 = rowptr[br], kb1 = rowptr[br + 1];
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    uint4 xr[4]; // this thread's share of the next X tile: rows tid / 4 + 32 i, 8 bf16 each
    uint4 wr;    // and of the next weight block: 8 bf16
    auto fetch = [&](int kb) {
        int64_t col = (int64_t)colidx[kb] * BSR + (tid & 3) * 8;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int64_t row = m0 + (tid >> 2) + 32 * i;
            xr[i] = row < M ? *reinterpret_cast<const uint4 *>(X + row * K + col) : make_uint4(0, 0, 0, 0);
        }
        wr = reinterpret_cast<const uint4 *>(values + (int64_t)kb * BSR * BSR)[tid];
    };
    auto stash = [&](int s) {
#pragma unroll
        for (int i = 0; i < 4; i++) *reinterpret_cast<uint4 *>(&sh.u.stage.x[s][(tid >> 2) + 32 * i][(tid & 3) * 8]) = xr[i];
        *reinterpret_cast<uint4 *>(&sh.u.stage.w[s][tid >> 2][(tid & 3) * 8]) = wr;
    };

    if (values != nullptr && kb0 < kb1) {
        fetch(kb0);
        stash(0);
        __syncthreads();
        for (int kb = kb0; kb < kb1; kb++) {
            const int s = (kb - kb0) & 1;
            if (kb + 1 < kb1) fetch(kb + 1);
#pragma unroll
            for (int ks = 0; ks < BSR; ks += 16) {
                uint32_t a[2][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    int row = warp * 32 + mt * 16 + g, col = ks + 2 * t;
                    a[mt][0] = *reinterpret_cast<const uint32_t *>(&sh.u.stage.x[s][row][col]);
                    a[mt][1] = *reinterpret_cast<const uint32_t *>(&sh.u.stage.x[s][row + 8][col]);
                    a[mt][2] = *reinterpret_cast<const uint32_t *>(&sh.u.stage.x[s][row][col + 8]);
                    a[mt][3] = *reinterpret_cast<const uint32_t *>(&sh.u.stage.x[s][row + 8][col + 8]);
                }
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    uint32_t b0 = *reinterpret_cast<const uint32_t *>(&sh.u.stage.w[s][nt * 8 + g][ks + 2 * t]);
                    uint32_t b1 = *reinterpret_cast<const uint32_t *>(&sh.u.stage.w[s][nt * 8 + g][ks + 2 * t + 8]);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) mmaBf16Bsr(acc[mt][nt], a[mt], b0, b1);
                }
            }
            if (kb + 1 < kb1) stash(s ^ 1); // the other stage: its last readers passed the barrier below
            __syncthreads();
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            int row = warp * 32 + mt * 16 + g, col = nt * 8 + 2 * t;
            sh.cs[row][col] = acc[mt][nt][0];
            sh.cs[row][col + 1] = acc[mt][nt][1];
            sh.cs[row + 8][col] = acc[mt][nt][2];
            sh.cs[row + 8][col + 1] = acc[mt][nt][3];
        }
    __syncthreads();
    bsrEpilogue(sh.cs, sh.u.lt, Y, bias, beta, M, N, K, br, m0, kb0, kb1, colidx, U, Lt, r, scale, perBlock);
}

// The plain product (no rank-r term) with GROUP block-rows per CTA (4 or 8): every block-row of a CTA
// reads the same X tiles, so a tile is loaded once for all of them -- the union of their kept columns.
// That cuts what the per-row kernel spends most on, re-reading X once per block-row that keeps it: at
// 80% sparsity 25.6 re-reads per row kernel, 18.9 with 4 rows (59% of the columns), 13.3 with 8 (83%)
// (napkin math in bench/RESULTS.md). 2 x GROUP warps: 2 token halves x GROUP block-rows, 64 x 32
// outputs each (warp 2 j + half); a warp whose block-row does not keep the column waits that step. The union is walked as
// a merge of the sorted column lists (colidx ascends within a row), the next column's tiles
// double-buffered as in bsr_linear_tc. Epilogue from registers (8 floats of a row per 32-byte sector).
// Dynamic shared memory (CudaBackend.BlockSparseKernel: 40 KB for 4, 60 KB for 8, past the static 48
// KB). Grid (N / (32 GROUP), ceil(M/128)), 64 x GROUP threads.
#define BSR_NONE 0x7fffffff

extern __shared__ __align__(16) unsigned char bsrSmem[]; // the group kernels' dynamic shared memory

// The walk over the union of a CTA's GROUP block-rows' kept columns, a merge of their ascending colidx
// lists, the same in every thread. ptr (each row's next kept block) is only ever indexed by constants,
// so it stays in registers; the rows' ends live in shared memory (registers are what 8 rows run short of).
template <int GROUP>
struct BsrUnion {
    int ptr[GROUP];
    const int *end;
    const int32_t *colidx;

    // rows br0 .. br0 + GROUP - 1; end: GROUP ints of shared memory (a barrier inside: every thread calls it)
    __device__ BsrUnion(const int32_t *rowptr, const int32_t *colidx_, int br0, int *end_) : end(end_), colidx(colidx_) {
#pragma unroll
        for (int j = 0; j < GROUP; j++) ptr[j] = rowptr[br0 + j];
        if (threadIdx.x < GROUP) end_[threadIdx.x] = rowptr[br0 + threadIdx.x + 1];
        __syncthreads();
    }

    __device__ int head(int j) const { return ptr[j] < end[j] ? colidx[ptr[j]] : BSR_NONE; }

    // the next column of the union (BSR_NONE: none left)
    __device__ int lowest() const {
        int c = BSR_NONE;
#pragma unroll
        for (int j = 0; j < GROUP; j++) c = min(c, head(j));
        return c;
    }

    // row j's kept block at column c, or -1; j may vary per thread: selected, not indexed
    __device__ int blockAt(int j, int c) const {
        int block = -1;
#pragma unroll
        for (int jj = 0; jj < GROUP; jj++)
            if (jj == j && head(jj) == c) block = ptr[jj];
        return block;
    }

    // moves past column c; returns the rows that keep it (bit j)
    __device__ int advance(int c) {
        int kept = 0;
#pragma unroll
        for (int j = 0; j < GROUP; j++)
            if (head(j) == c) {
                kept |= 1 << j;
                ptr[j]++;
            }
        return kept;
    }
};

// Y[row, col .. col + 1] = v + bias + beta Y (rows past M skipped); pairs: Y 8-byte aligned, one float2 store.
__device__ __forceinline__ void bsrStorePair(float *Y, int64_t row, int col, int64_t M, int N, float v0, float v1, const float *bias,
                                             float beta, bool pairs) {
    if (row >= M) return;
    float *o = Y + row * N + col;
    if (bias) v0 += bias[col], v1 += bias[col + 1];
    if (beta != 0.0f) v0 += beta * o[0], v1 += beta * o[1];
    if (pairs) *reinterpret_cast<float2 *>(o) = make_float2(v0, v1);
    else o[0] = v0, o[1] = v1;
}

template <int GROUP>
__device__ void bsrLinearTcGroup(float *Y, const __nv_bfloat16 *X, const __nv_bfloat16 *values, const int32_t *rowptr,
                                 const int32_t *colidx, const float *bias, float beta, int64_t M, int N, int K) {
    constexpr int THREADS = 64 * GROUP, XV = BSR_ROWS * BSR / 8 / THREADS, WV = GROUP * BSR * BSR / 8 / THREADS;
    auto sx = reinterpret_cast<__nv_bfloat16(*)[BSR_ROWS][BSR + BSR_PAD]>(bsrSmem);                        // [2][128][40]
    auto sw = reinterpret_cast<__nv_bfloat16(*)[GROUP][BSR][BSR + BSR_PAD]>(bsrSmem + 2 * BSR_ROWS * (BSR + BSR_PAD) * 2); // [2][G][32][40]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    // token half and block-row within the group: a row's two warps sit on different SM sub-partitions (warp % 4), whose tensor
    // cores then share its work, and the rows of a column spread over all four
    const int wm = warp & 1, wn = warp >> 1;
    const int br0 = blockIdx.x * GROUP;
    const int64_t m0 = (int64_t)blockIdx.y * BSR_ROWS;
    __shared__ int end[GROUP];
    BsrUnion<GROUP> cols(rowptr, colidx, br0, end);
    float acc[4][4][4] = {};

    uint4 xr[XV], wr[WV]; // this thread's share of the next column's X tile and of its kept weight blocks
    // registers <- column c (each row's head is at c where it keeps c): X uint4 (tid + THREADS i) of the
    // 128 x 32 tile (4 per row), weight uint4 (tid + THREADS i) of the GROUP blocks (128 per block)
    auto fetch = [&](int c) {
#pragma unroll
        for (int i = 0; i < XV; i++) {
            const int idx = tid + THREADS * i;
            const int64_t row = m0 + (idx >> 2), col = (int64_t)c * BSR + (idx & 3) * 8;
            xr[i] = row < M ? *reinterpret_cast<const uint4 *>(X + row * K + col) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int i = 0; i < WV; i++) {
            const int idx = tid + THREADS * i, block = cols.blockAt(idx >> 7, c);
            wr[i] = block >= 0 ? reinterpret_cast<const uint4 *>(values + (int64_t)block * BSR * BSR)[idx & 127] : make_uint4(0, 0, 0, 0);
        }
    };
    auto stash = [&](int s) {
#pragma unroll
        for (int i = 0; i < XV; i++) {
            const int idx = tid + THREADS * i;
            *reinterpret_cast<uint4 *>(&sx[s][idx >> 2][(idx & 3) * 8]) = xr[i];
        }
#pragma unroll
        for (int i = 0; i < WV; i++) {
            const int idx = tid + THREADS * i, j = idx >> 7, within = idx & 127;
            *reinterpret_cast<uint4 *>(&sw[s][j][within >> 2][(within & 3) * 8]) = wr[i];
        }
    };

    int cur = values != nullptr ? cols.lowest() : BSR_NONE;
    if (cur != BSR_NONE) {
        fetch(cur);
        stash(0);
        __syncthreads();
    }
    for (int s = 0; cur != BSR_NONE; s ^= 1) {
        const bool mine = (cols.advance(cur) >> wn) & 1; // this warp's block-row keeps the column
        const int next = cols.lowest();
        if (next != BSR_NONE) fetch(next);
        if (mine) {
#pragma unroll
            for (int ks = 0; ks < BSR; ks += 16) {
                uint32_t a[4][4];
#pragma unroll
                for (int mt = 0; mt < 4; mt++) {
                    int row = wm * 64 + mt * 16 + g, col = ks + 2 * t;
                    a[mt][0] = *reinterpret_cast<const uint32_t *>(&sx[s][row][col]);
                    a[mt][1] = *reinterpret_cast<const uint32_t *>(&sx[s][row + 8][col]);
                    a[mt][2] = *reinterpret_cast<const uint32_t *>(&sx[s][row][col + 8]);
                    a[mt][3] = *reinterpret_cast<const uint32_t *>(&sx[s][row + 8][col + 8]);
                }
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    uint32_t b0 = *reinterpret_cast<const uint32_t *>(&sw[s][wn][nt * 8 + g][ks + 2 * t]);
                    uint32_t b1 = *reinterpret_cast<const uint32_t *>(&sw[s][wn][nt * 8 + g][ks + 2 * t + 8]);
#pragma unroll
                    for (int mt = 0; mt < 4; mt++) mmaBf16Bsr(acc[mt][nt], a[mt], b0, b1);
                }
            }
        }
        if (next != BSR_NONE) stash(s ^ 1); // the other stage: its last readers passed the barrier below
        __syncthreads();
        cur = next;
    }
    const bool pairs = (reinterpret_cast<uintptr_t>(Y) & 7) == 0;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                bsrStorePair(Y, m0 + wm * 64 + mt * 16 + g + 8 * h, (br0 + wn) * BSR + nt * 8 + 2 * t, M, N, acc[mt][nt][2 * h],
                             acc[mt][nt][2 * h + 1], bias, beta, pairs);
}

extern "C" __global__ void __launch_bounds__(256) bsr_linear_tc4(float *Y, const __nv_bfloat16 *X, const __nv_bfloat16 *values,
                                                                   const int32_t *rowptr, const int32_t *colidx, const float *bias,
                                                                   float beta, int64_t M, int N, int K) {
    bsrLinearTcGroup<4>(Y, X, values, rowptr, colidx, bias, beta, M, N, K);
}

extern "C" __global__ void __launch_bounds__(512) bsr_linear_tc8(float *Y, const __nv_bfloat16 *X, const __nv_bfloat16 *values,
                                                                   const int32_t *rowptr, const int32_t *colidx, const float *bias,
                                                                   float beta, int64_t M, int N, int K) {
    bsrLinearTcGroup<8>(Y, X, values, rowptr, colidx, bias, beta, M, N, K);
}

// The plain product, 8 block-rows x 128 tokens per CTA as bsr_linear_tc8, with the work of a column
// spread over all 16 warps and the loads several columns ahead:
// - warp w takes 16 tokens (w & 7) of the 4 block-rows w >> 3, + 2, + 4, + 6: whatever rows keep the
//   column, every warp (and every SM sub-partition, w % 4) gets a share -- in tc8 the kept rows' warps
//   do all of it while the rest wait;
// - global -> shared by cp.async (no registers in between), BSR_STAGES columns in flight, so a
//   column's L2 latency hides behind the products of the ones before it.
// Dynamic shared memory: BSR_STAGES x (X tile [128][40] + 8 blocks [32][40]) bf16 = 90 KB.
#define BSR_STAGES 3

__device__ __forceinline__ void cpAsync16(void *smem, const void *gmem, int bytes) { // bytes < 16: the rest zero-filled
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

extern "C" __global__ void __launch_bounds__(512) bsr_linear_tc8s(float *Y, const __nv_bfloat16 *X, const __nv_bfloat16 *values,
                                                                    const int32_t *rowptr, const int32_t *colidx, const float *bias,
                                                                    float beta, int64_t M, int N, int K) {
    constexpr int GROUP = 8, THREADS = 512;
    auto sx = reinterpret_cast<__nv_bfloat16(*)[BSR_ROWS][BSR + BSR_PAD]>(bsrSmem); // [stage][128][40]
    auto sw = reinterpret_cast<__nv_bfloat16(*)[GROUP][BSR][BSR + BSR_PAD]>(bsrSmem + BSR_STAGES * BSR_ROWS * (BSR + BSR_PAD) * 2);
    __shared__ int end[GROUP], stageKept[BSR_STAGES]; // per stage, which rows keep its column (bits)
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int ts = warp & 7, rp = warp >> 3; // 16 tokens ts * 16 .., block-rows rp + 2 jj
    const int br0 = blockIdx.x * GROUP;
    const int64_t m0 = (int64_t)blockIdx.y * BSR_ROWS;
    BsrUnion<GROUP> cols(rowptr, colidx, br0, end);
    // the next column of the union into stage st: its X tile, the blocks of the rows that keep it, which rows those are
    auto issue = [&](int st, int c) {
        {
            const int64_t row = m0 + (tid >> 2);
            const __nv_bfloat16 *src = X + (row < M ? row : 0) * K + (int64_t)c * BSR + (tid & 3) * 8;
            cpAsync16(&sx[st][tid >> 2][(tid & 3) * 8], src, row < M ? 16 : 0);
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int idx = tid + THREADS * i, j = idx >> 7, within = idx & 127, block = cols.blockAt(j, c);
            if (block >= 0) cpAsync16(&sw[st][j][within >> 2][(within & 3) * 8], values + (int64_t)block * BSR * BSR + within * 8, 16);
        }
        const int kept = cols.advance(c);
        if (tid == 0) stageKept[st] = kept;
    };
    float acc[4][4][4] = {};

    int issued = 0; // the same count in every thread: columns handed to stages so far
    if (values != nullptr) {
#pragma unroll
        for (int st = 0; st < BSR_STAGES - 1; st++) {
            const int c = cols.lowest();
            if (c != BSR_NONE) issue(st, c), issued++;
            cpAsyncCommit(); // one group per stage, empty or not: the wait below counts groups
        }
    }
    for (int i = 0; i < issued; i++) {
        cpAsyncWait<BSR_STAGES - 2>(); // this thread's copies of column i have landed
        __syncthreads();               // everyone's have, and column i - 1's stage is free again
        {
            const int c = cols.lowest();
            if (c != BSR_NONE) issue((i + BSR_STAGES - 1) % BSR_STAGES, c), issued++;
            cpAsyncCommit();
        }
        const int st = i % BSR_STAGES, kept = stageKept[st];
#pragma unroll
        for (int ks = 0; ks < BSR; ks += 16) {
            uint32_t a[4];
            const int row = ts * 16 + g, col = ks + 2 * t;
            a[0] = *reinterpret_cast<const uint32_t *>(&sx[st][row][col]);
            a[1] = *reinterpret_cast<const uint32_t *>(&sx[st][row + 8][col]);
            a[2] = *reinterpret_cast<const uint32_t *>(&sx[st][row][col + 8]);
            a[3] = *reinterpret_cast<const uint32_t *>(&sx[st][row + 8][col + 8]);
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                const int j = rp + 2 * jj;
                if (!((kept >> j) & 1)) continue;
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    uint32_t b0 = *reinterpret_cast<const uint32_t *>(&sw[st][j][nt * 8 + g][ks + 2 * t]);
                    uint32_t b1 = *reinterpret_cast<const uint32_t *>(&sw[st][j][nt * 8 + g][ks + 2 * t + 8]);
                    mmaBf16Bsr(acc[jj][nt], a, b0, b1);
                }
            }
        }
    }
    cpAsyncWait<0>();
    const bool pairs = (reinterpret_cast<uintptr_t>(Y) & 7) == 0;
#pragma unroll
    for (int jj = 0; jj < 4; jj++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                bsrStorePair(Y, m0 + ts * 16 + g + 8 * h, (br0 + rp + 2 * jj) * BSR + nt * 8 + 2 * t, M, N, acc[jj][nt][2 * h],
                             acc[jj][nt][2 * h + 1], bias, beta, pairs);
}

// Reference mode: the same tiles in fp32 on CUDA cores, a thread per token (32 accumulators).
extern "C" __global__ void __launch_bounds__(128) bsr_linear_f32(float *Y, const float *X, const float *values, const int32_t *rowptr,
                                                                   const int32_t *colidx, const float *bias, float beta, int64_t M, int N,
                                                                   int K, const float *U, const float *Lt, int r, float scale,
                                                                   int perBlock) {
    __shared__ float xs[BSR_ROWS][BSR + 1];
    __shared__ float ws[BSR][BSR + 1];
    __shared__ float cs[BSR_ROWS][BSR + 1];
    __shared__ float lt[BSR_Q][BSR];
    const int tid = threadIdx.x, br = blockIdx.x;
    const int64_t m0 = (int64_t)blockIdx.y * BSR_ROWS;
    const int kb0 = rowptr[br], kb1 = rowptr[br + 1];
    float acc[BSR];
#pragma unroll
    for (int j = 0; j < BSR; j++) acc[j] = 0.0f;
    for (int kb = kb0; values != nullptr && kb < kb1; kb++) {
        int64_t col = (int64_t)colidx[kb] * BSR;
        __syncthreads();
        for (int i = tid; i < BSR_ROWS * BSR; i += blockDim.x) {
            int64_t row = m0 + i / BSR;
            xs[i / BSR][i % BSR] = row < M ? X[row * K + col + i % BSR] : 0.0f;
        }
        for (int i = tid; i < BSR * BSR; i += blockDim.x) ws[i / BSR][i % BSR] = values[(int64_t)kb * BSR * BSR + i];
        __syncthreads();
        for (int e = 0; e < BSR; e++) {
            float xv = xs[tid][e];
#pragma unroll
            for (int j = 0; j < BSR; j++) acc[j] += xv * ws[j][e];
        }
    }
#pragma unroll
    for (int j = 0; j < BSR; j++) cs[tid][j] = acc[j];
    __syncthreads();
    bsrEpilogue(cs, lt, Y, bias, beta, M, N, K, br, m0, kb0, kb1, colidx, U, Lt, r, scale, perBlock);
}

// U [M, (K/32) r]: U[m, c r + q] = X[m, 32 c ..] . A[q, 32 c ..] (A [r, K]) -- each 32-wide input
// block's rank-r product, which the masked term sums over a block-row's kept blocks. A thread per output.
extern "C" __global__ void bsr_block_lowrank(float *U, const float *X, const float *A, int64_t M, int K, int r) {
    int cb = K / BSR;
    int64_t n = M * cb * r, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        int64_t m = i / ((int64_t)cb * r);
        int c = (int)(i / r % cb), q = (int)(i % r);
        const float *x = X + m * K + c * BSR, *a = A + (int64_t)q * K + c * BSR;
        float s = 0.0f;
#pragma unroll 8
        for (int e = 0; e < BSR; e++) s += x[e] * a[e];
        U[i] = s;
    }
}

// D [N, r] += scale sum_m DY[m, n] Us(m, q), Us the sum of U[m, colidx[kb] r + q] over the kept blocks
// of n's block-row: the masked term's factor gradient (see Backend.blockLowRankGradient). Grid (N/32,
// splits of M), 256 threads; 32 tokens at a time through shared memory, partial sums added atomically.
extern "C" __global__ void bsr_lowrank_grad(float *D, const float *DY, const int32_t *rowptr, const int32_t *colidx, const float *U,
                                            int64_t M, int N, int K, int r, float scale) {
    __shared__ float us[BSR][64 + 1];
    __shared__ float dy[BSR][BSR + 1];
    const int tid = threadIdx.x, br = blockIdx.x, kb0 = rowptr[br], kb1 = rowptr[br + 1];
    if (kb0 == kb1) return; // nothing kept: the term is zero here
    const int cb = K / BSR;
    const int64_t per = (M + gridDim.y - 1) / gridDim.y, mBegin = blockIdx.y * per, mEnd = min(M, mBegin + per);
    float acc[8]; // outputs (n, q) = tid + 256 i < 32 r (r <= 64)
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] = 0.0f;
    for (int64_t m0 = mBegin; m0 < mEnd; m0 += BSR) {
        __syncthreads();
        for (int i = tid; i < BSR * r; i += blockDim.x) {
            int mm = i / r, q = i % r;
            int64_t m = m0 + mm;
            float s = 0.0f;
            if (m < mEnd)
                for (int kb = kb0; kb < kb1; kb++) s += U[m * cb * r + (int64_t)colidx[kb] * r + q];
            us[mm][q] = s;
        }
        for (int i = tid; i < BSR * BSR; i += blockDim.x) {
            int64_t m = m0 + i / BSR;
            dy[i / BSR][i % BSR] = m < mEnd ? DY[m * N + br * BSR + i % BSR] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int o = tid + 256 * i;
            if (o >= BSR * r) break;
            int nn = o / r, q = o % r;
            float s = 0.0f;
            for (int mm = 0; mm < BSR; mm++) s += dy[mm][nn] * us[mm][q];
            acc[i] += s;
        }
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int o = tid + 256 * i;
        if (o >= BSR * r) break;
        atomicAdd(&D[(int64_t)(br * BSR + o / r) * r + o % r], scale * acc[i]);
    }
}
