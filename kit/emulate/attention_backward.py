# attention_backward_rows_tc / _cols_tc (cuda-kernels/attention_backward_tc.cu) emulated per lane in
# float64 (rounding left out: this checks indices and the algorithm): the three sweeps with their quad
# reductions, the scratch pair, the transposed fragments of the cols pass; padding, a sequence with no
# real key, partial tiles, D 32/64/128, with and without dropout on the probabilities (the kernels'
# counter-based mask, AttnDrop in common.cuh); against a numpy attention backward.
import numpy as np, sys
from mma import mma, b_fragments
rng = np.random.default_rng(3)
PAD, WARPS, ROWS, QT = 8, 4, 64, 32
NEG = -np.inf

def hash32(x):  # common.cuh's hash32 on uint32
    x &= 0xFFFFFFFF
    x ^= x >> 16; x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15; x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)

def drop_apply(v, drop, bh_row, S, k):  # AttnDrop::apply: element (bh S + q) S + k of the [B, H, S, S] probabilities
    key, threshold, scale = drop
    return v * scale if (hash32(((bh_row * S + k) & 0xFFFFFFFF) ^ key) >> 8) >= threshold else 0.0

def row_frags(M, ld, col0, q0, S, D, mul):   # M flat [S*ld]
    f = []
    for kc in range(D // 16):
        regs = []
        for lane in range(32):
            g, t = lane >> 2, lane & 3; r4 = []
            for i in range(4):
                r, c = q0 + g + (i & 1) * 8, kc * 16 + 2 * t + (i >> 1) * 8
                r4.append(np.array([M[r*ld+col0+c]*mul, M[r*ld+col0+c+1]*mul]) if r < S else np.zeros(2))
            regs.append(r4)
        f.append(regs)
    return f

def rows_kernel(dqkv, P, DS, qkv, dout, mask, B_, S, H, D, scale, drop=None):
    KT = 32 if D == 128 else 64; A = H * D; row3 = 3 * A
    for b in range(B_):
        for h in range(H):
            for bx in range((S + ROWS - 1) // ROWS):
                base = qkv[b*S*row3:(b+1)*S*row3]; dob = dout[b*S*A:(b+1)*S*A]
                warps = []
                for w in range(WARPS):
                    q0 = bx * ROWS + w * 16
                    warps.append(dict(q0=q0, qf=row_frags(base, row3, h*D, q0, S, D, scale), of=row_frags(dob, A, h*D, q0, S, D, 1.0),
                                      m=np.full((32, 2), NEG), l=np.zeros((32, 2)), rd=np.zeros((32, 2)), dq=np.zeros((D//8, 32, 4))))
                for sweep in range(3):
                    for k0 in range(0, S, KT):
                        sk = np.zeros((KT, D + PAD)); sv = np.zeros((KT, D + PAD)); skt = np.zeros((D, KT + PAD)); kb = np.zeros(KT)
                        for j in range(KT):
                            key = k0 + j
                            if key < S:
                                sk[j, :D] = base[key*row3 + A + h*D: key*row3 + A + h*D + D]
                                if sweep > 0: sv[j, :D] = base[key*row3 + 2*A + h*D: key*row3 + 2*A + h*D + D]
                                if sweep == 2: skt[:D, j] = sk[j, :D]
                            kb[j] = 0.0 if key < S and (mask is None or mask[b*S+key] != 0) else NEG
                        for w in warps:
                            s = []
                            for n in range(KT // 8):
                                acc = [np.zeros(4) for _ in range(32)]
                                for kc in range(D // 16):
                                    b0, b1 = b_fragments(sk, n*8, kc*16)
                                    c = mma(w['qf'][kc], b0, b1); acc = [acc[l] + c[l] for l in range(32)]
                                for l in range(32):
                                    t = l & 3; acc[l] = acc[l] + np.array([kb[n*8+2*t], kb[n*8+2*t+1], kb[n*8+2*t], kb[n*8+2*t+1]])
                                s.append(acc)
                            if sweep == 0:
                                for r in range(2):
                                    mx = np.array([max(w['m'][l, r], max(max(s[n][l][2*r], s[n][l][2*r+1]) for n in range(KT//8))) for l in range(32)])
                                    mx = np.array([max(mx[l], mx[l ^ 1]) for l in range(32)]); mx = np.array([max(mx[l], mx[l ^ 2]) for l in range(32)])
                                    ref = np.where(mx == NEG, 0.0, mx)
                                    sm = np.array([sum(np.exp(s[n][l][2*r] - ref[l]) + np.exp(s[n][l][2*r+1] - ref[l]) for n in range(KT//8)) for l in range(32)])
                                    sm = sm + sm[[l ^ 1 for l in range(32)]]; sm = sm + sm[[l ^ 2 for l in range(32)]]
                                    mo = w['m'][:, r]
                                    w['l'][:, r] = w['l'][:, r] * np.exp(np.where(mo == NEG, ref, mo) - ref) + sm
                                    w['m'][:, r] = mx
                                continue
                            p = []; dp = []
                            for n in range(KT // 8):
                                pn = []; 
                                for l in range(32):
                                    pe = np.zeros(4)
                                    for e in range(4):
                                        r = e >> 1; mm = w['m'][l, r]
                                        pe[e] = 0.0 if mm == NEG else np.exp(s[n][l][e] - mm) / w['l'][l, r]
                                    pn.append(pe)
                                p.append(pn)
                                acc = [np.zeros(4) for _ in range(32)]
                                for kc in range(D // 16):
                                    b0, b1 = b_fragments(sv, n*8, kc*16)
                                    c = mma(w['of'][kc], b0, b1); acc = [acc[l] + c[l] for l in range(32)]
                                if drop is not None:  # dP = dropout(dO V^T)
                                    for l in range(32):
                                        g, t = l >> 2, l & 3
                                        acc[l] = np.array([drop_apply(acc[l][e], drop, (b*H+h)*S + w['q0'] + g + 8*(e >> 1), S, k0 + n*8 + 2*t + (e & 1))
                                                           for e in range(4)])
                                dp.append(acc)
                            if sweep == 1:
                                for n in range(KT // 8):
                                    for l in range(32):
                                        w['rd'][l, 0] += p[n][l][0]*dp[n][l][0] + p[n][l][1]*dp[n][l][1]
                                        w['rd'][l, 1] += p[n][l][2]*dp[n][l][2] + p[n][l][3]*dp[n][l][3]
                                continue
                            dsf = [[[None]*4 for _ in range(32)] for _ in range(KT // 16)]
                            for n in range(KT // 8):
                                for l in range(32):
                                    g, t = l >> 2, l & 3
                                    ds = np.array([p[n][l][e] * (dp[n][l][e] - w['rd'][l, e >> 1]) for e in range(4)])
                                    dsf[n//2][l][(n & 1)*2] = ds[0:2].copy(); dsf[n//2][l][(n & 1)*2+1] = ds[2:4].copy()
                                    key = k0 + n*8 + 2*t
                                    for r in range(2):
                                        q = w['q0'] + g + 8*r
                                        if q >= S or key >= S: continue
                                        at = ((b*H+h)*S + q)*S + key
                                        pd = p[n][l][2*r:2*r+2]
                                        if drop is not None:  # Pd for dV
                                            pd = np.array([drop_apply(pd[i], drop, (b*H+h)*S + q, S, key + i) for i in range(2)])
                                        P[at:at+2] = pd; DS[at:at+2] = ds[2*r:2*r+2]
                            for n in range(D // 8):
                                for kc in range(KT // 16):
                                    b0, b1 = b_fragments(skt, n*8, kc*16)
                                    c = mma(dsf[kc], b0, b1)
                                    for l in range(32): w['dq'][n, l] += c[l]
                    if sweep == 1:
                        for w in warps:
                            rd = w['rd']; rd = rd + rd[[l ^ 1 for l in range(32)]]; rd = rd + rd[[l ^ 2 for l in range(32)]]; w['rd'] = rd
                for w in warps:
                    for l in range(32):
                        g, t = l >> 2, l & 3
                        for r in range(2):
                            q = w['q0'] + g + 8*r
                            if q >= S: continue
                            for n in range(D // 8):
                                o = (b*S + q)*row3 + h*D + n*8 + 2*t
                                dqkv[o:o+2] = w['dq'][n, l][2*r:2*r+2] * scale

def cols_kernel(dqkv, P, DS, qkv, dout, B_, S, H, D, scale):
    A = H * D; row3 = 3 * A
    for b in range(B_):
        for h in range(H):
            for bx in range((S + ROWS - 1) // ROWS):
                k0 = bx * ROWS; sq = (b*H+h)*S*S
                dk = np.zeros((WARPS, D//8, 32, 4)); dv = np.zeros((WARPS, D//8, 32, 4))
                for qs in range(0, S, QT):
                    sp = np.zeros((QT, ROWS + PAD)); sds = np.zeros((QT, ROWS + PAD)); sdo = np.zeros((D, QT + PAD)); sqt = np.zeros((D, QT + PAD))
                    for r in range(QT):
                        q = qs + r
                        for j in range(0, ROWS, 2):
                            key = k0 + j
                            if q < S and key < S:
                                sp[r, j:j+2] = P[sq + q*S + key: sq + q*S + key + 2]; sds[r, j:j+2] = DS[sq + q*S + key: sq + q*S + key + 2]
                        if q < S:
                            sdo[:D, r] = dout[(b*S+q)*A + h*D: (b*S+q)*A + h*D + D]; sqt[:D, r] = qkv[(b*S+q)*row3 + h*D: (b*S+q)*row3 + h*D + D]
                    for w in range(WARPS):
                        key0 = w * 16
                        for kc in range(QT // 16):
                            def tfrag(m):
                                regs = []
                                for l in range(32):
                                    g, t = l >> 2, l & 3; r4 = []
                                    for i in range(4):
                                        r, c = key0 + g + (i & 1)*8, kc*16 + 2*t + (i >> 1)*8
                                        r4.append(np.array([m[c, r], m[c+1, r]]))
                                    regs.append(r4)
                                return regs
                            pf, dsf = tfrag(sp), tfrag(sds)
                            for n in range(D // 8):
                                b0, b1 = b_fragments(sdo, n*8, kc*16)
                                c = mma(pf, b0, b1)
                                for l in range(32): dv[w, n, l] += c[l]
                                b0, b1 = b_fragments(sqt, n*8, kc*16)
                                c = mma(dsf, b0, b1)
                                for l in range(32): dk[w, n, l] += c[l]
                for w in range(WARPS):
                    for l in range(32):
                        g, t = l >> 2, l & 3
                        for r in range(2):
                            key = k0 + w*16 + g + 8*r
                            if key >= S: continue
                            for n in range(D // 8):
                                o = (b*S + key)*row3
                                dqkv[o + A + h*D + n*8 + 2*t: o + A + h*D + n*8 + 2*t + 2] = dk[w, n, l][2*r:2*r+2] * scale
                                dqkv[o + 2*A + h*D + n*8 + 2*t: o + 2*A + h*D + n*8 + 2*t + 2] = dv[w, n, l][2*r:2*r+2]

def reference(qkv, dout, mask, B_, S, H, D, scale, drop=None):
    A = H*D; X = qkv.reshape(B_, S, 3, H, D); dO = dout.reshape(B_, S, H, D); out = np.zeros((B_, S, 3, H, D))
    for b in range(B_):
        for h in range(H):
            Q, K, V = X[b, :, 0, h], X[b, :, 1, h], X[b, :, 2, h]
            s = scale * Q @ K.T
            if mask is not None: s[:, mask[b*S:(b+1)*S] == 0] = -np.inf
            mx = s.max(axis=1, keepdims=True); mx[~np.isfinite(mx)] = 0
            e = np.exp(s - mx); den = e.sum(axis=1, keepdims=True); Pm = np.where(den > 0, e / np.where(den > 0, den, 1), 0)
            M = np.ones((S, S))
            if drop is not None:
                M = np.array([[drop_apply(1.0, drop, (b*H+h)*S + q, S, k) for k in range(S)] for q in range(S)])
            dP = (dO[b, :, h] @ V.T) * M; dS = Pm * (dP - (Pm * dP).sum(axis=1, keepdims=True))
            out[b, :, 0, h] = scale * dS @ K; out[b, :, 1, h] = scale * dS.T @ Q; out[b, :, 2, h] = (Pm * M).T @ dO[b, :, h]
    return out.reshape(-1)

for (B_, S, H, D, masked, dropped) in [(2, 70, 2, 32, True, False), (1, 40, 1, 64, True, False), (1, 66, 1, 128, False, False),
                                       (1, 34, 2, 128, True, False), (2, 70, 2, 32, True, True), (1, 66, 1, 128, False, True)]:
    drop = (0x9E3779B9, int(0.25 * 2**24), 1 / 0.75) if dropped else None
    A = H*D
    qkv = rng.standard_normal(B_*S*3*A); dout = rng.standard_normal(B_*S*A)
    mask = None
    if masked:
        mask = np.ones(B_*S, dtype=int); mask[S-5:S] = 0
        if B_ > 1: mask[S:2*S] = 0  # a sequence with every key padding
    scale = 1/np.sqrt(D)
    dqkv = np.full(B_*S*3*A, np.nan); P = np.full(B_*H*S*S, np.nan); DS = np.full(B_*H*S*S, np.nan)
    rows_kernel(dqkv, P, DS, qkv, dout, mask, B_, S, H, D, scale, drop)
    cols_kernel(dqkv, P, DS, qkv, dout, B_, S, H, D, scale)
    ref = reference(qkv, dout, mask, B_, S, H, D, scale, drop)
    err = np.abs(dqkv - ref).max() if not np.isnan(dqkv).any() else float('nan')
    print("attention_backward_max_abs_error_b%d_s%d_h%d_d%d%s%s: %.1e" % (B_, S, H, D, "_padded" if masked else "", "_dropout" if dropped else "", err))
