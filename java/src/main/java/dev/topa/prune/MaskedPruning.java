package dev.topa.prune;

import dev.topa.backend.Backend;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.tensor.Tensor;
import dev.topa.train.Trainer;
import java.util.Arrays;
import java.util.Map;
import java.util.Set;

/**
 * Gradual structured pruning while adapters train: removed heads and neurons are masked in place
 * (their value rows and FFN-in rows zeroed, with the matching rows of the adapters' B), which makes
 * their contexts and activations exactly zero -- the model computes what the compacted one will
 * (StructuredPruning's tests hold the two equal) -- and the masks only grow. {@link #maskGradients}
 * zeroes the adapter rows' gradients before each optimizer step (they are not zero), {@link #enforce}
 * re-zeroes the rows after it (AdamW's moments would move them); {@link #compact} removes the masked
 * units physically, and after {@link #handOver} the masks go on in the compacted model: units are
 * always named by their index in the dense model (the config these masks were made with), and the
 * model the masks edit holds the units {@link #heldHeads} / {@link #heldNeurons} say, in order. The
 * target follows a cubic schedule, s(t) = S (1 - (1 - t / T)^3), fast at first and gentle near the
 * end. The rows are zeroed by the backend the model trains on, wherever its weights live (host
 * memory or a device's).
 */
public final class MaskedPruning {
    private final BertConfig cfg;
    private final boolean[][] keepHeads, keepNeurons, heldHeads, heldNeurons;

    /** Masks of cfg's model, nothing masked, every unit held. */
    public MaskedPruning(BertConfig cfg) {
        this.cfg = cfg;
        keepHeads = new boolean[cfg.layers()][];
        keepNeurons = new boolean[cfg.layers()][];
        for (int l = 0; l < cfg.layers(); l++) {
            keepHeads[l] = new boolean[cfg.heads(l)];
            keepNeurons[l] = new boolean[cfg.ffn(l)];
            Arrays.fill(keepHeads[l], true);
            Arrays.fill(keepNeurons[l], true);
        }
        heldHeads = copy(keepHeads);
        heldNeurons = copy(keepNeurons);
    }

    /** The cubic schedule's target at step (of steps over which pruning ramps up), for a final fraction. */
    public static double cubicTarget(double finalFraction, long step, long steps) {
        double t = Math.min(1.0, step / (double) Math.max(1, steps));
        return finalFraction * (1 - Math.pow(1 - t, 3));
    }

    /**
     * Masks further units (of the model holding the held units) so that the given masks (dense
     * indices; they must include every unit masked so far) hold.
     */
    public void update(Backend be, BertModel model, boolean[][] heads, boolean[][] neurons) {
        for (int l = 0; l < cfg.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            int d = cfg.headDim();
            for (int h = 0, at = 0; h < keepHeads[l].length; h++) {
                if (keepHeads[l][h] && !heads[l][h]) {
                    keepHeads[l][h] = false;
                    zeroRows(be, model.parameter(n + "attention.self.value.weight"), (long) at * d, d);
                    zeroRows(be, model.parameter(n + "attention.self.value.bias"), (long) at * d, d);
                }
                if (heldHeads[l][h]) at++;
            }
            for (int j = 0, at = 0; j < keepNeurons[l].length; j++) {
                if (keepNeurons[l][j] && !neurons[l][j]) {
                    keepNeurons[l][j] = false;
                    zeroRows(be, model.parameter(n + "intermediate.dense.weight"), at, 1);
                    zeroRows(be, model.parameter(n + "intermediate.dense.bias"), at, 1);
                }
                if (heldNeurons[l][j]) at++;
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

    /** In the adapters' B factors (by parameter name) the rows of masked held units zeroed, runs of neighbours in one call. */
    private void zeroAdapterRows(Backend be, Map<String, Tensor> byName) {
        for (int l = 0; l < cfg.layers(); l++) {
            String n = "encoder.layer." + l + ".";
            int d = cfg.headDim();
            long a = (long) StructuredPruning.count(heldHeads[l]) * d;
            Tensor qkvB = byName.get(n + "attention.self.qkv.lora_B"), ffnB = byName.get(n + "intermediate.dense.lora_B");
            if (qkvB != null) zeroMaskedRuns(be, qkvB, keepHeads[l], heldHeads[l], 2 * a, d);
            if (ffnB != null) zeroMaskedRuns(be, ffnB, keepNeurons[l], heldNeurons[l], 0, 1);
        }
    }

    /**
     * Zeroes the rows of t from first on, width rows per held unit, of every held unit keep does not
     * keep (a unit not held takes no rows, so it does not break a run).
     */
    private static void zeroMaskedRuns(Backend be, Tensor t, boolean[] keep, boolean[] held, long first, long width) {
        long runStart = -1, at = 0;
        for (int u = 0; u <= keep.length; u++) {
            boolean masked = u < keep.length && held[u] && !keep[u];
            boolean kept = u == keep.length || (held[u] && keep[u]);
            if (masked && runStart < 0) runStart = at;
            if (kept && runStart >= 0) {
                zeroRows(be, t, first + runStart * width, (at - runStart) * width);
                runStart = -1;
            }
            if (u < keep.length && held[u]) at++;
        }
    }

    /**
     * Into trainer (of {@link #compact}'s model), the state of the trainer of the model these masks
     * edited: each tensor's kept rows and columns, the step and epochs; the adapters of a block these
     * masks empty have no place there and are dropped (any other parameter the trainer lacks is
     * refused). From then on the masks edit the compacted model: it holds the units they keep.
     */
    public void handOver(Trainer.State state, Trainer trainer) {
        boolean[][] h = inHeld(keepHeads, heldHeads), n = inHeld(keepNeurons, heldNeurons);
        Set<String> names = trainer.parameterNames();
        for (String name : state.tensors().keySet())
            if (!names.contains(name) && !StructuredPruning.emptied(name, h, n))
                throw new IllegalStateException("the compacted model's trainer has no " + name);
        BertConfig held = StructuredPruning.kept(cfg, heldHeads, heldNeurons);
        trainer.restore(state.only(names), (name, from, to) -> StructuredPruning.copyKept(name, from, to, held, h, n));
        holdKept();
    }

    /** The model these masks edit (holding the held units) with its masked units physically removed. */
    public BertModel compact(BertModel model) {
        return StructuredPruning.compact(model, inHeld(keepHeads, heldHeads), inHeld(keepNeurons, heldNeurons));
    }

    /**
     * The dense model compacted to the units a state of {@link #heldState} names (a resumed run's
     * model, from the dense one it replayed): these masks, fresh, then keep and hold just those.
     * A state that holds every unit returns dense itself (nothing to copy).
     */
    public BertModel compactAs(BertModel dense, String heldState) {
        if (!all(heldHeads) || !all(heldNeurons) || !compacted())
            throw new IllegalStateException("masks compacted to a checkpoint's units must be fresh");
        boolean[][][] parsed = parse(heldState);
        if (all(parsed[0]) && all(parsed[1])) return dense;
        BertModel out = StructuredPruning.compact(dense, parsed[0], parsed[1]);
        for (int l = 0; l < cfg.layers(); l++) {
            keepHeads[l] = parsed[0][l];
            keepNeurons[l] = parsed[1][l];
        }
        holdKept();
        return out;
    }

    /** Whether the model these masks edit holds no masked unit (it is compacted to them). */
    public boolean compacted() {
        return Arrays.deepEquals(heldHeads, keepHeads) && Arrays.deepEquals(heldNeurons, keepNeurons);
    }

    private void holdKept() {
        for (int l = 0; l < cfg.layers(); l++) {
            heldHeads[l] = keepHeads[l].clone();
            heldNeurons[l] = keepNeurons[l].clone();
        }
    }

    /** Per layer, of the held units, whether each is kept (the masks in the held model's own indices). */
    private static boolean[][] inHeld(boolean[][] keep, boolean[][] held) {
        boolean[][] out = new boolean[keep.length][];
        for (int l = 0; l < keep.length; l++) {
            out[l] = new boolean[StructuredPruning.count(held[l])];
            for (int u = 0, at = 0; u < keep[l].length; u++) if (held[l][u]) out[l][at++] = keep[l][u];
        }
        return out;
    }

    /** The masks as text: per layer a 1 for each kept unit, a 0 for each masked one; heads, then neurons. */
    public String state() {
        return text(keepHeads) + ";" + text(keepNeurons);
    }

    /** The units the model these masks edit holds, as {@link #state} writes masks. */
    public String heldState() {
        return text(heldHeads) + ";" + text(heldNeurons);
    }

    /**
     * Masks model (holding the held units, none of them masked yet) as {@link #state} says, on be (a
     * state that keeps a unit these masks removed is refused): a resumed run's model then computes
     * what it computed when that state was written.
     */
    public void restore(Backend be, BertModel model, String state) {
        boolean[][][] parsed = parse(state);
        boolean[][] heads = parsed[0], neurons = parsed[1];
        if (!within(heads, keepHeads) || !within(neurons, keepNeurons)) // masks only grow: a unit masked here cannot come back
            throw new IllegalArgumentException("masks: the state keeps units these masks have already removed");
        update(be, model, heads, neurons);
    }

    /** Whether every unit keep keeps, kept keeps too. */
    private static boolean within(boolean[][] keep, boolean[][] kept) {
        for (int l = 0; l < keep.length; l++) for (int j = 0; j < keep[l].length; j++) if (keep[l][j] && !kept[l][j]) return false;
        return true;
    }

    /** Heads, then neurons, of a state as {@link #state} writes it (the layers and units of these masks' config). */
    private boolean[][][] parse(String state) {
        String[] part = state.split(";", -1);
        if (part.length != 2) throw new IllegalArgumentException("masks: " + part.length + " parts, not 2 (heads; neurons)");
        return new boolean[][][] {parse(part[0], keepHeads, "heads"), parse(part[1], keepNeurons, "neurons")};
    }

    private static boolean all(boolean[][] units) {
        for (boolean[] layer : units) for (boolean u : layer) if (!u) return false;
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

    /** Per layer, whether the model these masks edit holds each head of the dense model. */
    public boolean[][] heldHeads() {
        return copy(heldHeads);
    }

    /** Per layer, whether the model these masks edit holds each FFN neuron of the dense model. */
    public boolean[][] heldNeurons() {
        return copy(heldNeurons);
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
