package dev.topa.tensor;

/**
 * Raw memory of a device other than the CPU, as a backend supplies it (the CUDA caching
 * allocator, for one): addresses are device pointers the JVM cannot read.
 */
public interface DeviceMemory {
    Device device();

    /** A block of at least bytes; throws OutOfMemoryError naming the device when there is none. */
    long allocate(long bytes);

    /** Gives a block back (the implementation may keep it for reuse). */
    void free(long address, long bytes);
}
