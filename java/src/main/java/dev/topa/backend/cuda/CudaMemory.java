package dev.topa.backend.cuda;

import dev.topa.tensor.CachingDeviceMemory;
import dev.topa.tensor.Device;

/**
 * The caching allocator over cuMemAlloc / cuMemFree. Tensors are allocated on whatever thread asks
 * (a serving worker, a scope closing), so every driver call first makes the device's context
 * current there (the driver API's contexts are per thread; {@link CudaDriver#makeCurrent} keeps the
 * thread's other backends right).
 */
public final class CudaMemory extends CachingDeviceMemory {
    private final CudaDriver cu;
    private final long context;

    /** Blocks of the GPU ordinal, whose context (retained by the caller) is context. */
    public CudaMemory(CudaDriver cu, int ordinal, long context) {
        super(Device.cuda(ordinal));
        this.cu = cu;
        this.context = context;
    }

    @Override
    protected long obtain(long size) {
        cu.makeCurrent(context);
        try {
            return cu.malloc(size);
        } catch (CudaException e) {
            if (e.status() == 2) return 0; // CUDA_ERROR_OUT_OF_MEMORY
            throw e;
        }
    }

    /** Cached blocks are free to the host but queued kernels may still read them: the device finishes first. */
    @Override
    protected void beforeGivingBack() {
        cu.makeCurrent(context);
        cu.synchronize();
    }

    @Override
    protected void giveBack(long address, long size) {
        cu.free(address);
    }
}
