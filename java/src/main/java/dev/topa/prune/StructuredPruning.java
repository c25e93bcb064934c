package dev.topa.prune;

import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.model.LoraConfig;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Physical structured pruning: a new, smaller model holding only the kept attention heads and FFN
 * neurons of each layer. Query/key/value rows of removed heads go, with the matching columns of
 * the attention output; FFN-in rows (and biases) of removed neurons go, with the matching FFN-out
 * columns; LoRA factors are sliced the same way. A layer left with no heads (no neurons) has no
 * attention (FFN) block: its output is the block's output bias. The result is a plain BertModel
 * whose config records the per-layer head counts and FFN widths; it is numerically the dense
 * model with the removed heads' contexts and neurons' activations masked to zero.
 */
public final class StructuredPruning {
    private StructuredPruning() {}

    /** keepHeads[l][h], keepNeurons[l][j]: what survives (shapes as the dense config). */
    public static BertModel compact(BertModel dense, boolean[][] keepHeads, boolean[][] keepNeurons) {
        BertConfig c = dense.config();
        if (keepHeads.length != c.layers() || keepNeurons.length != c.layers())
            throw new IllegalArgumentException("keep masks cover " + keepHeads.length + "/" + keepNeurons.length + " layers, the model has "
                    + c.layers());
        for (int l = 0; l < c.layers(); l++)
            if (keepHeads[l].length != c.heads(l) || keepNeurons[l].length != c.ffn(l))
                throw new IllegalArgumentException("layer " + l + ": keep masks of " + keepHeads[l].length + " heads / "
                        + keepNeurons[l].length + " neurons, the layer has " + c.heads(l) + " / " + c.ffn(l));
        BertModel out = new BertModel(kept(c, keepHeads, keepNeurons));
        LoraConfig lora = dense.loraConfig();
        if (lora != null) out.addLora(lora, 0); // factors overwritten below
        Map<String, Tensor> src = dense.parameters();
        out.parameters().forEach((name, to) -> copyKept(name, src.get(name), to, c, keepHeads, keepNeurons));
        return out;
    }

    /**
     * Into to (the compacted model's parameter name, or a tensor of its shape: an optimizer's moment
     * of it), the kept part of from (the dense model's, config c): the kept heads' features, the kept
     * neurons, and all of a tensor pruning does not reshape. Host tensors.
     */
    public static void copyKept(String name, Tensor from, Tensor to, BertConfig c, boolean[][] keepHeads, boolean[][] keepNeurons) {
        int l = BertNames.layerOf(name);
        if (l < 0) {
            to.copyFrom(from.toFloatArray());
            return;
        }
        int[] headRows = headFeatures(keepHeads[l], c.headDim()), neurons = indices(keepNeurons[l]);
        String module = name.substring(("encoder.layer." + l + ".").length());
        switch (module) {
            case "attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
                    "attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias" -> copyRows(from, to, headRows);
            case "attention.output.dense.weight", "attention.output.dense.lora_A" -> copyColumns(from, to, headRows);
            case "attention.self.qkv.lora_B" -> copyRows(from, to, qkvRows(headRows, c.attentionWidth(l)));
            case "intermediate.dense.weight", "intermediate.dense.bias", "intermediate.dense.lora_B" -> copyRows(from, to, neurons);
            case "output.dense.weight", "output.dense.lora_A" -> copyColumns(from, to, neurons);
            default -> to.copyFrom(from.toFloatArray()); // LayerNorms, output biases, factors on the hidden side
        }
    }

    /**
     * Whether a dense model's parameter name sits in a block the keep masks empty (a layer's attention
     * with no head kept, its FFN with no neuron kept): the compacted model has no such block.
     */
    public static boolean emptied(String name, boolean[][] keepHeads, boolean[][] keepNeurons) {
        int l = BertNames.layerOf(name);
        if (l < 0) return false;
        String module = name.substring(("encoder.layer." + l + ".").length());
        if (module.startsWith("attention.self.") || module.startsWith("attention.output.dense.")) return count(keepHeads[l]) == 0;
        if (module.startsWith("intermediate.dense.") || module.startsWith("output.dense.")) return count(keepNeurons[l]) == 0;
        return false;
    }

    /** The config of c's model keeping just the units the masks keep (shapes as c's). */
    static BertConfig kept(BertConfig c, boolean[][] keepHeads, boolean[][] keepNeurons) {
        int[] heads = new int[c.layers()], ffn = new int[c.layers()];
        for (int l = 0; l < c.layers(); l++) {
            heads[l] = count(keepHeads[l]);
            ffn[l] = count(keepNeurons[l]);
        }
        return new BertConfig(c.vocabSize(), c.hidden(), c.maxPositions(), c.typeVocabSize(), c.headDim(), heads, ffn, c.layerNormEps());
    }

    static int count(boolean[] keep) {
        int n = 0;
        for (boolean k : keep) if (k) n++;
        return n;
    }

    private static int[] indices(boolean[] keep) {
        List<Integer> out = new ArrayList<>();
        for (int i = 0; i < keep.length; i++) if (keep[i]) out.add(i);
        return out.stream().mapToInt(Integer::intValue).toArray();
    }

    /** Feature indices of the kept heads (each head is headDim consecutive features). */
    private static int[] headFeatures(boolean[] keep, int headDim) {
        int[] heads = indices(keep), out = new int[heads.length * headDim];
        for (int i = 0; i < heads.length; i++)
            for (int d = 0; d < headDim; d++) out[i * headDim + d] = heads[i] * headDim + d;
        return out;
    }

    /** Rows of the fused [3A, .] QKV adapter B for the kept features of each of q, k, v. */
    private static int[] qkvRows(int[] features, int width) {
        int[] out = new int[3 * features.length];
        for (int blk = 0; blk < 3; blk++)
            for (int i = 0; i < features.length; i++) out[blk * features.length + i] = blk * width + features[i];
        return out;
    }

    private static void copyRows(Tensor from, Tensor to, int[] rows) {
        long cols = from.rank() == 1 ? 1 : from.dim(1);
        float[] s = from.toFloatArray(), d = new float[(int) to.numel()];
        for (int i = 0; i < rows.length; i++) System.arraycopy(s, (int) (rows[i] * cols), d, (int) (i * cols), (int) cols);
        to.copyFrom(d);
    }

    private static void copyColumns(Tensor from, Tensor to, int[] cols) {
        long rows = from.dim(0), n = from.dim(1);
        float[] s = from.toFloatArray(), d = new float[(int) to.numel()];
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < cols.length; i++) d[(int) (r * cols.length + i)] = s[(int) (r * n + cols[i])];
        to.copyFrom(d);
    }
}
