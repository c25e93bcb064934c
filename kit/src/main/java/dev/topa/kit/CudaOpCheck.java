package dev.topa.kit;

import dev.topa.backend.DenseWeight;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CublasLt;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.backend.cuda.CudaException;
import dev.topa.backend.cuda.CudaKernel;
import dev.topa.backend.cuda.CudaMemory;
import dev.topa.harness.Check;
import dev.topa.tensor.Bf16;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * The GPU kit's kernel check (kit/run.sh): every CUDA kernel of topa_kernels.fatbin against
 * the CPU backend on fresh random inputs, fp32 and bf16 storage, outputs poisoned with NaN before
 * each launch, relative error ||gpu - cpu|| / ||cpu|| against a stated bound (fp32 1e-5; bf16: the
 * CPU sees the same bf16-rounded inputs, bound 1e-2), then the kernels' times (CUDA events, median
 * of 10 back-to-back launches, median of 7) with bytes moved over time. Prints `name: value` lines and a table last;
 * exits 1 if any check fails, 2 without a GPU (reason printed).
 */
public final class CudaOpCheck {
    private final CudaDriver cu;
    private final long context, module, stream;
    private final CpuBackend cpu = CpuBackend.create();
    private final SplittableRandom rnd = new SplittableRandom(20261127);
    private final List<String> table = new ArrayList<>();
    private boolean failed;

    private CudaOpCheck(CudaDriver cu) throws IOException {
        this.cu = cu;
        context = cu.useDevice(cu.device(0));
        module = cu.loadModule(CudaBackend.kernelImage());
        stream = cu.streamCreate();
    }

    public static void main(String[] args) throws Exception {
        System.exit(run());
    }

    /** Runs every check; 0 when all match, 1 when one does not, 2 without a GPU. */
    public static int run() throws IOException {
        var driver = CudaDriver.get();
        if (driver.isEmpty()) {
            System.out.println("cuda_available: false (" + CudaDriver.unavailableReason() + ")");
            return 2;
        }
        CudaDriver cu = driver.get();
        int dev = cu.device(0);
        System.out.printf(Locale.ROOT, "gpu: %s, sm_%d, %.1f GiB, driver %d%n", cu.deviceName(dev), cu.computeCapability(dev),
                cu.totalMemory(dev) / (double) (1L << 30), cu.driverVersion());
        CudaOpCheck c = new CudaOpCheck(cu);
        c.warmLaunchPath();
        c.copyBandwidth();
        c.deviceTensors();
        for (boolean bf16 : new boolean[] {false, true}) {
            c.layernorm(4096, 768, bf16);
            c.layernorm(37, 384, bf16);
            c.gelu(4096, 3072, bf16);
            c.gelu(13, 1536, bf16);
            c.softmax(4096, 128, bf16);
            c.softmax(9, 77, bf16);
            c.embedding(32, 128, 768, bf16);
            c.attention(32, 128, 12, 64, bf16);
            c.attention(3, 77, 12, 32, bf16);
            c.attention(2, 512, 4, 64, bf16);
        }
        c.embeddingBackward(4, 37, 96, 300);
        c.crossEntropy(4096, 3);
        try (CublasLt lt = new CublasLt(cu)) {
            System.out.println("cublaslt: " + lt.library());
            for (boolean bf16 : new boolean[] {false, true}) {
                c.linear(lt, 333, 1024, 768, bf16, CublasLt.Epilogue.BIAS);
                c.linear(lt, 4096, 3072, 768, bf16, CublasLt.Epilogue.NONE);
            }
            c.gemmRate(lt, 8192);
        } catch (CudaException e) {
            System.out.println("cublaslt_error: " + e.getMessage());
            c.failed = true;
        }
        System.out.printf(Locale.ROOT, "ceilings measured in this call: device-to-device copy %.0f GB/s (bytes read + written)%n", c.copyGBs);
        System.out.println("op | dtype | shape | rel error | bound | ok | us | GB/s | % of copy bandwidth");
        c.table.forEach(System.out::println);
        System.out.println("cuda_ops_all_match: " + !c.failed);
        return c.failed ? 1 : 0;
    }

    // ------------------------------------------------------------------ ops

    private void layernorm(int rows, int cols, boolean bf16) {
        try (TensorScope s = scope()) {
            Tensor x = random(s, bf16, rows, cols), res = random(s, bf16, rows, cols), g = random(s, false, cols), b = random(s, false, cols);
            Tensor out = s.allocate(DType.F32, rows, cols), mean = s.allocate(DType.F32, rows), rstd = s.allocate(DType.F32, rows);
            cpu.layernormForward(out, mean, rstd, null, x, res, g, b, 1e-12f);
            try (Dev d = new Dev()) {
                long dx = d.up(x, bf16), dr = d.up(res, bf16), dg = d.up(g, false), db = d.up(b, false), dout = d.poisoned(rows * (long) cols, bf16);
                long dm = d.poisoned(rows, false), ds = d.poisoned(rows, false);
                int threads = Math.min(1024, Math.max(32, ((cols + 7) / 8 + 31) / 32 * 32));
                Runnable k = () -> cu.launch(fn("layernorm_forward", bf16), "layernorm_forward", new int[] {rows, 1, 1}, new int[] {threads, 1, 1},
                        0, stream, dout, dm, ds, null, dx, dr, dg, db, cols, 1e-12f);
                double us = time(k);
                compare("layernorm+residual", bf16, rows + "x" + cols, out, d.down(dout, rows * (long) cols, bf16), bf16 ? 1e-2 : 1e-5, us,
                        rows * (long) cols * (bf16 ? 6 : 12));
                compare("layernorm rstd", false, rows + "", rstd, d.down(ds, rows, false), 1e-5, Double.NaN, 0);
            }
        }
    }

    private void gelu(int rows, int cols, boolean bf16) {
        try (TensorScope s = scope()) {
            Tensor x = random(s, bf16, rows, cols), b = random(s, false, cols), out = s.allocate(DType.F32, rows, cols);
            cpu.biasGeluForward(out, x, b);
            try (Dev d = new Dev()) {
                long n = rows * (long) cols, dx = d.up(x, bf16), db = d.up(b, false), dout = d.poisoned(n, bf16);
                int per = bf16 ? 2 : 4, blocks = (int) Math.min(65535, (n / per + 255) / 256);
                double us = time(() -> cu.launch(fn("bias_gelu_forward", bf16), "bias_gelu_forward", new int[] {blocks, 1, 1},
                        new int[] {256, 1, 1}, 0, stream, dout, dx, db, (long) rows, cols));
                compare("bias+gelu", bf16, rows + "x" + cols, out, d.down(dout, n, bf16), bf16 ? 1e-2 : 1e-5, us, n * (bf16 ? 4 : 8));
            }
        }
    }

    private void softmax(int rows, int cols, boolean bf16) {
        try (TensorScope s = scope()) {
            Tensor x = random(s, bf16, rows, cols), y = s.allocate(DType.F32, rows, cols);
            cpu.softmaxForward(y, x);
            try (Dev d = new Dev()) {
                long n = rows * (long) cols, dx = d.up(x, bf16), dy = d.poisoned(n, bf16);
                int threads = Math.max(32, ((cols + 7) / 8 + 31) / 32 * 32);
                double us = time(() -> cu.launch(fn("softmax_forward", bf16), "softmax_forward", new int[] {rows, 1, 1},
                        new int[] {threads, 1, 1}, 0, stream, dy, dx, cols));
                compare("softmax", bf16, rows + "x" + cols, y, d.down(dy, n, bf16), bf16 ? 1e-2 : 1e-5, us, n * (bf16 ? 4 : 8));
            }
        }
    }

    private void embedding(int b, int seq, int c, boolean bf16) {
        int vocab = 30522, maxPos = 512;
        try (TensorScope s = scope()) {
            Tensor word = random(s, false, vocab, c), pos = random(s, false, maxPos, c), type = random(s, false, 2, c);
            int[] idv = new int[b * seq], tv = new int[b * seq];
            for (int i = 0; i < idv.length; i++) {
                idv[i] = rnd.nextInt(vocab);
                tv[i] = rnd.nextInt(2);
            }
            Tensor ids = s.allocate(DType.I32, b, seq).copyFrom(idv), types = s.allocate(DType.I32, b, seq).copyFrom(tv);
            Tensor out = s.allocate(DType.F32, b, seq, c);
            cpu.embeddingForward(out, ids, null, types, word, pos, type);
            try (Dev d = new Dev()) {
                long n = (long) b * seq * c, dids = d.upRaw(ids), dtypes = d.upRaw(types), dw = d.up(word, false), dp = d.up(pos, false),
                        dt = d.up(type, false), dout = d.poisoned(n, bf16);
                double us = time(() -> cu.launch(fn("embedding_forward", bf16), "embedding_forward", new int[] {b * seq, 1, 1},
                        new int[] {256, 1, 1}, 0, stream, dout, dids, dtypes, dw, dp, dt, seq, c, vocab, 2));
                compare("embedding", bf16, b + "x" + seq + "x" + c, out, d.down(dout, n, bf16), bf16 ? 1e-2 : 1e-6, us, n * (bf16 ? 14 : 16));
            }
        }
    }

    /**
     * The scatter-add backward against a float64 sum on the host, a small vocabulary so that ids
     * repeat (atomics meet), and three tokens outside their tables (an id past the vocabulary, a
     * negative id, a type past the types): they add nothing to those tables and write nowhere else.
     */
    private void embeddingBackward(int b, int seq, int c, int vocab) {
        int n = b * seq;
        int[] idv = new int[n], tv = new int[n];
        for (int i = 0; i < n; i++) {
            idv[i] = rnd.nextInt(vocab);
            tv[i] = rnd.nextInt(2);
        }
        idv[5] = vocab + 3;
        idv[9] = -1;
        tv[11] = 2;
        float[] g = new float[n * c];
        for (int i = 0; i < g.length; i++) g[i] = (float) (2 * rnd.nextDouble() - 1);
        double[] want = new double[(vocab + seq + 2) * c]; // word rows, then position rows, then type rows
        for (int t = 0; t < n; t++)
            for (int j = 0; j < c; j++) {
                if (idv[t] >= 0 && idv[t] < vocab) want[idv[t] * c + j] += g[t * c + j];
                want[(vocab + t % seq) * c + j] += g[t * c + j];
                if (tv[t] < 2) want[(vocab + seq + tv[t]) * c + j] += g[t * c + j];
            }
        try (TensorScope s = scope(); Dev d = new Dev()) {
            Tensor ids = s.allocate(DType.I32, b, seq).copyFrom(idv), types = s.allocate(DType.I32, b, seq).copyFrom(tv);
            Tensor dout = s.allocate(DType.F32, b, seq, c).copyFrom(g), ref = s.allocate(DType.F32, want.length);
            for (int i = 0; i < want.length; i++) ref.setFloat(i, (float) want[i]);
            long grads = d.alloc(4L * want.length), dw = grads, dp = grads + 4L * vocab * c, dt = dp + 4L * seq * c;
            long dd = d.up(dout, false), dids = d.upRaw(ids), dtypes = d.upRaw(types);
            Runnable launch = () -> cu.launch(fn("embedding_backward", false), "embedding_backward", new int[] {n, 1, 1}, new int[] {256, 1, 1}, 0,
                    stream, dw, dp, dt, dd, dids, dtypes, seq, c, vocab, 2);
            cu.fill32(grads, 0, want.length, stream);
            launch.run();
            float[] got = d.down(grads, want.length, false);
            double us = time(launch);
            compare("embedding backward, 3 ids out of range", false, b + "x" + seq + "x" + c, ref, got, 1e-5, us, 4L * n * c * 4);
        }
    }

    private void attention(int b, int seq, int heads, int hd, boolean bf16) {
        int a = heads * hd;
        try (TensorScope s = scope()) {
            Tensor qkv = random(s, bf16, b, seq, 3L * a), ctx = s.allocate(DType.F32, b, seq, a);
            int[] mv = new int[b * seq];
            for (int i = 0; i < b; i++) {
                int real = i == 0 ? seq : 1 + rnd.nextInt(seq); // padding in every sequence but the first
                for (int j = 0; j < seq; j++) mv[i * seq + j] = j < real ? 1 : 0;
            }
            Tensor mask = s.allocate(DType.I32, b, seq).copyFrom(mv);
            float scale = (float) (1 / Math.sqrt(hd));
            cpu.attentionForward(ctx, null, qkv, mask, heads, scale);
            try (Dev d = new Dev()) {
                long n = (long) b * seq * a, dq = d.up(qkv, bf16), dm = d.upRaw(mask), dc = d.poisoned(n, bf16);
                double us = time(() -> cu.launch(fn("attention_forward", bf16), "attention_forward",
                        new int[] {(seq + 7) / 8, heads, b}, new int[] {256, 1, 1}, 0, stream, dc, dq, dm, seq, heads, hd, scale, 0, 0, 1f));
                compare("attention (padding mask)", bf16, b + "x" + seq + " " + heads + "x" + hd, ctx, d.down(dc, n, bf16), bf16 ? 1e-2 : 1e-5,
                        us, n * 4 * (bf16 ? 2 : 4));
                if (hd == 32 || hd == 64 || hd == 128) { // the tensor-core kernel: bf16 operands whatever the storage
                    long dt = d.poisoned(n, bf16);
                    String kernel = "attention_forward_tc_d" + hd + (bf16 ? "_bf16" : "_f32");
                    double tus = time(() -> cu.launch(function(kernel), kernel,
                            new int[] {(seq + 63) / 64, heads, b}, new int[] {128, 1, 1}, 0, stream, dt, dq, dm, seq, heads, scale, 0, 0, 1f)); // no dropout: the op harness checks it
                    compare("attention tensor cores", bf16, b + "x" + seq + " " + heads + "x" + hd, ctx, d.down(dt, n, bf16), 2e-2, tus,
                            n * 4 * (bf16 ? 2 : 4));
                    System.out.printf(Locale.ROOT, "attention_tc_%s_%dx%d_%dx%d_tflops: %.1f%n", bf16 ? "bf16" : "f32", b, seq, heads, hd,
                            4.0 * b * heads * seq * (double) seq * hd / (tus * 1e6));
                }
            }
        }
    }

    private void crossEntropy(int rows, int classes) {
        try (TensorScope s = scope()) {
            Tensor logits = random(s, false, rows, classes), losses = s.allocate(DType.F32, rows);
            int[] lv = new int[rows];
            for (int i = 0; i < rows; i++) lv[i] = rnd.nextInt(classes);
            Tensor labels = s.allocate(DType.I32, rows).copyFrom(lv);
            cpu.crossEntropyForward(losses, logits, labels);
            try (Dev d = new Dev()) {
                long dl = d.up(logits, false), dy = d.upRaw(labels), dout = d.poisoned(rows, false);
                double us = time(() -> cu.launch(fn("cross_entropy_forward", false), "cross_entropy_forward", new int[] {(rows + 7) / 8, 1, 1},
                        new int[] {256, 1, 1}, 0, stream, dout, dl, dy, rows, classes));
                compare("cross-entropy", false, rows + "x" + classes, losses, d.down(dout, rows, false), 1e-5, us, rows * (long) (classes + 2) * 4);
            }
        }
    }

    /** The napkin math's ceiling for memory-bound kernels: a 1 GiB device-to-device copy (bytes read + written over time). */
    private double copyGBs = Double.NaN;

    private void copyBandwidth() {
        long bytes = 1L << 30;
        try (Dev d = new Dev()) {
            long a = d.alloc(bytes), b = d.alloc(bytes);
            cu.fill32(a, 0x3f800000, bytes / 4, stream);
            double us = time(() -> cu.copyOnDevice(b, a, bytes, stream));
            copyGBs = 2.0 * bytes / (us * 1e3);
            System.out.printf(Locale.ROOT, "copy_bandwidth_gbs: %.0f%n", copyGBs);
        }
    }

    /** Compiles the launch path (JIT) before anything is timed: cold, a launch costs tens of microseconds of interpreter. */
    private void warmLaunchPath() {
        try (Dev d = new Dev()) {
            long row = d.alloc(64), out = d.alloc(256);
            for (int i = 0; i < 20_000; i++)
                cu.launch(function("broadcast_rows_f32"), "broadcast_rows_f32", new int[] {1, 1, 1},
                        new int[] {32, 1, 1}, 0, stream, out, row, 4L, 16);
            cu.streamSynchronize(stream);
        }
    }

    /** Device tensors through the caching allocator: a bit-exact round trip, device-side accounting, a block reused. */
    private void deviceTensors() {
        CudaMemory mem = new CudaMemory(cu, 0, context);
        long address;
        try (TensorScope s = scope(); TensorScope d = new TensorScope("check", MemoryCategory.ACTIVATIONS, mem)) {
            Tensor host = random(s, false, 1000, 77), back = s.allocate(DType.F32, 1000, 77);
            Tensor t = d.allocate(DType.F32, 1000, 77);
            address = t.data().address();
            long tracked = MemoryTracker.of(mem.device()).live(MemoryCategory.ACTIVATIONS);
            cu.copyToDevice(address, host.data(), host.byteSize(), stream);
            cu.copyToHost(back.data(), address, host.byteSize(), stream);
            cu.streamSynchronize(stream);
            boolean same = java.util.Arrays.equals(host.toFloatArray(), back.toFloatArray()) && tracked >= host.byteSize();
            failed |= !same;
            table.add("device tensor round trip | f32 | 1000x77 | " + (same ? "0 (bit-exact)" : "MISMATCH") + " | 0 | " + (same ? "yes" : "NO")
                    + " | - | -");
        }
        try (TensorScope d = new TensorScope("check 2", MemoryCategory.ACTIVATIONS, mem)) {
            boolean reused = d.allocate(DType.F32, 1000, 77).data().address() == address;
            failed |= !reused;
            table.add("caching allocator reuse | - | 308000 B | - | - | " + (reused ? "yes" : "NO") + " | - | -");
        }
        // a thread that never made the context current (a serving worker) takes a new block: the allocator makes it current itself
        long[] fromWorker = new long[1];
        Thread worker = new Thread(() -> {
            try (TensorScope d = new TensorScope("worker", MemoryCategory.ACTIVATIONS, mem)) {
                fromWorker[0] = d.allocate(DType.F32, 3, 1 << 20).data().address();
            } catch (RuntimeException e) {
                System.out.println("allocation on another thread: " + e);
            }
        });
        worker.start();
        try {
            worker.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        failed |= fromWorker[0] == 0;
        table.add("allocation on a fresh thread | - | 12 MiB | - | - | " + (fromWorker[0] != 0 ? "yes" : "NO") + " | - | -");
        mem.release();
    }

    /** cuBLASLt's y = x w^T (+ bias) against the CPU backend's linear layer. */
    private void linear(CublasLt lt, int m, int n, int k, boolean bf16, CublasLt.Epilogue epilogue) {
        try (TensorScope s = scope()) {
            Tensor x = random(s, bf16, m, k), w = random(s, bf16, n, k), bias = random(s, bf16, n), y = s.allocate(DType.F32, m, n);
            boolean withBias = epilogue != CublasLt.Epilogue.NONE;
            new DenseWeight(w).forward(cpu, y, x, withBias ? bias : null);
            try (Dev d = new Dev()) {
                long dx = d.up(x, bf16), dw = d.up(w, bf16), db = withBias ? d.up(bias, bf16) : 0, dy = d.poisoned((long) m * n, bf16);
                double us = time(() -> lt.linear(dy, dx, dw, db, m, n, k, bf16, epilogue, stream));
                compare("cuBLASLt linear" + (withBias ? "+bias" : ""), bf16, m + "x" + n + "x" + k, y, d.down(dy, (long) m * n, bf16),
                        bf16 ? 1e-2 : 2e-5, us, ((long) m * k + (long) n * k + (long) m * n) * (bf16 ? 2 : 4));
                System.out.printf(Locale.ROOT, "cublaslt_%s_%dx%dx%d_tflops: %.1f%n", bf16 ? "bf16" : "f32", m, n, k, 2.0 * m * n * k / (us * 1e6));
            }
        }
    }

    /** bf16 GEMM rate at size^3 through our bindings (random inputs, median of 20 after warm-up). */
    private void gemmRate(CublasLt lt, int size) {
        long n = (long) size * size;
        try (Dev d = new Dev()) {
            long a = d.alloc(2 * n), b = d.alloc(2 * n), c = d.alloc(2 * n);
            MemorySegment host = d.arena.allocate(2 * n, 4); // random data: zeros or constants can run faster than real inputs
            for (long dst : new long[] {a, b}) {
                for (long i = 0; i < n; i++) host.setAtIndex(ValueLayout.JAVA_SHORT, i, Bf16.fromFloat((float) (2 * rnd.nextDouble() - 1)));
                cu.copyToDevice(dst, host, 2 * n, stream);
                cu.streamSynchronize(stream);
            }
            double us = time(() -> lt.linear(c, a, b, 0, size, size, size, true, CublasLt.Epilogue.NONE, stream));
            double tflops = 2.0 * size * (double) size * size / (us * 1e6);
            System.out.printf(Locale.ROOT, "cublaslt_bf16_gemm_%d_tflops: %.1f%n", size, tflops);
            table.add(String.format(Locale.ROOT, "cuBLASLt bf16 GEMM | bf16 | %d^3 | - | - | - | %.1f | %.1f TFLOP/s", size, us, tflops));
        }
    }

    // ------------------------------------------------------------------ plumbing

    private final java.util.Map<String, Long> functions = new java.util.HashMap<>();

    private long fn(String op, boolean bf16) {
        return function(op + (bf16 ? "_bf16" : "_f32"));
    }

    /** A kernel of the image, its parameter list checked against the engine's declaration when bound. */
    private long function(String name) {
        return functions.computeIfAbsent(name, n -> {
            long f = cu.function(module, n);
            long[] sizes = cu.parameterSizes(f);
            if (sizes != null) CudaKernel.valueOf(n.toUpperCase(Locale.ROOT)).checkBinding(sizes);
            return f;
        });
    }

    private static TensorScope scope() {
        return new TensorScope("cuda check", MemoryCategory.WORKSPACE);
    }

    /** Random values in [-1, 1) (rounded to bf16 when the GPU side stores bf16, so both sides see the same inputs). */
    private Tensor random(TensorScope s, boolean bf16, long... shape) {
        Tensor t = s.allocate(DType.F32, shape);
        float[] v = new float[(int) t.numel()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (2 * rnd.nextDouble() - 1);
            if (bf16) v[i] = Bf16.toFloat(Bf16.fromFloat(v[i]));
        }
        return t.copyFrom(v);
    }

    /** Microseconds per launch: the median over 7 windows of 10 back-to-back launches (CUDA events), after 3 warm-ups. */
    private double time(Runnable launch) {
        for (int i = 0; i < 3; i++) launch.run();
        long e0 = cu.eventCreate(), e1 = cu.eventCreate();
        double[] t = new double[7];
        for (int i = 0; i < t.length; i++) {
            cu.eventRecord(e0, stream);
            for (int j = 0; j < 10; j++) launch.run();
            cu.eventRecord(e1, stream);
            t[i] = cu.elapsedMs(e0, e1) * 1e3 / 10;
        }
        cu.eventDestroy(e0);
        cu.eventDestroy(e1);
        java.util.Arrays.sort(t);
        return t[t.length / 2];
    }

    private void compare(String op, boolean bf16, String shape, Tensor ref, float[] got, double bound, double us, long bytes) {
        double err = Check.relativeError(ref.toFloatArray(), got);
        boolean ok = err <= bound;
        failed |= !ok;
        String dtype = bf16 ? "bf16" : "f32";
        System.out.printf(Locale.ROOT, "%s_%s_%s_rel_error: %.3e%n", op.replaceAll("[^a-z0-9]+", "_"), dtype, shape.replace(' ', '_'), err);
        double gbs = bytes / (us * 1e3);
        table.add(String.format(Locale.ROOT, "%s | %s | %s | %.2e | %.0e | %s | %.1f | %.1f | %.0f%%", op, dtype, shape, err, bound, ok ? "yes" : "NO",
                us, gbs, 100 * gbs / copyGBs));
    }

    /** Device buffers of one check, freed together. */
    private final class Dev implements AutoCloseable {
        private final List<Long> ptrs = new ArrayList<>();
        private final Arena arena = Arena.ofConfined();

        long alloc(long bytes) {
            long p = cu.malloc(Math.max(4, (bytes + 3) & ~3L)); // whole words: poisoning fills 32-bit words
            ptrs.add(p);
            return p;
        }

        long up(Tensor t, boolean bf16) {
            long n = t.numel();
            MemorySegment host;
            if (bf16) {
                host = arena.allocate(2 * n, 4);
                for (long i = 0; i < n; i++) host.setAtIndex(ValueLayout.JAVA_SHORT, i, Bf16.fromFloat(t.getFloat(i)));
            } else {
                host = t.data();
            }
            long p = alloc(host.byteSize());
            cu.copyToDevice(p, host, host.byteSize(), stream);
            cu.streamSynchronize(stream);
            return p;
        }

        long upRaw(Tensor t) {
            long p = alloc(t.byteSize());
            cu.copyToDevice(p, t.data(), t.byteSize(), stream);
            cu.streamSynchronize(stream);
            return p;
        }

        /** n elements filled with NaN (fp32 0x7fc00000; bf16 0x7fc0 in both halves of each word). */
        long poisoned(long n, boolean bf16) {
            long p = alloc(n * (bf16 ? 2 : 4));
            cu.fill32(p, bf16 ? 0x7fc07fc0 : 0x7fc00000, (n * (bf16 ? 2 : 4) + 3) / 4, stream);
            return p;
        }

        float[] down(long p, long n, boolean bf16) {
            MemorySegment host = arena.allocate(n * (bf16 ? 2 : 4), 4);
            cu.copyToHost(host, p, host.byteSize(), stream);
            cu.streamSynchronize(stream);
            float[] out = new float[(int) n];
            for (int i = 0; i < n; i++)
                out[i] = bf16 ? Bf16.toFloat(host.getAtIndex(ValueLayout.JAVA_SHORT, i)) : host.getAtIndex(ValueLayout.JAVA_FLOAT, i);
            return out;
        }

        @Override
        public void close() {
            cu.synchronize();
            ptrs.forEach(cu::free);
            arena.close();
        }
    }
}
