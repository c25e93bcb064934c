package dev.topa.app;

import dev.topa.glue.GlueTask;
import dev.topa.model.LoraConfig;
import dev.topa.train.Recipe;
import java.util.EnumSet;
import java.util.List;
import picocli.CommandLine;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;

/**
 * The recipe options training commands share, each overriding one field of the task's default
 * {@link Recipe}: declared once in a table and added to every command that {@link TakesRecipe}
 * (picocli's programmatic API), read back into the recipe by the field's name.
 */
final class RecipeOptions {
    /** A command whose options include the recipe's. */
    interface TakesRecipe {}

    /** One option: its name, the recipe field it sets, its value type, its help. */
    private record Field(String option, String field, Class<?> type, String label, String... help) {}

    private static final List<Field> FIELDS = List.of(
            new Field("--epochs", "epochs", Integer.class, "N", "default: per task (5 full / 10 LoRA on small tasks, 3 on large ones)"),
            new Field("--lr", "lr", Double.class, "RATE", "peak learning rate (default: 1e-3 for LoRA, 5e-5 for full)"),
            new Field("--batch-size", "batchSize", Integer.class, "N", "default: 32"),
            new Field("--max-seq-len", "maxSeqLen", Integer.class, "N", "default: 128"),
            new Field("--warmup-ratio", "warmupRatio", Double.class, "R", "share of steps with linear warmup (default: 0.06)"),
            new Field("--weight-decay", "weightDecay", Double.class, "D", "AdamW decoupled decay, not on biases and LayerNorm (default: 0.01)"),
            new Field("--dropout", "hiddenDropout", Double.class, "P", "hidden dropout: embeddings, attention and FFN outputs, pooled (default: 0.1)"),
            new Field("--attention-dropout", "attentionDropout", Double.class, "P", "dropout on attention probabilities (default: 0.1)"),
            new Field("--lora-rank", "loraRank", Integer.class, "R", "default: 8"),
            new Field("--lora-alpha", "loraAlpha", Double.class, "A", "scale = alpha / rank (default: 16)"),
            new Field("--lora-dropout", "loraDropout", Double.class, "P", "dropout on the adapters' input (default: 0)"),
            new Field("--lora-targets", "loraTargets", List.class, "T[,T...]",
                    "comma-separated among query,key,value,attention.output,intermediate,output (default: all six)"),
            new Field("--recompute-projections", "recomputeProjections", Boolean.class, "true|false",
                    "recompute the QKV and FFN-in GEMMs in backward instead of keeping them (default: true for LoRA)"),
            new Field("--base-precision", "basePrecision", Recipe.Precision.class, "fp32|bf16",
                    "frozen base weights multiplied in bf16 with fp32 sums (LoRA only; twice the fp32 GEMM rate on Zen 4, slower on Xeons without AMX)",
                    "(default: finetune --method lora: bf16 on a GPU, and on a CPU where measured faster on the model's shapes, else fp32;",
                    "prune-adapt on the CPU and with --schedule gradual: fp32)"),
            new Field("--activation-precision", "activationPrecision", Recipe.Precision.class, "fp32|bf16",
                    "how the activations products read (attention context, QKV, FFN pre-activation) are kept for backward; bf16",
                    "halves them, backward widens them to fp32 (default: bf16 on a GPU and for prune-adapt, fp32 for finetune on a CPU or OpenCL)"),
            new Field("--seed", "seed", Long.class, "N", "default: 42"));

    /** Adds the recipe options to every command (and subcommand) that takes a recipe. */
    static void addTo(CommandLine cl) {
        if (cl.getCommand() instanceof TakesRecipe)
            for (Field f : FIELDS) {
                OptionSpec.Builder b = OptionSpec.builder(f.option()).paramLabel(f.label()).description(f.help());
                if (f.type() == List.class) b.type(List.class).auxiliaryTypes(String.class).splitRegex(",");
                else b.type(f.type()).arity("1");
                cl.getCommandSpec().addOption(b.build());
            }
        cl.getSubcommands().values().forEach(RecipeOptions::addTo);
    }

    private final CommandSpec cmd;

    RecipeOptions(CommandSpec cmd) {
        this.cmd = cmd;
    }

    /** The value given on the command line, or null. */
    @SuppressWarnings("unchecked")
    <T> T given(String option) {
        OptionSpec o = cmd.findOption(option);
        if (o == null) throw new IllegalStateException(cmd.name() + " takes no recipe option " + option);
        Object v = o.getValue();
        return v instanceof List<?> l && l.isEmpty() ? null : (T) v;
    }

    /**
     * The task's defaults with every given option applied. On a GPU LoRA's frozen base multiplies in
     * bf16 (the tensor cores' rate; the frozen weights need no fp32 master copy) and activations are
     * kept in bf16, unless asked otherwise. On a CPU the frozen base stays fp32 here: the training
     * command measures bf16 against fp32 on the model's shapes once the model is loaded
     * ({@link dev.topa.backend.PrecisionChoice}).
     */
    Recipe recipe(GlueTask t, Recipe.Method method, boolean onGpu) {
        Recipe r = applyTo(Recipe.defaults(t, method));
        if (given("--activation-precision") == null && onGpu) r = r.withActivationPrecision(Recipe.Precision.BF16);
        if (given("--base-precision") != null || method != Recipe.Method.LORA || !onGpu) return r;
        return r.withBasePrecision(Recipe.Precision.BF16);
    }

    /** The given defaults with every option the user gave applied. */
    Recipe applyTo(Recipe d) {
        Recipe r = d;
        for (Field f : FIELDS) {
            Object v = given(f.option());
            if (v == null) continue;
            if (f.type() == List.class) {
                EnumSet<LoraConfig.Target> chosen = EnumSet.noneOf(LoraConfig.Target.class);
                for (Object s : (List<?>) v) chosen.add(LoraConfig.Target.parse(s.toString().trim()));
                v = chosen;
            }
            r = r.with(f.field(), v);
        }
        return r;
    }
}
