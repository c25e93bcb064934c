package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.Dropout;
import dev.topa.backend.LinearWeight;
import dev.topa.backend.Op;
import dev.topa.backend.PrecisionChoice;
import dev.topa.model.BertNames.Module;
import dev.topa.model.BertNames.Slot;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * A BERT encoder (post-LN, exact GELU) with its weights, and its forward pass -- the one forward
 * pass: inference runs it as it is, training ({@link BertTraining}) runs it with a {@link Tape}
 * that keeps what backward needs and draws the dropout masks. Parameters carry Hugging Face names
 * ({@link BertNames}). Each layer's query, key and value weights are views into one fused [3A, C]
 * tensor (and their biases into one [3A]), so attention runs one product for all three and the
 * model still reads and writes the standard names.
 */
public final class BertModel implements AutoCloseable {
    /** A LayerNorm's parameters under its module name. */
    record Norm(String name, Tensor gamma, Tensor beta) {}

    /** One encoder layer: its four linear slots in {@link Slot} order and its two LayerNorms. */
    record Layer(Linear[] slots, Norm attentionNorm, Norm outputNorm) {
        Linear slot(Slot s) {
            return slots[s.ordinal()];
        }
    }

    /**
     * One task's trained tensors apart from the backbone they were trained on: LoRA adapters per layer
     * and slot (null where a slot has none) and the backbone parameters it replaces (the LayerNorms a
     * LoRA recipe trains), by name. {@link #forward(Backend, StepArena, Tensor, Tensor, Tensor, AdapterSet)}
     * runs the backbone with them, so one backbone serves many tasks with the adapters kept apart.
     */
    public record AdapterSet(Adapter[][] adapters, Map<String, Tensor> replaced) {}

    private final BertConfig config;
    private final TensorScope scope;
    private final Map<String, Tensor> params = new LinkedHashMap<>();
    private final Tensor words, positions, types;
    private final Norm embeddingsNorm;
    private final Layer[] layers;
    private LoraConfig lora;
    /**
     * A copy compacted for inference ({@link #compactForInference}): it infers, and refuses what needs
     * the whole model. Its word table's row of each token id of the whole vocabulary (-1: not kept);
     * null for a whole model.
     */
    private final int[] tokenRows;

    public BertModel(BertConfig config) {
        this(config, new TensorScope("bert weights", MemoryCategory.WEIGHTS));
    }

    /** A model whose weights (contents unset) live in memory from weights, which the model closes. */
    public BertModel(BertConfig config, TensorScope weights) {
        this(config, weights, null, null, null);
    }

    /**
     * from not null: a copy compacted for inference with tokenRows as its token map; with packer each
     * linear slot holds only its weight (read from from) packed in bf16 for packer, no fp32 W.
     */
    private BertModel(BertConfig config, TensorScope weights, int[] tokenRows, WeightReader from, Backend packer) {
        this.config = config;
        this.scope = weights;
        this.tokenRows = tokenRows;
        int c = config.hidden();
        words = param(BertNames.WORD_EMBEDDINGS, config.vocabSize(), c);
        positions = param(BertNames.POSITION_EMBEDDINGS, config.maxPositions(), c);
        types = config.typeVocabSize() > 0 ? param(BertNames.TYPE_EMBEDDINGS, config.typeVocabSize(), c) : null;
        embeddingsNorm = norm(BertNames.EMBEDDINGS_NORM, c);
        layers = new Layer[config.layers()];
        for (int l = 0; l < config.layers(); l++) {
            int a = config.attentionWidth(l), f = config.ffn(l);
            Tensor qkvW = packer == null ? scope.allocate(DType.F32, 3L * a, c) : null, qkvB = scope.allocate(DType.F32, 3L * a);
            for (int i = 0; i < 3; i++) {
                if (qkvW != null) params.put(BertNames.of(l, BertNames.QKV_PARTS[i], BertNames.WEIGHT), qkvW.rows((long) i * a, (long) (i + 1) * a));
                params.put(BertNames.of(l, BertNames.QKV_PARTS[i], BertNames.BIAS), qkvB.rows((long) i * a, (long) (i + 1) * a));
            }
            Linear[] slots = new Linear[Slot.values().length];
            slots[Slot.QKV.ordinal()] = packer != null ? packedOnly(packer, l, Slot.QKV, 3L * a, c, qkvB, from)
                    : new Linear(BertNames.slot(l, Slot.QKV), qkvW, qkvB, scope);
            slots[Slot.ATTENTION_OUTPUT.ordinal()] = linear(l, Slot.ATTENTION_OUTPUT, c, a, from, packer);
            Norm attNorm = norm(BertNames.module(l, Module.ATTENTION_NORM), c);
            slots[Slot.FFN_IN.ordinal()] = linear(l, Slot.FFN_IN, f, c, from, packer);
            slots[Slot.FFN_OUT.ordinal()] = linear(l, Slot.FFN_OUT, c, f, from, packer);
            layers[l] = new Layer(slots, attNorm, norm(BertNames.module(l, Module.OUTPUT_NORM), c));
        }
    }

    private Tensor param(String name, long... shape) {
        Tensor t = scope.allocate(DType.F32, shape);
        params.put(name, t);
        return t;
    }

    private Norm norm(String module, int c) {
        return new Norm(module, param(module + "." + BertNames.WEIGHT, c), param(module + "." + BertNames.BIAS, c));
    }

    private Linear linear(int l, Slot slot, long out, long in, WeightReader from, Backend packer) {
        String n = BertNames.slot(l, slot);
        if (packer != null) return packedOnly(packer, l, slot, out, in, param(n + "." + BertNames.BIAS, out), from);
        return new Linear(n, param(n + "." + BertNames.WEIGHT, out, in), param(n + "." + BertNames.BIAS, out), scope);
    }

    /** Slot l's [out, in] weight read from from into a passing fp32 buffer, kept only as its bf16 pack for packer. */
    private Linear packedOnly(Backend packer, int l, Slot slot, long out, long in, Tensor bias, WeightReader from) {
        if (out == 0 || in == 0) return Linear.packedOnly(packer, BertNames.slot(l, slot), null, out, in, bias, scope); // a pruned-away slot
        try (TensorScope fp32 = new TensorScope("fp32 weight being packed", MemoryCategory.WORKSPACE)) {
            Tensor w = fp32.allocate(DType.F32, out, in);
            if (slot == Slot.QKV) { // the fused slot's three parts, each under its own name
                long a = out / 3;
                for (int i = 0; i < 3; i++) from.read(BertNames.of(l, BertNames.QKV_PARTS[i], BertNames.WEIGHT), w.rows(i * a, (i + 1) * a));
            } else {
                from.read(BertNames.slot(l, slot) + "." + BertNames.WEIGHT, w);
            }
            return Linear.packedOnly(packer, BertNames.slot(l, slot), w, out, in, bias, scope);
        }
    }

    /**
     * Where a copy compacted for inference reads a whole model's parameters, by their Hugging Face
     * names: that model's tensors ({@link #compactForInference(Backend, boolean, int[])}), or its files
     * (so the whole model is never in memory at once).
     */
    public interface WeightReader {
        /** Parameter name into into (its shape). */
        void read(String name, Tensor into);

        /** The given rows of parameter name, in order, into into [rows.length, ...]. */
        void readRows(String name, int[] rows, Tensor into);
    }

    /**
     * A copy of this dense model for inference on the host in the least memory its products allow,
     * for a model that runs beside another (a teacher beside its student): the word embeddings only
     * of tokens, and with bf16 each linear weight only as its bf16 inference pack, no fp32 copy (see
     * {@link #compactForInference(BertConfig, Backend, boolean, int[], WeightReader)}). Its inference
     * is this model's with the same packs, bit for bit. The copy is closed separately.
     */
    public BertModel compactForInference(Backend be, boolean bf16, int[] tokens) {
        requireWhole("compacting it again");
        if (!device().isHostAccessible()) throw new IllegalArgumentException("a model is compacted for inference on the host, not from " + device());
        if (lora != null || blockSparse()) throw new IllegalStateException("only a dense model without adapters is compacted for inference");
        return compactForInference(config, be, bf16, tokens, new WeightReader() {
            @Override
            public void read(String name, Tensor into) {
                into.copyFrom(params.get(name));
            }

            @Override
            public void readRows(String name, int[] rows, Tensor into) {
                Tensor t = params.get(name);
                for (int i = 0; i < rows.length; i++) into.rows(i, i + 1).copyFrom(t.rows(rows[i], rows[i] + 1));
            }
        });
    }

    /**
     * The dense model of config whose parameters from reads, compacted for inference on the host:
     * the word embeddings only of tokens (ascending, distinct ids of config's vocabulary), and with
     * bf16 each linear weight only as its bf16 inference pack, each read into a passing fp32 buffer
     * and packed, so neither the whole word table nor the fp32 linear weights are ever held. It takes
     * ids of the whole vocabulary (and refuses one of another token); it cannot train, take adapters
     * or masks, merge, be copied or saved (those refuse).
     */
    public static BertModel compactForInference(BertConfig config, Backend be, boolean bf16, int[] tokens, WeightReader from) {
        if (!be.device().isHostAccessible()) throw new IllegalArgumentException("a model is compacted for inference on the host, not on " + be.device());
        if (bf16) be.require(List.of(Op.BF16_WEIGHTS), "bf16 inference");
        if (tokens.length == 0) throw new IllegalArgumentException("a model compacted for inference needs at least one token");
        for (int i = 0; i < tokens.length; i++)
            if (tokens[i] < 0 || tokens[i] >= config.vocabSize() || i > 0 && tokens[i] <= tokens[i - 1])
                throw new IllegalArgumentException("token id " + tokens[i] + " at " + i + ": tokens are distinct ids of the vocabulary of "
                        + config.vocabSize() + ", ascending");
        int[] rows = new int[tokens[tokens.length - 1] + 1];
        Arrays.fill(rows, -1);
        for (int i = 0; i < tokens.length; i++) rows[tokens[i]] = i;
        BertConfig cc = new BertConfig(tokens.length, config.hidden(), config.maxPositions(), config.typeVocabSize(), config.headDim(),
                config.heads(), config.ffn(), config.layerNormEps());
        TensorScope weights = new TensorScope("bert weights compacted for inference", MemoryCategory.WEIGHTS);
        BertModel m;
        try {
            m = new BertModel(cc, weights, rows, from, bf16 ? be : null);
        } catch (RuntimeException | Error e) {
            weights.close();
            throw e;
        }
        try {
            from.readRows(BertNames.WORD_EMBEDDINGS, tokens, m.words);
            for (var e : m.params.entrySet())
                if (!e.getKey().equals(BertNames.WORD_EMBEDDINGS)) from.read(e.getKey(), e.getValue());
        } catch (RuntimeException | Error e) {
            m.close();
            throw e;
        }
        return m;
    }

    /** ids of the whole vocabulary as rows of a compacted model's word table (from arena), each checked to be one it kept. */
    private Tensor rowsOfTokens(StepArena arena, Tensor ids) {
        int[] v = new int[Math.toIntExact(ids.numel())];
        for (int i = 0; i < v.length; i++) {
            int id = ids.getInt(i);
            v[i] = id >= 0 && id < tokenRows.length ? tokenRows[id] : -1;
            if (v[i] < 0) throw new IllegalArgumentException("token id " + id + ": this model was compacted for inference with the word"
                    + " embeddings of " + config.vocabSize() + " tokens, not this one's");
        }
        return arena.allocate(DType.I32, ids.shape()).copyFrom(v);
    }

    /** Refuses what needs the whole model (its parameters, training, packing) on a copy compacted for inference. */
    void requireWhole(String what) {
        if (tokenRows != null) throw new IllegalStateException(what + ": this model is a copy compacted for inference (word embeddings of some"
                + " tokens only, linear weights possibly as bf16 packs only)");
    }

    public BertConfig config() {
        return config;
    }

    /** Where the weights live. */
    public Device device() {
        return scope.device();
    }

    Layer layer(int l) {
        return layers[l];
    }

    Norm embeddingsNorm() {
        return embeddingsNorm;
    }

    /** Every parameter by name, in a fixed order (embeddings, then layer by layer, then adapters). */
    public Map<String, Tensor> parameters() {
        requireWhole("its parameters");
        return Collections.unmodifiableMap(params);
    }

    public Tensor parameter(String name) {
        requireWhole("parameter " + name);
        Tensor t = params.get(name);
        if (t == null) throw new IllegalArgumentException("BERT model has no parameter '" + name + "'");
        return t;
    }

    /** The shapes of one forward's linear products over rows tokens, layer by layer (what a precision is measured on). */
    public static List<PrecisionChoice.Shape> linearShapes(BertConfig config, long rows) {
        List<PrecisionChoice.Shape> out = new ArrayList<>();
        long c = config.hidden();
        for (int l = 0; l < config.layers(); l++) {
            long a = config.attentionWidth(l), f = config.ffn(l);
            out.add(new PrecisionChoice.Shape(rows, 3 * a, c));
            out.add(new PrecisionChoice.Shape(rows, c, a));
            out.add(new PrecisionChoice.Shape(rows, f, c));
            out.add(new PrecisionChoice.Shape(rows, c, f));
        }
        return out;
    }

    /**
     * Host token ids [B, S] (and types, or null) against this model's tables: what a device does not
     * check (it gives an out-of-range token a NaN row rather than read the ids back), checked before
     * the upload with the sequence and position named.
     */
    public void checkTokens(Tensor ids, Tensor types) {
        long s = ids.dim(ids.rank() - 1);
        for (long i = 0; i < ids.numel(); i++) {
            int id = ids.getInt(i), ty = types == null ? 0 : types.getInt(i);
            boolean known = tokenRows == null ? id >= 0 && id < config.vocabSize() : id >= 0 && id < tokenRows.length && tokenRows[id] >= 0;
            if (!known || ty < 0 || ty >= Math.max(1, config.typeVocabSize()))
                throw new IllegalArgumentException("token " + i % s + " of sequence " + i / s + " has id " + id + " (" + (tokenRows == null
                        ? "vocabulary " + config.vocabSize() : "compacted for inference with the word embeddings of " + config.vocabSize() + " tokens")
                        + ") or type " + ty + " (types " + config.typeVocabSize() + ") outside the model's tables");
        }
    }

    public long parameterBytes() {
        return scope.bytes();
    }

    // ================================================================ LoRA

    /**
     * Attaches LoRA adapters (category adapters) to the targeted linears of every layer: A from
     * U(-1/sqrt(in), 1/sqrt(in)) as PEFT's kaiming-uniform(a = sqrt 5), B zero, so the model's
     * output is unchanged until B trains. Adapter tensors join {@link #parameters()} as
     * "<module>.lora_A" / ".lora_B" (the fused QKV slot as "attention.self.qkv.lora_*").
     */
    public void addLora(LoraConfig lora, long seed) {
        requireWhole("adding adapters");
        if (this.lora != null) throw new IllegalStateException("this model already has LoRA adapters");
        SplittableRandom rnd = new SplittableRandom(seed);
        int c = config.hidden();
        if (!lora.layerRanks().isEmpty() && lora.layerRanks().size() != config.layers())
            throw new IllegalArgumentException("LoRA layer ranks " + lora.layerRanks() + " do not cover the model's " + config.layers()
                    + " layers");
        LoraConfig.Target[] slotTargets = {null, LoraConfig.Target.ATTENTION_OUTPUT, LoraConfig.Target.FFN_IN, LoraConfig.Target.FFN_OUT};
        for (int l = 0; l < config.layers(); l++) {
            int a = config.attentionWidth(l), r = lora.rank(l);
            LoraConfig.Target[] qkv = {LoraConfig.Target.QUERY, LoraConfig.Target.KEY, LoraConfig.Target.VALUE};
            boolean[] on = new boolean[3];
            for (int i = 0; i < 3; i++) on[i] = lora.targets().contains(qkv[i]);
            Linear q = layers[l].slot(Slot.QKV);
            if ((on[0] || on[1] || on[2]) && a > 0) { // a layer pruned to no heads has no QKV projection to adapt
                Tensor ta = scope.allocate(MemoryCategory.ADAPTERS, DType.F32, 3L * r, c).fill(0f);
                for (int i = 0; i < 3; i++) if (on[i]) uniform(ta.rows((long) i * r, (long) (i + 1) * r), c, rnd);
                q.adapter = new Adapter(ta, scope.allocate(MemoryCategory.ADAPTERS, DType.F32, 3L * a, 3L * r).fill(0f), lora.scale(l), true);
            }
            for (Slot slot : new Slot[] {Slot.ATTENTION_OUTPUT, Slot.FFN_IN, Slot.FFN_OUT}) {
                Linear lin = layers[l].slot(slot);
                long out = lin.weight.dim(0), in = lin.weight.dim(1);
                if (!lora.targets().contains(slotTargets[slot.ordinal()]) || out == 0 || in == 0) continue;
                Tensor ta = scope.allocate(MemoryCategory.ADAPTERS, DType.F32, r, in);
                uniform(ta, (int) in, rnd);
                lin.adapter = new Adapter(ta, scope.allocate(MemoryCategory.ADAPTERS, DType.F32, out, r).fill(0f), lora.scale(l), false);
            }
            for (Linear lin : layers[l].slots()) if (lin.adapter != null) nameAdapter(lin);
        }
        this.lora = lora;
    }

    private void nameAdapter(Linear lin) {
        params.put(lin.name + "." + BertNames.LORA_A, lin.adapter.a());
        params.put(lin.name + "." + BertNames.LORA_B, lin.adapter.b());
    }

    /** The adapters' configuration, or null without adapters. */
    public LoraConfig loraConfig() {
        return lora;
    }

    /** Dropout on the adapters' input during training (0 without adapters). */
    public double loraDropout() {
        return lora == null ? 0 : lora.dropout();
    }

    private static void uniform(Tensor t, int fanIn, SplittableRandom rnd) {
        float[] v = new float[(int) t.numel()];
        double bound = 1 / Math.sqrt(fanIn);
        for (int i = 0; i < v.length; i++) v[i] = (float) ((2 * rnd.nextDouble() - 1) * bound);
        t.copyFrom(v);
    }

    /** The adapter on a layer's slot, or null. */
    public Adapter adapter(int layer, Slot slot) {
        return layers[layer].slot(slot).adapter;
    }

    /** This model's adapted modules and their scales (for saving an adapter apart from the merged model). */
    public Map<String, Float> adapterScales() {
        Map<String, Float> out = new LinkedHashMap<>();
        for (Layer layer : layers)
            for (Linear lin : layer.slots()) if (lin.adapter != null) out.put(lin.name, lin.adapter.scale());
        return out;
    }

    /**
     * The parameters with every LoRA adapter merged, W' = W + scale B A (in tensors from scope;
     * unadapted parameters are the model's own), under the standard names and without adapter
     * tensors: a plain BERT that needs no adapter code. The fused QKV adapter merges in one GEMM
     * (its block-diagonal B keeps q, k and v apart); a block-masked weight merges inside its mask.
     */
    public Map<String, Tensor> mergedParameters(Backend be, TensorScope scope) {
        requireWhole("merging");
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : params.entrySet())
            if (!BertNames.isAdapter(e.getKey())) out.put(e.getKey(), e.getValue());
        for (int l = 0; l < layers.length; l++)
            for (Slot slot : Slot.values()) {
                Linear lin = layers[l].slot(slot);
                Adapter ad = lin.adapter;
                if (ad == null) continue;
                Tensor merged = scope.allocate(DType.F32, lin.weight.shape()).copyFrom(lin.weight);
                be.gemm(false, false, ad.scale(), ad.b(), ad.a(), 1f, merged, null);
                if (lin.blockMask != null) zeroOutside(merged, lin.blockMask); // merged inside the mask: the sparsity survives
                if (slot == Slot.QKV) {
                    int a = config.attentionWidth(l);
                    for (int i = 0; i < 3; i++)
                        out.put(BertNames.of(l, BertNames.QKV_PARTS[i], BertNames.WEIGHT), merged.rows((long) i * a, (long) (i + 1) * a));
                } else {
                    out.put(lin.name + "." + BertNames.WEIGHT, merged);
                }
            }
        return out;
    }

    /**
     * Elements of a parameter that are parameters: the fused QKV adapter's B stores its three
     * diagonal blocks in a 3x3 grid, so only a third of it counts.
     */
    public static long parameterCount(String name, Tensor t) {
        return name.endsWith(BertNames.Module.QKV.path() + "." + BertNames.LORA_B) ? t.numel() / 3 : t.numel();
    }

    /**
     * A task's adapter set for this backbone from named tensors on this model's device: LoRA pairs
     * ("<module>.lora_A" / ".lora_B", the fused QKV one as "attention.self.qkv.lora_*") with their
     * scales, and replacements of backbone parameters other than linear weights. Every shape is
     * checked against this backbone, so an adapter trained on another one is refused with the tensor named.
     */
    public AdapterSet adapterSet(Map<String, Tensor> tensors, Map<String, Float> scales) {
        requireWhole("an adapter set");
        Adapter[][] ad = new Adapter[config.layers()][Slot.values().length];
        Map<String, Tensor> replaced = new LinkedHashMap<>();
        for (var e : tensors.entrySet()) {
            String n = e.getKey();
            if (n.endsWith("." + BertNames.LORA_B)) continue;
            if (!n.endsWith("." + BertNames.LORA_A)) {
                Tensor own = params.get(n);
                if (own == null) throw new IllegalArgumentException("adapter tensor " + n + ": the backbone has no such parameter");
                if (!Arrays.equals(own.shape(), e.getValue().shape()))
                    throw new IllegalArgumentException("adapter tensor " + n + " " + Arrays.toString(e.getValue().shape())
                            + " does not fit the backbone's " + Arrays.toString(own.shape()));
                if (isLinearWeight(n))
                    throw new IllegalArgumentException("adapter tensor " + n + " replaces a linear weight: serve the merged model instead");
                replaced.put(n, e.getValue());
                continue;
            }
            String module = n.substring(0, n.length() - ("." + BertNames.LORA_A).length());
            Linear lin = null;
            int layer = -1;
            for (int l = 0; l < layers.length && lin == null; l++)
                for (Linear s : layers[l].slots())
                    if (s.name.equals(module)) {
                        lin = s;
                        layer = l;
                    }
            if (lin == null) throw new IllegalArgumentException("adapter tensor " + n + ": no such linear layer in the backbone");
            Tensor a = e.getValue(), b = tensors.get(module + "." + BertNames.LORA_B);
            Float scale = scales.get(module);
            if (b == null || scale == null) throw new IllegalArgumentException("adapter " + module + ": lora_B or its scale is missing");
            Tensor w = lin.weight;
            if (a.rank() != 2 || b.rank() != 2 || a.dim(1) != w.dim(1) || b.dim(0) != w.dim(0) || b.dim(1) != a.dim(0))
                throw new IllegalArgumentException("adapter " + module + ": A " + Arrays.toString(a.shape()) + " and B "
                        + Arrays.toString(b.shape()) + " do not fit the backbone's weight " + Arrays.toString(w.shape()));
            Slot slot = Slot.values()[Arrays.asList(layers[layer].slots()).indexOf(lin)];
            ad[layer][slot.ordinal()] = new Adapter(a, b, scale, slot == Slot.QKV);
        }
        return new AdapterSet(ad, replaced);
    }

    private boolean isLinearWeight(String name) {
        BertNames.Parsed p = BertNames.parse(name);
        return p != null && p.tensor().equals(BertNames.WEIGHT) && p.module() != Module.ATTENTION_NORM && p.module() != Module.OUTPUT_NORM;
    }

    /**
     * A short fingerprint of the backbone's weights (shapes and a strided sample of values; not the
     * adapters nor the LayerNorms, which an adapter set may replace): an adapter records the one it
     * was trained on, and a server refuses a mismatch.
     */
    public String fingerprint() {
        requireWhole("its fingerprint");
        long h = 1125899906842597L;
        for (var e : params.entrySet()) // not what an adapter set may replace
            if (!BertNames.isAdapter(e.getKey()) && !BertNames.isNorm(e.getKey())) h = sampleHash(h, e.getKey(), e.getValue(), 4099);
        return Long.toHexString(h);
    }

    /** h extended by a named tensor: its name, shape and every stride-th value (a cheap fingerprint, not a checksum). */
    public static long sampleHash(long h, String name, Tensor t, long stride) {
        h = 31 * h + name.hashCode();
        for (long d : t.shape()) h = 31 * h + d;
        for (long i = 0; i < t.numel(); i += stride) h = 31 * h + Float.floatToIntBits(t.getFloat(i));
        return h;
    }

    // ================================================================ devices

    /**
     * This model's weights, LoRA adapters and block masks included, copied to the backend's device
     * (the copy is closed separately): inference there, or training there with
     * {@link #copyParametersTo} to bring trained values back. Packed forms do not travel: they are
     * made for the device that runs them.
     */
    public BertModel copyTo(Backend be) {
        requireWhole("copying");
        BertModel m = new BertModel(config, be.scope("bert weights on " + be.device(), MemoryCategory.WEIGHTS));
        try {
            for (var e : params.entrySet()) {
                Tensor t = m.params.get(e.getKey());
                if (t != null) be.copy(t, e.getValue()); // adapter tensors: made below
            }
            for (int l = 0; l < layers.length; l++)
                for (Slot slot : Slot.values()) {
                    Linear from = layers[l].slot(slot), to = m.layers[l].slot(slot);
                    to.blockMask = from.blockMask;
                    to.denseForm = from.denseForm;
                    if (from.adapter == null) continue;
                    Adapter a = from.adapter;
                    to.adapter = new Adapter(be.copyOf(a.a(), m.scope), be.copyOf(a.b(), m.scope), a.scale(), a.blockDiagonal());
                    m.nameAdapter(to);
                }
            m.lora = lora;
        } catch (RuntimeException | Error e) {
            m.close();
            throw e;
        }
        return m;
    }

    /** Copies the values of the named parameters into another model of the same shape (on any device the backend reaches). */
    public void copyParametersTo(BertModel other, Backend be, Collection<String> names) {
        requireWhole("copying parameters");
        for (String n : names) be.copy(other.parameter(n), parameter(n));
    }

    // ================================================================ packed forms

    /**
     * Packs every linear weight once for be's inference products -- bf16 W^T (bf16: activations
     * rounded on the way in, fp32 sums; ~1e-2 relative change of the outputs for up to twice the
     * speed where bf16 products run in hardware) or fp32 in the GEMM's panel layout (no per-call
     * packing: it matters at small batch) -- and block-pruned ones as their kept blocks. Costs a
     * packed copy of the linear weights (category weights); the fp32 parameters stay, for saving and
     * training. An unmerged adapter's rank-r term is added in the same product.
     */
    public synchronized void packForInference(Backend be, boolean bf16) {
        requireWhole("packing");
        if (bf16) be.require(List.of(Op.BF16_WEIGHTS), "bf16 inference");
        for (Layer layer : layers)
            for (Linear lin : layer.slots()) {
                lin.packForInference(be, bf16);
                if (lin.blockMask != null) lin.packBlocks(be);
            }
    }

    /**
     * The linear weights packed for be's inference from alloc, a scope the caller owns: a pass of
     * inference over a model that goes on to train or be pruned (a teacher's), whose packs are then
     * dropped ({@link #dropInferencePacks}) and freed with alloc -- no second fp32 copy of the model.
     */
    public synchronized void packForInference(Backend be, boolean bf16, TensorAllocator alloc) {
        requireWhole("packing");
        if (bf16) be.require(List.of(Op.BF16_WEIGHTS), "bf16 inference");
        for (Layer layer : layers) for (Linear lin : layer.slots()) lin.packForInference(be, bf16, alloc);
    }

    /** Forgets every inference pack (after {@link #packForInference(Backend, boolean, TensorAllocator)}, before its scope closes). */
    public synchronized void dropInferencePacks() {
        requireWhole("dropping its packs");
        for (Layer layer : layers) for (Linear lin : layer.slots()) lin.dropInference();
    }

    /**
     * Rounds every frozen linear weight to bf16 and packs it twice (for y = x W^T and for dX = dY W), so
     * training with a frozen backbone runs its big products in bf16 with fp32 sums. Costs half the
     * linear weights' fp32 bytes per packing (category weights). The weights must stay frozen: packs are
     * not refreshed.
     */
    public synchronized void packForTraining(Backend be) {
        requireWhole("packing for training");
        be.require(List.of(Op.BF16_WEIGHTS), "a bf16 frozen base");
        for (Layer layer : layers) for (Linear lin : layer.slots()) lin.packForTraining(be);
    }

    /** The weight of a linear slot (the fused [3A, C] one for QKV). */
    public Tensor slotWeight(int layer, Slot slot) {
        requireWhole("a slot's weight");
        return layers[layer].slot(slot).weight;
    }

    /** The form a slot's inference products run in on be (for reports and checks). */
    public LinearWeight inferenceForm(Backend be, int layer, Slot slot) {
        Linear lin = layers[layer].slot(slot);
        return lin.inference(be, lin.adapter != null);
    }

    // ================================================================ block masks

    /**
     * Makes linear weights block-sparse: masks[layer][slot] is [out/32][in/32] (true: the 32 x 32
     * block stays; null: the slot stays dense; slots in {@link Slot} order, QKV being the fused [3A, C]
     * weight). Weights outside the mask are set to zero, so the dense path computes the same thing
     * (the test reference); the block-sparse form stores and multiplies the kept blocks only.
     * Merging keeps the mask.
     */
    public synchronized void setBlockMasks(boolean[][][][] masks) {
        requireWhole("block masks");
        if (masks.length != config.layers())
            throw new IllegalArgumentException("block masks cover " + masks.length + " layers, the model has " + config.layers());
        int b = BlockSparseWeight.BLOCK;
        for (int l = 0; l < masks.length; l++) {
            if (masks[l].length != Slot.values().length)
                throw new IllegalArgumentException("layer " + l + ": block masks need 4 slots, got " + masks[l].length);
            for (Slot slot : Slot.values()) {
                boolean[][] m = masks[l][slot.ordinal()];
                if (m == null) continue;
                Tensor w = layers[l].slot(slot).weight;
                String where = BertNames.slot(l, slot) + ".weight " + Arrays.toString(w.shape());
                if (w.dim(0) % b != 0 || w.dim(1) % b != 0)
                    throw new IllegalArgumentException(where + ": block pruning needs both dimensions to be multiples of " + b);
                if (m.length != w.dim(0) / b) throw new IllegalArgumentException(where + ": block mask has " + m.length + " block-rows");
                for (boolean[] row : m)
                    if (row.length != w.dim(1) / b) throw new IllegalArgumentException(where + ": block mask row has " + row.length + " blocks");
            }
        }
        for (int l = 0; l < masks.length; l++)
            for (Slot slot : Slot.values()) {
                Linear lin = layers[l].slot(slot);
                lin.blockMask = masks[l][slot.ordinal()];
                lin.denseForm = false;
                lin.unpack();
                if (lin.blockMask != null) zeroOutside(lin.weight, lin.blockMask);
            }
    }

    /** The kept blocks of a slot's weight, or null when it is dense. */
    public boolean[][] blockMask(int layer, Slot slot) {
        return layers[layer].slot(slot).blockMask;
    }

    public boolean blockSparse() {
        for (Layer layer : layers) for (Linear lin : layer.slots()) if (lin.blockMask != null) return true;
        return false;
    }

    private static void zeroOutside(Tensor w, boolean[][] mask) {
        int b = BlockSparseWeight.BLOCK;
        long cols = w.dim(1);
        for (int r = 0; r < mask.length; r++)
            for (int c = 0; c < mask[r].length; c++)
                if (!mask[r][c])
                    for (long i = (long) r * b; i < (long) (r + 1) * b; i++) w.data().asSlice((i * cols + (long) c * b) * 4, b * 4L).fill((byte) 0);
    }

    /**
     * Which block-masked slots compute dense (their zeros included) rather than block-sparse: dense
     * [layer][slot] true (null: all block-sparse). The choice is the caller's -- measured on the device
     * that runs the model ({@code BlockFormats} in the pruning layer); the masks and what is computed stay
     * the same, only the kernels differ. Packed forms are remade on next use.
     */
    public synchronized void setDenseFormat(boolean[][] dense) {
        requireWhole("a dense format");
        if (dense != null && dense.length != config.layers())
            throw new IllegalArgumentException("formats cover " + dense.length + " layers, the model has " + config.layers());
        for (int l = 0; l < layers.length; l++)
            for (Slot slot : Slot.values()) {
                Linear lin = layers[l].slot(slot);
                lin.denseForm = dense != null && lin.blockMask != null && dense[l][slot.ordinal()];
                lin.unpack();
            }
    }

    /** Whether a block-masked slot computes dense (see {@link #setDenseFormat}). */
    public boolean denseFormat(int layer, Slot slot) {
        return layers[layer].slot(slot).denseForm;
    }

    /**
     * The block masks under the standard weight names (query, key and value each get their rows of
     * the fused mask); empty without block masks.
     */
    public Map<String, boolean[][]> blockMasksByName() {
        Map<String, boolean[][]> out = new LinkedHashMap<>();
        for (int l = 0; l < layers.length; l++)
            for (Slot slot : Slot.values()) {
                boolean[][] m = layers[l].slot(slot).blockMask;
                if (m == null) continue;
                if (slot == Slot.QKV) {
                    int rows = m.length / 3;
                    for (int i = 0; i < 3; i++)
                        out.put(BertNames.of(l, BertNames.QKV_PARTS[i], BertNames.WEIGHT), Arrays.copyOfRange(m, i * rows, (i + 1) * rows));
                } else {
                    out.put(BertNames.slot(l, slot) + "." + BertNames.WEIGHT, m);
                }
            }
        return out;
    }

    /** {@link #setBlockMasks} from masks under the standard weight names (a q/k/v weight left out is dense: all its blocks kept). */
    public void setBlockMasksByName(Map<String, boolean[][]> masks) {
        boolean[][][][] m = new boolean[config.layers()][Slot.values().length][][];
        Map<String, boolean[][]> left = new LinkedHashMap<>(masks);
        int b = BlockSparseWeight.BLOCK;
        for (int l = 0; l < config.layers(); l++) {
            boolean any = false;
            boolean[][][] qkv = new boolean[3][][];
            for (int i = 0; i < 3; i++) {
                qkv[i] = left.remove(BertNames.of(l, BertNames.QKV_PARTS[i], BertNames.WEIGHT));
                any |= qkv[i] != null;
            }
            if (any) {
                int rows = config.attentionWidth(l) / b, cols = config.hidden() / b;
                boolean[][] fused = new boolean[3 * rows][];
                for (int i = 0; i < 3; i++)
                    for (int r = 0; r < rows; r++) {
                        if (qkv[i] != null && qkv[i].length != rows)
                            throw new IllegalArgumentException("block mask of layer " + l + " " + BertNames.QKV_PARTS[i].path() + " has "
                                    + qkv[i].length + " block-rows, the weight has " + rows);
                        boolean[] all = new boolean[cols];
                        Arrays.fill(all, true);
                        fused[i * rows + r] = qkv[i] != null ? qkv[i][r] : all;
                    }
                m[l][Slot.QKV.ordinal()] = fused;
            }
            for (Slot slot : new Slot[] {Slot.ATTENTION_OUTPUT, Slot.FFN_IN, Slot.FFN_OUT})
                m[l][slot.ordinal()] = left.remove(BertNames.slot(l, slot) + "." + BertNames.WEIGHT);
        }
        if (!left.isEmpty()) throw new IllegalArgumentException("block masks for weights the model does not have: " + left.keySet());
        setBlockMasks(m);
    }

    /** Kept fraction of the block-pruned slots' blocks (1 without block masks). */
    public double blockDensity() {
        long kept = 0, all = 0;
        for (Layer layer : layers)
            for (Linear lin : layer.slots())
                if (lin.blockMask != null) for (boolean[] row : lin.blockMask) for (boolean k : row) {
                    all++;
                    if (k) kept++;
                }
        return all == 0 ? 1 : kept / (double) all;
    }

    /** Every block-masked slot packed for be both ways (done on first use otherwise). */
    public synchronized void packBlockSparse(Backend be) {
        for (Layer layer : layers) for (Linear lin : layer.slots()) if (lin.blockMask != null) lin.packBlocks(be);
    }

    // ================================================================ the forward pass

    /**
     * last_hidden_state [B, S, C] for token ids [B, S] (i32), token types (null: all 0) and an
     * attention mask (1 real, 0 padding; null: no padding). Activations come from the step arena.
     */
    public Tensor forward(Backend be, StepArena arena, Tensor ids, Tensor typeIds, Tensor mask) {
        return forward(be, arena, ids, typeIds, mask, null);
    }

    /** As above with a task's adapter set in place of the model's own adapters (null: the model as it is). */
    public Tensor forward(Backend be, StepArena arena, Tensor ids, Tensor typeIds, Tensor mask, AdapterSet with) {
        if (with != null) requireWhole("an adapter set"); // its tensors are the whole model's: a word table would meet compacted ids
        checkLength(ids);
        return encode(be, arena, ids, null, typeIds, mask, null, with, null, null);
    }

    /**
     * The inference forward of {@link #forward} keeping every layer's output: [layers] tensors
     * [B, S, C] of type (F32, or BF16: rounded) from keep, the last one last_hidden_state (a
     * teacher's hidden states for layer-wise distillation). The forward's own activations come from
     * work: the caller may reset it as soon as this returns, so only the outputs outlive the call.
     */
    public Tensor[] layerOutputs(Backend be, StepArena work, TensorAllocator keep, DType type, Tensor ids, Tensor typeIds, Tensor mask) {
        if (type != DType.F32 && type != DType.BF16) throw new IllegalArgumentException("layer outputs are kept in f32 or bf16, not " + type);
        checkLength(ids);
        Tensor[] outs = new Tensor[layers.length];
        encode(be, work, ids, null, typeIds, mask, null, null, null, (l, h) -> {
            outs[l] = keep.allocate(type, h.shape()); // the layer after next reuses h's buffer
            if (type == DType.F32) be.copy(outs[l], h);
            else be.convert(outs[l], h);
        });
        return outs;
    }

    private void checkLength(Tensor ids) {
        if (ids.dim(1) > config.maxPositions())
            throw new IllegalArgumentException("sequence of " + ids.dim(1) + " tokens is longer than the model's " + config.maxPositions()
                    + " positions");
    }

    /** Receives each layer's output [B, S, C] as the encoder makes it; the layer after next overwrites it. */
    interface LayerOutputs {
        void output(int layer, Tensor hidden);
    }

    /**
     * The encoder over sequences packed end to end, without padding: ids, types and positions [1, N]
     * (i32; N the sum of lengths; positions restart at 0 for each sequence). Every token-wise op
     * (the linear layers, LayerNorm, GELU) runs on the N real tokens only and attention runs per
     * sequence, so a batch of mixed lengths costs its tokens, not batch x longest. Returns [1, N, C].
     * Explicit positions: backends that take them ({@link Op#POSITION_IDS}).
     */
    public Tensor forwardPacked(Backend be, StepArena arena, Tensor ids, Tensor typeIds, Tensor positions, int[] lengths, AdapterSet with) {
        if (with != null) requireWhole("an adapter set");
        long n = 0;
        for (int len : lengths) {
            if (len < 1 || len > config.maxPositions())
                throw new IllegalArgumentException("packed sequence of " + len + " tokens: 1 to " + config.maxPositions() + " allowed");
            n += len;
        }
        if (ids.rank() != 2 || ids.dim(0) != 1 || ids.dim(1) != n)
            throw new IllegalArgumentException("packed ids must be [1, " + n + "] (the lengths' sum), got " + Arrays.toString(ids.shape()));
        return encode(be, arena, ids, positions, typeIds, null, lengths.clone(), with, null, null);
    }

    /**
     * Training's side of the forward pass: the dropout draws, which weights train, where what backward
     * reads is computed and kept, and the record of each layer. Inference runs without one.
     */
    interface Tape {
        /** Per-layer temporaries, released after each layer. */
        StepArena scratch();

        /** The draw of a dropout site (Dropout.NONE where off). */
        Dropout dropout(double p, int site);

        double hiddenDropout();

        double attentionDropout();

        boolean trainsWeight(int layer, Slot slot);

        /** Whether backward recomputes the fused QKV projection and the FFN pre-activation instead of keeping them. */
        boolean recomputesProjections();

        /** Where what backward keeps is computed: the arena when kept as it is, else the scratch (and kept as a copy). */
        StepArena kept(StepArena arena);

        /** t as backward keeps it: itself, or a copy in the kept type (null stays null). */
        Tensor keep(Backend be, StepArena arena, Tensor t);

        void embeddings(Tensor ids, Tensor types, Tensor mask, Tensor emb, Tensor mean, Tensor rstd);

        void layer(int l, Saved saved);
    }

    /** What one layer's forward leaves for backward: u per slot is its adapter's x A^T (null without one). */
    record Saved(Tensor qkv, Tensor ctx, Tensor sum1, Tensor mean1, Tensor rstd1, Tensor pre, Tensor sum2, Tensor mean2, Tensor rstd2,
            Tensor[] u) {}

    /** Dropout sites: the embeddings, then per layer 16 sites from 1 + 16 l (see {@link #site}). */
    static final int SITE_EMBEDDINGS = 0, SITE_PROBS = 0, SITE_ATT_OUT = 1, SITE_FFN_OUT = 2, SITE_LORA = 3;

    static int site(int layer, int k) {
        return 1 + 16 * layer + k;
    }

    float attentionScale() {
        return (float) (1 / Math.sqrt(config.headDim()));
    }

    /** The encoder: embeddings, then the layers; with a tape, training's forward; outputs (null: none) sees each layer's output. */
    Tensor encode(Backend be, StepArena arena, Tensor ids, Tensor positionIds, Tensor typeIds, Tensor mask, int[] lengths, AdapterSet with,
            Tape tape, LayerOutputs outputs) {
        long b = ids.dim(0), s = ids.dim(1);
        int c = config.hidden();
        if (tokenRows != null) ids = rowsOfTokens(arena, ids);
        StepArena scratch = tape != null ? tape.scratch() : arena;
        Tensor emb = arena.allocate(DType.F32, b, s, c);
        be.embeddingForward(emb, ids, positionIds, typeIds, param(with, words, BertNames.WORD_EMBEDDINGS),
                param(with, positions, BertNames.POSITION_EMBEDDINGS), types == null ? null : param(with, types, BertNames.TYPE_EMBEDDINGS));
        Tensor mean = arena.allocate(DType.F32, b * s), rstd = arena.allocate(DType.F32, b * s);
        // layer inputs alternate between two buffers (training's backward recomputes each from the LayerNorm that made it)
        Tensor[] hidden = {arena.allocate(DType.F32, b, s, c), arena.allocate(DType.F32, b, s, c)};
        Tensor h = hidden[0];
        layerNorm(be, h, mean, rstd, null, emb, null, embeddingsNorm, with);
        if (tape != null) {
            tape.embeddings(ids, typeIds, mask, emb, mean, rstd);
            dropout(be, h, tape.dropout(tape.hiddenDropout(), SITE_EMBEDDINGS));
        }
        for (int l = 0; l < layers.length; l++) {
            StepArena.Mark mark = scratch.mark();
            Tensor out = hidden[(l + 1) % 2];
            Saved saved = layerForward(be, arena, scratch, l, h, out, mask, lengths, tape == null ? mean : null, tape == null ? rstd : null,
                    with, tape);
            if (tape != null) tape.layer(l, saved);
            scratch.release(mark);
            h = out;
            if (outputs != null) outputs.output(l, h); // after the release: what it allocates from the arena stays
        }
        return h;
    }

    /**
     * One layer: h2 = LN(FFN(h1) + h1), h1 = LN(attention(h) + h). Inference passes the LayerNorm
     * statistics to reuse; training (mean null) keeps a set per LayerNorm.
     */
    private Saved layerForward(Backend be, StepArena arena, StepArena scratch, int l, Tensor h, Tensor h2, Tensor mask, int[] lengths,
            Tensor mean, Tensor rstd, AdapterSet with, Tape tape) {
        Layer layer = layers[l];
        long b = h.dim(0), s = h.dim(1);
        int c = config.hidden(), a = config.attentionWidth(l), f = config.ffn(l);
        Tensor[] u = new Tensor[Slot.values().length];
        boolean recompute = tape == null || tape.recomputesProjections();
        StepArena kept = tape != null ? tape.kept(arena) : scratch, projections = recompute ? scratch : kept;
        StepArena keep = tape != null ? arena : scratch;
        Tensor qkv = null, ctx = null, att = scratch.allocate(DType.F32, b, s, c);
        if (a > 0) {
            qkv = projections.allocate(DType.F32, b, s, 3L * a);
            u[Slot.QKV.ordinal()] = linear(be, scratch, keep, qkv, h, l, Slot.QKV, with, tape);
            ctx = kept.allocate(DType.F32, b, s, a);
            if (lengths != null) be.attentionForwardPacked(ctx, qkv, lengths, config.heads(l), attentionScale());
            else be.attentionForward(ctx, null, qkv, mask, config.heads(l), attentionScale(),
                    tape != null ? tape.dropout(tape.attentionDropout(), site(l, SITE_PROBS)) : Dropout.NONE);
            u[Slot.ATTENTION_OUTPUT.ordinal()] = linear(be, scratch, keep, att, ctx, l, Slot.ATTENTION_OUTPUT, with, tape);
        } else {
            be.broadcastRows(att, bias(layer.slot(Slot.ATTENTION_OUTPUT), with)); // every head pruned: the block is its bias
        }
        if (tape != null) dropout(be, att, tape.dropout(tape.hiddenDropout(), site(l, SITE_ATT_OUT)));
        Tensor[] stats1 = stats(arena, b * s, mean, rstd), stats2 = stats(arena, b * s, mean, rstd);
        Tensor sum1 = tape != null ? arena.allocate(DType.F32, b, s, c) : null, h1 = scratch.allocate(DType.F32, b, s, c);
        layerNorm(be, h1, stats1[0], stats1[1], sum1, att, h, layer.attentionNorm(), with);
        Tensor pre = null, out = scratch.allocate(DType.F32, b, s, c);
        if (f > 0) {
            pre = projections.allocate(DType.F32, b, s, f);
            Tensor act = tape != null ? scratch.allocate(DType.F32, b, s, f) : pre; // inference: GELU in place
            u[Slot.FFN_IN.ordinal()] = linear(be, scratch, keep, pre, h1, l, Slot.FFN_IN, null, with, tape);
            be.biasGeluForward(act, pre, bias(layer.slot(Slot.FFN_IN), with));
            u[Slot.FFN_OUT.ordinal()] = linear(be, scratch, keep, out, act, l, Slot.FFN_OUT, with, tape);
        } else {
            be.broadcastRows(out, bias(layer.slot(Slot.FFN_OUT), with)); // every neuron pruned
        }
        if (tape != null) dropout(be, out, tape.dropout(tape.hiddenDropout(), site(l, SITE_FFN_OUT)));
        Tensor sum2 = tape != null ? arena.allocate(DType.F32, b, s, c) : null;
        layerNorm(be, h2, stats2[0], stats2[1], sum2, out, h1, layer.outputNorm(), with);
        if (tape == null) return null;
        return new Saved(recompute ? null : tape.keep(be, arena, qkv), tape.keep(be, arena, ctx), sum1, stats1[0], stats1[1],
                recompute ? null : tape.keep(be, arena, pre), sum2, stats2[0], stats2[1], u);
    }

    /** {mean, rstd}: the given ones (inference reuses one pair), or a new pair from the arena (training keeps each). */
    private static Tensor[] stats(StepArena arena, long rows, Tensor mean, Tensor rstd) {
        return mean != null ? new Tensor[] {mean, rstd} : new Tensor[] {arena.allocate(DType.F32, rows), arena.allocate(DType.F32, rows)};
    }

    private static void dropout(Backend be, Tensor t, Dropout d) {
        if (d.active()) be.dropout(t, t, d, false);
    }

    private void layerNorm(Backend be, Tensor out, Tensor mean, Tensor rstd, Tensor sum, Tensor x, Tensor residual, Norm norm,
            AdapterSet with) {
        be.layernormForward(out, mean, rstd, sum, x, residual, param(with, norm.gamma(), norm.name() + "." + BertNames.WEIGHT),
                param(with, norm.beta(), norm.name() + "." + BertNames.BIAS), config.layerNormEps());
    }

    /** y = x W^T + bias (+ the slot's LoRA term) in the slot's form for this pass; returns the adapter's x A^T when backward needs it. */
    private Tensor linear(Backend be, StepArena scratch, StepArena keep, Tensor y, Tensor x, int l, Slot slot, AdapterSet with, Tape tape) {
        return linear(be, scratch, keep, y, x, l, slot, bias(layers[l].slot(slot), with), with, tape);
    }

    /** As above with the bias given (null: none, the FFN-in bias goes with GELU). */
    Tensor linear(Backend be, StepArena scratch, StepArena keep, Tensor y, Tensor x, int l, Slot slot, Tensor bias, AdapterSet with,
            Tape tape) {
        Linear lin = layers[l].slot(slot);
        Adapter ad = with != null ? with.adapters()[l][slot.ordinal()] : lin.adapter;
        LinearWeight w = tape != null ? lin.training(be, tape.trainsWeight(l, slot)) : lin.inference(be, ad != null);
        Dropout d = tape != null && ad != null ? tape.dropout(loraDropout(), site(l, SITE_LORA + slot.ordinal())) : Dropout.NONE;
        return w.forward(be, scratch, keep, y, x, bias, ad == null ? null : ad.lowRank(), d);
    }

    /** The form training multiplies a slot in (for backward). */
    LinearWeight trainingForm(Backend be, int l, Slot slot, boolean trainsWeight) {
        return layers[l].slot(slot).training(be, trainsWeight);
    }

    private static Tensor bias(Linear lin, AdapterSet with) {
        return param(with, lin.bias, lin.name + "." + BertNames.BIAS);
    }

    /** A parameter, or the adapter set's replacement of it. */
    private static Tensor param(AdapterSet with, Tensor own, String name) {
        if (with != null) {
            Tensor t = with.replaced().get(name);
            if (t != null) return t;
        }
        return own;
    }

    @Override
    public void close() {
        scope.close();
    }
}
