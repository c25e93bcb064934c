package dev.topa.backend.cuda;

import dev.topa.tensor.CachingDeviceMemory;
import dev.topa.tensor.Device;

/** The caching allocator over cuMemAlloc / cuMemFree. */
public final class CudaMemory extends CachingDeviceMemory {
    private final CudaDriver cu;

    public CudaMemory(CudaDriver cu, int ordinal) {
        super(Device.cuda(ordinal));
        this.cu = cu;
    }

    @Override
    protected long obtain(long size) {
        try {
            return cu.malloc(size);
        } catch (CudaException e) {
            if (e.status() == 2) return 0; // CUDA_ERROR_OUT_OF_MEMORY
            throw e;
        }
    }

    @Override
    protected void giveBack(long address, long size) {
        cu.free(address);
    }
}
