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
 * A run's progress: on a terminal a live bar per epoch (loss, examples/s, ETA); elsewhere (CI, nohup,
 * a pipe), where every redraw would become a line of its own, one plain line per interval instead.
 * Then a line per dev evaluation, and the pipeline's news.
 */
final class TrainingProgress implements PruningAdapter.Listener, AutoCloseable {
    /** Seconds between the plain lines written when the output is not a terminal. */
    static final long PLAIN_INTERVAL_SECONDS = 30;

    private final Path out;
    private final boolean terminal;
    private final long intervalNanos;
    private ProgressBar bar;
    private long seen, since, lastLine;
    private int epoch = -1;

    /** out: where the best model is saved (named in the line that says so). */
    TrainingProgress(Path out) {
        this(out, System.console() != null && System.console().isTerminal(), PLAIN_INTERVAL_SECONDS * 1_000_000_000L);
    }

    /** terminal: draw the live bar; otherwise a plain line at most every intervalNanos. */
    TrainingProgress(Path out, boolean terminal, long intervalNanos) {
        this.out = out;
        this.terminal = terminal;
        this.intervalNanos = intervalNanos;
    }

    @Override
    public void step(Trainer.StepInfo st) {
        if (!terminal) {
            plainLine(st);
            return;
        }
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

    private void plainLine(Trainer.StepInfo st) {
        long now = System.nanoTime();
        if (st.epoch() != epoch) {
            epoch = st.epoch();
            seen = 0;
            since = lastLine = now;
            return;
        }
        seen += st.examples();
        if (now - lastLine < intervalNanos) return;
        lastLine = now;
        double seconds = (now - since) * 1e-9;
        long left = Math.round((st.batches() - st.batch()) * seconds / Math.max(1, st.batch() - 1));
        System.out.printf(Locale.ROOT, "epoch %d: batch %d/%d, loss %.4f, %.1f ex/s, ~%d s left in the epoch%n", st.epoch(), st.batch(),
                st.batches(), st.loss(), seen / seconds, left);
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
