package dev.topa.tensor;

/**
 * What the two allocators share: a name for errors, a default category, the device memory they
 * take blocks from (null: host memory), and the bytes they have handed out per category, which the
 * device's {@link MemoryTracker} sees as they come and go.
 */
abstract class TrackedAllocator implements TensorAllocator, Tensor.Owner {
    static final long ALIGNMENT = 64;

    final String name;
    final MemoryCategory defaultCategory;
    /** Device memory blocks come from; null: host memory. */
    final DeviceMemory deviceMemory;
    final MemoryTracker tracker;
    private final long[] liveByCategory = new long[MemoryCategory.values().length];
    volatile boolean closed;

    TrackedAllocator(String name, MemoryCategory defaultCategory, DeviceMemory deviceMemory) {
        this.name = name;
        this.defaultCategory = defaultCategory;
        this.deviceMemory = deviceMemory;
        this.tracker = MemoryTracker.of(device());
    }

    @Override
    public final Device device() {
        return deviceMemory == null ? Device.CPU : deviceMemory.device();
    }

    @Override
    public final Tensor allocate(DType dtype, long... shape) {
        return allocate(defaultCategory, dtype, shape);
    }

    /** The bytes of a new tensor, after checking that the allocator is open. */
    final long bytesFor(String kind, DType dtype, long... shape) {
        if (closed) throw new IllegalStateException(kind + " '" + name + "' is closed");
        return Tensor.numel(shape) * dtype.byteSize();
    }

    /** Counts bytes of a category as handed out (negative: given back). */
    final void account(MemoryCategory category, long bytes) {
        tracker.add(category, bytes);
        liveByCategory[category.ordinal()] += bytes;
    }

    /** Bytes handed out and not yet given back, per category (a copy). */
    final long[] live() {
        return liveByCategory.clone();
    }

    /** Gives back everything handed out since live() was live: the tracker sees the difference. */
    final void restore(long[] live) {
        for (MemoryCategory c : MemoryCategory.values()) account(c, live[c.ordinal()] - liveByCategory[c.ordinal()]);
    }

    /** Bytes handed out and not given back. */
    final long handedOut() {
        long t = 0;
        for (long b : liveByCategory) t += b;
        return t;
    }
}
