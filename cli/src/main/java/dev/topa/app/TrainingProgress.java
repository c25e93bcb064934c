package dev.topa.app;

import dev.topa.glue.Metric;
import dev.topa.prune.PruningAdapter;
import dev.topa.train.Trainer;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/**
 * A run's progress on the terminal: a progress bar per epoch (loss, examples/s, ETA), a line per
 * dev evaluation, and the pipeline's news.
 */
final class TrainingProgress implements PruningAdapter.Listener, AutoCloseable {
    private final Path out;
    private ProgressBar bar;
    private long seen, since;

    /** out: where the best model is saved (named in the line that says so). */
    TrainingProgress(Path out) {
        this.out = out;
    }

    @Override
    public void step(Trainer.StepInfo st) {
        if (bar == null) {
            bar = new ProgressBarBuilder().setTaskName("epoch " + st.epoch()).setInitialMax(st.batches()).setStyle(ProgressBarStyle.ASCII)
                    .setUpdateIntervalMillis(1000).continuousUpdate().build();
            seen = 0; // the rate counts from the end of the first step
            since = System.nanoTime();
        } else {
            seen += st.examples();
        }
        bar.step();
        bar.setExtraMessage(String.format(Locale.ROOT, "loss %.4f, %.1f ex/s", st.loss(), seen / ((System.nanoTime() - since) * 1e-9)));
    }

    @Override
    public void evaluated(Trainer.EpochResult r) {
        if (r.endOfEpoch()) close();
        System.out.printf(Locale.ROOT, "epoch %d%s: train loss %.4f, dev %s, %.1f s%n", r.epoch(), r.endOfEpoch() ? "" : " (step " + r.step() + ")",
                r.trainLoss(), format(r.dev()), r.seconds());
    }

    @Override
    public void saved(Trainer.EpochResult r) {
        System.out.println("  best so far: saved to " + out);
    }

    @Override
    public void notSaved(Trainer.EpochResult r) {
        System.out.println("  not saved: the model has not reached its final shape yet");
    }

    @Override
    public void message(String line) {
        System.out.println(line);
    }

    @Override
    public void close() {
        if (bar != null) bar.close();
        bar = null;
    }

    static String format(Map<Metric, Double> m) {
        StringBuilder sb = new StringBuilder();
        m.forEach((k, v) -> sb.append(sb.isEmpty() ? "" : ", ").append(k.name().toLowerCase(Locale.ROOT)).append(String.format(Locale.ROOT, " %.4f", v)));
        return sb.toString();
    }
}
