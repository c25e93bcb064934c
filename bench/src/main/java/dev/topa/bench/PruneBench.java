package dev.topa.bench;

import dev.topa.backend.BlockSparseWeight;
import dev.topa.model.Adapter;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.DefaultModel;
import dev.topa.io.OnnxBertReader;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.prune.StructuredPruning;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import dev.topa.train.Trainer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * The default model with half of its heads and FFN neurons structurally removed (every other one:
 * speed and memory do not depend on which) against the dense model. Modes, one per process so peaks
 * do not mix: {@code infer} -- batch 32 x seq 128 encoder throughput of both (alternating blocks,
 * median) and the encoder's peak inference memory (its weights + the forward's activations; the
 * embedding tables reported on their own); {@code train} -- the Pruning-Adapter training step's
 * whole peak (pruned backbone, LoRA r 8 on all six linears + LayerNorm + head, recomputation as
 * LoRA's default) at batch 32 x seq 128. Prints `name: value` lines.
 * {@code blocksparse} -- see {@link #blockSparse}.
 * {@code blocks-infer} / {@code blocks-train}: the same with half of every linear's 32 x 32 blocks
 * removed at random (block-sparse weights; in training the adapters masked alike) instead.
 * Usage: PruneBench infer|train|blocksparse|blocks-infer|blocks-train [threads] [iterations]
 */
public final class PruneBench {
    public static void main(String[] args) throws Exception {
        String mode = args[0];
        int threads = args.length > 1 ? Integer.parseInt(args[1]) : 2, iterations = args.length > 2 ? Integer.parseInt(args[2]) : 10;
        CpuKernels.setNumThreads(threads);
        if (mode.equals("blocksparse")) {
            blockSparse(iterations);
            return;
        }
        try (BertModel dense = OnnxBertReader.load(DefaultModel.directory().resolve("model.onnx"))) {
            var c = dense.config();
            boolean[][] heads = new boolean[c.layers()][], neurons = new boolean[c.layers()][];
            for (int l = 0; l < c.layers(); l++) {
                heads[l] = new boolean[c.heads(l)];
                neurons[l] = new boolean[c.ffn(l)];
                for (int h = 0; h < heads[l].length; h++) heads[l][h] = h % 2 == 0;
                for (int j = 0; j < neurons[l].length; j++) neurons[l][j] = j % 2 == 0;
            }
            if (mode.equals("train")) {
                try (BertModel pruned = StructuredPruning.compact(dense, heads, neurons)) {
                    dense.close();
                    train(pruned, "prune_adapt50");
                }
                return;
            }
            if (mode.startsWith("blocks-")) { // half of every linear's 32 x 32 blocks, at random, stored and multiplied block-sparse
                BertModel sparse = OnnxBertReader.load(DefaultModel.directory().resolve("model.onnx"));
                SplittableRandom rnd = new SplittableRandom(11);
                boolean[][][][] masks = new boolean[c.layers()][4][][];
                for (int l = 0; l < c.layers(); l++) {
                    int[][] shapes = {{3 * c.attentionWidth(l), c.hidden()}, {c.hidden(), c.attentionWidth(l)}, {c.ffn(l), c.hidden()},
                            {c.hidden(), c.ffn(l)}};
                    for (int slot = 0; slot < 4; slot++) {
                        masks[l][slot] = new boolean[shapes[slot][0] / 32][shapes[slot][1] / 32];
                        for (boolean[] row : masks[l][slot]) for (int j = 0; j < row.length; j++) row[j] = rnd.nextBoolean();
                    }
                }
                sparse.setBlockMasks(masks);
                try (sparse) {
                    if (mode.equals("blocks-train")) {
                        dense.close();
                        train(sparse, "blocks50");
                    } else {
                        infer(dense, sparse, iterations, "blocks50");
                    }
                }
                return;
            }
            try (BertModel pruned = StructuredPruning.compact(dense, heads, neurons)) {
                infer(dense, pruned, iterations, "pruned50");
            }
        }
    }

    private static long embeddingBytes(BertModel m) {
        return m.parameters().entrySet().stream().filter(e -> e.getKey().startsWith("embeddings.")).mapToLong(e -> e.getValue().numel() * 4)
                .sum();
    }

    private static long encoderBytes(BertModel m) {
        return m.parameters().entrySet().stream().filter(e -> e.getKey().startsWith("encoder.")).mapToLong(e -> e.getValue().numel() * 4)
                .sum();
    }

    private static void infer(BertModel dense, BertModel pruned, int iterations, String label) {
        CpuBackend be = CpuBackend.create();
        MemoryTracker mem = MemoryTracker.of(Device.CPU);
        int b = 32, s = 128;
        SplittableRandom rnd = new SplittableRandom(3);
        int[] ids = new int[b * s];
        for (int i = 0; i < ids.length; i++) ids[i] = i % s == 0 ? 101 : rnd.nextInt(1000, 30000);
        BertModel[] models = {dense, pruned};
        double[][] times = new double[2][];
        long[] activationPeak = new long[2];
        for (BertModel m : models) m.packForInference(be, false);
        try (StepArena arena = new StepArena("prune bench")) {
            for (int k = 0; k < 2; k++) times[k] = new double[iterations];
            for (int block = 0; block < iterations; block++)
                for (int k = 0; k < 2; k++) {
                    for (int warm = 0; warm < (block == 0 ? 3 : 1); warm++) run(be, models[k], arena, ids, b, s);
                    long before = mem.live(MemoryCategory.ACTIVATIONS) + mem.live(MemoryCategory.WORKSPACE);
                    mem.resetPeaks();
                    long t0 = System.nanoTime();
                    run(be, models[k], arena, ids, b, s);
                    times[k][block] = (System.nanoTime() - t0) * 1e-9;
                    activationPeak[k] = Math.max(activationPeak[k], mem.peak(MemoryCategory.ACTIVATIONS) + mem.peak(MemoryCategory.WORKSPACE) - before);
                }
        }
        double[] med = new double[2];
        for (int k = 0; k < 2; k++) {
            Arrays.sort(times[k]);
            med[k] = times[k][iterations / 2];
        }
        // the encoder's weights as inference holds them: parameters and their pre-packed copies (everything but the embedding tables)
        long denseEnc = dense.parameterBytes() - embeddingBytes(dense) + activationPeak[0];
        long prunedEnc = pruned.parameterBytes() - embeddingBytes(pruned) + activationPeak[1];
        System.out.printf(Locale.ROOT, "dense_heads_per_layer: %s%n", Arrays.toString(dense.config().heads()));
        System.out.printf(Locale.ROOT, "pruned_heads_per_layer: %s%n", Arrays.toString(pruned.config().heads()));
        System.out.printf(Locale.ROOT, "pruned_ffn_per_layer: %s%n", Arrays.toString(pruned.config().ffn()));
        System.out.printf(Locale.ROOT, "encoder_parameters_dense: %d%n", encoderBytes(dense) / 4);
        System.out.printf(Locale.ROOT, "encoder_parameters_pruned: %d%n", encoderBytes(pruned) / 4);
        System.out.printf(Locale.ROOT, "embedding_tables_mib: %.1f%n", embeddingBytes(dense) / 1048576.0);
        System.out.printf(Locale.ROOT, "dense_b32_s128_seq_per_s: %.1f%n", b / med[0]);
        System.out.printf(Locale.ROOT, "%s_b32_s128_seq_per_s: %.1f%n", label, b / med[1]);
        System.out.printf(Locale.ROOT, "dense_encoder_peak_mib: %.1f%n", denseEnc / 1048576.0);
        System.out.printf(Locale.ROOT, "%s_encoder_peak_mib: %.1f%n", label, prunedEnc / 1048576.0);
        // everything each model holds, packed copies included (a block-sparse model still holds its dense weights too)
        System.out.printf(Locale.ROOT, "dense_encoder_weights_held_mib: %.1f%n", (dense.parameterBytes() - embeddingBytes(dense)) / 1048576.0);
        System.out.printf(Locale.ROOT, "%s_encoder_weights_held_mib: %.1f%n", label, (pruned.parameterBytes() - embeddingBytes(pruned)) / 1048576.0);
        String suffix = label.equals("pruned50") ? "" : "_" + label;
        System.out.printf(Locale.ROOT, "infer_speedup_50%s: %.3f%n", suffix, med[0] / med[1]);
        System.out.printf(Locale.ROOT, "infer_memory_ratio_50%s: %.3f%n", suffix, (double) prunedEnc / denseEnc);
    }

    /**
     * 80% block sparsity (20% of the 32 x 32 blocks kept, at random) at BERT-base's FFN shapes, 4096
     * tokens: the block-sparse kernel against our dense GEMM on the same (masked) weight, forward
     * Y = X W^T and input gradient dX = dY W; the ratio of times is the effective speed-up.
     */
    private static void blockSparse(int iterations) {
        CpuBackend be = CpuBackend.create();
        SplittableRandom rnd = new SplittableRandom(5);
        long m = 4096;
        double minFwd = Double.MAX_VALUE, minBwd = Double.MAX_VALUE;
        try (TensorScope scope = new TensorScope("blocksparse", MemoryCategory.ACTIVATIONS)) {
            for (long[] shape : new long[][] {{3072, 768}, {768, 3072}}) {
                long out = shape[0], in = shape[1];
                boolean[][] mask = new boolean[(int) out / 32][(int) in / 32];
                for (boolean[] row : mask) for (int j = 0; j < row.length; j++) row[j] = rnd.nextDouble() < 0.2;
                Tensor w = random(scope, rnd, out, in), x = random(scope, rnd, m, in), y = scope.allocate(DType.F32, m, out);
                Tensor dy = random(scope, rnd, m, out), dx = scope.allocate(DType.F32, m, in);
                var fwd = BlockSparseWeight.pack(be, w, mask, false, scope, false);
                var bwd = BlockSparseWeight.pack(be, w, mask, true, scope, false);
                double dF = median(iterations, () -> be.gemm(false, true, 1f, x, w, 0f, y, null));
                double sF = median(iterations, () -> BlockSparseWeight.linear(be, y, x, fwd, null, 0f, null, null, 0f, false));
                double dB = median(iterations, () -> be.gemm(false, false, 1f, dy, w, 0f, dx, null));
                double sB = median(iterations, () -> BlockSparseWeight.linear(be, dx, dy, bwd, null, 0f, null, null, 0f, false));
                String tag = m + "x" + in + "x" + out;
                System.out.printf(Locale.ROOT, "blocksparse80_%s_density: %.3f%n", tag, fwd.density());
                System.out.printf(Locale.ROOT, "blocksparse80_%s_fwd_ms: dense %.2f, sparse %.2f%n", tag, dF * 1e3, sF * 1e3);
                System.out.printf(Locale.ROOT, "blocksparse80_%s_bwd_ms: dense %.2f, sparse %.2f%n", tag, dB * 1e3, sB * 1e3);
                System.out.printf(Locale.ROOT, "blocksparse80_%s_dense_gflops: %.1f%n", tag, 2.0 * m * in * out / dF * 1e-9);
                System.out.printf(Locale.ROOT, "blocksparse80_%s_sparse_kept_gflops: %.1f%n", tag, 2.0 * m * in * out * fwd.density() / sF * 1e-9);
                minFwd = Math.min(minFwd, dF / sF);
                minBwd = Math.min(minBwd, dB / sB);
            }
        }
        System.out.printf(Locale.ROOT, "blocksparse80_fwd_speedup: %.3f%n", minFwd);
        System.out.printf(Locale.ROOT, "blocksparse80_bwd_speedup: %.3f%n", minBwd);
    }

    private static Tensor random(dev.topa.tensor.TensorScope scope, SplittableRandom rnd, long... shape) {
        float[] v = new float[(int) Tensor.numel(shape)];
        for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() - 0.5);
        return scope.allocate(DType.F32, shape).copyFrom(v);
    }

    private static double median(int n, Runnable r) {
        for (int i = 0; i < 2; i++) r.run();
        double[] t = new double[n];
        for (int i = 0; i < n; i++) {
            long t0 = System.nanoTime();
            r.run();
            t[i] = (System.nanoTime() - t0) * 1e-9;
        }
        Arrays.sort(t);
        return t[n / 2];
    }

    private static void run(CpuBackend be, BertModel m, StepArena arena, int[] ids, int b, int s) {
        arena.reset();
        Tensor t = arena.allocate(DType.I32, b, s).copyFrom(ids);
        m.forward(be, arena, t, null, null);
    }

    private static void train(BertModel pruned, String label) {
        int b = 32, s = 128;
        List<Trainer.Item> batch = TrainBench.syntheticBatch(b, s);
        pruned.addLora(new LoraConfig(8, 16, EnumSet.allOf(LoraConfig.Target.class)), 1);
        try (BertTraining training = new BertTraining(null, pruned, new BertTraining.Options(n -> n.contains("lora_") || n.contains("LayerNorm"), DropoutConfig.NONE, true, DType.F32));
                TaskHead head = new TaskHead(pruned.config().hidden(), 2, 1);
                Trainer trainer = new Trainer(CpuBackend.create(), pruned, training, head, GlueTask.SST2,
                        new Trainer.Config(1, b, 1e-4, 0.01, 0, 1.0, 1))) {
            double[] t = new double[5];
            for (int i = -2; i < t.length; i++) {
                long t0 = System.nanoTime();
                trainer.trainStep(batch, 1e-5);
                if (i >= 0) t[i] = (System.nanoTime() - t0) * 1e-9;
            }
            Arrays.sort(t);
            System.out.printf(Locale.ROOT, "%s_step_seconds: %.3f%n", label, t[t.length / 2]);
            System.out.printf(Locale.ROOT, "%s_peak_mib: %.1f%n", label, MemoryTracker.of(Device.CPU).totalPeak() / 1048576.0);
        }
    }
}
