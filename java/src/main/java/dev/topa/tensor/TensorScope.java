package dev.topa.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * A lifetime for tensors that live as long as something else does (a model's weights, an
 * optimizer's state): each tensor gets its own off-heap block, and everything is released together
 * when the scope closes. The memory tracker sees every allocation and the release.
 */
public final class TensorScope implements TensorAllocator, AutoCloseable, Tensor.Owner {
    private static final long ALIGNMENT = 64;

    private final String name;
    private final MemoryCategory defaultCategory;
    private final MemoryTracker tracker;
    private final Arena arena = Arena.ofShared();
    private final long[] bytesByCategory = new long[MemoryCategory.values().length];
    private volatile boolean closed;

    public TensorScope(String name, MemoryCategory defaultCategory) {
        this.name = name;
        this.defaultCategory = defaultCategory;
        this.tracker = MemoryTracker.of(Device.CPU);
    }

    @Override
    public Device device() {
        return Device.CPU;
    }

    @Override
    public Tensor allocate(DType dtype, long... shape) {
        return allocate(defaultCategory, dtype, shape);
    }

    @Override
    public synchronized Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        if (closed) throw new IllegalStateException("tensor scope '" + name + "' is closed");
        long bytes = Tensor.numel(shape) * dtype.byteSize();
        MemorySegment seg;
        try {
            seg = arena.allocate(Math.max(bytes, 1), ALIGNMENT);
        } catch (OutOfMemoryError e) {
            throw new OutOfMemoryError("cannot allocate " + MemoryTracker.human(bytes) + " of "
                    + category.label() + " in '" + name + "' (" + tracker.totalLive() + " bytes live on cpu)");
        }
        tracker.add(category, bytes);
        bytesByCategory[category.ordinal()] += bytes;
        return new Tensor(Device.CPU, dtype, shape, seg.asSlice(0, bytes), category, this, 0);
    }

    /** Bytes this scope holds. */
    public synchronized long bytes() {
        long t = 0;
        for (long b : bytesByCategory) t += b;
        return t;
    }

    @Override
    public boolean alive(long epoch) {
        return !closed;
    }

    @Override
    public String describe() {
        return "tensor scope '" + name + "'";
    }

    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        for (MemoryCategory c : MemoryCategory.values()) tracker.add(c, -bytesByCategory[c.ordinal()]);
        arena.close();
    }
}
