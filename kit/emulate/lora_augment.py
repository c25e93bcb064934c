# lora_augment_lowrank_to_bf16 (cuda-kernels/convert.cu) emulated per lane in float64 (rounding left
# out: this checks the indices): 4 rows per warp, rank chunks of 16, the xor-shuffle sums, the vector
# and scalar paths, both factor layouts; against numpy.
import numpy as np
rng = np.random.default_rng(2)
RPW, Q = 4, 16
def kernel(VEC, x, f, fRk, scale, rows, k, r, grid, threads=128):
    width = k + r
    out = np.full(rows * width, np.nan); u = np.full(rows * r, np.nan)
    warps = threads // 32
    for bx in range(grid):
        for w in range(warps):
            r0 = (bx * warps + w) * RPW
            while r0 < rows:
                for q0 in range(0, r, Q):
                    acc = np.zeros((32, RPW, Q))
                    for lane in range(32):
                        for c in range(lane * VEC, k, 32 * VEC):
                            xv = np.zeros((RPW, VEC))
                            for i in range(RPW):
                                row = r0 + i
                                if row < rows:
                                    xv[i] = x[row * k + c: row * k + c + VEC]
                                    if q0 == 0: out[row * width + c: row * width + c + VEC] = xv[i]
                            for q in range(Q):
                                if q0 + q >= r: break
                                if fRk: fv = f[(q0 + q) * k + c: (q0 + q) * k + c + VEC]
                                else: fv = np.array([f[(c + e) * r + q0 + q] for e in range(VEC)])
                                for i in range(RPW): acc[lane, i, q] += (xv[i] * fv).sum()
                    tot = acc.sum(axis=0)  # the xor-shuffle reduction: every lane holds the totals
                    for i in range(RPW):
                        row = r0 + i
                        for lane in range(Q):
                            if row < rows and q0 + lane < r:
                                u[row * r + q0 + lane] = tot[i, lane]
                                out[row * width + k + q0 + lane] = scale * tot[i, lane]
                r0 += grid * warps * RPW
    return out.reshape(rows, width), u.reshape(rows, r)
for VEC, rows, k, r, fRk, grid in [(4, 37, 96, 8, 1, 2), (4, 19, 64, 20, 0, 1), (1, 23, 30, 3, 1, 3), (1, 9, 33, 17, 0, 1)]:
    x = rng.standard_normal(rows * k); F = rng.standard_normal(r * k)
    f = F if fRk else F.reshape(r, k).T.reshape(-1)   # [r, k] or [k, r]
    out, u = kernel(VEC, x, f, fRk, 0.5, rows, k, r, grid)
    X = x.reshape(rows, k); uref = X @ F.reshape(r, k).T
    err = max(np.abs(u - uref).max(), np.abs(out[:, :k] - X).max(), np.abs(out[:, k:] - 0.5 * uref).max())
    print("lora_augment_max_abs_error_vec%d_rows%d_k%d_r%d_%s: %.1e" % (VEC, rows, k, r, "a" if fRk else "b", err))
