package dev.topa.prune;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.EnumSet;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The compacted model against the dense model with the same heads and neurons masked (value rows
 * of removed heads and FFN-in rows of removed neurons zeroed, which zeroes their contexts and
 * activations), on random weights with LoRA on every linear; and the mask gradients behind the
 * importance scores against finite differences.
 */
class StructuredPruningTest {
    static final int B = 2, S = 6, HD = 4;
    static final BertConfig CFG = new BertConfig(29, 16, 8, 2, HD, new int[] {4, 3, 4}, new int[] {20, 12, 16}, 1e-6f);
    // layer 0 loses every head, layer 1 keeps one head and no neuron, layer 2 keeps half of each
    static final boolean[][] HEADS = {{false, false, false, false}, {false, true, false}, {true, false, false, true}};
    static final boolean[][] NEURONS = {mask(20, 3), new boolean[12], mask(16, 2)};

    static boolean[] mask(int n, int every) {
        boolean[] m = new boolean[n];
        for (int i = 0; i < n; i++) m[i] = i % every != 0;
        return m;
    }

    static BertModel randomModel(long seed) {
        BertModel m = new BertModel(CFG);
        m.addLora(new LoraConfig(2, 4.0, EnumSet.allOf(LoraConfig.Target.class)), 1);
        SplittableRandom rnd = new SplittableRandom(seed);
        for (Map.Entry<String, Tensor> e : m.parameters().entrySet()) {
            float[] v = new float[(int) e.getValue().numel()];
            boolean gamma = e.getKey().endsWith("LayerNorm.weight");
            for (int i = 0; i < v.length; i++) v[i] = (float) (gamma ? 0.8 + 0.4 * rnd.nextDouble() : rnd.nextDouble() - 0.5);
            if (e.getKey().endsWith("qkv.lora_B")) { // keep it block-diagonal
                long rows = e.getValue().dim(0), cols = e.getValue().dim(1);
                for (int i = 0; i < v.length; i++) if ((i / cols) / (rows / 3) != (i % cols) / (cols / 3)) v[i] = 0;
            }
            e.getValue().copyFrom(v);
        }
        return m;
    }

    /** Zeroes, in place, what makes the removed heads' contexts and neurons' activations zero. */
    static void maskInPlace(BertModel m) {
        for (int l = 0; l < CFG.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            int a = CFG.attentionWidth(l);
            for (int h = 0; h < CFG.heads(l); h++)
                if (!HEADS[l][h]) {
                    zeroRows(m.parameter(n + "attention.self.value.weight"), h * HD, HD);
                    zeroRows(m.parameter(n + "attention.self.value.bias"), h * HD, HD);
                    zeroRows(m.parameter(n + "attention.self.qkv.lora_B"), 2 * a + h * HD, HD);
                }
            for (int j = 0; j < CFG.ffn(l); j++)
                if (!NEURONS[l][j]) {
                    zeroRows(m.parameter(n + "intermediate.dense.weight"), j, 1);
                    zeroRows(m.parameter(n + "intermediate.dense.bias"), j, 1);
                    zeroRows(m.parameter(n + "intermediate.dense.lora_B"), j, 1);
                }
        }
    }

    static void zeroRows(Tensor t, long from, long count) {
        long cols = t.rank() == 1 ? 1 : t.dim(1);
        for (long i = from * cols; i < (from + count) * cols; i++) t.setFloat(i, 0f);
    }

    static Tensor[] inputs(StepArena arena) {
        return inputs(arena, CFG.vocabSize(), B, S);
    }

    /** Random ids, token types (second half 1) and a padding mask (sequence i has 2 i padded tokens). */
    static Tensor[] inputs(StepArena arena, int vocab, int b, int s) {
        SplittableRandom rnd = new SplittableRandom(5);
        int[] ids = new int[b * s], types = new int[b * s], mask = new int[b * s];
        for (int i = 0; i < b * s; i++) {
            ids[i] = rnd.nextInt(vocab);
            types[i] = i % s > 2 ? 1 : 0;
            mask[i] = i % s < s - 2 * (i / s) ? 1 : 0;
        }
        return new Tensor[] {arena.allocate(DType.I32, b, s).copyFrom(ids), arena.allocate(DType.I32, b, s).copyFrom(types),
                arena.allocate(DType.I32, b, s).copyFrom(mask)};
    }

    static double relErr(float[] ref, float[] got) {
        double num = 0, den = 0;
        for (int i = 0; i < ref.length; i++) {
            num += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
            den += ref[i] * (double) ref[i];
        }
        return Math.sqrt(num / den);
    }

    @Test
    void compactedModelEqualsMaskedDenseModel() {
        CpuBackend be = CpuBackend.create();
        try (BertModel dense = randomModel(7); StepArena arena = new StepArena("pruning")) {
            BertModel compact = StructuredPruning.compact(dense, HEADS, NEURONS);
            maskInPlace(dense);
            assertArrayEquals(new int[] {0, 1, 2}, compact.config().heads());
            assertArrayEquals(new int[] {13, 0, 8}, compact.config().ffn());
            assertTrue(compact.parameters().values().stream().mapToLong(Tensor::numel).sum()
                    < dense.parameters().values().stream().mapToLong(Tensor::numel).sum() * 0.8, "pruning frees parameters");
            Tensor[] in = inputs(arena);
            float[] ref = dense.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
            float[] got = compact.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
            assertTrue(relErr(ref, got) <= 1e-5, "inference forward: " + relErr(ref, got));
            // the training path (saved activations, recomputation, empty blocks) and its gradients
            float[] dy = new float[B * S * CFG.hidden()];
            SplittableRandom rnd = new SplittableRandom(9);
            for (int i = 0; i < dy.length; i++) dy[i] = (float) (rnd.nextDouble() - 0.5);
            Map<String, float[]> gDense = trainStep(be, dense, arena, in, dy, ref), gCompact = trainStep(be, compact, arena, in, dy, ref);
            for (String n : new String[] {"embeddings.LayerNorm.weight", "encoder.layer.0.attention.output.dense.bias",
                    "encoder.layer.1.output.dense.bias", "encoder.layer.1.attention.output.LayerNorm.bias",
                    "encoder.layer.2.output.LayerNorm.weight", "encoder.layer.2.output.dense.lora_B"})
                assertTrue(relErr(gDense.get(n), gCompact.get(n)) <= 1e-4, n + ": " + relErr(gDense.get(n), gCompact.get(n)));
            compact.close();
        }
    }

    private static Map<String, float[]> trainStep(CpuBackend be, BertModel m, StepArena arena, Tensor[] in, float[] dy, float[] ref) {
        try (BertTraining t = new BertTraining(null, m, new BertTraining.Options(n -> !n.contains("embeddings.word"), dev.topa.model.DropoutConfig.NONE, true, DType.F32))) {
            float[] out = t.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
            assertTrue(relErr(ref, out) <= 1e-5, "training forward: " + relErr(ref, out));
            t.backward(be, arena, arena.allocate(DType.F32, B, S, CFG.hidden()).copyFrom(dy));
            Map<String, float[]> g = new java.util.HashMap<>();
            t.gradients().forEach((k, v) -> g.put(k, v.toFloatArray()));
            return g;
        }
    }

    @Test
    void maskGradientsMatchFiniteDifferences() {
        CpuBackend be = CpuBackend.create();
        try (BertModel m = randomModel(11); StepArena arena = new StepArena("importance")) {
            Tensor[] in = inputs(arena);
            float[] dy = new float[B * S * CFG.hidden()];
            SplittableRandom rnd = new SplittableRandom(13);
            for (int i = 0; i < dy.length; i++) dy[i] = (float) (rnd.nextDouble() - 0.5);
            ImportanceScores scores = new ImportanceScores(CFG);
            try (BertTraining t = new BertTraining(null, m, new BertTraining.Options(n -> n.contains("lora_"), dev.topa.model.DropoutConfig.NONE, false, DType.F32))) {
                t.setMaskGradientListener(scores);
                t.forward(be, arena, in[0], in[1], in[2]);
                t.backward(be, arena, arena.allocate(DType.F32, B, S, CFG.hidden()).copyFrom(dy));
            }
            assertEquals(1, scores.batches());
            double[][] heads = scores.heads(ImportanceScores.Scorer.TAYLOR), neurons = scores.neurons(ImportanceScores.Scorer.TAYLOR);
            for (int l = 0; l < CFG.layers(); l++) {
                String n = "encoder.layer." + l + ".";
                int a = CFG.attentionWidth(l);
                for (int h = 0; h < CFG.heads(l); h++) {
                    final int hh = h;
                    // scaling head h's values (and their LoRA rows) by (1 + e) scales its context by (1 + e)
                    double fd = centralDifference(be, m, arena, in, dy, e -> {
                        scaleRows(m.parameter(n + "attention.self.value.weight"), hh * HD, HD, e);
                        scaleRows(m.parameter(n + "attention.self.value.bias"), hh * HD, HD, e);
                        scaleRows(m.parameter(n + "attention.self.qkv.lora_B"), 2 * a + hh * HD, HD, e);
                    });
                    assertEquals(Math.abs(fd), heads[l][h], 2e-2 * Math.abs(fd) + 1e-4, "layer " + l + " head " + h);
                }
                for (int j = 0; j < CFG.ffn(l); j += 5) {
                    final int jj = j;
                    // scaling FFN-out column j (and its LoRA A column) by (1 + e) scales activation j
                    double fd = centralDifference(be, m, arena, in, dy, e -> {
                        scaleColumn(m.parameter(n + "output.dense.weight"), jj, e);
                        scaleColumn(m.parameter(n + "output.dense.lora_A"), jj, e);
                    });
                    assertEquals(Math.abs(fd), neurons[l][j], 2e-2 * Math.abs(fd) + 1e-4, "layer " + l + " neuron " + j);
                }
            }
            double[][] norm = ImportanceScores.normalized(heads);
            double min = 1, max = 0;
            for (double[] r : norm) for (double v : r) { min = Math.min(min, v); max = Math.max(max, v); }
            assertEquals(0, min, 1e-12);
            assertEquals(1, max, 1e-12);
        }
    }

    private static double centralDifference(CpuBackend be, BertModel m, StepArena arena, Tensor[] in, float[] dy,
            java.util.function.DoubleConsumer scaleBy) {
        double e = 1e-2;
        scaleBy.accept(1 + e);
        double up = dot(dy, m.forward(be, arena, in[0], in[1], in[2]).toFloatArray());
        scaleBy.accept((1 - e) / (1 + e));
        double down = dot(dy, m.forward(be, arena, in[0], in[1], in[2]).toFloatArray());
        scaleBy.accept(1 / (1 - e));
        return (up - down) / (2 * e);
    }

    private static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * (double) b[i];
        return s;
    }

    private static void scaleRows(Tensor t, long from, long count, double f) {
        long cols = t.rank() == 1 ? 1 : t.dim(1);
        for (long i = from * cols; i < (from + count) * cols; i++) t.setFloat(i, (float) (t.getFloat(i) * f));
    }

    private static void scaleColumn(Tensor t, long col, double f) {
        long cols = t.dim(1);
        for (long r = 0; r < t.dim(0); r++) t.setFloat(r * cols + col, (float) (t.getFloat(r * cols + col) * f));
    }

    @Test
    void prunedModelExportsAndReloadsExactly(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        CpuBackend be = CpuBackend.create();
        try (BertModel dense = randomModel(19); BertModel pruned = StructuredPruning.compact(dense, HEADS, NEURONS);
                dev.topa.tensor.TensorScope scope = new dev.topa.tensor.TensorScope("merge", dev.topa.tensor.MemoryCategory.WORKSPACE);
                StepArena arena = new StepArena("export")) {
            Map<String, Tensor> merged = pruned.mergedParameters(be, scope);
            dev.topa.io.HfBertDirectory.save(pruned.config(), merged, dir);
            try (BertModel back = dev.topa.io.HfBertDirectory.load(dir)) {
                assertEquals(pruned.config(), back.config(), "per-layer heads and FFN widths survive the export");
                for (var e : merged.entrySet())
                    assertArrayEquals(e.getValue().toFloatArray(), back.parameter(e.getKey()).toFloatArray(), e.getKey() + " bit-exact");
                Tensor[] in = inputs(arena);
                float[] adapted = pruned.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
                float[] reloaded = back.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
                assertTrue(relErr(adapted, reloaded) <= 1e-5, "merged export vs unmerged adapters: " + relErr(adapted, reloaded));
            }
            // a config whose per-layer shapes disagree with the tensors is refused, naming file and tensor
            java.nio.file.Path cfg = dir.resolve("config.json");
            String json = java.nio.file.Files.readString(cfg);
            java.nio.file.Files.writeString(cfg, json.replaceFirst("\"topa_heads_per_layer\"\\s*:\\s*\\[\\s*0", "\"topa_heads_per_layer\" : [ 2"));
            var e = assertThrows(RuntimeException.class, () -> dev.topa.io.HfBertDirectory.load(dir).close());
            assertTrue(e.getMessage().contains("layer.0") || e.getMessage().contains("encoder.layer.0"), e.getMessage());
            java.nio.file.Files.writeString(cfg, json.replaceFirst("\"topa_ffn_per_layer\"\\s*:\\s*\\[\\s*13", "\"topa_ffn_per_layer\" : [ -1"));
            var e2 = assertThrows(RuntimeException.class, () -> dev.topa.io.HfBertDirectory.load(dir).close());
            assertTrue(e2.getMessage().contains("topa_ffn_per_layer[0]"), e2.getMessage());
        }
    }

    @Test
    void badKeepMasksAreRejected() {
        try (BertModel m = randomModel(3)) {
            var e = assertThrows(IllegalArgumentException.class,
                    () -> StructuredPruning.compact(m, new boolean[][] {{true}}, NEURONS));
            assertTrue(e.getMessage().contains("layers"), e.getMessage());
            var e2 = assertThrows(IllegalArgumentException.class,
                    () -> StructuredPruning.compact(m, new boolean[][] {{true}, HEADS[1], HEADS[2]}, NEURONS));
            assertTrue(e2.getMessage().contains("layer 0"), e2.getMessage());
        }
    }
}
