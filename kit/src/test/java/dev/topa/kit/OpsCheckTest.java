package dev.topa.kit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.harness.Ops;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class OpsCheckTest {
    /** The kit's runner over the harness with the CPU standing in for the device: every case reported, none failing. */
    @Test
    void theRunnerReportsEveryCase() {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        var failed = Ops.checkAll(CpuBackend.create(), "layernorm", 0, new PrintStream(buf, true, StandardCharsets.UTF_8));
        assertTrue(failed.isEmpty(), failed.toString());
        long lines = buf.toString(StandardCharsets.UTF_8).lines().filter(l -> l.endsWith(": ok")).count();
        assertEquals(Ops.families("layernorm").get(0).cases().size(), lines);
    }

    @Test
    void everyOpOnTheGpuMatchesTheReferences() {
        assumeTrue(CudaDriver.get().isPresent(), () -> "no GPU: " + CudaDriver.unavailableReason());
        try (CudaBackend exact = CudaBackend.open(0, CudaBackend.Precision.FP32); CudaBackend mixed = CudaBackend.open(0)) {
            assertTrue(OpsCheck.run(exact, null, 0, "fp32").isEmpty());
            assertTrue(OpsCheck.run(mixed, null, OpsCheck.BF16_PRODUCTS, "mixed").isEmpty());
        }
    }
}
