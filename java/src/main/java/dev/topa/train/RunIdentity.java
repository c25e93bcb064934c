package dev.topa.train;

import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.Safetensors;
import dev.topa.model.BertModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * What makes a run the same run: the task, the starting model (its fingerprint), the training
 * data, the dev examples the best model is chosen on, and every field of the recipe. Written into
 * each checkpoint; a resume compares it and refuses a checkpoint of another run, saying what differs.
 */
public record RunIdentity(Map<String, String> fields) {
    private static final String PREFIX = "run.";
    /**
     * Fields that checkpoints of older builds do not record (they evaluated the whole dev split): a
     * checkpoint without them resumes (one resumed with a part of the split is not caught).
     */
    private static final Set<String> NOT_RECORDED_BEFORE = Set.of("dev_examples", "dev_data");

    public RunIdentity {
        fields = Map.copyOf(fields);
    }

    /** model: as loaded, before any adapter is added or any weight trained; dev: the examples the best model is chosen on. */
    public static RunIdentity of(GlueTask task, BertModel model, List<Example> train, List<Example> dev, Recipe recipe) {
        Map<String, String> f = new LinkedHashMap<>();
        f.put("task", task.name());
        f.put("model", model.fingerprint());
        f.put("train_examples", Integer.toString(train.size()));
        f.put("train_data", dataFingerprint(train));
        f.put("dev_examples", Integer.toString(dev.size()));
        f.put("dev_data", dataFingerprint(dev));
        recipe.describe().forEach((k, v) -> f.put("recipe." + k, String.valueOf(v)));
        return new RunIdentity(f);
    }

    /** A hash of the examples' texts and targets, in order. */
    static String dataFingerprint(List<Example> examples) {
        long h = 1125899906842597L;
        for (Example e : examples) h = 31 * h + Objects.hash(e.textA(), e.textB(), e.label(), Float.floatToIntBits(e.score()));
        return Long.toHexString(h);
    }

    /** This identity with one more field. */
    public RunIdentity with(String field, String value) {
        Map<String, String> f = new LinkedHashMap<>(fields);
        f.put(field, value);
        return new RunIdentity(f);
    }

    /** As checkpoint metadata. */
    public Map<String, String> metadata() {
        Map<String, String> m = new LinkedHashMap<>();
        fields.forEach((k, v) -> m.put(PREFIX + k, v));
        return m;
    }

    /**
     * Fails unless checkpoint exists and was written by this run (its metadata alone is read, before
     * any tensor is loaded); see {@link #check}.
     */
    public void checkCheckpoint(Path checkpoint) {
        if (!Files.isRegularFile(checkpoint)) throw new IllegalArgumentException("--resume: no checkpoint at " + checkpoint);
        try (Safetensors st = Safetensors.read(checkpoint)) {
            check(checkpoint, st.metadata());
        }
    }

    /** Throws IllegalArgumentException listing every field in which the checkpoint's run differs from this one. */
    public void check(Path checkpoint, Map<String, String> metadata) {
        List<String> diffs = new ArrayList<>();
        for (var e : new java.util.TreeMap<>(fields).entrySet()) {
            String theirs = metadata.get(PREFIX + e.getKey());
            if (theirs == null && NOT_RECORDED_BEFORE.contains(e.getKey())) continue;
            if (!e.getValue().equals(theirs))
                diffs.add(e.getKey() + ": checkpoint " + (theirs == null ? "(not recorded)" : theirs) + ", this run " + e.getValue());
        }
        if (!diffs.isEmpty())
            throw new IllegalArgumentException(checkpoint + " is a checkpoint of another run; it differs in " + String.join("; ", diffs)
                    + " (resume with the same task, model, data and recipe, or start afresh in another --out)");
    }
}
