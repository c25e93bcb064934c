package dev.topa.model;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.io.DefaultModel;
import dev.topa.io.OnnxBertReader;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Sequences packed without padding give every real token the state the padded, masked batch gives it. */
class PackedForwardTest {
    @Test
    void packedSequencesMatchThePaddedBatchTokenForToken() throws Exception {
        try (BertModel model = OnnxBertReader.load(DefaultModel.bundled("all-minilm-l6-v2").resolve("model.onnx"))) {
            check(model, new int[] {17, 3, 29, 9, 29});
        }
        BertConfig uneven = new BertConfig(97, 64, 40, 2, 16, new int[] {4, 0, 3}, new int[] {96, 37, 0}, 1e-12f); // a pruned shape
        try (BertModel model = new BertModel(uneven)) {
            SplittableRandom rnd = new SplittableRandom(2);
            for (Tensor t : model.parameters().values()) {
                float[] v = new float[(int) t.numel()];
                for (int i = 0; i < v.length; i++) v[i] = (float) (0.2 * (2 * rnd.nextDouble() - 1));
                t.copyFrom(v);
            }
            model.packForInference(CpuBackend.create(), false);
            check(model, new int[] {5, 31, 2, 12});
        }
    }

    private static void check(BertModel model, int[] lengths) {
        CpuBackend be = CpuBackend.create();
        int b = lengths.length, s = java.util.Arrays.stream(lengths).max().orElseThrow(), n = java.util.Arrays.stream(lengths).sum();
        int c = model.config().hidden();
        SplittableRandom rnd = new SplittableRandom(9);
        int[] ids = new int[b * s], types = new int[b * s], mask = new int[b * s], pid = new int[n], ptype = new int[n], pos = new int[n];
        for (int i = 0, off = 0; i < b; off += lengths[i], i++)
            for (int t = 0; t < lengths[i]; t++) {
                ids[i * s + t] = pid[off + t] = rnd.nextInt(1, model.config().vocabSize());
                types[i * s + t] = ptype[off + t] = t < lengths[i] / 2 ? 0 : 1;
                mask[i * s + t] = 1;
                pos[off + t] = t;
            }
        try (StepArena arena = new StepArena("packed")) {
            float[] padded = model.forward(be, arena, arena.allocate(DType.I32, b, s).copyFrom(ids), arena.allocate(DType.I32, b, s).copyFrom(types),
                    arena.allocate(DType.I32, b, s).copyFrom(mask)).toFloatArray();
            float[] packed = model.forwardPacked(be, arena, arena.allocate(DType.I32, 1, n).copyFrom(pid), arena.allocate(DType.I32, 1, n).copyFrom(ptype),
                    arena.allocate(DType.I32, 1, n).copyFrom(pos), lengths, null).toFloatArray();
            double num = 0, den = 0;
            for (int i = 0, off = 0; i < b; off += lengths[i], i++)
                for (int t = 0; t < lengths[i]; t++)
                    for (int j = 0; j < c; j++) {
                        double r = padded[(i * s + t) * c + j], g = packed[(off + t) * c + j];
                        num += (r - g) * (r - g);
                        den += r * r;
                    }
            double err = Math.sqrt(num / den);
            assertTrue(err < 1e-5, "packed vs padded relative error " + err);
            var e = assertThrows(IllegalArgumentException.class, () -> model.forwardPacked(be, arena, arena.allocate(DType.I32, 1, n - 1),
                    arena.allocate(DType.I32, 1, n - 1), arena.allocate(DType.I32, 1, n - 1), lengths, null));
            assertTrue(e.getMessage().contains("the lengths' sum"), e.getMessage());
        }
    }
}
