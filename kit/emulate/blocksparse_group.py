# bsr_linear_tc4 / tc8 (cuda-kernels/blocksparse.cu) emulated thread by thread in float64: the merge of
# the group's sorted column lists, each thread's global loads and shared stores of the double-buffered
# stages, mma.m16n8k16's fragment layouts per lane, the register epilogue; against numpy on integer data
# (so exact). Usage: python3 blocksparse_group.py 4|8
import numpy as np
from mma import mma, a_fragments, b_fragments
from bsr import NONE, Union, run_plain
rng = np.random.default_rng(1)
BSR, ROWS, PAD = 32, 128, 8
import sys
GROUP = int(sys.argv[1])
THREADS = 64 * GROUP; XV = ROWS * BSR // 8 // THREADS; WV = GROUP * BSR * BSR // 8 // THREADS
def run(M, N, K, dens, beta):
    return run_plain(rng, cta, GROUP, ROWS, M, N, K, dens, beta)

def cta(bx, by, X, vals, rowptr, colidx, bias, beta, M, N, K, Y):
    br0, m0 = bx * GROUP, by * ROWS
    u = Union(rowptr, colidx, br0, GROUP)
    sx = np.zeros((2, ROWS, BSR + PAD)); sw = np.zeros((2, GROUP, BSR, BSR + PAD))
    acc = np.zeros((THREADS, 4, 4, 4))
    xr = {}; wr = {}
    def fetch(c):
        for tid in range(THREADS):
            for i in range(XV):
                idx = tid + THREADS * i
                row = m0 + (idx >> 2); col = c * BSR + (idx & 3) * 8
                xr[tid, i] = X[row, col:col+8].copy() if row < M else np.zeros(8)
            for i in range(WV):
                idx = tid + THREADS * i; j = idx >> 7
                block = u.block_at(j, c)
                if block >= 0:
                    flat = vals[block].reshape(-1); q = idx & 127
                    wr[tid, i] = flat[q*8:(q+1)*8].copy()
                else:
                    wr[tid, i] = np.zeros(8)
    def stash(s):
        for tid in range(THREADS):
            for i in range(XV):
                idx = tid + THREADS * i
                sx[s, idx >> 2, (idx & 3) * 8:(idx & 3) * 8 + 8] = xr[tid, i]
            for i in range(WV):
                idx = tid + THREADS * i; j = idx >> 7; within = idx & 127
                sw[s, j, within >> 2, (within & 3) * 8:(within & 3) * 8 + 8] = wr[tid, i]
    cur = u.lowest()
    if cur != NONE:
        fetch(cur); stash(0)
    s = 0
    while cur != NONE:
        kept = u.advance(cur)
        nxt = u.lowest()
        if nxt != NONE: fetch(nxt)
        for warp in range(2 * GROUP):
            wm, wn = warp & 1, warp >> 1
            if not (kept >> wn) & 1: continue
            for ks in (0, 16):
                for mt in range(4):
                    for nt in range(4):
                        b0, b1 = b_fragments(sw[s, wn], nt * 8, ks)
                        c = mma(a_fragments(sx[s], wm * 64 + mt * 16, ks), b0, b1)
                        for lane in range(32): acc[warp*32+lane, mt, nt] += c[lane]
        if nxt != NONE: stash(s ^ 1)
        cur = nxt; s ^= 1
    for tid in range(THREADS):
        warp, lane = tid >> 5, tid & 31; wm, wn = warp & 1, warp >> 1; g, t = lane >> 2, lane & 3
        for mt in range(4):
            for nt in range(4):
                col = (br0 + wn) * BSR + nt * 8 + 2 * t
                for h in range(2):
                    row = m0 + wm * 64 + mt * 16 + g + 8 * h
                    if row >= M: continue
                    for e in range(2):
                        v = acc[tid, mt, nt, 2*h+e] + bias[col+e]
                        if beta != 0: v += beta * Y[row, col+e]
                        Y[row, col+e] = v
print("blocksparse_group%d_max_abs_error_m150_n512_k160_density0.4_beta0.5: %g" % (GROUP, run(150, 512, 160, 0.4, 0.5)))
print("blocksparse_group%d_max_abs_error_m128_n256_k96_density0.2_beta0: %g" % (GROUP, run(128, 256, 96, 0.2, 0.0)))
