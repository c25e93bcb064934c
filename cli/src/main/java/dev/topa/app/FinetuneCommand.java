package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelLoader;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.MemoryTracker;
import dev.topa.train.Recipe;
import dev.topa.train.Trainer;
import java.util.Set;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "finetune", description = {"Fine-tune the encoder on a GLUE task (full or LoRA) and report the dev metric,",
        "trainable parameters, time per epoch and peak memory."})
final class FinetuneCommand implements Callable<Integer> {
    @Option(names = "--task", required = true, description = "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    String task;

    @Option(names = "--method", defaultValue = "lora", description = {"full, lora, or prune (structured pruning to --sparsity,",
            "then full fine-tuning of what remains: the pruning-only baseline) (default: ${DEFAULT-VALUE})"})
    Recipe.Method method;

    @Option(names = "--model", defaultValue = "default", description = "as for encode (default: ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--data-dir", description = {"GLUE data: one folder per task (SST-2/train.tsv, ...); default: downloaded",
            "into the cache (TOPA_GLUE_URL sets the source, TOPA_OFFLINE=1 uses the cache only)"})
    Path dataDir;

    @Option(names = "--out", required = true, description = "where the best model (LoRA merged), head, tokenizer and report go")
    Path out;

    @Option(names = "--resume", description = "continue from the checkpoint in --out (written after every epoch)")
    boolean resume;

    @Option(names = "--train-limit", description = "use only the first N training examples")
    Integer trainLimit;

    @Option(names = "--eval-every", defaultValue = "0",
            description = "also evaluate on dev every N optimizer steps (default: after each epoch only)")
    int evalEvery;

    @Option(names = "--export-recipe", hidden = true,
            description = "write the recipe, initial parameters, tokenized data and batch order here for the PyTorch replay, then stop")
    Path exportRecipe;

    @Mixin
    RecipeOptions recipeOptions;

    /** --method prune runs as prune-adapt without adapters: heads and neurons scored and removed, then every weight trains. */
    private int pruneOnly() throws Exception {
        if (resume || exportRecipe != null) throw new IllegalArgumentException("--method prune supports neither --resume nor --export-recipe");
        PruneAdaptCommand p = new PruneAdaptCommand();
        p.pruneOnly = true;
        p.task = task;
        p.model = model;
        p.dataDir = dataDir;
        p.out = out;
        p.sparsity = sparsity;
        p.scorer = dev.topa.prune.ImportanceScores.Scorer.TAYLOR;
        p.scoreExamples = 512;
        p.trainLimit = trainLimit;
        p.evalEvery = evalEvery;
        p.inferenceIterations = 10;
        p.preset = PruneAdaptCommand.Preset.TOPA;
        p.recipeOptions = recipeOptions;
        p.threads = threads;
        p.device = device;
        return p.call();
    }

    @Mixin
    ThreadsOption threads;

    @Mixin
    DeviceOption device;

    @Option(names = "--sparsity", description = "with --method prune: fraction of heads and FFN neurons removed (default: 0.3)")
    Double sparsity;

    @Override
    public Integer call() throws Exception {
        if (method == Recipe.Method.PRUNE) return pruneOnly();
        threads.apply();
        GlueTask t = GlueTask.parse(task);
        Recipe rc = recipeOptions.recipe(t, method, device.device == DeviceOption.Kind.cuda);
        Path data = dataDir != null ? dataDir : dev.topa.glue.GlueDownload.dataDir(t);
        List<Example> trainEx = t.train(data), devEx = t.dev(data, t.devSplits().get(0));
        if (trainLimit != null) trainEx = trainEx.subList(0, Math.min(trainLimit, trainEx.size()));
        boolean lora = rc.method() == Recipe.Method.LORA;
        Trainer.Config cfg = rc.trainerConfig(evalEvery);
        ModelLoader.Loaded loaded = ModelLoader.load(model);
        try (Backend be = device.backend(); BertModel m = loaded.model();
                BertTokenizer tok = new BertTokenizer(loaded.tokenizer(), Math.min(rc.maxSeqLen(), m.config().maxPositions()));
                TaskHead head = new TaskHead(m.config().hidden(), t.numLabels(), rc.seed())) {
            if (lora) m.addLora(rc.loraConfig(), rc.seed());
            // on a GPU the model and head train there; the host copies receive the trained values for saving
            try (TrainingCopy copy = new TrainingCopy(be, m, head);
                    Trainer trainer = new Trainer(be, copy.model, copy.training(rc),
                            copy.head, t, cfg)) {
                BertModel dm = copy.model;
                if (rc.basePrecision() == Recipe.Precision.BF16) dm.packForTraining(be);
                if (exportRecipe != null) {
                    RecipeExport.write(exportRecipe, t, rc, m, head, Trainer.items(trainEx, tok), Trainer.items(devEx, tok));
                    System.out.println("recipe, initial parameters, data and batch order written to " + exportRecipe);
                    return 0;
                }
                System.out.printf(Locale.ROOT, "task: %s, method: %s, model: %s%n", t.folder(), rc.method().label(),
                        loaded.description());
                System.out.printf(Locale.ROOT, "train examples: %d, dev examples: %d, trainable parameters: %d%n", trainEx.size(),
                        devEx.size(), trainer.trainableParameters());
                List<Trainer.Item> train = Trainer.items(trainEx, tok), dev = Trainer.items(devEx, tok);
                double[] best = {Double.NEGATIVE_INFINITY};
                Path checkpoint = out.resolve("checkpoint.safetensors");
                if (resume) {
                    if (!java.nio.file.Files.isRegularFile(checkpoint))
                        throw new IllegalArgumentException("--resume: no checkpoint at " + checkpoint);
                    Map<String, String> meta = trainer.loadCheckpoint(checkpoint);
                    best[0] = Double.parseDouble(meta.getOrDefault("best_dev", "-Infinity"));
                    System.out.printf(Locale.ROOT, "resumed after epoch %d (best dev %s so far)%n", trainer.epochsDone(), best[0]);
                }
                TrainingLoop.Outcome run = TrainingLoop.run(CpuBackend.create(), trainer, train, dev, t, m, head, loaded.tokenizer(),
                        tok.maxLength(), out, checkpoint, best[0], st -> {}, copy.export());
                List<Trainer.EpochResult> results = run.results();
                List<Double> stepLoss = run.stepLoss();
                long total = m.parameters().entrySet().stream().mapToLong(e -> BertModel.parameterCount(e.getKey(), e.getValue())).sum();
                TrainingReport.write(out, t, rc, loaded.description(), trainer.trainableParameters(),
                        total, results, MemoryTracker.of(be.device()));
                TrainingPlot.write(out.resolve("report.png"), t.folder() + ", " + rc.method().label(), stepLoss,
                        results.stream().map(r -> r.dev().get(t.mainMetric())).toList(), t.mainMetric().name().toLowerCase(Locale.ROOT));
                System.out.print(MemoryTracker.of(be.device()).report());
                System.out.println("report: " + out.resolve("report.md") + ", " + out.resolve("report.png"));
            }
        }
        return 0;
    }

}
