package dev.topa.prune;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The two exact forms of a block-masked weight -- block-sparse, or dense with its zeros -- compute the
 * same thing (inference, and a training step with masked adapters: the dense form takes the adapter's
 * masked term from a structure-only pack), and the measured choice is what the model then uses.
 */
class BlockFormatsTest {
    private static final int B = BlockPruningTest.B, S = BlockPruningTest.S;

    @Test
    void denseAndBlockSparseFormsAgreeInInferenceAndTraining() {
        CpuBackend be = CpuBackend.create();
        Map<String, float[]>[] grads = new Map[2];
        float[][] outs = new float[2][], inference = new float[2][], bare = new float[2][];
        for (int k = 0; k < 2; k++)
            try (BertModel m = BlockPruningTest.randomModel(7, true); StepArena arena = new StepArena("formats")) {
                m.setBlockMasks(BlockPruningTest.masks(3));
                boolean[][] dense = new boolean[m.config().layers()][4];
                for (boolean[] row : dense) java.util.Arrays.fill(row, k == 1);
                m.setDenseFormat(dense);
                assertEquals(k == 1, m.denseFormat(0, BertNames.Slot.FFN_IN));
                Tensor[] in = BlockPruningTest.inputs(arena);
                try (BertTraining t = new BertTraining(null, m, new BertTraining.Options(n -> n.contains("lora_") || n.contains("LayerNorm"), DropoutConfig.NONE, false, DType.F32))) {
                    outs[k] = t.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
                    t.backward(be, arena, arena.allocate(DType.F32, B, S, m.config().hidden()).copyFrom(BlockPruningTest.randomGradient(5)));
                    Map<String, float[]> g = grads[k] = new HashMap<>();
                    t.gradients().forEach((n, v) -> g.put(n, v.toFloatArray()));
                }
                inference[k] = m.forward(be, arena, in[0], in[1], in[2]).toFloatArray(); // served adapters, unmerged
                try (BertModel plain = BlockPruningTest.randomModel(7, false)) { // no adapters: the dense form takes the packed path
                    plain.setBlockMasks(BlockPruningTest.masks(3));
                    plain.setDenseFormat(dense);
                    plain.packForInference(be, false);
                    bare[k] = plain.forward(be, arena, in[0], in[1], in[2]).toFloatArray();
                }
            }
        assertClose("training forward", outs[0], outs[1]);
        assertClose("inference with adapters", inference[0], inference[1]);
        assertClose("inference without adapters, packed", bare[0], bare[1]);
        assertTrue(grads[0].size() > 10);
        for (String n : grads[0].keySet()) assertClose(n, grads[0].get(n), grads[1].get(n));
    }

    @Test
    void theMeasuredChoiceIsSetOnTheModelSlotBySlot() {
        CpuBackend be = CpuBackend.create();
        for (boolean bf16 : new boolean[] {false, true}) { // the dense form as fp32 packed products, then as bf16 ones
            try (BertModel m = BlockPruningTest.randomModel(7, false)) {
                m.setBlockMasks(BlockPruningTest.masks(3));
                List<BlockFormats.Slot> slots = BlockFormats.choose(be, m, 64, bf16);
                assertEquals(8, slots.size(), "every masked slot measured");
                for (BlockFormats.Slot s : slots) {
                    assertTrue(s.sparseMs() > 0 && s.denseMs() > 0 && s.density() > 0 && s.density() < 1, s.toString());
                    assertEquals(s.dense(), m.denseFormat(s.layer(), s.slot()), s.toString());
                }
                assertTrue(BlockFormats.summary(slots).contains("of 8 block-masked weights"), BlockFormats.summary(slots));
            }
        }
    }

    private static void assertClose(String what, float[] a, float[] b) {
        double num = 0, den = 0;
        for (int i = 0; i < a.length; i++) {
            num += (a[i] - b[i]) * (double) (a[i] - b[i]);
            den += a[i] * (double) a[i];
        }
        assertEquals(a.length, b.length, what);
        assertTrue(Math.sqrt(num / Math.max(den, 1e-30)) < 1e-5, what + ": relative error " + Math.sqrt(num / Math.max(den, 1e-30)));
    }
}
