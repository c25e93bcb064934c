package dev.topa.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.NativeLibrary;
import java.nio.file.Files;
import java.util.List;
import org.junit.jupiter.api.Test;

class PrecisionChoiceTest {
    @Test
    void bf16OnlyWhenMeasurablyFaster() {
        assertTrue(PrecisionChoice.decide(10, 6, 1, "t").bf16());
        assertFalse(PrecisionChoice.decide(10, 9.6, 1, "t").bf16(), "within the margin: fp32");
        assertFalse(PrecisionChoice.decide(10, 15, 1, "t").bf16(), "a slower bf16 (a Xeon without AMX) is never the default");
        assertTrue(PrecisionChoice.decide(10, 6, 2, "t").why().contains("fp32 10.0 ms (200 GFLOP/s), bf16 6.0 ms (333 GFLOP/s)"));
    }

    @Test
    void aMeasurementIsCachedPerMachineAndShapesAndAPropertyForcesAChoice() throws Exception {
        List<PrecisionChoice.Shape> shapes = List.of(new PrecisionChoice.Shape(64, 48, 32), new PrecisionChoice.Shape(64, 32, 48));
        try (CpuBackend be = CpuBackend.create()) {
            PrecisionChoice.Result first = PrecisionChoice.choose(be, PrecisionChoice.Use.INFERENCE, shapes);
            assertTrue(first.fp32Ms() > 0 && first.bf16Ms() > 0, first.why());
            assertEquals(first.bf16(), first.bf16Ms() < 0.95 * first.fp32Ms());
            PrecisionChoice.Result again = PrecisionChoice.choose(be, PrecisionChoice.Use.INFERENCE, shapes);
            assertTrue(again.why().contains("cached") && again.fp32Ms() == first.fp32Ms(), again.why());
            assertTrue(Files.readString(NativeLibrary.cacheDir().resolve("precision.json")).contains(PrecisionChoice.cpuModel()));
            System.setProperty("topa.precision", "fp32");
            try {
                assertFalse(PrecisionChoice.choose(be, PrecisionChoice.Use.INFERENCE, shapes).bf16());
                System.setProperty("topa.precision", "bf16");
                assertTrue(PrecisionChoice.choose(be, PrecisionChoice.Use.TRAINING, shapes).bf16());
                System.setProperty("topa.precision", "fp16");
                var e = assertThrows(IllegalArgumentException.class, () -> PrecisionChoice.choose(be, PrecisionChoice.Use.TRAINING, shapes));
                assertTrue(e.getMessage().contains("fp32 or bf16, got 'fp16'"), e.getMessage());
            } finally {
                System.clearProperty("topa.precision");
            }
        }
    }
}
