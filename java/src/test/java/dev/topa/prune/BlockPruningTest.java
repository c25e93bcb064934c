package dev.topa.prune;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.io.HfBertDirectory;
import dev.topa.io.ModelFormatException;
import dev.topa.io.Safetensors;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.LoraConfig;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Block pruning end to end on a small random BERT whose linears are multiples of 32: the
 * block-sparse model (kept blocks stored and multiplied by the block-sparse kernels, LoRA fused)
 * against the same weights dense with the pruned blocks zeroed (the masked reference), forward
 * and LoRA gradients; merging inside the mask; the block-sparse export and its reload; the exact
 * block scores against scores formed from a full weight gradient; rejected sparse metadata.
 */
class BlockPruningTest {
    static final int B = 2, S = 7;
    static final BertConfig CFG = new BertConfig(41, 64, 16, 2, 32, new int[] {2, 1}, new int[] {96, 64}, 1e-6f);

    static BertModel randomModel(long seed, boolean lora) {
        BertModel m = new BertModel(CFG);
        if (lora) m.addLora(new LoraConfig(2, 4.0, EnumSet.allOf(LoraConfig.Target.class)), 1);
        SplittableRandom rnd = new SplittableRandom(seed);
        for (Map.Entry<String, Tensor> e : m.parameters().entrySet()) {
            float[] v = new float[(int) e.getValue().numel()];
            boolean gamma = e.getKey().endsWith("LayerNorm.weight");
            for (int i = 0; i < v.length; i++) v[i] = (float) (gamma ? 0.8 + 0.4 * rnd.nextDouble() : 0.6 * (rnd.nextDouble() - 0.5));
            if (e.getKey().endsWith("qkv.lora_B")) { // keep it block-diagonal
                long rows = e.getValue().dim(0), cols = e.getValue().dim(1);
                for (int i = 0; i < v.length; i++) if ((i / cols) / (rows / 3) != (i % cols) / (cols / 3)) v[i] = 0;
            }
            e.getValue().copyFrom(v);
        }
        return m;
    }

    /** Every slot block-pruned, about half of its blocks kept (at least one dropped and one kept per slot). */
    static boolean[][][][] masks(long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        boolean[][][][] m = new boolean[CFG.layers()][4][][];
        for (int l = 0; l < CFG.layers(); l++) {
            int c = CFG.hidden(), a = CFG.attentionWidth(l), f = CFG.ffn(l);
            int[][] shapes = {{3 * a, c}, {c, a}, {f, c}, {c, f}};
            for (int slot = 0; slot < 4; slot++) {
                int rows = shapes[slot][0] / 32, cols = shapes[slot][1] / 32;
                m[l][slot] = new boolean[rows][cols];
                for (int r = 0; r < rows; r++) for (int k = 0; k < cols; k++) m[l][slot][r][k] = rnd.nextBoolean();
                m[l][slot][0][0] = true;
                m[l][slot][rows - 1][cols - 1] = false;
            }
        }
        return m;
    }

    static Tensor[] inputs(StepArena arena) {
        return StructuredPruningTest.inputs(arena, CFG.vocabSize(), B, S);
    }

    static float[] randomGradient(long seed) {
        float[] dy = new float[B * S * CFG.hidden()];
        SplittableRandom rnd = new SplittableRandom(seed);
        for (int i = 0; i < dy.length; i++) dy[i] = (float) (rnd.nextDouble() - 0.5);
        return dy;
    }

    private static Map<String, float[]> step(CpuBackend be, BertModel m, StepArena arena, Tensor[] in, float[] dy, float[][] out,
            boolean recompute, java.util.function.Predicate<String> trainable) {
        try (BertTraining t = new BertTraining(null, m, new BertTraining.Options(trainable, DropoutConfig.NONE, recompute, DType.F32))) {
            Tensor y = t.forward(be, arena, in[0], in[1], in[2]);
            out[0] = y.toFloatArray();
            t.backward(be, arena, arena.allocate(DType.F32, B, S, CFG.hidden()).copyFrom(dy));
            Map<String, float[]> g = new HashMap<>();
            t.gradients().forEach((k, v) -> g.put(k, v.toFloatArray()));
            return g;
        }
    }

    /**
     * The reference: a plain dense model (no adapters, no masks) holding the merged weights
     * M o (W + s B A), fully trainable. The block-sparse model with unmerged adapters must compute
     * the same outputs, the same LayerNorm gradients, and adapter gradients that are the chain
     * rule through the mask: dA = s B^T (M o G), dB = s (M o G) A^T with G the reference's dL/dW.
     */
    @Test
    void blockSparseModelWithAdaptersMatchesTheMergedDenseReference() {
        CpuBackend be = CpuBackend.create();
        for (boolean recompute : new boolean[] {false, true})
            try (BertModel sparse = randomModel(7, true); StepArena arena = new StepArena("blocks");
                    TensorScope scope = new TensorScope("merged", MemoryCategory.WORKSPACE)) {
                boolean[][][][] masks = masks(3);
                sparse.setBlockMasks(masks);
                assertTrue(sparse.blockDensity() > 0.2 && sparse.blockDensity() < 0.8, "density " + sparse.blockDensity());
                try (BertModel dense = randomModel(99, false)) {
                    sparse.mergedParameters(be, scope).forEach((k, v) -> dense.parameter(k).copyFrom(v));
                    Tensor[] in = inputs(arena);
                    float[] ref = dense.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
                    float[] got = sparse.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
                    assertTrue(StructuredPruningTest.relErr(ref, got) <= 1e-5, "inference forward: " + StructuredPruningTest.relErr(ref, got));
                    float[] dy = randomGradient(9);
                    float[][] yd = new float[1][], ys = new float[1][];
                    Map<String, float[]> gd = step(be, dense, arena, in, dy, yd, recompute, n -> true);
                    Map<String, float[]> gs = step(be, sparse, arena, in, dy, ys, recompute, n -> n.contains("lora_") || n.contains("LayerNorm"));
                    assertTrue(StructuredPruningTest.relErr(yd[0], ys[0]) <= 1e-5, "training forward");
                    for (String n : gs.keySet()) {
                        float[] want = n.contains("lora_") ? adapterGradient(sparse, masks, gd, n) : gd.get(n);
                        double err = StructuredPruningTest.relErr(want, gs.get(n));
                        assertTrue(err <= 1e-4, n + " (recompute " + recompute + "): " + err);
                    }
                    assertTrue(gs.keySet().stream().filter(n -> n.contains("lora_")).count() == CFG.layers() * 8L, "every adapter checked");
                }
            }
    }

    /** s B^T (M o G) or s (M o G) A^T in float64 from the dense reference's weight gradient G. */
    private static float[] adapterGradient(BertModel sparse, boolean[][][][] masks, Map<String, float[]> gd, String name) {
        String module = name.substring(0, name.lastIndexOf('.'));
        int l = Integer.parseInt(module.split("\\.")[2]);
        String[] slots = {"attention.self.qkv", "attention.output.dense", "intermediate.dense", "output.dense"};
        int slot = java.util.Arrays.asList(slots).indexOf(module.substring(("encoder.layer." + l + ".").length()));
        float[] g;
        if (slot == 0) { // q, k and v stacked: the fused weight's gradient
            float[] q = gd.get("encoder.layer." + l + ".attention.self.query.weight"), k = gd.get("encoder.layer." + l + ".attention.self.key.weight"),
                    v = gd.get("encoder.layer." + l + ".attention.self.value.weight");
            g = new float[q.length * 3];
            System.arraycopy(q, 0, g, 0, q.length);
            System.arraycopy(k, 0, g, q.length, q.length);
            System.arraycopy(v, 0, g, 2 * q.length, q.length);
        } else {
            g = gd.get(module + ".weight");
        }
        Tensor a = sparse.parameter(module + ".lora_A"), b = sparse.parameter(module + ".lora_B");
        long r = a.dim(0), in = a.dim(1), out = b.dim(0);
        float scale = 4f / 2; // alpha / rank
        boolean[][] m = masks[l][slot];
        double[] mg = new double[(int) (out * in)];
        for (int i = 0; i < out; i++) for (int j = 0; j < in; j++) mg[(int) (i * in + j)] = m[i / 32][j / 32] ? g[(int) (i * in + j)] : 0;
        float[] av = a.toFloatArray(), bv = b.toFloatArray();
        if (name.endsWith("lora_A")) {
            float[] da = new float[(int) (r * in)];
            for (int q = 0; q < r; q++)
                for (int j = 0; j < in; j++) {
                    double sum = 0;
                    for (int i = 0; i < out; i++) sum += bv[(int) (i * r + q)] * mg[(int) (i * in + j)];
                    da[(int) (q * in + j)] = (float) (scale * sum);
                }
            return da;
        }
        float[] db = new float[(int) (out * r)];
        for (int i = 0; i < out; i++)
            for (int q = 0; q < r; q++) {
                if (slot == 0 && i / (out / 3) != q / (r / 3)) continue; // the fused B is block-diagonal
                double sum = 0;
                for (int j = 0; j < in; j++) sum += mg[(int) (i * in + j)] * av[(int) (q * in + j)];
                db[(int) (i * r + q)] = (float) (scale * sum);
            }
        return db;
    }

    @Test
    void mergingStaysInsideTheMaskAndTheExportReloadsBitExact(@TempDir Path dir) throws Exception {
        CpuBackend be = CpuBackend.create();
        try (BertModel sparse = randomModel(17, true); StepArena arena = new StepArena("merge");
                TensorScope scope = new TensorScope("merged", MemoryCategory.WORKSPACE)) {
            boolean[][][][] masks = masks(21);
            sparse.setBlockMasks(masks);
            Tensor[] in = inputs(arena);
            float[] unmerged = sparse.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
            Map<String, Tensor> merged = sparse.mergedParameters(be, scope);
            Map<String, boolean[][]> byName = sparse.blockMasksByName();
            assertEquals(CFG.layers() * 6, byName.size(), "q, k, v and the three other linears of every layer");
            for (Map.Entry<String, boolean[][]> e : byName.entrySet()) {
                Tensor w = merged.get(e.getKey());
                for (int r = 0; r < e.getValue().length; r++)
                    for (int c = 0; c < e.getValue()[r].length; c++)
                        if (!e.getValue()[r][c]) assertEquals(0f, w.getFloat((long) r * 32 * w.dim(1) + (long) c * 32 + 5),
                                e.getKey() + ": the merged update must not leak out of the mask");
            }
            HfBertDirectory.save(CFG, merged, byName, dir.resolve("sparse"), scope);
            HfBertDirectory.save(CFG, merged, dir.resolve("dense"));
            assertTrue(Files.size(dir.resolve("sparse/model.safetensors")) < 0.85 * Files.size(dir.resolve("dense/model.safetensors")),
                    "only kept blocks are written");
            try (BertModel back = HfBertDirectory.load(dir.resolve("sparse"))) {
                assertTrue(back.blockSparse());
                for (Map.Entry<String, Tensor> e : merged.entrySet())
                    assertArrayEquals(e.getValue().toFloatArray(), back.parameter(e.getKey()).toFloatArray(), e.getKey() + " bit-exact");
                byName.forEach((k, v) -> assertArrayEquals(v, back.blockMasksByName().get(k), k + " mask"));
                float[] reloaded = back.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
                assertTrue(StructuredPruningTest.relErr(unmerged, reloaded) <= 1e-5,
                        "merged, exported and reloaded == unmerged: " + StructuredPruningTest.relErr(unmerged, reloaded));
            }
        }
    }

    @Test
    void corruptBlockSparseFilesAreRejectedNamingTheTensor(@TempDir Path dir) throws Exception {
        try (BertModel m = randomModel(23, false); TensorScope scope = new TensorScope("t", MemoryCategory.WORKSPACE)) {
            m.setBlockMasks(masks(25));
            HfBertDirectory.save(CFG, m.parameters(), m.blockMasksByName(), dir, scope);
            Path file = dir.resolve("model.safetensors");
            String victim = "encoder.layer.1.intermediate.dense.weight" + HfBertDirectory.BSR_BLOCKS;
            Map<String, Tensor> tensors = new LinkedHashMap<>();
            try (Safetensors st = Safetensors.read(file)) {
                for (var e : st.entries().values()) {
                    Tensor t = scope.allocate(e.dtype().equals("I32") ? DType.I32 : DType.F32, e.shape());
                    java.lang.foreign.MemorySegment.copy(e.bytes(), 0, t.data(), 0, t.byteSize());
                    tensors.put(e.name(), t);
                }
            }
            Tensor idx = tensors.get(victim);
            int[] bad = new int[(int) idx.numel()];
            for (int i = 0; i < bad.length; i++) bad[i] = 1000 + i; // outside the 2 x 2 block grid
            idx.copyFrom(bad);
            Safetensors.write(file, tensors, Map.of());
            ModelFormatException e = assertThrows(ModelFormatException.class, () -> HfBertDirectory.load(dir));
            assertTrue(e.getMessage().contains(victim), e.getMessage());
            // a valid file whose config lost the block size
            HfBertDirectory.save(CFG, m.parameters(), m.blockMasksByName(), dir, scope);
            String cfg = Files.readString(dir.resolve("config.json")).replace("\"topa_block_size\"", "\"other\"");
            Files.writeString(dir.resolve("config.json"), cfg);
            e = assertThrows(ModelFormatException.class, () -> HfBertDirectory.load(dir));
            assertTrue(e.getMessage().contains("topa_block_size"), e.getMessage());
        }
        try (BertModel m = randomModel(27, false)) {
            boolean[][][][] wrong = masks(29);
            wrong[0][2] = new boolean[2][2]; // FFN in is [96, 64]: 3 x 2 blocks
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.setBlockMasks(wrong));
            assertTrue(e.getMessage().contains("intermediate.dense.weight"), e.getMessage());
        }
    }

    @Test
    void exactBlockScoresAreTaylorTermsOfTheFullWeightGradient() {
        CpuBackend be = CpuBackend.create();
        try (BertModel m = randomModel(31, false); StepArena arena = new StepArena("scores")) {
            Tensor[] in = inputs(arena);
            float[] dy = randomGradient(33);
            BlockScores scores = new BlockScores(CFG, BlockScores.Method.EXACT);
            Map<String, float[]> full;
            try (BertTraining t = new BertTraining(null, m, new BertTraining.Options(n -> true, DropoutConfig.NONE, false, DType.F32))) {
                t.setWeightGradientListener(scores);
                t.forward(be, arena, in[0], in[1], in[2]);
                t.backward(be, arena, arena.allocate(DType.F32, B, S, CFG.hidden()).copyFrom(dy));
                full = new HashMap<>();
                t.gradients().forEach((k, v) -> full.put(k, v.toFloatArray()));
            }
            assertEquals(1, scores.batches());
            // FFN in of layer 0: W [96, 64], 3 x 2 blocks
            String n = "encoder.layer.0.intermediate.dense.weight";
            float[] w = m.parameter(n).toFloatArray(), g = full.get(n);
            double[][] s = scores.scores()[0][2];
            for (int r = 0; r < 3; r++)
                for (int c = 0; c < 2; c++) {
                    double sum = 0;
                    for (int i = r * 32; i < r * 32 + 32; i++) for (int j = c * 32; j < c * 32 + 32; j++) sum += (double) w[i * 64 + j] * g[i * 64 + j];
                    assertEquals(Math.abs(sum), s[r][c], 1e-4 * Math.abs(sum) + 1e-9, "block " + r + "," + c);
                }
            long all = BlockScores.blockCount(scores.scores());
            boolean[][][][] keep = BlockScores.keep(scores.scores(), all / 2);
            long kept = 0;
            double minKept = Double.MAX_VALUE, maxDropped = 0;
            for (int l = 0; l < CFG.layers(); l++)
                for (int slot = 0; slot < 4; slot++)
                    for (int r = 0; r < keep[l][slot].length; r++)
                        for (int c = 0; c < keep[l][slot][r].length; c++) {
                            double v = scores.scores()[l][slot][r][c];
                            if (keep[l][slot][r][c]) {
                                kept++;
                                minKept = Math.min(minKept, v);
                            } else {
                                maxDropped = Math.max(maxDropped, v);
                            }
                        }
            assertEquals(all - all / 2, kept);
            assertTrue(maxDropped <= minKept, "the globally lowest-scored blocks go");
            scores.close();
        }
    }

    @Test
    void loraGuidedScoresUseOnlyAdapterGradients() {
        CpuBackend be = CpuBackend.create();
        try (BertModel m = randomModel(41, true); StepArena arena = new StepArena("lora scores")) {
            Tensor[] in = inputs(arena);
            BlockScores scores = new BlockScores(CFG, BlockScores.Method.LORA);
            try (BertTraining t = new BertTraining(null, m, new BertTraining.Options(n -> n.contains("lora_"), DropoutConfig.NONE, true, DType.F32))) {
                t.setWeightGradientListener(scores);
                for (int k = 0; k < 2; k++) {
                    t.zeroGradients();
                    t.forward(be, arena, in[0], in[1], in[2]);
                    t.backward(be, arena, arena.allocate(DType.F32, B, S, CFG.hidden()).copyFrom(randomGradient(43 + k)));
                }
            }
            assertEquals(2, scores.batches());
            for (double[][][] layer : scores.scores())
                for (double[][] s : layer)
                    for (double[] row : s) for (double v : row) assertTrue(Double.isFinite(v) && v > 0, "every block gets a score: " + v);
            scores.close();
        }
    }

    /** Central differences of L = sum(out * dy) through the inference forward vs the training backward's adapter gradients. */
    @Test
    void maskedAdapterGradientsMatchFiniteDifferences() {
        CpuBackend be = CpuBackend.create();
        try (BertModel m = randomModel(51, true); StepArena arena = new StepArena("fd")) {
            m.setBlockMasks(masks(53));
            Tensor[] in = inputs(arena);
            float[] dy = randomGradient(55);
            float[][] y = new float[1][];
            Map<String, float[]> g = step(be, m, arena, in, dy, y, false, n -> n.contains("lora_"));
            SplittableRandom rnd = new SplittableRandom(57);
            int checked = 0;
            for (String name : new String[] {"encoder.layer.0.intermediate.dense.lora_A", "encoder.layer.1.output.dense.lora_B",
                    "encoder.layer.0.attention.self.qkv.lora_A", "encoder.layer.1.attention.output.dense.lora_B"}) {
                Tensor p = m.parameter(name);
                for (int k = 0; k < 4; k++) {
                    long i = rnd.nextLong(p.numel());
                    float analytic = g.get(name)[(int) i];
                    if (name.endsWith("qkv.lora_B") && analytic == 0f) continue; // off the block diagonal
                    float v = p.getFloat(i), eps = 1e-2f;
                    p.setFloat(i, v + eps);
                    double plus = loss(be, m, arena, in, dy);
                    p.setFloat(i, v - eps);
                    double minus = loss(be, m, arena, in, dy);
                    p.setFloat(i, v);
                    double numeric = (plus - minus) / (2 * eps);
                    assertEquals(numeric, analytic, 2e-2 * Math.abs(numeric) + 2e-3, name + "[" + i + "]");
                    checked++;
                }
            }
            assertTrue(checked >= 12, "enough elements checked: " + checked);
        }
    }

    private static double loss(CpuBackend be, BertModel m, StepArena arena, Tensor[] in, float[] dy) {
        float[] out = m.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
        double l = 0;
        for (int i = 0; i < out.length; i++) l += (double) out[i] * dy[i];
        return l;
    }

    @Test
    void blockSparseWeightsRefuseFullFineTuningAndLoraDropout() {
        CpuBackend be = CpuBackend.create();
        try (BertModel m = randomModel(61, true); StepArena arena = new StepArena("refuse")) {
            m.setBlockMasks(masks(63));
            Tensor[] in = inputs(arena);
            // refused when the training is made, before any step
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new BertTraining(null, m, new BertTraining.Options(n -> true, DropoutConfig.NONE, false, DType.F32)));
            assertTrue(e.getMessage().contains("block-sparse"), e.getMessage());
        }
        try (BertModel m = new BertModel(CFG); StepArena arena = new StepArena("refuse dropout")) {
            m.addLora(new LoraConfig(2, 4.0, EnumSet.allOf(LoraConfig.Target.class), 0.1), 1);
            m.setBlockMasks(masks(65));
            Tensor[] in = inputs(arena);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new BertTraining(null, m, new BertTraining.Options(n -> n.contains("lora_"), DropoutConfig.NONE, false, DType.F32)));
            assertTrue(e.getMessage().contains("LoRA dropout"), e.getMessage());
        }
    }
}
