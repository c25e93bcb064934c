package dev.topa.backend;

import java.util.Locale;

/**
 * What a backend can run, asked before a run starts ({@link Backend#supports}, after ggml's
 * {@code supports_op}): the op families every backend implements, and the optional ones -- variants
 * and weight formats a new backend may leave out. A caller that needs an optional op checks with
 * {@link Backend#require} first, so an unsupported one is a clear error before step 1, never in it.
 */
public enum Op {
    GEMM(true, "matrix products, fp32"),
    LAYERNORM(true, "LayerNorm with the residual fused"),
    BIAS_GELU(true, "bias + GELU"),
    ATTENTION(true, "multi-head attention, padding mask"),
    DROPOUT(true, "counter-based dropout"),
    EMBEDDING(true, "token + position + type embeddings"),
    MEAN_POOL(true, "masked mean pooling"),
    CROSS_ENTROPY(true, "softmax cross-entropy"),
    MSE(true, "mean squared error"),
    ADAMW(true, "AdamW and the global gradient norm"),
    CONVERT(true, "f32 <-> bf16 conversion"),

    SOFTMAX(false, "row softmax"),
    ATTENTION_DROPOUT(false, "dropout on attention probabilities"),
    ATTENTION_PROBS(false, "attention probabilities kept for backward"),
    ATTENTION_PACKED(false, "attention over sequences packed without padding"),
    POSITION_IDS(false, "explicit position ids"),
    IMPORTANCE(false, "importance scores (group and block dot products)"),
    PACKED_WEIGHTS(false, "fp32 weights pre-packed in the GEMM's layout"),
    BF16_WEIGHTS(false, "bf16 weights, fp32 sums"),
    BLOCK_SPARSE(false, "32 x 32 block-sparse weights"),
    SPARSE24(false, "2:4 semi-structured weights");

    private final boolean required;
    private final String description;

    Op(boolean required, String description) {
        this.required = required;
        this.description = description;
    }

    /** Whether every backend must implement it (the optional ones a backend declares in {@link Backend#supports}). */
    public boolean required() {
        return required;
    }

    public String description() {
        return description;
    }

    public String label() {
        return name().toLowerCase(Locale.ROOT).replace('_', '-');
    }
}
