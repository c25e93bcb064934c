package dev.topa.tensor;

/** Element types a tensor can hold. bf16 is storage only: kernels accumulate in f32. */
public enum DType {
    F32(4), BF16(2), I32(4), I64(8);

    private final int byteSize;

    DType(int byteSize) {
        this.byteSize = byteSize;
    }

    public int byteSize() {
        return byteSize;
    }
}
