package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.backend.PackedWeight;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A BERT encoder (post-LN, exact GELU) with its weights. Parameters carry Hugging Face names
 * without the "bert." prefix. Each layer's query, key and value weights are views into one fused
 * [3A, C] tensor (and their biases into one [3A]), so attention runs one GEMM for all three and the
 * model still reads and writes the standard names.
 */
public final class BertModel implements AutoCloseable {
    private final BertConfig config;
    private final TensorScope scope;
    private final Map<String, Tensor> params = new LinkedHashMap<>();
    private final Tensor[] qkvWeight, qkvBias;
    /** Per layer {QKV, attention output, FFN in, FFN out} packed for one backend, or null. */
    private PackedWeight[][] packed;
    private String packedFor;

    public BertModel(BertConfig config) {
        this.config = config;
        this.scope = new TensorScope("bert weights", MemoryCategory.WEIGHTS);
        int c = config.hidden();
        param("embeddings.word_embeddings.weight", config.vocabSize(), c);
        param("embeddings.position_embeddings.weight", config.maxPositions(), c);
        if (config.typeVocabSize() > 0) param("embeddings.token_type_embeddings.weight", config.typeVocabSize(), c);
        param("embeddings.LayerNorm.weight", c);
        param("embeddings.LayerNorm.bias", c);
        qkvWeight = new Tensor[config.layers()];
        qkvBias = new Tensor[config.layers()];
        for (int l = 0; l < config.layers(); l++) {
            String p = "encoder.layer." + l + ".";
            int a = config.attentionWidth(l), f = config.ffn(l);
            qkvWeight[l] = scope.allocate(DType.F32, 3L * a, c);
            qkvBias[l] = scope.allocate(DType.F32, 3L * a);
            String[] qkv = {"query", "key", "value"};
            for (int i = 0; i < 3; i++) {
                params.put(p + "attention.self." + qkv[i] + ".weight", qkvWeight[l].rows((long) i * a, (long) (i + 1) * a));
                params.put(p + "attention.self." + qkv[i] + ".bias", qkvBias[l].rows((long) i * a, (long) (i + 1) * a));
            }
            param(p + "attention.output.dense.weight", c, a);
            param(p + "attention.output.dense.bias", c);
            param(p + "attention.output.LayerNorm.weight", c);
            param(p + "attention.output.LayerNorm.bias", c);
            param(p + "intermediate.dense.weight", f, c);
            param(p + "intermediate.dense.bias", f);
            param(p + "output.dense.weight", c, f);
            param(p + "output.dense.bias", c);
            param(p + "output.LayerNorm.weight", c);
            param(p + "output.LayerNorm.bias", c);
        }
    }

    private void param(String name, long... shape) {
        params.put(name, scope.allocate(DType.F32, shape));
    }

    public BertConfig config() {
        return config;
    }

    /** The fused [3A, C] query/key/value weight of a layer (the q/k/v parameters are its row views). */
    Tensor qkvWeight(int layer) {
        return qkvWeight[layer];
    }

    Tensor qkvBias(int layer) {
        return qkvBias[layer];
    }

    /** Every parameter by name, in a fixed order (embeddings, then layer by layer). */
    public Map<String, Tensor> parameters() {
        return Collections.unmodifiableMap(params);
    }

    public Tensor parameter(String name) {
        Tensor t = params.get(name);
        if (t == null) throw new IllegalArgumentException("BERT model has no parameter '" + name + "'");
        return t;
    }

    public long parameterBytes() {
        return scope.bytes();
    }

    /**
     * Packs every linear weight once into the backend's GEMM layout, so inference skips per-call
     * packing (it matters at small batch). Costs a second copy of the linear weights (counted as
     * weights); the unpacked parameters stay, for saving and training.
     */
    public synchronized void packForInference(Backend be) {
        if (be.name().equals(packedFor)) return;
        PackedWeight[][] p = new PackedWeight[config.layers()][];
        for (int l = 0; l < config.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            p[l] = new PackedWeight[] {be.packLinearWeight(qkvWeight[l], scope),
                    be.packLinearWeight(params.get(n + "attention.output.dense.weight"), scope),
                    be.packLinearWeight(params.get(n + "intermediate.dense.weight"), scope),
                    be.packLinearWeight(params.get(n + "output.dense.weight"), scope)};
        }
        packed = p;
        packedFor = be.name();
    }

    private void linear(Backend be, Tensor y, Tensor x, int layer, int which, Tensor w, Tensor bias) {
        if (packed != null && be.name().equals(packedFor)) be.linearForward(y, x, packed[layer][which], bias);
        else be.linearForward(y, x, w, bias);
    }

    /**
     * last_hidden_state [B, S, C] for token ids [B, S] (i32), token types (null: all 0) and an
     * attention mask (1 real, 0 padding; null: no padding). Activations come from the step arena.
     */
    public Tensor forward(Backend be, StepArena arena, Tensor ids, Tensor typeIds, Tensor mask) {
        long b = ids.dim(0), s = ids.dim(1);
        int c = config.hidden();
        if (s > config.maxPositions())
            throw new IllegalArgumentException("sequence of " + s + " tokens is longer than the model's " + config.maxPositions()
                    + " positions");
        Tensor emb = arena.allocate(DType.F32, b, s, c);
        be.embeddingForward(emb, ids, null, typeIds, params.get("embeddings.word_embeddings.weight"),
                params.get("embeddings.position_embeddings.weight"), params.get("embeddings.token_type_embeddings.weight"));
        Tensor mean = arena.allocate(DType.F32, b * s), rstd = arena.allocate(DType.F32, b * s);
        Tensor h = arena.allocate(DType.F32, b, s, c);
        be.layernormForward(h, mean, rstd, null, emb, null, params.get("embeddings.LayerNorm.weight"),
                params.get("embeddings.LayerNorm.bias"), config.layerNormEps());
        for (int l = 0; l < config.layers(); l++) h = layerForward(be, arena, l, h, mask, mean, rstd);
        return h;
    }

    private Tensor layerForward(Backend be, StepArena arena, int l, Tensor h, Tensor mask, Tensor mean, Tensor rstd) {
        String p = "encoder.layer." + l + ".";
        long b = h.dim(0), s = h.dim(1);
        int c = config.hidden(), a = config.attentionWidth(l), f = config.ffn(l);
        float eps = config.layerNormEps();
        Tensor qkv = arena.allocate(DType.F32, b, s, 3L * a);
        linear(be, qkv, h, l, 0, qkvWeight[l], qkvBias[l]);
        Tensor ctx = arena.allocate(DType.F32, b, s, a);
        be.attentionForward(ctx, null, qkv, mask, config.heads(l), (float) (1 / Math.sqrt(config.headDim())));
        Tensor att = arena.allocate(DType.F32, b, s, c);
        linear(be, att, ctx, l, 1, params.get(p + "attention.output.dense.weight"), params.get(p + "attention.output.dense.bias"));
        Tensor h1 = arena.allocate(DType.F32, b, s, c);
        be.layernormForward(h1, mean, rstd, null, att, h, params.get(p + "attention.output.LayerNorm.weight"),
                params.get(p + "attention.output.LayerNorm.bias"), eps);
        Tensor inter = arena.allocate(DType.F32, b, s, f);
        linear(be, inter, h1, l, 2, params.get(p + "intermediate.dense.weight"), null);
        be.biasGeluForward(inter, inter, params.get(p + "intermediate.dense.bias"));
        Tensor out = arena.allocate(DType.F32, b, s, c);
        linear(be, out, inter, l, 3, params.get(p + "output.dense.weight"), params.get(p + "output.dense.bias"));
        Tensor h2 = arena.allocate(DType.F32, b, s, c);
        be.layernormForward(h2, mean, rstd, null, out, h1, params.get(p + "output.LayerNorm.weight"),
                params.get(p + "output.LayerNorm.bias"), eps);
        return h2;
    }

    @Override
    public void close() {
        scope.close();
    }
}
