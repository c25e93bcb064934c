package dev.topa.model;

/**
 * Training-time dropout of a BERT encoder, as Hugging Face's BertConfig: {@code hidden} after the
 * embeddings, on the attention output and on the FFN output (each before its residual add), and on
 * the pooled representation in the task head; {@code attention} on the attention probabilities.
 */
public record DropoutConfig(double hidden, double attention) {
    public static final DropoutConfig NONE = new DropoutConfig(0, 0);
    /** BERT's own 0.1 / 0.1. */
    public static final DropoutConfig BERT = new DropoutConfig(0.1, 0.1);

    public DropoutConfig {
        if (!(hidden >= 0 && hidden < 1)) throw new IllegalArgumentException("hidden dropout must be in [0, 1), got " + hidden);
        if (!(attention >= 0 && attention < 1))
            throw new IllegalArgumentException("attention dropout must be in [0, 1), got " + attention);
    }
}
