package dev.topa.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * A lifetime for tensors that live as long as something else does (a model's weights, an
 * optimizer's state): each tensor gets its own block, and everything is released together when the
 * scope closes. Host blocks come from an off-heap arena; with a {@link DeviceMemory} they are device
 * blocks (tensors hold the device pointer in a zero-length segment, so host access fails loudly).
 * The device's memory tracker sees every allocation and the release.
 */
public final class TensorScope implements TensorAllocator, AutoCloseable, Tensor.Owner {
    private static final long ALIGNMENT = 64;

    private final String name;
    private final MemoryCategory defaultCategory;
    private final MemoryTracker tracker;
    private final Arena arena = Arena.ofShared();
    private final DeviceMemory deviceMemory; // null: host memory from the arena
    private final List<long[]> deviceBlocks = new ArrayList<>(); // {address, bytes} to give back
    private final long[] bytesByCategory = new long[MemoryCategory.values().length];
    private volatile boolean closed;

    public TensorScope(String name, MemoryCategory defaultCategory) {
        this(name, defaultCategory, null);
    }

    /** A scope in a device's memory (null: host memory). */
    public TensorScope(String name, MemoryCategory defaultCategory, DeviceMemory memory) {
        if (memory != null && memory.device().isHostAccessible())
            throw new IllegalArgumentException("device memory of " + memory.device() + " is host memory: use the host scope");
        this.name = name;
        this.defaultCategory = defaultCategory;
        this.deviceMemory = memory;
        this.tracker = MemoryTracker.of(device());
    }

    @Override
    public Device device() {
        return deviceMemory == null ? Device.CPU : deviceMemory.device();
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
        if (deviceMemory != null) {
            long address = deviceMemory.allocate(Math.max(bytes, 1)); // throws OutOfMemoryError naming the device
            deviceBlocks.add(new long[] {address, Math.max(bytes, 1)});
            seg = MemorySegment.ofAddress(address);
        } else {
            try {
                seg = arena.allocate(Math.max(bytes, 1), ALIGNMENT).asSlice(0, bytes);
            } catch (OutOfMemoryError e) {
                throw new OutOfMemoryError("cannot allocate " + MemoryTracker.human(bytes) + " of "
                        + category.label() + " in '" + name + "' (" + tracker.totalLive() + " bytes live on cpu)");
            }
        }
        tracker.add(category, bytes);
        bytesByCategory[category.ordinal()] += bytes;
        return new Tensor(device(), dtype, shape, seg, category, this, 0);
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
        return "tensor scope '" + name + "'" + (deviceMemory == null ? "" : " on " + device());
    }

    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        for (MemoryCategory c : MemoryCategory.values()) tracker.add(c, -bytesByCategory[c.ordinal()]);
        for (long[] b : deviceBlocks) deviceMemory.free(b[0], b[1]);
        deviceBlocks.clear();
        arena.close();
    }
}
