package dev.topa.harness;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.Backend;
import dev.topa.backend.opencl.OpenCl;
import dev.topa.backend.opencl.OpenClBackend;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.DynamicContainer;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * Every case of every op family on the first OpenCL device (PoCL on the CPU in CI), against the
 * float64 references with the fp32 bounds: the device backend's copies, offsets, launches and
 * kernels, on every commit. Skipped, with the reason, on a machine without an OpenCL platform
 * (failed in CI, which installs PoCL).
 */
class OpenClOpsTest {
    private static OpenClBackend backend;

    private static synchronized OpenClBackend backend() {
        if (backend == null) backend = OpenClBackend.open(0);
        return backend;
    }

    @AfterAll
    static synchronized void close() {
        if (backend != null) backend.close();
        backend = null;
    }

    private static void requireOpenCl() {
        String why = OpenCl.unavailableReason();
        if (why != null && "true".equals(System.getenv("CI"))) fail("no OpenCL in CI (.ci/run installs pocl-opencl-icd): " + why);
        assumeTrue(why == null, () -> "opencl skipped: " + why);
    }

    /** The backend's own device scratch (here the sum of squares') is in the memory report as WORKSPACE, and out of it after close. */
    @Test
    void scratchCountsAsWorkspaceUntilClose() {
        requireOpenCl();
        OpenClBackend be = OpenClBackend.open(0);
        MemoryTracker t = MemoryTracker.of(be.device());
        long before = t.live(MemoryCategory.WORKSPACE);
        try (TensorScope d = be.scope("scratch test", MemoryCategory.GRADIENTS)) {
            Tensor g = d.allocate(DType.F32, 1000), state = d.allocate(DType.F32, Backend.CLIP_STATE);
            be.zero(g);
            be.zero(state);
            be.clipScale(List.of(g), 1f, null, 1, state);
            be.synchronize();
            assertTrue(t.live(MemoryCategory.WORKSPACE) > before, "scratch not counted: " + t.report());
        } finally {
            be.close();
        }
        assertEquals(before, t.live(MemoryCategory.WORKSPACE), "scratch still counted after close: " + t.report());
    }

    @TestFactory
    Stream<DynamicNode> everyOpOnOpenCl() {
        return Ops.FAMILIES.stream().map(f -> DynamicContainer.dynamicContainer(f.name(), f.cases().stream()
                .map(c -> DynamicTest.dynamicTest(c.name() + " [opencl]", () -> {
                    requireOpenCl();
                    OpsTest.checkCase(backend(), c);
                }))));
    }
}
