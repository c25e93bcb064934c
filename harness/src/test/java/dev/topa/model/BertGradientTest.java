package dev.topa.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.Dropout;
import dev.topa.harness.Reference;
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

    /** W + scale B A for a linear with a LoRA adapter in w (fused QKV: the module's diagonal block), else W. */
    static double[] effective(BertConfig c, Map<String, double[]> w, int l, String module, double scale) {
        String p = "encoder.layer." + l + ".";
        double[] base = w.get(p + module + ".weight");
        int att = c.attentionWidth(l), hid = c.hidden(), ffn = c.ffn(l);
        int blk = switch (module) {
            case "attention.self.query" -> 0;
            case "attention.self.key" -> 1;
            case "attention.self.value" -> 2;
            default -> -1;
        };
        int out = blk >= 0 ? att : module.equals("intermediate.dense") ? ffn : hid;
        int in = blk >= 0 || module.equals("intermediate.dense") ? hid : module.equals("attention.output.dense") ? att : ffn;
        String ad = blk >= 0 ? p + "attention.self.qkv" : p + module;
        double[] a = w.get(ad + ".lora_A"), b = w.get(ad + ".lora_B");
        if (a == null) return base;
        int r = blk >= 0 ? a.length / (3 * in) : a.length / in, bcols = blk >= 0 ? 3 * r : r;
        int rowOff = blk >= 0 ? blk * out : 0, colOff = blk >= 0 ? blk * r : 0;
        double[] e = base.clone();
        for (int o = 0; o < out; o++)
            for (int i = 0; i < in; i++) {
                double sum = 0;
                for (int k = 0; k < r; k++) sum += b[(rowOff + o) * bcols + colOff + k] * a[(colOff + k) * in + i];
                e[o * in + i] += scale * sum;
            }
        return e;
    }

    /** The dropout of one forward: hidden, attention and LoRA probabilities, drawn for (seed, step). */
    record Drops(double hidden, double attention, double lora, long seed, long step) {
        static final Drops NONE = new Drops(0, 0, 0, 0, 0);

        Dropout at(double p, int site) {
            return p > 0 ? new Dropout(p, Dropout.key(seed, step, site)) : Dropout.NONE;
        }
    }

    /** x W^T + bias (+ the adapter's s (dropout(x) A^T) B^T, as (W_eff - W) applied to dropout(x)). */
    static double[] linear(BertConfig c, Map<String, double[]> w, int l, String module, double[] x, int n, int in, int out,
            double ls, Dropout loraDrop, double[] bias) {
        double[] base = w.get("encoder.layer." + l + "." + module + ".weight"), eff = effective(c, w, l, module, ls);
        if (!loraDrop.active() || eff == base) return Reference.gemm(false, true, n, out, in, 1, x, eff, 0, null, bias);
        double[] delta = eff.clone();
        for (int i = 0; i < delta.length; i++) delta[i] -= base[i];
        double[] y = Reference.gemm(false, true, n, out, in, 1, x, base, 0, null, bias);
        return Reference.add(y, Reference.gemm(false, true, n, out, in, 1, Reference.dropout(x, loraDrop), delta, 0, null, null));
    }

    static double[] referenceForward(BertConfig c, Map<String, double[]> w, int[] ids, int[] types, int[] mask, double ls) {
        return referenceForward(c, w, ids, types, mask, ls, Drops.NONE);
    }

    static double[] referenceForward(BertConfig c, Map<String, double[]> w, int[] ids, int[] types, int[] mask, double ls, Drops dr) {
        return referenceForward(c, w, ids, types, mask, ls, dr, null);
    }

    /** float64 forward of the model with the given parameter values: last_hidden_state flattened; each layer's output into layers (null: not kept). */
    static double[] referenceForward(BertConfig c, Map<String, double[]> w, int[] ids, int[] types, int[] mask, double ls, Drops dr,
            java.util.List<double[]> layers) {
        int n = B * S, h = c.hidden();
        double[] x = Reference.embedding(ids, null, types, w.get("embeddings.word_embeddings.weight"),
                w.get("embeddings.position_embeddings.weight"), w.get("embeddings.token_type_embeddings.weight"), S, h);
        x = Reference.layernorm(x, w.get("embeddings.LayerNorm.weight"), w.get("embeddings.LayerNorm.bias"), n, h, c.layerNormEps());
        x = Reference.dropout(x, dr.at(dr.hidden(), BertModel.SITE_EMBEDDINGS));
        for (int l = 0; l < c.layers(); l++) {
            String p = "encoder.layer." + l + ".";
            int a = c.attentionWidth(l), f = c.ffn(l);
            Dropout qkvDrop = dr.at(dr.lora(), BertModel.site(l, BertModel.SITE_LORA + BertNames.Slot.QKV.ordinal()));
            double[] q = linear(c, w, l, "attention.self.query", x, n, h, a, ls, qkvDrop, w.get(p + "attention.self.query.bias"));
            double[] k = linear(c, w, l, "attention.self.key", x, n, h, a, ls, qkvDrop, w.get(p + "attention.self.key.bias"));
            double[] v = linear(c, w, l, "attention.self.value", x, n, h, a, ls, qkvDrop, w.get(p + "attention.self.value.bias"));
            double[] qkv = new double[n * 3 * a];
            for (int t = 0; t < n; t++) {
                System.arraycopy(q, t * a, qkv, t * 3 * a, a);
                System.arraycopy(k, t * a, qkv, t * 3 * a + a, a);
                System.arraycopy(v, t * a, qkv, t * 3 * a + 2 * a, a);
            }
            double[] ctx = Reference.attention(qkv, mask, B, S, c.heads(l), c.headDim(), 1 / Math.sqrt(c.headDim()), null,
                    dr.at(dr.attention(), BertModel.site(l, BertModel.SITE_PROBS)));
            double[] att = linear(c, w, l, "attention.output.dense", ctx, n, a, h, ls,
                    dr.at(dr.lora(), BertModel.site(l, BertModel.SITE_LORA + BertNames.Slot.ATTENTION_OUTPUT.ordinal())), w.get(p + "attention.output.dense.bias"));
            att = Reference.dropout(att, dr.at(dr.hidden(), BertModel.site(l, BertModel.SITE_ATT_OUT)));
            double[] h1 = Reference.layernorm(Reference.add(att, x), w.get(p + "attention.output.LayerNorm.weight"),
                    w.get(p + "attention.output.LayerNorm.bias"), n, h, c.layerNormEps());
            double[] pre = linear(c, w, l, "intermediate.dense", h1, n, h, f, ls,
                    dr.at(dr.lora(), BertModel.site(l, BertModel.SITE_LORA + BertNames.Slot.FFN_IN.ordinal())), null);
            double[] act = Reference.biasGelu(pre, w.get(p + "intermediate.dense.bias"), n, f);
            double[] out = linear(c, w, l, "output.dense", act, n, f, h, ls,
                    dr.at(dr.lora(), BertModel.site(l, BertModel.SITE_LORA + BertNames.Slot.FFN_OUT.ordinal())), w.get(p + "output.dense.bias"));
            out = Reference.dropout(out, dr.at(dr.hidden(), BertModel.site(l, BertModel.SITE_FFN_OUT)));
            x = Reference.layernorm(Reference.add(out, h1), w.get(p + "output.LayerNorm.weight"), w.get(p + "output.LayerNorm.bias"),
                    n, h, c.layerNormEps());
            if (layers != null) layers.add(x);
        }
        return x;
    }

    @Test
    void fullFineTuningGradientsMatchFiniteDifferences() {
        check(null, name -> true);
    }

    @Test
    void loraGradientsMatchFiniteDifferences() {
        // every target, q and v only on the fused QKV slot's diagonal blocks; LayerNorm trained too (as the paper)
        check(new LoraConfig(2, 3.0, java.util.EnumSet.of(LoraConfig.Target.QUERY, LoraConfig.Target.VALUE,
                LoraConfig.Target.ATTENTION_OUTPUT, LoraConfig.Target.FFN_IN, LoraConfig.Target.FFN_OUT)),
                name -> name.contains("lora_") || name.contains("LayerNorm"));
    }

    @Test
    void gradientsWithDropoutMatchFiniteDifferences() {
        // hidden, attention-probability and LoRA dropout at once; the masks are fixed by (seed, step)
        Drops drops = new Drops(0.15, 0.2, 0.25, 99, 3);
        check(new LoraConfig(2, 3.0, java.util.EnumSet.allOf(LoraConfig.Target.class), drops.lora()),
                name -> name.contains("lora_") || name.contains("LayerNorm") || name.contains("bias"), drops);
    }

    /**
     * Layer-wise distillation: every layer's output matched to a target (the last too, where the
     * head's gradient arrives) and, in the second case, only the first layer's; with dropout, padding
     * and LoRA. The loss checked is <dy, out> + weight x sum of the matched layers' masked MSE.
     */
    @Test
    void hiddenStateMatchingGradientsMatchFiniteDifferences() {
        for (boolean[] matched : new boolean[][] {{true, true}, {true, false}})
            check(new LoraConfig(2, 3.0, java.util.EnumSet.allOf(LoraConfig.Target.class), 0.2),
                    name -> name.contains("lora_") || name.contains("LayerNorm") || name.contains("bias"), new Drops(0.1, 0.1, 0.2, 7, 2),
                    new Hidden(matched, 0.8));
    }

    /** Which layers' outputs are matched to a target, and the weight of their term. */
    record Hidden(boolean[] matched, double weight) {}

    @Test
    void recomputingProjectionsGivesIdenticalGradients() {
        BertConfig cfg = new BertConfig(23, 16, 9, 2, 4, new int[] {4, 3}, new int[] {32, 24}, 1e-6f);
        SplittableRandom rnd = new SplittableRandom(3);
        int[] ids = new int[B * S], types = new int[B * S], mask = new int[B * S];
        for (int i = 0; i < B * S; i++) {
            ids[i] = rnd.nextInt(23);
            mask[i] = (i % S) < S - 2 * (i / S) ? 1 : 0;
        }
        try (BertModel model = new BertModel(cfg)) {
            model.addLora(new LoraConfig(2, 4.0, java.util.EnumSet.allOf(LoraConfig.Target.class), 0.2), 5);
            for (Tensor t : model.parameters().values()) {
                float[] v = new float[(int) t.numel()];
                for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() - 0.5);
                t.copyFrom(v);
            }
            float[] dy = new float[B * S * cfg.hidden()];
            for (int i = 0; i < dy.length; i++) dy[i] = (float) (rnd.nextDouble() - 0.5);
            Map<String, float[]>[] got = new Map[2];
            for (int k = 0; k < 2; k++)
                try (BertTraining train = new BertTraining(null, model, new BertTraining.Options(n -> n.contains("lora_") || n.contains("LayerNorm") || n.contains("bias"), new DropoutConfig(0.1, 0.1), k == 1, DType.F32)); StepArena arena = new StepArena("recompute")) {
                    train.setDropoutStep(5, 2);
                    CpuBackend be = CpuBackend.create();
                    train.forward(be, arena, arena.allocate(DType.I32, B, S).copyFrom(ids), arena.allocate(DType.I32, B, S).copyFrom(types),
                            arena.allocate(DType.I32, B, S).copyFrom(mask));
                    train.backward(be, arena, arena.allocate(DType.F32, B, S, cfg.hidden()).copyFrom(dy));
                    got[k] = new HashMap<>();
                    for (var e : train.gradients().entrySet()) got[k].put(e.getKey(), e.getValue().toFloatArray());
                }
            assertEquals(got[0].keySet(), got[1].keySet());
            for (String n : got[0].keySet()) org.junit.jupiter.api.Assertions.assertArrayEquals(got[0].get(n), got[1].get(n), n);
        }
    }

    /**
     * The mixed-precision comparisons' case: a small model with LoRA everywhere at a trained model's
     * weight scale (~1/sqrt(fan-in): random 0.5-scale weights amplify any rounding layer after layer
     * and say nothing about bf16 on a real network), a padded batch and an output gradient.
     */
    private record MixedCase(BertConfig cfg, BertModel model, int[] ids, int[] types, int[] mask, float[] dy) {
        static MixedCase of(long seed) {
            BertConfig cfg = new BertConfig(23, 32, 9, 2, 8, new int[] {4, 2}, new int[] {64, 48}, 1e-6f);
            SplittableRandom rnd = new SplittableRandom(seed);
            int[] ids = new int[B * S], types = new int[B * S], mask = new int[B * S];
            for (int i = 0; i < B * S; i++) {
                ids[i] = rnd.nextInt(23);
                mask[i] = (i % S) < S - 2 * (i / S) ? 1 : 0;
            }
            BertModel model = new BertModel(cfg);
            model.addLora(new LoraConfig(4, 8.0, java.util.EnumSet.allOf(LoraConfig.Target.class), 0.1), 5);
            for (var e : model.parameters().entrySet()) {
                float[] v = new float[(int) e.getValue().numel()];
                boolean gamma = e.getKey().endsWith("LayerNorm.weight");
                for (int i = 0; i < v.length; i++) v[i] = (float) (gamma ? 0.8 + 0.4 * rnd.nextDouble() : 0.3 * (rnd.nextDouble() - 0.5));
                e.getValue().copyFrom(v);
            }
            float[] dy = new float[B * S * cfg.hidden()];
            for (int i = 0; i < dy.length; i++) dy[i] = (float) (rnd.nextDouble() - 0.5);
            return new MixedCase(cfg, model, ids, types, mask, dy);
        }

        /** One forward and backward (LoRA and LayerNorm trained, dropout on): the output, the gradients, and the bytes forward left for backward. */
        Step step(boolean recompute, DType saved) {
            CpuBackend be = CpuBackend.create();
            try (BertTraining train = new BertTraining(null, model, new BertTraining.Options(n -> n.contains("lora_") || n.contains("LayerNorm"), new DropoutConfig(0.1, 0.1), recompute, saved)); StepArena arena = new StepArena("mixed")) {
                train.setDropoutStep(3, 1);
                Tensor tid = arena.allocate(DType.I32, B, S).copyFrom(ids), tty = arena.allocate(DType.I32, B, S).copyFrom(types);
                Tensor tm = arena.allocate(DType.I32, B, S).copyFrom(mask);
                long before = arena.liveBytes();
                float[] out = train.forward(be, arena, tid, tty, tm).toFloatArray();
                long kept = arena.liveBytes() - before;
                train.backward(be, arena, arena.allocate(DType.F32, B, S, cfg.hidden()).copyFrom(dy));
                Map<String, float[]> grads = new HashMap<>();
                for (var e : train.gradients().entrySet()) grads.put(e.getKey(), e.getValue().toFloatArray());
                return new Step(out, grads, kept);
            }
        }
    }

    private record Step(float[] out, Map<String, float[]> grads, long kept) {}

    @Test
    void bf16FrozenBaseStaysCloseToFp32() {
        MixedCase c = MixedCase.of(17);
        try (BertModel model = c.model()) {
            Step fp32 = c.step(true, DType.F32);
            model.packForTraining(CpuBackend.create());
            Step bf16 = c.step(true, DType.F32);
            double fwd = rel(fp32.out(), bf16.out());
            assertTrue(fwd < 2e-2 && fwd > 0, "bf16 forward vs fp32: " + fwd + " (0 would mean bf16 was not used)");
            for (String n : fp32.grads().keySet())
                if (n.contains("lora_") || n.contains("LayerNorm.weight"))
                    assertTrue(rel(fp32.grads().get(n), bf16.grads().get(n)) < 3e-2,
                            n + ": bf16 vs fp32 gradient " + rel(fp32.grads().get(n), bf16.grads().get(n)));
        }
    }

    /**
     * Activations kept in bf16: forward is unchanged (it computes in fp32 and keeps rounded copies),
     * gradients stay within the mixed-precision bound of the fp32-kept ones but differ (so bf16 was
     * used), and what forward leaves for backward shrinks by half the kept context, QKV and FFN
     * pre-activation.
     */
    @Test
    void bf16SavedActivationsStayCloseToFp32AndHalveWhatIsKept() {
        MixedCase c = MixedCase.of(29);
        BertConfig cfg = c.cfg();
        try (BertModel model = c.model()) {
            for (boolean recompute : new boolean[] {false, true}) {
                Step fp32 = c.step(recompute, DType.F32), bf16 = c.step(recompute, DType.BF16);
                org.junit.jupiter.api.Assertions.assertArrayEquals(fp32.out(), bf16.out(), "forward does not depend on how activations are kept");
                double worst = 0;
                for (String n : fp32.grads().keySet()) {
                    double e = rel(fp32.grads().get(n), bf16.grads().get(n));
                    assertTrue(e < 2e-2, n + ": bf16-kept vs fp32-kept gradient " + e);
                    worst = Math.max(worst, e);
                }
                assertTrue(worst > 0, "gradients identical: the bf16 copies were not used");
                long halved = 0; // bytes: half of each kept tensor's fp32 size
                for (int l = 0; l < cfg.layers(); l++)
                    halved += (long) B * S * ((recompute ? 0 : 3L * cfg.attentionWidth(l) + cfg.ffn(l)) + cfg.attentionWidth(l)) * 2;
                assertEquals(halved, fp32.kept() - bf16.kept(), "recompute " + recompute + ": kept " + fp32.kept() + " vs " + bf16.kept() + " bytes");
            }
        }
    }

    @Test
    void savedActivationsAreF32OrBf16() {
        try (BertModel model = MixedCase.of(3).model()) {
            var e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> new BertTraining(null, model, new BertTraining.Options(n -> true, DropoutConfig.NONE, false, DType.I32)));
            assertTrue(e.getMessage().contains("f32 or bf16") && e.getMessage().contains("I32"), e.getMessage());
        }
    }

    private static double rel(float[] ref, float[] got) {
        double num = 0, den = 0;
        for (int i = 0; i < ref.length; i++) {
            num += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
            den += ref[i] * (double) ref[i];
        }
        return Math.sqrt(num / Math.max(den, 1e-30));
    }

    private void check(LoraConfig lora, java.util.function.Predicate<String> trainable) {
        check(lora, trainable, Drops.NONE);
    }

    private void check(LoraConfig lora, java.util.function.Predicate<String> trainable, Drops drops) {
        check(lora, trainable, drops, null);
    }

    private void check(LoraConfig lora, java.util.function.Predicate<String> trainable, Drops drops, Hidden hidden) {
        BertConfig cfg = new BertConfig(23, 16, 9, 2, 4, new int[] {4, 3}, new int[] {32, 24}, 1e-6f);
        double loraScale = lora == null ? 0 : lora.scale();
        SplittableRandom rnd = new SplittableRandom(11);
        int[] ids = new int[B * S], types = new int[B * S], mask = new int[B * S];
        for (int i = 0; i < B * S; i++) {
            ids[i] = rnd.nextInt(23);
            types[i] = (i % S) >= 4 ? 1 : 0;
            mask[i] = (i % S) < S - 3 * (i / S) ? 1 : 0;
        }
        try (BertModel model = new BertModel(cfg)) {
            if (lora != null) model.addLora(lora, 5);
            try (BertTraining train = new BertTraining(null, model, new BertTraining.Options(trainable, new DropoutConfig(drops.hidden(), drops.attention()), false, DType.F32));
                    StepArena arena = new StepArena("grad check")) {
                train.setDropoutStep(drops.seed(), drops.step());
                run(cfg, model, train, arena, rnd, ids, types, mask, loraScale, trainable, drops, hidden);
            }
        }
    }

    private void run(BertConfig cfg, BertModel model, BertTraining train, StepArena arena, SplittableRandom rnd, int[] ids,
            int[] types, int[] mask, double loraScale, java.util.function.Predicate<String> trainable, Drops drops, Hidden hidden) {
        {
            Map<String, double[]> w = new HashMap<>();
            for (var e : model.parameters().entrySet()) {
                boolean gamma = e.getKey().endsWith("LayerNorm.weight");
                boolean qkvB = e.getKey().endsWith("attention.self.qkv.lora_B");
                float[] v = new float[(int) e.getValue().numel()];
                for (int i = 0; i < v.length; i++) v[i] = (float) (gamma ? 0.8 + 0.4 * rnd.nextDouble() : 0.5 * (rnd.nextDouble() - 0.5));
                if (qkvB) { // block-diagonal, and zero blocks for the untargeted key
                    long rows = e.getValue().dim(0), cols = e.getValue().dim(1);
                    for (int i = 0; i < v.length; i++) {
                        long br = (i / cols) / (rows / 3), bc = (i % cols) / (cols / 3);
                        if (br != bc || br == 1) v[i] = 0;
                    }
                }
                if (e.getKey().endsWith("attention.self.qkv.lora_A")) { // the key's rows stay zero, as addLora leaves them
                    long rows = e.getValue().dim(0), cols = e.getValue().dim(1);
                    for (int i = 0; i < v.length; i++) if ((i / cols) / (rows / 3) == 1) v[i] = 0;
                }
                e.getValue().copyFrom(v);
                double[] d = new double[v.length];
                for (int i = 0; i < v.length; i++) d[i] = v[i];
                w.put(e.getKey(), d);
            }
            assertEquals(model.parameters().keySet().stream().filter(trainable).collect(java.util.stream.Collectors.toSet()),
                    train.gradients().keySet(), "exactly the trainable parameters get gradients");
            CpuBackend be = CpuBackend.create();
            Tensor tid = arena.allocate(DType.I32, B, S).copyFrom(ids), tty = arena.allocate(DType.I32, B, S).copyFrom(types);
            Tensor tm = arena.allocate(DType.I32, B, S).copyFrom(mask);
            // targets near the layers' own outputs (as a teacher's would be), set for the one forward below
            double[][] targets = new double[cfg.layers()][];
            if (hidden != null) {
                java.util.List<double[]> own = new java.util.ArrayList<>();
                referenceForward(cfg, w, ids, types, mask, loraScale, drops, own);
                Tensor[] tt = new Tensor[cfg.layers()];
                for (int l = 0; l < cfg.layers(); l++) {
                    if (!hidden.matched()[l]) continue;
                    targets[l] = own.get(l).clone();
                    float[] v = new float[targets[l].length];
                    for (int i = 0; i < v.length; i++) v[i] = (float) (targets[l][i] += 0.5 * (rnd.nextDouble() - 0.5));
                    tt[l] = arena.allocate(DType.F32, B, S, cfg.hidden()).copyFrom(v);
                }
                train.matchHidden(tt, (float) hidden.weight());
            }
            Tensor out = train.forward(be, arena, tid, tty, tm);
            double[] ref = referenceForward(cfg, w, ids, types, mask, loraScale, drops);
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
                    double up = objective(cfg, w, ids, types, mask, loraScale, drops, dy, hidden, targets);
                    x[ci] = keep - step;
                    double down = objective(cfg, w, ids, types, mask, loraScale, drops, dy, hidden, targets);
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

    /** <dy, out> (+ the hidden-state matching terms). */
    private static double objective(BertConfig cfg, Map<String, double[]> w, int[] ids, int[] types, int[] mask, double ls, Drops drops,
            double[] dy, Hidden hidden, double[][] targets) {
        java.util.List<double[]> layers = new java.util.ArrayList<>();
        double v = dot(dy, referenceForward(cfg, w, ids, types, mask, ls, drops, layers));
        if (hidden != null)
            for (int l = 0; l < cfg.layers(); l++)
                if (targets[l] != null) v += hidden.weight() * Reference.hiddenMatch(layers.get(l), targets[l], mask, cfg.hidden());
        return v;
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }
}
