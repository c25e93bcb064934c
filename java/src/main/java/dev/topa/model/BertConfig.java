package dev.topa.model;

import java.util.Arrays;

/**
 * Shape of a BERT-family encoder. Head count and FFN width are per layer because pruning makes
 * them differ; the head size is shared by all layers.
 */
public record BertConfig(int vocabSize, int hidden, int maxPositions, int typeVocabSize, int headDim, int[] heads,
        int[] ffn, float layerNormEps) {
    public BertConfig {
        heads = heads.clone();
        ffn = ffn.clone();
        if (heads.length != ffn.length)
            throw new IllegalArgumentException("per-layer heads (" + heads.length + ") and FFN widths (" + ffn.length
                    + ") disagree on the number of layers");
        for (int l = 0; l < heads.length; l++)
            if (heads[l] < 0 || ffn[l] < 0)
                throw new IllegalArgumentException("layer " + l + ": negative head count or FFN width (" + heads[l] + ", " + ffn[l] + ")");
        if (vocabSize <= 0 || hidden <= 0 || maxPositions <= 0 || headDim <= 0 || !(layerNormEps > 0))
            throw new IllegalArgumentException("bad BERT config: " + Arrays.toString(new double[] {vocabSize, hidden,
                    maxPositions, headDim, layerNormEps}));
    }

    /** A dense config: every layer has the same heads and FFN width. */
    public static BertConfig uniform(int vocabSize, int hidden, int layers, int heads, int ffn, int maxPositions,
            int typeVocabSize, float eps) {
        if (hidden % heads != 0) throw new IllegalArgumentException("hidden " + hidden + " is not divisible by " + heads + " heads");
        int[] h = new int[layers], f = new int[layers];
        Arrays.fill(h, heads);
        Arrays.fill(f, ffn);
        return new BertConfig(vocabSize, hidden, maxPositions, typeVocabSize, hidden / heads, h, f, eps);
    }

    public int layers() {
        return heads.length;
    }

    public int heads(int layer) {
        return heads[layer];
    }

    public int ffn(int layer) {
        return ffn[layer];
    }

    /** Width of the attention projections of a layer: heads x head size. */
    public int attentionWidth(int layer) {
        return heads[layer] * headDim;
    }

    @Override
    public int[] heads() {
        return heads.clone();
    }

    @Override
    public int[] ffn() {
        return ffn.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof BertConfig c && vocabSize == c.vocabSize && hidden == c.hidden && maxPositions == c.maxPositions
                && typeVocabSize == c.typeVocabSize && headDim == c.headDim && Arrays.equals(heads, c.heads)
                && Arrays.equals(ffn, c.ffn) && layerNormEps == c.layerNormEps;
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(heads) * 31 + Arrays.hashCode(ffn) + hidden;
    }

    @Override
    public String toString() {
        return "BertConfig[vocab=" + vocabSize + ", hidden=" + hidden + ", layers=" + layers() + ", heads="
                + Arrays.toString(heads) + ", headDim=" + headDim + ", ffn=" + Arrays.toString(ffn) + ", maxPositions="
                + maxPositions + ", types=" + typeVocabSize + ", eps=" + layerNormEps + "]";
    }
}
