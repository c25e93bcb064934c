package dev.topa.backend.cuda;

/** Exposes CudaMemory's size classes to tests in other packages. */
public final class CudaMemoryTestAccess {
    private CudaMemoryTestAccess() {}

    public static long sizeClass(long bytes) {
        return CudaMemory.sizeClass(bytes);
    }
}
