package dev.topa.backend.cpu;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_DOUBLE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.topa.backend.AdamWConfig;
import dev.topa.backend.Backend;
import dev.topa.backend.Dropout;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The CPU backend: FFM downcalls into libtopa_cpu.so, bound to the symbols of one ISA
 * ({@code topa_<op>_<isa>}). {@link #create()} picks the best ISA of this CPU; tests build one per
 * supported ISA and hold each to the same float64 reference.
 */
public final class CpuBackend extends Backend {
    private static final MemoryLayout A = ADDRESS, L = JAVA_LONG, I = JAVA_INT, F = JAVA_FLOAT, D = JAVA_DOUBLE;
    /** Kernel scratch already reported to the tracker (the native counter is process-wide). */
    private static final AtomicLong REPORTED_WORKSPACE = new AtomicLong();

    private final Isa isa;
    private final MethodHandle sgemm, sgemmAug, packedSize, packB, sgemmPacked, biasBackward, layernormForward, layernormBackward, biasGeluForward,
            biasGeluBackward, softmaxForward, softmaxBackward, attentionForward, attentionForwardPacked, attentionBackward, dropout, groupDot, blockDot, transpose, convertToBf16, convertToF32,
            embeddingForward, embeddingBackward, meanPoolForward, meanPoolBackward, crossEntropyForward, crossEntropyBackward, mseForward,
            mseBackward, adamwStep, sumSquares, bf16PackedSize, bf16Pack, bf16Gemm, bsrPack, bsrLinear, bsrBlockLowrank, bsrLowrankGrad;
    private final boolean dpbf16;

    private CpuBackend(Isa isa) {
        if (!isa.supported())
            throw new UnsupportedOperationException("this CPU does not support " + isa + " (best: " + Isa.best() + ")");
        this.isa = isa;
        dpbf16 = isa == Isa.AVX512 && CpuKernels.hasAvx512Bf16();
        bf16PackedSize = bind("bf16_packed_size", true, FunctionDescriptor.of(L, L, L));
        bsrPack = bind("bsr_pack", false, FunctionDescriptor.ofVoid(A, L, L, A, I, A, A, A));
        bsrLinear = bind("bsr_linear", false, FunctionDescriptor.of(I, L, L, L, A, L, A, A, A, A, F, A, L, L, A, A, F, I));
        bsrBlockLowrank = bind("bsr_block_lowrank", false, FunctionDescriptor.of(I, L, L, L, A, L, A, A));
        bsrLowrankGrad = bind("bsr_lowrank_grad", false, FunctionDescriptor.ofVoid(L, L, L, L, A, L, A, A, A, F, A));
        bf16Pack = bind("bf16_pack_b", false, FunctionDescriptor.ofVoid(I, L, L, A, L, A));
        bf16Gemm = bind("bf16_gemm_packed", false, FunctionDescriptor.of(I, I, L, L, L, F, A, L, A, F, A, L, A, L, A, F, I, A));
        sgemm = bind("sgemm", false, FunctionDescriptor.of(I, I, I, L, L, L, F, A, L, A, L, F, A, L, A));
        sgemmAug = bind("sgemm_aug", false,
                FunctionDescriptor.of(I, I, I, L, L, L, F, A, L, A, L, L, A, L, F, I, A, L, F, A, L, A));
        packedSize = bind("sgemm_packed_size", true, FunctionDescriptor.of(L, L, L));
        packB = bind("sgemm_pack_b", false, FunctionDescriptor.ofVoid(I, L, L, A, L, A));
        sgemmPacked = bind("sgemm_packed", false, FunctionDescriptor.of(I, I, L, L, L, F, A, L, A, F, A, L, A));
        biasBackward = bind("bias_backward", false, FunctionDescriptor.ofVoid(A, A, L, L));
        layernormForward = bind("layernorm_forward", false, FunctionDescriptor.ofVoid(A, A, A, A, A, A, A, A, L, L, F));
        layernormBackward = bind("layernorm_backward", false, FunctionDescriptor.ofVoid(A, A, A, A, A, A, A, A, L, L, I));
        biasGeluForward = bind("bias_gelu_forward", false, FunctionDescriptor.ofVoid(A, A, A, L, L));
        biasGeluBackward = bind("bias_gelu_backward", false, FunctionDescriptor.ofVoid(A, A, A, A, A, L, L));
        softmaxForward = bind("softmax_forward", false, FunctionDescriptor.ofVoid(A, A, L, L));
        softmaxBackward = bind("softmax_backward", false, FunctionDescriptor.ofVoid(A, A, A, L, L));
        attentionForward = bind("attention_forward", false, FunctionDescriptor.of(I, A, L, A, A, A, A, L, A, L, L, L, L, F, I, I, F));
        attentionForwardPacked = bind("attention_forward_packed", false, FunctionDescriptor.of(I, A, L, A, A, A, L, A, L, L, L, F));
        dropout = bind("dropout", false, FunctionDescriptor.ofVoid(A, A, L, I, I, F, I));
        groupDot = bind("group_dot", false, FunctionDescriptor.ofVoid(A, A, A, L, L, L, L));
        blockDot = bind("block_dot", false, FunctionDescriptor.ofVoid(A, A, A, L, L));
        transpose = bind("transpose", false, FunctionDescriptor.ofVoid(A, A, L, L, F));
        convertToBf16 = bind("convert_f32_to_bf16", false, FunctionDescriptor.ofVoid(A, A, L));
        convertToF32 = bind("convert_bf16_to_f32", false, FunctionDescriptor.ofVoid(A, A, L));
        attentionBackward = bind("attention_backward", false,
                FunctionDescriptor.of(I, A, A, A, L, A, L, A, A, A, A, L, A, L, L, L, L, F, I, I, F));
        embeddingForward = bind("embedding_forward", false, FunctionDescriptor.of(I, A, A, A, A, A, A, A, L, L, L, L, L, L));
        embeddingBackward = bind("embedding_backward", false, FunctionDescriptor.ofVoid(A, A, A, A, A, A, A, L, L, L));
        meanPoolForward = bind("mean_pool_forward", false, FunctionDescriptor.ofVoid(A, A, A, L, L, L));
        meanPoolBackward = bind("mean_pool_backward", false, FunctionDescriptor.ofVoid(A, A, A, L, L, L));
        crossEntropyForward = bind("cross_entropy_forward", true, FunctionDescriptor.of(I, A, A, A, A, L, L));
        crossEntropyBackward = bind("cross_entropy_backward", true, FunctionDescriptor.ofVoid(A, A, A, L, L, F));
        mseForward = bind("mse_forward", true, FunctionDescriptor.of(F, A, A, L));
        mseBackward = bind("mse_backward", true, FunctionDescriptor.ofVoid(A, A, A, L, F));
        adamwStep = bind("adamw_step", false, FunctionDescriptor.ofVoid(A, A, A, A, L, D, D, D, D, D, L, F));
        sumSquares = bind("sum_squares", false, FunctionDescriptor.of(D, A, L));
    }

    /** The backend for the best ISA of this CPU. */
    public static CpuBackend create() {
        return new CpuBackend(Isa.best());
    }

    public static CpuBackend create(Isa isa) {
        return new CpuBackend(isa);
    }

    public Isa isa() {
        return isa;
    }

    @Override
    public Device device() {
        return Device.CPU;
    }

    @Override
    public String name() {
        return "cpu-" + isa.name().toLowerCase(java.util.Locale.ROOT);
    }

    @Override
    public boolean fastBf16() {
        return dpbf16;
    }

    private MethodHandle bind(String op, boolean critical, FunctionDescriptor fd) {
        return NativeLibrary.get().downcall("topa_" + op + isa.suffix(), fd, critical);
    }

    private static MemorySegment seg(Tensor t) {
        return t == null ? MemorySegment.NULL : t.data();
    }

    private static MemorySegment offset(Tensor t, long floats) {
        return t.data().asSlice(floats * Float.BYTES);
    }

    /** Brings the tracker's workspace category up to what the kernels' scratch buffers hold. */
    private static void syncWorkspace() {
        long now = CpuKernels.workspaceBytes();
        long before = REPORTED_WORKSPACE.getAndSet(now);
        if (now != before) MemoryTracker.of(Device.CPU).add(MemoryCategory.WORKSPACE, now - before);
    }

    private static void status(String op, int st) {
        if (st < 0) {
            syncWorkspace();
            throw new OutOfMemoryError(op + ": the native kernel could not allocate its scratch memory ("
                    + MemoryTracker.human(CpuKernels.workspaceBytes()) + " held)");
        }
    }

    @Override
    protected void kGemm(boolean transA, boolean transB, long m, long n, long k, float alpha, Tensor a, long lda,
            Tensor b, long ldb, float beta, Tensor c, long ldc, Tensor bias) {
        try {
            int st = (int) sgemm.invokeExact(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, seg(a), lda, seg(b), ldb,
                    beta, seg(c), ldc, seg(bias));
            status("gemm", st);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
        syncWorkspace();
    }

    @Override
    protected void kGemmAugmented(boolean transA, boolean transB, long m, long n, long k, Tensor a, Tensor b, long k2,
            Tensor a2, float scale, boolean transB2, Tensor b2, float beta, Tensor c, Tensor bias) {
        try {
            int st = (int) sgemmAug.invokeExact(transA ? 1 : 0, transB ? 1 : 0, m, n, k, 1f, seg(a), transA ? m : k, seg(b),
                    transB ? k : n, k2, seg(a2), k2, scale, transB2 ? 1 : 0, seg(b2), transB2 ? k2 : n, beta, seg(c), n, seg(bias));
            status("gemm (augmented)", st);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
        syncWorkspace();
    }

    @Override
    protected long kPackedSize(long out, long in) {
        try {
            return (long) packedSize.invokeExact(in, out);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected long kBf16PackedSize(long k, long n) {
        try {
            return (long) bf16PackedSize.invokeExact(k, n);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kBf16Pack(Tensor w, boolean transposed, long k, long n, Tensor packed) {
        try {
            bf16Pack.invokeExact(transposed ? 1 : 0, k, n, seg(w), w.dim(1), seg(packed));
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kGemmBf16(long m, long n, long k, float alpha, Tensor a, dev.topa.backend.Bf16Weight b, float beta, Tensor c,
            Tensor bias, Tensor a2, float scale2, boolean transB2, Tensor b2) {
        try {
            long r = a2 == null ? 0 : a2.dim(-1);
            int st = (int) bf16Gemm.invokeExact(dpbf16 ? 1 : 0, m, n, k, alpha, seg(a), k, seg(b.data()), beta, seg(c), n, seg(bias),
                    r, seg(a2), scale2, transB2 ? 1 : 0, seg(b2));
            status("gemmBf16", st);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
        syncWorkspace();
    }

    @Override
    protected void kBlockSparsePack(Tensor w, byte[] mask, boolean transposed, Tensor values, Tensor rowptr, Tensor colidx) {
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment m = arena.allocate(Math.max(1, mask.length));
            MemorySegment.copy(mask, 0, m, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, mask.length);
            bsrPack.invokeExact(seg(w), w.dim(0), w.dim(1), m, transposed ? 1 : 0, seg(values), seg(rowptr), seg(colidx));
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kBlockSparseLinear(Tensor y, Tensor x, dev.topa.backend.BlockSparseWeight p, Tensor bias, float beta, Tensor u,
            Tensor lt, float scale, boolean perBlock) {
        try {
            long m = x.numel() / p.k(), r = u == null ? 0 : lt.dim(0);
            int st = (int) bsrLinear.invokeExact(m, p.n(), p.k(), seg(x), p.k(), seg(p.values()), seg(p.rowptr()), seg(p.colidx()),
                    seg(bias), beta, seg(y), p.n(), r, seg(u), seg(lt), scale, perBlock ? 1 : 0);
            status("blockSparseLinear", st);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kBlockLowRank(Tensor u, Tensor x, Tensor a) {
        try {
            long k = a.dim(1);
            status("blockLowRank", (int) bsrBlockLowrank.invokeExact(x.numel() / k, k, a.dim(0), seg(x), k, seg(a), seg(u)));
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kBlockLowRankGradient(Tensor d, Tensor dy, dev.topa.backend.BlockSparseWeight p, Tensor u, long r, float scale) {
        try {
            bsrLowrankGrad.invokeExact(dy.numel() / p.n(), p.n(), p.k(), r, seg(dy), p.n(), seg(p.rowptr()), seg(p.colidx()), seg(u), scale,
                    seg(d));
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kPackLinearWeight(Tensor w, long out, long in, Tensor packed) {
        try {
            packB.invokeExact(1, in, out, seg(w), in, seg(packed));
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kLinearPacked(Tensor y, Tensor x, dev.topa.backend.PackedWeight w, long rows, Tensor bias) {
        try {
            int st = (int) sgemmPacked.invokeExact(0, rows, w.outFeatures(), w.inFeatures(), 1f, seg(x), w.inFeatures(),
                    seg(w.data()), 0f, seg(y), w.outFeatures(), seg(bias));
            status("linearForward", st);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
        syncWorkspace();
    }

    @Override
    protected void kBiasBackward(Tensor dbias, Tensor dy, long rows, long cols) {
        try {
            biasBackward.invokeExact(seg(dbias), seg(dy), rows, cols);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kLayernormForward(Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x, Tensor residual,
            Tensor gamma, Tensor beta, long rows, long cols, float eps) {
        try {
            layernormForward.invokeExact(seg(out), seg(mean), seg(rstd), seg(sum), seg(x), seg(residual), seg(gamma),
                    seg(beta), rows, cols, eps);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kLayernormBackward(Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor x, Tensor mean,
            Tensor rstd, Tensor gamma, long rows, long cols, boolean accumulate) {
        try {
            layernormBackward.invokeExact(seg(dx), seg(dgamma), seg(dbeta), seg(dy), seg(x), seg(mean), seg(rstd),
                    seg(gamma), rows, cols, accumulate ? 1 : 0);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kBiasGeluForward(Tensor out, Tensor x, Tensor bias, long rows, long cols) {
        try {
            biasGeluForward.invokeExact(seg(out), seg(x), seg(bias), rows, cols);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kBiasGeluBackward(Tensor dx, Tensor dbias, Tensor dy, Tensor x, Tensor bias, long rows, long cols) {
        try {
            biasGeluBackward.invokeExact(seg(dx), seg(dbias), seg(dy), seg(x), seg(bias), rows, cols);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kSoftmaxForward(Tensor y, Tensor x, long rows, long cols) {
        try {
            softmaxForward.invokeExact(seg(y), seg(x), rows, cols);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kSoftmaxBackward(Tensor dx, Tensor dy, Tensor y, long rows, long cols) {
        try {
            softmaxBackward.invokeExact(seg(dx), seg(dy), seg(y), rows, cols);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kAttentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq,
            long heads, long headDim, float scale, Dropout dropout) {
        long c = heads * headDim;
        try {
            int st = (int) attentionForward.invokeExact(seg(out), c, seg(probs), seg(qkv), offset(qkv, c),
                    offset(qkv, 2 * c), 3 * c, seg(mask), batch, seq, heads, headDim, scale, dropout.key(),
                    dropout.threshold(), dropout.scale());
            status("attentionForward", st);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
        syncWorkspace();
    }

    /** Per thread, the sequence offsets of a packed batch for the kernel (grown as needed: no allocation per call). */
    private static final ThreadLocal<MemorySegment[]> STARTS = ThreadLocal.withInitial(() -> new MemorySegment[1]);

    /** One parallel region over every (sequence, head): a micro-batch of short sequences is many small tasks. */
    @Override
    protected void kAttentionForwardPacked(Tensor out, Tensor qkv, int[] lengths, long heads, long headDim, float scale) {
        long c = heads * headDim;
        MemorySegment[] held = STARTS.get();
        if (held[0] == null || held[0].byteSize() < 4L * (lengths.length + 1))
            held[0] = java.lang.foreign.Arena.ofAuto().allocate(4L * Math.max(64, lengths.length + 1), 4);
        MemorySegment starts = held[0];
        int at = 0;
        starts.setAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, 0, 0);
        for (int i = 0; i < lengths.length; i++) starts.setAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, i + 1, at += lengths[i]);
        try {
            int st = (int) attentionForwardPacked.invokeExact(seg(out), c, seg(qkv), offset(qkv, c), offset(qkv, 2 * c), 3 * c, starts,
                    (long) lengths.length, heads, headDim, scale);
            status("attentionForwardPacked", st);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
        syncWorkspace();
    }

    @Override
    protected void kAttentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, Tensor mask, long batch,
            long seq, long heads, long headDim, float scale, Dropout dropout) {
        long c = heads * headDim;
        try {
            int st = (int) attentionBackward.invokeExact(seg(dqkv), offset(dqkv, c), offset(dqkv, 2 * c), 3 * c,
                    seg(dout), c, seg(probs), seg(qkv), offset(qkv, c), offset(qkv, 2 * c), 3 * c, seg(mask), batch, seq,
                    heads, headDim, scale, dropout.key(), dropout.threshold(), dropout.scale());
            status("attentionBackward", st);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
        syncWorkspace();
    }

    @Override
    protected void kGroupDot(Tensor out, Tensor x, Tensor dx, long batch, long seq, long groups, long width) {
        try {
            groupDot.invokeExact(seg(out), seg(x), seg(dx), batch, seq, groups, width);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kBlockDot(Tensor out, Tensor w, Tensor g, long rows, long cols) {
        try {
            blockDot.invokeExact(seg(out), seg(w), seg(g), rows, cols);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kConvert(Tensor dst, Tensor src, long n) {
        try {
            if (dst.dtype() == DType.BF16) convertToBf16.invokeExact(seg(src), seg(dst), n);
            else convertToF32.invokeExact(seg(src), seg(dst), n);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kTranspose(Tensor out, Tensor in, long rows, long cols, float beta) {
        try {
            transpose.invokeExact(seg(out), seg(in), rows, cols, beta);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kDropout(Tensor out, Tensor in, long n, Dropout d, boolean accumulate) {
        try {
            dropout.invokeExact(seg(out), seg(in), n, d.key(), d.threshold(), d.scale(), accumulate ? 1 : 0);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected int kEmbeddingForward(Tensor out, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe,
            Tensor wtt, long batch, long seq, long dim) {
        try {
            return (int) embeddingForward.invokeExact(seg(out), seg(ids), seg(posIds), seg(typeIds), seg(wte), seg(wpe),
                    seg(wtt), batch * seq, seq, dim, wte.dim(0), wpe.dim(0), wtt == null ? 0L : wtt.dim(0));
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kEmbeddingBackward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor posIds,
            Tensor typeIds, long batch, long seq, long dim) {
        try {
            embeddingBackward.invokeExact(seg(dwte), seg(dwpe), seg(dwtt), seg(dout), seg(ids), seg(posIds),
                    seg(typeIds), batch * seq, seq, dim);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kMeanPoolForward(Tensor out, Tensor x, Tensor mask, long batch, long seq, long dim) {
        try {
            meanPoolForward.invokeExact(seg(out), seg(x), seg(mask), batch, seq, dim);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kMeanPoolBackward(Tensor dx, Tensor dout, Tensor mask, long batch, long seq, long dim) {
        try {
            meanPoolBackward.invokeExact(seg(dx), seg(dout), seg(mask), batch, seq, dim);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected int kCrossEntropyForward(Tensor losses, float[] mean, Tensor logits, Tensor labels, long n, long classes) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(JAVA_FLOAT);
            int st = (int) crossEntropyForward.invokeExact(seg(losses), m, seg(logits), seg(labels), n, classes);
            mean[0] = m.get(JAVA_FLOAT, 0);
            return st;
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kCrossEntropyBackward(Tensor dlogits, Tensor logits, Tensor labels, long n, long classes,
            float dloss) {
        try {
            crossEntropyBackward.invokeExact(seg(dlogits), seg(logits), seg(labels), n, classes, dloss);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected float kMseForward(Tensor pred, Tensor target, long n) {
        try {
            return (float) mseForward.invokeExact(seg(pred), seg(target), n);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kMseBackward(Tensor dpred, Tensor pred, Tensor target, long n, float dloss) {
        try {
            mseBackward.invokeExact(seg(dpred), seg(pred), seg(target), n, dloss);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected void kAdamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, long n, AdamWConfig cfg, long step,
            float gradScale) {
        try {
            adamwStep.invokeExact(seg(param), seg(grad), seg(m), seg(v), n, cfg.lr(), cfg.beta1(), cfg.beta2(),
                    cfg.eps(), cfg.weightDecay(), step, gradScale);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }

    @Override
    protected double kSumOfSquares(Tensor x, long n) {
        try {
            return (double) sumSquares.invokeExact(seg(x), n);
        } catch (Throwable t) {
            throw CpuKernels.rethrow(t);
        }
    }
}
