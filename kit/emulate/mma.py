# mma.sync.m16n8k16 (bf16, row.col, f32 accumulate) as the PTX ISA lays its fragments out per lane
# (lane = 4 g + t): A 16 x 16 row-major: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..],
# a3 = A[g+8][2t+8..]; B 16 x 8 (k x n): b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]; C 16 x 8:
# c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..]. The emulators give each lane's registers as pairs.
import numpy as np


def mma(afr, b0, b1):
    """afr[lane]: 4 pairs, b0[lane] and b1[lane]: pairs -> per lane the 4 values of C = A B."""
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        A[g, 2*t:2*t+2] = afr[lane][0]; A[g+8, 2*t:2*t+2] = afr[lane][1]
        A[g, 2*t+8:2*t+10] = afr[lane][2]; A[g+8, 2*t+8:2*t+10] = afr[lane][3]
        B[2*t:2*t+2, g] = b0[lane]; B[2*t+8:2*t+10, g] = b1[lane]
    C = A @ B
    return [np.array([C[l >> 2, 2*(l & 3)], C[l >> 2, 2*(l & 3)+1], C[(l >> 2)+8, 2*(l & 3)], C[(l >> 2)+8, 2*(l & 3)+1]]) for l in range(32)]


def a_fragments(tile, row0, col0):
    """Per lane the A registers of the 16 x 16 block of tile at (row0, col0), read as the kernels read shared memory."""
    regs = []
    for lane in range(32):
        g, t = lane >> 2, lane & 3; r, c = row0 + g, col0 + 2 * t
        regs.append([tile[r, c:c+2], tile[r+8, c:c+2], tile[r, c+8:c+10], tile[r+8, c+8:c+10]])
    return regs


def b_fragments(rows, n0, k0):
    """Per lane b0, b1 from a tile stored [n][k] (a 'col' B operand: one 32-bit load each)."""
    return ([rows[n0 + (l >> 2), k0 + 2*(l & 3): k0 + 2*(l & 3) + 2] for l in range(32)],
            [rows[n0 + (l >> 2), k0 + 2*(l & 3) + 8: k0 + 2*(l & 3) + 10] for l in range(32)])
