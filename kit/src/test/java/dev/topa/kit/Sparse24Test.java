package dev.topa.kit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.Sparse24Weight;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.tensor.Bf16;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class Sparse24Test {
    /** Every group of 4 keeps its 2 largest |w| in order; values and metadata say exactly which, and decode back to the pruned weight. */
    @Test
    void compressionKeepsTheTwoLargestOfEveryFourAndItsMetadataDecodes() {
        int n = 64, k = 96;
        SplittableRandom rnd = new SplittableRandom(4);
        float[] w = new float[n * k];
        for (int i = 0; i < w.length; i++) w[i] = (float) (2 * rnd.nextDouble() - 1);
        Sparse24Weight.Compressed c = Sparse24Weight.compress(w, n, k);
        for (int r = 0; r < n; r++)
            for (int grp = 0; grp < k / 4; grp++) {
                int base = r * k + 4 * grp, kept = 0;
                float smallestKept = Float.MAX_VALUE, largestDropped = 0;
                for (int i = 0; i < 4; i++) {
                    if (c.pruned()[base + i] != 0) {
                        kept++;
                        assertEquals(w[base + i], c.pruned()[base + i]);
                        smallestKept = Math.min(smallestKept, Math.abs(w[base + i]));
                    } else {
                        largestDropped = Math.max(largestDropped, Math.abs(w[base + i]));
                    }
                }
                assertEquals(2, kept);
                assertTrue(smallestKept >= largestDropped);
                int nibble = (c.meta()[r * (k / 32) + grp / 8] >>> (4 * (grp % 8))) & 0xF, i0 = nibble & 3, i1 = nibble >> 2;
                assertTrue(i0 < i1, "ordered metadata, got " + Integer.toBinaryString(nibble));
                assertEquals(Bf16.toFloat(Bf16.fromFloat(w[base + i0])), Bf16.toFloat(c.values()[r * (k / 2) + 2 * grp]));
                assertEquals(Bf16.toFloat(Bf16.fromFloat(w[base + i1])), Bf16.toFloat(c.values()[r * (k / 2) + 2 * grp + 1]));
                assertTrue(c.pruned()[base + i0] != 0 && c.pruned()[base + i1] != 0);
            }
        var e = assertThrows(IllegalArgumentException.class, () -> Sparse24Weight.compress(new float[48 * 32], 48, 32));
        assertTrue(e.getMessage().contains("multiple of 64"), e.getMessage());
    }

    @Test
    void onAGpuOneMetadataLayoutMatchesTheCpu() {
        assumeTrue(CudaDriver.get().isPresent(), () -> "no GPU: " + CudaDriver.unavailableReason());
        try (CudaBackend gpu = CudaBackend.open(0)) {
            assertTrue(new Sparse24Check().run(gpu) >= 0);
        }
    }
}
