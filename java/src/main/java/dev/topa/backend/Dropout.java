package dev.topa.backend;

/**
 * One dropout draw: probability p and a 32-bit key. Element i of the tensor it applies to is kept
 * iff {@code (hash32(i ^ key) >>> 8) >= floor(p * 2^24)} and then scaled by 1 / (1 - p). The mask is
 * a pure function of (key, i): backward regenerates it instead of storing it, and the PyTorch
 * reference (bench/reference) draws the identical one. {@link #keys} derives per-site keys from a
 * seed and a step.
 */
public record Dropout(double p, int key) {
    public static final Dropout NONE = new Dropout(0, 0);

    public Dropout {
        if (!(p >= 0 && p < 1)) throw new IllegalArgumentException("dropout probability must be in [0, 1), got " + p);
    }

    public boolean active() {
        return threshold() != 0;
    }

    /** floor(p * 2^24): a 24-bit uniform below it drops the element. */
    public int threshold() {
        return (int) Math.floor(p * 16777216.0);
    }

    public float scale() {
        return active() ? (float) (1.0 / (1.0 - p)) : 1f;
    }

    /** Whether element i is kept (the specification the kernels implement). */
    public boolean keep(long i) {
        return (hash32((int) i ^ key) >>> 8) >= threshold();
    }

    /** The kernels' 32-bit hash: xor-shift-multiply rounds, bijective on 32 bits. */
    public static int hash32(int x) {
        x ^= x >>> 16;
        x *= 0x7feb352d;
        x ^= x >>> 15;
        x *= 0x846ca68b;
        x ^= x >>> 16;
        return x;
    }

    /** The key of dropout site {@code site} in optimizer step {@code step} of a run seeded with seed. */
    public static int key(long seed, long step, int site) {
        int s = hash32((int) seed ^ hash32((int) (seed >>> 32)));
        return hash32(hash32(s ^ (int) step) ^ site);
    }
}
