package dev.topa.backend;

import static dev.topa.backend.Checks.check;
import static dev.topa.backend.Checks.cols;
import static dev.topa.backend.Checks.f32;
import static dev.topa.backend.Checks.onDevice;
import static dev.topa.backend.Checks.rows;
import static dev.topa.backend.Checks.sameShape;
import static dev.topa.backend.Checks.shape;
import static dev.topa.backend.Checks.vector;

import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.DeviceMemory;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Collection;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;

/**
 * The ops models call, one set per device. Each public method checks dtypes, shapes and devices
 * once, here, with an error that names the op and the tensor, then hands plain sizes to a kernel
 * hook ({@code k*}). A backend implements the required hooks (memory, copies and conversions, the
 * op families of {@link Op} marked required) and, optionally, the rest: each optional one it
 * implements it declares in {@link #supports}, and callers ask {@link #require} before a run.
 * Linear layers are not spelled here: a weight format ({@link LinearWeight}) owns its products and
 * calls the format hooks below.
 *
 * <p>Matrices: a tensor used as a matrix is read as [numel / last, last], so [B, S, C] activations
 * need no reshape. Gradient outputs documented as "+=" accumulate; all other outputs are
 * overwritten and never read (callers may pass uninitialised memory).
 */
public abstract class Backend implements AutoCloseable {

    // ================================================================ identity and capabilities

    public abstract Device device();

    /** A short name such as {@code cpu-avx512}; packed weights record it (a pack is one backend's layout). */
    public abstract String name();

    /** Whether this backend runs op; the required ones always, the optional ones when the backend declares them. */
    public boolean supports(Op op) {
        return op.required();
    }

    /**
     * Whether gradient norms (clipScale's sum of squares) and losses are summed in double: true here
     * and on CUDA; a device without double precision sums in float, where a square past ~1.8e19
     * overflows and the step is taken as non-finite.
     */
    public boolean sumsInDouble() {
        return true;
    }

    /** Fails, naming every missing op, when this backend does not run all of ops: call it before a run starts. */
    public final void require(Collection<Op> ops, String what) {
        Set<Op> missing = EnumSet.noneOf(Op.class);
        for (Op op : ops) if (!supports(op)) missing.add(op);
        if (missing.isEmpty()) return;
        StringBuilder sb = new StringBuilder();
        for (Op op : missing) sb.append(sb.isEmpty() ? "" : "; ").append(op.description()).append(" (").append(op.label()).append(')');
        throw new UnsupportedOperationException(what + " needs what " + name() + " does not support: " + sb);
    }

    /**
     * An optional op used: fails unless this backend declares it. Every optional op's entry point
     * calls it, so a declaration and the kernels cannot disagree, and a device's capabilities can be
     * checked with the CPU standing in ({@code CpuBackend.without}).
     */
    protected final void need(Op op, String what) {
        if (!supports(op)) throw unsupported(op, what);
    }

    /** Milliseconds of call, the median of 5 after 2 warm-ups, the device synchronized around each (what a measured choice times). */
    public final double medianMs(Runnable call) {
        double[] t = new double[5];
        for (int i = -2; i < t.length; i++) {
            synchronize();
            long t0 = System.nanoTime();
            call.run();
            synchronize();
            if (i >= 0) t[i] = (System.nanoTime() - t0) * 1e-6;
        }
        Arrays.sort(t);
        return t[t.length / 2];
    }

    public MemoryTracker memory() {
        return MemoryTracker.of(device());
    }

    @Override
    public void close() {}

    /** Waits until every op issued so far has finished (a device backend queues them; the CPU's run in the call). */
    public void synchronize() {}

    // ================================================================ memory

    /** The device's raw memory for scopes and arenas, or null when this backend computes in host memory. */
    protected DeviceMemory deviceMemory() {
        return null;
    }

    /** A scope for long-lived tensors of a category (weights, gradients, optimizer state) in this backend's memory. */
    public final TensorScope scope(String name, MemoryCategory category) {
        return new TensorScope(name, category, deviceMemory());
    }

    /** A per-step activation arena in this backend's memory. */
    public final StepArena stepArena(String name) {
        return deviceMemory() == null ? new StepArena(name) : new StepArena(name, deviceMemory());
    }

    // ================================================================ copies and conversions

    /** t = 0 (any dtype). */
    public final void zero(Tensor t) {
        onDevice(this, "zero", "t", t);
        if (t.byteSize() > 0) kZero(t);
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
    public final Tensor copyOf(Tensor src, TensorAllocator alloc) {
        Tensor t = alloc.allocate(src.category(), src.dtype(), src.shape());
        copy(t, src);
        return t;
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

    // ================================================================ matrix products

    /** C = alpha op(A) op(B) + beta C + bias; op(A) [M,K], op(B) [K,N], C [M,N], bias [N] or null. */
    public final void gemm(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c, Tensor bias) {
        long[] mnk = gemmShape("gemm", transA, transB, a, b, c, bias);
        kGemm(transA, transB, mnk[0], mnk[1], mnk[2], alpha, a, cols(a), b, cols(b), beta, c, mnk[1], bias);
    }

    /**
     * C = A op(B) + scale A2 op(B2) + beta C + bias in one pass over C: K extended by the r
     * columns of A2 [M, r] (op(B2) [r, N]: B2 [N, r] when transB2, else [r, N]). A LoRA product:
     * y = x W^T + s (x A^T) B^T, and its input gradient dx = dy W + s (dy B) A.
     */
    public final void gemmLowRank(boolean transB, Tensor a, Tensor b, Tensor a2, float scale, boolean transB2, Tensor b2,
            float beta, Tensor c, Tensor bias) {
        String op = "gemmLowRank";
        long[] mnk = gemmShape(op, false, transB, a, b, c, bias);
        f32(this, op, "A2", a2);
        f32(this, op, "B2", b2);
        long r = cols(a2);
        check(rows(a2) == mnk[0], op, "A2 " + shape(a2) + " has " + rows(a2) + " rows, C has " + mnk[0]);
        check(transB2 ? rows(b2) == mnk[1] && cols(b2) == r : rows(b2) == r && cols(b2) == mnk[1], op,
                "B2 " + shape(b2) + " does not match A2 " + shape(a2) + " and N = " + mnk[1]);
        kGemmAugmented(transB, mnk[0], mnk[1], mnk[2], a, b, r, a2, scale, transB2, b2, beta, c, bias);
    }

    private long[] gemmShape(String op, boolean transA, boolean transB, Tensor a, Tensor b, Tensor c, Tensor bias) {
        f32(this, op, "A", a);
        f32(this, op, "B", b);
        f32(this, op, "C", c);
        long m = transA ? cols(a) : rows(a), k = transA ? rows(a) : cols(a);
        long kb = transB ? cols(b) : rows(b), n = transB ? rows(b) : cols(b);
        check(k == kb, op, "inner dimensions differ: op(A) is [" + m + "," + k + "], op(B) is [" + kb + "," + n + "]");
        check(rows(c) == m && cols(c) == n, op, "C " + shape(c) + " is not [" + m + "," + n + "]");
        if (bias != null) vector(this, op, "bias", bias, n);
        return new long[] {m, n, k};
    }

    /** dbias[N] += column sums of dy [.., N]. */
    public final void biasBackward(Tensor dbias, Tensor dy) {
        f32(this, "biasBackward", "dy", dy);
        vector(this, "biasBackward", "dbias", dbias, cols(dy));
        kBiasBackward(dbias, dy, rows(dy), cols(dy));
    }

    /** out = in^T + beta out for a 2-D in [rows, cols] and out [cols, rows]: small factors (LoRA's A and B), not activations. */
    public final void transpose(Tensor out, Tensor in, float beta) {
        f32(this, "transpose", "out", out);
        f32(this, "transpose", "in", in);
        check(in.rank() == 2 && out.rank() == 2 && out.dim(0) == in.dim(1) && out.dim(1) == in.dim(0), "transpose", "out " + shape(out)
                + " is not the transpose of in " + shape(in));
        kTranspose(out, in, in.dim(0), in.dim(1), beta);
    }

    /** y[i, :] = row for every row of y: the output of a linear layer left with no inputs. */
    public final void broadcastRows(Tensor y, Tensor row) {
        f32(this, "broadcastRows", "y", y);
        vector(this, "broadcastRows", "row", row, cols(y));
        kBroadcastRows(y, row, rows(y), cols(y));
    }

    /**
     * t[i, j] = 0 outside the diagonal blocks of a blocks x blocks grid over t [rows, cols] (a
     * block-diagonal LoRA B stays block-diagonal).
     */
    public final void zeroOffDiagonal(Tensor t, int blocks) {
        f32(this, "zeroOffDiagonal", "t", t);
        check(t.rank() == 2 && t.dim(0) % blocks == 0 && t.dim(1) % blocks == 0, "zeroOffDiagonal",
                shape(t) + " is not divisible into " + blocks + " x " + blocks + " blocks");
        kZeroOffDiagonal(t, t.dim(0), t.dim(1), blocks);
    }

    // ================================================================ LayerNorm

    /**
     * out = LayerNorm(x + residual) gamma + beta over the last dim; residual may be null. mean and
     * rstd [rows] are saved for backward; sum (may be null) receives x + residual, the input that
     * backward needs when the residual is fused.
     */
    public final void layernormForward(Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x, Tensor residual, Tensor gamma,
            Tensor beta, float eps) {
        String op = "layernormForward";
        long r = rows(x), c = cols(x);
        sameShape(this, op, "out", out, x);
        if (residual != null) sameShape(this, op, "residual", residual, x);
        if (sum != null) sameShape(this, op, "sum", sum, x);
        vector(this, op, "gamma", gamma, c);
        vector(this, op, "beta", beta, c);
        vector(this, op, "mean", mean, r);
        vector(this, op, "rstd", rstd, r);
        check(eps > 0, op, "eps must be > 0, got " + eps);
        kLayernormForward(out, mean, rstd, sum, x, residual, gamma, beta, r, c, eps);
    }

    /** dx = dLN/dx (accumulate: dx +=); dgamma, dbeta += (null when frozen). */
    public final void layernormBackward(Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor x, Tensor mean, Tensor rstd,
            Tensor gamma, boolean accumulate) {
        String op = "layernormBackward";
        long r = rows(x), c = cols(x);
        sameShape(this, op, "dx", dx, x);
        sameShape(this, op, "dy", dy, x);
        vector(this, op, "gamma", gamma, c);
        if (dgamma != null) vector(this, op, "dgamma", dgamma, c);
        if (dbeta != null) vector(this, op, "dbeta", dbeta, c);
        vector(this, op, "mean", mean, r);
        vector(this, op, "rstd", rstd, r);
        kLayernormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, r, c, accumulate);
    }

    // ================================================================ activations

    /** out = GELU(x + bias), exact erf form; bias [cols] may be null; out may be x. */
    public final void biasGeluForward(Tensor out, Tensor x, Tensor bias) {
        sameShape(this, "biasGeluForward", "out", out, x);
        if (bias != null) vector(this, "biasGeluForward", "bias", bias, cols(x));
        kBiasGeluForward(out, x, bias, rows(x), cols(x));
    }

    /** dx = dy GELU'(x + bias) (dx may be dy); dbias += column sums of dx (null when frozen). */
    public final void biasGeluBackward(Tensor dx, Tensor dbias, Tensor dy, Tensor x, Tensor bias) {
        String op = "biasGeluBackward";
        sameShape(this, op, "dx", dx, x);
        sameShape(this, op, "dy", dy, x);
        if (bias != null) vector(this, op, "bias", bias, cols(x));
        if (dbias != null) vector(this, op, "dbias", dbias, cols(x));
        kBiasGeluBackward(dx, dbias, dy, x, bias, rows(x), cols(x));
    }

    /** Row softmax ({@link Op#SOFTMAX}). */
    public final void softmaxForward(Tensor y, Tensor x) {
        need(Op.SOFTMAX, "softmaxForward");
        sameShape(this, "softmaxForward", "y", y, x);
        kSoftmaxForward(y, x, rows(x), cols(x));
    }

    public final void softmaxBackward(Tensor dx, Tensor dy, Tensor y) {
        need(Op.SOFTMAX, "softmaxBackward");
        sameShape(this, "softmaxBackward", "dx", dx, y);
        sameShape(this, "softmaxBackward", "dy", dy, y);
        kSoftmaxBackward(dx, dy, y, rows(y), cols(y));
    }

    // ================================================================ attention

    /** Multi-head attention without dropout; see {@link #attentionForward(Tensor, Tensor, Tensor, Tensor, int, float, Dropout)}. */
    public final void attentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, int heads, float scale) {
        attentionForward(out, probs, qkv, mask, heads, scale, Dropout.NONE);
    }

    /**
     * Multi-head attention over a fused projection qkv [B, S, 3*H*D] (Q, K, V side by side on the
     * last dim): out [B, S, H*D] = dropout(softmax(scale Q K^T + padding mask)) V per head. mask [B, S]
     * i32 (1 real token, 0 padding) or null; probs [B, H, S, S] receives the probabilities before
     * dropout (or null); dropout's element index runs over [B, H, S, S].
     */
    public final void attentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, int heads, float scale, Dropout dropout) {
        String op = "attentionForward";
        long[] d = attentionDims(op, qkv, heads, mask);
        long bsz = d[0], s = d[1], c = d[2];
        f32(this, op, "out", out);
        check(out.numel() == bsz * s * c, op, "out " + shape(out) + " is not [" + bsz + "," + s + "," + c + "]");
        probsShape(op, probs, bsz, heads, s, dropout);
        kAttentionForward(out, probs, qkv, mask, bsz, s, heads, c / heads, scale, dropout);
    }

    /**
     * Attention over sequences packed end to end without padding: qkv [N, 3*H*D] and out [N, H*D]
     * (or [1, N, ...]), sequence i the next lengths[i] rows; each attends only to itself.
     */
    public final void attentionForwardPacked(Tensor out, Tensor qkv, int[] lengths, int heads, float scale) {
        String op = "attentionForwardPacked";
        need(Op.ATTENTION_PACKED, op);
        f32(this, op, "qkv", qkv);
        f32(this, op, "out", out);
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

    /**
     * dqkv [B, S, 3*H*D] (overwritten) from dout. probs: those forward saved, or null to recompute
     * them per head from qkv and mask (flash-style: no [B, H, S, S] tensor lives between forward and
     * backward); dropout the same draw as forward's.
     */
    public final void attentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, Tensor mask, int heads, float scale,
            Dropout dropout) {
        String op = "attentionBackward";
        long[] d = attentionDims(op, qkv, heads, mask);
        long bsz = d[0], s = d[1], c = d[2];
        sameShape(this, op, "dqkv", dqkv, qkv);
        f32(this, op, "dout", dout);
        check(dout.numel() == bsz * s * c, op, "dout " + shape(dout) + " is not [" + bsz + "," + s + "," + c + "]");
        probsShape(op, probs, bsz, heads, s, dropout);
        kAttentionBackward(dqkv, dout, probs, qkv, mask, bsz, s, heads, c / heads, scale, dropout);
    }

    private void probsShape(String op, Tensor probs, long bsz, int heads, long s, Dropout dropout) {
        if (dropout.active()) need(Op.ATTENTION_DROPOUT, op);
        if (probs == null) return;
        need(Op.ATTENTION_PROBS, op);
        f32(this, op, "probs", probs);
        check(probs.numel() == bsz * heads * s * s, op, "probs " + shape(probs) + " is not [" + bsz + "," + heads + "," + s + "," + s + "]");
    }

    private long[] attentionDims(String op, Tensor qkv, int heads, Tensor mask) {
        f32(this, op, "qkv", qkv);
        check(qkv.rank() == 3 && qkv.dim(2) % 3 == 0, op, "qkv must be [B, S, 3*H*D], got " + shape(qkv));
        long c = qkv.dim(2) / 3;
        check(heads > 0 && c % heads == 0, op, "hidden " + c + " is not divisible by " + heads + " heads");
        if (mask != null) {
            check(mask.dtype() == DType.I32 && mask.numel() == qkv.dim(0) * qkv.dim(1), op, "mask must be i32 [" + qkv.dim(0) + ","
                    + qkv.dim(1) + "], got " + mask);
            onDevice(this, op, "mask", mask);
        }
        return new long[] {qkv.dim(0), qkv.dim(1), c};
    }

    // ================================================================ dropout

    /**
     * out = (accumulate ? out : 0) + dropout(in): the forward of a dropout site, and with the same
     * draw its backward (in = dy). out may be in.
     */
    public final void dropout(Tensor out, Tensor in, Dropout dropout, boolean accumulate) {
        f32(this, "dropout", "in", in);
        sameShape(this, "dropout", "out", out, in);
        kDropout(out, in, in.numel(), dropout, accumulate);
    }

    // ================================================================ embeddings and pooling

    /**
     * out [B, S, C] = wte[ids] + wpe[pos] + wtt[type]. ids [B, S] i32; posIds null means 0..S-1;
     * typeIds null means type 0; wtt may be null (no type table). An id outside its table throws
     * an error naming the batch row and position where the ids are host memory; a device does not
     * read them back and gives that token a NaN row (callers check host ids before the upload).
     */
    public final void embeddingForward(Tensor out, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe, Tensor wtt) {
        String op = "embeddingForward";
        long[] d = embeddingDims(op, ids, posIds, typeIds, wte, wpe, wtt);
        f32(this, op, "out", out);
        check(out.numel() == d[0] * d[1] * d[2], op, "out " + shape(out) + " is not [B, S, " + d[2] + "]");
        int st = kEmbeddingForward(out, ids, posIds, typeIds, wte, wpe, wtt, d[0], d[1], d[2]);
        if (st > 0) {
            long t = st - 1;
            throw new IllegalArgumentException(op + ": token " + (t % d[1]) + " of sequence " + (t / d[1])
                    + " has an id, position or type outside its table (id " + (ids.device().isHostAccessible() ? ids.getInt(t) : "on "
                    + ids.device()) + ", vocab " + wte.dim(0) + ", positions " + wpe.dim(0) + (wtt != null ? ", types " + wtt.dim(0) : "") + ")");
        }
    }

    /** dwte, dwpe, dwtt += (each null when frozen) from dout [B, S, C]. */
    public final void embeddingBackward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor posIds, Tensor typeIds,
            Tensor wte, Tensor wpe, Tensor wtt) {
        String op = "embeddingBackward";
        long[] d = embeddingDims(op, ids, posIds, typeIds, wte, wpe, wtt);
        f32(this, op, "dout", dout);
        check(dout.numel() == d[0] * d[1] * d[2], op, "dout " + shape(dout) + " is not [B, S, " + d[2] + "]");
        if (dwte != null) sameShape(this, op, "dwte", dwte, wte);
        if (dwpe != null) sameShape(this, op, "dwpe", dwpe, wpe);
        if (dwtt != null) {
            check(wtt != null, op, "dwtt given without a type table");
            sameShape(this, op, "dwtt", dwtt, wtt);
        }
        kEmbeddingBackward(dwte, dwpe, dwtt, dout, ids, posIds, typeIds, d[0], d[1], d[2]);
    }

    private long[] embeddingDims(String op, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe, Tensor wtt) {
        check(ids.dtype() == DType.I32 && ids.rank() == 2, op, "ids must be i32 [B, S], got " + ids);
        onDevice(this, op, "ids", ids);
        for (Tensor t : new Tensor[] {posIds, typeIds})
            if (t != null) {
                check(t.dtype() == DType.I32 && Arrays.equals(t.shape(), ids.shape()), op, "position/type ids must be i32 " + shape(ids)
                        + ", got " + t);
                onDevice(this, op, "ids", t);
            }
        if (posIds != null) need(Op.POSITION_IDS, op);
        // without position ids token s takes row s: backward's kernels index dwpe by it unguarded
        else check(ids.dim(1) <= wpe.dim(0), op, "sequences of " + ids.dim(1) + " tokens, but wpe has " + wpe.dim(0) + " positions");
        f32(this, op, "wte", wte);
        f32(this, op, "wpe", wpe);
        check(wte.rank() == 2 && wpe.rank() == 2 && wpe.dim(1) == wte.dim(1), op, "wte " + shape(wte) + " and wpe " + shape(wpe)
                + " must be [rows, C] with one C");
        if (wtt != null) {
            f32(this, op, "wtt", wtt);
            check(wtt.rank() == 2 && wtt.dim(1) == wte.dim(1), op, "wtt " + shape(wtt) + " must be [types, " + wte.dim(1) + "]");
        }
        return new long[] {ids.dim(0), ids.dim(1), wte.dim(1)};
    }

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

    private void poolChecks(String op, Tensor tokens, Tensor pooled, Tensor mask) {
        f32(this, op, "tokens", tokens);
        check(tokens.rank() == 3, op, "tokens must be [B, S, C], got " + shape(tokens));
        vector(this, op, "pooled", pooled, tokens.dim(0) * tokens.dim(2));
        if (mask != null) {
            check(mask.dtype() == DType.I32 && mask.numel() == tokens.dim(0) * tokens.dim(1), op, "mask must be i32 [B, S], got " + mask);
            onDevice(this, op, "mask", mask);
        }
    }

    // ================================================================ losses

    /**
     * Softmax cross-entropy: losses [N] per row, returns the mean over rows whose label is >= 0
     * (label < 0 is ignored, as PyTorch's ignore_index). A read-back on a device; a training step
     * keeps the mean there ({@link #crossEntropyForward(Tensor, Tensor, Tensor, Tensor)}).
     */
    public final float crossEntropyForward(Tensor losses, Tensor logits, Tensor labels) {
        try (TensorScope s = scope("loss", MemoryCategory.WORKSPACE)) {
            Tensor mean = s.allocate(DType.F32, 1);
            crossEntropyForward(losses, logits, labels, mean);
            return download(mean)[0];
        }
    }

    /**
     * As above with the mean written to mean [1] on this backend's device, nothing read back. A label
     * outside the classes throws on the host; on a device it makes that row's loss NaN (callers that
     * hold the labels on the host check them before the upload).
     */
    public final void crossEntropyForward(Tensor losses, Tensor logits, Tensor labels, Tensor mean) {
        String op = "crossEntropyForward";
        f32(this, op, "logits", logits);
        long n = rows(logits);
        labels(op, labels, n);
        vector(this, op, "losses", losses, n);
        vector(this, op, "mean", mean, 1);
        int st = kCrossEntropyForward(losses, mean, logits, labels, n, cols(logits));
        if (st > 0)
            throw new IllegalArgumentException(op + ": label " + labelAt(labels, st - 1) + " of row " + (st - 1) + " is not a class of "
                    + cols(logits));
    }

    /** dlogits = dloss (softmax(logits) - onehot(label)) / counted rows. */
    public final void crossEntropyBackward(Tensor dlogits, Tensor logits, Tensor labels, float dloss) {
        String op = "crossEntropyBackward";
        sameShape(this, op, "dlogits", dlogits, logits);
        labels(op, labels, rows(logits));
        kCrossEntropyBackward(dlogits, logits, labels, rows(logits), cols(logits), dloss);
    }

    /** Mean squared error over pred and target of one element count (a read-back on a device). */
    public final float mseForward(Tensor pred, Tensor target) {
        try (TensorScope s = scope("loss", MemoryCategory.WORKSPACE)) {
            Tensor mean = s.allocate(DType.F32, 1);
            mseForward(pred, target, mean);
            return download(mean)[0];
        }
    }

    /** As above into mean [1] on this backend's device, nothing read back. */
    public final void mseForward(Tensor pred, Tensor target, Tensor mean) {
        sameShape(this, "mseForward", "target", target, pred);
        vector(this, "mseForward", "mean", mean, 1);
        kMseForward(pred, target, pred.numel(), mean);
    }

    public final void mseBackward(Tensor dpred, Tensor pred, Tensor target, float dloss) {
        sameShape(this, "mseBackward", "target", target, pred);
        sameShape(this, "mseBackward", "dpred", dpred, pred);
        kMseBackward(dpred, pred, target, pred.numel(), dloss);
    }

    /**
     * Knowledge distillation from a teacher's outputs, [B, C] each: for C >= 2 Hinton's
     * T^2 KL(softmax(teacher / T) || softmax(student / T)), for C = 1 (regression) the squared error
     * (student - teacher)^2; the mean over the B rows. A read-back on a device.
     */
    public final float distillationForward(Tensor student, Tensor teacher, float temperature) {
        sameShape(this, "distillationForward", "teacher", teacher, student);
        check(temperature > 0, "distillationForward", "temperature must be positive, got " + temperature);
        float[] s = download(student), t = download(teacher);
        int c = (int) cols(student), b = (int) rows(student);
        double total = 0;
        for (int i = 0; i < b; i++) {
            if (c == 1) {
                total += (s[i] - (double) t[i]) * (s[i] - (double) t[i]);
                continue;
            }
            double[] ps = softmax(s, i * c, c, temperature), pt = softmax(t, i * c, c, temperature);
            for (int j = 0; j < c; j++) if (pt[j] > 0) total += pt[j] * (Math.log(pt[j]) - Math.log(Math.max(ps[j], Double.MIN_NORMAL)));
        }
        return (float) ((c == 1 ? 1 : temperature * temperature) * total / Math.max(1, b));
    }

    /**
     * dStudent += weight x the gradient of {@link #distillationForward}: T (softmax(student / T) -
     * softmax(teacher / T)) / B, or 2 (student - teacher) / B for regression. A device computes it
     * there (no read-back in a training step).
     */
    public final void distillationBackward(Tensor dStudent, Tensor student, Tensor teacher, float temperature, float weight) {
        sameShape(this, "distillationBackward", "teacher", teacher, student);
        sameShape(this, "distillationBackward", "dStudent", dStudent, student);
        check(temperature > 0, "distillationBackward", "temperature must be positive, got " + temperature);
        kDistillationBackward(dStudent, student, teacher, rows(student), cols(student), temperature, weight);
    }

    /** The head's [B, C] values on the host (in double); a device overrides it with its kernel. */
    protected void kDistillationBackward(Tensor dStudent, Tensor student, Tensor teacher, long rows, long cols, float temperature, float weight) {
        float[] s = download(student), t = download(teacher), d = download(dStudent);
        int c = (int) cols, b = (int) rows;
        for (int i = 0; i < b; i++) {
            if (c == 1) {
                d[i] += weight * 2f * (s[i] - t[i]) / b;
                continue;
            }
            double[] ps = softmax(s, i * c, c, temperature), pt = softmax(t, i * c, c, temperature);
            for (int j = 0; j < c; j++) d[i * c + j] += (float) (weight * temperature * (ps[j] - pt[j]) / b);
        }
        upload(dStudent, d);
    }

    /**
     * Hidden-state matching, the layer-wise half of distillation: the squared distance between a
     * student's and a teacher's hidden states [B, S, C], summed over the real tokens (mask [B, S] i32,
     * 1 real, 0 padding; null: every token) and divided by their count times C (the mean squared
     * error per element of a real token). A read-back on a device.
     */
    public final float hiddenMatchForward(Tensor student, Tensor teacher, Tensor mask) {
        hiddenMatchArguments("hiddenMatchForward", student, teacher, mask);
        float[] s = download(student), t = download(teacher);
        int[] m = mask == null ? null : downloadInts(mask);
        int c = (int) student.dim(2);
        double total = 0;
        long real = 0;
        for (int r = 0; r < s.length / c; r++) {
            if (m != null && m[r] == 0) continue;
            real++;
            for (int j = r * c; j < (r + 1) * c; j++) total += (s[j] - (double) t[j]) * (s[j] - (double) t[j]);
        }
        return real == 0 ? 0f : (float) (total / (real * c));
    }

    /** dStudent += weight x the gradient of {@link #hiddenMatchForward}: 2 (student - teacher) / (n C) on real tokens, nothing on padding. */
    public final void hiddenMatchBackward(Tensor dStudent, Tensor student, Tensor teacher, Tensor mask, float weight) {
        hiddenMatchArguments("hiddenMatchBackward", student, teacher, mask);
        sameShape(this, "hiddenMatchBackward", "dStudent", dStudent, student);
        kHiddenMatchBackward(dStudent, student, teacher, mask, weight);
    }

    private void hiddenMatchArguments(String op, Tensor student, Tensor teacher, Tensor mask) {
        f32(this, op, "student", student);
        check(student.rank() == 3, op, "hidden states must be [B, S, C], got " + student);
        sameShape(this, op, "teacher", teacher, student);
        if (mask != null)
            check(mask.dtype() == DType.I32 && mask.rank() == 2 && mask.dim(0) == student.dim(0) && mask.dim(1) == student.dim(1), op,
                    "mask must be i32 [" + student.dim(0) + ", " + student.dim(1) + "], got " + mask);
    }

    /**
     * On the host: the CPU's tensors in place (no copy per layer and step), a device's through
     * read-backs; a device overrides it with its kernel.
     */
    protected void kHiddenMatchBackward(Tensor dStudent, Tensor student, Tensor teacher, Tensor mask, float weight) {
        boolean host = dStudent.device().isHostAccessible() && student.device().isHostAccessible() && teacher.device().isHostAccessible();
        MemorySegment sm = host ? student.data() : MemorySegment.ofArray(download(student));
        MemorySegment tm = host ? teacher.data() : MemorySegment.ofArray(download(teacher));
        MemorySegment dm = host ? dStudent.data() : MemorySegment.ofArray(download(dStudent));
        int[] m = mask == null ? null : downloadInts(mask);
        long c = student.dim(2), rows = student.dim(0) * student.dim(1), real = 0;
        for (long r = 0; r < rows; r++) if (m == null || m[(int) r] != 0) real++;
        if (real == 0) return;
        float scale = (float) (2.0 * weight / ((double) real * c));
        ValueLayout.OfFloat f = ValueLayout.JAVA_FLOAT_UNALIGNED;
        for (long r = 0; r < rows; r++) {
            if (m != null && m[(int) r] == 0) continue;
            for (long j = r * c; j < (r + 1) * c; j++)
                dm.setAtIndex(f, j, dm.getAtIndex(f, j) + scale * (sm.getAtIndex(f, j) - tm.getAtIndex(f, j)));
        }
        if (!host) upload(dStudent, dm.toArray(f));
    }

    /** y += x, both f32 of one shape (a dropout of probability 0 that accumulates). */
    public final void accumulate(Tensor y, Tensor x) {
        f32(this, "accumulate", "x", x);
        sameShape(this, "accumulate", "y", y, x);
        kDropout(y, x, x.numel(), Dropout.NONE, true);
    }

    private static double[] softmax(float[] z, int at, int c, float temperature) {
        double mx = Double.NEGATIVE_INFINITY, sum = 0;
        for (int j = 0; j < c; j++) mx = Math.max(mx, z[at + j] / (double) temperature);
        double[] p = new double[c];
        for (int j = 0; j < c; j++) sum += p[j] = Math.exp(z[at + j] / (double) temperature - mx);
        for (int j = 0; j < c; j++) p[j] /= sum;
        return p;
    }

    private void labels(String op, Tensor labels, long n) {
        check(labels.dtype() == DType.I32 && labels.numel() == n, op, "labels must be i32 [" + n + "], got " + labels);
        onDevice(this, op, "labels", labels);
    }

    private String labelAt(Tensor labels, long i) {
        return labels.device().isHostAccessible() ? Integer.toString(labels.getInt(i)) : "(on " + labels.device() + ")";
    }

    // ================================================================ optimizer

    /** The slots of the state {@link #clipScale} keeps: f32 [CLIP_STATE], zeros before the first step. */
    public static final int CLIP_FIRST_BAD_STEP = 0, CLIP_BAD_LOSS = 1, CLIP_BAD_NORM = 2, CLIP_SCALE = 3, CLIP_STATE = 4;

    /**
     * Global-norm gradient clipping decided where the gradients live, nothing read back, so a
     * training step needs no host round trip: state[CLIP_SCALE] = min(1, maxNorm / ||grads||) (1
     * when maxNorm <= 0), the factor {@link #adamwStep(List, AdamWConfig, long, Tensor)} applies.
     * When the norm or loss[0] (the step's loss, or null) is not finite, the first such step is kept
     * with its loss and norm (CLIP_FIRST_BAD_STEP, CLIP_BAD_LOSS, CLIP_BAD_NORM) and the scale is 0
     * from then on: every later update is skipped until the caller reads the state and stops.
     */
    public final void clipScale(Collection<Tensor> grads, float maxNorm, Tensor loss, long step, Tensor state) {
        String op = "clipScale";
        vector(this, op, "state", state, CLIP_STATE);
        if (loss != null) f32(this, op, "loss", loss);
        check(step >= 1 && step < (1 << 24), op, "step must be in [1, 2^24) (kept exactly as an f32), got " + step);
        for (Tensor g : grads) f32(this, op, "grad", g);
        kClipScale(grads, maxNorm, loss, step, state);
    }

    /** One AdamW step (PyTorch semantics) on gradScale * grad (clipping without rescaling the gradients); step counts from 1. */
    public final void adamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWConfig cfg, long step, float gradScale) {
        adamwStep(List.<Tensor[]>of(new Tensor[] {param, grad, m, v}), cfg, step, gradScale);
    }

    /**
     * One AdamW step for many tensors sharing a config: each entry {param, grad, m, v}. A device
     * backend runs them all in one launch; the result is that of one step on each.
     */
    public final void adamwStep(List<Tensor[]> tensors, AdamWConfig cfg, long step, float gradScale) {
        adamwArguments(tensors, step);
        if (!tensors.isEmpty()) kAdamwStepMany(tensors, cfg, step, gradScale, null);
    }

    /** As above with the gradient scale read where it lies (scale [1] on this device, e.g. {@link #clipScale}'s); 0 leaves every tensor as it is. */
    public final void adamwStep(List<Tensor[]> tensors, AdamWConfig cfg, long step, Tensor scale) {
        adamwArguments(tensors, step);
        vector(this, "adamwStep", "scale", scale, 1);
        if (!tensors.isEmpty()) kAdamwStepMany(tensors, cfg, step, 1f, scale);
    }

    private void adamwArguments(List<Tensor[]> tensors, long step) {
        for (Tensor[] t : tensors) {
            check(t.length == 4, "adamwStep", "each entry is {param, grad, m, v}");
            f32(this, "adamwStep", "param", t[0]);
            for (int i = 1; i < 4; i++) sameShape(this, "adamwStep", new String[] {"param", "grad", "m", "v"}[i], t[i], t[0]);
        }
        check(step >= 1, "adamwStep", "step counts from 1, got " + step);
    }

    /** Sum of squares over all elements of many tensors, in double (a global gradient norm in one reduction on a device). */
    public final double sumOfSquares(Collection<Tensor> xs) {
        for (Tensor x : xs) f32(this, "sumOfSquares", "x", x);
        return kSumOfSquaresMany(xs);
    }

    public final double sumOfSquares(Tensor x) {
        return sumOfSquares(List.of(x));
    }

    // ================================================================ importance ({@link Op#IMPORTANCE})

    /**
     * out [B, G] = per example, the gradient of a multiplicative mask on each of G feature groups
     * of x [B, S, G*D] (heads of an attention context: D = head size; FFN neurons: D = 1), given
     * dx = dL/dx: the sum over tokens and the group's features of x * dx.
     */
    public final void groupDot(Tensor out, Tensor x, Tensor dx, int groups) {
        String op = "groupDot";
        need(Op.IMPORTANCE, op);
        f32(this, op, "x", x);
        sameShape(this, op, "dx", dx, x);
        check(x.rank() == 3 && groups > 0 && x.dim(2) % groups == 0, op, "x must be [B, S, G*D] with G = " + groups + ", got " + shape(x));
        vector(this, op, "out", out, x.dim(0) * groups);
        kGroupDot(out, x, dx, x.dim(0), x.dim(1), groups, x.dim(2) / groups);
    }

    /**
     * out [n/32, k/32] = per 32 x 32 block, the sum of w * g over it (w, g [n, k], both multiples of
     * 32): a block's first-order Taylor term when g = dL/dw.
     */
    public final void blockDot(Tensor out, Tensor w, Tensor g) {
        String op = "blockDot";
        need(Op.IMPORTANCE, op);
        f32(this, op, "w", w);
        sameShape(this, op, "g", g, w);
        int b = BlockSparseWeight.BLOCK;
        check(w.rank() == 2 && w.dim(0) % b == 0 && w.dim(1) % b == 0, op, "w must be [n, k], both multiples of " + b + ", got " + shape(w));
        vector(this, op, "out", out, w.dim(0) / b * (w.dim(1) / b));
        kBlockDot(out, w, g, w.dim(0), w.dim(1));
    }

    // ================================================================ required kernel hooks

    /** Host copies; a device backend overrides for its own memory. */
    protected void kCopy(Tensor dst, Tensor src, long bytes) {
        check(dst.device().isHostAccessible() && src.device().isHostAccessible(), "copy", "this backend copies host memory only");
        MemorySegment.copy(src.data(), 0, dst.data(), 0, bytes);
    }

    /** Host memory; a device backend overrides. */
    protected void kZero(Tensor t) {
        t.data().fill((byte) 0);
    }

    protected abstract void kConvert(Tensor dst, Tensor src, long n);

    protected abstract void kGemm(boolean transA, boolean transB, long m, long n, long k, float alpha, Tensor a, long lda, Tensor b, long ldb,
            float beta, Tensor c, long ldc, Tensor bias);

    /**
     * C[m, n] = A op(B) + scale * A2 op(B2) + beta C (+ bias), K extended by k2; A [m, k] and A2 [m, k2]
     * row-major; op(B) [k, n]; op(B2) [k2, n].
     */
    protected abstract void kGemmAugmented(boolean transB, long m, long n, long k, Tensor a, Tensor b, long k2, Tensor a2,
            float scale, boolean transB2, Tensor b2, float beta, Tensor c, Tensor bias);

    protected abstract void kBiasBackward(Tensor dbias, Tensor dy, long rows, long cols);

    protected abstract void kTranspose(Tensor out, Tensor in, long rows, long cols, float beta);

    protected abstract void kLayernormForward(Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x, Tensor residual, Tensor gamma,
            Tensor beta, long rows, long cols, float eps);

    protected abstract void kLayernormBackward(Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor x, Tensor mean, Tensor rstd,
            Tensor gamma, long rows, long cols, boolean accumulate);

    protected abstract void kBiasGeluForward(Tensor out, Tensor x, Tensor bias, long rows, long cols);

    protected abstract void kBiasGeluBackward(Tensor dx, Tensor dbias, Tensor dy, Tensor x, Tensor bias, long rows, long cols);

    /** probs null: not kept; dropout: {@link Op#ATTENTION_DROPOUT}; probs: {@link Op#ATTENTION_PROBS}. */
    protected abstract void kAttentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq, long heads,
            long headDim, float scale, Dropout dropout);

    protected abstract void kAttentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq,
            long heads, long headDim, float scale, Dropout dropout);

    protected abstract void kDropout(Tensor out, Tensor in, long n, Dropout dropout, boolean accumulate);

    /** Returns 0, or 1 + the flat index of the first token with an out-of-table id. posIds: {@link Op#POSITION_IDS}. */
    protected abstract int kEmbeddingForward(Tensor out, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe, Tensor wtt,
            long batch, long seq, long dim);

    protected abstract void kEmbeddingBackward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor posIds,
            Tensor typeIds, long batch, long seq, long dim);

    protected abstract void kMeanPoolForward(Tensor out, Tensor x, Tensor mask, long batch, long seq, long dim);

    protected abstract void kMeanPoolBackward(Tensor dx, Tensor dout, Tensor mask, long batch, long seq, long dim);

    /** losses [n] per row and mean [1]; 1 + the first row whose label is not a class (where the labels are checked), or 0. */
    protected abstract int kCrossEntropyForward(Tensor losses, Tensor mean, Tensor logits, Tensor labels, long n, long classes);

    protected abstract void kCrossEntropyBackward(Tensor dlogits, Tensor logits, Tensor labels, long n, long classes, float dloss);

    protected abstract void kAdamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, long n, AdamWConfig cfg, long step,
            float gradScale);

    protected abstract double kSumOfSquares(Tensor x, long n);

    // ================================================================ optional hooks with a default built on the required ones

    /** Per tensor; a device backend overrides with one launch for all. scaleAt: null, or [1] holding the scale (0: no update). */
    protected void kAdamwStepMany(List<Tensor[]> tensors, AdamWConfig cfg, long step, float gradScale, Tensor scaleAt) {
        if (scaleAt != null) gradScale = download(scaleAt)[0];
        if (scaleAt != null && gradScale == 0f) return;
        for (Tensor[] t : tensors) kAdamwStep(t[0], t[1], t[2], t[3], t[0].numel(), cfg, step, gradScale);
    }

    /** Through the host (free where the state is host memory); a device backend overrides with kernels. */
    protected void kClipScale(Collection<Tensor> grads, float maxNorm, Tensor loss, long step, Tensor state) {
        double norm = Math.sqrt(kSumOfSquaresMany(grads));
        float[] s = download(state);
        float l = loss == null ? 0f : download(loss)[0];
        if ((!Double.isFinite(norm) || !Float.isFinite(l)) && s[CLIP_FIRST_BAD_STEP] == 0) {
            s[CLIP_FIRST_BAD_STEP] = step;
            s[CLIP_BAD_LOSS] = l;
            s[CLIP_BAD_NORM] = (float) norm;
        }
        s[CLIP_SCALE] = s[CLIP_FIRST_BAD_STEP] != 0 ? 0f : maxNorm > 0 && norm > maxNorm ? (float) (maxNorm / norm) : 1f;
        upload(state, s);
    }

    protected double kSumOfSquaresMany(Collection<Tensor> xs) {
        double total = 0;
        for (Tensor x : xs) total += kSumOfSquares(x, x.numel());
        return total;
    }

    /** One attention call per sequence; a backend with a packed kernel overrides it. */
    protected void kAttentionForwardPacked(Tensor out, Tensor qkv, int[] lengths, long heads, long headDim, float scale) {
        long off = 0;
        for (int len : lengths) {
            kAttentionForward(out.rows(off, off + len), null, qkv.rows(off, off + len), null, 1, len, heads, headDim, scale, Dropout.NONE);
            off += len;
        }
    }

    /** One copy per row. */
    protected void kBroadcastRows(Tensor y, Tensor row, long rows, long cols) {
        for (long r = 0; r < rows; r++) kCopy(y.reshape(rows, cols).rows(r, r + 1), row, cols * Float.BYTES);
    }

    /** Through host memory (the fused QKV adapter's B, small). */
    protected void kZeroOffDiagonal(Tensor t, long rows, long cols, int blocks) {
        float[] v = download(t);
        long rb = rows / blocks, cb = cols / blocks;
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++)
                if (i / rb != j / cb) v[(int) (i * cols + j)] = 0f;
        upload(t, v);
    }

    /** Through the host; a device backend overrides with kernels (a training step reads nothing back). */
    protected void kMseForward(Tensor pred, Tensor target, long n, Tensor mean) {
        float[] p = download(pred), t = download(target);
        double s = 0;
        for (int i = 0; i < n; i++) s += (p[i] - (double) t[i]) * (p[i] - (double) t[i]);
        upload(mean, new float[] {n == 0 ? 0f : (float) (s / n)});
    }

    protected void kMseBackward(Tensor dpred, Tensor pred, Tensor target, long n, float dloss) {
        float[] p = download(pred), t = download(target), d = new float[(int) n];
        float scale = n == 0 ? 0f : 2f * dloss / n;
        for (int i = 0; i < n; i++) d[i] = scale * (p[i] - t[i]);
        upload(dpred, d);
    }

    /** An f32 tensor's values on the host (a read-back on a device). */
    protected final float[] download(Tensor t) {
        if (t.device().isHostAccessible()) return t.toFloatArray();
        try (TensorScope host = new TensorScope("read-back", MemoryCategory.WORKSPACE)) {
            return copyOf(t, host).toFloatArray();
        }
    }

    private void upload(Tensor t, float[] v) {
        if (t.device().isHostAccessible()) {
            t.copyFrom(v);
            return;
        }
        try (TensorScope host = new TensorScope("upload", MemoryCategory.WORKSPACE)) {
            copy(t, host.allocate(DType.F32, t.shape()).copyFrom(v));
        }
    }

    /** An i32 tensor's values on the host. */
    protected final int[] downloadInts(Tensor t) {
        Tensor h = t;
        try (TensorScope host = new TensorScope("read-back", MemoryCategory.WORKSPACE)) {
            if (!t.device().isHostAccessible()) h = copyOf(t, host);
            int[] out = new int[(int) h.numel()];
            MemorySegment.copy(h.data(), ValueLayout.JAVA_INT_UNALIGNED, 0, out, 0, out.length);
            return out;
        }
    }

    // ================================================================ optional hooks a backend declares in supports()

    private UnsupportedOperationException unsupported(Op op) {
        return unsupported(op, op.label());
    }

    private UnsupportedOperationException unsupported(Op op, String what) {
        return new UnsupportedOperationException(what + ": " + op.description() + " (" + op.label() + ") is not supported on " + name());
    }

    /** {@link Op#SOFTMAX}. */
    protected void kSoftmaxForward(Tensor y, Tensor x, long rows, long cols) {
        throw unsupported(Op.SOFTMAX);
    }

    protected void kSoftmaxBackward(Tensor dx, Tensor dy, Tensor y, long rows, long cols) {
        throw unsupported(Op.SOFTMAX);
    }

    /** {@link Op#IMPORTANCE}. */
    protected void kGroupDot(Tensor out, Tensor x, Tensor dx, long batch, long seq, long groups, long width) {
        throw unsupported(Op.IMPORTANCE);
    }

    protected void kBlockDot(Tensor out, Tensor w, Tensor g, long rows, long cols) {
        throw unsupported(Op.IMPORTANCE);
    }

    /** {@link Op#PACKED_WEIGHTS}: the size (f32 elements) of W [out, in] in this backend's panel layout. */
    protected long kPackedSize(long out, long in) {
        throw unsupported(Op.PACKED_WEIGHTS);
    }

    protected void kPackLinearWeight(Tensor w, long out, long in, Tensor packed) {
        throw unsupported(Op.PACKED_WEIGHTS);
    }

    /** y [rows, out] = x W^T + bias with W packed by {@link #kPackLinearWeight}. */
    protected void kLinearPacked(Tensor y, Tensor x, PackedWeight w, long rows, Tensor bias) {
        throw unsupported(Op.PACKED_WEIGHTS);
    }

    /** {@link Op#BF16_WEIGHTS}: the size (bf16 elements) of op(B) [k, n] packed. */
    protected long kBf16PackedSize(long k, long n) {
        throw unsupported(Op.BF16_WEIGHTS);
    }

    /** op(B) = W^T (transposed; W [n, k]) or W (W [k, n]) rounded to bf16 and packed. */
    protected void kBf16Pack(Tensor w, boolean transposed, long k, long n, Tensor packed) {
        throw unsupported(Op.BF16_WEIGHTS);
    }

    /**
     * C [m, n] = alpha (A op(B) + scale2 A2 op(B2)) + beta C + bias: A [m, k] fp32 rounded to bf16,
     * op(B) packed, sums in fp32; the low-rank term (A2 [m, r] fp32, B2 [n, r] when transB2 else [r,
     * n]) is optional (a2 null).
     */
    protected void kGemmBf16(long m, long n, long k, float alpha, Tensor a, Bf16Weight.Pack b, float beta, Tensor c, Tensor bias, Tensor a2,
            float scale2, boolean transB2, Tensor b2) {
        throw unsupported(Op.BF16_WEIGHTS);
    }

    /**
     * u = a op(f) with op(f) [k, r] (f [r, k] when fRowsAreRank, else [k, r]); then C = a op(B) +
     * scale u op(B2) + beta C + bias. Here: the factor GEMM, then the bf16 product with u folded in;
     * a device may form u in the pass that rounds a to bf16.
     */
    protected void kGemmBf16LowRank(long m, long n, long k, Tensor a, Bf16Weight.Pack b, float beta, Tensor c, Tensor bias, Tensor u,
            Tensor f, boolean fRowsAreRank, float scale, Tensor b2, boolean transB2) {
        gemm(false, fRowsAreRank, 1f, a, f, 0f, u, null);
        kGemmBf16(m, n, k, 1f, a, b, beta, c, bias, u, scale, transB2, b2);
    }

    /** {@link Op#BLOCK_SPARSE}: the element type of a block-sparse pack's kept blocks here (their layout is the backend's too). */
    protected DType kBlockSparseValueType() {
        return DType.F32;
    }

    /** W's kept blocks (mask [out/32 * in/32], 1 kept) into values, rowptr, colidx (values null: the structure only). */
    protected void kBlockSparsePack(Tensor w, byte[] mask, boolean transposed, Tensor values, Tensor rowptr, Tensor colidx) {
        throw unsupported(Op.BLOCK_SPARSE);
    }

    /** y = x P^T + beta y + bias (+ scale u lt, plain or per kept block). */
    protected void kBlockSparseLinear(Tensor y, Tensor x, BlockSparseWeight.Pack p, Tensor bias, float beta, Tensor u, Tensor lt, float scale,
            boolean perBlock) {
        throw unsupported(Op.BLOCK_SPARSE);
    }

    protected void kBlockLowRank(Tensor u, Tensor x, Tensor a) {
        throw unsupported(Op.BLOCK_SPARSE);
    }

    protected void kBlockLowRankGradient(Tensor d, Tensor dy, BlockSparseWeight.Pack p, Tensor u, long r, float scale) {
        throw unsupported(Op.BLOCK_SPARSE);
    }

    /** {@link Op#SPARSE24}: y [m, n] = x W'^T + bias, W' in 2:4 form. */
    protected void kSparse24Linear(Tensor y, Tensor x, Sparse24Weight w, Tensor bias) {
        throw unsupported(Op.SPARSE24);
    }
}
