package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.backend.Dropout;
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
 * <p>Saved per layer (in the step arena): the fused QKV projection, the attention context, both
 * LayerNorm inputs with their mean/rstd, the FFN pre-activation (GEMM output without bias) and
 * LoRA's x A^T; with recomputeProjections the QKV projection and the FFN pre-activation are
 * recomputed in backward instead. Recomputed in backward instead of kept, because each costs far
 * less to redo than its memory is worth: the layer input (the previous LayerNorm's output, or the
 * embeddings'), the attention probabilities (inside the attention backward kernel, per head), the
 * first LayerNorm's output, the GELU output, and every dropout mask (counter-based, see
 * {@link Dropout}). Per-layer temporaries of forward and backward live in a scratch arena released
 * after each layer, so the peak holds one layer's temporaries, not six.
 *
 * <p>Saved activations may be kept in bf16 (mixed precision, as autocast keeps a product's inputs
 * and outputs): the context, the QKV projection and the FFN pre-activation -- the tensors products
 * read, rounded as a bf16 product would round them anyway. The LayerNorm inputs stay fp32: the
 * residual stream carries outlier features, and rounding x before (x - mean) * rstd would cost
 * their normalised values up to |x| / std times bf16's 2^-9. Backward widens each kept tensor back
 * into its per-layer scratch, so every op still reads and writes fp32.
 */
public final class BertTraining implements AutoCloseable {
    private final BertModel model;
    private final BertConfig cfg;
    /** Where gradients and per-layer scratch live: the model's device (null: host memory). */
    private final Backend device;
    private final dev.topa.tensor.TensorAllocator gradScope;
    private final Map<String, Tensor> grads = new LinkedHashMap<>();
    private final Tensor[] qkvWeightGrad, qkvBiasGrad;
    private final DropoutConfig dropout;
    private final boolean recomputeProjections;
    /** How the context, QKV and FFN pre-activation are kept for backward: F32, or BF16 (half the bytes). */
    private final DType savedType;
    /** Per-layer temporaries (forward and backward), released after each layer. */
    private final StepArena scratch;
    private long dropoutSeed, dropoutStep;
    private MaskGradientListener maskGradients;

    /**
     * Receives, during backward, per example the gradient of a multiplicative mask on each
     * attention head (ctx_h' = m_h ctx_h) and each FFN neuron (act_j' = m_j act_j) of a layer, at
     * m = 1: perExample [B, heads] or [B, ffn], valid only during the call.
     */
    public interface MaskGradientListener {
        void heads(int layer, Tensor perExample);

        void neurons(int layer, Tensor perExample);
    }

    /** Collects head and neuron mask gradients in every following backward (null: stop). */
    public void setMaskGradientListener(MaskGradientListener listener) {
        this.maskGradients = listener;
    }

    /**
     * Sees, after each linear slot's backward, what weight scores need: the slot's weight w
     * (the fused [3A, C] one for QKV), its output gradient dy and input x (so dL/dW = dy^T x can be
     * formed one slot at a time, never kept), and its adapter with this step's adapter gradients
     * (null without one). Valid only during the call.
     */
    public interface WeightGradientListener {
        void linear(Backend be, int layer, int slot, Tensor w, Tensor dy, Tensor x, BertModel.Adapter adapter, Tensor dA, Tensor dB);
    }

    private WeightGradientListener weightGradients;

    /** Calls the listener after every linear slot's backward (null: stop). */
    public void setWeightGradientListener(WeightGradientListener listener) {
        this.weightGradients = listener;
    }
    private Saved saved;

    /** Dropout sites: the embeddings, then per layer 16 sites from 1 + 16 l (see {@link #site}). */
    static final int SITE_EMBEDDINGS = 0, SITE_PROBS = 0, SITE_ATT_OUT = 1, SITE_FFN_OUT = 2, SITE_LORA = 3;

    /** u: per linear slot, x A^T of its LoRA adapter (null without one); qkv, ctx, pre in the saved type. */
    private record Layer(Tensor qkv, Tensor ctx, Tensor sum1, Tensor mean1, Tensor rstd1, Tensor pre, Tensor sum2,
            Tensor mean2, Tensor rstd2, Tensor[] u) {}

    private record Saved(Tensor ids, Tensor types, Tensor mask, Tensor emb, Tensor mean0, Tensor rstd0, Layer[] layers) {}

    /** trainable: which parameters (by name) get gradients. No dropout. */
    public BertTraining(BertModel model, Predicate<String> trainable) {
        this(model, trainable, DropoutConfig.NONE);
    }

    /** trainable: which parameters (by name) get gradients; dropout as configured (LoRA's from the model). */
    public BertTraining(BertModel model, Predicate<String> trainable, DropoutConfig dropout) {
        this(model, trainable, dropout, false);
    }

    /**
     * As above; recomputeProjections: do not keep the fused QKV projection and the FFN
     * pre-activation (the two largest saved tensors, 44 of ~69 MiB a layer at MiniLM's shape,
     * batch 32 x 128) but redo their GEMMs in backward: ~58% more forward GEMM FLOPs (~30%
     * more GEMM FLOPs in a LoRA step) for ~46% less activation memory (bench/RESULTS.md). Results are
     * identical (same kernels, same inputs).
     */
    public BertTraining(BertModel model, Predicate<String> trainable, DropoutConfig dropout, boolean recomputeProjections) {
        this(null, model, trainable, dropout, recomputeProjections);
    }

    /** As above for a model on a device: gradients and scratch in that backend's memory (null: host). */
    public BertTraining(Backend device, BertModel model, Predicate<String> trainable, DropoutConfig dropout, boolean recomputeProjections) {
        this(device, model, trainable, dropout, recomputeProjections, DType.F32);
    }

    /**
     * As above; savedType: how the activations products read are kept for backward (F32, or BF16:
     * see the class comment).
     */
    public BertTraining(Backend device, BertModel model, Predicate<String> trainable, DropoutConfig dropout, boolean recomputeProjections,
            DType savedType) {
        if (savedType != DType.F32 && savedType != DType.BF16)
            throw new IllegalArgumentException("saved activations are f32 or bf16, not " + savedType);
        if (device != null ? !model.device().equals(device.device()) : !model.device().isHostAccessible())
            throw new IllegalArgumentException("the model is on " + model.device() + ", training memory would be on "
                    + (device == null ? "the host" : device.device()));
        this.device = device;
        this.gradScope = device == null ? new TensorScope("bert gradients", MemoryCategory.GRADIENTS)
                : device.scope("bert gradients", MemoryCategory.GRADIENTS);
        this.scratch = device == null ? new StepArena("layer scratch") : device.stepArena("layer scratch");
        this.model = model;
        this.cfg = model.config();
        this.dropout = dropout;
        this.recomputeProjections = recomputeProjections;
        this.savedType = savedType;
        qkvWeightGrad = new Tensor[cfg.layers()];
        qkvBiasGrad = new Tensor[cfg.layers()];
        for (int l = 0; l < cfg.layers(); l++) {
            String p = "encoder.layer." + l + ".attention.self.";
            boolean w = trainable.test(p + "query.weight") || trainable.test(p + "key.weight") || trainable.test(p + "value.weight");
            boolean b = trainable.test(p + "query.bias") || trainable.test(p + "key.bias") || trainable.test(p + "value.bias");
            // q/k/v train together: their gradients are one GEMM over the fused projection
            if (w) qkvWeightGrad[l] = zeros(model.qkvWeight(l).shape());
            if (b) qkvBiasGrad[l] = zeros(model.qkvBias(l).shape());
            int a = cfg.attentionWidth(l);
            String[] names = {"query", "key", "value"};
            for (int i = 0; i < 3; i++) {
                if (w) grads.put(p + names[i] + ".weight", qkvWeightGrad[l].rows((long) i * a, (long) (i + 1) * a));
                if (b) grads.put(p + names[i] + ".bias", qkvBiasGrad[l].rows((long) i * a, (long) (i + 1) * a));
            }
        }
        for (Map.Entry<String, Tensor> e : model.parameters().entrySet())
            if (!isQkvPart(e.getKey()) && trainable.test(e.getKey()))
                grads.put(e.getKey(), zeros(e.getValue().shape()));
    }

    private Tensor zeros(long... shape) {
        return zero(gradScope.allocate(dev.topa.tensor.DType.F32, shape));
    }

    private Tensor zero(Tensor t) {
        if (device == null) t.fill(0f);
        else device.zero(t);
        return t;
    }

    /** query/key/value weights and biases: their gradients are views into the fused QKV buffers. */
    private static boolean isQkvPart(String name) {
        return name.matches("encoder\\.layer\\.\\d+\\.attention\\.self\\.(query|key|value)\\.(weight|bias)");
    }

    /**
     * Sets the dropout draw of the next forward/backward: masks are a function of (seed, step,
     * site), so a resumed run redraws exactly the masks an unbroken one would have.
     */
    public void setDropoutStep(long seed, long step) {
        this.dropoutSeed = seed;
        this.dropoutStep = step;
    }

    /** The key for a dropout site of the current step. */
    Dropout dropout(double p, int site) {
        return p > 0 ? new Dropout(p, Dropout.key(dropoutSeed, dropoutStep, site)) : Dropout.NONE;
    }

    static int site(int layer, int k) {
        return 1 + 16 * layer + k;
    }

    /** Gradients of the trainable parameters, by name (q/k/v views into fused buffers). */
    public Map<String, Tensor> gradients() {
        return Collections.unmodifiableMap(grads);
    }

    public void zeroGradients() {
        for (int l = 0; l < cfg.layers(); l++) {
            if (qkvWeightGrad[l] != null) zero(qkvWeightGrad[l]);
            if (qkvBiasGrad[l] != null) zero(qkvBiasGrad[l]);
        }
        for (Map.Entry<String, Tensor> e : grads.entrySet())
            if (!isQkvPart(e.getKey())) zero(e.getValue());
    }

    private Tensor p(String name) {
        return model.parameter(name);
    }

    /** Forward that keeps the activations backward needs (in the step arena); returns last_hidden_state. */
    public Tensor forward(Backend be, StepArena arena, Tensor ids, Tensor types, Tensor mask) {
        long b = ids.dim(0), s = ids.dim(1);
        int c = cfg.hidden();
        float eps = cfg.layerNormEps();
        scratch.reset();
        Tensor emb = arena.allocate(DType.F32, b, s, c);
        be.embeddingForward(emb, ids, null, types, p("embeddings.word_embeddings.weight"),
                p("embeddings.position_embeddings.weight"), cfg.typeVocabSize() > 0 ? p("embeddings.token_type_embeddings.weight") : null);
        Tensor mean0 = arena.allocate(DType.F32, b * s), rstd0 = arena.allocate(DType.F32, b * s);
        // layer inputs alternate between two buffers: backward recomputes each from the LayerNorm that made it
        Tensor[] hidden = {arena.allocate(DType.F32, b, s, c), arena.allocate(DType.F32, b, s, c)};
        Tensor h = hidden[0];
        be.layernormForward(h, mean0, rstd0, null, emb, null, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"), eps);
        Dropout d0 = dropout(dropout.hidden(), SITE_EMBEDDINGS);
        if (d0.active()) be.dropout(h, h, d0, false);
        Layer[] layers = new Layer[cfg.layers()];
        // what backward keeps is computed here when kept as it is, else in the scratch and kept as a bf16 copy
        StepArena kept = savedType == DType.F32 ? arena : scratch;
        for (int l = 0; l < cfg.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            int a = cfg.attentionWidth(l), f = cfg.ffn(l);
            StepArena.Mark mark = scratch.mark();
            Tensor[] u = new Tensor[4];
            StepArena projections = recomputeProjections ? scratch : kept;
            Tensor qkv = null, ctx = null, att = scratch.allocate(DType.F32, b, s, c);
            if (a > 0) {
                qkv = projections.allocate(DType.F32, b, s, 3L * a);
                u[BertModel.QKV] = linearForward(be, arena, qkv, h, l, BertModel.QKV, model.qkvWeight(l), model.qkvBias(l));
                ctx = kept.allocate(DType.F32, b, s, a);
                be.attentionForward(ctx, null, qkv, mask, cfg.heads(l), scale(), dropout(dropout.attention(), site(l, SITE_PROBS)));
                u[BertModel.ATT_OUT] = linearForward(be, arena, att, ctx, l, BertModel.ATT_OUT, p(n + "attention.output.dense.weight"),
                        p(n + "attention.output.dense.bias"));
            } else {
                be.broadcastRows(att, p(n + "attention.output.dense.bias")); // no heads left: the block is its bias
            }
            Dropout dAtt = dropout(dropout.hidden(), site(l, SITE_ATT_OUT));
            if (dAtt.active()) be.dropout(att, att, dAtt, false);
            Tensor sum1 = arena.allocate(DType.F32, b, s, c), h1 = scratch.allocate(DType.F32, b, s, c);
            Tensor mean1 = arena.allocate(DType.F32, b * s), rstd1 = arena.allocate(DType.F32, b * s);
            be.layernormForward(h1, mean1, rstd1, sum1, att, h, p(n + "attention.output.LayerNorm.weight"),
                    p(n + "attention.output.LayerNorm.bias"), eps);
            Tensor pre = null, out = scratch.allocate(DType.F32, b, s, c);
            if (f > 0) {
                pre = projections.allocate(DType.F32, b, s, f);
                Tensor act = scratch.allocate(DType.F32, b, s, f);
                u[BertModel.FFN_IN] = linearForward(be, arena, pre, h1, l, BertModel.FFN_IN, p(n + "intermediate.dense.weight"), null);
                be.biasGeluForward(act, pre, p(n + "intermediate.dense.bias"));
                u[BertModel.FFN_OUT] = linearForward(be, arena, out, act, l, BertModel.FFN_OUT, p(n + "output.dense.weight"),
                        p(n + "output.dense.bias"));
            } else {
                be.broadcastRows(out, p(n + "output.dense.bias")); // no neurons left
            }
            Dropout dOut = dropout(dropout.hidden(), site(l, SITE_FFN_OUT));
            if (dOut.active()) be.dropout(out, out, dOut, false);
            Tensor sum2 = arena.allocate(DType.F32, b, s, c), h2 = hidden[(l + 1) % 2];
            Tensor mean2 = arena.allocate(DType.F32, b * s), rstd2 = arena.allocate(DType.F32, b * s);
            be.layernormForward(h2, mean2, rstd2, sum2, out, h1, p(n + "output.LayerNorm.weight"), p(n + "output.LayerNorm.bias"), eps);
            layers[l] = new Layer(recomputeProjections ? null : keep(be, arena, qkv), keep(be, arena, ctx), sum1, mean1, rstd1,
                    recomputeProjections ? null : keep(be, arena, pre), sum2, mean2, rstd2, u);
            scratch.release(mark);
            h = h2;
        }
        saved = new Saved(ids, types, mask, emb, mean0, rstd0, layers);
        return h;
    }

    /** t as backward keeps it: itself (f32), or a bf16 copy in the arena. */
    private Tensor keep(Backend be, StepArena arena, Tensor t) {
        if (t == null || savedType == DType.F32) return t;
        Tensor half = arena.allocate(DType.BF16, t.shape());
        be.convert(half, t);
        return half;
    }

    /** A kept activation as backward's ops read it: itself, or widened to f32 in the layer scratch. */
    private Tensor widen(Backend be, Tensor kept) {
        if (kept.dtype() == DType.F32) return kept;
        Tensor t = scratch.allocate(DType.F32, kept.shape());
        be.convert(t, kept);
        return t;
    }

    /**
     * Layer l's input recomputed into the scratch: the previous layer's output LayerNorm over its
     * kept input, or for layer 0 the embeddings' LayerNorm and dropout (the same kernels on the same
     * values as forward, so the same result).
     */
    private Tensor layerInput(Backend be, int l, long b, long s) {
        int c = cfg.hidden();
        Tensor h = scratch.allocate(DType.F32, b, s, c), stat = scratch.allocate(DType.F32, 2, b * s);
        Tensor mean = stat.rows(0, 1).reshape(b * s), rstd = stat.rows(1, 2).reshape(b * s);
        if (l == 0) {
            be.layernormForward(h, mean, rstd, null, saved.emb(), null, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"),
                    cfg.layerNormEps());
            Dropout d0 = dropout(dropout.hidden(), SITE_EMBEDDINGS);
            if (d0.active()) be.dropout(h, h, d0, false);
        } else {
            String n = "encoder.layer." + (l - 1) + ".";
            be.layernormForward(h, mean, rstd, null, saved.layers()[l - 1].sum2(), null, p(n + "output.LayerNorm.weight"),
                    p(n + "output.LayerNorm.bias"), cfg.layerNormEps());
        }
        return h;
    }

    /** y = x W^T + bias (+ LoRA, its x A^T allocated from arena and returned; else null). */
    private Tensor linearForward(Backend be, StepArena arena, Tensor y, Tensor x, int l, int slot, Tensor w, Tensor bias) {
        BertModel.Adapter ad = model.adapter(l, slot);
        FrozenWeight frozen = frozen(be, l, slot);
        if (ad == null) {
            if (frozen != null) frozen.forward(be, scratch, y, x, bias, null, 0f, null);
            else be.linearForward(y, x, w, bias);
            return null;
        }
        Dropout d = dropout(model.loraDropout(), site(l, SITE_LORA + slot));
        if (frozen instanceof FrozenWeight.BlockSparse sparse) { // adapter masked like the weight; backward recomputes its products
            if (d.active()) throw new IllegalStateException("LoRA dropout on block-sparse weights is not supported (use --lora-dropout 0)");
            sparse.maskedForward(be, scratch, y, x, bias, ad);
            return null;
        }
        Tensor u = arena.allocate(DType.F32, x.numel() / x.dim(-1), ad.a().dim(0));
        Tensor xLora = x;
        if (d.active()) be.dropout(xLora = scratch.allocate(DType.F32, x.shape()), x, d, false);
        if (frozen != null && !d.active()) { // base product from the packed form, the rank-r update fused on top
            frozen.loraForward(be, scratch, y, u, x, bias, ad.a(), ad.scale(), ad.b());
        } else if (frozen != null) {
            be.gemm(false, true, 1f, xLora, ad.a(), 0f, u, null);
            frozen.forward(be, scratch, y, x, bias, u, ad.scale(), ad.b());
        } else {
            be.loraForward(y, u, x, xLora, w, bias, ad.a(), ad.b(), ad.scale());
        }
        return u;
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
        // layer input gradients alternate between two buffers: a layer reads one and writes the other
        Tensor[] pingPong = {arena.allocate(DType.F32, b, s, c), arena.allocate(DType.F32, b, s, c)};
        Tensor dh = dOut;
        for (int l = cfg.layers() - 1; l >= 0; l--) {
            Tensor dIn = pingPong[l % 2];
            layerBackward(be, l, saved.layers()[l], dh, dIn);
            dh = dIn;
        }
        // embeddings: dropout, LayerNorm, then the scatter-add into the tables
        Dropout d0 = dropout(dropout.hidden(), SITE_EMBEDDINGS);
        if (d0.active()) be.dropout(dh, dh, d0, false);
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

    /** Writes dL/d(layer input) into dIn; dOut is only read. */
    private void layerBackward(Backend be, int l, Layer sv, Tensor dOut, Tensor dIn) {
        String n = "encoder.layer." + l + ".";
        long b = dOut.dim(0), s = dOut.dim(1);
        int c = cfg.hidden(), a = cfg.attentionWidth(l), f = cfg.ffn(l);
        StepArena.Mark mark = scratch.mark();
        // LN2: x = dropout(out) + h1  ->  dx2 (shared by the FFN output and the residual to h1)
        Tensor dx2 = scratch.allocate(DType.F32, b, s, c);
        be.layernormBackward(dx2, grads.get(n + "output.LayerNorm.weight"), grads.get(n + "output.LayerNorm.bias"), dOut,
                sv.sum2(), sv.mean2(), sv.rstd2(), p(n + "output.LayerNorm.weight"), false);
        StepArena.Mark ffn = scratch.mark(); // the FFN's temporaries end with its backward
        Tensor dFfnOut = droppedGradient(be, dx2, dropout(dropout.hidden(), site(l, SITE_FFN_OUT)));
        if (f > 0) ffnBackward(be, l, sv, dx2, dFfnOut);
        else if (grads.get(n + "output.dense.bias") != null) be.biasBackward(grads.get(n + "output.dense.bias"), dFfnOut);
        scratch.release(ffn);
        // LN1: x = dropout(att) + in  ->  dIn (the residual), and att's gradient through the dropout
        be.layernormBackward(dIn, grads.get(n + "attention.output.LayerNorm.weight"), grads.get(n + "attention.output.LayerNorm.bias"),
                dx2, sv.sum1(), sv.mean1(), sv.rstd1(), p(n + "attention.output.LayerNorm.weight"), false);
        Tensor dAtt = droppedGradient(be, dIn, dropout(dropout.hidden(), site(l, SITE_ATT_OUT)));
        if (a > 0) attentionBackward(be, l, sv, dAtt, dIn);
        else if (grads.get(n + "attention.output.dense.bias") != null) be.biasBackward(grads.get(n + "attention.output.dense.bias"), dAtt);
        scratch.release(mark);
    }

    /** The FFN block's backward: dx2 (the residual's gradient to h1) += the block's; dFfnOut = dL/d(FFN output). */
    private void ffnBackward(Backend be, int l, Layer sv, Tensor dx2, Tensor dFfnOut) {
        String n = "encoder.layer." + l + ".";
        long b = dx2.dim(0), s = dx2.dim(1);
        int c = cfg.hidden(), f = cfg.ffn(l);
        // h1 = LN1(sum1) recomputed; with recomputeProjections also pre = h1 W1^T
        Tensor h1 = scratch.allocate(DType.F32, b, s, c), stat = scratch.allocate(DType.F32, 2, b * s);
        be.layernormForward(h1, stat.rows(0, 1).reshape(b * s), stat.rows(1, 2).reshape(b * s), null, sv.sum1(), null,
                p(n + "attention.output.LayerNorm.weight"), p(n + "attention.output.LayerNorm.bias"), cfg.layerNormEps());
        Tensor pre = sv.pre() != null ? widen(be, sv.pre()) : null;
        if (pre == null)
            linearForward(be, scratch, pre = scratch.allocate(DType.F32, b, s, f), h1, l, BertModel.FFN_IN,
                    p(n + "intermediate.dense.weight"), null);
        Tensor dAct = scratch.allocate(DType.F32, b, s, f);
        // FFN out: out = act W2^T + b2, act = GELU(pre + b1) recomputed (and dropped right after)
        StepArena.Mark actMark = scratch.mark();
        Tensor act = scratch.allocate(DType.F32, b, s, f);
        be.biasGeluForward(act, pre, p(n + "intermediate.dense.bias"));
        linearBackward(be, l, BertModel.FFN_OUT, dAct, false, grads.get(n + "output.dense.weight"),
                grads.get(n + "output.dense.bias"), dFfnOut, act, sv.u(), p(n + "output.dense.weight"));
        if (maskGradients != null) {
            Tensor g = scratch.allocate(DType.F32, b, f);
            be.groupDot(g, act, dAct, f);
            onHost(be, g, t -> maskGradients.neurons(l, t));
        }
        scratch.release(actMark);
        be.biasGeluBackward(dAct, grads.get(n + "intermediate.dense.bias"), dAct, pre, p(n + "intermediate.dense.bias"));
        // FFN in: pre = h1 W1^T; dh1 = dx2 (residual) + dPre W1, into dx2
        linearBackward(be, l, BertModel.FFN_IN, dx2, true, grads.get(n + "intermediate.dense.weight"), null, dAct, h1, sv.u(),
                p(n + "intermediate.dense.weight"));
    }

    /** Listeners read on the host: a device tensor (small: per example, per unit) is copied for the call. */
    private static void onHost(Backend be, Tensor t, java.util.function.Consumer<Tensor> call) {
        if (t.device().isHostAccessible()) {
            call.accept(t);
            return;
        }
        try (dev.topa.tensor.TensorScope host = new dev.topa.tensor.TensorScope("mask gradients", MemoryCategory.WORKSPACE)) {
            call.accept(be.copyOf(t, host));
        }
    }

    /** The attention block's backward: dIn (the residual's gradient) += the block's; dAtt = dL/d(attention output). */
    private void attentionBackward(Backend be, int l, Layer sv, Tensor dAtt, Tensor dIn) {
        String n = "encoder.layer." + l + ".";
        long b = dIn.dim(0), s = dIn.dim(1);
        int a = cfg.attentionWidth(l);
        // attention output: att = ctx Wo^T + bo
        Tensor dCtx = scratch.allocate(DType.F32, b, s, a), ctx = widen(be, sv.ctx());
        linearBackward(be, l, BertModel.ATT_OUT, dCtx, false, grads.get(n + "attention.output.dense.weight"),
                grads.get(n + "attention.output.dense.bias"), dAtt, ctx, sv.u(), p(n + "attention.output.dense.weight"));
        if (maskGradients != null) {
            Tensor g = scratch.allocate(DType.F32, b, cfg.heads(l));
            be.groupDot(g, ctx, dCtx, cfg.heads(l));
            onHost(be, g, t -> maskGradients.heads(l, t));
        }
        Tensor in = layerInput(be, l, b, s);
        Tensor qkv = sv.qkv() != null ? widen(be, sv.qkv()) : null;
        if (qkv == null)
            linearForward(be, scratch, qkv = scratch.allocate(DType.F32, b, s, 3L * a), in, l, BertModel.QKV, model.qkvWeight(l),
                    model.qkvBias(l));
        Tensor dQkv = scratch.allocate(DType.F32, b, s, 3L * a);
        be.attentionBackward(dQkv, dCtx, null, qkv, saved.mask(), cfg.heads(l), scale(),
                dropout(dropout.attention(), site(l, SITE_PROBS)));
        // QKV: qkv = in Wqkv^T + bqkv; d(in) += dQkv Wqkv
        linearBackward(be, l, BertModel.QKV, dIn, true, qkvWeightGrad[l], qkvBiasGrad[l], dQkv, in, sv.u(), model.qkvWeight(l));
    }

    /**
     * A slot's weight in packed form when it is frozen here and the model has one (block-sparse
     * before bf16), else null: the dense fp32 path.
     */
    private FrozenWeight frozen(Backend be, int l, int slot) {
        String n = BertModel.slotName(l, slot);
        boolean trained = slot == BertModel.QKV ? qkvWeightGrad[l] != null : grads.containsKey(n + ".weight");
        if (trained) {
            if (model.blockMask(l, slot) != null)
                throw new IllegalStateException(n + " is block-sparse: it trains frozen (adapters on top), not by full fine-tuning");
            return null;
        }
        FrozenWeight sparse = model.frozenSparse(be, l, slot);
        if (sparse != null) return sparse;
        dev.topa.backend.Bf16Weight[] half = model.bf16(l, slot);
        return half == null ? null : new FrozenWeight.Bf16(half[0], half[1]);
    }

    /** The gradient before a dropout site from the one after it (dy itself when the site is off). */
    private Tensor droppedGradient(Backend be, Tensor dy, Dropout d) {
        if (!d.active()) return dy;
        Tensor out = scratch.allocate(DType.F32, dy.shape());
        be.dropout(out, dy, d, false);
        return out;
    }

    /**
     * Backward of one linear slot, y = x W^T + b (+ LoRA): dx (accumulate: +=) always; dw, dbias
     * when trainable (non-null); the adapter's dA, dB when the slot has one. Without LoRA dropout
     * the adapter's backward is the fused one (dY B once, one augmented GEMM for dx); with it, dx
     * gets the adapter's share through the regenerated mask.
     */
    private void linearBackward(Backend be, int l, int slot, Tensor dx, boolean accumulate, Tensor dw, Tensor dbias, Tensor dy,
            Tensor x, Tensor[] u, Tensor w) {
        BertModel.Adapter ad = model.adapter(l, slot);
        FrozenWeight frozen = dw == null ? frozen(be, l, slot) : null;
        if (ad == null) {
            if (dw != null) be.gemm(true, false, 1f, dy, x, 1f, dw, null);
            if (dbias != null) be.biasBackward(dbias, dy);
            if (frozen != null) frozen.inputGradient(be, dx, dy, accumulate, null, 0f, null);
            else be.gemm(false, false, 1f, dy, w, accumulate ? 1f : 0f, dx, null);
            if (weightGradients != null) weightGradients.linear(be, l, slot, w, dy, x, null, null, null);
            return;
        }
        String n = BertModel.slotName(l, slot);
        Tensor dA = grads.get(n + ".lora_A"), dB = grads.get(n + ".lora_B");
        Dropout d = dropout(model.loraDropout(), site(l, SITE_LORA + slot));
        if (frozen instanceof FrozenWeight.BlockSparse sparse) { // the adapter masked like the weight
            sparse.maskedBackward(be, scratch, dx, accumulate, dy, x, ad, dA, dB);
            if (dbias != null) be.biasBackward(dbias, dy);
        } else {
            Tensor g = scratch.allocate(DType.F32, u[slot].dim(0), u[slot].dim(1));
            if (frozen != null) { // frozen base in packed form: dX = dY W there, the adapter's share fused, or through the dropout mask
                Tensor xLora = x;
                if (d.active()) be.dropout(xLora = scratch.allocate(DType.F32, x.shape()), x, d, false);
                if (d.active()) {
                    be.gemm(false, false, 1f, dy, ad.b(), 0f, g, null);
                    frozen.inputGradient(be, dx, dy, accumulate, null, 0f, null);
                    Tensor dxLora = scratch.allocate(DType.F32, dx.shape());
                    be.gemm(false, false, ad.scale(), g, ad.a(), 0f, dxLora, null);
                    be.dropout(dx, dxLora, d, true);
                } else {
                    frozen.loraInputGradient(be, dx, dy, accumulate, g, ad.b(), ad.scale(), ad.a());
                }
                if (dA != null) be.gemm(true, false, ad.scale(), g, xLora, 1f, dA, null);
                if (dB != null) be.gemm(true, false, ad.scale(), dy, u[slot], 1f, dB, null);
                if (dbias != null) be.biasBackward(dbias, dy);
            } else if (!d.active()) {
                be.loraBackward(dx, accumulate, dw, dbias, dA, dB, g, dy, x, u[slot], w, ad.a(), ad.b(), ad.scale());
            } else {
                Tensor xLora = scratch.allocate(DType.F32, x.shape()), dxLora = scratch.allocate(DType.F32, dx.shape());
                be.dropout(xLora, x, d, false);
                // frozen-base part and dA/dB/dW/dbias from the fused op (its dx is the base's only: zero rank-r share)
                be.gemm(false, false, 1f, dy, ad.b(), 0f, g, null);
                be.gemm(false, false, ad.scale(), g, ad.a(), 0f, dxLora, null);
                be.gemm(false, false, 1f, dy, w, accumulate ? 1f : 0f, dx, null);
                be.dropout(dx, dxLora, d, true);
                if (dA != null) be.gemm(true, false, ad.scale(), g, xLora, 1f, dA, null);
                if (dB != null) be.gemm(true, false, ad.scale(), dy, u[slot], 1f, dB, null);
                if (dbias != null) be.biasBackward(dbias, dy);
                if (dw != null) be.gemm(true, false, 1f, dy, x, 1f, dw, null);
            }
        }
        if (ad.blockDiagonal() && dB != null) be.zeroOffDiagonal(dB, 3);
        if (weightGradients != null) weightGradients.linear(be, l, slot, w, dy, x, ad, dA, dB);
    }

    @Override
    public void close() {
        scratch.close();
        gradScope.close();
    }
}
