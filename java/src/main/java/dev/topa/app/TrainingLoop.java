package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.train.FineTunedModel;
import dev.topa.train.Trainer;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/**
 * A training command's run of {@link Trainer#fit}: a progress bar (loss, examples/s, ETA), one
 * line per dev evaluation, the best model saved into the output directory (LoRA merged), and a
 * checkpoint after each epoch when a checkpoint file is given.
 */
final class TrainingLoop {
    /** What the loop saw: every evaluation and the loss of every step. */
    record Outcome(List<Trainer.EpochResult> results, List<Double> stepLoss, double best) {}

    private TrainingLoop() {}

    static Outcome run(Backend be, Trainer trainer, List<Trainer.Item> train, List<Trainer.Item> dev, GlueTask t, BertModel m,
            TaskHead head, Path tokenizer, int maxSeqLen, Path out, Path checkpoint, double bestSoFar) {
        return run(be, trainer, train, dev, t, m, head, tokenizer, maxSeqLen, out, checkpoint, bestSoFar, s -> {}, null);
    }

    /**
     * As above; afterStep runs after each optimizer step (gradual pruning's masks), and export, when
     * given, makes the model that is saved as the best so far (a compacted copy, closed after saving;
     * null while the model is not in its final shape, so nothing is saved yet).
     */
    static Outcome run(Backend be, Trainer trainer, List<Trainer.Item> train, List<Trainer.Item> dev, GlueTask t, BertModel m,
            TaskHead head, Path tokenizer, int maxSeqLen, Path out, Path checkpoint, double bestSoFar,
            java.util.function.Consumer<Trainer.StepInfo> afterStep, java.util.function.Supplier<BertModel> export) {
        double[] best = {bestSoFar};
        ProgressBar[] bar = {null};
        List<Double> stepLoss = new ArrayList<>();
        long[] seen = {0, System.nanoTime()};
        List<Trainer.EpochResult> results = trainer.fit(train, dev, r -> {
            if (bar[0] != null && r.endOfEpoch()) {
                bar[0].close();
                bar[0] = null;
            }
            System.out.printf(Locale.ROOT, "epoch %d%s: train loss %.4f, dev %s, %.1f s%n", r.epoch(),
                    r.endOfEpoch() ? "" : " (step " + r.step() + ")", r.trainLoss(), format(r.dev()), r.seconds());
            if (r.dev().get(t.mainMetric()) > best[0]) {
                try {
                    if (export == null) {
                        FineTunedModel.save(out, be, m, head, t, tokenizer, maxSeqLen);
                        best[0] = r.dev().get(t.mainMetric());
                        System.out.println("  best so far: saved to " + out);
                    } else {
                        try (BertModel saved = export.get()) {
                            if (saved == null) {
                                System.out.println("  not saved: the model has not reached its final shape yet");
                            } else {
                                FineTunedModel.save(out, be, saved, head, t, tokenizer, maxSeqLen);
                                best[0] = r.dev().get(t.mainMetric());
                                System.out.println("  best so far: saved to " + out);
                            }
                        }
                    }
                } catch (IOException e) {
                    throw new UncheckedIOException("cannot save the best model into " + out, e);
                }
            }
            if (checkpoint != null && r.endOfEpoch()) try { // resuming restarts at an epoch boundary
                trainer.saveCheckpoint(checkpoint, Map.of("best_dev", Double.toString(best[0])));
            } catch (IOException e) {
                throw new UncheckedIOException("cannot write the checkpoint " + checkpoint, e);
            }
        }, st -> {
            afterStep.accept(st);
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
        if (bar[0] != null) bar[0].close();
        return new Outcome(results, stepLoss, best[0]);
    }

    static String format(Map<Metric, Double> m) {
        StringBuilder sb = new StringBuilder();
        m.forEach((k, v) -> sb.append(sb.isEmpty() ? "" : ", ").append(k.name().toLowerCase(Locale.ROOT))
                .append(String.format(Locale.ROOT, " %.4f", v)));
        return sb.toString();
    }
}
