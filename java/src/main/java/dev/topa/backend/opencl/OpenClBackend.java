package dev.topa.backend.opencl;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

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
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The ops on an OpenCL device (a GPU of any vendor, or the CPU through PoCL, which is how CI runs
 * every device op): topa's kernels in OpenCL C (opencl-kernels/, one file per op family, built for
 * the device when the backend opens) and CLBlast's GEMMs, all on one in-order queue, so ops are
 * ordered without host synchronisation; small uploads go through staging buffers without waiting,
 * a copy to the host waits for the queue. Activations fp32;
 * weights fp32 (CLBlast's products) or, asked for, bf16 (topa's own product: half the memory, fp32
 * sums); block-sparse weights keep only their kept blocks and multiply only those. Not run here:
 * pre-packed fp32 weights (W is CLBlast's operand as it is) and 2:4 weights (a tensor-core format). The kernels are written for correctness first -- a work-item per row or per
 * element -- and are not tuned for any GPU.
 */
public final class OpenClBackend extends Backend {
    /** The kernel sources in build order (common helpers first). */
    static final List<String> SOURCES = List.of("common", "convert", "bias", "layernorm", "gelu", "softmax", "attention", "dropout", "embedding",
            "pool", "loss", "adamw", "importance", "blocksparse", "gemm_bf16");
    /** The local size sum_squares reduces over (TOPA_SUM_LOCAL) and the work-groups it is launched with. */
    private static final int SUM_LOCAL = 64, SUM_GROUPS = 64;

    private final OpenCl cl;
    private final int index;
    private final long device, context, queue, program;
    private final OpenClMemory memory;
    private final ClBlast blas;
    private final String name;
    private final boolean fp64;
    private final Map<String, long[]> kernels = new HashMap<>(); // name -> {kernel, checked argument count}
    private final Arena arena = Arena.ofShared();
    private final MemorySegment queueRef, argValue, globalSize, localSize;
    private long scratchAddress, scratchBytes; // attention backward's P and dS, sums of squares; grown as needed

    /**
     * Host-to-device copies that do not drain the queue: the bytes go into one of a ring of host
     * buffers and a non-blocking write is queued from there, so the caller may reuse its memory at
     * once and the device keeps running what is queued. A buffer is reused after the event of its
     * last write (normally long done: SLOTS uploads later). A step's inputs (ids, types, mask,
     * labels) go this way; larger copies are blocking writes.
     */
    private final class Staging {
        static final int SLOTS = 16;
        static final long SLOT_BYTES = 1 << 20;
        private final MemorySegment[] slot = new MemorySegment[SLOTS];
        private final long[] event = new long[SLOTS];
        private int next;

        /** False when the copy is too large for a slot (the caller writes blocking). */
        synchronized boolean upload(long dst, MemorySegment src, long bytes) {
            if (bytes > SLOT_BYTES) return false;
            int i = next;
            next = (next + 1) % SLOTS;
            if (slot[i] == null) slot[i] = arena.allocate(SLOT_BYTES, 64);
            if (event[i] != 0) cl.waitAndRelease(event[i]);
            event[i] = 0;
            MemorySegment.copy(src, 0, slot[i], 0, bytes);
            Buf d = raw(dst, 1);
            event[i] = cl.writeAsync(queue, d.mem(), d.offset(), slot[i], bytes);
            return true;
        }

        synchronized void drain() {
            for (int i = 0; i < SLOTS; i++)
                if (event[i] != 0) {
                    cl.waitAndRelease(event[i]);
                    event[i] = 0;
                }
        }
    }

    private final Staging staging = new Staging();
    private boolean closed;

    private OpenClBackend(OpenCl cl, int index, long device) {
        this.cl = cl;
        this.index = index;
        this.device = device;
        String deviceName = cl.deviceInfo(device, OpenCl.CL_DEVICE_NAME);
        this.fp64 = cl.deviceInfo(device, OpenCl.CL_DEVICE_EXTENSIONS).contains("cl_khr_fp64");
        context = cl.createContext(device);
        queue = cl.createQueue(context, device);
        program = cl.buildProgram(context, device, source(), "-cl-std=CL1.2");
        memory = new OpenClMemory(cl, context, Device.opencl(index));
        blas = ClBlast.get();
        queueRef = arena.allocateFrom(JAVA_LONG, queue);
        argValue = arena.allocate(8, 8);
        globalSize = arena.allocate(JAVA_LONG);
        localSize = arena.allocate(JAVA_LONG);
        name = "opencl:" + index + "-" + deviceName.toLowerCase(Locale.ROOT).replaceAll("[^a-z0-9]+", "-").replaceAll("^-|-$", "");
    }

    /**
     * The backend on OpenCL device index (devices of every platform, in the loader's order; {@link
     * #devices()} lists them), or an error before any work saying why there is none.
     */
    public static OpenClBackend open(int index) {
        OpenCl cl = OpenCl.get().orElseThrow(() -> new OpenClException("no OpenCL device: " + OpenCl.unavailableReason()));
        List<Long> all = new ArrayList<>();
        for (long p : cl.platforms()) all.addAll(cl.devices(p));
        if (all.isEmpty()) throw new OpenClException("no OpenCL device: the platforms have no device");
        if (index < 0 || index >= all.size())
            throw new OpenClException("no OpenCL device " + index + ": this machine has " + all.size() + " (" + String.join("; ", devices()) + ")");
        return new OpenClBackend(cl, index, all.get(index));
    }

    /** "index: device (platform)" for every OpenCL device here; empty without OpenCL. */
    public static List<String> devices() {
        List<String> out = new ArrayList<>();
        OpenCl cl = OpenCl.get().orElse(null);
        if (cl == null) return out;
        for (long p : cl.platforms())
            for (long d : cl.devices(p))
                out.add(out.size() + ": " + cl.deviceInfo(d, OpenCl.CL_DEVICE_NAME) + " (" + cl.platformInfo(p, OpenCl.CL_PLATFORM_NAME) + ", "
                        + cl.deviceInfo(d, OpenCl.CL_DEVICE_VERSION) + ")");
        return out;
    }

    /** The concatenated kernel sources (resources under /opencl/, or the folder -Dtopa.opencl.kernels names). */
    static String source() {
        StringBuilder sb = new StringBuilder();
        String dir = System.getProperty("topa.opencl.kernels");
        for (String f : SOURCES) {
            try (InputStream in = dir != null ? java.nio.file.Files.newInputStream(java.nio.file.Path.of(dir, f + ".cl"))
                    : OpenClBackend.class.getResourceAsStream("/opencl/" + f + ".cl")) {
                if (in == null) throw new IOException(f + ".cl is not in this build");
                sb.append("// ---- ").append(f).append(".cl\n").append(new String(in.readAllBytes(), StandardCharsets.UTF_8)).append('\n');
            } catch (IOException e) {
                throw new UncheckedIOException("OpenCL kernels: " + e.getMessage(), e);
            }
        }
        return sb.toString();
    }

    @Override
    public Device device() {
        return memory.device();
    }

    @Override
    public String name() {
        return name;
    }

    /**
     * The optional ops not run here: pre-packed fp32 weights (CLBlast takes W as it is, so a pack
     * would only be a second fp32 copy of every weight) and 2:4 weights (a tensor-core format).
     */
    public static final Set<Op> UNSUPPORTED = Set.of(Op.PACKED_WEIGHTS, Op.SPARSE24);

    @Override
    public boolean supports(Op op) {
        return !UNSUPPORTED.contains(op);
    }

    @Override
    public void synchronize() {
        cl.finish(queue);
    }

    @Override
    public OpenClMemory deviceMemory() {
        return memory;
    }

    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        cl.finish(queue);
        staging.drain();
        freeScratch();
        memory.release();
        for (long[] k : kernels.values()) cl.releaseKernel(k[0]);
        cl.releaseProgram(program);
        cl.releaseQueue(queue);
        cl.releaseContext(context);
        arena.close();
    }

    // ---------------------------------------------------------------- launches

    /** A kernel argument: a tensor as (buffer, element offset), or a scalar. */
    private record Buf(long mem, long offset) {}

    private Buf t(Tensor x) {
        return x == null ? new Buf(0, 0) : raw(x.data().address(), x.dtype().byteSize());
    }

    /** Raw device bytes at address as elements of elementBytes. */
    private Buf raw(long address, int elementBytes) {
        long[] at = memory.locate(address);
        return new Buf(at[0], at[1] / elementBytes);
    }

    /** Launches kernel over items work-items in work-groups of local (0: 64), after binding args in order. */
    private synchronized void launch(String kernel, long items, int local, Object... args) {
        if (items == 0) return;
        long[] k = kernels.get(kernel);
        if (k == null) {
            k = new long[] {cl.createKernel(program, kernel), 0};
            k[1] = cl.kernelArgCount(k[0]);
            kernels.put(kernel, k);
        }
        int index = 0;
        for (Object a : args) {
            if (a instanceof Buf b) {
                argValue.set(JAVA_LONG, 0, b.mem);
                set(kernel, k[0], index++, 8);
                argValue.set(JAVA_LONG, 0, b.offset);
                set(kernel, k[0], index++, 8);
            } else if (a instanceof Long v) {
                argValue.set(JAVA_LONG, 0, v);
                set(kernel, k[0], index++, 8);
            } else if (a instanceof Integer v) {
                argValue.set(JAVA_INT, 0, v);
                set(kernel, k[0], index++, 4);
            } else if (a instanceof Float v) {
                argValue.set(JAVA_FLOAT, 0, v);
                set(kernel, k[0], index++, 4);
            } else {
                throw new IllegalArgumentException(kernel + ": argument " + index + " is a " + (a == null ? "null" : a.getClass().getSimpleName()));
            }
        }
        if (index != k[1]) throw new IllegalStateException(kernel + " takes " + k[1] + " arguments, the launch gave " + index);
        long groups = local == 0 ? 64 : local;
        globalSize.set(JAVA_LONG, 0, (items + groups - 1) / groups * groups);
        localSize.set(JAVA_LONG, 0, groups);
        int st = cl.enqueue(queue, k[0], globalSize, localSize);
        if (st != 0) throw new OpenClException("clEnqueueNDRangeKernel(" + kernel + ", " + items + ") failed: " + OpenCl.errorName(st), st);
    }

    private void set(String kernel, long k, int index, long bytes) {
        int st = cl.setArg(k, index, bytes, argValue);
        if (st != 0) throw new OpenClException("clSetKernelArg(" + kernel + ", " + index + ") failed: " + OpenCl.errorName(st), st);
    }

    /** In double where the device has cl_khr_fp64. */
    @Override
    public boolean sumsInDouble() {
        return fp64;
    }

    /**
     * Device scratch of at least bytes (attention backward, sums of squares), kept between calls;
     * queue order makes reuse safe. Its bytes count as the device's WORKSPACE.
     */
    private synchronized long scratch(long bytes) {
        if (bytes > scratchBytes) {
            freeScratch(); // forgotten before allocating: an out-of-memory error must not leave the freed block here
            scratchAddress = memory.allocate(bytes);
            scratchBytes = bytes;
            MemoryTracker.of(memory.device()).add(MemoryCategory.WORKSPACE, bytes);
        }
        return scratchAddress;
    }

    private synchronized void freeScratch() {
        if (scratchAddress != 0) {
            memory.free(scratchAddress, scratchBytes);
            MemoryTracker.of(memory.device()).add(MemoryCategory.WORKSPACE, -scratchBytes);
        }
        scratchAddress = scratchBytes = 0;
    }

    // ---------------------------------------------------------------- memory, copies, layout

    @Override
    protected void kCopy(Tensor dst, Tensor src, long bytes) {
        boolean dHost = dst.device().isHostAccessible(), sHost = src.device().isHostAccessible();
        if (dHost && sHost) {
            MemorySegment.copy(src.data(), 0, dst.data(), 0, bytes);
            return;
        }
        if (sHost) {
            long d = dst.data().address();
            if (!staging.upload(d, src.data(), bytes)) write(d, src.data(), bytes);
            return;
        }
        Buf s = raw(src.data().address(), 1);
        if (dHost) {
            cl.read(queue, s.mem(), s.offset(), dst.data(), bytes);
        } else {
            Buf d = raw(dst.data().address(), 1);
            cl.copy(queue, s.mem(), s.offset(), d.mem(), d.offset(), bytes);
        }
    }

    @Override
    protected void kZero(Tensor t) {
        long bytes = t.byteSize(), a = t.data().address();
        if (bytes % 4 != 0) throw new IllegalArgumentException("zero on OpenCL: " + t + " is not whole 32-bit words");
        Buf b = raw(a, 1);
        if (bytes > 0) cl.fill32(queue, b.mem(), b.offset(), bytes, 0);
    }

    @Override
    protected void kConvert(Tensor dst, Tensor src, long n) {
        launch(dst.dtype() == DType.BF16 ? "convert_f32_to_bf16" : "convert_bf16_to_f32", n, 0, t(dst), t(src), n);
    }

    @Override
    protected void kTranspose(Tensor out, Tensor in, long rows, long cols, float beta) {
        launch("transpose", rows * cols, 0, t(out), t(in), rows, cols, beta);
    }

    @Override
    protected void kBroadcastRows(Tensor y, Tensor row, long rows, long cols) {
        launch("broadcast_rows", rows * cols, 0, t(y), t(row), rows, cols);
    }

    @Override
    protected void kZeroOffDiagonal(Tensor x, long rows, long cols, int blocks) {
        launch("zero_off_diagonal", rows * cols, 0, t(x), rows, cols, blocks);
    }

    // ---------------------------------------------------------------- products (CLBlast)

    /** C = alpha op(A) op(B) + beta C (+ bias on each row): CLBlast's SGEMM, then the bias pass. */
    private void sgemm(boolean transA, boolean transB, long m, long n, long k, float alpha, Tensor a, long lda, Tensor b, long ldb, float beta,
            Tensor c, long ldc, Tensor bias) {
        if (m == 0 || n == 0) return;
        if (k == 0) { // no product: C = beta C
            launch("scale_matrix", m * n, 0, t(c), m, n, ldc, beta);
        } else {
            Buf ba = t(a), bb = t(b), bc = t(c);
            synchronized (this) {
                blas.sgemm(transA, transB, m, n, k, alpha, ba.mem, ba.offset, lda, bb.mem, bb.offset, ldb, beta, bc.mem, bc.offset, ldc, queueRef);
            }
        }
        if (bias != null) launch("bias_add", m * n, 0, t(c), t(bias), m, n, ldc);
    }

    @Override
    protected void kGemm(boolean transA, boolean transB, long m, long n, long k, float alpha, Tensor a, long lda, Tensor b, long ldb, float beta,
            Tensor c, long ldc, Tensor bias) {
        sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
    }

    /** Two products into one C: the rank-r one accumulates (beta 1). */
    @Override
    protected void kGemmAugmented(boolean transB, long m, long n, long k, Tensor a, Tensor b, long k2, Tensor a2, float scale, boolean transB2,
            Tensor b2, float beta, Tensor c, Tensor bias) {
        sgemm(false, transB, m, n, k, 1f, a, k, b, transB ? k : n, beta, c, n, null);
        sgemm(false, transB2, m, n, k2, scale, a2, k2, b2, transB2 ? k2 : n, 1f, c, n, bias);
    }

    // ---------------------------------------------------------------- bf16 weights (topa's kernel: CLBlast has no bf16 GEMM)

    /** op(B) [k, n] row-major in bf16. */
    @Override
    protected long kBf16PackedSize(long k, long n) {
        return k * n;
    }

    @Override
    protected void kBf16Pack(Tensor w, boolean transposed, long k, long n, Tensor packed) {
        launch("bf16_pack_b", k * n, 0, t(packed), t(w), k, n, transposed ? 1 : 0);
    }

    @Override
    protected void kGemmBf16(long m, long n, long k, float alpha, Tensor a, Bf16Weight.Pack b, float beta, Tensor c, Tensor bias, Tensor a2,
            float scale2, boolean transB2, Tensor b2) {
        long r = a2 == null ? 0 : a2.dim(-1);
        launch("bf16_gemm", (m + 15) / 16 * ((n + 15) / 16) * 256, 256, m, n, k, alpha, t(a), t(b.data()), beta, t(c), t(bias), r, t(a2), scale2,
                transB2 ? 1 : 0, t(b2));
    }

    @Override
    protected void kBiasBackward(Tensor dbias, Tensor dy, long rows, long cols) {
        launch("bias_backward", cols, 0, t(dbias), t(dy), rows, cols);
    }

    // ---------------------------------------------------------------- normalisation, activations

    @Override
    protected void kLayernormForward(Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x, Tensor residual, Tensor gamma, Tensor beta,
            long rows, long cols, float eps) {
        launch("layernorm_forward", rows, 0, t(out), t(mean), t(rstd), t(sum), t(x), t(residual), t(gamma), t(beta), rows, cols, eps);
    }

    @Override
    protected void kLayernormBackward(Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor x, Tensor mean, Tensor rstd, Tensor gamma,
            long rows, long cols, boolean accumulate) {
        launch("layernorm_backward", rows, 0, t(dx), t(dy), t(x), t(mean), t(rstd), t(gamma), rows, cols, accumulate ? 1 : 0);
        if (dgamma != null || dbeta != null)
            launch("layernorm_backward_params", cols, 0, t(dgamma), t(dbeta), t(dy), t(x), t(mean), t(rstd), rows, cols);
    }

    @Override
    protected void kBiasGeluForward(Tensor out, Tensor x, Tensor bias, long rows, long cols) {
        launch("bias_gelu_forward", rows * cols, 0, t(out), t(x), t(bias), rows, cols);
    }

    @Override
    protected void kBiasGeluBackward(Tensor dx, Tensor dbias, Tensor dy, Tensor x, Tensor bias, long rows, long cols) {
        launch("bias_gelu_backward", rows * cols, 0, t(dx), t(dy), t(x), t(bias), rows, cols);
        if (dbias != null) kBiasBackward(dbias, dx, rows, cols);
    }

    @Override
    protected void kSoftmaxForward(Tensor y, Tensor x, long rows, long cols) {
        launch("softmax_forward", rows, 0, t(y), t(x), rows, cols);
    }

    @Override
    protected void kSoftmaxBackward(Tensor dx, Tensor dy, Tensor y, long rows, long cols) {
        launch("softmax_backward", rows, 0, t(dx), t(dy), t(y), rows, cols);
    }

    // ---------------------------------------------------------------- attention, dropout

    private static void headDim(String op, long headDim) {
        if (headDim > 128) throw new IllegalArgumentException(op + " on OpenCL: head dimension at most 128, got " + headDim);
    }

    @Override
    protected void kAttentionForward(Tensor out, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq, long heads, long headDim, float scale,
            Dropout d) {
        headDim("attentionForward", headDim);
        launch("attention_forward", batch * heads * seq, 0, t(out), t(probs), t(qkv), t(mask), batch, seq, heads, headDim, scale, d.key(),
                d.threshold(), d.scale());
    }

    /** Two passes through scratch [B, H, S, S] twice: the dropped probabilities and dS (the query rows' pass, then the key rows'). */
    @Override
    protected void kAttentionBackward(Tensor dqkv, Tensor dout, Tensor probs, Tensor qkv, Tensor mask, long batch, long seq, long heads,
            long headDim, float scale, Dropout d) {
        headDim("attentionBackward", headDim);
        long square = batch * heads * seq * seq;
        synchronized (this) {
            long p = scratch(8 * square), ds = p + 4 * square;
            launch("attention_backward_rows", batch * heads * seq, 0, t(dqkv), raw(p, 4), raw(ds, 4), t(dout), t(probs), t(qkv), t(mask), batch,
                    seq, heads, headDim, scale, d.key(), d.threshold(), d.scale());
            launch("attention_backward_cols", batch * heads * seq, 0, t(dqkv), raw(p, 4), raw(ds, 4), t(dout), t(qkv), batch, seq, heads, headDim,
                    scale);
        }
    }

    @Override
    protected void kDropout(Tensor out, Tensor in, long n, Dropout d, boolean accumulate) {
        launch("dropout", n, 0, t(out), t(in), n, d.key(), d.threshold(), d.scale(), accumulate ? 1 : 0);
    }

    // ---------------------------------------------------------------- embeddings, pooling, importance

    /** Nothing read back: an id out of its table gives its row NaN (callers check host ids before the upload). */
    @Override
    protected int kEmbeddingForward(Tensor out, Tensor ids, Tensor posIds, Tensor typeIds, Tensor wte, Tensor wpe, Tensor wtt, long batch,
            long seq, long dim) {
        launch("embedding_forward", batch * seq * dim, 0, t(out), t(ids), t(posIds), t(typeIds), t(wte), t(wpe), t(wtt), batch * seq, seq, dim,
                wte.dim(0), wpe.dim(0), wtt == null ? 0L : wtt.dim(0));
        return 0;
    }

    @Override
    protected void kEmbeddingBackward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor posIds, Tensor typeIds, long batch,
            long seq, long dim) {
        launch("embedding_backward", dim, 0, t(dwte), t(dwpe), t(dwtt), t(dout), t(ids), t(posIds), t(typeIds), batch * seq, seq, dim);
    }

    @Override
    protected void kMeanPoolForward(Tensor out, Tensor x, Tensor mask, long batch, long seq, long dim) {
        launch("mean_pool_forward", batch * dim, 0, t(out), t(x), t(mask), batch, seq, dim);
    }

    @Override
    protected void kMeanPoolBackward(Tensor dx, Tensor dout, Tensor mask, long batch, long seq, long dim) {
        launch("mean_pool_backward", batch * seq * dim, 0, t(dx), t(dout), t(mask), batch, seq, dim);
    }

    @Override
    protected void kGroupDot(Tensor out, Tensor x, Tensor dx, long batch, long seq, long groups, long width) {
        launch("group_dot", batch * groups, 0, t(out), t(x), t(dx), batch, seq, groups, width);
    }

    @Override
    protected void kBlockDot(Tensor out, Tensor w, Tensor g, long rows, long cols) {
        launch("block_dot", rows / 32 * (cols / 32), 0, t(out), t(w), t(g), rows, cols);
    }

    // ---------------------------------------------------------------- losses, optimizer

    /** Nothing read back: a label outside the classes gives its row a NaN loss (the trainer checks labels before the upload). */
    @Override
    protected int kCrossEntropyForward(Tensor losses, Tensor mean, Tensor logits, Tensor labels, long n, long classes) {
        launch("cross_entropy_forward", n, 0, t(losses), t(logits), t(labels), n, classes);
        launch("loss_mean", 1, 0, t(mean), t(losses), t(labels), n);
        return 0;
    }

    @Override
    protected void kCrossEntropyBackward(Tensor dlogits, Tensor logits, Tensor labels, long n, long classes, float dloss) {
        launch("cross_entropy_backward", n, 0, t(dlogits), t(logits), t(labels), n, classes, dloss);
    }

    @Override
    protected void kMseForward(Tensor pred, Tensor target, long n, Tensor mean) {
        launch("mse_forward", 1, 0, t(mean), t(pred), t(target), n);
    }

    @Override
    protected void kMseBackward(Tensor dpred, Tensor pred, Tensor target, long n, float dloss) {
        launch("mse_backward", n, 0, t(dpred), t(pred), t(target), n, n == 0 ? 0f : 2f * dloss / n);
    }

    @Override
    protected void kDistillationBackward(Tensor dStudent, Tensor student, Tensor teacher, long rows, long cols, float temperature, float weight) {
        launch("distillation_backward", rows, 0, t(dStudent), t(student), t(teacher), rows, cols, temperature, weight);
    }

    @Override
    protected void kHiddenMatchBackward(Tensor dStudent, Tensor student, Tensor teacher, Tensor mask, float weight) {
        long rows = student.dim(0) * student.dim(1);
        launch("hidden_match_backward", rows, 0, t(dStudent), t(student), t(teacher), t(mask), rows, student.dim(2), weight);
    }

    @Override
    protected void kAdamwStep(Tensor param, Tensor grad, Tensor m, Tensor v, long n, AdamWConfig cfg, long step, float gradScale) {
        kAdamwStepMany(List.<Tensor[]>of(new Tensor[] {param, grad, m, v}), cfg, step, gradScale, null);
    }

    /** A launch per tensor, each reading the scale where it lies (nothing read back). */
    @Override
    protected void kAdamwStepMany(List<Tensor[]> tensors, AdamWConfig cfg, long step, float gradScale, Tensor scaleAt) {
        double b1 = cfg.beta1(), b2 = cfg.beta2();
        float invSqrtBc2 = (float) (1.0 / Math.sqrt(1.0 - Math.pow(b2, step)));
        float stepSize = (float) (cfg.lr() / (1.0 - Math.pow(b1, step))), decay = (float) (1.0 - cfg.lr() * cfg.weightDecay());
        for (Tensor[] x : tensors) {
            long n = x[0].numel();
            launch("adamw_step", n, 0, t(x[0]), t(x[1]), t(x[2]), t(x[3]), n, (float) b1, (float) b2, (float) (1.0 - b1), (float) (1.0 - b2),
                    invSqrtBc2, stepSize, decay, (float) cfg.eps(), gradScale, t(scaleAt));
        }
    }

    @Override
    protected double kSumOfSquares(Tensor x, long n) {
        return kSumOfSquaresMany(List.of(x));
    }

    @Override
    protected double kSumOfSquaresMany(Collection<Tensor> xs) {
        synchronized (this) {
            long total = sumSquares(xs);
            try (Arena a = Arena.ofConfined()) {
                MemorySegment host = a.allocate(8);
                Buf b = raw(total, 1);
                cl.read(queue, b.mem(), b.offset(), host, fp64 ? 8 : 4);
                return fp64 ? host.get(ValueLayout.JAVA_DOUBLE, 0) : host.get(ValueLayout.JAVA_FLOAT, 0);
            }
        }
    }

    /** The sum of squares on the device, then one work-item decides the scale: nothing read back. */
    @Override
    protected void kClipScale(Collection<Tensor> grads, float maxNorm, Tensor loss, long step, Tensor state) {
        synchronized (this) {
            long total = sumSquares(grads);
            launch("clip_scale", 1, 0, t(state), raw(total, fp64 ? 8 : 4), t(loss), maxNorm, (float) step);
        }
    }

    /** Every tensor's partial sums of squares (SUM_GROUPS each) into scratch, summed in order; returns the total's address. */
    private long sumSquares(Collection<Tensor> xs) {
        int acc = fp64 ? 8 : 4, count = xs.size();
        long base = scratch((long) acc * (1 + (long) SUM_GROUPS * Math.max(1, count))), partials = base + acc;
        long slot = 0;
        for (Tensor x : xs) {
            launch("sum_squares", (long) SUM_LOCAL * SUM_GROUPS, SUM_LOCAL, raw(partials, acc), slot, t(x), x.numel());
            slot += SUM_GROUPS;
        }
        launch("sum_partials", 1, 0, raw(base, acc), raw(partials, acc), slot);
        return base;
    }

    // ---------------------------------------------------------------- block-sparse weights

    /** The structure (rowptr, colidx) built on the host from the mask and uploaded; the kept blocks gathered from W on the device. */
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
        try (Arena a = Arena.ofConfined()) {
            write(rowptr.data().address(), a.allocateFrom(JAVA_INT, rp), 4L * rp.length);
            if (ci.length > 0) write(colidx.data().address(), a.allocateFrom(JAVA_INT, ci), 4L * ci.length);
        }
        if (kept == 0 || values == null) return;
        launch("bsr_pack", (long) kept * b * b, 0, t(values), t(w), w.dim(1), t(rowptr), t(colidx), (long) rows, transposed ? 1 : 0, (long) kept);
    }

    /** A blocking upload of bytes to device address dst. */
    private void write(long dst, MemorySegment host, long bytes) {
        Buf d = raw(dst, 1);
        cl.write(queue, d.mem(), d.offset(), host, bytes);
    }

    @Override
    protected void kBlockSparseLinear(Tensor y, Tensor x, BlockSparseWeight.Pack p, Tensor bias, float beta, Tensor u, Tensor lt, float scale,
            boolean perBlock) {
        long m = x.numel() / p.k(), r = u == null ? 0 : lt.dim(0), rows = p.n() / BlockSparseWeight.BLOCK;
        launch("bsr_linear", rows * ((m + 31) / 32) * 256, 256, m, p.n(), p.k(), t(x), p.keptBlocks() == 0 ? t(null) : t(p.values()), t(p.rowptr()), t(p.colidx()),
                t(bias), beta, t(y), r, t(u), t(lt), scale, perBlock ? 1 : 0);
    }

    @Override
    protected void kBlockLowRank(Tensor u, Tensor x, Tensor a) {
        long k = a.dim(1), m = x.numel() / k;
        launch("bsr_block_lowrank", u.numel(), 0, t(u), t(x), t(a), m, k, a.dim(0));
    }

    @Override
    protected void kBlockLowRankGradient(Tensor d, Tensor dy, BlockSparseWeight.Pack p, Tensor u, long r, float scale) {
        long m = dy.numel() / p.n();
        if (m == 0) return;
        launch("bsr_lowrank_grad", p.n() * r, 0, t(d), t(dy), t(p.rowptr()), t(p.colidx()), t(u), m, p.n(), p.k(), r, scale);
    }
}
