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
import dev.topa.train.Trainer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.Predicate;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "finetune", description = {"Fine-tune the encoder on a GLUE task (full or LoRA) and report the dev metric,",
        "trainable parameters, time per epoch and peak memory."})
final class FinetuneCommand implements Callable<Integer> {
    enum Method { FULL, LORA }

    @Option(names = "--task", required = true, description = "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    String task;

    @Option(names = "--method", defaultValue = "lora", description = "full or lora (default: ${DEFAULT-VALUE})")
    Method method;

    @Option(names = "--model", defaultValue = "default", description = "as for encode (default: ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--data-dir", required = true, description = "GLUE data: one folder per task (SST-2/train.tsv, ...)")
    Path dataDir;

    @Option(names = "--out", required = true, description = "where the best model (LoRA merged), head, tokenizer and report go")
    Path out;

    @Option(names = "--resume", description = "continue from the checkpoint in --out (written after every epoch)")
    boolean resume;

    @Option(names = "--epochs", description = "default: 3")
    Integer epochs;

    @Option(names = "--lr", description = "peak learning rate (default: 1e-3 for LoRA, 5e-5 for full)")
    Double lr;

    @Option(names = "--batch-size", defaultValue = "32", description = "default: ${DEFAULT-VALUE}")
    int batchSize;

    @Option(names = "--max-seq-len", defaultValue = "128", description = "default: ${DEFAULT-VALUE}")
    int maxSeqLen;

    @Option(names = "--lora-rank", defaultValue = "8", description = "default: ${DEFAULT-VALUE}")
    int loraRank;

    @Option(names = "--lora-alpha", defaultValue = "16", description = "default: ${DEFAULT-VALUE}")
    double loraAlpha;

    @Option(names = "--lora-targets", split = ",", defaultValue = "query,key,value,attention.output,intermediate,output",
            description = "comma-separated (default: ${DEFAULT-VALUE})")
    List<String> loraTargets;

    @Option(names = "--train-limit", description = "use only the first N training examples")
    Integer trainLimit;

    @Option(names = "--seed", defaultValue = "42", description = "default: ${DEFAULT-VALUE}")
    long seed;

    @Mixin
    ThreadsOption threads;

    @Override
    public Integer call() throws Exception {
        threads.apply();
        GlueTask t = GlueTask.parse(task);
        List<Example> trainEx = t.train(dataDir), devEx = t.dev(dataDir, t.devSplits().get(0));
        if (trainLimit != null) trainEx = trainEx.subList(0, Math.min(trainLimit, trainEx.size()));
        boolean lora = method == Method.LORA;
        Trainer.Config cfg = new Trainer.Config(epochs != null ? epochs : 3, batchSize, lr != null ? lr : lora ? 1e-3 : 5e-5,
                0.01, 0.06, 1.0, seed);
        ModelLoader.Loaded loaded = ModelLoader.load(model);
        try (BertModel m = loaded.model();
                BertTokenizer tok = new BertTokenizer(loaded.tokenizer(), Math.min(maxSeqLen, m.config().maxPositions()))) {
            Predicate<String> trainable = n -> true;
            if (lora) {
                EnumSet<LoraConfig.Target> targets = EnumSet.noneOf(LoraConfig.Target.class);
                for (String s : loraTargets) targets.add(LoraConfig.Target.parse(s.trim()));
                m.addLora(new LoraConfig(loraRank, loraAlpha, targets), seed);
                trainable = n -> n.contains("lora_") || n.contains("LayerNorm");
            }
            try (BertTraining training = new BertTraining(m, trainable);
                    TaskHead head = new TaskHead(m.config().hidden(), t.numLabels(), seed);
                    Trainer trainer = new Trainer(CpuBackend.create(), m, training, head, t, cfg)) {
                System.out.printf(Locale.ROOT, "task: %s, method: %s, model: %s%n", t.folder(), method.name().toLowerCase(Locale.ROOT),
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
                    if (bar[0] != null) bar[0].close();
                    bar[0] = null;
                    System.out.printf(Locale.ROOT, "epoch %d: train loss %.4f, dev %s, %.1f s%n", r.epoch(), r.trainLoss(),
                            format(r.dev()), r.seconds());
                    if (r.dev().get(t.mainMetric()) > best[0]) {
                        best[0] = r.dev().get(t.mainMetric());
                        try {
                            FineTunedModel.save(out, be, m, head, t, loaded.tokenizer(), tok.maxLength());
                        } catch (java.io.IOException e) {
                            throw new java.io.UncheckedIOException("cannot save the best model into " + out, e);
                        }
                        System.out.println("  best so far: saved to " + out);
                    }
                    try {
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
                TrainingReport.write(out, t, method.name().toLowerCase(Locale.ROOT), loaded.description(), trainer.trainableParameters(),
                        total, results, MemoryTracker.of(be.device()));
                TrainingPlot.write(out.resolve("report.png"), t.folder() + ", " + method.name().toLowerCase(Locale.ROOT), stepLoss,
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
