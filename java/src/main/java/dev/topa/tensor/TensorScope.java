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
public final class TensorScope extends TrackedAllocator implements AutoCloseable {
    private final Arena arena = Arena.ofShared();
    private final List<long[]> deviceBlocks = new ArrayList<>(); // {address, bytes} to give back

    public TensorScope(String name, MemoryCategory defaultCategory) {
        this(name, defaultCategory, null);
    }

    /** A scope in a device's memory (null: host memory). */
    public TensorScope(String name, MemoryCategory defaultCategory, DeviceMemory memory) {
        super(name, defaultCategory, hostChecked(memory));
    }

    private static DeviceMemory hostChecked(DeviceMemory memory) {
        if (memory != null && memory.device().isHostAccessible())
            throw new IllegalArgumentException("device memory of " + memory.device() + " is host memory: use the host scope");
        return memory;
    }

    @Override
    public synchronized Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        long bytes = bytesFor("tensor scope", dtype, shape);
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
        account(category, bytes);
        return new Tensor(device(), dtype, shape, seg, category, this, 0);
    }

    /** Bytes this scope holds. */
    public synchronized long bytes() {
        return handedOut();
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
        restore(new long[MemoryCategory.values().length]);
        for (long[] b : deviceBlocks) deviceMemory.free(b[0], b[1]);
        deviceBlocks.clear();
        arena.close();
    }
}
