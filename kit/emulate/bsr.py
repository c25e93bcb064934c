# The block-sparse emulators' data: integer matrices (so the emulated kernels must match numpy exactly)
# and a random 32 x 32 block mask packed as the device packs it (rowptr, colidx, values [kept][32 n][32 k]).
import numpy as np

BSR = 32


def random_case(rng, M, N, K, density):
    """W [N, K], X [M, K], bias [N], Y0 [M, N] and the mask of W's blocks: block-row 1 keeps nothing, block-row 2 (mod the rows) everything."""
    nb, kbs = N // BSR, K // BSR
    mask = rng.random((nb, kbs)) < density
    mask[1, :] = False
    mask[2 % nb, :] = True
    W = rng.integers(-4, 5, (N, K)).astype(float); X = rng.integers(-4, 5, (M, K)).astype(float)
    bias = rng.integers(-4, 5, N).astype(float); Y0 = rng.integers(-4, 5, (M, N)).astype(float)
    rowptr, colidx, vals = [0], [], []
    for r in range(nb):
        for c in range(kbs):
            if mask[r, c]:
                colidx.append(c); vals.append(W[r*BSR:(r+1)*BSR, c*BSR:(c+1)*BSR].copy())
        rowptr.append(len(colidx))
    return mask, W, X, bias, Y0, rowptr, colidx, vals


def plain_reference(mask, W, X, bias, Y0, beta):
    """X (mask o W)^T + bias + beta Y0."""
    return X @ (W * np.kron(mask, np.ones((BSR, BSR)))).T + bias + beta * Y0


NONE = 1 << 31


class Union:
    """BsrUnion of blocksparse.cu: the merge over a CTA's block-rows' ascending column lists."""

    def __init__(self, rowptr, colidx, br0, group):
        self.ptr = [rowptr[br0 + j] for j in range(group)]
        self.end = [rowptr[br0 + j + 1] for j in range(group)]
        self.colidx = colidx

    def head(self, j):
        return self.colidx[self.ptr[j]] if self.ptr[j] < self.end[j] else NONE

    def lowest(self):
        return min(self.head(j) for j in range(len(self.ptr)))

    def block_at(self, j, c):
        return self.ptr[j] if self.head(j) == c else -1

    def advance(self, c):
        kept = 0
        for j in range(len(self.ptr)):
            if self.head(j) == c:
                kept |= 1 << j
                self.ptr[j] += 1
        return kept


def run_plain(rng, cta, group, rows, M, N, K, density, beta):
    """Every CTA of a plain-product kernel over a random case (cta(bx, by, X, vals, rowptr, colidx, bias, beta, M, N, K, Y)); max |error|."""
    mask, W, X, bias, Y0, rowptr, colidx, vals = random_case(rng, M, N, K, density)
    Y = Y0.copy()
    for bx in range(N // (BSR * group)):
        for by in range((M + rows - 1) // rows):
            cta(bx, by, X, vals, rowptr, colidx, bias, beta, M, N, K, Y)
    return np.abs(Y - plain_reference(mask, W, X, bias, Y0, beta)).max()
