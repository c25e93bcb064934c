package dev.topa.prune;

import dev.topa.backend.Backend;
import dev.topa.backend.Bf16Weight;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.DenseWeight;
import dev.topa.backend.LinearWeight;
import dev.topa.backend.Op;
import dev.topa.backend.PackedWeight;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Picks, per block-masked linear slot, the faster of its two exact forms on the backend that will
 * run it: the block-sparse product over the kept blocks, or the dense product over the whole weight
 * (zeros included) in the backend's packed layout (bf16 on a GPU's tensor cores). Block sparsity pays
 * off only above a density that depends on the device and the shape -- on a CPU it wins almost
 * always, on a GPU cuBLASLt's dense rate can beat a sparse kernel at moderate sparsity -- so it is
 * measured, not assumed: each form's forward on `tokens` random rows, 2 warm-ups, median of 5,
 * the stream drained around each call.
 */
public final class BlockFormats {
    /** One slot's measurement. */
    public record Slot(int layer, BertNames.Slot slot, double density, double sparseMs, double denseMs) {
        public boolean dense() {
            return denseMs < sparseMs;
        }
    }

    private BlockFormats() {}

    /** Measures every block-masked slot of m (its weights on be's device) and sets the faster form on it; returns the measurements. */
    public static List<Slot> choose(Backend be, BertModel m, long tokens) {
        return choose(be, m, tokens, false);
    }

    /** As above; bf16Dense: the dense form would run as bf16 products (bf16 inference packs, or a bf16 frozen base in training). */
    public static List<Slot> choose(Backend be, BertModel m, long tokens, boolean bf16Dense) {
        List<Slot> out = new ArrayList<>();
        if (!m.blockSparse()) return out;
        boolean[][] dense = new boolean[m.config().layers()][BertNames.Slot.values().length];
        SplittableRandom rnd = new SplittableRandom(1);
        for (int l = 0; l < m.config().layers(); l++)
            for (BertNames.Slot slot : BertNames.Slot.values()) {
                boolean[][] mask = m.blockMask(l, slot);
                if (mask == null) continue;
                Tensor w = m.slotWeight(l, slot);
                try (TensorScope host = new TensorScope("format probe (host)", MemoryCategory.WORKSPACE);
                        TensorScope dev = be.scope("format probe", MemoryCategory.WORKSPACE)) {
                    Tensor x = random(be, host, dev, rnd, tokens, w.dim(1)), y = dev.allocate(DType.F32, tokens, w.dim(0));
                    BlockSparseWeight.Pack sparse = BlockSparseWeight.pack(be, w, mask, false, dev, false);
                    LinearWeight form = bf16Dense && be.supports(Op.BF16_WEIGHTS) ? Bf16Weight.pack(be, w, dev, false)
                            : be.supports(Op.PACKED_WEIGHTS) ? PackedWeight.pack(be, w, dev) : new DenseWeight(w);
                    double s = be.medianMs(() -> BlockSparseWeight.linear(be, y, x, sparse, null, 0f, null, null, 0f, false));
                    double d = be.medianMs(() -> form.forward(be, y, x, null));
                    Slot r = new Slot(l, slot, sparse.density(), s, d);
                    dense[l][slot.ordinal()] = r.dense();
                    out.add(r);
                }
            }
        m.setDenseFormat(dense);
        return out;
    }

    /** "k of n block-masked slots dense (density ...)" for a report line. */
    public static String summary(List<Slot> slots) {
        long dense = slots.stream().filter(Slot::dense).count();
        double sparse = slots.stream().mapToDouble(Slot::sparseMs).sum(), dns = slots.stream().mapToDouble(Slot::denseMs).sum();
        return String.format(java.util.Locale.ROOT, "%d of %d block-masked weights computed dense, %d block-sparse (forward, all slots: "
                + "block-sparse %.2f ms, dense %.2f ms)", dense, slots.size(), slots.size() - dense, sparse, dns);
    }

    private static Tensor random(Backend be, TensorScope host, TensorAllocator dev, SplittableRandom rnd, long rows, long cols) {
        float[] v = new float[(int) (rows * cols)];
        for (int i = 0; i < v.length; i++) v[i] = (float) (2 * rnd.nextDouble() - 1);
        return be.copyOf(host.allocate(DType.F32, rows, cols).copyFrom(v), dev);
    }

}
