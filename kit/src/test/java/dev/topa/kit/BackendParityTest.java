package dev.topa.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.cpu.CpuBackend;
import org.junit.jupiter.api.Test;

class BackendParityTest {
    /** The harness itself (uploads, poisoning, read-back, every op's call) with the CPU backend as the device. */
    @Test
    void harnessRunsEveryOpWithTheCpuAsTheDevice() {
        assertTrue(new BackendParity(CpuBackend.create(), CpuBackend.create()).run(true));
    }

    @Test
    void cudaTrainingOpsMatchTheCpuBackend() {
        assumeTrue(CudaDriver.get().isPresent(), () -> "no GPU: " + CudaDriver.unavailableReason());
        try (CudaBackend gpu = CudaBackend.open(0)) {
            assertTrue(new BackendParity(CpuBackend.create(), gpu).run(true));
        }
    }
}
