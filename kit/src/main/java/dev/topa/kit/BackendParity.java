package dev.topa.backend.cuda;

import dev.topa.backend.AdamWConfig;
import dev.topa.backend.Backend;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.Dropout;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * The training ops of a device backend against the CPU backend, through the public Backend API (so
 * the argument plumbing of each k-method is checked with its kernel): the same random inputs on
 * both, outputs that are overwritten poisoned with NaN on the device first, outputs that accumulate
 * ("+=") started from the same random values; relative error ||dev - cpu|| / ||cpu|| against 1e-5
 * (fp32 throughout; 1e-4 where atomics or a different summation order meet long sums). Prints
 * `parity_<op>_rel_error: X` lines; {@link #run} says whether all held.
 */
public final class BackendParity {
    private final Backend cpu, dev;
    private final SplittableRandom rnd = new SplittableRandom(7);
    private final List<String> failures = new ArrayList<>();

    public BackendParity(Backend cpu, Backend dev) {
        this.cpu = cpu;
        this.dev = dev;
    }

    public static void main(String[] args) {
        if (CudaDriver.get().isEmpty()) {
            System.out.println("cuda_available: false (" + CudaDriver.unavailableReason() + ")");
            System.exit(2);
        }
        try (CudaBackend gpu = CudaBackend.open(0)) {
            boolean ok = new BackendParity(CpuBackend.create(), gpu).run(false);
            System.out.println("cuda_backward_ops_all_match: " + ok);
            System.exit(ok ? 0 : 1);
        }
    }

    /** Every op; small shapes only when quick (the CPU-only test of this harness). */
    public boolean run(boolean quick) {
        int rows = quick ? 37 : 4096, c = quick ? 48 : 768, f = quick ? 61 : 3072;
        try (TensorScope h = new TensorScope("parity host", MemoryCategory.WORKSPACE); TensorAllocator d = dev.weightScope("parity device")) {
            Ops o = new Ops(h, d);
            // checked in turn, each on its own: an exception is reported and the rest still run (after a sticky CUDA error
            // they fail too, each saying so); the ops new since the last GPU call come last
            guard("gemm", () -> o.gemms(rows, c, f));
            guard("lora", () -> o.lora(rows, c, f, 16));
            guard("bf16_gemm", () -> o.bf16Gemm(rows, c, f, 16));
            guard("layernorm_backward", () -> {
                o.layernormBackward(rows, c);
                o.layernormBackward(13, 384);
            });
            guard("bias_gelu_backward", () -> {
                o.biasGeluBackward(rows, f);
                o.biasGeluBackward(13, 1537);
            });
            guard("softmax_backward", () -> o.softmaxBackward(quick ? 40 : 4096, quick ? 19 : 128));
            guard("embedding_backward", () -> o.embeddingBackward(quick ? 3 : 32, quick ? 11 : 128, c));
            guard("mean_pool", () -> o.meanPool(quick ? 3 : 32, quick ? 11 : 128, c));
            guard("cross_entropy", () -> o.crossEntropy(quick ? 29 : 4096, 3));
            guard("mse", () -> o.mse(quick ? 9 : 32));
            guard("dropout", () -> o.dropout(rows * (long) c));
            guard("group_dot", () -> o.groupDot(quick ? 2 : 32, quick ? 7 : 128, 12, quick ? 4 : 64));
            guard("attention_backward", () -> {
                o.attentionBackward(quick ? 2 : 32, quick ? 13 : 128, quick ? 2 : 12, quick ? 8 : 64);
                o.attentionBackward(3, 77, 12, 32);
                o.attentionBackward(3, 78, 4, 32);
                o.attentionBackward(2, 66, 4, 128);
            });
            guard("adamw", o::adamw);
            guard("convert", () -> {
                o.convert(rows * (long) c);
                o.convert(1001);
            });
            guard("bf16_lora_with_factor", () -> o.bf16LoraWithFactor(rows, c, f, 16));
            guard("transpose", () -> o.transpose(quick ? 19 : 768, quick ? 7 : 16));
            guard("block_sparse", () -> {
                o.blockSparse(quick ? 37 : 4096, quick ? 256 : 3072, quick ? 64 : 768, 0.5, quick ? 5 : 16);
                o.blockSparse(quick ? 130 : 4096, quick ? 64 : 768, quick ? 96 : 3072, 0.2, 8);
            });
        }
        if (!failures.isEmpty()) System.out.println("parity_failures: " + failures);
        return failures.isEmpty();
    }

    private void guard(String name, Runnable check) {
        try {
            check.run();
        } catch (RuntimeException e) {
            failures.add(name);
            System.out.println("parity_" + name + "_exception: " + e);
        }
    }

    /** One set of tensors: host ones for the CPU, copies for the device. */
    private final class Ops {
        final TensorScope h;
        final TensorAllocator d;

        Ops(TensorScope h, TensorAllocator d) {
            this.h = h;
            this.d = d;
        }

        Tensor rand(long... shape) {
            Tensor t = h.allocate(DType.F32, shape);
            float[] v = new float[(int) t.numel()];
            for (int i = 0; i < v.length; i++) v[i] = (float) (2 * rnd.nextDouble() - 1);
            return t.copyFrom(v);
        }

        Tensor ints(int bound, long... shape) {
            Tensor t = h.allocate(DType.I32, shape);
            int[] v = new int[(int) t.numel()];
            for (int i = 0; i < v.length; i++) v[i] = rnd.nextInt(bound);
            return t.copyFrom(v);
        }

        Tensor up(Tensor host) {
            return dev.copyOf(host, d);
        }

        /** A device output that is overwritten: NaN until the op writes it. */
        Tensor poisoned(long... shape) {
            Tensor nan = h.allocate(DType.F32, shape).fill(Float.NaN);
            return up(nan);
        }

        void check(String name, Tensor ref, Tensor got, double bound) {
            double err = RelativeError.of(ref.toFloatArray(), dev.copyOf(got, h).toFloatArray());
            boolean ok = err <= bound;
            if (!ok) failures.add(name);
            System.out.printf(Locale.ROOT, "parity_%s_rel_error: %.3e (bound %.0e, %s)%n", name, err, bound, ok ? "ok" : "MISMATCH");
        }

        void gemms(int m, int k, int n) {
            for (boolean ta : new boolean[] {false, true})
                for (boolean tb : new boolean[] {false, true}) {
                    Tensor a = ta ? rand(k, m) : rand(m, k), b = tb ? rand(n, k) : rand(k, n), c = rand(m, n), bias = rand(n);
                    Tensor da = up(a), db = up(b), dc = up(c), dbias = up(bias);
                    cpu.gemm(ta, tb, 0.75f, a, b, 0.5f, c, bias);
                    dev.gemm(ta, tb, 0.75f, da, db, 0.5f, dc, dbias);
                    check("gemm_" + (ta ? "t" : "n") + (tb ? "t" : "n") + "_alpha_beta_bias_" + m + "x" + n + "x" + k, c, dc, 1e-5);
                }
            Tensor dy = rand(m, n), x = rand(m, k), w = rand(n, k), dw = rand(n, k), dbias = rand(n);
            Tensor ddy = up(dy), dx2 = up(x), dw2 = up(w), ddw = up(dw), ddbias = up(dbias), dxOut = poisoned(m, k);
            Tensor dxRef = h.allocate(DType.F32, m, k);
            cpu.linearBackward(dxRef, dw, dbias, dy, x, w);
            dev.linearBackward(dxOut, ddw, ddbias, ddy, dx2, dw2);
            check("linear_backward_dx", dxRef, dxOut, 1e-5);
            check("linear_backward_dw_accumulated", dw, ddw, 1e-5);
            check("linear_backward_dbias_accumulated", dbias, ddbias, 1e-5);
        }

        void lora(int m, int in, int out, int r) {
            Tensor x = rand(m, in), w = rand(out, in), bias = rand(out), a = rand(r, in), b = rand(out, r);
            Tensor y = h.allocate(DType.F32, m, out), u = h.allocate(DType.F32, m, r), dy2 = poisoned(m, out), du = poisoned(m, r);
            Tensor dx = up(x), dw = up(w), dbias = up(bias), da = up(a), db = up(b);
            cpu.loraForward(y, u, x, w, bias, a, b, 0.5f);
            dev.loraForward(dy2, du, dx, dw, dbias, da, db, 0.5f);
            check("lora_forward_y", y, dy2, 1e-5);
            check("lora_forward_u", u, du, 1e-5);
            Tensor gy = rand(m, out), gx = rand(m, in), gA = rand(r, in), gB = rand(out, r), g = h.allocate(DType.F32, m, r);
            Tensor dgx = up(gx), dgA = up(gA), dgB = up(gB), dg = poisoned(m, r);
            cpu.loraBackward(gx, true, null, null, gA, gB, g, gy, x, u, w, a, b, 0.5f);
            dev.loraBackward(dgx, true, null, null, dgA, dgB, dg, up(gy), dx, du, dw, da, db, 0.5f);
            check("lora_backward_dx_accumulated", gx, dgx, 1e-5);
            check("lora_backward_dA", gA, dgA, 1e-5);
            check("lora_backward_dB", gB, dgB, 1e-5);
        }

        /** The bf16 frozen-base product of LoRA training: both backends round W and A to bf16 and accumulate in fp32. */
        void bf16Gemm(int m, int in, int out, int r) {
            Tensor w = rand(out, in), x = rand(m, in), bias = rand(out), u = rand(m, r), b = rand(out, r), y = rand(m, out);
            Tensor dw = up(w), dy = up(y);
            try (TensorScope packs = new TensorScope("packs", MemoryCategory.WEIGHTS); TensorAllocator dpacks = dev.weightScope("packs")) {
                var fwd = cpu.packBf16(w, true, packs);
                var dfwd = dev.packBf16(dw, true, dpacks);
                cpu.gemmBf16(0.75f, x, fwd, 0.5f, y, bias, u, 0.25f, true, b);
                dev.gemmBf16(0.75f, up(x), dfwd, 0.5f, dy, up(bias), up(u), 0.25f, true, up(b));
                // the device folds the rank-r term into the same GEMM, its operands (scale u, B) rounded to bf16; the CPU adds it in
                // fp32: ~1e-4 of y at these sizes (bf16's 2^-9 on a term ~30x smaller than the base product)
                check("bf16_frozen_forward_lora_" + m + "x" + out + "x" + in, y, dy, 5e-4);
                Tensor g = rand(m, out), dx = h.allocate(DType.F32, m, in), ddx = poisoned(m, in);
                var bwd = cpu.packBf16(w, false, packs);
                var dbwd = dev.packBf16(dw, false, dpacks);
                cpu.gemmBf16(1f, g, bwd, 0f, dx, null, null, 0f, false, null);
                dev.gemmBf16(1f, up(g), dbwd, 0f, ddx, null, null, 0f, false, null);
                check("bf16_frozen_input_gradient_" + m + "x" + in + "x" + out, dx, ddx, 1e-5);
            }
        }

        /**
         * The whole LoRA product on a bf16 base with its factor (u = x A^T formed in the device's conversion pass), and its input
         * gradient (g = dy B likewise).
         */
        void bf16LoraWithFactor(int m, int in, int out, int r) {
            Tensor w = rand(out, in), x = rand(m, in), bias = rand(out), b = rand(out, r), g = rand(m, out), dw = up(w);
            try (TensorScope packs = new TensorScope("packs", MemoryCategory.WEIGHTS); TensorAllocator dpacks = dev.weightScope("packs")) {
                var fwd = cpu.packBf16(w, true, packs);
                var dfwd = dev.packBf16(dw, true, dpacks);
                var bwd = cpu.packBf16(w, false, packs);
                var dbwd = dev.packBf16(dw, false, dpacks);
                // with random factors the rank-r term is about half of y here, its bf16-rounded operands ~1e-3 of y
                Tensor a = rand(r, in), uRef = h.allocate(DType.F32, m, r), yRef = h.allocate(DType.F32, m, out);
                Tensor du = poisoned(m, r), dyl = poisoned(m, out);
                cpu.loraForwardBf16(yRef, uRef, x, fwd, bias, a, b, 0.25f);
                dev.loraForwardBf16(dyl, du, up(x), dfwd, up(bias), up(a), up(b), 0.25f);
                check("bf16_lora_forward_with_factor_u_" + m + "x" + r + "x" + in, uRef, du, 1e-5);
                check("bf16_lora_forward_with_factor_y_" + m + "x" + out + "x" + in, yRef, dyl, 3e-3);
                Tensor gRef = h.allocate(DType.F32, m, r), dg = poisoned(m, r), dxAcc = rand(m, in), ddxAcc = up(dxAcc);
                cpu.loraInputGradientBf16(dxAcc, true, gRef, g, bwd, b, a, 0.25f);
                dev.loraInputGradientBf16(ddxAcc, true, dg, up(g), dbwd, up(b), up(a), 0.25f);
                check("bf16_lora_input_gradient_with_factor_g_" + m + "x" + r + "x" + out, gRef, dg, 1e-5);
                check("bf16_lora_input_gradient_with_factor_dx_accumulated_" + m + "x" + in + "x" + out, dxAcc, ddxAcc, 3e-3);
            }
        }

        void layernormBackward(int rows, int cols) {
            Tensor x = rand(rows, cols), gamma = rand(cols), beta = rand(cols), out = h.allocate(DType.F32, rows, cols);
            Tensor mean = h.allocate(DType.F32, rows), rstd = h.allocate(DType.F32, rows);
            cpu.layernormForward(out, mean, rstd, null, x, null, gamma, beta, 1e-12f);
            Tensor dy = rand(rows, cols), dx = rand(rows, cols), dgamma = rand(cols), dbeta = rand(cols);
            Tensor ddx = up(dx), ddgamma = up(dgamma), ddbeta = up(dbeta);
            cpu.layernormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, true);
            dev.layernormBackward(ddx, ddgamma, ddbeta, up(dy), up(x), up(mean), up(rstd), up(gamma), true);
            String s = rows + "x" + cols;
            check("layernorm_backward_dx_accumulated_" + s, dx, ddx, 1e-5);
            check("layernorm_backward_dgamma_" + s, dgamma, ddgamma, 1e-4);
            check("layernorm_backward_dbeta_" + s, dbeta, ddbeta, 1e-4);
            Tensor dxOver = poisoned(rows, cols), dxRef = h.allocate(DType.F32, rows, cols);
            cpu.layernormBackward(dxRef, null, null, dy, x, mean, rstd, gamma, false);
            dev.layernormBackward(dxOver, null, null, up(dy), up(x), up(mean), up(rstd), up(gamma), false);
            check("layernorm_backward_dx_" + s, dxRef, dxOver, 1e-5);
        }

        void biasGeluBackward(int rows, int cols) {
            Tensor x = rand(rows, cols), bias = rand(cols), dy = rand(rows, cols), dbias = rand(cols), dx = h.allocate(DType.F32, rows, cols);
            Tensor ddx = poisoned(rows, cols), ddbias = up(dbias);
            cpu.biasGeluBackward(dx, dbias, dy, x, bias);
            dev.biasGeluBackward(ddx, ddbias, up(dy), up(x), up(bias));
            check("bias_gelu_backward_dx_" + rows + "x" + cols, dx, ddx, 1e-5);
            check("bias_gelu_backward_dbias_" + rows + "x" + cols, dbias, ddbias, 1e-4);
        }

        void softmaxBackward(int rows, int cols) {
            Tensor x = rand(rows, cols), y = h.allocate(DType.F32, rows, cols), dy = rand(rows, cols), dx = h.allocate(DType.F32, rows, cols);
            cpu.softmaxForward(y, x);
            Tensor ddx = poisoned(rows, cols);
            cpu.softmaxBackward(dx, dy, y);
            dev.softmaxBackward(ddx, up(dy), up(y));
            check("softmax_backward_" + rows + "x" + cols, dx, ddx, 1e-5);
        }

        void embeddingBackward(int b, int s, int c) {
            int vocab = 97; // small: repeated ids meet in the same rows
            Tensor ids = ints(vocab, b, s), types = ints(2, b, s), dout = rand(b, s, c);
            Tensor wte = rand(vocab, c), wpe = rand(s, c), wtt = rand(2, c), dwte = rand(vocab, c), dwpe = rand(s, c), dwtt = rand(2, c);
            Tensor ddwte = up(dwte), ddwpe = up(dwpe), ddwtt = up(dwtt);
            cpu.embeddingBackward(dwte, dwpe, dwtt, dout, ids, null, types, wte, wpe, wtt);
            dev.embeddingBackward(ddwte, ddwpe, ddwtt, up(dout), up(ids), null, up(types), up(wte), up(wpe), up(wtt));
            check("embedding_backward_dword", dwte, ddwte, 1e-5);
            check("embedding_backward_dposition", dwpe, ddwpe, 1e-5);
            check("embedding_backward_dtype", dwtt, ddwtt, 1e-4);
        }

        void meanPool(int b, int s, int c) {
            Tensor x = rand(b, s, c), out = h.allocate(DType.F32, b, c), dout = rand(b, c), dx = h.allocate(DType.F32, b, s, c);
            int[] mv = new int[b * s];
            for (int i = 0; i < b; i++) for (int t = 0; t < s; t++) mv[i * s + t] = t < (i == 0 ? s : 1 + rnd.nextInt(s)) ? 1 : 0;
            Tensor mask = h.allocate(DType.I32, b, s).copyFrom(mv);
            Tensor dout2 = poisoned(b, c), ddx = poisoned(b, s, c);
            cpu.meanPoolForward(out, x, mask);
            dev.meanPoolForward(dout2, up(x), up(mask));
            check("mean_pool_forward", out, dout2, 1e-5);
            cpu.meanPoolBackward(dx, dout, mask);
            dev.meanPoolBackward(ddx, up(dout), up(mask));
            check("mean_pool_backward", dx, ddx, 1e-5);
        }

        void crossEntropy(int n, int classes) {
            Tensor logits = rand(n, classes), losses = h.allocate(DType.F32, n), dl = h.allocate(DType.F32, n, classes);
            int[] lv = new int[n];
            for (int i = 0; i < n; i++) lv[i] = i % 5 == 4 ? -1 : rnd.nextInt(classes); // some rows ignored
            Tensor labels = h.allocate(DType.I32, n).copyFrom(lv);
            Tensor dlogits = up(logits), dlabels = up(labels), dlosses = poisoned(n), ddl = poisoned(n, classes);
            float mean = cpu.crossEntropyForward(losses, logits, labels), dmean = dev.crossEntropyForward(dlosses, dlogits, dlabels);
            check("cross_entropy_forward_losses", losses, dlosses, 1e-5);
            Tensor m1 = h.allocate(DType.F32, 1).copyFrom(new float[] {mean}), m2 = up(h.allocate(DType.F32, 1).copyFrom(new float[] {dmean}));
            check("cross_entropy_forward_mean", m1, m2, 1e-5);
            cpu.crossEntropyBackward(dl, logits, labels, 1.5f);
            dev.crossEntropyBackward(ddl, dlogits, dlabels, 1.5f);
            check("cross_entropy_backward", dl, ddl, 1e-5);
        }

        void mse(int n) {
            Tensor pred = rand(n, 1), target = rand(n, 1), dpred = h.allocate(DType.F32, n, 1), ddpred = poisoned(n, 1);
            float l = cpu.mseForward(pred, target), dl = dev.mseForward(up(pred), up(target));
            check("mse_forward", h.allocate(DType.F32, 1).copyFrom(new float[] {l}), up(h.allocate(DType.F32, 1).copyFrom(new float[] {dl})),
                    1e-6);
            cpu.mseBackward(dpred, pred, target, 0.5f);
            dev.mseBackward(ddpred, up(pred), up(target), 0.5f);
            check("mse_backward", dpred, ddpred, 1e-6);
        }

        void dropout(long n) {
            Dropout drop = new Dropout(0.1, Dropout.key(42, 3, 5));
            Tensor in = rand(n), out = h.allocate(DType.F32, n), acc = rand(n), dout = poisoned(n), dacc = up(acc);
            cpu.dropout(out, in, drop, false);
            dev.dropout(dout, up(in), drop, false);
            check("dropout_same_mask", out, dout, 0);
            cpu.dropout(acc, in, drop, true);
            dev.dropout(dacc, up(in), drop, true);
            check("dropout_accumulate", acc, dacc, 1e-7);
        }

        void groupDot(int b, int s, int groups, int width) {
            Tensor x = rand(b, s, (long) groups * width), dx = rand(b, s, (long) groups * width), out = h.allocate(DType.F32, b, groups);
            Tensor dout = poisoned(b, groups);
            cpu.groupDot(out, x, dx, groups);
            dev.groupDot(dout, up(x), up(dx), groups);
            check("group_dot", out, dout, 1e-5);
        }

        void attentionBackward(int b, int s, int heads, int hd) {
            long a = (long) heads * hd;
            Tensor qkv = rand(b, s, 3 * a), dout = rand(b, s, a), dqkv = h.allocate(DType.F32, b, s, 3 * a), ddqkv = poisoned(b, s, 3 * a);
            int[] mv = new int[b * s];
            for (int i = 0; i < b; i++) for (int t = 0; t < s; t++) mv[i * s + t] = t < (i == 0 ? s : 1 + rnd.nextInt(s)) ? 1 : 0;
            Tensor mask = h.allocate(DType.I32, b, s).copyFrom(mv);
            float scale = (float) (1 / Math.sqrt(hd));
            cpu.attentionBackward(dqkv, dout, null, qkv, mask, heads, scale, Dropout.NONE);
            // on CUDA both kernels: the fp32 CUDA-core passes, and in mixed precision the tensor cores (bf16 operands: the
            // forward tensor-core attention's bound)
            boolean tcApplies = dev instanceof CudaBackend && dev.fastBf16() && s % 2 == 0 && (hd == 32 || hd == 64 || hd == 128);
            for (boolean tc : tcApplies ? new boolean[] {false, true} : new boolean[] {false}) {
                if (dev instanceof CudaBackend cuda) cuda.setTensorCoreAttentionBackward(tc);
                dev.attentionBackward(ddqkv, up(dout), null, up(qkv), up(mask), heads, scale, Dropout.NONE);
                check("attention_backward_recompute_" + (tc ? "tensor_cores_" : "") + b + "x" + s + "_" + heads + "x" + hd, dqkv, ddqkv,
                        tc ? 2e-2 : 1e-4);
                if (b * s >= 4096 && dev instanceof CudaBackend cuda) { // time it: the rows pass does 6 products of 2 S^2 D FLOPs, the cols pass 2
                    Tensor gq = up(qkv), go = up(dout), gm = up(mask), gd = ddqkv;
                    double us = LoraForwardBench.time(cuda, () -> cuda.attentionBackward(gd, go, null, gq, gm, heads, scale, Dropout.NONE));
                    double flops = 8.0 * 2 * s * s * hd * b * heads;
                    System.out.printf(Locale.ROOT, "attention_backward_%s_%dx%d_%dx%d_us: %.1f (%.1f TFLOP/s counting 8 products of 2 S^2 D)%n",
                            tc ? "tensor_cores" : "cuda_cores", b, s, heads, hd, us, flops / (us * 1e6));
                }
                ddqkv = poisoned(b, s, 3 * a);
            }
            if (dev instanceof CudaBackend cuda) cuda.setTensorCoreAttentionBackward(true);
        }

        void adamw() {
            long[] sizes = {1, 777, 4096 * 8 + 3};
            List<Tensor[]> a = new ArrayList<>(), b = new ArrayList<>();
            for (long n : sizes) {
                Tensor p = rand(n), g = rand(n), m = rand(n), v = rand(n);
                for (long i = 0; i < n; i++) v.setFloat(i, Math.abs(v.getFloat(i))); // a second moment is never negative
                a.add(new Tensor[] {p, g, m, v});
                b.add(new Tensor[] {up(p), up(g), up(m), up(v)});
            }
            AdamWConfig cfg = new AdamWConfig(1e-3, 0.9, 0.999, 1e-8, 0.01);
            cpu.adamwStep(a, cfg, 3, 0.7f);
            dev.adamwStep(b, cfg, 3, 0.7f);
            String[] what = {"param", "m", "v"};
            for (int i = 0; i < sizes.length; i++)
                for (int j = 0; j < 3; j++) check("adamw_one_launch_" + what[j] + "_" + sizes[i], a.get(i)[j == 0 ? 0 : j + 1],
                        b.get(i)[j == 0 ? 0 : j + 1], 1e-6);
            List<Tensor> grads = new ArrayList<>(), dgrads = new ArrayList<>();
            for (int i = 0; i < sizes.length; i++) {
                grads.add(a.get(i)[1]);
                dgrads.add(b.get(i)[1]);
            }
            double s1 = cpu.sumOfSquares(grads), s2 = dev.sumOfSquares(dgrads);
            check("sum_of_squares", h.allocate(DType.F32, 1).copyFrom(new float[] {(float) s1}),
                    up(h.allocate(DType.F32, 1).copyFrom(new float[] {(float) s2})), 1e-6);
        }

        /** Products of the device's block-sparse layout (bf16 on the tensor cores in mixed mode: bound 1e-2) against the CPU's. */
        void blockSparse(int m, int out, int in, double density, int r) {
            double bound = dev.fastBf16() ? 1e-2 : 1e-5;
            int b = BlockSparseWeight.BLOCK;
            boolean[][] mask = new boolean[out / b][in / b];
            for (int i = 0; i < mask.length; i++)
                for (int j = 0; j < mask[i].length; j++) mask[i][j] = i != 1 && rnd.nextDouble() < density; // block-row 1 keeps nothing
            mask[0][0] = true;
            Tensor w = rand(out, in), x = rand(m, in), bias = rand(out), y = rand(m, out), dy = up(y);
            String s = m + "x" + out + "x" + in + "_density" + density;
            try (TensorScope packs = new TensorScope("packs", MemoryCategory.WEIGHTS); TensorAllocator dpacks = dev.weightScope("packs")) {
                var fwd = cpu.packBlockSparse(w, mask, false, packs);
                var dfwd = dev.packBlockSparse(up(w), mask, false, dpacks);
                var bwd = cpu.packBlockSparse(w, mask, true, packs);
                var dbwd = dev.packBlockSparse(up(w), mask, true, dpacks);
                Tensor dx = up(x), u = rand(m, r), lt = rand(r, out);
                cpu.blockSparseLinear(y, x, fwd, bias, 0.5f, u, lt, 0.25f);
                dev.blockSparseLinear(dy, dx, dfwd, up(bias), 0.5f, up(u), up(lt), 0.25f);
                check("block_sparse_forward_beta_bias_lowrank_" + s, y, dy, bound);
                Tensor a = rand(r, in), ub = h.allocate(DType.F32, m, (long) in / b * r), dub = poisoned(m, (long) in / b * r);
                cpu.blockLowRank(ub, x, a);
                dev.blockLowRank(dub, dx, up(a));
                check("block_low_rank_" + s, ub, dub, 1e-5);
                Tensor y2 = h.allocate(DType.F32, m, out), dy2 = poisoned(m, out);
                cpu.blockSparseLinear(y2, x, fwd, bias, 0f, ub, lt, 0.5f, true);
                dev.blockSparseLinear(dy2, dx, dfwd, up(bias), 0f, dub, up(lt), 0.5f, true);
                check("block_sparse_forward_masked_lora_" + s, y2, dy2, bound);
                // the plain product (no rank-r term): on CUDA every kernel
                Tensor y3 = rand(m, out);
                Tensor y3Ref = h.allocate(DType.F32, m, out).copyFrom(y3);
                cpu.blockSparseLinear(y3Ref, x, fwd, bias, 0.5f, null, null, 0f);
                CudaBackend.BlockSparseKernel[] kernels = dev instanceof CudaBackend ? CudaBackend.BlockSparseKernel.values()
                        : new CudaBackend.BlockSparseKernel[] {null};
                for (CudaBackend.BlockSparseKernel kernel : kernels) {
                    CudaBackend.BlockSparseKernel before = dev instanceof CudaBackend cuda ? cuda.blockSparseKernel() : null;
                    if (dev instanceof CudaBackend cuda) cuda.setBlockSparseKernel(kernel);
                    Tensor dy3 = up(y3);
                    dev.blockSparseLinear(dy3, dx, dfwd, up(bias), 0.5f, null, null, 0f);
                    if (dev instanceof CudaBackend cuda) cuda.setBlockSparseKernel(before);
                    check("block_sparse_forward_beta_bias_" + (kernel == null ? "" : kernel.name().toLowerCase(Locale.ROOT) + "_") + s, y3Ref,
                            dy3, bound);
                }
                Tensor g = rand(m, out), gx = rand(m, in), dgx = up(gx);
                cpu.blockSparseLinear(gx, g, bwd, null, 1f, null, null, 0f);
                dev.blockSparseLinear(dgx, up(g), dbwd, null, 1f, null, null, 0f);
                check("block_sparse_backward_data_accumulated_" + s, gx, dgx, bound);
                Tensor d = rand(out, r), dd = up(d);
                cpu.blockLowRankGradient(d, g, fwd, ub, 0.5f);
                dev.blockLowRankGradient(dd, up(g), dfwd, dub, 0.5f);
                check("block_low_rank_gradient_accumulated_" + s, d, dd, 1e-4);
            }
        }

        /** f32 -> bf16 -> f32 (activations kept for backward): both round to nearest even, so bit for bit; odd n for the scalar tail. */
        void convert(long n) {
            Tensor x = rand(n), half = h.allocate(DType.BF16, n), back = h.allocate(DType.F32, n);
            cpu.convert(half, x);
            cpu.convert(back, half);
            Tensor dhalf = up(h.allocate(DType.BF16, n).fill(Float.NaN)), dback = poisoned(n);
            dev.convert(dhalf, up(x));
            dev.convert(dback, dhalf);
            check("convert_f32_bf16_f32_" + n, back, dback, 0);
        }

        void transpose(int rows, int cols) {
            Tensor in = rand(rows, cols), out = rand(cols, rows), dout = up(out), over = poisoned(cols, rows), ref = h.allocate(DType.F32, cols, rows);
            cpu.transpose(out, in, 0.5f);
            dev.transpose(dout, up(in), 0.5f);
            check("transpose_accumulated", out, dout, 1e-6);
            cpu.transpose(ref, in, 0f);
            dev.transpose(over, up(in), 0f);
            check("transpose", ref, over, 0);
            Tensor w = rand(3072, 768), g = rand(3072, 768), sums = h.allocate(DType.F32, 96, 24), dsums = poisoned(96, 24);
            cpu.blockDot(sums, w, g);
            dev.blockDot(dsums, up(w), up(g));
            check("block_dot", sums, dsums, 1e-5);
        }
    }
}
