package dev.topa.harness;

import dev.topa.backend.Backend;
import dev.topa.backend.Op;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * The one op harness (after ggml's test-backend-ops): every family's cases on a backend against
 * the float64 references ({@link #check}), and its timings ({@link #bench}). The tests run the cases
 * on every CPU ISA; the GPU kit runs them on CUDA; {@code topa bench ops} prints the timings.
 */
public final class Ops {
    private Ops() {}

    public static final List<OpFamily> FAMILIES = List.of(new GemmOps(), new LinearOps(), new BlockSparseOps(), new LayernormOps(), new GeluOps(),
            new SoftmaxOps(), new AttentionOps(), new DropoutOps(), new EmbeddingOps(), new PoolOps(), new LossOps(), new OptimizerOps(),
            new ImportanceOps(), new LayoutOps());

    /** The families whose name is filter (null or empty: all). */
    public static List<OpFamily> families(String filter) {
        List<OpFamily> out = FAMILIES.stream().filter(f -> filter == null || filter.isEmpty() || f.name().equals(filter)).toList();
        if (out.isEmpty())
            throw new IllegalArgumentException("no op family '" + filter + "'; one of " + FAMILIES.stream().map(OpFamily::name).toList());
        return out;
    }

    /** Why a case or timing cannot run on be, or null when it can. */
    public static String skipReason(Backend be, Op requires) {
        return requires == null || be.supports(requires) ? null : be.name() + " does not support " + requires.label();
    }

    /**
     * Runs one case on be in a fresh workspace (random values seeded by the case's name, so a failure
     * repeats); productFloor: the error a reduced-precision product reaches on be (0: fp32 products).
     */
    public static void check(Backend be, OpCase c, double productFloor) throws Throwable {
        try (Workspace ws = new Workspace(be, new SplittableRandom((c.family() + " " + c.name()).hashCode()), productFloor)) {
            c.body().check(ws);
        }
    }

    /** Every case of the families matching filter on be, one line each; returns the failed ones' messages. */
    public static List<String> checkAll(Backend be, String filter, double productFloor, PrintStream out) {
        List<String> failed = new ArrayList<>();
        for (OpFamily f : families(filter))
            for (OpCase c : f.cases()) {
                String skip = skipReason(be, c.requires()), label = f.name() + ": " + c.name();
                if (skip != null) {
                    out.println(label + ": skipped (" + skip + ")");
                    continue;
                }
                try {
                    check(be, c, productFloor);
                    out.println(label + ": ok");
                } catch (Throwable t) {
                    failed.add(label + ": " + t);
                    out.println(label + ": FAILED " + t);
                }
            }
        return failed;
    }

    /**
     * Times every timing of the families matching filter on be at tokens rows: per op and shape,
     * "name_ms: median" and "name_gflops: rate" (or "_gbps" for ops that move bytes rather than do
     * arithmetic), medians of iterations after two warm-up calls, the device drained around each.
     */
    public static void bench(Backend be, String filter, int tokens, int iterations, PrintStream out) {
        for (OpFamily f : families(filter))
            for (OpTiming t : f.timings(tokens)) {
                String key = (f.name() + "_" + t.name()).toLowerCase(Locale.ROOT).replaceAll("[^a-z0-9]+", "_").replaceAll("_+$", "");
                String skip = skipReason(be, t.requires());
                if (skip != null) {
                    out.println(key + ": skipped (" + skip + ")");
                    continue;
                }
                try (Workspace ws = new Workspace(be, new SplittableRandom(key.hashCode()), 0)) {
                    OpTiming.Work w = t.setup().prepare(ws);
                    double sec = median(be, w.call(), iterations);
                    out.printf(Locale.ROOT, "%s_ms: %.4f%n", key, sec * 1e3);
                    if (w.flops() > 0) out.printf(Locale.ROOT, "%s_gflops: %.1f%n", key, w.flops() / sec * 1e-9);
                    else if (w.bytes() > 0) out.printf(Locale.ROOT, "%s_gbps: %.1f%n", key, w.bytes() / sec * 1e-9);
                }
            }
    }

    /** Median wall time of n calls after two warm-up calls (first touch is slow), the device drained around each. */
    static double median(Backend be, Runnable call, int n) {
        call.run();
        call.run();
        double[] t = new double[Math.max(1, n)];
        for (int i = 0; i < t.length; i++) {
            be.synchronize();
            long t0 = System.nanoTime();
            call.run();
            be.synchronize();
            t[i] = (System.nanoTime() - t0) * 1e-9;
        }
        Arrays.sort(t);
        return t[t.length / 2];
    }
}
