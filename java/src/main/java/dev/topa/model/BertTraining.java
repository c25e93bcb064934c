package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Predicate;

/**
 * Training-mode forward (saving what backward needs) and the explicit backward of a
 * {@link BertModel}, layer by layer as in llm.c: no general autograd. Only trainable parameters
 * get gradient buffers (category gradients); through frozen ones backward computes dX only.
 *
 * <p>Saved per layer: the layer input, the fused QKV projection, the attention probabilities, the
 * attention context, both LayerNorm inputs with their mean/rstd, the first LayerNorm's output, the
 * FFN pre-activation (GEMM output without bias; bias + GELU is recomputed in backward) and the GELU
 * output.
 */
public final class BertTraining implements AutoCloseable {
    private final BertModel model;
    private final BertConfig cfg;
    private final TensorScope gradScope = new TensorScope("bert gradients", MemoryCategory.GRADIENTS);
    private final Map<String, Tensor> grads = new LinkedHashMap<>();
    private final Tensor[] qkvWeightGrad, qkvBiasGrad;
    private Saved saved;

    /** u: per linear slot, x A^T of its LoRA adapter (null without one). */
    private record Layer(Tensor in, Tensor qkv, Tensor probs, Tensor ctx, Tensor sum1, Tensor mean1, Tensor rstd1, Tensor h1,
            Tensor pre, Tensor act, Tensor sum2, Tensor mean2, Tensor rstd2, Tensor out, Tensor[] u) {}

    private record Saved(Tensor ids, Tensor types, Tensor mask, Tensor emb, Tensor mean0, Tensor rstd0, Layer[] layers) {}

    /** trainable: which parameters (by name) get gradients. */
    public BertTraining(BertModel model, Predicate<String> trainable) {
        this.model = model;
        this.cfg = model.config();
        qkvWeightGrad = new Tensor[cfg.layers()];
        qkvBiasGrad = new Tensor[cfg.layers()];
        for (int l = 0; l < cfg.layers(); l++) {
            String p = "encoder.layer." + l + ".attention.self.";
            boolean w = trainable.test(p + "query.weight") || trainable.test(p + "key.weight") || trainable.test(p + "value.weight");
            boolean b = trainable.test(p + "query.bias") || trainable.test(p + "key.bias") || trainable.test(p + "value.bias");
            // q/k/v train together: their gradients are one GEMM over the fused projection
            if (w) qkvWeightGrad[l] = gradScope.zeros(model.qkvWeight(l).shape());
            if (b) qkvBiasGrad[l] = gradScope.zeros(model.qkvBias(l).shape());
            int a = cfg.attentionWidth(l);
            String[] names = {"query", "key", "value"};
            for (int i = 0; i < 3; i++) {
                if (w) grads.put(p + names[i] + ".weight", qkvWeightGrad[l].rows((long) i * a, (long) (i + 1) * a));
                if (b) grads.put(p + names[i] + ".bias", qkvBiasGrad[l].rows((long) i * a, (long) (i + 1) * a));
            }
        }
        for (Map.Entry<String, Tensor> e : model.parameters().entrySet())
            if (!isQkvPart(e.getKey()) && trainable.test(e.getKey()))
                grads.put(e.getKey(), gradScope.zeros(e.getValue().shape()));
    }

    /** query/key/value weights and biases: their gradients are views into the fused QKV buffers. */
    private static boolean isQkvPart(String name) {
        return name.matches("encoder\\.layer\\.\\d+\\.attention\\.self\\.(query|key|value)\\.(weight|bias)");
    }

    /** Gradients of the trainable parameters, by name (q/k/v views into fused buffers). */
    public Map<String, Tensor> gradients() {
        return Collections.unmodifiableMap(grads);
    }

    public void zeroGradients() {
        for (int l = 0; l < cfg.layers(); l++) {
            if (qkvWeightGrad[l] != null) qkvWeightGrad[l].fill(0f);
            if (qkvBiasGrad[l] != null) qkvBiasGrad[l].fill(0f);
        }
        for (Map.Entry<String, Tensor> e : grads.entrySet())
            if (!isQkvPart(e.getKey())) e.getValue().fill(0f);
    }

    private Tensor p(String name) {
        return model.parameter(name);
    }

    /** Forward that keeps the activations backward needs (in the step arena); returns last_hidden_state. */
    public Tensor forward(Backend be, StepArena arena, Tensor ids, Tensor types, Tensor mask) {
        long b = ids.dim(0), s = ids.dim(1);
        int c = cfg.hidden();
        float eps = cfg.layerNormEps();
        Tensor emb = arena.allocate(DType.F32, b, s, c);
        be.embeddingForward(emb, ids, null, types, p("embeddings.word_embeddings.weight"),
                p("embeddings.position_embeddings.weight"), cfg.typeVocabSize() > 0 ? p("embeddings.token_type_embeddings.weight") : null);
        Tensor mean0 = arena.allocate(DType.F32, b * s), rstd0 = arena.allocate(DType.F32, b * s);
        Tensor h = arena.allocate(DType.F32, b, s, c);
        be.layernormForward(h, mean0, rstd0, null, emb, null, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"), eps);
        Layer[] layers = new Layer[cfg.layers()];
        for (int l = 0; l < cfg.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            int a = cfg.attentionWidth(l), f = cfg.ffn(l);
            Tensor[] u = new Tensor[4];
            Tensor qkv = arena.allocate(DType.F32, b, s, 3L * a);
            u[BertModel.QKV] = model.linear(be, arena, qkv, h, l, BertModel.QKV, model.qkvWeight(l), model.qkvBias(l));
            Tensor probs = arena.allocate(DType.F32, b, cfg.heads(l), s, s);
            Tensor ctx = arena.allocate(DType.F32, b, s, a);
            be.attentionForward(ctx, probs, qkv, mask, cfg.heads(l), scale());
            Tensor att = arena.allocate(DType.F32, b, s, c);
            u[BertModel.ATT_OUT] = model.linear(be, arena, att, ctx, l, BertModel.ATT_OUT, p(n + "attention.output.dense.weight"),
                    p(n + "attention.output.dense.bias"));
            Tensor sum1 = arena.allocate(DType.F32, b, s, c), h1 = arena.allocate(DType.F32, b, s, c);
            Tensor mean1 = arena.allocate(DType.F32, b * s), rstd1 = arena.allocate(DType.F32, b * s);
            be.layernormForward(h1, mean1, rstd1, sum1, att, h, p(n + "attention.output.LayerNorm.weight"),
                    p(n + "attention.output.LayerNorm.bias"), eps);
            Tensor pre = arena.allocate(DType.F32, b, s, f), act = arena.allocate(DType.F32, b, s, f);
            u[BertModel.FFN_IN] = model.linear(be, arena, pre, h1, l, BertModel.FFN_IN, p(n + "intermediate.dense.weight"), null);
            be.biasGeluForward(act, pre, p(n + "intermediate.dense.bias"));
            Tensor out = arena.allocate(DType.F32, b, s, c);
            u[BertModel.FFN_OUT] = model.linear(be, arena, out, act, l, BertModel.FFN_OUT, p(n + "output.dense.weight"),
                    p(n + "output.dense.bias"));
            Tensor sum2 = arena.allocate(DType.F32, b, s, c), h2 = arena.allocate(DType.F32, b, s, c);
            Tensor mean2 = arena.allocate(DType.F32, b * s), rstd2 = arena.allocate(DType.F32, b * s);
            be.layernormForward(h2, mean2, rstd2, sum2, out, h1, p(n + "output.LayerNorm.weight"), p(n + "output.LayerNorm.bias"), eps);
            layers[l] = new Layer(h, qkv, probs, ctx, sum1, mean1, rstd1, h1, pre, act, sum2, mean2, rstd2, h2, u);
            h = h2;
        }
        saved = new Saved(ids, types, mask, emb, mean0, rstd0, layers);
        return h;
    }

    private float scale() {
        return (float) (1 / Math.sqrt(cfg.headDim()));
    }

    /** Accumulates parameter gradients from dOut = dL/d(last_hidden_state) of the last forward. */
    public void backward(Backend be, StepArena arena, Tensor dOut) {
        if (saved == null || !dOut.isAlive() || !saved.emb().isAlive())
            throw new IllegalStateException("backward needs the activations of a forward in the same step");
        long b = dOut.dim(0), s = dOut.dim(1);
        int c = cfg.hidden();
        Tensor dh = dOut; // each layer only reads its output gradient and returns a new one
        for (int l = cfg.layers() - 1; l >= 0; l--) dh = layerBackward(be, arena, l, saved.layers()[l], dh);
        // embeddings: LayerNorm, then the scatter-add into the tables
        Tensor dEmb = arena.allocate(DType.F32, b, s, c);
        be.layernormBackward(dEmb, grads.get("embeddings.LayerNorm.weight"), grads.get("embeddings.LayerNorm.bias"), dh,
                saved.emb(), saved.mean0(), saved.rstd0(), p("embeddings.LayerNorm.weight"), false);
        Tensor dwte = grads.get("embeddings.word_embeddings.weight"), dwpe = grads.get("embeddings.position_embeddings.weight");
        Tensor dwtt = grads.get("embeddings.token_type_embeddings.weight");
        if (dwte != null || dwpe != null || dwtt != null)
            be.embeddingBackward(dwte, dwpe, dwtt, dEmb, saved.ids(), null, saved.types(), p("embeddings.word_embeddings.weight"),
                    p("embeddings.position_embeddings.weight"),
                    cfg.typeVocabSize() > 0 ? p("embeddings.token_type_embeddings.weight") : null);
    }

    /** Returns dL/d(layer input), in a new tensor; dOut is only read. */
    private Tensor layerBackward(Backend be, StepArena arena, int l, Layer sv, Tensor dOut) {
        String n = "encoder.layer." + l + ".";
        long b = dOut.dim(0), s = dOut.dim(1);
        int c = cfg.hidden(), a = cfg.attentionWidth(l), f = cfg.ffn(l);
        // LN2: x = out + h1  ->  dx (shared by the FFN output and the residual to h1)
        Tensor dx2 = arena.allocate(DType.F32, b, s, c);
        be.layernormBackward(dx2, grads.get(n + "output.LayerNorm.weight"), grads.get(n + "output.LayerNorm.bias"), dOut,
                sv.sum2(), sv.mean2(), sv.rstd2(), p(n + "output.LayerNorm.weight"), false);
        // FFN out: out = act W2^T + b2
        Tensor dAct = arena.allocate(DType.F32, b, s, f);
        linearBackward(be, arena, l, BertModel.FFN_OUT, dAct, false, grads.get(n + "output.dense.weight"),
                grads.get(n + "output.dense.bias"), dx2, sv.act(), sv.u(), p(n + "output.dense.weight"));
        // GELU (bias recomputed from the saved pre-activation), in place
        be.biasGeluBackward(dAct, grads.get(n + "intermediate.dense.bias"), dAct, sv.pre(), p(n + "intermediate.dense.bias"));
        // FFN in: pre = h1 W1^T; dh1 = dx2 (residual) + dPre W1, accumulated into dx2
        linearBackward(be, arena, l, BertModel.FFN_IN, dx2, true, grads.get(n + "intermediate.dense.weight"), null, dAct,
                sv.h1(), sv.u(), p(n + "intermediate.dense.weight"));
        Tensor dh1 = dx2;
        // LN1: x = att + in
        Tensor dx1 = arena.allocate(DType.F32, b, s, c);
        be.layernormBackward(dx1, grads.get(n + "attention.output.LayerNorm.weight"), grads.get(n + "attention.output.LayerNorm.bias"),
                dh1, sv.sum1(), sv.mean1(), sv.rstd1(), p(n + "attention.output.LayerNorm.weight"), false);
        // attention output: att = ctx Wo^T + bo
        Tensor dCtx = arena.allocate(DType.F32, b, s, a);
        linearBackward(be, arena, l, BertModel.ATT_OUT, dCtx, false, grads.get(n + "attention.output.dense.weight"),
                grads.get(n + "attention.output.dense.bias"), dx1, sv.ctx(), sv.u(), p(n + "attention.output.dense.weight"));
        Tensor dQkv = arena.allocate(DType.F32, b, s, 3L * a);
        be.attentionBackward(dQkv, dCtx, sv.probs(), sv.qkv(), cfg.heads(l), scale());
        // QKV: qkv = in Wqkv^T + bqkv; d(in) = dx1 (residual) + dQkv Wqkv, accumulated into dx1
        linearBackward(be, arena, l, BertModel.QKV, dx1, true, qkvWeightGrad[l], qkvBiasGrad[l], dQkv, sv.in(), sv.u(),
                model.qkvWeight(l));
        return dx1;
    }

    /**
     * Backward of one linear slot, y = x W^T + b (+ LoRA): dx (accumulate: +=) always; dw, dbias
     * when trainable (non-null); the adapter's dA, dB when the slot has one.
     */
    private void linearBackward(Backend be, StepArena arena, int l, int slot, Tensor dx, boolean accumulate, Tensor dw,
            Tensor dbias, Tensor dy, Tensor x, Tensor[] u, Tensor w) {
        BertModel.Adapter ad = model.adapter(l, slot);
        if (ad == null) {
            if (dw != null) be.gemm(true, false, 1f, dy, x, 1f, dw, null);
            if (dbias != null) be.biasBackward(dbias, dy);
            be.gemm(false, false, 1f, dy, w, accumulate ? 1f : 0f, dx, null);
            return;
        }
        String n = BertModel.slotName(l, slot);
        Tensor dA = grads.get(n + ".lora_A"), dB = grads.get(n + ".lora_B");
        Tensor g = arena.allocate(DType.F32, u[slot].shape());
        be.loraBackward(dx, accumulate, dw, dbias, dA, dB, g, dy, x, u[slot], w, ad.a(), ad.b(), ad.scale());
        if (ad.blockDiagonal() && dB != null) zeroOffDiagonal(dB, 3);
    }

    /** Keeps a block-diagonal B block-diagonal: its off-diagonal gradient blocks are not parameters. */
    private static void zeroOffDiagonal(Tensor dB, int blocks) {
        long rows = dB.dim(0), cols = dB.dim(1), rb = rows / blocks, cb = cols / blocks;
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++)
                if (i / rb != j / cb) dB.setFloat(i * cols + j, 0f);
    }

    @Override
    public void close() {
        gradScope.close();
    }
}
