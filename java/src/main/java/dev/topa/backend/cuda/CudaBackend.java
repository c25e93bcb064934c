package dev.topa.backend.cuda;

import dev.topa.backend.AdamWConfig;
import dev.topa.backend.Backend;
import dev.topa.backend.Bf16Weight;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.Dropout;
import dev.topa.backend.Op;
import dev.topa.backend.PackedWeight;
import dev.topa.backend.Sparse24Weight;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;

/**
 * The ops on an NVIDIA GPU: topa's kernels (topa_kernels.fatbin, {@link CudaKernel}) and cuBLASLt,
 * all on one stream, so ops are ordered without host synchronisation; a copy to the host waits for
 * the stream. Activations are fp32 tensors between ops. In {@link Precision#MIXED} (the default)
 * the matrix work runs on the tensor cores: packed weights are bf16, each product converts x to
 * bf16 and accumulates in fp32 into an fp32 y with the bias fused, and attention multiplies bf16
 * operands with fp32 accumulation. {@link Precision#FP32} keeps every product in fp32 (the reference
 * the mixed mode is checked against). Unpacked GEMMs are fp32 in both. What it does not run yet it
 * says in {@link #UNSUPPORTED}: kept attention probabilities and explicit positions -- neither on a
 * command's default path.
 */
public final class CudaBackend extends Backend {
    private static final int THREADS = 256, MAX_BLOCKS = 65535;
    /** enough blocks of THREADS to fill an H100/H200 (132 SMs) twice, for grid-stride kernels whose blocks each repeat a batch-wide count */
    private static final int SPREAD_BLOCKS = 264;

    /** How the matrix products of inference round their operands. */
    public enum Precision { MIXED, FP32 }

    private final Precision precision;
    private final CudaDriver cu;
    private final int ordinal;
    private final long context, module, stream;
    private final CublasLt lt;
    private final CudaMemory memory;
    private final String name;
    private final long[] functions = new long[CudaKernel.values().length];
    /**
     * Device buffers kept between calls, grown when a call needs more (stream order makes reuse
     * safe); their bytes count as the device's WORKSPACE, as the CPU kernels' scratch does.
     */
    private final class Buffer {
        private long address, bytes;

        synchronized long atLeast(long n) {
            if (n > bytes) {
                free(); // forgotten before allocating: an out-of-memory error must not leave the freed block here
                address = memory.allocate(n);
                bytes = n;
                MemoryTracker.of(memory.device()).add(MemoryCategory.WORKSPACE, n);
            }
            return address;
        }

        synchronized void free() {
            if (address != 0) {
                memory.free(address, bytes);
                MemoryTracker.of(memory.device()).add(MemoryCategory.WORKSPACE, -bytes);
            }
            address = bytes = 0;
        }
    }

    /**
     * Host-to-device copies that do not drain the stream: the bytes are copied into one of a ring of
     * page-locked buffers and sent with an asynchronous copy ordered on the stream, then the caller
     * may reuse its own memory at once. A buffer is reused after the event recorded behind its copy
     * (normally long passed: SLOTS uploads later). A step's inputs (ids, types, mask, labels, the
     * optimizer's table) go this way; larger copies wait for the stream as before.
     */
    private final class Staging {
        static final int SLOTS = 16;
        static final long SLOT_BYTES = 1 << 20;
        private final MemorySegment[] slot = new MemorySegment[SLOTS];
        private final long[] event = new long[SLOTS];
        private final boolean[] pending = new boolean[SLOTS];
        private int next;

        /** False when the copy is too large for a slot (the caller copies synchronously). */
        synchronized boolean upload(long dst, MemorySegment src, long bytes) {
            if (bytes > SLOT_BYTES) return false;
            int i = next;
            next = (next + 1) % SLOTS;
            if (slot[i] == null) {
                long e = cu.syncEventCreate(); // first: a slot never holds pinned memory without its event
                try {
                    slot[i] = cu.hostAlloc(SLOT_BYTES);
                } catch (RuntimeException failed) {
                    cu.eventDestroy(e);
                    throw failed;
                }
                event[i] = e;
            } else if (pending[i]) {
                cu.eventSynchronize(event[i]);
            }
            MemorySegment.copy(src, 0, slot[i], 0, bytes);
            cu.copyToDevice(dst, slot[i], bytes, stream);
            cu.eventRecord(event[i], stream);
            pending[i] = true;
            return true;
        }

        synchronized void free() {
            List<Runnable> steps = new ArrayList<>();
            for (int i = 0; i < SLOTS; i++)
                if (slot[i] != null) {
                    MemorySegment s = slot[i];
                    long e = event[i];
                    slot[i] = null;
                    pending[i] = false;
                    steps.add(() -> cu.hostFree(s));
                    steps.add(() -> cu.eventDestroy(e));
                }
            everyStep(steps.toArray(Runnable[]::new));
        }
    }

    private final Staging staging = new Staging();
    private final Buffer operands = new Buffer(); // the bf16 (left) operand of a product
    private final Buffer table = new Buffer();    // the optimizer's tensor table, the sum of squares
    private final Buffer attention = new Buffer(); // P and dS of attention backward
    private final int dev;
    private volatile boolean closed;

    private CudaBackend(CudaDriver cu, int ordinal, Precision precision) throws IOException {
        this.cu = cu;
        this.precision = precision;
        this.ordinal = ordinal;
        dev = cu.device(ordinal);
        context = cu.useDevice(dev);
        long m = 0, s = 0;
        CublasLt l = null;
        String n;
        try { // what was made before a failure is given back, each step tried
            n = "cuda:" + ordinal + "-sm_" + cu.computeCapability(dev) + (precision == Precision.FP32 ? "-fp32" : "");
            m = cu.loadModule(kernelImage());
            s = cu.streamCreate();
            l = new CublasLt(cu);
        } catch (IOException | RuntimeException e) {
            long made = s, loaded = m;
            CublasLt handle = l;
            try {
                everyStep(() -> { if (handle != null) handle.close(); }, () -> { if (made != 0) cu.streamDestroy(made); },
                        () -> { if (loaded != 0) cu.unloadModule(loaded); }, () -> cu.releaseDevice(dev));
            } catch (RuntimeException u) {
                e.addSuppressed(u);
            }
            throw e;
        }
        name = n;
        module = m;
        stream = s;
        lt = l;
        memory = new CudaMemory(cu, ordinal, context);
        MemoryTracker.of(memory.device()).add(MemoryCategory.WORKSPACE, CublasLt.WORKSPACE_BYTES); // cuBLASLt's, held until close
    }

    /** The backend on GPU ordinal in mixed precision, or an error saying why there is none (no driver, no device, no kernels). */
    public static CudaBackend open(int ordinal) {
        return open(ordinal, Precision.MIXED);
    }

    public static CudaBackend open(int ordinal, Precision precision) {
        CudaDriver cu = CudaDriver.get().orElseThrow(() -> new CudaException("no CUDA device: " + CudaDriver.unavailableReason()));
        try {
            return new CudaBackend(cu, ordinal, precision);
        } catch (IOException e) {
            throw new UncheckedIOException("CUDA backend: " + e.getMessage(), e);
        }
    }

    @Override
    public Device device() {
        return memory.device();
    }

    @Override
    public String name() {
        return name;
    }

    public CudaDriver driver() {
        return cu;
    }

    public long stream() {
        return stream;
    }

    /** The backend's cuBLASLt handle, on its stream: the kit times bare GEMMs with it, the dense baseline of its kernels. */
    public CublasLt cublasLt() {
        return lt;
    }

    @Override
    public void synchronize() {
        onThisThread();
        cu.streamSynchronize(stream);
    }

    /** The caching allocator all of this backend's scopes and arenas take device memory from. */
    @Override
    public CudaMemory deviceMemory() {
        return memory;
    }

    @Override
    protected void kZero(Tensor t) {
        onThisThread();
        long bytes = t.byteSize();
        if (bytes % 4 != 0) throw new IllegalArgumentException("zero on CUDA: " + t + " is not whole 32-bit words");
        cu.fill32(ptr(t), 0, bytes / 4, stream);
    }

    @Override
    protected void kZeroOffDiagonal(Tensor t, long rows, long cols, int blocks) {
        launch(CudaKernel.ZERO_OFF_DIAGONAL_F32, strided(rows * cols), THREADS, arg(t), rows, cols, blocks);
    }

    /**
     * Waits for the stream, then gives back everything the backend holds, each step tried even when
     * one before it failed (after a kernel fault the synchronization throws, and the memory, the
     * stream, the module and the context must still go); the first failure is thrown at the end.
     */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        everyStep(() -> cu.makeCurrent(context), () -> cu.streamSynchronize(stream), operands::free, table::free, attention::free, staging::free, lt::close,
                () -> MemoryTracker.of(memory.device()).add(MemoryCategory.WORKSPACE, -CublasLt.WORKSPACE_BYTES),
                memory::release, () -> cu.streamDestroy(stream), () -> cu.unloadModule(module), () -> cu.releaseDevice(dev));
    }

    /** Runs every step, even after one fails; then throws the first failure, the later ones suppressed onto it. */
    private static void everyStep(Runnable... steps) {
        RuntimeException first = null;
        for (Runnable step : steps)
            try {
                step.run();
            } catch (RuntimeException e) {
                if (first == null) first = e;
                else first.addSuppressed(e);
            }
        if (first != null) throw first;
    }

    // ---------------------------------------------------------------- plumbing

    /** Driver contexts are per thread: the device's is made current on the calling thread (a driver call only when another was). */
    private void onThisThread() {
        if (closed) throw new IllegalStateException(name + ": used after close()");
        cu.makeCurrent(context);
    }

    /**
     * A kernel's function, bound on first use: its parameter list checked against the declared one
     * (when the driver can say), and a kernel that takes more than 48 KB of dynamic shared memory
     * allowed it.
     */
    private synchronized long fn(CudaKernel kernel) {
        long f = functions[kernel.ordinal()];
        if (f != 0) return f;
        f = cu.function(module, kernel.symbol());
        long[] sizes = cu.parameterSizes(f);
        if (sizes != null) kernel.checkBinding(sizes);
        for (BlockSparseKernel k : BlockSparseKernel.values())
            if (k.kernel == kernel && k.sharedBytes > 48 * 1024) cu.setMaxDynamicSharedMemory(f, kernel.symbol(), k.sharedBytes);
        functions[kernel.ordinal()] = f;
        return f;
    }

    private void launch(CudaKernel kernel, int[] grid, int threads, Object... args) {
        launch(kernel, grid, new int[] {threads, 1, 1}, 0, args);
    }

    private void launch(CudaKernel kernel, int[] grid, int[] block, int sharedBytes, Object... args) {
        onThisThread();
        kernel.checkLaunch(args);
        cu.launch(fn(kernel), kernel.symbol(), grid, block, sharedBytes, stream, args);
    }

    private static int[] grid(long x) {
        return new int[] {(int) x, 1, 1};
    }

    /** Blocks of THREADS for a grid-stride loop over n items. */
    private static int[] strided(long n) {
        return grid(Math.max(1, Math.min(MAX_BLOCKS, (n + THREADS - 1) / THREADS)));
    }

    /** One block per row reading up to 8 elements per thread: a multiple of 32 threads, at most 1024. */
    private static int rowThreads(long cols) {
        return (int) Math.min(1024, Math.max(32, ((cols + 7) / 8 + 31) / 32 * 32));
    }

    private static long ptr(Tensor t) {
        return t == null ? 0 : t.data().address();
    }

    private static Long arg(Tensor t) {
        return t == null ? null : t.data().address();
    }

    private UnsupportedOperationException notYet(Op op) {
        return new UnsupportedOperationException(op.description() + " (" + op.label() + ") does not run on " + name() + " yet; use --device cpu");
    }

    /** The optional ops the CUDA kernels do not run (a test walks every command's defaults against it on the CPU). */
    public static final Set<Op> UNSUPPORTED = Collections.unmodifiableSet(EnumSet.of(Op.ATTENTION_PROBS, Op.POSITION_IDS));

    @Override
    public boolean supports(Op op) {
        return !UNSUPPORTED.contains(op);
    }

    /** The kernel image: the fatbin packaged beside the CPU library, or the file -Dtopa.cuda.fatbin names. */
    public static byte[] kernelImage() throws IOException {
        String path = System.getProperty("topa.cuda.fatbin");
        if (path != null) return java.nio.file.Files.readAllBytes(java.nio.file.Path.of(path));
        try (java.io.InputStream in = CudaBackend.class.getResourceAsStream("/native/linux-x86_64/topa_kernels.fatbin")) {
            if (in == null) throw new IOException("topa_kernels.fatbin is not in this build (it was built without nvcc)");
            return in.readAllBytes();
        }
    }

    // ---------------------------------------------------------------- copies

    @Override
    protected void kCopy(Tensor dst, Tensor src, long bytes) {
        onThisThread();
        boolean dHost = dst.device().isHostAccessible(), sHost = src.device().isHostAccessible();
        if (dHost && sHost) {
            MemorySegment.copy(src.data(), 0, dst.data(), 0, bytes);
        } else if (sHost) {
            if (staging.upload(ptr(dst), src.data(), bytes)) return;
            cu.copyToDevice(ptr(dst), src.data(), bytes, stream);
            cu.streamSynchronize(stream); // the host buffer may be reused as soon as this returns
        } else if (dHost) {
            cu.copyToHost(dst.data(), ptr(src), bytes, stream);
            cu.streamSynchronize(stream);
        } else {
            cu.copyOnDevice(ptr(dst), ptr(src), bytes, stream);
        }
    }

    @Override
    protected void kConvert(Tensor dst, Tensor src, long n) {
        if (dst.dtype() == DType.BF16) launch(CudaKernel.CONVERT_F32_TO_BF16, strided((n + 1) / 2), THREADS, arg(dst), arg(src), n);
        else launch(CudaKernel.CONVERT_BF16_TO_F32, strided((n + 1) / 2), THREADS, arg(dst), arg(src), n);
    }

    @Override
    protected void kBroadcastRows(Tensor y, Tensor row, long rows, long cols) {
        launch(CudaKernel.BROADCAST_ROWS_F32, strided(rows * cols), THREADS, arg(y), arg(row), rows, (int) cols);
    }

    @Override
    protected void kTranspose(Tensor out, Tensor in, long rows, long cols, float beta) {
        onThisThread();
        launch(CudaKernel.TRANSPOSE_F32, new int[] {(int) ((cols + 31) / 32), (int) ((rows + 31) / 32), 1}, new int[] {32, 8, 1},
                0, arg(out), arg(in), (int) rows, (int) cols, beta);
    }

    // ---------------------------------------------------------------- GEMM

    @Override
    protected void kGemm(boolean transA, boolean transB, long m, long n, long k, float alpha, Tensor a, long lda, Tensor b, long ldb,
            float beta, Tensor c, long ldc, Tensor bias) {
        onThisThread();
        lt.matmul(transA, transB, m, n, k, alpha, ptr(a), lda, ptr(b), ldb, beta, ptr(c), ldc, ptr(bias), CublasLt.Types.F32,
                bias == null ? CublasLt.Epilogue.NONE : CublasLt.Epilogue.BIAS, stream);
    }

    @Override
    protected void kGemmAugmented(boolean transB, long m, long n, long k, Tensor a, Tensor b, long k2, Tensor a2, float scale,
            boolean transB2, Tensor b2, float beta, Tensor c, Tensor bias) {
        onThisThread(); // two products into one C: the second accumulates (beta 1)
        lt.matmul(false, transB, m, n, k, 1f, ptr(a), k, ptr(b), transB ? k : n, beta, ptr(c), n, 0, CublasLt.Types.F32,
                CublasLt.Epilogue.NONE, stream);
        lt.matmul(false, transB2, m, n, k2, scale, ptr(a2), k2, ptr(b2), transB2 ? k2 : n, 1f, ptr(c), n, ptr(bias), CublasLt.Types.F32,
                bias == null ? CublasLt.Epilogue.NONE : CublasLt.Epilogue.BIAS, stream);
    }

    /** Mixed: W [out, in] as bf16, two per f32 element of the packed tensor; fp32: a copy of W. */
    @Override
    protected long kPackedSize(long out, long in) {
        return precision == Precision.MIXED ? (out * in + 1) / 2 : out * in;
    }

    @Override
    protected void kPackLinearWeight(Tensor w, long out, long in, Tensor packed) {
        if (precision == Precision.FP32) {
            onThisThread();
            cu.copyOnDevice(ptr(packed), ptr(w), 4 * out * in, stream);
            return;
        }
        launch(CudaKernel.CONVERT_F32_TO_BF16, strided((out * in + 1) / 2), THREADS, arg(packed), arg(w), out * in);
    }

    @Override
    protected void kLinearPacked(Tensor y, Tensor x, PackedWeight w, long rows, Tensor bias) {
        long in = w.inFeatures(), out = w.outFeatures(), n = rows * in;
        CublasLt.Epilogue epilogue = bias == null ? CublasLt.Epilogue.NONE : CublasLt.Epilogue.BIAS;
        if (precision == Precision.FP32) {
            onThisThread();
            lt.matmul(false, true, rows, out, in, 1f, ptr(x), in, ptr(w.data()), in, 0f, ptr(y), out, ptr(bias), CublasLt.Types.F32, epilogue,
                    stream);
            return;
        }
        synchronized (this) {
            long xb = operands.atLeast(2 * n);
            launch(CudaKernel.CONVERT_F32_TO_BF16, strided((n + 1) / 2), THREADS, xb, arg(x), n);
            lt.matmul(false, true, rows, out, in, 1f, xb, in, ptr(w.data()), in, 0f, ptr(y), out, ptr(bias), CublasLt.Types.BF16_IN_F32_OUT,
                    epilogue, stream);
        }
    }

    // ---------------------------------------------------------------- bf16 frozen weights (training)

    /**
     * op(B) [k, n] stored row-major in bf16 (W^T transposed on the device when the pack is for
     * forward), with room for {@link #LORA_ROWS} more rows: a LoRA update's B^T rides there, so the
     * rank-r term is the same GEMM as the frozen weight's (K extended by r), not a second pass over C.
     */
    @Override
    protected long kBf16PackedSize(long k, long n) {
        return (k + LORA_ROWS) * n;
    }

    /** The largest LoRA rank the bf16 frozen-base product folds into its GEMM (higher ranks take a second GEMM). */
    static final int LORA_ROWS = 64;

    @Override
    protected void kBf16Pack(Tensor w, boolean transposed, long k, long n, Tensor packed) {
        if (!transposed) {
            launch(CudaKernel.CONVERT_F32_TO_BF16, strided((k * n + 1) / 2), THREADS, arg(packed), arg(w), k * n);
            return;
        }
        onThisThread(); // w is [n, k]: its transpose is op(B)
        launch(CudaKernel.TRANSPOSE_TO_BF16, new int[] {(int) ((k + 31) / 32), (int) ((n + 31) / 32), 1},
                new int[] {32, 8, 1}, 0, arg(packed), arg(w), (int) n, (int) k);
    }

    /**
     * C = alpha (A op(B) + scale2 A2 op(B2)) + beta C + bias on the tensor cores (bf16 operands, fp32
     * C). With a rank-r term (r <= LORA_ROWS) it is one GEMM over K + r: the left operand [A | scale2
     * A2] is written in bf16 by the conversion that A needs anyway, and op(B2) fills the pack's spare
     * rows (r x n, small); above that rank, a second fp32 GEMM adds the term.
     */
    @Override
    protected void kGemmBf16(long m, long n, long k, float alpha, Tensor a, Bf16Weight.Pack b, float beta, Tensor c, Tensor bias, Tensor a2,
            float scale2, boolean transB2, Tensor b2) {
        long r = a2 == null ? 0 : a2.dim(-1);
        boolean fused = r > 0 && r <= LORA_ROWS;
        long kk = fused ? k + r : k, elems = m * kk;
        CublasLt.Epilogue epilogue = bias == null ? CublasLt.Epilogue.NONE : CublasLt.Epilogue.BIAS;
        synchronized (this) {
            long ab = operands.atLeast(2 * elems);
            if (fused) {
                launch(CudaKernel.LORA_AUGMENT_TO_BF16, strided(elems), THREADS, ab, arg(a), arg(a2), scale2, m, (int) k, (int) r);
                launch(CudaKernel.LORA_PACK_B_BF16, strided(r * n), THREADS, ptr(b.data()) + 2 * k * n, arg(b2), (int) n, (int) r, transB2 ? 1 : 0);
            } else {
                launch(CudaKernel.CONVERT_F32_TO_BF16, strided((elems + 1) / 2), THREADS, ab, arg(a), elems);
            }
            lt.matmul(false, false, m, n, kk, alpha, ab, kk, ptr(b.data()), n, beta, ptr(c), n, ptr(bias), CublasLt.Types.BF16_IN_F32_OUT,
                    epilogue, stream);
        }
        if (r > 0 && !fused)
            lt.matmul(false, transB2, m, n, r, alpha * scale2, ptr(a2), r, ptr(b2), transB2 ? r : n, 1f, ptr(c), n, 0, CublasLt.Types.F32,
                    CublasLt.Epilogue.NONE, stream);
    }

    /**
     * The LoRA product with its factor: u = a op(f) is formed by the kernel that writes the augmented
     * bf16 operand [a | scale u] (it reads a once for both), then one GEMM over K + r. Above
     * {@link #LORA_ROWS} the generic path (a factor GEMM, then the product).
     */
    @Override
    protected void kGemmBf16LowRank(long m, long n, long k, Tensor a, Bf16Weight.Pack b, float beta, Tensor c, Tensor bias, Tensor u, Tensor f,
            boolean fRowsAreRank, float scale, Tensor b2, boolean transB2) {
        long r = u.dim(-1);
        if (r > LORA_ROWS || m == 0) {
            super.kGemmBf16LowRank(m, n, k, a, b, beta, c, bias, u, f, fRowsAreRank, scale, b2, transB2);
            return;
        }
        long kk = k + r;
        CublasLt.Epilogue epilogue = bias == null ? CublasLt.Epilogue.NONE : CublasLt.Epilogue.BIAS;
        synchronized (this) {
            long ab = operands.atLeast(2 * m * kk);
            launch(CudaKernel.LORA_AUGMENT_LOWRANK_TO_BF16, grid(Math.min(MAX_BLOCKS, (m + 15) / 16)), 128, ab, arg(u), arg(a), arg(f),
                    fRowsAreRank ? 1 : 0, scale, m, (int) k, (int) r);
            launch(CudaKernel.LORA_PACK_B_BF16, strided(r * n), THREADS, ptr(b.data()) + 2 * k * n, arg(b2), (int) n, (int) r, transB2 ? 1 : 0);
            lt.matmul(false, false, m, n, kk, 1f, ab, kk, ptr(b.data()), n, beta, ptr(c), n, ptr(bias), CublasLt.Types.BF16_IN_F32_OUT,
                    epilogue, stream);
        }
    }

    // ---------------------------------------------------------------- forward ops

    @Override
    protected void kLayernormForward(Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x, Tensor residual, Tensor gamma,
            Tensor beta, long rows, long cols, float eps) {
        if (cols > 8L * 1024) throw new IllegalArgumentException("layernormForward on CUDA: rows of at most 8192, got " + cols);
        launch(CudaKernel.LAYERNORM_FORWARD_F32, grid(rows), rowThreads(cols), arg(out), arg(mean), arg(rstd), arg(sum), arg(x), arg(residual),
                arg(gamma), arg(beta), (int) cols, eps);
    }

    @Override
    protected void kBiasGeluForward(Tensor out, Tensor x, Tensor bias, long rows, long cols) {
        launch(CudaKernel.BIAS_GELU_FORWARD_F32, strided(rows * cols / (cols % 4 == 0 ? 4 : 1)), THREADS, arg(out), arg(x), arg(bias), rows,
                (int) cols);
    }

    @Override
    protected void kSoftmaxForward(Tensor y, Tensor x, long rows, long cols) {
        if (cols > 8L * 1024) throw new IllegalArgumentException("softmaxForward on CUDA: rows of at most 8192, got " + cols);
        launch(CudaKernel.SOFTMAX_FORWARD_F32, grid(rows), rowThreads(cols), arg(y), arg(x), (int) cols);
    }

    @Override
    protected void kAttentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq, long heads, long headDim,
            float scale, Dropout dropout) {
        if (probs != null) throw notYet(Op.ATTENTION_PROBS);
        if (headDim > 128) throw new IllegalArgumentException("attentionForward on CUDA: head dimension at most 128, got " + headDim);
        onThisThread();
        if (precision == Precision.MIXED && (headDim == 32 || headDim == 64 || headDim == 128)) {
            CudaKernel kernel = CudaKernel.valueOf("ATTENTION_FORWARD_TC_D" + headDim + "_F32");
            launch(kernel, new int[] {(int) ((seq + 63) / 64), (int) heads, (int) batch}, new int[] {128, 1, 1}, 0, 
                    arg(out), arg(qkv), arg(mask), (int) seq, (int) heads, scale, dropout.key(), dropout.threshold(), dropout.scale());
        } else {
            launch(CudaKernel.ATTENTION_FORWARD_F32, new int[] {(int) ((seq + 7) / 8), (int) heads, (int) batch},
                    new int[] {THREADS, 1, 1}, 0, arg(out), arg(qkv), arg(mask), (int) seq, (int) heads, (int) headDim, scale, dropout.key(),
                    dropout.threshold(), dropout.scale());
        }
    }

    @Override
    protected int kEmbeddingForward(Tensor out, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe, Tensor wtt, long batch,
            long seq, long dim) {
        if (posIds != null) throw notYet(Op.POSITION_IDS);
        if (seq > wpe.dim(0)) return 1; // ids are not read back: one out of its table gets a NaN row (callers check host ids first)
        launch(CudaKernel.EMBEDDING_FORWARD_F32, grid(batch * seq), THREADS, arg(out), arg(ids), arg(typeIds), arg(wte), arg(wpe), arg(wtt),
                (int) seq, (int) dim, (int) wte.dim(0), wtt == null ? 0 : (int) wtt.dim(0));
        return 0;
    }

    // ---------------------------------------------------------------- backward ops, losses, optimizer

    @Override
    protected void kBiasBackward(Tensor dbias, Tensor dy, long rows, long cols) {
        onThisThread();
        int slices = (int) Math.max(1, Math.min(1024, rows / 64));
        launch(CudaKernel.BIAS_BACKWARD_F32, new int[] {(int) ((cols + 31) / 32), slices, 1}, new int[] {32, 8, 1}, 0,
                arg(dbias), arg(dy), rows, (int) cols);
    }

    @Override
    protected void kLayernormBackward(Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor x, Tensor mean, Tensor rstd, Tensor gamma,
            long rows, long cols, boolean accumulate) {
        if (cols > 8L * 1024) throw new IllegalArgumentException("layernormBackward on CUDA: rows of at most 8192, got " + cols);
        launch(CudaKernel.LAYERNORM_BACKWARD_F32, grid(rows), rowThreads(cols), arg(dx), arg(dgamma), arg(dbeta), arg(dy), arg(x), arg(mean),
                arg(rstd), arg(gamma), (int) cols, accumulate ? 1 : 0);
    }

    @Override
    protected void kBiasGeluBackward(Tensor dx, Tensor dbias, Tensor dy, Tensor x, Tensor bias, long rows, long cols) {
        launch(CudaKernel.BIAS_GELU_BACKWARD_F32, strided(rows * cols), THREADS, arg(dx), arg(dy), arg(x), arg(bias), rows, (int) cols);
        if (dbias != null) kBiasBackward(dbias, dx, rows, cols);
    }

    @Override
    protected void kSoftmaxBackward(Tensor dx, Tensor dy, Tensor y, long rows, long cols) {
        if (cols > 8L * 1024) throw new IllegalArgumentException("softmaxBackward on CUDA: rows of at most 8192, got " + cols);
        launch(CudaKernel.SOFTMAX_BACKWARD_F32, grid(rows), rowThreads(cols), arg(dx), arg(dy), arg(y), (int) cols);
    }

    /** A CTA per 32 x 32 block. */
    @Override
    protected void kBlockDot(Tensor out, Tensor w, Tensor g, long rows, long cols) {
        onThisThread();
        int b = BlockSparseWeight.BLOCK;
        launch(CudaKernel.BLOCK_DOT_F32, new int[] {(int) (cols / b), (int) (rows / b), 1}, new int[] {THREADS, 1, 1}, 0,
                arg(out), arg(w), arg(g), cols);
    }

    @Override
    protected void kGroupDot(Tensor out, Tensor x, Tensor dx, long batch, long seq, long groups, long width /* per group */) {
        onThisThread();
        launch(CudaKernel.GROUP_DOT_F32, new int[] {(int) groups, (int) batch, 1}, new int[] {THREADS, 1, 1}, 0,
                arg(out), arg(x), arg(dx), (int) seq, (int) groups, (int) width);
    }

    @Override
    protected void kDropout(Tensor out, Tensor in, long n, Dropout dropout, boolean accumulate) {
        launch(CudaKernel.DROPOUT_F32, strided(n), THREADS, arg(out), arg(in), n, dropout.key(), dropout.threshold(), dropout.scale(),
                accumulate ? 1 : 0);
    }

    @Override
    protected void kEmbeddingBackward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor posIds, Tensor typeIds,
            long batch, long seq, long dim) {
        if (posIds != null) throw notYet(Op.POSITION_IDS);
        launch(CudaKernel.EMBEDDING_BACKWARD_F32, grid(batch * seq), THREADS, arg(dwte), arg(dwpe), arg(dwtt), arg(dout), arg(ids), arg(typeIds),
                (int) seq, (int) dim, dwte != null ? (int) dwte.dim(0) : 0, dwtt != null ? (int) dwtt.dim(0) : 0);
    }

    @Override
    protected void kMeanPoolForward(Tensor out, Tensor x, Tensor mask, long batch, long seq, long dim) {
        launch(CudaKernel.MEAN_POOL_FORWARD_F32, grid(batch), THREADS, arg(out), arg(x), arg(mask), (int) seq, (int) dim);
    }

    @Override
    protected void kMeanPoolBackward(Tensor dx, Tensor dout, Tensor mask, long batch, long seq, long dim) {
        launch(CudaKernel.MEAN_POOL_BACKWARD_F32, grid(batch), THREADS, arg(dx), arg(dout), arg(mask), (int) seq, (int) dim);
    }

    /**
     * Flash-style (probabilities recomputed, nothing [S, S] kept from forward) on CUDA cores: a pass
     * per query row writes P and dS to a scratch pair and dQ, a pass per key row reads them for dK
     * and dV (cuda-kernels/attention_backward.cu). The scratch is 8 B H S^2 bytes, kept between calls.
     */
    @Override
    protected void kAttentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq, long heads,
            long headDim, float scale, Dropout dropout) {
        if (probs != null) throw notYet(Op.ATTENTION_PROBS);
        if (headDim > 128) throw new IllegalArgumentException("attentionBackward on CUDA: head dimension at most 128, got " + headDim);
        long square = batch * heads * seq * seq;
        onThisThread();
        if (precision == Precision.MIXED && tuning.tensorCoreAttentionBackward && seq % 2 == 0 && (headDim == 32 || headDim == 64 || headDim == 128)) {
            synchronized (this) { // bf16 P and dS between the passes
                long p = attention.atLeast(4 * square), ds = p + 2 * square;
                int[] grid = {(int) ((seq + 63) / 64), (int) heads, (int) batch}, block = {128, 1, 1};
                CudaKernel rows = CudaKernel.valueOf("ATTENTION_BACKWARD_ROWS_TC_D" + headDim), cols = CudaKernel.valueOf(
                        "ATTENTION_BACKWARD_COLS_TC_D" + headDim);
                launch(rows, grid, block, 0, arg(dqkv), p, ds, arg(qkv), arg(dout), arg(mask), (int) seq, (int) heads, scale, dropout.key(),
                        dropout.threshold(), dropout.scale());
                launch(cols, grid, block, 0, arg(dqkv), p, ds, arg(qkv), arg(dout), (int) seq, (int) heads, scale);
            }
            return;
        }
        synchronized (this) {
            long p = attention.atLeast(8 * square), ds = p + 4 * square;
            int[] grid = {(int) ((seq + 7) / 8), (int) heads, (int) batch}, block = {THREADS, 1, 1};
            launch(CudaKernel.ATTENTION_BACKWARD_ROWS_F32, grid, block, 0, arg(dqkv), p, ds, arg(qkv),
                    arg(dout), arg(mask), (int) seq, (int) heads, (int) headDim, scale, dropout.key(), dropout.threshold(), dropout.scale());
            launch(CudaKernel.ATTENTION_BACKWARD_COLS_F32, grid, block, 0, arg(dqkv), p, ds, arg(qkv),
                    arg(dout), (int) seq, (int) heads, (int) headDim, scale);
        }
    }

    /**
     * Nothing read back: a label outside the classes gives its row a NaN loss (the trainer checks labels before the upload).
     * At least one block: an empty batch still writes its mean (0), and a grid of 0 blocks is a launch error.
     */
    @Override
    protected int kCrossEntropyForward(Tensor losses, Tensor mean, Tensor logits, Tensor labels, long n, long classes) {
        launch(CudaKernel.CROSS_ENTROPY_FORWARD_F32, grid(Math.max(1, (n + 7) / 8)), THREADS, arg(losses), arg(logits), arg(labels), (int) n, (int) classes);
        launch(CudaKernel.LOSS_MEAN_F32, grid(1), THREADS, arg(mean), arg(losses), arg(labels), (int) n);
        return 0;
    }

    /** Each block counts the batch's labels itself: no read-back. */
    @Override
    protected void kCrossEntropyBackward(Tensor dlogits, Tensor logits, Tensor labels, long n, long classes, float dloss) {
        launch(CudaKernel.CROSS_ENTROPY_BACKWARD_F32, grid(Math.max(1, (n + 7) / 8)), THREADS, arg(dlogits), arg(logits), arg(labels), (int) n, (int) classes,
                dloss);
    }

    @Override
    protected void kMseForward(Tensor pred, Tensor target, long n, Tensor mean) {
        launch(CudaKernel.MSE_FORWARD_F32, grid(1), THREADS, arg(mean), arg(pred), arg(target), n);
    }

    @Override
    protected void kMseBackward(Tensor dpred, Tensor pred, Tensor target, long n, float dloss) {
        launch(CudaKernel.MSE_BACKWARD_F32, strided(n), THREADS, arg(dpred), arg(pred), arg(target), n, n == 0 ? 0f : 2f * dloss / n);
    }

    @Override
    protected void kDistillationBackward(Tensor dStudent, Tensor student, Tensor teacher, long rows, long cols, float temperature, float weight) {
        launch(CudaKernel.DISTILLATION_BACKWARD_F32, strided(rows), THREADS, arg(dStudent), arg(student), arg(teacher), (int) rows, (int) cols,
                temperature, weight);
    }

    @Override
    protected void kHiddenMatchBackward(Tensor dStudent, Tensor student, Tensor teacher, Tensor mask, float weight) {
        long rows = student.dim(0) * student.dim(1);
        // every block counts the batch's real tokens itself: a few blocks per SM, not one per 8 rows (rows^2 / 8 mask reads)
        launch(CudaKernel.HIDDEN_MATCH_BACKWARD_F32, grid(Math.max(1, Math.min(SPREAD_BLOCKS, (rows + 7) / 8))), THREADS, arg(dStudent), arg(student),
                arg(teacher), arg(mask), (int) rows, (int) student.dim(2), weight);
    }

    /** The sum of squares into a device double, then one thread decides the scale: no read-back. */
    @Override
    protected void kClipScale(java.util.Collection<Tensor> grads, float maxNorm, Tensor loss, long step, Tensor state) {
        onThisThread();
        synchronized (this) {
            long total = sumSquares(grads);
            launch(CudaKernel.CLIP_SCALE_F32, grid(1), new int[] {32, 1, 1}, 0, arg(state), total, arg(loss), maxNorm, (float) step);
        }
    }

    @Override
    protected void kAdamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, long n, AdamWConfig cfg, long step, float gradScale) {
        kAdamwStepMany(java.util.List.<Tensor[]>of(new Tensor[] {param, grad, m, v}), cfg, step, gradScale, null);
    }

    /** One launch for all tensors: a table of {param, grad, m, v, n} uploaded per step, blockIdx.y picks the tensor. */
    @Override
    protected void kAdamwStepMany(java.util.List<Tensor[]> tensors, AdamWConfig cfg, long step, float gradScale, Tensor scaleAt) {
        int count = tensors.size();
        long largest = 0;
        long[] rows = new long[5 * count]; // {param, grad, m, v, n} per tensor
        for (int i = 0; i < count; i++) {
            Tensor[] t = tensors.get(i);
            for (int j = 0; j < 4; j++) rows[5 * i + j] = ptr(t[j]);
            rows[5 * i + 4] = t[0].numel();
            largest = Math.max(largest, t[0].numel());
        }
        double b1 = cfg.beta1(), b2 = cfg.beta2();
        float invSqrtBc2 = (float) (1.0 / Math.sqrt(1.0 - Math.pow(b2, step)));
        float stepSize = (float) (cfg.lr() / (1.0 - Math.pow(b1, step))), decay = (float) (1.0 - cfg.lr() * cfg.weightDecay());
        onThisThread();
        synchronized (this) {
            long dTable = table.atLeast(Math.max(4096, 8L * rows.length));
            try (Arena a = Arena.ofConfined()) {
                MemorySegment host = a.allocateFrom(ValueLayout.JAVA_LONG, rows);
                if (!staging.upload(dTable, host, 8L * rows.length)) {
                    cu.copyToDevice(dTable, host, 8L * rows.length, stream);
                    cu.streamSynchronize(stream);
                }
            }
            int blocks = (int) Math.max(1, Math.min(1024, (largest + THREADS - 1) / THREADS));
            launch(CudaKernel.ADAMW_MULTI_F32, new int[] {blocks, count, 1}, new int[] {THREADS, 1, 1}, 0, dTable,
                    (float) b1, (float) b2, (float) (1.0 - b1), (float) (1.0 - b2), invSqrtBc2, stepSize, decay, (float) cfg.eps(), gradScale,
                    arg(scaleAt));
        }
    }

    @Override
    protected double kSumOfSquares(Tensor x, long n) {
        return kSumOfSquaresMany(java.util.List.of(x));
    }

    /** One device double accumulates every tensor's partial sums; one read-back. */
    @Override
    protected double kSumOfSquaresMany(java.util.Collection<Tensor> xs) {
        onThisThread();
        synchronized (this) {
            long total = sumSquares(xs);
            try (Arena a = Arena.ofConfined()) {
                MemorySegment host = a.allocate(ValueLayout.JAVA_DOUBLE);
                cu.copyToHost(host, total, 8, stream);
                cu.streamSynchronize(stream);
                return host.get(ValueLayout.JAVA_DOUBLE, 0);
            }
        }
    }

    /** Every tensor's sum of squares into one device double (the table buffer's first 8 bytes); returns its address. */
    private long sumSquares(java.util.Collection<Tensor> xs) {
        long total = table.atLeast(4096);
        cu.fill32(total, 0, 2, stream);
        for (Tensor x : xs)
            if (x.numel() > 0) launch(CudaKernel.SUM_SQUARES_F32, strided(x.numel()), THREADS, total, arg(x), x.numel());
        return total;
    }

    // ---------------------------------------------------------------- 2:4 semi-structured weights

    /** y [m, n] = x [m, k] W'^T + bias on the sparse tensor cores (x rounded to bf16, fp32 sums). */
    @Override
    protected void kSparse24Linear(Tensor y, Tensor x, Sparse24Weight w, Tensor bias) {
        long m = x.numel() / w.inFeatures();
        synchronized (this) {
            long n = m * w.inFeatures(), xb = operands.atLeast(2 * n);
            launch(CudaKernel.CONVERT_F32_TO_BF16, strided((n + 1) / 2), THREADS, xb, arg(x), n);
            CudaKernel kernel = tuning.sparse24Layout == 0 ? CudaKernel.SPARSE24_LINEAR_TC_L0 : CudaKernel.SPARSE24_LINEAR_TC_L1;
            launch(kernel, new int[] {(int) (w.outFeatures() / 64), (int) ((m + 63) / 64), 1}, new int[] {128, 1, 1}, 0, arg(y), xb,
                    arg(w.values()), arg(w.meta()), arg(bias), m, (int) w.outFeatures(), (int) w.inFeatures());
        }
    }

    // ---------------------------------------------------------------- block-sparse weights

    /** Mixed: the kept blocks in bf16 (half the memory, the tensor cores' operand); fp32: as they are. */
    @Override
    protected DType kBlockSparseValueType() {
        return precision == Precision.MIXED ? DType.BF16 : DType.F32;
    }

    /**
     * The structure (rowptr, colidx) on the host from the mask, uploaded; each kept block gathered
     * from W on the device as [32 n][32 k] of the packed operand (W, or W^T when transposed).
     */
    @Override
    protected void kBlockSparsePack(Tensor w, byte[] mask, boolean transposed, Tensor values, Tensor rowptr, Tensor colidx) {
        int b = BlockSparseWeight.BLOCK, ob = (int) (w.dim(0) / b), ib = (int) (w.dim(1) / b);
        int rows = transposed ? ib : ob, cols = transposed ? ob : ib, kept = 0;
        int[] rp = new int[rows + 1], ci = new int[(int) colidx.numel()];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++)
                if (mask[transposed ? c * ib + r : r * ib + c] != 0) ci[kept++] = c;
            rp[r + 1] = kept;
        }
        onThisThread();
        try (Arena a = Arena.ofConfined()) {
            cu.copyToDevice(ptr(rowptr), a.allocateFrom(ValueLayout.JAVA_INT, rp), 4L * rp.length, stream);
            cu.copyToDevice(ptr(colidx), a.allocateFrom(ValueLayout.JAVA_INT, ci), 4L * ci.length, stream);
            cu.streamSynchronize(stream);
        }
        if (kept == 0 || values == null) return; // nothing kept, or the structure only
        CudaKernel kernel = values.dtype() == DType.BF16 ? CudaKernel.BSR_PACK_BF16 : CudaKernel.BSR_PACK_F32;
        launch(kernel, grid(kept), new int[] {32, 8, 1}, 0, arg(values), arg(w), w.dim(1), arg(rowptr), arg(colidx),
                rows, transposed ? 1 : 0);
    }

    /** Grid (block-rows of P, 128 tokens); mixed: x in bf16 first (the tensor cores' operand, re-read by every block-row). */
    @Override
    protected void kBlockSparseLinear(Tensor y, Tensor x, BlockSparseWeight.Pack p, Tensor bias, float beta, Tensor u, Tensor ltensor, float scale,
            boolean perBlock) {
        long m = x.numel() / p.k();
        if (m == 0) return;
        int r = u == null ? 0 : (int) ltensor.dim(0), rows = (int) (p.n() / BlockSparseWeight.BLOCK);
        int[] grid = {rows, (int) ((m + 127) / 128), 1}, block = {128, 1, 1};
        long values = p.keptBlocks() == 0 ? 0 : ptr(p.values()); // 0: no product, the low-rank term alone
        onThisThread();
        if (kBlockSparseValueType() == DType.F32) {
            launch(CudaKernel.BSR_LINEAR_F32, grid, block, 0, arg(y), arg(x), values, arg(p.rowptr()), arg(p.colidx()),
                    arg(bias), beta, m, rows * BlockSparseWeight.BLOCK, (int) p.k(), arg(u), arg(ltensor), r, scale, perBlock ? 1 : 0);
            return;
        }
        synchronized (this) {
            long n = m * p.k(), xb = values == 0 ? 0 : operands.atLeast(2 * n);
            if (values != 0) launch(CudaKernel.CONVERT_F32_TO_BF16, strided((n + 1) / 2), THREADS, xb, arg(x), n);
            BlockSparseKernel kernel = u != null || values == 0 ? BlockSparseKernel.ROWS1 : tuning.blockSparseKernel.fitting(rows);
            if (kernel != BlockSparseKernel.ROWS1) { // the plain product: X tiles shared by 4 or 8 block-rows
                launch(kernel.kernel, new int[] {rows / kernel.rows, grid[1], 1}, new int[] {kernel.threads, 1, 1}, kernel.sharedBytes, arg(y), xb, values, arg(p.rowptr()), arg(p.colidx()), arg(bias), beta, m,
                        rows * BlockSparseWeight.BLOCK, (int) p.k());
                return;
            }
            launch(CudaKernel.BSR_LINEAR_TC, grid, block, 0, arg(y), xb, values, arg(p.rowptr()), arg(p.colidx()),
                    arg(bias), beta, m, rows * BlockSparseWeight.BLOCK, (int) p.k(), arg(u), arg(ltensor), r, scale, perBlock ? 1 : 0);
        }
    }

    /**
     * The kernels of plain block-sparse products (no rank-r term), by block-rows per CTA: one
     * (bsr_linear_tc, also the one with a rank-r term), 4 or 8 sharing each X tile, and 8 with every
     * warp sharing each column's work and cp.async three columns ahead (ROWS8_STAGED). Shared memory:
     * two or three stages of the X tile [128][40] and the group's blocks [32][40], bf16.
     */
    public enum BlockSparseKernel {
        ROWS1(CudaKernel.BSR_LINEAR_TC, 1, 128, 0), ROWS4(CudaKernel.BSR_LINEAR_TC4, 4, 256, 2 * (128 + 4 * 32) * 40 * 2),
        ROWS8(CudaKernel.BSR_LINEAR_TC8, 8, 512, 2 * (128 + 8 * 32) * 40 * 2),
        ROWS8_STAGED(CudaKernel.BSR_LINEAR_TC8S, 8, 512, 3 * (128 + 8 * 32) * 40 * 2);

        final CudaKernel kernel;
        final int rows, threads, sharedBytes;

        BlockSparseKernel(CudaKernel kernel, int rows, int threads, int sharedBytes) {
            this.kernel = kernel;
            this.rows = rows;
            this.threads = threads;
            this.sharedBytes = sharedBytes;
        }

        /** This kernel when the block-rows come in its groups, else the next smaller that fits. */
        BlockSparseKernel fitting(int blockRows) {
            if (blockRows % rows == 0) return this;
            return blockRows % 4 == 0 ? ROWS4 : ROWS1;
        }
    }

    /**
     * The choices among kernels that compute the same thing, for the GPU kit to check and time each;
     * a run keeps the defaults. Set before a run (each is read at every launch).
     */
    public static final class Tuning {
        private volatile BlockSparseKernel blockSparseKernel = BlockSparseKernel.ROWS8_STAGED;
        private volatile boolean tensorCoreAttentionBackward = true;
        private volatile int sparse24Layout;

        /**
         * The plain block-sparse products' kernel (a rank-r term always takes ROWS1); default ROWS8_STAGED,
         * the least X traffic and the most warps busy by the napkin math (bench/RESULTS.md), until measured.
         */
        public BlockSparseKernel blockSparseKernel() {
            return blockSparseKernel;
        }

        public void blockSparseKernel(BlockSparseKernel kernel) {
            blockSparseKernel = kernel;
        }

        /** Whether mixed precision's attention backward runs on the tensor cores (default) or the fp32 CUDA-core passes. */
        public boolean tensorCoreAttentionBackward() {
            return tensorCoreAttentionBackward;
        }

        public void tensorCoreAttentionBackward(boolean on) {
            tensorCoreAttentionBackward = on;
        }

        /** Which of the two readings of mma.sp's metadata lanes the 2:4 product takes (sparse24.cu; the kit finds the hardware's). */
        public int sparse24Layout() {
            return sparse24Layout;
        }

        public void sparse24Layout(int layout) {
            if (layout != 0 && layout != 1) throw new IllegalArgumentException("2:4 metadata layout is 0 or 1, got " + layout);
            sparse24Layout = layout;
        }
    }

    private final Tuning tuning = new Tuning();

    /** This backend's kernel choices (see {@link Tuning}). */
    public Tuning tuning() {
        return tuning;
    }

    @Override
    protected void kBlockLowRank(Tensor u, Tensor x, Tensor a) {
        long k = a.dim(1), m = x.numel() / k;
        launch(CudaKernel.BSR_BLOCK_LOWRANK, strided(u.numel()), THREADS, arg(u), arg(x), arg(a), m, (int) k, (int) a.dim(0));
    }

    /** Block-rows x up to 8 splits of the tokens (atomic adds into d). */
    @Override
    protected void kBlockLowRankGradient(Tensor d, Tensor dy, BlockSparseWeight.Pack p, Tensor u, long r, float scale) {
        long m = dy.numel() / p.n();
        if (m == 0) return;
        int rows = (int) (p.n() / BlockSparseWeight.BLOCK), splits = (int) Math.max(1, Math.min(8, m / 256));
        onThisThread();
        launch(CudaKernel.BSR_LOWRANK_GRAD, new int[] {rows, splits, 1}, new int[] {256, 1, 1}, 0, arg(d), arg(dy),
                arg(p.rowptr()), arg(p.colidx()), arg(u), m, (int) p.n(), (int) p.k(), (int) r, scale);
    }

}
