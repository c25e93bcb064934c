package dev.topa.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.Reference;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.HashMap;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The whole encoder's backward against central finite differences of a float64 re-implementation
 * of its forward (built from the op references), on a tiny random config whose layers differ in
 * heads and FFN width, with padding in the batch.
 */
class BertGradientTest {
    static final int B = 2, S = 7;

    /** float64 forward of the model with the given parameter values: last_hidden_state flattened. */
    static double[] referenceForward(BertConfig c, Map<String, double[]> w, int[] ids, int[] types, int[] mask) {
        int n = B * S, h = c.hidden();
        double[] x = Reference.embedding(ids, null, types, w.get("embeddings.word_embeddings.weight"),
                w.get("embeddings.position_embeddings.weight"), w.get("embeddings.token_type_embeddings.weight"), S, h);
        x = Reference.layernorm(x, w.get("embeddings.LayerNorm.weight"), w.get("embeddings.LayerNorm.bias"), n, h, c.layerNormEps());
        for (int l = 0; l < c.layers(); l++) {
            String p = "encoder.layer." + l + ".";
            int a = c.attentionWidth(l), f = c.ffn(l);
            double[] q = Reference.gemm(false, true, n, a, h, 1, x, w.get(p + "attention.self.query.weight"), 0, null, w.get(p + "attention.self.query.bias"));
            double[] k = Reference.gemm(false, true, n, a, h, 1, x, w.get(p + "attention.self.key.weight"), 0, null, w.get(p + "attention.self.key.bias"));
            double[] v = Reference.gemm(false, true, n, a, h, 1, x, w.get(p + "attention.self.value.weight"), 0, null, w.get(p + "attention.self.value.bias"));
            double[] qkv = new double[n * 3 * a];
            for (int t = 0; t < n; t++) {
                System.arraycopy(q, t * a, qkv, t * 3 * a, a);
                System.arraycopy(k, t * a, qkv, t * 3 * a + a, a);
                System.arraycopy(v, t * a, qkv, t * 3 * a + 2 * a, a);
            }
            double[] ctx = Reference.attention(qkv, mask, B, S, c.heads(l), c.headDim(), 1 / Math.sqrt(c.headDim()), null);
            double[] att = Reference.gemm(false, true, n, h, a, 1, ctx, w.get(p + "attention.output.dense.weight"), 0, null,
                    w.get(p + "attention.output.dense.bias"));
            double[] h1 = Reference.layernorm(Reference.add(att, x), w.get(p + "attention.output.LayerNorm.weight"),
                    w.get(p + "attention.output.LayerNorm.bias"), n, h, c.layerNormEps());
            double[] pre = Reference.gemm(false, true, n, f, h, 1, h1, w.get(p + "intermediate.dense.weight"), 0, null, null);
            double[] act = Reference.biasGelu(pre, w.get(p + "intermediate.dense.bias"), n, f);
            double[] out = Reference.gemm(false, true, n, h, f, 1, act, w.get(p + "output.dense.weight"), 0, null,
                    w.get(p + "output.dense.bias"));
            x = Reference.layernorm(Reference.add(out, h1), w.get(p + "output.LayerNorm.weight"), w.get(p + "output.LayerNorm.bias"),
                    n, h, c.layerNormEps());
        }
        return x;
    }

    @Test
    void fullFineTuningGradientsMatchFiniteDifferences() {
        BertConfig cfg = new BertConfig(23, 16, 9, 2, 4, new int[] {4, 3}, new int[] {32, 24}, 1e-6f);
        SplittableRandom rnd = new SplittableRandom(11);
        int[] ids = new int[B * S], types = new int[B * S], mask = new int[B * S];
        for (int i = 0; i < B * S; i++) {
            ids[i] = rnd.nextInt(23);
            types[i] = (i % S) >= 4 ? 1 : 0;
            mask[i] = (i % S) < S - 3 * (i / S) ? 1 : 0;
        }
        try (BertModel model = new BertModel(cfg); BertTraining train = new BertTraining(model, name -> true);
                StepArena arena = new StepArena("grad check")) {
            Map<String, double[]> w = new HashMap<>();
            for (var e : model.parameters().entrySet()) {
                boolean gamma = e.getKey().endsWith("LayerNorm.weight");
                float[] v = new float[(int) e.getValue().numel()];
                for (int i = 0; i < v.length; i++) v[i] = (float) (gamma ? 0.8 + 0.4 * rnd.nextDouble() : 0.5 * (rnd.nextDouble() - 0.5));
                e.getValue().copyFrom(v);
                double[] d = new double[v.length];
                for (int i = 0; i < v.length; i++) d[i] = v[i];
                w.put(e.getKey(), d);
            }
            assertEquals(model.parameters().keySet(), train.gradients().keySet(), "every parameter is trainable here");
            CpuBackend be = CpuBackend.create();
            Tensor tid = arena.allocate(DType.I32, B, S).copyFrom(ids), tty = arena.allocate(DType.I32, B, S).copyFrom(types);
            Tensor tm = arena.allocate(DType.I32, B, S).copyFrom(mask);
            Tensor out = train.forward(be, arena, tid, tty, tm);
            double[] ref = referenceForward(cfg, w, ids, types, mask);
            float[] got = out.toFloatArray();
            double num = 0, den = 0;
            for (int i = 0; i < ref.length; i++) {
                num += (got[i] - ref[i]) * (got[i] - ref[i]);
                den += ref[i] * ref[i];
            }
            assertTrue(Math.sqrt(num / den) < 1e-5, "forward vs float64 reference: " + Math.sqrt(num / den));
            double[] dy = new double[ref.length];
            float[] dyf = new float[ref.length];
            for (int i = 0; i < dy.length; i++) dyf[i] = (float) (dy[i] = rnd.nextDouble() - 0.5);
            train.zeroGradients();
            train.backward(be, arena, arena.allocate(DType.F32, B, S, cfg.hidden()).copyFrom(dyf));
            for (var e : train.gradients().entrySet()) {
                double[] x = w.get(e.getKey());
                float[] g = e.getValue().toFloatArray();
                int[] coords = x.length <= 12 ? java.util.stream.IntStream.range(0, x.length).toArray() : rnd.ints(12, 0, x.length).toArray();
                double n2 = 0, d2 = 0;
                for (int ci : coords) {
                    double keep = x[ci], step = 1e-5;
                    x[ci] = keep + step;
                    double up = dot(dy, referenceForward(cfg, w, ids, types, mask));
                    x[ci] = keep - step;
                    double down = dot(dy, referenceForward(cfg, w, ids, types, mask));
                    x[ci] = keep;
                    double fd = (up - down) / (2 * step);
                    n2 += (g[ci] - fd) * (g[ci] - fd);
                    d2 += fd * fd;
                }
                // relative, with an absolute floor: the key bias's true gradient is 0 (softmax ignores a
                // constant added to a row of scores), where float rounding is all that is left
                double err = Math.sqrt(n2), bound = 1e-3 * Math.sqrt(d2) + 1e-5 * Math.sqrt(coords.length);
                assertTrue(err <= bound, e.getKey() + ": gradient error " + err + " > " + bound + " (|fd| " + Math.sqrt(d2) + ")");
            }
        }
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }
}
