package dev.topa.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.model.BertNames.Slot;
import dev.topa.tensor.Bf16;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.EnumSet;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * A model compacted for inference (a teacher beside its student) gives every layer output of the
 * whole model bit for bit, given the whole vocabulary's ids, in less memory; what needs the whole
 * model is refused with a message that says why.
 */
class CompactForInferenceTest {
    // a pruned shape: a layer without heads, one without FFN neurons, odd widths
    private static final BertConfig CONFIG = new BertConfig(211, 64, 40, 2, 16, new int[] {4, 0, 3}, new int[] {96, 37, 0}, 1e-12f);
    private static final int[] TOKENS = {0, 3, 7, 8, 19, 50, 51, 52, 120, 199, 210};

    @Test
    void layerOutputsAreTheWholeModelsBitForBitInBf16AndFp32() {
        for (boolean bf16 : new boolean[] {true, false}) check(bf16);
    }

    private static void check(boolean bf16) {
        CpuBackend be = CpuBackend.create();
        SplittableRandom rnd = new SplittableRandom(5);
        try (BertModel whole = new BertModel(CONFIG); StepArena arena = new StepArena("compact"); StepArena work = new StepArena("work")) {
            for (Tensor t : whole.parameters().values()) {
                float[] v = new float[(int) t.numel()];
                for (int i = 0; i < v.length; i++) v[i] = (float) (0.2 * (2 * rnd.nextDouble() - 1));
                t.copyFrom(v);
            }
            long wholeBytes = whole.parameterBytes(), linear = 0;
            for (int l = 0; l < CONFIG.layers(); l++) for (Slot slot : Slot.values()) linear += 4 * whole.slotWeight(l, slot).numel();
            int b = 3, s = 9;
            int[] ids = new int[b * s], rows = new int[b * s], types = new int[b * s], mask = new int[b * s];
            for (int i = 0; i < b * s; i++) {
                int row = rnd.nextInt(TOKENS.length);
                boolean real = i % s < s - i / s * 2; // ragged: 9, 7 and 5 real tokens, the rest padding (id 0)
                rows[i] = real ? row : 0;
                ids[i] = TOKENS[rows[i]];
                types[i] = real && i % s > 3 ? 1 : 0;
                mask[i] = real ? 1 : 0;
            }
            Tensor ty = arena.allocate(DType.I32, b, s).copyFrom(types), m = arena.allocate(DType.I32, b, s).copyFrom(mask);
            try (BertModel compact = whole.compactForInference(be, bf16, TOKENS)) {
                if (bf16) whole.packForInference(be, true);
                long packs = whole.parameterBytes() - wholeBytes;
                Tensor wholeIds = arena.allocate(DType.I32, b, s).copyFrom(ids);
                Tensor[] want = whole.layerOutputs(be, work, arena, DType.F32, wholeIds, ty, m);
                Tensor[] got = compact.layerOutputs(be, work, arena, DType.F32, wholeIds, ty, m); // ids of the whole vocabulary
                // kept in bf16 (as a student keeps its activations): the same outputs rounded to nearest even
                Tensor[] half = whole.layerOutputs(be, work, arena, DType.BF16, wholeIds, ty, m);
                for (int l = 0; l < want.length; l++) {
                    float[] w = want[l].toFloatArray(), h = half[l].toFloatArray();
                    assertArrayEquals(w, got[l].toFloatArray(), 0f, "layer " + l + (bf16 ? " bf16" : " fp32"));
                    assertEquals(DType.BF16, half[l].dtype());
                    for (int i = 0; i < w.length; i++) assertEquals(Bf16.toFloat(Bf16.fromFloat(w[i])), h[i], 0f, "layer " + l + " bf16 " + i);
                }
                assertEquals(TOKENS.length, compact.config().vocabSize());
                // what is gone: the word table's other rows and, in bf16, the fp32 linear weights (their packs instead)
                long words = 4L * (CONFIG.vocabSize() - TOKENS.length) * CONFIG.hidden();
                assertEquals(wholeBytes - words - (bf16 ? linear - packs : 0), compact.parameterBytes(), bf16 ? "bf16" : "fp32");
                if (bf16) assertTrue(packs > 0 && packs < linear, packs + " bytes of packs for " + linear + " of fp32 weights");
                refusals(be, compact);
                int[] other = ids.clone();
                other[b * s - 1] = 4; // a token the copy did not keep
                var e = assertThrows(IllegalArgumentException.class,
                        () -> compact.layerOutputs(be, work, arena, DType.F32, arena.allocate(DType.I32, b, s).copyFrom(other), ty, m));
                assertTrue(e.getMessage().contains("token id 4: this model was compacted for inference with the word embeddings of 11 tokens"),
                        e.getMessage());
            }
        }
    }

    private static void refusals(CpuBackend be, BertModel compact) {
        for (Runnable r : List.<Runnable>of(compact::parameters, () -> compact.copyTo(be), compact::fingerprint,
                () -> compact.addLora(new LoraConfig(4, 8, EnumSet.allOf(LoraConfig.Target.class)), 1),
                () -> compact.compactForInference(be, true, TOKENS), () -> compact.packForTraining(be), () -> compact.slotWeight(0, Slot.QKV),
                () -> compact.packForInference(be, false), () -> compact.packForInference(be, true), compact::dropInferencePacks,
                () -> compact.setDenseFormat(new boolean[CONFIG.layers()][BertNames.Slot.values().length]),
                () -> compact.forward(be, null, null, null, null, new BertModel.AdapterSet(new Adapter[3][4], java.util.Map.of())),
                () -> new BertTraining(compact, n -> true))) {
            var e = assertThrows(IllegalStateException.class, r::run);
            assertTrue(e.getMessage().contains("compacted for inference"), e.getMessage());
        }
    }

    @Test
    void badTokenListsAreRefused() {
        CpuBackend be = CpuBackend.create();
        try (BertModel whole = new BertModel(CONFIG)) {
            var e = assertThrows(IllegalArgumentException.class, () -> whole.compactForInference(be, false, new int[] {0, 211}));
            assertTrue(e.getMessage().contains("token id 211 at 1: tokens are distinct ids of the vocabulary of 211, ascending"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> whole.compactForInference(be, false, new int[] {0, 9, 9}));
            assertTrue(e.getMessage().contains("token id 9 at 2"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> whole.compactForInference(be, false, new int[] {5, 3}));
            assertThrows(IllegalArgumentException.class, () -> whole.compactForInference(be, false, new int[0]));
        }
    }
}
