package dev.topa.backend;

import static dev.topa.backend.Checks.check;
import static dev.topa.backend.Checks.cols;
import static dev.topa.backend.Checks.f32;
import static dev.topa.backend.Checks.matrix;
import static dev.topa.backend.Checks.onDevice;
import static dev.topa.backend.Checks.packedBy;
import static dev.topa.backend.Checks.rows;
import static dev.topa.backend.Checks.shape;
import static dev.topa.backend.Checks.vector;

import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;

/**
 * W [out, in] packed once into the panel layout of one backend's GEMM ({@link Op#PACKED_WEIGHTS}),
 * for products that reuse it many times: inference, where packing per call costs as much as the
 * product at small batch. Forward only; only the backend that packed it can use it.
 */
public final class PackedWeight extends LinearWeight {
    private final Tensor data;

    private PackedWeight(Tensor data, long out, long in, String backend) {
        super(out, in, backend, "fp32 packed");
        this.data = data;
    }

    /** W [out, in] packed for be, in memory from alloc. */
    public static PackedWeight pack(Backend be, Tensor w, TensorAllocator alloc) {
        be.need(Op.PACKED_WEIGHTS, "packLinearWeight");
        f32(be, "packLinearWeight", "W", w);
        check(w.rank() == 2, "packLinearWeight", "W must be [out, in], got " + shape(w));
        Tensor packed = alloc.allocate(DType.F32, be.kPackedSize(w.dim(0), w.dim(1)));
        be.kPackLinearWeight(w, w.dim(0), w.dim(1), packed);
        return new PackedWeight(packed, w.dim(0), w.dim(1), be.name());
    }

    /** The packed panels. */
    public Tensor data() {
        return data;
    }

    @Override
    public boolean hasInputGradient() {
        return false;
    }

    @Override
    void product(Backend be, Tensor y, Tensor x, Tensor bias, Tensor u, Tensor b, float scale) {
        String op = "linearForward";
        packedBy(be, op, backend());
        f32(be, op, "x", x);
        onDevice(be, op, "packed W", data);
        check(cols(x) == inFeatures(), op, "x has " + cols(x) + " features, W takes " + inFeatures());
        matrix(be, op, "y", y, rows(x), outFeatures());
        if (bias != null) vector(be, op, "bias", bias, outFeatures());
        be.kLinearPacked(y, x, this, rows(x), bias);
        if (u != null) be.gemm(false, true, scale, u, b, 1f, y, null);
    }

    @Override
    void inputProduct(Backend be, Tensor dx, boolean accumulate, Tensor dy, Tensor g, Tensor a, float scale) {
        throw new UnsupportedOperationException("fp32 packed weights are packed for inference: no input gradient");
    }
}
