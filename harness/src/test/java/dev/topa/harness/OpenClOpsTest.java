package dev.topa.harness;

import static org.junit.jupiter.api.Assertions.fail;
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

    @TestFactory
    Stream<DynamicNode> everyOpOnOpenCl() {
        return Ops.FAMILIES.stream().map(f -> DynamicContainer.dynamicContainer(f.name(), f.cases().stream()
                .map(c -> DynamicTest.dynamicTest(c.name() + " [opencl]", () -> {
                    String why = OpenCl.unavailableReason();
                    if (why != null && "true".equals(System.getenv("CI"))) fail("no OpenCL in CI (.ci/run installs pocl-opencl-icd): " + why);
                    assumeTrue(why == null, () -> "opencl skipped: " + why);
                    OpsTest.checkCase(backend(), c);
                }))));
    }
}
