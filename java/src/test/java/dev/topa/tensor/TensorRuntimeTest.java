package dev.topa.tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.parallel.Isolated;

/** Lifetimes, views, dtype conversion and the memory tracker. */
@Isolated // the CPU tracker is process-wide: no other test may allocate while these count bytes
class TensorRuntimeTest {
    private final MemoryTracker cpu = MemoryTracker.of(Device.CPU);

    @Test
    void scopeCountsBytesPerCategoryAndReleasesOnClose() {
        long weights0 = cpu.live(MemoryCategory.WEIGHTS), adapters0 = cpu.live(MemoryCategory.ADAPTERS);
        long total0 = cpu.totalLive();
        Tensor w;
        try (TensorScope scope = new TensorScope("model", MemoryCategory.WEIGHTS)) {
            w = scope.allocate(DType.F32, 7, 33);
            scope.allocate(MemoryCategory.ADAPTERS, DType.BF16, 5, 3);
            scope.allocate(DType.I64, 3);
            assertEquals(weights0 + 7 * 33 * 4 + 3 * 8, cpu.live(MemoryCategory.WEIGHTS));
            assertEquals(adapters0 + 5 * 3 * 2, cpu.live(MemoryCategory.ADAPTERS));
            assertEquals(total0 + 7 * 33 * 4 + 3 * 8 + 30, cpu.totalLive());
            assertTrue(cpu.peak(MemoryCategory.WEIGHTS) >= cpu.live(MemoryCategory.WEIGHTS));
            assertEquals(0, w.data().address() % 64, "tensors are 64-byte aligned for vector loads");
        }
        assertEquals(weights0, cpu.live(MemoryCategory.WEIGHTS));
        assertEquals(adapters0, cpu.live(MemoryCategory.ADAPTERS));
        assertEquals(total0, cpu.totalLive());
        var e = assertThrows(IllegalStateException.class, w::data);
        assertTrue(e.getMessage().contains("tensor scope 'model'"), e.getMessage());
    }

    @Test
    void stepArenaResetInvalidatesTensorsAndReusesMemory() {
        long act0 = cpu.live(MemoryCategory.ACTIVATIONS);
        try (StepArena arena = new StepArena("step", MemoryCategory.ACTIVATIONS, 1 << 20)) {
            Tensor a = arena.allocate(DType.F32, 1000);
            Tensor b = arena.allocate(DType.F32, 300_000); // larger than a chunk: gets its own
            assertEquals(act0 + 4 * 301_000, cpu.live(MemoryCategory.ACTIVATIONS));
            long reserved = arena.reservedBytes();
            long addrA = a.data().address();
            arena.reset();
            assertEquals(act0, cpu.live(MemoryCategory.ACTIVATIONS));
            assertTrue(cpu.peak(MemoryCategory.ACTIVATIONS) >= act0 + 4 * 301_000);
            var e = assertThrows(IllegalStateException.class, b::data);
            assertTrue(e.getMessage().contains("step arena 'step'"), e.getMessage());
            Tensor a2 = arena.allocate(DType.F32, 1000);
            arena.allocate(DType.F32, 300_000);
            assertEquals(addrA, a2.data().address(), "the next step reuses the same memory");
            assertEquals(reserved, arena.reservedBytes(), "no new chunk for a step of the same size");
        }
        assertEquals(act0, cpu.live(MemoryCategory.ACTIVATIONS));
    }

    @Test
    void stepArenaReleaseFreesOnlyWhatCameAfterTheMark() {
        long act0 = cpu.live(MemoryCategory.ACTIVATIONS);
        try (StepArena arena = new StepArena("step", MemoryCategory.ACTIVATIONS, 1 << 20)) {
            Tensor kept = arena.allocate(DType.F32, 100).fill(7f);
            StepArena.Mark mark = arena.mark();
            Tensor temp = arena.allocate(DType.F32, 1000);
            long addr = temp.data().address();
            arena.release(mark);
            assertEquals(act0 + 400, cpu.live(MemoryCategory.ACTIVATIONS));
            assertThrows(IllegalStateException.class, temp::data);
            assertEquals(7f, kept.getFloat(99), "tensors from before the mark stay valid");
            Tensor next = arena.allocate(DType.F32, 1000);
            assertEquals(addr, next.data().address(), "released memory is reused");
            assertThrows(IllegalStateException.class, temp::data, "a released tensor stays invalid after reuse");
            arena.reset();
            assertThrows(IllegalStateException.class, () -> arena.release(mark), "a mark from an earlier step");
        }
        assertEquals(act0, cpu.live(MemoryCategory.ACTIVATIONS));
    }

    @Test
    void viewsShareStorage() {
        try (TensorScope s = new TensorScope("views", MemoryCategory.ACTIVATIONS)) {
            Tensor t = s.allocate(DType.F32, 4, 3);
            float[] v = new float[12];
            for (int i = 0; i < 12; i++) v[i] = i + 0.5f;
            t.copyFrom(v);
            Tensor rows = t.rows(1, 3);
            assertArrayEquals(new long[] {2, 3}, rows.shape());
            assertEquals(3.5f, rows.getFloat(0));
            rows.setFloat(5, -1f);
            assertEquals(-1f, t.getFloat(8));
            assertEquals(-1f, t.reshape(12).getFloat(8));
            assertThrows(IllegalArgumentException.class, () -> t.reshape(5, 2));
            assertThrows(IllegalArgumentException.class, () -> t.rows(2, 5));
            assertThrows(IllegalArgumentException.class, () -> t.copyFrom(new float[11]));
        }
    }

    @Test
    void bf16RoundsToNearestEvenAndRoundTrips() {
        SplittableRandom rnd = new SplittableRandom(7);
        try (TensorScope s = new TensorScope("bf16", MemoryCategory.ACTIVATIONS)) {
            int n = 1001;
            float[] v = new float[n];
            for (int i = 0; i < n; i++) v[i] = (float) ((rnd.nextDouble() * 2 - 1) * Math.pow(10, rnd.nextInt(-6, 6)));
            Tensor f = s.allocate(DType.F32, n).copyFrom(v);
            Tensor b = s.allocate(DType.BF16, n).copyFrom(f);
            assertEquals(2L * n, b.byteSize());
            for (int i = 0; i < n; i++) {
                double rel = Math.abs(b.getFloat(i) - v[i]) / Math.abs(v[i]);
                assertTrue(rel <= 1.0 / 256, "bf16 keeps 8 bits: " + v[i] + " -> " + b.getFloat(i));
            }
            // ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7
            assertEquals(1.0f, Bf16.toFloat(Bf16.fromFloat(1.0f + 1.0f / 256)));
            assertEquals(1.0f + 2.0f / 128, Bf16.toFloat(Bf16.fromFloat(1.0f + 3.0f / 256)));
            assertTrue(Float.isNaN(Bf16.toFloat(Bf16.fromFloat(Float.NaN))));
            assertEquals(Float.POSITIVE_INFINITY, Bf16.toFloat(Bf16.fromFloat(Float.POSITIVE_INFINITY)));
            Tensor back = s.allocate(DType.F32, n).copyFrom(b);
            assertArrayEquals(b.toFloatArray(), back.toFloatArray());
        }
    }

    @Test
    void trackerRejectsReleaseWithoutAllocationAndReportsEveryCategory() {
        MemoryTracker t = MemoryTracker.of(Device.cuda(97)); // a device no other test touches
        t.add(MemoryCategory.GRADIENTS, 100);
        t.add(MemoryCategory.GRADIENTS, -40);
        assertEquals(60, t.live(MemoryCategory.GRADIENTS));
        assertEquals(100, t.peak(MemoryCategory.GRADIENTS));
        t.resetPeaks();
        assertEquals(60, t.peak(MemoryCategory.GRADIENTS));
        assertThrows(IllegalStateException.class, () -> t.add(MemoryCategory.OPTIMIZER, -1));
        String report = t.report();
        for (MemoryCategory c : MemoryCategory.values()) assertTrue(report.contains(c.label()), report);
        assertTrue(report.contains("cuda:97"));
    }

    @Test
    void phasesKeepTheTotalsPeakPerNameAndPutTheOuterNameBack() {
        MemoryTracker t = MemoryTracker.of(Device.cuda(96)); // a device no other test touches
        t.add(MemoryCategory.WEIGHTS, 1000); // before any phase: in the total's peak, in no phase
        assertEquals(null, t.phase("training"));
        t.add(MemoryCategory.ACTIVATIONS, 500);
        t.add(MemoryCategory.ACTIVATIONS, -500);
        String outer = t.phase("evaluation"); // inside training, as the trainer does
        assertEquals("training", outer);
        t.add(MemoryCategory.ACTIVATIONS, 700);
        t.add(MemoryCategory.ACTIVATIONS, -700);
        assertEquals("evaluation", t.phase(outer));
        t.add(MemoryCategory.ACTIVATIONS, 200); // training again: its own earlier peak stays the larger
        t.add(MemoryCategory.ACTIVATIONS, -200);
        assertEquals(java.util.Map.of("training", 1500L, "evaluation", 1700L), t.phasePeaks());
        assertEquals(java.util.List.of("training", "evaluation"), java.util.List.copyOf(t.phasePeaks().keySet()), "in the order first met");
        assertEquals(1700, t.totalPeak());
        t.phase(null);
        t.add(MemoryCategory.ACTIVATIONS, 5000); // unnamed: the total's peak only
        assertEquals(6000, t.totalPeak());
        assertEquals(1700L, t.phasePeaks().get("evaluation"));
        assertEquals(2, t.phasePeaks().size());
        assertTrue(t.report().contains("peak by phase: training 1.5 KiB, evaluation 1.7 KiB"), t.report());
    }

    @Test
    void intTensorsAndTypeChecks() {
        try (TensorScope s = new TensorScope("ints", MemoryCategory.ACTIVATIONS)) {
            Tensor ids = s.allocate(DType.I32, 2, 2).copyFrom(new int[] {1, -2, 3, Integer.MAX_VALUE});
            assertEquals(Integer.MAX_VALUE, ids.getInt(3));
            assertThrows(IllegalStateException.class, () -> ids.getFloat(0));
            Tensor l = s.allocate(DType.I64, 1);
            l.setLong(0, 1L << 40);
            assertEquals(1L << 40, l.getLong(0));
            assertThrows(IllegalArgumentException.class, () -> s.allocate(DType.F32, 2, -1));
        }
    }
}
