package dev.topa.train;

/**
 * A model's output that is NaN or infinite, for one input: inference refuses to turn it into an
 * answer (an argmax over NaN is label 0, a probability NaN), and names the input instead.
 */
public final class NonFiniteOutputException extends ArithmeticException {
    private final int index;
    private final float value;

    public NonFiniteOutputException(int index, float value) {
        this(index, value, "input " + index);
    }

    private NonFiniteOutputException(int index, float value, String what) {
        super(what + ": the model's output is " + value + " (its weights, or this input, drive it out of range)");
        this.index = index;
        this.value = value;
    }

    /** The input's position in the list given to the call. */
    public int index() {
        return index;
    }

    /** The same fault for the caller's numbering and words (e.g. index 12, "dev example 12"; "texts[3]"). */
    public NonFiniteOutputException as(int index, String what) {
        NonFiniteOutputException e = new NonFiniteOutputException(index, value, what);
        e.initCause(this);
        return e;
    }
}
