package dev.topa.kit;

import dev.topa.io.RandomTokens;
import dev.topa.harness.Check;
import dev.topa.model.Adapter;
import dev.topa.backend.AdamWConfig;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.train.Predictor;
import dev.topa.train.Trainer;
import dev.topa.backend.Backend;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * One whole LoRA training step on a device backend against the CPU backend, from the same weights,
 * adapters, head and batch (padding in all but the first sequence): the loss, every trainable
 * parameter's gradient (LoRA A and B of every slot, the head) and the parameters after one AdamW
 * step, by relative error: bound 1e-4 with the device in fp32, 2e-2 in mixed precision (bf16
 * tensor-core attention in forward; backward recomputes the probabilities in fp32). Prints
 * `train_step_*` lines.
 */
public final class TrainingStepParity {
    private final SplittableRandom rnd = new SplittableRandom(11);
    private final List<String> failures = new ArrayList<>();

    public static void main(String[] args) {
        if (CudaDriver.get().isEmpty()) {
            System.out.println("cuda_available: false (" + CudaDriver.unavailableReason() + ")");
            System.exit(2);
        }
        // "dense": the steps, the Trainer and the timings; "blocks": the block-pruned steps (new kernels: their own JVM in the kit,
        // so a fault there cannot cost the timings); no argument: both
        String part = args.length > 0 ? args[0] : "all";
        try (CudaBackend gpu = CudaBackend.open(0); CudaBackend exact = CudaBackend.open(0, CudaBackend.Precision.FP32)) {
            BertConfig minilm = BertConfig.uniform(30522, 384, 6, 12, 1536, 512, 2, 1e-12f);
            TrainingStepParity p = new TrainingStepParity();
            boolean ok = true;
            if (!part.equals("blocks")) {
                ok &= p.guarded("fp32", () -> p.run(minilm, CpuBackend.create(), exact, 8, 64, 1e-4, "fp32"));
                ok &= p.guarded("mixed", () -> p.run(minilm, CpuBackend.create(), gpu, 8, 64, 2e-2, "mixed"));
                ok &= p.guarded("mixed_bf16_activations",
                        () -> p.run(minilm, CpuBackend.create(), gpu, 8, 64, 2e-2, "mixed_bf16_activations", 1, false, DType.BF16));
                ok &= p.guarded("trainer", () -> p.trainer(minilm, CpuBackend.create(), exact));
            }
            if (!part.equals("dense")) {
                ok &= p.guarded("blocksparse_fp32", () -> p.run(minilm, CpuBackend.create(), exact, 8, 64, 1e-4, "blocksparse_fp32", 0.5, false));
                ok &= p.guarded("blocksparse_mixed", () -> p.run(minilm, CpuBackend.create(), gpu, 8, 64, 2e-2, "blocksparse_mixed", 0.5, false));
                ok &= p.guarded("blockmasked_dense_mixed",
                        () -> p.run(minilm, CpuBackend.create(), gpu, 8, 64, 2e-2, "blockmasked_dense_mixed", 0.5, true));
            }
            System.out.println("cuda_training_step_matches" + (part.equals("all") ? "" : "_" + part) + ": " + ok);
            if (!part.equals("blocks")) {
                BertConfig base = BertConfig.uniform(30522, 768, 12, 12, 3072, 512, 2, 1e-12f);
                // the Pruning-Adapter's backbone: BERT-base with half its heads and half its FFN neurons in every layer (50% structured)
                int[] heads = new int[12], ffn = new int[12];
                java.util.Arrays.fill(heads, 6);
                java.util.Arrays.fill(ffn, 1536);
                BertConfig pruned = new BertConfig(30522, 768, 512, 2, 64, heads, ffn, 1e-12f);
                p.guarded("timing", () -> {
                    p.timing("bertbase", base, gpu, 32, 128, false, DType.F32);
                    p.timing("bertbase", base, gpu, 32, 128, true, DType.F32);
                    p.timing("bertbase", base, gpu, 32, 128, true, DType.BF16); // what --device cuda trains with
                    p.timing("bertbase_pruned50", pruned, gpu, 32, 128, true, DType.BF16);
                    return true;
                });
            }
            System.exit(ok ? 0 : 1);
        }
    }

    /** A check that throws (a kernel fault) counts as a mismatch, reported, and the next check still runs. */
    private boolean guarded(String name, java.util.function.BooleanSupplier check) {
        try {
            return check.getAsBoolean();
        } catch (RuntimeException e) {
            System.out.println("train_step_" + name + "_exception: " + e);
            return false;
        }
    }

    /** true when loss, gradients and updated parameters all match. */
    public boolean run(BertConfig config, Backend cpu, Backend dev, int batch, int seq) {
        return run(config, cpu, dev, batch, seq, 1e-4, "fp32");
    }

    /** As above with a bound (1e-4 when the device computes in fp32, 2e-2 with bf16 products) and a tag for the printed names. */
    public boolean run(BertConfig config, Backend cpu, Backend dev, int batch, int seq, double bound, String tag) {
        return run(config, cpu, dev, batch, seq, bound, tag, 1, false, DType.F32);
    }

    public boolean run(BertConfig config, Backend cpu, Backend dev, int batch, int seq, double bound, String tag, double blockDensity,
            boolean denseFormat) {
        return run(config, cpu, dev, batch, seq, bound, tag, blockDensity, denseFormat, DType.F32);
    }

    /**
     * With blockDensity < 1 every linear weight is block-pruned (random 32 x 32 masks): the masked-adapter path, block-sparse
     * products, or with denseFormat dense products and the masked term from structure-only packs. saved: how the device keeps
     * activations for backward (the CPU keeps them in f32).
     */
    public boolean run(BertConfig config, Backend cpu, Backend dev, int batch, int seq, double bound, String tag, double blockDensity,
            boolean denseFormat, DType saved) {
        failures.clear();
        LoraConfig lora = new LoraConfig(8, 16, java.util.EnumSet.allOf(LoraConfig.Target.class)); // every slot, fused QKV included
        try (BertModel host = randomModel(config); TaskHead head = new TaskHead(config.hidden(), 3, 5); TensorScope in = scope()) {
            host.addLora(lora, 3);
            randomize(host.parameters(), "lora_B"); // B starts at zero: give it values so every gradient path carries signal
            if (blockDensity < 1) host.setBlockMasks(randomBlockMasks(host, blockDensity));
            if (denseFormat) {
                boolean[][] all = new boolean[config.layers()][4];
                for (boolean[] row : all) java.util.Arrays.fill(row, true);
                host.setDenseFormat(all);
            }
            try (BertModel onDev = host.copyTo(dev); TaskHead headDev = head.copyTo(dev)) {
                Tensor[] inputs = inputs(in, config, batch, seq);
                Map<String, float[]> ref = step(cpu, host, head, inputs, null, DType.F32), got = step(dev, onDev, headDev, inputs, dev, saved);
                for (String n : ref.keySet()) compare(tag + "_" + n, ref.get(n), got.get(n), bound);
            }
        }
        if (!failures.isEmpty()) System.out.println("train_step_failures: " + failures);
        return failures.isEmpty();
    }

    /** Forward, cross-entropy, backward, one AdamW step; returns loss, gradients and updated parameters on the host. */
    private Map<String, float[]> step(Backend be, BertModel model, TaskHead head, Tensor[] in, Backend device, DType saved) {
        Map<String, float[]> out = new LinkedHashMap<>();
        try (BertTraining training = new BertTraining(device, model, new BertTraining.Options(n -> n.contains("lora_"), DropoutConfig.NONE, false, saved));
                StepArena arena = be.stepArena("step"); TensorScope host = scope()) {
            Tensor ids = be.copyOf(in[0], arena), types = be.copyOf(in[1], arena), mask = be.copyOf(in[2], arena), labels = be.copyOf(in[3], arena);
            Tensor logits = head.forward(be, arena, training.forward(be, arena, ids, types, mask), mask);
            Tensor dLogits = arena.allocate(DType.F32, logits.shape());
            float loss = be.crossEntropyForward(arena.allocate(DType.F32, logits.dim(0)), logits, labels);
            be.crossEntropyBackward(dLogits, logits, labels, 1f);
            training.backward(be, arena, head.backward(be, arena, dLogits, ids.dim(1)));
            out.put("loss", new float[] {loss});
            Map<String, Tensor> grads = new LinkedHashMap<>(training.gradients());
            head.gradients().forEach(grads::put);
            Map<String, Tensor> params = new LinkedHashMap<>();
            for (String n : training.gradients().keySet()) params.put(n, model.parameter(n));
            head.parameters().forEach(params::put);
            List<Tensor[]> group = new ArrayList<>();
            try (var state = be.scope("adamw", MemoryCategory.OPTIMIZER)) {
                for (var e : grads.entrySet()) {
                    out.put("grad_" + e.getKey(), be.copyOf(e.getValue(), host).toFloatArray());
                    Tensor m = state.allocate(DType.F32, e.getValue().shape()), v = state.allocate(DType.F32, e.getValue().shape());
                    be.zero(m);
                    be.zero(v);
                    group.add(new Tensor[] {params.get(e.getKey()), e.getValue(), m, v});
                }
                be.adamwStep(group, new AdamWConfig(1e-3, 0.9, 0.999, 1e-8, 0.01), 1, 1f);
            }
            for (var e : params.entrySet()) out.put("updated_" + e.getKey(), be.copyOf(e.getValue(), host).toFloatArray());
        }
        return out;
    }

    /**
     * The Trainer end to end on the device (padding and uploads, labels, gradient clipping over all
     * gradients, the fused AdamW, then evaluation through the Predictor with the head on the device)
     * against the Trainer on the CPU: two optimizer steps on MRPC-shaped random items, the losses and
     * the dev outputs after them (bound 1e-4: the device in fp32).
     */
    public boolean trainer(BertConfig config, Backend cpu, Backend dev) {
        List<Trainer.Item> items = new ArrayList<>();
        for (int i = 0; i < 24; i++)
            items.add(new Trainer.Item(RandomTokens.sequence(rnd, config.vocabSize(), 4 + rnd.nextInt(Math.min(60, config.maxPositions() - 4))),
                    new Example("a", "b", rnd.nextInt(2), 0f)));
        var cfg = new Trainer.Config(1, 8, 1e-3, 0.01, 0, 1.0, 7);
        LoraConfig lora = new LoraConfig(8, 16, java.util.EnumSet.allOf(LoraConfig.Target.class));
        float[][] out = new float[2][];
        double[][] losses = new double[2][2];
        try (BertModel host = randomModel(config)) {
            host.addLora(lora, 3);
            randomize(host.parameters(), "lora_B");
            for (int k = 0; k < 2; k++) {
                Backend be = k == 0 ? cpu : dev;
                boolean device = !be.device().isHostAccessible();
                try (TaskHead head = new TaskHead(config.hidden(), 2, 5); BertModel m = host.copyTo(be); TaskHead h = head.copyTo(be);
                        BertTraining training = new BertTraining(be, m, new BertTraining.Options(n -> n.contains("lora_"), DropoutConfig.NONE, false, DType.F32));
                        Trainer tr = new Trainer(be, m, training, h, GlueTask.MRPC, cfg)) {
                    losses[k][0] = tr.trainStep(items.subList(0, 8), 1e-3);
                    losses[k][1] = tr.trainStep(items.subList(8, 16), 1e-3);
                    float[][] o;
                    try (Predictor p = new Predictor(be, m, h)) {
                        o = p.outputs(items.stream().map(Trainer.Item::tokens).toList(), 8);
                    }
                    out[k] = new float[o.length * 2];
                    for (int i = 0; i < o.length; i++) System.arraycopy(o[i], 0, out[k], 2 * i, 2);
                    if (device) System.out.println("trainer_on " + be.name());
                }
            }
        }
        failures.clear();
        compare("trainer_losses", new float[] {(float) losses[0][0], (float) losses[0][1]}, new float[] {(float) losses[1][0], (float) losses[1][1]},
                1e-4);
        compare("trainer_dev_outputs_after_two_steps", out[0], out[1], 1e-4);
        boolean ok = failures.isEmpty();
        if (!ok) System.out.println("train_step_failures: " + failures);
        return ok;
    }

    /**
     * LoRA training step time (PEFT's default targets: query and value, r 8, alpha 16; mean-pool head of 3
     * classes; cross-entropy; AdamW on adapters and head): median wall time of 10 steps after 3 warm-ups, each
     * ending with the stream drained (the loss is read back every step, as a training loop does). saved: how activations are
     * kept for backward (bf16: names end in _bf16_act).
     */
    void timing(String tag, BertConfig config, Backend dev, int batch, int seq, boolean bf16Base, DType saved) {
        LoraConfig lora = new LoraConfig(8, 16, java.util.EnumSet.of(LoraConfig.Target.QUERY, LoraConfig.Target.VALUE));
        var tracker = MemoryTracker.of(dev.device());
        try (BertModel host = randomModel(config); TaskHead head = new TaskHead(config.hidden(), 3, 5); TensorScope in = scope()) {
            host.addLora(lora, 3);
            try (BertModel m = host.copyTo(dev); TaskHead h = head.copyTo(dev);
                    BertTraining training = new BertTraining(dev, m, new BertTraining.Options(n -> n.contains("lora_"), DropoutConfig.NONE, false, saved));
                    StepArena arena = dev.stepArena("timing"); var state = dev.scope("adamw", MemoryCategory.OPTIMIZER)) {
                if (bf16Base) m.packForTraining(dev);
                Tensor[] inputs = inputs(in, config, batch, seq);
                for (int i = 0; i < inputs[2].numel(); i++) inputs[2].setInt(i, 1); // full sequences, as PyTorch is timed
                List<Tensor[]> group = new ArrayList<>();
                Map<String, Tensor> grads = new LinkedHashMap<>(training.gradients());
                h.gradients().forEach(grads::put);
                for (var e : grads.entrySet()) {
                    Tensor p = e.getKey().startsWith("head.") ? h.parameters().get(e.getKey()) : m.parameter(e.getKey());
                    Tensor mm = state.allocate(DType.F32, p.shape()), vv = state.allocate(DType.F32, p.shape());
                    dev.zero(mm);
                    dev.zero(vv);
                    group.add(new Tensor[] {p, e.getValue(), mm, vv});
                }
                AdamWConfig cfg = new AdamWConfig(1e-4, 0.9, 0.999, 1e-8, 0.01);
                double[] ms = new double[10];
                tracker.resetPeaks();
                for (int i = -3; i < ms.length; i++) {
                    long t0 = System.nanoTime();
                    arena.reset();
                    Tensor ids = dev.copyOf(inputs[0], arena), types = dev.copyOf(inputs[1], arena), mask = dev.copyOf(inputs[2], arena);
                    Tensor labels = dev.copyOf(inputs[3], arena);
                    Tensor logits = h.forward(dev, arena, training.forward(dev, arena, ids, types, mask), mask);
                    Tensor dLogits = arena.allocate(DType.F32, logits.shape());
                    dev.crossEntropyForward(arena.allocate(DType.F32, logits.dim(0)), logits, labels);
                    dev.crossEntropyBackward(dLogits, logits, labels, 1f);
                    training.backward(dev, arena, h.backward(dev, arena, dLogits, ids.dim(1)));
                    dev.adamwStep(group, cfg, i + 4, 1f);
                    training.zeroGradients();
                    h.zeroGradients();
                    dev.synchronize();
                    if (i >= 0) ms[i] = (System.nanoTime() - t0) * 1e-6;
                }
                java.util.Arrays.sort(ms);
                String name = "topa_" + dev.device().kind().name().toLowerCase(java.util.Locale.ROOT) + "_lora_step_" + tag + "_b" + batch + "_s" + seq + (bf16Base ? "_bf16_base" : "_fp32_base") + (saved == DType.BF16 ? "_bf16_act" : "");
                System.out.printf(Locale.ROOT, "%s_ms: %.3f%n%s_device_peak_mib: %.1f%n", name, ms[ms.length / 2], name,
                        tracker.totalPeak() / 1048576.0);
            }
        }
    }

    private void compare(String name, float[] ref, float[] got, double bound) {
        double err = Check.relativeError(ref, got);
        boolean ok = err <= bound;
        if (!ok) failures.add(name);
        if (!ok || name.endsWith("_loss") || name.startsWith("trainer") || name.contains("layer.0.") || name.contains("grad_head")
                || name.contains("layer.5.output"))
            System.out.printf(Locale.ROOT, "train_step_%s_rel_error: %.3e (bound %.0e, %s)%n", name, err, bound, ok ? "ok" : "MISMATCH");
    }

    private static TensorScope scope() {
        return new TensorScope("training step check", MemoryCategory.WORKSPACE);
    }

    /** ids, types, mask (padding in all but the first sequence) and labels of 3 classes. */
    private Tensor[] inputs(TensorScope s, BertConfig config, int batch, int seq) {
        Tensor[] tokens = RandomTokens.batch(rnd, s, config.vocabSize(), batch, seq, true);
        int[] labels = new int[batch];
        for (int b = 0; b < batch; b++) labels[b] = rnd.nextInt(3);
        return new Tensor[] {tokens[0], tokens[1], tokens[2], s.allocate(DType.I32, batch).copyFrom(labels)};
    }

    private boolean[][][][] randomBlockMasks(BertModel m, double density) {
        int b = BlockSparseWeight.BLOCK;
        boolean[][][][] masks = new boolean[m.config().layers()][4][][];
        for (int l = 0; l < masks.length; l++)
            for (int slot = 0; slot < 4; slot++) {
                int c = m.config().hidden(), a = m.config().attentionWidth(l), f = m.config().ffn(l);
                int[] outIn = new int[][] {{3 * a, c}, {c, a}, {f, c}, {c, f}}[slot];
                boolean[][] mask = new boolean[outIn[0] / b][outIn[1] / b];
                for (boolean[] row : mask) for (int j = 0; j < row.length; j++) row[j] = rnd.nextDouble() < density;
                masks[l][slot] = mask;
            }
        return masks;
    }

    private BertModel randomModel(BertConfig config) {
        BertModel m = new BertModel(config);
        randomize(m.parameters(), "");
        return m;
    }

    private void randomize(Map<String, Tensor> params, String only) {
        for (var e : params.entrySet()) {
            if (!e.getKey().contains(only)) continue;
            Tensor t = e.getValue();
            String n = e.getKey();
            float[] v = new float[(int) t.numel()];
            boolean gamma = n.endsWith("LayerNorm.weight");
            double spread = n.contains("embeddings") ? 0.1 : n.endsWith("bias") ? 0.02 : 0.05 * Math.sqrt(3);
            for (int i = 0; i < v.length; i++) v[i] = (float) ((gamma ? 1 : 0) + spread * (2 * rnd.nextDouble() - 1));
            t.copyFrom(v);
        }
    }
}
