package dev.topa.model;

import dev.topa.backend.LinearWeight;
import dev.topa.tensor.Tensor;

/**
 * A LoRA adapter on one linear slot: A [r', in], B [out, r'], scale. On the fused QKV slot it
 * covers query, key and value at once: A stacks their [r, C] factors (zero rows for untargeted
 * ones) and B is block-diagonal [3A, 3r] (blockDiagonal), so the adapters ride in the one QKV GEMM.
 */
public record Adapter(Tensor a, Tensor b, float scale, boolean blockDiagonal) {
    /** The factors as a product sees them. */
    public LinearWeight.LowRank lowRank() {
        return new LinearWeight.LowRank(a, b, scale);
    }
}
