package dev.topa.train;

import dev.topa.backend.Backend;
import dev.topa.io.OutputDirectory;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Supplier;

/**
 * A run of {@link Trainer#fit} that keeps its results: the best model so far saved into the output
 * directory (LoRA merged) at every evaluation that improves the task's main metric, a checkpoint
 * after each epoch when a checkpoint file is given, and what happened reported to a {@link Listener}
 * (the command line draws a progress bar and prints the evaluations). Trained across processes,
 * only rank 0 saves (it holds what every rank holds).
 */
public final class TrainingLoop {
    /** What the loop saw: every evaluation, the loss of every step, and the best main metric. */
    public record Outcome(List<Trainer.EpochResult> results, List<Double> stepLoss, double best) {}

    /**
     * Where a run saves: the output directory (the model replaced there as one unit), the tokenizer
     * and length saved beside the model, the checkpoint file (or null) and the run's identity
     * recorded in it (or null).
     */
    public record Output(OutputDirectory dir, Path tokenizer, int maxSeqLen, Path checkpoint, RunIdentity identity) {}

    /** What a run reports as it goes; every method may be left out. */
    public interface Listener {
        /** After each optimizer step. */
        default void step(Trainer.StepInfo step) {}

        /** After each dev evaluation. */
        default void evaluated(Trainer.EpochResult result) {}

        /** The model of that evaluation was saved as the best so far. */
        default void saved(Trainer.EpochResult result) {}

        /** The model of that evaluation is the best so far but could not be saved (it is not in its final shape yet). */
        default void notSaved(Trainer.EpochResult result) {}
    }

    /**
     * What a run does beside training: afterStep runs after each optimizer step (gradual pruning's
     * masks); export, when given, makes the model that is saved as the best so far (a compacted or
     * host copy, closed after saving; null while the model is not in its final shape, so nothing is
     * saved yet).
     */
    public record Hooks(Consumer<Trainer.StepInfo> afterStep, Supplier<BertModel> export, Listener listener) {
        public static final Hooks NONE = new Hooks(st -> {}, null, new Listener() {});

        public Hooks withListener(Listener l) {
            return new Hooks(afterStep, export, l);
        }

        public Hooks withExport(Supplier<BertModel> e) {
            return new Hooks(afterStep, e, listener);
        }
    }

    private TrainingLoop() {}

    /**
     * Fits trainer and saves model and head (the best by the task's main metric above bestSoFar)
     * with be (the host backend that merges and saves).
     */
    public static Outcome run(Backend be, Trainer trainer, List<Trainer.Item> train, List<Trainer.Item> dev, BertModel model, TaskHead head,
            Output output, double bestSoFar, Hooks hooks) {
        double[] best = {bestSoFar};
        List<Double> stepLoss = new ArrayList<>();
        boolean writes = trainer.communicator().isRoot(); // across processes only rank 0 writes; all keep the same books
        List<Trainer.EpochResult> results = trainer.fit(train, dev, r -> {
            hooks.listener().evaluated(r);
            if (r.dev().get(trainer.task().mainMetric()) > best[0]) {
                boolean saved;
                try {
                    saved = !writes || saveBest(be, trainer, model, head, output, hooks.export());
                } catch (IOException e) {
                    throw new UncheckedIOException(e.getMessage(), e);
                }
                if (saved) {
                    best[0] = r.dev().get(trainer.task().mainMetric());
                    hooks.listener().saved(r);
                } else {
                    hooks.listener().notSaved(r);
                }
            }
            if (writes && output.checkpoint() != null && r.endOfEpoch()) try { // resuming restarts at an epoch boundary
                Map<String, String> meta = new LinkedHashMap<>();
                meta.put("best_dev", Double.toString(best[0]));
                if (output.identity() != null) meta.putAll(output.identity().metadata());
                trainer.saveCheckpoint(output.checkpoint(), meta);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot write the checkpoint " + output.checkpoint() + ": " + OutputDirectory.reason(e), e);
            }
        }, st -> {
            hooks.afterStep().accept(st);
            stepLoss.add(st.loss());
            hooks.listener().step(st);
        });
        return new Outcome(results, stepLoss, best[0]);
    }

    private static boolean saveBest(Backend be, Trainer trainer, BertModel model, TaskHead head, Output output, Supplier<BertModel> export)
            throws IOException {
        if (export == null) {
            output.dir().replaceModel(tmp -> FineTunedModel.save(tmp, be, model, head, trainer.task(), output.tokenizer(), output.maxSeqLen()));
            return true;
        }
        try (BertModel saved = export.get()) {
            if (saved == null) return false;
            output.dir().replaceModel(tmp -> FineTunedModel.save(tmp, be, saved, head, trainer.task(), output.tokenizer(), output.maxSeqLen()));
            return true;
        }
    }
}
