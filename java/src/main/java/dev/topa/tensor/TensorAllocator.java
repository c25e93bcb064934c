package dev.topa.tensor;

/** Makes tensors on one device; the allocator decides how long their storage lives. */
public interface TensorAllocator {
    Device device();

    /** A tensor of the allocator's default category, contents unspecified. */
    Tensor allocate(DType dtype, long... shape);

    Tensor allocate(MemoryCategory category, DType dtype, long... shape);

    /** A zero-filled f32 tensor of the default category. */
    default Tensor zeros(long... shape) {
        return allocate(DType.F32, shape).fill(0f);
    }
}
