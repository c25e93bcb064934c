package dev.topa.backend;

import dev.topa.tensor.Tensor;

/**
 * A frozen weight rounded to bf16 and packed once as the right operand op(B) [k, n] of
 * {@link Backend#gemmBf16}: W^T (k = in, n = out) for a linear layer's forward, W itself (k = out,
 * n = in) for its input gradient. Only the backend that packed it can use it.
 */
public record Bf16Weight(Tensor data, long k, long n, String backend) {}
