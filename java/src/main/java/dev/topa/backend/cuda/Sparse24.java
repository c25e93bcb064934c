package dev.topa.backend.cuda;

import dev.topa.tensor.Bf16;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;

/**
 * A linear weight in NVIDIA's 2:4 semi-structured form for the sparse tensor cores (mma.sp): in every
 * group of 4 consecutive inputs of a row the 2 largest-magnitude weights are kept. values [n, k/2]
 * bf16 (each group's two in order), meta [n, k/32] (nibble j of a word: the group's two positions,
 * low 2 bits first). Made on the host from W; {@link CudaBackend#sparse24Linear} multiplies it.
 * Not part of the pruning pipeline yet: the GPU kit measures whether it pays (Sparse24Check).
 */
public record Sparse24(Tensor values, Tensor meta, int n, int k) {
    /** W' = W with the 2 smallest of every 4 consecutive inputs zeroed, and its compressed form. */
    public record Compressed(float[] pruned, short[] values, int[] meta, int n, int k) {}

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

    /** The compressed form uploaded to the backend's device. */
    public static Sparse24 upload(CudaBackend be, Compressed c, TensorAllocator host, TensorAllocator device) {
        Tensor v = host.allocate(DType.BF16, c.n(), c.k() / 2), m = host.allocate(DType.I32, c.n(), c.k() / 32);
        java.lang.foreign.MemorySegment.copy(c.values(), 0, v.data(), java.lang.foreign.ValueLayout.JAVA_SHORT, 0, c.values().length);
        m.copyFrom(c.meta());
        return new Sparse24(be.copyOf(v, device), be.copyOf(m, device), c.n(), c.k());
    }
}
