package dev.topa.kit;

import dev.topa.backend.cuda.CudaDriver;
import dev.topa.backend.cuda.CudaBackend;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import org.junit.jupiter.api.Test;

/**
 * The CUDA kernels against the CPU backend (CudaOpCheck: fresh random inputs, poisoned outputs,
 * fp32 and bf16). Skipped, with the driver's reason, where there is no NVIDIA GPU; must pass where
 * there is one.
 */
class CudaOpCheckTest {
    @Test
    void everyCudaKernelMatchesTheCpuBackend() throws Exception {
        assumeTrue(CudaDriver.get().isPresent(), () -> "no GPU: " + CudaDriver.unavailableReason());
        assertEquals(0, CudaOpCheck.run(), "a CUDA kernel disagrees with the CPU backend (see the table above)");
    }

    @Test
    void withoutADriverTheReasonIsStatedAndNothingThrows() {
        assumeTrue(CudaDriver.get().isEmpty(), "a GPU is present: the kernel check above runs instead");
        String reason = CudaDriver.unavailableReason();
        assertNotNull(reason);
        assertTrue(reason.contains("libcuda") || reason.contains("no device") || reason.contains("failed"), reason);
    }

    @Test
    void theFatbinIsPackagedWhenTheBuildHadNvcc() throws Exception {
        assumeTrue(CudaOpCheck.class.getResource("/native/linux-x86_64/topa_kernels.fatbin") != null,
                "this build had no nvcc: the CUDA kernels were skipped");
        byte[] image = CudaBackend.kernelImage();
        // a fatbin starts with its magic 0xBA55ED50 (little-endian)
        assertEquals(0x50, image[0] & 0xff);
        assertEquals(0xED, image[1] & 0xff);
        assertEquals(0x55, image[2] & 0xff);
        assertEquals(0xBA, image[3] & 0xff);
    }
}
