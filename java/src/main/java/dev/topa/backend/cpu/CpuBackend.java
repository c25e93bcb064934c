package dev.topa.backend.cpu;

import static dev.topa.backend.cpu.CpuKernel.ADAMW_STEP;
import static dev.topa.backend.cpu.CpuKernel.ATTENTION_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.ATTENTION_FORWARD;
import static dev.topa.backend.cpu.CpuKernel.ATTENTION_FORWARD_PACKED;
import static dev.topa.backend.cpu.CpuKernel.BF16_GEMM_PACKED;
import static dev.topa.backend.cpu.CpuKernel.BF16_PACKED_SIZE;
import static dev.topa.backend.cpu.CpuKernel.BF16_PACK_B;
import static dev.topa.backend.cpu.CpuKernel.BIAS_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.BIAS_GELU_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.BIAS_GELU_FORWARD;
import static dev.topa.backend.cpu.CpuKernel.BLOCK_DOT;
import static dev.topa.backend.cpu.CpuKernel.BSR_BLOCK_LOWRANK;
import static dev.topa.backend.cpu.CpuKernel.BSR_LINEAR;
import static dev.topa.backend.cpu.CpuKernel.BSR_LOWRANK_GRAD;
import static dev.topa.backend.cpu.CpuKernel.BSR_PACK;
import static dev.topa.backend.cpu.CpuKernel.CONVERT_BF16_TO_F32;
import static dev.topa.backend.cpu.CpuKernel.CONVERT_F32_TO_BF16;
import static dev.topa.backend.cpu.CpuKernel.CROSS_ENTROPY_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.CROSS_ENTROPY_FORWARD;
import static dev.topa.backend.cpu.CpuKernel.DROPOUT;
import static dev.topa.backend.cpu.CpuKernel.EMBEDDING_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.EMBEDDING_FORWARD;
import static dev.topa.backend.cpu.CpuKernel.GROUP_DOT;
import static dev.topa.backend.cpu.CpuKernel.LAYERNORM_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.LAYERNORM_FORWARD;
import static dev.topa.backend.cpu.CpuKernel.MEAN_POOL_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.MEAN_POOL_FORWARD;
import static dev.topa.backend.cpu.CpuKernel.MSE_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.MSE_FORWARD;
import static dev.topa.backend.cpu.CpuKernel.SGEMM;
import static dev.topa.backend.cpu.CpuKernel.SGEMM_AUG;
import static dev.topa.backend.cpu.CpuKernel.SGEMM_PACKED;
import static dev.topa.backend.cpu.CpuKernel.SGEMM_PACKED_SIZE;
import static dev.topa.backend.cpu.CpuKernel.SGEMM_PACK_B;
import static dev.topa.backend.cpu.CpuKernel.SOFTMAX_BACKWARD;
import static dev.topa.backend.cpu.CpuKernel.SOFTMAX_FORWARD;
import static dev.topa.backend.cpu.CpuKernel.SUM_SQUARES;
import static dev.topa.backend.cpu.CpuKernel.TRANSPOSE;
import static dev.topa.backend.cpu.CpuKernel.call;
import static dev.topa.backend.cpu.CpuKernel.run;
import static dev.topa.backend.cpu.CpuKernel.value;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import dev.topa.backend.AdamWConfig;
import dev.topa.backend.Backend;
import dev.topa.backend.Bf16Weight;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.Dropout;
import dev.topa.backend.Op;
import dev.topa.backend.PackedWeight;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.util.EnumSet;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The CPU backend: FFM downcalls into libtopa_cpu.so, bound to the symbols of one ISA
 * ({@code topa_<op>_<isa>}, declared in {@link CpuKernel}). {@link #create()} picks the best ISA of
 * this CPU; tests build one per supported ISA and hold each to the same float64 reference. Every
 * op runs to completion in the call (OpenMP inside the kernels).
 */
public final class CpuBackend extends Backend {
    /** Kernel scratch already reported to the tracker (the native counter is process-wide). */
    private static final AtomicLong REPORTED_WORKSPACE = new AtomicLong();

    private final Isa isa;
    private final MethodHandle[] handles = new MethodHandle[CpuKernel.values().length];
    private final boolean dpbf16;
    /** Ops this backend says it lacks (a device's capabilities, with the CPU standing in for it). */
    private final Set<Op> withheld;

    private CpuBackend(Isa isa, Set<Op> withheld) {
        if (!isa.supported()) throw new UnsupportedOperationException("this CPU does not support " + isa + " (best: " + Isa.best() + ")");
        this.isa = isa;
        this.withheld = withheld.isEmpty() ? EnumSet.noneOf(Op.class) : EnumSet.copyOf(withheld);
        for (Op op : withheld) if (op.required()) throw new IllegalArgumentException(op + " is required of every backend");
        dpbf16 = isa == Isa.AVX512 && CpuKernels.hasAvx512Bf16();
        for (CpuKernel k : CpuKernel.values()) if (k.perIsa()) handles[k.ordinal()] = k.bind(isa);
    }

    /**
     * This backend declaring the given optional ops unsupported, as a device without them would: a
     * run's needs checked against that device's capabilities with the CPU standing in.
     */
    public CpuBackend without(Set<Op> ops) {
        EnumSet<Op> all = EnumSet.copyOf(withheld);
        all.addAll(ops);
        return new CpuBackend(isa, all);
    }

    /** The backend for the best ISA of this CPU. */
    public static CpuBackend create() {
        return create(Isa.best());
    }

    public static CpuBackend create(Isa isa) {
        return new CpuBackend(isa, Set.of());
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
        return "cpu-" + isa.name().toLowerCase(Locale.ROOT);
    }

    /** Every op but 2:4 (a sparse tensor core format), and those {@link #without} withholds. */
    @Override
    public boolean supports(Op op) {
        return op != Op.SPARSE24 && !withheld.contains(op);
    }

    private MethodHandle h(CpuKernel k) {
        return handles[k.ordinal()];
    }

    private static MemorySegment seg(Tensor t) {
        return t == null ? MemorySegment.NULL : t.data();
    }

    private static MemorySegment offset(Tensor t, long floats) {
        return t.data().asSlice(floats * Float.BYTES);
    }

    /**
     * A kernel that may allocate per-thread scratch: its status checked (negative: the scratch was
     * not to be had) and the tracker's workspace brought up to what the kernels now hold.
     */
    private static int scratch(String op, CpuKernel.Call c) {
        int st = (int) call(c);
        syncWorkspace();
        if (st < 0)
            throw new OutOfMemoryError(op + ": the native kernel could not allocate its scratch memory ("
                    + MemoryTracker.human(CpuKernels.workspaceBytes()) + " held)");
        return st;
    }

    private static void syncWorkspace() {
        long now = CpuKernels.workspaceBytes();
        long before = REPORTED_WORKSPACE.getAndSet(now);
        if (now != before) MemoryTracker.of(Device.CPU).add(MemoryCategory.WORKSPACE, now - before);
    }

    // ---------------------------------------------------------------- copies, conversions, products

    @Override
    protected void kConvert(Tensor dst, Tensor src, long n) {
        CpuKernel k = dst.dtype() == DType.BF16 ? CONVERT_F32_TO_BF16 : CONVERT_BF16_TO_F32;
        run(() -> {
            h(k).invokeExact(seg(src), seg(dst), n);
        });
    }

    @Override
    protected void kGemm(boolean transA, boolean transB, long m, long n, long k, float alpha, Tensor a, long lda, Tensor b, long ldb,
            float beta, Tensor c, long ldc, Tensor bias) {
        scratch("gemm", () -> (int) h(SGEMM).invokeExact(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, seg(a), lda, seg(b), ldb, beta,
                seg(c), ldc, seg(bias)));
    }

    @Override
    protected void kGemmAugmented(boolean transB, long m, long n, long k, Tensor a, Tensor b, long k2, Tensor a2, float scale,
            boolean transB2, Tensor b2, float beta, Tensor c, Tensor bias) {
        scratch("gemmLowRank", () -> (int) h(SGEMM_AUG).invokeExact(0, transB ? 1 : 0, m, n, k, 1f, seg(a), k,
                seg(b), transB ? k : n, k2, seg(a2), k2, scale, transB2 ? 1 : 0, seg(b2), transB2 ? k2 : n, beta, seg(c), n, seg(bias)));
    }

    @Override
    protected void kBiasBackward(Tensor dbias, Tensor dy, long rows, long cols) {
        run(() -> {
            h(BIAS_BACKWARD).invokeExact(seg(dbias), seg(dy), rows, cols);
        });
    }

    @Override
    protected void kTranspose(Tensor out, Tensor in, long rows, long cols, float beta) {
        run(() -> {
            h(TRANSPOSE).invokeExact(seg(out), seg(in), rows, cols, beta);
        });
    }

    @Override
    protected void kBroadcastRows(Tensor y, Tensor row, long rows, long cols) {
        MemorySegment src = row.data(), dst = y.data();
        for (long r = 0; r < rows; r++) MemorySegment.copy(src, 0, dst, r * cols * Float.BYTES, cols * Float.BYTES);
    }

    @Override
    protected void kZeroOffDiagonal(Tensor t, long rows, long cols, int blocks) {
        long rb = rows / blocks, cb = cols / blocks;
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++)
                if (i / rb != j / cb) t.setFloat(i * cols + j, 0f);
    }

    // ---------------------------------------------------------------- weight formats

    @Override
    protected long kPackedSize(long out, long in) {
        return call(() -> (long) h(SGEMM_PACKED_SIZE).invokeExact(in, out));
    }

    @Override
    protected void kPackLinearWeight(Tensor w, long out, long in, Tensor packed) {
        run(() -> {
            h(SGEMM_PACK_B).invokeExact(1, in, out, seg(w), in, seg(packed));
        });
    }

    @Override
    protected void kLinearPacked(Tensor y, Tensor x, PackedWeight w, long rows, Tensor bias) {
        long out = w.outFeatures(), in = w.inFeatures();
        scratch("linearForward", () -> (int) h(SGEMM_PACKED).invokeExact(0, rows, out, in, 1f, seg(x), in, seg(w.data()), 0f, seg(y), out,
                seg(bias)));
    }

    @Override
    protected long kBf16PackedSize(long k, long n) {
        return call(() -> (long) h(BF16_PACKED_SIZE).invokeExact(k, n));
    }

    @Override
    protected void kBf16Pack(Tensor w, boolean transposed, long k, long n, Tensor packed) {
        run(() -> {
            h(BF16_PACK_B).invokeExact(transposed ? 1 : 0, k, n, seg(w), w.dim(1), seg(packed));
        });
    }

    @Override
    protected void kGemmBf16(long m, long n, long k, float alpha, Tensor a, Bf16Weight.Pack b, float beta, Tensor c, Tensor bias, Tensor a2,
            float scale2, boolean transB2, Tensor b2) {
        long r = a2 == null ? 0 : a2.dim(-1);
        scratch("gemmBf16", () -> (int) h(BF16_GEMM_PACKED).invokeExact(dpbf16 ? 1 : 0, m, n, k, alpha, seg(a), k, seg(b.data()), beta,
                seg(c), n, seg(bias), r, seg(a2), scale2, transB2 ? 1 : 0, seg(b2)));
    }

    @Override
    protected void kBlockSparsePack(Tensor w, byte[] mask, boolean transposed, Tensor values, Tensor rowptr, Tensor colidx) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(Math.max(1, mask.length));
            MemorySegment.copy(mask, 0, m, JAVA_BYTE, 0, mask.length);
            run(() -> {
            h(BSR_PACK).invokeExact(seg(w), w.dim(0), w.dim(1), m, transposed ? 1 : 0, seg(values), seg(rowptr), seg(colidx));
        });
        }
    }

    @Override
    protected void kBlockSparseLinear(Tensor y, Tensor x, BlockSparseWeight.Pack p, Tensor bias, float beta, Tensor u, Tensor lt,
            float scale,
            boolean perBlock) {
        long m = x.numel() / p.k(), r = u == null ? 0 : lt.dim(0);
        scratch("blockSparseLinear", () -> (int) h(BSR_LINEAR).invokeExact(m, p.n(), p.k(), seg(x), p.k(), seg(p.values()), seg(p.rowptr()),
                seg(p.colidx()), seg(bias), beta, seg(y), p.n(), r, seg(u), seg(lt), scale, perBlock ? 1 : 0));
    }

    @Override
    protected void kBlockLowRank(Tensor u, Tensor x, Tensor a) {
        long k = a.dim(1);
        scratch("blockLowRank", () -> (int) h(BSR_BLOCK_LOWRANK).invokeExact(x.numel() / k, k, a.dim(0), seg(x), k, seg(a), seg(u)));
    }

    @Override
    protected void kBlockLowRankGradient(Tensor d, Tensor dy, BlockSparseWeight.Pack p, Tensor u, long r, float scale) {
        run(() -> {
            h(BSR_LOWRANK_GRAD).invokeExact(dy.numel() / p.n(), p.n(), p.k(), r, seg(dy), p.n(), seg(p.rowptr()),
                seg(p.colidx()), seg(u), scale, seg(d));
        });
    }

    // ---------------------------------------------------------------- normalisation and activations

    @Override
    protected void kLayernormForward(Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x, Tensor residual, Tensor gamma, Tensor beta,
            long rows, long cols, float eps) {
        run(() -> {
            h(LAYERNORM_FORWARD).invokeExact(seg(out), seg(mean), seg(rstd), seg(sum), seg(x), seg(residual), seg(gamma),
                seg(beta), rows, cols, eps);
        });
    }

    @Override
    protected void kLayernormBackward(Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor x, Tensor mean, Tensor rstd, Tensor gamma,
            long rows, long cols, boolean accumulate) {
        run(() -> {
            h(LAYERNORM_BACKWARD).invokeExact(seg(dx), seg(dgamma), seg(dbeta), seg(dy), seg(x), seg(mean), seg(rstd),
                seg(gamma), rows, cols, accumulate ? 1 : 0);
        });
    }

    @Override
    protected void kBiasGeluForward(Tensor out, Tensor x, Tensor bias, long rows, long cols) {
        run(() -> {
            h(BIAS_GELU_FORWARD).invokeExact(seg(out), seg(x), seg(bias), rows, cols);
        });
    }

    @Override
    protected void kBiasGeluBackward(Tensor dx, Tensor dbias, Tensor dy, Tensor x, Tensor bias, long rows, long cols) {
        run(() -> {
            h(BIAS_GELU_BACKWARD).invokeExact(seg(dx), seg(dbias), seg(dy), seg(x), seg(bias), rows, cols);
        });
    }

    @Override
    protected void kSoftmaxForward(Tensor y, Tensor x, long rows, long cols) {
        run(() -> {
            h(SOFTMAX_FORWARD).invokeExact(seg(y), seg(x), rows, cols);
        });
    }

    @Override
    protected void kSoftmaxBackward(Tensor dx, Tensor dy, Tensor y, long rows, long cols) {
        run(() -> {
            h(SOFTMAX_BACKWARD).invokeExact(seg(dx), seg(dy), seg(y), rows, cols);
        });
    }

    // ---------------------------------------------------------------- attention

    @Override
    protected void kAttentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq, long heads, long headDim,
            float scale, Dropout d) {
        long c = heads * headDim;
        scratch("attentionForward", () -> (int) h(ATTENTION_FORWARD).invokeExact(seg(out), c, seg(probs), seg(qkv), offset(qkv, c),
                offset(qkv, 2 * c), 3 * c, seg(mask), batch, seq, heads, headDim, scale, d.key(), d.threshold(), d.scale()));
    }

    /** Per thread, the sequence offsets of a packed batch for the kernel (grown as needed: no allocation per call). */
    private static final ThreadLocal<MemorySegment[]> STARTS = ThreadLocal.withInitial(() -> new MemorySegment[1]);

    /** One parallel region over every (sequence, head): a micro-batch of short sequences is many small tasks. */
    @Override
    protected void kAttentionForwardPacked(Tensor out, Tensor qkv, int[] lengths, long heads, long headDim, float scale) {
        long c = heads * headDim;
        MemorySegment[] held = STARTS.get();
        if (held[0] == null || held[0].byteSize() < 4L * (lengths.length + 1))
            held[0] = Arena.ofAuto().allocate(4L * Math.max(64, lengths.length + 1), 4);
        MemorySegment starts = held[0];
        int at = 0;
        starts.setAtIndex(JAVA_INT, 0, 0);
        for (int i = 0; i < lengths.length; i++) starts.setAtIndex(JAVA_INT, i + 1, at += lengths[i]);
        long sequences = lengths.length;
        scratch("attentionForwardPacked", () -> (int) h(ATTENTION_FORWARD_PACKED).invokeExact(seg(out), c, seg(qkv), offset(qkv, c),
                offset(qkv, 2 * c), 3 * c, starts, sequences, heads, headDim, scale));
    }

    @Override
    protected void kAttentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq, long heads,
            long headDim, float scale, Dropout d) {
        long c = heads * headDim;
        scratch("attentionBackward", () -> (int) h(ATTENTION_BACKWARD).invokeExact(seg(dqkv), offset(dqkv, c), offset(dqkv, 2 * c), 3 * c,
                seg(dout), c, seg(probs), seg(qkv), offset(qkv, c), offset(qkv, 2 * c), 3 * c, seg(mask), batch, seq, heads, headDim, scale,
                d.key(), d.threshold(), d.scale()));
    }

    // ---------------------------------------------------------------- dropout, importance

    @Override
    protected void kDropout(Tensor out, Tensor in, long n, Dropout d, boolean accumulate) {
        run(() -> {
            h(DROPOUT).invokeExact(seg(out), seg(in), n, d.key(), d.threshold(), d.scale(), accumulate ? 1 : 0);
        });
    }

    @Override
    protected void kGroupDot(Tensor out, Tensor x, Tensor dx, long batch, long seq, long groups, long width) {
        run(() -> {
            h(GROUP_DOT).invokeExact(seg(out), seg(x), seg(dx), batch, seq, groups, width);
        });
    }

    @Override
    protected void kBlockDot(Tensor out, Tensor w, Tensor g, long rows, long cols) {
        run(() -> {
            h(BLOCK_DOT).invokeExact(seg(out), seg(w), seg(g), rows, cols);
        });
    }

    // ---------------------------------------------------------------- embeddings, pooling

    @Override
    protected int kEmbeddingForward(Tensor out, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe, Tensor wtt, long batch,
            long seq, long dim) {
        return (int) call(() -> (int) h(EMBEDDING_FORWARD).invokeExact(seg(out), seg(ids), seg(posIds), seg(typeIds), seg(wte), seg(wpe),
                seg(wtt), batch * seq, seq, dim, wte.dim(0), wpe.dim(0), wtt == null ? 0L : wtt.dim(0)));
    }

    @Override
    protected void kEmbeddingBackward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor posIds, Tensor typeIds,
            long batch, long seq, long dim) {
        run(() -> {
            h(EMBEDDING_BACKWARD).invokeExact(seg(dwte), seg(dwpe), seg(dwtt), seg(dout), seg(ids), seg(posIds), seg(typeIds),
                batch * seq, seq, dim);
        });
    }

    @Override
    protected void kMeanPoolForward(Tensor out, Tensor x, Tensor mask, long batch, long seq, long dim) {
        run(() -> {
            h(MEAN_POOL_FORWARD).invokeExact(seg(out), seg(x), seg(mask), batch, seq, dim);
        });
    }

    @Override
    protected void kMeanPoolBackward(Tensor dx, Tensor dout, Tensor mask, long batch, long seq, long dim) {
        run(() -> {
            h(MEAN_POOL_BACKWARD).invokeExact(seg(dx), seg(dout), seg(mask), batch, seq, dim);
        });
    }

    // ---------------------------------------------------------------- losses, optimizer

    @Override
    protected int kCrossEntropyForward(Tensor losses, Tensor mean, Tensor logits, Tensor labels, long n, long classes) {
        return (int) call(() -> (int) h(CROSS_ENTROPY_FORWARD).invokeExact(seg(losses), seg(mean), seg(logits), seg(labels), n, classes));
    }

    @Override
    protected void kCrossEntropyBackward(Tensor dlogits, Tensor logits, Tensor labels, long n, long classes, float dloss) {
        run(() -> {
            h(CROSS_ENTROPY_BACKWARD).invokeExact(seg(dlogits), seg(logits), seg(labels), n, classes, dloss);
        });
    }

    @Override
    protected void kMseForward(Tensor pred, Tensor target, long n, Tensor mean) {
        mean.setFloat(0, (float) value(() -> (float) h(MSE_FORWARD).invokeExact(seg(pred), seg(target), n)));
    }

    @Override
    protected void kMseBackward(Tensor dpred, Tensor pred, Tensor target, long n, float dloss) {
        run(() -> {
            h(MSE_BACKWARD).invokeExact(seg(dpred), seg(pred), seg(target), n, dloss);
        });
    }

    @Override
    protected void kAdamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, long n, AdamWConfig cfg, long step, float gradScale) {
        run(() -> {
            h(ADAMW_STEP).invokeExact(seg(param), seg(grad), seg(m), seg(v), n, cfg.lr(), cfg.beta1(), cfg.beta2(), cfg.eps(),
                cfg.weightDecay(), step, gradScale);
        });
    }

    @Override
    protected double kSumOfSquares(Tensor x, long n) {
        return value(() -> (double) h(SUM_SQUARES).invokeExact(seg(x), n));
    }
}
