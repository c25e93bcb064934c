package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.backend.PrecisionChoice;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelLoader;
import dev.topa.io.OutputDirectory;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.prune.ImportanceScores;
import dev.topa.prune.PruningAdapter;
import dev.topa.tensor.MemoryTracker;
import dev.topa.train.Recipe;
import dev.topa.train.RecipeExport;
import dev.topa.train.RunIdentity;
import dev.topa.train.Trainer;
import dev.topa.train.TrainingCopy;
import dev.topa.train.TrainingLoop;
import dev.topa.train.TrainingPlot;
import dev.topa.train.TrainingReport;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(name = "finetune", description = {"Fine-tune the encoder on a GLUE task (full or LoRA) and report the dev metric,",
        "trainable parameters, time per epoch and peak memory."})
final class FinetuneCommand implements Callable<Integer>, RecipeOptions.TakesRecipe {
    @Mixin
    TaskOptions job;

    @Option(names = "--method", defaultValue = "lora", description = {"full, lora, or prune (structured pruning to --sparsity,",
            "then full fine-tuning of what remains: the pruning-only baseline) (default: ${DEFAULT-VALUE})"})
    Recipe.Method method;

    @Option(names = "--resume", description = "continue from the checkpoint in --out (written after every epoch)")
    boolean resume;

    @Option(names = "--eval-every", defaultValue = "0", description = "also evaluate on dev every N optimizer steps (default: after each epoch only)")
    int evalEvery;

    @Option(names = "--export-recipe", hidden = true,
            description = "write the recipe, initial parameters, tokenized data and batch order here for the PyTorch replay, then stop")
    Path exportRecipe;

    @Option(names = "--sparsity", description = "with --method prune: fraction of heads and FFN neurons removed (default: 0.3)")
    Double sparsity;

    @Mixin
    ThreadsOption threads;

    @Mixin
    DeviceOption device;

    @Spec
    CommandSpec spec;

    /** --method prune runs as prune-adapt without adapters: heads and neurons scored and removed, then every weight trains. */
    private int pruneOnly() throws Exception {
        if (resume || exportRecipe != null) throw new IllegalArgumentException("--method prune supports neither --resume nor --export-recipe");
        PruneAdaptCommand p = new PruneAdaptCommand();
        p.pruneOnly = true;
        p.job = job;
        p.sparsity = sparsity;
        p.structure = PruningAdapter.Structure.HEADS_FFN;
        p.schedule = PruningAdapter.Schedule.ONESHOT;
        p.ramp = 0.6;
        p.scorer = ImportanceScores.Scorer.TAYLOR;
        p.scoreExamples = 512;
        p.evalEvery = evalEvery;
        p.inferenceIterations = 10;
        p.preset = PruningAdapter.Preset.TOPA;
        p.spec = spec;
        p.threads = threads;
        p.device = device;
        return p.call();
    }

    @Override
    public Integer call() throws Exception {
        if (method == Recipe.Method.PRUNE) return pruneOnly();
        threads.apply();
        device.checkTrainingAcross(Main.processes);
        GlueTask t = job.glueTask();
        RecipeOptions options = new RecipeOptions(spec);
        Recipe asked = options.recipe(t, method, device.cuda());
        List<Example> trainEx = job.train(), devEx = job.dev();
        ModelLoader.Loaded loaded = ModelLoader.load(job.model);
        try (Backend be = device.backend(); BertModel m = loaded.model();
                BertTokenizer tok = new BertTokenizer(loaded.tokenizer(), Math.min(asked.maxSeqLen(), m.config().maxPositions()));
                TaskHead head = new TaskHead(m.config().hidden(), t.numLabels(), asked.seed())) {
            Recipe rc = asked;
            MemoryTracker.of(be.device()).clearPhases(); // this run's phases are its own
            if (rc.method() == Recipe.Method.LORA && options.given("--base-precision") == null && !device.cuda()) {
                // LoRA's frozen base in bf16 where that is measured faster on this model's shapes, else fp32
                PrecisionChoice.Result choice = PrecisionChoice.choose(be, PrecisionChoice.Use.TRAINING,
                        BertModel.linearShapes(m.config(), (long) rc.batchSize() * tok.maxLength()));
                rc = rc.withBasePrecision(choice.bf16() ? Recipe.Precision.BF16 : Recipe.Precision.FP32);
                System.out.println("frozen base: " + choice.describe());
            }
            RunIdentity identity = RunIdentity.of(t, m, trainEx, devEx, rc); // of the model as loaded
            if (rc.method() == Recipe.Method.LORA) m.addLora(rc.loraConfig(), rc.seed());
            // on a GPU the model and head train there; the host copies receive the trained values for saving
            try (TrainingCopy copy = new TrainingCopy(be, m, head);
                    Trainer trainer = new Trainer(be, copy.model, copy.training(rc), copy.head, t, rc.trainerConfig(evalEvery))
                            .distributed(Main.processes);
                    TrainingProgress progress = new TrainingProgress(job.out)) {
                if (rc.basePrecision() == Recipe.Precision.BF16) copy.model.packForTraining(be);
                List<Trainer.Item> train = Trainer.items(trainEx, tok), dev = Trainer.items(devEx, tok);
                if (exportRecipe != null) {
                    RecipeExport.write(exportRecipe, t, rc, m, head, train, dev);
                    System.out.println("recipe, initial parameters, data and batch order written to " + exportRecipe);
                    return 0;
                }
                long total = m.parameters().entrySet().stream().mapToLong(e -> BertModel.parameterCount(e.getKey(), e.getValue())).sum();
                boolean root = Main.processes.isRoot(); // across processes rank 0 alone checks, writes and reports
                OutputDirectory out = root ? job.openOut(resume, TaskOptions.bytesNeeded(4 * total, 12 * trainer.trainableParameters())) : null;
                System.out.printf(Locale.ROOT, "task: %s, method: %s, model: %s%n", t.folder(), rc.method().label(), loaded.description());
                System.out.printf(Locale.ROOT, "train examples: %d, dev examples: %d, trainable parameters: %d%n", trainEx.size(), devEx.size(),
                        trainer.trainableParameters());
                TrainingLoop.Outcome before = TrainingLoop.Outcome.NONE;
                Path checkpoint = job.out.resolve("checkpoint.safetensors");
                if (resume) {
                    identity.checkCheckpoint(checkpoint);
                    before = TrainingLoop.resumed(trainer.loadCheckpoint(checkpoint));
                    System.out.printf(Locale.ROOT, "resumed after epoch %d (best dev %s so far)%n", trainer.epochsDone(), before.best());
                    // all epochs done (killed before its reports): nothing trains, the reports are written from the checkpoint's history
                    if (trainer.epochsDone() >= rc.epochs()) System.out.printf(Locale.ROOT, "all %d epochs are done; writing the reports%n", rc.epochs());
                }
                TrainingLoop.Outcome run = TrainingLoop.run(CpuBackend.create(), trainer, train, dev, m, head,
                        new TrainingLoop.Output(out, loaded.tokenizer(), tok.maxLength(), checkpoint, identity), before,
                        TrainingLoop.Hooks.NONE.withExport(copy.export()).withListener(progress));
                MemoryTracker mem = MemoryTracker.of(be.device());
                if (!root) return 0;
                TrainingReport.write(out.path(), t, rc, loaded.description(), trainer.trainableParameters(), total, train.size(), dev.size(), run, mem);
                TrainingPlot.write(out.file("report.png"), t.folder() + ", " + rc.method().label(), run.stepLoss(),
                        run.results().stream().map(r -> r.dev().get(t.mainMetric())).toList(), t.mainMetric().name().toLowerCase(Locale.ROOT));
                System.out.print(mem.report());
                System.out.println("report: " + out.file("report.md") + ", " + out.file("report.png"));
            }
        }
        return 0;
    }
}
