package dev.topa.backend.opencl;

import dev.topa.tensor.CachingDeviceMemory;
import dev.topa.tensor.Device;
import java.util.Map;
import java.util.TreeMap;

/**
 * The caching allocator over clCreateBuffer. OpenCL buffers are handles, not pointers, so each
 * buffer is given a range of an address space of its own: a tensor's "address" is the buffer's base
 * plus its offset, views and arenas do pointer arithmetic on it as on CUDA, and {@link #locate} turns an address back into what a kernel argument or CLBlast takes. The addresses
 * are never dereferenced.
 */
public final class OpenClMemory extends CachingDeviceMemory {
    private static final long FIRST = 1L << 44, GUARD = 1L << 12;

    private final OpenCl cl;
    private final long context;
    /** base address -> {cl_mem, bytes} of every buffer obtained (cached ones included). */
    private final TreeMap<Long, long[]> buffers = new TreeMap<>();
    private long next = FIRST;

    OpenClMemory(OpenCl cl, long context, Device device) {
        super(device);
        this.cl = cl;
        this.context = context;
    }

    @Override
    protected synchronized long obtain(long size) {
        int[] err = new int[1];
        long mem = cl.createBuffer(context, size, err);
        if (mem == 0) {
            if (err[0] == -4 || err[0] == -5 || err[0] == -6 || err[0] == -61) return 0; // out of memory or resources; too large
            OpenCl.check(err[0], "clCreateBuffer(" + size + ")");
        }
        long base = next;
        next += (size + GUARD - 1) / GUARD * GUARD + GUARD;
        buffers.put(base, new long[] {mem, size});
        return base;
    }

    @Override
    protected synchronized void giveBack(long address, long size) {
        cl.releaseBuffer(buffers.remove(address)[0]);
    }

    /** {the cl_mem holding address, the byte offset of address in it}; {0, 0} for address 0 (an absent tensor). */
    synchronized long[] locate(long address) {
        if (address == 0) return new long[] {0, 0};
        Map.Entry<Long, long[]> e = buffers.floorEntry(address);
        if (e == null || address > e.getKey() + e.getValue()[1])
            throw new IllegalArgumentException("address 0x" + Long.toHexString(address) + " is in no buffer of " + device());
        return new long[] {e.getValue()[0], address - e.getKey()};
    }
}
