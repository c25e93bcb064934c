package dev.topa.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.FunctionDescriptor;
import java.nio.file.Files;
import org.junit.jupiter.api.Test;

class NativeLibraryTest {
    @Test
    void loadsFromTheJarCacheAndReportsTheCpu() {
        NativeLibrary lib = NativeLibrary.get();
        assertTrue(Files.isRegularFile(lib.path()), lib.path().toString());
        assertTrue(Isa.best().supported());
        assertTrue(CpuKernels.numThreads() >= 1);
    }

    @Test
    void threadCountIsSettable() {
        int before = CpuKernels.numThreads();
        try {
            CpuKernels.setNumThreads(1);
            assertEquals(1, CpuKernels.numThreads());
            CpuKernels.setNumThreads(0);
            assertEquals(Runtime.getRuntime().availableProcessors(), CpuKernels.numThreads());
        } finally {
            CpuKernels.setNumThreads(before);
        }
    }

    @Test
    void missingSymbolNamesTheSymbolAndTheLibrary() {
        var e = assertThrows(UnsatisfiedLinkError.class,
                () -> NativeLibrary.get().downcall("topa_no_such_kernel", FunctionDescriptor.ofVoid(), false));
        assertTrue(e.getMessage().contains("topa_no_such_kernel") && e.getMessage().contains("libtopa_cpu"), e.getMessage());
    }

    @Test
    void unsupportedIsaIsRefusedWithTheReason() {
        for (Isa isa : Isa.values())
            if (!isa.supported()) {
                var e = assertThrows(UnsupportedOperationException.class, () -> CpuBackend.create(isa));
                assertTrue(e.getMessage().contains(isa.name()));
            }
        assertEquals(Isa.best(), CpuBackend.create().isa());
    }
}
