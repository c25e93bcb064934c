package dev.topa.prune;

import dev.topa.backend.Backend;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.dist.Communicator;
import dev.topa.model.Adapter;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.model.BertNames.Slot;
import dev.topa.model.BertTraining;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * First-order Taylor importance of every 32 x 32 block of the encoder's linear weights, gathered
 * during backward one linear slot at a time: per batch, |sum over the block of W * G| (the loss
 * change if the whole block went to zero), summed over batches. G, the weight gradient, is either
 * exact -- dL/dW = dY^T X formed into one slot-sized buffer and dropped (EXACT) -- or estimated from
 * the adapter's own gradients, G ~ dB A + B dA with W the merged W + s B A (LORA, as LoRAPrune):
 * then the score needs nothing the adapter backward does not already compute but one product.
 * Either way no full-model weight gradient is ever alive: the workspace is two buffers of the
 * largest slot.
 */
public final class BlockScores implements BertTraining.WeightGradientListener {
    public enum Method { EXACT, LORA }

    private static final int B = BlockSparseWeight.BLOCK;
    private final Method method;
    private final double[][][][] scores; // [layer][slot][block-row][block-col]; null slot: not scorable
    private final long largest; // elements of the largest slot
    private TensorScope workspace, hostSums; // on the training backend's device, made by the first call
    private Tensor gradient, effective, sums, hostSum;
    private long batches;
    private int lastSlot = -1; // layer * 4 + slot of the previous call

    private Communicator comm = Communicator.SINGLE;

    /** Scores of a data-parallel run: each batch's block sums are summed over the ranks before the absolute value (the global batch's). */
    public BlockScores distributed(Communicator comm) {
        this.comm = comm;
        return this;
    }

    public BlockScores(BertConfig config, Method method) {
        this.method = method;
        scores = new double[config.layers()][4][][];
        long largest = 0;
        for (int l = 0; l < config.layers(); l++) {
            int c = config.hidden(), a = config.attentionWidth(l), f = config.ffn(l);
            long[][] shapes = {{3L * a, c}, {c, a}, {f, c}, {c, f}};
            for (int slot = 0; slot < 4; slot++) {
                long out = shapes[slot][0], in = shapes[slot][1];
                if (out == 0 || in == 0) continue;
                if (out % B != 0 || in % B != 0)
                    throw new IllegalArgumentException("layer " + l + " slot " + slot + ": [" + out + ", " + in + "] is not a multiple of "
                            + B + " in both dimensions; block pruning cannot cover it");
                scores[l][slot] = new double[(int) (out / B)][(int) (in / B)];
                largest = Math.max(largest, out * in);
            }
        }
        this.largest = largest;
    }

    /** The slot-sized buffers, on the device of the backend that trains (the first call's). */
    private void buffers(Backend be) {
        if (workspace != null) return;
        workspace = be.scope("block scores", MemoryCategory.WORKSPACE);
        gradient = workspace.allocate(DType.F32, largest);
        if (method == Method.LORA) effective = workspace.allocate(DType.F32, largest);
        sums = workspace.allocate(DType.F32, largest / (B * B));
        hostSums = new TensorScope("block scores (host)", MemoryCategory.WORKSPACE);
        hostSum = hostSums.allocate(DType.F32, largest / (B * B));
    }

    @Override
    public void linear(Backend be, int layer, Slot slot, Tensor w, Tensor dy, Tensor x, Adapter adapter, Tensor dA, Tensor dB) {
        double[][] s = scores[layer][slot.ordinal()];
        if (s == null) return;
        // backward visits slots from the last layer's FFN out down to layer 0's QKV: a step back up starts a new batch
        int key = layer * Slot.values().length + slot.ordinal();
        if (key >= lastSlot) batches++;
        lastSlot = key;
        buffers(be);
        long out = w.dim(0), in = w.dim(1);
        Tensor g = view(gradient, out, in), weight = w;
        if (method == Method.EXACT) {
            be.gemm(true, false, 1f, dy, x, 0f, g, null);
        } else {
            if (adapter == null || dA == null || dB == null)
                throw new IllegalStateException("LoRA-guided block scores need an adapter on every scored linear; "
                        + BertNames.slot(layer, slot) + " has none (use the exact scorer, or target all six linears)");
            be.gemm(false, false, 1f, dB, adapter.a(), 0f, g, null);
            be.gemm(false, false, 1f, adapter.b(), dA, 1f, g, null);
            weight = view(effective, out, in);
            be.copy(weight, w);
            be.gemm(false, false, adapter.scale(), adapter.b(), adapter.a(), 1f, weight, null);
        }
        Tensor blocks = view(sums, out / B, in / B), host = view(hostSum, out / B, in / B);
        be.blockDot(blocks, weight, g);
        be.copy(host, blocks);
        comm.allReduceSum(List.of(host));
        for (int rb = 0; rb < s.length; rb++)
            for (int cb = 0; cb < s[rb].length; cb++) s[rb][cb] += Math.abs(host.getFloat((long) rb * s[rb].length + cb));
    }

    private static Tensor view(Tensor buffer, long rows, long cols) {
        return buffer.rows(0, rows * cols).reshape(rows, cols);
    }

    /** Batches scored so far. */
    public long batches() {
        return batches;
    }

    /** The accumulated scores [layer][slot][block-row][block-col] (null for slots without weights). */
    public double[][][][] scores() {
        return scores;
    }

    /**
     * Keeps all but the lowest-scored blocks, globally over every slot and layer: removeBlocks of
     * them go (at most all). Returns masks for {@link BertModel#setBlockMasks}.
     */
    public static boolean[][][][] keep(double[][][][] scores, long removeBlocks) {
        List<int[]> blocks = new ArrayList<>();
        boolean[][][][] keep = new boolean[scores.length][4][][];
        for (int l = 0; l < scores.length; l++)
            for (int slot = 0; slot < 4; slot++) {
                double[][] s = scores[l][slot];
                if (s == null) continue;
                keep[l][slot] = new boolean[s.length][];
                for (int r = 0; r < s.length; r++) {
                    Arrays.fill(keep[l][slot][r] = new boolean[s[r].length], true);
                    for (int c = 0; c < s[r].length; c++) blocks.add(new int[] {l, slot, r, c});
                }
            }
        blocks.sort(Comparator.comparingDouble(u -> scores[u[0]][u[1]][u[2]][u[3]]));
        for (int i = 0; i < Math.min(removeBlocks, blocks.size()); i++) {
            int[] u = blocks.get(i);
            keep[u[0]][u[1]][u[2]][u[3]] = false;
        }
        return keep;
    }

    /** Total blocks the scores cover. */
    public static long blockCount(double[][][][] scores) {
        long n = 0;
        for (double[][][] layer : scores)
            for (double[][] s : layer)
                if (s != null) for (double[] row : s) n += row.length;
        return n;
    }

    public void close() {
        if (workspace == null) return;
        workspace.close();
        hostSums.close();
    }
}
