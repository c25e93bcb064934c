package dev.topa.tensor;

import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;

/**
 * A caching allocator over a device's own allocation call: sizes are rounded up to a size class
 * (powers of two from 512 bytes to 1 MiB, then multiples of 2 MiB) and freed blocks are kept per
 * class for the next request of that class, so a training or inference step that asks for the same
 * tensors each time reaches the driver only in its first step. When the device is out of memory,
 * cached blocks are released and the request retried once; then an OutOfMemoryError names the
 * device, the request and what is held. Every block handed out is known by its address until it is
 * freed, so a double free or a foreign address throws instead of handing one block to two tensors
 * later. A backend supplies the two driver calls.
 */
public abstract class CachingDeviceMemory implements DeviceMemory {
    private final Device device;
    private final Map<Long, ArrayDeque<Long>> cache = new HashMap<>();
    private final Map<Long, Long> live = new HashMap<>();
    private long held, cached;

    protected CachingDeviceMemory(Device device) {
        this.device = device;
    }

    /** A new block of exactly size bytes from the driver, or 0 when the device is out of memory (any other failure throws). */
    protected abstract long obtain(long size);

    /** Gives a block that {@link #obtain} returned back to the driver. */
    protected abstract void giveBack(long address, long size);

    /** Before cached blocks go back to the driver (e.g. waits for work that may still use them). */
    protected void beforeGivingBack() {}

    @Override
    public final Device device() {
        return device;
    }

    /** The size class a request is served from. */
    public static long sizeClass(long bytes) {
        if (bytes <= 512) return 512;
        if (bytes <= 1L << 20) return Long.highestOneBit(bytes - 1) << 1;
        long step = 2L << 20;
        return (bytes + step - 1) / step * step;
    }

    @Override
    public final synchronized long allocate(long bytes) {
        long size = sizeClass(bytes);
        ArrayDeque<Long> free = cache.get(size);
        if (free != null && !free.isEmpty()) {
            cached -= size;
            long p = free.pop();
            live.put(p, size);
            return p;
        }
        long p = obtain(size);
        if (p == 0) {
            release();
            p = obtain(size);
            if (p == 0) throw new OutOfMemoryError("out of memory on " + device + ": asked for " + bytes + " bytes with " + held + " bytes held");
        }
        held += size;
        live.put(p, size);
        return p;
    }

    @Override
    public final synchronized void free(long address, long bytes) {
        Long size = live.get(address);
        if (size == null)
            throw new IllegalStateException("free of 0x" + Long.toHexString(address) + " on " + device + ": not a block in use (freed twice, or not from this device)");
        if (size != sizeClass(bytes))
            throw new IllegalStateException("free of 0x" + Long.toHexString(address) + " on " + device + " with " + bytes + " bytes: it was allocated in the " + size + "-byte class");
        live.remove(address);
        cache.computeIfAbsent(size, k -> new ArrayDeque<>()).push(address);
        cached += size;
    }

    /** Gives every cached block back to the driver. */
    public final synchronized void release() {
        if (cached == 0) return;
        beforeGivingBack();
        for (Map.Entry<Long, ArrayDeque<Long>> e : cache.entrySet())
            while (!e.getValue().isEmpty()) {
                long p = e.getValue().pop();
                held -= e.getKey(); // counted out first: a block the driver refuses is not ours either
                cached -= e.getKey();
                giveBack(p, e.getKey());
            }
    }

    /** Bytes obtained from the driver (in use or cached) and bytes cached for reuse. */
    public final synchronized long[] bytes() {
        return new long[] {held, cached};
    }
}
