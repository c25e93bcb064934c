package dev.topa.harness;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.opencl.OpenCl;
import dev.topa.backend.opencl.OpenClBackend;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.DynamicContainer;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * Every case of every op family on the first OpenCL device (PoCL on the CPU in CI), against the
 * float64 references with the fp32 bounds: the device backend's copies, offsets, launches and
 * kernels, on every commit. Skipped, with the reason, on a machine without an OpenCL platform.
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

    @TestFactory
    Stream<DynamicNode> everyOpOnOpenCl() {
        return Ops.FAMILIES.stream().map(f -> DynamicContainer.dynamicContainer(f.name(), f.cases().stream()
                .map(c -> DynamicTest.dynamicTest(c.name() + " [opencl]", () -> {
                    assumeTrue(OpenCl.unavailableReason() == null, () -> "opencl skipped: " + OpenCl.unavailableReason());
                    OpenClBackend be = backend();
                    assumeTrue(Ops.skipReason(be, c.requires()) == null, () -> Ops.skipReason(be, c.requires()));
                    try {
                        Ops.check(be, c, 0);
                    } catch (Error | RuntimeException e) {
                        throw e;
                    } catch (Throwable t) {
                        throw new AssertionError(t);
                    }
                }))));
    }
}
