package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.backend.BlockSparseWeight;
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
    /** Linear slots of a layer, in this order: fused QKV, attention output, FFN in, FFN out. */
    static final int QKV = 0, ATT_OUT = 1, FFN_IN = 2, FFN_OUT = 3;
    private static final String[] SLOT_MODULE = {"attention.self.qkv", "attention.output.dense", "intermediate.dense",
            "output.dense"};

    /**
     * A LoRA adapter on one linear slot: A [r', in], B [out, r'], scale. On the fused QKV slot it
     * covers query, key and value at once: A stacks their [r, C] factors (zero rows for untargeted
     * ones) and B is block-diagonal [3A, 3r], so the adapters ride in the one QKV GEMM.
     */
    public record Adapter(Tensor a, Tensor b, float scale, boolean blockDiagonal) {}

    /**
     * One task's trained tensors apart from the backbone they were trained on: LoRA adapters per layer
     * and slot (null where a slot has none) and the backbone parameters it replaces (the LayerNorms a
     * LoRA recipe trains), by name. {@link #forward(Backend, StepArena, Tensor, Tensor, Tensor, AdapterSet)}
     * runs the backbone with them, so one backbone serves many tasks with the adapters kept apart.
     */
    public record AdapterSet(Adapter[][] adapters, Map<String, Tensor> replaced) {}

    private Adapter[][] adapters;
    private double loraDropout;
    private LoraConfig lora;
    /** Per layer and slot, the frozen weight in bf16 as {W^T for forward, W for dX}, or null. */
    private dev.topa.backend.Bf16Weight[][][] bf16;
    /** Per layer and slot, the kept 32 x 32 blocks [out/32][in/32] of a block-pruned weight, or null (dense). */
    private boolean[][][][] blockMasks;
    private boolean[][] denseFormat; // [layer][slot]: a block-masked slot whose products run dense (measured faster); null: none
    /** Per layer and slot, a block-pruned weight packed as {W for y = x W^T, W^T for dX = dY W}, or null. */
    private BlockSparseWeight[][][] sparse;
    private String sparseFor;
    /** Per layer and slot, W^T rounded to bf16 for inference products, or null (see packForInferenceBf16). */
    private dev.topa.backend.Bf16Weight[][] bf16Inference;
    private String bf16InferenceFor;
    /** Per layer {QKV, attention output, FFN in, FFN out} packed for one backend, or null. */
    private PackedWeight[][] packed;
    private String packedFor;

    public BertModel(BertConfig config) {
        this(config, new TensorScope("bert weights", MemoryCategory.WEIGHTS));
    }

    /** A model whose weights (contents unset) live in memory from weights, which the model closes. */
    public BertModel(BertConfig config, TensorScope weights) {
        this.config = config;
        this.scope = weights;
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

    /** Where the weights live. */
    public dev.topa.tensor.Device device() {
        return scope.device();
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

    /**
     * Attaches LoRA adapters (category adapters) to the targeted linears of every layer: A from
     * U(-1/sqrt(in), 1/sqrt(in)) as PEFT's kaiming-uniform(a = sqrt 5), B zero, so the model's
     * output is unchanged until B trains. Adapter tensors join {@link #parameters()} as
     * "<module>.lora_A" / ".lora_B" (the fused QKV slot as "attention.self.qkv.lora_*").
     */
    public void addLora(LoraConfig lora, long seed) {
        if (adapters != null) throw new IllegalStateException("this model already has LoRA adapters");
        java.util.SplittableRandom rnd = new java.util.SplittableRandom(seed);
        int c = config.hidden();
        if (!lora.layerRanks().isEmpty() && lora.layerRanks().size() != config.layers())
            throw new IllegalArgumentException("LoRA layer ranks " + lora.layerRanks() + " do not cover the model's " + config.layers()
                    + " layers");
        Adapter[][] ad = new Adapter[config.layers()][4];
        for (int l = 0; l < config.layers(); l++) {
            int a = config.attentionWidth(l), f = config.ffn(l), r = lora.rank(l);
            LoraConfig.Target[] qkv = {LoraConfig.Target.QUERY, LoraConfig.Target.KEY, LoraConfig.Target.VALUE};
            boolean[] on = new boolean[3];
            for (int i = 0; i < 3; i++) on[i] = lora.targets().contains(qkv[i]);
            if ((on[0] || on[1] || on[2]) && a > 0) { // a layer pruned to no heads has no QKV projection to adapt
                Tensor ta = scope.allocate(MemoryCategory.ADAPTERS, DType.F32, 3L * r, c).fill(0f);
                for (int i = 0; i < 3; i++) if (on[i]) uniform(ta.rows((long) i * r, (long) (i + 1) * r), c, rnd);
                ad[l][QKV] = new Adapter(ta, scope.allocate(MemoryCategory.ADAPTERS, DType.F32, 3L * a, 3L * r).fill(0f),
                        lora.scale(l), true);
            }
            int[][] shapes = {null, {c, a}, {f, c}, {c, f}}; // {out, in}
            LoraConfig.Target[] targets = {null, LoraConfig.Target.ATTENTION_OUTPUT, LoraConfig.Target.FFN_IN, LoraConfig.Target.FFN_OUT};
            for (int slot = 1; slot < 4; slot++)
                if (lora.targets().contains(targets[slot]) && shapes[slot][0] > 0 && shapes[slot][1] > 0) {
                    Tensor ta = scope.allocate(MemoryCategory.ADAPTERS, DType.F32, r, shapes[slot][1]);
                    uniform(ta, shapes[slot][1], rnd);
                    ad[l][slot] = new Adapter(ta, scope.allocate(MemoryCategory.ADAPTERS, DType.F32, shapes[slot][0], r).fill(0f),
                            lora.scale(l), false);
                }
            for (int slot = 0; slot < 4; slot++)
                if (ad[l][slot] != null) {
                    String n = "encoder.layer." + l + "." + SLOT_MODULE[slot];
                    params.put(n + ".lora_A", ad[l][slot].a());
                    params.put(n + ".lora_B", ad[l][slot].b());
                }
        }
        adapters = ad;
        loraDropout = lora.dropout();
        this.lora = lora;
    }

    /** The adapters' configuration, or null without adapters. */
    public LoraConfig loraConfig() {
        return lora;
    }

    /** Dropout on the adapters' input during training (0 without adapters). */
    public double loraDropout() {
        return loraDropout;
    }

    private static void uniform(Tensor t, int fanIn, java.util.SplittableRandom rnd) {
        float[] v = new float[(int) t.numel()];
        double bound = 1 / Math.sqrt(fanIn);
        for (int i = 0; i < v.length; i++) v[i] = (float) ((2 * rnd.nextDouble() - 1) * bound);
        t.copyFrom(v);
    }

    /**
     * The parameters with every LoRA adapter merged, W' = W + scale B A (in tensors from scope;
     * unadapted parameters are the model's own), under the standard names and without adapter
     * tensors: a plain BERT that needs no adapter code. The fused QKV adapter merges in one GEMM
     * (its block-diagonal B keeps q, k and v apart).
     */
    public Map<String, Tensor> mergedParameters(Backend be, TensorScope scope) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : params.entrySet())
            if (!e.getKey().contains(".lora_")) out.put(e.getKey(), e.getValue());
        for (int l = 0; adapters != null && l < config.layers(); l++)
            for (int slot = 0; slot < 4; slot++) {
                Adapter ad = adapters[l][slot];
                if (ad == null) continue;
                Tensor w = slot == QKV ? qkvWeight[l] : params.get(slotName(l, slot) + ".weight");
                Tensor merged = scope.allocate(DType.F32, w.shape()).copyFrom(w);
                be.gemm(false, false, ad.scale(), ad.b(), ad.a(), 1f, merged, null);
                boolean[][] mask = blockMask(l, slot);
                if (mask != null) zeroOutside(merged, mask); // merged inside the mask: the sparsity survives
                if (slot == QKV) {
                    int a = config.attentionWidth(l);
                    String[] qkv = {"query", "key", "value"};
                    for (int i = 0; i < 3; i++)
                        out.put("encoder.layer." + l + ".attention.self." + qkv[i] + ".weight", merged.rows((long) i * a, (long) (i + 1) * a));
                } else {
                    out.put(slotName(l, slot) + ".weight", merged);
                }
            }
        return out;
    }

    /**
     * Elements of a parameter that are parameters: the fused QKV adapter's B stores its three
     * diagonal blocks in a 3x3 grid, so only a third of it counts.
     */
    public static long parameterCount(String name, Tensor t) {
        return name.endsWith("attention.self.qkv.lora_B") ? t.numel() / 3 : t.numel();
    }

    /** The adapter on a layer's slot (QKV, ATT_OUT, FFN_IN, FFN_OUT), or null. */
    Adapter adapter(int layer, int slot) {
        return adapters == null ? null : adapters[layer][slot];
    }

    /** "encoder.layer.L.<module>" of a linear slot (the fused QKV one as attention.self.qkv). */
    public static String slotName(int layer, int slot) {
        return "encoder.layer." + layer + "." + SLOT_MODULE[slot];
    }

    public long parameterBytes() {
        return scope.bytes();
    }

    /**
     * This model's weights, LoRA adapters included, copied to the backend's device (the copy is
     * closed separately): inference there, or training there with {@link #copyParametersTo} to
     * bring trained values back. Block masks do not travel: pruned blocks are zeros in the dense
     * weights, so the copy computes the same outputs, densely.
     */
    public BertModel copyTo(Backend be) {
        BertModel m = new BertModel(config, be.weightScope("bert weights on " + be.device()));
        try {
            for (var e : params.entrySet()) {
                Tensor t = m.params.get(e.getKey());
                if (t == null) continue; // adapter tensors: made below
                be.copy(t, e.getValue());
            }
            if (adapters != null) {
                Adapter[][] ad = new Adapter[adapters.length][];
                for (int l = 0; l < adapters.length; l++) {
                    ad[l] = new Adapter[adapters[l].length];
                    for (int slot = 0; slot < adapters[l].length; slot++) {
                        Adapter a = adapters[l][slot];
                        if (a == null) continue;
                        ad[l][slot] = new Adapter(be.copyOf(a.a(), m.scope), be.copyOf(a.b(), m.scope), a.scale(), a.blockDiagonal());
                        String n = "encoder.layer." + l + "." + SLOT_MODULE[slot];
                        m.params.put(n + ".lora_A", ad[l][slot].a());
                        m.params.put(n + ".lora_B", ad[l][slot].b());
                    }
                }
                m.adapters = ad;
                m.lora = lora;
                m.loraDropout = loraDropout;
            }
            m.blockMasks = blockMasks; // the weights came zeroed outside them; packed for be on first use
            m.denseFormat = denseFormat;
        } catch (RuntimeException | Error e) {
            m.close();
            throw e;
        }
        return m;
    }

    /**
     * A task's adapter set for this backbone from named tensors on this model's device: LoRA pairs
     * ("<module>.lora_A" / ".lora_B", the fused QKV one as "attention.self.qkv.lora_*") with their
     * scales, and replacements of backbone parameters (any other name). Every shape is checked
     * against this backbone, so an adapter trained on another one is refused with the tensor named.
     */
    public AdapterSet adapterSet(Map<String, Tensor> tensors, Map<String, Float> scales) {
        Adapter[][] ad = new Adapter[config.layers()][4];
        Map<String, Tensor> replaced = new LinkedHashMap<>();
        for (var e : tensors.entrySet()) {
            String n = e.getKey();
            if (n.endsWith(".lora_B")) continue;
            if (!n.endsWith(".lora_A")) {
                Tensor own = params.get(n);
                if (own == null) throw new IllegalArgumentException("adapter tensor " + n + ": the backbone has no such parameter");
                if (!java.util.Arrays.equals(own.shape(), e.getValue().shape()))
                    throw new IllegalArgumentException("adapter tensor " + n + " " + java.util.Arrays.toString(e.getValue().shape())
                            + " does not fit the backbone's " + java.util.Arrays.toString(own.shape()));
                replaced.put(n, e.getValue());
                continue;
            }
            String module = n.substring(0, n.length() - ".lora_A".length());
            int layer = -1, slot = -1;
            for (int l = 0; l < config.layers() && slot < 0; l++)
                for (int k = 0; k < 4; k++)
                    if (slotName(l, k).equals(module)) {
                        layer = l;
                        slot = k;
                    }
            if (slot < 0) throw new IllegalArgumentException("adapter tensor " + n + ": no such linear layer in the backbone");
            Tensor a = e.getValue(), b = tensors.get(module + ".lora_B");
            Float scale = scales.get(module);
            if (b == null || scale == null) throw new IllegalArgumentException("adapter " + module + ": lora_B or its scale is missing");
            Tensor w = slotWeight(layer, slot);
            boolean qkv = slot == QKV;
            if (a.rank() != 2 || b.rank() != 2 || a.dim(1) != w.dim(1) || b.dim(0) != w.dim(0) || b.dim(1) != a.dim(0))
                throw new IllegalArgumentException("adapter " + module + ": A " + java.util.Arrays.toString(a.shape()) + " and B "
                        + java.util.Arrays.toString(b.shape()) + " do not fit the backbone's weight " + java.util.Arrays.toString(w.shape()));
            ad[layer][slot] = new Adapter(a, b, scale, qkv);
        }
        return new AdapterSet(ad, replaced);
    }

    /**
     * A short fingerprint of the backbone's weights (shapes and a strided sample of values; not the
     * adapters nor the LayerNorms, which an adapter set may replace): an adapter records the one it
     * was trained on, and a server refuses a mismatch.
     */
    public String fingerprint() {
        long h = 1125899906842597L;
        for (var e : params.entrySet()) {
            if (e.getKey().contains(".lora_") || e.getKey().contains("LayerNorm")) continue; // what an adapter set may replace
            Tensor t = e.getValue();
            h = 31 * h + e.getKey().hashCode();
            for (long d : t.shape()) h = 31 * h + d;
            for (long i = 0; i < t.numel(); i += 4099) h = 31 * h + Float.floatToIntBits(t.getFloat(i));
        }
        return Long.toHexString(h);
    }

    /** This model's LoRA tensors and the scale of each adapted module (for saving an adapter apart from the merged model). */
    public Map<String, Float> adapterScales() {
        Map<String, Float> out = new LinkedHashMap<>();
        for (int l = 0; adapters != null && l < config.layers(); l++)
            for (int slot = 0; slot < 4; slot++)
                if (adapters[l][slot] != null) out.put(slotName(l, slot), adapters[l][slot].scale());
        return out;
    }

    /** Copies the values of the named parameters into another model of the same shape (on any device the backend reaches). */
    public void copyParametersTo(BertModel other, Backend be, java.util.Collection<String> names) {
        for (String n : names) be.copy(other.parameter(n), parameter(n));
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
            Tensor[] w = {qkvWeight[l], params.get(n + "attention.output.dense.weight"), params.get(n + "intermediate.dense.weight"),
                    params.get(n + "output.dense.weight")};
            p[l] = new PackedWeight[4];
            for (int slot = 0; slot < 4; slot++)
                if (w[slot].numel() > 0 && (blockMask(l, slot) == null || denseFormat(l, slot))) p[l][slot] = be.packLinearWeight(w[slot], scope);
        }
        if (blockMasks != null) packBlockSparse(be);
        packed = p;
        packedFor = be.name();
    }

    /**
     * Rounds every linear weight to bf16 and packs it twice (for y = x W^T and for dX = dY W), so
     * training with a frozen backbone runs its big GEMMs in bf16 with fp32 sums (about twice the
     * fp32 rate where AVX512_BF16 exists). Costs half the linear weights' fp32 bytes per packing
     * (category weights). The weights must stay frozen: packs are not refreshed.
     */
    /**
     * Packs every dense linear weight once as bf16 W^T for inference (on CPUs with AVX512_BF16 the
     * product runs twice the fp32 FMA rate; activations are rounded to bf16 on the way in and sums
     * stay fp32): a ~1e-2 relative change of the outputs for up to twice the speed; an unmerged
     * adapter's rank-r term is added in the same product. Costs a bf16 copy of the linear weights.
     */
    public synchronized void packForInferenceBf16(Backend be) {
        if (be.name().equals(bf16InferenceFor)) return;
        dev.topa.backend.Bf16Weight[][] p = new dev.topa.backend.Bf16Weight[config.layers()][4];
        for (int l = 0; l < config.layers(); l++)
            for (int slot = 0; slot < 4; slot++) {
                Tensor w = slotWeight(l, slot);
                if (w.numel() > 0 && (blockMask(l, slot) == null || denseFormat(l, slot))) p[l][slot] = be.packBf16(w, true, scope);
            }
        if (blockMasks != null) packBlockSparse(be);
        bf16Inference = p;
        bf16InferenceFor = be.name();
    }

    public synchronized void packBf16ForTraining(Backend be) {
        dev.topa.backend.Bf16Weight[][][] p = new dev.topa.backend.Bf16Weight[config.layers()][4][];
        for (int l = 0; l < config.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            Tensor[] w = {qkvWeight[l], params.get(n + "attention.output.dense.weight"), params.get(n + "intermediate.dense.weight"),
                    params.get(n + "output.dense.weight")};
            for (int slot = 0; slot < 4; slot++) // a block-sparse slot multiplies its own packs; a dense-form one uses these
                if (w[slot].numel() > 0 && (blockMask(l, slot) == null || denseFormat(l, slot)))
                    p[l][slot] = new dev.topa.backend.Bf16Weight[] {be.packBf16(w[slot], true, scope), be.packBf16(w[slot], false, scope)};
        }
        bf16 = p;
    }

    /** The bf16 packs {forward, input gradient} of a slot's weight, or null when not packed. */
    dev.topa.backend.Bf16Weight[] bf16(int layer, int slot) {
        return bf16 == null ? null : bf16[layer][slot];
    }

    /** The weight of a linear slot (the fused [3A, C] one for QKV; slots: QKV, attention output, FFN in, FFN out). */
    public Tensor slotWeight(int layer, int slot) {
        return slot == QKV ? qkvWeight[layer] : params.get(slotName(layer, slot) + ".weight");
    }

    /**
     * Makes linear weights block-sparse: masks[layer][slot] is [out/32][in/32] (true: the 32 x 32
     * block stays; null: the slot stays dense; slots in QKV, attention output, FFN in, FFN out
     * order, QKV being the fused [3A, C] weight). Weights outside the mask are set to zero, so the
     * dense path computes the same thing (the test reference); {@link #packBlockSparse} makes the
     * kept blocks all that is stored and multiplied. Merging keeps the mask.
     */
    public synchronized void setBlockMasks(boolean[][][][] masks) {
        if (masks.length != config.layers())
            throw new IllegalArgumentException("block masks cover " + masks.length + " layers, the model has " + config.layers());
        int b = BlockSparseWeight.BLOCK;
        for (int l = 0; l < masks.length; l++) {
            if (masks[l].length != 4) throw new IllegalArgumentException("layer " + l + ": block masks need 4 slots, got " + masks[l].length);
            for (int slot = 0; slot < 4; slot++) {
                boolean[][] m = masks[l][slot];
                if (m == null) continue;
                Tensor w = slotWeight(l, slot);
                String where = slotName(l, slot) + ".weight " + java.util.Arrays.toString(w.shape());
                if (w.dim(0) % b != 0 || w.dim(1) % b != 0)
                    throw new IllegalArgumentException(where + ": block pruning needs both dimensions to be multiples of " + b);
                if (m.length != w.dim(0) / b) throw new IllegalArgumentException(where + ": block mask has " + m.length + " block-rows");
                for (boolean[] row : m)
                    if (row.length != w.dim(1) / b) throw new IllegalArgumentException(where + ": block mask row has " + row.length + " blocks");
                zeroOutside(w, m);
            }
        }
        blockMasks = masks;
        denseFormat = null;
        sparse = null;
        sparseFor = null;
        packed = null;
        packedFor = null;
    }

    /** The kept blocks of a slot's weight, or null when it is dense. */
    public boolean[][] blockMask(int layer, int slot) {
        return blockMasks == null ? null : blockMasks[layer][slot];
    }

    public boolean blockSparse() {
        return blockMasks != null;
    }

    private static void zeroOutside(Tensor w, boolean[][] mask) {
        int b = BlockSparseWeight.BLOCK;
        long cols = w.dim(1);
        for (int r = 0; r < mask.length; r++)
            for (int c = 0; c < mask[r].length; c++)
                if (!mask[r][c])
                    for (long i = (long) r * b; i < (long) (r + 1) * b; i++)
                        w.data().asSlice((i * cols + (long) c * b) * 4, b * 4L).fill((byte) 0);
    }

    /**
     * Packs every block-pruned weight for this backend, both ways (forward and input gradient),
     * memory category weights. The weights must stay frozen: the packs are not refreshed.
     */
    public synchronized void packBlockSparse(Backend be) {
        if (blockMasks == null) throw new IllegalStateException("the model has no block masks");
        if (be.name().equals(sparseFor)) return;
        BlockSparseWeight[][][] p = new BlockSparseWeight[config.layers()][4][];
        for (int l = 0; l < config.layers(); l++)
            for (int slot = 0; slot < 4; slot++) {
                boolean[][] m = blockMasks[l][slot];
                if (m == null) continue;
                Tensor w = slotWeight(l, slot);
                boolean dense = denseFormat(l, slot); // the products run dense: the packs serve the adapter's masked term
                p[l][slot] = new BlockSparseWeight[] {be.packBlockSparse(w, m, false, scope, dense), be.packBlockSparse(w, m, true, scope, dense)};
            }
        sparse = p;
        sparseFor = be.name();
    }

    /** A slot's block-sparse packs as a frozen weight (packed on first use), or null when the slot is dense. */
    FrozenWeight.BlockSparse frozenSparse(Backend be, int layer, int slot) {
        if (blockMasks == null || blockMasks[layer][slot] == null) return null;
        if (!be.name().equals(sparseFor)) packBlockSparse(be);
        BlockSparseWeight[] s = sparse[layer][slot];
        if (!denseFormat(layer, slot)) return new FrozenWeight.BlockSparse(s[0], s[1]);
        dev.topa.backend.Bf16Weight[] half = bf16(layer, slot);
        FrozenWeight base = half != null ? new FrozenWeight.Bf16(half[0], half[1]) : new FrozenWeight.Dense(slotWeight(layer, slot));
        return new FrozenWeight.BlockSparse(s[0], s[1], base);
    }

    /**
     * Which block-masked slots compute dense (their zeros included) rather than block-sparse: dense
     * [layer][slot] true (null: all block-sparse). The choice is the caller's -- measured on the device
     * that runs the model ({@code dev.topa.prune.BlockFormats}); the masks and what is computed stay
     * the same, only the kernels differ. Packs are remade on next use.
     */
    public synchronized void setDenseFormat(boolean[][] dense) {
        if (dense != null && dense.length != config.layers())
            throw new IllegalArgumentException("formats cover " + dense.length + " layers, the model has " + config.layers());
        denseFormat = dense == null ? null : java.util.Arrays.stream(dense).map(boolean[]::clone).toArray(boolean[][]::new);
        sparse = null;
        sparseFor = null;
    }

    /** Whether a block-masked slot computes dense (see {@link #setDenseFormat}). */
    public boolean denseFormat(int layer, int slot) {
        return denseFormat != null && blockMasks != null && blockMasks[layer][slot] != null && denseFormat[layer][slot];
    }

    private static final String[] QKV_NAMES = {"query", "key", "value"};

    /**
     * The block masks under the standard weight names (query, key and value each get their rows of
     * the fused mask); empty without block masks.
     */
    public Map<String, boolean[][]> blockMasksByName() {
        Map<String, boolean[][]> out = new LinkedHashMap<>();
        for (int l = 0; blockMasks != null && l < config.layers(); l++)
            for (int slot = 0; slot < 4; slot++) {
                boolean[][] m = blockMasks[l][slot];
                if (m == null) continue;
                if (slot == QKV) {
                    int rows = m.length / 3;
                    for (int i = 0; i < 3; i++)
                        out.put("encoder.layer." + l + ".attention.self." + QKV_NAMES[i] + ".weight",
                                java.util.Arrays.copyOfRange(m, i * rows, (i + 1) * rows));
                } else {
                    out.put(slotName(l, slot) + ".weight", m);
                }
            }
        return out;
    }

    /** {@link #setBlockMasks} from masks under the standard weight names (a q/k/v weight left out is dense: all its blocks kept). */
    public void setBlockMasksByName(Map<String, boolean[][]> masks) {
        boolean[][][][] m = new boolean[config.layers()][4][][];
        Map<String, boolean[][]> left = new LinkedHashMap<>(masks);
        int b = BlockSparseWeight.BLOCK;
        for (int l = 0; l < config.layers(); l++) {
            boolean any = false;
            boolean[][][] qkv = new boolean[3][][];
            for (int i = 0; i < 3; i++) {
                qkv[i] = left.remove("encoder.layer." + l + ".attention.self." + QKV_NAMES[i] + ".weight");
                any |= qkv[i] != null;
            }
            if (any) {
                int rows = config.attentionWidth(l) / b, cols = config.hidden() / b;
                boolean[][] fused = new boolean[3 * rows][];
                for (int i = 0; i < 3; i++)
                    for (int r = 0; r < rows; r++) {
                        if (qkv[i] != null && qkv[i].length != rows)
                            throw new IllegalArgumentException("block mask of layer " + l + " " + QKV_NAMES[i] + " has " + qkv[i].length
                                    + " block-rows, the weight has " + rows);
                        boolean[] all = new boolean[cols];
                        java.util.Arrays.fill(all, true);
                        fused[i * rows + r] = qkv[i] != null ? qkv[i][r] : all;
                    }
                m[l][QKV] = fused;
            }
            for (int slot = 1; slot < 4; slot++) m[l][slot] = left.remove(slotName(l, slot) + ".weight");
        }
        if (!left.isEmpty()) throw new IllegalArgumentException("block masks for weights the model does not have: " + left.keySet());
        setBlockMasks(m);
    }

    /** Kept fraction of the block-pruned slots' blocks (1 without block masks). */
    public double blockDensity() {
        if (blockMasks == null) return 1;
        long kept = 0, all = 0;
        for (boolean[][][] layer : blockMasks)
            for (boolean[][] m : layer)
                if (m != null) for (boolean[] row : m) for (boolean k : row) {
                    all++;
                    if (k) kept++;
                }
        return all == 0 ? 1 : kept / (double) all;
    }

    /** y = x W^T + bias, with the slot's LoRA adapter when it has one; returns x A^T then (else null). */
    Tensor linear(Backend be, StepArena arena, AdapterSet with, Tensor y, Tensor x, int layer, int slot, Tensor w, Tensor bias) {
        Adapter ad = with != null ? with.adapters()[layer][slot] : adapter(layer, slot);
        FrozenWeight.BlockSparse sparse = ad != null || !denseFormat(layer, slot) ? frozenSparse(be, layer, slot) : null;
        if (sparse != null) { // an unmerged adapter counts only inside the kept blocks, as merged
            if (ad != null) sparse.maskedForward(be, arena, y, x, bias, ad);
            else sparse.forward(be, arena, y, x, bias, null, 0f, null);
            return null;
        }
        dev.topa.backend.Bf16Weight bw = bf16Inference != null && be.name().equals(bf16InferenceFor) ? bf16Inference[layer][slot] : null;
        PackedWeight pw = packed != null && be.name().equals(packedFor) ? packed[layer][slot] : null;
        Tensor u = null;
        if (ad != null) {
            u = arena.allocate(DType.F32, x.numel() / x.dim(-1), ad.a().dim(0));
            if (bw == null && pw == null) { // unpacked (training, evaluation): the rank-r term as extra columns of one GEMM
                be.loraForward(y, u, x, w, bias, ad.a(), ad.b(), ad.scale());
                return u;
            }
            if (bw != null) { // packed (a served task's adapter): the term rides along
                be.loraForwardBf16(y, u, x, bw, bias, ad.a(), ad.b(), ad.scale());
                return u;
            }
            be.gemm(false, true, 1f, x, ad.a(), 0f, u, null);
        }
        if (bw != null) {
            be.gemmBf16(1f, x, bw, 0f, y, bias);
        } else if (pw != null) {
            be.linearForward(y, x, pw, bias);
            if (ad != null) be.gemm(false, true, ad.scale(), u, ad.b(), 1f, y, null);
        } else {
            be.linearForward(y, x, w, bias);
        }
        return u;
    }

    /**
     * last_hidden_state [B, S, C] for token ids [B, S] (i32), token types (null: all 0) and an
     * attention mask (1 real, 0 padding; null: no padding). Activations come from the step arena.
     */
    public Tensor forward(Backend be, StepArena arena, Tensor ids, Tensor typeIds, Tensor mask) {
        return forward(be, arena, ids, typeIds, mask, null);
    }

    /** As above with a task's adapter set in place of the model's own adapters (null: the model as it is). */
    public Tensor forward(Backend be, StepArena arena, Tensor ids, Tensor typeIds, Tensor mask, AdapterSet with) {
        if (ids.dim(1) > config.maxPositions())
            throw new IllegalArgumentException("sequence of " + ids.dim(1) + " tokens is longer than the model's " + config.maxPositions()
                    + " positions");
        return encode(be, arena, ids, null, typeIds, mask, null, with);
    }

    /**
     * The encoder over sequences packed end to end, without padding: ids, types and positions [1, N]
     * (i32; N the sum of lengths; positions restart at 0 for each sequence). Every token-wise op
     * (the linear layers, LayerNorm, GELU) runs on the N real tokens only and attention runs per
     * sequence, so a batch of mixed lengths costs its tokens, not batch x longest. Returns [1, N, C].
     * Explicit positions: backends that take them (the CPU's).
     */
    public Tensor forwardPacked(Backend be, StepArena arena, Tensor ids, Tensor typeIds, Tensor positions, int[] lengths, AdapterSet with) {
        long n = 0;
        for (int len : lengths) {
            if (len < 1 || len > config.maxPositions())
                throw new IllegalArgumentException("packed sequence of " + len + " tokens: 1 to " + config.maxPositions() + " allowed");
            n += len;
        }
        if (ids.rank() != 2 || ids.dim(0) != 1 || ids.dim(1) != n)
            throw new IllegalArgumentException("packed ids must be [1, " + n + "] (the lengths' sum), got " + java.util.Arrays.toString(ids.shape()));
        return encode(be, arena, ids, positions, typeIds, null, lengths.clone(), with);
    }

    private Tensor encode(Backend be, StepArena arena, Tensor ids, Tensor positions, Tensor typeIds, Tensor mask, int[] lengths,
            AdapterSet with) {
        long b = ids.dim(0), s = ids.dim(1);
        int c = config.hidden();
        Tensor emb = arena.allocate(DType.F32, b, s, c);
        be.embeddingForward(emb, ids, positions, typeIds, param(with, "embeddings.word_embeddings.weight"),
                param(with, "embeddings.position_embeddings.weight"), param(with, "embeddings.token_type_embeddings.weight"));
        Tensor mean = arena.allocate(DType.F32, b * s), rstd = arena.allocate(DType.F32, b * s);
        Tensor h = arena.allocate(DType.F32, b, s, c);
        be.layernormForward(h, mean, rstd, null, emb, null, param(with, "embeddings.LayerNorm.weight"),
                param(with, "embeddings.LayerNorm.bias"), config.layerNormEps());
        // layer outputs alternate between two buffers; each layer's temporaries are released after it
        Tensor[] pingPong = {arena.allocate(DType.F32, b, s, c), arena.allocate(DType.F32, b, s, c)};
        for (int l = 0; l < config.layers(); l++) {
            StepArena.Mark mark = arena.mark();
            layerForward(be, arena, l, h, pingPong[l % 2], mask, lengths, mean, rstd, with);
            arena.release(mark);
            h = pingPong[l % 2];
        }
        return h;
    }

    private void layerForward(Backend be, StepArena arena, int l, Tensor h, Tensor h2, Tensor mask, int[] lengths, Tensor mean, Tensor rstd,
            AdapterSet with) {
        String p = "encoder.layer." + l + ".";
        long b = h.dim(0), s = h.dim(1);
        int c = config.hidden(), a = config.attentionWidth(l), f = config.ffn(l);
        float eps = config.layerNormEps();
        Tensor att = arena.allocate(DType.F32, b, s, c);
        if (a > 0) {
            Tensor qkv = arena.allocate(DType.F32, b, s, 3L * a);
            linear(be, arena, with, qkv, h, l, QKV, qkvWeight[l], qkvBias[l]);
            Tensor ctx = arena.allocate(DType.F32, b, s, a);
            float scale = (float) (1 / Math.sqrt(config.headDim()));
            if (lengths == null) be.attentionForward(ctx, null, qkv, mask, config.heads(l), scale);
            else be.attentionForwardPacked(ctx, qkv, lengths, config.heads(l), scale);
            linear(be, arena, with, att, ctx, l, ATT_OUT, param(with, p + "attention.output.dense.weight"),
                    param(with, p + "attention.output.dense.bias"));
        } else {
            be.broadcastRows(att, param(with, p + "attention.output.dense.bias")); // every head pruned: the block is its bias
        }
        Tensor h1 = arena.allocate(DType.F32, b, s, c);
        be.layernormForward(h1, mean, rstd, null, att, h, param(with, p + "attention.output.LayerNorm.weight"),
                param(with, p + "attention.output.LayerNorm.bias"), eps);
        Tensor out = arena.allocate(DType.F32, b, s, c);
        if (f > 0) {
            Tensor inter = arena.allocate(DType.F32, b, s, f);
            linear(be, arena, with, inter, h1, l, FFN_IN, param(with, p + "intermediate.dense.weight"), null);
            be.biasGeluForward(inter, inter, param(with, p + "intermediate.dense.bias"));
            linear(be, arena, with, out, inter, l, FFN_OUT, param(with, p + "output.dense.weight"), param(with, p + "output.dense.bias"));
        } else {
            be.broadcastRows(out, param(with, p + "output.dense.bias")); // every neuron pruned
        }
        be.layernormForward(h2, mean, rstd, null, out, h1, param(with, p + "output.LayerNorm.weight"),
                param(with, p + "output.LayerNorm.bias"), eps);
    }

    /** A parameter, or the adapter set's replacement of it. */
    private Tensor param(AdapterSet with, String name) {
        if (with != null) {
            Tensor t = with.replaced().get(name);
            if (t != null) return t;
        }
        return params.get(name);
    }

    @Override
    public void close() {
        scope.close();
    }
}
