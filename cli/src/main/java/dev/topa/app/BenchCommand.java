package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.backend.cpu.Isa;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.Arrays;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "bench", description = "Benchmarks of the engine.", subcommands = {BenchCommand.Kernels.class, BenchTrainCommand.class})
final class BenchCommand {

    @Command(name = "kernels", description = {
            "Time the CPU kernels at BERT training shapes and print 'name: value' lines:",
            "GEMM GFLOP/s at the six shapes M x (K,N) of MiniLM and BERT-base linear layers, then the",
            "other ops at batch x seq = M tokens, then the memory the run held.",
            "For the comparison with OpenBLAS run bench/gemm.sh (JMH)."})
    static final class Kernels implements Callable<Integer> {
        @Mixin
        ThreadsOption threads;

        @Option(names = "--isa", description = "one of ${COMPLETION-CANDIDATES} (default: best supported)")
        Isa isa;

        @Option(names = "--m", description = "tokens per step: rows of the GEMMs (default: ${DEFAULT-VALUE})")
        int m = 4096;

        @Option(names = "--iterations", description = "timed repetitions per kernel; the median is reported (default: ${DEFAULT-VALUE})")
        int iterations = 7;

        static final long[][] GEMM_SHAPES = {{384, 384}, {384, 1536}, {1536, 384}, {768, 768}, {768, 3072}, {3072, 768}};

        @Override
        public Integer call() {
            threads.apply();
            Backend be = isa == null ? CpuBackend.create() : CpuBackend.create(isa);
            System.out.println("backend: " + be.name());
            System.out.println("threads: " + CpuKernels.numThreads());
            SplittableRandom rnd = new SplittableRandom(1);
            try (TensorScope scope = new TensorScope("bench", MemoryCategory.ACTIVATIONS)) {
                for (long[] kn : GEMM_SHAPES) {
                    long k = kn[0], n = kn[1];
                    Tensor x = random(scope, rnd, m, k), w = random(scope, rnd, n, k), y = scope.allocate(DType.F32, m, n);
                    double sec = median(() -> be.linearForward(y, x, w, null));
                    System.out.printf(Locale.ROOT, "gemm_%dx%dx%d_gflops: %.1f%n", m, k, n, 2.0 * m * k * n / sec * 1e-9);
                    var wb = be.packBf16(w, true, scope); // the same product with a frozen bf16 weight
                    double bsec = median(() -> be.gemmBf16(1f, x, wb, 0f, y, null));
                    System.out.printf(Locale.ROOT, "gemm_bf16_%dx%dx%d_gflops: %.1f%n", m, k, n, 2.0 * m * k * n / bsec * 1e-9);
                }
                int batch = Math.max(1, m / 128), seq = Math.min(128, m), hidden = 768, heads = 12;
                Tensor h = random(scope, rnd, batch, seq, hidden), h2 = random(scope, rnd, batch, seq, hidden);
                Tensor g = random(scope, rnd, hidden), b = random(scope, rnd, hidden);
                Tensor mean = scope.allocate(DType.F32, (long) batch * seq), rstd = scope.allocate(DType.F32, (long) batch * seq);
                Tensor out = scope.allocate(DType.F32, batch, seq, hidden);
                report("layernorm_residual_ms", median(() -> be.layernormForward(out, mean, rstd, null, h, h2, g, b, 1e-12f)));
                Tensor ffn = random(scope, rnd, batch, seq, 4 * hidden), ffnOut = scope.allocate(DType.F32, batch, seq, 4 * hidden);
                Tensor ffnBias = random(scope, rnd, 4 * hidden);
                report("bias_gelu_ms", median(() -> be.biasGeluForward(ffnOut, ffn, ffnBias)));
                report("bias_gelu_backward_ms", median(() -> be.biasGeluBackward(ffnOut, null, ffn, ffn, ffnBias)));
                Tensor qkv = random(scope, rnd, batch, seq, 3 * hidden), dqkv = scope.allocate(DType.F32, batch, seq, 3 * hidden);
                Tensor probs = scope.allocate(DType.F32, batch, heads, seq, seq);
                float scale = (float) (1 / Math.sqrt(hidden / heads));
                report("attention_forward_ms", median(() -> be.attentionForward(out, probs, qkv, null, heads, scale)));
                report("attention_backward_ms", median(() -> be.attentionBackward(dqkv, h, probs, qkv, heads, scale)));
                // the same tokens as sequences of mixed lengths packed without padding (serving's micro-batches)
                int[] lengths = new int[batch];
                for (int i = 0; i < batch; i++) lengths[i] = seq / 4 + rnd.nextInt(seq - seq / 4 + 1);
                long packedTokens = java.util.Arrays.stream(lengths).sum();
                Tensor packedQkv = qkv.reshape((long) batch * seq, 3 * hidden).rows(0, packedTokens);
                Tensor packedOut = out.reshape((long) batch * seq, hidden).rows(0, packedTokens);
                report("attention_forward_packed_ms", median(() -> be.attentionForwardPacked(packedOut, packedQkv, lengths, heads, scale)));
                Tensor pooled = scope.allocate(DType.F32, batch, hidden);
                report("mean_pool_ms", median(() -> be.meanPoolForward(pooled, h, null)));
                var drop = new dev.topa.backend.Dropout(0.1, 12345);
                report("dropout_ms", median(() -> be.dropout(out, h, drop, false)));
                Tensor headGrads = scope.allocate(DType.F32, batch, heads);
                report("head_mask_gradient_ms", median(() -> be.groupDot(headGrads, h, h2, heads)));
                report("sum_of_squares_ms", median(() -> be.sumOfSquares(ffn)));
                Tensor w3 = random(scope, rnd, 4 * hidden, hidden), g3 = random(scope, rnd, 4 * hidden, hidden);
                Tensor blockSums = scope.allocate(DType.F32, 4L * hidden / 32, hidden / 32), factorT = scope.allocate(DType.F32, 8, 4 * hidden);
                report("block_dot_3072x768_ms", median(() -> be.blockDot(blockSums, w3, g3)));
                report("transpose_3072x8_ms", median(() -> be.transpose(factorT, w3.reshape(4L * hidden * hidden / 8, 8).rows(0, 4L * hidden), 0f)));
                // a 768 x 768 projection: plain, pre-packed weight, and with a rank-8 LoRA adapter
                Tensor w = random(scope, rnd, hidden, hidden), bias = random(scope, rnd, hidden);
                Tensor la = random(scope, rnd, 8, hidden), lb = random(scope, rnd, hidden, 8);
                Tensor u = scope.allocate(DType.F32, (long) batch * seq, 8), dyB = scope.allocate(DType.F32, (long) batch * seq, 8);
                Tensor dla = scope.allocate(DType.F32, 8, hidden).fill(0f), dlb = scope.allocate(DType.F32, hidden, 8).fill(0f);
                var packedW = be.packLinearWeight(w, scope);
                double plain = median(() -> be.linearForward(out, h, w, bias));
                report("linear_768_ms", plain);
                report("linear_768_packed_ms", median(() -> be.linearForward(out, h, packedW, bias)));
                double lora = median(() -> be.loraForward(out, u, h, w, bias, la, lb, 2f));
                report("lora_r8_forward_ms", lora);
                System.out.printf(Locale.ROOT, "lora_r8_forward_over_linear: %.3f%n", lora / plain);
                report("lora_r8_backward_ms", median(() -> be.loraBackward(h2, null, null, dla, dlb, dyB, out, h, u, w, la, lb, 2f)));
                // the same on a bf16 frozen base: the product alone, then with the adapter's factor and term (forward, input gradient)
                var wt16 = be.packBf16(w, true, scope);
                var w16 = be.packBf16(w, false, scope);
                double base16 = median(() -> be.gemmBf16(1f, h, wt16, 0f, out, bias));
                report("linear_768_bf16_ms", base16);
                double lora16 = median(() -> be.loraForwardBf16(out, u, h, wt16, bias, la, lb, 2f));
                report("lora_r8_forward_bf16_ms", lora16);
                System.out.printf(Locale.ROOT, "lora_r8_forward_bf16_over_linear_bf16: %.3f%n", lora16 / base16);
                report("lora_r8_input_gradient_bf16_ms", median(() -> be.loraInputGradientBf16(h2, false, dyB, out, w16, lb, la, 2f)));
                // activations kept for backward in bf16: the conversion there and back
                Tensor half16 = scope.allocate(DType.BF16, batch, seq, hidden);
                report("convert_f32_to_bf16_ms", median(() -> be.convert(half16, h)));
                report("convert_bf16_to_f32_ms", median(() -> be.convert(h2, half16)));
                // the same projection with half of its 32 x 32 blocks kept, the adapter masked alike (block pruning)
                boolean[][] half = new boolean[hidden / 32][hidden / 32];
                for (boolean[] row : half) for (int j = 0; j < row.length; j++) row[j] = rnd.nextBoolean();
                var bsr = be.packBlockSparse(w, half, false, scope);
                Tensor lbT = random(scope, rnd, 8, hidden), ub = scope.allocate(DType.F32, (long) batch * seq, hidden / 32 * 8);
                report("blocksparse50_768_ms", median(() -> be.blockSparseLinear(out, h, bsr, bias, 0f, null, null, 0f)));
                report("block_lowrank_r8_ms", median(() -> be.blockLowRank(ub, h, la)));
                report("blocksparse50_768_masked_lora_ms", median(() -> be.blockSparseLinear(out, h, bsr, bias, 0f, ub, lbT, 2f, true)));
                report("block_lowrank_gradient_r8_ms", median(() -> be.blockLowRankGradient(dlb, h2, bsr, ub, 2f)));
            }
            System.out.print(MemoryTracker.of(be.device()).report());
            return 0;
        }

        private static Tensor random(TensorScope scope, SplittableRandom rnd, long... shape) {
            Tensor t = scope.allocate(DType.F32, shape);
            float[] v = new float[(int) t.numel()];
            for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() * 2 - 1);
            return t.copyFrom(v);
        }

        private static void report(String name, double sec) {
            System.out.printf(Locale.ROOT, "%s: %.3f%n", name, sec * 1e3);
        }

        /** Median wall time of `iterations` runs after two warm-up runs (first touch is slow here). */
        private double median(Runnable r) {
            r.run();
            r.run();
            double[] t = new double[Math.max(1, iterations)];
            for (int i = 0; i < t.length; i++) {
                long t0 = System.nanoTime();
                r.run();
                t[i] = (System.nanoTime() - t0) * 1e-9;
            }
            Arrays.sort(t);
            return t[t.length / 2];
        }
    }
}
