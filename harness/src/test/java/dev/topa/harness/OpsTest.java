package dev.topa.harness;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.Isa;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.EnumMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicContainer;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * Every case of every op family on every CPU ISA this machine has (the others are reported as
 * skipped with the reason), against the float64 references; and every timing once, so that
 * {@code topa bench ops} runs whole.
 */
class OpsTest {
    private static final Map<Isa, Backend> BACKENDS = new EnumMap<>(Isa.class);

    private static synchronized Backend backend(Isa isa) {
        return BACKENDS.computeIfAbsent(isa, CpuBackend::create);
    }

    @TestFactory
    Stream<DynamicNode> everyOpOnEveryCpuIsa() {
        return Ops.FAMILIES.stream().map(f -> DynamicContainer.dynamicContainer(f.name(), f.cases().stream().flatMap(c -> Stream.of(Isa.values())
                .map(isa -> DynamicTest.dynamicTest(c.name() + " [cpu-" + isa.name().toLowerCase() + "]", () -> {
                    assumeTrue(isa.supported(), "cpu-" + isa + " skipped: this CPU does not support " + isa);
                    Backend be = backend(isa);
                    checkCase(be, c);
                })))));
    }

    /** One case on be with the fp32 bounds, skipped (with the reason) when be does not run what it needs. */
    static void checkCase(Backend be, OpCase c) {
        assumeTrue(Ops.skipReason(be, c.requires()) == null, () -> Ops.skipReason(be, c.requires()));
        try {
            Ops.check(be, c, 0);
        } catch (Error | RuntimeException e) {
            throw e;
        } catch (Throwable t) {
            throw new AssertionError(t);
        }
    }

    @Test
    void everyTimingRunsAndReportsARate() {
        Backend be = CpuBackend.create();
        for (OpFamily f : Ops.FAMILIES) {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            Ops.bench(be, f.name(), 64, 1, new PrintStream(buf, true, StandardCharsets.UTF_8));
            String out = buf.toString(StandardCharsets.UTF_8);
            long timed = out.lines().filter(l -> l.matches("[a-z0-9_]+_ms: [0-9.]+")).count();
            long rates = out.lines().filter(l -> l.matches("[a-z0-9_]+_(gflops|gbps): [0-9.]+")).count();
            assertEquals(f.timings(64).size(), timed, f.name() + ": one time per timing:\n" + out);
            assertEquals(timed, rates, f.name() + ": one rate per timing:\n" + out);
        }
    }

    @Test
    void familiesHaveCasesTimingsAndDistinctNames() {
        Set<String> families = new HashSet<>();
        for (OpFamily f : Ops.FAMILIES) {
            assertTrue(families.add(f.name()), "family " + f.name() + " twice");
            assertFalse(f.cases().isEmpty(), f.name() + " has no case");
            assertFalse(f.timings(64).isEmpty(), f.name() + " has no timing");
            Set<String> names = new HashSet<>();
            for (OpCase c : f.cases()) assertTrue(names.add(c.name()), f.name() + ": case " + c.name() + " twice");
        }
        var e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> Ops.families("no-such-op"));
        assertTrue(e.getMessage().contains("gemm") && e.getMessage().contains("no-such-op"), e.getMessage());
    }
}
