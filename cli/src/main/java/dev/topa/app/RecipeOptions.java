package dev.topa.app;

import dev.topa.glue.GlueTask;
import dev.topa.model.LoraConfig;
import dev.topa.train.Recipe;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import picocli.CommandLine.Option;

/** The recipe options that training commands share (a picocli mixin): each overrides the task's default. */
final class RecipeOptions {
    @Option(names = "--epochs", description = "default: per task (5 full / 10 LoRA on small tasks, 3 on large ones)")
    Integer epochs;

    @Option(names = "--lr", description = "peak learning rate (default: 1e-3 for LoRA, 5e-5 for full)")
    Double lr;

    @Option(names = "--batch-size", description = "default: 32")
    Integer batchSize;

    @Option(names = "--max-seq-len", description = "default: 128")
    Integer maxSeqLen;

    @Option(names = "--warmup-ratio", description = "share of steps with linear warmup (default: 0.06)")
    Double warmupRatio;

    @Option(names = "--weight-decay", description = "AdamW decoupled decay, not on biases and LayerNorm (default: 0.01)")
    Double weightDecay;

    @Option(names = "--dropout", description = "hidden dropout: embeddings, attention and FFN outputs, pooled (default: 0.1)")
    Double dropout;

    @Option(names = "--attention-dropout", description = "dropout on attention probabilities (default: 0.1)")
    Double attentionDropout;

    @Option(names = "--lora-rank", description = "default: 8")
    Integer loraRank;

    @Option(names = "--lora-alpha", description = "scale = alpha / rank (default: 16)")
    Double loraAlpha;

    @Option(names = "--lora-dropout", description = "dropout on the adapters' input (default: 0)")
    Double loraDropout;

    @Option(names = "--lora-targets", split = ",",
            description = "comma-separated among query,key,value,attention.output,intermediate,output (default: all six)")
    List<String> loraTargets;

    @Option(names = "--recompute-projections", arity = "1", paramLabel = "true|false",
            description = "recompute the QKV and FFN-in GEMMs in backward instead of keeping them (default: true for LoRA)")
    Boolean recomputeProjections;

    @Option(names = "--base-precision", description = {"fp32 or bf16: frozen base weights multiplied in bf16 with fp32 sums",
            "(LoRA only; about twice the GEMM rate on CPUs with AVX512_BF16)",
            "(default: finetune --method lora: bf16 where the CPU has AVX512_BF16, else fp32; full fine-tuning and prune-adapt: fp32)"})
    Recipe.Precision basePrecision;

    @Option(names = "--activation-precision", description = {"fp32 or bf16: how the activations products read (attention context,",
            "QKV, FFN pre-activation) are kept for backward; bf16 halves them, backward widens them to fp32",
            "(default: bf16 on a GPU, fp32 on the CPU)"})
    Recipe.Precision activationPrecision;

    @Option(names = "--seed", description = "default: 42")
    Long seed;

    /**
     * The task's defaults with every given option applied. LoRA's frozen base multiplies in bf16
     * where the CPU does bf16 products in hardware: the frozen weights need no fp32 master copy,
     * and it is what keeps the adapter step well ahead of fp32 eager PyTorch on a 2-core CPU
     * (bench/RESULTS.md); {@code --base-precision fp32} opts out.
     */
    Recipe recipe(GlueTask t, Recipe.Method method) {
        return recipe(t, method, false);
    }

    /** As above; onGpu: training runs on a GPU, whose tensor cores make the bf16 base the fast one. */
    Recipe recipe(GlueTask t, Recipe.Method method, boolean onGpu) {
        Recipe r = applyTo(Recipe.defaults(t, method));
        if (activationPrecision == null && onGpu) r = r.withActivationPrecision(Recipe.Precision.BF16);
        if (basePrecision != null || method != Recipe.Method.LORA) return r;
        boolean hardware = onGpu || dev.topa.backend.cpu.CpuBackend.create().fastBf16();
        return hardware ? r.withBasePrecision(Recipe.Precision.BF16) : r;
    }

    /** The given defaults with every option the user gave applied. */
    Recipe applyTo(Recipe d) {
        Recipe.Method method = d.method();
        Set<LoraConfig.Target> targets = d.loraTargets();
        if (loraTargets != null) {
            EnumSet<LoraConfig.Target> chosen = EnumSet.noneOf(LoraConfig.Target.class);
            for (String s : loraTargets) chosen.add(LoraConfig.Target.parse(s.trim()));
            targets = chosen;
        }
        return new Recipe(method, or(epochs, d.epochs()), or(lr, d.lr()), or(batchSize, d.batchSize()), or(maxSeqLen, d.maxSeqLen()),
                or(warmupRatio, d.warmupRatio()), or(weightDecay, d.weightDecay()), d.maxGradNorm(), or(dropout, d.hiddenDropout()),
                or(attentionDropout, d.attentionDropout()), or(loraRank, d.loraRank()), or(loraAlpha, d.loraAlpha()),
                or(loraDropout, d.loraDropout()), targets, or(recomputeProjections, d.recomputeProjections()),
                or(basePrecision, d.basePrecision()), or(activationPrecision, d.activationPrecision()), or(seed, d.seed()));
    }

    private static <T> T or(T given, T otherwise) {
        return given != null ? given : otherwise;
    }

}
