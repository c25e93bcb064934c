package dev.topa.tensor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Device tensors without a GPU: a fake device memory stands in for the driver, so what is checked
 * is the scope's bookkeeping (per-device, per-category accounting, every block given back, host
 * access refused) and the CUDA allocator's size classes.
 */
class DeviceTensorsTest {
    static final class FakeMemory implements DeviceMemory {
        final Device device = Device.cuda(7);
        final List<long[]> freed = new ArrayList<>();
        long next = 1 << 20;

        @Override
        public Device device() {
            return device;
        }

        @Override
        public long allocate(long bytes) {
            long p = next;
            next += (bytes + 255) & ~255L;
            return p;
        }

        @Override
        public void free(long address, long bytes) {
            freed.add(new long[] {address, bytes});
        }
    }

    @Test
    void deviceTensorsAreCountedOnTheirDeviceAndGivenBackTogether() {
        FakeMemory mem = new FakeMemory();
        MemoryTracker t = MemoryTracker.of(mem.device());
        long before = t.live(MemoryCategory.WEIGHTS), beforeAct = t.live(MemoryCategory.ACTIVATIONS);
        long cpuBefore = MemoryTracker.of(Device.CPU).totalLive();
        TensorScope s = new TensorScope("test", MemoryCategory.WEIGHTS, mem);
        Tensor w = s.allocate(DType.BF16, 384, 1536);
        Tensor a = s.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 32, 128, 384);
        assertEquals(mem.device(), w.device());
        assertEquals(before + 384 * 1536 * 2, t.live(MemoryCategory.WEIGHTS));
        assertEquals(beforeAct + 32L * 128 * 384 * 4, t.live(MemoryCategory.ACTIVATIONS));
        assertEquals(cpuBefore, MemoryTracker.of(Device.CPU).totalLive(), "device bytes are not host bytes");
        assertThrows(IllegalStateException.class, () -> a.getFloat(0), "a device tensor is not host-readable");
        Tensor rows = a.rows(1, 3);
        assertEquals(a.data().address() + 128L * 384 * 4, rows.data().address(), "row views are device-pointer arithmetic");
        s.close();
        assertEquals(2, mem.freed.size());
        assertEquals(before, t.live(MemoryCategory.WEIGHTS));
        assertEquals(beforeAct, t.live(MemoryCategory.ACTIVATIONS));
        assertTrue(t.peak(MemoryCategory.ACTIVATIONS) >= beforeAct + 32L * 128 * 384 * 4);
        assertThrows(IllegalStateException.class, () -> s.allocate(DType.F32, 4));
    }

    /** Training memory must live where the model does: a model on a device with host training memory is refused, naming both. */
    @Test
    void trainingRefusesAModelOnAnotherDevice() {
        FakeMemory mem = new FakeMemory();
        dev.topa.model.BertConfig cfg = dev.topa.model.BertConfig.uniform(50, 16, 1, 2, 32, 16, 2, 1e-12f);
        try (dev.topa.model.BertModel m = new dev.topa.model.BertModel(cfg, new TensorScope("weights", MemoryCategory.WEIGHTS, mem))) {
            assertEquals(mem.device(), m.device());
            var e = assertThrows(IllegalArgumentException.class, () -> new dev.topa.model.BertTraining(m, n -> true));
            assertTrue(e.getMessage().contains("cuda:7") && e.getMessage().contains("the host"), e.getMessage());
        }
    }

    @Test
    void cudaAllocatorSizeClassesCoverEveryRequestWithBoundedWaste() {
        long[] asks = {1, 511, 512, 513, 4000, 65537, 1 << 20, (1 << 20) + 1, 3L << 20, 25_165_824L + 7};
        for (long b : asks) {
            long c = dev.topa.tensor.CachingDeviceMemory.sizeClass(b);
            assertTrue(c >= b, b + " -> " + c);
            assertTrue(c <= Math.max(512, 2 * b) || c - b < 2L << 20, "waste at " + b + ": " + c);
        }
        assertEquals(dev.topa.tensor.CachingDeviceMemory.sizeClass(3000), dev.topa.tensor.CachingDeviceMemory.sizeClass(4096), "one class serves both");
    }

    /** The caching allocator reuses a freed block for its class, and refuses a second free of one block and a free in the wrong class. */
    @Test
    void cachingAllocatorReusesBlocksAndRefusesDoubleFrees() {
        List<Long> given = new ArrayList<>();
        CachingDeviceMemory m = new CachingDeviceMemory(Device.cuda(3)) {
            long next = 1 << 20;

            @Override
            protected long obtain(long size) {
                long p = next;
                next += size;
                return p;
            }

            @Override
            protected void giveBack(long address, long size) {
                given.add(address);
            }

            @Override
            protected void beforeGivingBack() {
                given.add(-1L); // the device waited (for work still queued on the blocks) before the first give-back
            }
        };
        long a = m.allocate(3000), b = m.allocate(100);
        m.free(a, 3000);
        assertEquals(a, m.allocate(4096), "a freed block serves the next request of its class");
        m.free(b, 100);
        var twice = assertThrows(IllegalStateException.class, () -> m.free(b, 100));
        assertTrue(twice.getMessage().contains("cuda:3") && twice.getMessage().contains("not a block in use"), twice.getMessage());
        assertThrows(IllegalStateException.class, () -> m.free(12345, 100), "an address this allocator never gave out");
        long c = m.allocate(600);
        var wrong = assertThrows(IllegalStateException.class, () -> m.free(c, 5000), "a free naming another size class");
        assertTrue(wrong.getMessage().contains("1024-byte class"), wrong.getMessage());
        m.free(c, 600);
        assertEquals(4096 + 512 + 1024, m.bytes()[0], "held: the live 4096-byte block and two cached ones");
        assertEquals(512 + 1024, m.bytes()[1], "freed blocks are cached, not given back");
        m.release();
        assertEquals(-1L, given.get(0), "waited first: " + given);
        assertEquals(List.of(-1L, b, c), given.stream().sorted().toList(), "release gives back every cached block and no live one, after one wait");
        m.release();
        assertEquals(3, given.size(), "nothing cached: no wait, nothing given back");
        assertEquals(4096, m.bytes()[0]);
        m.free(a, 4096);
    }
}
