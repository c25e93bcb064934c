package dev.topa.tensor;

/** What a block of memory is for; reports break live and peak bytes down by these. */
public enum MemoryCategory {
    WEIGHTS, ADAPTERS, OPTIMIZER, GRADIENTS, ACTIVATIONS, WORKSPACE;

    public String label() {
        return name().toLowerCase(java.util.Locale.ROOT);
    }
}
