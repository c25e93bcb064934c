package dev.topa.backend.cuda;

import dev.topa.tensor.Device;
import dev.topa.tensor.DeviceMemory;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;

/**
 * A caching allocator over cuMemAlloc: sizes are rounded up to a size class (powers of two from
 * 512 bytes to 1 MiB, then multiples of 2 MiB) and freed blocks are kept per class for the next
 * request of that class, so a training or inference step that asks for the same tensors each time
 * calls cuMemAlloc only in its first step. When the device is out of memory, cached blocks are
 * released and the request retried once; then an OutOfMemoryError names the device, the request and
 * what is held.
 */
public final class CudaMemory implements DeviceMemory {
    private final CudaDriver cu;
    private final Device device;
    private final Map<Long, ArrayDeque<Long>> cache = new HashMap<>();
    private long held, cached;

    public CudaMemory(CudaDriver cu, int ordinal) {
        this.cu = cu;
        this.device = Device.cuda(ordinal);
    }

    @Override
    public Device device() {
        return device;
    }

    /** The size class a request is served from. */
    static long sizeClass(long bytes) {
        if (bytes <= 512) return 512;
        if (bytes <= 1L << 20) return Long.highestOneBit(bytes - 1) << 1;
        long step = 2L << 20;
        return (bytes + step - 1) / step * step;
    }

    @Override
    public synchronized long allocate(long bytes) {
        long size = sizeClass(bytes);
        ArrayDeque<Long> free = cache.get(size);
        if (free != null && !free.isEmpty()) {
            cached -= size;
            return free.pop();
        }
        long p;
        try {
            p = cu.malloc(size);
        } catch (CudaException e) {
            if (e.status() != 2) throw e; // CUDA_ERROR_OUT_OF_MEMORY
            release();
            try {
                p = cu.malloc(size);
            } catch (CudaException again) {
                throw new OutOfMemoryError("out of memory on " + device + ": asked for " + bytes + " bytes with " + held
                        + " bytes held by tensors (" + again.getMessage() + ")");
            }
        }
        held += size;
        return p;
    }

    @Override
    public synchronized void free(long address, long bytes) {
        long size = sizeClass(bytes);
        cache.computeIfAbsent(size, k -> new ArrayDeque<>()).push(address);
        cached += size;
    }

    /** Gives every cached block back to the driver. */
    public synchronized void release() {
        for (Map.Entry<Long, ArrayDeque<Long>> e : cache.entrySet())
            while (!e.getValue().isEmpty()) {
                cu.free(e.getValue().pop());
                held -= e.getKey();
                cached -= e.getKey();
            }
    }

    /** Bytes obtained from the driver (in use or cached) and bytes cached for reuse. */
    public synchronized long[] bytes() {
        return new long[] {held, cached};
    }
}
