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
 * A frozen W rounded to bf16 ({@link Op#BF16_WEIGHTS}): products round the activations to bf16 too
 * and sum in fp32 (mixed precision; on CPUs with AVX512_BF16 and on tensor cores about twice the
 * fp32 rate). Two packs: W^T for forward and, for training, W for the input gradient. A LoRA term
 * rides in the same product.
 */
public final class Bf16Weight extends LinearWeight {
    /** One packed operand op(B) [k, n]: W^T (k = in, n = out) or W (k = out, n = in). Only the backend that packed it can use it. */
    public record Pack(Tensor data, long k, long n, String backend) {}

    private final Pack forward, gradient;

    private Bf16Weight(Pack forward, Pack gradient) {
        super(forward.n(), forward.k(), forward.backend(), "bf16");
        this.forward = forward;
        this.gradient = gradient;
    }

    /** W [out, in] packed for be: its forward pack, and with gradient its input gradient's too. */
    public static Bf16Weight pack(Backend be, Tensor w, TensorAllocator alloc, boolean gradient) {
        return new Bf16Weight(pack(be, w, true, alloc), gradient ? pack(be, w, false, alloc) : null);
    }

    /** op(B) = W^T (transposed) or W, rounded to bf16, in be's layout. */
    public static Pack pack(Backend be, Tensor w, boolean transposed, TensorAllocator alloc) {
        be.need(Op.BF16_WEIGHTS, "packBf16");
        f32(be, "packBf16", "W", w);
        check(w.rank() == 2, "packBf16", "W must be [out, in], got " + shape(w));
        long k = transposed ? w.dim(1) : w.dim(0), n = transposed ? w.dim(0) : w.dim(1);
        Tensor packed = alloc.allocate(DType.BF16, be.kBf16PackedSize(k, n));
        be.kBf16Pack(w, transposed, k, n, packed);
        return new Pack(packed, k, n, be.name());
    }

    /**
     * C = alpha (A op(B) + scale2 A2 op(B2)) + beta C + bias with A rounded to bf16 on the fly; A2 null:
     * no low-rank term (B2 [n, r] when transB2, else [r, n]).
     */
    public static void gemm(Backend be, float alpha, Tensor a, Pack b, float beta, Tensor c, Tensor bias, Tensor a2, float scale2,
            boolean transB2, Tensor b2) {
        checkShapes(be, "gemmBf16", a, b, c, bias, a2, transB2, b2);
        be.kGemmBf16(rows(a), b.n(), b.k(), alpha, a, b, beta, c, bias, a2, scale2, transB2, b2);
    }

    public Pack forwardPack() {
        return forward;
    }

    @Override
    public boolean hasInputGradient() {
        return gradient != null;
    }

    @Override
    void product(Backend be, Tensor y, Tensor x, Tensor bias, Tensor u, Tensor b, float scale) {
        gemm(be, 1f, x, forward, 0f, y, bias, u, scale, true, b);
    }

    /** u = x A^T formed with the product (a device forms it in the pass that rounds x to bf16). */
    @Override
    void productWithFactor(Backend be, Tensor y, Tensor u, Tensor x, Tensor bias, LowRank lora) {
        String op = "loraForwardBf16";
        f32(be, op, "A", lora.a());
        check(lora.a().rank() == 2 && lora.a().dim(1) == forward.k(), op, "A " + shape(lora.a()) + " is not [r, " + forward.k() + "]");
        matrix(be, op, "u", u, rows(x), lora.rank());
        checkShapes(be, op, x, forward, y, bias, u, true, lora.b());
        be.kGemmBf16LowRank(rows(x), forward.n(), forward.k(), x, forward, 0f, y, bias, u, lora.a(), true, lora.scale(), lora.b(), true);
    }

    @Override
    void inputProduct(Backend be, Tensor dx, boolean accumulate, Tensor dy, Tensor g, Tensor a, float scale) {
        gemm(be, 1f, dy, gradientPack(), accumulate ? 1f : 0f, dx, null, g, scale, false, a);
    }

    @Override
    void inputProductWithFactor(Backend be, Tensor dx, boolean accumulate, Tensor g, Tensor dy, LowRank lora) {
        String op = "loraInputGradientBf16";
        Pack w = gradientPack();
        f32(be, op, "B", lora.b());
        check(lora.b().rank() == 2 && lora.b().dim(0) == w.k(), op, "B " + shape(lora.b()) + " is not [" + w.k() + ", r]");
        matrix(be, op, "g", g, rows(dy), lora.rank());
        checkShapes(be, op, dy, w, dx, null, g, false, lora.a());
        be.kGemmBf16LowRank(rows(dy), w.n(), w.k(), dy, w, accumulate ? 1f : 0f, dx, null, g, lora.b(), false, lora.scale(), lora.a(), false);
    }

    private Pack gradientPack() {
        if (gradient == null) throw new UnsupportedOperationException("this bf16 weight is packed for inference: no input gradient");
        return gradient;
    }

    /** The shapes of a bf16 product C = A op(B) + bias with an optional low-rank term A2 op(B2) (a2 null: none). */
    private static void checkShapes(Backend be, String op, Tensor a, Pack b, Tensor c, Tensor bias, Tensor a2, boolean transB2, Tensor b2) {
        packedBy(be, op, b.backend());
        f32(be, op, "A", a);
        check(cols(a) == b.k(), op, "A " + shape(a) + " has " + cols(a) + " columns, op(B) has " + b.k() + " rows");
        matrix(be, op, "C", c, rows(a), b.n());
        if (bias != null) vector(be, op, "bias", bias, b.n());
        if (a2 == null) return;
        f32(be, op, "A2", a2);
        f32(be, op, "B2", b2);
        long r = cols(a2);
        check(rows(a2) == rows(a), op, "A2 " + shape(a2) + " has " + rows(a2) + " rows, A has " + rows(a));
        check(transB2 ? rows(b2) == b.n() && cols(b2) == r : rows(b2) == r && cols(b2) == b.n(), op,
                "B2 " + shape(b2) + " does not match A2 " + shape(a2) + " and n = " + b.n());
    }
}
