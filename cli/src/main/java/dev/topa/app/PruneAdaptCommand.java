package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.ModelLoader;
import dev.topa.io.OutputDirectory;
import dev.topa.prune.ImportanceScores;
import dev.topa.prune.PruningAdapter;
import dev.topa.prune.PruningAdapter.Preset;
import dev.topa.prune.PruningAdapter.Schedule;
import dev.topa.prune.PruningAdapter.Structure;
import dev.topa.train.FineTunedModel;
import dev.topa.train.Recipe;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(name = "prune-adapt", description = {"The Pruning-Adapter: a short LoRA warm-up on the task scores every attention head and",
        "FFN neuron (mask gradients) or every 32 x 32 weight block (Taylor), the lowest-scored are physically removed (one-shot or",
        "on a cubic schedule), and LoRA training continues on the smaller frozen backbone; the best model is saved merged, with",
        "per-layer shapes or kept blocks only."})
final class PruneAdaptCommand implements Callable<Integer>, RecipeOptions.TakesRecipe {
    @Option(names = "--recipe", defaultValue = "topa", description = {"topa: scores gathered during a LoRA warm-up, heads and",
            "FFN neurons, LoRA on all six linears; paper: the paper's preset (head scores on the pretrained model with a",
            "training head, ~30%% of heads removed, LoRA on q/k/v with per-layer rank 8/4 by importance, scaling 1/r,",
            "lr 2e-5, up to 30 epochs) (default: ${DEFAULT-VALUE})"})
    Preset preset;

    @Mixin
    TaskOptions job;

    @Option(names = "--sparsity", description = {"fraction of the heads (and, with heads+ffn, of the FFN neurons) removed,",
            "in [0, 1) (default: 0.3; paper: 43/144)"})
    Double sparsity;

    @Option(names = "--structure", converter = StructureConverter.class,
            description = {"heads, heads+ffn, blocks (32 x 32 blocks of every encoder linear weight, stored and multiplied",
                    "block-sparse), or both (half of the target from heads and FFN neurons, kept FFN widths rounded up to",
                    "multiples of 32, then blocks of what is left, scored again on the smaller model) (default: heads+ffn; paper: heads)"})
    Structure structure;

    @Option(names = "--schedule", defaultValue = "oneshot", description = {"oneshot: remove everything after the scoring warm-up;",
            "gradual: mask more units as adapters train, on a cubic schedule over the first --ramp of the steps, scores still"
                    + " accumulating, then remove them (topa recipe only; with a --teacher on full GLUE data it measured better than"
                    + " oneshot at 70%% on RTE, MRPC and CoLA and mixed at 50%%: bench/RESULTS.md) (default: ${DEFAULT-VALUE})"})
    Schedule schedule;

    @Option(names = "--ramp", defaultValue = "0.6", description = "gradual: share of the training steps over which the target ramps up (default: ${DEFAULT-VALUE})")
    double ramp;

    @Option(names = "--min-heads", defaultValue = "0", description = "per-layer floor: heads every layer keeps (default: ${DEFAULT-VALUE})")
    int minHeads;

    @Option(names = "--min-ffn", defaultValue = "0", description = "per-layer floor: FFN neurons every layer keeps (default: ${DEFAULT-VALUE})")
    int minFfn;

    @Option(names = "--scorer", defaultValue = "taylor", converter = ScorerConverter.class, description = {"taylor or fisher for",
            "heads and neurons (mask gradients); for blocks taylor (exact |W dL/dW|, one layer at a time) or lora-taylor",
            "(dL/dW estimated from the adapters' gradients) (default: ${DEFAULT-VALUE})"})
    ImportanceScores.Scorer scorer;

    @Option(names = "--score-examples", defaultValue = "512", description = "training examples of the scoring warm-up (default: ${DEFAULT-VALUE})")
    int scoreExamples;

    @Option(names = "--inference-iterations", defaultValue = "10",
            description = "timed forwards per figure when measuring the saved model's serving speed (0: skip; default: ${DEFAULT-VALUE})")
    int inferenceIterations;

    @Option(names = "--resume", description = {"continue the run in --out from its checkpoint (written after every epoch of adaptation;",
            "scoring and pruning are replayed and checked to arrive where the checkpoint started)"})
    boolean resume;

    @Option(names = "--eval-every", defaultValue = "0", description = "also evaluate every N steps (default: per epoch)")
    int evalEvery;

    @Option(names = "--distill", paramLabel = "ALPHA", description = {"knowledge distillation: a dense model teaches the pruned one,",
            "forward only; the loss is (1 - ALPHA) x the task loss + ALPHA x the distillation term (0: off; default: "
                    + DEFAULT_DISTILL + " with --teacher, else 0:",
            "on full GLUE training sets a fine-tuned teacher helped on average at 50%% and 70%%, the warmed-up model did not: bench/RESULTS.md)"})
    Double distill; // null: the default, which depends on --teacher

    /** distillation's weight when --teacher is given alone: the record's pa-distill rows ran with it */
    static final double DEFAULT_DISTILL = 0.5;

    @Option(names = "--distill-temperature", defaultValue = "2", paramLabel = "T",
            description = "softens both models' outputs for the KL term (regression: squared error to the teacher) (default: ${DEFAULT-VALUE})")
    double distillTemperature = 2; // also when finetune --method prune makes this command itself

    @Option(names = "--teacher", paramLabel = "DIR", description = {"a dense model fine-tuned on the task (a `topa finetune` output with the",
            "same tokenizer) teaches instead of the warmed-up one, and turns distillation on (--distill " + DEFAULT_DISTILL + " unless given)"})
    Path teacher;

    @Option(names = "--distill-hidden", defaultValue = "0", paramLabel = "BETA", description = {"with --teacher: layer-wise",
            "distillation too; the student's loss gains BETA x the mean squared error between each layer's output and the teacher's (real tokens),",
            "summed over layers. The teacher then stays beside the student and runs forward on every batch (0: off; default: ${DEFAULT-VALUE})"})
    double distillHidden;

    /** Set by `topa finetune --method prune`: the pruning-only baseline (no adapters; full fine-tuning of what remains). */
    boolean pruneOnly;

    @Mixin
    ThreadsOption threads;

    @Mixin
    DeviceOption device;

    @Spec
    CommandSpec spec;

    static final class StructureConverter implements CommandLine.ITypeConverter<Structure> {
        @Override
        public Structure convert(String v) {
            for (Structure s : Structure.values()) if (s.label().equalsIgnoreCase(v) || s.name().equalsIgnoreCase(v)) return s;
            throw new IllegalArgumentException("--structure: heads, heads+ffn, blocks or both, got '" + v + "'");
        }
    }

    static final class ScorerConverter implements CommandLine.ITypeConverter<ImportanceScores.Scorer> {
        @Override
        public ImportanceScores.Scorer convert(String v) {
            return switch (v.toLowerCase(Locale.ROOT)) {
                case "taylor" -> ImportanceScores.Scorer.TAYLOR;
                case "fisher" -> ImportanceScores.Scorer.FISHER;
                case "lora-taylor", "lora_taylor" -> ImportanceScores.Scorer.LORA_TAYLOR;
                default -> throw new IllegalArgumentException("--scorer: taylor, fisher or lora-taylor, got '" + v + "'");
            };
        }
    }

    /** --distill as given, else on with a fine-tuned teacher (measured better) and off without one (the warm-up teacher was not) */
    private double distillWeight() {
        return distill != null ? distill : teacher != null ? DEFAULT_DISTILL : 0;
    }

    @Override
    public Integer call() throws Exception {
        threads.apply();
        boolean paper = preset == Preset.PAPER, gpu = device.cuda();
        PruningAdapter.Config cfg = new PruningAdapter.Config(preset, pruneOnly, sparsity != null ? sparsity : paper ? 43.0 / 144 : 0.3,
                structure != null ? structure : paper ? Structure.HEADS : Structure.HEADS_FFN, schedule, ramp, minHeads, minFfn, scorer,
                scoreExamples, evalEvery, inferenceIterations); // option combinations are checked before any loading
        device.checkTrainingAcross(Main.processes);
        GlueTask t = job.glueTask();
        RecipeOptions options = new RecipeOptions(spec);
        Recipe rc = pruneOnly ? options.recipe(t, Recipe.Method.PRUNE, gpu) : paper ? options.applyTo(Recipe.paper(t))
                : options.applyTo(Recipe.defaults(t, Recipe.Method.LORA));
        // on the CPU memory first: bf16 packs would hold a second copy of the frozen weights (bf16 only when asked for);
        // on a GPU the bf16 base is the tensor cores' operand, except for the gradual schedule, whose masks edit the fp32 weights
        boolean bf16Base = gpu && !pruneOnly && schedule != Schedule.GRADUAL;
        if (options.given("--base-precision") == null) rc = rc.withBasePrecision(bf16Base ? Recipe.Precision.BF16 : Recipe.Precision.FP32);
        // activations kept for backward in bf16 on every device (LayerNorm inputs stay fp32): memory is the point of the method, and
        // on RTE it changed neither the loss nor the dev accuracy at 4 digits while it took the peak from 336 to 318 MiB
        if (options.given("--activation-precision") == null) rc = rc.withActivationPrecision(Recipe.Precision.BF16);
        try (Backend be = device.backend(); TrainingProgress progress = new TrainingProgress(job.out)) {
            PruningAdapter pipeline = new PruningAdapter(be, cfg, progress).distributed(Main.processes).distilling(distillWeight(), distillTemperature, teacher)
                    .matchingHiddenStates(distillHidden)
                    .checkpointing(job.out.resolve("checkpoint.safetensors"), resume);
            pipeline.check(rc);
            if (teacher != null && !Files.isDirectory(teacher)) throw new IllegalArgumentException("--teacher " + teacher + ": not a directory");
            GlueTask taught = teacher == null ? t : FineTunedModel.task(teacher);
            if (taught != t) throw new IllegalArgumentException("--teacher " + teacher + ": a model of " + taught.folder() + ", not of " + t.folder());
            List<Example> train = job.train(), dev = job.dev();
            ModelLoader.Loaded model = ModelLoader.load(job.model);
            if (teacher != null && (!Files.isRegularFile(teacher.resolve(FineTunedModel.TOKENIZER))
                    || Files.mismatch(teacher.resolve(FineTunedModel.TOKENIZER), model.tokenizer()) != -1)) {
                model.model().close();
                throw new IllegalArgumentException("--teacher " + teacher + ": no tokenizer.json, or one that differs from the model's (its outputs would be for other tokens)");
            }
            OutputDirectory out = null; // across processes rank 0 alone checks and writes the outputs
            if (Main.processes.isRoot()) try {
                out = job.openOut(resume, TaskOptions.bytesNeeded(model.model().parameterBytes(), 0));
            } catch (IOException | RuntimeException e) {
                model.model().close();
                throw e;
            }
            pipeline.run(new PruningAdapter.Job(t, rc, train, dev, model, out));
        }
        return 0;
    }
}
