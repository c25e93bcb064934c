package dev.topa.tensor;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * TensorScope's counterpart for device memory: tensors whose storage is a device pointer (wrapped
 * in a zero-length segment, so host access fails loudly), all given back to the device memory
 * together when the scope closes. The device's memory tracker counts every byte per category.
 */
public final class DeviceScope implements TensorAllocator, AutoCloseable, Tensor.Owner {
    private final String name;
    private final MemoryCategory defaultCategory;
    private final DeviceMemory memory;
    private final MemoryTracker tracker;
    private final List<long[]> blocks = new ArrayList<>(); // {address, allocated bytes, tensor bytes, category}
    private volatile boolean closed;

    public DeviceScope(String name, MemoryCategory defaultCategory, DeviceMemory memory) {
        if (memory.device().isHostAccessible()) throw new IllegalArgumentException("DeviceScope is for device memory, not " + memory.device());
        this.name = name;
        this.defaultCategory = defaultCategory;
        this.memory = memory;
        this.tracker = MemoryTracker.of(memory.device());
    }

    @Override
    public Device device() {
        return memory.device();
    }

    @Override
    public Tensor allocate(DType dtype, long... shape) {
        return allocate(defaultCategory, dtype, shape);
    }

    @Override
    public synchronized Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        if (closed) throw new IllegalStateException("device scope '" + name + "' is closed");
        long bytes = Tensor.numel(shape) * dtype.byteSize();
        long address = memory.allocate(Math.max(bytes, 1));
        blocks.add(new long[] {address, Math.max(bytes, 1), bytes, category.ordinal()});
        tracker.add(category, bytes);
        return new Tensor(memory.device(), dtype, shape, MemorySegment.ofAddress(address), category, this, 0);
    }

    /** Bytes this scope holds. */
    public synchronized long bytes() {
        long t = 0;
        for (long[] b : blocks) t += b[2];
        return t;
    }

    @Override
    public boolean alive(long epoch) {
        return !closed;
    }

    @Override
    public String describe() {
        return "device scope '" + name + "' on " + memory.device();
    }

    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        MemoryCategory[] categories = MemoryCategory.values();
        for (long[] b : blocks) {
            memory.free(b[0], b[1]);
            tracker.add(categories[(int) b[3]], -b[2]);
        }
        blocks.clear();
    }
}
