package dev.topa.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.backend.Backend;
import dev.topa.glue.Metric;
import dev.topa.io.ModelFormatException;
import dev.topa.io.OutputDirectory;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.MemoryTracker;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BooleanSupplier;
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
    /**
     * What the loop saw: every evaluation, the loss of every step, the best main metric and the index
     * in results of the evaluation whose model was saved as the best (-1: none). That one is the
     * best: an evaluation of a model not yet in its final shape (gradual pruning's ramp) may score
     * higher but is never saved.
     */
    public record Outcome(List<Trainer.EpochResult> results, List<Double> stepLoss, double best, int bestIndex) {
        /** A run from its start: nothing seen yet. */
        public static final Outcome NONE = new Outcome(List.of(), List.of(), Double.NEGATIVE_INFINITY, -1);

        /** The evaluation whose model was saved as the best, or null. */
        public Trainer.EpochResult bestResult() {
            return bestIndex < 0 ? null : results.get(bestIndex);
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * What a checkpoint's run had seen before it was written (its metadata from
     * {@link Trainer#loadCheckpoint}): the evaluations and step losses go on into the resumed run's
     * report and plot, and only a better evaluation replaces the saved best model.
     */
    public static Outcome resumed(Map<String, String> checkpointMetadata) {
        double best = Double.parseDouble(checkpointMetadata.getOrDefault("best_dev", "-Infinity"));
        String history = checkpointMetadata.get("history");
        if (history == null) return new Outcome(List.of(), List.of(), best, -1);
        try {
            JsonNode h = JSON.readTree(history);
            List<Trainer.EpochResult> results = new ArrayList<>();
            for (JsonNode r : h.get("results")) {
                Map<Metric, Double> dev = new EnumMap<>(Metric.class);
                r.get("dev").fields().forEachRemaining(e -> dev.put(Metric.valueOf(e.getKey()), e.getValue().asDouble()));
                results.add(new Trainer.EpochResult(r.get("epoch").asInt(), r.get("step").asLong(), r.get("end_of_epoch").asBoolean(),
                        r.get("train_loss").asDouble(), dev, r.get("seconds").asDouble()));
            }
            List<Double> loss = new ArrayList<>();
            for (JsonNode l : h.get("step_loss")) loss.add(l.asDouble());
            // a checkpoint without best_index (an older topa's): the first evaluation that reached best_dev, the one saved
            // whenever every evaluation could be (runs that resume always could)
            int index = Integer.parseInt(checkpointMetadata.getOrDefault("best_index", "-1"));
            for (int i = 0; index < 0 && i < results.size(); i++)
                if (results.get(i).dev().containsValue(best)) index = i;
            return new Outcome(List.copyOf(results), List.copyOf(loss), best, index);
        } catch (IOException | RuntimeException e) {
            throw new ModelFormatException("checkpoint metadata 'history' unreadable: " + e.getMessage(), e);
        }
    }

    private static String history(List<Trainer.EpochResult> results, List<Double> stepLoss) {
        ObjectNode h = JSON.createObjectNode();
        ArrayNode rs = h.putArray("results");
        for (Trainer.EpochResult r : results) {
            ObjectNode o = rs.addObject().put("epoch", r.epoch()).put("step", r.step()).put("end_of_epoch", r.endOfEpoch())
                    .put("train_loss", r.trainLoss()).put("seconds", r.seconds());
            ObjectNode dev = o.putObject("dev");
            r.dev().forEach((m, v) -> dev.put(m.name(), v));
        }
        ArrayNode l = h.putArray("step_loss");
        for (double v : stepLoss) l.add((float) v); // a plot's precision, a quarter of the text
        return h.toString();
    }

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
     * host copy, closed after saving); saveable, whether the model may be saved now (false while it
     * is not in its final shape: its best is not taken, on every rank alike, since each asks the same
     * question of the same step count); state, what else a checkpoint must hold for the run to resume
     * (gradual pruning's masks and scores: written into each checkpoint's metadata, read back by the
     * caller on resume).
     */
    public record Hooks(Consumer<Trainer.StepInfo> afterStep, Supplier<BertModel> export, BooleanSupplier saveable, Listener listener,
            Supplier<Map<String, String>> state) {
        public static final Hooks NONE = new Hooks(st -> {}, null, new Listener() {});

        public Hooks(Consumer<Trainer.StepInfo> afterStep, Supplier<BertModel> export, Listener listener) {
            this(afterStep, export, () -> true, listener, Map::of);
        }

        public Hooks withListener(Listener l) {
            return new Hooks(afterStep, export, saveable, l, state);
        }

        public Hooks withExport(Supplier<BertModel> e) {
            return new Hooks(afterStep, e, saveable, listener, state);
        }
    }

    private TrainingLoop() {}

    /**
     * Fits trainer and saves model and head (the best by the task's main metric above before's best)
     * with be (the host backend that merges and saves). before: what the run saw before a resume
     * ({@link #resumed}; {@link Outcome#NONE} from the start); the outcome and every checkpoint
     * include it.
     */
    public static Outcome run(Backend be, Trainer trainer, List<Trainer.Item> train, List<Trainer.Item> dev, BertModel model, TaskHead head,
            Output output, Outcome before, Hooks hooks) {
        double[] best = {before.best()};
        int[] bestIndex = {before.bestIndex()};
        List<Double> stepLoss = new ArrayList<>(before.stepLoss());
        List<Trainer.EpochResult> results = new ArrayList<>(before.results());
        boolean writes = trainer.communicator().isRoot(); // across processes only rank 0 writes; all keep the same books
        try (MemoryTracker.Phase training = trainer.memory().during("training")) { // the trainer names its evaluations
            trainer.fit(train, dev, r -> {
                try (MemoryTracker.Phase saving = trainer.memory().during("saving")) {
                    results.add(r);
                    hooks.listener().evaluated(r);
                    if (r.dev().get(trainer.task().mainMetric()) > best[0]) {
                        if (hooks.saveable().getAsBoolean()) {
                            if (writes) try {
                                saveBest(be, trainer, model, head, output, hooks.export());
                            } catch (IOException e) {
                                throw new UncheckedIOException(e.getMessage(), e);
                            }
                            best[0] = r.dev().get(trainer.task().mainMetric());
                            bestIndex[0] = results.size() - 1;
                            hooks.listener().saved(r);
                        } else {
                            hooks.listener().notSaved(r);
                        }
                    }
                    if (writes && output.checkpoint() != null && r.endOfEpoch()) try { // resuming restarts at an epoch boundary
                        Map<String, String> meta = new LinkedHashMap<>();
                        meta.put("best_dev", Double.toString(best[0]));
                        meta.put("best_index", Integer.toString(bestIndex[0]));
                        meta.put("history", history(results, stepLoss));
                        meta.putAll(hooks.state().get());
                        if (output.identity() != null) meta.putAll(output.identity().metadata());
                        trainer.saveCheckpoint(output.checkpoint(), meta);
                    } catch (IOException e) {
                        throw new UncheckedIOException("cannot write the checkpoint " + output.checkpoint() + ": " + OutputDirectory.reason(e), e);
                    }
                }
            }, st -> {
                hooks.afterStep().accept(st);
                stepLoss.add(st.loss());
                hooks.listener().step(st);
            });
        }
        return new Outcome(List.copyOf(results), List.copyOf(stepLoss), best[0], bestIndex[0]);
    }

    private static void saveBest(Backend be, Trainer trainer, BertModel model, TaskHead head, Output output, Supplier<BertModel> export)
            throws IOException {
        if (export == null) {
            output.dir().replaceModel(tmp -> FineTunedModel.save(tmp, be, model, head, trainer.task(), output.tokenizer(), output.maxSeqLen()));
            return;
        }
        try (BertModel saved = export.get()) {
            output.dir().replaceModel(tmp -> FineTunedModel.save(tmp, be, saved, head, trainer.task(), output.tokenizer(), output.maxSeqLen()));
        }
    }
}
