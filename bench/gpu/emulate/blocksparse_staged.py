# bsr_linear_tc8s (cuda-kernels/blocksparse.cu) emulated thread by thread in float64: the 3-stage ring
# filled ahead by the merge (stages start as NaN, so a read of a stage no copy filled shows), the
# balanced warp tiling, fragments per lane; against numpy on integer data (so exact).
import numpy as np
from mma import mma, a_fragments, b_fragments
rng = np.random.default_rng(4)
BSR, ROWS, PAD, GROUP, NST, THREADS = 32, 128, 8, 8, 3, 512
def run(M, N, K, dens, beta):
    nb, kbs = N // BSR, K // BSR
    mask = rng.random((nb, kbs)) < dens; mask[1, :] = False; mask[2, :] = True
    W = rng.integers(-4, 5, (N, K)).astype(float); X = rng.integers(-4, 5, (M, K)).astype(float)
    bias = rng.integers(-4, 5, N).astype(float); Y0 = rng.integers(-4, 5, (M, N)).astype(float)
    rowptr, colidx, vals = [0], [], []
    for r in range(nb):
        for c in range(kbs):
            if mask[r, c]: colidx.append(c); vals.append(W[r*32:(r+1)*32, c*32:(c+1)*32].copy())
        rowptr.append(len(colidx))
    Y = Y0.copy()
    for bx in range(N // (BSR * GROUP)):
        for by in range((M + ROWS - 1) // ROWS):
            cta(bx, by, X, vals, rowptr, colidx, bias, beta, M, N, K, Y)
    ref = X @ (W * np.kron(mask, np.ones((32, 32)))).T + bias + beta * Y0
    return np.abs(Y - ref).max()
def cta(bx, by, X, vals, rowptr, colidx, bias, beta, M, N, K, Y):
    br0, m0 = bx * GROUP, by * ROWS
    ptr = [rowptr[br0 + j] for j in range(GROUP)]; end = [rowptr[br0 + j + 1] for j in range(GROUP)]
    NONE = 1 << 31
    head = lambda j: colidx[ptr[j]] if ptr[j] < end[j] else NONE
    lowest = lambda: min(head(j) for j in range(GROUP))
    sx = np.full((NST, ROWS, BSR + PAD), np.nan); sw = np.full((NST, GROUP, BSR, BSR + PAD), np.nan); kept_st = [None] * NST
    acc = np.zeros((THREADS, 4, 4, 4))
    def issue(st, c):
        for tid in range(THREADS):
            row = m0 + (tid >> 2)
            sx[st, tid >> 2, (tid & 3)*8:(tid & 3)*8+8] = X[row, c*32 + (tid & 3)*8: c*32 + (tid & 3)*8 + 8] if row < M else 0
            for i in range(2):
                idx = tid + THREADS * i; j = idx >> 7; within = idx & 127
                if head(j) == c:
                    flat = vals[ptr[j]].reshape(-1); sw[st, j, within >> 2, (within & 3)*8:(within & 3)*8+8] = flat[within*8: within*8+8]
        kept = 0
        for j in range(GROUP):
            if head(j) == c: kept |= 1 << j; ptr[j] += 1
        kept_st[st] = kept
    issued = 0
    for st in range(NST - 1):
        c = lowest()
        if c != NONE: issue(st, c); issued += 1
    i = 0
    while i < issued:
        c = lowest()
        if c != NONE: issue((i + NST - 1) % NST, c); issued += 1
        st = i % NST; kept = kept_st[st]
        for warp in range(16):
            ts, rp = warp & 7, warp >> 3
            for ks in (0, 16):
                afr = a_fragments(sx[st], ts * 16, ks)
                for jj in range(4):
                    j = rp + 2*jj
                    if not (kept >> j) & 1: continue
                    for nt in range(4):
                        b0, b1 = b_fragments(sw[st, j], nt * 8, ks)
                        cc = mma(afr, b0, b1)
                        for l in range(32): acc[warp*32+l, jj, nt] += cc[l]
        i += 1
    for tid in range(THREADS):
        warp, l = tid >> 5, tid & 31; ts, rp = warp & 7, warp >> 3; g, t = l >> 2, l & 3
        for jj in range(4):
            for nt in range(4):
                col = (br0 + rp + 2*jj)*32 + nt*8 + 2*t
                for h in range(2):
                    row = m0 + ts*16 + g + 8*h
                    if row >= M: continue
                    for e in range(2):
                        v = acc[tid, jj, nt, 2*h+e] + bias[col+e]
                        if beta != 0: v += beta * Y[row, col+e]
                        Y[row, col+e] = v
print("blocksparse_staged_max_abs_error_m150_n512_k192_density0.4: %g" % run(150, 512, 192, 0.4, 0.5))
print("blocksparse_staged_max_abs_error_m128_n256_k64_density0.2: %g" % run(128, 256, 64, 0.2, 0.0))
print("blocksparse_staged_max_abs_error_m40_n256_k32_density0.5: %g" % run(40, 256, 32, 0.5, 1.0))
