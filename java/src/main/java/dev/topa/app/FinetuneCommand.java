package dev.topa.app;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelLoader;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.MemoryTracker;
import dev.topa.train.FineTunedModel;
import dev.topa.train.Recipe;
import dev.topa.train.Trainer;
import java.util.Set;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
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

    @Option(names = "--method", defaultValue = "lora", description = "full or lora (default: ${DEFAULT-VALUE})")
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

    @Option(names = "--train-limit", description = "use only the first N training examples")
    Integer trainLimit;

    @Option(names = "--eval-every", defaultValue = "0",
            description = "also evaluate on dev every N optimizer steps (default: after each epoch only)")
    int evalEvery;

    @Option(names = "--seed", description = "default: 42")
    Long seed;

    @Option(names = "--export-recipe", hidden = true,
            description = "write the recipe, initial parameters, tokenized data and batch order here for the PyTorch replay, then stop")
    Path exportRecipe;

    /** The task's defaults with every given option applied. */
    Recipe recipe(GlueTask t) {
        Recipe d = Recipe.defaults(t, method);
        Set<LoraConfig.Target> targets = d.loraTargets();
        if (loraTargets != null) {
            EnumSet<LoraConfig.Target> chosen = EnumSet.noneOf(LoraConfig.Target.class);
            for (String s : loraTargets) chosen.add(LoraConfig.Target.parse(s.trim()));
            targets = chosen;
        }
        return new Recipe(method, or(epochs, d.epochs()), or(lr, d.lr()), or(batchSize, d.batchSize()), or(maxSeqLen, d.maxSeqLen()),
                or(warmupRatio, d.warmupRatio()), or(weightDecay, d.weightDecay()), d.maxGradNorm(), or(dropout, d.hiddenDropout()),
                or(attentionDropout, d.attentionDropout()), or(loraRank, d.loraRank()), or(loraAlpha, d.loraAlpha()),
                or(loraDropout, d.loraDropout()), targets, or(recomputeProjections, d.recomputeProjections()), or(seed, d.seed()));
    }

    private static <T> T or(T given, T otherwise) {
        return given != null ? given : otherwise;
    }

    @Mixin
    ThreadsOption threads;

    @Override
    public Integer call() throws Exception {
        threads.apply();
        GlueTask t = GlueTask.parse(task);
        Recipe rc = recipe(t);
        Path data = dataDir != null ? dataDir : dev.topa.glue.GlueDownload.dataDir(t);
        List<Example> trainEx = t.train(data), devEx = t.dev(data, t.devSplits().get(0));
        if (trainLimit != null) trainEx = trainEx.subList(0, Math.min(trainLimit, trainEx.size()));
        boolean lora = rc.method() == Recipe.Method.LORA;
        Trainer.Config cfg = rc.trainerConfig(evalEvery);
        ModelLoader.Loaded loaded = ModelLoader.load(model);
        try (BertModel m = loaded.model();
                BertTokenizer tok = new BertTokenizer(loaded.tokenizer(), Math.min(rc.maxSeqLen(), m.config().maxPositions()))) {
            if (lora) m.addLora(rc.loraConfig(), rc.seed());
            try (BertTraining training = new BertTraining(m, rc.trainable(), rc.dropout(), rc.recomputeProjections());
                    TaskHead head = new TaskHead(m.config().hidden(), t.numLabels(), rc.seed());
                    Trainer trainer = new Trainer(CpuBackend.create(), m, training, head, t, cfg)) {
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
                CpuBackend be = CpuBackend.create();
                double[] best = {Double.NEGATIVE_INFINITY};
                Path checkpoint = out.resolve("checkpoint.safetensors");
                if (resume) {
                    if (!java.nio.file.Files.isRegularFile(checkpoint))
                        throw new IllegalArgumentException("--resume: no checkpoint at " + checkpoint);
                    Map<String, String> meta = trainer.loadCheckpoint(checkpoint);
                    best[0] = Double.parseDouble(meta.getOrDefault("best_dev", "-Infinity"));
                    System.out.printf(Locale.ROOT, "resumed after epoch %d (best dev %s so far)%n", trainer.epochsDone(), best[0]);
                }
                ProgressBar[] bar = {null};
                List<Double> stepLoss = new java.util.ArrayList<>();
                long[] seen = {0, System.nanoTime()};
                List<Trainer.EpochResult> results = trainer.fit(train, dev, r -> {
                    if (bar[0] != null && r.endOfEpoch()) {
                        bar[0].close();
                        bar[0] = null;
                    }
                    System.out.printf(Locale.ROOT, "epoch %d%s: train loss %.4f, dev %s, %.1f s%n", r.epoch(),
                            r.endOfEpoch() ? "" : " (step " + r.step() + ")", r.trainLoss(), format(r.dev()), r.seconds());
                    if (r.dev().get(t.mainMetric()) > best[0]) {
                        best[0] = r.dev().get(t.mainMetric());
                        try {
                            FineTunedModel.save(out, be, m, head, t, loaded.tokenizer(), tok.maxLength());
                        } catch (java.io.IOException e) {
                            throw new java.io.UncheckedIOException("cannot save the best model into " + out, e);
                        }
                        System.out.println("  best so far: saved to " + out);
                    }
                    if (r.endOfEpoch()) try { // resuming restarts at an epoch boundary
                        trainer.saveCheckpoint(checkpoint, Map.of("best_dev", Double.toString(best[0])));
                    } catch (java.io.IOException e) {
                        throw new java.io.UncheckedIOException("cannot write the checkpoint " + checkpoint, e);
                    }
                }, st -> {
                    stepLoss.add(st.loss());
                    if (bar[0] == null) {
                        bar[0] = new ProgressBarBuilder().setTaskName("epoch " + st.epoch()).setInitialMax(st.batches())
                                .setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(1000).continuousUpdate().build();
                        seen[0] = 0; // the rate counts from the end of the first step
                        seen[1] = System.nanoTime();
                    } else {
                        seen[0] += st.examples();
                    }
                    bar[0].step();
                    bar[0].setExtraMessage(String.format(Locale.ROOT, "loss %.4f, %.1f ex/s", st.loss(),
                            seen[0] / ((System.nanoTime() - seen[1]) * 1e-9)));
                });
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

    private static String format(Map<Metric, Double> m) {
        StringBuilder sb = new StringBuilder();
        m.forEach((k, v) -> sb.append(sb.isEmpty() ? "" : ", ").append(k.name().toLowerCase(Locale.ROOT))
                .append(String.format(Locale.ROOT, " %.4f", v)));
        return sb.toString();
    }
}
