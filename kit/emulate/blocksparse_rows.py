# bsr_linear_tc (cuda-kernels/blocksparse.cu), the per-block-row kernel that also carries the rank-r
# term, emulated thread by thread in float64: the double-buffered X/W stages, mma fragments per lane,
# the shared-memory epilogue with the plain (U [M, r]) and the masked (U per 32-wide input block,
# summed over the row's kept blocks) low-rank term in rank chunks of 16; against numpy on integer data.
import numpy as np
from mma import mma, a_fragments, b_fragments
from bsr import random_case, plain_reference
rng = np.random.default_rng(6)
BSR, ROWS, PAD, Q = 32, 128, 8, 16


def run(M, N, K, dens, beta, r, per_block):
    nb, kbs = N // BSR, K // BSR
    mask, W, X, bias, Y0, rowptr, colidx, vals = random_case(rng, M, N, K, dens)
    U = rng.integers(-3, 4, (M, kbs * r if per_block else r)).astype(float); Lt = rng.integers(-3, 4, (r, N)).astype(float)
    Y = Y0.copy()
    for br in range(nb):
        for by in range((M + ROWS - 1) // ROWS):
            cta(br, by, X, vals, rowptr, colidx, bias, beta, M, N, K, U, Lt, r, 0.5, per_block, Y)
    ref = plain_reference(mask, W, X, bias, Y0, beta)
    if per_block:
        Us = np.stack([sum((U[:, c*r:(c+1)*r] for c in range(kbs) if mask[b, c]), np.zeros((M, r))) for b in range(nb)])  # [nb, M, r]
        for b in range(nb): ref[:, b*32:(b+1)*32] += 0.5 * Us[b] @ Lt[:, b*32:(b+1)*32]
    else:
        ref += 0.5 * U @ Lt
    return np.abs(Y - ref).max()


def cta(br, by, X, vals, rowptr, colidx, bias, beta, M, N, K, U, Lt, r, scale, per_block, Y):
    m0, kb0, kb1 = by * ROWS, rowptr[br], rowptr[br + 1]
    sx = np.full((2, ROWS, BSR + PAD), np.nan); sw = np.full((2, BSR, BSR + PAD), np.nan)
    acc = np.zeros((128, 2, 4, 4)); xr = {}; wr = {}
    def fetch(kb):
        col = colidx[kb] * BSR
        for tid in range(128):
            for i in range(4):
                row = m0 + (tid >> 2) + 32 * i
                xr[tid, i] = X[row, col + (tid & 3)*8: col + (tid & 3)*8 + 8] if row < M else np.zeros(8)
            wr[tid] = vals[kb].reshape(-1)[tid*8: tid*8 + 8]
    def stash(s):
        for tid in range(128):
            for i in range(4): sx[s, (tid >> 2) + 32*i, (tid & 3)*8: (tid & 3)*8 + 8] = xr[tid, i]
            sw[s, tid >> 2, (tid & 3)*8: (tid & 3)*8 + 8] = wr[tid]
    if kb0 < kb1:
        fetch(kb0); stash(0)
        for kb in range(kb0, kb1):
            s = (kb - kb0) & 1
            if kb + 1 < kb1: fetch(kb + 1)
            for warp in range(4):
                for ks in (0, 16):
                    for nt in range(4):
                        b0, b1 = b_fragments(sw[s], nt * 8, ks)
                        for mt in range(2):
                            c = mma(a_fragments(sx[s], warp*32 + mt*16, ks), b0, b1)
                            for l in range(32): acc[warp*32 + l, mt, nt] += c[l]
            if kb + 1 < kb1: stash(s ^ 1)
    cs = np.zeros((ROWS, BSR + 1))
    for tid in range(128):
        warp, l = tid >> 5, tid & 31; g, t = l >> 2, l & 3
        for mt in range(2):
            for nt in range(4):
                row, col = warp*32 + mt*16 + g, nt*8 + 2*t
                cs[row, col:col+2] = acc[tid, mt, nt, 0:2]; cs[row+8, col:col+2] = acc[tid, mt, nt, 2:4]
    for q0 in range(0, r, Q):  # the epilogue's rank-r term: a thread per token
        qn = min(Q, r - q0); lt = np.zeros((Q, BSR))
        lt[:qn] = Lt[q0:q0+qn, br*BSR:(br+1)*BSR]
        for tid in range(128):
            m = m0 + tid
            if m >= M: continue
            u = np.zeros(Q)
            if not per_block: u[:qn] = U[m, q0:q0+qn]
            else:
                for kb in range(kb0, kb1): u[:qn] += U[m, colidx[kb]*r + q0: colidx[kb]*r + q0 + qn]
            cs[tid, :BSR] += scale * (u @ lt)
    for i in range(ROWS * BSR):
        row, j = i // BSR, i % BSR; mm = m0 + row
        if mm >= M: continue
        Y[mm, br*BSR + j] = cs[row, j] + (beta * Y[mm, br*BSR + j] if beta != 0 else 0) + bias[br*BSR + j]


for (M, N, K, d, beta, r, pb) in [(150, 96, 128, 0.4, 0.5, 5, False), (130, 64, 96, 0.3, 0.0, 20, True), (40, 64, 64, 1.0, 1.0, 8, True)]:
    print("blocksparse_rows_max_abs_error_m%d_n%d_k%d_r%d_%s: %g" % (M, N, K, r, "masked" if pb else "plain", run(M, N, K, d, beta, r, pb)))
