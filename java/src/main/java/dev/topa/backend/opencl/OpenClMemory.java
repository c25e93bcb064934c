package dev.topa.backend.opencl;

import dev.topa.tensor.Device;
import dev.topa.tensor.DeviceMemory;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;
import java.util.TreeMap;

/**
 * A caching allocator over clCreateBuffer, with the CUDA allocator's size classes (powers of two
 * from 512 bytes to 1 MiB, then multiples of 2 MiB; freed blocks kept per class). OpenCL buffers
 * are handles, not pointers, so each buffer is given a range of an address space of its own: a
 * tensor's "address" is the buffer's base plus its offset, views and arenas do pointer arithmetic on
 * it as on CUDA, and {@link #buffer} / {@link #offset} turn an address back into what a kernel
 * argument or CLBlast takes. The addresses are never dereferenced.
 */
public final class OpenClMemory implements DeviceMemory {
    private static final long FIRST = 1L << 44, GUARD = 1L << 12;

    private final OpenCl cl;
    private final long context;
    private final Device device;
    private final Map<Long, ArrayDeque<Long>> cache = new HashMap<>();
    /** base address -> {cl_mem, bytes} of every live buffer (cached ones included). */
    private final TreeMap<Long, long[]> buffers = new TreeMap<>();
    private long next = FIRST, held, cached;

    OpenClMemory(OpenCl cl, long context, Device device) {
        this.cl = cl;
        this.context = context;
        this.device = device;
    }

    @Override
    public Device device() {
        return device;
    }

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
        int[] err = new int[1];
        long mem = cl.createBuffer(context, size, err);
        if (mem == 0 && (err[0] == -4 || err[0] == -5 || err[0] == -6)) { // out of memory or resources: give the cache back, retry
            release();
            mem = cl.createBuffer(context, size, err);
        }
        if (mem == 0) {
            if (err[0] == -61 || err[0] == -4 || err[0] == -5 || err[0] == -6)
                throw new OutOfMemoryError("out of memory on " + device + ": asked for " + bytes + " bytes with " + held + " bytes held by tensors ("
                        + OpenCl.errorName(err[0]) + ")");
            OpenCl.check(err[0], "clCreateBuffer(" + size + ")");
        }
        long base = next;
        next += (size + GUARD - 1) / GUARD * GUARD + GUARD;
        buffers.put(base, new long[] {mem, size});
        held += size;
        return base;
    }

    @Override
    public synchronized void free(long address, long bytes) {
        long size = sizeClass(bytes);
        cache.computeIfAbsent(size, k -> new ArrayDeque<>()).push(address);
        cached += size;
    }

    /** Gives every cached buffer back to the driver. */
    public synchronized void release() {
        for (Map.Entry<Long, ArrayDeque<Long>> e : cache.entrySet())
            while (!e.getValue().isEmpty()) {
                long base = e.getValue().pop();
                cl.releaseBuffer(buffers.remove(base)[0]);
                held -= e.getKey();
                cached -= e.getKey();
            }
    }

    /** The cl_mem holding address (0 for address 0: an absent tensor). */
    synchronized long buffer(long address) {
        return address == 0 ? 0 : entry(address)[0];
    }

    /** The byte offset of address in its buffer. */
    synchronized long offset(long address) {
        return address == 0 ? 0 : address - buffers.floorKey(address);
    }

    private long[] entry(long address) {
        Map.Entry<Long, long[]> e = buffers.floorEntry(address);
        if (e == null || address >= e.getKey() + e.getValue()[1] + 1)
            throw new IllegalArgumentException("address 0x" + Long.toHexString(address) + " is in no buffer of " + device);
        return e.getValue();
    }

    /** Bytes obtained from the driver (in use or cached) and bytes cached for reuse. */
    public synchronized long[] bytes() {
        return new long[] {held, cached};
    }
}
