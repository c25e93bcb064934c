package dev.topa.backend;

import static dev.topa.backend.Checks.rows;

import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;

/**
 * A linear layer's weight W [out, in] in one storage format, owning its products: y = x W^T + bias
 * forward, dx = dy W backward, dW = dy^T x where it trains, and a LoRA adapter's term fused into
 * them (after llama3.java's one tensor class per format: the layer code calls {@link #forward} and
 * {@link #backward} whatever the format). Adding a format is one subclass here plus its kernel hooks
 * in {@link Backend}.
 *
 * <p>The LoRA term is scale (d(x) A^T) B^T with d the adapter's input dropout. Forward returns u =
 * d(x) A^T [rows, r] (backward reads it; allocated from keep), or null where a format recomputes it
 * (block-sparse); backward forms g = dy B once for dx and dA.
 */
public abstract sealed class LinearWeight permits DenseWeight, PackedWeight, Bf16Weight, BlockSparseWeight, Sparse24Weight {
    /** A LoRA adapter's factors as a product sees them: A [r, in], B [out, r], the term scale (x A^T) B^T. */
    public record LowRank(Tensor a, Tensor b, float scale) {
        public long rank() {
            return a.dim(0);
        }
    }

    /** The gradients a backward may accumulate into (each null when not wanted): dW, dbias, dA, dB. */
    public record Gradients(Tensor weight, Tensor bias, Tensor a, Tensor b) {
        public static final Gradients NONE = new Gradients(null, null, null, null);
    }

    private final long out, in;
    private final String backend, kind;

    /** kind: "fp32", "fp32 packed", "bf16", "block-sparse", "2:4": for reports. */
    LinearWeight(long out, long in, String backend, String kind) {
        this.out = out;
        this.in = in;
        this.backend = backend;
        this.kind = kind;
    }

    public final long outFeatures() {
        return out;
    }

    public final long inFeatures() {
        return in;
    }

    /** The backend whose layout this is, or null for W as it is (fp32, any backend whose memory holds it). */
    public final String backend() {
        return backend;
    }

    public String kind() {
        return kind;
    }

    /** Whether backward can pass through it (a pack for the input gradient exists). */
    public boolean hasInputGradient() {
        return true;
    }

    /** Whether W itself is here to train (dW). */
    public boolean trainable() {
        return false;
    }

    // ---------------------------------------------------------------- what each format implements

    /** y = x W^T + bias (+ scale u B^T when u != null). */
    abstract void product(Backend be, Tensor y, Tensor x, Tensor bias, Tensor u, Tensor b, float scale);

    /** dx = dy W (+ dx when accumulating) (+ scale g A when g != null). */
    abstract void inputProduct(Backend be, Tensor dx, boolean accumulate, Tensor dy, Tensor g, Tensor a, float scale);

    /** u = x A^T, then the product with the term; a format may form u in the pass that reads x for its own product. */
    void productWithFactor(Backend be, Tensor y, Tensor u, Tensor x, Tensor bias, LowRank lora) {
        be.gemm(false, true, 1f, x, lora.a(), 0f, u, null);
        product(be, y, x, bias, u, lora.b(), lora.scale());
    }

    /** g = dy B, then the input product with the term. */
    void inputProductWithFactor(Backend be, Tensor dx, boolean accumulate, Tensor g, Tensor dy, LowRank lora) {
        be.gemm(false, false, 1f, dy, lora.b(), 0f, g, null);
        inputProduct(be, dx, accumulate, dy, g, lora.a(), lora.scale());
    }

    /** dW += dy^T x. */
    void weightGradient(Backend be, Tensor dw, Tensor dy, Tensor x) {
        throw new UnsupportedOperationException(kind() + " weights are frozen: they take no weight gradient");
    }

    // ---------------------------------------------------------------- the layer's products

    /** y = x W^T + bias (bias may be null). */
    public final void forward(Backend be, Tensor y, Tensor x, Tensor bias) {
        forward(be, null, null, y, x, bias, null, Dropout.NONE);
    }

    /**
     * y = x W^T + bias + (lora != null) scale (d(x) A^T) B^T. Returns u = d(x) A^T from keep (null
     * without lora, or where the format keeps none); temporaries (the dropped-out input) from scratch.
     */
    public Tensor forward(Backend be, TensorAllocator scratch, TensorAllocator keep, Tensor y, Tensor x, Tensor bias, LowRank lora,
            Dropout dropout) {
        if (lora == null) {
            product(be, y, x, bias, null, null, 0f);
            return null;
        }
        Tensor u = keep.allocate(DType.F32, rows(x), lora.rank());
        if (!dropout.active()) {
            productWithFactor(be, y, u, x, bias, lora);
            return u;
        }
        Tensor xl = scratch.allocate(DType.F32, x.shape());
        be.dropout(xl, x, dropout, false);
        be.gemm(false, true, 1f, xl, lora.a(), 0f, u, null);
        product(be, y, x, bias, u, lora.b(), lora.scale());
        return u;
    }

    /**
     * Backward of {@link #forward}: dx (accumulate: +=; null: not wanted) = dy W + the adapter's share
     * through the same dropout mask; into grads: dW += dy^T x, dbias += column sums of dy, dA += scale
     * g^T d(x), dB += scale dy^T u, g = dy B (each only where grads has a tensor). u: what forward
     * returned.
     */
    public void backward(Backend be, TensorAllocator scratch, Tensor dx, boolean accumulate, Tensor dy, Tensor x, Tensor u, LowRank lora,
            Dropout dropout, Gradients grads) {
        if (lora == null) {
            if (grads.weight() != null) weightGradient(be, grads.weight(), dy, x);
            if (grads.bias() != null) be.biasBackward(grads.bias(), dy);
            if (dx != null) inputProduct(be, dx, accumulate, dy, null, null, 0f);
            return;
        }
        Tensor g = scratch.allocate(DType.F32, rows(dy), lora.rank()), xl = x;
        if (!dropout.active()) {
            if (dx != null) inputProductWithFactor(be, dx, accumulate, g, dy, lora);
            else be.gemm(false, false, 1f, dy, lora.b(), 0f, g, null);
        } else { // the adapter's share of dx goes back through the input's dropout mask
            be.dropout(xl = scratch.allocate(DType.F32, x.shape()), x, dropout, false);
            be.gemm(false, false, 1f, dy, lora.b(), 0f, g, null);
            if (dx != null) {
                inputProduct(be, dx, accumulate, dy, null, null, 0f);
                Tensor dxl = scratch.allocate(DType.F32, dx.shape());
                be.gemm(false, false, lora.scale(), g, lora.a(), 0f, dxl, null);
                be.dropout(dx, dxl, dropout, true);
            }
        }
        if (grads.a() != null) be.gemm(true, false, lora.scale(), g, xl, 1f, grads.a(), null);
        if (grads.b() != null) be.gemm(true, false, lora.scale(), dy, u, 1f, grads.b(), null);
        if (grads.bias() != null) be.biasBackward(grads.bias(), dy);
        if (grads.weight() != null) weightGradient(be, grads.weight(), dy, x);
    }

    @Override
    public String toString() {
        return kind() + " [" + outFeatures() + ", " + inFeatures() + "]" + (backend() == null ? "" : " packed by " + backend());
    }
}
