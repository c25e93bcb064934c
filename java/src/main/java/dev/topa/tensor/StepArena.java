package dev.topa.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Per-step scratch for activations: a bump allocator over retained chunks. {@link #reset()} ends
 * the step: every tensor handed out becomes invalid (using one throws) and the memory is reused by
 * the next step. Chunks are kept, not freed, because first-touch of fresh pages is slow and a
 * training step needs the same amount every time; the tracker sees the bytes handed out as live
 * until reset, and {@link #reservedBytes()} tells what the chunks hold. Within a step,
 * {@link #mark()} and {@link #release(Mark)} free everything allocated after the mark (a layer's
 * backward temporaries), so peak memory is what one layer needs, not the sum over layers. On a
 * device other than the CPU ({@link #StepArena(String, DeviceMemory)}) the chunks are device
 * blocks and the tensors device pointers; the bookkeeping is the same.
 */
public final class StepArena extends TrackedAllocator implements AutoCloseable {
    private static final long DEFAULT_CHUNK = 64L << 20;

    private final Arena arena = Arena.ofShared();
    private final List<MemorySegment> chunks = new ArrayList<>(); // device chunks: zero-length segments at the block's address
    private final List<Long> chunkSizes = new ArrayList<>();
    private final long chunkBytes;
    private int chunk;      // chunk being filled
    private long offset;    // bytes used in it
    private long steps;           // resets so far
    private long serial;          // token of the last allocation (tokens only grow)
    private volatile long stepStart; // tokens <= stepStart belong to earlier steps
    private final List<long[]> released = new ArrayList<>(); // (from, to]: token ranges freed this step
    private long reserved;

    public StepArena(String name) {
        this(name, MemoryCategory.ACTIVATIONS, DEFAULT_CHUNK);
    }

    public StepArena(String name, MemoryCategory defaultCategory, long chunkBytes) {
        super(name, defaultCategory, null);
        this.chunkBytes = chunkBytes;
    }

    /** A step arena whose chunks are blocks of a device's memory (activations on a GPU). */
    public StepArena(String name, DeviceMemory memory) {
        super(name, MemoryCategory.ACTIVATIONS, memory);
        this.chunkBytes = DEFAULT_CHUNK;
    }

    @Override
    public synchronized Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        long bytes = bytesFor("step arena", dtype, shape);
        long padded = (Math.max(bytes, 1) + ALIGNMENT - 1) & -ALIGNMENT;
        while (chunk < chunks.size() && offset + padded > chunkSizes.get(chunk)) {
            chunk++;
            offset = 0;
        }
        if (chunk == chunks.size()) {
            long size = Math.max(chunkBytes, padded);
            try {
                chunks.add(deviceMemory == null ? arena.allocate(size, ALIGNMENT) : MemorySegment.ofAddress(deviceMemory.allocate(size)));
                chunkSizes.add(size);
            } catch (OutOfMemoryError e) {
                throw new OutOfMemoryError("step arena '" + name + "' cannot grow by " + MemoryTracker.human(size)
                        + " (holds " + MemoryTracker.human(reserved) + ")");
            }
            reserved += size;
            offset = 0;
        }
        MemorySegment base = chunks.get(chunk);
        MemorySegment seg = deviceMemory == null ? base.asSlice(offset, bytes) : MemorySegment.ofAddress(base.address() + offset);
        offset += padded;
        account(category, bytes);
        return new Tensor(device(), dtype, shape, seg, category, this, ++serial);
    }

    /** A point in this step's allocations to {@link #release} back to. */
    public record Mark(long step, int chunk, long offset, long serial, long[] live) {}

    public synchronized Mark mark() {
        return new Mark(steps, chunk, offset, serial, live());
    }

    /** Frees every tensor allocated after the mark (they become invalid); earlier ones stay. */
    public synchronized void release(Mark m) {
        if (m.step() != steps) throw new IllegalStateException("mark of step arena '" + name + "' is from an earlier step");
        restore(m.live());
        if (serial > m.serial()) released.add(new long[] {m.serial(), serial});
        chunk = m.chunk();
        offset = m.offset();
    }

    /** Ends the step: all tensors from it become invalid; their memory is reused. */
    public synchronized void reset() {
        restore(new long[MemoryCategory.values().length]);
        chunk = 0;
        offset = 0;
        stepStart = serial;
        steps++;
        released.clear();
    }

    /** Bytes of the tensors alive in this step (what a forward keeps for its backward, read between the two). */
    public synchronized long liveBytes() {
        return handedOut();
    }

    /** Bytes the arena's chunks hold (what the process really keeps for activations). */
    public synchronized long reservedBytes() {
        return reserved;
    }

    @Override
    public synchronized boolean alive(long token) {
        if (closed || token <= stepStart) return false;
        for (long[] r : released)
            if (token > r[0] && token <= r[1]) return false;
        return true;
    }

    @Override
    public String describe() {
        return "step arena '" + name + "'";
    }

    @Override
    public synchronized void close() {
        if (closed) return;
        reset();
        closed = true;
        if (deviceMemory != null)
            for (int i = 0; i < chunks.size(); i++) deviceMemory.free(chunks.get(i).address(), chunkSizes.get(i));
        arena.close();
    }
}
