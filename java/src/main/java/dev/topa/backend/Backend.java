package dev.topa.backend;

import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.Tensor;
import java.util.Arrays;

/**
 * The ops models call, one set per device. Each public method checks dtypes, shapes and devices
 * once, here, with an error that names the op and the tensor, then hands plain sizes to the
 * backend's kernel method; backends implement only the {@code k*} kernels.
 *
 * <p>Matrices: a tensor used as a matrix is read as [numel / last, last], so [B, S, C] activations
 * need no reshape. Gradient outputs documented as "+=" accumulate; all other outputs are
 * overwritten and never read (callers may pass uninitialised memory).
 */
public abstract class Backend implements AutoCloseable {

    public abstract Device device();

    /** A short name such as {@code cpu-avx512}. */
    public abstract String name();

    /** Whether bf16 products run in hardware here (so a bf16 frozen base is faster than fp32, not just smaller). */
    public boolean fastBf16() {
        return false;
    }

    public MemoryTracker memory() {
        return MemoryTracker.of(device());
    }

    @Override
    public void close() {}

    /** Waits until every op issued so far has finished (a device backend queues them; the CPU's run in the call). */
    public void synchronize() {}

    // ---------------------------------------------------------------- memory on this backend's device

    /** A scope for long-lived tensors of a category (gradients, optimizer state) in this backend's device memory. */
    public dev.topa.tensor.TensorScope scope(String name, dev.topa.tensor.MemoryCategory category) {
        return new dev.topa.tensor.TensorScope(name, category);
    }

    /** A scope for weights in this backend's device memory. */
    public final dev.topa.tensor.TensorScope weightScope(String name) {
        return scope(name, dev.topa.tensor.MemoryCategory.WEIGHTS);
    }

    /** t = 0 (any dtype). */
    public final void zero(Tensor t) {
        onDevice("zero", "t", t);
        if (t.byteSize() > 0) kZero(t);
    }

    protected void kZero(Tensor t) {
        t.fill(0f);
    }

    /**
     * t[i, j] = 0 outside the diagonal blocks of a blocks x blocks grid over t [rows, cols] (a
     * block-diagonal LoRA B stays block-diagonal).
     */
    public final void zeroOffDiagonal(Tensor t, int blocks) {
        f32("zeroOffDiagonal", "t", t);
        check(t.rank() == 2 && t.dim(0) % blocks == 0 && t.dim(1) % blocks == 0, "zeroOffDiagonal",
                shape(t) + " is not divisible into " + blocks + " x " + blocks + " blocks");
        kZeroOffDiagonal(t, t.dim(0), t.dim(1), blocks);
    }

    protected void kZeroOffDiagonal(Tensor t, long rows, long cols, int blocks) {
        long rb = rows / blocks, cb = cols / blocks;
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++)
                if (i / rb != j / cb) t.setFloat(i * cols + j, 0f);
    }

    /** A per-step activation arena in this backend's device memory. */
    public dev.topa.tensor.StepArena stepArena(String name) {
        return new dev.topa.tensor.StepArena(name);
    }

    /**
     * dst = src, both the same dtype and element count; each on the CPU or on this backend's device
     * (host to device, device to host, within either). Returns once dst can be read.
     */
    public final void copy(Tensor dst, Tensor src) {
        check(dst.dtype() == src.dtype(), "copy", "dtypes differ: " + src + " -> " + dst);
        check(dst.numel() == src.numel(), "copy", "element counts differ: " + src + " -> " + dst);
        for (Tensor t : new Tensor[] {dst, src}) {
            check(t.device().isHostAccessible() || t.device().equals(device()), "copy", t + " is on neither the CPU nor " + device());
            t.checkAlive();
        }
        if (dst.byteSize() > 0) kCopy(dst, src, dst.byteSize());
    }

    /** A copy of src in memory from alloc (which may be on another device: an upload or a download). */
    public final Tensor copyOf(Tensor src, dev.topa.tensor.TensorAllocator alloc) {
        Tensor t = alloc.allocate(src.category(), src.dtype(), src.shape());
        copy(t, src);
        return t;
    }

    /** Host copies; a device backend overrides for its own memory. */
    protected void kCopy(Tensor dst, Tensor src, long bytes) {
        check(dst.device().isHostAccessible() && src.device().isHostAccessible(), "copy", "this backend copies host memory only");
        java.lang.foreign.MemorySegment.copy(src.data(), 0, dst.data(), 0, bytes);
    }

    /**
     * dst = src converted between f32 and bf16 (round to nearest even), the same element count,
     * both in this backend's memory: activations stored in bf16 and widened back for the ops.
     */
    public final void convert(Tensor dst, Tensor src) {
        check(dst.isFloat() && src.isFloat() && dst.dtype() != src.dtype(), "convert", "converts f32 <-> bf16, got " + src + " -> " + dst);
        check(dst.numel() == src.numel(), "convert", "element counts differ: " + src + " -> " + dst);
        for (Tensor t : new Tensor[] {dst, src}) {
            check(t.device().equals(device()) || (t.device().isHostAccessible() && device().isHostAccessible()), "convert",
                    t + " is not on " + device());
            t.checkAlive();
        }
        if (dst.numel() > 0) kConvert(dst, src, dst.numel());
    }

    protected abstract void kConvert(Tensor dst, Tensor src, long n);

    /** y[i, :] = row for every row of y: the output of a linear layer left with no inputs. */
    public final void broadcastRows(Tensor y, Tensor row) {
        f32("broadcastRows", "y", y);
        vector("broadcastRows", "row", row, cols(y));
        kBroadcastRows(y, row, rows(y), cols(y));
    }

    protected void kBroadcastRows(Tensor y, Tensor row, long rows, long cols) {
        java.lang.foreign.MemorySegment src = row.data(), dst = y.data();
        for (long r = 0; r < rows; r++) java.lang.foreign.MemorySegment.copy(src, 0, dst, r * cols * 4, cols * 4);
    }

    /** out = in^T + beta out for a 2-D in [rows, cols] and out [cols, rows]: small factors (LoRA's A and B), not activations. */
    public final void transpose(Tensor out, Tensor in, float beta) {
        f32("transpose", "out", out);
        f32("transpose", "in", in);
        check(in.rank() == 2 && out.rank() == 2 && out.dim(0) == in.dim(1) && out.dim(1) == in.dim(0), "transpose", "out " + shape(out)
                + " is not the transpose of in " + shape(in));
        kTranspose(out, in, in.dim(0), in.dim(1), beta);
    }

    protected abstract void kTranspose(Tensor out, Tensor in, long rows, long cols, float beta);

    // ---------------------------------------------------------------- GEMM and linear layers

    /** C = alpha op(A) op(B) + beta C + bias; op(A) [M,K], op(B) [K,N], C [M,N], bias [N] or null. */
    public final void gemm(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c,
            Tensor bias) {
        f32("gemm", "A", a);
        f32("gemm", "B", b);
        f32("gemm", "C", c);
        long m = transA ? cols(a) : rows(a), k = transA ? rows(a) : cols(a);
        long kb = transB ? cols(b) : rows(b), n = transB ? rows(b) : cols(b);
        check(k == kb, "gemm", "inner dimensions differ: op(A) is [" + m + "," + k + "], op(B) is [" + kb + "," + n + "]");
        check(rows(c) == m && cols(c) == n, "gemm", "C " + shape(c) + " is not [" + m + "," + n + "]");
        if (bias != null) {
            f32("gemm", "bias", bias);
            check(bias.numel() == n, "gemm", "bias has " + bias.numel() + " elements, C has " + n + " columns");
        }
        kGemm(transA, transB, m, n, k, alpha, a, cols(a), b, cols(b), beta, c, n, bias);
    }

    /** y = x W^T + bias for W [out, in] (PyTorch's layout); bias may be null. */
    public final void linearForward(Tensor y, Tensor x, Tensor w, Tensor bias) {
        gemm(false, true, 1f, x, w, 0f, y, bias);
    }

    /**
     * A frozen weight W [out, in] rounded to bf16 and packed for {@link #gemmBf16}: as W^T (the
     * forward's operand, transposed = true) or as W (the input gradient's, transposed = false).
     */
    public final Bf16Weight packBf16(Tensor w, boolean transposed, dev.topa.tensor.TensorAllocator alloc) {
        f32("packBf16", "W", w);
        check(w.rank() == 2, "packBf16", "W must be [out, in], got " + shape(w));
        long k = transposed ? w.dim(1) : w.dim(0), n = transposed ? w.dim(0) : w.dim(1);
        Tensor packed = alloc.allocate(DType.BF16, kBf16PackedSize(k, n));
        kBf16Pack(w, transposed, k, n, packed);
        return new Bf16Weight(packed, k, n, name());
    }

    /**
     * C [m, n] = alpha A op(B) + beta C + bias with A [m, k] rounded to bf16 on the fly and op(B)
     * packed by {@link #packBf16}; products in bf16, sums in fp32 (mixed precision for frozen weights).
     */
    public final void gemmBf16(float alpha, Tensor a, Bf16Weight b, float beta, Tensor c, Tensor bias) {
        gemmBf16(alpha, a, b, beta, c, bias, null, 0f, false, null);
    }

    /**
     * As above plus a low-rank fp32 term in the same pass: C = alpha (A op(B) + scale2 A2 op(B2)) +
     * beta C + bias, A2 [m, r], op(B2) [r, n] (B2 [n, r] when transB2, else [r, n]): a LoRA update
     * (forward: A2 = x A_lora^T, B2 = B_lora, transB2; input gradient: A2 = dy B_lora, B2 = A_lora).
     */
    public final void gemmBf16(float alpha, Tensor a, Bf16Weight b, float beta, Tensor c, Tensor bias, Tensor a2, float scale2,
            boolean transB2, Tensor b2) {
        gemmBf16Check("gemmBf16", a, b, c, bias, a2, transB2, b2);
        kGemmBf16(rows(a), b.n(), b.k(), alpha, a, b, beta, c, bias, a2, scale2, transB2, b2);
    }

    /**
     * A LoRA forward on a bf16 frozen weight, its factor product included: u = x A^T [m, r] (fp32,
     * kept for backward) and y = x W^T + bias + scale u B^T, W^T packed by {@link #packBf16}
     * (transposed), A [r, in], B [out, r]. One call so a device can form u in the pass that rounds x
     * to bf16 (a GEMM of its own would read x once more).
     */
    public final void loraForwardBf16(Tensor y, Tensor u, Tensor x, Bf16Weight w, Tensor bias, Tensor a, Tensor b, float scale) {
        String op = "loraForwardBf16";
        f32(op, "A", a);
        check(a.rank() == 2 && a.dim(1) == w.k(), op, "A " + shape(a) + " is not [r, " + w.k() + "]");
        f32(op, "u", u);
        check(rows(u) == rows(x) && cols(u) == a.dim(0), op, "u " + shape(u) + " is not [" + rows(x) + ", " + a.dim(0) + "]");
        gemmBf16Check(op, x, w, y, bias, u, true, b);
        kGemmBf16LowRank(rows(x), w.n(), w.k(), x, w, 0f, y, bias, u, a, true, scale, b, true);
    }

    /**
     * Its input gradient: g = dy B [m, r] (fp32, kept for dA) and dx = dy W + scale g A (+ dx when
     * accumulating), W packed by {@link #packBf16} (not transposed), B [out, r], A [r, in].
     */
    public final void loraInputGradientBf16(Tensor dx, boolean accumulate, Tensor g, Tensor dy, Bf16Weight w, Tensor b, Tensor a,
            float scale) {
        String op = "loraInputGradientBf16";
        f32(op, "B", b);
        check(b.rank() == 2 && b.dim(0) == w.k(), op, "B " + shape(b) + " is not [" + w.k() + ", r]");
        f32(op, "g", g);
        check(rows(g) == rows(dy) && cols(g) == b.dim(1), op, "g " + shape(g) + " is not [" + rows(dy) + ", " + b.dim(1) + "]");
        gemmBf16Check(op, dy, w, dx, null, g, false, a);
        kGemmBf16LowRank(rows(dy), w.n(), w.k(), dy, w, accumulate ? 1f : 0f, dx, null, g, b, false, scale, a, false);
    }

    /** The shapes of a bf16 product C = A op(B) + bias with an optional low-rank term A2 op(B2) (a2 null: none). */
    private void gemmBf16Check(String op, Tensor a, Bf16Weight b, Tensor c, Tensor bias, Tensor a2, boolean transB2, Tensor b2) {
        check(b.backend().equals(name()), op, "weight was packed by " + b.backend() + ", this backend is " + name());
        f32(op, "A", a);
        f32(op, "C", c);
        check(cols(a) == b.k(), op, "A " + shape(a) + " has " + cols(a) + " columns, op(B) has " + b.k() + " rows");
        check(rows(c) == rows(a) && cols(c) == b.n(), op, "C " + shape(c) + " is not [" + rows(a) + ", " + b.n() + "]");
        if (bias != null) vector(op, "bias", bias, b.n());
        if (a2 == null) return;
        f32(op, "A2", a2);
        f32(op, "B2", b2);
        long r = cols(a2);
        check(rows(a2) == rows(a), op, "A2 " + shape(a2) + " has " + rows(a2) + " rows, A has " + rows(a));
        check(transB2 ? rows(b2) == b.n() && cols(b2) == r : rows(b2) == r && cols(b2) == b.n(), op,
                "B2 " + shape(b2) + " does not match A2 " + shape(a2) + " and n = " + b.n());
    }

    /**
     * u = a op(f) with op(f) [k, r] (f [r, k] when fRowsAreRank, else [k, r]); then C = a op(B) +
     * scale u op(B2) + beta C + bias. Here: the factor GEMM, then the bf16 product with u folded in.
     */
    protected void kGemmBf16LowRank(long m, long n, long k, Tensor a, Bf16Weight b, float beta, Tensor c, Tensor bias, Tensor u, Tensor f,
            boolean fRowsAreRank, float scale, Tensor b2, boolean transB2) {
        gemm(false, fRowsAreRank, 1f, a, f, 0f, u, null);
        kGemmBf16(m, n, k, 1f, a, b, beta, c, bias, u, scale, transB2, b2);
    }

    /**
     * W [out, in] with a block mask [out/32][in/32] (true = kept) into the block-sparse format: as W
     * for Y = X W^T (transposed = false) or as W^T for dX = dY W (transposed = true).
     */
    public final BlockSparseWeight packBlockSparse(Tensor w, boolean[][] blockMask, boolean transposed,
            dev.topa.tensor.TensorAllocator alloc) {
        return packBlockSparse(w, blockMask, transposed, alloc, false);
    }

    /**
     * As above; structureOnly keeps no values (rowptr and colidx only): the pack of a masked weight
     * whose product runs dense, for the adapter's masked low-rank term alone.
     */
    public final BlockSparseWeight packBlockSparse(Tensor w, boolean[][] blockMask, boolean transposed,
            dev.topa.tensor.TensorAllocator alloc, boolean structureOnly) {
        String op = "packBlockSparse";
        f32(op, "W", w);
        int b = BlockSparseWeight.BLOCK;
        check(w.rank() == 2 && w.dim(0) % b == 0 && w.dim(1) % b == 0, op, "W must be [out, in] with both multiples of " + b + ", got "
                + shape(w));
        long ob = w.dim(0) / b, ib = w.dim(1) / b;
        check(blockMask.length == ob, op, "block mask has " + blockMask.length + " block-rows, W has " + ob);
        byte[] mask = new byte[(int) (ob * ib)];
        long kept = 0;
        for (int r = 0; r < ob; r++) {
            check(blockMask[r].length == ib, op, "block mask row " + r + " has " + blockMask[r].length + " blocks, W has " + ib);
            for (int c = 0; c < ib; c++) if (blockMask[r][c]) {
                mask[(int) (r * ib + c)] = 1;
                kept++;
            }
        }
        long n = transposed ? w.dim(1) : w.dim(0), k = transposed ? w.dim(0) : w.dim(1);
        Tensor values = structureOnly ? null : alloc.allocate(kBlockSparseValueType(), kept, b, b), rowptr = alloc.allocate(DType.I32, n / b + 1),
                colidx = alloc.allocate(DType.I32, Math.max(kept, 1));
        kBlockSparsePack(w, mask, transposed, values, rowptr, colidx);
        return new BlockSparseWeight(values, rowptr, colidx, n, k, kept, name());
    }

    /** The element type of a block-sparse pack's kept blocks on this backend (their layout is the backend's too). */
    protected DType kBlockSparseValueType() {
        return DType.F32;
    }

    /**
     * y [m, n] = x [m, k] P^T + beta y + bias (+ scale u [m, r] lt [r, n], a LoRA term: u = x A^T with
     * lt = B^T forward, u = dy B with lt = A for the input gradient); u and lt may be null.
     */
    public final void blockSparseLinear(Tensor y, Tensor x, BlockSparseWeight p, Tensor bias, float beta, Tensor u, Tensor lt,
            float scale) {
        blockSparseLinear(y, x, p, bias, beta, u, lt, scale, false);
    }

    /**
     * As above; with perBlock the low-rank term is masked like P: u is [m, (k/32) r] from
     * {@link #blockLowRank} (one rank-r product per 32-wide input block) and each 32-row block of y
     * adds the sum of u over its kept blocks times lt -- y gets x (M o (lt^T-factor x A))^T, the
     * adapter's update only inside the kept blocks (what merging inside the mask bakes in).
     */
    public final void blockSparseLinear(Tensor y, Tensor x, BlockSparseWeight p, Tensor bias, float beta, Tensor u, Tensor lt,
            float scale, boolean perBlock) {
        String op = "blockSparseLinear";
        check(p.backend().equals(name()), op, "weight was packed by " + p.backend() + ", this backend is " + name());
        f32(op, "x", x);
        f32(op, "y", y);
        check(cols(x) == p.k(), op, "x has " + cols(x) + " features, the packed weight takes " + p.k());
        check(rows(y) == rows(x) && cols(y) == p.n(), op, "y " + shape(y) + " is not [" + rows(x) + ", " + p.n() + "]");
        if (bias != null) vector(op, "bias", bias, p.n());
        if (u != null) {
            f32(op, "u", u);
            f32(op, "lt", lt);
            long r = lt.rank() == 2 ? lt.dim(0) : -1, uCols = perBlock ? p.k() / BlockSparseWeight.BLOCK * r : r;
            check(rows(u) == rows(x) && lt.rank() == 2 && cols(u) == uCols && lt.dim(1) == p.n(), op, "u " + shape(u) + " and lt "
                    + shape(lt) + " do not make a [" + rows(x) + ", " + p.n() + "] term" + (perBlock ? " (u per input block)" : ""));
        }
        kBlockSparseLinear(y, x, p, bias, beta, u, lt, scale, perBlock);
    }

    /** u [m, (k/32) r]: u[:, c r + q] = x[:, 32 c ..] . a[q, 32 c ..], the rank-r product of each 32-wide input block; a [r, k]. */
    public final void blockLowRank(Tensor u, Tensor x, Tensor a) {
        String op = "blockLowRank";
        f32(op, "u", u);
        f32(op, "x", x);
        f32(op, "a", a);
        int b = BlockSparseWeight.BLOCK;
        check(a.rank() == 2 && a.dim(1) % b == 0 && a.dim(0) <= 64, op, "a must be [r <= 64, k], k a multiple of " + b + ", got " + shape(a));
        check(cols(x) == a.dim(1), op, "x has " + cols(x) + " features, a takes " + a.dim(1));
        check(rows(u) == rows(x) && cols(u) == a.dim(1) / b * a.dim(0), op, "u " + shape(u) + " is not [" + rows(x) + ", "
                + a.dim(1) / b * a.dim(0) + "]");
        kBlockLowRank(u, x, a);
    }

    /**
     * d [n, r] += scale sum_m dy[m, :] (u summed over the kept blocks of the row's block-row of P)[m, :]:
     * the masked low-rank term's factor gradient (P = W: u from x and A, dy the output gradient,
     * d = dB; P = W^T: u from dy and B^T, dy := x, d = dA^T).
     */
    public final void blockLowRankGradient(Tensor d, Tensor dy, BlockSparseWeight p, Tensor u, float scale) {
        String op = "blockLowRankGradient";
        check(p.backend().equals(name()), op, "weight was packed by " + p.backend() + ", this backend is " + name());
        f32(op, "d", d);
        f32(op, "dy", dy);
        f32(op, "u", u);
        check(d.rank() == 2 && d.dim(0) == p.n() && d.dim(1) <= 64, op, "d must be [" + p.n() + ", r <= 64], got " + shape(d));
        check(cols(dy) == p.n(), op, "dy has " + cols(dy) + " columns, P has " + p.n() + " rows");
        check(rows(u) == rows(dy) && cols(u) == p.k() / BlockSparseWeight.BLOCK * d.dim(1), op, "u " + shape(u) + " is not per input block");
        kBlockLowRankGradient(d, dy, p, u, d.dim(1), scale);
    }

    /** W [out, in] packed for {@link #linearForward(Tensor, Tensor, PackedWeight, Tensor)}, in memory from alloc. */
    public final PackedWeight packLinearWeight(Tensor w, dev.topa.tensor.TensorAllocator alloc) {
        f32("packLinearWeight", "W", w);
        check(w.rank() == 2, "packLinearWeight", "W must be [out, in], got " + shape(w));
        Tensor packed = alloc.allocate(DType.F32, kPackedSize(w.dim(0), w.dim(1)));
        kPackLinearWeight(w, w.dim(0), w.dim(1), packed);
        return new PackedWeight(packed, w.dim(0), w.dim(1), name());
    }

    /** y = x W^T + bias with W packed by this backend; bias may be null. */
    public final void linearForward(Tensor y, Tensor x, PackedWeight w, Tensor bias) {
        String op = "linearForward";
        check(w.backend().equals(name()), op, "weight was packed by " + w.backend() + ", this backend is " + name());
        f32(op, "x", x);
        f32(op, "y", y);
        onDevice(op, "packed W", w.data());
        check(cols(x) == w.inFeatures(), op, "x has " + cols(x) + " features, W takes " + w.inFeatures());
        check(rows(y) == rows(x) && cols(y) == w.outFeatures(), op, "y " + shape(y) + " is not [" + rows(x) + ", "
                + w.outFeatures() + "]");
        if (bias != null) vector(op, "bias", bias, w.outFeatures());
        kLinearPacked(y, x, w, rows(x), bias);
    }

    /**
     * Backward of {@link #linearForward}: dx = dy W (overwritten; null when x needs no gradient),
     * dw += dy^T x and dbias += column sums of dy (each null when that parameter is frozen).
     */
    public final void linearBackward(Tensor dx, Tensor dw, Tensor dbias, Tensor dy, Tensor x, Tensor w) {
        if (dx != null) gemm(false, false, 1f, dy, w, 0f, dx, null);
        if (dw != null) gemm(true, false, 1f, dy, x, 1f, dw, null);
        if (dbias != null) biasBackward(dbias, dy);
    }

    // ---------------------------------------------------------------- LoRA

    /**
     * A LoRA projection, fused: y = x W^T + bias + scale (x A^T) B^T for W [out, in], A [r, in],
     * B [out, r]; u [rows, r] receives x A^T (backward needs it). The rank-r update runs as r extra
     * columns of the same GEMM as the weight, so C is written once.
     */
    public final void loraForward(Tensor y, Tensor u, Tensor x, Tensor w, Tensor bias, Tensor a, Tensor b, float scale) {
        loraForward(y, u, x, x, w, bias, a, b, scale);
    }

    /** As above with the adapter reading xLora (x after LoRA dropout): u = xLora A^T, y = x W^T + bias + scale u B^T. */
    public final void loraForward(Tensor y, Tensor u, Tensor x, Tensor xLora, Tensor w, Tensor bias, Tensor a, Tensor b,
            float scale) {
        String op = "loraForward";
        if (xLora != x) sameShape(op, "xLora", xLora, x);
        long m = rows(x), r = loraRank(op, w, a, b);
        f32(op, "x", x);
        check(cols(x) == w.dim(1), op, "x has " + cols(x) + " features, W takes " + w.dim(1));
        f32(op, "y", y);
        check(rows(y) == m && cols(y) == w.dim(0), op, "y " + shape(y) + " is not [" + m + ", " + w.dim(0) + "]");
        vector(op, "u", u, m * r);
        if (bias != null) vector(op, "bias", bias, w.dim(0));
        gemm(false, true, 1f, xLora, a, 0f, u.reshape(m, r), null);
        kGemmAugmented(false, true, m, w.dim(0), w.dim(1), x, w, r, u, scale, true, b, 0f, y, bias);
    }

    /**
     * Backward of {@link #loraForward}. g [rows, r] is scratch that receives dy B, computed once and
     * used for both dx and dA. dx (overwritten; null skips) = dy W + scale g A, in one GEMM;
     * dA += scale g^T x; dB += scale dy^T u; dbias += column sums of dy; dw += dy^T x (each null
     * when frozen: the usual case for W).
     */
    public final void loraBackward(Tensor dx, Tensor dw, Tensor dbias, Tensor dA, Tensor dB, Tensor g, Tensor dy, Tensor x,
            Tensor u, Tensor w, Tensor a, Tensor b, float scale) {
        loraBackward(dx, false, dw, dbias, dA, dB, g, dy, x, u, w, a, b, scale);
    }

    /** As above; accumulateDx adds into dx (a residual branch's gradient already there) instead of overwriting. */
    public final void loraBackward(Tensor dx, boolean accumulateDx, Tensor dw, Tensor dbias, Tensor dA, Tensor dB, Tensor g,
            Tensor dy, Tensor x, Tensor u, Tensor w, Tensor a, Tensor b, float scale) {
        String op = "loraBackward";
        long m = rows(dy), r = loraRank(op, w, a, b), out = w.dim(0), in = w.dim(1);
        f32(op, "dy", dy);
        check(cols(dy) == out && rows(x) == m && cols(x) == in, op, "dy " + shape(dy) + " and x " + shape(x)
                + " do not match W " + shape(w));
        vector(op, "u", u, m * r);
        vector(op, "g", g, m * r);
        Tensor g2 = g.reshape(m, r), u2 = u.reshape(m, r);
        gemm(false, false, 1f, dy, b, 0f, g2, null);
        if (dx != null) {
            f32(op, "dx", dx);
            check(rows(dx) == m && cols(dx) == in, op, "dx " + shape(dx) + " is not [" + m + ", " + in + "]");
            kGemmAugmented(false, false, m, in, out, dy, w, r, g2, scale, false, a, accumulateDx ? 1f : 0f, dx, null);
        }
        if (dA != null) gemm(true, false, scale, g2, x, 1f, dA, null);
        if (dB != null) gemm(true, false, scale, dy, u2, 1f, dB, null);
        if (dbias != null) biasBackward(dbias, dy);
        if (dw != null) gemm(true, false, 1f, dy, x, 1f, dw, null);
    }

    private long loraRank(String op, Tensor w, Tensor a, Tensor b) {
        f32(op, "W", w);
        f32(op, "A", a);
        f32(op, "B", b);
        check(w.rank() == 2 && a.rank() == 2 && b.rank() == 2, op, "W, A, B must be matrices");
        long r = a.dim(0);
        check(a.dim(1) == w.dim(1) && b.dim(0) == w.dim(0) && b.dim(1) == r, op, "LoRA shapes disagree: W " + shape(w)
                + ", A " + shape(a) + " (want [r, " + w.dim(1) + "]), B " + shape(b) + " (want [" + w.dim(0) + ", r])");
        return r;
    }

    /** dbias[N] += column sums of dy [.., N]. */
    public final void biasBackward(Tensor dbias, Tensor dy) {
        f32("biasBackward", "dbias", dbias);
        f32("biasBackward", "dy", dy);
        check(dbias.numel() == cols(dy), "biasBackward", "dbias has " + dbias.numel() + " elements, dy has "
                + cols(dy) + " columns");
        kBiasBackward(dbias, dy, rows(dy), cols(dy));
    }

    // ---------------------------------------------------------------- layernorm

    /**
     * out = LayerNorm(x + residual) gamma + beta over the last dim; residual may be null. mean and
     * rstd [rows] are saved for backward; sum (may be null) receives x + residual, the input that
     * backward needs when the residual is fused.
     */
    public final void layernormForward(Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x, Tensor residual,
            Tensor gamma, Tensor beta, float eps) {
        String op = "layernormForward";
        long r = rows(x), c = cols(x);
        sameShape(op, "out", out, x);
        if (residual != null) sameShape(op, "residual", residual, x);
        if (sum != null) sameShape(op, "sum", sum, x);
        vector(op, "gamma", gamma, c);
        vector(op, "beta", beta, c);
        vector(op, "mean", mean, r);
        vector(op, "rstd", rstd, r);
        check(eps > 0, op, "eps must be > 0, got " + eps);
        kLayernormForward(out, mean, rstd, sum, x, residual, gamma, beta, r, c, eps);
    }

    /** dx = dLN/dx (accumulate: dx +=); dgamma, dbeta += (null when frozen). */
    public final void layernormBackward(Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor x, Tensor mean,
            Tensor rstd, Tensor gamma, boolean accumulate) {
        String op = "layernormBackward";
        long r = rows(x), c = cols(x);
        sameShape(op, "dx", dx, x);
        sameShape(op, "dy", dy, x);
        vector(op, "gamma", gamma, c);
        if (dgamma != null) vector(op, "dgamma", dgamma, c);
        if (dbeta != null) vector(op, "dbeta", dbeta, c);
        vector(op, "mean", mean, r);
        vector(op, "rstd", rstd, r);
        kLayernormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, r, c, accumulate);
    }

    // ---------------------------------------------------------------- GELU

    /** out = GELU(x + bias), exact erf form; bias [cols] may be null; out may be x. */
    public final void biasGeluForward(Tensor out, Tensor x, Tensor bias) {
        sameShape("biasGeluForward", "out", out, x);
        if (bias != null) vector("biasGeluForward", "bias", bias, cols(x));
        kBiasGeluForward(out, x, bias, rows(x), cols(x));
    }

    /** dx = dy GELU'(x + bias) (dx may be dy); dbias += column sums of dx (null when frozen). */
    public final void biasGeluBackward(Tensor dx, Tensor dbias, Tensor dy, Tensor x, Tensor bias) {
        String op = "biasGeluBackward";
        sameShape(op, "dx", dx, x);
        sameShape(op, "dy", dy, x);
        if (bias != null) vector(op, "bias", bias, cols(x));
        if (dbias != null) vector(op, "dbias", dbias, cols(x));
        kBiasGeluBackward(dx, dbias, dy, x, bias, rows(x), cols(x));
    }

    // ---------------------------------------------------------------- softmax

    public final void softmaxForward(Tensor y, Tensor x) {
        sameShape("softmaxForward", "y", y, x);
        kSoftmaxForward(y, x, rows(x), cols(x));
    }

    public final void softmaxBackward(Tensor dx, Tensor dy, Tensor y) {
        sameShape("softmaxBackward", "dx", dx, y);
        sameShape("softmaxBackward", "dy", dy, y);
        kSoftmaxBackward(dx, dy, y, rows(y), cols(y));
    }

    // ---------------------------------------------------------------- dropout

    /**
     * out = (accumulate ? out : 0) + dropout(in): the forward of a dropout site, and with the same
     * draw its backward (in = dy). out may be in.
     */
    public final void dropout(Tensor out, Tensor in, Dropout dropout, boolean accumulate) {
        String op = "dropout";
        f32(op, "in", in);
        sameShape(op, "out", out, in);
        kDropout(out, in, in.numel(), dropout, accumulate);
    }

    // ---------------------------------------------------------------- importance

    /**
     * out [B, G] = per example, the gradient of a multiplicative mask on each of G feature groups
     * of x [B, S, G*D] (heads of an attention context: D = head size; FFN neurons: D = 1), given
     * dx = dL/dx: the sum over tokens and the group's features of x * dx.
     */
    public final void groupDot(Tensor out, Tensor x, Tensor dx, int groups) {
        String op = "groupDot";
        f32(op, "x", x);
        sameShape(op, "dx", dx, x);
        check(x.rank() == 3 && groups > 0 && x.dim(2) % groups == 0, op, "x must be [B, S, G*D] with G = " + groups + ", got " + shape(x));
        f32(op, "out", out);
        check(out.numel() == x.dim(0) * groups, op, "out " + shape(out) + " is not [" + x.dim(0) + "," + groups + "]");
        kGroupDot(out, x, dx, x.dim(0), x.dim(1), groups, x.dim(2) / groups);
    }

    /**
     * out [n/32, k/32] = per 32 x 32 block, the sum of w * g over it (w, g [n, k], both multiples of
     * 32): a block's first-order Taylor term when g = dL/dw.
     */
    public final void blockDot(Tensor out, Tensor w, Tensor g) {
        String op = "blockDot";
        f32(op, "w", w);
        sameShape(op, "g", g, w);
        f32(op, "out", out);
        int b = BlockSparseWeight.BLOCK;
        check(w.rank() == 2 && w.dim(0) % b == 0 && w.dim(1) % b == 0, op, "w must be [n, k], both multiples of " + b + ", got " + shape(w));
        check(out.numel() == w.dim(0) / b * (w.dim(1) / b), op, "out " + shape(out) + " is not one value per block of " + shape(w));
        kBlockDot(out, w, g, w.dim(0), w.dim(1));
    }

    protected abstract void kBlockDot(Tensor out, Tensor w, Tensor g, long rows, long cols);

    // ---------------------------------------------------------------- attention

    /**
     * Multi-head attention over a fused projection qkv [B, S, 3*H*D] (Q, K, V side by side on the
     * last dim): out [B, S, H*D] = softmax(scale Q K^T + padding mask) V per head. mask [B, S] i32
     * (1 real token, 0 padding) or null; probs [B, H, S, S] receives the probabilities (or null).
     */
    public final void attentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, int heads, float scale) {
        attentionForward(out, probs, qkv, mask, heads, scale, Dropout.NONE);
    }

    /** As above with dropout on the probabilities (element index over [B, H, S, S]); probs are saved before it. */
    public final void attentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, int heads, float scale,
            Dropout dropout) {
        String op = "attentionForward";
        long[] d = attentionDims(op, qkv, heads, mask);
        long bsz = d[0], s = d[1], c = d[2];
        f32(op, "out", out);
        check(out.numel() == bsz * s * c, op, "out " + shape(out) + " is not [" + bsz + "," + s + "," + c + "]");
        probsShape(op, probs, bsz, heads, s);
        kAttentionForward(out, probs, qkv, mask, bsz, s, heads, c / heads, scale, dropout);
    }

    /**
     * Attention over sequences packed end to end without padding: qkv [N, 3*H*D] and out [N, H*D]
     * (or [1, N, ...]), sequence i the next lengths[i] rows; each attends only to itself.
     */
    public final void attentionForwardPacked(Tensor out, Tensor qkv, int[] lengths, int heads, float scale) {
        String op = "attentionForwardPacked";
        f32(op, "qkv", qkv);
        f32(op, "out", out);
        long n = 0;
        for (int len : lengths) {
            check(len > 0, op, "sequence lengths must be positive, got " + len);
            n += len;
        }
        long c = qkv.dim(-1) / 3;
        check(qkv.numel() == n * 3 * c && qkv.dim(-1) % 3 == 0 && heads > 0 && c % heads == 0, op, "qkv " + shape(qkv) + " is not ["
                + n + " (the lengths' sum), 3 x " + heads + " heads x D]");
        check(out.numel() == n * c, op, "out " + shape(out) + " is not [" + n + ", " + c + "]");
        kAttentionForwardPacked(out.reshape(n, c), qkv.reshape(n, 3 * c), lengths, heads, c / heads, scale);
    }

    /** One attention call per sequence (any backend); backends with a packed kernel override it. */
    protected void kAttentionForwardPacked(Tensor out, Tensor qkv, int[] lengths, long heads, long headDim, float scale) {
        long c = heads * headDim, off = 0;
        for (int len : lengths) {
            kAttentionForward(out.rows(off, off + len), null, qkv.rows(off, off + len), null, 1, len, heads, headDim, scale, Dropout.NONE);
            off += len;
        }
    }

    /** dqkv [B, S, 3*H*D] (overwritten) from dout [B, S, H*D] and the probs saved by forward (no mask, no dropout). */
    public final void attentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, int heads, float scale) {
        check(probs != null, "attentionBackward", "probs are required without a mask to recompute them from");
        attentionBackward(dqkv, dout, probs, qkv, null, heads, scale, Dropout.NONE);
    }

    /**
     * dqkv from dout. probs: those forward saved, or null to recompute them per head from qkv and
     * mask (flash-style: no [B, H, S, S] tensor lives between forward and backward); dropout the
     * same draw as forward's.
     */
    public final void attentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, Tensor mask, int heads,
            float scale, Dropout dropout) {
        String op = "attentionBackward";
        long[] d = attentionDims(op, qkv, heads, mask);
        long bsz = d[0], s = d[1], c = d[2];
        sameShape(op, "dqkv", dqkv, qkv);
        f32(op, "dout", dout);
        check(dout.numel() == bsz * s * c, op, "dout " + shape(dout) + " is not [" + bsz + "," + s + "," + c + "]");
        probsShape(op, probs, bsz, heads, s);
        kAttentionBackward(dqkv, dout, probs, qkv, mask, bsz, s, heads, c / heads, scale, dropout);
    }

    private void probsShape(String op, Tensor probs, long bsz, int heads, long s) {
        if (probs == null) return;
        f32(op, "probs", probs);
        check(probs.numel() == bsz * heads * s * s, op, "probs " + shape(probs) + " is not [" + bsz + "," + heads + ","
                + s + "," + s + "]");
    }

    private long[] attentionDims(String op, Tensor qkv, int heads, Tensor mask) {
        f32(op, "qkv", qkv);
        check(qkv.rank() == 3 && qkv.dim(2) % 3 == 0, op, "qkv must be [B, S, 3*H*D], got " + shape(qkv));
        long c = qkv.dim(2) / 3;
        check(heads > 0 && c % heads == 0, op, "hidden " + c + " is not divisible by " + heads + " heads");
        if (mask != null) {
            check(mask.dtype() == DType.I32 && mask.numel() == qkv.dim(0) * qkv.dim(1), op, "mask must be i32 ["
                    + qkv.dim(0) + "," + qkv.dim(1) + "], got " + mask);
            onDevice(op, "mask", mask);
        }
        return new long[] {qkv.dim(0), qkv.dim(1), c};
    }

    // ---------------------------------------------------------------- embeddings

    /**
     * out [B, S, C] = wte[ids] + wpe[pos] + wtt[type]. ids [B, S] i32; posIds null means 0..S-1;
     * typeIds null means type 0; wtt may be null (no type table). An id outside its table throws
     * an error naming the batch row and position.
     */
    public final void embeddingForward(Tensor out, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe,
            Tensor wtt) {
        String op = "embeddingForward";
        long[] d = embeddingDims(op, ids, posIds, typeIds, wte, wpe, wtt);
        f32(op, "out", out);
        check(out.numel() == d[0] * d[1] * d[2], op, "out " + shape(out) + " is not [B, S, " + d[2] + "]");
        int st = kEmbeddingForward(out, ids, posIds, typeIds, wte, wpe, wtt, d[0], d[1], d[2]);
        if (st > 0) {
            long t = st - 1;
            throw new IllegalArgumentException(op + ": token " + (t % d[1]) + " of sequence " + (t / d[1])
                    + " has an id, position or type outside its table (id " + (ids.device().isHostAccessible() ? ids.getInt(t) : "on " + ids.device()) + ", vocab "
                    + wte.dim(0) + ", positions " + wpe.dim(0) + (wtt != null ? ", types " + wtt.dim(0) : "") + ")");
        }
    }

    /** dwte, dwpe, dwtt += (each null when frozen) from dout [B, S, C]. */
    public final void embeddingBackward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor posIds,
            Tensor typeIds, Tensor wte, Tensor wpe, Tensor wtt) {
        String op = "embeddingBackward";
        long[] d = embeddingDims(op, ids, posIds, typeIds, wte, wpe, wtt);
        f32(op, "dout", dout);
        check(dout.numel() == d[0] * d[1] * d[2], op, "dout " + shape(dout) + " is not [B, S, " + d[2] + "]");
        if (dwte != null) sameShape(op, "dwte", dwte, wte);
        if (dwpe != null) sameShape(op, "dwpe", dwpe, wpe);
        if (dwtt != null) {
            check(wtt != null, op, "dwtt given without a type table");
            sameShape(op, "dwtt", dwtt, wtt);
        }
        kEmbeddingBackward(dwte, dwpe, dwtt, dout, ids, posIds, typeIds, d[0], d[1], d[2]);
    }

    private long[] embeddingDims(String op, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe,
            Tensor wtt) {
        check(ids.dtype() == DType.I32 && ids.rank() == 2, op, "ids must be i32 [B, S], got " + ids);
        onDevice(op, "ids", ids);
        for (Tensor t : new Tensor[] {posIds, typeIds})
            if (t != null) {
                check(t.dtype() == DType.I32 && Arrays.equals(t.shape(), ids.shape()), op,
                        "position/type ids must be i32 " + shape(ids) + ", got " + t);
                onDevice(op, "ids", t);
            }
        f32(op, "wte", wte);
        f32(op, "wpe", wpe);
        check(wte.rank() == 2 && wpe.rank() == 2 && wpe.dim(1) == wte.dim(1), op, "wte " + shape(wte) + " and wpe "
                + shape(wpe) + " must be [rows, C] with one C");
        if (wtt != null) {
            f32(op, "wtt", wtt);
            check(wtt.rank() == 2 && wtt.dim(1) == wte.dim(1), op, "wtt " + shape(wtt) + " must be [types, " + wte.dim(1) + "]");
        }
        return new long[] {ids.dim(0), ids.dim(1), wte.dim(1)};
    }

    // ---------------------------------------------------------------- pooling

    /** out [B, C] = mean of x [B, S, C] over real tokens (mask [B, S] i32, 1 real; null: all). */
    public final void meanPoolForward(Tensor out, Tensor x, Tensor mask) {
        poolChecks("meanPoolForward", x, out, mask);
        kMeanPoolForward(out, x, mask, x.dim(0), x.dim(1), x.dim(2));
    }

    /** dx [B, S, C] (overwritten) from dout [B, C]: each real token gets dout / its sequence's count. */
    public final void meanPoolBackward(Tensor dx, Tensor dout, Tensor mask) {
        poolChecks("meanPoolBackward", dx, dout, mask);
        kMeanPoolBackward(dx, dout, mask, dx.dim(0), dx.dim(1), dx.dim(2));
    }

    /** tokens [B, S, C], pooled [B, C], mask i32 [B, S] or null. */
    private void poolChecks(String op, Tensor tokens, Tensor pooled, Tensor mask) {
        f32(op, "tokens", tokens);
        check(tokens.rank() == 3, op, "tokens must be [B, S, C], got " + shape(tokens));
        vector(op, "pooled", pooled, tokens.dim(0) * tokens.dim(2));
        if (mask != null) {
            check(mask.dtype() == DType.I32 && mask.numel() == tokens.dim(0) * tokens.dim(1), op,
                    "mask must be i32 [B, S], got " + mask);
            onDevice(op, "mask", mask);
        }
    }

    // ---------------------------------------------------------------- losses

    /**
     * Softmax cross-entropy: losses [N] per row, returns the mean over rows whose label is >= 0
     * (label < 0 is ignored, as PyTorch's ignore_index).
     */
    public final float crossEntropyForward(Tensor losses, Tensor logits, Tensor labels) {
        String op = "crossEntropyForward";
        long n = rows(logits);
        labels(op, labels, n);
        vector(op, "losses", losses, n);
        float[] mean = new float[1];
        int st = kCrossEntropyForward(losses, mean, logits, labels, n, cols(logits));
        if (st > 0)
            throw new IllegalArgumentException(op + ": label " + labels.getInt(st - 1) + " of row " + (st - 1)
                    + " is not a class of " + cols(logits));
        return mean[0];
    }

    /** dlogits = dloss (softmax(logits) - onehot(label)) / counted rows. */
    public final void crossEntropyBackward(Tensor dlogits, Tensor logits, Tensor labels, float dloss) {
        String op = "crossEntropyBackward";
        sameShape(op, "dlogits", dlogits, logits);
        labels(op, labels, rows(logits));
        kCrossEntropyBackward(dlogits, logits, labels, rows(logits), cols(logits), dloss);
    }

    /** Mean squared error over pred and target of one element count. */
    public final float mseForward(Tensor pred, Tensor target) {
        sameShape("mseForward", "target", target, pred);
        return kMseForward(pred, target, pred.numel());
    }

    public final void mseBackward(Tensor dpred, Tensor pred, Tensor target, float dloss) {
        sameShape("mseBackward", "target", target, pred);
        sameShape("mseBackward", "dpred", dpred, pred);
        kMseBackward(dpred, pred, target, pred.numel(), dloss);
    }

    private void labels(String op, Tensor labels, long n) {
        check(labels.dtype() == DType.I32 && labels.numel() == n, op, "labels must be i32 [" + n + "], got " + labels);
        onDevice(op, "labels", labels);
    }

    // ---------------------------------------------------------------- optimizer

    /** One AdamW step (PyTorch semantics) on param with grad and moments m, v; step counts from 1. */
    public final void adamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWConfig cfg, long step) {
        adamwStep(param, grad, m, v, cfg, step, 1f);
    }

    /** As above on gradScale * grad (gradient clipping without rescaling the gradient tensors). */
    public final void adamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWConfig cfg, long step, float gradScale) {
        String op = "adamwStep";
        f32(op, "param", param);
        sameShape(op, "grad", grad, param);
        sameShape(op, "m", m, param);
        sameShape(op, "v", v, param);
        check(step >= 1, op, "step counts from 1, got " + step);
        kAdamwStep(param, grad, m, v, param.numel(), cfg, step, gradScale);
    }

    /**
     * One AdamW step for many tensors sharing a config: each entry {param, grad, m, v}. A device
     * backend runs them all in one launch; the result is that of {@link #adamwStep} on each.
     */
    public final void adamwStep(java.util.List<Tensor[]> tensors, AdamWConfig cfg, long step, float gradScale) {
        for (Tensor[] t : tensors) {
            check(t.length == 4, "adamwStep", "each entry is {param, grad, m, v}");
            for (int i = 0; i < 4; i++) sameShape("adamwStep", new String[] {"param", "grad", "m", "v"}[i], t[i], t[0]);
        }
        check(step >= 1, "adamwStep", "step counts from 1, got " + step);
        if (!tensors.isEmpty()) kAdamwStepMany(tensors, cfg, step, gradScale);
    }

    protected void kAdamwStepMany(java.util.List<Tensor[]> tensors, AdamWConfig cfg, long step, float gradScale) {
        for (Tensor[] t : tensors) kAdamwStep(t[0], t[1], t[2], t[3], t[0].numel(), cfg, step, gradScale);
    }

    /** Sum of squares over all elements of many tensors, in double (a global gradient norm in one reduction on a device). */
    public final double sumOfSquares(java.util.Collection<Tensor> xs) {
        for (Tensor x : xs) f32("sumOfSquares", "x", x);
        return kSumOfSquaresMany(xs);
    }

    protected double kSumOfSquaresMany(java.util.Collection<Tensor> xs) {
        double total = 0;
        for (Tensor x : xs) total += kSumOfSquares(x, x.numel());
        return total;
    }

    /** Sum of squares of a tensor's elements, accumulated in double (global gradient norms). */
    public final double sumOfSquares(Tensor x) {
        f32("sumOfSquares", "x", x);
        return kSumOfSquares(x, x.numel());
    }

    // ---------------------------------------------------------------- kernels (backend-specific)

    protected abstract void kGemm(boolean transA, boolean transB, long m, long n, long k, float alpha, Tensor a,
            long lda, Tensor b, long ldb, float beta, Tensor c, long ldc, Tensor bias);

    /**
     * C[m, n] = op(A) op(B) + scale * A2 op(B2) + beta C (+ bias), K extended by k2; A [m, k] row-major
     * (or [k, m] when transA), op(B) [k, n]; A2 [m, k2] row-major; op(B2) [k2, n].
     */
    protected abstract void kGemmAugmented(boolean transA, boolean transB, long m, long n, long k, Tensor a, Tensor b,
            long k2, Tensor a2, float scale, boolean transB2, Tensor b2, float beta, Tensor c, Tensor bias);

    protected abstract long kPackedSize(long out, long in);

    protected abstract long kBf16PackedSize(long k, long n);

    protected abstract void kBlockSparsePack(Tensor w, byte[] mask, boolean transposed, Tensor values, Tensor rowptr, Tensor colidx);

    protected abstract void kBlockLowRank(Tensor u, Tensor x, Tensor a);

    protected abstract void kBlockLowRankGradient(Tensor d, Tensor dy, BlockSparseWeight p, Tensor u, long r, float scale);

    protected abstract void kBlockSparseLinear(Tensor y, Tensor x, BlockSparseWeight p, Tensor bias, float beta, Tensor u, Tensor lt,
            float scale, boolean perBlock);

    protected abstract void kBf16Pack(Tensor w, boolean transposed, long k, long n, Tensor packed);

    protected abstract void kGemmBf16(long m, long n, long k, float alpha, Tensor a, Bf16Weight b, float beta, Tensor c, Tensor bias,
            Tensor a2, float scale2, boolean transB2, Tensor b2);

    protected abstract void kPackLinearWeight(Tensor w, long out, long in, Tensor packed);

    protected abstract void kLinearPacked(Tensor y, Tensor x, PackedWeight w, long rows, Tensor bias);

    protected abstract void kBiasBackward(Tensor dbias, Tensor dy, long rows, long cols);

    protected abstract void kLayernormForward(Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x,
            Tensor residual, Tensor gamma, Tensor beta, long rows, long cols, float eps);

    protected abstract void kLayernormBackward(Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor x,
            Tensor mean, Tensor rstd, Tensor gamma, long rows, long cols, boolean accumulate);

    protected abstract void kBiasGeluForward(Tensor out, Tensor x, Tensor bias, long rows, long cols);

    protected abstract void kBiasGeluBackward(Tensor dx, Tensor dbias, Tensor dy, Tensor x, Tensor bias, long rows,
            long cols);

    protected abstract void kSoftmaxForward(Tensor y, Tensor x, long rows, long cols);

    protected abstract void kSoftmaxBackward(Tensor dx, Tensor dy, Tensor y, long rows, long cols);

    protected abstract void kAttentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq,
            long heads, long headDim, float scale, Dropout dropout);

    protected abstract void kAttentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, Tensor mask,
            long batch, long seq, long heads, long headDim, float scale, Dropout dropout);

    protected abstract void kGroupDot(Tensor out, Tensor x, Tensor dx, long batch, long seq, long groups, long width);

    protected abstract void kDropout(Tensor out, Tensor in, long n, Dropout dropout, boolean accumulate);

    /** Returns 0, or 1 + the flat index of the first token with an out-of-table id. */
    protected abstract int kEmbeddingForward(Tensor out, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte,
            Tensor wpe, Tensor wtt, long batch, long seq, long dim);

    protected abstract void kEmbeddingBackward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids,
            Tensor posIds, Tensor typeIds, long batch, long seq, long dim);

    protected abstract void kMeanPoolForward(Tensor out, Tensor x, Tensor mask, long batch, long seq, long dim);

    protected abstract void kMeanPoolBackward(Tensor dx, Tensor dout, Tensor mask, long batch, long seq, long dim);

    /** Returns 0, or 1 + the first row whose label is not a class. */
    protected abstract int kCrossEntropyForward(Tensor losses, float[] mean, Tensor logits, Tensor labels, long n,
            long classes);

    protected abstract void kCrossEntropyBackward(Tensor dlogits, Tensor logits, Tensor labels, long n, long classes,
            float dloss);

    protected abstract float kMseForward(Tensor pred, Tensor target, long n);

    protected abstract void kMseBackward(Tensor dpred, Tensor pred, Tensor target, long n, float dloss);

    protected abstract void kAdamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, long n, AdamWConfig cfg,
            long step, float gradScale);

    protected abstract double kSumOfSquares(Tensor x, long n);

    // ---------------------------------------------------------------- checks

    protected static long rows(Tensor t) {
        return t.rank() == 0 ? 1 : t.numel() / Math.max(1, t.dim(-1));
    }

    protected static long cols(Tensor t) {
        return t.rank() == 0 ? 1 : t.dim(-1);
    }

    private static String shape(Tensor t) {
        return Arrays.toString(t.shape());
    }

    private static void check(boolean ok, String op, String message) {
        if (!ok) throw new IllegalArgumentException(op + ": " + message);
    }

    private void onDevice(String op, String name, Tensor t) {
        check(t.device().equals(device()), op, name + " is on " + t.device() + ", this backend runs on " + device());
        t.checkAlive();
    }

    private void f32(String op, String name, Tensor t) {
        check(t != null, op, name + " is required");
        check(t.dtype() == DType.F32, op, name + " must be f32, got " + t);
        onDevice(op, name, t);
    }

    private void sameShape(String op, String name, Tensor t, Tensor like) {
        f32(op, name, t);
        f32(op, "input", like);
        check(Arrays.equals(t.shape(), like.shape()), op, name + " " + shape(t) + " must have shape " + shape(like));
    }

    private void vector(String op, String name, Tensor t, long n) {
        f32(op, name, t);
        check(t.numel() == n, op, name + " has " + t.numel() + " elements, expected " + n);
    }
}
