package dev.topa.backend;

import dev.topa.tensor.Tensor;

/**
 * A linear layer's weight W [out, in] packed once into the panel layout of one backend's GEMM, for
 * products that reuse it many times (inference). Only the backend that packed it can use it.
 */
public record PackedWeight(Tensor data, long outFeatures, long inFeatures, String backend) {}
