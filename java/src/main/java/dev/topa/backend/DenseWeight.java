package dev.topa.backend;

import static dev.topa.backend.Checks.shape;

import dev.topa.tensor.Tensor;

/**
 * W [out, in] as it is, fp32 (PyTorch's layout): runs on every backend whose memory holds W, and the
 * one format that trains (dW). With a LoRA term its products are one GEMM each, the rank-r update
 * riding as r extra columns of K ({@link Backend#gemmLowRank}), so y is written once.
 */
public final class DenseWeight extends LinearWeight {
    private final Tensor w;

    public DenseWeight(Tensor w) {
        super(dims(w)[0], dims(w)[1], null, "fp32");
        this.w = w;
    }

    private static long[] dims(Tensor w) {
        if (w.rank() != 2) throw new IllegalArgumentException("a linear weight is [out, in], got " + shape(w));
        return w.shape();
    }

    /** W itself. */
    public Tensor tensor() {
        return w;
    }

    @Override
    public boolean trainable() {
        return true;
    }

    @Override
    void product(Backend be, Tensor y, Tensor x, Tensor bias, Tensor u, Tensor b, float scale) {
        if (u == null) be.gemm(false, true, 1f, x, w, 0f, y, bias);
        else be.gemmLowRank(true, x, w, u, scale, true, b, 0f, y, bias);
    }

    @Override
    void inputProduct(Backend be, Tensor dx, boolean accumulate, Tensor dy, Tensor g, Tensor a, float scale) {
        if (g == null) be.gemm(false, false, 1f, dy, w, accumulate ? 1f : 0f, dx, null);
        else be.gemmLowRank(false, dy, w, g, scale, false, a, accumulate ? 1f : 0f, dx, null);
    }

    @Override
    void weightGradient(Backend be, Tensor dw, Tensor dy, Tensor x) {
        be.gemm(true, false, 1f, dy, x, 1f, dw, null);
    }
}
