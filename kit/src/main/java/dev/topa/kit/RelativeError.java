package dev.topa.backend.cuda;

/** The device checks' measure: ||got - ref|| / ||ref|| in double, NaN when got holds a non-finite value (a poisoned output left unwritten). */
public final class RelativeError {
    private RelativeError() {}

    public static double of(float[] ref, float[] got) {
        if (got == null || got.length != ref.length) return Double.NaN;
        double num = 0, den = 0;
        for (int i = 0; i < ref.length; i++) {
            if (!Float.isFinite(got[i])) return Double.NaN;
            num += (got[i] - (double) ref[i]) * (got[i] - (double) ref[i]);
            den += ref[i] * (double) ref[i];
        }
        return Math.sqrt(num / Math.max(den, 1e-30));
    }
}
