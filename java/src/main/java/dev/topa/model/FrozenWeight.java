package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.backend.Bf16Weight;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;

/**
 * A frozen linear weight held in a packed form (bf16, or only its kept 32 x 32 blocks): the two
 * products training and inference need from it, each with a slot's LoRA term fused in, so the
 * layer code has one branch for every packed form.
 */
sealed interface FrozenWeight {
    /** y = x W^T + bias (+ scale u B^T when u != null; u = x A^T [m, r], B [out, r]). */
    void forward(Backend be, TensorAllocator scratch, Tensor y, Tensor x, Tensor bias, Tensor u, float scale, Tensor b);

    /** dx = dy W (+ beta dx when accumulating) (+ scale g A when g != null; g = dy B [m, r], A [r, in]). */
    void inputGradient(Backend be, Tensor dx, Tensor dy, boolean accumulate, Tensor g, float scale, Tensor a);

    /** A LoRA slot's forward with its factor product: u = x A^T written, then y = x W^T + bias + scale u B^T. */
    default void loraForward(Backend be, TensorAllocator scratch, Tensor y, Tensor u, Tensor x, Tensor bias, Tensor a, float scale, Tensor b) {
        be.gemm(false, true, 1f, x, a, 0f, u, null);
        forward(be, scratch, y, x, bias, u, scale, b);
    }

    /** A LoRA slot's input gradient with its factor product: g = dy B written, then dx (+)= dy W + scale g A. */
    default void loraInputGradient(Backend be, Tensor dx, Tensor dy, boolean accumulate, Tensor g, Tensor b, float scale, Tensor a) {
        be.gemm(false, false, 1f, dy, b, 0f, g, null);
        inputGradient(be, dx, dy, accumulate, g, scale, a);
    }

    /** bf16 products with fp32 sums: packs {W^T for forward, W for dX}. */
    record Bf16(Bf16Weight forwardPack, Bf16Weight gradientPack) implements FrozenWeight {
        @Override
        public void forward(Backend be, TensorAllocator scratch, Tensor y, Tensor x, Tensor bias, Tensor u, float scale, Tensor b) {
            if (u == null) be.gemmBf16(1f, x, forwardPack, 0f, y, bias);
            else be.gemmBf16(1f, x, forwardPack, 0f, y, bias, u, scale, true, b);
        }

        @Override
        public void inputGradient(Backend be, Tensor dx, Tensor dy, boolean accumulate, Tensor g, float scale, Tensor a) {
            if (g == null) be.gemmBf16(1f, dy, gradientPack, accumulate ? 1f : 0f, dx, null);
            else be.gemmBf16(1f, dy, gradientPack, accumulate ? 1f : 0f, dx, null, g, scale, false, a);
        }

        @Override
        public void loraForward(Backend be, TensorAllocator scratch, Tensor y, Tensor u, Tensor x, Tensor bias, Tensor a, float scale, Tensor b) {
            be.loraForwardBf16(y, u, x, forwardPack, bias, a, b, scale);
        }

        @Override
        public void loraInputGradient(Backend be, Tensor dx, Tensor dy, boolean accumulate, Tensor g, Tensor b, float scale, Tensor a) {
            be.loraInputGradientBf16(dx, accumulate, g, dy, gradientPack, b, a, scale);
        }
    }

    /** W [out, in] as it is, fp32 products (a block-masked weight measured faster dense than block-sparse, without bf16 packs). */
    record Dense(Tensor w) implements FrozenWeight {
        @Override
        public void forward(Backend be, TensorAllocator scratch, Tensor y, Tensor x, Tensor bias, Tensor u, float scale, Tensor b) {
            be.gemm(false, true, 1f, x, w, 0f, y, bias);
            if (u != null) be.gemm(false, true, scale, u, b, 1f, y, null);
        }

        @Override
        public void inputGradient(Backend be, Tensor dx, Tensor dy, boolean accumulate, Tensor g, float scale, Tensor a) {
            be.gemm(false, false, 1f, dy, w, accumulate ? 1f : 0f, dx, null);
            if (g != null) be.gemm(false, false, scale, g, a, 1f, dx, null);
        }
    }

    /**
     * A block-masked weight. With base null only the kept blocks are stored and multiplied: packs
     * {W for forward, W^T for dX}. With a base (the slot measured faster dense, zeros and all) the
     * products run there and the packs are structure only. A LoRA update on such a weight counts only
     * inside the kept blocks (y = x (M o (W + s B A))^T), so merging it keeps the sparsity and the
     * merged model computes exactly what was trained.
     */
    record BlockSparse(BlockSparseWeight forwardPack, BlockSparseWeight gradientPack, FrozenWeight base) implements FrozenWeight {
        BlockSparse(BlockSparseWeight forwardPack, BlockSparseWeight gradientPack) {
            this(forwardPack, gradientPack, null);
        }

        @Override
        public void forward(Backend be, TensorAllocator scratch, Tensor y, Tensor x, Tensor bias, Tensor u, float scale, Tensor b) {
            if (u != null) throw new IllegalStateException("block-sparse weights take their adapter through maskedForward");
            if (base != null) base.forward(be, scratch, y, x, bias, null, 0f, null);
            else be.blockSparseLinear(y, x, forwardPack, bias, 0f, null, null, 0f);
        }

        @Override
        public void inputGradient(Backend be, Tensor dx, Tensor dy, boolean accumulate, Tensor g, float scale, Tensor a) {
            if (g != null) throw new IllegalStateException("block-sparse weights take their adapter through maskedBackward");
            if (base != null) base.inputGradient(be, dx, dy, accumulate, null, 0f, null);
            else be.blockSparseLinear(dx, dy, gradientPack, null, accumulate ? 1f : 0f, null, null, 0f);
        }

        /** y = x (M o (W + s B A))^T + bias. */
        void maskedForward(Backend be, TensorAllocator scratch, Tensor y, Tensor x, Tensor bias, BertModel.Adapter ad) {
            Tensor u = perBlock(be, scratch, x, ad.a());
            if (base == null) {
                be.blockSparseLinear(y, x, forwardPack, bias, 0f, u, transposed(be, scratch, ad.b()), ad.scale(), true);
                return;
            }
            base.forward(be, scratch, y, x, bias, null, 0f, null); // then the masked term alone on top
            be.blockSparseLinear(y, x, forwardPack, null, 1f, u, transposed(be, scratch, ad.b()), ad.scale(), true);
        }

        /** dx (+)= dy (M o (W + s B A)); dA, dB (when non-null) += the masked update's factor gradients. */
        void maskedBackward(Backend be, TensorAllocator scratch, Tensor dx, boolean accumulate, Tensor dy, Tensor x, BertModel.Adapter ad,
                Tensor dA, Tensor dB) {
            Tensor bt = transposed(be, scratch, ad.b()); // [r, out]
            Tensor g = perBlock(be, scratch, dy, bt); // dy B, per 32 outputs
            if (base == null) {
                be.blockSparseLinear(dx, dy, gradientPack, null, accumulate ? 1f : 0f, g, ad.a(), ad.scale(), true);
            } else {
                base.inputGradient(be, dx, dy, accumulate, null, 0f, null);
                be.blockSparseLinear(dx, dy, gradientPack, null, 1f, g, ad.a(), ad.scale(), true);
            }
            if (dA != null) { // dA^T [in, r] from the transposed pack, added into dA [r, in]
                Tensor dat = scratch.allocate(DType.F32, gradientPack.n(), ad.a().dim(0));
                be.zero(dat);
                be.blockLowRankGradient(dat, x, gradientPack, g, ad.scale());
                be.transpose(dA, dat, 1f);
            }
            if (dB != null) be.blockLowRankGradient(dB, dy, forwardPack, perBlock(be, scratch, x, ad.a()), ad.scale());
        }

        private static Tensor perBlock(Backend be, TensorAllocator scratch, Tensor x, Tensor factor) {
            Tensor u = scratch.allocate(DType.F32, x.numel() / x.dim(-1), factor.dim(1) / BlockSparseWeight.BLOCK * factor.dim(0));
            be.blockLowRank(u, x, factor);
            return u;
        }

        /** in^T for a small [n, r] factor. */
        private static Tensor transposed(Backend be, TensorAllocator scratch, Tensor in) {
            Tensor out = scratch.allocate(DType.F32, in.dim(1), in.dim(0));
            be.transpose(out, in, 0f);
            return out;
        }
    }
}
