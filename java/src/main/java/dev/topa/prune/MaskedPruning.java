package dev.topa.prune;

import dev.topa.backend.Backend;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.tensor.Tensor;
import dev.topa.train.Trainer;
import java.util.Map;
import java.util.Set;

/**
 * Gradual structured pruning while adapters train: removed heads and neurons are masked in place
 * (their value rows and FFN-in rows zeroed, with the matching rows of the adapters' B), which makes
 * their contexts and activations exactly zero -- the model computes what the compacted one will
 * (StructuredPruning's tests hold the two equal) -- and the masks only grow. {@link #maskGradients}
 * zeroes the adapter rows' gradients before each optimizer step (they are not zero), {@link #enforce}
 * re-zeroes the rows after it (AdamW's moments would move them); {@link #compact}
 * removes the masked units physically at the end. The target follows a cubic schedule,
 * s(t) = S (1 - (1 - t / T)^3), fast at first and gentle near the end. The rows are zeroed by the
 * backend the model trains on, wherever its weights live (host memory or a device's).
 */
public final class MaskedPruning {
    private final BertConfig cfg;
    private final boolean[][] keepHeads, keepNeurons;

    public MaskedPruning(BertConfig cfg) {
        this.cfg = cfg;
        keepHeads = new boolean[cfg.layers()][];
        keepNeurons = new boolean[cfg.layers()][];
        for (int l = 0; l < cfg.layers(); l++) {
            keepHeads[l] = new boolean[cfg.heads(l)];
            keepNeurons[l] = new boolean[cfg.ffn(l)];
            java.util.Arrays.fill(keepHeads[l], true);
            java.util.Arrays.fill(keepNeurons[l], true);
        }
    }

    /** The cubic schedule's target at step (of steps over which pruning ramps up), for a final fraction. */
    public static double cubicTarget(double finalFraction, long step, long steps) {
        double t = Math.min(1.0, step / (double) Math.max(1, steps));
        return finalFraction * (1 - Math.pow(1 - t, 3));
    }

    /** Masks further units so that the given masks (which must include every unit masked so far) hold. */
    public void update(Backend be, BertModel model, boolean[][] heads, boolean[][] neurons) {
        for (int l = 0; l < cfg.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            int d = cfg.headDim();
            for (int h = 0; h < keepHeads[l].length; h++)
                if (keepHeads[l][h] && !heads[l][h]) {
                    keepHeads[l][h] = false;
                    zeroRows(be, model.parameter(n + "attention.self.value.weight"), (long) h * d, d);
                    zeroRows(be, model.parameter(n + "attention.self.value.bias"), (long) h * d, d);
                }
            for (int j = 0; j < keepNeurons[l].length; j++)
                if (keepNeurons[l][j] && !neurons[l][j]) {
                    keepNeurons[l][j] = false;
                    zeroRows(be, model.parameter(n + "intermediate.dense.weight"), j, 1);
                    zeroRows(be, model.parameter(n + "intermediate.dense.bias"), j, 1);
                }
        }
        enforce(be, model);
    }

    /** Re-zeroes the adapter rows of masked units (after each optimizer step). */
    public void enforce(Backend be, BertModel model) {
        zeroAdapterRows(be, model.parameters());
    }

    /**
     * Zeroes the masked units' rows of the adapters' gradients (before each optimizer step). They are
     * not zero (a masked neuron's GELU'(0) passes on the gradient through its FFN-out column, a masked
     * head's value rows get theirs through its attention-output columns), and left in they would count
     * in the norm that clipping reads, which the compacted model, without them, does not have.
     */
    public void maskGradients(Backend be, Map<String, Tensor> gradients) {
        zeroAdapterRows(be, gradients);
    }

    /** In the adapters' B factors (by parameter name) the rows of masked units zeroed, runs of neighbours in one call. */
    private void zeroAdapterRows(Backend be, Map<String, Tensor> byName) {
        for (int l = 0; l < cfg.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            int d = cfg.headDim(), a = cfg.attentionWidth(l);
            Tensor qkvB = byName.get(n + "attention.self.qkv.lora_B"), ffnB = byName.get(n + "intermediate.dense.lora_B");
            if (qkvB != null) zeroMaskedRuns(be, qkvB, keepHeads[l], 2L * a, d);
            if (ffnB != null) zeroMaskedRuns(be, ffnB, keepNeurons[l], 0, 1);
        }
    }

    /** Zeroes the rows of t from first on, width rows per unit, of every unit keep does not keep. */
    private static void zeroMaskedRuns(Backend be, Tensor t, boolean[] keep, long first, long width) {
        for (int u = 0; u < keep.length; u++) {
            if (keep[u]) continue;
            int end = u;
            while (end < keep.length && !keep[end]) end++;
            zeroRows(be, t, first + u * width, (end - u) * width);
            u = end;
        }
    }

    /**
     * Into trainer (of {@link #compact}'s model), the state of the masked model's trainer: each
     * tensor's kept rows and columns, the step and epochs; the adapters of a block these masks empty
     * have no place there and are dropped (any other parameter the trainer lacks is refused).
     */
    public void handOver(Trainer.State state, Trainer trainer) {
        Set<String> names = trainer.parameterNames();
        for (String n : state.tensors().keySet())
            if (!names.contains(n) && !StructuredPruning.emptied(n, keepHeads, keepNeurons))
                throw new IllegalStateException("the compacted model's trainer has no " + n);
        trainer.restore(state.only(names), (n, from, to) -> StructuredPruning.copyKept(n, from, to, cfg, keepHeads, keepNeurons));
    }

    /** The masked model with its masked units physically removed. */
    public BertModel compact(BertModel model) {
        return StructuredPruning.compact(model, keepHeads, keepNeurons);
    }

    /** The masks as text: per layer a 1 for each kept unit, a 0 for each masked one; heads, then neurons. */
    public String state() {
        return text(keepHeads) + ";" + text(keepNeurons);
    }

    /**
     * Masks model as {@link #state} says, on be (these masks and the model fresh: nothing masked yet;
     * a state that keeps a unit these masks removed is refused): a resumed run's model then computes
     * what it computed when that state was written.
     */
    public void restore(Backend be, BertModel model, String state) {
        String[] part = state.split(";", -1);
        if (part.length != 2) throw new IllegalArgumentException("masks: " + part.length + " parts, not 2 (heads; neurons)");
        boolean[][] heads = parse(part[0], keepHeads, "heads"), neurons = parse(part[1], keepNeurons, "neurons");
        if (!within(heads, keepHeads) || !within(neurons, keepNeurons)) // masks only grow: a unit masked here cannot come back
            throw new IllegalArgumentException("masks: the state keeps units these masks have already removed");
        update(be, model, heads, neurons);
    }

    /** Whether every unit keep keeps, kept keeps too. */
    private static boolean within(boolean[][] keep, boolean[][] kept) {
        for (int l = 0; l < keep.length; l++) for (int j = 0; j < keep[l].length; j++) if (keep[l][j] && !kept[l][j]) return false;
        return true;
    }

    private static String text(boolean[][] keep) {
        StringBuilder b = new StringBuilder();
        for (int l = 0; l < keep.length; l++) {
            if (l > 0) b.append('/');
            for (boolean k : keep[l]) b.append(k ? '1' : '0');
        }
        return b.toString();
    }

    private static boolean[][] parse(String text, boolean[][] shape, String what) {
        String[] layers = text.split("/", -1);
        if (layers.length != shape.length) throw new IllegalArgumentException("masks: " + layers.length + " layers of " + what + ", the model has " + shape.length);
        boolean[][] keep = new boolean[layers.length][];
        for (int l = 0; l < layers.length; l++) {
            if (layers[l].length() != shape[l].length || !layers[l].matches("[01]*"))
                throw new IllegalArgumentException("masks: layer " + l + " of " + what + " is '" + layers[l] + "', the model has " + shape[l].length + " units");
            keep[l] = new boolean[shape[l].length];
            for (int j = 0; j < keep[l].length; j++) keep[l][j] = layers[l].charAt(j) == '1';
        }
        return keep;
    }

    public boolean[][] keptHeads() {
        return copy(keepHeads);
    }

    public boolean[][] keptNeurons() {
        return copy(keepNeurons);
    }

    private static boolean[][] copy(boolean[][] a) {
        boolean[][] c = new boolean[a.length][];
        for (int i = 0; i < a.length; i++) c[i] = a[i].clone();
        return c;
    }

    private static void zeroRows(Backend be, Tensor t, long from, long count) {
        be.zero(t.rows(from, from + count));
    }
}
