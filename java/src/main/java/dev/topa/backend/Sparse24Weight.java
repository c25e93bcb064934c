package dev.topa.backend;

import static dev.topa.backend.Checks.check;
import static dev.topa.backend.Checks.shape;

import dev.topa.tensor.Bf16;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * W [n, k] in NVIDIA's 2:4 semi-structured form for the sparse tensor cores ({@link Op#SPARSE24}):
 * in every group of 4 consecutive inputs of a row the 2 largest-magnitude weights are kept. values
 * [n, k/2] bf16 (each group's two in order), meta [n, k/32] (nibble j of a word: the group's two
 * positions, low 2 bits first). Compressed on the host; forward only. Not in the pruning pipeline:
 * the GPU kit measures whether it pays.
 */
public final class Sparse24Weight extends LinearWeight {
    /** W' = W with the 2 smallest of every 4 consecutive inputs zeroed, and its compressed form. */
    public record Compressed(float[] pruned, short[] values, int[] meta, int n, int k) {}

    private final Tensor values, meta;

    private Sparse24Weight(Tensor values, Tensor meta, int n, int k, String backend) {
        super(n, k, backend, "2:4");
        this.values = values;
        this.meta = meta;
    }

    /** W [n, k] row-major, n a multiple of 64 and k of 32 (the kernel's tile). */
    public static Compressed compress(float[] w, int n, int k) {
        if (n % 64 != 0 || k % 32 != 0 || w.length != (long) n * k)
            throw new IllegalArgumentException("2:4 weight must be [n, k] with n a multiple of 64 and k of 32, got " + w.length + " for [" + n
                    + ", " + k + "]");
        float[] pruned = new float[w.length];
        short[] values = new short[n * k / 2];
        int[] meta = new int[n * (k / 32)];
        for (int r = 0; r < n; r++)
            for (int grp = 0; grp < k / 4; grp++) {
                int base = r * k + 4 * grp; // the two largest |w| of the group, kept in their order
                int[] order = {0, 1, 2, 3};
                for (int x = 0; x < 4; x++)
                    for (int y = x + 1; y < 4; y++)
                        if (Math.abs(w[base + order[y]]) > Math.abs(w[base + order[x]])) {
                            int tmp = order[x];
                            order[x] = order[y];
                            order[y] = tmp;
                        }
                int i0 = Math.min(order[0], order[1]), i1 = Math.max(order[0], order[1]);
                pruned[base + i0] = w[base + i0];
                pruned[base + i1] = w[base + i1];
                values[r * (k / 2) + 2 * grp] = Bf16.fromFloat(w[base + i0]);
                values[r * (k / 2) + 2 * grp + 1] = Bf16.fromFloat(w[base + i1]);
                meta[r * (k / 32) + grp / 8] |= (i0 | (i1 << 2)) << (4 * (grp % 8));
            }
        return new Compressed(pruned, values, meta, n, k);
    }

    /** The compressed form in be's memory (from alloc), staged through host memory. */
    public static Sparse24Weight upload(Backend be, Compressed c, TensorAllocator host, TensorAllocator alloc) {
        check(be.supports(Op.SPARSE24), "sparse24", be.name() + " has no 2:4 products");
        Tensor v = host.allocate(DType.BF16, c.n(), c.k() / 2), m = host.allocate(DType.I32, c.n(), c.k() / 32);
        MemorySegment.copy(c.values(), 0, v.data(), ValueLayout.JAVA_SHORT, 0, c.values().length);
        m.copyFrom(c.meta());
        return new Sparse24Weight(be.copyOf(v, alloc), be.copyOf(m, alloc), c.n(), c.k(), be.name());
    }

    public Tensor values() {
        return values;
    }

    public Tensor meta() {
        return meta;
    }

    @Override
    public boolean hasInputGradient() {
        return false;
    }

    @Override
    void product(Backend be, Tensor y, Tensor x, Tensor bias, Tensor u, Tensor b, float scale) {
        String op = "sparse24Linear";
        Checks.packedBy(be, op, backend());
        Checks.f32(be, op, "x", x);
        long n = outFeatures(), k = inFeatures(), m = x.numel() / k;
        check(x.numel() == m * k && y.numel() == m * n && (bias == null || bias.numel() == n), op, "x " + shape(x) + ", y " + shape(y)
                + " do not fit the [" + n + ", " + k + "] weight");
        Checks.f32(be, op, "y", y);
        if (m > 0) be.kSparse24Linear(y, x, this, bias);
        if (u != null) be.gemm(false, true, scale, u, b, 1f, y, null);
    }

    @Override
    void inputProduct(Backend be, Tensor dx, boolean accumulate, Tensor dy, Tensor g, Tensor a, float scale) {
        throw new UnsupportedOperationException("2:4 weights are forward only");
    }
}
