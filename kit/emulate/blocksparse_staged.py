# bsr_linear_tc8s (cuda-kernels/blocksparse.cu) emulated thread by thread in float64: the 3-stage ring
# filled ahead by the merge (stages start as NaN, so a read of a stage no copy filled shows), the
# balanced warp tiling, fragments per lane; against numpy on integer data (so exact).
import numpy as np
from mma import mma, a_fragments, b_fragments
from bsr import NONE, Union, run_plain
rng = np.random.default_rng(4)
BSR, ROWS, PAD, GROUP, NST, THREADS = 32, 128, 8, 8, 3, 512
def run(M, N, K, dens, beta):
    return run_plain(rng, cta, GROUP, ROWS, M, N, K, dens, beta)

def cta(bx, by, X, vals, rowptr, colidx, bias, beta, M, N, K, Y):
    br0, m0 = bx * GROUP, by * ROWS
    u = Union(rowptr, colidx, br0, GROUP)
    sx = np.full((NST, ROWS, BSR + PAD), np.nan); sw = np.full((NST, GROUP, BSR, BSR + PAD), np.nan); kept_st = [None] * NST
    acc = np.zeros((THREADS, 4, 4, 4))
    def issue(st, c):
        for tid in range(THREADS):
            row = m0 + (tid >> 2)
            sx[st, tid >> 2, (tid & 3)*8:(tid & 3)*8+8] = X[row, c*32 + (tid & 3)*8: c*32 + (tid & 3)*8 + 8] if row < M else 0
            for i in range(2):
                idx = tid + THREADS * i; j = idx >> 7; within = idx & 127
                block = u.block_at(j, c)
                if block >= 0:
                    flat = vals[block].reshape(-1); sw[st, j, within >> 2, (within & 3)*8:(within & 3)*8+8] = flat[within*8: within*8+8]
        kept_st[st] = u.advance(c)
    issued = 0
    for st in range(NST - 1):
        c = u.lowest()
        if c != NONE: issue(st, c); issued += 1
    i = 0
    while i < issued:
        c = u.lowest()
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
