package dev.topa.backend;

import dev.topa.tensor.Tensor;

/**
 * A weight kept only in 32 x 32 blocks, packed as the operand P [n, k] of
 * {@link Backend#blockSparseLinear}: W itself for a linear layer's forward (n = out, k = in), or W^T
 * for its input gradient (n = in, k = out). values [kept, 32, 32], rowptr [n/32 + 1] and colidx
 * [kept] (i32) say which blocks of each 32-row block-row are kept. The masked-out weights take no
 * memory and no FLOPs. values is null in a structure-only pack (a masked weight whose product runs
 * dense: the pack serves the adapter's masked low-rank term alone).
 */
public record BlockSparseWeight(Tensor values, Tensor rowptr, Tensor colidx, long n, long k, long keptBlocks, String backend) {
    public static final int BLOCK = 32;

    /** Kept fraction of the blocks. */
    public double density() {
        return keptBlocks / (double) ((n / BLOCK) * (k / BLOCK));
    }
}
