package dev.topa.backend;

import static dev.topa.backend.Checks.check;
import static dev.topa.backend.Checks.cols;
import static dev.topa.backend.Checks.f32;
import static dev.topa.backend.Checks.matrix;
import static dev.topa.backend.Checks.packedBy;
import static dev.topa.backend.Checks.rows;
import static dev.topa.backend.Checks.shape;
import static dev.topa.backend.Checks.vector;

import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;

/**
 * A weight kept only in 32 x 32 blocks ({@link Op#BLOCK_SPARSE}): the masked-out blocks take no
 * memory and no FLOPs. Two packs: P = W for the forward (y = x P^T), P = W^T for the input gradient.
 * With a base (the weight measured faster dense, zeros and all, on this device) the products run
 * there and the packs keep the structure only. A LoRA adapter on such a weight counts only inside
 * the kept blocks, y = x (M o (W + s B A))^T, so merging it keeps the sparsity and the merged model
 * computes exactly what was trained; its per-block products are recomputed in backward, not kept.
 */
public final class BlockSparseWeight extends LinearWeight {
    public static final int BLOCK = 32;

    /**
     * One packed operand P [n, k] in block-sparse-row form: values [kept, 32, 32] in the backend's
     * layout and element type, rowptr [n/32 + 1] and colidx [kept] (i32) saying which blocks of each
     * 32-row block-row are kept; values null in a structure-only pack.
     */
    public record Pack(Tensor values, Tensor rowptr, Tensor colidx, long n, long k, long keptBlocks, String backend) {
        /** Kept fraction of the blocks. */
        public double density() {
            return keptBlocks / (double) ((n / BLOCK) * (k / BLOCK));
        }
    }

    private final Pack forward, gradient;
    private final LinearWeight base;

    private BlockSparseWeight(Pack forward, Pack gradient, LinearWeight base) {
        super(forward.n(), forward.k(), forward.backend(), "block-sparse");
        this.forward = forward;
        this.gradient = gradient;
        this.base = base;
    }

    /**
     * W [out, in] with a block mask [out/32][in/32] (true: kept) packed for be both ways. base null:
     * the kept blocks are stored and multiplied; else the products run on base (W dense in some format)
     * and the packs hold the structure for the adapter's masked term.
     */
    public static BlockSparseWeight pack(Backend be, Tensor w, boolean[][] mask, TensorAllocator alloc, LinearWeight base) {
        return new BlockSparseWeight(pack(be, w, mask, false, alloc, base != null), pack(be, w, mask, true, alloc, base != null), base);
    }

    /** The weight of two packs of one mask made by {@link #pack(Backend, Tensor, boolean[][], boolean, TensorAllocator, boolean)}. */
    public static BlockSparseWeight of(Pack forward, Pack gradient, LinearWeight base) {
        if (forward.n() != gradient.k() || forward.k() != gradient.n() || !forward.backend().equals(gradient.backend()))
            throw new IllegalArgumentException("block-sparse packs " + forward.n() + " x " + forward.k() + " and " + gradient.n() + " x "
                    + gradient.k() + " are not one weight both ways");
        if (base != null && (base.outFeatures() != forward.n() || base.inFeatures() != forward.k()))
            throw new IllegalArgumentException("dense form " + base + " is not the block-sparse weight's shape");
        if (base == null && forward.values() == null && forward.keptBlocks() > 0)
            throw new IllegalArgumentException("structure-only packs need the dense form the products run on");
        return new BlockSparseWeight(forward, gradient, base);
    }

    /** One pack: W (transposed false: the forward's P) or W^T (the input gradient's); structureOnly: rowptr and colidx alone. */
    public static Pack pack(Backend be, Tensor w, boolean[][] blockMask, boolean transposed, TensorAllocator alloc, boolean structureOnly) {
        String op = "packBlockSparse";
        be.need(Op.BLOCK_SPARSE, op);
        f32(be, op, "W", w);
        check(w.rank() == 2 && w.dim(0) % BLOCK == 0 && w.dim(1) % BLOCK == 0, op, "W must be [out, in] with both multiples of " + BLOCK
                + ", got " + shape(w));
        long ob = w.dim(0) / BLOCK, ib = w.dim(1) / BLOCK;
        check(blockMask.length == ob, op, "block mask has " + blockMask.length + " block-rows, W has " + ob);
        byte[] mask = new byte[(int) (ob * ib)];
        long kept = 0;
        for (int r = 0; r < ob; r++) {
            check(blockMask[r].length == ib, op, "block mask row " + r + " has " + blockMask[r].length + " blocks, W has " + ib);
            for (int c = 0; c < ib; c++) if (blockMask[r][c]) {
                mask[(int) (r * ib + c)] = 1;
                kept++;
            }
        }
        long n = transposed ? w.dim(1) : w.dim(0), k = transposed ? w.dim(0) : w.dim(1);
        Tensor values = structureOnly ? null : alloc.allocate(be.kBlockSparseValueType(), kept, BLOCK, BLOCK);
        Tensor rowptr = alloc.allocate(DType.I32, n / BLOCK + 1), colidx = alloc.allocate(DType.I32, Math.max(kept, 1));
        be.kBlockSparsePack(w, mask, transposed, values, rowptr, colidx);
        return new Pack(values, rowptr, colidx, n, k, kept, be.name());
    }

    /**
     * y [m, n] = x [m, k] P^T + beta y + bias (+ scale u lt: u [m, r] and lt [r, n], a LoRA term; with
     * perBlock u is [m, (k/32) r] from {@link #lowRank} and each 32-row block of y adds the sum of u
     * over its kept blocks times lt: the adapter's update only inside the kept blocks). u, lt may be null.
     */
    public static void linear(Backend be, Tensor y, Tensor x, Pack p, Tensor bias, float beta, Tensor u, Tensor lt, float scale,
            boolean perBlock) {
        String op = "blockSparseLinear";
        packedBy(be, op, p.backend());
        f32(be, op, "x", x);
        check(cols(x) == p.k(), op, "x has " + cols(x) + " features, the packed weight takes " + p.k());
        matrix(be, op, "y", y, rows(x), p.n());
        if (bias != null) vector(be, op, "bias", bias, p.n());
        if (u != null) {
            f32(be, op, "u", u);
            f32(be, op, "lt", lt);
            long r = lt.rank() == 2 ? lt.dim(0) : -1, uCols = perBlock ? p.k() / BLOCK * r : r;
            check(rows(u) == rows(x) && lt.rank() == 2 && cols(u) == uCols && lt.dim(1) == p.n(), op, "u " + shape(u) + " and lt "
                    + shape(lt) + " do not make a [" + rows(x) + ", " + p.n() + "] term" + (perBlock ? " (u per input block)" : ""));
        }
        be.kBlockSparseLinear(y, x, p, bias, beta, u, lt, scale, perBlock);
    }

    /** u [m, (k/32) r]: u[:, c r + q] = x[:, 32 c ..] . a[q, 32 c ..], the rank-r product of each 32-wide input block; a [r, k]. */
    public static void lowRank(Backend be, Tensor u, Tensor x, Tensor a) {
        String op = "blockLowRank";
        f32(be, op, "u", u);
        f32(be, op, "x", x);
        f32(be, op, "a", a);
        check(a.rank() == 2 && a.dim(1) % BLOCK == 0 && a.dim(0) <= 64, op, "a must be [r <= 64, k], k a multiple of " + BLOCK + ", got "
                + shape(a));
        check(cols(x) == a.dim(1), op, "x has " + cols(x) + " features, a takes " + a.dim(1));
        matrix(be, op, "u", u, rows(x), a.dim(1) / BLOCK * a.dim(0));
        be.kBlockLowRank(u, x, a);
    }

    /**
     * d [n, r] += scale sum_m dy[m, :] (u summed over the kept blocks of the row's block-row of P)[m, :]:
     * the masked term's factor gradient (P = W: u from x and A, dy the output gradient, d = dB;
     * P = W^T: u from dy and B^T, dy := x, d = dA^T).
     */
    public static void lowRankGradient(Backend be, Tensor d, Tensor dy, Pack p, Tensor u, float scale) {
        String op = "blockLowRankGradient";
        packedBy(be, op, p.backend());
        f32(be, op, "d", d);
        f32(be, op, "dy", dy);
        f32(be, op, "u", u);
        check(d.rank() == 2 && d.dim(0) == p.n() && d.dim(1) <= 64, op, "d must be [" + p.n() + ", r <= 64], got " + shape(d));
        check(cols(dy) == p.n(), op, "dy has " + cols(dy) + " columns, P has " + p.n() + " rows");
        check(rows(u) == rows(dy) && cols(u) == p.k() / BLOCK * d.dim(1), op, "u " + shape(u) + " is not per input block");
        be.kBlockLowRankGradient(d, dy, p, u, d.dim(1), scale);
    }

    public Pack forwardPack() {
        return forward;
    }

    /** The dense form the products run on, or null when the kept blocks are multiplied. */
    public LinearWeight base() {
        return base;
    }

    public double density() {
        return forward.density();
    }

    @Override
    public String kind() {
        return base == null ? super.kind() : "block-masked, " + base.kind();
    }

    @Override
    public boolean hasInputGradient() {
        return base == null || base.hasInputGradient();
    }

    @Override
    void product(Backend be, Tensor y, Tensor x, Tensor bias, Tensor u, Tensor b, float scale) {
        if (u != null) throw new IllegalStateException("a block-sparse weight's adapter is masked: forward takes it whole");
        if (base != null) base.product(be, y, x, bias, null, null, 0f);
        else linear(be, y, x, forward, bias, 0f, null, null, 0f, false);
    }

    @Override
    void inputProduct(Backend be, Tensor dx, boolean accumulate, Tensor dy, Tensor g, Tensor a, float scale) {
        if (g != null) throw new IllegalStateException("a block-sparse weight's adapter is masked: backward takes it whole");
        if (base != null) base.inputProduct(be, dx, accumulate, dy, null, null, 0f);
        else linear(be, dx, dy, gradient, null, accumulate ? 1f : 0f, null, null, 0f, false);
    }

    /** y = x (M o (W + s B A))^T + bias: the adapter's term inside the kept blocks. Returns null: backward recomputes. */
    @Override
    public Tensor forward(Backend be, TensorAllocator scratch, TensorAllocator keep, Tensor y, Tensor x, Tensor bias, LowRank lora,
            Dropout dropout) {
        if (lora == null) return super.forward(be, scratch, keep, y, x, bias, null, dropout);
        if (dropout.active()) throw new UnsupportedOperationException("LoRA dropout on block-sparse weights is not supported (use --lora-dropout 0)");
        Tensor u = perBlock(be, scratch, x, lora.a());
        if (base == null) {
            linear(be, y, x, forward, bias, 0f, u, transposed(be, scratch, lora.b()), lora.scale(), true);
            return null;
        }
        base.product(be, y, x, bias, null, null, 0f); // then the masked term alone on top
        linear(be, y, x, forward, null, 1f, u, transposed(be, scratch, lora.b()), lora.scale(), true);
        return null;
    }

    /** dx (+)= dy (M o (W + s B A)); dA, dB += the masked term's factor gradients; dbias. */
    @Override
    public void backward(Backend be, TensorAllocator scratch, Tensor dx, boolean accumulate, Tensor dy, Tensor x, Tensor u, LowRank lora,
            Dropout dropout, Gradients grads) {
        if (lora == null) {
            super.backward(be, scratch, dx, accumulate, dy, x, u, null, dropout, grads);
            return;
        }
        if (grads.weight() != null) throw new IllegalStateException("block-sparse weights train frozen (adapters on top), not by full fine-tuning");
        Tensor bt = transposed(be, scratch, lora.b()); // [r, out]
        Tensor g = perBlock(be, scratch, dy, bt); // dy B, per 32 outputs
        if (base == null) {
            linear(be, dx, dy, gradient, null, accumulate ? 1f : 0f, g, lora.a(), lora.scale(), true);
        } else {
            base.inputProduct(be, dx, accumulate, dy, null, null, 0f);
            linear(be, dx, dy, gradient, null, 1f, g, lora.a(), lora.scale(), true);
        }
        if (grads.a() != null) { // dA^T [in, r] from the transposed pack, added into dA [r, in]
            Tensor dat = scratch.allocate(DType.F32, gradient.n(), lora.rank());
            be.zero(dat);
            lowRankGradient(be, dat, x, gradient, g, lora.scale());
            be.transpose(grads.a(), dat, 1f);
        }
        if (grads.b() != null) lowRankGradient(be, grads.b(), dy, forward, perBlock(be, scratch, x, lora.a()), lora.scale());
        if (grads.bias() != null) be.biasBackward(grads.bias(), dy);
    }

    private static Tensor perBlock(Backend be, TensorAllocator scratch, Tensor x, Tensor factor) {
        Tensor u = scratch.allocate(DType.F32, rows(x), factor.dim(1) / BLOCK * factor.dim(0));
        lowRank(be, u, x, factor);
        return u;
    }

    /** in^T for a small [n, r] factor. */
    private static Tensor transposed(Backend be, TensorAllocator scratch, Tensor in) {
        Tensor out = scratch.allocate(DType.F32, in.dim(1), in.dim(0));
        be.transpose(out, in, 0f);
        return out;
    }
}
