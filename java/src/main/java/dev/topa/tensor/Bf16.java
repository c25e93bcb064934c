package dev.topa.tensor;

/** bfloat16 <-> float32: the top 16 bits of an IEEE float, rounded to nearest even. */
public final class Bf16 {
    private Bf16() {}

    public static short fromFloat(float f) {
        int bits = Float.floatToRawIntBits(f);
        if (Float.isNaN(f)) return (short) ((bits >>> 16) | 0x40); // keep NaN a (quiet) NaN
        int rounding = 0x7fff + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }

    public static float toFloat(short b) {
        return Float.intBitsToFloat((b & 0xffff) << 16);
    }
}
