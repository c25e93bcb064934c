package dev.topa.tensor;

/** Makes tensors on one device; the allocator decides how long their storage lives (until close at the latest). */
public interface TensorAllocator extends AutoCloseable {
    Device device();

    /** A tensor of the allocator's default category, contents unspecified. */
    Tensor allocate(DType dtype, long... shape);

    Tensor allocate(MemoryCategory category, DType dtype, long... shape);

    /** A zero-filled f32 tensor of the default category. */
    default Tensor zeros(long... shape) {
        return allocate(DType.F32, shape).fill(0f);
    }

    /** Gives back all storage; the tensors made here become invalid. */
    @Override
    void close();
}
