package dev.topa.harness;

import dev.topa.io.Safetensors;
import java.nio.file.Path;
import java.util.SplittableRandom;
import java.util.function.ToDoubleFunction;

/**
 * The harness's assertions: normwise relative error ||got - ref|| / ||ref|| against a stated bound,
 * and gradients against central finite differences of a float64 loss. A failure is an
 * {@link AssertionError} naming what was checked, the error and the worst element.
 */
public final class Check {
    private Check() {}

    /**
     * Bounds of normwise relative error for fp32 kernels: float32 accumulation over K terms gives
     * ~sqrt(K) * 6e-8, so 2e-5 covers products and attention up to K = 3072; elementwise and row ops
     * 1e-5; exact sums and gathers 1e-6; gradients 1e-4 (float32 backward vs float64 central
     * differences).
     */
    public static final double GEMM = 2e-5, ROW = 1e-5, EXACT = 1e-6, GRAD = 1e-4;

    public static double relativeError(double[] ref, float[] got) {
        if (ref.length != got.length) throw new AssertionError("length " + got.length + " != " + ref.length);
        double num = 0, den = 0;
        for (int i = 0; i < ref.length; i++) {
            if (!Float.isFinite(got[i])) return Double.POSITIVE_INFINITY;
            num += (got[i] - ref[i]) * (got[i] - ref[i]);
            den += ref[i] * ref[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    /** The same with a float reference (one backend's result against another's). */
    public static double relativeError(float[] ref, float[] got) {
        double[] r = new double[ref.length];
        for (int i = 0; i < r.length; i++) r[i] = ref[i];
        return relativeError(r, got);
    }

    public static void close(String what, double[] ref, float[] got, double bound) {
        double err = relativeError(ref, got);
        if (!(err <= bound)) throw new AssertionError(what + ": relative error " + err + " > bound " + bound + worst(ref, got));
    }

    public static void isTrue(boolean ok, String message) {
        if (!ok) throw new AssertionError(message);
    }

    private static String worst(double[] ref, float[] got) {
        int worst = 0;
        for (int i = 0; i < ref.length; i++)
            if (!(Math.abs(got[i] - ref[i]) <= Math.abs(got[worst] - ref[worst]))) worst = i;
        return " (worst at " + worst + ": got " + got[worst] + ", want " + ref[worst] + ")";
    }

    /**
     * A kernel's gradient against central differences of a float64 loss at up to samples coordinates
     * of x (all of them when x is small).
     */
    public static void gradient(String what, ToDoubleFunction<double[]> loss, double[] x, float[] analytic, SplittableRandom rnd, int samples,
            double bound) {
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
        if (norm(numeric) == 0) { // a degenerate case (softmax of one element): the gradient must vanish
            for (float g : got) isTrue(Math.abs(g) <= 1e-6, what + ": gradient " + g + " where the loss is flat");
            return;
        }
        close(what + " vs finite differences", numeric, got, bound);
    }

    private static int[] coordinates(SplittableRandom rnd, int n, int samples) {
        if (n <= samples) {
            int[] all = new int[n];
            for (int i = 0; i < n; i++) all[i] = i;
            return all;
        }
        return rnd.ints(samples, 0, n).toArray();
    }

    public static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    static double norm(double[] a) {
        return Math.sqrt(dot(a, a));
    }

    /** a - b, elementwise: an accumulated gradient's increment. */
    public static float[] minus(float[] a, double[] b) {
        float[] o = new float[a.length];
        for (int i = 0; i < a.length; i++) o[i] = (float) (a[i] - b[i]);
        return o;
    }

    /**
     * The Euclidean distance between two safetensors files' tensors taken as one vector (two
     * trainings' results: the same names and sizes in both, else an error naming the difference).
     */
    public static double distance(Path x, Path y) throws java.io.IOException {
        try (Safetensors a = Safetensors.read(x); Safetensors b = Safetensors.read(y)) {
            if (!a.entries().keySet().equals(b.entries().keySet()))
                throw new IllegalArgumentException(x + " and " + y + " hold other tensors: " + a.entries().keySet() + " vs " + b.entries().keySet());
            double sum = 0;
            for (String k : a.entries().keySet()) {
                float[] u = a.entries().get(k).floats(a.file()), v = b.entries().get(k).floats(b.file());
                if (u.length != v.length) throw new IllegalArgumentException(k + ": " + u.length + " values in " + x + ", " + v.length + " in " + y);
                for (int i = 0; i < u.length; i++) sum += (u[i] - (double) v[i]) * (u[i] - v[i]);
            }
            return Math.sqrt(sum);
        }
    }
}
