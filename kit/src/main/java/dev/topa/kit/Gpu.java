package dev.topa.kit;

import dev.topa.backend.cuda.CudaDriver;

/** The kit's programs start here: without a GPU they say why and end with 2 (the kit's "no GPU"). */
final class Gpu {
    private Gpu() {}

    static void requireOrExit() {
        if (CudaDriver.get().isPresent()) return;
        System.out.println("cuda_available: false (" + CudaDriver.unavailableReason() + ")");
        System.exit(2);
    }
}
