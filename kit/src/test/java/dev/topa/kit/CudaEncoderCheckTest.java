package dev.topa.kit;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.backend.cuda.CudaException;
import dev.topa.model.BertConfig;
import org.junit.jupiter.api.Test;

class CudaEncoderCheckTest {
    /** Uneven heads (one layer with none) and FFN widths (one with none, odd ones), small vocabulary. */
    private static final BertConfig PRUNED = new BertConfig(500, 64, 64, 2, 16, new int[] {4, 1, 0, 3}, new int[] {256, 37, 0, 3}, 1e-12f);

    /** The check's own plumbing (copyTo, uploads, the arena, read-back) with the CPU backend standing in for the device. */
    @Test
    void encoderParityPlumbingOnTheCpu() {
        CpuBackend cpu = CpuBackend.create();
        assertTrue(new CudaEncoderCheck().parity("cpu_as_device", PRUNED, cpu, CpuBackend.create(), CpuBackend.create(), 3, 19));
        assertTrue(new CudaEncoderCheck().predictor(PRUNED, cpu, CpuBackend.create()));
    }

    @Test
    void encoderForwardOnTheGpuMatchesTheCpuBackend() {
        assumeTrue(CudaDriver.get().isPresent(), () -> "no GPU: " + CudaDriver.unavailableReason());
        try (CudaBackend gpu = CudaBackend.open(0); CudaBackend exact = CudaBackend.open(0, CudaBackend.Precision.FP32)) {
            assertTrue(new CudaEncoderCheck().parity("pruned", PRUNED, CpuBackend.create(), exact, gpu, 3, 19));
            assertTrue(new CudaEncoderCheck().predictor(PRUNED, CpuBackend.create(), gpu));
        }
    }

    @Test
    void withoutAGpuOpeningTheBackendSaysWhy() {
        assumeTrue(CudaDriver.get().isEmpty(), "a GPU is present: the parity test above runs instead");
        CudaException e = assertThrows(CudaException.class, () -> CudaBackend.open(0));
        assertTrue(e.getMessage().contains(CudaDriver.unavailableReason()), e.getMessage());
    }
}
