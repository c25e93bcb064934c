package dev.topa.harness;

import java.util.List;

/**
 * An op family's checks and timings (one class per family, like one C and one CUDA file per
 * family). To add an op: write its float64 forward in {@link Reference}, its cases (odd sizes and
 * ragged tails, a gradient check where it has a backward) and timings in its family, and list a new
 * family in {@link Ops#FAMILIES}.
 */
public interface OpFamily {
    /** The family's name, as {@code topa bench ops --op} takes it. */
    String name();

    List<OpCase> cases();

    /** Timings at tokens = rows of the products (batch x sequence), BERT-base and MiniLM widths. */
    List<OpTiming> timings(int tokens);
}
