package dev.topa.prune;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.opencl.OpenCl;
import dev.topa.backend.opencl.OpenClBackend;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Gradual pruning's masks: a masked head's value rows and a masked neuron's FFN-in row (weights,
 * biases and the adapters' B rows) become zero and nothing else changes, on the host model and, the
 * same to the bit, on a device copy (OpenCL: PoCL in CI), where the gradual schedule trains.
 */
class MaskedPruningTest {
    private static final BertConfig CONFIG = new BertConfig(50, 32, 20, 2, 16, new int[] {2, 2}, new int[] {40, 23}, 1e-12f);
    private static final boolean[][] HEADS = {{true, false}, {false, true}};

    private static boolean[][] neurons() {
        SplittableRandom rnd = new SplittableRandom(4);
        boolean[][] n = new boolean[CONFIG.layers()][];
        for (int l = 0; l < n.length; l++) {
            n[l] = new boolean[CONFIG.ffn(l)];
            for (int j = 0; j < n[l].length; j++) n[l][j] = rnd.nextBoolean();
        }
        return n;
    }

    private static BertModel model() {
        BertModel m = new BertModel(CONFIG);
        m.addLora(new LoraConfig(4, 8, EnumSet.allOf(LoraConfig.Target.class)), 3);
        SplittableRandom rnd = new SplittableRandom(7);
        for (Tensor t : m.parameters().values()) { // B too, so that its masked rows have something to lose
            float[] v = new float[(int) t.numel()];
            for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() - 0.5);
            t.copyFrom(v);
        }
        return m;
    }

    /** Every parameter of m as host values, after masking on be (m on be's device). */
    private static Map<String, float[]> masked(Backend be, BertModel m) {
        MaskedPruning masks = new MaskedPruning(CONFIG);
        masks.update(be, m, HEADS, neurons());
        Map<String, float[]> out = new LinkedHashMap<>();
        try (TensorScope host = new TensorScope("read back", MemoryCategory.WORKSPACE)) {
            m.parameters().forEach((n, t) -> out.put(n, (t.device().isHostAccessible() ? t : be.copyOf(t, host)).toFloatArray()));
        }
        return out;
    }

    @Test
    void maskedRowsAreZeroAndTheRestUntouched() {
        try (BertModel before = model(); BertModel m = model()) {
            Map<String, float[]> got = masked(CpuBackend.create(), m);
            int d = CONFIG.headDim(), a = CONFIG.attentionWidth(0);
            boolean[][] n = neurons();
            long zeroed = 0;
            for (var e : got.entrySet()) {
                float[] was = before.parameter(e.getKey()).toFloatArray(), now = e.getValue();
                for (int i = 0; i < now.length; i++) {
                    boolean zero = zeroed(e.getKey(), i, before.parameter(e.getKey()), d, a, n);
                    if (zero) {
                        assertEquals(0f, now[i], e.getKey() + "[" + i + "]");
                        zeroed++;
                    } else {
                        assertEquals(was[i], now[i], 0f, e.getKey() + "[" + i + "] changed");
                    }
                }
            }
            assertTrue(zeroed > 0);
        }
    }

    /** Whether element i of parameter name is in a masked unit's rows. */
    private static boolean zeroed(String name, int i, Tensor t, int d, int a, boolean[][] n) {
        int l = name.startsWith("encoder.layer.1.") ? 1 : 0;
        long cols = t.rank() == 1 ? 1 : t.dim(1), row = i / cols;
        if (name.endsWith("attention.self.value.weight") || name.endsWith("attention.self.value.bias")) return !HEADS[l][(int) (row / d)];
        if (name.endsWith("attention.self.qkv.lora_B")) return row >= 2L * a && !HEADS[l][(int) ((row - 2L * a) / d)];
        if (name.endsWith("intermediate.dense.weight") || name.endsWith("intermediate.dense.bias") || name.endsWith("intermediate.dense.lora_B"))
            return !n[l][(int) row];
        return false;
    }

    @Test
    void onADeviceCopyTheSameToTheBit() {
        String why = OpenCl.unavailableReason();
        if (why != null && "true".equals(System.getenv("CI"))) fail("no OpenCL in CI (.ci/run installs pocl-opencl-icd): " + why);
        assumeTrue(why == null, () -> "opencl skipped: " + why);
        try (OpenClBackend ocl = OpenClBackend.open(0); BertModel host = model(); BertModel source = model(); BertModel device = source.copyTo(ocl)) {
            Map<String, float[]> want = masked(CpuBackend.create(), host), got = masked(ocl, device);
            assertEquals(want.keySet(), got.keySet());
            for (String k : want.keySet()) assertArrayEquals(want.get(k), got.get(k), 0f, k);
        }
    }

    /** A resumed gradual run's masks and scores: what state() writes, restore() takes back exactly; another shape's is refused. */
    @Test
    void masksAndScoresGoThroughACheckpointExactly() {
        CpuBackend be = CpuBackend.create();
        try (BertModel a = model(); BertModel b = model(); TensorScope s = new TensorScope("grads", MemoryCategory.WORKSPACE)) {
            MaskedPruning masks = new MaskedPruning(CONFIG), back = new MaskedPruning(CONFIG);
            masks.update(be, a, HEADS, neurons());
            back.restore(be, b, masks.state());
            assertEquals(masks.state(), back.state());
            a.parameters().forEach((n, t) -> assertArrayEquals(t.toFloatArray(), b.parameter(n).toFloatArray(), 0f, n));
            ImportanceScores scores = new ImportanceScores(CONFIG), again = new ImportanceScores(CONFIG);
            SplittableRandom rnd = new SplittableRandom(2);
            for (int l = 0; l < CONFIG.layers(); l++) {
                float[] h = new float[3 * CONFIG.heads(l)], f = new float[3 * CONFIG.ffn(l)];
                for (int i = 0; i < h.length; i++) h[i] = (float) rnd.nextGaussian() / 3; // thirds: doubles with every bit in use
                for (int i = 0; i < f.length; i++) f[i] = (float) rnd.nextGaussian() / 3;
                scores.heads(l, s.allocate(dev.topa.tensor.DType.F32, 3, CONFIG.heads(l)).copyFrom(h));
                scores.neurons(l, s.allocate(dev.topa.tensor.DType.F32, 3, CONFIG.ffn(l)).copyFrom(f));
            }
            again.restore(scores.state());
            assertEquals(scores.batches(), again.batches());
            for (ImportanceScores.Scorer sc : new ImportanceScores.Scorer[] {ImportanceScores.Scorer.TAYLOR, ImportanceScores.Scorer.FISHER}) {
                assertTrue(java.util.Arrays.deepEquals(scores.heads(sc), again.heads(sc)), sc + " heads");
                assertTrue(java.util.Arrays.deepEquals(scores.neurons(sc), again.neurons(sc)), sc + " neurons");
            }
            BertConfig other = new BertConfig(50, 32, 20, 2, 16, new int[] {2, 2}, new int[] {40, 24}, 1e-12f);
            String masksBefore = back.state();
            var e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> back.restore(be, b, new MaskedPruning(other).state()));
            assertTrue(e.getMessage().contains("layer 1 of neurons"), e.getMessage());
            assertEquals(masksBefore, back.state(), "a refused state changes nothing");
            e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> back.restore(be, b, new MaskedPruning(CONFIG).state())); // everything kept: units come back
            assertTrue(e.getMessage().contains("already removed"), e.getMessage());
            String scoresBefore = again.state();
            e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> again.restore(new ImportanceScores(other).state()));
            assertTrue(e.getMessage().contains("layer 1 has 24 units"), e.getMessage());
            assertEquals(scoresBefore, again.state(), "a refused state changes nothing");
        }
    }

    /**
     * Masks that go on in a compacted model (units named by their dense index, rows zeroed at their
     * place in the compacted model, runs broken by nothing that model lacks): masking more there and
     * compacting again gives, to the bit, the dense model masked with both and compacted once --
     * layer 0's attention emptied on the way; gradients of the adapters lose the same rows; importance
     * scores fed by the compacted model land in the dense units they belong to, as the masked dense
     * model would have fed them (zeros where masked).
     */
    @Test
    void masksGoOnInACompactedModelAsInTheDenseOne() {
        CpuBackend be = CpuBackend.create();
        SplittableRandom rnd = new SplittableRandom(5);
        boolean[][] heads2 = {{false, false}, {false, true}}, neurons2 = neurons();
        for (boolean[] layer : neurons2) for (int j = 0; j < layer.length; j++) layer[j] &= rnd.nextInt(3) > 0;
        try (BertModel a = model(); BertModel b = model(); TensorScope s = new TensorScope("grads", MemoryCategory.WORKSPACE)) {
            MaskedPruning dense = new MaskedPruning(CONFIG), first = new MaskedPruning(CONFIG), onCompacted = new MaskedPruning(CONFIG);
            dense.update(be, a, HEADS, neurons());
            first.update(be, b, HEADS, neurons());
            try (BertModel c = onCompacted.compactAs(b, first.state())) {
                assertEquals(first.state(), onCompacted.heldState());
                assertTrue(onCompacted.compacted());
                dense.update(be, a, heads2, neurons2);
                onCompacted.update(be, c, heads2, neurons2);
                assertEquals(dense.state(), onCompacted.state());
                assertFalse(onCompacted.compacted(), "units masked that the compacted model still holds");
                try (BertModel cutA = dense.compact(a); BertModel cutC = onCompacted.compact(c)) {
                    assertEquals(cutA.config(), cutC.config());
                    assertEquals(0, cutA.config().heads(0), "layer 0's attention emptied");
                    cutA.parameters().forEach((n, t) -> assertArrayEquals(t.toFloatArray(), cutC.parameter(n).toFloatArray(), 0f, n));
                }
                // gradients of every parameter, random; the compacted model's are the dense ones' kept part
                Map<String, Tensor> gradsA = new LinkedHashMap<>(), gradsC = new LinkedHashMap<>();
                a.parameters().forEach((n, t) -> gradsA.put(n, s.allocate(DType.F32, t.shape()).copyFrom(random(t.numel(), rnd))));
                c.parameters().forEach((n, t) -> gradsC.put(n, keptOf(s, first, n, gradsA.get(n), t)));
                dense.maskGradients(be, gradsA);
                onCompacted.maskGradients(be, gradsC);
                for (var e : gradsC.entrySet())
                    assertArrayEquals(keptOf(s, first, e.getKey(), gradsA.get(e.getKey()), e.getValue()).toFloatArray(), e.getValue().toFloatArray(), 0f,
                            e.getKey());
                ImportanceScores fromDense = new ImportanceScores(CONFIG), fromCompacted = new ImportanceScores(CONFIG);
                BertTraining.MaskGradientListener held = fromCompacted.held(onCompacted.heldHeads(), onCompacted.heldNeurons());
                for (int l = CONFIG.layers() - 1; l >= 0; l--) { // as backward calls them: the last layer first, its FFN before its attention
                    feed(s, rnd, l, onCompacted.heldNeurons()[l], fromDense::neurons, held::neurons);
                    feed(s, rnd, l, onCompacted.heldHeads()[l], fromDense::heads, held::heads);
                }
                assertEquals(fromDense.state(), fromCompacted.state());
                assertEquals(1, fromCompacted.batches());
            }
        }
    }

    /**
     * The compacted model's backward skips a block with nothing held (BertTraining): a batch still
     * counts once, whether the last layer holds both blocks, its attention alone, or nothing.
     */
    @Test
    void aBatchCountsOnceWhicheverBlocksTheCompactedModelHolds() {
        SplittableRandom rnd = new SplittableRandom(8);
        boolean[] none = new boolean[CONFIG.ffn(1)];
        boolean[][][][] variants = { // {heads, neurons}
            {{{true, true}, {true, false}}, neurons()},
            {{{true, true}, {true, false}}, {neurons()[0], none}},
            {{{false, true}, {false, false}}, {neurons()[0], none}},
        };
        try (TensorScope s = new TensorScope("grads", MemoryCategory.WORKSPACE)) {
            for (boolean[][][] v : variants) {
                ImportanceScores scores = new ImportanceScores(CONFIG);
                BertTraining.MaskGradientListener held = scores.held(v[0], v[1]);
                for (int batch = 1; batch <= 2; batch++) {
                    for (int l = CONFIG.layers() - 1; l >= 0; l--) {
                        feed(s, rnd, l, v[1][l], (layer, t) -> {}, held::neurons);
                        feed(s, rnd, l, v[0][l], (layer, t) -> {}, held::heads);
                    }
                    assertEquals(batch, scores.batches(), "batches with the last layer holding " + java.util.Arrays.toString(v[0][1]) + " heads");
                }
            }
        }
    }

    /** A tensor of to's shape with the kept part (first's masks) of the dense model's from. */
    private static Tensor keptOf(TensorScope s, MaskedPruning first, String name, Tensor from, Tensor to) {
        Tensor out = s.allocate(DType.F32, to.shape());
        StructuredPruning.copyKept(name, from, out, CONFIG, first.keptHeads(), first.keptNeurons());
        return out;
    }

    private static float[] random(long n, SplittableRandom rnd) {
        float[] v = new float[(int) n];
        for (int i = 0; i < v.length; i++) v[i] = (float) rnd.nextGaussian();
        return v;
    }

    private interface Sink {
        void accept(int layer, Tensor perExample);
    }

    /**
     * A batch of 3 examples' mask gradients of layer l's held units, to the compacted model's listener,
     * and the same with zeros for the units it lacks to the dense one's (as a masked unit's are).
     */
    private static void feed(TensorScope s, SplittableRandom rnd, int l, boolean[] held, Sink dense, Sink compacted) {
        int units = held.length, count = 0;
        for (boolean h : held) if (h) count++;
        float[] all = new float[3 * units], part = new float[3 * count];
        for (int e = 0, k = 0; e < 3; e++)
            for (int u = 0; u < units; u++)
                if (held[u]) all[e * units + u] = part[k++] = (float) rnd.nextGaussian() / 3;
        dense.accept(l, s.allocate(DType.F32, 3, units).copyFrom(all));
        if (count > 0) compacted.accept(l, s.allocate(DType.F32, 3, count).copyFrom(part)); // backward skips an emptied block
    }
}
