package dev.topa.prune;

import dev.topa.dist.Communicator;
import dev.topa.model.BertConfig;
import dev.topa.model.BertTraining;
import dev.topa.tensor.Tensor;
import java.util.stream.IntStream;

/**
 * Task-oriented importance of every attention head and FFN neuron, accumulated from the mask
 * gradients backward reports (no weight gradients kept): first-order Taylor, the sum over batches
 * of |dL/dm| (the paper's head score), and Fisher, the sum over examples of (dL/dm)^2.
 */
public final class ImportanceScores implements BertTraining.MaskGradientListener {
    /** taylor and fisher score heads, neurons (and, taylor, weight blocks exactly); lora-taylor scores weight blocks from adapter gradients. */
    public enum Scorer { TAYLOR, FISHER, LORA_TAYLOR }

    private final double[][] headTaylor, headFisher, neuronTaylor, neuronFisher;
    private long batches;
    private Communicator comm = Communicator.SINGLE;

    /**
     * Scores of a data-parallel run: each batch's per-unit sums (and sums of squares) are summed over
     * the ranks before the absolute value is taken, so the scores are those of the global batch and
     * every rank ranks the same units.
     */
    public ImportanceScores distributed(Communicator comm) {
        this.comm = comm;
        return this;
    }

    public ImportanceScores(BertConfig cfg) {
        int n = cfg.layers();
        headTaylor = new double[n][];
        headFisher = new double[n][];
        neuronTaylor = new double[n][];
        neuronFisher = new double[n][];
        for (int l = 0; l < n; l++) {
            headTaylor[l] = new double[cfg.heads(l)];
            headFisher[l] = new double[cfg.heads(l)];
            neuronTaylor[l] = new double[cfg.ffn(l)];
            neuronFisher[l] = new double[cfg.ffn(l)];
        }
    }

    @Override
    public void heads(int layer, Tensor perExample) {
        if (layer == headTaylor.length - 1) batches++; // backward visits the last layer first, once per batch
        accumulate(perExample, null, headTaylor[layer], headFisher[layer], comm);
    }

    @Override
    public void neurons(int layer, Tensor perExample) {
        accumulate(perExample, null, neuronTaylor[layer], neuronFisher[layer], comm);
    }

    /**
     * A listener for a model compacted from the one these scores are of: heldHeads[l][h] and
     * heldNeurons[l][j] (in these scores' units) say which units it holds, in order; its units' mask
     * gradients go to their places here, so the scores go on in the units they started in.
     */
    public BertTraining.MaskGradientListener held(boolean[][] heldHeads, boolean[][] heldNeurons) {
        int[][] heads = unitsOf(heldHeads, headTaylor), neurons = unitsOf(heldNeurons, neuronTaylor);
        int top = heads.length - 1; // backward's first callback of a batch: the last layer's block that is held (its FFN's first)
        while (top > 0 && heads[top].length == 0 && neurons[top].length == 0) top--;
        boolean countOnNeurons = neurons[top].length > 0;
        int first = top;
        return new BertTraining.MaskGradientListener() {
            @Override
            public void heads(int layer, Tensor perExample) {
                if (layer == first && !countOnNeurons) batches++;
                accumulate(perExample, heads[layer], headTaylor[layer], headFisher[layer], comm);
            }

            @Override
            public void neurons(int layer, Tensor perExample) {
                if (layer == first && countOnNeurons) batches++;
                accumulate(perExample, neurons[layer], neuronTaylor[layer], neuronFisher[layer], comm);
            }
        };
    }

    /** Per layer, the indices (into these scores' units) of the held ones, in order. */
    private static int[][] unitsOf(boolean[][] held, double[][] shape) {
        if (held.length != shape.length) throw new IllegalArgumentException("held units of " + held.length + " layers, the scores have " + shape.length);
        int[][] out = new int[held.length][];
        for (int l = 0; l < held.length; l++) {
            if (held[l].length != shape[l].length)
                throw new IllegalArgumentException("layer " + l + ": held units of " + held[l].length + ", the scores have " + shape[l].length);
            boolean[] layer = held[l];
            out[l] = IntStream.range(0, layer.length).filter(i -> layer[i]).toArray();
        }
        return out;
    }

    /** Adds a batch's per-example gradients (units: their places in taylor and fisher; null: in order) to the sums. */
    private static void accumulate(Tensor perExample, int[] units, double[] taylor, double[] fisher, Communicator comm) {
        float[] g = perExample.toFloatArray();
        int groups = units == null ? taylor.length : units.length, examples = g.length / Math.max(1, groups);
        double[] sums = new double[2 * groups]; // per unit: the sum over the batch's examples, then the sum of squares
        for (int j = 0; j < groups; j++)
            for (int b = 0; b < examples; b++) {
                double v = g[b * groups + j];
                sums[j] += v;
                sums[groups + j] += v * v;
            }
        comm.allReduceSum(sums);
        for (int j = 0; j < groups; j++) {
            int u = units == null ? j : units[j];
            taylor[u] += Math.abs(sums[j]);
            fisher[u] += sums[groups + j];
        }
    }

    /**
     * The sums so far and the batch count as text, each double by its bits, so that a resumed run
     * ({@link #restore}) goes on with exactly these scores.
     */
    public String state() {
        StringBuilder b = new StringBuilder().append(batches);
        for (double[][] sums : new double[][][] {headTaylor, headFisher, neuronTaylor, neuronFisher}) {
            b.append(';');
            for (int l = 0; l < sums.length; l++) {
                if (l > 0) b.append('/');
                for (int j = 0; j < sums[l].length; j++) b.append(j > 0 ? "," : "").append(Long.toHexString(Double.doubleToRawLongBits(sums[l][j])));
            }
        }
        return b.toString();
    }

    /** Takes back what {@link #state} wrote (from a checkpoint); one of another shape is refused, changing nothing. */
    public void restore(String state) {
        String[] part = state.split(";", -1);
        double[][][] into = {headTaylor, headFisher, neuronTaylor, neuronFisher};
        if (part.length != 1 + into.length) throw new IllegalArgumentException("importance scores: " + part.length + " parts, not " + (1 + into.length));
        double[][][] read = new double[into.length][][];
        for (int k = 0; k < into.length; k++) {
            String[] layers = part[k + 1].split("/", -1);
            if (layers.length != into[k].length)
                throw new IllegalArgumentException("importance scores: " + layers.length + " layers, the model has " + into[k].length);
            read[k] = new double[layers.length][];
            for (int l = 0; l < layers.length; l++) {
                String[] v = layers[l].isEmpty() ? new String[0] : layers[l].split(",");
                if (v.length != into[k][l].length)
                    throw new IllegalArgumentException("importance scores: layer " + l + " has " + v.length + " units, the model " + into[k][l].length);
                read[k][l] = new double[v.length];
                for (int j = 0; j < v.length; j++) read[k][l][j] = Double.longBitsToDouble(Long.parseUnsignedLong(v[j], 16));
            }
        }
        batches = Long.parseLong(part[0]);
        for (int k = 0; k < into.length; k++) for (int l = 0; l < into[k].length; l++) into[k][l] = read[k][l];
    }

    /** Batches seen (backward passes with the listener set). */
    public long batches() {
        return batches;
    }

    /** Per layer, per head. */
    public double[][] heads(Scorer s) {
        unitScorer(s);
        return copy(s == Scorer.TAYLOR ? headTaylor : headFisher);
    }

    /** Per layer, per FFN neuron. */
    public double[][] neurons(Scorer s) {
        unitScorer(s);
        return copy(s == Scorer.TAYLOR ? neuronTaylor : neuronFisher);
    }

    private static void unitScorer(Scorer s) {
        if (s == Scorer.LORA_TAYLOR)
            throw new IllegalArgumentException("lora-taylor scores weight blocks (--structure blocks); heads and FFN neurons take taylor or fisher");
    }

    /**
     * The paper's normalisation of head scores: each layer's vector divided by its L2 norm, then
     * min-max over all heads of the model, so layers compete on one scale.
     */
    public static double[][] normalized(double[][] scores) {
        double[][] out = copy(scores);
        double min = Double.POSITIVE_INFINITY, max = Double.NEGATIVE_INFINITY;
        for (double[] layer : out) {
            double norm = 0;
            for (double v : layer) norm += v * v;
            norm = Math.sqrt(norm);
            for (int i = 0; i < layer.length; i++) {
                if (norm > 0) layer[i] /= norm;
                min = Math.min(min, layer[i]);
                max = Math.max(max, layer[i]);
            }
        }
        for (double[] layer : out)
            for (int i = 0; i < layer.length; i++) layer[i] = max > min ? (layer[i] - min) / (max - min) : 0;
        return out;
    }

    private static double[][] copy(double[][] a) {
        double[][] c = new double[a.length][];
        for (int i = 0; i < a.length; i++) c[i] = a[i].clone();
        return c;
    }
}
