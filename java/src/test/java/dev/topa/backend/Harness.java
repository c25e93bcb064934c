package dev.topa.backend;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.Isa;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.ToDoubleFunction;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.function.Executable;

/**
 * The one op harness (after ggml's test-backend-ops): every case runs on every backend this
 * machine has, against the float64 {@link Reference}. Outputs are poisoned with NaN before each
 * call, inputs are fresh random values (never zeros), errors are normwise relative
 * ||got - ref|| / ||ref|| against a bound stated per op, and backwards are checked against central
 * finite differences of the float64 forward.
 *
 * <p>To add an op: write its float64 forward in {@link Reference}, then a {@code @TestFactory} in
 * {@link BackendOpsTest} that builds cases with {@link #onEveryBackend} and checks forward with
 * {@link #assertClose} and backward with {@link #assertGradient}. A new backend joins by being
 * listed in {@link #backends()}.
 */
final class Harness {
    private Harness() {}

    interface BackendCase {
        void run(Backend backend, TensorScope scope, SplittableRandom rnd) throws Throwable;
    }

    record Named(String name, Isa isa) {}

    private static final Map<Isa, Backend> BACKENDS = new EnumMap<>(Isa.class);

    /** Every CPU ISA; those this CPU lacks turn into skipped tests that say so. */
    static List<Named> backends() {
        List<Named> out = new ArrayList<>();
        for (Isa isa : Isa.values()) out.add(new Named("cpu-" + isa.name().toLowerCase(), isa));
        return out;
    }

    static synchronized Backend backend(Isa isa) {
        return BACKENDS.computeIfAbsent(isa, CpuBackend::create);
    }

    /** One dynamic test per backend for a case; the random seed depends on the case name only. */
    static Stream<DynamicTest> onEveryBackend(String caseName, BackendCase body) {
        return backends().stream().map(b -> DynamicTest.dynamicTest(caseName + " [" + b.name() + "]", (Executable) () -> {
            assumeTrue(b.isa().supported(), b.name() + " skipped: this CPU does not support " + b.isa());
            try (TensorScope scope = new TensorScope("test " + caseName, dev.topa.tensor.MemoryCategory.ACTIVATIONS)) {
                body.run(backend(b.isa()), scope, new SplittableRandom(caseName.hashCode()));
            }
        }));
    }

    static double[] uniform(SplittableRandom rnd, int n, double lo, double hi) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) v[i] = lo + (hi - lo) * rnd.nextDouble();
        return v;
    }

    /** Uniform in [-1, 1] with |x| >= 0.05, so no input is (near) zero. */
    static double[] random(SplittableRandom rnd, int n) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            double x = 0.05 + 0.95 * rnd.nextDouble();
            v[i] = rnd.nextBoolean() ? x : -x;
        }
        return v;
    }

    static Tensor f32(TensorScope scope, double[] values, long... shape) {
        Tensor t = scope.allocate(DType.F32, shape);
        float[] f = new float[values.length];
        for (int i = 0; i < f.length; i++) f[i] = (float) values[i];
        return t.copyFrom(f);
    }

    static Tensor i32(TensorScope scope, int[] values, long... shape) {
        return scope.allocate(DType.I32, shape).copyFrom(values);
    }

    /** An output tensor filled with NaN, so a kernel that skips an element cannot pass. */
    static Tensor poisoned(TensorScope scope, long... shape) {
        return scope.allocate(DType.F32, shape).fill(Float.NaN);
    }

    /** The values as the kernel saw them (rounded to float), for the reference to use. */
    static double[] asDouble(Tensor t) {
        float[] f = t.toFloatArray();
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    static double relativeError(double[] ref, float[] got) {
        if (ref.length != got.length) throw new AssertionError("length " + got.length + " != " + ref.length);
        double num = 0, den = 0;
        for (int i = 0; i < ref.length; i++) {
            if (!Float.isFinite(got[i])) return Double.POSITIVE_INFINITY;
            num += (got[i] - ref[i]) * (got[i] - ref[i]);
            den += ref[i] * ref[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    static void assertClose(String what, double[] ref, float[] got, double bound) {
        double err = relativeError(ref, got);
        if (!(err <= bound))
            fail(what + ": relative error " + err + " > bound " + bound + firstDiff(ref, got));
    }

    static void assertClose(String what, double[] ref, Tensor got, double bound) {
        assertClose(what, ref, got.toFloatArray(), bound);
    }

    private static String firstDiff(double[] ref, float[] got) {
        int worst = 0;
        for (int i = 0; i < ref.length; i++)
            if (!(Math.abs(got[i] - ref[i]) <= Math.abs(got[worst] - ref[worst]))) worst = i;
        return " (worst at " + worst + ": got " + got[worst] + ", want " + ref[worst] + ")";
    }

    /**
     * Checks a kernel gradient against central differences of a float64 loss at up to
     * {@code samples} coordinates of x (all of them when x is small).
     */
    static void assertGradient(String what, ToDoubleFunction<double[]> loss, double[] x, float[] analytic,
            SplittableRandom rnd, int samples, double bound) {
        int[] coords = coordinates(rnd, x.length, samples);
        double[] numeric = new double[coords.length];
        float[] got = new float[coords.length];
        for (int i = 0; i < coords.length; i++) {
            int c = coords[i];
            double h = 1e-5 * Math.max(1, Math.abs(x[c]));
            double keep = x[c];
            x[c] = keep + h;
            double up = loss.applyAsDouble(x);
            x[c] = keep - h;
            double down = loss.applyAsDouble(x);
            x[c] = keep;
            numeric[i] = (up - down) / (2 * h);
            got[i] = analytic[c];
        }
        if (norm(numeric) == 0) { // a degenerate case (e.g. softmax of one element): the gradient must vanish
            for (float g : got) assertTrue(Math.abs(g) <= 1e-6, what + ": gradient " + g + " where the loss is flat");
            return;
        }
        assertClose(what + " vs finite differences", numeric, got, bound);
    }

    private static int[] coordinates(SplittableRandom rnd, int n, int samples) {
        if (n <= samples) {
            int[] all = new int[n];
            for (int i = 0; i < n; i++) all[i] = i;
            return all;
        }
        return rnd.ints(samples, 0, n).toArray();
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    static double norm(double[] a) {
        return Math.sqrt(dot(a, a));
    }

    static double[] minus(double[] a, double[] b) {
        double[] o = new double[a.length];
        for (int i = 0; i < a.length; i++) o[i] = a[i] - b[i];
        return o;
    }

    static float[] minus(float[] a, double[] b) {
        float[] o = new float[a.length];
        for (int i = 0; i < a.length; i++) o[i] = (float) (a[i] - b[i]);
        return o;
    }
}
