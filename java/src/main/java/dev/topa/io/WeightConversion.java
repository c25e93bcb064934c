package dev.topa.io;

import dev.topa.tensor.Bf16;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;

/** Stored weight bytes (little-endian f32, f16 or bf16) to float32. */
final class WeightConversion {
    private WeightConversion() {}

    static float[] toFloats(Path file, String tensor, String dtype, MemorySegment bytes, long numel) {
        if (numel > Integer.MAX_VALUE) throw new ModelFormatException(file + ": tensor " + tensor + " is too large");
        float[] out = new float[(int) numel];
        switch (dtype) {
            case "F32" -> MemorySegment.copy(bytes, ValueLayout.JAVA_FLOAT_UNALIGNED, 0, out, 0, out.length);
            case "F16" -> {
                for (int i = 0; i < out.length; i++) out[i] = Float.float16ToFloat(bytes.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i));
            }
            case "BF16" -> {
                for (int i = 0; i < out.length; i++) out[i] = Bf16.toFloat(bytes.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i));
            }
            default -> throw new ModelFormatException(file + ": tensor " + tensor + " has dtype " + dtype
                    + "; supported: F32, F16, BF16");
        }
        // a NaN or infinite weight makes every output NaN (served as label 0, probability NaN): refused where it is read
        for (int i = 0; i < out.length; i++)
            if (!Float.isFinite(out[i]))
                throw new ModelFormatException(file + ": tensor " + tensor + " holds a non-finite value (" + out[i] + ") at flat index " + i);
        return out;
    }
}
