package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueDownload;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.train.FineTunedModel;
import dev.topa.train.NonFiniteOutputException;
import dev.topa.train.Predictor;
import dev.topa.train.Trainer;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "eval", description = "Evaluate a model written by topa finetune on a GLUE dev split.")
final class EvalCommand implements Callable<Integer> {
    @picocli.CommandLine.Mixin
    DeviceOption device;

    @Option(names = "--model", required = true, description = "a directory written by topa finetune")
    Path model;

    @Option(names = "--task", description = "default: the task the model was trained for")
    String task;

    @Option(names = "--data-dir", description = {"GLUE data: one folder per task (default: downloaded into the cache;",
            "TOPA_GLUE_URL sets the source, TOPA_OFFLINE=1 uses the cache only)"})
    Path dataDir;

    @Option(names = "--split", description = "dev split (default: the task's first; MNLI: dev_matched)")
    String split;

    @Mixin
    ThreadsOption threads;

    @Override
    public Integer call() throws Exception {
        threads.apply();
        try (FineTunedModel.Loaded ft = FineTunedModel.load(model);
                BertTokenizer tok = new BertTokenizer(ft.tokenizer(), ft.maxSeqLen());
                Backend be = device.backend(); Predictor p = new Predictor(be, ft.model(), ft.head())) {
            GlueTask t = task == null ? ft.task() : GlueTask.parse(task);
            if (t.numLabels() != ft.head().outputs())
                throw new IllegalArgumentException(model + " has a " + ft.head().outputs() + "-output head; " + t.folder()
                        + " needs " + t.numLabels());
            String s = split == null ? t.devSplits().get(0) : split;
            List<Example> dev = t.dev(dataDir != null ? dataDir : GlueDownload.dataDir(t), s);
            List<Trainer.Item> items = Trainer.items(dev, tok);
            long t0 = System.nanoTime();
            float[][] outputs;
            try {
                outputs = p.outputs(items.stream().map(Trainer.Item::tokens).toList(), 64);
            } catch (NonFiniteOutputException e) {
                throw e.as(e.index(), t.folder() + " " + s + " example " + e.index() + " (\"" + abbreviate(dev.get(e.index()).textA()) + "\")");
            }
            var metrics = Predictor.metrics(t, outputs, dev);
            double sec = (System.nanoTime() - t0) * 1e-9;
            System.out.printf(Locale.ROOT, "task: %s, split: %s, examples: %d, %.1f s (%.1f examples/s)%n", t.folder(), s, dev.size(),
                    sec, dev.size() / sec);
            metrics.forEach((k, v) -> System.out.printf(Locale.ROOT, "%s: %.4f%n", k.name().toLowerCase(Locale.ROOT), v));
        }
        return 0;
    }

    static String abbreviate(String text) {
        return text.length() <= 60 ? text : text.substring(0, 57) + "...";
    }
}
