package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.backend.Dropout;
import dev.topa.backend.LinearWeight;
import dev.topa.backend.Op;
import dev.topa.model.BertModel.Norm;
import dev.topa.model.BertModel.Saved;
import dev.topa.model.BertNames.Slot;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.Collections;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;
import java.util.function.Predicate;

/**
 * Training of a {@link BertModel}: its forward pass run with this as the tape (keeping what backward
 * needs, drawing dropout), and the explicit backward, layer by layer as in llm.c: no general
 * autograd. Only trainable parameters get gradient buffers (category gradients); through frozen
 * ones backward computes dX only.
 *
 * <p>Kept per layer (in the step arena): the fused QKV projection, the attention context, both
 * LayerNorm inputs with their mean/rstd, the FFN pre-activation (product without bias) and LoRA's
 * x A^T; with recomputeProjections the QKV projection and the FFN pre-activation are recomputed in
 * backward instead. Recomputed in backward instead of kept, because each costs far less to redo
 * than its memory is worth: the layer input (the previous LayerNorm's output, or the embeddings'),
 * the attention probabilities (inside the attention backward kernel, per head), the first
 * LayerNorm's output, the GELU output, and every dropout mask (counter-based, see {@link Dropout}).
 * Per-layer temporaries of forward and backward live in a scratch arena released after each layer,
 * so the peak holds one layer's temporaries, not six.
 *
 * <p>Kept activations may be bf16 (mixed precision, as autocast keeps a product's inputs and
 * outputs): the context, the QKV projection and the FFN pre-activation -- the tensors products
 * read, rounded as a bf16 product would round them anyway. The LayerNorm inputs stay fp32: the
 * residual stream carries outlier features, and rounding x before (x - mean) * rstd would cost
 * their normalised values up to |x| / std times bf16's 2^-9. Backward widens each kept tensor back
 * into its per-layer scratch, so every op still reads and writes fp32.
 */
public final class BertTraining implements AutoCloseable, BertModel.Tape {
    /** How a run trains: which parameters, dropout, recomputation, the type activations are kept in (F32 or BF16). */
    public record Options(Predicate<String> trainable, DropoutConfig dropout, boolean recomputeProjections, DType savedType) {
        public Options {
            if (savedType != DType.F32 && savedType != DType.BF16)
                throw new IllegalArgumentException("saved activations are f32 or bf16, not " + savedType);
        }

        /** No dropout, nothing recomputed, fp32. */
        public static Options of(Predicate<String> trainable) {
            return new Options(trainable, DropoutConfig.NONE, false, DType.F32);
        }
    }

    private final BertModel model;
    private final BertConfig cfg;
    /** Where gradients and per-layer scratch live: the model's device (null: host memory). */
    private final Backend device;
    private final TensorAllocator gradScope;
    private final Map<String, Tensor> grads = new LinkedHashMap<>();
    /** Per layer and slot: the gradients its backward accumulates (dW, dbias, dA, dB; null where frozen). */
    private final LinearWeight.Gradients[][] slotGrads;
    private final Options options;
    /** Per-layer temporaries (forward and backward), released after each layer. */
    private final StepArena scratch;
    private long dropoutSeed, dropoutStep;
    private MaskGradientListener maskGradients;
    private WeightGradientListener weightGradients;
    private Embedded embedded;
    private Saved[] saved;
    /** Hidden-state targets per layer (null: none): those set for the next forward, those of the last forward (for its backward). */
    private Tensor[] hiddenTargets, matchedTargets;
    private float hiddenWeight;

    private record Embedded(Tensor ids, Tensor types, Tensor mask, Tensor emb, Tensor mean, Tensor rstd) {}

    /**
     * Receives, during backward, per example the gradient of a multiplicative mask on each
     * attention head (ctx_h' = m_h ctx_h) and each FFN neuron (act_j' = m_j act_j) of a layer, at
     * m = 1: perExample [B, heads] or [B, ffn], valid only during the call.
     */
    public interface MaskGradientListener {
        void heads(int layer, Tensor perExample);

        void neurons(int layer, Tensor perExample);
    }

    /**
     * Sees, after each linear slot's backward, what weight scores need: the slot's weight w
     * (the fused [3A, C] one for QKV), its output gradient dy and input x (so dL/dW = dy^T x can be
     * formed one slot at a time, never kept), and its adapter with this step's adapter gradients
     * (null without one). Valid only during the call.
     */
    public interface WeightGradientListener {
        void linear(Backend be, int layer, Slot slot, Tensor w, Tensor dy, Tensor x, Adapter adapter, Tensor dA, Tensor dB);
    }

    /** Host memory, no dropout, nothing recomputed, fp32. */
    public BertTraining(BertModel model, Predicate<String> trainable) {
        this(null, model, Options.of(trainable));
    }

    /**
     * Training state for a model on a device: gradients and scratch in that backend's memory (null:
     * host memory, for a model there).
     */
    public BertTraining(Backend device, BertModel model, Options options) {
        model.requireWhole("training"); // before anything is allocated
        if (device != null ? !model.device().equals(device.device()) : !model.device().isHostAccessible())
            throw new IllegalArgumentException("the model is on " + model.device() + ", training memory would be on "
                    + (device == null ? "the host" : device.device()));
        this.device = device;
        this.model = model;
        this.cfg = model.config();
        this.options = options;
        this.gradScope = device == null ? new TensorScope("bert gradients", MemoryCategory.GRADIENTS)
                : device.scope("bert gradients", MemoryCategory.GRADIENTS);
        this.scratch = device == null ? new StepArena("layer scratch") : device.stepArena("layer scratch");
        Predicate<String> trainable = options.trainable();
        slotGrads = new LinearWeight.Gradients[cfg.layers()][Slot.values().length];
        Tensor[] qkvW = new Tensor[cfg.layers()], qkvB = new Tensor[cfg.layers()];
        for (int l = 0; l < cfg.layers(); l++) { // q/k/v train together: their gradients are one product over the fused projection
            Linear qkv = model.layer(l).slot(Slot.QKV);
            boolean w = false, b = false;
            for (BertNames.Module m : BertNames.QKV_PARTS) {
                w |= trainable.test(BertNames.of(l, m, BertNames.WEIGHT));
                b |= trainable.test(BertNames.of(l, m, BertNames.BIAS));
            }
            if (w) qkvW[l] = zeros(qkv.weight("training").shape());
            if (b) qkvB[l] = zeros(qkv.bias.shape());
            int a = cfg.attentionWidth(l);
            for (int i = 0; i < 3; i++) {
                if (w) grads.put(BertNames.of(l, BertNames.QKV_PARTS[i], BertNames.WEIGHT), qkvW[l].rows((long) i * a, (long) (i + 1) * a));
                if (b) grads.put(BertNames.of(l, BertNames.QKV_PARTS[i], BertNames.BIAS), qkvB[l].rows((long) i * a, (long) (i + 1) * a));
            }
        }
        for (Map.Entry<String, Tensor> e : model.parameters().entrySet())
            if (!isQkvPart(e.getKey()) && trainable.test(e.getKey())) grads.put(e.getKey(), zeros(e.getValue().shape()));
        for (int l = 0; l < cfg.layers(); l++)
            for (Slot slot : Slot.values()) {
                Linear lin = model.layer(l).slot(slot);
                String n = lin.name;
                Tensor dA = grads.get(n + "." + BertNames.LORA_A), dB = grads.get(n + "." + BertNames.LORA_B);
                LinearWeight.Gradients g = slot == Slot.QKV ? new LinearWeight.Gradients(qkvW[l], qkvB[l], dA, dB)
                        : new LinearWeight.Gradients(grads.get(n + "." + BertNames.WEIGHT), grads.get(n + "." + BertNames.BIAS), dA, dB);
                slotGrads[l][slot.ordinal()] = g;
                if (lin.blockMask == null) continue;
                if (g.weight() != null) {
                    close();
                    throw new IllegalArgumentException(n + " is block-sparse: it trains frozen (adapters on top), not by full fine-tuning");
                }
                if (lin.adapter != null && model.loraDropout() > 0) {
                    close();
                    throw new IllegalArgumentException("LoRA dropout on block-sparse weights is not supported (" + n + "; use --lora-dropout 0)");
                }
            }
    }

    /** The backend ops a step of this training needs beyond the required ones (see {@link Backend#require}). */
    public Set<Op> requiredOps() {
        Set<Op> ops = EnumSet.noneOf(Op.class);
        if (options.dropout().attention() > 0) ops.add(Op.ATTENTION_DROPOUT);
        if (maskGradients != null) ops.add(Op.IMPORTANCE);
        if (weightGradients != null) ops.add(Op.IMPORTANCE);
        if (model.blockSparse()) ops.add(Op.BLOCK_SPARSE);
        return ops;
    }

    private Tensor zeros(long... shape) {
        Tensor t = gradScope.allocate(DType.F32, shape);
        zero(t);
        return t;
    }

    private void zero(Tensor t) {
        if (device == null) t.fill(0f);
        else device.zero(t);
    }

    /** query/key/value weights and biases: their gradients are views into the fused QKV buffers. */
    private static boolean isQkvPart(String name) {
        BertNames.Parsed p = BertNames.parse(name);
        return p != null && (p.tensor().equals(BertNames.WEIGHT) || p.tensor().equals(BertNames.BIAS))
                && (p.module() == BertNames.Module.QUERY || p.module() == BertNames.Module.KEY || p.module() == BertNames.Module.VALUE);
    }

    /** Collects head and neuron mask gradients in every following backward (null: stop). */
    public void setMaskGradientListener(MaskGradientListener listener) {
        this.maskGradients = listener;
    }

    /** Calls the listener after every linear slot's backward (null: stop). */
    public void setWeightGradientListener(WeightGradientListener listener) {
        this.weightGradients = listener;
    }

    /**
     * Sets the dropout draw of the next forward/backward: masks are a function of (seed, step,
     * site), so a resumed run redraws exactly the masks an unbroken one would have.
     */
    public void setDropoutStep(long seed, long step) {
        this.dropoutSeed = seed;
        this.dropoutStep = step;
    }

    /** Gradients of the trainable parameters, by name (q/k/v views into fused buffers). */
    public Map<String, Tensor> gradients() {
        return Collections.unmodifiableMap(grads);
    }

    public void zeroGradients() {
        for (LinearWeight.Gradients[] layer : slotGrads) {
            LinearWeight.Gradients qkv = layer[Slot.QKV.ordinal()];
            if (qkv.weight() != null) zero(qkv.weight());
            if (qkv.bias() != null) zero(qkv.bias());
        }
        for (Map.Entry<String, Tensor> e : grads.entrySet())
            if (!isQkvPart(e.getKey())) zero(e.getValue());
    }

    // ================================================================ the tape of the forward pass

    @Override
    public StepArena scratch() {
        return scratch;
    }

    @Override
    public Dropout dropout(double p, int site) {
        return p > 0 ? new Dropout(p, Dropout.key(dropoutSeed, dropoutStep, site)) : Dropout.NONE;
    }

    @Override
    public double hiddenDropout() {
        return options.dropout().hidden();
    }

    @Override
    public double attentionDropout() {
        return options.dropout().attention();
    }

    @Override
    public boolean trainsWeight(int layer, Slot slot) {
        return slotGrads[layer][slot.ordinal()].weight() != null;
    }

    @Override
    public boolean recomputesProjections() {
        return options.recomputeProjections();
    }

    @Override
    public StepArena kept(StepArena arena) {
        return options.savedType() == DType.F32 ? arena : scratch;
    }

    /** The type backward's kept activations are in (F32 or BF16): hidden-state targets are kept so too. */
    public DType keptType() {
        return options.savedType();
    }

    /** t as backward keeps it: itself (f32), or a bf16 copy in the arena. */
    @Override
    public Tensor keep(Backend be, StepArena arena, Tensor t) {
        if (t == null || options.savedType() == DType.F32) return t;
        Tensor half = arena.allocate(DType.BF16, t.shape());
        be.convert(half, t);
        return half;
    }

    @Override
    public void embeddings(Tensor ids, Tensor types, Tensor mask, Tensor emb, Tensor mean, Tensor rstd) {
        embedded = new Embedded(ids, types, mask, emb, mean, rstd);
    }

    @Override
    public void layer(int l, Saved s) {
        saved[l] = s;
    }

    /**
     * The next forward also matches layer l's output to targets[l] (layer-wise distillation; a null
     * entry: not that layer): weight x {@link Backend#hiddenMatchForward} per matched layer, over the
     * forward's real tokens. The targets must stay valid until that forward's backward, which adds
     * the term's gradient where layer l's output gradient forms, from the layer's output recomputed
     * there (one LayerNorm of what the forward keeps anyway): nothing per layer is kept for it
     * beyond the targets themselves. For one step: that backward clears it.
     */
    public void matchHidden(Tensor[] targets, float weight) {
        if (targets.length != cfg.layers())
            throw new IllegalArgumentException("hidden-state targets for " + targets.length + " layers, the model has " + cfg.layers());
        hiddenTargets = targets.clone();
        hiddenWeight = weight;
    }

    /** Forward that keeps the activations backward needs (in the step arena); returns last_hidden_state. */
    public Tensor forward(Backend be, StepArena arena, Tensor ids, Tensor types, Tensor mask) {
        scratch.reset();
        saved = new Saved[cfg.layers()];
        matchedTargets = hiddenTargets;
        hiddenTargets = null;
        return model.encode(be, arena, ids, null, types, mask, null, null, this, null);
    }

    // ================================================================ backward

    private Tensor p(String name) {
        return model.parameter(name);
    }

    private java.util.function.IntConsumer layerDone = l -> {};

    /**
     * Called in backward as soon as layer l's parameter gradients are complete (the last layer first),
     * so a data-parallel trainer can start summing them across processes while the layers below
     * are still computed.
     */
    public void onLayerGradients(java.util.function.IntConsumer done) {
        layerDone = done == null ? l -> {} : done;
    }

    /** Accumulates parameter gradients from dOut = dL/d(last_hidden_state) of the last forward. */
    public void backward(Backend be, StepArena arena, Tensor dOut) {
        if (embedded == null || !dOut.isAlive() || !embedded.emb().isAlive())
            throw new IllegalStateException("backward needs the activations of a forward in the same step");
        long b = dOut.dim(0), s = dOut.dim(1);
        int c = cfg.hidden();
        // layer input gradients alternate between two buffers: a layer reads one and writes the other
        Tensor[] pingPong = {arena.allocate(DType.F32, b, s, c), arena.allocate(DType.F32, b, s, c)};
        Tensor dh = dOut;
        Tensor[] matched = matchedTargets;
        matchedTargets = null;
        if (matched != null && matched[cfg.layers() - 1] != null) { // dOut is the caller's: the sum goes to a buffer of its own
            dh = arena.allocate(DType.F32, b, s, c);
            be.copy(dh, dOut);
        }
        for (int l = cfg.layers() - 1; l >= 0; l--) {
            if (matched != null && matched[l] != null) matchedGradient(be, l, dh, matched[l]);
            Tensor dIn = pingPong[l % 2];
            layerBackward(be, l, saved[l], dh, dIn);
            layerDone.accept(l);
            dh = dIn;
        }
        // embeddings: dropout, LayerNorm, then the scatter-add into the tables
        Dropout d0 = dropout(hiddenDropout(), BertModel.SITE_EMBEDDINGS);
        if (d0.active()) be.dropout(dh, dh, d0, false);
        Tensor dEmb = arena.allocate(DType.F32, b, s, c);
        normBackward(be, dEmb, dh, embedded.emb(), embedded.mean(), embedded.rstd(), model.embeddingsNorm());
        Tensor dwte = grads.get(BertNames.WORD_EMBEDDINGS), dwpe = grads.get(BertNames.POSITION_EMBEDDINGS);
        Tensor dwtt = grads.get(BertNames.TYPE_EMBEDDINGS);
        if (dwte != null || dwpe != null || dwtt != null)
            be.embeddingBackward(dwte, dwpe, dwtt, dEmb, embedded.ids(), null, embedded.types(), p(BertNames.WORD_EMBEDDINGS),
                    p(BertNames.POSITION_EMBEDDINGS), cfg.typeVocabSize() > 0 ? p(BertNames.TYPE_EMBEDDINGS) : null);
    }

    /** dh (dL/d(layer l's output)) += the hidden-state matching term's gradient, from the output recomputed: LN2(sum2). */
    private void matchedGradient(Backend be, int l, Tensor dh, Tensor target) {
        if (!target.isAlive())
            throw new IllegalStateException("layer " + l + "'s hidden-state target was freed before backward: it must live as long as the step");
        StepArena.Mark mark = scratch.mark();
        Tensor h = scratch.allocate(DType.F32, dh.shape());
        normForward(be, h, saved[l].sum2(), model.layer(l).outputNorm());
        be.hiddenMatchBackward(dh, h, widen(be, target), embedded.mask(), hiddenWeight);
        scratch.release(mark);
    }

    /** dx = dLN/dx of a LayerNorm whose input was x; its gamma and beta gradients accumulate where they train. */
    private void normBackward(Backend be, Tensor dx, Tensor dy, Tensor x, Tensor mean, Tensor rstd, Norm norm) {
        be.layernormBackward(dx, grads.get(norm.name() + "." + BertNames.WEIGHT), grads.get(norm.name() + "." + BertNames.BIAS), dy, x, mean,
                rstd, norm.gamma(), false);
    }

    /** Writes dL/d(layer input) into dIn; dOut is only read. */
    private void layerBackward(Backend be, int l, Saved sv, Tensor dOut, Tensor dIn) {
        BertModel.Layer layer = model.layer(l);
        long b = dOut.dim(0), s = dOut.dim(1);
        int c = cfg.hidden(), a = cfg.attentionWidth(l), f = cfg.ffn(l);
        StepArena.Mark mark = scratch.mark();
        // LN2: x = dropout(out) + h1  ->  dx2 (shared by the FFN output and the residual to h1)
        Tensor dx2 = scratch.allocate(DType.F32, b, s, c);
        normBackward(be, dx2, dOut, sv.sum2(), sv.mean2(), sv.rstd2(), layer.outputNorm());
        StepArena.Mark ffn = scratch.mark(); // the FFN's temporaries end with its backward
        Tensor dFfnOut = droppedGradient(be, dx2, dropout(hiddenDropout(), BertModel.site(l, BertModel.SITE_FFN_OUT)));
        Tensor dFfnBias = slotGrads[l][Slot.FFN_OUT.ordinal()].bias();
        if (f > 0) ffnBackward(be, l, sv, dx2, dFfnOut);
        else if (dFfnBias != null) be.biasBackward(dFfnBias, dFfnOut);
        scratch.release(ffn);
        // LN1: x = dropout(att) + in  ->  dIn (the residual), and att's gradient through the dropout
        normBackward(be, dIn, dx2, sv.sum1(), sv.mean1(), sv.rstd1(), layer.attentionNorm());
        Tensor dAtt = droppedGradient(be, dIn, dropout(hiddenDropout(), BertModel.site(l, BertModel.SITE_ATT_OUT)));
        Tensor dAttBias = slotGrads[l][Slot.ATTENTION_OUTPUT.ordinal()].bias();
        if (a > 0) attentionBackward(be, l, sv, dAtt, dIn);
        else if (dAttBias != null) be.biasBackward(dAttBias, dAtt);
        scratch.release(mark);
    }

    /** The FFN block's backward: dx2 (the residual's gradient to h1) += the block's; dFfnOut = dL/d(FFN output). */
    private void ffnBackward(Backend be, int l, Saved sv, Tensor dx2, Tensor dFfnOut) {
        BertModel.Layer layer = model.layer(l);
        long b = dx2.dim(0), s = dx2.dim(1);
        int c = cfg.hidden(), f = cfg.ffn(l);
        // h1 = LN1(sum1) recomputed; with recomputeProjections also pre = h1 W1^T
        Tensor h1 = scratch.allocate(DType.F32, b, s, c);
        normForward(be, h1, sv.sum1(), layer.attentionNorm());
        Tensor pre = sv.pre() != null ? widen(be, sv.pre()) : null;
        if (pre == null)
            model.linear(be, scratch, scratch, pre = scratch.allocate(DType.F32, b, s, f), h1, l, Slot.FFN_IN, null, null, this);
        Tensor dAct = scratch.allocate(DType.F32, b, s, f);
        Tensor ffnInBias = layer.slot(Slot.FFN_IN).bias;
        // FFN out: out = act W2^T + b2, act = GELU(pre + b1) recomputed (and dropped right after)
        StepArena.Mark actMark = scratch.mark();
        Tensor act = scratch.allocate(DType.F32, b, s, f);
        be.biasGeluForward(act, pre, ffnInBias);
        linearBackward(be, l, Slot.FFN_OUT, dAct, false, dFfnOut, act, sv.u());
        if (maskGradients != null) {
            Tensor g = scratch.allocate(DType.F32, b, f);
            be.groupDot(g, act, dAct, f);
            onHost(be, g, t -> maskGradients.neurons(l, t));
        }
        scratch.release(actMark);
        be.biasGeluBackward(dAct, slotGrads[l][Slot.FFN_IN.ordinal()].bias(), dAct, pre, ffnInBias);
        // FFN in: pre = h1 W1^T (its bias went with GELU); dh1 = dx2 (residual) + dPre W1, into dx2
        LinearWeight.Gradients g = slotGrads[l][Slot.FFN_IN.ordinal()];
        linearBackward(be, l, Slot.FFN_IN, dx2, true, dAct, h1, sv.u(), new LinearWeight.Gradients(g.weight(), null, g.a(), g.b()));
    }

    /** The attention block's backward: dIn (the residual's gradient) += the block's; dAtt = dL/d(attention output). */
    private void attentionBackward(Backend be, int l, Saved sv, Tensor dAtt, Tensor dIn) {
        long b = dIn.dim(0), s = dIn.dim(1);
        int a = cfg.attentionWidth(l);
        // attention output: att = ctx Wo^T + bo
        Tensor dCtx = scratch.allocate(DType.F32, b, s, a), ctx = widen(be, sv.ctx());
        linearBackward(be, l, Slot.ATTENTION_OUTPUT, dCtx, false, dAtt, ctx, sv.u());
        if (maskGradients != null) {
            Tensor g = scratch.allocate(DType.F32, b, cfg.heads(l));
            be.groupDot(g, ctx, dCtx, cfg.heads(l));
            onHost(be, g, t -> maskGradients.heads(l, t));
        }
        Tensor in = layerInput(be, l, b, s);
        Tensor qkv = sv.qkv() != null ? widen(be, sv.qkv()) : null;
        if (qkv == null) model.linear(be, scratch, scratch, qkv = scratch.allocate(DType.F32, b, s, 3L * a), in, l, Slot.QKV,
                model.layer(l).slot(Slot.QKV).bias, null, this);
        Tensor dQkv = scratch.allocate(DType.F32, b, s, 3L * a);
        be.attentionBackward(dQkv, dCtx, null, qkv, embedded.mask(), cfg.heads(l), model.attentionScale(),
                dropout(attentionDropout(), BertModel.site(l, BertModel.SITE_PROBS)));
        // QKV: qkv = in Wqkv^T + bqkv; d(in) += dQkv Wqkv
        linearBackward(be, l, Slot.QKV, dIn, true, dQkv, in, sv.u());
    }

    /** Listeners read on the host: a device tensor (small: per example, per unit) is copied for the call. */
    private static void onHost(Backend be, Tensor t, Consumer<Tensor> call) {
        if (t.device().isHostAccessible()) {
            call.accept(t);
            return;
        }
        try (TensorScope host = new TensorScope("mask gradients", MemoryCategory.WORKSPACE)) {
            call.accept(be.copyOf(t, host));
        }
    }

    /** A kept activation as backward's ops read it: itself, or widened to f32 in the layer scratch. */
    private Tensor widen(Backend be, Tensor kept) {
        if (kept.dtype() == DType.F32) return kept;
        Tensor t = scratch.allocate(DType.F32, kept.shape());
        be.convert(t, kept);
        return t;
    }

    /** out = LN(x) with fresh statistics in the scratch (the same kernel on the same values as forward: the same result). */
    private void normForward(Backend be, Tensor out, Tensor x, Norm norm) {
        long rows = x.numel() / x.dim(-1);
        Tensor stat = scratch.allocate(DType.F32, 2, rows);
        be.layernormForward(out, stat.rows(0, 1).reshape(rows), stat.rows(1, 2).reshape(rows), null, x, null, norm.gamma(), norm.beta(),
                cfg.layerNormEps());
    }

    /**
     * Layer l's input recomputed into the scratch: the previous layer's output LayerNorm over its
     * kept input, or for layer 0 the embeddings' LayerNorm and dropout.
     */
    private Tensor layerInput(Backend be, int l, long b, long s) {
        Tensor h = scratch.allocate(DType.F32, b, s, cfg.hidden());
        if (l == 0) {
            normForward(be, h, embedded.emb(), model.embeddingsNorm());
            Dropout d0 = dropout(hiddenDropout(), BertModel.SITE_EMBEDDINGS);
            if (d0.active()) be.dropout(h, h, d0, false);
        } else {
            normForward(be, h, saved[l - 1].sum2(), model.layer(l - 1).outputNorm());
        }
        return h;
    }

    /** The gradient before a dropout site from the one after it (dy itself when the site is off). */
    private Tensor droppedGradient(Backend be, Tensor dy, Dropout d) {
        if (!d.active()) return dy;
        Tensor out = scratch.allocate(DType.F32, dy.shape());
        be.dropout(out, dy, d, false);
        return out;
    }

    private void linearBackward(Backend be, int l, Slot slot, Tensor dx, boolean accumulate, Tensor dy, Tensor x, Tensor[] u) {
        linearBackward(be, l, slot, dx, accumulate, dy, x, u, slotGrads[l][slot.ordinal()]);
    }

    /**
     * Backward of one linear slot in the form forward multiplied it in: dx (accumulate: +=) always, the
     * gradients grads has tensors for; then the fused QKV adapter's B is kept block-diagonal and the
     * weight-gradient listener sees the slot.
     */
    private void linearBackward(Backend be, int l, Slot slot, Tensor dx, boolean accumulate, Tensor dy, Tensor x, Tensor[] u,
            LinearWeight.Gradients grads) {
        Linear lin = model.layer(l).slot(slot);
        Adapter ad = lin.adapter;
        Dropout d = ad != null ? dropout(model.loraDropout(), BertModel.site(l, BertModel.SITE_LORA + slot.ordinal())) : Dropout.NONE;
        lin.training(be, grads.weight() != null).backward(be, scratch, dx, accumulate, dy, x, u[slot.ordinal()],
                ad == null ? null : ad.lowRank(), d, grads);
        if (ad != null && ad.blockDiagonal() && grads.b() != null) be.zeroOffDiagonal(grads.b(), 3);
        if (weightGradients != null) weightGradients.linear(be, l, slot, lin.weight, dy, x, ad, grads.a(), grads.b());
    }

    @Override
    public void close() {
        scratch.close();
        gradScope.close();
    }
}
