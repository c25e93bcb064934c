package dev.topa.train;

import dev.topa.glue.GlueTask;
import dev.topa.model.BertNames;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.LoraConfig;
import dev.topa.tensor.DType;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.RecordComponent;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * Everything that defines a fine-tuning run besides the model and the data: what {@code topa
 * finetune} trains with, what the PyTorch reference replays (bench/glue.sh), what report.json
 * records. {@link #defaults} gives the per-task defaults.
 */
public record Recipe(Method method, int epochs, double lr, int batchSize, int maxSeqLen, double warmupRatio,
        double weightDecay, double maxGradNorm, double hiddenDropout, double attentionDropout, int loraRank,
        double loraAlpha, double loraDropout, Set<LoraConfig.Target> loraTargets, boolean recomputeProjections, Precision basePrecision,
        Precision activationPrecision, long seed) {

    /**
     * How frozen base weights multiply: fp32, or bf16 products with fp32 sums (LoRA only; the
     * faster where measured so, e.g. ~1.7x on Zen 4). For activations: how those that products read are kept for backward.
     */
    public enum Precision {
        FP32, BF16;

        public DType dtype() {
            return this == FP32 ? DType.F32 : DType.BF16;
        }
    }

    public enum Method {
        /** full: every weight trains; lora: adapters on a frozen backbone; prune: structured pruning, then full fine-tuning of what remains. */
        FULL, LORA, PRUNE;

        public String label() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    public Recipe {
        if (epochs < 1) throw new IllegalArgumentException("epochs must be >= 1, got " + epochs);
        if (batchSize < 1) throw new IllegalArgumentException("batch size must be >= 1, got " + batchSize);
        if (!(lr > 0)) throw new IllegalArgumentException("learning rate must be > 0, got " + lr);
        if (maxSeqLen < 2) throw new IllegalArgumentException("max sequence length must be >= 2, got " + maxSeqLen);
        if (!(warmupRatio >= 0 && warmupRatio <= 1)) throw new IllegalArgumentException("warmup ratio must be in [0, 1], got " + warmupRatio);
        new DropoutConfig(hiddenDropout, attentionDropout); // validates
        loraTargets = Set.copyOf(loraTargets);
        if (method == Method.LORA) new LoraConfig(loraRank, loraAlpha, loraTargets, loraDropout); // validates
        if (method != Method.LORA && basePrecision == Precision.BF16)
            throw new IllegalArgumentException("bf16 base precision needs frozen base weights (LoRA), not full fine-tuning");
    }

    /**
     * Per-task defaults on the default model (MiniLM-L6, 22M parameters): BERT's dropout 0.1;
     * AdamW with weight decay 0.01, 6% warmup, clipping at 1. Full fine-tuning at lr 5e-5; LoRA
     * (r 8, alpha 16, all six linears, LayerNorm trained) at lr 1e-3, the rate LoRA papers use for
     * BERT-sized encoders. Small tasks (under 10k training examples) get more epochs: on RTE
     * three epochs left both methods near chance (see bench/RESULTS.md).
     */
    public static Recipe defaults(GlueTask task, Method method) {
        boolean small = switch (task) {
            case COLA, MRPC, STSB, RTE, WNLI -> true;
            default -> false;
        };
        boolean lora = method == Method.LORA;
        int epochs = !lora ? (small ? 5 : 3) : (small ? 10 : 3);
        if (task == GlueTask.WNLI) epochs = 3; // 635 examples of an adversarial set: more epochs only memorise
        double lr = !lora ? 5e-5 : 1e-3;
        // LoRA recomputes the QKV and FFN-in GEMMs in backward: memory is the point of adapters, and
        // their frozen backbone's activations are what fills it; full fine-tuning's memory is mostly
        // weights, gradients and optimizer state, so it keeps its activations and its speed
        return new Recipe(method, epochs, lr, 32, 128, 0.06, 0.01, 1.0, 0.1, 0.1, 8, 16, 0.0,
                EnumSet.allOf(LoraConfig.Target.class), method == Method.LORA, Precision.FP32, Precision.FP32, 42);
    }

    /**
     * The paper's recipe (Wang, Yang, Sun 2023, as its released code runs): LoRA on query, key and
     * value with scaling 1/r (alpha 1; rank 8 here, 4 on less important layers when the caller
     * assigns per-layer ranks), LoRA and LayerNorm trained, lr 2e-5, batch 32, up to 30 epochs, no
     * warmup or weight decay (the Hugging Face Trainer's defaults it ran with), fp32.
     */
    public static Recipe paper(GlueTask task) {
        return new Recipe(Method.LORA, 30, 2e-5, 32, 128, 0.0, 0.0, 1.0, 0.1, 0.1, 8, 1.0, 0.0,
                EnumSet.of(LoraConfig.Target.QUERY, LoraConfig.Target.KEY, LoraConfig.Target.VALUE), true, Precision.FP32, Precision.FP32, 42);
    }

    /**
     * This recipe with one field changed, named as its record component ("epochs", "lr",
     * "basePrecision", ...); the result is validated as any recipe is.
     */
    public Recipe with(String field, Object value) {
        RecordComponent[] fields = Recipe.class.getRecordComponents();
        Object[] values = new Object[fields.length];
        Class<?>[] types = new Class<?>[fields.length];
        boolean found = false;
        try {
            for (int i = 0; i < fields.length; i++) {
                types[i] = fields[i].getType();
                found |= fields[i].getName().equals(field);
                values[i] = fields[i].getName().equals(field) ? value : fields[i].getAccessor().invoke(this);
            }
            if (!found) throw new IllegalArgumentException("a recipe has no field '" + field + "'");
            return Recipe.class.getDeclaredConstructor(types).newInstance(values);
        } catch (InvocationTargetException e) {
            if (e.getCause() instanceof RuntimeException r) throw r;
            throw new IllegalStateException(e.getCause());
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("recipe field " + field + ": " + e, e);
        }
    }

    public Recipe withBasePrecision(Precision p) {
        return with("basePrecision", p);
    }

    /** Activations kept for backward in bf16 (half their memory; backward widens them to fp32) or fp32. */
    public Recipe withActivationPrecision(Precision p) {
        return with("activationPrecision", p);
    }

    public LoraConfig loraConfig() {
        return new LoraConfig(loraRank, loraAlpha, loraTargets, loraDropout);
    }

    public DropoutConfig dropout() {
        return new DropoutConfig(hiddenDropout, attentionDropout);
    }

    /** The trainer's part (the head's dropout is the hidden one, as BertForSequenceClassification's). */
    public Trainer.Config trainerConfig(int evalEvery) {
        return new Trainer.Config(epochs, batchSize, lr, weightDecay, warmupRatio, maxGradNorm, seed, hiddenDropout, evalEvery);
    }

    /** Which parameters train: everything (full), or the adapters and LayerNorms (LoRA, as the paper). */
    public java.util.function.Predicate<String> trainable() {
        return method != Method.LORA ? n -> true : n -> BertNames.isAdapter(n) || BertNames.isNorm(n) || n.startsWith("head.");
    }

    /** The encoder's side of the recipe: what trains, dropout, recomputation, the type activations are kept in. */
    public BertTraining.Options trainingOptions() {
        return new BertTraining.Options(trainable(), dropout(), recomputeProjections, activationPrecision.dtype());
    }

    /** Flat, for report.json and the PyTorch replay. */
    public Map<String, Object> describe() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("method", method.label());
        m.put("epochs", epochs);
        m.put("lr", lr);
        m.put("batch_size", batchSize);
        m.put("max_seq_len", maxSeqLen);
        m.put("warmup_ratio", warmupRatio);
        m.put("weight_decay", weightDecay);
        m.put("max_grad_norm", maxGradNorm);
        m.put("hidden_dropout", hiddenDropout);
        m.put("attention_dropout", attentionDropout);
        if (method == Method.LORA) {
            m.put("lora_rank", loraRank);
            m.put("lora_alpha", loraAlpha);
            m.put("lora_dropout", loraDropout);
            m.put("lora_targets", loraTargets.stream().sorted().map(t -> t.module().path()).toList());
        }
        m.put("recompute_projections", recomputeProjections);
        m.put("base_precision", basePrecision.name().toLowerCase(java.util.Locale.ROOT));
        m.put("activation_precision", activationPrecision.name().toLowerCase(java.util.Locale.ROOT));
        m.put("seed", seed);
        return m;
    }
}
